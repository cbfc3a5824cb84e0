/* int8 inference, AVX2 variants (contracts in fm_int8.h). A strip: fm_int8_strip_impl.h's
   body with vpmaddubsw; 4 rows x 16 columns of int32 sums in 8 registers. The input's
   quantization: 32 inputs per step, where the plain-C loop converts one at a time. */
#include "fm_int8_shared.h"

#if FM_INT8_X86
#include <immintrin.h>

#define FM_AVX2 __attribute__((target("avx2")))

FM_AVX2 int fm_int8_quantize_avx2(ptrdiff_t m, ptrdiff_t k, const float *X, ptrdiff_t ldx,
                                  float inv, int zero_point, uint8_t *Q, ptrdiff_t ldq)
{
    const ptrdiff_t k4 = fm_int8_round_up(k, FM_INT8_GROUP);
    const float lo = (float)-zero_point, hi = (float)(FM_INT8_QMAX - zero_point);
    const __m256 vinv = _mm256_set1_ps(inv), vlo = _mm256_set1_ps(lo), vhi = _mm256_set1_ps(hi);
    const __m256i zp = _mm256_set1_epi32(zero_point);
    /* packs and packus interleave the 128-bit lanes; this puts the 4-byte groups back. */
    const __m256i order = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
    __m256 nonfinite = _mm256_setzero_ps(); /* sums v - v: 0, or NaN once some v is not finite */
    int ok = 1;
    ptrdiff_t r, i;
    int h;
    for (r = 0; r < m; r++) {
        const float *x = X + r * ldx;
        uint8_t *q = Q + r * ldq;
        for (i = 0; i + 32 <= k; i += 32) {
            __m256i c[4], p;
            for (h = 0; h < 4; h++) {
                __m256 v = _mm256_mul_ps(_mm256_loadu_ps(x + i + 8 * h), vinv);
                nonfinite = _mm256_add_ps(nonfinite, _mm256_sub_ps(v, v));
                v = _mm256_min_ps(_mm256_max_ps(v, vlo), vhi); /* as the C loop: NaN to lo */
                c[h] = _mm256_add_epi32(_mm256_cvtps_epi32(v), zp); /* rint, as lrintf */
            }
            p = _mm256_packus_epi16(_mm256_packs_epi32(c[0], c[1]),
                                    _mm256_packs_epi32(c[2], c[3]));
            _mm256_storeu_si256((__m256i *)(void *)(q + i), _mm256_permutevar8x32_epi32(p, order));
        }
        for (; i < k; i++) {
            float v = x[i] * inv;
            ok &= v - v == 0.0f;
            v = v > lo ? v : lo;
            v = v < hi ? v : hi;
            q[i] = (uint8_t)(lrintf(v) + zero_point);
        }
        for (; i < k4; i++) q[i] = 0;
    }
    return ok && !_mm256_movemask_ps(_mm256_cmp_ps(nonfinite, nonfinite, _CMP_UNORD_Q));
}

/* vpmaddubsw: uint8 x int8, pairs into int16 (exact for 7-bit activations); vpmaddwd by
   ones: into int32. The next vpmaddubsw does not wait for the sum, so one set suffices. */
static inline FM_AVX2 __m256i fm_int8_dot_avx2(__m256i acc, __m256i x, __m256i w)
{
    return _mm256_add_epi32(acc, _mm256_madd_epi16(_mm256_maddubs_epi16(x, w),
                                                   _mm256_set1_epi16(1)));
}

#define FM_INT8_STRIP fm_int8_strip_avx2
#define FM_INT8_TARGET FM_AVX2
#define FM_INT8_DOT fm_int8_dot_avx2
#define FM_INT8_SETS 1
#include "fm_int8_strip_impl.h"
#endif
