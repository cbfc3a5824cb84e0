# cython: language_level=3
"""Declarations of the C kernels in csrc/fm_kernels.h (contracts are documented there)."""
from libc.stdint cimport int32_t, int64_t, uint64_t


cdef extern from "fm_kernels.h" nogil:
    enum:
        FM_IDENTITY
        FM_RELU
        FM_TANH
        FM_SIGMOID

    void fm_bias_act_f(Py_ssize_t n, Py_ssize_t m, float *Z, const float *b, int act)
    void fm_bias_act_d(Py_ssize_t n, Py_ssize_t m, double *Z, const double *b, int act)
    void fm_act_backward_f(Py_ssize_t n, Py_ssize_t m, const float *A, const float *mask,
                           float *dA, int act)
    void fm_act_backward_d(Py_ssize_t n, Py_ssize_t m, const double *A, const double *mask,
                           double *dA, int act)
    void fm_vecmat_f(Py_ssize_t n_in, Py_ssize_t n_out, const float *x, const float *W,
                     float *y)
    void fm_vecmat_d(Py_ssize_t n_in, Py_ssize_t n_out, const double *x, const double *W,
                     double *y)
    int fm_all_finite_f(Py_ssize_t n, const float *x)
    int fm_all_finite_d(Py_ssize_t n, const double *x)
    void fm_softmax_f(Py_ssize_t n, Py_ssize_t k, float *Z)
    void fm_softmax_d(Py_ssize_t n, Py_ssize_t k, double *Z)
    double fm_softmax_xent_f(Py_ssize_t n, Py_ssize_t k, float *Z, const int32_t *y,
                             const float *w, double scale, float *dZ, int64_t *n_correct)
    double fm_softmax_xent_d(Py_ssize_t n, Py_ssize_t k, double *Z, const int32_t *y,
                             const double *w, double scale, double *dZ, int64_t *n_correct)
    double fm_mse_f(Py_ssize_t n, Py_ssize_t k, const float *A, const int32_t *y,
                    const float *w, double scale, float *dA, int64_t *n_correct)
    double fm_mse_d(Py_ssize_t n, Py_ssize_t k, const double *A, const int32_t *y,
                    const double *w, double scale, double *dA, int64_t *n_correct)
    double fm_squared_error_f(Py_ssize_t n, Py_ssize_t k, const float *A, const float *Y,
                              const float *w, double scale, float *dA)
    double fm_squared_error_d(Py_ssize_t n, Py_ssize_t k, const double *A, const double *Y,
                              const double *w, double scale, double *dA)
    void fm_col_sum_f(Py_ssize_t n, Py_ssize_t m, const float *dZ, float *db)
    void fm_col_sum_d(Py_ssize_t n, Py_ssize_t m, const double *dZ, double *db)
    void fm_dropout_f(Py_ssize_t n, Py_ssize_t m, const float *A, float *mask, float *out,
                      double p, uint64_t seed, Py_ssize_t row0)
    void fm_dropout_d(Py_ssize_t n, Py_ssize_t m, const double *A, double *mask,
                      double *out, double p, uint64_t seed, Py_ssize_t row0)
    void fm_adam_f(Py_ssize_t n, float *p, const float *g, float *m, float *v, double lr,
                   double beta1, double beta2, double eps, int64_t t)
    void fm_adam_d(Py_ssize_t n, double *p, const double *g, double *m, double *v,
                   double lr, double beta1, double beta2, double eps, int64_t t)
    void fm_sgd_f(Py_ssize_t n, float *p, const float *g, float *vel, double lr,
                  double momentum)
    void fm_sgd_d(Py_ssize_t n, double *p, const double *g, double *vel, double lr,
                  double momentum)

    uint64_t fm_hash64(uint64_t seed, uint64_t index)

    enum:
        FM_ISA_AUTO
        FM_ISA_BASE
        FM_ISA_AVX2
        FM_ISA_WIDE
        FM_ISA_AVX512
    int fm_dense_isa_available(int isa)
    int fm_dense_isa_best()
    Py_ssize_t fm_dense_tail_size(Py_ssize_t k, Py_ssize_t n, size_t elem)
    void fm_dense_pack_tail_f(Py_ssize_t k, Py_ssize_t n, const float *W, const float *b,
                              float *tail)
    void fm_dense_pack_tail_d(Py_ssize_t k, Py_ssize_t n, const double *W, const double *b,
                              double *tail)
    int fm_dense_f(Py_ssize_t m, Py_ssize_t k, Py_ssize_t n, const float *A, Py_ssize_t lda,
                   const float *W, const float *b, const float *tail, int act, float *Z,
                   Py_ssize_t ldz, int isa)
    int fm_dense_d(Py_ssize_t m, Py_ssize_t k, Py_ssize_t n, const double *A,
                   Py_ssize_t lda, const double *W, const double *b, const double *tail,
                   int act, double *Z, Py_ssize_t ldz, int isa)
    int fm_dense_at_f(Py_ssize_t m, Py_ssize_t k, Py_ssize_t n, const float *A,
                      Py_ssize_t lda, const float *B, float *C, Py_ssize_t ldc,
                      int accumulate, int isa)
    int fm_dense_at_d(Py_ssize_t m, Py_ssize_t k, Py_ssize_t n, const double *A,
                      Py_ssize_t lda, const double *B, double *C, Py_ssize_t ldc,
                      int accumulate, int isa)
