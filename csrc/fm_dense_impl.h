/*
 * Body of one variant of fm_dense and fm_dense_at (contracts in fm_kernels.h), included
 * once per element type (fm_dense_types.h) by an fm_dense_<isa>.c file. Defined by them:
 *   T, S, IT   element type, its suffix (_f, _d), the signed integer of the same width;
 *   ISA        suffix of this variant (_base, _avx2, _wide, _avx512);
 *   FM_TARGET  the function attribute that compiles it for that instruction set;
 *   VB         bytes per vector (16, 32, 64); MR rows and NP panels per register tile.
 * It defines fm_dense<S><ISA> and fm_dense_at<S><ISA> (prototypes in fm_dense_variants.h),
 * one body, fm_dense_run: the forward pass (prediction and training) and training's
 * weight gradients.
 *
 * Why our own GEMM: OpenBLAS repacks W on every call and its kernel stalls on prefetches
 * into pages of its buffer that these small calls never touch (issue 5).
 *
 * Tiling: W is cut into blocks of at most FM_DENSE_KBLOCK_BYTES: all its columns and a
 * range of k when that range is at least FM_DENSE_MIN_KBLOCK rows long, else chunks of
 * columns (a wide W) each taken over k in such blocks. A W whose rows lie
 * FM_DENSE_PACK_ROW_BYTES apart or more is packed, block by block (FM_DENSE_PACK_BYTES,
 * FM_DENSE_PACK_K rows), into a contiguous buffer when two strips or more will read it:
 * in place each row of a block would sit on its own page. Z is cut into strips of MR rows,
 * each strip into panels of FM_PANEL_BYTES (one cache line of a row of W). Every strip
 * passes over a block before the next block: a strip of A stays in L1, the W block in L2
 * (a whole W made the time depend on which physical pages collided in L2). A tile of MR
 * rows x NP panels keeps its accumulators in registers over the block, starting from
 * zero or from the sums the previous block left in Z; the last block adds the bias,
 * applies ReLU/identity and stores.
 *
 * Every element is the sum over p = 0..k-1 in that order, with the same instructions
 * whatever the tile shape and k blocks (a partial sum goes through Z exactly, as T), so
 * a row's result does not depend on where it falls in the row blocks, or on the thread
 * count.
 */
#define DN_CAT3_(a, b, c) a##b##c
#define DN_CAT3(a, b, c) DN_CAT3_(a, b, c)
#define DN(name) DN_CAT3(name, S, ISA) /* this variant's functions */
#define FN(name) DN_CAT3(name, S, )   /* the type's kernels (fm_kernels.h) */

#if FM_DENSE_VECTOR
#define VL ((ptrdiff_t)(VB / sizeof(T))) /* elements per vector */
#define VPP (FM_PANEL_BYTES / VB)        /* vectors per panel row */
#define PANEL ((ptrdiff_t)(FM_PANEL_BYTES / sizeof(T)))
/* Independent sums a tile needs in flight to keep two FMA units busy (latency 4), and the
   rows of a strip that give them. */
#define DN_MIN_SUMS 8
#define DN_MIN_ROWS ((DN_MIN_SUMS + NP * VPP - 1) / (NP * VPP))

/* Unaligned vectors: W, X and Z rows sit at any element offset. */
typedef T DN(vec) __attribute__((vector_size(VB), aligned(sizeof(T))));
typedef IT DN(ivec) __attribute__((vector_size(VB)));

/* One register tile: Z[0:rows, 0:ncols] = epilogue(A[0:rows, :] @ B[:, 0:np*PANEL]), or
   with `at` (A^T @ B for the weight gradient) the rows of the tile are columns of A.
   rows, np and at are constants after inlining, so each shape compiles to its own
   straight-line loop with the accumulators in registers. With `listed` (a constant too)
   the sums run over the k rows of A and B that `list` names, in order. B always has
   whole panels (W's own columns, or a zero-padded copy of its last ones); only the first
   ncols columns are stored. */
