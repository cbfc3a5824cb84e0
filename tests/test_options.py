"""Training options of issue 13: AdamW, label smoothing, per-layer activations, the
regression losses huber / absolute_error / poisson, and the estimators' validation sets.

Each is held to ``fastmlp.reference`` (kernels, gradients and whole steps), checked by
finite differences where it changes the gradient, and run through saving, the exports
and the scikit-learn estimators.
"""

from __future__ import annotations

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
    n_hidden = len(model.layer_sizes) - 2
    if isinstance(model.activation, str):
        return [model.activation] * n_hidden + [model.output_activation]
    return list(model.activation) + [model.output_activation]


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
