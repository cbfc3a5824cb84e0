/* int8 inference, AVX2 variant of a strip (contract in fm_int8.h): per group of 4 inputs,
   vpmaddubsw (uint8 x int8, pairs into int16: exact for 7-bit activations) then vpmaddwd
   by ones (into int32), 4 rows x 16 columns of int32 sums in 8 registers. */
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
