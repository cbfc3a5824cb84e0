"""``MLPClassifier.partial_fit`` with a multilabel y (a 2-D indicator of 0 and 1)."""

from __future__ import annotations

import zlib

import numpy as np
import pytest

pytest.importorskip("sklearn")

from fastmlp.sklearn import MLPClassifier  # noqa: E402

K = 3  # labels


def rng_for(*key) -> np.random.Generator:
    return np.random.default_rng([zlib.crc32(repr(key).encode()), 1313])


def chunk(rng, n: int, n_features: int = 5) -> tuple[np.ndarray, np.ndarray]:
    """Rows and labels that a linear model separates (label j: X @ W[:, j] > 0)."""
    W = np.random.default_rng(7).standard_normal((n_features, K))  # the same for every chunk
    X = rng.standard_normal((n, n_features))
    return X, (X @ W > 0).astype(int)


def small(**params) -> MLPClassifier:
    return MLPClassifier(
        **{"hidden_layer_sizes": (16,), "random_state": 0, "learning_rate_init": 0.01, **params}
    )


def test_first_and_later_calls_learn():
    rng = rng_for("pfit-ml")
    chunks = [chunk(rng, 64) for _ in range(30)]
    X_test, Y_test = chunk(rng, 400)
    clf = small()
    clf.partial_fit(*chunks[0], classes=np.arange(K))
    assert clf.classes_.tolist() == list(range(K))
    assert clf.model_.is_multilabel and clf.model_.layer_sizes == (5, 16, K)
    assert clf.n_iter_ == 1 and len(clf.loss_curve_) == 1
    first_score = clf.score(X_test, Y_test)
    params = clf.model_.params_.copy()
    clf.partial_fit(*chunks[1])  # later calls may leave classes out ...
    assert not np.array_equal(clf.model_.params_, params)  # ... and train
    clf.partial_fit(*chunks[2], classes=[2, 0, 1])  # or repeat them, in any order
    for X, Y in chunks[3:]:
        clf.partial_fit(X, Y)
    assert clf.n_iter_ == 30 and len(clf.loss_curve_) == 30
    assert clf.loss_curve_[-1] < 0.5 * clf.loss_curve_[0]
    pred = clf.predict(X_test)
    assert pred.shape == (400, K) and set(np.unique(pred)) <= {0, 1}
    assert clf.predict_proba(X_test).shape == (400, K)
    assert clf.score(X_test, Y_test) > max(0.6, first_score + 0.3)  # subset accuracy


def test_same_as_fit_one_epoch_at_a_time():
    # A multilabel partial_fit call is one epoch of the same training fit runs.
    rng = rng_for("pfit-ml-same")
    X, Y = chunk(rng, 90)
    a = small(shuffle=False)
    b = small(shuffle=False, max_iter=1)
    a.partial_fit(X, Y, classes=np.arange(K))
    with pytest.warns(Warning):  # ConvergenceWarning: one epoch
        b.fit(X, Y)
    np.testing.assert_array_equal(a.model_.params_, b.model_.params_)


def test_a_chunk_without_some_labels():
    # A chunk where a label never occurs (an all-zero column), or every label is 0.
    rng = rng_for("pfit-ml-zero")
    X, Y = chunk(rng, 40)
    clf = small().partial_fit(X, Y, classes=np.arange(K))
    Y0 = Y.copy()
    Y0[:, 1] = 0
    clf.partial_fit(X, Y0)
    clf.partial_fit(X, np.zeros_like(Y))
    assert clf.n_iter_ == 3


def test_bool_labels_predict_bool():
    rng = rng_for("pfit-ml-bool")
    X, Y = chunk(rng, 40)
    clf = small().partial_fit(X, Y.astype(bool), classes=np.arange(K))
    clf.partial_fit(X, Y.astype(bool))
    assert clf.predict(X).dtype == bool


def test_errors():
    rng = rng_for("pfit-ml-errors")
    X, Y = chunk(rng, 40)
    with pytest.raises(ValueError, match="classes must be passed on the first call"):
        small().partial_fit(X, Y)
    # classes names the label indices 0..K-1, as in scikit-learn.
    for classes in ([0, 1], np.arange(K + 1), ["a", "b", "c"], ["a", 0, 1]):
        with pytest.raises(ValueError, match=r"label indices 0\.\.2"):
            small().partial_fit(X, Y, classes=classes)
    clf = small().partial_fit(X, Y, classes=np.arange(K))
    with pytest.raises(ValueError, match="y has 2 labels but the network was fitted with 3"):
        clf.partial_fit(X, Y[:, :2])
    with pytest.raises(ValueError, match="y has 4 labels but the network was fitted with 3"):
        clf.partial_fit(X, np.hstack([Y, Y[:, :1]]))
    with pytest.raises(ValueError, match="keep the kind of y"):
        clf.partial_fit(X, Y[:, 0])
    with pytest.raises(ValueError, match="not the same as on the first call"):
        clf.partial_fit(X, Y, classes=[0, 1])
    with pytest.raises(ValueError, match="multilabel indicator matrix of 0 and 1"):
        clf.partial_fit(X, Y * np.arange(1, K + 1))
    with pytest.raises(ValueError, match="X has 4 features"):
        clf.partial_fit(X[:, :4], Y)
    assert clf.n_iter_ == 1  # none of the refused calls trained
    # A single-label network refuses a multilabel y.
    single = small().partial_fit(X, Y[:, 0], classes=[0, 1])
    with pytest.raises(ValueError, match="keep the kind of y"):
        single.partial_fit(X, Y)


def test_early_stopping():
    rng = rng_for("pfit-ml-es")
    chunks = [chunk(rng, 100) for _ in range(40)]
    clf = small(early_stopping=True, n_iter_no_change=2, tol=0.2, validation_fraction=0.2)
    clf.partial_fit(*chunks[0], classes=np.arange(K))
    X_val, Y_val = clf._partial_validation
    assert X_val.shape == (20, 5) and Y_val.shape == (20, K)  # 20% of the first chunk
    calls = 1
    for X, Y in chunks[1:]:
        if clf.early_stopped_:
            break
        clf.partial_fit(X, Y)
        calls += 1
    assert clf.early_stopped_
    assert len(clf.validation_scores_) == calls == clf.n_iter_
    # Subset accuracy on the held-out rows; the best call's weights are restored.
    assert clf.score(X_val, Y_val) == pytest.approx(clf.best_validation_score_)
    assert clf.best_validation_score_ == max(clf.validation_scores_)


def test_given_validation_set():
    rng = rng_for("pfit-ml-given")
    X_val, Y_val = chunk(rng, 50)
    chunks = [chunk(rng, 64) for _ in range(4)]
    clf = small()
    with pytest.raises(ValueError, match="y_val has 2 labels but the model has 3"):
        clf.partial_fit(*chunks[0], classes=np.arange(K), X_val=X_val, y_val=Y_val[:, :2])
    clf = small()
    clf.partial_fit(*chunks[0], classes=np.arange(K), X_val=X_val, y_val=Y_val)
    for X, Y in chunks[1:]:
        clf.partial_fit(X, Y)
    assert len(clf.validation_scores_) == 4
    assert clf.validation_scores_[-1] == pytest.approx(clf.score(X_val, Y_val))
