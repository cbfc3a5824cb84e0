"""LayerNorm and BatchNorm models outside fastmlp: ONNX Runtime and the C export reproduce
``predict_proba`` / ``predict`` (the models are built as in test_layer_norm.py and
test_batch_norm.py, BatchNorm's with running statistics away from 0 and 1)."""

from __future__ import annotations

import numpy as np
import pytest
from test_batch_norm import bn_model
from test_layer_norm import TOL, norm_model, rng_for

DTYPES = [np.float64, np.float32]
BUILDERS = {"layer": norm_model, "batch": bn_model}
# What the generated C says it computes.
C_NAMES = {"layer": "LayerNorm", "batch": "BatchNorm"}


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
