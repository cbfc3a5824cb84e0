"""normalization="batch": BatchNorm between each hidden Linear part and its activation.

The kernels against the NumPy reference (the partial statistics combined over row blocks,
normalization, inference, backward), whole networks against ``reference.forward`` /
``reference.loss_and_gradients`` with ``normalization="batch"`` (training mode: the batch's
statistics; prediction: the running ones), finite differences of every parameter in float64
and float32, training steps with dropout and the running statistics against
``reference.train_step``, bitwise equality across thread counts, the mini-batch of one
row, and the model's life outside training: saving (corrupted statistics refused),
pickling, scikit-learn, Dask, int8 (folded); what it shares with LayerNorm (learning end to
end, scikit-learn, ONNX, C) is in test_normalization.py.
"""

from __future__ import annotations

import json
import pickle
import zlib

import numpy as np
import pytest
from test_layer_norm import acts_of, fd_relative_error, norm_model, ref_params
from test_network import fresh_trainer

import fastmlp
from fastmlp import MLP
from fastmlp import _kernels as K
from fastmlp import reference as R

DTYPES = [np.float64, np.float32]
TOL = {np.float64: 1e-11, np.float32: 2e-5}
ACTS = ["identity", "relu", "tanh", "sigmoid"]


def rng_for(*key) -> np.random.Generator:
    return np.random.default_rng([zlib.crc32(repr(key).encode()), 37])


def bn_model(rng, sizes, dtype, activation="relu", loss="cross_entropy", out_act=None):
    """A BatchNorm model with random weights, gamma (around 1), beta and running
    statistics (means around 0, variances in [0.5, 2])."""
    model = norm_model(rng, sizes, dtype, activation, loss, out_act, normalization="batch")
    for mean, var in zip(model.running_means, model.running_vars):
        mean[...] = 0.5 * rng.standard_normal(mean.shape)
        var[...] = rng.uniform(0.5, 2, var.shape)
    return model


def ref_running(model):
    return [
        (m.astype(np.float64), v.astype(np.float64))
        for m, v in zip(model.running_means, model.running_vars)
    ]


# -- kernels ------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("act", ACTS)
@pytest.mark.parametrize("n,m,parts", [(2, 1, 1), (2, 3, 2), (3, 7, 3), (9, 16, 2), (40, 33, 5)])
def test_kernels_match_reference(n, m, parts, act, dtype):
    rng = rng_for("kernel", n, m, parts, act, str(dtype))
    # A large mean against the spread: the combined variance must not cancel.
    Z = (rng.standard_normal((n, m)) * 2 + 50).astype(dtype)
    gamma = (1 + 0.5 * rng.standard_normal(m)).astype(dtype)
    beta = rng.standard_normal(m).astype(dtype)
    Z64, g64 = Z.astype(np.float64), gamma.astype(np.float64)
    want, zhat_ref, rstd_ref, mean_ref, var_ref = R.batch_norm(
        Z64, g64, beta.astype(np.float64), 1e-5, act
    )
    tol = TOL[dtype] * 10
    run_mean = rng.standard_normal(m).astype(dtype)
    run_var = rng.uniform(0.5, 2, m).astype(dtype)
    rm_ref, rv_ref = run_mean.astype(np.float64), run_var.astype(np.float64)
    R.update_running_stats(rm_ref, rv_ref, mean_ref, var_ref, n)
    mean, rstd = K.batch_norm_stats(Z, parts, 1e-5, 0.1, run_mean, run_var)
    np.testing.assert_allclose(mean, mean_ref, rtol=tol)
    np.testing.assert_allclose(rstd, rstd_ref, rtol=tol * 10)
    np.testing.assert_allclose(run_mean, rm_ref, rtol=tol, atol=tol)
    np.testing.assert_allclose(run_var, rv_ref, rtol=tol * 10)

    got = Z.copy()
    zhat = K.batch_norm(got, mean, rstd, gamma, beta, act)
    np.testing.assert_allclose(got, want, rtol=tol * 10, atol=tol * 10)
    np.testing.assert_allclose(zhat, zhat_ref, rtol=tol * 10, atol=tol * 10)

    got = Z.copy()
    K.batch_norm_eval(got, run_mean, run_var, gamma, beta, 1e-5, act)
    want_eval = R.batch_norm_eval(
        Z64, g64, beta.astype(np.float64), run_mean, run_var.astype(np.float64), 1e-5, act
    )
    np.testing.assert_allclose(got, want_eval, rtol=tol * 100, atol=tol * 100)

    dY = rng.standard_normal((n, m)).astype(dtype)
    dZ_ref, dgamma_ref, dbeta_ref = R.batch_norm_backward(
        dY.astype(np.float64), zhat_ref, rstd_ref, g64
    )
    D = dY.copy()
    dgamma, dbeta = K.batch_norm_backward(D, zhat, gamma, rstd, parts)
    scale = np.max(rstd_ref) * np.max(np.abs(gamma)) * np.max(np.abs(dY))
    np.testing.assert_allclose(D, dZ_ref, rtol=tol * 10, atol=tol * 10 * scale)
    np.testing.assert_allclose(dgamma, dgamma_ref, rtol=tol, atol=tol * n)
    np.testing.assert_allclose(dbeta, dbeta_ref, rtol=tol, atol=tol * n)


