"""Sparse X (scipy.sparse): the CSR kernels, checks, prediction, gradients and training.

The sparse first layer (fm_csr_matmul forward, fm_csr_at weight gradient) is held to the
NumPy reference, to finite differences and to the dense path on X.toarray().
"""

from __future__ import annotations

import zlib

import numpy as np
import pytest
import scipy.sparse as sp
from fastmlp._network import check_csr

import fastmlp
from fastmlp import MLP, _kernels
from fastmlp import reference as R
from fastmlp._validation import CSR, check_X

DTYPES = [np.float32, np.float64]
TOL = {np.float32: dict(rtol=2e-4, atol=2e-5), np.float64: dict(rtol=1e-10, atol=1e-12)}


def rng_for(*key) -> np.random.Generator:
    return np.random.default_rng([zlib.crc32(repr(key).encode()), 13])


def sparse_data(rng, n=40, d=23, density=0.15, dtype=np.float64, empty_rows=(), dead_cols=()):
    """A CSR X of n x d with some rows and columns that hold no nonzero at all."""
    X = sp.random(n, d, density=density, format="csr", random_state=rng, dtype=np.float64)
    X = X.tolil()
    for i in empty_rows:
        X[i, :] = 0
    for j in dead_cols:
        X[:, j] = 0
    X = X.tocsr()
    X.eliminate_zeros()
    X.data = (X.data * 2 - 1).astype(dtype)  # signed values
    return X.astype(dtype)


def as_csr(X, dtype) -> CSR:
    return check_X(X, np.dtype(dtype), accept_sparse=True)


# -- the kernels against the reference -------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("width", [1, 7, 16, 37])
def test_csr_matmul_matches_reference(dtype, width):
    rng = rng_for("matmul", dtype, width)
    X = sparse_data(rng, n=30, d=19, dtype=dtype, empty_rows=(0, 5), dead_cols=(3,))
    W = rng.standard_normal((19, width)).astype(dtype)
    c = as_csr(X, dtype)
    rows = np.array([5, 2, 2, 29, 0, 11])
    want = R.csr_matmul(c.indptr, c.indices, c.data, W, rows)
    np.testing.assert_allclose(_kernels.csr_matmul(c, W, rows), want, **TOL[dtype])
    np.testing.assert_allclose(_kernels.csr_matmul(c, W), X.toarray() @ W, **TOL[dtype])
    assert not _kernels.csr_matmul(c, W, [0]).any()  # a row with no nonzeros


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("width", [1, 9, 32])
def test_csr_at_matches_reference_for_any_column_range(dtype, width):
    rng = rng_for("at", dtype, width)
    X = sparse_data(rng, n=25, d=17, dtype=dtype, empty_rows=(4,), dead_cols=(0, 16))
    c = as_csr(X, dtype)
    rows = np.array([4, 1, 8, 8, 24, 3, 10])
    D = rng.standard_normal((len(rows), width)).astype(dtype)
    want = R.csr_at(c.indptr, c.indices, c.data, D, 17, rows)
    np.testing.assert_allclose(want, X.toarray()[rows].T @ D, rtol=1e-5, atol=1e-6)
    whole = _kernels.csr_at(c, D, rows)
    np.testing.assert_allclose(whole, want, **TOL[dtype])
    # Parts of the columns, as the parameter phase cuts W's rows: the same bits as whole.
    parts = [_kernels.csr_at(c, D, rows, c0, c1) for c0, c1 in [(0, 5), (5, 6), (6, 6), (6, 17)]]
    np.testing.assert_array_equal(np.concatenate(parts), whole)
    C0 = rng.standard_normal((4, width)).astype(dtype)
    np.testing.assert_allclose(_kernels.csr_at(c, D, rows, 2, 6, C0), C0 + want[2:6], **TOL[dtype])
    assert not whole[0].any() and not whole[16].any()  # columns never touched


def test_check_csr_refuses_what_c_cannot_read():
    c = as_csr(sparse_data(rng_for("bad"), n=6, d=5), np.float64)
    check_csr(c, np.dtype(np.float64), 5)
    bad_index = c._replace(
        indices=np.where(np.arange(len(c.indices)) == 0, 5, c.indices).astype(np.int32)
    )
    with pytest.raises(ValueError, match="column indices lie in"):
        check_csr(bad_index, np.dtype(np.float64), 5)
    falling = c.indptr.copy()
    falling[2], falling[3] = falling[3] + 1, falling[2]
    with pytest.raises(ValueError, match="row pointers must rise"):
        check_csr(c._replace(indptr=falling), np.dtype(np.float64), 5)
    with pytest.raises(ValueError, match="int32"):
        check_csr(c._replace(indices=c.indices.astype(np.int64)), np.dtype(np.float64), 5)
    with pytest.raises(ValueError, match="float32"):
        check_csr(c, np.dtype(np.float32), 5)
    with pytest.raises(ValueError, match="one index per value"):
        check_csr(c._replace(data=c.data[:-1]), np.dtype(np.float64), 5)


