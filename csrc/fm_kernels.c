/* Instantiates the kernels of fm_kernels_impl.h for float (_f) and double (_d). */
#include <math.h>

#include "fm_kernels.h"

/* The kernels whose loops dominate (the one-row product, Adam, the element-wise passes)
   get copies per instruction set. */
#include "fm_dispatch.h"

uint64_t fm_hash64(uint64_t seed, uint64_t index)
{
    uint64_t z = seed + (index + 1) * 0x9E3779B97F4A7C15ULL;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return z ^ (z >> 31);
}

#define T float
#define S _f
#define EXP expf
#define LOG logf
#define TANH tanhf
#define FABS fabsf
#define SQRT sqrtf
#include "fm_kernels_impl.h"
#undef T
#undef S
#undef EXP
#undef LOG
#undef TANH
#undef FABS
#undef SQRT

#define T double
#define S _d
#define EXP exp
#define LOG log
#define TANH tanh
#define FABS fabs
#define SQRT sqrt
#include "fm_kernels_impl.h"