def test_stats_do_not_depend_much_on_the_parts():
    """Blocks change the rounding only; the same parts give the same bits."""
    rng = rng_for("parts")
    Z = rng.standard_normal((37, 11)) * 3 + 5
    one = K.batch_norm_stats(Z, 1, 1e-5)
    for parts in (2, 5, 37):
        many = K.batch_norm_stats(Z, parts, 1e-5)
        np.testing.assert_allclose(many[0], one[0], rtol=1e-14)
        np.testing.assert_allclose(many[1], one[1], rtol=1e-13)
        again = K.batch_norm_stats(Z, parts, 1e-5)
        assert all(np.array_equal(a, b) for a, b in zip(again, many))


def test_eval_kernel_chunks_wide_layers():
    """fm_batch_norm_eval works through 256 columns at a time: 600 columns, 3 chunks."""
    rng = rng_for("wide")
    Z = rng.standard_normal((3, 600))
    mean, var = rng.standard_normal(600), rng.uniform(0.5, 2, 600)
    gamma, beta = rng.standard_normal(600), rng.standard_normal(600)
    got = Z.copy()
    K.batch_norm_eval(got, mean, var, gamma, beta, 1e-5, "tanh")
    want = R.batch_norm_eval(Z, gamma, beta, mean, var, 1e-5, "tanh")
    np.testing.assert_allclose(got, want, rtol=1e-13, atol=1e-14)


# -- whole networks -----------------------------------------------------------------------