# -- input checks ----------------------------------------------------------------------


def small_model(dtype=np.float64, hidden=(6,), d=11, seed=0):
    rng = np.random.default_rng(seed)
    X = sparse_data(rng, n=60, d=d, density=0.3, dtype=dtype)
    y = rng.integers(0, 3, 60)
    model = fastmlp.train(X, y, hidden=hidden, epochs=2, seed=seed, dtype=dtype, n_threads=1)
    return model, X, y


def test_sparse_errors_are_clear():
    model, X, y = small_model()
    with pytest.raises(ValueError, match="has 10 features per sample but the model expects 11"):
        model.predict(X[:, :10])
    with pytest.raises(ValueError, match="has 10 features per sample but the model expects 11"):
        fastmlp.train(X[:, :10], y, init=model, epochs=1)
    for bad in (np.nan, np.inf, -np.inf):
        Xb = X.copy()
        Xb.data[3] = bad
        row = int(np.searchsorted(Xb.indptr, 3, side="right")) - 1
        with pytest.raises(ValueError, match=f"NaN or infinity .*first at row {row}, column"):
            fastmlp.train(Xb, y, epochs=1)
        with pytest.raises(ValueError, match="NaN or infinity"):
            model.predict(Xb)
    with pytest.raises(TypeError, match="real numbers.*complex"):
        model.predict(X.astype(np.complex128))
    with pytest.raises(ValueError, match="empty"):
        model.predict(X[:0])
    with pytest.raises(TypeError, match=r"scipy.sparse matrix: pass W.toarray\(\)"):
        MLP.from_weights([sp.csr_matrix(np.ones((2, 3)))], [np.zeros(3)])


def test_the_dtype_object_message_is_gone():
    X = sp.csr_matrix(np.eye(4))
    model = fastmlp.train(X, [0, 1, 0, 1], hidden=(3,), epochs=1, seed=0)
    assert model.predict(X).shape == (4,)


@pytest.mark.parametrize(
    "convert",
    [sp.csr_matrix, sp.csc_matrix, sp.coo_matrix, sp.csr_array, sp.csc_array, sp.lil_matrix],
    ids=lambda f: f.__name__,
)
def test_every_format_and_index_type_predicts_the_same(convert):
    model, X, _ = small_model()
    want = model.predict_proba(X.toarray())
    got = model.predict_proba(convert(X))
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-14)
    wide = sp.csr_matrix(X)
    wide.indices = wide.indices.astype(np.int64)
    wide.indptr = wide.indptr.astype(np.int64)
    np.testing.assert_allclose(model.predict_proba(wide), want, rtol=1e-12, atol=1e-14)
    ints = sp.csr_matrix((np.arange(1, 4), ([0, 1, 1], [0, 3, 10])), shape=(2, 11))
    np.testing.assert_allclose(
        model.decision_function(ints), model.decision_function(ints.toarray()), rtol=1e-12
    )


def test_unsorted_and_duplicate_indices_sum_as_scipy_does():
    model, _, _ = small_model()
    # Row 0: column 7 twice (summed) and indices out of order; row 1 empty.
    X = sp.csr_matrix(
        (np.array([1.0, -2.0, 0.5, 3.0]), np.array([7, 2, 7, 0]), np.array([0, 3, 3, 4])),
        shape=(3, 11),
    )
    assert not X.has_canonical_format
    np.testing.assert_allclose(
        model.predict_proba(X), model.predict_proba(X.toarray()), rtol=1e-12, atol=1e-14
    )


# -- prediction ------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("hidden", [(), (5,), (7, 3), (5, 4, 3, 6)])
@pytest.mark.parametrize("n", [1, 2, 63, 300])
def test_prediction_equals_the_dense_path(dtype, hidden, n):
    rng = rng_for("predict", dtype, hidden, n)
    d = 13
    sizes = (d, *hidden, 3)
    weights = [rng.standard_normal((a, b)).astype(dtype) for a, b in zip(sizes, sizes[1:])]
    biases = [rng.standard_normal(b).astype(dtype) for b in sizes[1:]]
    model = MLP.from_weights(weights, biases, dtype=dtype, activation="tanh")
    X = sparse_data(rng, n=n, d=d, dtype=dtype, empty_rows=(0,), dead_cols=(2,))
    dense = X.toarray()
    for threads in (1, 2):
        np.testing.assert_allclose(
            model.predict_proba(X, n_threads=threads),
            model.predict_proba(dense, n_threads=threads),
            **TOL[dtype],
        )
    acts = [model.activation] * len(hidden) + ["identity"]
    want = R.softmax(R.forward(weights, biases, X.astype(np.float64), acts)[-1])
    np.testing.assert_allclose(model.predict_proba(X), want, **TOL[dtype])
    assert model.score(X, model.predict(dense)) == 1.0


