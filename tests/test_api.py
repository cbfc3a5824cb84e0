"""Every option of ``fastmlp.train`` and the public surface of ``MLP``, each with a test
that fails when the option stops doing what its documentation says."""

from __future__ import annotations

import os
import pickle
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from fastmlp._trainer import Trainer

import fastmlp
from fastmlp import MLP
from fastmlp import reference as R

MNIST_DIR = Path(__file__).resolve().parent.parent / "benches" / "data" / "mnist"


def blobs(seed, n, n_features=12, k=3, spread=1.5, proportions=None, dtype=np.float32):
    """k Gaussian blobs; the centres depend on ``seed`` only, the samples on ``n`` too."""
    centers = 2.0 * np.random.default_rng(seed).standard_normal((k, n_features))
    rng = np.random.default_rng([seed, n])
    if proportions is None:
        y = np.arange(n) % k
        rng.shuffle(y)
    else:
        y = rng.choice(k, size=n, p=proportions)
    X = centers[y] + spread * rng.standard_normal((n, n_features))
    return X.astype(dtype), y


@pytest.fixture(scope="module")
def data():
    """Train and test sets drawn from the same three blobs in 12 dimensions."""
    X, y = blobs(1, 300)
    Xt, yt = blobs(1, 600)
    return X, y, Xt, yt


def fit(X, y, **options):
    defaults = dict(hidden=(16,), epochs=10, batch_size=32, lr=0.01, seed=0, n_threads=1)
    return fastmlp.train(X, y, **{**defaults, **options})


def numpy_forward(model, X):
    """The network written out in numpy: hidden activations, softmax output, no dropout."""
    acts = {
        "relu": lambda z: np.maximum(z, 0),
        "tanh": np.tanh,
        "sigmoid": lambda z: 1 / (1 + np.exp(-z)),
    }
    A = np.asarray(X, dtype=np.float64)
    Ws = [W.astype(np.float64) for W in model.weights]
    bs = [b.astype(np.float64) for b in model.biases]
    for W, b in zip(Ws[:-1], bs[:-1]):
        A = acts[model.activation](A @ W + b)
    Z = A @ Ws[-1] + bs[-1]
    E = np.exp(Z - Z.max(axis=1, keepdims=True))
    return E / E.sum(axis=1, keepdims=True)


def mean_cross_entropy(P, codes):
    return float(-np.mean(np.log(P[np.arange(len(codes)), codes])))


# -- activation, loss, optimizer ---------------------------------------------------------


@pytest.mark.parametrize("activation", ["relu", "tanh", "sigmoid"])
@pytest.mark.parametrize("loss,output_activation", [("cross_entropy", None), ("mse", "sigmoid")])
def test_activation_and_loss_learn_the_blobs(data, activation, loss, output_activation):
    X, y, Xt, yt = data
    model = fit(X, y, activation=activation, loss=loss, output_activation=output_activation)
    assert model.activation == activation
    assert model.loss == loss
    assert model.output_activation == (output_activation or "identity")
    assert model.score(Xt, yt) > 0.9
    assert model.history["loss"][-1] < model.history["loss"][0]


@pytest.mark.parametrize("optimizer,lr", [("adam", 0.01), ("sgd", 0.05)])
def test_optimizers_learn_the_blobs(data, optimizer, lr):
    X, y, Xt, yt = data
    model = fit(X, y, optimizer=optimizer, lr=lr, momentum=0.9)
    assert model._optimizer["name"] == optimizer
    assert model.score(Xt, yt) > 0.9


def test_sgd_momentum_is_used(data):
    X, y, _, _ = data
    a = fit(X, y, optimizer="sgd", lr=0.05, momentum=0.0, epochs=2)
    b = fit(X, y, optimizer="sgd", lr=0.05, momentum=0.9, epochs=2)
    assert not np.array_equal(a.params_, b.params_)


# -- learning-rate schedules -------------------------------------------------------------


def test_cosine_schedule_is_the_documented_formula(data):
    X, y, Xt, yt = data
    epochs = 6
    cosine = fit(X, y, epochs=epochs, lr_schedule="cosine")
    by_hand = fit(
        X, y, epochs=epochs, lr_schedule=lambda e: 0.5 * (1 + np.cos(np.pi * e / epochs))
    )
    constant = fit(X, y, epochs=epochs)
    assert np.array_equal(cosine.params_, by_hand.params_)
    assert not np.array_equal(cosine.params_, constant.params_)
    assert cosine.score(Xt, yt) > 0.9


