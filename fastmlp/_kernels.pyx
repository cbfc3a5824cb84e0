# cython: language_level=3, boundscheck=False, wraparound=False
"""Python entry points to each C kernel and to the GEMM shim, one by one: for tests and
benchmarks only (product code calls the kernels from Cython).

Tests hold every kernel to ``fastmlp.reference`` through these, and benchmarks time them.
Each checks shapes before handing pointers to C, so no call from Python can reach out of
bounds.
"""
from libc.stdint cimport int32_t, int64_t, uint64_t
from cython cimport floating

from fastmlp cimport _ckernels as fm
from fastmlp._blas cimport gemm as _gemm
from fastmlp._network cimport Network
from fastmlp._ckernels cimport (FM_ISA_AUTO, FM_ISA_AVX2, FM_ISA_AVX512, FM_ISA_BASE,
                                FM_ISA_WIDE, fm_dense_isa_available, fm_dense_isa_best,
                                fm_dense_tail_size)

cdef extern from "fm_dispatch.h":
    int FM_VECMAT_DENSE_BITS

import numpy as np

from fastmlp._network import ACTIVATIONS as _ACT
from fastmlp._network import all_finite  # noqa: F401  (the product's own check)


def _check(cond, msg):
    if not cond:
        raise ValueError(msg)


def bias_act(floating[:, ::1] Z, const floating[::1] b, str activation):
    """Z = activation(Z + b) in place."""
    _check(b.shape[0] == Z.shape[1], "b must have Z.shape[1] elements")
    cdef int act = _ACT[activation]
    with nogil:
        fm.bias_act(Z.shape[0], Z.shape[1], &Z[0, 0], &b[0], act)


def act_backward(const floating[:, ::1] A, floating[:, ::1] dA, str activation,
                 const floating[:, ::1] mask=None):
    """dA *= mask * activation'(.), the derivative taken from the activation's output A."""
    _check(A.shape[0] == dA.shape[0] and A.shape[1] == dA.shape[1], "A and dA differ")
    cdef const floating *m = NULL
    if mask is not None:
        _check(mask.shape[0] == A.shape[0] and mask.shape[1] == A.shape[1],
               "mask and A differ")
        m = &mask[0, 0]
    cdef int act = _ACT[activation]
    with nogil:
        fm.act_backward(A.shape[0], A.shape[1], &A[0, 0], m, &dA[0, 0], act)


def softmax(floating[:, ::1] Z):
    """Row-wise softmax of Z in place."""
    _check(Z.shape[1] >= 1, "Z needs at least one column")
    with nogil:
        fm.softmax(Z.shape[0], Z.shape[1], &Z[0, 0])


def _labels(y, Py_ssize_t n, Py_ssize_t k):
    _check(k >= 1, "need at least one column")
    y = np.ascontiguousarray(y, dtype=np.int32)
    _check(y.shape == (n,), "y must have one label per row")
    _check(n == 0 or (y.min() >= 0 and y.max() < k), "labels must lie in [0, k)")
    return y


def softmax_cross_entropy(floating[:, ::1] Z, y, const floating[::1] sample_weight=None,
                          double scale=1.0, double label_smoothing=0.0):
    """Fused softmax + cross-entropy; Z becomes the probabilities.

    Returns ``(loss_sum, n_correct, dZ)`` with dZ = scale * w * (softmax(Z) - q), q the
    one-hot target smoothed by `label_smoothing` (q = onehot(y) without).
    """
    _check(0 <= label_smoothing < 1, "label_smoothing must lie in [0, 1)")
    cdef int32_t[::1] yy = _labels(y, Z.shape[0], Z.shape[1])
    cdef const floating *w = NULL
    if sample_weight is not None:
        _check(sample_weight.shape[0] == Z.shape[0], "one weight per row")
        w = &sample_weight[0]
    dZ = np.empty_like(np.asarray(Z))
    cdef floating[:, ::1] d = dZ
    cdef int64_t correct = 0
    cdef double loss
    with nogil:
        loss = fm.softmax_xent(Z.shape[0], Z.shape[1], &Z[0, 0], &yy[0], w, scale,
                               label_smoothing, &d[0, 0], &correct)
    return loss, correct, dZ