SHAPES = [(4, 5, 3), (7, 9, 5, 2), (6, 17, 8, 33, 5, 4)]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("sizes", SHAPES, ids=lambda s: "-".join(map(str, s)))
@pytest.mark.parametrize("n", [1, 2, 37, 300])
def test_predict_uses_the_running_statistics(n, sizes, dtype):
    """Prediction (one row, a few, many in parallel blocks) against the reference in
    inference mode: the running statistics, not the batch's."""
    rng = rng_for("predict", n, sizes, str(dtype))
    acts = ["relu", "tanh", "sigmoid", "relu"][: len(sizes) - 2]
    model = bn_model(rng, sizes, dtype, activation=acts)
    X = rng.standard_normal((n, sizes[0])).astype(dtype)
    W, b, norms = ref_params(model)
    X64 = X.astype(np.float64)
    running = ref_running(model)
    want = R.softmax(
        R.forward(W, b, X64, acts_of(model), norms=norms, normalization="batch", running=running)[
            -1
        ]
    )
    got = model.predict_proba(X, n_threads=2)
    np.testing.assert_allclose(got, want, rtol=TOL[dtype] * 10, atol=TOL[dtype] * 10)
    assert np.array_equal(got, model.predict_proba(X, n_threads=1))
    # A row's prediction does not depend on the other rows (no batch statistics).
    np.testing.assert_allclose(model.predict_proba(X[:1]), got[:1], rtol=1e-5, atol=1e-6)
    if n > 1:  # the batch's statistics give something else
        train = R.softmax(
            R.forward(W, b, X64, acts_of(model), norms=norms, normalization="batch")[-1]
        )
        assert np.max(np.abs(train - want)) > 1e-3


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
@pytest.mark.parametrize("n", [2, 23, 200])
def test_gradients_match_reference(n, loss, activation, out_act, sizes, dtype):
    """Training mode over all the rows (one mini-batch; 200 rows: 25 row blocks), sample
    weights (which do not weight the statistics) and L2; the running statistics stay."""
    rng = rng_for("grad", n, loss, activation, sizes, str(dtype))
    model = bn_model(rng, sizes, dtype, activation, loss, out_act)
    X = rng.standard_normal((n, sizes[0])).astype(dtype)
    y = rng.standard_normal((n, sizes[-1])) if loss == "squared_error" else rng.integers(0, 2, n)
    w = rng.uniform(0, 2, n).astype(dtype)
    W, b, norms = ref_params(model)
    stats_before = model._network.stats.copy()
    f_ref, dW_ref, db_ref, dn_ref = R.loss_and_gradients(
        W, b, X.astype(np.float64), y, acts_of(model), loss, 0.03, w.astype(np.float64),
        norms=norms, normalization="batch",
    )  # fmt: skip
    f, dW, db, dn = model.loss_and_gradients(X, y, sample_weight=w, l2=0.03, n_threads=2)
    tol = TOL[dtype] * (10 if n < 200 else 100)
    assert f == pytest.approx(f_ref, rel=tol)
    got = dW + db + [g for pair in dn for g in pair]
    want = dW_ref + db_ref + [g for pair in dn_ref for g in pair]
    assert len(dn) == len(sizes) - 2
    scale = max(np.max(np.abs(g)) for g in want)
    for a, e in zip(got, want):
        assert a.shape == e.shape and a.dtype == np.dtype(dtype)
        np.testing.assert_allclose(a, e, rtol=tol * 10, atol=tol * 10 * scale)
    for g, _ in dn if n > 2 else ():  # gamma's gradient is not trivially zero (2 rows
        assert np.max(np.abs(g)) > 1e-4  # normalize to +-1: deep layers can lose it)
    assert np.array_equal(model._network.stats, stats_before)
    # The same bits for one thread.
    f1, dW1, *_ = model.loss_and_gradients(X, y, sample_weight=w, l2=0.03, n_threads=1)
    assert f1 == f and all(np.array_equal(a, c) for a, c in zip(dW1, dW))


@pytest.mark.parametrize("n,dtype", [(2, np.float64), (19, np.float64), (19, np.float32)])
@pytest.mark.parametrize("hidden", [(5,), (6, 4, 3, 7)], ids=str)
@pytest.mark.parametrize("activation", ["tanh", "sigmoid"])
@pytest.mark.parametrize("loss", ["cross_entropy", "squared_error"])
def test_finite_differences(n, loss, activation, hidden, dtype):
    """Central differences of the fast training-mode objective against the fast gradient,
    every parameter (weights, biases, gamma, beta) of the flat buffer; 19 rows make 2 row
    blocks, 2 rows the smallest batch (float64 only: with 2 rows every unit normalizes to
    about +-1, and float32's steps of 1e-2 meet a nearly flat objective)."""
    rng = rng_for("fd", n, loss, activation, hidden, str(dtype))
    sizes = (4, *hidden, 3)
    model = bn_model(rng, sizes, dtype, activation, loss)
    X = rng.standard_normal((n, 4)).astype(dtype)
    y = rng.standard_normal((n, 3)) if loss == "squared_error" else rng.integers(0, 3, n)
    assert fd_relative_error(model, X, y) < (1e-6 if dtype == np.float64 else 3e-2)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("sizes", [(5, 7, 4), (9, 16, 15, 31, 3)], ids=str)
