"""Shared fixtures and settings of the fastmlp benchmark suite (pytest-benchmark).

Run from the repository root::

    pytest --benchmark-only                 # the installed fastmlp (pip install '.[bench]')
    PYTHONPATH=. pytest --benchmark-only    # after python setup.py build_ext --inplace

(with no paths, ``--benchmark-only`` collects benches/: benches/plugins/fastmlp_benchpaths.py).
Every workload races fastmlp against the NumPy reference (``fastmlp.reference``) and the
peers that are installed (PyTorch, scikit-learn, ONNX Runtime, JAX): the training suites in
paired rounds within one benchmark (benches/paired.py, their ratios in a summary at the end
of the run), the others as one pytest-benchmark group; a peer that is missing is skipped
with the reason. All of them get the same
data and the same number of threads: ``FASTMLP_BENCH_THREADS`` if set, else every CPU this
process may run on. NumPy's and scikit-learn's BLAS are held to that count with threadpoolctl
for the whole session, PyTorch through ``torch.set_num_threads``, fastmlp through its
``n_threads`` argument; JAX only runs when that count is every usable CPU (its fixture).

No test asserts on wall-clock time: the figures are read from pytest-benchmark's output, or
summarised by ``benches/report.py``.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from paired import fmt_paired, paired_ratio
from threadpoolctl import threadpool_limits

import fastmlp

# The paired races of this session (benches/paired.py), for the summary at the end.
RACES = pytest.StashKey[list]()

# The network every suite races: 784-128-64-10, ReLU, softmax + cross-entropy.
LAYER_SIZES = (784, 128, 64, 10)
ACTIVATIONS = ("relu", "relu", "identity")
DTYPES = ("float32", "float64")
THREADS_ENV = "FASTMLP_BENCH_THREADS"

# Options a bare `pytest benches/ --benchmark-only` would otherwise leave at
# pytest-benchmark's defaults; given on the command line, the command line wins.
# max_time 0.5 s keeps the micro-benchmarks' medians stable while the whole run stays
# within a few minutes on 2 cores. Warm-up on: every implementation's micro-benchmark first
# runs untimed for up to max_time (pytest-benchmark leaves it off on CPython); the epoch
# benchmarks (pedantic) give every implementation the same warm-up round themselves.
_DEFAULT_OPTIONS = {
    "--benchmark-warmup": ("benchmark_warmup", True),
    "--benchmark-max-time": ("benchmark_max_time", 0.5),
    "--benchmark-columns": ("benchmark_columns", ["median", "iqr", "min", "mean", "rounds"]),
    "--benchmark-sort": ("benchmark_sort", "mean"),
}


def bench_threads() -> int:
    """Thread count given to fastmlp and every peer.

    Returns
    -------
    int
        ``FASTMLP_BENCH_THREADS`` if set, else the number of CPUs this process may use.
    """
    value = os.environ.get(THREADS_ENV, "").strip()
    if value:
        count = int(value)
        if count < 1:
            raise ValueError(f"{THREADS_ENV} must be a positive int; got {value!r}")
        return count
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config):
    # tryfirst: pytest-benchmark reads these options in its own pytest_configure.
    given = config.invocation_params.args
    for flag, (dest, value) in _DEFAULT_OPTIONS.items():
        if not any(str(arg).startswith(flag) for arg in given) and hasattr(config.option, dest):
            setattr(config.option, dest, value)


def workload_order(items: list) -> list:
    """``items`` with each workload's implementations next to each other.

    pytest runs a parametrized function for all its parameters before the next function,
    so fastmlp's epoch of a shape ran minutes before PyTorch's, and the shared machines
    these figures come from drift that much (PyTorch / fastmlp on 784-2048-10 read 1.23x
    and 1.51x in two runs of one day). A module that races implementations as test
    functions names the parameters that make a workload in ``WORKLOAD_PARAMS``; its tests
    are grouped by their values, in the order each group first appears. Other modules
    (those comparing along a parameter of one function) keep pytest's order.
    """
    groups: dict = {}
    for item in items:
        names = getattr(item.module, "WORKLOAD_PARAMS", None)
        key = (item.path,)
        if names:
            params = getattr(getattr(item, "callspec", None), "params", {})
            key += tuple(repr(params.get(name)) for name in names)
        groups.setdefault(key, []).append(item)
    return [item for group in groups.values() for item in group]


def pytest_collection_modifyitems(config, items):
    benches = Path(__file__).resolve().parent
    if all(benches in Path(item.path).resolve().parents for item in items):
        items[:] = workload_order(items)


def pytest_report_header(config):
    # Which fastmlp runs: the installed package, or a source tree built in place.
    return [
        f"fastmlp benchmarks: {bench_threads()} threads for fastmlp and every peer",
        f"fastmlp {fastmlp.__version__} from {Path(fastmlp.__file__).parent}",
    ]


@pytest.fixture(scope="session")
def races(request) -> list:
    """Where a paired race appends ``(workload, main's name, seconds by name, missing
    peers)``."""
    return request.config.stash.setdefault(RACES, [])


def pytest_terminal_summary(terminalreporter, config):
    # The ratios of the paired races: pytest-benchmark's tables show one run of each.
    found = config.stash.get(RACES, [])
    if not found:
        return
    write = terminalreporter.write_line
    terminalreporter.section("paired rounds: each epoch over the reported one's, per round")
    write("median (least-greatest) over the rounds; above 1x the reported one was faster")
    for workload, main, seconds, missing in found:
        cells = [
            f"{name} {fmt_paired(paired_ratio(times, seconds[main]))}"
            for name, times in seconds.items()
            if name != main
        ]
        cells += [f"{name}: skipped" for name in missing]
        write(f"{workload:>26} over {main}:  " + ", ".join(cells))
    reasons = {reason for *_, missing in found for reason in missing.values()}
    for reason in sorted(reasons):
        write(f"skipped: {reason}")


# -- threads -----------------------------------------------------------------------------


@pytest.fixture(scope="session")
def n_threads() -> int:
    """Threads for fastmlp and for every peer in this session."""
    return bench_threads()


@pytest.fixture(scope="session")
def scaling_threads() -> list[int]:
    """fastmlp thread counts raced for the scaling figures: 1, 2 and the session's count."""
    return sorted({1, 2, bench_threads()})


