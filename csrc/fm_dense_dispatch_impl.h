/*
 * Body of fm_dense's entry points for one element type (contracts in fm_kernels.h),
 * included by fm_dense.c once per type with T and S (_f, _d) defined: the tail packing,
 * and the choice of the variant by `isa`.
 */
#define DD_CAT3_(a, b, c) a##b##c
#define DD_CAT3(a, b, c) DD_CAT3_(a, b, c)
#define FN(name) DD_CAT3(name, S, )       /* this type's entry point */
#define VN(name, isa) DD_CAT3(name, S, isa) /* one of its variants */

void FN(fm_dense_pack_tail)(ptrdiff_t k, ptrdiff_t n, const T *W, const T *b, T *tail)
{
    const ptrdiff_t panel = FM_PANEL_BYTES / (ptrdiff_t)sizeof(T);
    const ptrdiff_t j0 = n - n % panel;
    if (j0 == n) return;
    for (ptrdiff_t p = 0; p <= k; p++) {
        const T *src = p < k ? W + p * n + j0 : b + j0;
        for (ptrdiff_t j = 0; j < panel; j++) tail[p * panel + j] = j0 + j < n ? src[j] : 0;
    }
}

int FN(fm_dense)(ptrdiff_t m, ptrdiff_t k, ptrdiff_t n, const T *A, ptrdiff_t lda, const T *W,
                 ptrdiff_t ldw, const T *b, const T *tail, int act, T *Z, ptrdiff_t ldz,
                 int accumulate, int isa)
{
    if (isa < 0) isa = fm_dense_isa_best();
    switch (isa) {
#if FM_DENSE_X86
    case FM_ISA_AVX2:
        return VN(fm_dense, _avx2)(m, k, n, A, lda, W, ldw, b, tail, act, Z, ldz, accumulate);
    case FM_ISA_WIDE:
        return VN(fm_dense, _wide)(m, k, n, A, lda, W, ldw, b, tail, act, Z, ldz, accumulate);
    case FM_ISA_AVX512:
        return VN(fm_dense, _avx512)(m, k, n, A, lda, W, ldw, b, tail, act, Z, ldz, accumulate);
#endif
    default:
        return VN(fm_dense, _base)(m, k, n, A, lda, W, ldw, b, tail, act, Z, ldz, accumulate);
    }
}

int FN(fm_dense_at)(ptrdiff_t m, ptrdiff_t k, ptrdiff_t n, const T *A, ptrdiff_t lda,
                    const T *B, T *C, ptrdiff_t ldc, int accumulate, int skip_zeros, int isa)
{
    if (isa < 0) isa = fm_dense_isa_best();
    switch (isa) {
#if FM_DENSE_X86
    case FM_ISA_AVX2:
        return VN(fm_dense_at, _avx2)(m, k, n, A, lda, B, C, ldc, accumulate, skip_zeros);
    case FM_ISA_WIDE:
        return VN(fm_dense_at, _wide)(m, k, n, A, lda, B, C, ldc, accumulate, skip_zeros);
    case FM_ISA_AVX512:
        return VN(fm_dense_at, _avx512)(m, k, n, A, lda, B, C, ldc, accumulate, skip_zeros);
#endif
    default:
        return VN(fm_dense_at, _base)(m, k, n, A, lda, B, C, ldc, accumulate, skip_zeros);
    }
}

#undef FN
#undef VN
#undef DD_CAT3
#undef DD_CAT3_
