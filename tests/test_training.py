"""Whole training runs: fast path against reference steps, learning, determinism, labels."""

from __future__ import annotations

import zlib
from pathlib import Path

import numpy as np
import pytest

import fastmlp
from fastmlp import MLP
from fastmlp import reference as R
from fastmlp.datasets import load_mnist

MNIST_DIR = Path(__file__).resolve().parent.parent / "benches" / "data" / "mnist"
XOR_X = np.array([[0.0, 0.0], [0.0, 1.0], [1.0, 0.0], [1.0, 1.0]])
XOR_Y = np.array([0, 1, 1, 0])


def rng_for(*key) -> np.random.Generator:
    return np.random.default_rng([zlib.crc32(repr(key).encode()), 4242])


def activations_of(model: MLP) -> list[str]:
    return [model.activation] * (len(model.layer_sizes) - 2) + [model.output_activation]


def random_model(rng, sizes, activation, dtype, loss="cross_entropy", output_activation=None):
    weights = [rng.standard_normal((a, b)) / np.sqrt(a) for a, b in zip(sizes[:-1], sizes[1:])]
    biases = [0.1 * rng.standard_normal(b) for b in sizes[1:]]
    return MLP.from_weights(
        [W.astype(dtype) for W in weights],
        [b.astype(dtype) for b in biases],
        activation=activation,
        loss=loss,
        output_activation=output_activation,
        dtype=dtype,
    )


def blobs(rng, n, n_features=6, k=3, spread=1.0, dtype=np.float64):
    """k Gaussian blobs, labels 0..k-1."""
    centers = 2.0 * rng.standard_normal((k, n_features))
    y = np.arange(n) % k
    rng.shuffle(y)
    X = centers[y] + spread * rng.standard_normal((n, n_features))
    return X.astype(dtype), y


@pytest.fixture(scope="module")
def mnist():
    # The repository's copy, found from this file (not from the package, which an install
    # puts in site-packages): a missing file is a failure, never a skip.
    (X, y), (Xt, yt) = load_mnist(MNIST_DIR, verify=False)
    return X[:5000].copy(), y[:5000].copy(), Xt[:1000].copy(), yt[:1000].copy()


# -- whole steps: fast path against reference.train_step ------------------------------


STEP_CASES = [
    # (hidden, activation, loss, output_activation, batch)
    ((), "tanh", "cross_entropy", None, 17),
    ((7, 3), "tanh", "cross_entropy", None, 17),
    ((7, 3), "relu", "cross_entropy", None, 1),
    ((5, 4, 3, 6), "sigmoid", "cross_entropy", None, 130),
    ((5, 4, 3, 6), "relu", "cross_entropy", None, 33),
    ((9,), "tanh", "mse", "sigmoid", 17),
    ((9,), "relu", "mse", None, 10),
    ((7, 3), "tanh", "squared_error", None, 17),  # regression on real targets
    ((5, 4, 3, 6), "relu", "squared_error", None, 1),
    ((), "relu", "squared_error", "tanh", 33),
]


def run_both(case, optimizer, options, dtype, seed_key):
    """3 fast steps through fastmlp.train and 3 reference.train_step calls."""
    hidden, activation, loss, out_act, B = case
    rng = rng_for(*seed_key)
    n_features, k = 5, 4
    model = random_model(rng, (n_features, *hidden, k), activation, dtype, loss, out_act)
    n = 3 * B
    X = rng.standard_normal((n, n_features)).astype(dtype)
    y = rng.standard_normal((n, k)) if loss == "squared_error" else rng.integers(0, k, n)
    weighted = options in ("weighted", "both")
    l2 = 0.03 if options in ("l2", "both") else 0.0
    w = rng.uniform(0.2, 3.0, n).astype(dtype) if weighted else None
    lr = 0.01 if optimizer == "adam" else 0.1
    hyper = dict(lr=lr, betas=(0.9, 0.999), eps=1e-8, momentum=0.9, l2=l2)

    ref_w = [W.astype(np.float64) for W in model.weights]
    ref_b = [b.astype(np.float64) for b in model.biases]
    acts = activations_of(model)
    state: dict = {}
    for step in range(3):
        idx = np.arange(step * B, (step + 1) * B)
        R.train_step(
            ref_w,
            ref_b,
            state,
            X[idx].astype(np.float64),
            y[idx],
            acts,
            loss=loss,
            optimizer=optimizer,
            sample_weight=None if w is None else w[idx].astype(np.float64),
            **hyper,
        )

    start = [W.copy() for W in model.weights]
    out = fastmlp.train(
        X,
        y,
        init=model,
        epochs=1,
        batch_size=B,
        shuffle=False,
        optimizer=optimizer,
        sample_weight=w,
        seed=0,
        n_threads=1,
        **hyper,
    )
    assert out is model
    assert model._optimizer["t"] == 3
    # Not trivially passing: the weights moved.
    assert max(np.max(np.abs(a - b)) for a, b in zip(model.weights, start)) > 1e-3
    return model, ref_w, ref_b


