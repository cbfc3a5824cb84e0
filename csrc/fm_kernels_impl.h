/*
 * Body of the element-wise and row-wise kernels (contracts in fm_kernels.h), included by
 * fm_kernels.c once per element type. The includer defines T and S (float and _f, double
 * and _d), the math functions of that type (EXP, LOG, TANH, FABS, SQRT) and
 * FM_CPU_DISPATCH.
 */
#define FM_CAT_(a, b) a##b
#define FM_CAT(a, b) FM_CAT_(a, b)
#define FN(name) FM_CAT(name, S)

FM_CPU_DISPATCH
void FN(fm_bias_act)(ptrdiff_t n, ptrdiff_t m, T *Z, const T *b, int act)
{
    for (ptrdiff_t i = 0; i < n; i++) {
        T *restrict z = Z + i * m;
        const T *restrict bb = b;
        switch (act) {
        case FM_RELU:
            for (ptrdiff_t j = 0; j < m; j++) {
                T s = z[j] + bb[j];
                z[j] = s > 0 ? s : 0;
            }
            break;
        case FM_TANH:
            for (ptrdiff_t j = 0; j < m; j++) z[j] = TANH(z[j] + bb[j]);
            break;
        case FM_SIGMOID:
            for (ptrdiff_t j = 0; j < m; j++) {
                /* Split on the sign so exp never overflows. */
                T s = z[j] + bb[j];
                T e = EXP(-FABS(s));
                z[j] = s >= 0 ? 1 / (1 + e) : e / (1 + e);
            }
            break;
        default:
            for (ptrdiff_t j = 0; j < m; j++) z[j] += bb[j];
        }
    }
}

FM_CPU_DISPATCH
void FN(fm_act_backward)(ptrdiff_t n, ptrdiff_t m, const T *A, const T *mask, T *dA, int act)
{
    const ptrdiff_t nm = n * m;
    T *restrict d = dA;
    const T *restrict a = A;
    if (mask) {
        const T *restrict k = mask;
        for (ptrdiff_t i = 0; i < nm; i++) d[i] *= k[i];
    }
    switch (act) {
    case FM_RELU:
        for (ptrdiff_t i = 0; i < nm; i++) d[i] = a[i] > 0 ? d[i] : 0;
        break;
    case FM_TANH:
        for (ptrdiff_t i = 0; i < nm; i++) d[i] *= 1 - a[i] * a[i];
        break;
    case FM_SIGMOID:
        for (ptrdiff_t i = 0; i < nm; i++) d[i] *= a[i] * (1 - a[i]);
        break;
    default:
        break;
    }
}

/* 1 if x[0..n) are all zero: for a few inputs, one compare each and no branch. */
static inline int FN(all_zero)(ptrdiff_t n, const T *x)
{
    int nonzero = 0;
    for (ptrdiff_t i = 0; i < n; i++) nonzero |= x[i] != 0;
    return !nonzero;
}

/* acc[0..cols) += x[0:rows] @ W[0:rows, j0:j0 + cols] (W's rows n_out apart), skipping
   the rows of W whose input is zero; runs of 8 zero inputs (an image's borders) in one
   test, since a test per input cost 2-4 cycles, more than the rows a sparse input reads.
   cols is a constant after inlining: the sums stay in registers. */
static inline __attribute__((always_inline)) void FN(vecmat_cols)(
    ptrdiff_t rows, ptrdiff_t n_out, const T *x, const T *W, ptrdiff_t j0,
    const ptrdiff_t cols, T *restrict acc)
{
    enum { SKIP = 8 };
    for (ptrdiff_t i0 = 0; i0 < rows; i0 += SKIP) {
        const ptrdiff_t i1 = rows - i0 < SKIP ? rows : i0 + SKIP;
        if (FN(all_zero)(i1 - i0, x + i0)) continue;
        for (ptrdiff_t i = i0; i < i1; i++) {
            const T xi = x[i];
            if (xi == 0) continue;
            const T *restrict w = W + i * n_out + j0;
            for (ptrdiff_t j = 0; j < cols; j++) acc[j] += xi * w[j];
        }
    }
}

