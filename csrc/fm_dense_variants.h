/*
 * Private to csrc: what fm_dense.c (the entry points) and the fm_dense_<isa>.c files (one
 * variant each, compiled in parallel) share. Each variant is fm_dense_impl.h compiled for
 * one element type and instruction set; fm_dense_f / fm_dense_at_f etc. pick one.
 */
#ifndef FM_DENSE_VARIANTS_H
#define FM_DENSE_VARIANTS_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "fm_kernels.h"

/* One cache line of a row of W: the width of a panel. */
#define FM_PANEL_BYTES 64

/* Bytes of W per block: small enough to stay in L2 beside the rows of A and Z in flight
   (measurements in benches/results.md). */
#ifndef FM_DENSE_KBLOCK_BYTES
#define FM_DENSE_KBLOCK_BYTES (64 * 1024)
#endif
/* Rows of W a block keeps at least, by taking fewer columns of a wide W: each k block
   costs a reload of the tile's sums from Z, which short blocks do not amortise. */
#ifndef FM_DENSE_MIN_KBLOCK
#define FM_DENSE_MIN_KBLOCK 128
#endif
/* B is packed from rows this many bytes apart (a page holds at most two of them), in
   blocks of FM_DENSE_PACK_BYTES (on the stack) of FM_DENSE_PACK_K rows. */
#ifndef FM_DENSE_PACK_ROW_BYTES
#define FM_DENSE_PACK_ROW_BYTES 2048
#endif
#ifndef FM_DENSE_PACK_BYTES
#define FM_DENSE_PACK_BYTES (32 * 1024)
#endif
#ifndef FM_DENSE_PACK_K
#define FM_DENSE_PACK_K 64
#endif

/* Rows of the zero-padded copy of B's last columns that fm_dense makes when given no tail
   (on the stack: 16 KB). */
#ifndef FM_DENSE_TAIL_K
#define FM_DENSE_TAIL_K 256
#endif

/* Rows of A and B per block of fm_dense_at skipping zero rows, whose tiles read them
   from a list (on the stack: 1 KB); a multiple of 64 (the bits of rows in use). */
#ifndef FM_DENSE_LIST_K
#define FM_DENSE_LIST_K 256
#endif

/* FM_DENSE_NO_VECTOR builds the plain-C fallback that compilers without GCC's vector
   extensions get (to test it with GCC). */
#if defined(__GNUC__) && !defined(FM_DENSE_NO_VECTOR)
#define FM_DENSE_VECTOR 1
#else
#define FM_DENSE_VECTOR 0
#endif

/* The AVX2, wide and AVX-512 variants exist only where they can be compiled and chosen. */
#if FM_DENSE_VECTOR && (defined(__x86_64__) || defined(__i386__)) && !defined(FM_NO_DISPATCH)
#define FM_DENSE_X86 1
#else
#define FM_DENSE_X86 0
#endif

/* The variants, named fm_dense<type><isa>: arguments as fm_dense / fm_dense_at in
   fm_kernels.h without `isa`. _base: 16-byte vectors (SSE2 on x86-64), or plain loops
   without vector extensions; built everywhere. */
int fm_dense_f_base(ptrdiff_t m, ptrdiff_t k, ptrdiff_t n, const float *A, ptrdiff_t lda,
                    const float *W, ptrdiff_t ldw, const float *b, const float *tail, int act, float *Z,
                    ptrdiff_t ldz, int accumulate);
int fm_dense_d_base(ptrdiff_t m, ptrdiff_t k, ptrdiff_t n, const double *A, ptrdiff_t lda,
                    const double *W, ptrdiff_t ldw, const double *b, const double *tail, int act,
                    double *Z, ptrdiff_t ldz, int accumulate);
int fm_dense_at_f_base(ptrdiff_t m, ptrdiff_t k, ptrdiff_t n, const float *A, ptrdiff_t lda,
                       const float *B, float *C, ptrdiff_t ldc, int accumulate,
                       int skip_zeros);
