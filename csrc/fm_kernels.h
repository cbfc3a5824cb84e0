/*
 * fastmlp C kernels: the element-wise and row-wise work of an MLP training step, and the
 * dense layer (our own GEMM tiles) of the forward pass and the weight gradients.
 *
 * Plain C99, no Python, no globals, no allocation: every kernel takes pointers and sizes
 * and works on a block of rows, so the Cython layer can hand each OpenMP thread its own
 * block. Matrices are row-major; "n" counts rows (samples), "m" or "k" columns.
 *
 * Each kernel exists twice, `_f` for float and `_d` for double, both compiled from one body
 * (fm_kernels_impl.h, fm_dense_impl.h) that its .c file includes once per type with T and
 * S defined. Arguments are marked IN, OUT or INOUT.
 */
#ifndef FM_KERNELS_H
#define FM_KERNELS_H

#include <stddef.h>
#include <stdint.h>

/* Activation codes; the switch sits outside the loops so each loop vectorises. */
enum fm_activation { FM_IDENTITY = 0, FM_RELU = 1, FM_TANH = 2, FM_SIGMOID = 3 };

/* A splitmix64 hash of (seed, index): a counter-based random generator, so any block of
   rows draws its own bits with no shared state (same bits for any thread count). */
uint64_t fm_hash64(uint64_t seed, uint64_t index);

/* Z[i,j] = act(Z[i,j] + b[j]).  Z: INOUT n*m, b: IN m. */
void fm_bias_act_f(ptrdiff_t n, ptrdiff_t m, float *Z, const float *b, int act);
void fm_bias_act_d(ptrdiff_t n, ptrdiff_t m, double *Z, const double *b, int act);

/* dA[i,j] *= mask[i,j] * act'(.), act' taken from the output A.  A: IN n*m,
   mask: IN n*m or NULL (all 1), dA: INOUT n*m. */
void fm_act_backward_f(ptrdiff_t n, ptrdiff_t m, const float *A, const float *mask, float *dA,
                       int act);
void fm_act_backward_d(ptrdiff_t n, ptrdiff_t m, const double *A, const double *mask,
                       double *dA, int act);

/* y = x @ W for one row x, skipping the zeros of x (ReLU outputs and pixels are full of
   them).  x: IN n_in, W: IN n_in x n_out, y: OUT n_out. */
void fm_vecmat_f(ptrdiff_t n_in, ptrdiff_t n_out, const float *x, const float *W, float *y);
void fm_vecmat_d(ptrdiff_t n_in, ptrdiff_t n_out, const double *x, const double *W,
                 double *y);

/* 1 if every x[i] is finite, else 0.  x: IN n. */
int fm_all_finite_f(ptrdiff_t n, const float *x);
int fm_all_finite_d(ptrdiff_t n, const double *x);

/* Row-wise softmax in place.  Z: INOUT n*k. */
void fm_softmax_f(ptrdiff_t n, ptrdiff_t k, float *Z);
void fm_softmax_d(ptrdiff_t n, ptrdiff_t k, double *Z);

/* Fused softmax + cross-entropy against the label-smoothed target q = (1 - smoothing)
   onehot(y) + smoothing / k (smoothing in [0, 1), as torch.nn.CrossEntropyLoss), returns
   sum_i w_i * -sum_j q[i, j] log p[i, j] (with smoothing 0: -log p[i, y_i]).  Z: INOUT
   logits in, probabilities out; y: IN n labels in [0, k); w: IN n weights or NULL (all 1);
   dZ: OUT n*k or NULL, scale * w_i * (p - q); n_correct: INOUT, += rows argmax(Z) == y. */
double fm_softmax_xent_f(ptrdiff_t n, ptrdiff_t k, float *Z, const int32_t *y, const float *w,
                         double scale, double smoothing, float *dZ, int64_t *n_correct);
double fm_softmax_xent_d(ptrdiff_t n, ptrdiff_t k, double *Z, const int32_t *y,
                         const double *w, double scale, double smoothing, double *dZ,
                         int64_t *n_correct);

