"""One MNIST training epoch of 784-128-64-10, fastmlp beside the reference and the peers.

One benchmark per batch size (32, 128, 512) and dtype races, in paired rounds
(``paired.race``: each round runs one epoch of every implementation in turn):

- fastmlp: ``fastmlp.train(X, y, hidden=(128, 64), epochs=1, ...)``, the whole public call
  (validation, initialisation, workspace, the epoch), at the session's thread count (the
  epoch pytest-benchmark reports, last in each round) and at 1 and 2 threads, for the
  thread-scaling figures;
- numpy: ``fastmlp.reference.train_epoch`` with Adam, BLAS at the session's threads. This
  is the readable reference, not a tuned NumPy MLP: it allocates fresh arrays every step,
  computes the L2 penalty even at l2=0 and the softmax's exponential twice;
- torch: ``nn.Sequential(Linear, ReLU, Linear, ReLU, Linear)``, ``CrossEntropyLoss`` and
  ``torch.optim.Adam``, mini-batches gathered from tensors already in memory;
- sklearn: ``MLPClassifier(hidden_layer_sizes=(128, 64), solver="adam", max_iter=1)``;
- sgemm: conftest's ``sgemm_round``, the yardstick of the share of the sgemm peak.

Every implementation shuffles once per epoch, uses Adam with lr 1e-3, sees all 60,000
images and starts each epoch from fresh parameters, set up inside its timed epoch as
fastmlp's call does (copies of the initial weights, a new module or estimator: well under
1% of an epoch). A warm-up round, then ``ROUNDS``; the seconds of every round go to
``extra_info["seconds"]``, and the ratios are medians of the per-round ratios
(benches/report.py, and the summary at the end of the run).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable

import numpy as np
import pytest
from paired import YARDSTICK, installed, race, record

import fastmlp
from fastmlp import reference

ACTIVATIONS = ("relu", "relu", "identity")  # 784-128-64-10, as in conftest
BATCH_SIZES = (32, 128, 512)
# The same for every implementation: a warm-up round (first-touch page faults, thread
# start-up, lazy initialisation), then five timed rounds (medians of three moved with one
# bad round).
WARMUP_ROUNDS = 1
ROUNDS = 5


@pytest.fixture(params=BATCH_SIZES, ids=lambda bs: f"bs{bs}")
def batch_size(request) -> int:
    """Mini-batch size of the epoch."""
    return request.param


def fastmlp_epoch(mnist, dtype: str, batch_size: int, threads: int) -> Callable[[], None]:
    """One fresh fastmlp fit of one epoch per call."""
    X, y = mnist.X[dtype], mnist.y
    return lambda: fastmlp.train(
        X, y, hidden=(128, 64), epochs=1, batch_size=batch_size, dtype=dtype, seed=0,
        n_threads=threads,
    )  # fmt: skip


def numpy_epoch(request, mnist, dtype: str, batch_size: int) -> Callable[[], None]:
    """One epoch of the NumPy reference per call, from fresh copies of the weights."""
    initial = request.getfixturevalue("initial_params")[dtype]
    X, y = mnist.X[dtype], mnist.y
    rng = np.random.default_rng(0)

    def epoch():
        weights, biases = ([p.copy() for p in params] for params in initial)
        order = rng.permutation(X.shape[0])
        reference.train_epoch(
            weights, biases, {}, X, y, ACTIVATIONS, batch_size, order, optimizer="adam"
        )

    return epoch


def torch_epoch_of(request, mnist, dtype: str, batch_size: int) -> Callable[[], None]:
    """One epoch of a fresh PyTorch peer per call; skips when PyTorch is not installed."""
    torch = request.getfixturevalue("torch")
    torch_mlp = request.getfixturevalue("torch_mlp")
    torch_epoch = request.getfixturevalue("torch_epoch")
    initial = request.getfixturevalue("initial_params")[dtype]
    X, y = torch.from_numpy(mnist.X[dtype]), torch.from_numpy(mnist.y)
    generator = torch.Generator().manual_seed(0)

    def epoch():
        net = torch_mlp(*initial, dtype)
        torch_epoch(net, torch.optim.Adam(net.parameters(), lr=1e-3), X, y, batch_size, generator)

    return epoch


def sklearn_epoch(request, mnist, dtype: str, batch_size: int) -> Callable[[], None]:
    """One epoch of a fresh MLPClassifier per call; skips when scikit-learn is not installed."""
    mlp_classifier = request.getfixturevalue("mlp_classifier")
    from sklearn.exceptions import ConvergenceWarning

    # float32 in, float32 all the way through (scikit-learn keeps the input's dtype).
    X, y = mnist.X[dtype], mnist.y

    def epoch():
        clf = mlp_classifier(
            hidden_layer_sizes=(128, 64),
            solver="adam",
            batch_size=batch_size,
            max_iter=1,
            shuffle=True,
            random_state=0,
        )
        with warnings.catch_warnings():
            # max_iter=1 is the point here, not a convergence problem.
            warnings.simplefilter("ignore", ConvergenceWarning)
            clf.fit(X, y)

    return epoch


# The order of a round (fastmlp at the session's threads runs last). The yardstick first:
# it leaves the caches cold for whoever follows it. NumPy's OpenBLAS (the reference and
# scikit-learn) leaves a worker spinning on a core for 0.1 s after its last product, longer
# than the rest between epochs: the epoch that follows them is fastmlp's on 1 thread, which
# leaves the other core to it, never one that needs both cores.
BEFORE = {"numpy": numpy_epoch, "sklearn": sklearn_epoch}
AFTER = {"torch": torch_epoch_of}


def test_epoch(
    benchmark, request, races, sgemm_round, mnist, dtype, batch_size, n_threads, scaling_threads
):
    before, missing = installed(BEFORE, request, mnist, dtype, batch_size)
    after, missing_after = installed(AFTER, request, mnist, dtype, batch_size)
    missing.update(missing_after)
    others = {
        f"fastmlp {t} thr": fastmlp_epoch(mnist, dtype, batch_size, t)
        for t in scaling_threads
        if t != n_threads
    }
    peers = {YARDSTICK: sgemm_round.run, **before, **others, **after}
    seconds = race(
        benchmark,
        ("fastmlp", fastmlp_epoch(mnist, dtype, batch_size, n_threads)),
        peers,
        rounds=ROUNDS,
        warmup_rounds=WARMUP_ROUNDS,
    )
    benchmark.group = (
        f"epoch 784-128-64-10: fastmlp at {n_threads} threads (peers in the same rounds)"
    )
    record(
        benchmark,
        races,
        f"{dtype} / {batch_size}",
        seconds,
        missing,
        suite="training",
        workload="epoch",
        dtype=dtype,
        batch_size=batch_size,
        threads=n_threads,
        thread_counts=scaling_threads,
        sgemm_flops=sgemm_round.flops,
    )