/* y[j0:n_out] = x @ W[:, j0:n_out], fewer than 128 columns, summed in `width` of them (a
   constant: in registers, where sums in y went through memory at each input). Rows of W
   are read whole widths long, past their end into the next rows, whose sums are dropped;
   the last rows, which would be read past W itself, come one by one from a zero-padded
   copy. */
static inline __attribute__((always_inline)) void FN(vecmat_tail)(
    ptrdiff_t n_in, ptrdiff_t n_out, const T *x, const T *W, ptrdiff_t j0,
    const ptrdiff_t width, T *y)
{
    T acc[128] = {0}, row[128] = {0};
    ptrdiff_t in_place = n_in;
    while (in_place > 0 && (in_place - 1) * n_out + j0 + width > n_in * n_out) in_place--;
    FN(vecmat_cols)(in_place, n_out, x, W, j0, width, acc);
    for (ptrdiff_t i = in_place; i < n_in; i++) {
        for (ptrdiff_t j = j0; j < n_out; j++) row[j - j0] = W[i * n_out + j];
        FN(vecmat_cols)(1, 0, x + i, row, 0, width, acc);
    }
    for (ptrdiff_t j = j0; j < n_out; j++) y[j] = acc[j - j0];
}

FM_CPU_DISPATCH
void FN(fm_vecmat)(ptrdiff_t n_in, ptrdiff_t n_out, const T *x, const T *W, T *y)
{
    /* Row by row of W (axpy form), in column blocks of FM_VECMAT_COLS so the block of y
       stays in registers; a zero input skips its row of W -- one sample's latency is the
       memory W streams from, and ReLU outputs and pixel images are full of zeros. Every
       y[j] sums x[i] * W[i, j] over the nonzero x[i] in order of i; as each sum starts
       from +0 and never becomes -0, adding 0 * W[i, j] would change no bit, so y is
       fm_dense's row bit for bit where both compile to the same instructions. */
    enum { FM_VECMAT_COLS = 128 };
    ptrdiff_t j0 = 0;
    for (; j0 + FM_VECMAT_COLS <= n_out; j0 += FM_VECMAT_COLS) {
        T acc[FM_VECMAT_COLS] = {0};
        FN(vecmat_cols)(n_in, n_out, x, W, j0, FM_VECMAT_COLS, acc);
        for (int j = 0; j < FM_VECMAT_COLS; j++) y[j0 + j] = acc[j];
    }
    /* The last, narrower block: one compiled width per case (the 10 outputs: 16). */
    if (n_out - j0 > 64)
        FN(vecmat_tail)(n_in, n_out, x, W, j0, 128, y);
    else if (n_out - j0 > 16)
        FN(vecmat_tail)(n_in, n_out, x, W, j0, 64, y);
    else if (n_out > j0)
        FN(vecmat_tail)(n_in, n_out, x, W, j0, 16, y);
}

FM_CPU_DISPATCH
int FN(fm_all_finite)(ptrdiff_t n, const T *x)
{
    /* x - x is 0 for finite x and NaN for inf or NaN; no branch, so it vectorises. */
    int bad = 0;
    for (ptrdiff_t i = 0; i < n; i++) bad |= !(x[i] - x[i] == 0);
    return !bad;
}

/* Softmax of one row in place; returns log(sum exp(z - max)) and stores the max. */
static T FN(softmax_row)(ptrdiff_t k, T *restrict z, T *zmax)
{
    T mx = z[0];
    for (ptrdiff_t j = 1; j < k; j++) mx = z[j] > mx ? z[j] : mx;
    T sum = 0;
    for (ptrdiff_t j = 0; j < k; j++) {
        z[j] = EXP(z[j] - mx);
        sum += z[j];
    }
    T inv = 1 / sum;
    for (ptrdiff_t j = 0; j < k; j++) z[j] *= inv;
    *zmax = mx;
    return LOG(sum);
}

