"""normalization="layer": LayerNorm between each hidden Linear part and its activation.

The kernels against the NumPy reference, prediction and gradients of whole networks against
``reference.forward`` / ``reference.loss_and_gradients`` with ``norms``, finite differences
of every parameter (gamma and beta included) in float64 and float32, training steps with
dropout against ``reference.train_step``, bitwise equality across thread counts, and the
model's life outside training: saving, Dask, int8 (refused); what it shares with BatchNorm
(learning end to end, scikit-learn, ONNX, C) is in test_normalization.py.
"""

from __future__ import annotations

import zlib

import numpy as np
import pytest
from test_network import fresh_trainer

import fastmlp
from fastmlp import MLP
from fastmlp import _kernels as K
from fastmlp import reference as R

DTYPES = [np.float64, np.float32]
TOL = {np.float64: 1e-11, np.float32: 2e-5}
ACTS = ["identity", "relu", "tanh", "sigmoid"]


def rng_for(*key) -> np.random.Generator:
    return np.random.default_rng([zlib.crc32(repr(key).encode()), 31])


def norm_model(
    rng, sizes, dtype, activation="relu", loss="cross_entropy", out_act=None, normalization="layer"
):
    """A LayerNorm (or other normalization's) model with random weights, and random gamma
    (around 1) and beta."""
    weights = [
        (rng.standard_normal((a, b)) / np.sqrt(a)).astype(dtype)
        for a, b in zip(sizes[:-1], sizes[1:])
    ]
    biases = [(0.3 * rng.standard_normal(b)).astype(dtype) for b in sizes[1:]]
    classes = None if loss == "squared_error" else np.arange(sizes[-1])
    model = MLP.from_weights(
        weights,
        biases,
        activation=activation,
        loss=loss,
        output_activation=out_act,
        classes=classes,
        dtype=dtype,
        normalization=normalization,
    )
    for gamma, beta in zip(model.norm_weights, model.norm_biases):
        gamma[...] = 1 + 0.3 * rng.standard_normal(gamma.shape)
        beta[...] = 0.3 * rng.standard_normal(beta.shape)
    return model


def ref_params(model):
    """The model's parameters in float64, as the reference takes them."""
    f64 = [[p.astype(np.float64) for p in ps] for ps in (model.weights, model.biases)]
    norms = [
        (g.astype(np.float64), b.astype(np.float64))
        for g, b in zip(model.norm_weights, model.norm_biases)
    ]
    return f64[0], f64[1], norms


def acts_of(model):
    return [*model.activations, model.output_activation]


# -- kernels ------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("act", ACTS)
@pytest.mark.parametrize("n,m", [(1, 1), (1, 2), (3, 7), (5, 16), (4, 33), (2, 300)])
def test_kernels_match_reference(n, m, act, dtype):
    rng = rng_for("kernel", n, m, act, str(dtype))
    # A large mean against the spread: the two-pass variance must not cancel.
    Z = (rng.standard_normal((n, m)) * 2 + 50).astype(dtype)
    gamma = (1 + 0.5 * rng.standard_normal(m)).astype(dtype)
    beta = rng.standard_normal(m).astype(dtype)
    want, zhat_ref, rstd_ref = R.layer_norm(
        Z.astype(np.float64), gamma.astype(np.float64), beta.astype(np.float64), 1e-5, act
    )
    got = Z.copy()
    zhat, rstd = K.layer_norm(got, gamma, beta, 1e-5, act)
    tol = TOL[dtype] * 10
    np.testing.assert_allclose(got, want, rtol=tol, atol=tol)
    np.testing.assert_allclose(zhat, zhat_ref, rtol=tol, atol=tol)
    np.testing.assert_allclose(rstd, rstd_ref, rtol=tol)
    if m > 1:  # normalized: mean 0, variance 1 (less eps's share)
        np.testing.assert_allclose(zhat.mean(axis=1), 0, atol=tol * 10)

    dY = rng.standard_normal((n, m)).astype(dtype)
    dZ_ref, dgamma_ref, dbeta_ref = R.layer_norm_backward(
        dY.astype(np.float64), zhat_ref, rstd_ref, gamma.astype(np.float64)
    )
    D, H = dY.copy(), zhat.copy()
    G = K.layer_norm_backward(gamma, rstd, H, D)
    # The size of the terms dZ is the difference of (with m = 2 they nearly cancel).
    scale = np.max(rstd_ref) * np.max(np.abs(gamma * dY))
    np.testing.assert_allclose(D, dZ_ref, rtol=tol, atol=tol * scale)
    assert np.array_equal(G, dY)  # kept as given: dbeta's rows
    np.testing.assert_allclose(H.sum(axis=0), dgamma_ref, rtol=tol, atol=tol * n)
    np.testing.assert_allclose(G.sum(axis=0), dbeta_ref, rtol=tol, atol=tol * n)


