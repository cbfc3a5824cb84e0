"""Who owns the cores: the thread count, and BLAS kept single-threaded while OpenMP runs.

OpenMP threads and OpenBLAS threads competing for the same cores can make training 60x
slower (see docs/ARCHITECTURE.md). fastmlp therefore gives each phase one owner: inside
training and parallel prediction the OpenMP threads each call single-threaded BLAS.
"""

from __future__ import annotations

import numbers
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from fastmlp import _network

_lock = threading.Lock()
_users = 0
_blas_libs: list | None = None  # threadpoolctl's controllers of the loaded BLAS libraries
_saved: list[int] = []


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


@contextmanager
def single_threaded_blas() -> Iterator[None]:
    """Limit BLAS to one thread for the duration; nests and is safe across threads.

    BLAS has no per-call thread count, so the limit is process-wide and counted: the
    first user sets it, the last one restores what was there before. threadpoolctl finds
    the libraries once; after that each entry and exit costs two calls per library.
    """
    global _users, _blas_libs, _saved
    with _lock:
        if _users == 0:
            if _blas_libs is None:
                from threadpoolctl import ThreadpoolController

                _blas_libs = ThreadpoolController().select(user_api="blas").lib_controllers
            _saved = [lib.get_num_threads() for lib in _blas_libs]
            for lib in _blas_libs:
                lib.set_num_threads(1)
        _users += 1
    try:
        yield
    finally:
        with _lock:
            _users -= 1
            if _users == 0:
                for lib, n in zip(_blas_libs, _saved):
                    lib.set_num_threads(n)


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
