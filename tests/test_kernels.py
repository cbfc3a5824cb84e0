"""Every C kernel (through fastmlp._kernels) against the NumPy specification.

Shapes are deliberately odd (batch 1, 3, 17, 130; widths 1 .. 129, none a multiple of 8 or
16) so that vector loops and their remainders are both exercised. Tolerances: float64
~1e-12 relative, float32 ~1e-5.
"""

from __future__ import annotations

import itertools
import zlib

import numpy as np
import pytest

from fastmlp import _kernels as K
from fastmlp import reference as R

DTYPES = [np.float32, np.float64]
TOL = {np.dtype(np.float32): 1e-5, np.dtype(np.float64): 1e-12}
BATCHES = [1, 3, 17, 130]
WIDTHS = [1, 3, 7, 10, 17, 33, 129]
SHAPES = list(itertools.product(BATCHES, WIDTHS))
ACTS = ["identity", "relu", "tanh", "sigmoid"]
# For kernels where the class count must be >= 2 to be interesting (argmax, labels).
CLASS_SHAPES = [(n, k) for n, k in SHAPES if k > 1] + [(5, 1)]


def tol(dtype) -> float:
    return TOL[np.dtype(dtype)]


def rng_for(*key) -> np.random.Generator:
    """A generator whose seed is fixed by the test's parameters (crc32: not salted)."""
    return np.random.default_rng([zlib.crc32(repr(key).encode()), 12345])


def randn(rng, shape, dtype, scale=1.0) -> np.ndarray:
    return np.ascontiguousarray((scale * rng.standard_normal(shape)).astype(dtype))


def readonly(a: np.ndarray) -> np.ndarray:
    a = a.copy()
    a.setflags(write=False)
    return a


def assert_close(actual, expected, dtype, scale=None):
    """Relative comparison, with an absolute floor of tol * (typical magnitude)."""
    t = tol(dtype)
    expected = np.asarray(expected, dtype=np.float64)
    actual = np.asarray(actual)
    assert actual.shape == expected.shape
    if scale is None:
        scale = max(float(np.max(np.abs(expected), initial=0.0)), 1e-30)
    np.testing.assert_allclose(actual.astype(np.float64), expected, rtol=t, atol=t * scale)


# -- bias_act ---------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("act", ACTS)
@pytest.mark.parametrize("n,m", SHAPES)
def test_bias_act(n, m, act, dtype):
    rng = rng_for("bias_act", n, m, act, dtype)
    Z = randn(rng, (n, m), dtype, 2.0)
    b = randn(rng, (m,), dtype)
    expected = R.bias_act(Z, b, act)
    out = Z.copy()
    assert K.bias_act(out, b, act) is None
    assert out.dtype == np.dtype(dtype)
    assert_close(out, expected, dtype)
    if act == "relu":
        assert np.array_equal(out > 0, expected > 0)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("act", ["sigmoid", "tanh", "relu", "identity"])
def test_bias_act_extreme_inputs(act, dtype):
    Z = np.array([[1e4, -1e4, 800.0, -800.0, 0.0, 50.0, -50.0]], dtype=dtype)
    b = np.zeros(Z.shape[1], dtype)
    out = Z.copy()
    K.bias_act(out, b, act)
    assert np.all(np.isfinite(out))
    with np.errstate(over="ignore"):
        expected = R.bias_act(Z, b, act)
    assert_close(out, expected, dtype, scale=1.0 if act in ("sigmoid", "tanh") else None)


@pytest.mark.parametrize("dtype", DTYPES)
def test_bias_act_readonly_bias(dtype):
    rng = rng_for("bias_ro", dtype)
    Z = randn(rng, (17, 33), dtype)
    b = readonly(randn(rng, (33,), dtype))
    out = Z.copy()
    K.bias_act(out, b, "tanh")
    assert_close(out, R.bias_act(Z, b, "tanh"), dtype)