def assert_weights_close(model, ref_w, ref_b, tol):
    scale = max(np.max(np.abs(p)) for p in ref_w + ref_b)
    for got, want in zip(model.weights + model.biases, ref_w + ref_b):
        np.testing.assert_allclose(got, want, rtol=tol, atol=tol * scale)


@pytest.mark.parametrize("options", ["plain", "l2", "weighted", "both"])
@pytest.mark.parametrize("optimizer", ["adam", "sgd"])
@pytest.mark.parametrize("case", STEP_CASES, ids=str)
def test_three_steps_match_reference_float64(case, optimizer, options):
    model, ref_w, ref_b = run_both(
        case, optimizer, options, np.float64, (case, optimizer, options)
    )
    assert_weights_close(model, ref_w, ref_b, 1e-10)


@pytest.mark.parametrize("options", ["plain", "both"])
@pytest.mark.parametrize("optimizer", ["adam", "sgd"])
@pytest.mark.parametrize(
    "case", STEP_CASES[:2] + STEP_CASES[3:4] + STEP_CASES[5:6] + STEP_CASES[7:9], ids=str
)
def test_three_steps_match_reference_float32(case, optimizer, options):
    model, ref_w, ref_b = run_both(
        case, optimizer, options, np.float32, ("f32", case, optimizer, options)
    )
    assert model.params_.dtype == np.float32
    assert_weights_close(model, ref_w, ref_b, 1e-4)


def test_history_loss_matches_reference_objective():
    """With one full batch, the epoch loss is the objective before the step."""
    rng = rng_for("hist")
    model = random_model(rng, (5, 7, 3), "tanh", np.float64)
    X = rng.standard_normal((40, 5))
    y = rng.integers(0, 3, 40)
    f_ref, _, _ = R.loss_and_gradients(
        model.weights, model.biases, X, y, activations_of(model), "cross_entropy"
    )
    fastmlp.train(X, y, init=model, epochs=1, batch_size=40, shuffle=False, n_threads=1)
    assert model.history["loss"][-1] == pytest.approx(f_ref, rel=1e-12, abs=0)


# -- dropout ----------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_dropout_changes_training_but_not_prediction(dtype):
    rng = rng_for("dropout", str(dtype))
    X, y = blobs(rng, 90, dtype=dtype)
    init = random_model(rng, (6, 17, 9, 3), "relu", dtype)
    trained = {}
    for p in (0.0, 0.3):
        model = MLP.from_weights(init.weights, init.biases, activation="relu", dtype=dtype)
        fastmlp.train(X, y, init=model, epochs=2, batch_size=30, dropout=p, seed=5, n_threads=1)
        trained[p] = model
    assert not np.array_equal(trained[0.0].params_, trained[0.3].params_)
    for p in (0.0, 0.3):
        assert np.all(np.isfinite(trained[p].params_))

    model = trained[0.3]
    P1 = model.predict_proba(X)
    P2 = model.predict_proba(X)
    assert np.array_equal(P1, P2)
    A = R.forward(
        [W.astype(np.float64) for W in model.weights],
        [b.astype(np.float64) for b in model.biases],
        X.astype(np.float64),
        activations_of(model),
    )
    expected = R.softmax(A[-1])
    tol = 1e-12 if dtype == np.float64 else 1e-5
    np.testing.assert_allclose(P1, expected, rtol=tol, atol=tol)
    np.testing.assert_allclose(P1.sum(axis=1), 1.0, rtol=10 * tol)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("n_threads", [1, 2, 3])
@pytest.mark.parametrize("n", [1, 64, 65, 257, 1037])
def test_predict_matches_reference_forward(n, n_threads, dtype):
    """Prediction (serial below 64 rows, several blocks across threads from 64 up)."""
    rng = rng_for("predict", n, str(dtype))
    model = random_model(rng, (13, 33, 17, 5), "relu", dtype)
    X = rng.standard_normal((n, 13)).astype(dtype)
    A = R.forward(
        [W.astype(np.float64) for W in model.weights],
        [b.astype(np.float64) for b in model.biases],
        X.astype(np.float64),
        activations_of(model),
    )
    tol = 1e-12 if dtype == np.float64 else 1e-5
    logits = model.decision_function(X, n_threads=n_threads)
    scale = np.max(np.abs(A[-1]))
    np.testing.assert_allclose(logits, A[-1], rtol=tol, atol=tol * scale)
    P = model.predict_proba(X, n_threads=n_threads)
    np.testing.assert_allclose(P, R.softmax(A[-1]), rtol=tol, atol=tol)
    assert np.array_equal(model.predict(X, n_threads=n_threads), A[-1].argmax(axis=1))