@pytest.mark.parametrize("epochs", [1, 2, 5])
def test_warmup_cosine_schedule_is_the_documented_formula(data, epochs):
    from fastmlp.training import _lr_schedule

    n = 7  # mini-batches per epoch
    w = min(0.5, epochs / 2)
    f = np.arange(epochs * n).reshape(epochs, n) / n + 0.5 / n  # each batch's middle
    by_hand = np.where(
        f < w, 0.1 + 0.9 * f / w, 0.5 * (1 + np.cos(np.pi * (f - w) / (epochs - w)))
    )
    schedule = _lr_schedule("warmup_cosine", epochs)
    got = np.array([schedule(e, n) for e in range(epochs)])
    np.testing.assert_allclose(got, by_hand, rtol=1e-12)
    assert got[0, 0] < got.max() <= 1 and got[-1, -1] < 0.1
    X, y, Xt, yt = data
    warm = fit(X, y, epochs=epochs, lr_schedule="warmup_cosine")
    assert not np.array_equal(warm.params_, fit(X, y, epochs=epochs).params_)
    if epochs == 5:
        assert warm.score(Xt, yt) > 0.9


def test_a_learning_rate_per_mini_batch(data):
    X, y, _, _ = data
    X, y = X[:100].astype(np.float32), y[:100]
    model = fit(X, y, epochs=1)
    labels = model._encode_y(y, len(y))[0]
    order = np.arange(100)

    def trained(lr):
        net = fastmlp.MLP.from_weights(model.weights, model.biases, classes=model.classes_)
        trainer = Trainer(net._network, X, labels, batch_size=32, n_threads=1)
        state = {
            "t": 0,
            "state1": np.zeros_like(net.params_),
            "state2": np.zeros_like(net.params_),
        }
        trainer.set_optimizer("adam", state)
        trainer.epoch(order, lr, 0)
        return net.params_

    same = trained(1e-3)
    assert np.array_equal(trained(np.full(4, 1e-3)), same)  # 4 batches of 32, 32, 32, 4
    assert not np.array_equal(trained([1e-3, 1e-3, 1e-3, 5e-3]), same)
    first_three = trained([1e-3, 1e-3, 1e-3, 0.0])
    assert not np.array_equal(first_three, same)
    for bad, match in (([1e-3] * 3, "one per mini-batch"), ([1e-3, -1, 0, 0], "finite and >= 0")):
        with pytest.raises(ValueError, match=match):
            trained(bad)


def test_callable_schedule_gets_each_epoch_index_once(data):
    X, y, _, _ = data
    seen = []

    def schedule(epoch):
        seen.append(epoch)
        return 1.0

    with_schedule = fit(X, y, epochs=5, lr_schedule=schedule)
    assert seen == [0, 1, 2, 3, 4]
    assert np.array_equal(with_schedule.params_, fit(X, y, epochs=5).params_)
    # fit_more counts the epochs of its own call from 0 again.
    seen.clear()
    with_schedule.fit_more(X, y, epochs=2, lr_schedule=schedule, n_threads=1)
    assert seen == [0, 1]


def test_zero_schedule_leaves_the_weights_unchanged(data):
    X, y, _, _ = data
    start = fit(X, y, epochs=1)
    before = start.params_.copy()
    start.fit_more(X, y, epochs=3, lr_schedule=lambda e: 0.0, n_threads=1)
    assert np.array_equal(start.params_, before)
    assert len(start.history["epoch"]) == 4


