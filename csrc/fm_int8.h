/*
 * int8 inference: the layers of a quantized MLP (fastmlp/quantize.py) in integer arithmetic.
 *
 * Numbers. A layer's input is a row of uint8 activations q in [0, 127] (7 bits, see below)
 * with x ~ scale * (q - zero_point); its weights are int8 in [-127, 127], one scale per
 * output column. The layer sums in int32, exactly:
 *
 *     acc[j] = offset[j] + sum_i q[i] * W[i][j]      (offset = -zero_point * column sums)
 *     y[j]   = (float)acc[j] * mult[j] + bias[j]     (float32, a multiply then an add)
 *
 * then a hidden layer applies ReLU and requantizes for the next one,
 *
 *     q'[j]  = rint(min(max(y[j] * inv_next, 0), 127))       (round half to even)
 *
 * and the last layer's y are the logits (softmax optional). Every float operation is one
 * IEEE operation in a fixed order (compiled with -ffp-contract=off), so every variant gives
 * the same bits, for any row count, block or thread.
 *
 * Why 7-bit activations: AVX2's vpmaddubsw multiplies uint8 by int8 and adds pairs into a
 * saturating int16; with q <= 127 and |w| <= 127 a pair sums to at most 2 * 127 * 127 =
 * 32258 < 32767, so it never saturates and the sums are exact.
 *
 * Packed weights. W (k x n, row-major int8) is packed once into tiles of 16 columns: tile t
 * holds, for every group g of 4 consecutive inputs, 16 columns x 4 inputs (64 bytes, one
 * cache line): P[t][g][c][i] = W[4g + i][16t + c], zero-padded to k4 = round_up(k, 4) rows
 * and n16 = round_up(n, 16) columns. That is the layout VNNI's vpdpbusd reads as well: a
 * broadcast group of 4 activations times one half of a line sums 8 columns' 4 products
 * (256 bits), times the whole line 16 columns' (512 bits).
 */
#ifndef FM_INT8_H
#define FM_INT8_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define FM_INT8_TILE 16   /* output columns per packed tile */
#define FM_INT8_GROUP 4   /* inputs per packed group (one int32 of activations) */
#define FM_INT8_QMAX 127  /* largest activation and weight magnitude */
/* The largest fan-in: |acc| <= fan_in * 127 * 127 (+ the same again for the offset) must
   stay below 2^31. */
#define FM_INT8_MAX_FAN_IN 65536

/* Variants; FM_INT8_ISA_AUTO picks the best this CPU runs. VNNI_EMULATED is the VNNI
   variants' code with vpdpbusd built of AVX2 instructions, for tests; never picked. */
enum fm_int8_isa {
    FM_INT8_ISA_AUTO = -1,
    FM_INT8_ISA_BASE = 0,
    FM_INT8_ISA_AVX2 = 1,
    FM_INT8_ISA_AVX512_VNNI = 2,
    FM_INT8_ISA_AVX_VNNI = 3,
    FM_INT8_ISA_VNNI_EMULATED = 4
};

int fm_int8_isa_available(int isa);
int fm_int8_isa_best(void);

/* One quantized layer as the kernels read it. offset, mult and bias hold n16 values (the
   padding zeros, so padded columns compute 0). */
typedef struct {
    ptrdiff_t k, n;        /* fan_in, fan_out */
    const int8_t *packed;  /* k4 * n16 bytes, layout above */
    const int32_t *offset; /* -zero_point of the input * column sums of W */
    const float *mult;     /* input scale * weight scale of the column */
    const float *bias;
    float inv_next;        /* hidden layers: 1 / the next layer's input scale */
} fm_int8_layer;

/* Bytes of W packed (k4 * n16). */
ptrdiff_t fm_int8_packed_size(ptrdiff_t k, ptrdiff_t n);
/* Pack W (k x n int8, row-major) into P (fm_int8_packed_size bytes). */
void fm_int8_pack(ptrdiff_t k, ptrdiff_t n, const int8_t *W, int8_t *P);

/* Q (m x k4, stride ldq) = rint(min(max(X * inv, -zero_point), 127 - zero_point)) +
   zero_point, the padding columns k..k4-1 zero. Returns 0 if some X * inv is NaN or
   infinite (X holds NaN or infinity, or overflows), else 1. */
int fm_int8_quantize(ptrdiff_t m, ptrdiff_t k, const float *X, ptrdiff_t ldx, float inv,
                     int zero_point, uint8_t *Q, ptrdiff_t ldq);

/* One layer over m rows. Q: m x k4 (stride ldq) activations. Hidden (Qout != NULL): Qout
   (m x n16, stride ldqo >= n16) receives the requantized ReLU outputs, padding columns 0.
   Last (Qout == NULL): Z (m x n16, stride ldz >= n16) receives y. list: workspace of
   5 * k4 / 4 int32 (the groups of 4 single rows and of their strip). */
void fm_int8_layer_forward(ptrdiff_t m, const fm_int8_layer *layer, const uint8_t *Q,
                           ptrdiff_t ldq, uint8_t *Qout, ptrdiff_t ldqo, float *Z,
                           ptrdiff_t ldz, int32_t *list, int isa);

/* Bytes of workspace fm_int8_forward needs for m rows. */
size_t fm_int8_workspace_size(ptrdiff_t m, int n_layers, const fm_int8_layer *layers);

/* The whole network on m rows: quantize X (m x k of layer 0, stride ldx) with in_inv and
   in_zero_point, run the layers, write the last layer's n outputs per row to out (stride
   ldo), then softmax each row if `softmax`. ws: fm_int8_workspace_size bytes, 64-byte
   aligned. Returns 0 if X holds NaN or infinity (out is then undefined), else 1. */
int fm_int8_forward(ptrdiff_t m, int n_layers, const fm_int8_layer *layers, float in_inv,
                    int in_zero_point, const float *X, ptrdiff_t ldx, float *out,
                    ptrdiff_t ldo, int softmax, void *ws, int isa);

#ifdef __cplusplus
}
#endif

#endif
