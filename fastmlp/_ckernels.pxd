# cython: language_level=3
"""The C kernels of csrc/fm_kernels.h (contracts there) and one fused shim for each.

Cython code cimports the shims (``bias_act``, ``dense``, ...), never the ``_f``/``_d``
functions themselves.
"""
from cython cimport floating
from libc.stdint cimport int32_t, int64_t, uint64_t


cdef extern from "fm_tuner.h" nogil:
    ctypedef struct fm_tuner:
        int n_max
        int current
        int probe
    void fm_tuner_init(fm_tuner *t, int n_max, double now)
    void fm_tuner_follow(fm_tuner *t, const fm_tuner *last, int n_max, double now)
    int fm_tuner_threads(const fm_tuner *t)
    void fm_tuner_step(fm_tuner *t, double rows, double now)
    void fm_tuner_resume(fm_tuner *t, double now)


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
                             const float *w, double scale, double smoothing, float *dZ,
                             int64_t *n_correct)
    double fm_softmax_xent_d(Py_ssize_t n, Py_ssize_t k, double *Z, const int32_t *y,
                             const double *w, double scale, double smoothing, double *dZ,
                             int64_t *n_correct)
    double fm_sigmoid_xent_f(Py_ssize_t n, Py_ssize_t k, float *Z, const float *Y,
                             const float *w, double scale, float *dZ, int64_t *n_correct)
    double fm_sigmoid_xent_d(Py_ssize_t n, Py_ssize_t k, double *Z, const double *Y,
                             const double *w, double scale, double *dZ, int64_t *n_correct)
    double fm_mse_f(Py_ssize_t n, Py_ssize_t k, const float *A, const int32_t *y,
                    const float *w, double scale, float *dA, int64_t *n_correct)
    double fm_mse_d(Py_ssize_t n, Py_ssize_t k, const double *A, const int32_t *y,
                    const double *w, double scale, double *dA, int64_t *n_correct)
    double fm_squared_error_f(Py_ssize_t n, Py_ssize_t k, const float *A, const float *Y,
                              const float *w, double scale, float *dA)
    double fm_squared_error_d(Py_ssize_t n, Py_ssize_t k, const double *A, const double *Y,
                              const double *w, double scale, double *dA)
    double fm_huber_f(Py_ssize_t n, Py_ssize_t k, const float *A, const float *Y,
                      const float *w, double scale, double delta, float *dA)
    double fm_huber_d(Py_ssize_t n, Py_ssize_t k, const double *A, const double *Y,
                      const double *w, double scale, double delta, double *dA)
    double fm_absolute_error_f(Py_ssize_t n, Py_ssize_t k, const float *A, const float *Y,
                               const float *w, double scale, float *dA)
    double fm_absolute_error_d(Py_ssize_t n, Py_ssize_t k, const double *A, const double *Y,
                               const double *w, double scale, double *dA)
    double fm_poisson_f(Py_ssize_t n, Py_ssize_t k, const float *A, const float *Y,
                        const float *w, double scale, float *dA)
    double fm_poisson_d(Py_ssize_t n, Py_ssize_t k, const double *A, const double *Y,
                        const double *w, double scale, double *dA)
    void fm_col_sum_f(Py_ssize_t n, Py_ssize_t m, const float *dZ, float *db)
    void fm_col_sum_d(Py_ssize_t n, Py_ssize_t m, const double *dZ, double *db)
    void fm_transpose_f(Py_ssize_t m, Py_ssize_t n, const float *A, Py_ssize_t lda, float *B,
                        Py_ssize_t ldb)
    void fm_transpose_d(Py_ssize_t m, Py_ssize_t n, const double *A, Py_ssize_t lda,
                        double *B, Py_ssize_t ldb)
    void fm_layer_norm_f(Py_ssize_t n, Py_ssize_t m, float *Z, const float *gamma,
                         const float *beta, double eps, int act, float *Zhat, float *rstd)
    void fm_layer_norm_d(Py_ssize_t n, Py_ssize_t m, double *Z, const double *gamma,
                         const double *beta, double eps, int act, double *Zhat,
                         double *rstd)
    void fm_layer_norm_backward_f(Py_ssize_t n, Py_ssize_t m, const float *gamma,
                                  const float *rstd, float *Zhat, float *D, float *G)
    void fm_layer_norm_backward_d(Py_ssize_t n, Py_ssize_t m, const double *gamma,
                                  const double *rstd, double *Zhat, double *D, double *G)
    void fm_batch_norm_partial_f(Py_ssize_t n, Py_ssize_t m, const float *Z, float *mean,
                                 float *m2)
    void fm_batch_norm_partial_d(Py_ssize_t n, Py_ssize_t m, const double *Z, double *mean,
                                 double *m2)
    void fm_batch_norm_stats_f(Py_ssize_t parts, Py_ssize_t n, Py_ssize_t m,
                               const float *pmean, const float *pm2, double eps,
                               double momentum, float *mean, float *rstd, float *run_mean,
                               float *run_var)
    void fm_batch_norm_stats_d(Py_ssize_t parts, Py_ssize_t n, Py_ssize_t m,
                               const double *pmean, const double *pm2, double eps,
                               double momentum, double *mean, double *rstd,
                               double *run_mean, double *run_var)
    void fm_batch_norm_f(Py_ssize_t n, Py_ssize_t m, float *Z, const float *mean,
                         const float *rstd, const float *gamma, const float *beta, int act,
                         float *Zhat)
    void fm_batch_norm_d(Py_ssize_t n, Py_ssize_t m, double *Z, const double *mean,
                         const double *rstd, const double *gamma, const double *beta,
                         int act, double *Zhat)
    void fm_batch_norm_eval_f(Py_ssize_t n, Py_ssize_t m, float *Z, const float *run_mean,
                              const float *run_var, const float *gamma, const float *beta,
                              double eps, int act)
    void fm_batch_norm_eval_d(Py_ssize_t n, Py_ssize_t m, double *Z, const double *run_mean,
                              const double *run_var, const double *gamma,
                              const double *beta, double eps, int act)
    void fm_batch_norm_backward_partial_f(Py_ssize_t n, Py_ssize_t m, const float *D,
                                          const float *Zhat, float *sums)
    void fm_batch_norm_backward_partial_d(Py_ssize_t n, Py_ssize_t m, const double *D,
                                          const double *Zhat, double *sums)
    void fm_batch_norm_backward_f(Py_ssize_t n, Py_ssize_t m, const float *gamma,
                                  const float *rstd, const float *dgb, Py_ssize_t count,
                                  const float *Zhat, float *D)
    void fm_batch_norm_backward_d(Py_ssize_t n, Py_ssize_t m, const double *gamma,
                                  const double *rstd, const double *dgb, Py_ssize_t count,
                                  const double *Zhat, double *D)
    void fm_dropout_f(Py_ssize_t n, Py_ssize_t m, const float *A, float *mask, float *out,
                      double p, uint64_t seed, Py_ssize_t row0)
    void fm_dropout_d(Py_ssize_t n, Py_ssize_t m, const double *A, double *mask,
                      double *out, double p, uint64_t seed, Py_ssize_t row0)
    void fm_adam_f(Py_ssize_t n, float *p, const float *g, float *m, float *v, double lr,
                   double beta1, double beta2, double eps, int64_t t, double weight_decay)
    void fm_adam_d(Py_ssize_t n, double *p, const double *g, double *m, double *v,
                   double lr, double beta1, double beta2, double eps, int64_t t,
                   double weight_decay)
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
                   const float *W, Py_ssize_t ldw, const float *b, const float *tail,
                   int act, float *Z, Py_ssize_t ldz, int accumulate, int isa)
    int fm_dense_d(Py_ssize_t m, Py_ssize_t k, Py_ssize_t n, const double *A,
                   Py_ssize_t lda, const double *W, Py_ssize_t ldw, const double *b,
                   const double *tail, int act, double *Z, Py_ssize_t ldz, int accumulate,
                   int isa)
    int fm_dense_at_f(Py_ssize_t m, Py_ssize_t k, Py_ssize_t n, const float *A,
                      Py_ssize_t lda, const float *B, float *C, Py_ssize_t ldc,
                      int accumulate, int skip_zeros, int isa)
    int fm_dense_at_d(Py_ssize_t m, Py_ssize_t k, Py_ssize_t n, const double *A,
                      Py_ssize_t lda, const double *B, double *C, Py_ssize_t ldc,
                      int accumulate, int skip_zeros, int isa)

    void fm_csr_matmul_f(Py_ssize_t m, Py_ssize_t n, const int64_t *indptr,
                         const int32_t *indices, const float *data, const int64_t *rows,
                         const float *W, float *Z, Py_ssize_t ldz)
    void fm_csr_matmul_d(Py_ssize_t m, Py_ssize_t n, const int64_t *indptr,
                         const int32_t *indices, const double *data, const int64_t *rows,
                         const double *W, double *Z, Py_ssize_t ldz)
    void fm_csr_at_f(Py_ssize_t m, Py_ssize_t n, const int64_t *indptr,
                     const int32_t *indices, const float *data, const int64_t *rows,
                     int32_t c0, int32_t c1, const float *D, float *C, Py_ssize_t ldc,
                     int accumulate)
    void fm_csr_at_d(Py_ssize_t m, Py_ssize_t n, const int64_t *indptr,
                     const int32_t *indices, const double *data, const int64_t *rows,
                     int32_t c0, int32_t c1, const double *D, double *C, Py_ssize_t ldc,
                     int accumulate)


