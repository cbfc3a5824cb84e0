/*
 * The body of a 256-bit int8 strip (contract: fm_int8_strip_* in fm_int8_shared.h), one
 * layer over mr rows, included once per variant. The includer defines
 *
 *   FM_INT8_STRIP          the function's name;
 *   FM_INT8_TARGET         its target attribute;
 *   FM_INT8_DOT(a, x, w)   a + (per int32 lane) the 4 products of x's uint8 by w's int8,
 *                          exact (AVX2: vpmaddubsw, vpmaddwd by ones, vpaddd; VNNI:
 *                          vpdpbusd);
 *   FM_INT8_SETS           independent sums per column for one row (1 to 4): one row's
 *                          groups are dealt to them in turn, so that the latency of a DOT
 *                          whose result the next one reads (vpdpbusd's) does not set the
 *                          pace; 4 rows give 8 sums in flight already.
 *
 * The sums are exact int32, so neither the sets nor the row count change a bit of the
 * result, and the float epilogue is fm_int8_shared.h's, one vector operation per scalar one.
 */

#define FM_INT8_NAME2(a, b) a##b
#define FM_INT8_NAME(a, b) FM_INT8_NAME2(a, b)
#define FM_INT8_ADD_GROUP FM_INT8_NAME(FM_INT8_STRIP, _add_group)
#define FM_INT8_BODY FM_INT8_NAME(FM_INT8_STRIP, _body)

/* acc[r] += the products of row r's 4 inputs of a group by w, its 64-byte line of 16 x 4
   weights. */
static inline FM_INT8_TARGET __attribute__((always_inline)) void FM_INT8_ADD_GROUP(
    const int mr, __m256i acc[4][2], const int8_t *w, const uint8_t *q, ptrdiff_t ldq)
{
    const __m256i w0 = _mm256_loadu_si256((const __m256i *)(const void *)w);
    const __m256i w1 = _mm256_loadu_si256((const __m256i *)(const void *)(w + 32));
    int r;
    for (r = 0; r < mr; r++) {
        int32_t xv;
        __m256i x;
        memcpy(&xv, q + r * ldq, 4);
        x = _mm256_set1_epi32(xv);
        acc[r][0] = FM_INT8_DOT(acc[r][0], x, w0);
        acc[r][1] = FM_INT8_DOT(acc[r][1], x, w1);
    }
}

static inline FM_INT8_TARGET __attribute__((always_inline)) void FM_INT8_BODY(
    const int mr, const int sets, const fm_int8_layer *L, const uint8_t *Q, ptrdiff_t ldq,
    const int32_t *list, ptrdiff_t n_list, uint8_t *Qout, ptrdiff_t ldqo, float *Z,
    ptrdiff_t ldz)
{
    const ptrdiff_t n_groups = fm_int8_round_up(L->k, FM_INT8_GROUP) / FM_INT8_GROUP;
    const ptrdiff_t n_tiles = fm_int8_round_up(L->n, FM_INT8_TILE) / FM_INT8_TILE;
    const ptrdiff_t line = FM_INT8_GROUP * FM_INT8_TILE;
    const __m256 zero = _mm256_setzero_ps(), top = _mm256_set1_ps(127.0f);
    const __m256 inv = _mm256_set1_ps(L->inv_next);
    ptrdiff_t t, e;
    int r, h, s;
    for (t = 0; t < n_tiles; t++) {
        const int8_t *Pt = L->packed + t * n_groups * line;
        const ptrdiff_t j0 = t * FM_INT8_TILE;
        __m256i acc[4][4][2]; /* [set][row][half of the 16 columns] */
        for (s = 0; s < sets; s++)
            for (r = 0; r < mr; r++)
                for (h = 0; h < 2; h++)
                    acc[s][r][h] = s ? _mm256_setzero_si256()
                                     : _mm256_loadu_si256((const __m256i *)(const void *)(
                                           L->offset + j0 + 8 * h));
        for (e = 0; e + sets <= n_list; e += sets)
            for (s = 0; s < sets; s++) {
                const ptrdiff_t g = list[e + s];
                FM_INT8_ADD_GROUP(mr, acc[s], Pt + g * line, Q + g * FM_INT8_GROUP, ldq);
            }
        for (; e < n_list; e++) {
            const ptrdiff_t g = list[e];
            FM_INT8_ADD_GROUP(mr, acc[0], Pt + g * line, Q + g * FM_INT8_GROUP, ldq);
        }
        for (s = 1; s < sets; s++)
            for (r = 0; r < mr; r++)
                for (h = 0; h < 2; h++) acc[0][r][h] = _mm256_add_epi32(acc[0][r][h], acc[s][r][h]);
        for (r = 0; r < mr; r++) {
            __m256i qi[2];
            for (h = 0; h < 2; h++) {
                __m256 y = _mm256_cvtepi32_ps(acc[0][r][h]);
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

FM_INT8_TARGET void FM_INT8_STRIP(int mr, const fm_int8_layer *L, const uint8_t *Q,
                                  ptrdiff_t ldq, const int32_t *list, ptrdiff_t n_list,
                                  uint8_t *Qout, ptrdiff_t ldqo, float *Z, ptrdiff_t ldz)
{
    /* Constant row and set counts, so the sums live in registers. */
    if (mr == 4)
        FM_INT8_BODY(4, 1, L, Q, ldq, list, n_list, Qout, ldqo, Z, ldz);
    else
        FM_INT8_BODY(1, FM_INT8_SETS, L, Q, ldq, list, n_list, Qout, ldqo, Z, ldz);
}

#undef FM_INT8_ADD_GROUP
#undef FM_INT8_BODY
#undef FM_INT8_STRIP
#undef FM_INT8_TARGET
#undef FM_INT8_DOT
#undef FM_INT8_SETS