static ptrdiff_t FN(argmax_row)(ptrdiff_t k, const T *z)
{
    ptrdiff_t best = 0;
    for (ptrdiff_t j = 1; j < k; j++)
        if (z[j] > z[best]) best = j;
    return best;
}

void FN(fm_softmax)(ptrdiff_t n, ptrdiff_t k, T *Z)
{
    T mx;
    for (ptrdiff_t i = 0; i < n; i++) FN(softmax_row)(k, Z + i * k, &mx);
}

double FN(fm_softmax_xent)(ptrdiff_t n, ptrdiff_t k, T *Z, const int32_t *y, const T *w,
                           double scale, double smoothing, T *dZ, int64_t *n_correct)
{
    /* Label smoothing (torch.nn.CrossEntropyLoss): the target is q = (1 - s) onehot(y)
       + s / k, so the loss is -sum_j q_j log p_j = lse - on (z_y - max) - off sum_j
       (z_j - max) and its gradient p - q. Without smoothing the plain formulas run. */
    const T on = (T)(1 - smoothing), off = (T)(smoothing / (double)k);
    double loss = 0;
    int64_t correct = 0;
    for (ptrdiff_t i = 0; i < n; i++) {
        T *z = Z + i * k;
        const ptrdiff_t yi = y[i];
        const T zy = z[yi];
        const ptrdiff_t best = FN(argmax_row)(k, z);
        correct += best == yi;
        T zsum = 0; /* sum_j (z_j - max), before softmax_row overwrites z */
        if (smoothing > 0)
            for (ptrdiff_t j = 0; j < k; j++) zsum += z[j] - z[best];
        T mx;
        /* -log p_y = log sum exp(z - max) - (z_y - max): finite even for logits of 1e4. */
        const T lse = FN(softmax_row)(k, z, &mx);
        const T wi = w ? w[i] : 1;
        if (smoothing > 0)
            loss += (double)wi * (double)(lse - on * (zy - mx) - off * zsum);
        else
            loss += (double)wi * (double)(lse - (zy - mx));
        if (dZ) {
            T *restrict d = dZ + i * k;
            const T c = (T)scale * wi;
            if (smoothing > 0) {
                const T c_off = c * off;
                for (ptrdiff_t j = 0; j < k; j++) d[j] = c * z[j] - c_off;
                d[yi] -= c * on;
            } else {
                for (ptrdiff_t j = 0; j < k; j++) d[j] = c * z[j];
                d[yi] -= c;
            }
        }
    }
    *n_correct += correct;
    return loss;
}

double FN(fm_sigmoid_xent)(ptrdiff_t n, ptrdiff_t k, T *Z, const T *Y, const T *w,
                           double scale, T *dZ, int64_t *n_correct)
{
    double loss = 0;
    int64_t correct = 0;
    for (ptrdiff_t i = 0; i < n; i++) {
        T *z = Z + i * k;
        const T *t = Y + i * k;
        const T wi = w ? w[i] : 1;
        T sum = 0;
        int all_right = 1;
        for (ptrdiff_t j = 0; j < k; j++) {
            /* -y log p - (1 - y) log(1 - p) = softplus(z) - y z, as max(z, 0) - y z +
               log(1 + exp(-|z|)): exp never overflows, finite for any z. */
            const T zj = z[j], e = EXP(-FABS(zj));
            sum += (zj > 0 ? zj : 0) - t[j] * zj + LOG(1 + e);
            all_right &= (zj > 0) == (t[j] > (T)0.5);
            z[j] = zj >= 0 ? 1 / (1 + e) : e / (1 + e);
        }
        loss += (double)wi * (double)sum;
        correct += all_right;
        if (dZ) {
            T *restrict d = dZ + i * k;
            const T c = (T)scale * wi;
            for (ptrdiff_t j = 0; j < k; j++) d[j] = c * (z[j] - t[j]);
        }
    }
    *n_correct += correct;
    return loss;
}

