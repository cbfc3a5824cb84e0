/* int8 inference (contracts in fm_int8.h): packing, input quantization, the plain-C strip,
   the choice of the variant and the whole forward pass of a block of rows. */
#include "fm_int8_shared.h"
#include "fm_kernels.h"

int fm_int8_isa_available(int isa)
{
#if FM_INT8_X86
    __builtin_cpu_init();
#endif
    switch (isa) {
    case FM_INT8_ISA_BASE:
        return 1;
#if FM_INT8_X86
    case FM_INT8_ISA_AVX2:
    case FM_INT8_ISA_VNNI_EMULATED:
        return __builtin_cpu_supports("avx2");
    case FM_INT8_ISA_AVX512_VNNI:
        return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("avx512f") &&
               __builtin_cpu_supports("avx512vnni");
    case FM_INT8_ISA_AVX_VNNI:
        return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("avxvnni");
#endif
    default:
        return 0;
    }
}

int fm_int8_isa_best(void)
{
    if (fm_int8_isa_available(FM_INT8_ISA_AVX512_VNNI)) return FM_INT8_ISA_AVX512_VNNI;
    if (fm_int8_isa_available(FM_INT8_ISA_AVX_VNNI)) return FM_INT8_ISA_AVX_VNNI;
    if (fm_int8_isa_available(FM_INT8_ISA_AVX2)) return FM_INT8_ISA_AVX2;
    return FM_INT8_ISA_BASE;
}

ptrdiff_t fm_int8_packed_size(ptrdiff_t k, ptrdiff_t n)
{
    return fm_int8_round_up(k, FM_INT8_GROUP) * fm_int8_round_up(n, FM_INT8_TILE);
}

void fm_int8_pack(ptrdiff_t k, ptrdiff_t n, const int8_t *W, int8_t *P)
{
    const ptrdiff_t n_groups = fm_int8_round_up(k, FM_INT8_GROUP) / FM_INT8_GROUP;
    const ptrdiff_t n_tiles = fm_int8_round_up(n, FM_INT8_TILE) / FM_INT8_TILE;
    ptrdiff_t t, g, c, i;
    for (t = 0; t < n_tiles; t++)
        for (g = 0; g < n_groups; g++)
            for (c = 0; c < FM_INT8_TILE; c++)
                for (i = 0; i < FM_INT8_GROUP; i++) {
                    const ptrdiff_t row = g * FM_INT8_GROUP + i, col = t * FM_INT8_TILE + c;
                    *P++ = row < k && col < n ? W[row * n + col] : 0;
                }
}

int fm_int8_quantize(ptrdiff_t m, ptrdiff_t k, const float *X, ptrdiff_t ldx, float inv,
                     int zero_point, uint8_t *Q, ptrdiff_t ldq)
{
    const ptrdiff_t k4 = fm_int8_round_up(k, FM_INT8_GROUP);
    const float lo = (float)-zero_point, hi = (float)(FM_INT8_QMAX - zero_point);
    int ok = 1;
    ptrdiff_t r, i;
    for (r = 0; r < m; r++) {
        const float *x = X + r * ldx;
        uint8_t *q = Q + r * ldq;
        for (i = 0; i < k; i++) {
            float v = x[i] * inv;
            ok &= v - v == 0.0f; /* NaN for NaN and infinity */
            v = v > lo ? v : lo;
            v = v < hi ? v : hi;
            q[i] = (uint8_t)(lrintf(v) + zero_point);
        }
        for (; i < k4; i++) q[i] = 0;
    }
    return ok;
}

