/*
 * How many multiply-adds per second one core runs through the int8 steps of the kernels
 * (csrc/fm_int8_avx2.c: vpmaddubsw, vpmaddwd by ones, vpaddd; csrc/fm_int8_vnni.c:
 * vpdpbusd, AVX-VNNI's and AVX512-VNNI's; 32 uint8 x int8 products into int32 each, 64 on
 * zmm) against float32 FMAs (vfmadd231ps: 8 products, 16 on zmm), with as many independent
 * sums as the kernels keep. A batch of 10,000 rows is bound by this rate, not by memory, so
 * the ratio bounds what the int8 model can gain over the float one there on this CPU.
 *
 *     cc -O2 -o /tmp/int8_mac_rate benches/int8_mac_rate.c && /tmp/int8_mac_rate
 *
 * x86-64 with AVX2 and FMA (GNU assembler syntax); the VNNI steps where the CPU has them.
 */
#include <stdio.h>
#include <time.h>

#define ITERS 50000000L

static double now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + 1e-9 * t.tv_nsec;
}

/* One instruction of the loops below: `op` on registers R14 and R15 into R<n>; ZERO clears
   R14 and R15 with `op`. */
#define STEP(op, R, n) op " %%" R "14, %%" R "15, %%" R #n "\n\t"
#define ZERO(op, R) \
    op " %%" R "14, %%" R "14, %%" R "14\n\t" op " %%" R "15, %%" R "15, %%" R "15\n"

/* 12 independent FMA chains: latency 4 at two per cycle needs 8 or more. R: ymm or zmm. */
#define FMA(R, n) STEP("vfmadd231ps", R, n)
#define FMA_LOOP(R)                                        \
    ZERO("vxorps", R)                                      \
    "1:\n\t"                                               \
    FMA(R, 0) FMA(R, 1) FMA(R, 2) FMA(R, 3)                \
    FMA(R, 4) FMA(R, 5) FMA(R, 6) FMA(R, 7)                \
    FMA(R, 8) FMA(R, 9) FMA(R, 10) FMA(R, 11)              \
    "dec %0\n\t"                                           \
    "jnz 1b\n"
#define FMA_CLOBBERS                                                                    \
    "xmm0", "xmm1", "xmm2", "xmm3", "xmm4", "xmm5", "xmm6", "xmm7", "xmm8", "xmm9", "xmm10", \
        "xmm11", "xmm14", "xmm15"

/* zmm: 16 products per FMA, where the CPU has AVX-512 (vxorps on zmm: AVX512DQ). */
static double float_macs_per_s(int zmm)
{
    long n = ITERS;
    double t = now();
    if (zmm)
        __asm__ volatile(FMA_LOOP("zmm") : "+r"(n) : : FMA_CLOBBERS);
    else
        __asm__ volatile(FMA_LOOP("ymm") : "+r"(n) : : FMA_CLOBBERS);
    return ITERS * 12.0 * (zmm ? 16 : 8) / (now() - t);
}

/* 6 independent int8 steps, as the kernel's 6 accumulators of a tile. */
static double int8_macs_per_s(void)
{
    long n = ITERS;
    double t = now();
    __asm__ volatile("vpxor %%ymm13, %%ymm13, %%ymm13\n\t"
                     "vpxor %%ymm14, %%ymm14, %%ymm14\n\t"
                     "vpxor %%ymm15, %%ymm15, %%ymm15\n"
                     "1:\n\t"
                     "vpmaddubsw %%ymm14, %%ymm15, %%ymm6\n\t"
                     "vpmaddubsw %%ymm14, %%ymm15, %%ymm7\n\t"
                     "vpmaddubsw %%ymm14, %%ymm15, %%ymm8\n\t"
                     "vpmaddubsw %%ymm14, %%ymm15, %%ymm9\n\t"
                     "vpmaddubsw %%ymm14, %%ymm15, %%ymm10\n\t"
                     "vpmaddubsw %%ymm14, %%ymm15, %%ymm11\n\t"
                     "vpmaddwd %%ymm13, %%ymm6, %%ymm6\n\t"
                     "vpmaddwd %%ymm13, %%ymm7, %%ymm7\n\t"
                     "vpmaddwd %%ymm13, %%ymm8, %%ymm8\n\t"
                     "vpmaddwd %%ymm13, %%ymm9, %%ymm9\n\t"
                     "vpmaddwd %%ymm13, %%ymm10, %%ymm10\n\t"
                     "vpmaddwd %%ymm13, %%ymm11, %%ymm11\n\t"
                     "vpaddd %%ymm6, %%ymm0, %%ymm0\n\t"
                     "vpaddd %%ymm7, %%ymm1, %%ymm1\n\t"
                     "vpaddd %%ymm8, %%ymm2, %%ymm2\n\t"
                     "vpaddd %%ymm9, %%ymm3, %%ymm3\n\t"
                     "vpaddd %%ymm10, %%ymm4, %%ymm4\n\t"
                     "vpaddd %%ymm11, %%ymm5, %%ymm5\n\t"
                     "dec %0\n\t"
                     "jnz 1b\n"
                     : "+r"(n)
                     :
                     : "xmm0", "xmm1", "xmm2", "xmm3", "xmm4", "xmm5", "xmm6", "xmm7",
                       "xmm8", "xmm9", "xmm10", "xmm11", "xmm13", "xmm14", "xmm15");
    return ITERS * 6.0 * 32 / (now() - t);
}