/* Multilabel: a sigmoid and binary cross-entropy per label, summed over the k labels,
   returns sum_i w_i * sum_j (-y log p - (1 - y) log(1 - p)) with p = sigmoid(z) (as
   torch.nn.BCEWithLogitsLoss per element; scikit-learn's multilabel log loss).  Z: INOUT
   logits in, probabilities out; Y: IN n*k targets of 0 or 1; w: IN n or NULL; dZ: OUT
   n*k or NULL, scale * w_i * (p - y); n_correct: INOUT, += rows with every label right
   (z > 0 exactly where y is 1). */
double fm_sigmoid_xent_f(ptrdiff_t n, ptrdiff_t k, float *Z, const float *Y, const float *w,
                         double scale, float *dZ, int64_t *n_correct);
double fm_sigmoid_xent_d(ptrdiff_t n, ptrdiff_t k, double *Z, const double *Y,
                         const double *w, double scale, double *dZ, int64_t *n_correct);

/* Squared error against one-hot targets, returns sum_i w_i * 0.5 * |a_i - t_i|^2.  A: IN
   n*k; y, w, n_correct as in fm_softmax_xent; dA: OUT n*k or NULL, scale * w_i * (a - t). */
double fm_mse_f(ptrdiff_t n, ptrdiff_t k, const float *A, const int32_t *y, const float *w,
                double scale, float *dA, int64_t *n_correct);
double fm_mse_d(ptrdiff_t n, ptrdiff_t k, const double *A, const int32_t *y, const double *w,
                double scale, double *dA, int64_t *n_correct);

/* Squared error against real targets averaged over the k outputs (regression), returns
   sum_i w_i * 0.5 * |a_i - y_i|^2 / k.  A, Y: IN n*k; w: IN n or NULL; dA: OUT n*k or
   NULL, scale * w_i * (a_i - y_i) / k. */
double fm_squared_error_f(ptrdiff_t n, ptrdiff_t k, const float *A, const float *Y,
                          const float *w, double scale, float *dA);
double fm_squared_error_d(ptrdiff_t n, ptrdiff_t k, const double *A, const double *Y,
                          const double *w, double scale, double *dA);

/* The other regression losses, each averaged over the k outputs as fm_squared_error and
   with its arguments; d = a - y elementwise.
   fm_huber: 0.5 d^2 where |d| < delta, else delta (|d| - delta / 2) (torch.nn.HuberLoss);
     gradient clip(d, -delta, delta).
   fm_absolute_error: |d|; gradient sign(d), 0 at d == 0 (torch.nn.L1Loss).
   fm_poisson: a is the log of the mean: exp(a) - y a (torch.nn.PoissonNLLLoss with
     log_input=True, full=False); gradient exp(a) - y. */
double fm_huber_f(ptrdiff_t n, ptrdiff_t k, const float *A, const float *Y, const float *w,
                  double scale, double delta, float *dA);
double fm_huber_d(ptrdiff_t n, ptrdiff_t k, const double *A, const double *Y,
                  const double *w, double scale, double delta, double *dA);
double fm_absolute_error_f(ptrdiff_t n, ptrdiff_t k, const float *A, const float *Y,
                           const float *w, double scale, float *dA);
double fm_absolute_error_d(ptrdiff_t n, ptrdiff_t k, const double *A, const double *Y,
                           const double *w, double scale, double *dA);
double fm_poisson_f(ptrdiff_t n, ptrdiff_t k, const float *A, const float *Y, const float *w,
                    double scale, float *dA);
double fm_poisson_d(ptrdiff_t n, ptrdiff_t k, const double *A, const double *Y,
                    const double *w, double scale, double *dA);

/* db[j] = sum_i dZ[i,j].  dZ: IN n*m, db: OUT m. */
void fm_col_sum_f(ptrdiff_t n, ptrdiff_t m, const float *dZ, float *db);
void fm_col_sum_d(ptrdiff_t n, ptrdiff_t m, const double *dZ, double *db);

/* B = A^T, tile by tile.  A: IN m x n (rows lda apart); B: OUT n x m (rows ldb apart). */
void fm_transpose_f(ptrdiff_t m, ptrdiff_t n, const float *A, ptrdiff_t lda, float *B,
                    ptrdiff_t ldb);
void fm_transpose_d(ptrdiff_t m, ptrdiff_t n, const double *A, ptrdiff_t lda, double *B,
                    ptrdiff_t ldb);