def sigmoid_cross_entropy(floating[:, ::1] Z, const floating[:, ::1] Y,
                          const floating[::1] sample_weight=None, double scale=1.0):
    """Fused sigmoid + binary cross-entropy per label (multilabel); Z becomes the
    probabilities. Returns ``(loss_sum, n_correct, dZ)``, dZ = scale * w * (p - Y)."""
    cdef const floating *w = NULL
    _check(Y.shape[0] == Z.shape[0] and Y.shape[1] == Z.shape[1], "Y must match Z")
    _check(Z.shape[0] >= 1 and Z.shape[1] >= 1, "need at least one row and column")
    if sample_weight is not None:
        _check(sample_weight.shape[0] == Z.shape[0], "one weight per row")
        w = &sample_weight[0]
    dZ = np.empty_like(np.asarray(Z))
    cdef floating[:, ::1] d = dZ
    cdef int64_t correct = 0
    cdef double loss
    with nogil:
        loss = fm.sigmoid_xent(Z.shape[0], Z.shape[1], &Z[0, 0], &Y[0, 0], w, scale,
                               &d[0, 0], &correct)
    return loss, correct, dZ


def mse(const floating[:, ::1] A, y, const floating[::1] sample_weight=None,
        double scale=1.0):
    """Squared error against one-hot targets: ``(loss_sum, n_correct, dA)``."""
    cdef int32_t[::1] yy = _labels(y, A.shape[0], A.shape[1])
    cdef const floating *w = NULL
    if sample_weight is not None:
        _check(sample_weight.shape[0] == A.shape[0], "one weight per row")
        w = &sample_weight[0]
    dA = np.empty_like(np.asarray(A))
    cdef floating[:, ::1] d = dA
    cdef int64_t correct = 0
    cdef double loss
    with nogil:
        loss = fm.mse(A.shape[0], A.shape[1], &A[0, 0], &yy[0], w, scale, &d[0, 0],
                      &correct)
    return loss, correct, dA


def squared_error(A, Y, sample_weight=None, double scale=1.0):
    """Squared error against real targets, averaged over outputs: ``(loss_sum, dA)``."""
    return regression_loss("squared_error", A, Y, sample_weight, scale)


def regression_loss(str loss, const floating[:, ::1] A, const floating[:, ::1] Y,
                    const floating[::1] sample_weight=None, double scale=1.0,
                    double delta=1.0):
    """A regression loss kernel ("huber", "absolute_error", "poisson" or
    "squared_error"), averaged over the outputs: ``(loss_sum, dA)``."""
    cdef const floating *w = NULL
    cdef int code
    _check(loss in REGRESSION_CODES, f"loss must be one of {tuple(REGRESSION_CODES)}")
    code = REGRESSION_CODES[loss]
    _check(A.shape[1] >= 1, "need at least one column")
    _check(Y.shape[0] == A.shape[0] and Y.shape[1] == A.shape[1], "Y must match A")
    _check(delta > 0, "delta must be > 0")
    if sample_weight is not None:
        _check(sample_weight.shape[0] == A.shape[0], "one weight per row")
        w = &sample_weight[0]
    dA = np.empty_like(np.asarray(A))
    cdef floating[:, ::1] d = dA
    cdef double loss_value = 0
    if A.shape[0] == 0:
        return loss_value, dA
    with nogil:
        if code == 0:
            loss_value = fm.huber(A.shape[0], A.shape[1], &A[0, 0], &Y[0, 0], w, scale,
                                  delta, &d[0, 0])
        elif code == 1:
            loss_value = fm.absolute_error(A.shape[0], A.shape[1], &A[0, 0], &Y[0, 0], w,
                                           scale, &d[0, 0])
        elif code == 2:
            loss_value = fm.poisson(A.shape[0], A.shape[1], &A[0, 0], &Y[0, 0], w, scale,
                                    &d[0, 0])
        else:
            loss_value = fm.squared_error(A.shape[0], A.shape[1], &A[0, 0], &Y[0, 0], w,
                                          scale, &d[0, 0])
    return loss_value, dA


