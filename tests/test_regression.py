"""Regressors (loss="squared_error"): training, prediction, scoring, saving, bad input.

The kernel and the gradient are checked in test_kernels.py and test_gradients.py, whole
training steps against the reference in test_training.py (STEP_CASES).
"""

from __future__ import annotations

import pickle
import zipfile
import zlib

import numpy as np
import pytest

import fastmlp
from fastmlp import MLP


def rng_for(*key) -> np.random.Generator:
    return np.random.default_rng([zlib.crc32(repr(key).encode()), 99])


def smooth_problem(n=3000, dtype=np.float64, n_outputs=1, seed=0):
    """Inputs in [-2, 2]^3 and smooth targets a small network fits well."""
    rng = rng_for("smooth", n, n_outputs, seed)
    X = rng.uniform(-2, 2, (n, 3))
    targets = [np.sin(X[:, 0]) + X[:, 1] * X[:, 2], np.cos(X[:, 0]) - 0.5 * X[:, 2]]
    Y = np.stack(targets[:n_outputs], axis=1)
    return X.astype(dtype), (Y[:, 0] if n_outputs == 1 else Y).astype(dtype)


def fit(X, y, **options):
    defaults = dict(loss="squared_error", hidden=(32, 32), epochs=40, lr=3e-3, seed=0)
    return fastmlp.train(X, y, **{**defaults, **options})


@pytest.fixture(scope="module")
def fitted():
    X, y = smooth_problem()
    return fit(X[:2500], y[:2500], n_threads=1), X, y


def test_learns_a_smooth_function(fitted):
    model, X, y = fitted
    assert model.is_regressor and model.classes_ is None
    assert model.layer_sizes == (3, 32, 32, 1)
    r2 = model.score(X[2500:], y[2500:])
    assert r2 > 0.97
    pred = model.predict(X[2500:])
    assert pred.shape == (500,) and pred.dtype == np.float32
    # The loss in history is half the mean squared error, as scikit-learn defines it.
    final = 0.5 * np.mean((model.predict(X[:2500]) - y[:2500]) ** 2)
    assert model.history["loss"][-1] == pytest.approx(final, rel=0.5)
    assert set(model.history) == {"epoch", "loss", "seconds"}


def test_score_is_r2(fitted):
    model, X, y = fitted
    pred = model.predict(X).astype(np.float64)
    y = y.astype(np.float64)
    r2 = 1 - np.sum((y - pred) ** 2) / np.sum((y - y.mean()) ** 2)
    assert model.score(X, y) == pytest.approx(r2, rel=1e-12)
    w = rng_for("w").uniform(0, 2, len(y))
    mean = np.average(y, weights=w)
    r2w = 1 - np.sum(w * (y - pred) ** 2) / np.sum(w * (y - mean) ** 2)
    assert model.score(X, y, sample_weight=w) == pytest.approx(r2w, rel=1e-12)


def test_score_of_constant_targets_follows_scikit_learn():
    model = MLP.from_weights([np.zeros((2, 1))], [np.array([3.0])], loss="squared_error")
    X = np.ones((4, 2))
    assert model.score(X, np.full(4, 3.0)) == 1.0  # exact
    assert model.score(X, np.full(4, 2.0)) == 0.0  # constant but missed


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_several_outputs(dtype):
    X, Y = smooth_problem(2000, dtype, n_outputs=2)
    model = fit(X, Y, dtype=dtype, epochs=30)
    assert model.layer_sizes[-1] == 2
    pred = model.predict(X)
    assert pred.shape == (2000, 2) and pred.dtype == np.dtype(dtype)
    assert np.array_equal(pred, model.decision_function(X))
    assert model.score(X, Y) > 0.95
    # A one-column 2-D y gives the same network as the 1-D y.
    a = fit(X[:200], Y[:200, :1], epochs=2)
    b = fit(X[:200], Y[:200, 0], epochs=2)
    assert np.array_equal(a.params_, b.params_)


