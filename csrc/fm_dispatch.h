/*
 * FM_CPU_DISPATCH: the attribute that gives a kernel copies for AVX2 and AVX-512 beside
 * the baseline x86-64 (SSE2) build, chosen at load time by the CPU it runs on (GCC/clang
 * function multiversioning on ELF platforms); FASTMLP_NATIVE=1 builds for the build
 * machine instead. Features, not "arch=haswell": GCC picks an arch= clone by CPU model, so
 * no AMD CPU ever ran it (seen in gdb on a Zen 3, where the sparse kernels then ran 2x
 * faster).
 */
#ifndef FM_DISPATCH_H
#define FM_DISPATCH_H

#if defined(__x86_64__) && defined(__ELF__) && (defined(__clang__) || __GNUC__ >= 8) && \
    !defined(FM_NO_DISPATCH)
#define FM_CPU_DISPATCH __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define FM_CPU_DISPATCH
#endif

#endif