def transpose(const floating[:, ::1] A):
    """A^T as a new C-contiguous array, by fm_transpose."""
    out = np.empty((A.shape[1], A.shape[0]), dtype=np.asarray(A).dtype)
    cdef floating[:, ::1] B = out
    if A.shape[0] and A.shape[1]:
        with nogil:
            fm.transpose(A.shape[0], A.shape[1], &A[0, 0], A.shape[1], &B[0, 0], A.shape[0])
    return out


REGRESSION_CODES = {"huber": 0, "absolute_error": 1, "poisson": 2, "squared_error": 3}


def col_sum(const floating[:, ::1] dZ):
    """Column sums of dZ (the bias gradient)."""
    db = np.empty(dZ.shape[1], dtype=np.asarray(dZ).dtype)
    cdef floating[::1] out = db
    with nogil:
        fm.col_sum(dZ.shape[0], dZ.shape[1], &dZ[0, 0], &out[0])
    return db


def layer_norm(floating[:, ::1] Z, const floating[::1] gamma, const floating[::1] beta,
               double eps, str activation):
    """Z = activation(gamma * zhat + beta) in place, zhat the rows of Z normalized; returns
    ``(zhat, rstd)``, what training keeps for the backward pass."""
    cdef Py_ssize_t n = Z.shape[0], m = Z.shape[1]
    _check(m >= 1 and gamma.shape[0] == m and beta.shape[0] == m,
           "gamma and beta must have Z.shape[1] >= 1 elements")
    _check(eps > 0, "eps must be > 0")
    dt = np.asarray(Z).dtype
    zhat = np.empty((n, m), dtype=dt)
    rstd = np.empty(n, dtype=dt)
    cdef floating[:, ::1] h = zhat
    cdef floating[::1] r = rstd
    cdef int act = _ACT[activation]
    if n:
        with nogil:
            fm.layer_norm(n, m, &Z[0, 0], &gamma[0], &beta[0], eps, act, &h[0, 0], &r[0])
    return zhat, rstd


def layer_norm_backward(const floating[::1] gamma, const floating[::1] rstd,
                        floating[:, ::1] zhat, floating[:, ::1] D):
    """D: dL/dy in, dL/dz out (in place); zhat becomes D * zhat; returns dL/dy (a copy)."""
    cdef Py_ssize_t n = D.shape[0], m = D.shape[1]
    _check(gamma.shape[0] == m and rstd.shape[0] == n and zhat.shape[0] == n
           and zhat.shape[1] == m, "gamma, rstd, zhat and D do not match")
    G = np.empty((n, m), dtype=np.asarray(D).dtype)
    cdef floating[:, ::1] g = G
    if n and m:
        with nogil:
            fm.layer_norm_backward(n, m, &gamma[0], &rstd[0], &zhat[0, 0], &D[0, 0],
                                   &g[0, 0])
    return G


def batch_norm_stats(const floating[:, ::1] Z, Py_ssize_t parts, double eps,
                     double momentum=0.1, floating[::1] run_mean=None,
                     floating[::1] run_var=None):
    """The batch mean and rstd of Z's columns, from `parts` row blocks' partial statistics
    (fm_batch_norm_partial) combined in block order; moves run_mean and run_var (in
    place) if given. Returns ``(mean, rstd)``."""
    cdef Py_ssize_t n = Z.shape[0], m = Z.shape[1], p, r0, r1
    _check(m >= 1 and 1 <= parts <= n, "need 1 <= parts <= rows and columns >= 1")
    _check(eps > 0, "eps must be > 0")
    _check((run_mean is None) == (run_var is None), "run_mean and run_var go together")
    _check(run_mean is None or n >= 2, "the running variance needs 2 rows or more")
    _check(run_mean is None or (run_mean.shape[0] == m and run_var.shape[0] == m),
           "run_mean and run_var need Z.shape[1] elements")
    dt = np.asarray(Z).dtype
    part = np.empty((2, parts, m), dtype=dt)
    mean = np.empty(m, dtype=dt)
    rstd = np.empty(m, dtype=dt)
    cdef floating[:, :, ::1] pv = part
    cdef floating[::1] mv = mean
    cdef floating[::1] rv = rstd
    cdef floating *rm = &run_mean[0] if run_mean is not None else NULL
    cdef floating *rvar = &run_var[0] if run_var is not None else NULL
    with nogil:
        for p in range(parts):
            r0 = p * n // parts
            r1 = (p + 1) * n // parts
            fm.batch_norm_partial(r1 - r0, m, &Z[r0, 0], &pv[0, p, 0], &pv[1, p, 0])
        fm.batch_norm_stats(parts, n, m, &pv[0, 0, 0], &pv[1, 0, 0], eps, momentum,
                            &mv[0], &rv[0], rm, rvar)
    return mean, rstd