static inline __attribute__((always_inline)) FM_TARGET void DN(fm_dense_tile)(
    ptrdiff_t k, const int listed, const int32_t *list, const T *a0, ptrdiff_t lda,
    const int at, const int rows, const T *b, ptrdiff_t ldb, const int np, const T *bias,
    int act, T *z, ptrdiff_t ldz, ptrdiff_t ncols, int first, int last, DN(ivec) * bad)
{
    DN(vec) acc[MR][NP * VPP];
    for (int i = 0; i < rows; i++) {
        for (int v = 0; v < np * VPP; v++) {
            acc[i][v] = (DN(vec)){0};
            if (first) continue;
            /* Resume the sums of the previous k block from Z (exact: stored as T). */
            const T *zi = z + i * ldz + v * VL;
            if ((v + 1) * VL <= ncols) {
                acc[i][v] = *(const DN(vec) *)zi;
            } else {
                for (ptrdiff_t j = v * VL; j < ncols; j++) acc[i][v][j - v * VL] = zi[j - v * VL];
            }
        }
    }
    for (ptrdiff_t t = 0; t < k; t++) {
        const ptrdiff_t p = listed ? list[t] : t;
        const T *bp = b + p * ldb;
        DN(vec) bv[NP * VPP];
        for (int v = 0; v < np * VPP; v++) bv[v] = *(const DN(vec) *)(bp + v * VL);
        for (int i = 0; i < rows; i++) {
            const T s = at ? a0[p * lda + i] : a0[i * lda + p];
            for (int v = 0; v < np * VPP; v++) acc[i][v] += s * bv[v];
        }
    }
    /* Epilogue. The NaN/inf test looks at A @ W before the bias: x - x is 0 exactly for
       finite x. tanh and sigmoid are applied by the caller (scalar, fm_bias_act). */
    const int add_bias = bias != NULL && (act == FM_IDENTITY || act == FM_RELU);
    for (int i = 0; i < rows; i++) {
        T *zi = z + i * ldz;
        for (int v = 0; v < np * VPP; v++) {
            DN(vec) s = acc[i][v];
            const int whole = (v + 1) * VL <= ncols;
            if (last) {
                *bad |= (s - s) != 0;
                if (add_bias && whole) s += *(const DN(vec) *)(bias + v * VL);
                if (add_bias && !whole)
                    for (ptrdiff_t j = v * VL; j < ncols; j++) s[j - v * VL] += bias[j];
                if (act == FM_RELU) s = (DN(vec))((DN(ivec))s & (s > 0));
            }
            if (whole) {
                *(DN(vec) *)(zi + v * VL) = s;
            } else {
                for (ptrdiff_t j = v * VL; j < ncols; j++) zi[j] = s[j - v * VL];
            }
        }
    }
}

/* The tiles of a strip: the full panels in groups of NP, then the last ncols % PANEL
   columns from the zero-padded panel `tp` (rows tld apart, its bias `tb`). */
static inline __attribute__((always_inline)) FM_TARGET void DN(fm_dense_panels)(
    ptrdiff_t kc, const int listed, const int32_t *list, ptrdiff_t ncols, const T *a,
    ptrdiff_t lda, const int at, const int rows, const T *bp, ptrdiff_t ldb, const T *bias,
    const T *tp, ptrdiff_t tld, const T *tb, int act, T *z, ptrdiff_t ldz, int first,
    int last, DN(ivec) * bad)
{
    const ptrdiff_t full = ncols / PANEL;
    const T *bj = bias; /* the bias of panel j (NULL: none) */
    ptrdiff_t j = 0;
    for (; j + NP <= full; j += NP, bj = bj ? bj + NP * PANEL : NULL)
        DN(fm_dense_tile)(kc, listed, list, a, lda, at, rows, bp + j * PANEL, ldb, NP, bj,
                          act, z + j * PANEL, ldz, NP * PANEL, first, last, bad);
    if (NP > 1)
        for (; j < full; j++, bj = bj ? bj + PANEL : NULL)
            DN(fm_dense_tile)(kc, listed, list, a, lda, at, rows, bp + j * PANEL, ldb, 1, bj,
                              act, z + j * PANEL, ldz, PANEL, first, last, bad);
    if (full * PANEL < ncols)
        DN(fm_dense_tile)(kc, listed, list, a, lda, at, rows, tp, tld, 1, tb, act,
                          z + full * PANEL, ldz, ncols - full * PANEL, first, last, bad);
}

