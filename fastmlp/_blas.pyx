# cython: language_level=3
"""scipy's sgemm/dgemm for ``gemm``, and the counted single-thread limit on OpenBLAS
(both declared in _blas.pxd).

OpenBLAS's thread count is one process-wide number. Every compiled call that runs BLAS
GEMMs holds it at 1 (OpenMP, or the calling thread alone, owns the cores), counted so
that concurrent calls from many threads set it once and the last one out restores it.
``_threads.py`` registers the get/set functions of each loaded OpenBLAS at import.
"""

from cpython.pycapsule cimport PyCapsule_GetPointer, PyCapsule_IsValid

cdef extern from "pythread.h" nogil:
    ctypedef void *PyThread_type_lock
    PyThread_type_lock PyThread_allocate_lock()
    int PyThread_acquire_lock(PyThread_type_lock lock, int waitflag)
    void PyThread_release_lock(PyThread_type_lock lock)

ctypedef int (*blas_get_t)() noexcept nogil
ctypedef void (*blas_set_t)(int) noexcept nogil

cdef enum:
    MAX_BLAS_LIBS = 4

cdef blas_get_t blas_get[MAX_BLAS_LIBS]
cdef blas_set_t blas_set[MAX_BLAS_LIBS]
cdef int blas_saved[MAX_BLAS_LIBS]
cdef int n_blas_libs = 0
cdef int blas_users = 0
cdef PyThread_type_lock blas_lock = PyThread_allocate_lock()


cdef void *scipy_blas_function(str name, str scalar) except NULL:
    """The address of ``scipy.linalg.cython_blas.<name>``, checked against the C signature
    ``_blas.pxd`` declares for it (``scalar``: scipy's typedef, ``s`` float, ``d`` double).
    """
    from scipy.linalg import cython_blas

    # The signature Cython writes into the capsule's name, as a cimport would check it.
    t = f"__pyx_t_5scipy_6linalg_11cython_blas_{scalar} *"
    signature = (
        f"void (char *, char *, int *, int *, int *, {t}, {t}, int *, {t}, int *, {t}, {t}, "
        "int *)"
    ).encode()
    capsule = getattr(cython_blas, "__pyx_capi__", {}).get(name)
    if capsule is None or not PyCapsule_IsValid(capsule, signature):
        raise ImportError(
            f"fastmlp needs scipy.linalg.cython_blas.{name} with the C signature "
            f"{signature.decode()!r}; this SciPy has {capsule!r}. Install a SciPy >= 1.11 "
            "built with Cython (the wheels from PyPI or conda-forge are)."
        )
    return PyCapsule_GetPointer(capsule, signature)


sgemm = <sgemm_t> scipy_blas_function("sgemm", "s")
dgemm = <dgemm_t> scipy_blas_function("dgemm", "d")


def register_threads(size_t get_address, size_t set_address):
    """Register an OpenBLAS's ``openblas_get_num_threads`` and ``..._set_num_threads``.

    Returns False (and registers nothing) when the table is full or an address is 0.
    """
    global n_blas_libs
    if n_blas_libs == MAX_BLAS_LIBS or get_address == 0 or set_address == 0:
        return False
    blas_get[n_blas_libs] = <blas_get_t> get_address
    blas_set[n_blas_libs] = <blas_set_t> set_address
    n_blas_libs += 1
    return True


def threads_registered():
    """How many BLAS libraries the compiled calls keep single-threaded."""
    return n_blas_libs


cdef void single_thread_enter() noexcept nogil:
    global blas_users
    cdef int i
    PyThread_acquire_lock(blas_lock, 1)
    if blas_users == 0:
        for i in range(n_blas_libs):
            blas_saved[i] = blas_get[i]()
            if blas_saved[i] != 1:
                blas_set[i](1)
    blas_users += 1
    PyThread_release_lock(blas_lock)


cdef void single_thread_exit() noexcept nogil:
    global blas_users
    cdef int i
    PyThread_acquire_lock(blas_lock, 1)
    blas_users -= 1
    if blas_users == 0:
        for i in range(n_blas_libs):
            if blas_saved[i] != 1:
                blas_set[i](blas_saved[i])
    PyThread_release_lock(blas_lock)


def enter_single_thread():
    """Python access to the counted limit (``_threads.single_threaded_blas``)."""
    single_thread_enter()


def exit_single_thread():
    """Undo one :func:`enter_single_thread`."""
    single_thread_exit()
