"""Who owns the cores: thread counts, BLAS kept single-threaded, a budget of cores.

OpenMP threads and OpenBLAS threads competing for the same cores can make training 60x
slower (see docs/ARCHITECTURE.md). fastmlp gives each phase one owner: its OpenMP threads
(or the calling thread alone) each call single-threaded BLAS. The compiled calls hold
OpenBLAS at one thread themselves; this module finds OpenBLAS's thread functions once, at
import, and hands them over.
"""

from __future__ import annotations

import ctypes
import itertools
import numbers
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext

from fastmlp import _blas, _network

_lock = threading.Lock()
_fallback_users = 0
_fallback_limiter = None


def _register_openblas() -> None:
    """Give _blas the thread get/set functions of every loaded OpenBLAS.

    threadpoolctl finds the libraries (scipy's OpenBLAS is loaded by now: _blas links
    to it). The functions are called directly rather than through threadpoolctl, whose
    OpenBLAS controller (3.8) honours limits set from one thread only, and which costs
    microseconds per call.
    """
    from threadpoolctl import ThreadpoolController

    for lib in ThreadpoolController().select(internal_api="openblas").lib_controllers:
        if getattr(lib, "threading_layer", None) == "openmp":
            continue  # inside an OpenMP region such a build is single-threaded anyway
        dll = ctypes.CDLL(lib.filepath)
        for prefix, suffix in itertools.product(("", "scipy_"), ("", "64_", "_64")):
            get = getattr(dll, f"{prefix}openblas_get_num_threads{suffix}", None)
            set_ = getattr(dll, f"{prefix}openblas_set_num_threads{suffix}", None)
            if get is not None and set_ is not None:
                address = ctypes.cast(get, ctypes.c_void_p).value
                _blas.register_threads(address, ctypes.cast(set_, ctypes.c_void_p).value)
                break


_register_openblas()


def openmp_enabled() -> bool:
    """Whether the extension was built with OpenMP."""
    return _network.openmp_info()[0]


def effective_n_threads(n_threads: int | None) -> int:
    """Resolve a user's ``n_threads`` into a thread count of at least 1.

    Parameters
    ----------
    n_threads : int or None
        A positive count is used as given. ``None`` or ``-1`` means OpenMP's maximum,
        which follows ``OMP_NUM_THREADS`` and threadpoolctl's OpenMP limit and defaults to
        the CPUs this process may run on.

    Returns
    -------
    int
        1 when the extension was built without OpenMP.
    """
    if n_threads is not None and n_threads != -1:
        if (
            isinstance(n_threads, bool)
            or not isinstance(n_threads, numbers.Integral)
            or n_threads < 1
        ):
            raise ValueError(
                f"n_threads must be a positive int, None or -1 (all cores); got {n_threads!r}"
            )
    built, omp_max = _network.openmp_info()
    if not built:
        return 1
    if n_threads is None or n_threads == -1:
        try:
            cpus = len(os.sched_getaffinity(0))
        except AttributeError:  # not on Linux
            cpus = os.cpu_count() or 1
        return max(1, min(omp_max, cpus))
    return int(n_threads)


def forward_on_cores(network, X, out, *, softmax: bool, n_threads: int | None) -> None:
    """``network.forward(X, out)`` on the calling thread when X is one block, else on
    cores borrowed from the process-wide budget (at most ``n_threads``)."""
    if network.parallel_blocks(X.shape[0]) == 1:
        # One block runs on the calling thread: no parallel region, no core budget.
        network.forward(X, out, softmax=softmax, n_threads=1)
        return
    with borrowed_cores(effective_n_threads(n_threads)) as threads:
        network.forward(X, out, softmax=softmax, n_threads=threads)


def adaptive_threads() -> bool:
    """Whether training may run stretches of steps on fewer of its threads.

    On by default: when other processes share the cores, a paused thread holds up every
    step, and fewer threads run faster (csrc/fm_tuner.h). The results are the same bits
    either way. ``FASTMLP_ADAPTIVE_THREADS=0`` pins the count, e.g. to measure scaling.
    """
    return os.environ.get("FASTMLP_ADAPTIVE_THREADS", "1") != "0"


@contextmanager
def single_threaded_blas() -> Iterator[None]:
    """Hold BLAS at one thread for the duration; nests and is safe across threads.

    The compiled training and gradient calls do this themselves for OpenBLAS; this
    context serves Python callers of single kernels and BLAS libraries other than
    OpenBLAS (through threadpoolctl, process-wide and counted likewise).
    """
    global _fallback_users, _fallback_limiter
    if _blas.threads_registered():
        _blas.enter_single_thread()
        try:
            yield
        finally:
            _blas.exit_single_thread()
        return
    with _lock:
        if _fallback_users == 0:
            from threadpoolctl import threadpool_limits

            _fallback_limiter = threadpool_limits(limits=1, user_api="blas")
        _fallback_users += 1
    try:
        yield
    finally:
        with _lock:
            _fallback_users -= 1
            if _fallback_users == 0:
                _fallback_limiter.restore_original_limits()


def blas_guard():
    """The BLAS limit a compiled call needs from Python around it.

    The compiled calls hold OpenBLAS at one thread themselves, so for OpenBLAS this is a
    no-op; other BLAS libraries (found by threadpoolctl) get the process-wide limit.
    """
    if _blas.threads_registered():
        return nullcontext()
    return single_threaded_blas()


_cores_free: int | None = None


@contextmanager
def borrowed_cores(wanted: int) -> Iterator[int]:
    """Lend up to ``wanted`` threads for one parallel call; yields how many were granted.

    Concurrent callers (a server's request threads) share one budget of as many threads
    as there are cores, so together they never start more OpenMP workers than cores.
    A caller always gets at least its own thread.
    """
    global _cores_free
    with _lock:
        if _cores_free is None:
            _cores_free = effective_n_threads(None)
        granted = max(1, min(wanted, _cores_free))
        _cores_free -= granted
    try:
        yield granted
    finally:
        with _lock:
            _cores_free += granted