void fm_int8_strip_base(int mr, const fm_int8_layer *L, const uint8_t *Q, ptrdiff_t ldq,
                        const int32_t *list, ptrdiff_t n_list, uint8_t *Qout, ptrdiff_t ldqo,
                        float *Z, ptrdiff_t ldz)
{
    const ptrdiff_t n_groups = fm_int8_round_up(L->k, FM_INT8_GROUP) / FM_INT8_GROUP;
    const ptrdiff_t n_tiles = fm_int8_round_up(L->n, FM_INT8_TILE) / FM_INT8_TILE;
    ptrdiff_t t, e;
    int r, c;
    for (t = 0; t < n_tiles; t++) {
        const int8_t *Pt = L->packed + t * n_groups * FM_INT8_GROUP * FM_INT8_TILE;
        const ptrdiff_t j0 = t * FM_INT8_TILE;
        int32_t acc[4][FM_INT8_TILE];
        for (r = 0; r < mr; r++)
            for (c = 0; c < FM_INT8_TILE; c++) acc[r][c] = L->offset[j0 + c];
        for (e = 0; e < n_list; e++) {
            const ptrdiff_t g = list[e];
            const int8_t *w = Pt + g * FM_INT8_GROUP * FM_INT8_TILE;
            for (r = 0; r < mr; r++) {
                const uint8_t *x = Q + r * ldq + g * FM_INT8_GROUP;
                for (c = 0; c < FM_INT8_TILE; c++)
                    acc[r][c] += x[0] * w[4 * c] + x[1] * w[4 * c + 1] + x[2] * w[4 * c + 2] +
                                 x[3] * w[4 * c + 3];
            }
        }
        for (r = 0; r < mr; r++)
            for (c = 0; c < FM_INT8_TILE; c++) {
                const float y = fm_int8_dequant(acc[r][c], L->mult[j0 + c], L->bias[j0 + c]);
                if (Qout)
                    Qout[r * ldqo + j0 + c] = fm_int8_requant(y, L->inv_next);
                else
                    Z[r * ldz + j0 + c] = y;
            }
    }
}

typedef void (*strip_fn)(int mr, const fm_int8_layer *L, const uint8_t *Q, ptrdiff_t ldq,
                         const int32_t *list, ptrdiff_t n_list, uint8_t *Qout,
                         ptrdiff_t ldqo, float *Z, ptrdiff_t ldz);

static strip_fn strip_of(int isa)
{
    switch (isa) {
#if FM_INT8_X86
    case FM_INT8_ISA_AVX2:
        return fm_int8_strip_avx2;
    case FM_INT8_ISA_AVX512_VNNI:
        return fm_int8_strip_avx512_vnni;
    case FM_INT8_ISA_AVX_VNNI:
        return fm_int8_strip_avx_vnni;
    case FM_INT8_ISA_VNNI_EMULATED:
        return fm_int8_strip_vnni_emulated;
#endif
    default:
        return fm_int8_strip_base;
    }
}

void fm_int8_layer_forward(ptrdiff_t m, const fm_int8_layer *layer, const uint8_t *Q,
                           ptrdiff_t ldq, uint8_t *Qout, ptrdiff_t ldqo, float *Z,
                           ptrdiff_t ldz, int32_t *list, int isa)
{
    const ptrdiff_t n_groups = fm_int8_round_up(layer->k, FM_INT8_GROUP) / FM_INT8_GROUP;
    const strip_fn strip = strip_of(isa < 0 ? fm_int8_isa_best() : isa);
    ptrdiff_t r0 = 0;
    while (r0 < m) {
        /* Strips of 4 rows share each load of W; but a strip sums every group that is
           non-zero in any of its rows, and rows whose zeros lie apart (pixels) skip far
           more one at a time: MNIST's 4-row strips hold 93 of 196 groups, one row 56. So
           4 rows run one by one when that skips a third of the strip's products; the sums
           are exact, so the bits are the same either way. The last rows go one by one. */
        const int rows = m - r0 >= 4 ? 4 : (int)(m - r0);
        ptrdiff_t n_list[4], singles = 0, n_union = 0;
        int r;
        for (r = 0; r < rows; r++) {
            n_list[r] = fm_int8_groups(1, Q + (r0 + r) * ldq, ldq, n_groups, list + r * n_groups);
            singles += n_list[r];
        }
        if (rows == 4)
            n_union = fm_int8_groups(4, Q + r0 * ldq, ldq, n_groups, list + 4 * n_groups);
        if (rows == 4 && 3 * singles > 2 * 4 * n_union) {
            strip(4, layer, Q + r0 * ldq, ldq, list + 4 * n_groups, n_union,
                  Qout ? Qout + r0 * ldqo : NULL, ldqo, Qout ? NULL : Z + r0 * ldz, ldz);
        } else {
            for (r = 0; r < rows; r++)
                strip(1, layer, Q + (r0 + r) * ldq, ldq, list + r * n_groups, n_list[r],
                      Qout ? Qout + (r0 + r) * ldqo : NULL, ldqo,
                      Qout ? NULL : Z + (r0 + r) * ldz, ldz);
        }
        r0 += rows;
    }
}

