"""fm_dense (our own GEMM with bias and activation fused: prediction and the training
forward pass) and fm_dense_at (the weight gradient), against the reference.

Every variant this CPU runs is tested ("wide" is the AVX-512 tile shape compiled for
AVX2, so that shape's code runs here even without AVX-512). Shapes are odd on purpose:
row counts around the tile heights (3, 6, 8 rows), widths around the 64-byte panel
(16 floats, 8 doubles), 1 to 4 hidden layers.
"""

from __future__ import annotations

import zlib

import numpy as np
import pytest

from fastmlp import MLP
from fastmlp import _kernels as K
from fastmlp import reference as R

DTYPES = [np.float32, np.float64]
TOL = {np.dtype(np.float32): 1e-5, np.dtype(np.float64): 1e-12}
ISAS = K.dense_isas()
ACTS = ["identity", "relu", "tanh", "sigmoid"]
ROWS = [1, 2, 5, 6, 7, 8, 9, 17, 130]
# (fan_in, fan_out): widths 1 .. 130, multiples of the panel and not, MNIST's 784 -> 10,
# and a W of several k blocks (700 x 130: 4 in float32, 7 in float64) with a tail panel.
LAYERS = [(1, 1), (3, 10), (17, 16), (8, 24), (64, 33), (129, 129), (784, 10), (700, 130)]


def rng_for(*key) -> np.random.Generator:
    return np.random.default_rng([zlib.crc32(repr(key).encode()), 777])


def layer(rng, k, n, dtype):
    W = (rng.standard_normal((k, n)) / np.sqrt(k)).astype(dtype)
    b = (0.3 * rng.standard_normal(n)).astype(dtype)
    return W, b


def test_auto_variant_is_available():
    assert "base" in ISAS
    assert K.dense_isa_best() in ISAS


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("act", ACTS)
@pytest.mark.parametrize("k,n", LAYERS)
@pytest.mark.parametrize("isa", ISAS)
def test_dense_matches_reference(isa, k, n, act, dtype):
    rng = rng_for("dense", isa, k, n, act, str(dtype))
    W, b = layer(rng, k, n, dtype)
    for m in ROWS:
        A = rng.standard_normal((m, k)).astype(dtype)
        A[rng.random((m, k)) < 0.3] = 0  # zeros, as pixels and ReLU outputs have
        Z, ok = K.dense(A, W, b, act, isa)
        assert ok
        expected = R.bias_act(A.astype(np.float64) @ W.astype(np.float64), b, act)
        t = TOL[np.dtype(dtype)]
        scale = max(float(np.abs(expected).max()), 1.0)
        np.testing.assert_allclose(Z, expected, rtol=t, atol=t * scale)
        assert Z.dtype == dtype


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("k,n", LAYERS + [(31, 15), (33, 17), (100, 31)])
@pytest.mark.parametrize("isa", ISAS)
def test_dense_reading_the_tail_in_place(isa, k, n, dtype):
    """Training's path (tail NULL: the last n % panel columns copied into a padded panel
    per block, at most 256 rows of k at a time) gives the bits of the tail prediction
    packs once per call, and so matches the reference; k = 700 and 784 cross that limit."""
    rng = rng_for("tail-in-place", isa, k, n, str(dtype))
    W, b = layer(rng, k, n, dtype)
    for m in (1, 7, 8, 33):
        A = rng.standard_normal((m, k)).astype(dtype)
        Z, ok = K.dense(A, W, b, "relu", isa, pack_tail=False)
        assert ok
        assert np.array_equal(Z, K.dense(A, W, b, "relu", isa)[0])
        expected = R.bias_act(A.astype(np.float64) @ W.astype(np.float64), b, "relu")
        t = TOL[np.dtype(dtype)]
        np.testing.assert_allclose(Z, expected, rtol=t, atol=t * max(np.abs(expected).max(), 1))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("isa", ISAS)