def batch_norm(floating[:, ::1] Z, const floating[::1] mean, const floating[::1] rstd,
               const floating[::1] gamma, const floating[::1] beta, str activation):
    """Z = activation(gamma * zhat + beta) in place, zhat = (Z - mean) * rstd per column;
    returns zhat."""
    cdef Py_ssize_t n = Z.shape[0], m = Z.shape[1]
    _check(m >= 1 and mean.shape[0] == m and rstd.shape[0] == m and gamma.shape[0] == m
           and beta.shape[0] == m, "mean, rstd, gamma and beta need Z.shape[1] elements")
    zhat = np.empty((n, m), dtype=np.asarray(Z).dtype)
    cdef floating[:, ::1] hv = zhat
    cdef int act = _ACT[activation]
    if n:
        with nogil:
            fm.batch_norm(n, m, &Z[0, 0], &mean[0], &rstd[0], &gamma[0], &beta[0], act,
                          &hv[0, 0])
    return zhat


def batch_norm_eval(floating[:, ::1] Z, const floating[::1] run_mean,
                    const floating[::1] run_var, const floating[::1] gamma,
                    const floating[::1] beta, double eps, str activation):
    """Z = activation(gamma * (Z - run_mean) / sqrt(run_var + eps) + beta), in place."""
    cdef Py_ssize_t n = Z.shape[0], m = Z.shape[1]
    _check(m >= 1 and run_mean.shape[0] == m and run_var.shape[0] == m
           and gamma.shape[0] == m and beta.shape[0] == m,
           "run_mean, run_var, gamma and beta need Z.shape[1] elements")
    _check(eps > 0, "eps must be > 0")
    cdef int act = _ACT[activation]
    if n:
        with nogil:
            fm.batch_norm_eval(n, m, &Z[0, 0], &run_mean[0], &run_var[0], &gamma[0],
                               &beta[0], eps, act)


def batch_norm_backward(floating[:, ::1] D, const floating[:, ::1] zhat,
                        const floating[::1] gamma, const floating[::1] rstd,
                        Py_ssize_t parts):
    """D: dL/dy in, dL/dz out (in place), with the column sums over `parts` row blocks
    added in block order. Returns ``(dgamma, dbeta)``."""
    cdef Py_ssize_t n = D.shape[0], m = D.shape[1], p, r0, r1
    _check(m >= 1 and 1 <= parts <= n, "need 1 <= parts <= rows and columns >= 1")
    _check(zhat.shape[0] == n and zhat.shape[1] == m and gamma.shape[0] == m
           and rstd.shape[0] == m, "D, zhat, gamma and rstd do not match")
    dt = np.asarray(D).dtype
    part = np.empty((parts, 2 * m), dtype=dt)
    dgb = np.empty(2 * m, dtype=dt)
    cdef floating[:, ::1] pv = part
    cdef floating[::1] g = dgb
    with nogil:
        for p in range(parts):
            r0 = p * n // parts
            r1 = (p + 1) * n // parts
            fm.batch_norm_backward_partial(r1 - r0, m, &D[r0, 0], &zhat[r0, 0], &pv[p, 0])
        fm.col_sum(parts, 2 * m, &pv[0, 0], &g[0])
        fm.batch_norm_backward(n, m, &gamma[0], &rstd[0], &g[0], n, &zhat[0, 0], &D[0, 0])
    return dgb[:m].copy(), dgb[m:].copy()


