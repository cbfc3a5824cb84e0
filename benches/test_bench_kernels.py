"""The kernels of one mini-batch, each beside its NumPy reference.

Workload: the 784-128-64-10 network on the first 128 MNIST training images, float32 and
float64. One group per kernel and dtype, holding "fastmlp" and "numpy" (``fastmlp.reference``):

- forward: the logits of the batch (``_network.forward`` / ``reference.forward``);
- loss_and_gradients: forward, loss and backward, no update;
- train_step: one Adam step of the whole network (``_network.train_epoch`` over exactly one
  mini-batch / ``reference.train_step``);
- softmax_xent: the fused softmax + cross-entropy and its gradient on the (128, 10) logits;
- adam: one Adam update of all 109,386 parameters as one flat vector.

fastmlp is timed through its extension's entry points, not the Python API, so the figures
are those of the compiled code plus one Python call; the public API's overhead shows in
``test_bench_predict.py`` and ``test_bench_training.py``.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass

import numpy as np
import pytest

from fastmlp import MLP, _kernels, _network, reference
from fastmlp._threads import single_threaded_blas
from fastmlp.model import LOSSES

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
    m = b.model
    out = np.empty((BATCH, N_OUTPUTS), dtype=m.dtype)
    return lambda: _network.forward(
        m.params_, b.X, out, m._sizes, m._acts, softmax=False, n_threads=n_threads
    )


def ref_forward(b: Batch, n_threads: int) -> Callable[[], object]:
    return lambda: reference.forward(b.weights, b.biases, b.X, ACTIVATIONS)


def fast_loss_and_gradients(b: Batch, n_threads: int) -> Callable[[], object]:
    m = b.model
    grads = np.empty_like(m.params_)
    return lambda: _network.loss_and_gradients(
        m.params_,
        grads,
        b.X,
        b.y32,
        None,
        m._sizes,
        m._acts,
        loss=LOSSES["cross_entropy"],
        l2=0.0,
        n_threads=n_threads,
    )


def ref_loss_and_gradients(b: Batch, n_threads: int) -> Callable[[], object]:
    return lambda: reference.loss_and_gradients(b.weights, b.biases, b.X, b.y, ACTIVATIONS)


def fast_train_step(b: Batch, n_threads: int) -> Callable[[], object]:
    m = b.model
    params = m.params_
    grads, m1, m2 = (np.zeros_like(params) for _ in range(3))
    ws = np.empty(_network.workspace_size(m._sizes, BATCH, False), dtype=m.dtype)
    ybuf = np.empty(BATCH, dtype=np.int32)
    order = np.arange(BATCH, dtype=np.int64)  # one epoch of one mini-batch = one step

    # The arguments fastmlp.train passes, so the partition of the work is the library's.

    def step():
        return _network.train_epoch(
            params,
            grads,
            m1,
            m2,
            b.X,
            b.y32,
            None,
            order,
            ws,
            ybuf,
            m._sizes,
            m._acts,
            loss=LOSSES["cross_entropy"],
            optimizer=_network.Optimizer.OPT_ADAM,
            lr=LR,
            beta1=BETA1,
            beta2=BETA2,
            eps=EPS,
            momentum=0.9,
            l2=0.0,
            dropout=0.0,
            seed=0,
            t=ADAM_T,
            batch_size=BATCH,
            n_threads=n_threads,
        )

    return step


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