# -- One fused shim per kernel: call sites pass float or double pointers and never branch
# on the dtype; the branch is here, once, resolved at compile time.

cdef inline void bias_act(Py_ssize_t n, Py_ssize_t m, floating *Z, const floating *b,
                          int act) noexcept nogil:
    if floating is float:
        fm_bias_act_f(n, m, Z, b, act)
    else:
        fm_bias_act_d(n, m, Z, b, act)


cdef inline void act_backward(Py_ssize_t n, Py_ssize_t m, const floating *A,
                              const floating *mask, floating *dA, int act) noexcept nogil:
    if floating is float:
        fm_act_backward_f(n, m, A, mask, dA, act)
    else:
        fm_act_backward_d(n, m, A, mask, dA, act)


cdef inline void vecmat(Py_ssize_t n_in, Py_ssize_t n_out, const floating *x,
                        const floating *W, floating *y) noexcept nogil:
    if floating is float:
        fm_vecmat_f(n_in, n_out, x, W, y)
    else:
        fm_vecmat_d(n_in, n_out, x, W, y)


cdef inline int all_finite(Py_ssize_t n, const floating *x) noexcept nogil:
    if floating is float:
        return fm_all_finite_f(n, x)
    else:
        return fm_all_finite_d(n, x)


cdef inline void softmax(Py_ssize_t n, Py_ssize_t k, floating *Z) noexcept nogil:
    if floating is float:
        fm_softmax_f(n, k, Z)
    else:
        fm_softmax_d(n, k, Z)


