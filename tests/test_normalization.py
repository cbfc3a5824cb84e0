"""What LayerNorm and BatchNorm models do alike: learn a nonlinear task end to end, serve
as scikit-learn estimators, and outside fastmlp, ONNX Runtime and the C export reproduce
``predict_proba`` / ``predict`` (the models are built as in test_layer_norm.py and
test_batch_norm.py, BatchNorm's with running statistics away from 0 and 1). What each
does on its own is tested in those two files."""

from __future__ import annotations

import numpy as np
import pytest
from test_batch_norm import bn_model
from test_layer_norm import TOL, norm_model, rng_for

import fastmlp

DTYPES = [np.float64, np.float32]
BUILDERS = {"layer": norm_model, "batch": bn_model}
# What the generated C says it computes.
C_NAMES = {"layer": "LayerNorm", "batch": "BatchNorm"}
# A model's per-layer arrays only that normalization has (one per hidden layer).
OWN_ARRAYS = {"layer": "norm_weights", "batch": "running_vars"}


@pytest.mark.parametrize("normalization", ["layer", "batch"])
def test_learns_a_nonlinear_task(normalization):
    """End to end: the network learns y = [x0 + x1 x2 > 0] as a plain one does (0.94 to
    0.96 on held-out rows; BatchNorm's scored with the running statistics)."""
    rng = rng_for("learn")
    X = rng.standard_normal((2000, 8))
    y = (X[:, 0] + X[:, 1] * X[:, 2] > 0).astype(int)
    model = fastmlp.train(
        X, y, hidden=(32, 32), normalization=normalization, epochs=10, lr=3e-3, seed=0,
        validation_split=0.25,
    )  # fmt: skip
    assert model.history["val_accuracy"][-1] > 0.9


@pytest.mark.parametrize("normalization, other", [("layer", None), ("batch", "layer")])
def test_sklearn_estimators(normalization, other):
    pytest.importorskip("sklearn")
    from sklearn.base import clone

    from fastmlp.sklearn import MLPClassifier, MLPRegressor

    rng = rng_for("sklearn")
    X = rng.standard_normal((150, 6))
    y = rng.integers(0, 3, 150)
    clf = MLPClassifier((8, 5), normalization=normalization, max_iter=3, random_state=0)
    clf.fit(X, y)
    assert clf.model_.normalization == normalization
    assert len(getattr(clf.model_, OWN_ARRAYS[normalization])) == 2
    assert clone(clf).get_params()["normalization"] == normalization
    reg = MLPRegressor((8,), normalization=normalization, max_iter=3, random_state=0)
    assert reg.fit(X, X[:, 0]).model_.normalization == normalization
    clf.set_params(warm_start=True, normalization=other)
    refusal = f"fitted with normalization='{normalization}'; got {other!r}"
    with pytest.raises(ValueError, match=refusal):
        clf.fit(X, y)
    with pytest.raises(ValueError, match=refusal):
        clf.partial_fit(X, y)


@pytest.mark.parametrize("normalization", ["layer", "batch"])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("loss", ["cross_entropy", "squared_error"])
def test_onnx_matches(tmp_path, loss, dtype, normalization):
    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    rng = rng_for("onnx", loss, str(dtype), normalization)
    model = BUILDERS[normalization](rng, (6, 9, 7, 3), dtype, ["tanh", "relu"], loss)
    X = rng.standard_normal((40, 6)).astype(dtype)
    model.to_onnx(tmp_path / "m.onnx")
    out = ort.InferenceSession(str(tmp_path / "m.onnx")).run(None, {"X": X})[0]
    want = model.predict_proba(X) if loss == "cross_entropy" else model.predict(X)
    np.testing.assert_allclose(out, want, rtol=TOL[dtype] * 10, atol=TOL[dtype])


@pytest.mark.parametrize("normalization", ["layer", "batch"])
@pytest.mark.parametrize("dtype", DTYPES)
def test_c_export_matches(tmp_path, dtype, normalization):
    from test_export_c import CC, Exported

    if CC is None:
        pytest.skip("no C compiler")
    rng = rng_for("c", str(dtype), normalization)
    model = BUILDERS[normalization](rng, (6, 9, 7, 3), dtype, ["sigmoid", "relu"])
    X = rng.standard_normal((30, 6)).astype(dtype)
    row, batch, cls_row, _ = Exported(model, tmp_path).run(X)
    want = model.predict_proba(X)
    atol = 1e-5 if dtype == np.float32 else 1e-12
    np.testing.assert_allclose(row, want, atol=atol)
    np.testing.assert_allclose(batch, want, atol=atol)
    assert np.array_equal(cls_row, want.argmax(axis=1))
    assert C_NAMES[normalization] in (tmp_path / "model.c").read_text()
