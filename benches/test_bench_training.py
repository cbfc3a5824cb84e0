"""One MNIST training epoch of 784-128-64-10, fastmlp beside the reference and the peers.

One group per batch size (32, 128, 512) and dtype, each holding:

- fastmlp: ``fastmlp.train(X, y, hidden=(128, 64), epochs=1, ...)``, the whole public call
  (validation, initialisation, workspace, the epoch), at 1, 2 and the session's thread
  count, for the thread-scaling figures;
- numpy: ``fastmlp.reference.train_epoch`` with Adam, BLAS at the session's threads. This
  is the readable reference, not a tuned NumPy MLP: it allocates fresh arrays every step,
  computes the L2 penalty even at l2=0 and the softmax's exponential twice;
- torch: ``nn.Sequential(Linear, ReLU, Linear, ReLU, Linear)``, ``CrossEntropyLoss`` and
  ``torch.optim.Adam``, mini-batches gathered from tensors already in memory;
- sklearn: ``MLPClassifier(hidden_layer_sizes=(128, 64), solver="adam", max_iter=1)``.

Every implementation shuffles once per epoch, uses Adam with lr 1e-3 and sees all 60,000
images, and every one is timed alike: one untimed warm-up epoch, then the median of
``ROUNDS`` epochs, each from fresh parameters (set-up not timed).
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest

import fastmlp
from fastmlp import reference

ACTIVATIONS = ("relu", "relu", "identity")  # 784-128-64-10, as in conftest
BATCH_SIZES = (32, 128, 512)
# The same for every implementation: a warm-up epoch (first-touch page faults, thread
# start-up, lazy initialisation), then the median of three timed epochs.
WARMUP_ROUNDS = 1
ROUNDS = 3
# One workload's implementations run back to back (conftest.workload_order).
WORKLOAD_PARAMS = ("dtype", "batch_size")


@pytest.fixture(params=BATCH_SIZES, ids=lambda bs: f"bs{bs}")
def batch_size(request) -> int:
    """Mini-batch size of the epoch."""
    return request.param


def _label(benchmark, impl: str, dtype: str, batch_size: int, threads: int) -> None:
    benchmark.group = f"epoch 784-128-64-10 {dtype} batch {batch_size}"
    benchmark.extra_info.update(
        suite="training",
        workload="epoch",
        impl=impl,
        dtype=dtype,
        batch_size=batch_size,
        threads=threads,
    )


def test_fastmlp(benchmark, mnist, dtype, batch_size, fastmlp_threads):
    _label(benchmark, "fastmlp", dtype, batch_size, fastmlp_threads)
    X, y = mnist.X[dtype], mnist.y

    def epoch():
        return fastmlp.train(
            X,
            y,
            hidden=(128, 64),
            epochs=1,
            batch_size=batch_size,
            dtype=dtype,
            seed=0,
            n_threads=fastmlp_threads,
        )

    model = benchmark.pedantic(epoch, rounds=ROUNDS, warmup_rounds=WARMUP_ROUNDS)
    benchmark.extra_info["epoch_seconds"] = model.history["seconds"][-1]
    benchmark.extra_info["train_accuracy"] = model.history["accuracy"][-1]


def test_numpy_reference(benchmark, mnist, initial_params, dtype, batch_size, n_threads):
    _label(benchmark, "numpy", dtype, batch_size, n_threads)
    X, y = mnist.X[dtype], mnist.y
    rng = np.random.default_rng(0)

    def setup():
        weights, biases = ([p.copy() for p in params] for params in initial_params[dtype])
        return (weights, biases, {}), {}

    def epoch(weights, biases, state):
        order = rng.permutation(X.shape[0])
        return reference.train_epoch(
            weights, biases, state, X, y, ACTIVATIONS, batch_size, order, optimizer="adam"
        )

    benchmark.pedantic(epoch, setup=setup, rounds=ROUNDS, warmup_rounds=WARMUP_ROUNDS)


def test_torch(
    benchmark, torch, torch_mlp, torch_epoch, mnist, initial_params, dtype, batch_size, n_threads
):
    _label(benchmark, "torch", dtype, batch_size, n_threads)
    X, y = torch.from_numpy(mnist.X[dtype]), torch.from_numpy(mnist.y)
    generator = torch.Generator().manual_seed(0)

    def setup():
        net = torch_mlp(*initial_params[dtype], dtype)
        return (net, torch.optim.Adam(net.parameters(), lr=1e-3)), {}

    def epoch(net, optimizer):
        torch_epoch(net, optimizer, X, y, batch_size, generator)

    benchmark.pedantic(epoch, setup=setup, rounds=ROUNDS, warmup_rounds=WARMUP_ROUNDS)


def test_sklearn(benchmark, mlp_classifier, mnist, dtype, batch_size, n_threads):
    from sklearn.exceptions import ConvergenceWarning

    _label(benchmark, "sklearn", dtype, batch_size, n_threads)
    # float32 in, float32 all the way through (scikit-learn keeps the input's dtype).
    X, y = mnist.X[dtype], mnist.y

    def setup():
        clf = mlp_classifier(
            hidden_layer_sizes=(128, 64),
            solver="adam",
            batch_size=batch_size,
            max_iter=1,
            shuffle=True,
            random_state=0,
        )
        return (clf,), {}

    def epoch(clf):
        with warnings.catch_warnings():
            # max_iter=1 is the point here, not a convergence problem.
            warnings.simplefilter("ignore", ConvergenceWarning)
            return clf.fit(X, y)

    benchmark.pedantic(epoch, setup=setup, rounds=ROUNDS, warmup_rounds=WARMUP_ROUNDS)
