"""Parity with the reference at widths that cross the kernels' tile edges.

The compiled kernels work on register tiles (16 columns per 64-byte panel of float32, 8 of
float64; 3, 6 or 8 rows per strip; 16-row blocks in training) and handle what is left over
separately, so a layer of 15, 16, 17, 31, 33, 100 or 130 units runs different code from one
of 5. Each test here holds the public API to ``fastmlp.reference`` at those widths, as input,
hidden and output widths, in float32 and float64, with one and several hidden layers, for
one row and odd numbers of rows:

- forward: ``MLP.decision_function`` against ``reference.forward``;
- gradients: ``MLP.loss_and_gradients`` against ``reference.loss_and_gradients``, and
  (float64, tanh) against central finite differences of the fast objective;
- training: three mini-batch steps of ``fastmlp.train`` against three
  ``reference.train_step`` calls.

The reference always runs in float64 on the same (float32 or float64) inputs, so the only
difference allowed is rounding. Tolerances are relative to the largest value of each compared
array: a wrong or shifted column is off by the size of the values themselves, and fails.
"""

from __future__ import annotations

import zlib

import numpy as np
import pytest

import fastmlp
from fastmlp import MLP, _trainer
from fastmlp import reference as R

WIDTHS = (15, 16, 17, 31, 33, 100, 130)
DTYPES = (np.float32, np.float64)
# Largest rounding difference allowed, relative to the largest magnitude of the compared
# array: about 10x (float32) and 100x (float64) the largest seen for forward passes and
# gradients (4e-7 and 1e-15), and 3x and 100x for the updates of three steps (6e-5 and
# 1e-12: float32 weights round at each step, and Adam magnifies the rounding of small
# gradients). A wrong, shifted or skipped column is off by ~100% of the values.
TOL = {np.float32: 5e-6, np.float64: 1e-13}
STEP_TOL = {np.float32: 2e-4, np.float64: 1e-10}
# No ReLU pre-activation of a test row lies closer to 0 than this: float32 rounding could
# otherwise move it across the kink, and the two sides would rightly disagree.
RELU_MARGIN = 1e-3


def rng_for(*key) -> np.random.Generator:
    return np.random.default_rng([zlib.crc32(repr(key).encode()), 1616])


def architectures(width: int) -> dict[str, tuple[int, ...]]:
    """Layer sizes that put `width` at each place a tile edge matters.

    - "hidden": one hidden layer of `width` units, 10 outputs (MNIST's 10-column tail);
    - "deep": `width` inputs and a second hidden layer of `width` units between layers of
      33 and 17, so `width` is the inner (k) dimension of two products and the output width
      of one;
    - "outputs": `width` outputs (classes) after a hidden layer of 17.
    """
    return {
        "hidden": (23, width, 10),
        "deep": (width, 33, width, 17),
        "outputs": (13, 17, width),
    }


SHAPES = [(w, name) for w in WIDTHS for name in ("hidden", "deep", "outputs")]


def shape_id(shape) -> str:
    width, name = shape
    return f"{name}-{'-'.join(map(str, architectures(width)[name]))}"


def dtype_id(dtype) -> str:
    return np.dtype(dtype).name


def make_model(rng, sizes, activation, dtype) -> MLP:
    """Weights ~ N(0, 1/fan_in), biases ~ N(0, 0.1^2): unsaturated units, O(1) outputs."""
    weights = [rng.standard_normal((a, b)) / np.sqrt(a) for a, b in zip(sizes[:-1], sizes[1:])]
    biases = [0.1 * rng.standard_normal(b) for b in sizes[1:]]
    return MLP.from_weights(
        [W.astype(dtype) for W in weights],
        [b.astype(dtype) for b in biases],
        activation=activation,
        dtype=dtype,
    )


def params64(model: MLP) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """The model's parameters as float64 copies, for the reference."""
    return (
        [W.astype(np.float64) for W in model.weights],
        [b.astype(np.float64) for b in model.biases],
    )


def activations_of(model: MLP) -> list[str]:
    return [model.activation] * (len(model.layer_sizes) - 2) + [model.output_activation]


