/* Instantiates the kernels of fm_kernels_impl.h for float (_f) and double (_d). */
#include <math.h>

#include "fm_kernels.h"

/* The default build targets baseline x86-64 (SSE2). The kernels whose loops dominate
   (the one-row product, Adam, the element-wise passes) also get copies for AVX2 and
   AVX-512, chosen at load time by the CPU they run on (GCC/clang function
   multiversioning on ELF platforms); FASTMLP_NATIVE=1 builds for the build machine.
   Features, not "arch=haswell": GCC picks an arch= clone by CPU model, so no AMD CPU ever
   ran it (found in gdb on a Zen 3). */
#if defined(__x86_64__) && defined(__ELF__) && (defined(__clang__) || __GNUC__ >= 8) && \
    !defined(FM_NO_DISPATCH)
#define FM_CPU_DISPATCH __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define FM_CPU_DISPATCH
#endif

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
