"""predict_proba of an int8 784-256-128-10 model against the float model and ONNX Runtime.

One group per input size: 1, 64 and 10,000 MNIST test images. Each group holds:

- fastmlp-int8: ``QuantizedMLP.predict_proba`` of ``fastmlp.quantize(model, 2,000 training
  images)`` (7-bit activations, int8 weights per column, int32 sums; the best variant
  the CPU runs, ``fastmlp._int8.isa_best()``: VNNI, AVX2 or plain C);
- fastmlp-float32: ``MLP.predict_proba`` of the float model it was quantized from;
- onnxruntime-float32: ``model.to_onnx`` run by ONNX Runtime's CPU execution provider;
- onnxruntime-int8: the same graph after ``onnxruntime.quantization.quantize_dynamic``
  (int8 weights, activations quantized per call), the usual way to get an int8 ONNX model.

All hold the same He-initialised weights (timings do not depend on their values; the
zeros of the MNIST pixels and of ReLU, which fastmlp's int8 kernel skips, are there as in
a trained model). Each test checks its output against the float reference: within 1e-4 for
the float models, and for the int8 ones the same top-1 class on at least 90% of the rows
(random weights leave many rows with nearly tied classes, 95-98% agree here; a trained
model's int8 copy agrees on 99.9%, tests/test_quantize.py).
"""

from __future__ import annotations

import numpy as np
import pytest

import fastmlp
from fastmlp import MLP, _int8, reference

SIZES = (784, 256, 128, 10)
ACTIVATIONS = ("relu", "relu", "identity")
CASES = (1, 64, 10_000)
# One row count's implementations run back to back (conftest.workload_order).
WORKLOAD_PARAMS = ("n_rows",)


@pytest.fixture(params=CASES, ids=lambda n: f"n{n}")
def n_rows(request) -> int:
    return request.param


@pytest.fixture(scope="module")
def float_model(he_init_for) -> MLP:
    weights, biases = he_init_for("float32", sizes=SIZES)
    return MLP.from_weights(weights, biases, dtype="float32")


@pytest.fixture(scope="module")
def int8_model(float_model, mnist):
    return fastmlp.quantize(float_model, mnist.X["float32"][:2000])


@pytest.fixture
def X(mnist, n_rows) -> np.ndarray:
    return np.ascontiguousarray(mnist.X_test["float32"][:n_rows])


@pytest.fixture
def expected(float_model, X) -> np.ndarray:
    Z = reference.forward(float_model.weights, float_model.biases, X, ACTIVATIONS)[-1]
    return reference.softmax(Z)


@pytest.fixture(scope="module")
def onnx_paths(float_model, onnxruntime, tmp_path_factory):
    pytest.importorskip("onnx", reason="onnx is not installed (pip install onnx)")
    quantization = pytest.importorskip(
        "onnxruntime.quantization", reason="onnxruntime.quantization is not available"
    )
    d = tmp_path_factory.mktemp("onnx_int8")
    path, qpath = d / "float.onnx", d / "int8.onnx"
    float_model.to_onnx(path)
    quantization.quantize_dynamic(str(path), str(qpath))
    return {"float32": path, "int8": qpath}


def _label(benchmark, impl: str, n_rows: int, threads: int) -> None:
    kind = "latency" if n_rows <= 64 else "throughput"
    benchmark.group = f"int8 predict_proba {kind} {n_rows} samples 784-256-128-10"
    benchmark.extra_info.update(
        suite="int8", workload="predict_proba int8", impl=impl, n_samples=n_rows, threads=threads
    )


def _check_float(P, expected) -> None:
    np.testing.assert_allclose(P, expected, rtol=1e-4, atol=1e-6)


def _check_int8(P, expected) -> None:
    assert P.shape == expected.shape
    np.testing.assert_allclose(P.sum(axis=1), 1, atol=1e-4)
    agreement = np.mean(P.argmax(axis=1) == expected.argmax(axis=1))
    assert agreement >= (0.9 if len(P) > 1 else 1.0), agreement


def test_fastmlp_int8(benchmark, int8_model, X, expected, n_rows, n_threads):
    _label(benchmark, "fastmlp-int8", n_rows, n_threads)
    benchmark.extra_info["isa"] = _int8.isa_best()
    int8_model.n_threads = n_threads
    _check_int8(benchmark(int8_model.predict_proba, X), expected)


# Each variant this CPU runs but the default, on the batch (the emulated VNNI is for tests).
OTHER_ISAS = [i for i in _int8.isas() if i not in (_int8.isa_best(), "vnni_emulated")]


@pytest.mark.parametrize("n_rows", [CASES[-1]], ids=lambda n: f"n{n}")  # the batch only
@pytest.mark.parametrize("isa", OTHER_ISAS)
def test_fastmlp_int8_variant(benchmark, int8_model, X, expected, n_rows, n_threads, isa):
    _label(benchmark, f"fastmlp-int8-{isa}", n_rows, n_threads)
    out = np.empty((n_rows, SIZES[-1]), np.float32)
    forward = int8_model._network.forward
    benchmark(forward, X, out, softmax=True, n_threads=n_threads, isa=isa)
    _check_int8(out, expected)


def test_fastmlp_float32(benchmark, float_model, X, expected, n_rows, n_threads):
    _label(benchmark, "fastmlp-float32", n_rows, n_threads)
    float_model.n_threads = n_threads
    _check_float(benchmark(float_model.predict_proba, X), expected)


def _session(onnxruntime, path, n_threads):
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = n_threads
    options.inter_op_num_threads = 1
    session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    return lambda X: session.run(["probabilities"], {name: X})[0]  # model.to_onnx's names


@pytest.mark.parametrize("kind", ["float32", "int8"])
def test_onnxruntime(benchmark, onnxruntime, onnx_paths, kind, X, expected, n_rows, n_threads):
    _label(benchmark, f"onnxruntime-{kind}", n_rows, n_threads)
    run = _session(onnxruntime, onnx_paths[kind], n_threads)
    P = benchmark(run, X)
    (_check_float if kind == "float32" else _check_int8)(P, expected)
