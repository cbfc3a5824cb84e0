/* fm_dense's "wide" variant: the AVX-512 tile shape (8 rows x 2 panels) compiled for
   AVX2, so that the tests run that shape's code on machines without AVX-512. */
#include "fm_dense_variants.h"

#if FM_DENSE_X86
#define ISA _wide
#define FM_TARGET __attribute__((target("avx2,fma")))
#define VB 64
#define MR 8
#define NP 2

#include "fm_dense_types.h"
#endif