/* vpdpbusd on 8 independent sums, as the VNNI strips keep (4 rows x 2, or one row's 4
   sets x 2): the sum it adds to is an input, so its latency must be hidden. R: ymm (32
   products) or zmm (64). */
#define VNNI_LOOP(op, R, XOR)                                  \
    ZERO(XOR, R)                                               \
    "1:\n\t"                                                   \
    STEP(op, R, 0) STEP(op, R, 1) STEP(op, R, 2) STEP(op, R, 3) \
    STEP(op, R, 4) STEP(op, R, 5) STEP(op, R, 6) STEP(op, R, 7) \
    "dec %0\n\t"                                               \
    "jnz 1b\n"
#define VNNI_CLOBBERS \
    "xmm0", "xmm1", "xmm2", "xmm3", "xmm4", "xmm5", "xmm6", "xmm7", "xmm14", "xmm15"

/* encoding: 0 AVX-VNNI (VEX, ymm), 1 AVX512-VNNI on ymm, 2 AVX512-VNNI on zmm (the
   kernel's). */
static double vnni_macs_per_s(int encoding)
{
    long n = ITERS;
    double t = now();
    if (encoding == 2)
        __asm__ volatile(VNNI_LOOP("vpdpbusd", "zmm", "vpxord") : "+r"(n) : : VNNI_CLOBBERS);
    else if (encoding == 1)
        __asm__ volatile(VNNI_LOOP("vpdpbusd", "ymm", "vpxor") : "+r"(n) : : VNNI_CLOBBERS);
    else
        /* %{ %}: the braces of {vex}, which inline asm reads as dialect alternatives */
        __asm__ volatile(VNNI_LOOP("%{vex%} vpdpbusd", "ymm", "vpxor")
                         : "+r"(n)
                         :
                         : VNNI_CLOBBERS);
    return ITERS * 8.0 * (encoding == 2 ? 64 : 32) / (now() - t);
}

int main(void)
{
    if (!__builtin_cpu_supports("avx2") || !__builtin_cpu_supports("fma")) {
        fprintf(stderr, "this CPU has no AVX2 + FMA\n");
        return 1;
    }
    const int avx512 = __builtin_cpu_supports("avx512f");
    const int avx512_vnni = avx512 && __builtin_cpu_supports("avx512vnni") &&
                            __builtin_cpu_supports("avx512vl");
    const int avx_vnni = __builtin_cpu_supports("avxvnni");
    for (int round = 0; round < 3; round++) {
        double f = float_macs_per_s(0), q = int8_macs_per_s();
        printf("float32 FMA %.1f G/s, int8 (vpmaddubsw + vpmaddwd + vpaddd) %.1f G/s "
               "multiply-adds per core: int8 / float %.2f\n",
               f / 1e9, q / 1e9, q / f);
        if (avx512_vnni) {
            q = vnni_macs_per_s(1);
            printf("  AVX512-VNNI vpdpbusd ymm %.1f G/s: int8 / float %.2f\n", q / 1e9, q / f);
        }
        if (avx_vnni) {
            q = vnni_macs_per_s(0);
            printf("  AVX-VNNI {vex} vpdpbusd %.1f G/s: int8 / float %.2f\n", q / 1e9, q / f);
        }
        if (avx512) {
            const double fz = float_macs_per_s(1);
            printf("  512 bits: float32 FMA zmm %.1f G/s", fz / 1e9);
            if (avx512_vnni) {
                q = vnni_macs_per_s(2);
                printf(", AVX512-VNNI vpdpbusd zmm %.1f G/s: int8 / float %.2f", q / 1e9,
                       q / fz);
            }
            printf("\n");
        }
    }
    if (!avx512_vnni && !avx_vnni) printf("no VNNI on this CPU\n");
    return 0;
}
