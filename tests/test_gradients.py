"""The full backward pass: finite differences, and the fast path against the reference.

Models are float64 and built with MLP.from_weights, with weights scaled so that tanh and
sigmoid units are not saturated and ReLU units are neither all dead nor at their kink.
"""

from __future__ import annotations

import zlib

import numpy as np
import pytest

from fastmlp import MLP
from fastmlp import reference as R

N_FEATURES = 4
N_CLASSES = 3
HIDDEN = [(), (5,), (7, 3), (5, 4, 3, 6)]
ACTIVATIONS = ["relu", "tanh", "sigmoid"]
# (loss, output_activation)
LOSSES = [
    ("cross_entropy", None),
    ("mse", "sigmoid"),
    ("mse", None),
    ("squared_error", None),  # regression: real targets
    ("squared_error", "tanh"),
]
FD_STEP = 1e-6
FD_RTOL = 1e-6
RELU_MARGIN = 1e-4  # no ReLU pre-activation this close to 0 (FD would straddle the kink)
MAX_FD_PARAMS = 250


def rng_for(*key) -> np.random.Generator:
    return np.random.default_rng([zlib.crc32(repr(key).encode()), 777])


def random_net(rng, sizes, dtype=np.float64):
    """Weights ~ N(0, 1/fan_in) (unsaturated activations), biases ~ N(0, 0.3^2)."""
    weights = [
        (rng.standard_normal((a, b)) / np.sqrt(a)).astype(dtype)
        for a, b in zip(sizes[:-1], sizes[1:])
    ]
    biases = [(0.3 * rng.standard_normal(b)).astype(dtype) for b in sizes[1:]]
    return weights, biases


def activations_of(model: MLP) -> list[str]:
    n_hidden = len(model.layer_sizes) - 2
    return [model.activation] * n_hidden + [model.output_activation]


def pre_activations(weights, biases, X, acts):
    """Z_l = A_{l-1} W_l + b_l for every layer, in float64."""
    Z = []
    inp = X.astype(np.float64)
    for W, b, act in zip(weights, biases, acts):
        z = inp @ W.astype(np.float64) + b.astype(np.float64)
        Z.append(z)
        inp = R.activate(z, act)
    return Z


def kink_safe_rows(weights, biases, X, acts, margin=RELU_MARGIN):
    """Rows of X whose ReLU pre-activations all lie at least `margin` away from 0, with at
    least one live unit per ReLU layer (so the gradient reaches the first layer)."""
    ok = np.ones(X.shape[0], dtype=bool)
    for z, act in zip(pre_activations(weights, biases, X, acts), acts):
        if act == "relu":
            ok &= np.all(np.abs(z) > margin, axis=1) & np.any(z > 0, axis=1)
    return ok


def make_problem(hidden, activation, loss, output_activation, n, seed_key, dtype=np.float64):
    """A model and n kink-free input rows with labels (regression: targets); returns
    (model, X, y).

    Nets are redrawn (deterministically) until enough candidate rows are kink-free.
    """
    rng = rng_for(*seed_key)
    sizes = (N_FEATURES, *hidden, N_CLASSES)
    acts = [activation] * len(hidden) + [output_activation or "identity"]
    for _ in range(100):
        weights, biases = random_net(rng, sizes, dtype)
        X = rng.standard_normal((max(200, 10 * n), N_FEATURES)).astype(dtype)
        X = X[kink_safe_rows(weights, biases, X, acts)][:n]
        if X.shape[0] == n:
            break
    assert X.shape[0] == n, "could not find enough kink-free rows"
    model = MLP.from_weights(
        weights,
        biases,
        activation=activation,
        loss=loss,
        output_activation=output_activation,
        dtype=dtype,
    )
    assert activations_of(model) == acts
    if loss == "squared_error":
        return model, X, rng.standard_normal((n, N_CLASSES))
    y = rng.integers(0, N_CLASSES, n)
    y[: min(n, N_CLASSES)] = np.arange(min(n, N_CLASSES))  # every class present if n >= k
    return model, X, y


def flat_grad(dW, db):
    return np.concatenate([g.ravel() for pair in zip(dW, db) for g in pair])


def layout_indices(model):
    """Indices into params_ in the order of flat_grad (W_1, b_1, W_2, ...)."""
    slices = model._network.slices()
    return np.concatenate(
        [np.arange(w, b + model.layer_sizes[i + 1]) for i, (w, b) in enumerate(slices)]
    )


