/* fm_dense: instantiates fm_dense_impl.h per element type and instruction set, and picks
   the variant for the CPU at run time (contract in fm_kernels.h). */
#include <stddef.h>
#include <stdint.h>

#include "fm_kernels.h"

#define FM_PANEL_BYTES 64
/* Bytes of W per k block (fm_dense_impl.h): small enough to stay in L2 beside the rows
   of A and Z in flight; 64 KB measured as fast as 128 or 256 KB on Zen. */
#ifndef FM_DENSE_KBLOCK_BYTES
#define FM_DENSE_KBLOCK_BYTES (64 * 1024)
#endif
#define FM_CAT_(a, b) a##b
#define FM_CAT(a, b) FM_CAT_(a, b)
#define FN(name) FM_CAT(name, S)

/* FM_DENSE_NO_VECTOR builds the plain-C fallback that compilers without GCC's vector
   extensions get (to test it with GCC). */
#if defined(__GNUC__) && !defined(FM_DENSE_NO_VECTOR)
#define FM_DENSE_VECTOR 1
#else
#define FM_DENSE_VECTOR 0
#endif

#if FM_DENSE_VECTOR && (defined(__x86_64__) || defined(__i386__)) && !defined(FM_NO_DISPATCH)
#define FM_DENSE_X86 1
#else
#define FM_DENSE_X86 0
#endif

/* The variants, per element type. The baseline uses 16-byte vectors (SSE2 on x86-64, NEON
   or the compiler's lowering elsewhere); AVX2 keeps a 6-row x 1-panel tile in 12 of its 16
   ymm registers; AVX-512 an 8-row x 2-panel tile in 16 of its 32 zmm. "wide" is the
   AVX-512 tile shape compiled for AVX2: it exists so that the tests run that shape's code
   on machines without AVX-512. */
#if FM_DENSE_VECTOR
#define T float
#define S _f
#define IT int32_t
#include "fm_dense_variants.h"
#undef T
#undef S
#undef IT

#define T double
#define S _d
#define IT int64_t
#include "fm_dense_variants.h"
#undef T
#undef S
#undef IT

#else /* no GCC vector extensions: one plain loop with the same sums */
#define FM_DENSE_PLAIN(T, S)                                                               \
    static int fm_dense##S##_base(ptrdiff_t m, ptrdiff_t k, ptrdiff_t n, const T *A,        \
                                  ptrdiff_t lda, const T *W, const T *b, const T *tail,     \
                                  int act, T *Z, ptrdiff_t ldz)                             \
    {                                                                                      \
        int ok = 1;                                                                        \
        (void)tail;                                                                        \
        for (ptrdiff_t i = 0; i < m; i++) {                                                \
            T *restrict z = Z + i * ldz;                                                   \
            for (ptrdiff_t j = 0; j < n; j++) z[j] = 0;                                    \
            for (ptrdiff_t p = 0; p < k; p++) { /* axpy form: the j loop vectorises */     \
                const T s = A[i * lda + p];                                                \
                const T *restrict w = W + p * n;                                           \
                for (ptrdiff_t j = 0; j < n; j++) z[j] += s * w[j];                        \
            }                                                                              \
            for (ptrdiff_t j = 0; j < n; j++) ok &= z[j] - z[j] == 0;                      \
            fm_bias_act##S(1, n, z, b, act);                                               \
        }                                                                                  \
        return ok;                                                                         \
    }                                                                                      \
    static int fm_dense_at##S##_base(ptrdiff_t m, ptrdiff_t k, ptrdiff_t n, const T *A,     \
                                     ptrdiff_t lda, const T *B, T *C, ptrdiff_t ldc,        \
                                     int accumulate)                                       \
    {                                                                                      \
        int ok = 1;                                                                        \
        for (ptrdiff_t i = 0; i < m; i++) {                                                \
            T *restrict c = C + i * ldc;                                                   \
            if (!accumulate)                                                               \
                for (ptrdiff_t j = 0; j < n; j++) c[j] = 0;                                \
            for (ptrdiff_t p = 0; p < k; p++) {                                            \
                const T s = A[p * lda + i];                                                \
                const T *restrict bp = B + p * n;                                          \
                for (ptrdiff_t j = 0; j < n; j++) c[j] += s * bp[j];                       \
            }                                                                              \
            for (ptrdiff_t j = 0; j < n; j++) ok &= c[j] - c[j] == 0;                      \
        }                                                                                  \
        return ok;                                                                         \
    }