def clear_of_kinks(model: MLP, X: np.ndarray) -> np.ndarray:
    """Rows of X whose ReLU pre-activations all lie at least RELU_MARGIN from 0."""
    weights, biases = params64(model)
    ok = np.ones(X.shape[0], dtype=bool)
    inp = X.astype(np.float64)
    for W, b, act in zip(weights, biases, activations_of(model)):
        z = inp @ W + b
        if act == "relu":
            ok &= np.all(np.abs(z) >= RELU_MARGIN, axis=1)
        inp = R.activate(z, act)
    return ok


def draw_rows(rng, model: MLP, n: int) -> np.ndarray:
    """n input rows in the model's dtype, standard normal, clear of ReLU kinks."""
    n_in = model.layer_sizes[0]
    for _ in range(20):
        X = rng.standard_normal((4 * n + 8, n_in)).astype(model.dtype)
        X = X[clear_of_kinks(model, X)]
        if X.shape[0] >= n:
            return np.ascontiguousarray(X[:n])
    raise AssertionError("could not draw rows clear of the ReLU kinks")  # pragma: no cover


def assert_close(got, want, dtype, what: str, tol=TOL) -> None:
    """|got - want| <= tol * max|want|, elementwise; want must not be all zero."""
    want = np.asarray(want, dtype=np.float64)
    scale = float(np.max(np.abs(want)))
    assert scale > 0, f"{what}: the reference is all zero, the comparison would prove nothing"
    assert got.shape == want.shape, f"{what}: shape {got.shape}, expected {want.shape}"
    np.testing.assert_allclose(got, want, rtol=0, atol=tol[dtype] * scale, err_msg=what)


# -- forward ------------------------------------------------------------------------------

# 1 row (its own kernel), odd row counts below and above a tile strip, 64 rows (the most
# that run on the calling thread), 65 (the first split into parallel blocks) and 300 (more
# than one 256-row block).
FORWARD_ROWS = (1, 7, 13, 64, 65, 300)


@pytest.mark.parametrize("n_rows", FORWARD_ROWS, ids=lambda n: f"{n}rows")
@pytest.mark.parametrize("dtype", DTYPES, ids=dtype_id)
@pytest.mark.parametrize("shape", SHAPES, ids=shape_id)
def test_forward_matches_reference(shape, dtype, n_rows):
    width, name = shape
    rng = rng_for("forward", shape, dtype_id(dtype), n_rows)
    # ReLU for the fused bias + ReLU tiles; tanh on "deep" for the unfused path.
    activation = "tanh" if name == "deep" and width % 2 else "relu"
    model = make_model(rng, architectures(width)[name], activation, dtype)
    X = draw_rows(rng, model, n_rows)
    weights, biases = params64(model)
    want = R.forward(weights, biases, X.astype(np.float64), activations_of(model))[-1]
    for n_threads in (1, 2):
        got = model.decision_function(X, n_threads=n_threads)
        assert got.dtype == dtype
        assert_close(got, want, dtype, f"logits, {n_threads} threads")
    # predict_proba goes through the same pass and the softmax.
    assert_close(model.predict_proba(X), R.softmax(want), dtype, "probabilities")


# -- gradients ----------------------------------------------------------------------------

GRADIENT_ROWS = (1, 13, 33)


