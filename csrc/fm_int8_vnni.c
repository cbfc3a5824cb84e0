/* int8 inference, VNNI variants (contracts in fm_int8.h), with vpdpbusd, which sums the 4
   products of a group into int32 in one instruction where AVX2 takes three. The packed
   layout is the one it reads (fm_int8.h).

   AVX512-VNNI runs 512 bits: one zmm holds a group's whole line of a tile (16 columns x 4
   inputs), so one vpdpbusd adds a row's group to a whole tile, and a strip runs two tiles
   at once. On a Zen 5 (full-width AVX-512) 10,000 MNIST rows took 4.4 ms, against 6.0 ms
   with fm_int8_strip_impl.h's 256-bit body (benches/results.md).

   That body serves the other two: AVX-VNNI (VEX, 256-bit) and an exact stand-in for
   vpdpbusd built of AVX2 instructions, with the same sets and register use, so the tests
   run AVX-VNNI's code on any AVX2 machine (as fm_dense's "wide" variant does).

   vpdpbusd reads the sum it adds to: with one set of sums one row waits its latency
   (4-5 cycles) at every group, so one row deals its groups to 4 sets. */
#include "fm_int8_shared.h"

#if FM_INT8_X86
#include <immintrin.h>

#define FM_AVX512_VNNI __attribute__((target("avx2,avx512f,avx512vnni")))
#define FM_AVX_VNNI __attribute__((target("avx2,avxvnni")))
#define FM_AVX2 __attribute__((target("avx2")))

/* acc[r][u] += the products of row r's group g by tile u's line of it (tiles a tile's
   packed size apart). */
static inline FM_AVX512_VNNI __attribute__((always_inline)) void zmm_group(
    const int nt, const int mr, __m512i acc[4][2], const int8_t *w, ptrdiff_t tile_bytes,
    const uint8_t *q, ptrdiff_t ldq)
{
    __m512i wv[2];
    int r, u;
    for (u = 0; u < nt; u++) wv[u] = _mm512_loadu_si512(w + u * tile_bytes);
    for (r = 0; r < mr; r++) {
        int32_t xv;
        memcpy(&xv, q + r * ldq, 4);
        const __m512i x = _mm512_set1_epi32(xv);
        for (u = 0; u < nt; u++) acc[r][u] = _mm512_dpbusd_epi32(acc[r][u], x, wv[u]);
    }
}

/* AVX512-VNNI's body: nt (1 or 2) tiles from tile t on, mr rows, sets as in the 256-bit
   body; the float epilogue is fm_int8_shared.h's, one vector operation per scalar one. */
static inline FM_AVX512_VNNI __attribute__((always_inline)) void zmm_tiles(
    const int nt, const int mr, const int sets, const fm_int8_layer *L, ptrdiff_t t,
    const uint8_t *Q, ptrdiff_t ldq, const int32_t *list, ptrdiff_t n_list, uint8_t *Qout,
    ptrdiff_t ldqo, float *Z, ptrdiff_t ldz)
{
    const ptrdiff_t n_groups = fm_int8_round_up(L->k, FM_INT8_GROUP) / FM_INT8_GROUP;
    const ptrdiff_t line = FM_INT8_GROUP * FM_INT8_TILE;
    const __m512 zero = _mm512_setzero_ps(), top = _mm512_set1_ps(127.0f);
    const __m512 inv = _mm512_set1_ps(L->inv_next);
    const int8_t *Pt = L->packed + t * n_groups * line;
    __m512i acc[4][4][2]; /* [set][row][tile] */
    ptrdiff_t e;
    int r, u, s;
    for (s = 0; s < sets; s++)
        for (r = 0; r < mr; r++)
            for (u = 0; u < nt; u++)
                acc[s][r][u] = s ? _mm512_setzero_si512()
                                 : _mm512_loadu_si512(L->offset + (t + u) * FM_INT8_TILE);
    for (e = 0; e + sets <= n_list; e += sets)
        for (s = 0; s < sets; s++) {
            const ptrdiff_t g = list[e + s];
            zmm_group(nt, mr, acc[s], Pt + g * line, n_groups * line, Q + g * FM_INT8_GROUP,
                      ldq);
        }
    for (; e < n_list; e++) {
        const ptrdiff_t g = list[e];
        zmm_group(nt, mr, acc[0], Pt + g * line, n_groups * line, Q + g * FM_INT8_GROUP, ldq);
    }
    for (s = 1; s < sets; s++)
        for (r = 0; r < mr; r++)
            for (u = 0; u < nt; u++) acc[0][r][u] = _mm512_add_epi32(acc[0][r][u], acc[s][r][u]);
    for (r = 0; r < mr; r++)
        for (u = 0; u < nt; u++) {
            const ptrdiff_t j0 = (t + u) * FM_INT8_TILE;
            __m512 y = _mm512_cvtepi32_ps(acc[0][r][u]);
            y = _mm512_mul_ps(y, _mm512_loadu_ps(L->mult + j0));
            y = _mm512_add_ps(y, _mm512_loadu_ps(L->bias + j0));
            if (Qout) {
                y = _mm512_mul_ps(y, inv);
                y = _mm512_max_ps(y, zero); /* as fm_int8_requant, NaN to 0 */
                y = _mm512_min_ps(y, top);
                /* rint into int32 in [0, 127], then each to its byte (vpmovdb) */
                _mm_storeu_si128((__m128i *)(void *)(Qout + r * ldqo + j0),
                                 _mm512_cvtepi32_epi8(_mm512_cvtps_epi32(y)));
            } else {
                _mm512_storeu_ps(Z + r * ldz + j0, y);
            }
        }
}

