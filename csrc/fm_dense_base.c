/* fm_dense's baseline variant: 16-byte vectors (SSE2 on x86-64, NEON or the compiler's
   lowering elsewhere), a 3-row x 1-panel tile; plain loops without vector extensions. */
#include "fm_dense_variants.h"

#define ISA _base
#define FM_TARGET /* the instruction set of the build */
#define VB 16
#define MR 3
#define NP 1

#define T float
#define S _f
#define IT int32_t
#include "fm_dense_impl.h"
#undef T
#undef S
#undef IT

#define T double
#define S _d
#define IT int64_t
#include "fm_dense_impl.h"