def dropout(const floating[:, ::1] A, double p, uint64_t seed, Py_ssize_t row0=0):
    """Inverted dropout: returns ``(mask, A * mask)``."""
    _check(0 <= p < 1, "p must lie in [0, 1)")
    mask = np.empty_like(np.asarray(A))
    out = np.empty_like(mask)
    cdef floating[:, ::1] m = mask
    cdef floating[:, ::1] o = out
    with nogil:
        fm.dropout(A.shape[0], A.shape[1], &A[0, 0], &m[0, 0], &o[0, 0], p, seed, row0)
    return mask, out


def adam(floating[::1] p, const floating[::1] g, floating[::1] m, floating[::1] v,
         double lr, double beta1, double beta2, double eps, int64_t t,
         double weight_decay=0.0):
    """One Adam update of p (and its moments m, v) in place; t is the step, from 1.
    With weight_decay, AdamW's decoupled decay p *= 1 - lr * weight_decay comes first."""
    _check(g.shape[0] == p.shape[0] == m.shape[0] == v.shape[0], "sizes differ")
    _check(t >= 1, "t counts from 1")
    _check(weight_decay >= 0, "weight_decay must be >= 0")
    with nogil:
        fm.adam(p.shape[0], &p[0], &g[0], &m[0], &v[0], lr, beta1, beta2, eps, t,
                weight_decay)


def sgd(floating[::1] p, const floating[::1] g, floating[::1] velocity, double lr,
        double momentum):
    """One SGD-with-momentum update of p and its velocity in place."""
    _check(g.shape[0] == p.shape[0] == velocity.shape[0], "sizes differ")
    with nogil:
        fm.sgd(p.shape[0], &p[0], &g[0], &velocity[0], lr, momentum)


def gemm(const floating[:, ::1] A, const floating[:, ::1] B, floating[:, ::1] C,
         bint trans_a=False, bint trans_b=False, floating alpha=1, floating beta=0):
    """C = alpha * op(A) @ op(B) + beta * C in place, through the row-major BLAS shim."""
    cdef int m = A.shape[1] if trans_a else A.shape[0]
    cdef int k = A.shape[0] if trans_a else A.shape[1]
    cdef int kb = B.shape[1] if trans_b else B.shape[0]
    cdef int n = B.shape[0] if trans_b else B.shape[1]
    _check(k == kb and C.shape[0] == m and C.shape[1] == n, "shapes do not match")
    _check(m > 0 and n > 0 and k > 0, "empty matrices")
    with nogil:
        _gemm(trans_a, trans_b, m, n, k, alpha, &A[0, 0], <int> A.shape[1], &B[0, 0],
              <int> B.shape[1], beta, &C[0, 0], <int> C.shape[1])


# Whether this build gives one row fm_dense's bits through fm_vecmat (csrc/fm_dispatch.h).
VECMAT_DENSE_BITS = bool(FM_VECMAT_DENSE_BITS)


def vecmat(const floating[::1] x, const floating[:, ::1] W):
    """``x @ W`` for one row x, as prediction of one sample computes it."""
    _check(x.shape[0] == W.shape[0], "x must have W.shape[0] elements")
    y = np.empty(W.shape[1], dtype=np.asarray(W).dtype)
    cdef floating[::1] out = y
    with nogil:
        fm.vecmat(W.shape[0], W.shape[1], &x[0], &W[0, 0], &out[0])
    return y


DENSE_ISAS = {"base": FM_ISA_BASE, "avx2": FM_ISA_AVX2, "wide": FM_ISA_WIDE,
              "avx512": FM_ISA_AVX512}


cdef class Tuner:
    """csrc/fm_tuner.h's thread tuner, driven by the caller's clock (for tests)."""
    cdef fm.fm_tuner t

    def __init__(self, int n_max, double now=0.0, Tuner after=None):
        """A new tuner; `after`: the tuner of the process's last fit (fm_tuner_follow)."""
        if after is None:
            fm.fm_tuner_init(&self.t, n_max, now)
        else:
            fm.fm_tuner_follow(&self.t, &after.t, n_max, now)

    @property
    def threads(self):
        return fm.fm_tuner_threads(&self.t)

    @property
    def probing(self):
        return self.t.probe != 0

    def step(self, double rows, double now):
        fm.fm_tuner_step(&self.t, rows, now)

    def resume(self, double now):
        fm.fm_tuner_resume(&self.t, now)

    def give_to(self, Network network):
        """Make this tuner the one `network`'s last fit left (its next Trainer's)."""
        network.tuner = self.t
        network.has_tuner = True