def test_half_schedule_equals_half_learning_rate(data):
    X, y, _, _ = data
    a = fit(X, y, epochs=3, lr=0.02, lr_schedule=lambda e: 0.5)
    b = fit(X, y, epochs=3, lr=0.01)
    np.testing.assert_allclose(a.params_, b.params_, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("schedule", ["linear", "COSINE", 0.5, [1.0]])
def test_invalid_schedule_raises(data, schedule):
    X, y, _, _ = data
    with pytest.raises(ValueError, match="lr_schedule"):
        fit(X, y, epochs=1, lr_schedule=schedule)


def test_schedule_returning_a_negative_multiplier_raises(data):
    X, y, _, _ = data
    with pytest.raises(ValueError, match=r"lr_schedule\(0\)"):
        fit(X, y, epochs=2, lr_schedule=lambda e: -1.0)


# -- dropout and L2 ----------------------------------------------------------------------


def test_dropout_changes_training_but_not_prediction(data):
    X, y, Xt, _ = data
    plain = fit(X, y, hidden=(32, 16), epochs=3, dropout=0.0)
    dropped = fit(X, y, hidden=(32, 16), epochs=3, dropout=0.4)
    assert not np.array_equal(plain.params_, dropped.params_)
    for model in (plain, dropped):
        P = model.predict_proba(Xt)
        assert np.array_equal(P, model.predict_proba(Xt))
        assert np.array_equal(model.predict(Xt), model.predict(Xt))
        np.testing.assert_allclose(P, numpy_forward(model, Xt), rtol=1e-4, atol=1e-5)
        assert np.array_equal(
            model.predict(Xt), model.classes_[numpy_forward(model, Xt).argmax(1)]
        )


def test_l2_shrinks_the_weights(data):
    X, y, _, _ = data
    free = fit(X, y, epochs=15, l2=0.0)
    shrunk = fit(X, y, epochs=15, l2=0.05)
    norm = [
        sum(float(np.sum(W.astype(np.float64) ** 2)) for W in m.weights) for m in (free, shrunk)
    ]
    assert norm[1] < 0.8 * norm[0]


# -- validation sets ---------------------------------------------------------------------


def test_validation_split_figures_every_epoch(data):
    X, y, _, _ = data
    model = fit(X, y, epochs=4, validation_split=0.2, batch_size=40)
    h = model.history
    assert h["epoch"] == [1, 2, 3, 4]
    for key in ("loss", "accuracy", "seconds", "val_loss", "val_accuracy"):
        assert len(h[key]) == 4, key
    assert all(np.isfinite(h["val_loss"]))
    assert all(0.0 <= a <= 1.0 for a in h["val_accuracy"])
    # 60 samples are held out: 240 train in 6 mini-batches of 40 per epoch.
    assert model._optimizer["t"] == 4 * 6


def test_validation_data_figures_match_the_final_model(data):
    X, y, Xt, yt = data
    model = fit(X, y, epochs=3, validation_data=(Xt, yt), dtype=np.float64)
    h = model.history
    assert len(h["val_loss"]) == len(h["val_accuracy"]) == 3
    codes = np.searchsorted(model.classes_, yt)
    assert h["val_loss"][-1] == pytest.approx(
        mean_cross_entropy(model.predict_proba(Xt), codes), rel=1e-9
    )
    assert h["val_accuracy"][-1] == pytest.approx(model.score(Xt, yt), abs=1e-12)
    # All 300 samples are trained on: 10 mini-batches of 32 per epoch.
    assert model._optimizer["t"] == 3 * 10


def test_validation_split_and_data_together_raise(data):
    X, y, Xt, yt = data
    with pytest.raises(ValueError, match="not both"):
        fit(X, y, epochs=1, validation_split=0.2, validation_data=(Xt, yt))


@pytest.mark.parametrize("split", [1e-3, 0.999])
def test_validation_split_leaving_an_empty_side_raises(data, split):
    X, y, _, _ = data
    with pytest.raises(ValueError, match="validation_split"):
        fit(X, y, epochs=1, validation_split=split)


# -- early stopping ----------------------------------------------------------------------


def test_early_stopping_restores_the_best_epoch():
    # 30 noisy training samples, a wide layer and a big step: validation loss rises fast.
    X, y = blobs(7, 330, spread=3.0, dtype=np.float64)
    X_tr, y_tr, X_val, y_val = X[:30], y[:30], X[30:], y[30:]
    snapshots = []
    model = fastmlp.train(
        X_tr,
        y_tr,
        hidden=(64,),
        lr=0.05,
        epochs=200,
        batch_size=8,
        validation_data=(X_val, y_val),
        early_stopping=True,
        patience=2,
        dtype=np.float64,
        seed=0,
        n_threads=1,
        callbacks=[lambda f: snapshots.append(f["model"].params_.copy())],
    )
    h = model.history
    best = int(np.argmin(h["val_loss"]))
    assert model.stop_reason_ == "early_stopping"
    assert len(h["epoch"]) < 200
    assert len(h["epoch"]) == best + 1 + 2
    val_loss = mean_cross_entropy(
        model.predict_proba(X_val), np.searchsorted(model.classes_, y_val)
    )
    assert val_loss == pytest.approx(h["val_loss"][best], abs=1e-6)
    assert val_loss < h["val_loss"][-1] - 1e-6
    assert np.array_equal(model.params_, snapshots[best])


def test_early_stopping_without_a_validation_set_raises(data):
    X, y, _, _ = data
    with pytest.raises(ValueError, match="early_stopping"):
        fit(X, y, epochs=2, early_stopping=True)


def test_early_stopping_does_not_stop_while_improving(data):
    X, y, Xt, yt = data
    model = fit(X, y, epochs=4, lr=1e-3, validation_data=(Xt, yt), early_stopping=True)
    assert model.stop_reason_ is None
    assert len(model.history["epoch"]) == 4


# -- callbacks ---------------------------------------------------------------------------


def test_callbacks_get_the_figures_of_every_epoch(data):
    X, y, _, _ = data
    calls = []
    model = fit(X, y, epochs=3, callbacks=[calls.append])
    assert [c["epoch"] for c in calls] == [1, 2, 3]
    for c in calls:
        assert {"epoch", "loss", "accuracy", "seconds", "model"} <= set(c)
        assert c["model"] is model
        assert c["seconds"] >= 0
    assert [c["loss"] for c in calls] == model.history["loss"]
    assert [c["accuracy"] for c in calls] == model.history["accuracy"]


def test_callback_returning_true_stops_after_that_epoch(data):
    X, y, _, _ = data
    model = fit(X, y, epochs=10, callbacks=[lambda f: f["epoch"] == 3])
    assert model.history["epoch"] == [1, 2, 3]
    assert model.stop_reason_ == "callback"
    assert model._optimizer["t"] == 3 * 10


def test_every_callback_sees_the_epoch_that_stops_training(data):
    """The docs say each callback is called after every epoch; one asking to stop must
    not hide that epoch from the callbacks after it (e.g. a logger)."""
    X, y, _, _ = data
    logged = []
    fit(
        X, y, epochs=10, callbacks=[lambda f: f["epoch"] == 2, lambda f: logged.append(f["epoch"])]
    )
    assert logged == [1, 2]


@pytest.mark.parametrize("callbacks", [[1], [print, "log"]])
def test_non_callable_callbacks_raise(data, callbacks):
    X, y, _, _ = data
    with pytest.raises(ValueError, match="callables"):
        fit(X, y, epochs=1, callbacks=callbacks)


# -- max_time ----------------------------------------------------------------------------


def test_max_time_stops_inside_the_first_epoch():
    X, y = blobs(3, 20000, n_features=20)
    model = fit(X, y, hidden=(64,), epochs=50, batch_size=32, max_time=1e-4)
    assert model.stop_reason_ == "max_time"
    assert model.history["epoch"] == [1]
    assert 1 <= model._optimizer["t"] < 20000 // 32
    pred = model.predict(X[:100])
    assert pred.shape == (100,)
    assert set(pred.tolist()) <= {0, 1, 2}
    assert np.all(np.isfinite(model.predict_proba(X[:100])))


# -- continuing training -----------------------------------------------------------------


def test_fit_more_keeps_the_optimizer_state(data):
    X, y, _, _ = data
    two = fit(X, y, epochs=2, shuffle=False)
    assert two._optimizer["t"] == 2 * 10
    # A copy without the optimizer's memory (pickle leaves it out) for comparison.
    fresh = pickle.loads(pickle.dumps(two))
    returned = two.fit_more(X, y, epochs=2, shuffle=False, lr=0.01, batch_size=32, n_threads=1)
    assert returned is two
    assert two._optimizer["t"] == 4 * 10
    assert two.history["epoch"] == [1, 2, 3, 4]
    assert len(two.history["loss"]) == 4

    four = fit(X, y, epochs=4, shuffle=False)
    assert np.array_equal(two.params_, four.params_)
    assert two.history["loss"] == four.history["loss"]

    fresh.fit_more(X, y, epochs=2, shuffle=False, lr=0.01, batch_size=32, n_threads=1)
    assert fresh._optimizer["t"] == 2 * 10
    assert not np.array_equal(fresh.params_, four.params_)


def test_init_continues_the_given_model(data):
    X, y, _, _ = data
    model = fit(X, y, epochs=1)
    same = fastmlp.train(X, y, init=model, epochs=1, batch_size=50, n_threads=1)
    assert same is model
    assert model._optimizer["t"] == 10 + 6
    assert model.history["epoch"] == [1, 2]


# -- sample and class weights ------------------------------------------------------------


def test_loss_and_gradients_sample_weight(data):
    X, y, _, _ = data
    model = fit(X, y, epochs=1, dtype=np.float64)
    X64 = X.astype(np.float64)
    loss, dW, db = model.loss_and_gradients(X64, y)
    loss2, dW2, db2 = model.loss_and_gradients(X64, y, sample_weight=np.full(len(y), 2.0))
    assert loss2 == pytest.approx(loss, rel=1e-12)
    for a, b in zip(dW + db, dW2 + db2):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-15)

    w = np.random.default_rng(0).uniform(0.0, 3.0, len(y))
    weighted, dWw, dbw = model.loss_and_gradients(X64, y, sample_weight=w)
    acts = [model.activation] * (len(model.layer_sizes) - 2) + [model.output_activation]
    ref, ref_dW, ref_db = R.loss_and_gradients(
        model.weights, model.biases, X64, y, acts, sample_weight=w
    )
    assert weighted == pytest.approx(ref, rel=1e-10)
    for a, b in zip(dWw + dbw, ref_dW + ref_db):
        np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-12)
    per_sample = -np.log(model.predict_proba(X64)[np.arange(len(y)), y])
    assert weighted == pytest.approx(np.sum(w * per_sample) / np.sum(w), rel=1e-10)
    assert abs(weighted - loss) > 1e-6