def test_dropout_depends_on_seed():
    rng = rng_for("dropout_seed")
    X, y = blobs(rng, 60)
    init = random_model(rng, (6, 17, 3), "tanh", np.float64)
    runs = []
    for seed in (1, 1, 2):
        model = MLP.from_weights(init.weights, init.biases, activation="tanh")
        fastmlp.train(
            X,
            y,
            init=model,
            epochs=1,
            batch_size=20,
            dropout=0.5,
            seed=seed,
            shuffle=False,
            n_threads=1,
        )
        runs.append(model.params_.copy())
    assert np.array_equal(runs[0], runs[1])
    assert not np.array_equal(runs[0], runs[2])


# -- learning ---------------------------------------------------------------------------


@pytest.mark.parametrize("activation", ["tanh", "relu"])
def test_xor_needs_a_hidden_layer(activation):
    X = np.tile(XOR_X, (4, 1))
    y = np.tile(XOR_Y, 4)
    model = fastmlp.train(
        X,
        y,
        hidden=(8,),
        activation=activation,
        lr=0.05,
        epochs=300,
        batch_size=len(y),
        seed=0,
        n_threads=1,
    )
    assert np.array_equal(model.predict(XOR_X), XOR_Y)
    assert model.score(XOR_X, XOR_Y) == 1.0
    assert model.history["loss"][-1] < 0.05

    linear = fastmlp.train(
        X, y, hidden=(), lr=0.05, epochs=300, batch_size=len(y), seed=0, n_threads=1
    )
    assert linear.layer_sizes == (2, 2)
    assert linear.score(XOR_X, XOR_Y) <= 0.75


def test_loss_decreases_on_mnist_subset(mnist):
    X, y, _, _ = mnist
    model = fastmlp.train(
        X[:2000], y[:2000], hidden=(32,), epochs=3, batch_size=64, seed=0, n_threads=1
    )
    h = model.history
    assert h["epoch"] == [1, 2, 3]
    assert h["loss"][-1] < h["loss"][0]
    assert h["accuracy"][-1] > h["accuracy"][0]
    assert all(np.isfinite(h["loss"]))


@pytest.mark.parametrize("optimizer", ["adam", "sgd"])
def test_loss_decreases_on_blobs(optimizer):
    rng = rng_for("blobs", optimizer)
    X, y = blobs(rng, 300, spread=1.5)
    model = fastmlp.train(
        X,
        y,
        hidden=(16,),
        epochs=8,
        batch_size=32,
        optimizer=optimizer,
        lr=0.01,
        seed=1,
        n_threads=1,
    )
    h = model.history
    assert h["loss"][-1] < 0.8 * h["loss"][0]
    assert h["accuracy"][-1] > h["accuracy"][0]


def test_mnist_accuracy(mnist):
    X, y, Xt, yt = mnist
    model = fastmlp.train(
        X, y, hidden=(128,), epochs=3, batch_size=64, lr=3e-3, seed=0, n_threads=1
    )
    assert model.score(Xt, yt) >= 0.9


