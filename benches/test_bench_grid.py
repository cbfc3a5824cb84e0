"""One training epoch at shapes from tabular to wide: fastmlp beside PyTorch and JAX.

The grid of issue 15 (features-hidden...-classes / batch), float32, ReLU, softmax +
cross-entropy, Adam with lr 1e-3, on ``N_ROWS`` random rows (standard normal features,
uniform labels; a fixed seed, no download). One benchmark per shape races:

- fastmlp: ``fastmlp.train(X, y, epochs=1, init=model, ...)``, the whole public call
  (validation, workspace, the epoch), continuing the same model from round to round;
- torch: ``nn.Sequential`` of ``Linear`` + ``ReLU``, ``CrossEntropyLoss`` and
  ``torch.optim.Adam``, mini-batches gathered from tensors already in memory;
- jax: the whole epoch as ONE jitted ``jax.lax.scan`` over the mini-batches (JAX's fastest
  form: one dispatch per epoch), with ``optax.adam`` and
  ``optax.softmax_cross_entropy_with_integer_labels``.

Every implementation starts from the same He-normal weights, shuffles once per epoch, sees
all rows and is timed alike, in paired rounds (``paired.race``): each round runs one epoch
of every installed peer, then fastmlp's, which pytest-benchmark reports. ``WARMUP_ROUNDS``
untimed rounds come first (JAX compiles in the first, so compile time is excluded; the
others start their threads and touch their buffers), then ``ROUNDS`` timed rounds, each
epoch continuing from the last (Adam's state included). Each round also times the
yardstick of the share of the sgemm peak (conftest's ``sgemm_round``), so that share is
paired too. The seconds of every round go to ``extra_info["seconds"]``;
``benches/report.py`` and the summary at the end of the run give each peer's time over
fastmlp's as the median of the per-round ratios.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable

import numpy as np
import pytest
from paired import YARDSTICK, installed, race, record

import fastmlp

N_ROWS = 8192
# (layer sizes, batch): tabular narrow, 3 x 256, 2 x 1024, 1 x 2048, 3072 inputs, and
# MNIST's 784-128-64-10 at the three batch sizes of test_bench_training.py.
GRID = (
    ((32, 64, 64, 2), 256),
    ((64, 256, 256, 256, 5), 256),
    ((784, 1024, 1024, 10), 128),
    ((784, 2048, 10), 256),
    ((3072, 512, 256, 100), 128),
    ((784, 128, 64, 10), 32),
    ((784, 128, 64, 10), 128),
    ((784, 128, 64, 10), 512),
)
# The same for every implementation. The epochs are short (8,192 rows), so seven timed
# rounds cost little and steady the median of the ratios on a shared machine.
WARMUP_ROUNDS = 1
ROUNDS = 7
LR = 1e-3


def shape_name(sizes: tuple[int, ...]) -> str:
    """The name of a shape: "784-128-64-10" for (784, 128, 64, 10)."""
    return "-".join(map(str, sizes))


@pytest.fixture(params=GRID, ids=lambda case: f"{shape_name(case[0])}-bs{case[1]}")
def case(request) -> tuple[tuple[int, ...], int]:
    """One shape of the grid and its batch size."""
    return request.param


_DATA: dict = {}


def random_data(n_features: int, n_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """``N_ROWS`` float32 rows and int64 labels, the same for every implementation."""
    key = (n_features, n_classes)
    if key not in _DATA:
        rng = np.random.default_rng(n_features * 1000 + n_classes)
        X = rng.standard_normal((N_ROWS, n_features), dtype=np.float32)
        _DATA[key] = (X, rng.integers(0, n_classes, N_ROWS))
    return _DATA[key]


def fastmlp_epoch(sizes, batch_size: int, n_threads: int, he_init) -> Callable[[], None]:
    """One epoch of fastmlp per call, continuing the same model."""
    X, y = random_data(sizes[0], sizes[-1])
    weights, biases = he_init("float32", sizes=sizes)
    model = fastmlp.MLP.from_weights(weights, biases, classes=np.arange(sizes[-1]))
    seeds = itertools.count()

    def epoch():
        nonlocal model
        model = fastmlp.train(
            X,
            y,
            epochs=1,
            batch_size=batch_size,
            lr=LR,
            seed=next(seeds),
            n_threads=n_threads,
            init=model,
        )

    return epoch


def torch_epoch_of(request, sizes, batch_size: int, he_init) -> Callable[[], None]:
    """One epoch of the PyTorch peer per call; skips when PyTorch is not installed."""
    torch = request.getfixturevalue("torch")
    torch_mlp = request.getfixturevalue("torch_mlp")
    torch_epoch = request.getfixturevalue("torch_epoch")
    X_np, y_np = random_data(sizes[0], sizes[-1])
    X, y = torch.from_numpy(X_np), torch.from_numpy(y_np)
    net = torch_mlp(*he_init("float32", sizes=sizes), "float32")
    optimizer = torch.optim.Adam(net.parameters(), lr=LR)
    generator = torch.Generator().manual_seed(0)
    return lambda: torch_epoch(net, optimizer, X, y, batch_size, generator)


def jax_epoch(jax, batch_size: int):
    """A jitted ``epoch(params, opt_state, X, y, key) -> (params, opt_state)``.

    The key draws the epoch's permutation; ``lax.scan`` runs one Adam step per mini-batch
    of ``batch_size`` rows, gathered by index from X and y inside the compiled loop.
    """
    import optax

    jnp = jax.numpy
    optimizer = optax.adam(LR)

    def loss(params, X, y):
        h = X
        for W, b in params[:-1]:
            h = jax.nn.relu(h @ W + b)
        W, b = params[-1]
        return optax.softmax_cross_entropy_with_integer_labels(h @ W + b, y).mean()

    @jax.jit
    def epoch(params, opt_state, X, y, key):
        def step(carry, idx):
            params, opt_state = carry
            grads = jax.grad(loss)(params, jnp.take(X, idx, axis=0), jnp.take(y, idx))
            updates, opt_state = optimizer.update(grads, opt_state, params)
            return (optax.apply_updates(params, updates), opt_state), None

        order = jax.random.permutation(key, X.shape[0]).reshape(-1, batch_size)
        (params, opt_state), _ = jax.lax.scan(step, (params, opt_state), order)
        return params, opt_state

    return epoch, optimizer


def jax_epoch_of(request, sizes, batch_size: int, he_init) -> Callable[[], None]:
    """One epoch of the JAX peer per call (compiled in the first); skips when JAX cannot
    run (conftest's ``jax`` fixture)."""
    jax = request.getfixturevalue("jax")
    X_np, y_np = random_data(sizes[0], sizes[-1])
    X, y = jax.device_put(X_np), jax.device_put(y_np.astype(np.int32))
    epoch_fn, optimizer = jax_epoch(jax, batch_size)
    weights, biases = he_init("float32", sizes=sizes)
    params = [(jax.device_put(W), jax.device_put(b)) for W, b in zip(weights, biases)]
    state = (params, optimizer.init(params))
    key, epochs = jax.random.key(0), itertools.count()

    def epoch():
        nonlocal state
        epoch_key = jax.random.fold_in(key, next(epochs))
        state = jax.block_until_ready(epoch_fn(*state, X, y, epoch_key))

    return epoch


PEERS = {"torch": torch_epoch_of, "jax": jax_epoch_of}


def test_epoch(benchmark, request, races, sgemm_round, he_init_for, case, n_threads):
    sizes, batch_size = case
    # The yardstick first: it leaves the caches cold for whoever follows it, so not fastmlp,
    # which runs last.
    peers, missing = installed(PEERS, request, sizes, batch_size, he_init_for)
    peers = {YARDSTICK: sgemm_round.run, **peers}
    seconds = race(
        benchmark,
        ("fastmlp", fastmlp_epoch(sizes, batch_size, n_threads, he_init_for)),
        peers,
        rounds=ROUNDS,
        warmup_rounds=WARMUP_ROUNDS,
    )
    benchmark.group = "grid: fastmlp's epoch per shape (peers in the same rounds)"
    record(
        benchmark,
        races,
        f"{shape_name(sizes)} / {batch_size}",
        seconds,
        missing,
        suite="grid",
        workload=f"epoch {shape_name(sizes)}",
        dtype="float32",
        batch_size=batch_size,
        threads=n_threads,
        layer_sizes=list(sizes),
        rows=N_ROWS,
        sgemm_flops=sgemm_round.flops,
    )