FM_AVX512_VNNI void fm_int8_strip_avx512_vnni(int mr, const fm_int8_layer *L, const uint8_t *Q,
                                              ptrdiff_t ldq, const int32_t *list,
                                              ptrdiff_t n_list, uint8_t *Qout, ptrdiff_t ldqo,
                                              float *Z, ptrdiff_t ldz)
{
    const ptrdiff_t n_tiles = fm_int8_round_up(L->n, FM_INT8_TILE) / FM_INT8_TILE;
    ptrdiff_t t;
    /* Constant tile, row and set counts, so the sums live in registers. */
    for (t = 0; t + 2 <= n_tiles; t += 2) {
        if (mr == 4)
            zmm_tiles(2, 4, 1, L, t, Q, ldq, list, n_list, Qout, ldqo, Z, ldz);
        else
            zmm_tiles(2, 1, 4, L, t, Q, ldq, list, n_list, Qout, ldqo, Z, ldz);
    }
    if (t < n_tiles) {
        if (mr == 4)
            zmm_tiles(1, 4, 1, L, t, Q, ldq, list, n_list, Qout, ldqo, Z, ldz);
        else
            zmm_tiles(1, 1, 4, L, t, Q, ldq, list, n_list, Qout, ldqo, Z, ldz);
    }
}

static inline FM_AVX_VNNI __attribute__((always_inline)) __m256i dot_avx_vnni(__m256i acc,
                                                                              __m256i x,
                                                                              __m256i w)
{
    return _mm256_dpbusd_avx_epi32(acc, x, w);
}

/* vpdpbusd's sum without it: the even and odd bytes widened to int16 (x zero-extended, w
   sign-extended), vpmaddwd on each (x0 w0 + x2 w2, x1 w1 + x3 w3: no product or pair
   overflows), added, exact for any uint8 x and int8 w. */
static inline FM_AVX2 __attribute__((always_inline)) __m256i dot_emulated(__m256i acc,
                                                                          __m256i x,
                                                                          __m256i w)
{
    const __m256i x_even = _mm256_and_si256(x, _mm256_set1_epi16(0x00FF));
    const __m256i x_odd = _mm256_srli_epi16(x, 8);
    const __m256i w_even = _mm256_srai_epi16(_mm256_slli_epi16(w, 8), 8);
    const __m256i w_odd = _mm256_srai_epi16(w, 8);
    return _mm256_add_epi32(acc, _mm256_add_epi32(_mm256_madd_epi16(x_even, w_even),
                                                  _mm256_madd_epi16(x_odd, w_odd)));
}

#define FM_INT8_STRIP fm_int8_strip_avx_vnni
#define FM_INT8_TARGET FM_AVX_VNNI
#define FM_INT8_DOT dot_avx_vnni
#define FM_INT8_SETS 4
#include "fm_int8_strip_impl.h"

#define FM_INT8_STRIP fm_int8_strip_vnni_emulated
#define FM_INT8_TARGET FM_AVX2
#define FM_INT8_DOT dot_emulated
#define FM_INT8_SETS 4
#include "fm_int8_strip_impl.h"
#endif
