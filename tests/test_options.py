"""Training options of issue 13: AdamW, label smoothing, per-layer activations, the
regression losses huber / absolute_error / poisson, and the estimators' validation sets.

Each is held to ``fastmlp.reference`` (kernels, gradients and whole steps), checked by
finite differences where it changes the gradient, and run through saving, the exports
and the scikit-learn estimators.
"""

from __future__ import annotations

import warnings
import zlib

import numpy as np
import pytest

import fastmlp
from fastmlp import MLP
from fastmlp import _kernels as K
from fastmlp import reference as R
from fastmlp.persistence import load, save

DTYPES = [np.float32, np.float64]
WIDTHS = [1, 3, 7, 10, 17, 33, 129]


def rng_for(*key) -> np.random.Generator:
    return np.random.default_rng([zlib.crc32(repr(key).encode()), 1313])


def tol(dtype) -> float:
    return 1e-12 if dtype == np.float64 else 1e-5


def acts_of(model: MLP) -> list[str]:
    return [*model.activations, model.output_activation]


def random_model(rng, sizes, activation, dtype, loss="cross_entropy", **kw):
    weights = [rng.standard_normal((a, b)) / np.sqrt(a) for a, b in zip(sizes[:-1], sizes[1:])]
    biases = [0.1 * rng.standard_normal(b) for b in sizes[1:]]
    return MLP.from_weights(
        [W.astype(dtype) for W in weights],
        [b.astype(dtype) for b in biases],
        activation=activation,
        loss=loss,
        dtype=dtype,
        **kw,
    )


def steps_both(model, X, y, B, steps, *, train_opts, ref_opts, loss=None):
    """``steps`` mini-batches of B rows through fastmlp.train (on ``model``) and through
    reference.train_step (on float64 copies); returns the reference weights and biases."""
    ref_w = [W.astype(np.float64) for W in model.weights]
    ref_b = [b.astype(np.float64) for b in model.biases]
    state: dict = {}
    for step in range(steps):
        idx = np.arange(step * B, (step + 1) * B)
        R.train_step(
            ref_w,
            ref_b,
            state,
            X[idx].astype(np.float64),
            y[idx],
            acts_of(model),
            loss=loss or model.loss,
            **ref_opts,
        )
    start = model.params_.copy()
    fastmlp.train(
        X[: steps * B],
        y[: steps * B],
        init=model,
        epochs=1,
        batch_size=B,
        shuffle=False,
        seed=0,
        n_threads=1,
        **train_opts,
    )
    assert np.max(np.abs(model.params_ - start)) > 1e-3  # the weights moved
    return ref_w, ref_b


def assert_weights_close(model, ref_w, ref_b, rtol):
    scale = max(np.max(np.abs(p)) for p in ref_w + ref_b)
    for got, want in zip(model.weights + model.biases, ref_w + ref_b):
        np.testing.assert_allclose(got, want, rtol=rtol, atol=rtol * scale)


def blobs(rng, n, n_features=6, k=3, dtype=np.float64):
    centers = 2.0 * rng.standard_normal((k, n_features))
    y = np.arange(n) % k
    rng.shuffle(y)
    return (centers[y] + rng.standard_normal((n, n_features))).astype(dtype), y


# -- AdamW -------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("size", WIDTHS)
@pytest.mark.parametrize("weight_decay", [0.01, 0.5])
def test_adamw_kernel_matches_reference(size, weight_decay, dtype):
    rng = rng_for("adamw", size, weight_decay, dtype)
    p = rng.standard_normal(size).astype(dtype)
    m, v = np.zeros(size, dtype), np.zeros(size, dtype)
    p_ref, m_ref, v_ref = (x.astype(np.float64) for x in (p, m, v))
    plain = p_ref.copy()
    for t in range(1, 6):
        g = rng.standard_normal(size).astype(dtype)
        K.adam(p, g, m, v, 0.05, 0.9, 0.99, 1e-8, t, weight_decay)
        p_ref, m_ref, v_ref = R.adamw(
            p_ref, g.astype(np.float64), m_ref, v_ref, 0.05, 0.9, 0.99, 1e-8, t, weight_decay
        )
        plain = R.adam(plain, g.astype(np.float64), m_ref, v_ref, 0.05, 0.9, 0.99, 1e-8, t)[0]
        np.testing.assert_allclose(p, p_ref, rtol=10 * tol(dtype), atol=10 * tol(dtype))
    # The decay made a difference the tolerance sees.
    assert np.max(np.abs(p_ref - plain)) > 1e-3


def test_adamw_reference_is_pytorchs_order():
    """torch.optim.AdamW: p *= 1 - lr * wd, then the Adam step, written out by hand."""
    p, g = np.array([1.0, -2.0, 0.5]), np.array([0.3, 0.1, -0.2])
    lr, b1, b2, eps, wd = 0.1, 0.9, 0.999, 1e-8, 0.2
    m, v = (1 - b1) * g, (1 - b2) * g * g
    denom = np.sqrt(v) / np.sqrt(1 - b2) + eps
    expected = p * (1 - lr * wd) - lr / (1 - b1) * m / denom
    got = R.adamw(p, g, np.zeros(3), np.zeros(3), lr, b1, b2, eps, 1, wd)[0]
    np.testing.assert_allclose(got, expected, rtol=1e-14)


@pytest.mark.may_skip("torch is optional (not in CI); the reference test above is required")
def test_adamw_reference_matches_torch():
    torch = pytest.importorskip("torch")
    rng = rng_for("torch-adamw")
    p0 = rng.standard_normal(7)
    grads = rng.standard_normal((4, 7))
    param = torch.nn.Parameter(torch.tensor(p0, dtype=torch.float64))
    opt = torch.optim.AdamW([param], lr=0.05, betas=(0.9, 0.99), eps=1e-8, weight_decay=0.3)
    p, m, v = p0.copy(), np.zeros(7), np.zeros(7)
    for t, g in enumerate(grads, start=1):
        param.grad = torch.tensor(g, dtype=torch.float64)
        opt.step()
        p, m, v = R.adamw(p, g, m, v, 0.05, 0.9, 0.99, 1e-8, t, 0.3)
    np.testing.assert_allclose(param.detach().numpy(), p, rtol=1e-13)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(
    "hidden,activation,loss,B",
    [((), "tanh", "cross_entropy", 17), ((7, 3), "relu", "cross_entropy", 1),
     ((5, 4, 3, 6), "tanh", "cross_entropy", 33), ((9,), "tanh", "squared_error", 10)],
)  # fmt: skip
def test_adamw_steps_match_reference(hidden, activation, loss, B, dtype):
    rng = rng_for("adamw-steps", hidden, loss, B, dtype)
    model = random_model(rng, (5, *hidden, 4), activation, dtype, loss)
    X = rng.standard_normal((3 * B, 5)).astype(dtype)
    y = rng.standard_normal((3 * B, 4)) if loss == "squared_error" else rng.integers(0, 4, 3 * B)
    hyper = dict(lr=0.01, betas=(0.9, 0.99), eps=1e-8, weight_decay=0.5, l2=0.01)
    ref_w, ref_b = steps_both(
        model,
        X,
        y,
        B,
        3,
        train_opts=dict(optimizer="adamw", **hyper),
        ref_opts=dict(optimizer="adamw", **hyper),
    )
    assert model._optimizer["name"] == "adamw" and model._optimizer["t"] == 3
    assert_weights_close(model, ref_w, ref_b, 1e-10 if dtype == np.float64 else 1e-4)


