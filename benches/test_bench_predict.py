"""predict_proba of a 784-128-64-10 float32 model: latency and throughput.

One group per input: 1, 8 and 64 samples (latency of a request) and 10,000 samples
(throughput of a batch job), MNIST test images; and one dense row of random pixels in
(0, 1). fastmlp's one-row kernel skips the rows of W whose input is zero, and MNIST images
are 81% zero pixels on average (the first test image, the one-row input here, 85%), which
the peers do not skip: the MNIST row shows what fastmlp gains on such inputs, the dense row
what a row with no zeros costs. (From 2 rows on, fastmlp runs its GEMM tiles, which skip
nothing.) Each group holds:

- fastmlp: ``MLP.predict_proba`` (the public call: validation, output allocation, the
  compiled forward pass and softmax);
- numpy: ``reference.forward`` + ``reference.softmax``, BLAS at the session's threads (the
  readable reference: a fresh array per layer, nothing tuned);
- torch: the same ``nn.Sequential`` under ``inference_mode``, NumPy in, NumPy out;
- onnxruntime: a graph of three ``Gemm`` nodes, two ``Relu`` and a ``Softmax`` built with
  ``onnx.helper``, run by the CPU execution provider;
- sklearn: ``MLPClassifier.predict_proba`` with the same weights set on a fitted estimator.

All hold the same (random, He-initialised) weights: timings do not depend on their values.
Each test also checks that its output matches the reference's, so a peer that is fast because
it computes something else cannot slip in.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from fastmlp import MLP, reference

ACTIVATIONS = ("relu", "relu", "identity")  # 784-128-64-10, as in conftest
DTYPE = "float32"
# (rows per call, their kind): "mnist" test images, or "dense" random pixels in (0, 1).
CASES = ((1, "mnist"), (1, "dense"), (8, "mnist"), (64, "mnist"), (10_000, "mnist"))
# One case's implementations run back to back (conftest.workload_order).
WORKLOAD_PARAMS = ("case",)


@pytest.fixture(params=CASES, ids=lambda case: f"n{case[0]}-{case[1]}")
def case(request) -> tuple[int, str]:
    """(rows of X per predict_proba call, "mnist" or "dense")."""
    return request.param


@pytest.fixture
def X(mnist, case) -> np.ndarray:
    """The first n test images, or n dense rows; a C-contiguous float32 array."""
    n, kind = case
    if kind == "dense":
        # Uniform in (0, 1): no zero pixel to skip.
        rng = np.random.default_rng(0)
        return (1.0 - rng.random((n, 784), dtype=np.float32)).astype(DTYPE)
    return np.ascontiguousarray(mnist.X_test[DTYPE][:n])


@pytest.fixture(scope="module")
def params(initial_params):
    """(weights, biases) of the float32 model."""
    return initial_params[DTYPE]


@pytest.fixture
def expected(params, X) -> np.ndarray:
    """The reference's probabilities for X."""
    return _numpy_predict_proba(*params, X)


def _numpy_predict_proba(weights, biases, X):
    return reference.softmax(reference.forward(weights, biases, X, ACTIVATIONS)[-1])


def _check(P, expected) -> None:
    np.testing.assert_allclose(P, expected, rtol=1e-4, atol=1e-6)


def _label(benchmark, impl: str, case: tuple[int, str], threads: int) -> None:
    n_samples, rows = case
    kind = "latency" if n_samples <= 64 else "throughput"
    benchmark.group = f"predict_proba {kind} {n_samples} samples {DTYPE} {rows} rows"
    benchmark.extra_info.update(
        suite="predict",
        # The report tells the inputs apart by workload: MNIST rows keep the old name.
        workload="predict_proba" if rows == "mnist" else f"predict_proba {rows}",
        rows=rows,
        impl=impl,
        dtype=DTYPE,
        n_samples=n_samples,
        threads=threads,
    )


def test_fastmlp(benchmark, expected, params, X, case, n_threads):
    _label(benchmark, "fastmlp", case, n_threads)
    model = MLP.from_weights(*params, dtype=DTYPE)
    model.n_threads = n_threads
    _check(benchmark(model.predict_proba, X), expected)


def test_numpy(benchmark, expected, params, X, case, n_threads):
    _label(benchmark, "numpy", case, n_threads)
    _check(benchmark(_numpy_predict_proba, *params, X), expected)


def test_torch(benchmark, expected, torch, torch_mlp, params, X, case, n_threads):
    _label(benchmark, "torch", case, n_threads)
    net = torch_mlp(*params, DTYPE).eval()

    def predict_proba(X):
        with torch.inference_mode():
            return torch.softmax(net(torch.from_numpy(X)), dim=1).numpy()

    _check(benchmark(predict_proba, X), expected)


def _onnx_model(onnx, weights, biases):
    """784-128-64-10 as Gemm/Relu nodes ending in Softmax; weights are initializers."""
    helper, tensor_type = onnx.helper, onnx.TensorProto.FLOAT
    inits, nodes, inp = [], [], "X"
    for i, (W, b) in enumerate(zip(weights, biases)):
        inits += [
            onnx.numpy_helper.from_array(W, f"W{i}"),
            onnx.numpy_helper.from_array(b, f"b{i}"),
        ]
        nodes.append(helper.make_node("Gemm", [inp, f"W{i}", f"b{i}"], [f"z{i}"]))
        inp = f"z{i}"
        if i < len(weights) - 1:
            nodes.append(helper.make_node("Relu", [inp], [f"a{i}"]))
            inp = f"a{i}"
    nodes.append(helper.make_node("Softmax", [inp], ["P"], axis=1))
    graph = helper.make_graph(
        nodes,
        "mlp",
        [helper.make_tensor_value_info("X", tensor_type, ["n", weights[0].shape[0]])],
        [helper.make_tensor_value_info("P", tensor_type, ["n", weights[-1].shape[1]])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8  # readable by every onnxruntime release of the last years
    onnx.checker.check_model(model)
    return model.SerializeToString()


def test_onnxruntime(benchmark, expected, onnxruntime, onnx, params, X, case, n_threads):
    _label(benchmark, "onnxruntime", case, n_threads)
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = n_threads
    options.inter_op_num_threads = 1
    session = onnxruntime.InferenceSession(
        _onnx_model(onnx, *params), options, providers=["CPUExecutionProvider"]
    )
    _check(benchmark(lambda X: session.run(["P"], {"X": X})[0], X), expected)


def test_sklearn(benchmark, expected, mlp_classifier, params, mnist, X, case, n_threads):
    from sklearn.exceptions import ConvergenceWarning

    _label(benchmark, "sklearn", case, n_threads)
    weights, biases = params
    clf = mlp_classifier(hidden_layer_sizes=(128, 64), max_iter=1)
    with warnings.catch_warnings():
        # A token fit makes the estimator usable; its weights are replaced just after.
        warnings.simplefilter("ignore", ConvergenceWarning)
        clf.fit(mnist.X_test[DTYPE][:500], mnist.y_test[:500])
    clf.coefs_ = [W.copy() for W in weights]
    clf.intercepts_ = [b.copy() for b in biases]
    _check(benchmark(clf.predict_proba, X), expected)