/* MR (or fewer) rows of Z, columns 0..ncols-1, against kc rows of B starting at bp (rows
   ldb apart). With `at` and skip_zeros, a full strip sums over those rows of A alone
   whose MR entries are not all +0 (listed in `used`): a skipped row's products would add
   +0 or -0 to sums that start at +0 (or resume from Z, never -0), which changes no bit.
   Only full strips, so that the list adds three compiled tiles, not a copy of them all. */
static inline __attribute__((always_inline)) FM_TARGET void DN(fm_dense_strip)(
    ptrdiff_t kc, ptrdiff_t ncols, const T *a, ptrdiff_t lda, const int at, const int rows,
    const T *bp, ptrdiff_t ldb, const T *bias, const T *tp, ptrdiff_t tld, const T *tb,
    int act, T *z, ptrdiff_t ldz, int first, int last, int skip_zeros, int32_t *used,
    DN(ivec) * bad)
{
    if (at && rows == MR && skip_zeros) {
        /* The rows in use as bits first: a list written as the rows are read would put
           each store's address behind the loads, and A's rows come from L3. */
        uint64_t in_use[FM_DENSE_LIST_K / 64] = {0};
        for (ptrdiff_t p = 0; p < kc; p++) {
            IT any = 0;
            for (int i = 0; i < rows; i++) {
                IT bits;
                memcpy(&bits, a + p * lda + i, sizeof bits);
                any |= bits;
            }
            in_use[p / 64] |= (uint64_t)(any != 0) << (p % 64);
        }
        ptrdiff_t n_used = 0;
        for (ptrdiff_t w = 0; w * 64 < kc; w++)
            for (uint64_t bits = in_use[w]; bits; bits &= bits - 1)
                used[n_used++] = (int32_t)(w * 64 + __builtin_ctzll(bits));
        /* A listed row costs more than a row in turn: worth it past 1/8 of zero rows. */
        if (n_used * 8 <= kc * 7) {
            DN(fm_dense_panels)(n_used, 1, used, ncols, a, lda, at, rows, bp, ldb, bias, tp,
                                tld, tb, act, z, ldz, first, last, bad);
            return;
        }
    }
    DN(fm_dense_panels)(kc, 0, NULL, ncols, a, lda, at, rows, bp, ldb, bias, tp, tld, tb, act,
                        z, ldz, first, last, bad);
}

/* Z (+)= A @ B (at = 0; A is m x k) or A^T @ B (at = 1; A is k x m), block by block of B
   (see the top), then the epilogue of `act`. */