double FN(fm_mse)(ptrdiff_t n, ptrdiff_t k, const T *A, const int32_t *y, const T *w,
                  double scale, T *dA, int64_t *n_correct)
{
    double loss = 0;
    int64_t correct = 0;
    for (ptrdiff_t i = 0; i < n; i++) {
        const T *a = A + i * k;
        const ptrdiff_t yi = y[i];
        const T wi = w ? w[i] : 1;
        /* Summed as (a - t)^2 directly: expanding it cancels badly near the targets. */
        T sq = 0;
        for (ptrdiff_t j = 0; j < k; j++) {
            const T d = a[j] - (j == yi ? 1 : 0);
            sq += d * d;
        }
        loss += 0.5 * (double)wi * (double)sq;
        correct += FN(argmax_row)(k, a) == yi;
        if (dA) {
            T *restrict d = dA + i * k;
            const T c = (T)scale * wi;
            for (ptrdiff_t j = 0; j < k; j++) d[j] = c * a[j];
            d[yi] -= c;
        }
    }
    *n_correct += correct;
    return loss;
}

double FN(fm_squared_error)(ptrdiff_t n, ptrdiff_t k, const T *A, const T *Y, const T *w,
                            double scale, T *dA)
{
    double loss = 0;
    const T inv_k = (T)1 / (T)k;
    for (ptrdiff_t i = 0; i < n; i++) {
        const T *a = A + i * k, *t = Y + i * k;
        const T wi = w ? w[i] : 1;
        T sq = 0;
        for (ptrdiff_t j = 0; j < k; j++) {
            const T d = a[j] - t[j];
            sq += d * d;
        }
        loss += 0.5 * (double)wi * (double)(sq * inv_k);
        if (dA) {
            T *restrict d = dA + i * k;
            const T c = (T)scale * wi * inv_k;
            for (ptrdiff_t j = 0; j < k; j++) d[j] = c * (a[j] - t[j]);
        }
    }
    return loss;
}

double FN(fm_huber)(ptrdiff_t n, ptrdiff_t k, const T *A, const T *Y, const T *w,
                    double scale, double delta, T *dA)
{
    double loss = 0;
    const T inv_k = (T)1 / (T)k, dl = (T)delta, half_dl = (T)(0.5 * delta);
    for (ptrdiff_t i = 0; i < n; i++) {
        const T *a = A + i * k, *t = Y + i * k;
        const T wi = w ? w[i] : 1;
        T sum = 0;
        for (ptrdiff_t j = 0; j < k; j++) {
            const T d = a[j] - t[j], ad = FABS(d);
            sum += ad < dl ? (T)0.5 * d * d : dl * (ad - half_dl);
        }
        loss += (double)wi * (double)(sum * inv_k);
        if (dA) {
            T *restrict g = dA + i * k;
            const T c = (T)scale * wi * inv_k;
            for (ptrdiff_t j = 0; j < k; j++) {
                /* clip(d, -delta, delta): d inside, delta * sign(d) outside */
                const T d = a[j] - t[j];
                g[j] = c * (d > dl ? dl : d < -dl ? -dl : d);
            }
        }
    }
    return loss;
}

double FN(fm_absolute_error)(ptrdiff_t n, ptrdiff_t k, const T *A, const T *Y, const T *w,
                             double scale, T *dA)
{
    double loss = 0;
    const T inv_k = (T)1 / (T)k;
    for (ptrdiff_t i = 0; i < n; i++) {
        const T *a = A + i * k, *t = Y + i * k;
        const T wi = w ? w[i] : 1;
        T sum = 0;
        for (ptrdiff_t j = 0; j < k; j++) sum += FABS(a[j] - t[j]);
        loss += (double)wi * (double)(sum * inv_k);
        if (dA) {
            T *restrict g = dA + i * k;
            const T c = (T)scale * wi * inv_k;
            /* The subgradient sign(d), 0 at d == 0 (as torch's L1Loss). */
            for (ptrdiff_t j = 0; j < k; j++) {
                const T d = a[j] - t[j];
                g[j] = d > 0 ? c : d < 0 ? -c : 0;
            }
        }
    }
    return loss;
}