def test_sample_weight_zero_drops_samples():
    X, y = smooth_problem(600)
    w = np.ones(600)
    w[300:] = 0
    X_noise = X.copy()
    X_noise[300:] = 0  # the zero-weight half is garbage
    y_noise = y.copy()
    y_noise[300:] = 1e3
    a = fit(X_noise, y_noise, sample_weight=w, epochs=5, batch_size=600, n_threads=1)
    b = fit(X[:300], y[:300], epochs=5, batch_size=300, n_threads=1)
    np.testing.assert_allclose(a.params_, b.params_, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_thread_count_bitwise_identical(dtype):
    X, y = smooth_problem(1000, dtype)
    one = fit(X, y, epochs=3, n_threads=1, dtype=dtype, dropout=0.1)
    two = fit(X, y, epochs=3, n_threads=2, dtype=dtype, dropout=0.1)
    assert np.array_equal(one.params_, two.params_)
    assert one.history["loss"] == two.history["loss"]


def test_validation_and_early_stopping_restore_the_best_epoch():
    X, y = smooth_problem(1500)
    seen = []
    model = fit(
        X,
        y,
        epochs=60,
        lr=0.05,  # noisy on purpose: the validation loss goes up and down
        validation_split=0.2,
        early_stopping=True,
        patience=3,
        callbacks=[lambda f: seen.append(f["model"].params_.copy())],
    )
    hist = model.history
    assert set(hist) == {"epoch", "loss", "seconds", "val_loss"}
    assert model.stop_reason_ == "early_stopping"
    best = int(np.argmin(hist["val_loss"]))
    assert best < len(hist["val_loss"]) - 1
    assert np.array_equal(model.params_, seen[best])


def test_validation_data_loss_is_the_evaluated_loss(fitted):
    model, X, y = fitted
    Xv, yv = X[2500:], y[2500:]
    clone = fit(X[:200], y[:200], epochs=1, validation_data=(Xv, yv), n_threads=1)
    pred = clone.predict(Xv).astype(np.float64)
    expected = 0.5 * np.mean((pred - yv) ** 2)
    assert clone.history["val_loss"][-1] == pytest.approx(expected, rel=1e-5)


def test_fit_more_keeps_adam_state(fitted):
    model, X, y = fitted
    m = fit(X[:500], y[:500], epochs=2, n_threads=1)
    t = m._optimizer["t"]
    m.fit_more(X[:500], y[:500], epochs=1, n_threads=1)
    assert m._optimizer["t"] > t
    assert len(m.history["loss"]) == 3
    with pytest.raises(ValueError, match="has 2 outputs per sample but the model has 1"):
        m.fit_more(X[:10], np.zeros((10, 2)))


def test_save_load_and_pickle_round_trip(fitted, tmp_path):
    model, X, y = fitted
    path = tmp_path / "reg.npz"
    model.save(path)
    with np.load(path) as npz:
        assert int(npz["version"]) == 2
        assert npz["classes"].shape == (0,)
    loaded = fastmlp.load(path)
    assert loaded.is_regressor and loaded.classes_ is None
    assert np.array_equal(loaded.predict(X[:50]), model.predict(X[:50]))
    assert loaded._optimizer["t"] == model._optimizer["t"]
    again = pickle.loads(pickle.dumps(model))
    assert np.array_equal(again.predict(X[:50]), model.predict(X[:50]))


def test_classifier_files_stay_version_1(tmp_path):
    clf = MLP.from_weights([np.ones((2, 3))], [np.zeros(3)])
    clf.save(tmp_path / "clf.npz")
    with np.load(tmp_path / "clf.npz") as npz:
        assert int(npz["version"]) == 1


def _rewrite(src, dst, **replace):
    """Copy a model file, replacing some of its arrays."""
    with np.load(src) as npz:
        arrays = {k: npz[k] for k in npz.files}
    arrays.update(replace)
    np.savez(dst, **arrays)


def test_load_rejects_inconsistent_regressor_files(fitted, tmp_path):
    import json

    model = fitted[0]
    good = tmp_path / "good.npz"
    model.save(good, optimizer_state=False)
    with np.load(good) as npz:
        meta = json.loads(str(npz["meta"][()]))
    bad = tmp_path / "bad.npz"
    _rewrite(good, bad, version=np.array(1, dtype=np.int64))
    with pytest.raises(ValueError, match="format version 1 holds no regressors"):
        fastmlp.load(bad)
    _rewrite(good, bad, meta=np.array(json.dumps({**meta, "classes_kind": "int"})))
    with pytest.raises(ValueError, match="does not fit loss"):
        fastmlp.load(bad)
    _rewrite(good, bad, meta=np.array(json.dumps({**meta, "loss": "cross_entropy"})))
    with pytest.raises(ValueError, match="does not fit loss"):
        fastmlp.load(bad)
    _rewrite(good, bad, classes=np.zeros(1))
    with pytest.raises(ValueError, match="classes"):
        fastmlp.load(bad)
    assert zipfile.is_zipfile(good)


@pytest.mark.parametrize(
    "y, error, match",
    [
        (np.array(["a", "b"] * 50), TypeError, "must hold real numbers for regression"),
        (np.r_[np.nan, np.zeros(99)], ValueError, "NaN or infinity"),
        (np.r_[np.inf, np.zeros(99)], ValueError, "NaN or infinity"),
        (np.zeros(99), ValueError, "100 samples but 99 targets"),
        (np.zeros((100, 2, 1)), ValueError, "must be 1-D .* or 2-D"),
        (np.zeros((100, 0)), ValueError, "0 outputs"),
        (np.full(100, 1e39), ValueError, "NaN or infinity .*beyond float32"),
    ],
)
def test_bad_targets_raise(y, error, match):
    X = np.zeros((100, 3))
    with pytest.raises(error, match=match):
        fit(X, y, epochs=1)


def test_classifier_only_options_and_methods_are_refused(fitted):
    model, X, y = fitted
    with pytest.raises(ValueError, match="class_weight is for classifiers"):
        fit(X[:50], y[:50], class_weight="balanced")
    with pytest.raises(ValueError, match="needs a cross-entropy classifier.*use predict"):
        model.predict_proba(X[:2])
    with pytest.raises(ValueError, match="a regressor .* has no classes"):
        MLP((3, 1), [0], loss="squared_error")
    with pytest.raises(ValueError, match="a classifier needs its classes"):
        MLP((3, 2))
    with pytest.raises(ValueError, match="single class .* use loss='squared_error'"):
        fastmlp.train(X[:10], np.ones(10))
