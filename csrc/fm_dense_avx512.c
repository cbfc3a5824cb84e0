/* fm_dense's AVX-512 variant: an 8-row x 2-panel tile in 16 of the 32 zmm registers. */
#include "fm_dense_variants.h"

#if FM_DENSE_X86
#define ISA _avx512
#define FM_TARGET __attribute__((target("avx512f,fma")))
#define VB 64
#define MR 8
#define NP 2

#include "fm_dense_types.h"
#endif