@pytest.mark.parametrize("options", ["plain", "l2+weights"])
@pytest.mark.parametrize("n_rows", GRADIENT_ROWS, ids=lambda n: f"{n}rows")
@pytest.mark.parametrize("dtype", DTYPES, ids=dtype_id)
@pytest.mark.parametrize("shape", SHAPES, ids=shape_id)
def test_gradients_match_reference(shape, dtype, n_rows, options):
    width, name = shape
    rng = rng_for("gradients", shape, dtype_id(dtype), n_rows, options)
    sizes = architectures(width)[name]
    model = make_model(rng, sizes, "relu", dtype)
    X = draw_rows(rng, model, n_rows)
    y = rng.integers(0, sizes[-1], n_rows)
    l2 = 0.03 if options != "plain" else 0.0
    w = rng.uniform(0.2, 3.0, n_rows).astype(dtype) if options != "plain" else None
    weights, biases = params64(model)
    f_ref, dW_ref, db_ref = R.loss_and_gradients(
        weights,
        biases,
        X.astype(np.float64),
        y,
        activations_of(model),
        "cross_entropy",
        l2=l2,
        sample_weight=None if w is None else w.astype(np.float64),
    )
    for n_threads in (1, 2):
        f, dW, db = model.loss_and_gradients(X, y, sample_weight=w, l2=l2, n_threads=n_threads)
        assert f == pytest.approx(f_ref, rel=TOL[dtype], abs=0)
        for layer, (got, want) in enumerate(zip(dW, dW_ref)):
            assert_close(got, want, dtype, f"dW[{layer}], {n_threads} threads")
        for layer, (got, want) in enumerate(zip(db, db_ref)):
            assert_close(got, want, dtype, f"db[{layer}], {n_threads} threads")


FD_STEP = 1e-6
FD_PARAMS_PER_ARRAY = 6


def check_finite_differences(rng, model: MLP, X, y, **options) -> None:
    """Central differences of the fast objective at FD_PARAMS_PER_ARRAY entries of every
    weight and bias array against ``loss_and_gradients``."""
    _, dW, db = model.loss_and_gradients(X, y, n_threads=1, **options)
    for params, grads in ((model.weights, dW), (model.biases, db)):
        for layer, (p, g) in enumerate(zip(params, grads)):
            # Spread the checked entries over the array, the last column always among them
            # (a tile's leftover columns are handled apart from the full panels).
            flat = rng.choice(p.size, FD_PARAMS_PER_ARRAY - 1, replace=False).tolist()
            flat.append(p.size - 1)
            for i in flat:
                idx = np.unravel_index(i, p.shape)
                saved = p[idx]
                p[idx] = saved + FD_STEP
                f_plus, _, _ = model.loss_and_gradients(X, y, n_threads=1, **options)
                p[idx] = saved - FD_STEP
                f_minus, _, _ = model.loss_and_gradients(X, y, n_threads=1, **options)
                p[idx] = saved
                numeric = (f_plus - f_minus) / (2 * FD_STEP)
                assert g[idx] == pytest.approx(numeric, rel=1e-5, abs=1e-8), (layer, idx)


@pytest.mark.parametrize("shape", SHAPES, ids=shape_id)
def test_gradients_match_finite_differences(shape):
    """float64, tanh (smooth, so central differences are accurate to ~1e-9)."""
    width, name = shape
    rng = rng_for("fd", shape)
    sizes = architectures(width)[name]
    model = make_model(rng, sizes, "tanh", np.float64)
    X = rng.standard_normal((13, sizes[0]))
    y = rng.integers(0, sizes[-1], 13)
    check_finite_differences(rng, model, X, y, l2=0.01)


# -- whole training steps -----------------------------------------------------------------

STEP_ROWS = (1, 13, 33)
STEP_SHAPES = [(w, name) for w in WIDTHS for name in ("hidden", "deep")]


def three_steps(model: MLP, X, y, batch: int, optimizer: str, l2: float, n_threads: int):
    """Three steps of fastmlp.train on `model` and of reference.train_step on a float64
    copy; returns the reference's (weights, biases)."""
    # Adam divides by sqrt(v) + eps: for a gradient near 0 float32 rounding of the gradient
    # is magnified up to lr / eps times. eps=1e-4 in float32 bounds that below the
    # tolerance; float64 keeps the default.
    eps = 1e-4 if model.dtype == np.float32 else 1e-8
    hyper = dict(lr=0.01 if optimizer == "adam" else 0.1, momentum=0.9, l2=l2, eps=eps)
    weights, biases = params64(model)
    state: dict = {}
    for step in range(3):
        rows = slice(step * batch, (step + 1) * batch)
        R.train_step(
            weights,
            biases,
            state,
            X[rows].astype(np.float64),
            y[rows],
            activations_of(model),
            optimizer=optimizer,
            **hyper,
        )
    before = model.params_.copy()
    out = fastmlp.train(
        X,
        y,
        init=model,
        epochs=1,
        batch_size=batch,
        shuffle=False,
        optimizer=optimizer,
        seed=0,
        n_threads=n_threads,
        **hyper,
    )
    assert out is model
    # Not trivially passing: training moved the weights well beyond the tolerance.
    assert np.max(np.abs(model.params_ - before)) > 1e-3
    return weights, biases