@pytest.mark.parametrize("shuffle", [True, False])
def test_zero_weight_samples_have_no_influence(data, shuffle):
    """Rows of weight 0 may hold anything: the trained weights do not change.

    Without shuffling, the first mini-batches hold only zero-weight rows.
    """
    X, y, _, _ = data
    w = np.ones(len(y))
    w[:100] = 0.0
    X2, y2 = X.copy(), y.copy()
    X2[:100] = np.random.default_rng(9).standard_normal((100, X.shape[1])) * 5
    y2[:100] = (y[:100] + 1) % 3
    a = fit(X, y, epochs=3, sample_weight=w, shuffle=shuffle)
    b = fit(X2, y2, epochs=3, sample_weight=w, shuffle=shuffle)
    assert np.all(np.isfinite(a.params_))
    assert np.array_equal(a.params_, b.params_)


def test_sample_weight_changes_training(data):
    X, y, _, _ = data
    w = np.where(y == 0, 5.0, 1.0)
    assert not np.array_equal(
        fit(X, y, epochs=2).params_, fit(X, y, epochs=2, sample_weight=w).params_
    )


# Powers of two that take sample weights near each dtype's limits: 1 / sum(w) subnormal
# (flushed to 0 in the kernels: no gradient), weights subnormal themselves, sums past the
# largest float.
WEIGHT_SCALES = {np.float32: (-140, -126, 100, 126), np.float64: (-1020, -1000, 1000, 1022)}


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_sample_weights_of_any_scale_train_alike(data, dtype):
    """The loss and its gradient are weighted means: weights scaled by a power of two train
    the same bits, however close to the dtype's limits (in float32 they trained no, or
    another, model), and weights like 1e300 train as their ratios say."""
    X, y, _, _ = data
    w = np.random.default_rng(3).uniform(0.5, 2.0, len(y))
    expected = fit(X, y, epochs=2, dtype=dtype, sample_weight=w).params_
    for k in WEIGHT_SCALES[dtype]:
        got = fit(X, y, epochs=2, dtype=dtype, sample_weight=np.ldexp(w, k)).params_
        assert np.array_equal(got, expected), k
    t = 1e-6 if dtype == np.float32 else 1e-12
    for scale in (1e-300, 1e300):
        got = fit(X, y, epochs=2, dtype=dtype, sample_weight=w * scale).params_
        np.testing.assert_allclose(got, expected, rtol=t, atol=t)


