/*
 * FM_CPU_DISPATCH: the attribute that gives a kernel copies for AVX2 + FMA and AVX-512
 * beside the baseline x86-64 (SSE2) build, chosen at load time by the CPU it runs on
 * (GCC/clang function multiversioning on ELF platforms); FASTMLP_NATIVE=1 builds for the
 * build machine instead. The ISA levels x86-64-v3 and -v4 (GCC 12 and later) are tested
 * by features, as "avx2" is, and unlike "arch=haswell", which GCC picks by CPU model: no
 * AMD CPU ever ran that (seen in gdb on a Zen 3; the sparse kernels ran 2x faster once one
 * did). The levels bring FMA, which fm_dense's tiles use: fm_vecmat gives their bits.
 */
#ifndef FM_DISPATCH_H
#define FM_DISPATCH_H

#if defined(__x86_64__) && defined(__ELF__) && (defined(__clang__) || __GNUC__ >= 8) && \
    !defined(FM_NO_DISPATCH)
#if !defined(__clang__) && __GNUC__ >= 12
#define FM_CPU_DISPATCH \
    __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#define FM_VECMAT_DENSE_BITS 1
#else
#define FM_CPU_DISPATCH __attribute__((target_clones("avx512f", "avx2", "default")))
#endif
#else
#define FM_CPU_DISPATCH
#endif

/* 1 where this build is known to give one row fm_dense's bits through fm_vecmat (the
   tests hold it to that); 0 where that is not known. */
#ifndef FM_VECMAT_DENSE_BITS
#define FM_VECMAT_DENSE_BITS 0
#endif

#endif
