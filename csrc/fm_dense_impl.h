/*
 * Body of one variant of the dense-layer kernel fm_dense (contract in fm_kernels.h),
 * included by fm_dense.c once per (element type, instruction set). The includer defines:
 *   T, S, IT   element type, its suffix (_f, _d), the signed integer of the same width;
 *   ISA        suffix of this variant (_base, _avx2, ...);
 *   FM_TARGET  the function attribute that compiles it for that instruction set;
 *   VB         bytes per vector (16, 32, 64); MR rows and NP panels per register tile.
 *
 * Why our own GEMM for prediction: OpenBLAS repacks W on every call, and its Haswell
 * kernel software-prefetches into pages of its 32 MB buffer that the call never touches;
 * each such prefetch is a page walk, on every call (2x slower first-layer GEMM measured
 * on AMD Zen until a large GEMM happens to touch the buffer; issue 5). Prediction is
 * three GEMMs of fixed small widths, where a plain register-blocked kernel on the
 * row-major W reaches the sgemm peak (measured: 38 of 37-38 GF/s for 9996x784 @ 784x128
 * on one Zen core).
 *
 * Tiling: k is cut into blocks whose rows of W take at most FM_DENSE_KBLOCK_BYTES, Z into
 * strips of MR rows, each strip into panels of FM_PANEL columns (64 bytes: one cache line
 * of a row of W). For each k block, every strip passes over that block's W: a strip of A
 * stays in L1, the W block in L2. A tile of MR rows x NP panels keeps its accumulators
 * in registers over the block, starting from zero or from the sums the previous block
 * left in Z; the last block adds the bias, applies ReLU/identity and stores.
 *
 * Why k blocks: a whole 784 x 128 W (400 KB) nearly fills a 512 KB L2, and which of its
 * 4 KB pages collide in L2 depends on the physical pages a process happens to get, so
 * the time varied by 20% from process to process (61-73 ms for 10,000 MNIST rows at one
 * thread); 64 KB blocks made it 57-60 ms in every process (issue 5).
 *
 * Every element is the sum over p = 0..k-1 in that order, with the same instructions
 * whatever the tile shape and k blocks (a partial sum goes through Z exactly, as T), so
 * a row's result does not depend on where it falls in the row blocks, or on the thread
 * count.
 */
#define DN_CAT3_(a, b, c) a##b##c
#define DN_CAT3(a, b, c) DN_CAT3_(a, b, c)
#define DN(name) DN_CAT3(name, S, ISA)

#define VL ((ptrdiff_t)(VB / sizeof(T))) /* elements per vector */
#define VPP (FM_PANEL_BYTES / VB)        /* vectors per panel row */
#define PANEL ((ptrdiff_t)(FM_PANEL_BYTES / sizeof(T)))

/* Unaligned vectors: W, X and Z rows sit at any element offset. */
typedef T DN(vec) __attribute__((vector_size(VB), aligned(sizeof(T))));
typedef IT DN(ivec) __attribute__((vector_size(VB)));

/* One register tile: Z[0:rows, 0:ncols] = epilogue(A[0:rows, :] @ B[:, 0:np*PANEL]).
   rows and np are constants after inlining, so each shape compiles to its own
   straight-line loop with the accumulators in registers. */