def test_one_unit_normalizes_to_beta():
    """A row of one value has no spread: zhat is 0, the output is act(beta)."""
    Z = np.array([[3.0], [-7.0]])
    K.layer_norm(Z, np.array([2.0]), np.array([0.25]), 1e-5, "identity")
    assert np.array_equal(Z, [[0.25], [0.25]])


# -- whole networks -----------------------------------------------------------------------

SHAPES = [(4, 5, 3), (7, 9, 5, 2), (6, 17, 8, 33, 5, 4)]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("sizes", SHAPES, ids=lambda s: "-".join(map(str, s)))
@pytest.mark.parametrize("n", [1, 2, 37, 300])
def test_predict_matches_reference(n, sizes, dtype):
    """One row (fm_vecmat), a few (fm_dense), many (parallel blocks); per-layer activations."""
    rng = rng_for("predict", n, sizes, str(dtype))
    acts = ["relu", "tanh", "sigmoid", "relu"][: len(sizes) - 2]
    model = norm_model(rng, sizes, dtype, activation=acts)
    X = rng.standard_normal((n, sizes[0])).astype(dtype)
    W, b, norms = ref_params(model)
    want = R.softmax(R.forward(W, b, X.astype(np.float64), acts_of(model), norms=norms)[-1])
    got = model.predict_proba(X, n_threads=2)
    np.testing.assert_allclose(got, want, rtol=TOL[dtype], atol=TOL[dtype])
    assert np.array_equal(got, model.predict_proba(X, n_threads=1))
    # Without the norms the network computes something else: the norms are applied.
    plain = R.softmax(R.forward(W, b, X.astype(np.float64), acts_of(model))[-1])
    assert np.max(np.abs(plain - want)) > 1e-3


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("sizes", SHAPES, ids=lambda s: "-".join(map(str, s)))
@pytest.mark.parametrize(
    "loss,activation,out_act",
    [
        ("cross_entropy", "relu", None),
        ("cross_entropy", "tanh", None),
        ("squared_error", "sigmoid", None),
        ("mse", "relu", "sigmoid"),
    ],
)
def test_gradients_match_reference(loss, activation, out_act, sizes, dtype):
    rng = rng_for("grad", loss, activation, sizes, str(dtype))
    model = norm_model(rng, sizes, dtype, activation, loss, out_act)
    n = 23
    X = rng.standard_normal((n, sizes[0])).astype(dtype)
    y = rng.standard_normal((n, sizes[-1])) if loss == "squared_error" else rng.integers(0, 2, n)
    w = rng.uniform(0, 2, n).astype(dtype)
    W, b, norms = ref_params(model)
    f_ref, dW_ref, db_ref, dn_ref = R.loss_and_gradients(
        W, b, X.astype(np.float64), y, acts_of(model), loss, 0.03, w.astype(np.float64),
        norms=norms,
    )  # fmt: skip
    f, dW, db, dn = model.loss_and_gradients(X, y, sample_weight=w, l2=0.03, n_threads=2)
    tol = TOL[dtype]
    assert f == pytest.approx(f_ref, rel=tol)
    got = dW + db + [g for pair in dn for g in pair]
    want = dW_ref + db_ref + [g for pair in dn_ref for g in pair]
    assert len(dn) == len(sizes) - 2
    scale = max(np.max(np.abs(g)) for g in want)
    for a, e in zip(got, want):
        assert a.shape == e.shape and a.dtype == np.dtype(dtype)
        np.testing.assert_allclose(a, e, rtol=tol * 10, atol=tol * 10 * scale)
    for g, _ in dn:  # gamma's gradient is not trivially zero
        assert np.max(np.abs(g)) > 1e-4


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("hidden", [(5,), (6, 4, 3, 7)], ids=str)
@pytest.mark.parametrize("activation", ["tanh", "sigmoid"])
@pytest.mark.parametrize("loss", ["cross_entropy", "squared_error"])
def test_finite_differences(loss, activation, hidden, dtype):
    """Central differences of the fast loss against the fast gradient, every parameter
    (weights, biases, gamma, beta) of the flat buffer."""
    rng = rng_for("fd", loss, activation, hidden, str(dtype))
    sizes = (4, *hidden, 3)
    model = norm_model(rng, sizes, dtype, activation, loss)
    n = 11
    X = rng.standard_normal((n, 4)).astype(dtype)
    y = rng.standard_normal((n, 3)) if loss == "squared_error" else rng.integers(0, 3, n)
    assert fd_relative_error(model, X, y) < (1e-6 if dtype == np.float64 else 2e-2)


