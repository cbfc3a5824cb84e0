"""The kernels of one mini-batch, each beside its NumPy reference.

Workload: the 784-128-64-10 network on the first 128 MNIST training images, float32 and
float64. One group per kernel and dtype, holding "fastmlp" and "numpy" (``fastmlp.reference``):

- forward: the logits of the batch (``Network.forward`` / ``reference.forward``);
- loss_and_gradients: forward, loss and backward, no update (``Trainer.gradient``);
- train_step: one Adam step of the whole network (``Trainer.step`` / ``reference.train_step``);
- softmax_xent: the fused softmax + cross-entropy and its gradient on the (128, 10) logits;
- adam: one Adam update of all 109,386 parameters as one flat vector.

fastmlp is timed through its compiled Network and Trainer, not the Python API, so the
figures are those of the compiled code plus one Python call; the public API's overhead shows in
``test_bench_predict.py`` and ``test_bench_training.py``.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass

import numpy as np
import pytest
from fastmlp._trainer import Trainer

from fastmlp import MLP, _kernels, reference
from fastmlp._threads import single_threaded_blas

ACTIVATIONS = ("relu", "relu", "identity")  # 784-128-64-10, as in conftest
N_OUTPUTS = 10
BATCH = 128
LR, BETA1, BETA2, EPS = 1e-3, 0.9, 0.999, 1e-8
# Adam's step count: any t >= 1 does the same work; a mid-training one looks realistic.
ADAM_T = 100


@dataclass
class Batch:
    """One mini-batch and a network, in the layouts fastmlp and the reference take."""

    X: np.ndarray
    y: np.ndarray  # int64, as the reference takes them
    y32: np.ndarray  # int32 class codes, as the kernels take them
    weights: list
    biases: list
    model: MLP

    @property
    def logits(self) -> np.ndarray:
        """The network's (BATCH, 10) logits, a fresh copy."""
        return reference.forward(self.weights, self.biases, self.X, ACTIVATIONS)[-1]


@pytest.fixture
def batch(mnist, initial_params, dtype) -> Batch:
    """The first BATCH training images with conftest's initial parameters, copied."""
    weights, biases = ([p.copy() for p in params] for params in initial_params[dtype])
    return Batch(
        X=np.ascontiguousarray(mnist.X[dtype][:BATCH]),
        y=mnist.y[:BATCH].copy(),
        y32=mnist.y[:BATCH].astype(np.int32),
        weights=weights,
        biases=biases,
        model=MLP.from_weights(weights, biases, dtype=dtype),
    )


# Each builder takes the batch and the thread count and returns the call to time.


def fast_forward(b: Batch, n_threads: int) -> Callable[[], object]:
    network = b.model._network
    out = np.empty((BATCH, N_OUTPUTS), dtype=network.dtype)
    return lambda: network.forward(b.X, out, softmax=False, n_threads=n_threads)


def ref_forward(b: Batch, n_threads: int) -> Callable[[], object]:
    return lambda: reference.forward(b.weights, b.biases, b.X, ACTIVATIONS)


def fast_loss_and_gradients(b: Batch, n_threads: int) -> Callable[[], object]:
    trainer = Trainer(b.model._network, b.X, b.y32, batch_size=BATCH, n_threads=n_threads)
    return trainer.gradient


def ref_loss_and_gradients(b: Batch, n_threads: int) -> Callable[[], object]:
    return lambda: reference.loss_and_gradients(b.weights, b.biases, b.X, b.y, ACTIVATIONS)


def fast_train_step(b: Batch, n_threads: int) -> Callable[[], object]:
    # The Trainer fastmlp.train builds, so the partition of the work is the library's.
    params = b.model.params_
    trainer = Trainer(b.model._network, b.X, b.y32, batch_size=BATCH, n_threads=n_threads)
    state = {"t": ADAM_T, "state1": np.zeros_like(params), "state2": np.zeros_like(params)}
    trainer.set_optimizer("adam", state, betas=(BETA1, BETA2), eps=EPS)
    batch = np.arange(BATCH, dtype=np.int64)
    return lambda: trainer.step(batch, LR, 0)


def ref_train_step(b: Batch, n_threads: int) -> Callable[[], object]:
    state: dict = {}
    return lambda: reference.train_step(b.weights, b.biases, state, b.X, b.y, ACTIVATIONS)


def fast_softmax_xent(b: Batch, n_threads: int) -> Callable[[], object]:
    Z = b.logits
    # The kernel overwrites Z with the probabilities; later rounds then work on those,
    # which costs the same (same shapes, no special values), so no copy is timed.
    return lambda: _kernels.softmax_cross_entropy(Z, b.y32, None, 1.0 / BATCH)


def ref_softmax_xent(b: Batch, n_threads: int) -> Callable[[], object]:
    Z = b.logits
    return lambda: reference.softmax_cross_entropy(Z, b.y, None, 1.0 / BATCH)


def _adam_vectors(b: Batch) -> tuple[np.ndarray, ...]:
    rng = np.random.default_rng(1)
    p = b.model.params_.copy()
    g, m, v = (rng.standard_normal(p.shape).astype(p.dtype) * 1e-3 for _ in range(3))
    return p, g, m, np.abs(v)


def fast_adam(b: Batch, n_threads: int) -> Callable[[], object]:
    p, g, m, v = _adam_vectors(b)
    return lambda: _kernels.adam(p, g, m, v, LR, BETA1, BETA2, EPS, ADAM_T)


def ref_adam(b: Batch, n_threads: int) -> Callable[[], object]:
    p, g, m, v = _adam_vectors(b)
    return lambda: reference.adam(p, g, m, v, LR, BETA1, BETA2, EPS, ADAM_T)


KERNELS = {
    "forward": (fast_forward, ref_forward),
    "loss_and_gradients": (fast_loss_and_gradients, ref_loss_and_gradients),
    "train_step": (fast_train_step, ref_train_step),
    "softmax_xent": (fast_softmax_xent, ref_softmax_xent),
    "adam": (fast_adam, ref_adam),
}


@pytest.mark.parametrize("impl", ["fastmlp", "numpy"])
@pytest.mark.parametrize("kernel", list(KERNELS))
def test_kernel(benchmark, batch, dtype, n_threads, kernel, impl):
    benchmark.group = f"kernel {kernel} {dtype} batch {BATCH}"
    benchmark.extra_info.update(
        suite="kernels",
        workload=kernel,
        impl=impl,
        dtype=dtype,
        batch_size=BATCH,
        threads=n_threads,
    )
    fast, ref = KERNELS[kernel]
    call = (fast if impl == "fastmlp" else ref)(batch, n_threads)
    # fastmlp's own API runs its GEMMs on single-threaded BLAS (OpenMP owns the cores);
    # the reference keeps the session's BLAS threads.
    with single_threaded_blas() if impl == "fastmlp" else nullcontext():
        benchmark(call)
