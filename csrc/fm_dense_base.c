/* fm_dense's baseline variant: 16-byte vectors (SSE2 on x86-64, NEON or the compiler's
   lowering elsewhere), a 3-row x 1-panel tile; plain loops without vector extensions. */
#include "fm_dense_variants.h"

#define ISA _base
#define FM_TARGET /* the instruction set of the build */
#define VB 16
#define MR 3
#define NP 1

#include "fm_dense_types.h"