def test_class_and_sample_weights_near_the_limits_multiply_in_range(data):
    """1e38 x 1e38 and 1e-30 x 1e-30 leave float32 as products, not as weights: they
    train as the same ratios of ordinary sizes (and are not 'zero everywhere')."""
    X, y, _, _ = data
    w = np.where(np.arange(len(y)) % 2 == 0, 2.0, 1.0)
    cw = {0: 3.0, 1: 1.0, 2: 0.5}
    expected = fit(X, y, epochs=2, sample_weight=w, class_weight=cw).params_
    for scale in (2.0**126, 2.0**-100):
        got = fit(
            X,
            y,
            epochs=2,
            sample_weight=w * scale,
            class_weight={c: v * scale for c, v in cw.items()},
        ).params_
        assert np.array_equal(got, expected), scale


def test_scores_and_gradients_read_weights_of_any_scale(data):
    X, y, _, _ = data
    model = fit(X, y, epochs=1)
    w = np.random.default_rng(4).uniform(0.5, 2.0, len(y))
    for scale in (2.0**-1020, 2.0**1020):
        assert model.score(X, y, sample_weight=w * scale) == model.score(X, y, sample_weight=w)
        got = model.loss_and_gradients(X, y, sample_weight=w * scale)
        want = model.loss_and_gradients(X, y, sample_weight=w)
        assert got[0] == want[0]
        for a, b in zip(got[1] + got[2], want[1] + want[2]):
            assert np.array_equal(a, b)