# -- act_backward -----------------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("with_mask", [False, True])
@pytest.mark.parametrize("act", ACTS)
@pytest.mark.parametrize("n,m", SHAPES)
def test_act_backward(n, m, act, with_mask, dtype):
    rng = rng_for("act_backward", n, m, act, with_mask, dtype)
    A = R.activate(randn(rng, (n, m), dtype, 2.0), act).astype(dtype)
    dA = randn(rng, (n, m), dtype)
    mask = None
    if with_mask:
        keep = rng.random((n, m)) >= 0.3
        mask = np.where(keep, 1 / 0.7, 0.0).astype(dtype)
    expected = R.act_backward(A, dA, act, mask)
    out = dA.copy()
    assert K.act_backward(A, out, act, mask) is None
    assert_close(out, expected, dtype)
    if with_mask:
        assert np.all(out[mask == 0] == 0)
    if act == "relu":
        assert np.all(out[A <= 0] == 0)


@pytest.mark.parametrize("dtype", DTYPES)
def test_act_backward_readonly_inputs(dtype):
    rng = rng_for("act_backward_ro", dtype)
    A = readonly(R.activate(randn(rng, (17, 10), dtype), "sigmoid").astype(dtype))
    mask = readonly(np.where(rng.random((17, 10)) < 0.5, 0.0, 2.0).astype(dtype))
    dA = randn(rng, (17, 10), dtype)
    out = dA.copy()
    K.act_backward(A, out, "sigmoid", mask)
    assert_close(out, R.act_backward(A, dA, "sigmoid", mask), dtype)
    assert not A.flags.writeable and not mask.flags.writeable


# -- softmax ----------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n,k", SHAPES)
def test_softmax(n, k, dtype):
    rng = rng_for("softmax", n, k, dtype)
    Z = randn(rng, (n, k), dtype, 3.0)
    expected = R.softmax(Z.astype(np.float64))
    out = Z.copy()
    assert K.softmax(out) is None
    assert_close(out, expected, dtype)
    np.testing.assert_allclose(out.sum(axis=1), 1.0, rtol=10 * tol(dtype))


@pytest.mark.parametrize("dtype", DTYPES)
def test_softmax_extreme_logits(dtype):
    Z = np.array([[1e4, -1e4, 0.0], [-1e4, -1e4, -1e4 + 1], [1e4, 1e4, -1e4]], dtype=dtype)
    out = Z.copy()
    K.softmax(out)
    assert np.all(np.isfinite(out))
    np.testing.assert_allclose(out.sum(axis=1), 1.0, rtol=10 * tol(dtype))
    assert_close(out, R.softmax(Z.astype(np.float64)), dtype, scale=1.0)


# -- softmax_cross_entropy --------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("weighted,scale", [(False, 1.0), (True, 1.0), (False, 0.3), (True, 0.07)])
@pytest.mark.parametrize("n,k", CLASS_SHAPES)
def test_softmax_cross_entropy(n, k, weighted, scale, dtype):
    rng = rng_for("xent", n, k, weighted, scale, dtype)
    Z = randn(rng, (n, k), dtype, 3.0)
    y = rng.integers(0, k, n)
    w = rng.uniform(0.0, 3.0, n).astype(dtype) if weighted else None
    loss_ref, correct_ref, dZ_ref = R.softmax_cross_entropy(Z.astype(np.float64), y, w, scale)
    Zk = Z.copy()
    loss, correct, dZ = K.softmax_cross_entropy(Zk, y, w, scale)
    assert isinstance(loss, float)
    assert loss == pytest.approx(loss_ref, rel=tol(dtype), abs=tol(dtype))
    assert correct == correct_ref == int(np.sum(Z.argmax(axis=1) == y))
    assert dZ.dtype == np.dtype(dtype) and dZ.shape == (n, k)
    assert_close(dZ, dZ_ref, dtype, scale=scale * (3.0 if weighted else 1.0))
    # Z becomes the probabilities.
    assert_close(Zk, R.softmax(Z.astype(np.float64)), dtype, scale=1.0)