@pytest.mark.parametrize("optimizer", ["adam", "sgd"])
def test_training_steps_with_dropout_match_reference(optimizer, sizes, dtype):
    """Steps with dropout and L2: the reference given the Trainer's masks updates W, b,
    gamma, beta and the running statistics (once per step) the same way."""
    rng = rng_for("steps", optimizer, sizes, str(dtype))
    model = bn_model(rng, sizes, dtype)
    n, B, p, l2 = 57, 19, 0.3, 0.01
    X = rng.standard_normal((n, sizes[0])).astype(dtype)
    y = rng.integers(0, sizes[-1], n)
    W, b, norms = ref_params(model)
    running = ref_running(model)
    # The hidden biases' true gradient is 0 (BatchNorm removes any shift): both compute
    # rounding noise, which Adam with eps 1e-8 would scale up to steps of lr in float32.
    eps = 1e-3
    trainer = fresh_trainer(model, X, y, B, optimizer, eps, n_threads=2, l2=l2, dropout=p)
    state: dict = {}
    beta_before = model.norm_biases[-1].copy()
    for step in range(3):
        batch = rng.permutation(n)[:B]
        loss = trainer.step(batch, 0.01, 99 + step)
        masks = [m.astype(np.float64) for m in trainer.dropout_masks()]
        penalty = 0.5 * l2 * sum(float(np.sum(w**2)) for w in W)
        ref_loss = R.train_step(
            W, b, state, X[batch].astype(np.float64), y[batch], acts_of(model),
            optimizer=optimizer, lr=0.01, eps=eps, l2=l2, masks=masks, norms=norms,
            normalization="batch", running=running,
        )  # fmt: skip
        tol = 1e-10 if dtype == np.float64 else 2e-4
        assert loss == pytest.approx(ref_loss - penalty, rel=tol)
        got = model.weights + model.biases + model.norm_weights + model.norm_biases
        want = W + b + [g for g, _ in norms] + [be for _, be in norms]
        got += model.running_means + model.running_vars
        want += [m for m, _ in running] + [v for _, v in running]
        for a, e in zip(got, want):
            np.testing.assert_allclose(a, e, rtol=tol, atol=tol * 3)
    assert np.max(np.abs(model.norm_biases[-1] - beta_before)) > 1e-3  # beta was updated


def test_running_statistics_follow_pytorch_momentum():
    """Without parameter updates (lr 0), k steps on the same batch move the running mean
    to (1 - 0.9^k) * mean and the variance to 0.9^k + (1 - 0.9^k) * unbiased var."""
    rng = rng_for("momentum")
    model = MLP((3, 4, 2), np.arange(2), dtype=np.float64, normalization="batch")
    model.params_[...] = rng.standard_normal(model.params_.size)
    X = rng.standard_normal((10, 3))
    y = rng.integers(0, 2, 10).astype(np.int32)
    trainer = fresh_trainer(model, X, y, 10, "sgd")
    Z = X @ model.weights[0] + model.biases[0]
    for _ in range(3):
        trainer.step(np.arange(10), 0.0, 1)
    k = 0.9**3
    np.testing.assert_allclose(model.running_means[0], (1 - k) * Z.mean(axis=0), rtol=1e-12)
    np.testing.assert_allclose(
        model.running_vars[0], k + (1 - k) * Z.var(axis=0, ddof=1), rtol=1e-12
    )


@pytest.mark.parametrize("dtype", DTYPES)
def test_training_is_bitwise_identical_for_any_thread_count(dtype):
    """Row blocks of 16 rows (8 per batch of 128 in the first layers' statistics), three
    BatchNorm layers, dropout, validation on the running statistics."""
    rng = rng_for("threads", str(dtype))
    X = rng.standard_normal((600, 13)).astype(dtype)
    y = rng.integers(0, 4, 600)
    models = [
        fastmlp.train(
            X, y, hidden=(33, 17, 9), normalization="batch", dropout=0.1, epochs=2,
            batch_size=128, seed=5, dtype=dtype, n_threads=t, validation_split=0.2,
        )
        for t in (1, 2)
    ]  # fmt: skip
    assert np.array_equal(models[0].params_, models[1].params_)
    assert np.array_equal(models[0]._network.stats, models[1]._network.stats)
    assert models[0].history["val_loss"] == models[1].history["val_loss"]
    assert not np.array_equal(models[0].norm_weights[0], np.ones(33, dtype))
    assert not np.array_equal(models[0].running_means[0], np.zeros(33, dtype))