/* Layer normalization of each row over its m columns (torch.nn.LayerNorm, biased
   variance, eps inside the root), then scale, shift and the activation:
   Z[i,:] = act(gamma * zhat + beta), zhat = (z - mean) * rstd, rstd = 1 / sqrt(var + eps).
   Z: INOUT n*m; gamma, beta: IN m; Zhat: OUT n*m or NULL; rstd: OUT n or NULL (training
   keeps both for the backward pass). */
void fm_layer_norm_f(ptrdiff_t n, ptrdiff_t m, float *Z, const float *gamma,
                     const float *beta, double eps, int act, float *Zhat, float *rstd);
void fm_layer_norm_d(ptrdiff_t n, ptrdiff_t m, double *Z, const double *gamma,
                     const double *beta, double eps, int act, double *Zhat, double *rstd);

/* The backward pass of fm_layer_norm's normalization, per row: from D = dL/dy (y = gamma
   zhat + beta, the activation's gradient already applied), dL/dz = rstd (gamma D -
   mean(gamma D) - zhat mean(gamma D zhat)).  gamma: IN m; rstd: IN n; Zhat: INOUT n*m,
   zhat in, D * zhat out (its column sums are dgamma); D: INOUT n*m, dL/dy in, dL/dz out;
   G: OUT n*m, dL/dy (its column sums are dbeta). */
void fm_layer_norm_backward_f(ptrdiff_t n, ptrdiff_t m, const float *gamma, const float *rstd,
                              float *Zhat, float *D, float *G);
void fm_layer_norm_backward_d(ptrdiff_t n, ptrdiff_t m, const double *gamma,
                              const double *rstd, double *Zhat, double *D, double *G);

/* Batch normalization (torch.nn.BatchNorm1d: per column, biased batch variance in
   training, eps inside the root, running estimates with the unbiased variance).
   fm_batch_norm_partial: a part's n >= 1 rows Z (n*m): column means (OUT m) and sums of
   squared deviations m2 (OUT m).
   fm_batch_norm_stats: combines `parts` such partials (pmean, pm2: parts*m, part p holding
   rows [p n / parts, (p + 1) n / parts)) in part order into the batch mean (OUT m) and
   rstd = 1 / sqrt(var + eps) (OUT m); run_mean, run_var (INOUT m, or NULL: no update)
   become (1 - momentum) run + momentum * batch, the batch variance unbiased (n >= 2).
   fm_batch_norm: Z (INOUT n*m) = act(gamma * zhat + beta), zhat = (z - mean) * rstd;
   Zhat: OUT n*m or NULL.
   fm_batch_norm_eval: the same with the running estimates (inference).
   fm_batch_norm_backward_partial: sums (OUT 2m) = column sums of D * Zhat, then of D,
   over n rows (D = dL/dy, y = gamma zhat + beta): a part's dgamma and dbeta.
   fm_batch_norm_backward: D (INOUT n*m) from dL/dy to dL/dz = gamma rstd (D - (dbeta +
   zhat dgamma) / count), dgb (IN 2m) the batch's dgamma then dbeta, count its rows. */
void fm_batch_norm_partial_f(ptrdiff_t n, ptrdiff_t m, const float *Z, float *mean, float *m2);
void fm_batch_norm_partial_d(ptrdiff_t n, ptrdiff_t m, const double *Z, double *mean,
                             double *m2);
void fm_batch_norm_stats_f(ptrdiff_t parts, ptrdiff_t n, ptrdiff_t m, const float *pmean,
                           const float *pm2, double eps, double momentum, float *mean,
                           float *rstd, float *run_mean, float *run_var);
void fm_batch_norm_stats_d(ptrdiff_t parts, ptrdiff_t n, ptrdiff_t m, const double *pmean,
                           const double *pm2, double eps, double momentum, double *mean,
                           double *rstd, double *run_mean, double *run_var);
void fm_batch_norm_f(ptrdiff_t n, ptrdiff_t m, float *Z, const float *mean, const float *rstd,
                     const float *gamma, const float *beta, int act, float *Zhat);
void fm_batch_norm_d(ptrdiff_t n, ptrdiff_t m, double *Z, const double *mean,
                     const double *rstd, const double *gamma, const double *beta, int act,
                     double *Zhat);