cdef inline double softmax_xent(Py_ssize_t n, Py_ssize_t k, floating *Z, const int32_t *y,
                                const floating *w, double scale, double smoothing,
                                floating *dZ, int64_t *n_correct) noexcept nogil:
    if floating is float:
        return fm_softmax_xent_f(n, k, Z, y, w, scale, smoothing, dZ, n_correct)
    else:
        return fm_softmax_xent_d(n, k, Z, y, w, scale, smoothing, dZ, n_correct)


cdef inline double sigmoid_xent(Py_ssize_t n, Py_ssize_t k, floating *Z, const floating *Y,
                                const floating *w, double scale, floating *dZ,
                                int64_t *n_correct) noexcept nogil:
    if floating is float:
        return fm_sigmoid_xent_f(n, k, Z, Y, w, scale, dZ, n_correct)
    else:
        return fm_sigmoid_xent_d(n, k, Z, Y, w, scale, dZ, n_correct)


cdef inline double mse(Py_ssize_t n, Py_ssize_t k, const floating *A, const int32_t *y,
                       const floating *w, double scale, floating *dA,
                       int64_t *n_correct) noexcept nogil:
    if floating is float:
        return fm_mse_f(n, k, A, y, w, scale, dA, n_correct)
    else:
        return fm_mse_d(n, k, A, y, w, scale, dA, n_correct)


cdef inline double squared_error(Py_ssize_t n, Py_ssize_t k, const floating *A,
                                 const floating *Y, const floating *w, double scale,
                                 floating *dA) noexcept nogil:
    if floating is float:
        return fm_squared_error_f(n, k, A, Y, w, scale, dA)
    else:
        return fm_squared_error_d(n, k, A, Y, w, scale, dA)


cdef inline double huber(Py_ssize_t n, Py_ssize_t k, const floating *A, const floating *Y,
                         const floating *w, double scale, double delta,
                         floating *dA) noexcept nogil:
    if floating is float:
        return fm_huber_f(n, k, A, Y, w, scale, delta, dA)
    else:
        return fm_huber_d(n, k, A, Y, w, scale, delta, dA)