def test_validation_scores_use_the_running_statistics():
    """The last epoch's val_loss is the cross-entropy of predict_proba on the validation
    set (running statistics), and early stopping restores the best epoch's statistics
    with its parameters."""
    rng = rng_for("validation")
    X = rng.standard_normal((300, 6))
    y = (X[:, 0] + X[:, 1] ** 2 > 1).astype(int)
    Xv, yv = X[200:], y[200:]
    options = dict(hidden=(12, 8), normalization="batch", seed=2, dtype=np.float64)
    model = fastmlp.train(X[:200], y[:200], epochs=3, validation_data=(Xv, yv), **options)
    p = model.predict_proba(Xv)[np.arange(100), yv]
    assert model.history["val_loss"][-1] == pytest.approx(-np.mean(np.log(p)), rel=1e-10)
    # Early stopping: the restored model scores the best epoch's val_loss.
    model = fastmlp.train(
        X[:200], y[:200], epochs=30, lr=0.05, validation_data=(Xv, yv), early_stopping=True,
        patience=2, **options,
    )  # fmt: skip
    p = model.predict_proba(Xv)[np.arange(100), yv]
    assert -np.mean(np.log(p)) == pytest.approx(min(model.history["val_loss"]), rel=1e-10)


def test_a_last_batch_of_one_row_is_skipped():
    rng = rng_for("one row")
    model = MLP((3, 4, 2), np.arange(2), dtype=np.float64, normalization="batch")
    model.params_[...] = rng.standard_normal(model.params_.size)
    X = rng.standard_normal((17, 3))
    y = rng.integers(0, 2, 17)
    trainer = fresh_trainer(model, X, y, 8, "sgd", n_threads=2)
    *_, n_seen, status = trainer.epoch(np.arange(17, dtype=np.int64), 0.01, 3)
    assert n_seen == 16 and status == 0 and trainer.t == 2
    with pytest.raises(ValueError, match="at least 2 samples"):
        trainer.step([4], 0.01, 1)
    # train: every epoch's last row is another one (shuffled), training goes on.
    model = fastmlp.train(X, y, hidden=(4,), normalization="batch", batch_size=8, epochs=2)
    assert np.isfinite(model.history["loss"]).all()


