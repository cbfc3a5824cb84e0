"""ONNX export: ONNX Runtime runs the graph with the outputs of predict_proba."""

from __future__ import annotations

import numpy as np
import pytest

import fastmlp

onnx = pytest.importorskip("onnx", reason="the onnx extra is not installed")
ort = pytest.importorskip("onnxruntime", reason="onnxruntime is not installed")


def _model(activation, loss, dtype, hidden):
    rng = np.random.default_rng(0)
    X = rng.standard_normal((120, 9)).astype(dtype)
    y = rng.choice(np.array(["a", "b", "c"]), 120)
    options = {"output_activation": "sigmoid"} if loss == "mse" else {}
    model = fastmlp.train(
        X,
        y,
        hidden=hidden,
        activation=activation,
        loss=loss,
        epochs=2,
        dtype=dtype,
        seed=0,
        n_threads=1,
        **options,
    )
    return model, X


@pytest.mark.parametrize("activation", ["relu", "tanh", "sigmoid"])
@pytest.mark.parametrize("hidden", [(), (7,), (8, 5, 3)])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_onnx_runtime_matches_predict_proba(tmp_path, activation, hidden, dtype):
    model, X = _model(activation, "cross_entropy", dtype, hidden)
    path = tmp_path / "model.onnx"
    model.to_onnx(path)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (probs,) = session.run(None, {"X": X})
    np.testing.assert_allclose(probs, model.predict_proba(X), atol=1e-5)
    assert (model.classes_[probs.argmax(axis=1)] == model.predict(X)).all()


def test_onnx_mse_model_gives_its_outputs(tmp_path):
    model, X = _model("sigmoid", "mse", np.float32, (6,))
    path = tmp_path / "model.onnx"
    model.to_onnx(path)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (out,) = session.run(None, {"X": X})
    np.testing.assert_allclose(out, model.decision_function(X), atol=1e-5)


@pytest.mark.parametrize("n_outputs", [1, 3])
def test_onnx_regressor_gives_its_predictions(tmp_path, n_outputs):
    rng = np.random.default_rng(1)
    X = rng.standard_normal((80, 5)).astype(np.float32)
    y = rng.standard_normal((80, n_outputs))
    model = fastmlp.train(X, y, loss="squared_error", hidden=(6,), epochs=2, seed=0)
    path = tmp_path / "regressor.onnx"
    model.to_onnx(path)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert [o.name for o in session.get_outputs()] == ["outputs"]
    (out,) = session.run(None, {"X": X})
    assert out.shape == (80, n_outputs)
    np.testing.assert_allclose(out.reshape(model.predict(X).shape), model.predict(X), atol=1e-5)


def test_a_model_holding_nan_is_refused_and_nothing_is_written(tmp_path):
    """Its graph would answer NaN: refused, as save and to_c refuse it."""
    model, _ = _model("relu", "cross_entropy", np.float32, (7,))
    model.weights[1][3, 1] = np.nan
    with pytest.raises(ValueError, match="NaN or infinite parameters"):
        model.to_onnx(tmp_path / "m.onnx")
    assert list(tmp_path.iterdir()) == []


def test_a_batch_norm_model_with_nan_running_statistics_is_refused(tmp_path):
    rng = np.random.default_rng(2)
    X = rng.standard_normal((60, 5)).astype(np.float32)
    model = fastmlp.train(
        X, rng.integers(0, 3, 60), hidden=(6,), normalization="batch", epochs=1, seed=0
    )
    model.running_vars[0][2] = np.nan
    with pytest.raises(ValueError, match="NaN or infinite parameters"):
        model.to_onnx(tmp_path / "m.onnx")
    assert list(tmp_path.iterdir()) == []


def test_a_directory_or_a_missing_one_is_refused_before_any_work(tmp_path):
    model, _ = _model("relu", "cross_entropy", np.float32, (7,))
    with pytest.raises(IsADirectoryError, match="it is a directory"):
        model.to_onnx(tmp_path)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        model.to_onnx(tmp_path / "nowhere" / "m.onnx")
    assert list(tmp_path.iterdir()) == []