double FN(fm_poisson)(ptrdiff_t n, ptrdiff_t k, const T *A, const T *Y, const T *w,
                      double scale, T *dA)
{
    double loss = 0;
    const T inv_k = (T)1 / (T)k;
    for (ptrdiff_t i = 0; i < n; i++) {
        const T *a = A + i * k, *t = Y + i * k;
        const T wi = w ? w[i] : 1;
        T sum = 0;
        for (ptrdiff_t j = 0; j < k; j++) sum += EXP(a[j]) - t[j] * a[j];
        loss += (double)wi * (double)(sum * inv_k);
        if (dA) {
            T *restrict g = dA + i * k;
            const T c = (T)scale * wi * inv_k;
            for (ptrdiff_t j = 0; j < k; j++) g[j] = c * (EXP(a[j]) - t[j]);
        }
    }
    return loss;
}

FM_CPU_DISPATCH
void FN(fm_col_sum)(ptrdiff_t n, ptrdiff_t m, const T *dZ, T *db)
{
    T *restrict out = db;
    for (ptrdiff_t j = 0; j < m; j++) out[j] = 0;
    for (ptrdiff_t i = 0; i < n; i++) {
        const T *restrict row = dZ + i * m;
        for (ptrdiff_t j = 0; j < m; j++) out[j] += row[j];
    }
}

/* Square tiles of 16: each reads and writes whole cache lines, where a row-by-row copy
   would write one element per line of B. */
void FN(fm_transpose)(ptrdiff_t m, ptrdiff_t n, const T *A, ptrdiff_t lda, T *B, ptrdiff_t ldb)
{
    enum { TILE = 16 };
    for (ptrdiff_t i0 = 0; i0 < m; i0 += TILE) {
        const ptrdiff_t i1 = m - i0 < TILE ? m : i0 + TILE;
        for (ptrdiff_t j0 = 0; j0 < n; j0 += TILE) {
            const ptrdiff_t j1 = n - j0 < TILE ? n : j0 + TILE;
            for (ptrdiff_t j = j0; j < j1; j++)
                for (ptrdiff_t i = i0; i < i1; i++) B[j * ldb + i] = A[i * lda + j];
        }
    }
}

/* Sum of x[0..m) in FM_LANES partial sums, added together in a fixed order at the end:
   GCC vectorises the lanes (a single running sum is a chain of dependent adds), and the
   order, so the bits, depend on m alone. */
#ifndef FM_LANES
#define FM_LANES 16
#endif
static T FN(row_sum)(ptrdiff_t m, const T *restrict x)
{
    T acc[FM_LANES] = {0};
    ptrdiff_t j = 0;
    for (; j + FM_LANES <= m; j += FM_LANES)
        for (int u = 0; u < FM_LANES; u++) acc[u] += x[j + u];
    for (int u = 0; j < m; j++, u++) acc[u] += x[j];
    T s = 0;
    for (int u = 0; u < FM_LANES; u++) s += acc[u];
    return s;
}

/* sum_j x[j] * y[j], summed as row_sum. */
static T FN(row_dot)(ptrdiff_t m, const T *restrict x, const T *restrict y)
{
    T acc[FM_LANES] = {0};
    ptrdiff_t j = 0;
    for (; j + FM_LANES <= m; j += FM_LANES)
        for (int u = 0; u < FM_LANES; u++) acc[u] += x[j + u] * y[j + u];
    for (int u = 0; j < m; j++, u++) acc[u] += x[j] * y[j];
    T s = 0;
    for (int u = 0; u < FM_LANES; u++) s += acc[u];
    return s;
}