def fd_relative_error(model, X, y) -> float:
    """Relative error of central differences of the fast loss against the fast gradient
    over every parameter of the flat buffer (weights, biases, gamma, beta), in norm."""
    dtype = model.dtype
    _, dW, db, dn = model.loss_and_gradients(X, y, n_threads=1)
    p = model.params_
    analytic = np.zeros(p.size)
    for grads, views in ((dW, model.weights), (db, model.biases)):
        for g, v in zip(grads, views):
            analytic[_offset(p, v) : _offset(p, v) + v.size] = g.ravel()
    for (dg, dbeta), g, beta in zip(dn, model.norm_weights, model.norm_biases):
        analytic[_offset(p, g) : _offset(p, g) + g.size] = dg
        analytic[_offset(p, beta) : _offset(p, beta) + beta.size] = dbeta
    step = 1e-6 if dtype == np.float64 else 1e-2
    numeric = np.empty(p.size)
    for j in range(p.size):
        saved = p[j]
        p[j] = saved + step
        x_up, up = float(p[j]), model.loss_and_gradients(X, y, n_threads=1)[0]
        p[j] = saved - step
        x_down, down = float(p[j]), model.loss_and_gradients(X, y, n_threads=1)[0]
        p[j] = saved
        numeric[j] = (up - down) / (x_up - x_down)  # the steps float32 could take
    assert np.linalg.norm(analytic) > 1e-2  # not trivially passing
    return float(np.linalg.norm(numeric - analytic) / np.linalg.norm(analytic))


def _offset(buffer: np.ndarray, view: np.ndarray) -> int:
    """Index in `buffer` where `view` (a view of it) starts."""
    return (view.__array_interface__["data"][0] - buffer.__array_interface__["data"][0]) // (
        buffer.itemsize
    )


