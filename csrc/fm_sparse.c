/* Instantiates the sparse first-layer kernels of fm_sparse_impl.h for float (_f) and
   double (_d). */
#include "fm_kernels.h"

/* Copies for AVX2 and AVX-512 beside the baseline, chosen at load time by the CPU's
   features (the axpy over a row of W is the whole of both kernels). "avx2", not
   fm_kernels.c's "arch=haswell": GCC picks an arch= clone by the CPU model, so an AMD Zen 3
   ran the SSE2 default, 2x slower here (AVX2 without FMA: the loop waits on memory). */
#if defined(__x86_64__) && defined(__ELF__) && (defined(__clang__) || __GNUC__ >= 8) && \
    !defined(FM_NO_DISPATCH)
#define FM_CPU_DISPATCH __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define FM_CPU_DISPATCH
#endif

#define T float
#define S _f
#include "fm_sparse_impl.h"
#undef T
#undef S

#define T double
#define S _d
#include "fm_sparse_impl.h"
#undef T
#undef S