FM_CPU_DISPATCH
void FN(fm_layer_norm)(ptrdiff_t n, ptrdiff_t m, T *Z, const T *gamma, const T *beta,
                       double eps, int act, T *Zhat, T *rstd)
{
    for (ptrdiff_t i = 0; i < n; i++) {
        T *restrict z = Z + i * m;
        const T *restrict g = gamma;
        /* Two passes (mean, then the mean square about it): no cancellation when the
           mean is large against the spread. */
        const T mean = FN(row_sum)(m, z) / (T)m;
        for (ptrdiff_t j = 0; j < m; j++) z[j] -= mean;
        const T r = 1 / SQRT(FN(row_dot)(m, z, z) / (T)m + (T)eps);
        for (ptrdiff_t j = 0; j < m; j++) z[j] *= r;
        if (Zhat) {
            T *restrict h = Zhat + i * m;
            for (ptrdiff_t j = 0; j < m; j++) h[j] = z[j];
        }
        if (rstd) rstd[i] = r;
        for (ptrdiff_t j = 0; j < m; j++) z[j] *= g[j];
        FN(fm_bias_act)(1, m, z, beta, act);
    }
}

FM_CPU_DISPATCH
void FN(fm_layer_norm_backward)(ptrdiff_t n, ptrdiff_t m, const T *gamma, const T *rstd,
                                T *Zhat, T *D, T *G)
{
    for (ptrdiff_t i = 0; i < n; i++) {
        T *restrict h = Zhat + i * m;
        T *restrict d = D + i * m;
        T *restrict gk = G + i * m;
        const T *restrict g = gamma;
        /* dzhat = gamma * G; dz = rstd (dzhat - mean(dzhat) - zhat mean(dzhat zhat)). */
        for (ptrdiff_t j = 0; j < m; j++) {
            gk[j] = d[j];
            d[j] *= g[j];
        }
        const T mean_d = FN(row_sum)(m, d) / (T)m;
        const T mean_dh = FN(row_dot)(m, d, h) / (T)m;
        const T r = rstd[i];
        for (ptrdiff_t j = 0; j < m; j++) {
            d[j] = r * (d[j] - mean_d - h[j] * mean_dh);
            h[j] *= gk[j];
        }
    }
}

/* Batch normalization (torch.nn.BatchNorm1d). Training splits the batch into parts (the
   row blocks); each part's column means and sums of squared deviations are combined in
   part order (Chan, Golub & LeVeque's pairwise update), so the bits depend on the
   partition alone, never on which thread ran a part. */
FM_CPU_DISPATCH
void FN(fm_batch_norm_partial)(ptrdiff_t n, ptrdiff_t m, const T *Z, T *mean, T *m2)
{
    T *restrict mu = mean, *restrict s = m2;
    for (ptrdiff_t j = 0; j < m; j++) mu[j] = 0;
    for (ptrdiff_t i = 0; i < n; i++) {
        const T *restrict z = Z + i * m;
        for (ptrdiff_t j = 0; j < m; j++) mu[j] += z[j];
    }
    for (ptrdiff_t j = 0; j < m; j++) {
        mu[j] /= (T)n;
        s[j] = 0;
    }
    /* About the part's mean (two passes): no cancellation when the mean is large. */
    for (ptrdiff_t i = 0; i < n; i++) {
        const T *restrict z = Z + i * m;
        for (ptrdiff_t j = 0; j < m; j++) {
            const T d = z[j] - mu[j];
            s[j] += d * d;
        }
    }
}

