"""Numerical faults: extreme logits, all-zero input, dead ReLUs, long float32 sums."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import fastmlp
from fastmlp import reference as R

MNIST_DIR = Path(__file__).resolve().parent.parent / "benches" / "data" / "mnist"


def test_extreme_logits_give_finite_loss_and_gradients():
    # Output weights so large that the logits reach about +-1e4.
    rng = np.random.default_rng(0)
    W = [rng.standard_normal((5, 4)), 1e3 * rng.standard_normal((4, 3))]
    b = [np.zeros(4), np.zeros(3)]
    model = fastmlp.MLP.from_weights(W, b, dtype=np.float64)
    X = 3 * rng.standard_normal((20, 5))
    y = rng.integers(0, 3, 20)
    assert np.abs(model.decision_function(X)).max() > 1e3
    loss, dW, db = model.loss_and_gradients(X, y)
    ref_loss, ref_dW, _ = R.loss_and_gradients(W, b, X, y, ["relu", "identity"])
    assert np.isfinite(loss) and loss == pytest.approx(ref_loss, rel=1e-12)
    assert all(np.isfinite(g).all() for g in dW + db)
    np.testing.assert_allclose(dW[1], ref_dW[1], rtol=1e-10, atol=1e-10)
    assert np.isfinite(model.predict_proba(X)).all()


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_all_zero_input_trains_and_predicts_the_majority(dtype):
    X = np.zeros((200, 8), dtype)
    y = np.r_[np.zeros(150, int), np.ones(50, int)]
    model = fastmlp.train(X, y, hidden=(6,), epochs=100, lr=5e-2, seed=0, n_threads=1)
    assert np.isfinite(model.history["loss"]).all()
    assert (model.predict(X) == 0).all()  # only the biases can learn: the prior wins
    np.testing.assert_allclose(model.predict_proba(X)[:, 0], 0.75, atol=0.02)


def test_a_batch_where_every_relu_is_dead():
    # Hidden biases so negative that no ReLU fires: the hidden gradients are exactly 0,
    # the output bias still learns, nothing becomes NaN.
    rng = np.random.default_rng(1)
    W = [rng.standard_normal((4, 5)), rng.standard_normal((5, 2))]
    b = [np.full(5, -100.0), np.zeros(2)]
    model = fastmlp.MLP.from_weights(W, b, dtype=np.float64)
    X = rng.standard_normal((30, 4))
    y = rng.integers(0, 2, 30)
    _, dW, db = model.loss_and_gradients(X, y)
    assert not dW[0].any() and not db[0].any() and not dW[1].any()
    assert np.abs(db[1]).sum() > 0
    trained = fastmlp.train(X, y, init=model, epochs=3, n_threads=1)
    assert np.isfinite(trained.params_).all()
    np.testing.assert_array_equal(trained.weights[0], W[0])  # no gradient reached them


def test_float32_loss_and_accuracy_over_60000_samples():
    # Sums over a whole epoch are accumulated in double: the reported float32 loss and
    # accuracy agree with a float64 recomputation.
    (X, y), _ = fastmlp.datasets.load_mnist(MNIST_DIR, verify=False)
    model = fastmlp.train(X, y, hidden=(32,), epochs=1, seed=0, validation_data=(X, y))
    probs = model.predict_proba(X).astype(np.float64)
    codes = np.searchsorted(model.classes_, y)
    loss64 = float(np.mean(-np.log(probs[np.arange(len(y)), codes])))
    assert model.history["val_loss"][0] == pytest.approx(loss64, rel=1e-5)
    assert model.history["val_accuracy"][0] == pytest.approx(model.score(X, y), abs=1e-12)