def test_balanced_class_weight_raises_minority_recall():
    X, y = blobs(5, 600, k=2, spread=3.0, proportions=[0.92, 0.08])
    Xt, yt = blobs(5, 3000, k=2, spread=3.0, proportions=[0.5, 0.5])
    recall = {}
    for cw in (None, "balanced"):
        model = fit(X, y, epochs=10, class_weight=cw)
        recall[cw] = np.mean(model.predict(Xt)[yt == 1] == 1)
    assert recall["balanced"] > recall[None] + 0.05


def test_class_weight_dict_equals_sample_weight(data):
    X, y, _, _ = data
    a = fit(X, y, epochs=2, class_weight={0: 3.0, 2: 0.5})
    b = fit(X, y, epochs=2, sample_weight=np.array([3.0, 1.0, 0.5])[y])
    np.testing.assert_array_equal(a.params_, b.params_)


def test_class_weight_with_an_unknown_label_raises(data):
    X, y, _, _ = data
    with pytest.raises(ValueError, match=r"class_weight names label 7"):
        fit(X, y, epochs=1, class_weight={7: 2.0})


@pytest.mark.parametrize("class_weight", ["balance", "Balanced", [1.0, 2.0, 3.0]])
def test_bad_class_weight_raises(data, class_weight):
    X, y, _, _ = data
    with pytest.raises(ValueError, match="class_weight must be"):
        fit(X, y, epochs=1, class_weight=class_weight)


# -- verbose -----------------------------------------------------------------------------


def test_verbose_prints_one_line_per_epoch(data, capsys):
    X, y, _, _ = data
    fit(X, y, epochs=3, verbose=True)
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 4
    for i, line in enumerate(lines[:3], start=1):
        assert re.match(rf"Epoch \[{i}/3\], Train Loss: [\d.]+, Train Accuracy: [\d.]+%", line), (
            line
        )
    assert lines[3].startswith("Training time")


def test_not_verbose_prints_nothing(data, capsys):
    X, y, _, _ = data
    fit(X, y, epochs=2)
    assert capsys.readouterr().out == ""


# -- divergence --------------------------------------------------------------------------


def test_divergence_raises_and_names_the_learning_rate(data):
    X, y, _, _ = data
    with pytest.raises(FloatingPointError, match=r"epoch \d+") as info:
        fit(X, y, epochs=5, optimizer="sgd", lr=1e6)
    assert "learning rate" in str(info.value)
    assert f"largest |x|: {np.abs(X).max():.3g}" in str(info.value)