def test_adamw_decays_biases_and_weights_without_gradient():
    """A zero loss gradient (zero learning signal) leaves only the decay: every parameter,
    biases included, shrinks by (1 - lr * wd) per step."""
    X = np.zeros((4, 3))
    Y = np.zeros((4, 2))
    model = MLP((3, 2), None, loss="squared_error", dtype=np.float64)
    model.params_[...] = 0.0
    model.biases[0][...] = 0.0  # output 0 = target: zero gradient for every parameter
    model.weights[0][...] = 1.0
    w0 = model.params_.copy()
    fastmlp.train(X, Y, init=model, optimizer="adamw", weight_decay=0.5, lr=0.1, epochs=2,
                  batch_size=4, shuffle=False)  # fmt: skip
    np.testing.assert_allclose(model.params_, w0 * 0.95**2, rtol=1e-14)


def test_adamw_default_weight_decay_and_bad_values():
    rng = rng_for("adamw-errors")
    X, y = blobs(rng, 40)
    a = fastmlp.train(X, y, hidden=(5,), optimizer="adamw", epochs=2, seed=0)
    b = fastmlp.train(X, y, hidden=(5,), optimizer="adamw", weight_decay=0.01, epochs=2, seed=0)
    c = fastmlp.train(X, y, hidden=(5,), optimizer="adamw", weight_decay=0.0, epochs=2, seed=0)
    d = fastmlp.train(X, y, hidden=(5,), optimizer="adam", epochs=2, seed=0)
    assert np.array_equal(a.params_, b.params_)  # the default is PyTorch's 0.01
    assert np.array_equal(c.params_, d.params_)  # no decay: Adam, bit for bit
    assert not np.array_equal(a.params_, d.params_)
    with pytest.raises(ValueError, match="weight_decay must lie in"):
        fastmlp.train(X, y, optimizer="adamw", weight_decay=-0.1)
    with pytest.raises(ValueError, match="weight_decay must be a finite number"):
        fastmlp.train(X, y, optimizer="adamw", weight_decay=float("nan"))
    with pytest.raises(ValueError, match="use optimizer='adamw'"):
        fastmlp.train(X, y, optimizer="adam", weight_decay=0.1)
    with pytest.raises(ValueError, match="weight_decay must be >= 0"):
        K.adam(np.zeros(2), np.zeros(2), np.zeros(2), np.zeros(2), 0.1, 0.9, 0.9, 1e-8, 1, -1.0)


@pytest.mark.parametrize("dtype", DTYPES)
def test_adamw_threads_bitwise_identical(dtype):
    rng = rng_for("adamw-threads", dtype)
    X, y = blobs(rng, 301, n_features=13, dtype=dtype)
    runs = [
        fastmlp.train(X, y, hidden=(33, 17), optimizer="adamw", weight_decay=0.1, epochs=3,
                      batch_size=64, seed=5, n_threads=t, dtype=dtype)
        for t in (1, 2)
    ]  # fmt: skip
    assert np.array_equal(runs[0].params_, runs[1].params_)
    assert runs[0].history["loss"] == runs[1].history["loss"]


def test_adamw_state_saved_and_continued_exactly(tmp_path):
    rng = rng_for("adamw-save")
    X, y = blobs(rng, 60)
    opts = dict(optimizer="adamw", weight_decay=0.2, batch_size=16, seed=3, n_threads=1)
    model = fastmlp.train(X, y, hidden=(6,), epochs=2, **opts)
    save(model, tmp_path / "m.npz")
    with np.load(tmp_path / "m.npz") as f:
        assert int(f["version"]) == 3
    back = load(tmp_path / "m.npz")
    assert back._optimizer["name"] == "adamw"
    model.fit_more(X, y, epochs=2, **opts)
    back.fit_more(X, y, epochs=2, **opts)
    assert np.array_equal(model.params_, back.params_)
    # A plain Adam classifier is still written as version 1, for older readers.
    plain = fastmlp.train(X, y, hidden=(6,), epochs=1, seed=0)
    save(plain, tmp_path / "p.npz")
    with np.load(tmp_path / "p.npz") as f:
        assert int(f["version"]) == 1


def test_adamw_state_in_an_old_version_file_is_refused(tmp_path):
    rng = rng_for("adamw-old")
    X, y = blobs(rng, 30)
    model = fastmlp.train(X, y, hidden=(4,), epochs=1, optimizer="adamw", seed=0)
    save(model, tmp_path / "m.npz")
    with np.load(tmp_path / "m.npz") as f:
        arrays = dict(f)
    arrays["version"] = np.array(1)
    np.savez(tmp_path / "old.npz", **arrays)
    with pytest.raises(ValueError, match="format version 1 holds no AdamW state"):
        load(tmp_path / "old.npz")


def test_adamw_in_the_estimators():
    pytest.importorskip("sklearn")
    from sklearn.base import clone

    from fastmlp.sklearn import MLPClassifier, MLPRegressor

    rng = rng_for("adamw-sklearn")
    X, y = blobs(rng, 80)
    clf = MLPClassifier((8,), solver="adamw", weight_decay=0.05, max_iter=5, random_state=0)
    with pytest.warns(Warning):
        clf.fit(X, y)
    assert clf.model_._optimizer["name"] == "adamw"
    assert clone(clf).get_params()["weight_decay"] == 0.05
    reg = MLPRegressor((8,), solver="adam", weight_decay=0.05, max_iter=2)
    with pytest.raises(ValueError, match="use optimizer='adamw'"):
        reg.fit(X, y.astype(float))


# -- finite differences, shared by the options that change the gradient -----------------


def fd_check(model, X, y, *, rtol=1e-6, max_params=200, **options):
    """Central differences of model.loss_and_gradients' value against its gradient
    (float64 models), on up to max_params parameters."""
    _, dW, db = model.loss_and_gradients(X, y, n_threads=1, **options)
    grad = np.concatenate([g.ravel() for pair in zip(dW, db) for g in pair])
    slices = model._network.slices()
    index = np.concatenate(
        [np.arange(w, b + model.layer_sizes[i + 1]) for i, (w, b) in enumerate(slices)]
    )
    pick = np.linspace(0, index.size - 1, min(max_params, index.size)).astype(int)
    p = model.params_
    h = 1e-6
    for j in pick:
        i = index[j]
        old = p[i]
        p[i] = old + h
        up = model.loss_and_gradients(X, y, n_threads=1, **options)[0]
        p[i] = old - h
        down = model.loss_and_gradients(X, y, n_threads=1, **options)[0]
        p[i] = old
        fd = (up - down) / (2 * h)
        assert fd == pytest.approx(grad[j], rel=rtol, abs=1e-8), (j, fd, grad[j])


# -- label smoothing ---------------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("smoothing", [0.0, 0.1, 0.9])
@pytest.mark.parametrize("n,k", [(1, 2), (5, 3), (17, 10), (33, 129)])
def test_smoothed_xent_kernel_matches_reference(n, k, smoothing, dtype):
    rng = rng_for("smooth", n, k, smoothing, dtype)
    Z = (3 * rng.standard_normal((n, k))).astype(dtype)
    y = rng.integers(0, k, n)
    w = rng.uniform(0.0, 2.0, n).astype(dtype)
    loss_ref, correct_ref, dZ_ref = R.softmax_cross_entropy(
        Z.astype(np.float64), y, w.astype(np.float64), 0.3, smoothing
    )
    loss, correct, dZ = K.softmax_cross_entropy(Z.copy(), y, w, 0.3, smoothing)
    assert loss == pytest.approx(loss_ref, rel=10 * tol(dtype))
    assert correct == correct_ref
    np.testing.assert_allclose(dZ, dZ_ref, rtol=10 * tol(dtype), atol=10 * tol(dtype))