@pytest.mark.parametrize("dtype", DTYPES)
# (300, 450, 7): a first W beyond 512 KB, whose forward runs over the batch's columns.
@pytest.mark.parametrize("sizes", [(5, 7, 4), (9, 16, 15, 31, 3), (300, 450, 7)], ids=str)
def test_training_steps_with_dropout_match_reference(sizes, dtype):
    """Adam steps with dropout and L2: the reference given the Trainer's masks updates W,
    b, gamma and beta the same way."""
    rng = rng_for("steps", sizes, str(dtype))
    model = norm_model(rng, sizes, dtype)
    n, B, p, l2 = 57, 19, 0.3, 0.01
    X = rng.standard_normal((n, sizes[0])).astype(dtype)
    y = rng.integers(0, sizes[-1], n)
    W, b, norms = ref_params(model)
    trainer = fresh_trainer(model, X, y, B, n_threads=2, l2=l2, dropout=p)
    state: dict = {}
    beta_before = model.norm_biases[-1].copy()
    for step in range(3):
        batch = rng.permutation(n)[:B]
        loss = trainer.step(batch, 0.01, 99 + step)
        masks = [m.astype(np.float64) for m in trainer.dropout_masks()]
        penalty = 0.5 * l2 * sum(float(np.sum(w**2)) for w in W)
        ref_loss = R.train_step(
            W, b, state, X[batch].astype(np.float64), y[batch], acts_of(model),
            lr=0.01, l2=l2, masks=masks, norms=norms,
        )  # fmt: skip
        tol = 1e-10 if dtype == np.float64 else 2e-4
        assert loss == pytest.approx(ref_loss - penalty, rel=tol)
        got = model.weights + model.biases + model.norm_weights + model.norm_biases
        want = W + b + [g for g, _ in norms] + [be for _, be in norms]
        for a, e in zip(got, want):
            np.testing.assert_allclose(a, e, rtol=tol, atol=tol * 3)
    assert np.max(np.abs(model.norm_biases[-1] - beta_before)) > 1e-3  # beta was updated


@pytest.mark.parametrize("dtype", DTYPES)
def test_training_is_bitwise_identical_for_any_thread_count(dtype):
    rng = rng_for("threads", str(dtype))
    X = rng.standard_normal((300, 13)).astype(dtype)
    y = rng.integers(0, 4, 300)
    models = [
        fastmlp.train(
            X, y, hidden=(33, 17), normalization="layer", dropout=0.1, epochs=2,
            batch_size=64, seed=5, dtype=dtype, n_threads=t,
        )
        for t in (1, 2)
    ]  # fmt: skip
    assert np.array_equal(models[0].params_, models[1].params_)
    assert not np.array_equal(models[0].norm_weights[0], np.ones(33, dtype))


