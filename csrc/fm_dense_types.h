/* Compiles fm_dense_impl.h, the variant its includer describes (ISA, FM_TARGET, VB, MR,
   NP), once for float and once for double. Included by each fm_dense_<isa>.c. */
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
#undef T
#undef S
#undef IT