def dense_isas():
    """Names of the fm_dense variants this CPU runs."""
    return [name for name, isa in DENSE_ISAS.items() if fm_dense_isa_available(isa)]


def dense_isa_best():
    """Name of the fm_dense variant prediction uses on this CPU."""
    best = fm_dense_isa_best()
    return next(name for name, isa in DENSE_ISAS.items() if isa == best)


def dense(const floating[:, ::1] A, const floating[:, :] W, const floating[::1] b,
          str activation, str isa=None, bint pack_tail=True, Z0=None):
    """``(activation(A @ W + b), the sums are all finite)`` by fm_dense.

    W's rows may lie apart (a slice of a wider W's columns, as a wide layer's column
    parts read it); its columns must be contiguous. `b` None adds no bias (with the
    identity). `isa` names a variant from
    :func:`dense_isas`; None means the best one. With `pack_tail` the last columns go
    through a zero-padded copy, as prediction does; without, fm_dense reads them from W in
    place (tail NULL), as training does. With `Z0` the sums continue from it:
    ``activation(Z0 + A @ W + b)``.
    """
    cdef Py_ssize_t m = A.shape[0], k = A.shape[1], n = W.shape[1]
    cdef Py_ssize_t ldw = W.strides[0] // <Py_ssize_t> sizeof(floating)
    _check(W.shape[0] == k and (b is None or b.shape[0] == n), "shapes do not match")
    _check(W.strides[1] == sizeof(floating) and ldw >= n, "W's columns must be contiguous")
    _check(not pack_tail or ldw == n, "pack_tail needs a contiguous W")
    _check(n > 0 and (k > 0 or Z0 is not None), "empty matrices")
    cdef int code = FM_ISA_AUTO if isa is None else DENSE_ISAS[isa]
    _check(isa is None or fm_dense_isa_available(code), f"this CPU cannot run {isa}")
    cdef int act = _ACT[activation]
    _check(b is not None or activation == "identity", "b=None needs activation='identity'")
    dtype = np.asarray(W).dtype
    Z = np.empty((m, n), dtype=dtype) if Z0 is None else np.array(Z0, dtype=dtype)
    _check(Z.shape == (m, n), "Z0 does not match")
    tail = np.zeros(fm_dense_tail_size(k, n, sizeof(floating)) + 1, dtype=dtype)
    cdef floating[:, ::1] z = Z
    cdef floating[::1] t = tail
    cdef const floating *bp = NULL
    cdef const floating *ap = NULL
    cdef const floating *wp = NULL
    if b is not None:
        bp = &b[0]
    if k > 0:
        ap = &A[0, 0]
        wp = &W[0, 0]
    cdef int ok = 1, accumulate = Z0 is not None
    if m == 0:
        return Z, True
    with nogil:
        if pack_tail and k > 0 and bp != NULL:
            fm.dense_pack_tail(k, n, wp, bp, &t[0])
        ok = fm.dense(m, k, n, ap, k, wp, ldw, bp, &t[0] if pack_tail and k > 0 and bp != NULL
                      else NULL, act, &z[0, 0], n, accumulate, code)
    return Z, bool(ok)