/* The workspace: Q of the input, two buffers of hidden activations, the last layer's
   outputs (n16 wide), the group list; each part 64-byte aligned. */
static size_t part(size_t bytes) { return (bytes + 63) / 64 * 64; }

size_t fm_int8_workspace_size(ptrdiff_t m, int n_layers, const fm_int8_layer *layers)
{
    ptrdiff_t widest = 0, k4_max = 0;
    int l;
    for (l = 0; l < n_layers; l++) {
        const ptrdiff_t k4 = fm_int8_round_up(layers[l].k, FM_INT8_GROUP);
        if (k4 > k4_max) k4_max = k4;
        if (l < n_layers - 1 && fm_int8_round_up(layers[l].n, FM_INT8_TILE) > widest)
            widest = fm_int8_round_up(layers[l].n, FM_INT8_TILE);
    }
    return part((size_t)(m * fm_int8_round_up(layers[0].k, FM_INT8_GROUP))) +
           2 * part((size_t)(m * widest)) +
           part((size_t)(m * fm_int8_round_up(layers[n_layers - 1].n, FM_INT8_TILE)) *
                sizeof(float)) +
           part((size_t)(5 * (k4_max / FM_INT8_GROUP)) * sizeof(int32_t));
}

int fm_int8_forward(ptrdiff_t m, int n_layers, const fm_int8_layer *layers, float in_inv,
                    int in_zero_point, const float *X, ptrdiff_t ldx, float *out,
                    ptrdiff_t ldo, int softmax, void *ws, int isa)
{
    ptrdiff_t widest = 0, ldq, r;
    const ptrdiff_t n_out = layers[n_layers - 1].n;
    const ptrdiff_t ldz = fm_int8_round_up(n_out, FM_INT8_TILE);
    uint8_t *base = (uint8_t *)ws, *qa, *qb, *q;
    float *Z;
    int32_t *list;
    int l, ok;
    for (l = 0; l < n_layers - 1; l++)
        if (fm_int8_round_up(layers[l].n, FM_INT8_TILE) > widest)
            widest = fm_int8_round_up(layers[l].n, FM_INT8_TILE);
    ldq = fm_int8_round_up(layers[0].k, FM_INT8_GROUP);
    q = base;
    qa = q + part((size_t)(m * ldq));
    qb = qa + part((size_t)(m * widest));
    Z = (float *)(void *)(qb + part((size_t)(m * widest)));
    list = (int32_t *)(void *)((uint8_t *)Z + part((size_t)(m * ldz) * sizeof(float)));
    if (isa < 0) isa = fm_int8_isa_best();
#if FM_INT8_X86
    ok = isa != FM_INT8_ISA_BASE /* every other variant runs AVX2 */
             ? fm_int8_quantize_avx2(m, layers[0].k, X, ldx, in_inv, in_zero_point, q, ldq)
             : fm_int8_quantize(m, layers[0].k, X, ldx, in_inv, in_zero_point, q, ldq);
#else
    ok = fm_int8_quantize(m, layers[0].k, X, ldx, in_inv, in_zero_point, q, ldq);
#endif
    if (!ok) return 0;
    for (l = 0; l < n_layers; l++) {
        if (l < n_layers - 1) {
            uint8_t *next = l % 2 ? qb : qa;
            const ptrdiff_t ldn = fm_int8_round_up(layers[l].n, FM_INT8_TILE);
            fm_int8_layer_forward(m, &layers[l], q, ldq, next, ldn, NULL, 0, list, isa);
            q = next;
            ldq = ldn;
        } else {
            fm_int8_layer_forward(m, &layers[l], q, ldq, NULL, 0, Z, ldz, list, isa);
        }
    }
    for (r = 0; r < m; r++) memcpy(out + r * ldo, Z + r * ldz, (size_t)n_out * sizeof(float));
    if (softmax) {
        if (ldo == n_out)
            fm_softmax_f(m, n_out, out);
        else
            for (r = 0; r < m; r++) fm_softmax_f(1, n_out, out + r * ldo);
    }
    return 1;
}