def assert_updates(model: MLP, dtype, start, want) -> None:
    """The model's updates since `start` ((weights, biases), float64) match the reference's
    `want` minus `start`. Updates are compared, not weights: they are what the steps
    computed, and a tolerance relative to the weights would be loose for updates of ~0.03."""
    for kind, now, before, ref in zip("Wb", (model.weights, model.biases), start, want):
        for layer, (got, a, b) in enumerate(zip(now, before, ref)):
            what = f"update of {kind}[{layer}]"
            assert_close(got.astype(np.float64) - a, b - a, dtype, what, STEP_TOL)


@pytest.mark.parametrize("optimizer", ["adam", "sgd"])
@pytest.mark.parametrize("batch", STEP_ROWS, ids=lambda n: f"batch{n}")
@pytest.mark.parametrize("dtype", DTYPES, ids=dtype_id)
@pytest.mark.parametrize("shape", STEP_SHAPES, ids=shape_id)
def test_three_training_steps_match_reference(shape, dtype, batch, optimizer):
    width, name = shape
    rng = rng_for("steps", shape, dtype_id(dtype), batch, optimizer)
    sizes = architectures(width)[name]
    model = make_model(rng, sizes, "relu", dtype)
    X = draw_rows(rng, model, 3 * batch)
    y = rng.integers(0, sizes[-1], 3 * batch)
    l2 = 0.01 if batch == 13 else 0.0
    # Two threads on the batch of three row blocks: the partition does not depend on them.
    n_threads = 2 if batch == 33 else 1
    start_w, start_b = params64(model)
    weights, biases = three_steps(model, X, y, batch, optimizer, l2, n_threads)
    assert_updates(model, dtype, (start_w, start_b), (weights, biases))


# -- layers beyond L2 ---------------------------------------------------------------------

# A W of more than 512 KB trains on OpenBLAS's GEMM (forward, weight gradient and deltas)
# or on fm_dense's tiles, by the CPU (_trainer.wide_on_blas); every test here runs both
# (the wide_gemm fixture). These put such layers first, between narrow ones and last
# (1,100 classes); float64 crosses the limit at half the size, so the first layer of the
# second shape is beyond L2 in float64 alone.
# 300-450-7: a wide first layer; 300-450-460-7: two wide leading layers (forward and the
# deltas between them by columns, _trainer.wide_columns); 150-520-530-9: a wide second
# layer after a narrow one (both wide in float64); 9-130-1100: a wide last layer.
BLAS_SHAPES = ((300, 450, 7), (300, 450, 460, 7), (150, 520, 530, 9), (9, 130, 1100))
# 70 rows: blocks of half the batch, as wide networks take them.
BLAS_ROWS = (1, 13, 70)
# Left out: 300-450-460-7 in float32 at batch 1, where one weight of W[1] in 207,000 moved
# 3x the tolerance from the reference, with and without wide_columns: D_2 sums 7 terms that
# nearly cancel for that element, and Adam passes the gradient's relative error on.
BLAS_STEP_CASES = [
    (sizes, dtype, batch)
    for sizes in BLAS_SHAPES
    for dtype in DTYPES
    for batch in BLAS_ROWS
    if (sizes, dtype, batch) != ((300, 450, 460, 7), np.float32, 1)
]


def blas_id(sizes) -> str:
    return "-".join(map(str, sizes))


@pytest.fixture(params=["blas", "fm_dense"])
def wide_gemm(request, monkeypatch):
    """Run the layers beyond L2 on OpenBLAS, then on fm_dense, whatever the CPU."""
    monkeypatch.setattr(_trainer, "WIDE_GEMM", request.param)
    assert _trainer.wide_on_blas() == (request.param == "blas")
    return request.param