@pytest.fixture(scope="session", autouse=True)
def _peers_use_the_same_threads(n_threads):
    # NumPy's BLAS (the reference, scikit-learn) would otherwise take every core, whatever
    # FASTMLP_BENCH_THREADS says. fastmlp sets BLAS to one thread itself while it trains.
    with threadpool_limits(limits=n_threads, user_api="blas"):
        yield


# -- the sgemm peak of a round ------------------------------------------------------------

# One float32 PEAK_N^3 product per thread, all at once, each on one thread of SciPy's
# OpenBLAS (as fastmlp runs BLAS). NumPy's matmul on its own thread pool would leave a
# worker spinning for 0.1 s on the cores the next epoch needs.
PEAK_N = 2048


@dataclass(frozen=True)
class Yardstick:
    """The sgemm peak timed in every round of a paired race, beside the epochs.

    Attributes
    ----------
    run : callable
        One call: ``n_threads`` float32 ``PEAK_N``³ products at once, one per thread.
    flops : int
        The FLOPs of one call.
    """

    run: Callable[[], None]
    flops: int


@pytest.fixture(scope="session")
def sgemm_round(n_threads) -> Yardstick:
    """The yardstick of the share of the sgemm peak in paired races (benches/paired.py)."""
    from fastmlp import _kernels, _threads

    rng = np.random.default_rng(0)
    operands = [
        [rng.standard_normal((PEAK_N, PEAK_N), dtype=np.float32) for _ in range(2)]
        + [np.empty((PEAK_N, PEAK_N), dtype=np.float32)]
        for _ in range(n_threads)
    ]

    def products():
        with _threads.single_threaded_blas(), ThreadPoolExecutor(n_threads) as pool:
            for done in [pool.submit(_kernels.gemm, *abc) for abc in operands]:
                done.result()  # raises what a product raised

    return Yardstick(products, 2 * PEAK_N**3 * n_threads)


# -- data and parameters -----------------------------------------------------------------


@dataclass(frozen=True)
class Mnist:
    """MNIST, loaded once per session.

    Attributes
    ----------
    X : dict of str to ndarray
        Training images (60000, 784), pixels in [0, 1], keyed by "float32" and "float64".
    y : ndarray
        Training labels (60000,), int64.
    X_test : dict of str to ndarray
        Test images (10000, 784), keyed as ``X``.
    y_test : ndarray
        Test labels (10000,), int64.
    """

    X: dict
    y: np.ndarray
    X_test: dict
    y_test: np.ndarray


@pytest.fixture(scope="session")
def mnist() -> Mnist:
    """The MNIST training and test sets in float32 and float64."""
    (X, y), (X_test, y_test) = fastmlp.datasets.load_mnist(
        Path(__file__).resolve().parent / "data" / "mnist", dtype=np.float32
    )
    return Mnist(
        X={"float32": X, "float64": X.astype(np.float64)},
        y=y,
        X_test={"float32": X_test, "float64": X_test.astype(np.float64)},
        y_test=y_test,
    )


@pytest.fixture(params=DTYPES)
def dtype(request) -> str:
    """Precision of the workload: "float32" or "float64"."""
    return request.param