static inline __attribute__((always_inline)) FM_TARGET int DN(fm_dense_run)(
    ptrdiff_t m, ptrdiff_t k, ptrdiff_t n, const T *A, ptrdiff_t lda, const int at,
    const T *B, ptrdiff_t ldB, const T *bias, const T *tail, int act, T *Z, ptrdiff_t ldz,
    int accumulate, int skip_zeros)
{
    DN(ivec) bad = {0};
    const ptrdiff_t panels = (n + PANEL - 1) / PANEL;
    /* A wide B is packed, a block at a time, into a contiguous buffer: read in place,
       each row of a block would sit on its own page. */
    const int packed = ldB * (ptrdiff_t)sizeof(T) >= FM_DENSE_PACK_ROW_BYTES && m >= 2 * MR;
    T pack[FM_DENSE_PACK_BYTES / sizeof(T)] __attribute__((aligned(64)));
    /* A block: all panels, unless FM_DENSE_MIN_KBLOCK rows of them would pass the block
       size; then as many (in groups of NP) as fit, over the rows that fill the block. */
    const ptrdiff_t block_bytes = packed ? FM_DENSE_PACK_BYTES : FM_DENSE_KBLOCK_BYTES;
    const ptrdiff_t min_k = packed ? FM_DENSE_PACK_K : FM_DENSE_MIN_KBLOCK;
    ptrdiff_t chunk = block_bytes / (min_k * FM_PANEL_BYTES);
    chunk = chunk < NP ? NP : chunk - chunk % NP;
    if (chunk > panels) chunk = panels;
    ptrdiff_t nkb = (k * chunk * FM_PANEL_BYTES + block_bytes - 1) / block_bytes;
    if (nkb < 1) nkb = 1;
    /* Without a padded tail (training: W changes every step) the last n % PANEL columns
       of each block are copied into one, at most FM_DENSE_TAIL_K rows at a time: read
       element by element, they cost more than the whole block's products. */
    const int copy_tail = !packed && !tail && n % PANEL != 0;
    T tcopy[FM_DENSE_TAIL_K * PANEL] __attribute__((aligned(64)));
    if (copy_tail && (k + nkb - 1) / nkb > FM_DENSE_TAIL_K)
        nkb = (k + FM_DENSE_TAIL_K - 1) / FM_DENSE_TAIL_K;
    /* Skipping zero rows, the tiles read a block's rows from a list. */
    int32_t used[FM_DENSE_LIST_K];
    if (skip_zeros && (k + nkb - 1) / nkb > FM_DENSE_LIST_K)
        nkb = (k + FM_DENSE_LIST_K - 1) / FM_DENSE_LIST_K;
    const ptrdiff_t kc = (k + nkb - 1) / nkb;
    for (ptrdiff_t j0 = 0; j0 < n; j0 += chunk * PANEL) {
        const ptrdiff_t nc = n - j0 < chunk * PANEL ? n - j0 : chunk * PANEL;
        const ptrdiff_t rem = nc - nc % PANEL; /* where the last, partial panel starts */
        const T *bj = bias ? bias + j0 : NULL;
        ptrdiff_t p0 = 0;
        do { /* at least once: k = 0 gives Z = act(b) */
            const ptrdiff_t kb = k - p0 < kc ? k - p0 : kc;
            const int first = p0 == 0 && !accumulate, last = p0 + kb == k;
            /* This block of B, and where its last partial panel comes from. */
            const T *bp = B + p0 * ldB + j0, *tp = NULL, *tb = bj ? bj + rem : NULL;
            ptrdiff_t ldb = ldB, tld = PANEL;
            if (packed) {
                for (ptrdiff_t p = 0; p < kb; p++)
                    for (ptrdiff_t c = 0; c < chunk * PANEL; c++)
                        pack[p * chunk * PANEL + c] = c < nc ? bp[p * ldB + c] : 0;
                bp = pack;
                ldb = tld = chunk * PANEL;
                tp = pack + rem;
            } else if (tail && j0 + nc == n) {
                tp = tail + p0 * PANEL;
                tb = bias ? tail + k * PANEL : NULL;
            } else if (copy_tail && rem < nc) {
                for (ptrdiff_t p = 0; p < kb; p++)
                    for (ptrdiff_t c = 0; c < PANEL; c++)
                        tcopy[p * PANEL + c] = rem + c < nc ? bp[p * ldB + rem + c] : 0;
                tp = tcopy;
            }
            for (ptrdiff_t i = 0, rows; i < m; i += rows) {
                rows = m - i < MR ? m - i : MR;
                /* A last strip with fewer than DN_MIN_SUMS sums cannot hide the FMA
                   latency: it and the full strip before it become two of about equal
                   height (8 rows of AVX2: 4 + 4, not 6 + 2). */
                if (m - i > MR && m - i < MR + DN_MIN_ROWS) rows = (m - i + 1) / 2;
                const T *a = at ? A + p0 * lda + i : A + i * lda + p0;
                T *z = Z + i * ldz + j0;
                /* One compiled shape per row count. */
                switch (rows) {
#define DN_ROWS(r)                                                                        \
    case r:                                                                               \
        DN(fm_dense_strip)(kb, nc, a, lda, at, r <= MR ? r : MR, bp, ldb, bj, tp, tld, tb, \
                           act, z, ldz, first, last, skip_zeros, used, &bad);             \
        break;
                    DN_ROWS(1)
                    DN_ROWS(2)
                    DN_ROWS(3)
                    DN_ROWS(4)
                    DN_ROWS(5)
                    DN_ROWS(6)
#if MR > 6
                    DN_ROWS(7)
                    DN_ROWS(8)
#endif
#undef DN_ROWS
                default:
                    break;
                }
            }
            p0 += kb;
        } while (p0 < k);
    }
    if (act == FM_TANH || act == FM_SIGMOID)
        for (ptrdiff_t i = 0; i < m; i++) FN(fm_bias_act)(1, n, Z + i * ldz, bias, act);
    int any = 0;
    for (int v = 0; v < VL; v++) any |= bad[v] != 0;
    return !any;
}