def fd_check(model, X, y, *, sample_weight=None, l2=0.0, seed=0):
    """Central differences of the fast loss against the fast gradient."""
    _, dW, db = model.loss_and_gradients(X, y, sample_weight=sample_weight, l2=l2, n_threads=1)
    analytic_all = flat_grad(dW, db)
    order = layout_indices(model)
    assert len(order) == model.params_.size
    pick = np.arange(len(order))
    if len(pick) > MAX_FD_PARAMS:
        pick = np.sort(np.random.default_rng(seed).choice(len(order), MAX_FD_PARAMS, False))
    p = model.params_
    numeric = np.empty(len(pick))
    for out, i in enumerate(pick):
        j = order[i]
        saved = p[j]
        p[j] = saved + FD_STEP
        f_plus = model.loss_and_gradients(X, y, sample_weight=sample_weight, l2=l2, n_threads=1)[0]
        p[j] = saved - FD_STEP
        f_minus = model.loss_and_gradients(X, y, sample_weight=sample_weight, l2=l2, n_threads=1)[
            0
        ]
        p[j] = saved
        numeric[out] = (f_plus - f_minus) / (2 * FD_STEP)
    analytic = analytic_all[pick]
    norm = np.linalg.norm(analytic)
    # Not trivially passing: the gradient is far from zero, in every layer's weights.
    assert norm > 1e-3
    for g in dW:
        assert np.linalg.norm(g) > 1e-6
    rel = np.linalg.norm(numeric - analytic) / norm
    assert rel < FD_RTOL, f"relative error {rel:.2e}"
    assert np.max(np.abs(numeric - analytic)) < FD_RTOL * np.max(np.abs(analytic))
    return analytic_all


# -- finite differences -----------------------------------------------------------------


@pytest.mark.parametrize("loss,output_activation", LOSSES)
@pytest.mark.parametrize("activation", ACTIVATIONS)
@pytest.mark.parametrize("hidden", HIDDEN, ids=str)
def test_finite_differences(hidden, activation, loss, output_activation):
    model, X, y = make_problem(
        hidden,
        activation,
        loss,
        output_activation,
        13,
        ("fd", hidden, activation, loss, output_activation),
    )
    fd_check(model, X, y)


@pytest.mark.parametrize("loss,output_activation", LOSSES)
@pytest.mark.parametrize("activation", ACTIVATIONS)
@pytest.mark.parametrize("hidden", [(5,), (5, 4, 3, 6)], ids=str)
def test_finite_differences_sample_weight_and_l2(hidden, activation, loss, output_activation):
    model, X, y = make_problem(
        hidden,
        activation,
        loss,
        output_activation,
        11,
        ("fd_w", hidden, activation, loss, output_activation),
    )
    w = rng_for("w", hidden).uniform(0.1, 3.0, X.shape[0])
    w[0] = 0.0  # a zero weight is allowed
    fd_check(model, X, y, sample_weight=w, l2=0.05)


@pytest.mark.parametrize("activation", ACTIVATIONS)
@pytest.mark.parametrize("weighted", [False, True])
def test_finite_differences_sample_weight(activation, weighted):
    model, X, y = make_problem(
        (7, 3), activation, "cross_entropy", None, 17, ("fd_sw", activation)
    )
    w = rng_for("sw", activation).uniform(0.0, 4.0, X.shape[0]) if weighted else None
    fd_check(model, X, y, sample_weight=w)


@pytest.mark.parametrize("loss,output_activation", LOSSES)
@pytest.mark.parametrize("activation", ACTIVATIONS)
@pytest.mark.parametrize("hidden", [(), (7, 3), (5, 4, 3, 6)], ids=str)
def test_finite_differences_single_sample(hidden, activation, loss, output_activation):
    model, X, y = make_problem(
        hidden,
        activation,
        loss,
        output_activation,
        1,
        ("fd_one", hidden, activation, loss, output_activation),
    )
    y[0] = 1
    fd_check(model, X, y)


@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_finite_differences_larger_model_subset(activation):
    """A wider model (1,000+ parameters): a random subset of 250 of them."""
    rng = rng_for("wide", activation)
    sizes = (10, 33, 17, 7)
    weights, biases = random_net(rng, sizes)
    model = MLP.from_weights(weights, biases, activation=activation)
    assert model.params_.size > 1000
    X = rng.standard_normal((60, 10))
    X = X[kink_safe_rows(weights, biases, X, activations_of(model))][:20]
    assert X.shape[0] == 20
    y = rng.integers(0, 7, 20)
    fd_check(model, X, y, sample_weight=rng.uniform(0.5, 2.0, 20), l2=0.01, seed=3)