void FN(fm_batch_norm_stats)(ptrdiff_t parts, ptrdiff_t n, ptrdiff_t m, const T *pmean,
                             const T *pm2, double eps, double momentum, T *mean, T *rstd,
                             T *run_mean, T *run_var)
{
    /* rstd holds the running M2 until the end. */
    for (ptrdiff_t j = 0; j < m; j++) {
        mean[j] = pmean[j];
        rstd[j] = pm2[j];
    }
    ptrdiff_t na = n / parts;   /* rows of part 0: (p + 1) n / parts - p n / parts */
    for (ptrdiff_t p = 1; p < parts; p++) {
        const ptrdiff_t nb = (p + 1) * n / parts - p * n / parts, nab = na + nb;
        const T fb = (T)nb / (T)nab, fab = (T)na * (T)nb / (T)nab;
        const T *restrict mb = pmean + p * m, *restrict sb = pm2 + p * m;
        for (ptrdiff_t j = 0; j < m; j++) {
            const T d = mb[j] - mean[j];
            mean[j] += d * fb;
            rstd[j] += sb[j] + d * d * fab;
        }
        na = nab;
    }
    for (ptrdiff_t j = 0; j < m; j++) {
        const T sum_sq = rstd[j];
        rstd[j] = 1 / SQRT(sum_sq / (T)n + (T)eps);
        if (run_mean) {
            /* PyTorch's running estimates: the unbiased variance (n >= 2). */
            run_mean[j] = (T)(1 - momentum) * run_mean[j] + (T)momentum * mean[j];
            run_var[j] = (T)(1 - momentum) * run_var[j] + (T)momentum * (sum_sq / (T)(n - 1));
        }
    }
}

FM_CPU_DISPATCH
void FN(fm_batch_norm)(ptrdiff_t n, ptrdiff_t m, T *Z, const T *mean, const T *rstd,
                       const T *gamma, const T *beta, int act, T *Zhat)
{
    for (ptrdiff_t i = 0; i < n; i++) {
        T *restrict z = Z + i * m;
        const T *restrict mu = mean, *restrict r = rstd, *restrict g = gamma;
        for (ptrdiff_t j = 0; j < m; j++) z[j] = (z[j] - mu[j]) * r[j];
        if (Zhat) {
            T *restrict h = Zhat + i * m;
            for (ptrdiff_t j = 0; j < m; j++) h[j] = z[j];
        }
        for (ptrdiff_t j = 0; j < m; j++) z[j] *= g[j];
        FN(fm_bias_act)(1, m, z, beta, act);
    }
}

#ifndef FM_BN_CHUNK
#define FM_BN_CHUNK 256
#endif
FM_CPU_DISPATCH
void FN(fm_batch_norm_eval)(ptrdiff_t n, ptrdiff_t m, T *Z, const T *run_mean,
                            const T *run_var, const T *gamma, const T *beta, double eps,
                            int act)
{
    /* One scale and shift per column, a chunk of columns at a time (no allocation). */
    T scale[FM_BN_CHUNK], shift[FM_BN_CHUNK];
    for (ptrdiff_t j0 = 0; j0 < m; j0 += FM_BN_CHUNK) {
        const ptrdiff_t w = m - j0 < FM_BN_CHUNK ? m - j0 : FM_BN_CHUNK;
        for (ptrdiff_t j = 0; j < w; j++) {
            scale[j] = gamma[j0 + j] / SQRT(run_var[j0 + j] + (T)eps);
            shift[j] = beta[j0 + j] - run_mean[j0 + j] * scale[j];
        }
        for (ptrdiff_t i = 0; i < n; i++) {
            T *restrict z = Z + i * m + j0;
            for (ptrdiff_t j = 0; j < w; j++) z[j] *= scale[j];
        }
        for (ptrdiff_t i = 0; i < n; i++)
            FN(fm_bias_act)(1, w, Z + i * m + j0, shift, act);
    }
}

FM_CPU_DISPATCH
void FN(fm_batch_norm_backward_partial)(ptrdiff_t n, ptrdiff_t m, const T *D, const T *Zhat,
                                        T *sums)
{
    T *restrict sh = sums, *restrict sd = sums + m;
    for (ptrdiff_t j = 0; j < 2 * m; j++) sums[j] = 0;
    for (ptrdiff_t i = 0; i < n; i++) {
        const T *restrict d = D + i * m, *restrict h = Zhat + i * m;
        for (ptrdiff_t j = 0; j < m; j++) {
            sh[j] += d[j] * h[j];
            sd[j] += d[j];
        }
    }
}