def test_regressor_predicts_and_scores_sparse():
    rng = rng_for("regressor")
    X = sparse_data(rng, n=80, d=9, density=0.4)
    y = X @ rng.standard_normal(9)
    model = fastmlp.train(
        X, y, loss="squared_error", hidden=(8,), epochs=3, seed=1, n_threads=1, dtype=np.float64
    )
    np.testing.assert_allclose(model.predict(X), model.predict(X.toarray()), rtol=1e-12)
    assert model.score(X, y) == pytest.approx(model.score(X.toarray(), y), rel=1e-12)


# -- gradients -------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("hidden", [(), (5,), (5, 4, 3, 6)])
@pytest.mark.parametrize(
    "loss,out_act", [("cross_entropy", None), ("mse", "sigmoid"), ("squared_error", None)]
)
def test_gradients_match_the_reference(dtype, hidden, loss, out_act):
    rng = rng_for("grad", dtype, hidden, loss)
    d, n = 15, 31
    sizes = (d, *hidden, 3)
    weights = [
        (rng.standard_normal((a, b)) / np.sqrt(a)).astype(dtype) for a, b in zip(sizes, sizes[1:])
    ]
    biases = [(0.3 * rng.standard_normal(b)).astype(dtype) for b in sizes[1:]]
    regressor = loss == "squared_error"
    model = MLP.from_weights(
        weights, biases, activation="tanh", loss=loss, output_activation=out_act, dtype=dtype
    )
    X = sparse_data(rng, n=n, d=d, dtype=dtype, empty_rows=(3, 4), dead_cols=(0, 7))
    y = rng.standard_normal((n, 3)).astype(dtype) if regressor else rng.integers(0, 3, n)
    w = rng.uniform(0, 2, n)
    value, dW, db = model.loss_and_gradients(X, y, sample_weight=w, l2=0.01)
    acts = ["tanh"] * len(hidden) + [out_act or "identity"]
    ref_w = [W.astype(np.float64) for W in weights]
    ref_b = [b.astype(np.float64) for b in biases]
    ref_y = y.astype(np.float64) if regressor else y
    rv, rdW, rdb = R.loss_and_gradients(
        ref_w, ref_b, X.astype(np.float64), ref_y, acts, loss, 0.01, w
    )
    tol = dict(rtol=1e-9, atol=1e-11) if dtype == np.float64 else dict(rtol=2e-3, atol=2e-5)
    assert value == pytest.approx(rv, rel=tol["rtol"])
    for got, want in zip(dW + db, rdW + rdb):
        np.testing.assert_allclose(got, want, **tol)
    dv, ddW, ddb = model.loss_and_gradients(X.toarray(), y, sample_weight=w, l2=0.01)
    for got, want in zip(dW + db, ddW + ddb):
        np.testing.assert_allclose(got, want, **tol)
    # A column no sample touches gets only the L2 term.
    np.testing.assert_allclose(dW[0][0], 0.01 * weights[0][0], **tol)


