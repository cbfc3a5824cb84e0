/* fm_dense's AVX2 + FMA variant: a 6-row x 1-panel tile in 12 of the 16 ymm registers. */
#include "fm_dense_variants.h"

#if FM_DENSE_X86
#define ISA _avx2
#define FM_TARGET __attribute__((target("avx2,fma")))
#define VB 32
#define MR 6
#define NP 1

#include "fm_dense_types.h"
#endif