def dense_at(const floating[:, ::1] A, const floating[:, ::1] B, Py_ssize_t i0=0,
             i1=None, C0=None, str isa=None, bint skip_zeros=False):
    """``(C0 + A[:, i0:i1].T @ B, all finite)`` by fm_dense_at, as a weight gradient is.

    Without `C0` the sum starts from zero. `isa` as in :func:`dense`. `skip_zeros`: the
    tiles leave out the rows of A that are +0 in all their columns (the first layer's).
    """
    cdef Py_ssize_t k = A.shape[0], n = B.shape[1]
    cdef Py_ssize_t stop = A.shape[1] if i1 is None else i1
    _check(B.shape[0] == k and 0 <= i0 <= stop <= A.shape[1], "shapes do not match")
    cdef int code = FM_ISA_AUTO if isa is None else DENSE_ISAS[isa]
    _check(isa is None or fm_dense_isa_available(code), f"this CPU cannot run {isa}")
    dtype = np.asarray(B).dtype
    C = np.zeros((stop - i0, n), dtype=dtype) if C0 is None else np.array(C0, dtype=dtype)
    _check(C.shape == (stop - i0, n), "C0 does not match")
    cdef floating[:, ::1] c = C
    cdef int ok = 1, accumulate = C0 is not None
    if C.size == 0:
        return C, True
    with nogil:
        ok = fm.dense_at(stop - i0, k, n, &A[0, i0], A.shape[1], &B[0, 0], &c[0, 0], n,
                         accumulate, skip_zeros, code)
    return C, bool(ok)


def _csr(X, Py_ssize_t n_features, dtype):
    """The CSR arrays of X (``_validation.CSR``) after the product's own check."""
    from fastmlp._network import check_csr
    check_csr(X, np.dtype(dtype), n_features)
    return X.indptr, X.indices, X.data


def _rows(rows, Py_ssize_t n):
    if rows is None:
        return None
    rows = np.ascontiguousarray(rows, dtype=np.int64)
    _check(rows.ndim == 1 and ((rows >= 0) & (rows < n)).all(), "rows must lie in [0, n)")
    return rows


def csr_matmul(X, const floating[:, ::1] W, rows=None):
    """``X[rows] @ W`` (all rows if None) by fm_csr_matmul; X a ``_validation.CSR``."""
    cdef Py_ssize_t n = W.shape[1]
    indptr_a, indices_a, data_a = _csr(X, W.shape[0], np.asarray(W).dtype)
    rows = _rows(rows, X.shape[0])
    cdef const int64_t[::1] indptr = indptr_a
    cdef const int32_t[::1] indices = indices_a
    cdef const floating[::1] data = data_a
    cdef const int64_t[::1] r = rows
    cdef Py_ssize_t m = X.shape[0] if rows is None else r.shape[0]
    Z = np.empty((m, n), dtype=np.asarray(W).dtype)
    cdef floating[:, ::1] z = Z
    if m == 0 or n == 0:
        return Z
    with nogil:
        fm.csr_matmul(m, n, &indptr[0], &indices[0] if indices.shape[0] else NULL,
                      &data[0] if data.shape[0] else NULL,
                      &r[0] if r is not None else NULL, &W[0, 0], &z[0, 0], n)
    return Z


def csr_at(X, const floating[:, ::1] D, rows=None, int c0=0, c1=None, C0=None):
    """``(C0 +) X[rows][:, c0:c1].T @ D`` by fm_csr_at, as the first layer's weight
    gradient is; X a ``_validation.CSR``, D (rows, n)."""
    cdef Py_ssize_t n = D.shape[1]
    cdef int stop = X.shape[1] if c1 is None else c1
    dtype = np.asarray(D).dtype
    indptr_a, indices_a, data_a = _csr(X, X.shape[1], dtype)
    rows = _rows(rows, X.shape[0])
    cdef const int64_t[::1] indptr = indptr_a
    cdef const int32_t[::1] indices = indices_a
    cdef const floating[::1] data = data_a
    cdef const int64_t[::1] r = rows
    cdef Py_ssize_t m = X.shape[0] if rows is None else r.shape[0]
    _check(D.shape[0] == m and 0 <= c0 <= stop <= X.shape[1], "shapes do not match")
    C = np.zeros((stop - c0, n), dtype=dtype) if C0 is None else np.array(C0, dtype=dtype)
    _check(C.shape == (stop - c0, n), "C0 does not match")
    cdef floating[:, ::1] c = C
    cdef int accumulate = C0 is not None
    if C.size == 0 or m == 0:
        return C
    with nogil:
        fm.csr_at(m, n, &indptr[0], &indices[0] if indices.shape[0] else NULL,
                  &data[0] if data.shape[0] else NULL, &r[0] if r is not None else NULL,
                  c0, stop, &D[0, 0], &c[0, 0], n, accumulate)
    return C
