/*
 * fastmlp C kernels: the element-wise and row-wise work of an MLP training step.
 *
 * Plain C99, no Python, no globals, no allocation: every kernel takes pointers and sizes
 * and works on a block of rows, so the Cython layer can hand each OpenMP thread its own
 * block. Matrices are row-major; "n" counts rows (samples), "m" or "k" columns.
 *
 * Each kernel exists twice, `_f` for float and `_d` for double, both generated from the one
 * body in fm_kernels_impl.h. Arguments are marked IN, OUT or INOUT.
 */
#ifndef FM_KERNELS_H
#define FM_KERNELS_H

#include <stddef.h>
#include <stdint.h>

/* Activation codes; the switch sits outside the loops so each loop vectorises. */
enum fm_activation { FM_IDENTITY = 0, FM_RELU = 1, FM_TANH = 2, FM_SIGMOID = 3 };

/* A splitmix64 hash of (seed, index): a counter-based random generator, so any block of
   rows draws its own bits with no shared state (no data race, same bits for any thread
   count). Also used to derive per-step and per-layer seeds. */
uint64_t fm_hash64(uint64_t seed, uint64_t index);

#define FM_DECLARE(T, S)                                                                    \
    /* Z[i,j] = act(Z[i,j] + b[j]).  Z: INOUT n*m, b: IN m. */                             \
    void fm_bias_act##S(ptrdiff_t n, ptrdiff_t m, T *Z, const T *b, int act);              \
    /* dA[i,j] *= mask[i,j] * act'(.) with act' taken from the output A (mask may be       \
       NULL).  A: IN n*m, mask: IN n*m or NULL, dA: INOUT n*m. */                          \
    void fm_act_backward##S(ptrdiff_t n, ptrdiff_t m, const T *A, const T *mask, T *dA,    \
                            int act);                                                       \
    /* y = x @ W for one row x (W row-major n_in x n_out), skipping the zeros of x,      \
       which ReLU outputs and pixel images are full of.  x: IN n_in, W: IN, y: OUT. */     \
    void fm_vecmat##S(ptrdiff_t n_in, ptrdiff_t n_out, const T *x, const T *W, T *y);     \
    /* 1 if every x[i] is finite, else 0.  x: IN n. */                                     \
    int fm_all_finite##S(ptrdiff_t n, const T *x);                                          \
    /* Row-wise softmax in place.  Z: INOUT n*k. */                                        \
    void fm_softmax##S(ptrdiff_t n, ptrdiff_t k, T *Z);                                    \
    /* Fused softmax + cross-entropy.  Z: INOUT logits in, probabilities out; y: IN        \
       labels in [0, k); w: IN per-row weights or NULL (all 1).  Returns                   \
       sum_i w_i * -log p[i, y_i].  If dZ (OUT n*k) is not NULL it receives                \
       scale * w_i * (p - onehot(y)).  *n_correct (INOUT) counts argmax(Z) == y. */        \
    double fm_softmax_xent##S(ptrdiff_t n, ptrdiff_t k, T *Z, const int32_t *y,            \
                              const T *w, double scale, T *dZ, int64_t *n_correct);         \
    /* Squared error against one-hot targets: returns sum_i w_i * 0.5 * |a_i - t_i|^2,     \
       dA (OUT or NULL) = scale * w_i * (a - t).  A: IN n*k. */                            \
    double fm_mse##S(ptrdiff_t n, ptrdiff_t k, const T *A, const int32_t *y, const T *w,   \
                     double scale, T *dA, int64_t *n_correct);                              \
    /* Squared error against real targets, averaged over the k outputs (regression):     \
       returns sum_i w_i * 0.5 * |a_i - y_i|^2 / k, dA (OUT or NULL) =                     \
       scale * w_i * (a_i - y_i) / k.  A, Y: IN n*k. */                                    \
    double fm_squared_error##S(ptrdiff_t n, ptrdiff_t k, const T *A, const T *Y,           \
                               const T *w, double scale, T *dA);                            \
    /* db[j] = sum_i dZ[i,j].  dZ: IN n*m, db: OUT m. */                                   \
    void fm_col_sum##S(ptrdiff_t n, ptrdiff_t m, const T *dZ, T *db);                      \
    /* Inverted dropout: mask = 0 with probability p, else 1/(1-p); out = A * mask.        \
       Bits come from a hash of (seed, row0 + i, j), so the mask does not depend on how    \
       rows are split among threads.  A: IN, mask: OUT, out: OUT, all n*m. */              \
    void fm_dropout##S(ptrdiff_t n, ptrdiff_t m, const T *A, T *mask, T *out, double p,    \
                       uint64_t seed, ptrdiff_t row0);                                      \
    /* Adam with bias correction (step t >= 1), as in Kingma & Ba and torch.optim.Adam.    \
       p, m, v: INOUT n, g: IN n. */                                                        \
    void fm_adam##S(ptrdiff_t n, T *p, const T *g, T *m, T *v, double lr, double beta1,    \
                    double beta2, double eps, int64_t t);                                   \
    /* SGD with momentum, torch convention: vel = momentum*vel + g; p -= lr*vel.           \
       p, vel: INOUT n, g: IN n. */                                                         \
    void fm_sgd##S(ptrdiff_t n, T *p, const T *g, T *vel, double lr, double momentum);