# -- l2 ---------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("loss,output_activation", LOSSES)
@pytest.mark.parametrize("hidden", [(), (5, 4, 3, 6)], ids=str)
def test_l2_adds_exactly_l2_times_w(hidden, loss, output_activation, dtype):
    model, X, y = make_problem(
        hidden, "tanh", loss, output_activation, 19, ("l2", hidden, loss), dtype=dtype
    )
    l2 = 0.37
    f0, dW0, db0 = model.loss_and_gradients(X, y, n_threads=1)
    f1, dW1, db1 = model.loss_and_gradients(X, y, l2=l2, n_threads=1)
    tol = 1e-12 if dtype == np.float64 else 1e-5
    penalty = 0.5 * l2 * sum(float(np.sum(W.astype(np.float64) ** 2)) for W in model.weights)
    assert penalty > 0.1
    assert f1 == pytest.approx(f0 + penalty, rel=tol, abs=0)
    for W, g0, g1 in zip(model.weights, dW0, dW1):
        scale = np.max(np.abs(g0)) + l2 * np.max(np.abs(W))
        np.testing.assert_allclose(g1 - g0, l2 * W, rtol=0, atol=4 * tol * scale)
    for g0, g1 in zip(db0, db1):
        assert np.array_equal(g0, g1)


# -- fast path against the reference ----------------------------------------------------


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("options", ["plain", "weighted", "l2", "both"])
@pytest.mark.parametrize("loss,output_activation", LOSSES)
@pytest.mark.parametrize("activation", ACTIVATIONS)
@pytest.mark.parametrize("hidden", HIDDEN, ids=str)
def test_fast_equals_reference(hidden, activation, loss, output_activation, options, dtype):
    key = ("parity", hidden, activation, loss, output_activation, options, str(dtype))
    model, X, y = make_problem(hidden, activation, loss, output_activation, 37, key, dtype)
    rng = rng_for(*key, "w")
    w = rng.uniform(0.0, 3.0, 37).astype(dtype) if options in ("weighted", "both") else None
    l2 = 0.02 if options in ("l2", "both") else 0.0
    f, dW, db = model.loss_and_gradients(X, y, sample_weight=w, l2=l2, n_threads=1)
    acts = activations_of(model)
    # The reference in float64 on the model's own (possibly float32) parameters.
    f_ref, dW_ref, db_ref = R.loss_and_gradients(
        [W.astype(np.float64) for W in model.weights],
        [b.astype(np.float64) for b in model.biases],
        X.astype(np.float64),
        y,
        acts,
        loss,
        l2,
        None if w is None else w.astype(np.float64),
    )
    tol = 1e-12 if dtype == np.float64 else 1e-5
    assert f == pytest.approx(f_ref, rel=tol, abs=0)
    assert len(dW) == len(dW_ref) == len(hidden) + 1
    scale = max(np.max(np.abs(g)) for g in dW_ref + db_ref)
    assert scale > 1e-4
    for got, want in zip(dW + db, dW_ref + db_ref):
        assert got.shape == want.shape and got.dtype == np.dtype(dtype)
        np.testing.assert_allclose(got, want, rtol=tol, atol=tol * scale)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("loss", ["cross_entropy", "squared_error"])
@pytest.mark.parametrize("n", [1, 2, 3, 130])
def test_fast_equals_reference_threads(n, loss, dtype):
    """Any thread count (row blocks and parameter parts) gives the same gradient."""
    model, X, y = make_problem((7, 3), "tanh", loss, None, n, ("thr", n), dtype)
    w = rng_for("thr_w", n).uniform(0.5, 2.0, n)
    results = [
        model.loss_and_gradients(X, y, sample_weight=w, l2=0.01, n_threads=t) for t in (1, 2, 3)
    ]
    f_ref, dW_ref, db_ref = R.loss_and_gradients(
        [W.astype(np.float64) for W in model.weights],
        [b.astype(np.float64) for b in model.biases],
        X.astype(np.float64),
        y,
        activations_of(model),
        loss,
        0.01,
        w,
    )
    tol = 1e-12 if dtype == np.float64 else 1e-5
    for f, dW, db in results:
        assert f == pytest.approx(f_ref, rel=tol, abs=0)
        scale = max(np.max(np.abs(g)) for g in dW_ref + db_ref)
        for got, want in zip(dW + db, dW_ref + db_ref):
            np.testing.assert_allclose(got, want, rtol=tol, atol=tol * scale)


def test_string_labels_gradient_matches_codes():
    """Labels go through the model's classes: string labels give the code's gradient."""
    model, X, y = make_problem((5,), "tanh", "cross_entropy", None, 9, ("labels",))
    classes = np.array(["ant", "bee", "cat"])
    named = MLP.from_weights(model.weights, model.biases, activation="tanh", classes=classes)
    f1, dW1, db1 = model.loss_and_gradients(X, y, n_threads=1)
    f2, dW2, db2 = named.loss_and_gradients(X, classes[y], n_threads=1)
    assert f1 == f2
    for a, b in zip(dW1 + db1, dW2 + db2):
        assert np.array_equal(a, b)
    assert np.linalg.norm(flat_grad(dW1, db1)) > 1e-3