cdef inline double absolute_error(Py_ssize_t n, Py_ssize_t k, const floating *A,
                                  const floating *Y, const floating *w, double scale,
                                  floating *dA) noexcept nogil:
    if floating is float:
        return fm_absolute_error_f(n, k, A, Y, w, scale, dA)
    else:
        return fm_absolute_error_d(n, k, A, Y, w, scale, dA)


cdef inline double poisson(Py_ssize_t n, Py_ssize_t k, const floating *A, const floating *Y,
                           const floating *w, double scale, floating *dA) noexcept nogil:
    if floating is float:
        return fm_poisson_f(n, k, A, Y, w, scale, dA)
    else:
        return fm_poisson_d(n, k, A, Y, w, scale, dA)


cdef inline void col_sum(Py_ssize_t n, Py_ssize_t m, const floating *dZ,
                         floating *db) noexcept nogil:
    if floating is float:
        fm_col_sum_f(n, m, dZ, db)
    else:
        fm_col_sum_d(n, m, dZ, db)


cdef inline void transpose(Py_ssize_t m, Py_ssize_t n, const floating *A, Py_ssize_t lda,
                           floating *B, Py_ssize_t ldb) noexcept nogil:
    if floating is float:
        fm_transpose_f(m, n, A, lda, B, ldb)
    else:
        fm_transpose_d(m, n, A, lda, B, ldb)


cdef inline void layer_norm(Py_ssize_t n, Py_ssize_t m, floating *Z, const floating *gamma,
                            const floating *beta, double eps, int act, floating *Zhat,
                            floating *rstd) noexcept nogil:
    if floating is float:
        fm_layer_norm_f(n, m, Z, gamma, beta, eps, act, Zhat, rstd)
    else:
        fm_layer_norm_d(n, m, Z, gamma, beta, eps, act, Zhat, rstd)


cdef inline void layer_norm_backward(Py_ssize_t n, Py_ssize_t m, const floating *gamma,
                                     const floating *rstd, floating *Zhat, floating *D,
                                     floating *G) noexcept nogil:
    if floating is float:
        fm_layer_norm_backward_f(n, m, gamma, rstd, Zhat, D, G)
    else:
        fm_layer_norm_backward_d(n, m, gamma, rstd, Zhat, D, G)


cdef inline void batch_norm_partial(Py_ssize_t n, Py_ssize_t m, const floating *Z,
                                    floating *mean, floating *m2) noexcept nogil:
    if floating is float:
        fm_batch_norm_partial_f(n, m, Z, mean, m2)
    else:
        fm_batch_norm_partial_d(n, m, Z, mean, m2)


cdef inline void batch_norm_stats(Py_ssize_t parts, Py_ssize_t n, Py_ssize_t m,
                                  const floating *pmean, const floating *pm2, double eps,
                                  double momentum, floating *mean, floating *rstd,
                                  floating *run_mean, floating *run_var) noexcept nogil:
    if floating is float:
        fm_batch_norm_stats_f(parts, n, m, pmean, pm2, eps, momentum, mean, rstd, run_mean,
                              run_var)
    else:
        fm_batch_norm_stats_d(parts, n, m, pmean, pm2, eps, momentum, mean, rstd, run_mean,
                              run_var)


cdef inline void batch_norm(Py_ssize_t n, Py_ssize_t m, floating *Z, const floating *mean,
                            const floating *rstd, const floating *gamma,
                            const floating *beta, int act, floating *Zhat) noexcept nogil:
    if floating is float:
        fm_batch_norm_f(n, m, Z, mean, rstd, gamma, beta, act, Zhat)
    else:
        fm_batch_norm_d(n, m, Z, mean, rstd, gamma, beta, act, Zhat)


cdef inline void batch_norm_eval(Py_ssize_t n, Py_ssize_t m, floating *Z,
                                 const floating *run_mean, const floating *run_var,
                                 const floating *gamma, const floating *beta, double eps,
                                 int act) noexcept nogil:
    if floating is float:
        fm_batch_norm_eval_f(n, m, Z, run_mean, run_var, gamma, beta, eps, act)
    else:
        fm_batch_norm_eval_d(n, m, Z, run_mean, run_var, gamma, beta, eps, act)


cdef inline void batch_norm_backward_partial(Py_ssize_t n, Py_ssize_t m, const floating *D,
                                             const floating *Zhat,
                                             floating *sums) noexcept nogil:
    if floating is float:
        fm_batch_norm_backward_partial_f(n, m, D, Zhat, sums)
    else:
        fm_batch_norm_backward_partial_d(n, m, D, Zhat, sums)


