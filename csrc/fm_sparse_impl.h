/*
 * Body of the sparse first-layer kernels (contracts in fm_kernels.h), included by
 * fm_sparse.c once per element type with T and S defined (float and _f, double and _d)
 * and FM_CPU_DISPATCH.
 *
 * X is CSR: row i's nonzeros are data[indptr[i] .. indptr[i+1]) in columns indices[...].
 * Both kernels loop over one row of W (or of D) at a time, whole, so the inner loop is a
 * contiguous axpy the compiler vectorises; every sum runs in the stored order of the
 * nonzeros and of the rows, so the bits do not depend on how a caller splits its work.
 */
#define FM_SP_CAT_(a, b) a##b
#define FM_SP_CAT(a, b) FM_SP_CAT_(a, b)
#define FN(name) FM_SP_CAT(name, S)

FM_CPU_DISPATCH
void FN(fm_csr_matmul)(ptrdiff_t m, ptrdiff_t n, const int64_t *indptr,
                       const int32_t *indices, const T *data, const int64_t *rows,
                       const T *W, T *Z, ptrdiff_t ldz)
{
    for (ptrdiff_t r = 0; r < m; r++) {
        const int64_t i = rows ? rows[r] : (int64_t) r;
        const int64_t start = indptr[i], end = indptr[i + 1];
        T *restrict z = Z + r * ldz;
        for (ptrdiff_t j = 0; j < n; j++) z[j] = 0;
        for (int64_t p = start; p < end; p++) {
            const T v = data[p];
            const T *restrict w = W + (ptrdiff_t) indices[p] * n;
            for (ptrdiff_t j = 0; j < n; j++) z[j] += v * w[j];
        }
    }
}

FM_CPU_DISPATCH
void FN(fm_csr_at)(ptrdiff_t m, ptrdiff_t n, const int64_t *indptr, const int32_t *indices,
                   const T *data, const int64_t *rows, int32_t c0, int32_t c1, const T *D,
                   T *C, ptrdiff_t ldc, int accumulate)
{
    if (!accumulate) {
        for (ptrdiff_t c = 0; c < (ptrdiff_t) c1 - c0; c++) {
            T *restrict out = C + c * ldc;
            for (ptrdiff_t j = 0; j < n; j++) out[j] = 0;
        }
    }
    /* A scatter: each nonzero of column c in [c0, c1) adds its row of D to row c - c0 of
       C. Rows in batch order, nonzeros in stored order: a fixed order of the sums. */
    for (ptrdiff_t r = 0; r < m; r++) {
        const int64_t i = rows ? rows[r] : (int64_t) r;
        const T *restrict d = D + r * n;
        const int64_t start = indptr[i], end = indptr[i + 1];
        for (int64_t p = start; p < end; p++) {
            const int32_t c = indices[p];
            if (c < c0 || c >= c1) continue;
            const T v = data[p];
            T *restrict out = C + (ptrdiff_t) (c - c0) * ldc;
            for (ptrdiff_t j = 0; j < n; j++) out[j] += v * d[j];
        }
    }
}

#undef FN
#undef FM_SP_CAT
#undef FM_SP_CAT_
