# cython: language_level=3
"""Row-major GEMM over scipy's BLAS (nothing to link: SciPy ships OpenBLAS), and the
counted limit that keeps that BLAS single-threaded while fastmlp's threads own the cores.

scipy's sgemm/dgemm are taken at import from ``scipy.linalg.cython_blas.__pyx_capi__`` (the
capsules a ``cimport`` of them reads) into the two pointers below, so building needs no SciPy.

BLAS is column-major and a row-major matrix is its column-major transpose, so the row-major
product C = op(A) op(B) is computed as the column-major product C^T = op(B)^T op(A)^T: the
operands swap places and nothing is copied. This is the only place that mapping lives.
"""
from cython cimport floating

ctypedef void (*sgemm_t)(char *transa, char *transb, int *m, int *n, int *k, float *alpha,
                         float *a, int *lda, float *b, int *ldb, float *beta, float *c,
                         int *ldc) noexcept nogil
ctypedef void (*dgemm_t)(char *transa, char *transb, int *m, int *n, int *k, double *alpha,
                         double *a, int *lda, double *b, int *ldb, double *beta, double *c,
                         int *ldc) noexcept nogil

# Set when fastmlp._blas is imported (which every module cimporting this one does first).
cdef sgemm_t sgemm
cdef dgemm_t dgemm


cdef inline void gemm(bint trans_a, bint trans_b, int m, int n, int k, floating alpha,
                      const floating *a, int lda, const floating *b, int ldb, floating beta,
                      floating *c, int ldc) noexcept nogil:
    """C[m, n] = alpha * op(A)[m, k] @ op(B)[k, n] + beta * C, all row-major.

    op(X) is X or X^T; lda, ldb, ldc are row strides (elements) of the stored matrices.
    """
    cdef char ta = b"T" if trans_a else b"N"
    cdef char tb = b"T" if trans_b else b"N"
    if floating is float:
        sgemm(&tb, &ta, &n, &m, &k, &alpha, <float *> b, &ldb, <float *> a, &lda, &beta,
              c, &ldc)
    else:
        dgemm(&tb, &ta, &n, &m, &k, &alpha, <double *> b, &ldb, <double *> a, &lda, &beta,
              c, &ldc)


# Hold every registered OpenBLAS at one thread from enter to the matching exit (counted
# across threads: the first caller in sets it, the last one out restores it).
cdef void single_thread_enter() noexcept nogil
cdef void single_thread_exit() noexcept nogil