cdef inline void batch_norm_backward(Py_ssize_t n, Py_ssize_t m, const floating *gamma,
                                     const floating *rstd, const floating *dgb,
                                     Py_ssize_t count, const floating *Zhat,
                                     floating *D) noexcept nogil:
    if floating is float:
        fm_batch_norm_backward_f(n, m, gamma, rstd, dgb, count, Zhat, D)
    else:
        fm_batch_norm_backward_d(n, m, gamma, rstd, dgb, count, Zhat, D)


cdef inline void dropout(Py_ssize_t n, Py_ssize_t m, const floating *A, floating *mask,
                         floating *out, double p, uint64_t seed, Py_ssize_t row0) noexcept nogil:
    if floating is float:
        fm_dropout_f(n, m, A, mask, out, p, seed, row0)
    else:
        fm_dropout_d(n, m, A, mask, out, p, seed, row0)


cdef inline void adam(Py_ssize_t n, floating *p, const floating *g, floating *m, floating *v,
                      double lr, double beta1, double beta2, double eps,
                      int64_t t, double weight_decay) noexcept nogil:
    if floating is float:
        fm_adam_f(n, p, g, m, v, lr, beta1, beta2, eps, t, weight_decay)
    else:
        fm_adam_d(n, p, g, m, v, lr, beta1, beta2, eps, t, weight_decay)


cdef inline void sgd(Py_ssize_t n, floating *p, const floating *g, floating *vel, double lr,
                     double momentum) noexcept nogil:
    if floating is float:
        fm_sgd_f(n, p, g, vel, lr, momentum)
    else:
        fm_sgd_d(n, p, g, vel, lr, momentum)


cdef inline void dense_pack_tail(Py_ssize_t k, Py_ssize_t n, const floating *W,
                                 const floating *b, floating *tail) noexcept nogil:
    if floating is float:
        fm_dense_pack_tail_f(k, n, W, b, tail)
    else:
        fm_dense_pack_tail_d(k, n, W, b, tail)


cdef inline int dense(Py_ssize_t m, Py_ssize_t k, Py_ssize_t n, const floating *A,
                      Py_ssize_t lda, const floating *W, Py_ssize_t ldw, const floating *b,
                      const floating *tail, int act, floating *Z, Py_ssize_t ldz,
                      int accumulate, int isa) noexcept nogil:
    if floating is float:
        return fm_dense_f(m, k, n, A, lda, W, ldw, b, tail, act, Z, ldz, accumulate, isa)
    else:
        return fm_dense_d(m, k, n, A, lda, W, ldw, b, tail, act, Z, ldz, accumulate, isa)


cdef inline int dense_at(Py_ssize_t m, Py_ssize_t k, Py_ssize_t n, const floating *A,
                         Py_ssize_t lda, const floating *B, floating *C, Py_ssize_t ldc,
                         int accumulate, int skip_zeros, int isa) noexcept nogil:
    if floating is float:
        return fm_dense_at_f(m, k, n, A, lda, B, C, ldc, accumulate, skip_zeros, isa)
    else:
        return fm_dense_at_d(m, k, n, A, lda, B, C, ldc, accumulate, skip_zeros, isa)


cdef inline void csr_matmul(Py_ssize_t m, Py_ssize_t n, const int64_t *indptr,
                            const int32_t *indices, const floating *data,
                            const int64_t *rows, const floating *W, floating *Z,
                            Py_ssize_t ldz) noexcept nogil:
    if floating is float:
        fm_csr_matmul_f(m, n, indptr, indices, data, rows, W, Z, ldz)
    else:
        fm_csr_matmul_d(m, n, indptr, indices, data, rows, W, Z, ldz)


cdef inline void csr_at(Py_ssize_t m, Py_ssize_t n, const int64_t *indptr,
                        const int32_t *indices, const floating *data, const int64_t *rows,
                        int32_t c0, int32_t c1, const floating *D, floating *C,
                        Py_ssize_t ldc, int accumulate) noexcept nogil:
    if floating is float:
        fm_csr_at_f(m, n, indptr, indices, data, rows, c0, c1, D, C, ldc, accumulate)
    else:
        fm_csr_at_d(m, n, indptr, indices, data, rows, c0, c1, D, C, ldc, accumulate)