def test_parameters_turned_nan_under_a_finite_loss_are_divergence(data):
    """NaN in the first layer's weights leaves the loss finite (ReLU outputs 0 for NaN), so
    the loss alone would let training return a NaN model: the parameters are checked after
    every epoch, before validation reads them."""
    X, y, _, _ = data

    def corrupt(figures):
        if figures["epoch"] == 1:
            figures["model"].weights[0][0, 0] = np.nan

    with pytest.raises(FloatingPointError, match=r"epoch 2: the parameters hold NaN") as info:
        fit(X, y, epochs=3, callbacks=[corrupt], validation_split=0.2)
    assert "unless a callback wrote them" in str(info.value)


def test_divergence_from_targets_too_large_to_square_names_them(data):
    """Regression targets of 1e30 overflow float32's squared error at once: the error
    says so, not that the learning rate is too high."""
    X, _, _, _ = data
    y = np.linspace(-3e30, 3e30, len(X))
    with pytest.raises(FloatingPointError, match=r"targets reach 3e\+30") as info:
        fit(X, y, loss="squared_error", epochs=1)
    assert "float64" in str(info.value) and "learning rate" not in str(info.value)
    model = fit(X, y, loss="squared_error", epochs=1, dtype=np.float64)  # as it says
    assert np.isfinite(model.params_).all()


# -- Ctrl-C ------------------------------------------------------------------------------

SIGINT_SCRIPT = textwrap.dedent(
    """
    import os, signal, sys, threading, time, warnings
    import fastmlp
    from fastmlp.datasets import load_mnist

    signal.signal(signal.SIGINT, signal.default_int_handler)
    (X, y), (Xt, yt) = load_mnist(sys.argv[1], verify=False)
    X, y = X[:20000], y[:20000]
    first_epoch = []

    def interrupt():
        while not first_epoch:
            time.sleep(0.001)
        # Aim at the middle of the second epoch, far from the Python code between epochs.
        time.sleep(0.5 * first_epoch[0])
        os.kill(os.getpid(), signal.SIGINT)

    threading.Thread(target=interrupt, daemon=True).start()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model = fastmlp.train(
            X, y, hidden=(128,), epochs=25, batch_size=32, seed=0, n_threads=1,
            callbacks=[lambda f: first_epoch.append(f["seconds"])],
        )
    print("RETURNED")
    print("EPOCHS", len(model.history["epoch"]))
    print("WARNED", any("interrupted" in str(w.message) for w in caught))
    print("STOP", model.stop_reason_)
    print("SCORE", model.score(Xt[:2000], yt[:2000]))
    """
)


def test_ctrl_c_returns_the_model(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-c", SIGINT_SCRIPT, str(MNIST_DIR)],
        capture_output=True,
        text=True,
        timeout=120,
        # Not the repository root, whose fastmlp/ has no compiled modules after a
        # non-editable install: the child imports the fastmlp this test imported.
        cwd=tmp_path,
        env={
            **os.environ,
            "PYTHONPATH": os.pathsep.join(
                [
                    str(Path(fastmlp.__file__).resolve().parent.parent),
                    os.environ.get("PYTHONPATH", ""),
                ]
            ),
        },
    )
    out = proc.stdout
    assert proc.returncode == 0, proc.stderr
    assert "RETURNED" in out
    assert "WARNED True" in out, out + proc.stderr
    assert "STOP interrupted" in out, out + proc.stderr
    # The interrupted second epoch is not recorded.
    assert "EPOCHS 1" in out, out
    assert float(re.search(r"SCORE ([\d.]+)", out).group(1)) > 0.5


# -- seeds -------------------------------------------------------------------------------


def test_same_seed_same_weights_and_different_seeds_differ(data):
    X, y, _, _ = data
    a = fit(X, y, epochs=2, seed=3, dropout=0.1)
    b = fit(X, y, epochs=2, seed=3, dropout=0.1)
    c = fit(X, y, epochs=2, seed=4, dropout=0.1)
    assert np.array_equal(a.params_, b.params_)
    assert a.history["loss"] == b.history["loss"]
    assert not np.array_equal(a.params_, c.params_)


def test_seed_changes_the_initialisation(data):
    X, y, _, _ = data
    a = fit(X, y, epochs=1, seed=3, lr_schedule=lambda e: 0.0)
    b = fit(X, y, epochs=1, seed=4, lr_schedule=lambda e: 0.0)
    assert not np.array_equal(a.weights[0], b.weights[0])
    assert all(np.all(bias == 0) for bias in a.biases)


