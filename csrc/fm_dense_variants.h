/* The variants of fm_dense for one element type, included by fm_dense.c once per type
   (T, S, IT defined by the includer): instruction set, vector bytes, register tile. */
#define ISA _base
#define FM_TARGET
#define VB 16
#define MR 3
#define NP 1
#include "fm_dense_impl.h"
#undef ISA
#undef FM_TARGET
#undef VB
#undef MR
#undef NP
#if FM_DENSE_X86
#define ISA _avx2
#define FM_TARGET __attribute__((target("avx2,fma")))
#define VB 32
#define MR 6
#define NP 1
#include "fm_dense_impl.h"
#undef ISA
#undef VB
#undef MR
#undef NP
#define ISA _wide
#define VB 64
#define MR 8
#define NP 2
#include "fm_dense_impl.h"
#undef ISA
#undef FM_TARGET
#define ISA _avx512
#define FM_TARGET __attribute__((target("avx512f,fma")))
#include "fm_dense_impl.h"
#undef ISA
#undef FM_TARGET
#undef VB
#undef MR
#undef NP
#endif
