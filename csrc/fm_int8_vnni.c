/* int8 inference, VNNI variants (contracts in fm_int8.h): fm_int8_strip_impl.h's body with
   vpdpbusd, which sums the 4 products of a group into int32 in one instruction where AVX2
   takes three. The packed layout is the one it reads (fm_int8.h). Three copies:
   AVX512-VNNI (EVEX, 256-bit, with AVX512VL), AVX-VNNI (VEX), and an exact stand-in for
   vpdpbusd built of AVX2 instructions: the same body, sets and register use, so the tests
   run the VNNI variants' code on any AVX2 machine (as fm_dense's "wide" variant does).

   vpdpbusd reads the sum it adds to: with one set of sums one row waits its latency
   (4-5 cycles) at every group, so one row deals its groups to 4 sets. */
#include "fm_int8_shared.h"

#if FM_INT8_X86
#include <immintrin.h>

#define FM_AVX512_VNNI __attribute__((target("avx2,avx512vnni,avx512vl")))
#define FM_AVX_VNNI __attribute__((target("avx2,avxvnni")))
#define FM_AVX2 __attribute__((target("avx2")))

static inline FM_AVX512_VNNI __attribute__((always_inline)) __m256i dot_avx512_vnni(
    __m256i acc, __m256i x, __m256i w)
{
    return _mm256_dpbusd_epi32(acc, x, w);
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

#define FM_INT8_STRIP fm_int8_strip_avx512_vnni
#define FM_INT8_TARGET FM_AVX512_VNNI
#define FM_INT8_DOT dot_avx512_vnni
#define FM_INT8_SETS 4
#include "fm_int8_strip_impl.h"

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