def test_sparse_input_matches_dense():
    sparse = pytest.importorskip("scipy.sparse")
    rng = rng_for("sparse")
    X = rng.standard_normal((120, 30)) * (rng.random((120, 30)) < 0.1)
    y = rng.integers(0, 3, 120)
    options = dict(hidden=(16, 8), normalization="batch", epochs=2, seed=3, dtype=np.float64)
    dense = fastmlp.train(X, y, **options)
    csr = fastmlp.train(sparse.csr_matrix(X), y, **options)
    # The hidden biases' gradients are 0 up to rounding (BatchNorm removes any shift), which
    # Adam scales up to steps of ~1e-12: an absolute tolerance for them.
    np.testing.assert_allclose(csr.params_, dense.params_, rtol=1e-9, atol=1e-10)
    np.testing.assert_allclose(csr._network.stats, dense._network.stats, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(csr.predict_proba(sparse.csr_matrix(X)), dense.predict_proba(X))


# -- the model outside training -----------------------------------------------------------


def _trained(rng, dtype=np.float32, hidden=(7, 6)):
    X = rng.standard_normal((80, 5)).astype(dtype)
    y = rng.integers(0, 3, 80)
    return X, y, fastmlp.train(X, y, hidden=hidden, normalization="batch", epochs=2, seed=1)


def test_save_load_and_pickle_round_trip(tmp_path):
    rng = rng_for("save")
    X, y, model = _trained(rng)
    path = tmp_path / "m.npz"
    model.save(path)
    for loaded in (fastmlp.load(path), pickle.loads(pickle.dumps(model))):
        assert loaded.normalization == "batch"
        assert np.array_equal(loaded.params_, model.params_)
        for a, b in zip(loaded.running_vars, model.running_vars):
            assert np.array_equal(a, b)
        assert np.array_equal(loaded._network.stats, model._network.stats)
        assert np.array_equal(loaded.predict_proba(X), model.predict_proba(X))
    with np.load(path) as f:
        assert int(f["version"]) == 4
        assert f["running_means"].shape == (13,) and f["running_vars"].shape == (13,)
    # Training goes on from the saved optimizer state, and moves the statistics.
    loaded = fastmlp.load(path)
    loaded.fit_more(X, y, epochs=1)
    assert not np.array_equal(loaded.running_means[0], model.running_means[0])
    # Setting new parameters keeps the running statistics.
    before = model._network.stats.copy()
    model.params_ = model.params_.copy()
    assert np.array_equal(model._network.stats, before)


def _rewrite(path, out, arrays_changes=None, **meta_changes):
    with np.load(path) as f:
        arrays = {k: f[k] for k in f.files}
    meta = json.loads(str(arrays["meta"]))
    for key, value in meta_changes.items():
        if value is None:
            meta.pop(key)
        else:
            meta[key] = value
    arrays["meta"] = np.array(json.dumps(meta))
    for key, value in (arrays_changes or {}).items():
        if value is None:
            arrays.pop(key)
        else:
            arrays[key] = value
    np.savez(out, **arrays)


def _bad_stats(key, index, value):
    def change(arrays):
        a = arrays[key].copy()
        a[index] = value
        return {key: a}

    return change


@pytest.mark.parametrize(
    "change,message",
    [
        (_bad_stats("running_vars", 3, -0.5), "running variance is negative"),
        (_bad_stats("running_vars", 0, np.nan), "NaN or infinity"),
        (_bad_stats("running_means", 12, np.inf), "NaN or infinity"),
        (lambda a: {"running_means": a["running_means"][:12]}, "shape"),
        (lambda a: {"running_vars": None}, "needs the arrays"),
        (lambda a: {"running_vars": a["running_vars"].astype(np.int64)}, "running_vars"),
    ],
)
def test_load_refuses_corrupted_statistics(tmp_path, change, message):
    rng = rng_for("corrupt")
    _, _, model = _trained(rng)
    model.save(tmp_path / "m.npz")
    with np.load(tmp_path / "m.npz") as f:
        arrays = {k: f[k] for k in f.files}
    _rewrite(tmp_path / "m.npz", tmp_path / "bad.npz", change(arrays))
    with pytest.raises(ValueError, match=message):
        fastmlp.load(tmp_path / "bad.npz")


def test_load_refuses_statistics_of_another_normalization(tmp_path):
    rng = rng_for("other")
    _, _, model = _trained(rng)
    model.save(tmp_path / "m.npz")
    _rewrite(tmp_path / "m.npz", tmp_path / "bad.npz", normalization="layer")
    with pytest.raises(ValueError, match="belong to normalization='batch' only"):
        fastmlp.load(tmp_path / "bad.npz")


def test_pickle_refuses_bad_statistics():
    rng = rng_for("pickle")
    _, _, model = _trained(rng)
    state = model.__getstate__()
    state["running_stats"] = state["running_stats"].copy()
    state["running_stats"][8] = -1  # layer 1's variances start at 7
    with pytest.raises(ValueError, match="negative"):
        MLP.__new__(MLP).__setstate__(state)
    state["running_stats"] = state["running_stats"][:-1]
    with pytest.raises(ValueError, match="running statistics hold 25 values"):
        MLP.__new__(MLP).__setstate__(state)


def test_sklearn_batch_size_and_early_stopping():
    """Batches of one row refused; early stopping keeps the statistics with the best
    weights, in fit and partial_fit (what both normalizations share as estimators:
    test_normalization.py)."""
    pytest.importorskip("sklearn")
    from fastmlp.sklearn import MLPClassifier

    rng = rng_for("sklearn")
    X = rng.standard_normal((150, 6))
    y = rng.integers(0, 3, 150)
    with pytest.raises(ValueError, match="batch_size >= 2"):
        MLPClassifier((4,), normalization="batch", batch_size=1).fit(X, y)
    options = dict(normalization="batch", early_stopping=True, n_iter_no_change=1)
    clf = MLPClassifier((8,), max_iter=20, random_state=0, **options).fit(X, y)
    assert 0 <= clf.score(X, y) <= 1
    clf = MLPClassifier((8,), random_state=0, **options)
    clf.partial_fit(X[:100], y[:100], classes=[0, 1, 2], X_val=X[100:], y_val=y[100:])
    for _ in range(5):
        clf.partial_fit(X[:100], y[:100])
    assert clf.model_.running_vars[0].min() > 0


def test_quantize_folds_it(tmp_path):
    """int8 quantization folds BatchNorm's running statistics into W and b: the int8
    model predicts as the float one does (a LayerNorm is refused, test_layer_norm.py)."""
    rng = rng_for("int8")
    X = rng.standard_normal((600, 10)).astype(np.float32)
    y = np.argmax(X[:, :3] + 0.3 * X[:, 3:6], axis=1)
    model = fastmlp.train(X, y, hidden=(32, 16), normalization="batch", epochs=8, seed=1)
    assert max(np.abs(m).max() for m in model.running_means) > 0.05  # folding matters
    q = fastmlp.quantize(model, X, validation_data=(X, y))
    agree = np.mean(q.predict(X) == model.predict(X))
    assert agree >= 0.97, agree
    np.testing.assert_allclose(q.predict_proba(X), model.predict_proba(X), atol=0.1)
    assert q.report["float_accuracy"] - q.report["int8_accuracy"] <= 0.02
    q.save(tmp_path / "q.npz")
    assert np.array_equal(fastmlp.load(tmp_path / "q.npz").predict(X), q.predict(X))


def test_bad_values():
    rng = rng_for("bad")
    X = rng.standard_normal((20, 3))
    y = rng.integers(0, 2, 20)
    with pytest.raises(ValueError, match="batch_size >= 2"):
        fastmlp.train(X, y, hidden=(4,), normalization="batch", batch_size=1)
    with pytest.raises(ValueError, match="at least 2 rows .*; got 1 sample and"):
        fastmlp.train(X[:1], X[:1, 0], hidden=(4,), normalization="batch", loss="squared_error")
    with pytest.raises(ValueError, match="normalization must be None or one of"):
        MLP((3, 4, 2), np.arange(2), normalization="batchnorm")
    model = MLP((3, 4, 2), np.arange(2), normalization="batch", dtype=np.float64)
    with pytest.raises(ValueError, match="at least 2 rows"):
        model.loss_and_gradients(X[:1], y[:1])
    from fastmlp._network import Network

    with pytest.raises(ValueError, match="stats must be a flat float64 array of 8 values"):
        Network((3, 4, 2), ["relu", "identity"], "cross_entropy", np.float64, None,
                normalization="batch", stats=np.zeros(7))  # fmt: skip
    # Without hidden layers there is nothing to normalize: a plain linear model.
    linear = MLP((3, 2), np.arange(2), normalization="batch")
    assert linear.running_means == [] and linear.norm_weights == []


def test_dask_streaming():
    da = pytest.importorskip("dask.array")
    import fastmlp.dask

    rng = rng_for("dask")
    X = rng.standard_normal((121, 5))
    y = rng.integers(0, 3, 121)
    options = dict(hidden=(7,), normalization="batch", epochs=2, seed=4, shuffle=False)
    model = fastmlp.dask.train(da.from_array(X, chunks=(60, 5)), y, **options)
    assert model.normalization == "batch"
    assert not np.array_equal(model.running_means[0], np.zeros(7))  # moved, from 0
    again = fastmlp.dask.train(da.from_array(X, chunks=(60, 5)), y, **options)
    assert np.array_equal(again._network.stats, model._network.stats)


def test_save_and_c_export_refuse_what_load_or_float32_cannot_hold(tmp_path):
    """Two error paths of their own: running statistics that went non-finite are not
    saved (load would refuse the file), and a BatchNorm whose fold into W overflows
    float32 is not exported as C."""
    rng = rng_for("refuse")
    _, _, model = _trained(rng)
    path = tmp_path / "m.npz"
    model.save(path)
    before = path.read_bytes()
    model.running_means[0][0] = np.nan
    with pytest.raises(ValueError, match="refusing to save"):
        model.save(path)
    assert path.read_bytes() == before  # the file saved earlier is untouched
    model.running_means[0][0] = 0
    model.running_vars[0][...] = 0  # scale gamma / sqrt(eps): ~316 gamma
    model.norm_weights[0][...] = 1e37
    with pytest.raises(ValueError, match="folded into its weights overflows float32"):
        model.to_c(tmp_path / "c")