def he_init(
    dtype: str, seed: int = 0, sizes: tuple[int, ...] = LAYER_SIZES
) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Weights and biases of a ReLU network, He-normal as fastmlp initialises ReLU layers.

    Parameters
    ----------
    dtype : str
        "float32" or "float64".
    seed : int
        Seed of the generator, so every peer starts from the same point.
    sizes : tuple of int
        Layer widths from the features to the classes; 784-128-64-10 by default.

    Returns
    -------
    weights, biases : list of ndarray
        ``weights[i]`` of shape (fan_in, fan_out), biases zero.
    """
    rng = np.random.default_rng(seed)
    weights, biases = [], []
    for fan_in, fan_out in zip(sizes[:-1], sizes[1:]):
        W = rng.standard_normal((fan_in, fan_out)) * math.sqrt(2.0 / fan_in)
        weights.append(W.astype(dtype))
        biases.append(np.zeros(fan_out, dtype=dtype))
    return weights, biases


@pytest.fixture(scope="session")
def initial_params():
    """``he_init`` per dtype, computed once; copy before training on them."""
    return {name: he_init(name) for name in DTYPES}


@pytest.fixture(scope="session")
def he_init_for():
    """``he_init`` itself, for suites that race other shapes: ``he_init_for(dtype, sizes=...)``."""
    return he_init


# -- peers: skipped with a reason when not installed -------------------------------------


@pytest.fixture(scope="session")
def torch(n_threads):
    """The torch module, limited to the session's threads; skips when not installed."""
    module = pytest.importorskip(
        "torch", reason="PyTorch is not installed (pip install torch==2.13.0)"
    )
    module.set_num_threads(n_threads)
    return module


@pytest.fixture(scope="session")
def torch_mlp(torch):
    """Factory of the PyTorch peer: ``torch_mlp(weights, biases, dtype) -> nn.Sequential``.

    The plain ``Linear, ReLU, Linear, ReLU, Linear`` stack, loaded with the given weights
    (``Linear`` stores W transposed) so it starts where fastmlp and the reference start.
    """
    nn = torch.nn

    def build(weights, biases, dtype: str):
        layers = []
        for W, b in zip(weights, biases):
            linear = nn.Linear(W.shape[0], W.shape[1], dtype=getattr(torch, dtype))
            with torch.no_grad():
                linear.weight.copy_(torch.from_numpy(np.ascontiguousarray(W.T)))
                linear.bias.copy_(torch.from_numpy(b))
            layers += [linear, nn.ReLU()]
        return nn.Sequential(*layers[:-1])  # no ReLU after the output layer

    return build


@pytest.fixture(scope="session")
def torch_epoch(torch):
    """``torch_epoch(net, optimizer, X, y, batch_size, generator)``: one epoch of the
    PyTorch peer, as every training benchmark runs it: a permutation drawn from
    `generator`, then per mini-batch of those rows (gathered from tensors already in
    memory) cross-entropy, backward and the optimizer's step."""
    loss_fn = torch.nn.CrossEntropyLoss()

    def epoch(net, optimizer, X, y, batch_size: int, generator) -> None:
        order = torch.randperm(X.shape[0], generator=generator)
        for start in range(0, X.shape[0], batch_size):
            idx = order[start : start + batch_size]
            optimizer.zero_grad(set_to_none=True)
            loss_fn(net(X[idx]), y[idx]).backward()
            optimizer.step()

    return epoch


@pytest.fixture(scope="session")
def jax(n_threads):
    """The jax module on the CPU, with optax; skips when either is not installed.

    XLA's CPU backend sizes its thread pool from the CPUs this process may use and has no
    in-process setting for it, so JAX is raced only when the session's thread count is
    that number (the default); otherwise it is skipped with the reason.
    """
    os.environ.setdefault("JAX_PLATFORMS", "cpu")  # no probing for accelerators
    module = pytest.importorskip("jax", reason="JAX is not installed (pip install jax optax)")
    pytest.importorskip("optax", reason="optax is not installed (pip install optax)")
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
    if usable != n_threads:
        pytest.skip(
            f"JAX's CPU backend uses all {usable} usable CPUs; the session runs {n_threads} "
            f"threads (unset {THREADS_ENV}, or run under taskset, to race JAX)"
        )
    return module


@pytest.fixture(scope="session")
def mlp_classifier():
    """scikit-learn's MLPClassifier class; skips when scikit-learn is not installed."""
    module = pytest.importorskip(
        "sklearn.neural_network", reason="scikit-learn is not installed (pip install scikit-learn)"
    )
    return module.MLPClassifier


@pytest.fixture(scope="session")
def onnxruntime():
    """The onnxruntime module; skips when not installed."""
    return pytest.importorskip(
        "onnxruntime", reason="ONNX Runtime is not installed (pip install onnxruntime)"
    )


@pytest.fixture(scope="session")
def onnx():
    """The onnx module (its helper API builds the graph); skips when not installed."""
    return pytest.importorskip("onnx", reason="onnx is not installed (pip install onnx)")
