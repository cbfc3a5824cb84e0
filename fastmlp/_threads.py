"""Who owns the cores: the thread count, and BLAS kept single-threaded while OpenMP runs.

OpenMP threads and OpenBLAS threads competing for the same cores can make training 60x
slower (see docs/ARCHITECTURE.md). fastmlp therefore gives each phase one owner: inside
training and parallel prediction the OpenMP threads each call single-threaded BLAS.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from fastmlp import _network

_lock = threading.Lock()
_users = 0
_restore = None
_controller = None


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
        if isinstance(n_threads, bool) or not isinstance(n_threads, int) or n_threads < 1:
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
    return n_threads


@contextmanager
def single_threaded_blas() -> Iterator[None]:
    """Limit BLAS to one thread for the duration; nests and is safe across threads.

    The limit is process-wide (BLAS has no per-call thread count), so it is counted:
    the first user sets it, the last one restores what was there before.
    """
    global _users, _restore, _controller
    with _lock:
        if _users == 0:
            if _controller is None:
                from threadpoolctl import ThreadpoolController

                _controller = ThreadpoolController()
            _restore = _controller.limit(limits=1, user_api="blas")
        _users += 1
    try:
        yield
    finally:
        with _lock:
            _users -= 1
            if _users == 0:
                _restore.restore_original_limits()
                _restore = None