@pytest.mark.parametrize("dtype", DTYPES)
def test_softmax_cross_entropy_default_scale_and_weights(dtype):
    """No sample_weight and the default scale equal all-ones weights and scale 1."""
    rng = rng_for("xent_default", dtype)
    Z = randn(rng, (17, 10), dtype)
    y = rng.integers(0, 10, 17)
    a = K.softmax_cross_entropy(Z.copy(), y)
    b = K.softmax_cross_entropy(Z.copy(), y, np.ones(17, dtype), 1.0)
    assert a[0] == b[0] and a[1] == b[1]
    assert np.array_equal(a[2], b[2])
    # The gradient rows sum to zero (softmax minus one-hot).
    np.testing.assert_allclose(a[2].sum(axis=1), 0.0, atol=10 * tol(dtype))


@pytest.mark.parametrize("dtype", DTYPES)
def test_softmax_cross_entropy_stability(dtype):
    Z = np.array(
        [
            [1e4, -1e4, 0.0, 5.0],
            [1e4, -1e4, 0.0, 5.0],
            [-1e4, -1e4, 1e4, -1e4],
            [-1e4, -1e4 + 3, -1e4, -1e4],
            [-1e4, 0.0, -1e4, 1e4],
        ],
        dtype=dtype,
    )
    y = np.array([0, 1, 2, 0, 1])
    w = np.array([1.0, 0.5, 2.0, 1.0, 1.5], dtype)
    loss_ref, correct_ref, dZ_ref = R.softmax_cross_entropy(Z.astype(np.float64), y, w, 0.25)
    # Per row, w * -log p_y by hand: 0, 0.5 * 2e4, 0, log(3 + e^3), 1.5 * 1e4.
    by_hand = 0.5 * 2e4 + np.log(3 + np.exp(3.0)) + 1.5 * 1e4
    assert loss_ref == pytest.approx(by_hand, rel=1e-12)
    Zk = Z.copy()
    loss, correct, dZ = K.softmax_cross_entropy(Zk, y, w, 0.25)
    assert np.isfinite(loss)
    assert loss == pytest.approx(loss_ref, rel=tol(dtype))
    assert correct == correct_ref == 2  # rows 0 and 2
    assert np.all(np.isfinite(dZ)) and np.all(np.isfinite(Zk))
    np.testing.assert_allclose(Zk.sum(axis=1), 1.0, rtol=10 * tol(dtype))
    assert_close(Zk, R.softmax(Z.astype(np.float64)), dtype, scale=1.0)
    assert_close(dZ, dZ_ref, dtype, scale=1.0)