def test_smoothed_xent_reference_by_hand_and_large_logits():
    Z = np.array([[1.0, 2.0, 0.5], [1e4, -1e4, 0.0]])
    y = np.array([1, 0])
    s = 0.3
    log_p = np.log(R.softmax(Z[:1]))[0]
    q = np.array([0.1, 0.8, 0.1])
    loss = R.softmax_cross_entropy(Z[:1], y[:1], label_smoothing=s)[0]
    assert loss == pytest.approx(-(q * log_p).sum(), rel=1e-14)
    # Logits of 1e4: finite, -log p_j = z_max - z_j for the others.
    big = K.softmax_cross_entropy(Z[1:].copy(), y[1:], label_smoothing=s)[0]
    assert big == pytest.approx(0.1 * 2e4 + 0.1 * 1e4, rel=1e-12)


@pytest.mark.may_skip("torch is optional (not in CI); the reference test above is required")
def test_smoothed_xent_reference_matches_torch():
    torch = pytest.importorskip("torch")
    rng = rng_for("torch-smooth")
    Z = rng.standard_normal((9, 5))
    y = rng.integers(0, 5, 9)
    z = torch.tensor(Z, requires_grad=True)
    out = torch.nn.functional.cross_entropy(z, torch.tensor(y), label_smoothing=0.2)
    out.backward()
    loss, _, dZ = R.softmax_cross_entropy(Z, y, None, 1 / 9, 0.2)
    assert loss / 9 == pytest.approx(out.item(), rel=1e-13)
    np.testing.assert_allclose(dZ, z.grad.numpy(), rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("hidden", [(), (5,), (5, 4, 3, 6)], ids=str)
def test_smoothed_xent_finite_differences(hidden):
    rng = rng_for("smooth-fd", hidden)
    model = random_model(rng, (4, *hidden, 3), "tanh", np.float64)
    X = rng.standard_normal((11, 4))
    y = rng.integers(0, 3, 11)
    w = rng.uniform(0.5, 2.0, 11)
    fd_check(model, X, y, sample_weight=w, label_smoothing=0.2)
    f, dW, db = model.loss_and_gradients(X, y, sample_weight=w, label_smoothing=0.2)
    f_ref, dW_ref, db_ref = R.loss_and_gradients(
        model.weights, model.biases, X, y, acts_of(model), sample_weight=w, label_smoothing=0.2
    )
    assert f == pytest.approx(f_ref, rel=1e-12)
    for got, want in zip(dW + db, dW_ref + db_ref):
        np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("hidden,B", [((), 17), ((7, 3), 1), ((5, 4, 3, 6), 33)], ids=str)
def test_smoothed_steps_match_reference(hidden, B, dtype):
    rng = rng_for("smooth-steps", hidden, B, dtype)
    model = random_model(rng, (5, *hidden, 4), "relu", dtype)
    X = rng.standard_normal((3 * B, 5)).astype(dtype)
    y = rng.integers(0, 4, 3 * B)
    hyper = dict(lr=0.01, optimizer="adam", label_smoothing=0.15)
    ref_w, ref_b = steps_both(model, X, y, B, 3, train_opts=hyper, ref_opts=hyper)
    assert_weights_close(model, ref_w, ref_b, 1e-10 if dtype == np.float64 else 1e-4)


@pytest.mark.parametrize("dtype", DTYPES)
def test_smoothed_threads_bitwise_identical(dtype):
    rng = rng_for("smooth-threads", dtype)
    X, y = blobs(rng, 301, n_features=13, dtype=dtype)
    runs = [
        fastmlp.train(X, y, hidden=(33, 17), label_smoothing=0.1, epochs=3, batch_size=64,
                      seed=5, n_threads=t, dtype=dtype, validation_split=0.2)
        for t in (1, 2)
    ]  # fmt: skip
    assert np.array_equal(runs[0].params_, runs[1].params_)
    assert runs[0].history == {**runs[1].history, "seconds": runs[0].history["seconds"]}


def test_label_smoothing_history_and_bad_values():
    rng = rng_for("smooth-errors")
    X, y = blobs(rng, 60)
    plain = fastmlp.train(X, y, hidden=(5,), epochs=3, seed=0, validation_data=(X, y))
    smooth = fastmlp.train(
        X, y, hidden=(5,), epochs=3, seed=0, label_smoothing=0.2, validation_data=(X, y)
    )
    # The training loss is the smoothed objective (larger for the same fit); val_loss is
    # the plain cross-entropy of the model, which evaluate computes.
    assert smooth.history["loss"][0] > plain.history["loss"][0]
    out = np.empty((60, 3), smooth.dtype)
    vloss = smooth._network.evaluate(
        np.ascontiguousarray(X, smooth.dtype), smooth._encode_y(y, 60)[0], out, n_threads=1
    )[0]
    assert smooth.history["val_loss"][-1] == pytest.approx(vloss / 60, rel=1e-12)
    for bad in (1.0, -0.1, 1.5):
        with pytest.raises(ValueError, match=r"label_smoothing must lie in \[0.0, 1.0\)"):
            fastmlp.train(X, y, label_smoothing=bad)
    with pytest.raises(ValueError, match="label_smoothing smooths the targets"):
        fastmlp.train(X, y.astype(float), loss="squared_error", label_smoothing=0.1)
    with pytest.raises(ValueError, match="label_smoothing smooths the targets"):
        fastmlp.train(X, y, loss="mse", label_smoothing=0.1)
    with pytest.raises(ValueError, match="label_smoothing must lie in"):
        K.softmax_cross_entropy(np.zeros((2, 3)), np.zeros(2), label_smoothing=1.0)


def test_label_smoothing_in_the_classifier():
    pytest.importorskip("sklearn")
    from sklearn.base import clone
    from sklearn.exceptions import ConvergenceWarning

    from fastmlp.sklearn import MLPClassifier

    rng = rng_for("smooth-sklearn")
    X, y = blobs(rng, 90)
    opts = dict(max_iter=60, learning_rate_init=0.01, random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        clf = MLPClassifier((8,), label_smoothing=0.1, **opts).fit(X, y)
        ref = MLPClassifier((8,), **opts).fit(X, y)
    assert not np.array_equal(clf.model_.params_, ref.model_.params_)
    assert clone(clf).get_params()["label_smoothing"] == 0.1
    assert clf.score(X, y) > 0.8
    with pytest.raises(ValueError, match="label_smoothing must lie in"):
        MLPClassifier(label_smoothing=1.0).fit(X, y)


# -- one activation per hidden layer -----------------------------------------------------

PER_LAYER = [((5,), ["sigmoid"]), ((7, 3), ["relu", "tanh"]),
             ((5, 4, 3, 6), ["tanh", "relu", "sigmoid", "relu"])]  # fmt: skip


@pytest.mark.parametrize("hidden,acts", PER_LAYER, ids=str)
def test_per_layer_activations_gradient(hidden, acts):
    rng = rng_for("acts-fd", hidden)
    sizes = (4, *hidden, 3)
    for _ in range(20):  # redraw until no ReLU unit sits near its kink
        model = random_model(rng, sizes, acts, np.float64)
        X = rng.standard_normal((9, 4))
        Z = X
        ok = True
        for W, b, act in zip(model.weights, model.biases, acts_of(model)):
            Z = Z @ W + b
            ok &= act != "relu" or bool(np.all(np.abs(Z) > 1e-3))
            Z = R.activate(Z, act)
        if ok:
            break
    assert model.activations == tuple(acts) and model.activation == tuple(acts)
    y = rng.integers(0, 3, 9)
    fd_check(model, X, y)
    f, dW, db = model.loss_and_gradients(X, y, l2=0.01)
    f_ref, dW_ref, db_ref = R.loss_and_gradients(
        model.weights, model.biases, X, y, acts + ["identity"], l2=0.01
    )
    assert f == pytest.approx(f_ref, rel=1e-12)
    for got, want in zip(dW + db, dW_ref + db_ref):
        np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("hidden,acts", PER_LAYER, ids=str)
def test_per_layer_activations_steps_match_reference(hidden, acts, dtype):
    rng = rng_for("acts-steps", hidden, dtype)
    model = random_model(rng, (5, *hidden, 4), acts, dtype)
    X = rng.standard_normal((3 * 17, 5)).astype(dtype)
    y = rng.integers(0, 4, 3 * 17)
    hyper = dict(lr=0.01, optimizer="sgd", momentum=0.9)
    ref_w, ref_b = steps_both(model, X, y, 17, 3, train_opts=hyper, ref_opts=hyper)
    assert_weights_close(model, ref_w, ref_b, 1e-10 if dtype == np.float64 else 1e-4)
    X_test = rng.standard_normal((40, 5))
    want = R.forward(ref_w, ref_b, X_test, acts + ["identity"])[-1]
    np.testing.assert_allclose(model.decision_function(X_test), want, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("dtype", DTYPES)
def test_per_layer_activations_train_and_threads(dtype):
    rng = rng_for("acts-threads", dtype)
    X, y = blobs(rng, 301, n_features=13, dtype=dtype)
    runs = [
        fastmlp.train(X, y, hidden=(33, 17, 9), activation=["tanh", "relu", "sigmoid"],
                      epochs=3, batch_size=64, seed=5, n_threads=t, dtype=dtype)
        for t in (1, 2)
    ]  # fmt: skip
    assert np.array_equal(runs[0].params_, runs[1].params_)
    assert runs[0].activations == ("tanh", "relu", "sigmoid")
    # A list of one name is the same network as that name.
    same = [
        fastmlp.train(X, y, hidden=(9, 9), activation=a, epochs=2, seed=1, dtype=dtype)
        for a in ("tanh", ("tanh", "tanh"))
    ]
    assert np.array_equal(same[0].params_, same[1].params_)


def test_per_layer_activations_bad_values():
    X, y = blobs(rng_for("acts-bad"), 30)
    with pytest.raises(ValueError, match="lists 1 names but the network has 2 hidden layers"):
        fastmlp.train(X, y, hidden=(4, 4), activation=["relu"])
    with pytest.raises(ValueError, match="give exactly 2"):
        MLP((3, 4, 4, 2), [0, 1], activation=("relu", "tanh", "relu"))
    with pytest.raises(ValueError, match="got 'swish'"):
        fastmlp.train(X, y, hidden=(4, 4), activation=["relu", "swish"])
    with pytest.raises(ValueError, match="or a list of one per hidden layer"):
        fastmlp.train(X, y, hidden=(4,), activation=3)
    with pytest.raises(ValueError, match="activation must be one of"):
        fastmlp.train(X, y, hidden=(4,), activation="swish")


def test_per_layer_activations_saved_and_exported(tmp_path):
    rng = rng_for("acts-save")
    X, y = blobs(rng, 60)
    model = fastmlp.train(X, y, hidden=(7, 5), activation=["sigmoid", "relu"], epochs=2, seed=0)
    save(model, tmp_path / "m.npz")
    with np.load(tmp_path / "m.npz") as f:
        assert int(f["version"]) == 3
        arrays = dict(f)
    back = load(tmp_path / "m.npz")
    assert back.activation == ("sigmoid", "relu")
    assert np.array_equal(back.predict_proba(X), model.predict_proba(X))
    arrays["version"] = np.array(1)
    np.savez(tmp_path / "old.npz", **arrays)
    with pytest.raises(ValueError, match="format version 1 holds no per-layer activations"):
        load(tmp_path / "old.npz")
    # Pickle keeps it too.
    import pickle

    assert pickle.loads(pickle.dumps(model)).activations == ("sigmoid", "relu")


def test_per_layer_activations_onnx(tmp_path):
    pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    rng = rng_for("acts-onnx")
    X, y = blobs(rng, 60, dtype=np.float32)
    model = fastmlp.train(
        X, y, hidden=(7, 5, 4), activation=["sigmoid", "relu", "tanh"], epochs=2, seed=0
    )
    model.to_onnx(tmp_path / "m.onnx")
    session = ort.InferenceSession(str(tmp_path / "m.onnx"), providers=["CPUExecutionProvider"])
    np.testing.assert_allclose(session.run(None, {"X": X})[0], model.predict_proba(X), atol=1e-5)


def test_per_layer_activations_c_export(tmp_path):
    from test_export_c import Exported, check_against_model

    rng = rng_for("acts-c")
    X, y = blobs(rng, 60, dtype=np.float32)
    model = fastmlp.train(
        X, y, hidden=(7, 300, 4), activation=["relu", "relu", "tanh"], epochs=2, seed=0
    )
    check_against_model(Exported(model, tmp_path), X)
    text = (tmp_path / "model.h").read_text()
    assert "hidden activations relu, relu, tanh" in text


def test_per_layer_activations_in_the_estimators():
    pytest.importorskip("sklearn")
    from sklearn.base import clone

    from fastmlp.sklearn import MLPClassifier, MLPRegressor

    X, y = blobs(rng_for("acts-sklearn"), 60)
    clf = MLPClassifier((6, 5), activation=["logistic", "relu"], max_iter=3)
    with pytest.warns(Warning):
        clf.fit(X, y)
    assert clf.model_.activations == ("sigmoid", "relu")
    assert clf.get_params()["activation"] == ["logistic", "relu"]
    assert clone(clf).get_params()["activation"] == ["logistic", "relu"]
    clf.set_params(activation=("tanh", "tanh"))
    assert clf.activation == ("tanh", "tanh")
    with pytest.raises(ValueError, match="lists 1 names but hidden_layer_sizes"):
        MLPRegressor((6, 5), activation=["relu"]).fit(X, y.astype(float))
    with pytest.raises(ValueError, match="or a list of them"):
        MLPRegressor((6,), activation=["swish"]).fit(X, y.astype(float))


# -- regression losses: huber, absolute_error, poisson -----------------------------------

REG_LOSSES = ["huber", "absolute_error", "poisson"]


def reference_loss(loss, A, Y, w=None, scale=1.0, delta=1.0):
    if loss == "huber":
        return R.huber(A, Y, w, scale, delta)
    if loss == "absolute_error":
        return R.absolute_error(A, Y, w, scale)
    return R.poisson(A, Y, w, scale)


def targets_for(loss, rng, shape, dtype=np.float64):
    if loss == "poisson":
        return rng.poisson(2.0, shape).astype(dtype)
    return (2 * rng.standard_normal(shape)).astype(dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n,k", [(1, 1), (5, 3), (17, 10), (33, 129)])
@pytest.mark.parametrize("loss", REG_LOSSES)
def test_regression_loss_kernels_match_reference(loss, n, k, dtype):
    rng = rng_for("reg-kernel", loss, n, k, dtype)
    A = rng.standard_normal((n, k)).astype(dtype)
    Y = targets_for(loss, rng, (n, k), dtype)
    if loss == "absolute_error":
        Y.flat[::3] = A.flat[::3]  # exact fits: subgradient 0
    w = rng.uniform(0.0, 2.0, n).astype(dtype)
    loss_ref, dA_ref = reference_loss(
        loss, A.astype(np.float64), Y.astype(np.float64), w.astype(np.float64), 0.3, 0.7
    )
    value, dA = K.regression_loss(loss, A, Y, w, 0.3, 0.7)
    assert value == pytest.approx(loss_ref, rel=10 * tol(dtype))
    assert dA.dtype == np.dtype(dtype)
    np.testing.assert_allclose(dA, dA_ref, rtol=10 * tol(dtype), atol=10 * tol(dtype))
    if loss == "absolute_error":
        assert np.all(dA.flat[::3] == 0)


def test_regression_loss_references_by_hand():
    A = np.array([[0.0, 2.0, -3.0]])
    Y = np.array([[0.5, 0.0, 0.0]])
    # Huber, delta 1: 0.5 * 0.25, 1 * (2 - 0.5), 1 * (3 - 0.5), averaged over 3 outputs.
    loss, dA = R.huber(A, Y, delta=1.0)
    assert loss == pytest.approx((0.125 + 1.5 + 2.5) / 3, rel=1e-15)
    np.testing.assert_allclose(dA, [[-0.5 / 3, 1 / 3, -1 / 3]], rtol=1e-15)
    loss, dA = R.absolute_error(A, Y)
    assert loss == pytest.approx(5.5 / 3, rel=1e-15)
    loss, dA = R.poisson(np.array([[0.0, np.log(2.0)]]), np.array([[1.0, 3.0]]))
    assert loss == pytest.approx((1 + 2 - 3 * np.log(2.0)) / 2, rel=1e-15)
    np.testing.assert_allclose(dA, [[0.0, -0.5]], atol=1e-15)


@pytest.mark.may_skip("torch is optional (not in CI); the reference tests above are required")
@pytest.mark.parametrize("loss", REG_LOSSES)
def test_regression_loss_references_match_torch(loss):
    torch = pytest.importorskip("torch")
    rng = rng_for("torch-reg", loss)
    A = rng.standard_normal((7, 3))
    Y = targets_for(loss, rng, (7, 3))
    a = torch.tensor(A, requires_grad=True)
    fn = {
        "huber": torch.nn.HuberLoss(delta=0.7),
        "absolute_error": torch.nn.L1Loss(),
        "poisson": torch.nn.PoissonNLLLoss(log_input=True, full=False),
    }[loss]
    out = fn(a, torch.tensor(Y))
    out.backward()
    value, dA = reference_loss(loss, A, Y, None, 1 / 7, 0.7)
    assert value / 7 == pytest.approx(out.item(), rel=1e-12)
    np.testing.assert_allclose(dA, a.grad.numpy(), rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("hidden", [(), (5,), (5, 4, 3, 6)], ids=str)
@pytest.mark.parametrize("loss", REG_LOSSES)
def test_regression_losses_finite_differences(loss, hidden):
    rng = rng_for("reg-fd", loss, hidden)
    kw = {"delta": 0.5} if loss == "huber" else {}
    model = random_model(rng, (4, *hidden, 3), "tanh", np.float64, loss, **kw)
    X = rng.standard_normal((11, 4))
    Y = targets_for(loss, rng, (11, 3))
    w = rng.uniform(0.5, 2.0, 11)
    fd_check(model, X, Y, sample_weight=w)
    f, dW, db = model.loss_and_gradients(X, Y, sample_weight=w)
    f_ref, dW_ref, db_ref = R.loss_and_gradients(
        model.weights, model.biases, X, Y, acts_of(model), loss, sample_weight=w,
        delta=model.delta,
    )  # fmt: skip
    assert f == pytest.approx(f_ref, rel=1e-12)
    for got, want in zip(dW + db, dW_ref + db_ref):
        np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("hidden,B", [((), 17), ((7, 3), 1), ((5, 4, 3, 6), 33)], ids=str)
@pytest.mark.parametrize("loss", REG_LOSSES)
def test_regression_losses_steps_match_reference(loss, hidden, B, dtype):
    rng = rng_for("reg-steps", loss, hidden, B, dtype)
    kw = {"delta": 0.5} if loss == "huber" else {}
    model = random_model(rng, (5, *hidden, 4), "relu", dtype, loss, **kw)
    X = rng.standard_normal((3 * B, 5)).astype(dtype)
    Y = targets_for(loss, rng, (3 * B, 4))
    hyper = dict(lr=0.01, optimizer="adam", l2=0.01)
    ref_w, ref_b = steps_both(model, X, Y, B, 3, train_opts=hyper, ref_opts=dict(hyper, **kw))
    assert_weights_close(model, ref_w, ref_b, 1e-10 if dtype == np.float64 else 1e-4)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("loss", REG_LOSSES)
def test_regression_losses_threads_bitwise_identical(loss, dtype):
    rng = rng_for("reg-threads", loss, dtype)
    X = rng.standard_normal((301, 13)).astype(dtype)
    Y = targets_for(loss, rng, (301, 2))
    runs = [
        fastmlp.train(X, Y, loss=loss, hidden=(33, 17), epochs=3, batch_size=64, seed=5,
                      n_threads=t, dtype=dtype, validation_split=0.2)
        for t in (1, 2)
    ]  # fmt: skip
    assert np.array_equal(runs[0].params_, runs[1].params_)
    assert runs[0].history["val_loss"] == runs[1].history["val_loss"]


def test_poisson_predicts_exp_and_learns_rates():
    rng = rng_for("poisson-learn")
    X = rng.standard_normal((2000, 3))
    rate = np.exp(0.5 * X[:, 0] - 0.3 * X[:, 1])
    y = rng.poisson(rate).astype(float)
    model = fastmlp.train(X, y, loss="poisson", hidden=(16,), epochs=30, lr=1e-2, seed=0)
    pred = model.predict(X)
    np.testing.assert_allclose(pred, np.exp(model.decision_function(X)[:, 0]), rtol=1e-6)
    assert pred.min() > 0
    assert np.corrcoef(np.log(pred), np.log(rate))[0, 1] > 0.95
    assert model.score(X, rate) > 0.8  # R^2 of the predicted rates (exp applied)


def test_regression_loss_bad_values():
    rng = rng_for("reg-bad")
    X = rng.standard_normal((20, 3))
    y = rng.poisson(1.0, 20).astype(float)
    bad = y.copy()
    bad[3] = -1
    with pytest.raises(ValueError, match="y holds negative values; loss='poisson'"):
        fastmlp.train(X, bad, loss="poisson")
    model = fastmlp.train(X, y, loss="poisson", epochs=1)
    with pytest.raises(ValueError, match="y holds negative values"):
        model.fit_more(X, bad)
    with pytest.raises(ValueError, match="y_val holds negative values"):
        model.fit_more(X, y, validation_data=(X, bad))
    with pytest.raises(ValueError, match=r"delta must lie in \(0.0, inf\)"):
        fastmlp.train(X, y, loss="huber", delta=0.0)
    with pytest.raises(ValueError, match="delta is the threshold of loss='huber'"):
        fastmlp.train(X, y, loss="squared_error", delta=2.0)
    with pytest.raises(ValueError, match="loss must be one of"):
        MLP((3, 1), None, loss="hinge")


@pytest.mark.parametrize("loss", REG_LOSSES)
def test_regression_losses_saved(tmp_path, loss):
    rng = rng_for("reg-save", loss)
    X = rng.standard_normal((40, 3))
    Y = targets_for(loss, rng, (40, 2))
    kw = {"delta": 0.25} if loss == "huber" else {}
    model = fastmlp.train(X, Y, loss=loss, hidden=(5,), epochs=2, seed=0, **kw)
    save(model, tmp_path / "m.npz")
    back = load(tmp_path / "m.npz")
    assert (back.loss, back.delta) == (loss, kw.get("delta", 1.0))
    assert np.array_equal(back.predict(X), model.predict(X))
    with np.load(tmp_path / "m.npz") as f:
        assert int(f["version"]) == 3
        arrays = dict(f)
    arrays["version"] = np.array(2)
    np.savez(tmp_path / "old.npz", **arrays)
    with pytest.raises(ValueError, match=f"format version 2 holds no '{loss}' loss"):
        load(tmp_path / "old.npz")


def test_huber_delta_checked_on_load(tmp_path):
    import json

    rng = rng_for("huber-load")
    X, Y = rng.standard_normal((30, 3)), rng.standard_normal(30)
    model = fastmlp.train(X, Y, loss="huber", delta=2.0, hidden=(4,), epochs=1, seed=0)
    save(model, tmp_path / "m.npz")
    with np.load(tmp_path / "m.npz") as f:
        arrays = dict(f)
    meta = json.loads(str(arrays["meta"]))
    for change, match in [
        ({"delta": -1.0}, "delta of a Huber model"),
        ({"delta": "2"}, "delta of a Huber model"),
        ({"delta": None}, "delta of a Huber model"),
        ({"loss": "poisson"}, "only a Huber model"),
    ]:
        arrays["meta"] = np.array(json.dumps({**meta, **change}))
        np.savez(tmp_path / "bad.npz", **arrays)
        with pytest.raises(ValueError, match=match):
            load(tmp_path / "bad.npz")


@pytest.mark.parametrize("loss", REG_LOSSES)
def test_regression_losses_onnx(tmp_path, loss):
    pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    rng = rng_for("reg-onnx", loss)
    X = rng.standard_normal((50, 4)).astype(np.float32)
    Y = targets_for(loss, rng, (50, 2))
    model = fastmlp.train(X, Y, loss=loss, hidden=(6,), epochs=2, seed=0)
    model.to_onnx(tmp_path / "m.onnx")
    session = ort.InferenceSession(str(tmp_path / "m.onnx"), providers=["CPUExecutionProvider"])
    np.testing.assert_allclose(session.run(None, {"X": X})[0], model.predict(X), rtol=1e-5)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("loss", REG_LOSSES)
def test_regression_losses_c_export(tmp_path, loss, dtype):
    from test_export_c import Exported, check_against_model

    rng = rng_for("reg-c", loss, dtype)
    X = rng.standard_normal((50, 4)).astype(dtype)
    Y = targets_for(loss, rng, (50, 2))
    model = fastmlp.train(X, Y, loss=loss, hidden=(6,), epochs=2, seed=0, dtype=dtype)
    check_against_model(Exported(model, tmp_path), X)
    assert ("_exp(" in (tmp_path / "model.c").read_text()) == (loss == "poisson")


def test_regression_losses_in_the_estimator():
    pytest.importorskip("sklearn")
    from sklearn.base import clone
    from sklearn.exceptions import ConvergenceWarning

    from fastmlp.sklearn import MLPRegressor

    rng = rng_for("reg-sklearn")
    X = rng.standard_normal((200, 3))
    y = rng.poisson(np.exp(0.5 * X[:, 0])).astype(float)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        reg = MLPRegressor((8,), loss="poisson", max_iter=20, random_state=0).fit(X, y)
        assert reg.model_.loss == "poisson" and reg.predict(X).min() > 0
        assert clone(reg).get_params()["loss"] == "poisson"
        hub = MLPRegressor((8,), loss="huber", delta=0.3, max_iter=5, warm_start=True)
        hub.fit(X, y)
        assert hub.model_.delta == 0.3
        hub.set_params(delta=0.5)
        with pytest.raises(ValueError, match="continue the loss the network was fitted with"):
            hub.fit(X, y)
        with pytest.raises(ValueError, match="loss must be one of"):
            MLPRegressor(loss="hinge").fit(X, y)
        with pytest.raises(ValueError, match="y holds negative values"):
            MLPRegressor(loss="poisson").fit(X, -y - 1)


# -- the estimators' validation sets: fit(X_val=, y_val=), partial_fit with early stopping


def estimator_data(kind, rng, n):
    X = rng.standard_normal((n, 5))
    if kind == "classifier":
        return X, (X[:, 0] + 0.5 * X[:, 1] > 0).astype(int)
    return X, X[:, 0] - 0.5 * X[:, 1] + 0.1 * rng.standard_normal(n)


def estimator(kind, **params):
    from fastmlp.sklearn import MLPClassifier, MLPRegressor

    cls = MLPClassifier if kind == "classifier" else MLPRegressor
    return cls(**{"hidden_layer_sizes": (8,), "random_state": 0, **params})


@pytest.mark.parametrize("kind", ["classifier", "regressor"])
def test_fit_scores_and_stops_on_the_given_validation_set(kind):
    pytest.importorskip("sklearn")
    from sklearn.exceptions import ConvergenceWarning

    rng = rng_for("xval", kind)
    X, y = estimator_data(kind, rng, 300)
    X_val, y_val = estimator_data(kind, rng, 80)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        # Scored every epoch without early stopping; all the training rows are used.
        est = estimator(kind, max_iter=7).fit(X, y, X_val=X_val, y_val=y_val)
    assert len(est.validation_scores_) == 7 == est.n_iter_
    assert est.best_validation_score_ == max(est.validation_scores_)
    assert est.validation_scores_[-1] == pytest.approx(est.score(X_val, y_val), abs=1e-6)
    plain = estimator(kind, max_iter=7)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        plain.fit(X, y)
    assert np.array_equal(est.model_.params_, plain.model_.params_)  # nothing held out
    # Early stopping on it: stops, restores the best epoch's weights.
    es = estimator(kind, max_iter=500, early_stopping=True, n_iter_no_change=3, tol=0.5)
    es.fit(X, y, X_val=X_val, y_val=y_val)
    assert es.n_iter_ == 5  # the first epoch improves on -inf, then 4 without progress
    assert es.score(X_val, y_val) == pytest.approx(es.best_validation_score_, abs=1e-6)
    assert es.best_loss_ is None


def test_fit_validation_set_errors():
    pytest.importorskip("sklearn")
    rng = rng_for("xval-errors")
    X, y = estimator_data("classifier", rng, 60)
    with pytest.raises(ValueError, match="give X_val and y_val together"):
        estimator("classifier").fit(X, y, X_val=X)
    with pytest.raises(ValueError, match="X has 4 features"):
        estimator("classifier").fit(X, y, X_val=X[:, :4], y_val=y)
    with pytest.raises(ValueError, match="y_val"):
        estimator("classifier").fit(X, y, X_val=X, y_val=y + 5)  # labels fit never saw
    with pytest.raises(ValueError, match="X_val has 60 rows but y_val 59"):
        estimator("classifier").fit(X, y, X_val=X, y_val=y[:-1])
    counts = rng.poisson(1.0, 60).astype(float)
    with pytest.raises(ValueError, match="y_val holds negative values"):
        estimator("regressor", loss="poisson").fit(X, counts, X_val=X, y_val=counts - 5)


@pytest.mark.parametrize("kind", ["classifier", "regressor"])
def test_partial_fit_early_stopping_on_a_fixed_split(kind):
    pytest.importorskip("sklearn")
    rng = rng_for("pfit-es", kind)
    chunks = [estimator_data(kind, rng, 100) for _ in range(30)]
    est = estimator(kind, early_stopping=True, n_iter_no_change=2, tol=0.3,
                    validation_fraction=0.2, learning_rate_init=0.01)  # fmt: skip
    extra = {"classes": [0, 1]} if kind == "classifier" else {}
    est.partial_fit(*chunks[0], **extra)
    X_val, y_val = est._partial_validation
    assert X_val.shape == (20, 5)  # 20% of the first chunk, held out for good
    calls = 1
    for X, y in chunks[1:]:
        if est.early_stopped_:
            break
        est.partial_fit(X, y)
        calls += 1
    assert est.early_stopped_
    assert len(est.validation_scores_) == calls == est.n_iter_ == 4
    assert est.model_.score(X_val, y_val) == pytest.approx(est.best_validation_score_)
    before = est.model_.params_.copy()
    est.partial_fit(*chunks[-1])  # stopped: nothing changes until fit()
    assert np.array_equal(est.model_.params_, before) and est.n_iter_ == 4
    with pytest.raises(ValueError, match="first call only"):
        est.partial_fit(*chunks[-1], X_val=X_val, y_val=y_val)
    # fit() starts anew, and a later partial_fit series with it.
    est.set_params(max_iter=3, early_stopping=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        est.fit(*chunks[0])
    assert not est.early_stopped_ and est.validation_scores_ is None


@pytest.mark.parametrize("kind", ["classifier", "regressor"])
def test_partial_fit_with_a_given_validation_set(kind):
    pytest.importorskip("sklearn")
    rng = rng_for("pfit-given", kind)
    X_val, y_val = estimator_data(kind, rng, 50)
    chunks = [estimator_data(kind, rng, 64) for _ in range(4)]
    extra = {"classes": [0, 1]} if kind == "classifier" else {}
    est = estimator(kind)
    est.partial_fit(*chunks[0], X_val=X_val, y_val=y_val, **extra)
    for X, y in chunks[1:]:
        est.partial_fit(X, y)
    assert len(est.validation_scores_) == 4
    assert est.validation_scores_[-1] == pytest.approx(est.score(X_val, y_val), abs=1e-6)
    assert not est.early_stopped_
    # Every row of each chunk was trained on (no split without early stopping).
    ref = estimator(kind)
    ref.partial_fit(*chunks[0], **extra)
    for X, y in chunks[1:]:
        ref.partial_fit(X, y)
    assert np.array_equal(est.model_.params_, ref.model_.params_)


# -- multilabel classification -----------------------------------------------------------


def multilabel_data(rng, n, n_features=6, k=4, dtype=np.float64):
    X = rng.standard_normal((n, n_features)).astype(dtype)
    W = rng.standard_normal((n_features, k))
    Y = (X @ W + 0.3 * rng.standard_normal((n, k)) > 0).astype(int)
    return X, Y


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n,k", [(1, 1), (5, 3), (17, 10), (33, 129)])
def test_sigmoid_xent_kernel_matches_reference(n, k, dtype):
    rng = rng_for("bce", n, k, dtype)
    Z = (3 * rng.standard_normal((n, k))).astype(dtype)
    Z[0, 0] = 60.0  # far in the tail: still finite
    Y = (rng.random((n, k)) < 0.4).astype(dtype)
    w = rng.uniform(0.0, 2.0, n).astype(dtype)
    loss_ref, correct_ref, dZ_ref = R.sigmoid_cross_entropy(
        Z.astype(np.float64), Y.astype(np.float64), w.astype(np.float64), 0.3
    )
    P = Z.copy()
    loss, correct, dZ = K.sigmoid_cross_entropy(P, Y, w, 0.3)
    assert loss == pytest.approx(loss_ref, rel=10 * tol(dtype))
    assert correct == correct_ref
    np.testing.assert_allclose(dZ, dZ_ref, rtol=10 * tol(dtype), atol=10 * tol(dtype))
    np.testing.assert_allclose(P, R.activate(Z.astype(np.float64), "sigmoid"), rtol=tol(dtype))


@pytest.mark.may_skip("torch is optional (not in CI); the reference test above is required")
def test_sigmoid_xent_reference_matches_torch():
    torch = pytest.importorskip("torch")
    rng = rng_for("torch-bce")
    Z = 3 * rng.standard_normal((9, 4))
    Y = (rng.random((9, 4)) < 0.5).astype(float)
    z = torch.tensor(Z, requires_grad=True)
    out = torch.nn.functional.binary_cross_entropy_with_logits(z, torch.tensor(Y), reduction="sum")
    out.backward()
    loss, _, dZ = R.sigmoid_cross_entropy(Z, Y)
    assert loss == pytest.approx(out.item(), rel=1e-13)
    np.testing.assert_allclose(dZ, z.grad.numpy(), rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("hidden", [(), (5,), (5, 4, 3, 6)], ids=str)
def test_multilabel_finite_differences_and_reference(hidden):
    rng = rng_for("bce-fd", hidden)
    model = random_model(rng, (4, *hidden, 3), "tanh", np.float64, "binary_cross_entropy")
    X = rng.standard_normal((11, 4))
    Y = (rng.random((11, 3)) < 0.5).astype(float)
    w = rng.uniform(0.5, 2.0, 11)
    fd_check(model, X, Y, sample_weight=w)
    f, dW, db = model.loss_and_gradients(X, Y, sample_weight=w, l2=0.01)
    f_ref, dW_ref, db_ref = R.loss_and_gradients(
        model.weights, model.biases, X, Y, acts_of(model), "binary_cross_entropy", 0.01, w
    )
    assert f == pytest.approx(f_ref, rel=1e-12)
    for got, want in zip(dW + db, dW_ref + db_ref):
        np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("hidden,B", [((), 17), ((7, 3), 1), ((5, 4, 3, 6), 33)], ids=str)
def test_multilabel_steps_match_reference(hidden, B, dtype):
    rng = rng_for("bce-steps", hidden, B, dtype)
    model = random_model(rng, (5, *hidden, 4), "relu", dtype, "binary_cross_entropy")
    X = rng.standard_normal((3 * B, 5)).astype(dtype)
    Y = (rng.random((3 * B, 4)) < 0.5).astype(int)
    hyper = dict(lr=0.01, optimizer="adam")
    ref_w, ref_b = steps_both(model, X, Y.astype(float), B, 3, train_opts=hyper, ref_opts=hyper)
    assert_weights_close(model, ref_w, ref_b, 1e-10 if dtype == np.float64 else 1e-4)


@pytest.mark.parametrize("dtype", DTYPES)
def test_multilabel_train_predict_threads(dtype):
    rng = rng_for("bce-train", dtype)
    X, Y = multilabel_data(rng, 600, dtype=dtype)
    runs = [
        fastmlp.train(X, Y, hidden=(32,), epochs=15, lr=3e-3, seed=2, n_threads=t, dtype=dtype,
                      validation_split=0.2)
        for t in (1, 2)
    ]  # fmt: skip
    model = runs[0]
    assert np.array_equal(runs[0].params_, runs[1].params_)
    assert runs[0].history["val_accuracy"] == runs[1].history["val_accuracy"]
    assert model.loss == "binary_cross_entropy" and model.is_multilabel
    assert model.classes_.tolist() == [0, 1, 2, 3]
    pred, proba = model.predict(X), model.predict_proba(X)
    assert pred.shape == proba.shape == Y.shape and set(np.unique(pred)) <= {0, 1}
    np.testing.assert_array_equal(pred, (proba > 0.5).astype(int))
    assert proba.dtype == np.dtype(dtype)
    assert model.score(X, Y) == np.mean(np.all(pred == Y, axis=1))
    assert model.score(X, Y) > 0.4  # subset accuracy of 4 labels (chance: about 0.06)
    assert model.history["accuracy"][-1] > 0.5


def test_multilabel_bad_values():
    rng = rng_for("bce-bad")
    X, Y = multilabel_data(rng, 40)
    bad = Y.copy()
    bad[2, 1] = 2
    with pytest.raises(ValueError, match="holds only 0 and 1 .* got 2"):
        fastmlp.train(X, bad)
    with pytest.raises(ValueError, match="holds only 0 and 1"):
        fastmlp.train(X, Y - 0.5)
    model = fastmlp.train(X, Y, epochs=1)
    with pytest.raises(ValueError, match="y has 3 labels but the model has 4"):
        model.fit_more(X, Y[:, :3])
    with pytest.raises(ValueError, match="2-D indicator matrix"):
        model.score(X, Y[:, 0])
    with pytest.raises(ValueError, match="label_smoothing smooths the targets"):
        fastmlp.train(X, Y, label_smoothing=0.1)
    # One column is one label per sample: said so (it was "needs at least 2 classes").
    for loss in ("cross_entropy", "binary_cross_entropy"):
        with pytest.raises(ValueError, match=r"needs 2 label columns or more; got 1.*y\.ravel"):
            fastmlp.train(X, Y[:, :1], loss=loss)
    with pytest.raises(ValueError, match=r"needs 2 label columns or more; got 0"):
        fastmlp.train(X, Y[:, :0])
    with pytest.raises(ValueError, match="class_weight is for one label per sample"):
        fastmlp.train(X, Y, class_weight="balanced")


def test_multilabel_saved_onnx_and_c(tmp_path):
    rng = rng_for("bce-save")
    X, Y = multilabel_data(rng, 80, dtype=np.float32)
    model = fastmlp.train(X, Y, hidden=(7,), epochs=3, seed=0)
    save(model, tmp_path / "m.npz")
    back = load(tmp_path / "m.npz")
    assert back.is_multilabel
    assert np.array_equal(back.predict(X), model.predict(X))
    with np.load(tmp_path / "m.npz") as f:
        assert int(f["version"]) == 3
        arrays = dict(f)
    arrays["version"] = np.array(1)
    np.savez(tmp_path / "old.npz", **arrays)
    with pytest.raises(ValueError, match="format version 1 holds no multilabel"):
        load(tmp_path / "old.npz")
    pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    model.to_onnx(tmp_path / "m.onnx")
    session = ort.InferenceSession(str(tmp_path / "m.onnx"), providers=["CPUExecutionProvider"])
    np.testing.assert_allclose(session.run(None, {"X": X})[0], model.predict_proba(X), atol=1e-6)


@pytest.mark.parametrize("dtype", DTYPES)
def test_multilabel_c_export(tmp_path, dtype):
    import subprocess

    from test_export_c import compile_c

    rng = rng_for("bce-c", dtype)
    X, Y = multilabel_data(rng, 80, dtype=dtype)
    model = fastmlp.train(X, Y, hidden=(7, 5), epochs=3, seed=0, dtype=dtype)
    model.to_c(tmp_path, "ml")
    real = "float" if dtype == np.float32 else "double"
    (tmp_path / "main.c").write_text(
        f"""#include <stdio.h>
#include "ml.h"
static {real} x[80 * ML_N_FEATURES], p_row[ML_N_OUTPUTS], p_batch[80 * ML_N_OUTPUTS];
static int l_row[ML_N_OUTPUTS], l_batch[80 * ML_N_OUTPUTS];
int main(void)
{{
    size_t r, j;
    if (fread(x, sizeof x, 1, stdin) != 1) return 1;
    ml_predict_proba_batch(80, x, p_batch);
    ml_predict_batch(80, x, l_batch);
    for (r = 0; r < 80; r++) {{
        ml_predict_proba(x + r * ML_N_FEATURES, p_row);
        ml_predict(x + r * ML_N_FEATURES, l_row);
        for (j = 0; j < ML_N_OUTPUTS; j++) {{
            if (p_row[j] != p_batch[r * ML_N_OUTPUTS + j]) return 2;
            if (l_row[j] != l_batch[r * ML_N_OUTPUTS + j]) return 3;
        }}
    }}
    fwrite(p_batch, sizeof p_batch, 1, stdout);
    fwrite(l_batch, sizeof l_batch, 1, stdout);
    return 0;
}}
"""
    )
    exe = compile_c(tmp_path, ["main.c", "ml.c"], "main")
    out = subprocess.run([str(exe)], input=X.tobytes(), capture_output=True, timeout=60)
    assert out.returncode == 0
    size = 80 * 4 * np.dtype(dtype).itemsize
    proba = np.frombuffer(out.stdout[:size], dtype).reshape(80, 4)
    labels = np.frombuffer(out.stdout[size:], np.intc).reshape(80, 4)
    np.testing.assert_allclose(proba, model.predict_proba(X), atol=1e-6)
    np.testing.assert_array_equal(labels, model.predict(X))


def test_multilabel_in_the_classifier():
    pytest.importorskip("sklearn")
    from sklearn.base import clone
    from sklearn.exceptions import ConvergenceWarning

    from fastmlp.sklearn import MLPClassifier

    rng = rng_for("bce-sklearn")
    X, Y = multilabel_data(rng, 300)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        clf = MLPClassifier((16,), max_iter=40, learning_rate_init=0.01, random_state=0)
        clf.fit(X, Y.astype(bool))
        pred = clf.predict(X)
        assert pred.dtype == bool and pred.shape == Y.shape
        assert clf.predict_proba(X).shape == Y.shape
        assert clf.score(X, Y.astype(bool)) > 0.6
        assert clf.classes_.tolist() == [0, 1, 2, 3]
        es = clone(clf).set_params(early_stopping=True).fit(X, Y)
        assert len(es.validation_scores_) >= 1
        with pytest.raises(ValueError, match="holds only 0 and 1"):
            clone(clf).fit(X, Y * 2)
        with pytest.raises(ValueError, match="multilabel indicator matrix of 0 and 1"):
            clone(clf).fit(X, Y * np.arange(1, 5))  # several values per column
        clf.set_params(warm_start=True)
        with pytest.raises(ValueError, match="keep the kind of y"):
            clf.fit(X, Y[:, 0])


def test_multilabel_on_dask():
    pytest.importorskip("dask")
    import dask.array as da

    from fastmlp.dask import predict, predict_proba

    rng = rng_for("bce-dask")
    X, Y = multilabel_data(rng, 90, dtype=np.float32)
    model = fastmlp.train(X, Y, hidden=(7,), epochs=2, seed=0)
    dX = da.from_array(X, chunks=(40, 6))
    labels = predict(model, dX)
    assert labels.shape == Y.shape and labels.dtype == np.int64
    np.testing.assert_array_equal(labels.compute(scheduler="threads"), model.predict(X))
    np.testing.assert_allclose(
        predict_proba(model, dX).compute(scheduler="threads"), model.predict_proba(X)
    )
