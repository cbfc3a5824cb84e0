/* int8 inference, AVX2 variants (contracts in fm_int8.h). A strip: per group of 4 inputs,
   vpmaddubsw (uint8 x int8, pairs into int16: exact for 7-bit activations) then vpmaddwd
   by ones (into int32), 4 rows x 16 columns of int32 sums in 8 registers. The input's
   quantization: 32 inputs per step, where the plain-C loop converts one at a time. */
#include "fm_int8_shared.h"

#if FM_INT8_X86
#include <immintrin.h>

#define FM_AVX2 __attribute__((target("avx2")))

static inline FM_AVX2 __attribute__((always_inline)) void strip(
    const int mr, const fm_int8_layer *L, const uint8_t *Q, ptrdiff_t ldq,
    const int32_t *list, ptrdiff_t n_list, uint8_t *Qout, ptrdiff_t ldqo, float *Z,
    ptrdiff_t ldz)
{
    const ptrdiff_t n_groups = fm_int8_round_up(L->k, FM_INT8_GROUP) / FM_INT8_GROUP;
    const ptrdiff_t n_tiles = fm_int8_round_up(L->n, FM_INT8_TILE) / FM_INT8_TILE;
    const __m256i ones = _mm256_set1_epi16(1);
    const __m256 zero = _mm256_setzero_ps(), top = _mm256_set1_ps(127.0f);
    const __m256 inv = _mm256_set1_ps(L->inv_next);
    ptrdiff_t t, e;
    int r, h;
    for (t = 0; t < n_tiles; t++) {
        const int8_t *Pt = L->packed + t * n_groups * FM_INT8_GROUP * FM_INT8_TILE;
        const ptrdiff_t j0 = t * FM_INT8_TILE;
        __m256i acc[4][2];
        const __m256i o0 = _mm256_loadu_si256((const __m256i *)(const void *)(L->offset + j0));
        const __m256i o1 =
            _mm256_loadu_si256((const __m256i *)(const void *)(L->offset + j0 + 8));
        for (r = 0; r < mr; r++) {
            acc[r][0] = o0;
            acc[r][1] = o1;
        }
        for (e = 0; e < n_list; e++) {
            const ptrdiff_t g = list[e];
            const int8_t *w = Pt + g * FM_INT8_GROUP * FM_INT8_TILE;
            const __m256i w0 = _mm256_loadu_si256((const __m256i *)(const void *)w);
            const __m256i w1 = _mm256_loadu_si256((const __m256i *)(const void *)(w + 32));
            for (r = 0; r < mr; r++) {
                int32_t xv;
                __m256i x;
                memcpy(&xv, Q + r * ldq + g * FM_INT8_GROUP, 4);
                x = _mm256_set1_epi32(xv);
                acc[r][0] = _mm256_add_epi32(
                    acc[r][0], _mm256_madd_epi16(_mm256_maddubs_epi16(x, w0), ones));
                acc[r][1] = _mm256_add_epi32(
                    acc[r][1], _mm256_madd_epi16(_mm256_maddubs_epi16(x, w1), ones));
            }
        }
        for (r = 0; r < mr; r++) {
            __m256i qi[2];
            for (h = 0; h < 2; h++) {
                __m256 y = _mm256_cvtepi32_ps(acc[r][h]);
                y = _mm256_mul_ps(y, _mm256_loadu_ps(L->mult + j0 + 8 * h));
                y = _mm256_add_ps(y, _mm256_loadu_ps(L->bias + j0 + 8 * h));
                if (Qout) {
                    y = _mm256_mul_ps(y, inv);
                    y = _mm256_max_ps(y, zero); /* as fm_int8_requant, NaN to 0 */
                    y = _mm256_min_ps(y, top);
                    qi[h] = _mm256_cvtps_epi32(y);
                } else {
                    _mm256_storeu_ps(Z + r * ldz + j0 + 8 * h, y);
                }
            }
            if (Qout) {
                /* 16 int32 in [0, 127] -> 16 bytes in column order. */
                __m256i p = _mm256_packs_epi32(qi[0], qi[1]);
                __m128i b;
                p = _mm256_permute4x64_epi64(p, 0xD8);
                b = _mm_packus_epi16(_mm256_castsi256_si128(p), _mm256_extracti128_si256(p, 1));
                _mm_storeu_si128((__m128i *)(void *)(Qout + r * ldqo + j0), b);
            }
        }
    }
}

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

FM_AVX2 void fm_int8_strip_avx2(int mr, const fm_int8_layer *L, const uint8_t *Q,
                                ptrdiff_t ldq, const int32_t *list, ptrdiff_t n_list,
                                uint8_t *Qout, ptrdiff_t ldqo, float *Z, ptrdiff_t ldz)
{
    /* Constant row counts, so the sums live in registers. */
    if (mr == 4)
        strip(4, L, Q, ldq, list, n_list, Qout, ldqo, Z, ldz);
    else
        strip(1, L, Q, ldq, list, n_list, Qout, ldqo, Z, ldz);
}
#endif