def test_sparse_input_matches_dense():
    sparse = pytest.importorskip("scipy.sparse")
    rng = rng_for("sparse")
    X = rng.standard_normal((120, 30)) * (rng.random((120, 30)) < 0.1)
    y = rng.integers(0, 3, 120)
    options = dict(hidden=(16, 8), normalization="layer", epochs=2, seed=3, dtype=np.float64)
    dense = fastmlp.train(X, y, **options)
    csr = fastmlp.train(sparse.csr_matrix(X), y, **options)
    np.testing.assert_allclose(csr.params_, dense.params_, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(csr.predict_proba(sparse.csr_matrix(X)), dense.predict_proba(X))


def test_invariant_to_the_scale_of_a_hidden_layer():
    """LayerNorm undoes a positive scale of the Linear part before it (up to eps): the
    property that makes it robust to badly scaled weights and inputs."""
    rng = rng_for("scale")
    model = norm_model(rng, (6, 10, 8, 3), np.float64, activation="tanh")
    X = rng.standard_normal((50, 6))
    before = model.predict_proba(X)
    model.weights[0][...] *= 40.0
    model.biases[0][...] *= 40.0
    # Not exact: eps (1e-5) weighs 1600x less against the scaled variance.
    np.testing.assert_allclose(model.predict_proba(X), before, rtol=1e-4, atol=1e-6)
    model.weights[0][...] *= -1  # a negative scale is not undone
    assert np.max(np.abs(model.predict_proba(X) - before)) > 1e-2


# -- the model outside training -----------------------------------------------------------


def test_save_load_round_trip(tmp_path):
    rng = rng_for("save")
    X = rng.standard_normal((80, 5)).astype(np.float32)
    y = rng.integers(0, 3, 80)
    model = fastmlp.train(X, y, hidden=(7, 6), normalization="layer", epochs=2, seed=1)
    path = tmp_path / "m.npz"
    model.save(path)
    loaded = fastmlp.load(path)
    assert loaded.normalization == "layer"
    assert np.array_equal(loaded.params_, model.params_)
    assert np.array_equal(loaded.predict_proba(X), model.predict_proba(X))
    with np.load(path) as f:
        assert int(f["version"]) == 4
    # Training goes on from the saved optimizer state.
    loaded.fit_more(X, y, epochs=1)
    # A plain model is still written in the oldest version that holds it.
    fastmlp.train(X, y, hidden=(7,), epochs=1).save(tmp_path / "plain.npz")
    with np.load(tmp_path / "plain.npz") as f:
        assert int(f["version"]) == 1


def _rewrite(path, out, **changes):
    import json

    with np.load(path) as f:
        arrays = {k: f[k] for k in f.files}
    meta = json.loads(str(arrays["meta"]))
    for key, value in changes.items():
        if key == "version":
            arrays["version"] = np.array(value, dtype=np.int64)
        elif value is None:
            meta.pop(key)
        else:
            meta[key] = value
    arrays["meta"] = np.array(json.dumps(meta))
    np.savez(out, **arrays)


@pytest.mark.parametrize(
    "changes,message",
    [
        ({"normalization": "group"}, "normalization must be one of"),
        ({"normalization": 1}, "normalization must be one of"),
        ({"version": 3}, "format version 3 holds no normalization"),
        ({"normalization": None}, "n_params"),  # the buffer no longer fits the layers
    ],
)
def test_load_refuses_a_bad_normalization(tmp_path, changes, message):
    rng = rng_for("bad")
    X = rng.standard_normal((40, 5)).astype(np.float32)
    model = fastmlp.train(X, rng.integers(0, 2, 40), hidden=(6,), normalization="layer", epochs=1)
    model.save(tmp_path / "m.npz")
    _rewrite(tmp_path / "m.npz", tmp_path / "bad.npz", **changes)
    with pytest.raises(ValueError, match=message):
        fastmlp.load(tmp_path / "bad.npz")


def test_dask_streaming():
    da = pytest.importorskip("dask.array")
    import fastmlp.dask

    rng = rng_for("dask")
    X = rng.standard_normal((120, 5))
    y = rng.integers(0, 3, 120)
    options = dict(hidden=(7,), normalization="layer", epochs=2, seed=4, shuffle=False)
    model = fastmlp.dask.train(da.from_array(X, chunks=(60, 5)), y, **options)
    assert model.normalization == "layer"
    assert not np.array_equal(model.norm_weights[0], np.ones(7))  # trained, from 1


def test_quantize_refuses_normalization():
    rng = rng_for("int8")
    X = rng.standard_normal((200, 5)).astype(np.float32)
    model = fastmlp.train(X, rng.integers(0, 2, 200), hidden=(6,), normalization="layer", epochs=1)
    with pytest.raises(ValueError, match="normalization"):
        fastmlp.quantize(model, X)


def test_bad_normalization_values():
    X = np.zeros((10, 3), np.float32)
    y = np.arange(10) % 2
    for bad in ("group", "Layer", 1, True):
        with pytest.raises(ValueError, match="normalization must be None or one of"):
            fastmlp.train(X, y, normalization=bad)
    with pytest.raises(ValueError, match="normalization must be None or one of"):
        MLP((3, 4, 2), [0, 1], normalization="group")


def test_models_without_normalization_are_unchanged():
    model = MLP((3, 4, 2), [0, 1])
    assert model.normalization is None
    assert model.norm_weights == [] and model.norm_biases == []
    assert model.params_.size == 3 * 4 + 4 + 4 * 2 + 2
    assert MLP((3, 4, 2), [0, 1], normalization="layer").params_.size == 26 + 2 * 4
    assert len(model.loss_and_gradients(np.ones((2, 3)), [0, 1])) == 3