@pytest.mark.parametrize("hidden", [(), (4,), (4, 3, 5, 2)])
def test_first_layer_gradient_matches_finite_differences(hidden):
    rng = rng_for("fd", hidden)
    d, n = 9, 12
    sizes = (d, *hidden, 3)
    weights = [rng.standard_normal((a, b)) / np.sqrt(a) for a, b in zip(sizes, sizes[1:])]
    biases = [0.3 * rng.standard_normal(b) for b in sizes[1:]]
    model = MLP.from_weights(weights, biases, activation="tanh", dtype=np.float64)
    X = sparse_data(rng, n=n, d=d, density=0.3, empty_rows=(1,))
    y = rng.integers(0, 3, n)
    _, dW, db = model.loss_and_gradients(X, y, l2=0.05)
    W0 = model.weights[0]
    step = 1e-6
    for i, j in [(0, 0), (d - 1, sizes[1] - 1), (d // 2, 0), (3, sizes[1] // 2)]:
        old = W0[i, j]
        W0[i, j] = old + step
        up = model.loss_and_gradients(X, y, l2=0.05)[0]
        W0[i, j] = old - step
        down = model.loss_and_gradients(X, y, l2=0.05)[0]
        W0[i, j] = old
        assert dW[0][i, j] == pytest.approx((up - down) / (2 * step), rel=1e-6, abs=1e-9)


# -- training --------------------------------------------------------------------------


def text_like(dtype, n=300, d=150, seed=0):
    """Sparse two-class data with a signal in a few columns and many all-zero columns."""
    rng = np.random.default_rng(seed)
    X = sparse_data(rng, n=n, d=d, density=0.05, dtype=dtype, dead_cols=range(100, 110))
    y = (np.asarray(X[:, :20].sum(axis=1)).ravel() > 0).astype(int)
    return X, y


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(
    "options",
    [
        {},
        {"dropout": 0.3, "l2": 1e-3},
        {"optimizer": "sgd", "lr": 0.05, "batch_size": 1},
        {"hidden": (), "batch_size": 7},
        {"hidden": (12, 5, 4, 3), "batch_size": 300, "validation_split": 0.2},
        {"loss": "squared_error"},
    ],
)
def test_training_equals_the_dense_path(dtype, options):
    X, y = text_like(dtype)
    options = {"hidden": (16,), "epochs": 2, "batch_size": 32, "seed": 3, **options}
    w = np.random.default_rng(1).uniform(0.5, 1.5, X.shape[0])
    kw = dict(options, dtype=dtype, sample_weight=w)
    dense = fastmlp.train(X.toarray(), y, n_threads=1, **kw)
    sparse = fastmlp.train(X, y, n_threads=1, **kw)
    tol = dict(rtol=1e-9, atol=1e-11) if dtype == np.float64 else dict(rtol=2e-3, atol=2e-4)
    np.testing.assert_allclose(sparse.params_, dense.params_, **tol)
    np.testing.assert_allclose(sparse.history["loss"], dense.history["loss"], **tol)
    # Columns no sample touches: their weights move only by L2 (Adam: not at all).
    if "l2" not in options and options.get("optimizer") != "sgd":
        init = fastmlp.train(X, y, n_threads=1, **dict(kw, epochs=1, lr=1e-30))
        np.testing.assert_array_equal(sparse.weights[0][100:110], init.weights[0][100:110])


@pytest.mark.parametrize("dtype", DTYPES)
def test_training_is_bitwise_the_same_for_any_thread_count(dtype):
    X, y = text_like(dtype)
    kw = dict(hidden=(40, 8), epochs=2, batch_size=64, seed=5, dtype=dtype, dropout=0.1, l2=1e-4)
    one = fastmlp.train(X, y, n_threads=1, **kw)
    two = fastmlp.train(X, y, n_threads=2, **kw)
    np.testing.assert_array_equal(one.params_, two.params_)
    three = fastmlp.train(X, y, n_threads=3, **kw)
    np.testing.assert_array_equal(one.params_, three.params_)


def test_training_with_sparse_validation_data_and_fit_more():
    X, y = text_like(np.float32)
    model = fastmlp.train(
        X[:200], y[:200], hidden=(8,), epochs=3, seed=0, validation_data=(X[200:], y[200:])
    )
    assert len(model.history["val_loss"]) == 3
    model.fit_more(sp.csc_matrix(X), y, epochs=1)
    assert len(model.history["loss"]) == 4
    assert model.score(X, y) > 0.6


def test_trainer_workspace_has_no_dense_copy_of_sparse_rows():
    from fastmlp._trainer import Trainer

    model, X, _ = small_model(d=5000, hidden=(4,))
    dense = Trainer.workspace_bytes(model._network, 128, 0.0)
    sparse = Trainer.workspace_bytes(model._network, 128, 0.0, True)
    # The gathered rows, and the first layer's marks of the features each row block (16
    # rows) and the batch use.
    assert dense - sparse == 128 * 5000 * 8 + (128 // 16 + 1) * 5000


# -- scikit-learn estimators -----------------------------------------------------------


def test_sklearn_estimators_take_sparse_input():
    pytest.importorskip("sklearn")
    from fastmlp.sklearn import MLPClassifier, MLPRegressor

    X, y = text_like(np.float64, n=200, d=120)
    params = dict(hidden_layer_sizes=(8,), max_iter=3, random_state=0, n_threads=1)
    params["dtype"] = np.float64
    with pytest.warns(Warning):  # max_iter reached
        dense = MLPClassifier(**params).fit(X.toarray(), y)
    with pytest.warns(Warning):
        sparse = MLPClassifier(**params).fit(sp.csc_matrix(X), y)
    assert sparse.__sklearn_tags__().input_tags.sparse
    np.testing.assert_allclose(sparse.model_.params_, dense.model_.params_, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(
        sparse.predict_proba(X), dense.predict_proba(X.toarray()), rtol=1e-9
    )
    assert sparse.score(X, y) == dense.score(X.toarray(), y)
    online = MLPClassifier(**params)
    for chunk in (slice(0, 100), slice(100, 200)):
        online.partial_fit(X[chunk], y[chunk], classes=[0, 1])
    assert online.n_iter_ == 2
    reg = MLPRegressor(**params, early_stopping=True, n_iter_no_change=50)
    with pytest.warns(Warning):
        reg.fit(sp.coo_matrix(X), X[:, :5].sum(axis=1).A1)
    assert reg.predict(X).shape == (200,) and len(reg.validation_scores_) == 3