# -- mse --------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("weighted,scale", [(False, 1.0), (True, 1.0), (True, 0.13)])
@pytest.mark.parametrize("n,k", CLASS_SHAPES)
def test_mse(n, k, weighted, scale, dtype):
    rng = rng_for("mse", n, k, weighted, scale, dtype)
    A = randn(rng, (n, k), dtype)
    y = rng.integers(0, k, n)
    w = rng.uniform(0.0, 3.0, n).astype(dtype) if weighted else None
    loss_ref, correct_ref, dA_ref = R.mse(A.astype(np.float64), y, w, scale)
    A_before = A.copy()
    loss, correct, dA = K.mse(A, y, w, scale)
    assert np.array_equal(A, A_before), "mse must not write its input"
    assert loss == pytest.approx(loss_ref, rel=tol(dtype), abs=0)
    assert correct == correct_ref
    assert dA.dtype == np.dtype(dtype)
    assert_close(dA, dA_ref, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_mse_readonly_and_near_onehot(dtype):
    """Outputs close to the one-hot targets: the loss is small and must stay accurate."""
    rng = rng_for("mse_small", dtype)
    n, k = 33, 7
    y = rng.integers(0, k, n)
    A = readonly((np.eye(k)[y] + 1e-2 * rng.standard_normal((n, k))).astype(dtype))
    loss_ref, correct_ref, dA_ref = R.mse(A.astype(np.float64), y)
    loss, correct, dA = K.mse(A, y)
    assert correct == correct_ref == n
    assert loss == pytest.approx(loss_ref, rel=100 * tol(dtype), abs=0)
    assert_close(dA, dA_ref, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("noise", [1e-2, 1e-4, 1e-6])
def test_mse_loss_accurate_near_targets(noise, dtype):
    """A trained MSE model outputs nearly one-hot rows; the loss must stay accurate there.

    Tolerance is 10x the suite's (float32 1e-4, float64 1e-11 relative). Computing
    |a - t|^2 as |a|^2 - 2 a_y + 1 cancels catastrophically when a ~ t.
    """
    rng = rng_for("mse_near", noise, dtype)
    n, k = 33, 7
    y = rng.integers(0, k, n)
    A = (np.eye(k)[y] + noise * rng.standard_normal((n, k))).astype(dtype)
    loss_ref = R.mse(A.astype(np.float64), y)[0]
    loss = K.mse(A, y)[0]
    assert loss > 0
    assert loss == pytest.approx(loss_ref, rel=10 * tol(dtype), abs=0)


# -- squared_error (regression) ----------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("weighted,scale", [(False, 1.0), (True, 1.0), (True, 0.13)])
@pytest.mark.parametrize("n,k", SHAPES)
def test_squared_error(n, k, weighted, scale, dtype):
    rng = rng_for("squared_error", n, k, weighted, scale, dtype)
    A = readonly(randn(rng, (n, k), dtype))
    Y = readonly(randn(rng, (n, k), dtype, scale=2.0))
    w = rng.uniform(0.0, 3.0, n).astype(dtype) if weighted else None
    loss_ref, dA_ref = R.squared_error(A.astype(np.float64), Y.astype(np.float64), w, scale)
    loss, dA = K.squared_error(A, Y, w, scale)
    assert loss > 0
    assert loss == pytest.approx(loss_ref, rel=tol(dtype), abs=0)
    assert dA.dtype == np.dtype(dtype)
    assert_close(dA, dA_ref, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("noise", [1e-2, 1e-4, 1e-6])
def test_squared_error_accurate_near_targets(noise, dtype):
    """A well-fitted regressor's loss is tiny and must not cancel away."""
    rng = rng_for("se_near", noise, dtype)
    Y = randn(rng, (33, 3), dtype, scale=100.0)
    A = (Y + noise * rng.standard_normal(Y.shape)).astype(dtype)
    loss_ref = R.squared_error(A.astype(np.float64), Y.astype(np.float64))[0]
    loss = K.squared_error(A, Y)[0]
    assert loss > 0
    assert loss == pytest.approx(loss_ref, rel=10 * tol(dtype), abs=0)


@pytest.mark.parametrize("dtype", DTYPES)
def test_squared_error_shape_mismatches_raise(dtype):
    A = np.zeros((3, 4), dtype)
    with pytest.raises(ValueError, match="Y must match A"):
        K.squared_error(A, np.zeros((3, 5), dtype))
    with pytest.raises(ValueError, match="Y must match A"):
        K.squared_error(A, np.zeros((2, 4), dtype))
    with pytest.raises(ValueError, match="one weight per row"):
        K.squared_error(A, A, np.ones(4, dtype))


# -- col_sum ----------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n,m", SHAPES)
def test_col_sum(n, m, dtype):
    rng = rng_for("col_sum", n, m, dtype)
    dZ = readonly(randn(rng, (n, m), dtype))
    db = K.col_sum(dZ)
    assert db.shape == (m,) and db.dtype == np.dtype(dtype)
    expected = R.col_sum(dZ.astype(np.float64))
    bound = np.abs(dZ.astype(np.float64)).sum(axis=0)
    assert np.all(np.abs(db - expected) <= 4 * tol(dtype) * bound + 1e-300)


# -- transpose --------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n,m", SHAPES + [(33, 47), (256, 16), (17, 1)])
def test_transpose(n, m, dtype):
    rng = rng_for("transpose", n, m, dtype)
    A = readonly(randn(rng, (n, m), dtype))
    B = K.transpose(A)
    assert B.shape == (m, n) and B.dtype == np.dtype(dtype) and B.flags.c_contiguous
    np.testing.assert_array_equal(B, A.T)


# -- adam and sgd -----------------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("size", WIDTHS + [1000])
@pytest.mark.parametrize("hyper", [(1e-3, 0.9, 0.999, 1e-8), (0.05, 0.8, 0.99, 1e-6)])
def test_adam_steps(size, hyper, dtype):
    lr, b1, b2, eps = hyper
    rng = rng_for("adam", size, hyper, dtype)
    p = randn(rng, (size,), dtype)
    m = np.zeros(size, dtype)
    v = np.zeros(size, dtype)
    p_ref, m_ref, v_ref = (x.astype(np.float64) for x in (p, m, v))
    for t in range(1, 6):
        g = readonly(randn(rng, (size,), dtype))
        K.adam(p, g, m, v, lr, b1, b2, eps, t)
        p_ref, m_ref, v_ref = R.adam(p_ref, g.astype(np.float64), m_ref, v_ref, lr, b1, b2, eps, t)
        assert_close(m, m_ref, dtype, scale=1.0)
        assert_close(v, v_ref, dtype, scale=1.0)
        assert_close(p, p_ref, dtype, scale=1.0)
    assert p.dtype == np.dtype(dtype)
    assert np.all(np.isfinite(p))


@pytest.mark.parametrize("dtype", DTYPES)
def test_adam_first_step_is_lr_times_sign(dtype):
    g = np.array([3.0, -0.5, 2e-2, -7.0, 1.0], dtype)
    p = np.zeros(5, dtype)
    m, v = np.zeros(5, dtype), np.zeros(5, dtype)
    K.adam(p, g, m, v, 0.01, 0.9, 0.999, 0.0, 1)
    np.testing.assert_allclose(p, -0.01 * np.sign(g), rtol=10 * tol(dtype))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("size", WIDTHS + [1000])
@pytest.mark.parametrize("lr,momentum", [(0.1, 0.0), (0.01, 0.9), (0.3, 0.5)])
def test_sgd_steps(size, lr, momentum, dtype):
    rng = rng_for("sgd", size, lr, momentum, dtype)
    p = randn(rng, (size,), dtype)
    vel = np.zeros(size, dtype)
    p_ref, vel_ref = p.astype(np.float64), vel.astype(np.float64)
    for _ in range(4):
        g = readonly(randn(rng, (size,), dtype))
        K.sgd(p, g, vel, lr, momentum)
        p_ref, vel_ref = R.sgd(p_ref, g.astype(np.float64), vel_ref, lr, momentum)
        assert_close(vel, vel_ref, dtype, scale=1.0)
        assert_close(p, p_ref, dtype, scale=1.0)


# -- dropout ----------------------------------------------------------------------------


def keep_value(p, dtype):
    return np.asarray(1.0 / (1.0 - p)).astype(dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("p", [0.1, 0.5, 0.9])
@pytest.mark.parametrize("n,m", [(1, 1), (3, 7), (17, 33), (130, 129)])
def test_dropout_mask_values_and_output(n, m, p, dtype):
    rng = rng_for("dropout", n, m, p, dtype)
    A = readonly(randn(rng, (n, m), dtype))
    mask, out = K.dropout(A, p, 1234)
    assert mask.shape == out.shape == (n, m)
    assert mask.dtype == out.dtype == np.dtype(dtype)
    keep = keep_value(p, dtype)
    assert np.all((mask == 0) | (mask == keep))
    assert np.array_equal(out, A * mask)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("p", [0.1, 0.5, 0.9])
def test_dropout_fraction(p, dtype):
    n, m = 400, 250  # 100,000 draws
    A = np.ones((n, m), dtype)
    mask, out = K.dropout(A, p, 2024)
    dropped = np.mean(mask == 0)
    sd = np.sqrt(p * (1 - p) / (n * m))
    assert abs(dropped - p) < 5 * sd
    # Every column and every row sees drops when p is large enough (no stuck lanes).
    if p >= 0.5:
        assert np.all((mask == 0).any(axis=0)) and np.all((mask == 0).any(axis=1))
    # Inverted dropout keeps the expectation: mean(out) ~ mean(A).
    assert abs(out.astype(np.float64).mean() - 1.0) < 5 * sd / (1 - p)


@pytest.mark.parametrize("dtype", DTYPES)
def test_dropout_p_zero_keeps_everything(dtype):
    rng = rng_for("dropout0", dtype)
    A = randn(rng, (130, 129), dtype)
    mask, out = K.dropout(A, 0.0, 99)
    assert np.all(mask == 1)
    assert np.array_equal(out, A)


@pytest.mark.parametrize("dtype", DTYPES)
def test_dropout_seed(dtype):
    A = np.ones((17, 129), dtype)
    m1, _ = K.dropout(A, 0.5, 7)
    m2, _ = K.dropout(A, 0.5, 7)
    m3, _ = K.dropout(A, 0.5, 8)
    assert np.array_equal(m1, m2)
    assert not np.array_equal(m1, m3)
    # Different seeds should disagree on roughly half the entries.
    assert 0.3 < np.mean((m1 == 0) != (m3 == 0)) < 0.7


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("r0,rows", [(0, 130), (1, 1), (5, 17), (17, 3), (64, 66), (129, 1)])
def test_dropout_row_offset_matches_big_block(r0, rows, dtype):
    """A block computed with row0=r equals rows r.. of a larger block computed from row 0:
    this is what makes the masks independent of how rows are split among threads."""
    rng = rng_for("dropout_rows", dtype)
    A = randn(rng, (130, 33), dtype)
    big_mask, big_out = K.dropout(A, 0.5, 31337, 0)
    mask, out = K.dropout(np.ascontiguousarray(A[r0 : r0 + rows]), 0.5, 31337, r0)
    assert np.array_equal(mask, big_mask[r0 : r0 + rows])
    assert np.array_equal(out, big_out[r0 : r0 + rows])
    if r0 > 0:
        shifted, _ = K.dropout(np.ascontiguousarray(A[r0 : r0 + rows]), 0.5, 31337, 0)
        assert not np.array_equal(shifted, mask) or rows * 33 < 8


def test_dropout_same_bits_for_both_dtypes():
    A = np.ones((17, 33))
    m64, _ = K.dropout(A, 0.3, 5)
    m32, _ = K.dropout(A.astype(np.float32), 0.3, 5)
    assert np.array_equal(m64 == 0, m32 == 0)


# -- gemm -------------------------------------------------------------------------------

GEMM_SHAPES = [(1, 1, 1), (3, 7, 1), (17, 3, 33), (130, 10, 17), (7, 129, 3), (1, 33, 130)]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("trans_a", [False, True])
@pytest.mark.parametrize("trans_b", [False, True])
@pytest.mark.parametrize("alpha,beta", [(1.0, 0.0), (0.5, 1.0), (-2.0, 0.25)])
@pytest.mark.parametrize("m,n,k", GEMM_SHAPES)
def test_gemm(m, n, k, alpha, beta, trans_a, trans_b, dtype):
    rng = rng_for("gemm", m, n, k, alpha, beta, trans_a, trans_b, dtype)
    opA = randn(rng, (m, k), dtype)
    opB = randn(rng, (k, n), dtype)
    A = readonly(np.ascontiguousarray(opA.T) if trans_a else opA)
    B = readonly(np.ascontiguousarray(opB.T) if trans_b else opB)
    C0 = randn(rng, (m, n), dtype)
    C = C0.copy()
    assert K.gemm(A, B, C, trans_a, trans_b, alpha, beta) is None
    a64, b64, c64 = opA.astype(np.float64), opB.astype(np.float64), C0.astype(np.float64)
    expected = alpha * a64 @ b64 + beta * c64
    bound = abs(alpha) * np.abs(a64) @ np.abs(b64) + abs(beta) * np.abs(c64)
    err = np.abs(C.astype(np.float64) - expected)
    assert np.all(err <= 4 * tol(dtype) * bound + 1e-300)


@pytest.mark.parametrize("dtype", DTYPES)
def test_gemm_beta_zero_ignores_nan_in_c(dtype):
    """beta = 0 means C is overwritten (BLAS semantics), even if it held NaN."""
    A = np.ones((3, 7), dtype)
    B = np.ones((7, 5), dtype)
    C = np.full((3, 5), np.nan, dtype)
    K.gemm(A, B, C)
    assert np.array_equal(C, np.full((3, 5), 7, dtype))


# -- read-only inputs and argument checks -----------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES)
def test_readonly_inputs_where_only_read(dtype):
    rng = rng_for("readonly", dtype)
    n, k = 17, 7
    Z = randn(rng, (n, k), dtype)
    y = readonly(rng.integers(0, k, n))
    w = readonly(rng.uniform(0.5, 2.0, n).astype(dtype))
    loss, correct, dZ = K.softmax_cross_entropy(Z.copy(), y, w, 0.5)
    ref = R.softmax_cross_entropy(Z.astype(np.float64), y, w, 0.5)
    assert loss == pytest.approx(ref[0], rel=tol(dtype))
    A = readonly(Z)
    loss, correct, dA = K.mse(A, y, w, 0.5)
    assert loss == pytest.approx(R.mse(A.astype(np.float64), y, w, 0.5)[0], rel=tol(dtype))
    mask, out = K.dropout(A, 0.5, 3)
    assert np.array_equal(out, A * mask)
    db = K.col_sum(A)
    assert_close(db, A.astype(np.float64).sum(axis=0), dtype, scale=np.abs(A).sum())


@pytest.mark.parametrize("dtype", DTYPES)
def test_shape_mismatches_raise(dtype):
    Z = np.zeros((3, 4), dtype)
    v4 = np.zeros(4, dtype)
    v3 = np.zeros(3, dtype)
    y = np.array([0, 1, 2])
    with pytest.raises(ValueError):
        K.bias_act(Z.copy(), v3, "relu")
    with pytest.raises(ValueError):
        K.act_backward(Z, np.zeros((3, 5), dtype), "relu")
    with pytest.raises(ValueError):
        K.act_backward(Z, np.zeros((4, 4), dtype), "relu")
    with pytest.raises(ValueError):
        K.act_backward(Z, Z.copy(), "relu", np.zeros((3, 3), dtype))
    with pytest.raises(ValueError):
        K.softmax_cross_entropy(Z.copy(), np.array([0, 1]))
    with pytest.raises(ValueError):
        K.softmax_cross_entropy(Z.copy(), np.array([0, 1, 4]))
    with pytest.raises(ValueError):
        K.softmax_cross_entropy(Z.copy(), np.array([0, -1, 2]))
    with pytest.raises(ValueError):
        K.softmax_cross_entropy(Z.copy(), y, v4)
    with pytest.raises(ValueError):
        K.mse(Z, np.array([0, 1, 2, 3]))
    with pytest.raises(ValueError):
        K.mse(Z, np.array([0, 1, 9]))
    with pytest.raises(ValueError):
        K.mse(Z, y, v4)
    with pytest.raises(ValueError):
        K.adam(v4.copy(), v3, v4.copy(), v4.copy(), 1e-3, 0.9, 0.999, 1e-8, 1)
    with pytest.raises(ValueError):
        K.adam(v4.copy(), v4, v3.copy(), v4.copy(), 1e-3, 0.9, 0.999, 1e-8, 1)
    with pytest.raises(ValueError):
        K.adam(v4.copy(), v4, v4.copy(), v4.copy(), 1e-3, 0.9, 0.999, 1e-8, 0)
    with pytest.raises(ValueError):
        K.sgd(v4.copy(), v3, v4.copy(), 0.1, 0.9)
    with pytest.raises(ValueError):
        K.sgd(v4.copy(), v4, v3.copy(), 0.1, 0.9)
    with pytest.raises(ValueError):
        K.dropout(Z, 1.0, 1)
    with pytest.raises(ValueError):
        K.dropout(Z, -0.1, 1)
    with pytest.raises(ValueError):
        K.gemm(np.zeros((3, 4), dtype), np.zeros((5, 2), dtype), np.zeros((3, 2), dtype))
    with pytest.raises(ValueError):
        K.gemm(np.zeros((3, 4), dtype), np.zeros((4, 2), dtype), np.zeros((3, 3), dtype))
    with pytest.raises(ValueError):
        K.gemm(
            np.zeros((3, 4), dtype), np.zeros((3, 2), dtype), np.zeros((3, 2), dtype), True, False
        )


def test_wrong_dimensions_and_unknown_activation_raise():
    # A 1-D Z matches no signature of the fused function (Cython raises TypeError).
    with pytest.raises((TypeError, ValueError)):
        K.bias_act(np.zeros(4), np.zeros(4), "relu")
    with pytest.raises(ValueError):
        K.softmax(np.zeros((3, 4))[:, ::2])  # not C-contiguous
    with pytest.raises(KeyError):
        K.bias_act(np.zeros((2, 4)), np.zeros(4), "softplus")


def test_softmax_of_zero_columns_is_refused():
    # Found by AddressSanitizer: the kernel read z[0] of an empty row.
    with pytest.raises(ValueError, match="column"):
        K.softmax(np.empty((2, 0), np.float32))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("n_in, n_out", [(1, 1), (7, 3), (784, 128), (33, 129), (10, 300)])
def test_vecmat_matches_matmul_with_and_without_zeros(n_in, n_out, dtype):
    rng = np.random.default_rng(n_in * 1000 + n_out)
    W = rng.standard_normal((n_in, n_out)).astype(dtype)
    x = rng.standard_normal(n_in).astype(dtype)
    x[rng.random(n_in) < 0.6] = 0  # skipped rows must not change the result
    # Runs of 8 zeros are skipped in one test: non-zeros at either end of a run of 8, runs
    # of zeros between them, the last input alone.
    runs = np.zeros_like(x)
    idx = np.arange(n_in)
    runs[(idx % 24 == 0) | (idx % 24 == 15) | (idx == n_in - 1)] = 1.5
    eps = np.finfo(dtype).eps
    for v in (x, np.zeros_like(x), np.abs(x) + 1, runs):
        exact = v.astype(np.float64) @ W.astype(np.float64)
        # Summation error bound: n_in * eps * sum |v_i w_ij|.
        bound = n_in * eps * (np.abs(v).astype(np.float64) @ np.abs(W)) + 1e-300
        assert np.all(np.abs(K.vecmat(v, W) - exact) <= bound)


@pytest.mark.skipif(not K.VECMAT_DENSE_BITS, reason="this compiler's build promises no bits")
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("n_in", [1, 9, 130])
def test_vecmat_gives_fm_dense_bits(n_in, dtype):
    # One row's prediction is a batch's row bit for bit: every width of fm_vecmat's last
    # column block (1-16, 17-64, 65-127 columns, read past each row's end, the last rows
    # from padded copies), behind whole blocks of 128 or not, the last input zero or not.
    rng = np.random.default_rng(n_in)
    for n_out in (1, 10, 16, 17, 64, 65, 127, 128, 129, 200, 300):
        W = rng.standard_normal((n_in, n_out)).astype(dtype)
        zeros_b = np.zeros(n_out, dtype)
        for sparsity in (0.0, 0.5):
            x = (rng.standard_normal(n_in) * (rng.random(n_in) >= sparsity)).astype(dtype)
            for last in (0.0, 1.25):
                x[-1] = last
                dense, _ = K.dense(x[None], W, zeros_b, "identity", pack_tail=False)
                np.testing.assert_array_equal(K.vecmat(x, W), dense[0])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("n", [0, 1, 7, 16, 1001])
def test_all_finite(n, dtype):
    x = np.arange(n, dtype=dtype)
    assert K.all_finite(x)
    for bad in (np.nan, np.inf, -np.inf):
        for pos in {0, n // 2, n - 1} if n else ():
            y = x.copy()
            y[pos] = bad
            assert not K.all_finite(y)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_all_finite_threads(dtype):
    # Beyond 2**22 elements the scan splits into parts over threads: a bad value in any
    # part (first, a part's edge, last) is found with 1, 2 or 3 threads.
    n = (1 << 22) + 5
    x = np.ones(n, dtype=dtype)
    for threads in (1, 2, 3):
        assert K.all_finite(x, threads)
    for pos in (0, n // 16 - 1, n // 16, n // 2, n - 1):
        for bad in (np.nan, -np.inf):
            x[pos] = bad
            assert not K.all_finite(x, 2), (pos, bad)
            assert not K.all_finite(x, 3), (pos, bad)
            x[pos] = 1