FM_DECLARE(float, _f)
FM_DECLARE(double, _d)

#undef FM_DECLARE

/* fm_dense (fm_dense.c): a dense layer Z = act(A @ W + b) for prediction, by our own
   register-blocked GEMM (W row-major, used in place). Variants per instruction set;
   FM_ISA_AUTO picks the best this CPU runs, the others exist for tests. */
enum fm_isa { FM_ISA_AUTO = -1, FM_ISA_BASE = 0, FM_ISA_AVX2 = 1, FM_ISA_WIDE = 2,
              FM_ISA_AVX512 = 3 };
/* 1 if this CPU (and build) can run variant isa. */
int fm_dense_isa_available(int isa);
/* The variant FM_ISA_AUTO stands for. */
int fm_dense_isa_best(void);
/* Elements of the tail buffer for a k x n W of elem-byte elements: the last n % panel
   columns and bias, zero-padded to a 64-byte panel (0 when n is a multiple of it). */
ptrdiff_t fm_dense_tail_size(ptrdiff_t k, ptrdiff_t n, size_t elem);

#define FM_DECLARE_DENSE(T, S)                                                              \
    /* Fill tail (OUT, fm_dense_tail_size elements) from W (IN k x n) and b (IN n). */     \
    void fm_dense_pack_tail##S(ptrdiff_t k, ptrdiff_t n, const T *W, const T *b, T *tail);  \
    /* Z = act(A @ W + b): A IN m x k (rows lda apart), W IN k x n, b IN n, tail IN from   \
       fm_dense_pack_tail or NULL (then the last n % panel columns are read from W and b   \
       element by element: slower), Z OUT m x n (rows ldz apart, not overlapping A).      \
       Returns 0 if A @ W holds NaN or inf (before the bias: NaN in A survives into it     \
       where ReLU would hide it), else 1. Each element sums over k in order with the      \
       same instructions for any m, so rows do not depend on how the caller splits them. */\
    int fm_dense##S(ptrdiff_t m, ptrdiff_t k, ptrdiff_t n, const T *A, ptrdiff_t lda,       \
                    const T *W, const T *b, const T *tail, int act, T *Z, ptrdiff_t ldz,    \
                    int isa);                                                               \
    /* C (+)= A^T @ B, the weight gradient of a layer: A IN k x m (rows lda apart), B IN   \
       k x n (rows n apart), C IN/OUT m x n (rows ldc apart); `accumulate` adds to C.     \
       Same tiles, k blocks and order of sums as fm_dense; returns 0 if C then holds NaN   \
       or inf, else 1. */                                                                  \
    int fm_dense_at##S(ptrdiff_t m, ptrdiff_t k, ptrdiff_t n, const T *A, ptrdiff_t lda,    \
                       const T *B, T *C, ptrdiff_t ldc, int accumulate, int isa);

FM_DECLARE_DENSE(float, _f)
FM_DECLARE_DENSE(double, _d)

#undef FM_DECLARE_DENSE

#endif