static inline __attribute__((always_inline)) FM_TARGET void DN(fm_dense_tile)(
    ptrdiff_t k, const T *a0, ptrdiff_t lda, const int rows, const T *b, ptrdiff_t ldb,
    const int np, const T *bias, int act, T *z, ptrdiff_t ldz, ptrdiff_t ncols,
    int first, int last, DN(ivec) * bad)
{
    DN(vec) acc[MR][NP * VPP];
    const T *a[MR];
    for (int i = 0; i < rows; i++) {
        a[i] = a0 + i * lda;
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
    for (ptrdiff_t p = 0; p < k; p++) {
        const T *bp = b + p * ldb;
        DN(vec) bv[NP * VPP];
        for (int v = 0; v < np * VPP; v++) bv[v] = *(const DN(vec) *)(bp + v * VL);
        for (int i = 0; i < rows; i++) {
            const T s = a[i][p];
            for (int v = 0; v < np * VPP; v++) acc[i][v] += s * bv[v];
        }
    }
    /* Epilogue. The NaN/inf test looks at A @ W before the bias: x - x is 0 exactly for
       finite x. tanh and sigmoid are applied by the caller (scalar, fm_bias_act). */
    const int add_bias = act == FM_IDENTITY || act == FM_RELU;
    for (int i = 0; i < rows; i++) {
        T *zi = z + i * ldz;
        for (int v = 0; v < np * VPP; v++) {
            DN(vec) s = acc[i][v];
            if (last) {
                *bad |= (s - s) != 0;
                if (add_bias) s += *(const DN(vec) *)(bias + v * VL);
                if (act == FM_RELU) s = (DN(vec))((DN(ivec))s & (s > 0));
            }
            if ((v + 1) * VL <= ncols) {
                *(DN(vec) *)(zi + v * VL) = s;
            } else {
                for (ptrdiff_t j = v * VL; j < ncols; j++) zi[j] = s[j - v * VL];
            }
        }
    }
}

/* MR (or fewer) rows of Z, rows p0..p0+kc-1 of W: the full panels of W in groups of NP,
   then the zero-padded tail panel of the last n % PANEL columns. */
static inline __attribute__((always_inline)) FM_TARGET void DN(fm_dense_strip)(
    ptrdiff_t k, ptrdiff_t p0, ptrdiff_t kc, ptrdiff_t n, const T *a, ptrdiff_t lda,
    const int rows, const T *W, const T *b, const T *tail, int act, T *z, ptrdiff_t ldz,
    DN(ivec) * bad)
{
    const ptrdiff_t full = n / PANEL;
    const int first = p0 == 0, last = p0 + kc == k;
    const T *w = W + p0 * n;
    a += p0;
    ptrdiff_t j = 0;
    for (; j + NP <= full; j += NP)
        DN(fm_dense_tile)(kc, a, lda, rows, w + j * PANEL, n, NP, b + j * PANEL, act,
                          z + j * PANEL, ldz, NP * PANEL, first, last, bad);
    if (NP > 1)
        for (; j < full; j++)
            DN(fm_dense_tile)(kc, a, lda, rows, w + j * PANEL, n, 1, b + j * PANEL, act,
                              z + j * PANEL, ldz, PANEL, first, last, bad);
    if (full * PANEL < n)
        DN(fm_dense_tile)(kc, a, lda, rows, tail + p0 * PANEL, PANEL, 1, tail + k * PANEL, act,
                          z + full * PANEL, ldz, n - full * PANEL, first, last, bad);
}

static FM_TARGET int DN(fm_dense)(ptrdiff_t m, ptrdiff_t k, ptrdiff_t n, const T *A,
                                  ptrdiff_t lda, const T *W, const T *b, const T *tail,
                                  int act, T *Z, ptrdiff_t ldz)
{
    DN(ivec) bad = {0};
    /* Equal k blocks of at most FM_DENSE_KBLOCK_BYTES of W (see the top). */
    const ptrdiff_t row_bytes = (n + PANEL - 1) / PANEL * FM_PANEL_BYTES;
    ptrdiff_t nkb = (k * row_bytes + FM_DENSE_KBLOCK_BYTES - 1) / FM_DENSE_KBLOCK_BYTES;
    if (nkb < 1) nkb = 1;
    const ptrdiff_t kc = (k + nkb - 1) / nkb;
    ptrdiff_t p0 = 0;
    do { /* at least once: k = 0 gives Z = act(b) */
        const ptrdiff_t kb = k - p0 < kc ? k - p0 : kc;
        for (ptrdiff_t i = 0; i < m; i += MR) {
            const T *a = A + i * lda;
            T *z = Z + i * ldz;
            /* One compiled shape per row count: full strips, then the last few rows. */
            switch (m - i < MR ? m - i : MR) {
#define DN_ROWS(r)                                                                       \
    case r:                                                                              \
        DN(fm_dense_strip)(k, p0, kb, n, a, lda, r <= MR ? r : MR, W, b, tail, act, z, ldz, \
                           &bad);                                                        \
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
    if (act == FM_TANH || act == FM_SIGMOID)
        for (ptrdiff_t i = 0; i < m; i++) FN(fm_bias_act)(1, n, Z + i * ldz, b, act);
    int any = 0;
    for (int v = 0; v < VL; v++) any |= bad[v] != 0;
    return !any;
}

#undef VL
#undef VPP
#undef PANEL
#undef DN
#undef DN_CAT3
#undef DN_CAT3_