# -- labels ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "labels", [np.array(["ant", "bee", "cow"]), np.array([10, 20, 30])], ids=["str", "int"]
)
def test_predict_returns_the_original_labels(data, labels):
    X, y, Xt, yt = data
    model = fit(X, labels[y])
    assert np.array_equal(model.classes_, labels)
    pred = model.predict(Xt)
    assert pred.dtype == labels.dtype
    assert set(pred.tolist()) <= set(labels.tolist())
    assert model.score(Xt, labels[yt]) > 0.9
    unknown = labels[yt].copy()
    unknown[5] = "yak" if labels.dtype.kind == "U" else 40
    name = "yak" if labels.dtype.kind == "U" else "40"
    with pytest.raises(ValueError, match=name):
        model.score(Xt, unknown)


def test_list_inputs_work(data):
    X, y, _, _ = data
    model = fit(X.tolist(), y.tolist(), epochs=2)
    np.testing.assert_array_equal(model.predict(X[:10].tolist()), model.predict(X[:10]))


# -- pickle, weights, from_weights, dtype ------------------------------------------------


def test_pickle_round_trip(data):
    X, y, Xt, _ = data
    model = fit(X, np.array(["a", "b", "c"])[y], epochs=2)
    copy = pickle.loads(pickle.dumps(model))
    assert np.array_equal(copy.predict_proba(Xt), model.predict_proba(Xt))
    assert np.array_equal(copy.classes_, model.classes_)
    assert copy.history == model.history
    assert copy.layer_sizes == model.layer_sizes


def test_weights_biases_shapes_and_from_weights(data):
    X, y, Xt, _ = data
    X10 = X[:, :10]
    model = fit(X10, y, hidden=(7, 5), epochs=2)
    assert model.layer_sizes == (10, 7, 5, 3)
    assert [W.shape for W in model.weights] == [(10, 7), (7, 5), (5, 3)]
    assert [b.shape for b in model.biases] == [(7,), (5,), (3,)]
    assert all(W.dtype == np.float32 for W in model.weights + model.biases)
    rebuilt = MLP.from_weights(model.weights, model.biases, classes=model.classes_)
    assert np.array_equal(rebuilt.predict(Xt[:, :10]), model.predict(Xt[:, :10]))
    assert np.array_equal(rebuilt.predict_proba(Xt[:, :10]), model.predict_proba(Xt[:, :10]))
    # weights are views: writing to them changes the model.
    model.weights[0][...] = 0
    assert np.all(model.params_[: 10 * 7] == 0)


def test_float64_training_gives_a_float64_model(data):
    X, y, Xt, yt = data
    model = fit(X.astype(np.float64), y, dtype=np.float64)
    assert model.dtype == np.float64
    assert model.params_.dtype == np.float64
    assert all(W.dtype == np.float64 for W in model.weights)
    assert model.predict_proba(Xt).dtype == np.float64
    assert model.score(Xt, yt) > 0.9


def test_float64_input_to_a_float32_model(data):
    X, y, Xt, _ = data
    model = fit(X, y, epochs=2)
    assert model.dtype == np.float32
    P64 = model.predict_proba(Xt.astype(np.float64))
    assert P64.dtype == np.float32
    assert np.array_equal(P64, model.predict_proba(Xt))
    assert np.array_equal(model.predict(Xt.astype(np.float64)), model.predict(Xt))


def test_estimators_load_only_when_asked_and_say_what_is_missing(tmp_path):
    """``import fastmlp`` works without scikit-learn; the estimators then explain."""
    code = textwrap.dedent(
        """
        import sys
        import fastmlp
        assert "sklearn" not in sys.modules

        class NoSklearn:  # as if scikit-learn were not installed
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] == "sklearn":
                    raise ImportError("No module named 'sklearn'")

        sys.meta_path.insert(0, NoSklearn())
        try:
            fastmlp.MLPRegressor
        except ImportError as exc:
            assert "pip install 'fastmlp[sklearn]'" in str(exc), exc
        else:
            raise AssertionError("no ImportError")
        """
    )
    root = str(Path(fastmlp.__file__).resolve().parents[1])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([root, os.environ.get("PYTHONPATH", "")])}
    subprocess.run([sys.executable, "-c", code], check=True, env=env, timeout=60, cwd=tmp_path)