def test_dense_rows_do_not_depend_on_the_split(isa, dtype):
    """A row's bits are the same whichever tile (full or last rows) computes it."""
    rng = rng_for("split", isa, str(dtype))
    W, b = layer(rng, 37, 41, dtype)
    A = rng.standard_normal((29, 37)).astype(dtype)
    Z, _ = K.dense(A, W, b, "relu", isa)
    for start, stop in [(0, 1), (3, 4), (28, 29), (0, 7), (5, 13), (11, 29), (1, 28)]:
        part, _ = K.dense(np.ascontiguousarray(A[start:stop]), W, b, "relu", isa)
        assert np.array_equal(part, Z[start:stop]), (start, stop)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("isa", ISAS)
def test_dense_k_blocks_keep_the_sum_in_order(isa, dtype):
    """A W of several k blocks gives the bits of one sum over p = 0..k-1.

    Zeros in A add exact zeros, so A = [0, B] against W = [U; V] must give the bits of
    B @ V alone, and A = [B, 0] those of B @ U (shorter k: other block edges). This holds
    only if every block resumes exactly from the previous block's sums, at the right rows
    of W and of the tail panel.
    """
    rng = rng_for("kblocks", isa, str(dtype))
    k, n, split = 700, 130, 333  # the split falls inside a block, not on its edge
    W, b = layer(rng, k, n, dtype)
    B = rng.standard_normal((9, k)).astype(dtype)
    zeros = np.zeros_like(B)
    for act in ("identity", "relu"):
        head = np.hstack([B[:, :split], zeros[:, split:]])
        tail = np.hstack([zeros[:, :split], B[:, split:]])
        expected_head, _ = K.dense(np.ascontiguousarray(B[:, :split]), W[:split], b, act, isa)
        expected_tail, _ = K.dense(
            np.ascontiguousarray(B[:, split:]), np.ascontiguousarray(W[split:]), b, act, isa
        )
        assert np.array_equal(K.dense(head, W, b, act, isa)[0], expected_head)
        assert np.array_equal(K.dense(tail, W, b, act, isa)[0], expected_tail)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("k,n", [(700, 130), (40, 10), (9, 16)])