FM_CPU_DISPATCH
void FN(fm_batch_norm_backward)(ptrdiff_t n, ptrdiff_t m, const T *gamma, const T *rstd,
                                const T *dgb, ptrdiff_t count, const T *Zhat, T *D)
{
    const T inv = 1 / (T)count;
    const T *restrict dg = dgb, *restrict db = dgb + m;
    for (ptrdiff_t i = 0; i < n; i++) {
        T *restrict d = D + i * m;
        const T *restrict h = Zhat + i * m, *restrict g = gamma, *restrict r = rstd;
        for (ptrdiff_t j = 0; j < m; j++)
            d[j] = g[j] * r[j] * (d[j] - (db[j] + h[j] * dg[j]) * inv);
    }
}

void FN(fm_dropout)(ptrdiff_t n, ptrdiff_t m, const T *A, T *mask, T *out, double p,
                    uint64_t seed, ptrdiff_t row0)
{
    const T keep_scale = (T)(1.0 / (1.0 - p));
    /* Compare 24 random bits with p scaled to 2^24: exact enough and the same for both T. */
    const uint32_t threshold = (uint32_t)(p * 16777216.0);
    for (ptrdiff_t i = 0; i < n; i++) {
        const uint64_t base = (uint64_t)(row0 + i) * (uint64_t)m;
        for (ptrdiff_t j = 0; j < m; j++) {
            const uint32_t r = (uint32_t)(fm_hash64(seed, base + (uint64_t)j) >> 40);
            const T k = r >= threshold ? keep_scale : 0;
            mask[i * m + j] = k;
            out[i * m + j] = A[i * m + j] * k;
        }
    }
}

FM_CPU_DISPATCH
void FN(fm_adam)(ptrdiff_t n, T *p, const T *g, T *m, T *v, double lr, double beta1,
                 double beta2, double eps, int64_t t, double weight_decay)
{
    /* Fold both bias corrections into the step size and eps (Kingma & Ba, sec. 2). */
    const double c1 = 1 - pow(beta1, (double)t), c2 = 1 - pow(beta2, (double)t);
    const T step = (T)(lr / c1), inv_sqrt_c2 = (T)(1 / sqrt(c2));
    /* AdamW's decoupled decay, p *= 1 - lr * wd before the Adam step (torch.optim.AdamW;
       Loshchilov & Hutter 2019). Without decay it is 1, and p * 1 - x rounds as p - x. */
    const T decay = (T)(1 - lr * weight_decay);
    const T b1 = (T)beta1, b2 = (T)beta2, e = (T)eps, one = 1;
    T *restrict pp = p, *restrict mm = m, *restrict vv = v;
    const T *restrict gg = g;
    for (ptrdiff_t i = 0; i < n; i++) {
        const T gi = gg[i];
        mm[i] = b1 * mm[i] + (one - b1) * gi;
        vv[i] = b2 * vv[i] + (one - b2) * gi * gi;
        pp[i] = pp[i] * decay - step * mm[i] / (SQRT(vv[i]) * inv_sqrt_c2 + e);
    }
}

FM_CPU_DISPATCH
void FN(fm_sgd)(ptrdiff_t n, T *p, const T *g, T *vel, double lr, double momentum)
{
    const T mu = (T)momentum, eta = (T)lr;
    T *restrict pp = p, *restrict vv = vel;
    const T *restrict gg = g;
    for (ptrdiff_t i = 0; i < n; i++) {
        vv[i] = mu * vv[i] + gg[i];
        pp[i] -= eta * vv[i];
    }
}

#undef FN
#undef FM_CAT
#undef FM_CAT_