void fm_batch_norm_eval_f(ptrdiff_t n, ptrdiff_t m, float *Z, const float *run_mean,
                          const float *run_var, const float *gamma, const float *beta,
                          double eps, int act);
void fm_batch_norm_eval_d(ptrdiff_t n, ptrdiff_t m, double *Z, const double *run_mean,
                          const double *run_var, const double *gamma, const double *beta,
                          double eps, int act);
void fm_batch_norm_backward_partial_f(ptrdiff_t n, ptrdiff_t m, const float *D,
                                      const float *Zhat, float *sums);
void fm_batch_norm_backward_partial_d(ptrdiff_t n, ptrdiff_t m, const double *D,
                                      const double *Zhat, double *sums);
void fm_batch_norm_backward_f(ptrdiff_t n, ptrdiff_t m, const float *gamma, const float *rstd,
                              const float *dgb, ptrdiff_t count, const float *Zhat, float *D);
void fm_batch_norm_backward_d(ptrdiff_t n, ptrdiff_t m, const double *gamma,
                              const double *rstd, const double *dgb, ptrdiff_t count,
                              const double *Zhat, double *D);

/* Inverted dropout, mask = 0 with probability p else 1/(1-p), out = A * mask, bits hashed
   from (seed, row0 + i, j) so the mask ignores how rows are split.  A: IN n*m, mask: OUT
   n*m, out: OUT n*m. */
void fm_dropout_f(ptrdiff_t n, ptrdiff_t m, const float *A, float *mask, float *out, double p,
                  uint64_t seed, ptrdiff_t row0);
void fm_dropout_d(ptrdiff_t n, ptrdiff_t m, const double *A, double *mask, double *out,
                  double p, uint64_t seed, ptrdiff_t row0);

/* Adam step t >= 1 with bias correction, as Kingma & Ba and torch.optim.Adam; with
   weight_decay > 0 AdamW's decoupled decay first, p *= 1 - lr * weight_decay, as
   torch.optim.AdamW (0: plain Adam).  p, m, v: INOUT n; g: IN n. */
void fm_adam_f(ptrdiff_t n, float *p, const float *g, float *m, float *v, double lr,
               double beta1, double beta2, double eps, int64_t t, double weight_decay);
void fm_adam_d(ptrdiff_t n, double *p, const double *g, double *m, double *v, double lr,
               double beta1, double beta2, double eps, int64_t t, double weight_decay);

/* SGD with momentum, torch convention: vel = momentum * vel + g; p -= lr * vel.  p, vel:
   INOUT n; g: IN n. */
void fm_sgd_f(ptrdiff_t n, float *p, const float *g, float *vel, double lr, double momentum);
void fm_sgd_d(ptrdiff_t n, double *p, const double *g, double *vel, double lr,
              double momentum);

/* fm_dense (fm_dense.c): the dense layer of the forward pass, in prediction and training,
   and the weight gradient, by our own register-blocked GEMM on W in place. One variant
   per instruction set; FM_ISA_AUTO picks the best this CPU runs, the others exist for
   tests (FM_ISA_WIDE: the AVX-512 tile shape compiled for AVX2). */
enum fm_isa { FM_ISA_AUTO = -1, FM_ISA_BASE = 0, FM_ISA_AVX2 = 1, FM_ISA_WIDE = 2,
              FM_ISA_AVX512 = 3 };

/* 1 if this CPU (and build) can run variant isa, else 0. */
int fm_dense_isa_available(int isa);

/* The variant FM_ISA_AUTO stands for. */
int fm_dense_isa_best(void);

/* Elements of the tail buffer for a k x n W of elem-byte elements: the last n % panel
   columns and the bias, zero-padded to a 64-byte panel (0 if n is a multiple of it). */
ptrdiff_t fm_dense_tail_size(ptrdiff_t k, ptrdiff_t n, size_t elem);

/* Copies W's last n % panel columns and b's into the zero-padded tail.  W: IN k x n,
   b: IN n, tail: OUT fm_dense_tail_size elements. */
void fm_dense_pack_tail_f(ptrdiff_t k, ptrdiff_t n, const float *W, const float *b,
                          float *tail);
void fm_dense_pack_tail_d(ptrdiff_t k, ptrdiff_t n, const double *W, const double *b,
                          double *tail);

