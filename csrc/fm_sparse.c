/* Instantiates the sparse first-layer kernels of fm_sparse_impl.h for float (_f) and
   double (_d). */
#include "fm_kernels.h"

/* As in fm_kernels.c: copies for AVX2 and AVX-512 beside the baseline, chosen at load time
   by the CPU (the axpy over a row of W is the whole of both kernels). */
#if defined(__x86_64__) && defined(__ELF__) && (defined(__clang__) || __GNUC__ >= 8) && \
    !defined(FM_NO_DISPATCH)
#define FM_CPU_DISPATCH __attribute__((target_clones("avx512f", "arch=haswell", "default")))
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