def test_dense_accumulates_parts_of_k_exactly(isa, k, n, dtype):
    """fm_dense continuing from Z (the first layer's runs of features in training): the
    parts of k, accumulated in order, give the bits of one call, the bias and activation
    applied by the last part alone; an empty k leaves act(Z + b)."""
    rng = rng_for("accumulate", isa, k, n, str(dtype))
    W, b = layer(rng, k, n, dtype)
    A = rng.standard_normal((13, k)).astype(dtype)
    cuts = [0, 1, k // 3, k // 3 + 5, k]
    for act in ACTS:
        Z = None
        for p0, p1, last in zip(cuts, cuts[1:], [False] * 3 + [True]):
            part = (np.ascontiguousarray(A[:, p0:p1]), np.ascontiguousarray(W[p0:p1]))
            Z, ok = K.dense(
                *part, b if last else None, act if last else "identity", isa, pack_tail=False, Z0=Z
            )
            assert ok
        assert np.array_equal(Z, K.dense(A, W, b, act, isa, pack_tail=False)[0])
    Z0 = rng.standard_normal((13, n)).astype(dtype)
    empty = np.zeros((13, 0), dtype)
    Z, _ = K.dense(empty, np.zeros((0, n), dtype), b, "relu", isa, pack_tail=False, Z0=Z0)
    assert np.array_equal(Z, np.maximum(Z0 + b, 0))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("isa", ISAS)
def test_dense_reports_nonfinite_products(isa, dtype):
    rng = rng_for("nonfinite", isa, str(dtype))
    W, b = layer(rng, 19, 21, dtype)
    for m in (1, 7, 9):
        A = rng.standard_normal((m, 19)).astype(dtype)
        assert K.dense(A, W, b, "relu", isa)[1]
        for bad in (np.nan, np.inf, -np.inf):
            for i, j in [(0, 0), (m - 1, 18), (m // 2, 9)]:
                B = A.copy()
                B[i, j] = bad
                # ReLU would turn NaN into 0: the flag must see the products before it.
                assert not K.dense(B, W, b, "relu", isa)[1], (m, i, j, bad)
        huge = np.full((m, 19), np.finfo(dtype).max / 4, dtype=dtype)
        assert not K.dense(huge, np.abs(W), b, "identity", isa)[1]  # the sum overflows


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("isa", ISAS)
def test_dense_reads_a_range_of_columns_of_a_wider_w(isa, dtype):
    """Columns c0..c1 of a W whose rows lie ldw apart (a wide layer's column part) give
    the bits of the same columns copied out, whether the rows are far enough apart for
    fm_dense to pack its blocks (600 floats, 300 doubles: 2400 bytes) or not."""
    rng = rng_for("ldw", isa, str(dtype))
    for wide in (40, 600):
        W, b = layer(rng, 150, wide, dtype)
        for c0, c1 in [(0, wide // 2), (wide // 2, wide), (7, 30), (wide - 17, wide)]:
            part = np.ascontiguousarray(W[:, c0:c1])
            for m in (1, 8, 17, 40):
                A = rng.standard_normal((m, 150)).astype(dtype)
                Z, ok = K.dense(A, W[:, c0:c1], b[c0:c1], "relu", isa, pack_tail=False)
                assert ok
                copied, _ = K.dense(A, part, b[c0:c1], "relu", isa, pack_tail=False)
                assert np.array_equal(Z, copied), (wide, c0, c1, m)
                expected = R.bias_act(
                    A.astype(np.float64) @ part.astype(np.float64), b[c0:c1], "relu"
                )
                t = TOL[np.dtype(dtype)]
                np.testing.assert_allclose(Z, expected, rtol=t, atol=t * max(expected.max(), 1))


@pytest.mark.parametrize("dtype", DTYPES)
def test_dense_variants_agree(dtype):
    rng = rng_for("variants", str(dtype))
    W, b = layer(rng, 100, 70, dtype)
    A = rng.standard_normal((23, 100)).astype(dtype)
    results = [K.dense(A, W, b, "tanh", isa)[0] for isa in ISAS]
    for Z in results[1:]:
        np.testing.assert_allclose(Z, results[0], rtol=TOL[np.dtype(dtype)], atol=1e-6)


def test_dense_rejects_bad_arguments():
    W = np.ones((3, 4), np.float32)
    with pytest.raises(ValueError):
        K.dense(np.ones((2, 5), np.float32), W, np.ones(4, np.float32), "relu")
    with pytest.raises(ValueError):
        K.dense(np.ones((2, 3), np.float32), W, np.ones(3, np.float32), "relu")
    with pytest.raises(KeyError):
        K.dense(np.ones((2, 3), np.float32), W, np.ones(4, np.float32), "relu", "mmx")
    with pytest.raises(ValueError, match="identity"):  # no bias: the identity alone
        K.dense(np.ones((2, 3), np.float32), W, None, "relu")
    with pytest.raises(ValueError, match="Z0"):  # the sums to continue from: (m, n)
        K.dense(np.ones((2, 3), np.float32), W, None, "identity", Z0=np.ones((2, 5)))
    with pytest.raises(ValueError, match="contiguous"):  # rows may lie apart, columns not
        K.dense(np.ones((2, 3), np.float32), np.ones((3, 8), np.float32)[:, ::2], None, "identity")
    with pytest.raises(ValueError, match="pack_tail"):  # the packed tail reads W whole
        K.dense(
            np.ones((2, 3), np.float32),
            np.ones((3, 8), np.float32)[:, :4],
            np.ones(4, np.float32),
            "relu",
        )


# -- fm_dense_at: the weight gradient C (+)= A[:, i0:i1]^T @ D of training ----------------

# (k batch rows, columns of A, n columns of D): batch 1, odd widths, tails, several k blocks.
AT_SHAPES = [
    (1, 1, 1),
    (1, 13, 10),
    (7, 5, 16),
    (9, 33, 24),
    (32, 20, 33),
    (128, 64, 10),
    (700, 19, 130),
]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("k,m,n", AT_SHAPES)
@pytest.mark.parametrize("isa", ISAS)
def test_dense_at_matches_reference(isa, k, m, n, dtype):
    rng = rng_for("dense_at", isa, k, m, n, str(dtype))
    A = rng.standard_normal((k, m + 3)).astype(dtype)  # rows longer than the part used
    A[rng.random(A.shape) < 0.3] = 0
    D = rng.standard_normal((k, n)).astype(dtype)
    C0 = rng.standard_normal((m, n)).astype(dtype)
    t = TOL[np.dtype(dtype)]
    exact = A[:, 2 : 2 + m].astype(np.float64).T @ D.astype(np.float64)
    scale = max(float(np.abs(exact).max()), 1.0)
    for start in (None, C0):
        C, ok = K.dense_at(A, D, 2, 2 + m, start, isa)
        assert ok and C.dtype == dtype and C.shape == (m, n)
        expected = exact if start is None else exact + C0
        np.testing.assert_allclose(C, expected, rtol=t, atol=t * scale)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("isa", ISAS)
def test_dense_at_rows_do_not_depend_on_the_split(isa, dtype):
    """A row of the gradient has the same bits whichever part of the columns computes it."""
    rng = rng_for("at_split", isa, str(dtype))
    A = rng.standard_normal((300, 29)).astype(dtype)
    D = rng.standard_normal((300, 41)).astype(dtype)
    C, _ = K.dense_at(A, D, isa=isa)
    for start, stop in [(0, 1), (3, 4), (28, 29), (0, 7), (5, 13), (11, 29), (1, 28)]:
        part, _ = K.dense_at(A, D, start, stop, None, isa)
        assert np.array_equal(part, C[start:stop]), (start, stop)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("k,m,n", [(1, 13, 10), (40, 6, 16), (128, 50, 33), (700, 19, 130)])
@pytest.mark.parametrize("isa", ISAS)
def test_dense_at_skipping_zero_rows_keeps_every_bit(isa, k, m, n, dtype):
    """skip_zeros (the first layer's weight gradient) leaves out the rows of A that are +0
    in all of a tile's columns: the bits of the whole product, with or without C0, over
    one list block or several (k = 700), in tiles of every height."""
    rng = rng_for("at_skip", isa, k, m, n, str(dtype))
    A = rng.standard_normal((k, m)).astype(dtype)
    A[rng.random(k) < 0.6] = 0  # whole rows
    A[rng.random(A.shape) < 0.5] = 0
    A[: k // 2, m // 2 :] = 0  # half the rows in half the columns
    D = rng.standard_normal((k, n)).astype(dtype)
    C0 = rng.standard_normal((m, n)).astype(dtype)
    for start in (None, C0):
        whole, ok = K.dense_at(A, D, 0, m, start, isa)
        skipping, ok_skipping = K.dense_at(A, D, 0, m, start, isa, skip_zeros=True)
        assert ok and ok_skipping and np.array_equal(whole, skipping)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("isa", [isa for isa in ISAS if isa != "base"])  # base skips nothing
def test_dense_at_skipping_zero_rows_leaves_them_out(isa, dtype):
    """The rows skipped are not read from B: a NaN on a row of A that is zero throughout
    (24 columns: whole tiles of 6 and 8 rows) stays out of C, and a NaN on a row in use
    does not."""
    rng = rng_for("at_skipped", isa, str(dtype))
    A = rng.standard_normal((40, 24)).astype(dtype)
    A[::2] = 0
    D = rng.standard_normal((40, 16)).astype(dtype)
    D[4, 3] = np.nan
    C, ok = K.dense_at(A, D, isa=isa, skip_zeros=True)
    assert ok and np.isfinite(C).all()
    assert not K.dense_at(A, D, isa=isa)[1]
    D[5, 3] = np.nan
    assert not K.dense_at(A, D, isa=isa, skip_zeros=True)[1]


# W rows 2 KB apart or more: fm_dense packs B in blocks once 16 rows or more pass over it.
WIDE = [(37, 530), (300, 1040), (5, 513)]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("k,n", WIDE)
@pytest.mark.parametrize("isa", ISAS)
def test_wide_layers_packed_match_reference_and_unpacked_bits(isa, k, n, dtype):
    """The packed path (many rows) against the reference, and bit for bit against the
    rows computed alone (one row: read in place), for both entry points."""
    rng = rng_for("wide", isa, k, n, str(dtype))
    W, b = layer(rng, k, n, dtype)
    A = rng.standard_normal((40, k)).astype(dtype)
    t = TOL[np.dtype(dtype)]
    for pack_tail in (True, False):
        Z, ok = K.dense(A, W, b, "relu", isa, pack_tail)
        assert ok
        expected = R.bias_act(A.astype(np.float64) @ W.astype(np.float64), b, "relu")
        np.testing.assert_allclose(Z, expected, rtol=t, atol=t * max(np.abs(expected).max(), 1))
        for r in (0, 17, 39):
            one, _ = K.dense(np.ascontiguousarray(A[r : r + 1]), W, b, "relu", isa, pack_tail)
            assert np.array_equal(one, Z[r : r + 1])
    D = rng.standard_normal((k, n)).astype(dtype)  # the weight gradient A^T D, n wide
    Ak = rng.standard_normal((k, 40)).astype(dtype)
    C, ok = K.dense_at(Ak, D, isa=isa)
    exact = Ak.astype(np.float64).T @ D.astype(np.float64)
    np.testing.assert_allclose(C, exact, rtol=t, atol=t * max(np.abs(exact).max(), 1))
    for start, stop in [(0, 1), (5, 6), (39, 40)]:
        assert np.array_equal(K.dense_at(Ak, D, start, stop, None, isa)[0], C[start:stop])


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("isa", ISAS)
def test_dense_at_reports_nonfinite_results(isa, dtype):
    rng = rng_for("at_nonfinite", isa, str(dtype))
    A = rng.standard_normal((40, 9)).astype(dtype)
    D = rng.standard_normal((40, 21)).astype(dtype)
    assert K.dense_at(A, D, isa=isa)[1]
    for bad in (np.nan, np.inf):
        B = D.copy()
        B[17, 20] = bad  # in the tail columns
        assert not K.dense_at(A, B, isa=isa)[1]
        C0 = np.zeros((9, 21), dtype)
        C0[4, 3] = bad  # already in C: accumulate keeps it
        assert not K.dense_at(A, D, 0, 9, C0, isa)[1]


# -- whole networks through Network.forward ---------------------------------------------

NETWORKS = [(13, 5), (13, 33, 5), (20, 16, 7, 17, 9, 3), (784, 128, 64, 10)]


def random_model(rng, sizes, activation, dtype):
    weights = [
        (rng.standard_normal((a, b)) / np.sqrt(a)).astype(dtype) for a, b in zip(sizes, sizes[1:])
    ]
    biases = [(0.1 * rng.standard_normal(b)).astype(dtype) for b in sizes[1:]]
    return MLP.from_weights(weights, biases, activation=activation, dtype=dtype)


def reference_logits(model, X):
    acts = [model.activation] * (len(model.layer_sizes) - 2) + [model.output_activation]
    weights = [W.astype(np.float64) for W in model.weights]
    biases = [b.astype(np.float64) for b in model.biases]
    return R.forward(weights, biases, X.astype(np.float64), acts)[-1]


def forward(model, X, *, n_threads=1, max_block_rows=256, isa=None, softmax=True):
    out = np.empty((X.shape[0], model.layer_sizes[-1]), dtype=model.params_.dtype)
    model._network.forward(
        X,
        out,
        softmax=softmax,
        n_threads=n_threads,
        max_block_rows=max_block_rows,
        isa=-1 if isa is None else K.DENSE_ISAS[isa],
    )
    return out


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("sizes", NETWORKS, ids=lambda s: "-".join(map(str, s)))
@pytest.mark.parametrize("isa", ISAS)
def test_network_forward_matches_reference(isa, sizes, dtype):
    """1, 2 and 4 hidden layers (and none); every variant; several block sizes."""
    rng = rng_for("network", isa, sizes, str(dtype))
    model = random_model(rng, sizes, "relu", dtype)
    X = rng.random((75, sizes[0])).astype(dtype)
    expected = reference_logits(model, X)
    t = TOL[np.dtype(dtype)]
    scale = max(float(np.abs(expected).max()), 1.0)
    for block in (7, 32, 256):
        Z = forward(model, X, max_block_rows=block, isa=isa, softmax=False)
        np.testing.assert_allclose(Z, expected, rtol=t, atol=t * scale)
        P = forward(model, X, max_block_rows=block, isa=isa)
        np.testing.assert_allclose(P, R.softmax(expected), rtol=t, atol=t)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("activation", ["tanh", "sigmoid"])
def test_network_forward_other_activations(activation, dtype):
    rng = rng_for("acts", activation, str(dtype))
    model = random_model(rng, (30, 19, 17, 4), activation, dtype)
    X = rng.standard_normal((67, 30)).astype(dtype)
    expected = reference_logits(model, X)
    t = TOL[np.dtype(dtype)]
    np.testing.assert_allclose(
        model.decision_function(X), expected, rtol=t, atol=t * np.abs(expected).max()
    )


@pytest.mark.parametrize("dtype", DTYPES)
def test_network_forward_same_bits_for_any_threads_and_blocks(dtype):
    rng = rng_for("bits", str(dtype))
    model = random_model(rng, (50, 40, 20, 10), "relu", dtype)
    X = rng.random((1001, 50)).astype(dtype)
    first = forward(model, X)
    for n_threads in (1, 2, 3):
        for block in (1, 5, 64, 1024, 5000):
            assert np.array_equal(
                forward(model, X, n_threads=n_threads, max_block_rows=block), first
            )
        assert np.array_equal(model.predict_proba(X, n_threads=n_threads), first)
    # A row gives the same bits alone in a small batch as within the big one.
    assert np.array_equal(model.predict_proba(X[500:502]), first[500:502])


def test_prediction_follows_writes_into_params():
    """params_ is a public buffer: prediction reads it on every call (nothing cached)."""
    rng = rng_for("params")
    model = random_model(rng, (12, 20, 3), "relu", np.float32)
    X = rng.random((100, 12)).astype(np.float32)
    before = model.decision_function(X)
    model.params_[-3:] += 1.0  # the output bias
    np.testing.assert_allclose(model.decision_function(X), before + 1.0, rtol=1e-6, atol=1e-6)
    model.weights[-1][:, 2] = 0  # the tail panel (3 < 16 columns) of the last layer
    after = model.decision_function(X)
    np.testing.assert_allclose(after[:, 2], model.biases[-1][2], rtol=1e-6)


@pytest.mark.parametrize("isa", ISAS)
def test_network_forward_rejects_nan_in_any_block(isa):
    rng = rng_for("nan", isa)
    model = random_model(rng, (10, 9, 3), "relu", np.float32)
    X = rng.random((300, 10)).astype(np.float32)
    for row in (0, 131, 299):
        Y = X.copy()
        Y[row, 4] = np.nan
        with pytest.raises(ValueError, match="NaN"):
            forward(model, Y, n_threads=2, max_block_rows=64, isa=isa)


def test_network_forward_rejects_unavailable_variant():
    missing = [name for name in K.DENSE_ISAS if name not in ISAS]
    model = random_model(rng_for("isa"), (4, 3), "relu", np.float32)
    X = np.ones((5, 4), np.float32)
    for name in missing:
        with pytest.raises(ValueError):
            forward(model, X, isa=name)
    with pytest.raises(ValueError):
        forward(model, X, max_block_rows=0)