/* Z = act(A @ W + b) (with accumulate, Z = act(Z + A @ W + b)), returns 0 if the sums
   hold NaN or inf (tested before the bias and ReLU, which could hide a NaN), else 1; each
   element sums over k in order with the same instructions for any m, so a row does not
   depend on how the caller splits the rows, and Z's sums continue exactly, so A @ W in
   parts of k accumulated in order gives the bits of one call.
   A: IN m x k (rows lda apart); W: IN k x n (rows ldw apart: a range of a wider W's
   columns, as a wide layer's column parts take); b: IN n, or NULL for none with act
   FM_IDENTITY; tail: IN from fm_dense_pack_tail, or NULL to read the last n % panel
   columns from W and b; Z: OUT (INOUT with accumulate) m x n (rows ldz apart, not
   overlapping A). */
int fm_dense_f(ptrdiff_t m, ptrdiff_t k, ptrdiff_t n, const float *A, ptrdiff_t lda,
               const float *W, ptrdiff_t ldw, const float *b, const float *tail, int act,
               float *Z, ptrdiff_t ldz, int accumulate, int isa);
int fm_dense_d(ptrdiff_t m, ptrdiff_t k, ptrdiff_t n, const double *A, ptrdiff_t lda,
               const double *W, ptrdiff_t ldw, const double *b, const double *tail, int act,
               double *Z, ptrdiff_t ldz, int accumulate, int isa);

/* C = A^T @ B (C += with accumulate), a layer's weight gradient with fm_dense's tiles and
   order of sums, returns 0 if C then holds NaN or inf, else 1. With skip_zeros, each tile
   of C's rows leaves out the rows of A (and B) whose entries for those rows are all +0
   (the first layer on images or one-hot columns): the same bits where B is finite.
   A: IN k x m (rows lda apart); B: IN k x n (rows n apart); C: INOUT m x n (rows ldc
   apart). */
int fm_dense_at_f(ptrdiff_t m, ptrdiff_t k, ptrdiff_t n, const float *A, ptrdiff_t lda,
                  const float *B, float *C, ptrdiff_t ldc, int accumulate, int skip_zeros,
                  int isa);
int fm_dense_at_d(ptrdiff_t m, ptrdiff_t k, ptrdiff_t n, const double *A, ptrdiff_t lda,
                  const double *B, double *C, ptrdiff_t ldc, int accumulate, int skip_zeros,
                  int isa);

/* fm_sparse (fm_sparse.c): the first layer on a CSR X, in prediction and training. X's row
   i holds data[indptr[i] .. indptr[i+1]) in columns indices[...] (any order, duplicates
   summed); the caller has checked indptr and indices against X's shape.
   Z[r, :] = X[rows[r], :] @ W for r < m (rows NULL: row r), each element summed over the
   row's nonzeros in stored order.  W: IN (columns of X) x n; Z: OUT m x n (rows ldz
   apart). */
void fm_csr_matmul_f(ptrdiff_t m, ptrdiff_t n, const int64_t *indptr, const int32_t *indices,
                     const float *data, const int64_t *rows, const float *W, float *Z,
                     ptrdiff_t ldz);
void fm_csr_matmul_d(ptrdiff_t m, ptrdiff_t n, const int64_t *indptr, const int32_t *indices,
                     const double *data, const int64_t *rows, const double *W, double *Z,
                     ptrdiff_t ldz);

/* The first layer's weight gradient over W's rows [c0, c1): C = X[rows]^T[c0:c1] @ D
   (C += with accumulate), by scattering the batch's nonzeros of columns c0..c1-1, in the
   order of the rows then of the nonzeros (no atomics: a caller owning [c0, c1) owns C).
   D: IN m x n; C: INOUT (c1 - c0) x n (rows ldc apart). */
void fm_csr_at_f(ptrdiff_t m, ptrdiff_t n, const int64_t *indptr, const int32_t *indices,
                 const float *data, const int64_t *rows, int32_t c0, int32_t c1,
                 const float *D, float *C, ptrdiff_t ldc, int accumulate);
void fm_csr_at_d(ptrdiff_t m, ptrdiff_t n, const int64_t *indptr, const int32_t *indices,
                 const double *data, const int64_t *rows, int32_t c0, int32_t c1,
                 const double *D, double *C, ptrdiff_t ldc, int accumulate);

#endif