int fm_dense_at_d_base(ptrdiff_t m, ptrdiff_t k, ptrdiff_t n, const double *A,
                       ptrdiff_t lda, const double *B, double *C, ptrdiff_t ldc,
                       int accumulate, int skip_zeros);

#if FM_DENSE_X86
/* _avx2: AVX2 + FMA, a 6-row x 1-panel tile in 12 of the 16 ymm registers. */
int fm_dense_f_avx2(ptrdiff_t m, ptrdiff_t k, ptrdiff_t n, const float *A, ptrdiff_t lda,
                    const float *W, ptrdiff_t ldw, const float *b, const float *tail, int act, float *Z,
                    ptrdiff_t ldz, int accumulate);
int fm_dense_d_avx2(ptrdiff_t m, ptrdiff_t k, ptrdiff_t n, const double *A, ptrdiff_t lda,
                    const double *W, ptrdiff_t ldw, const double *b, const double *tail, int act,
                    double *Z, ptrdiff_t ldz, int accumulate);
int fm_dense_at_f_avx2(ptrdiff_t m, ptrdiff_t k, ptrdiff_t n, const float *A, ptrdiff_t lda,
                       const float *B, float *C, ptrdiff_t ldc, int accumulate,
                       int skip_zeros);
int fm_dense_at_d_avx2(ptrdiff_t m, ptrdiff_t k, ptrdiff_t n, const double *A,
                       ptrdiff_t lda, const double *B, double *C, ptrdiff_t ldc,
                       int accumulate, int skip_zeros);

/* _wide: the AVX-512 tile shape compiled for AVX2, so that the tests run that shape's
   code on machines without AVX-512; never chosen by FM_ISA_AUTO. */
int fm_dense_f_wide(ptrdiff_t m, ptrdiff_t k, ptrdiff_t n, const float *A, ptrdiff_t lda,
                    const float *W, ptrdiff_t ldw, const float *b, const float *tail, int act, float *Z,
                    ptrdiff_t ldz, int accumulate);
int fm_dense_d_wide(ptrdiff_t m, ptrdiff_t k, ptrdiff_t n, const double *A, ptrdiff_t lda,
                    const double *W, ptrdiff_t ldw, const double *b, const double *tail, int act,
                    double *Z, ptrdiff_t ldz, int accumulate);
int fm_dense_at_f_wide(ptrdiff_t m, ptrdiff_t k, ptrdiff_t n, const float *A, ptrdiff_t lda,
                       const float *B, float *C, ptrdiff_t ldc, int accumulate,
                       int skip_zeros);
int fm_dense_at_d_wide(ptrdiff_t m, ptrdiff_t k, ptrdiff_t n, const double *A,
                       ptrdiff_t lda, const double *B, double *C, ptrdiff_t ldc,
                       int accumulate, int skip_zeros);

/* _avx512: AVX-512F, an 8-row x 2-panel tile in 16 of the 32 zmm registers. */
int fm_dense_f_avx512(ptrdiff_t m, ptrdiff_t k, ptrdiff_t n, const float *A, ptrdiff_t lda,
                      const float *W, ptrdiff_t ldw, const float *b, const float *tail, int act, float *Z,
                      ptrdiff_t ldz, int accumulate);
int fm_dense_d_avx512(ptrdiff_t m, ptrdiff_t k, ptrdiff_t n, const double *A,
                      ptrdiff_t lda, const double *W, ptrdiff_t ldw, const double *b, const double *tail,
                      int act, double *Z, ptrdiff_t ldz, int accumulate);
int fm_dense_at_f_avx512(ptrdiff_t m, ptrdiff_t k, ptrdiff_t n, const float *A,
                         ptrdiff_t lda, const float *B, float *C, ptrdiff_t ldc,
                         int accumulate, int skip_zeros);
int fm_dense_at_d_avx512(ptrdiff_t m, ptrdiff_t k, ptrdiff_t n, const double *A,
                         ptrdiff_t lda, const double *B, double *C, ptrdiff_t ldc,
                         int accumulate, int skip_zeros);
#endif

#endif
