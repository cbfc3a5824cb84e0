/* fm_dense's entry points (contracts in fm_kernels.h): which variant this CPU runs, and
   per element type the tail packing and the dispatch to the variants, which the
   fm_dense_<isa>.c files compile. */
#include "fm_dense_variants.h"

int fm_dense_isa_available(int isa)
{
#if FM_DENSE_X86
    __builtin_cpu_init(); /* idempotent; needed if called before constructors have run */
#endif
    switch (isa) {
    case FM_ISA_BASE:
        return 1;
#if FM_DENSE_X86
    case FM_ISA_AVX2:
    case FM_ISA_WIDE:
        return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    case FM_ISA_AVX512:
        return __builtin_cpu_supports("avx512f");
#endif
    default:
        return 0;
    }
}

int fm_dense_isa_best(void)
{
    if (fm_dense_isa_available(FM_ISA_AVX512)) return FM_ISA_AVX512;
    if (fm_dense_isa_available(FM_ISA_AVX2)) return FM_ISA_AVX2;
    return FM_ISA_BASE;
}

ptrdiff_t fm_dense_tail_size(ptrdiff_t k, ptrdiff_t n, size_t elem)
{
    const ptrdiff_t panel = FM_PANEL_BYTES / (ptrdiff_t)elem;
    return n % panel ? (k + 1) * panel : 0;
}

#define T float
#define S _f
#include "fm_dense_dispatch_impl.h"
#undef T
#undef S

#define T double
#define S _d
#include "fm_dense_dispatch_impl.h"
#undef T
#undef S
