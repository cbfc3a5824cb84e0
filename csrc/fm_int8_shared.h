/*
 * What fm_int8.c (plain C) and the SIMD variants (fm_int8_avx2.c, fm_int8_vnni.c) share:
 * the float epilogue of a layer, one scalar operation after another, so all give the same
 * bits (see fm_int8.h), and the list of the input groups a strip of rows does not skip.
 */
#ifndef FM_INT8_SHARED_H
#define FM_INT8_SHARED_H

#include <math.h>
#include <string.h>

#include "fm_int8.h"

static inline ptrdiff_t fm_int8_round_up(ptrdiff_t v, ptrdiff_t to)
{
    return (v + to - 1) / to * to;
}

/* y = (float)acc * mult + bias: two roundings, never fused (-ffp-contract=off). */
static inline float fm_int8_dequant(int32_t acc, float mult, float bias)
{
    float p = (float)acc * mult;
    return p + bias;
}

/* ReLU and requantization: rint(min(max(y * inv, 0), 127)), NaN to 0 (as vmaxps does). */
static inline uint8_t fm_int8_requant(float y, float inv)
{
    float v = y * inv;
    v = v > 0.0f ? v : 0.0f;
    v = v < 127.0f ? v : 127.0f;
    return (uint8_t)lrintf(v); /* round half to even, as vcvtps2dq */
}

/* The groups g (4 inputs each) where some row r < mr of Q has a non-zero activation: the
   others add nothing to the sums, so they are skipped (pixels that are 0, ReLU's zeros). */
static inline ptrdiff_t fm_int8_groups(int mr, const uint8_t *Q, ptrdiff_t ldq, ptrdiff_t n_groups,
                                       int32_t *list)
{
    ptrdiff_t g, n = 0;
    for (g = 0; g < n_groups; g++) {
        uint32_t any = 0, word;
        int r;
        for (r = 0; r < mr; r++) {
            memcpy(&word, Q + r * ldq + 4 * g, 4);
            any |= word;
        }
        list[n] = (int32_t)g; /* kept or overwritten: no branch to mispredict on pixels */
        n += any != 0;
    }
    return n;
}

/* fm_int8_quantize (fm_int8.h) with AVX2: the same bits. */
int fm_int8_quantize_avx2(ptrdiff_t m, ptrdiff_t k, const float *X, ptrdiff_t ldx, float inv,
                          int zero_point, uint8_t *Q, ptrdiff_t ldq);

/* The variants' strips: one layer over mr (1 to 4) rows. */
void fm_int8_strip_base(int mr, const fm_int8_layer *L, const uint8_t *Q, ptrdiff_t ldq,
                        const int32_t *list, ptrdiff_t n_list, uint8_t *Qout, ptrdiff_t ldqo,
                        float *Z, ptrdiff_t ldz);
void fm_int8_strip_avx2(int mr, const fm_int8_layer *L, const uint8_t *Q, ptrdiff_t ldq,
                        const int32_t *list, ptrdiff_t n_list, uint8_t *Qout, ptrdiff_t ldqo,
                        float *Z, ptrdiff_t ldz);
void fm_int8_strip_avx512_vnni(int mr, const fm_int8_layer *L, const uint8_t *Q,
                               ptrdiff_t ldq, const int32_t *list, ptrdiff_t n_list,
                               uint8_t *Qout, ptrdiff_t ldqo, float *Z, ptrdiff_t ldz);
void fm_int8_strip_avx_vnni(int mr, const fm_int8_layer *L, const uint8_t *Q,
                            ptrdiff_t ldq, const int32_t *list, ptrdiff_t n_list,
                            uint8_t *Qout, ptrdiff_t ldqo, float *Z, ptrdiff_t ldz);
void fm_int8_strip_vnni_emulated(int mr, const fm_int8_layer *L, const uint8_t *Q,
                                 ptrdiff_t ldq, const int32_t *list, ptrdiff_t n_list,
                                 uint8_t *Qout, ptrdiff_t ldqo, float *Z, ptrdiff_t ldz);

#if defined(__GNUC__) && (defined(__x86_64__) || defined(__i386__))
#define FM_INT8_X86 1
#else
#define FM_INT8_X86 0
#endif

#endif