# -- remainder batch --------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("optimizer", ["adam", "sgd"])
@pytest.mark.parametrize("batch_size,n", [(16, 33), (7, 50), (2, 3)])
def test_remainder_batch_of_one(batch_size, n, optimizer, dtype):
    assert n % batch_size == 1
    rng = rng_for("remainder", batch_size, n, optimizer, str(dtype))
    X, y = blobs(rng, n, dtype=dtype)
    w = rng.uniform(0.5, 2.0, n)
    model = fastmlp.train(
        X,
        y,
        hidden=(5,),
        epochs=2,
        batch_size=batch_size,
        dtype=dtype,
        optimizer=optimizer,
        sample_weight=w,
        dropout=0.2,
        seed=0,
        n_threads=2,
    )
    assert model.params_.dtype == np.dtype(dtype)
    assert model.history["epoch"] == [1, 2]
    assert all(np.isfinite(model.history["loss"]))
    assert all(0.0 <= a <= 1.0 for a in model.history["accuracy"])
    assert model._optimizer["t"] == 2 * (n // batch_size + 1)
    assert np.all(np.isfinite(model.params_))


def test_remainder_batch_matches_reference():
    """The last batch of one sample takes a step of its own, as reference.train_epoch."""
    rng = rng_for("remainder_ref")
    model = random_model(rng, (4, 6, 3), "tanh", np.float64)
    X = rng.standard_normal((21, 4))
    y = rng.integers(0, 3, 21)
    ref_w, ref_b = [W.copy() for W in model.weights], [b.copy() for b in model.biases]
    R.train_epoch(ref_w, ref_b, {}, X, y, activations_of(model), 10, lr=0.02)
    fastmlp.train(X, y, init=model, epochs=1, batch_size=10, shuffle=False, lr=0.02, n_threads=2)
    assert model._optimizer["t"] == 3
    assert_weights_close(model, ref_w, ref_b, 1e-10)


# -- determinism ------------------------------------------------------------------------


def train_for_determinism(n_threads, seed=11, dtype=np.float32):
    rng = rng_for("determinism", str(dtype))
    X, y = blobs(rng, 517, n_features=13, k=5, dtype=dtype)
    w = rng.uniform(0.5, 2.0, 517)
    return fastmlp.train(
        X,
        y,
        hidden=(33, 17),
        epochs=2,
        batch_size=100,
        dropout=0.25,
        l2=1e-3,
        sample_weight=w,
        seed=seed,
        dtype=dtype,
        n_threads=n_threads,
    )


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_same_seed_bitwise_identical(dtype):
    a = train_for_determinism(1, dtype=dtype)
    b = train_for_determinism(1, dtype=dtype)
    c = train_for_determinism(1, seed=12, dtype=dtype)
    assert np.array_equal(a.params_, b.params_)
    assert a.history["loss"] == b.history["loss"]
    assert not np.array_equal(a.params_, c.params_)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_thread_count_bitwise_identical(dtype):
    one = train_for_determinism(1, dtype=dtype)
    two = train_for_determinism(2, dtype=dtype)
    assert np.array_equal(one.params_, two.params_)
    assert one.history["loss"] == two.history["loss"]
    assert one.history["accuracy"] == two.history["accuracy"]
    X = rng_for("pred").standard_normal((300, 13)).astype(dtype)
    assert np.array_equal(one.predict_proba(X, n_threads=1), two.predict_proba(X, n_threads=2))


# -- labels -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "labels",
    [
        np.array(["cat", "dog", "eel"]),
        np.array([3, 10, 42]),
        np.array([-5, 0, 7]),
        np.array([0.5, 2.5, 1.5]),
    ],
    ids=["str", "sparse-int", "negative-int", "float"],
)
def test_labels_round_trip(labels):
    rng = rng_for("labels", labels.tolist())
    X, codes = blobs(rng, 150, spread=0.3)
    y = labels[codes]
    model = fastmlp.train(
        X, y, hidden=(8,), epochs=20, batch_size=32, lr=0.01, seed=0, n_threads=1
    )
    assert np.array_equal(model.classes_, np.sort(labels))
    pred = model.predict(X)
    assert pred.dtype == labels.dtype
    assert set(pred.tolist()) <= set(labels.tolist())
    assert np.mean(pred == y) > 0.95
    assert model.score(X, y) > 0.95
    # The columns of predict_proba follow classes_.
    P = model.predict_proba(X)
    assert np.array_equal(model.classes_[P.argmax(axis=1)], pred)
    # Continuing training takes the same labels.
    model.fit_more(X, y, epochs=1, batch_size=32, n_threads=1)
    assert model.history["epoch"][-1] == 21
    # Labels the model does not know are refused, not silently mapped.
    unknown = y.copy()
    unknown[0] = "zebra" if labels.dtype.kind == "U" else 1000
    with pytest.raises(ValueError):
        model.fit_more(X, unknown, epochs=1, n_threads=1)
    with pytest.raises(ValueError):
        model.score(X, unknown)


@pytest.mark.parametrize("limit", [1, 2])
def test_training_under_threadpool_limits_is_unchanged_and_restores_them(limit):
    # Whatever BLAS/OpenMP limits a user sets, fastmlp's own partition decides the bits,
    # and the user's BLAS setting is what remains after training.
    from threadpoolctl import threadpool_info, threadpool_limits

    reference_model = train_for_determinism(2)
    with threadpool_limits(limits=limit):
        before = [d["num_threads"] for d in threadpool_info() if d["user_api"] == "blas"]
        model = train_for_determinism(2)
        after = [d["num_threads"] for d in threadpool_info() if d["user_api"] == "blas"]
    assert np.array_equal(model.params_, reference_model.params_)
    assert after == before


def test_blas_guard_falls_back_to_threadpoolctl_without_openblas_control(monkeypatch):
    # With a BLAS that fastmlp cannot hold itself (MKL, BLIS, ...), the Python guard limits
    # it process-wide through threadpoolctl and restores it afterwards.
    from threadpoolctl import threadpool_info, threadpool_limits

    from fastmlp import _blas, _threads

    def blas_threads():
        return [d["num_threads"] for d in threadpool_info() if d["user_api"] == "blas"]

    monkeypatch.setattr(_blas, "threads_registered", lambda: 0)
    with threadpool_limits(limits=2, user_api="blas"):
        before = blas_threads()
        with _threads.blas_guard():
            assert set(blas_threads()) == {1}
            model = train_for_determinism(2)
        assert blas_threads() == before
    assert np.array_equal(model.params_, train_for_determinism(2).params_)