def test_wide_gemm_setting_is_checked(monkeypatch):
    monkeypatch.setattr(_trainer, "WIDE_GEMM", "mkl")
    with pytest.raises(ValueError, match="WIDE_GEMM"):
        _trainer.wide_on_blas()


@pytest.mark.parametrize(
    "sizes,dtype,batch",
    BLAS_STEP_CASES,
    ids=[f"{blas_id(c[0])}-{dtype_id(c[1])}-batch{c[2]}" for c in BLAS_STEP_CASES],
)
def test_wide_layers_three_training_steps_match_reference(sizes, dtype, batch, wide_gemm):
    rng = rng_for("blas steps", sizes, dtype_id(dtype), batch)
    model = make_model(rng, sizes, "relu", dtype)
    assert max(W.nbytes for W in model.weights) > 512 * 1024
    X = draw_rows(rng, model, 3 * batch)
    y = rng.integers(0, sizes[-1], 3 * batch)
    l2 = 0.01 if batch == 13 else 0.0
    start_w, start_b = params64(model)
    weights, biases = three_steps(model, X, y, batch, "adam", l2, n_threads=2)
    assert_updates(model, dtype, (start_w, start_b), (weights, biases))


@pytest.mark.parametrize("dtype", DTYPES, ids=dtype_id)
@pytest.mark.parametrize("sizes", BLAS_SHAPES, ids=blas_id)
def test_wide_layers_gradients_match_reference(sizes, dtype, wide_gemm):
    rng = rng_for("blas gradients", sizes, dtype_id(dtype))
    model = make_model(rng, sizes, "relu", dtype)
    X = draw_rows(rng, model, 37)
    y = rng.integers(0, sizes[-1], 37)
    weights, biases = params64(model)
    f_ref, dW_ref, db_ref = R.loss_and_gradients(
        weights, biases, X.astype(np.float64), y, activations_of(model), "cross_entropy", l2=0.02
    )
    f, dW, db = model.loss_and_gradients(X, y, l2=0.02, n_threads=2)
    assert f == pytest.approx(f_ref, rel=TOL[dtype], abs=0)
    for layer, (got, want) in enumerate(zip(dW, dW_ref)):
        assert_close(got, want, dtype, f"dW[{layer}]")
    for layer, (got, want) in enumerate(zip(db, db_ref)):
        assert_close(got, want, dtype, f"db[{layer}]")


def test_wide_layers_gradients_match_finite_differences(wide_gemm):
    """float64, tanh; 300 x 450 and the 450 x 7 after it."""
    rng = rng_for("blas fd")
    model = make_model(rng, (300, 450, 7), "tanh", np.float64)
    X = rng.standard_normal((13, 300))
    y = rng.integers(0, 7, 13)
    check_finite_differences(rng, model, X, y)


# A wide second layer; a wide first layer (its forward split over its columns), alone and
# with LayerNorm after it; with BatchNorm (in the row phase, no wide_columns); two wide
# leading layers.
BLAS_THREAD_CASES = (
    (150, (520, 530), None),
    (300, (450, 20), None),
    (300, (450, 20), "layer"),
    (150, (520, 530), "batch"),
    (300, (450, 460), None),
)


@pytest.mark.parametrize("dtype", DTYPES, ids=dtype_id)
@pytest.mark.parametrize("case", BLAS_THREAD_CASES, ids=lambda c: f"{c[0]}-{c[1]}-{c[2]}")
def test_wide_layers_train_bitwise_for_any_thread_count(case, dtype, wide_gemm):
    n_features, hidden, normalization = case
    rng = rng_for("blas threads", case, dtype_id(dtype))
    X = rng.standard_normal((280, n_features)).astype(dtype)
    y = rng.integers(0, 9, 280)
    models = [
        fastmlp.train(
            X,
            y,
            hidden=hidden,
            epochs=2,
            batch_size=70,
            dropout=0.1,
            normalization=normalization,
            seed=3,
            dtype=dtype,
            n_threads=n,
        )
        for n in (1, 2)
    ]
    assert np.array_equal(models[0].params_, models[1].params_)