FM_DENSE_PLAIN(float, _f)
FM_DENSE_PLAIN(double, _d)
#endif

int fm_dense_isa_available(int isa)
{
#if FM_DENSE_X86
    __builtin_cpu_init(); /* idempotent; needed if called before constructors have run */
#endif
    switch (isa) {
    case FM_ISA_BASE:
        return 1;
#if FM_DENSE_X86
    case FM_ISA_AVX2:
    case FM_ISA_WIDE:
        return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    case FM_ISA_AVX512:
        return __builtin_cpu_supports("avx512f");
#endif
    default:
        return 0;
    }
}

int fm_dense_isa_best(void)
{
    if (fm_dense_isa_available(FM_ISA_AVX512)) return FM_ISA_AVX512;
    if (fm_dense_isa_available(FM_ISA_AVX2)) return FM_ISA_AVX2;
    return FM_ISA_BASE;
}

ptrdiff_t fm_dense_tail_size(ptrdiff_t k, ptrdiff_t n, size_t elem)
{
    const ptrdiff_t panel = FM_PANEL_BYTES / (ptrdiff_t)elem;
    return n % panel ? (k + 1) * panel : 0;
}

#define FM_DENSE_DEFINE(T, S)                                                             \
    void fm_dense_pack_tail##S(ptrdiff_t k, ptrdiff_t n, const T *W, const T *b, T *tail)  \
    {                                                                                     \
        const ptrdiff_t panel = FM_PANEL_BYTES / (ptrdiff_t)sizeof(T);                    \
        const ptrdiff_t j0 = n - n % panel;                                               \
        if (j0 == n) return;                                                              \
        for (ptrdiff_t p = 0; p <= k; p++) {                                              \
            const T *src = p < k ? W + p * n + j0 : b + j0;                               \
            for (ptrdiff_t j = 0; j < panel; j++)                                         \
                tail[p * panel + j] = j0 + j < n ? src[j] : 0;                            \
        }                                                                                 \
    }                                                                                     \
    int fm_dense##S(ptrdiff_t m, ptrdiff_t k, ptrdiff_t n, const T *A, ptrdiff_t lda,      \
                    const T *W, const T *b, const T *tail, int act, T *Z, ptrdiff_t ldz,   \
                    int isa)                                                              \
    {                                                                                     \
        if (isa < 0) isa = fm_dense_isa_best();                                           \
        switch (FM_DENSE_X86 ? isa : FM_ISA_BASE) {                                       \
        FM_DENSE_CASES(S, fm_dense, (m, k, n, A, lda, W, b, tail, act, Z, ldz))           \
        default:                                                                          \
            return fm_dense##S##_base(m, k, n, A, lda, W, b, tail, act, Z, ldz);          \
        }                                                                                 \
    }                                                                                     \
    int fm_dense_at##S(ptrdiff_t m, ptrdiff_t k, ptrdiff_t n, const T *A, ptrdiff_t lda,   \
                       const T *B, T *C, ptrdiff_t ldc, int accumulate, int isa)          \
    {                                                                                     \
        if (isa < 0) isa = fm_dense_isa_best();                                           \
        switch (FM_DENSE_X86 ? isa : FM_ISA_BASE) {                                       \
        FM_DENSE_CASES(S, fm_dense_at, (m, k, n, A, lda, B, C, ldc, accumulate))          \
        default:                                                                          \
            return fm_dense_at##S##_base(m, k, n, A, lda, B, C, ldc, accumulate);         \
        }                                                                                 \
    }

#if FM_DENSE_X86
#define FM_DENSE_CASES(S, f, args)                                                        \
    case FM_ISA_AVX2:                                                                     \
        return f##S##_avx2 args;                                                          \
    case FM_ISA_WIDE:                                                                     \
        return f##S##_wide args;                                                          \
    case FM_ISA_AVX512:                                                                   \
        return f##S##_avx512 args;
#else
#define FM_DENSE_CASES(S, f, args)
#endif

FM_DENSE_DEFINE(float, _f)
FM_DENSE_DEFINE(double, _d)