FM_TARGET int DN(fm_dense)(ptrdiff_t m, ptrdiff_t k, ptrdiff_t n, const T *A, ptrdiff_t lda,
                           const T *W, ptrdiff_t ldw, const T *b, const T *tail, int act,
                           T *Z, ptrdiff_t ldz, int accumulate)
{
    return DN(fm_dense_run)(m, k, n, A, lda, 0, W, ldw, b, tail, act, Z, ldz, accumulate, 0);
}

FM_TARGET int DN(fm_dense_at)(ptrdiff_t m, ptrdiff_t k, ptrdiff_t n, const T *A,
                              ptrdiff_t lda, const T *B, T *C, ptrdiff_t ldc, int accumulate,
                              int skip_zeros)
{
    return DN(fm_dense_run)(m, k, n, A, lda, 1, B, n, NULL, NULL, FM_IDENTITY, C, ldc, accumulate,
                            skip_zeros);
}

#undef VL
#undef VPP
#undef PANEL
#undef DN_MIN_SUMS
#undef DN_MIN_ROWS

#else /* no GCC vector extensions: plain loops with the same order of sums */

int DN(fm_dense)(ptrdiff_t m, ptrdiff_t k, ptrdiff_t n, const T *A, ptrdiff_t lda, const T *W,
                 ptrdiff_t ldw, const T *b, const T *tail, int act, T *Z, ptrdiff_t ldz,
                 int accumulate)
{
    int ok = 1;
    (void)tail;
    for (ptrdiff_t i = 0; i < m; i++) {
        T *restrict z = Z + i * ldz;
        if (!accumulate)
            for (ptrdiff_t j = 0; j < n; j++) z[j] = 0;
        for (ptrdiff_t p = 0; p < k; p++) { /* axpy form: the j loop vectorises */
            const T s = A[i * lda + p];
            const T *restrict w = W + p * ldw;
            for (ptrdiff_t j = 0; j < n; j++) z[j] += s * w[j];
        }
        for (ptrdiff_t j = 0; j < n; j++) ok &= z[j] - z[j] == 0;
        if (b) FN(fm_bias_act)(1, n, z, b, act);
    }
    return ok;
}

int DN(fm_dense_at)(ptrdiff_t m, ptrdiff_t k, ptrdiff_t n, const T *A, ptrdiff_t lda,
                    const T *B, T *C, ptrdiff_t ldc, int accumulate, int skip_zeros)
{
    int ok = 1;
    (void)skip_zeros; /* skipping changes no bit: these loops skip nothing */
    for (ptrdiff_t i = 0; i < m; i++) {
        T *restrict c = C + i * ldc;
        if (!accumulate)
            for (ptrdiff_t j = 0; j < n; j++) c[j] = 0;
        for (ptrdiff_t p = 0; p < k; p++) {
            const T s = A[p * lda + i];
            const T *restrict bp = B + p * n;
            for (ptrdiff_t j = 0; j < n; j++) c[j] += s * bp[j];
        }
        for (ptrdiff_t j = 0; j < n; j++) ok &= c[j] - c[j] == 0;
    }
    return ok;
}

#endif

#undef DN
#undef FN
#undef DN_CAT3
#undef DN_CAT3_
