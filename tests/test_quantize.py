"""int8 models (fastmlp.quantize): the kernels against the NumPy reference of the integer
arithmetic (exactly), the variants and thread counts against each other (bitwise), MNIST
accuracy and size, the C export compiled and run, files, and every bad input."""

from __future__ import annotations

import pickle
import threading
import zipfile
from pathlib import Path

import numpy as np
import pytest

import fastmlp
from fastmlp import MLP, QuantizedMLP
from fastmlp import _int8 as K
from fastmlp import reference as R
from fastmlp.int8 import MIN_CALIBRATION_ROWS

ISAS = K.isas()
# 1 and 4 hidden layers, widths around the 16-column tile and the 4-input group.
SHAPES = [(5, 3), (7, 1, 2), (17, 33, 10), (64, 16, 15, 31, 17, 4), (130, 129, 2)]
ROWS = [1, 2, 3, 4, 5, 7, 8, 9, 33, 130]


def random_model(sizes, dtype=np.float32, seed=0) -> MLP:
    rng = np.random.default_rng(seed)
    weights = [rng.standard_normal((a, b)) * np.sqrt(2.0 / a) for a, b in zip(sizes, sizes[1:])]
    biases = [rng.standard_normal(b) * 0.1 for b in sizes[1:]]
    return MLP.from_weights(weights, biases, dtype=dtype)


def inputs(n, k, seed=1, signed=True) -> np.ndarray:
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, k)) if signed else rng.random((n, k))
    X[rng.random(X.shape) < 0.3] = 0.0  # zeros, which the kernels skip
    return X.astype(np.float32)


def reference_logits(q: QuantizedMLP, X) -> np.ndarray:
    return R.quantized_forward(
        X, q.weights_q, q.weight_scales, q.biases, q.input_scales, q.input_zero_point
    )


def logits(q: QuantizedMLP, X, isa=None, n_threads=1) -> np.ndarray:
    X = np.ascontiguousarray(X, dtype=np.float32)
    out = np.empty((X.shape[0], q.layer_sizes[-1]), np.float32)
    q._network.forward(X, out, softmax=False, n_threads=n_threads, isa=isa)
    return out


# --------------------------------------------------------------------------- numbers


def test_quantize_weights_is_symmetric_per_column():
    rng = np.random.default_rng(0)
    W = rng.standard_normal((20, 6))
    W[:, 2] = 0  # a dead column gets scale 1
    W_q, scale = R.quantize_weights(W)
    assert W_q.dtype == np.int8 and scale.dtype == np.float32
    assert W_q.min() >= -127 and W_q.max() <= 127
    assert scale[2] == 1 and not W_q[:, 2].any()
    live = [0, 1, 3, 4, 5]
    assert (np.abs(W_q[:, live]).max(axis=0) == 127).all()
    assert (np.abs(W_q * scale.astype(np.float64) - W) <= scale / 2 + 1e-9).all()


@pytest.mark.parametrize("zero_point", [0, 1, 60, 127])
def test_input_quantization_kernel_matches_reference(zero_point):
    X = inputs(9, 13) * 40
    X[0, :3] = [0.5, 1.5, 2.5]  # ties round to even
    Q, ok = K.quantize_rows(X, np.float32(1.0), zero_point)
    assert ok
    np.testing.assert_array_equal(Q, R.quantize_activations(X, np.float32(1.0), zero_point))
    assert Q.max() <= 127
    if zero_point == 0:
        assert list(Q[0, :3]) == [0, 2, 2]
    for bad in (np.nan, np.inf, -np.inf):
        Y = X.copy()
        Y[4, 7] = bad
        assert not K.quantize_rows(Y, np.float32(0.5), zero_point)[1]


def test_packing_layout():
    W = np.arange(-60, 60, dtype=np.int8).reshape(6, 20)  # 2 groups x 2 tiles, padded
    P = K.pack(W)
    assert P.ctypes.data % 64 == 0 and P.size == 8 * 32
    P = P.reshape(2, 2, 16, 4)  # tile, group, column, input
    for t in range(2):
        for g in range(2):
            for c in range(16):
                for i in range(4):
                    row, col = 4 * g + i, 16 * t + c
                    want = W[row, col] if row < 6 and col < 20 else 0
                    assert P[t, g, c, i] == want


def test_default_variant_is_the_fastest_kind_this_cpu_runs():
    """VNNI where the CPU has it, else AVX2, else plain C; never the emulated VNNI, which
    is slower than AVX2 and only lets tests run the VNNI code on AVX2 machines."""
    assert "base" in ISAS and K.isa_best() in ISAS
    ranked = ["avx512_vnni", "avx_vnni", "avx2", "base"]
    assert K.isa_best() == next(isa for isa in ranked if isa in ISAS)
    if "avx2" in ISAS:
        assert "vnni_emulated" in ISAS


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("sizes", SHAPES, ids=str)
@pytest.mark.parametrize("signed", [False, True], ids=["unsigned", "signed"])
def test_kernels_match_the_reference_exactly(isa, sizes, signed):
    model = random_model(sizes)
    X_cal = inputs(200, sizes[0], seed=2, signed=signed)
    q = fastmlp.quantize(model, X_cal)
    assert (q.input_zero_point > 0) == signed
    for n in ROWS:
        X = inputs(n, sizes[0], seed=n, signed=signed)
        X[0] *= 3  # beyond the calibrated range: saturates
        np.testing.assert_array_equal(logits(q, X, isa), reference_logits(q, X))


@pytest.mark.parametrize("isa", ISAS)
def test_strips_of_rows_with_zeros_apart_run_row_by_row_exactly(isa):
    """Rows whose non-zero inputs lie in different places (pixels) run one by one, each
    over its own groups; rows that share them run as 4-row strips. Both give the
    reference's bits, and a block may hold both kinds."""
    model = random_model((200, 24, 7), seed=5)
    q = fastmlp.quantize(model, inputs(100, 200, signed=False))
    X = np.zeros((22, 200), np.float32)
    rng = np.random.default_rng(6)
    for i in range(8):  # two strips of rows, each non-zero in its own 25 inputs
        X[i, 25 * i : 25 * i + 25] = rng.random(25) + 0.1
    X[8:14] = inputs(6, 200, seed=7, signed=False)  # a strip of shared groups, then a tail
    # Rows non-zero in 0 to 7 groups of 4 inputs, none shared, so one by one: the VNNI
    # variants deal a row's groups to 4 sets of sums; these fill none, some, all, and all
    # and some.
    for i in range(8):
        X[14 + i, 24 * i : 28 * i] = rng.random(4 * i) + 0.1
    np.testing.assert_array_equal(logits(q, X, isa), reference_logits(q, X))


@pytest.mark.may_skip("a CPU without AVX2 runs the plain-C variant only")
def test_variants_agree_bitwise_on_mnist_like_rows():
    """Every variant's strips give the same integer sums and so the same bits."""
    if len(ISAS) < 2:
        pytest.skip("this CPU runs the plain-C variant only")  # pragma: no cover
    model = random_model((784, 100, 37, 10), seed=3)
    X = inputs(301, 784, seed=4, signed=False)
    q = fastmlp.quantize(model, X)
    outs = [logits(q, X, isa) for isa in ISAS]
    for out in outs[1:]:
        assert np.array_equal(out, outs[0])


@pytest.mark.parametrize("isa", ISAS)
def test_requantization_rounds_half_to_even(isa):
    """Hidden values that fall exactly halfway round to even (as numpy.rint), in every
    variant: a hand-built network whose first layer computes q + 0.5 and whose second
    copies its input to the logits."""
    k = 20
    eye = np.eye(k, dtype=np.int8)
    zeros, ones = np.zeros(k, np.int32), np.ones(k, np.float32)
    biases = [np.full(k, 0.5, np.float32), np.zeros(k, np.float32)]
    net = K.Int8Network([eye, eye], [zeros, zeros], [ones, ones], biases, [1.0], 1.0, 0)
    X = np.arange(6 * k, dtype=np.float32).reshape(6, k) % 127
    out = np.empty_like(X)
    net.forward(X, out, softmax=False, n_threads=1, isa=isa)
    np.testing.assert_array_equal(out, np.minimum(np.rint(X + 0.5), 127))


def test_hidden_activations_saturate_and_dead_layers_work():
    # A layer whose ReLU outputs are all zero on the calibration rows gets scale 1.
    model = random_model((6, 5, 3))
    model.biases[0][:] = -100.0
    q = fastmlp.quantize(model, inputs(50, 6))
    assert q.input_scales[1] == 1.0
    X = inputs(10, 6)
    np.testing.assert_array_equal(q.decision_function(X), reference_logits(q, X))


# --------------------------------------------------------------------------- determinism


def test_bitwise_identical_for_any_thread_count_and_split():
    model = random_model((50, 40, 30, 7), seed=5)
    X = inputs(1000, 50, seed=6)
    q = fastmlp.quantize(model, X[:200])
    one = q.predict_proba(X, n_threads=1)
    two = q.predict_proba(X, n_threads=2)
    assert np.array_equal(one, two)
    rows = np.concatenate(
        [q.predict_proba(X[i : i + 37], n_threads=2) for i in range(0, 1000, 37)]
    )
    assert np.array_equal(rows, one)
    assert np.array_equal(q.predict_proba(X[5:6]), one[5:6])


def test_predict_from_many_threads_at_once():
    model = random_model((30, 20, 4), seed=7)
    X = inputs(300, 30, seed=8)
    q = fastmlp.quantize(model, X)
    expected = q.predict_proba(X)
    results, errors = [], []

    def work():
        try:
            for _ in range(10):
                results.append(q.predict_proba(X))
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and len(results) == 60
    assert all(np.array_equal(r, expected) for r in results)


# --------------------------------------------------------------------------- the model API


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_model_api_and_float_agreement(dtype):
    rng = np.random.default_rng(9)
    centres = rng.normal(size=(3, 8)) * 4
    y = rng.integers(0, 3, 600)
    X = (centres[y] + rng.normal(size=(600, 8))).astype(dtype)
    labels = np.array(["a", "b", "c"])[y]
    model = fastmlp.train(X, labels, hidden=(16, 12), epochs=15, seed=0, dtype=dtype)
    q = fastmlp.quantize(model, X[:100], validation_data=(X, labels))
    assert q.source_dtype == np.dtype(dtype).name
    P = q.predict_proba(X)
    assert P.dtype == np.float32 and P.shape == (600, 3)
    np.testing.assert_allclose(P.sum(axis=1), 1, atol=1e-5)
    assert set(q.predict(X)) <= {"a", "b", "c"}
    np.testing.assert_array_equal(q.predict(X), q.classes_[q.decision_function(X).argmax(1)])
    assert q.score(X, labels) == pytest.approx(q.report["int8_accuracy"])
    assert abs(q.score(X, labels) - model.score(X, labels)) < 0.02
    assert np.abs(P - model.predict_proba(X)).max() == pytest.approx(
        q.report["max_proba_difference"], rel=1e-5
    )
    assert q.predict(X.tolist()[:3]).shape == (3,)  # lists and float64 are converted
    assert "QuantizedMLP(8-16-12-3" in repr(q)


def test_report_is_a_readable_dict(tmp_path):
    model = random_model((10, 8, 3))
    X = inputs(100, 10)
    y = model.predict(X)
    q = fastmlp.quantize(model, X, validation_data=(X, y))
    report = q.report
    assert isinstance(report, dict)
    assert report["float_accuracy"] == 1.0
    assert report["top1_agreement"] == np.mean(q.predict(X) == y)
    assert report["per_class_support"] == list(np.bincount(y, minlength=3))
    model.save(tmp_path / "f.npz", optimizer_state=False)
    q.save(tmp_path / "q.npz")
    assert report["float_bytes"] == (tmp_path / "f.npz").stat().st_size
    assert report["int8_bytes"] == (tmp_path / "q.npz").stat().st_size
    text = str(report)
    for fragment in (
        "accuracy: float 100.00%",
        "top-1 agreement",
        "largest probability",
        "x smaller",
    ):
        assert fragment in text
    bare = fastmlp.quantize(model, X).report
    assert "float_accuracy" not in bare and "not measured" in str(bare)


def test_pickle_round_trip():
    q = fastmlp.quantize(random_model((9, 7, 3)), inputs(40, 9))
    X = inputs(20, 9)
    back = pickle.loads(pickle.dumps(q))
    assert np.array_equal(back.predict_proba(X), q.predict_proba(X))


# --------------------------------------------------------------------------- MNIST


@pytest.fixture(scope="module")
def mnist_pair():
    """A 784-256-128-10 model trained briefly on MNIST (fixed seed), and its int8 copy."""
    # The repository's copy, beside the tests: load_mnist()'s default finds it only when
    # fastmlp runs from the source tree, not installed.
    mnist = Path(__file__).resolve().parent.parent / "benches" / "data" / "mnist"
    (X_train, y_train), (X_test, y_test) = fastmlp.datasets.load_mnist(mnist)
    model = fastmlp.train(X_train[:20000], y_train[:20000], hidden=(256, 128), epochs=2, seed=0)
    q = fastmlp.quantize(model, X_train[:2000], validation_data=(X_test, y_test))
    return model, q, X_test, y_test


def test_mnist_accuracy_and_size(mnist_pair):
    model, q, X_test, y_test = mnist_pair
    report = q.report
    assert report["float_accuracy"] > 0.94
    assert report["accuracy_change"] >= -0.3  # at most 0.3 points lost
    assert report["int8_accuracy"] == q.score(X_test, y_test)
    assert report["top1_agreement"] > 0.99
    assert report["size_ratio"] >= 3.5


def test_mnist_exact_against_reference(mnist_pair):
    _, q, X_test, _ = mnist_pair
    X = X_test[:500]
    expected = reference_logits(q, X)
    for isa in ISAS:
        assert np.array_equal(logits(q, X, isa), expected)
    assert np.array_equal(logits(q, X, n_threads=2), expected)


# --------------------------------------------------------------------------- files


def test_save_load_round_trip(tmp_path, mnist_pair):
    _, q, X_test, _ = mnist_pair
    path = tmp_path / "q.npz"
    q.save(path)
    back = fastmlp.load(path)
    assert isinstance(back, QuantizedMLP)
    assert back.layer_sizes == q.layer_sizes and back.input_zero_point == q.input_zero_point
    np.testing.assert_array_equal(back.classes_, q.classes_)
    X = X_test[:300]
    assert np.array_equal(back.predict_proba(X), q.predict_proba(X))
    with zipfile.ZipFile(path) as z:
        assert not any(info.filename.endswith(".pkl") for info in z.infolist())


def _rewrite(src: Path, dst: Path, **changes) -> None:
    """Copy the .npz at src to dst with some arrays replaced (None: removed)."""
    with np.load(src) as npz:
        arrays = {k: npz[k] for k in npz.files}
    for key, value in changes.items():
        if value is None:
            arrays.pop(key)
        else:
            arrays[key] = value
    with open(dst, "wb") as fh:
        np.savez(fh, **arrays)


# The error is the whole report: no numpy RuntimeWarning (an overflowing cast) before it.
@pytest.mark.filterwarnings("error::RuntimeWarning")
def test_corrupted_int8_files_are_clear_errors(tmp_path):
    q = fastmlp.quantize(random_model((9, 7, 3)), inputs(40, 9, signed=False))
    assert q.input_zero_point == 0
    good = tmp_path / "good.npz"
    q.save(good)
    raw = good.read_bytes()
    (tmp_path / "truncated.npz").write_bytes(raw[: len(raw) // 2])
    with np.load(good) as npz:
        meta = str(npz["meta"][()])
        W1 = npz["W1"].copy()
    W1[0, 0] = -128
    cases = {
        "truncated.npz": "not a valid .npz",
        "newer.npz": dict(version=np.array(9, np.int64)),
        "meta.npz": dict(
            meta=np.array(meta.replace('"input_zero_point": ', '"input_zero_point": 500+'))
        ),
        "zp.npz": dict(
            meta=np.array(meta.replace('"input_zero_point": 0', '"input_zero_point": 300'))
        ),
        "sizes.npz": dict(meta=np.array(meta.replace('"layer_sizes": [9', '"layer_sizes": [8'))),
        "missing.npz": dict(b2=None),
        "nometa.npz": dict(meta=None),
        "shape.npz": dict(W1=np.zeros((9, 6), np.int8)),
        "dtype.npz": dict(W1=W1.astype(np.int16)),
        "minus128.npz": dict(W1=W1),
        "nan.npz": dict(w_scale2=np.array([np.nan, 1, 1], np.float32)),
        "scale.npz": dict(input_scales=np.array([0, 1], np.float32)),
        "huge.npz": dict(w_scale2=np.array([1e37, 1, 1], np.float32)),
        "pickle.npz": dict(classes=np.array([1, "a", None], dtype=object)),
    }
    expected = {
        "newer.npz": "newer fastmlp",
        "meta.npz": "not valid JSON",
        "zp.npz": "input_zero_point",
        "sizes.npz": "shape",
        "missing.npz": "missing",
        "nometa.npz": "the 'meta' array is missing",
        "shape.npz": "shape",
        "dtype.npz": "dtype",
        "minus128.npz": "-128",
        "nan.npz": "NaN",
        "scale.npz": "input_scales",
        "huge.npz": "beyond float32",
        "pickle.npz": "Python objects",
    }
    for name, change in cases.items():
        if isinstance(change, dict):
            _rewrite(good, tmp_path / name, **change)
        message = expected.get(name, change)
        with pytest.raises(ValueError, match="cannot load") as info:
            fastmlp.load(tmp_path / name)
        assert message in str(info.value), name
    assert isinstance(fastmlp.load(good), QuantizedMLP)


# --------------------------------------------------------------------------- bad input


def test_bad_calibration_data_is_a_clear_error():
    model = random_model((6, 5, 3))
    X = inputs(100, 6)
    with pytest.raises(ValueError, match="6"):
        fastmlp.quantize(model, inputs(100, 7))
    for bad in (np.nan, np.inf):
        Y = X.copy()
        Y[3, 2] = bad
        with pytest.raises(ValueError, match="NaN or infinity"):
            fastmlp.quantize(model, Y)
    with pytest.raises(ValueError, match=f"at least {MIN_CALIBRATION_ROWS}"):
        fastmlp.quantize(model, X[: MIN_CALIBRATION_ROWS - 1])
    fastmlp.quantize(model, X[:MIN_CALIBRATION_ROWS])  # the minimum is enough
    with pytest.raises(ValueError, match="empty"):
        fastmlp.quantize(model, X[:0])
    with pytest.raises(ValueError, match="percentile"):
        fastmlp.quantize(model, X, percentile=20)
    with pytest.raises(ValueError, match="pair"):
        fastmlp.quantize(model, X, validation_data=X)


@pytest.mark.filterwarnings("error::RuntimeWarning")
def test_a_model_whose_outputs_pass_float32_is_refused():
    """Weights near float32's limit (a diverged model) would give int8 scales whose
    products overflow: quantize refuses them, where it made a model predicting NaN."""
    sizes = (4, 6, 5, 3)
    weights = [np.full((a, b), 0.5, np.float32) for a, b in zip(sizes, sizes[1:])]
    weights[1][:] = np.finfo(np.float32).max / 4
    model = MLP.from_weights(weights, [np.zeros(b, np.float32) for b in sizes[1:]])
    with pytest.raises(ValueError, match=r"layer 2's outputs could reach .* beyond float32"):
        fastmlp.quantize(model, 1 + inputs(100, 4, signed=False))


@pytest.mark.parametrize("n", [1, 5, 63])
@pytest.mark.parametrize("softmax", [True, False])
def test_outputs_is_forward_of_one_block(n, softmax):
    """The request path (Int8Network.outputs) gives forward's bits, in a new array."""
    q = fastmlp.quantize(random_model((37, 19, 6, 3)), inputs(100, 37))
    X = inputs(n, 37, seed=n)
    expected = np.empty((n, 3), np.float32)
    q._network.forward(X, expected, softmax=softmax, n_threads=1)
    got = q._network.outputs(X, softmax)
    assert got.dtype == np.float32 and got.shape == (n, 3) and got.flags.c_contiguous
    assert np.array_equal(got, expected)
    assert not np.array_equal(got, q._network.outputs(X, not softmax))
    with pytest.raises(ValueError, match="NaN or infinity"):
        q._network.outputs(np.where(X == 0, np.nan, X).astype(np.float32), softmax)


def test_outputs_leaves_every_other_input_to_the_checks(not_ready_requests):
    """What forward would not read as it stands gets None, for QuantizedMLP._outputs to
    check and convert: another dtype or byte order, another layout or shape, no rows or
    more than one block of them, an unaligned buffer, a subclass, a list."""
    net = fastmlp.quantize(random_model((8, 4, 3)), inputs(100, 8))._network
    X = np.ones((4, 8), np.float32)
    others = not_ready_requests(X)
    assert [net.outputs(other, True) for other in others] == [None] * len(others)
    assert net.outputs(X, True) is not None
    X.setflags(write=False)  # read-only rows are read as they stand
    assert net.outputs(X, True) is not None


@pytest.mark.parametrize("isa", ISAS)
def test_every_variant_refuses_nonfinite_inputs(isa):
    # 70 inputs: the vector loops' whole steps (AVX2: 32 at a time) and the tail after them.
    q = fastmlp.quantize(random_model((70, 5, 3)), inputs(100, 70))
    X = inputs(9, 70)
    np.testing.assert_array_equal(logits(q, X, isa), reference_logits(q, X))
    for row, col in ((0, 1), (4, 40), (8, 66)):
        for bad in (np.nan, np.inf, -np.inf, 1e38):
            Y = X.copy()
            Y[row, col] = bad
            with pytest.raises(ValueError, match="NaN or infinity"):
                logits(q, Y, isa)


def test_models_that_cannot_be_quantized():
    X = inputs(100, 6)
    regressor = MLP((6, 4, 2), None, loss="squared_error")
    with pytest.raises(ValueError, match="for classifiers.*regressor"):
        fastmlp.quantize(regressor, X)
    tanh = MLP((6, 4, 2), [0, 1], activation="tanh")
    with pytest.raises(ValueError, match="ReLU"):
        fastmlp.quantize(tanh, X)
    with pytest.raises(TypeError, match="MLP"):
        fastmlp.quantize("model.npz", X)


def test_bad_prediction_input():
    q = fastmlp.quantize(random_model((6, 5, 3)), inputs(100, 6))
    X = inputs(70, 6)
    for bad in (np.nan, np.inf, 1e38):
        Y = X.copy()
        Y[65, 1] = bad
        with pytest.raises(ValueError, match="NaN or infinity"):
            q.predict_proba(Y)
        with pytest.raises(ValueError, match="NaN or infinity"):
            q.predict(Y[65:66])
    with pytest.raises(ValueError, match="features"):
        q.predict(inputs(3, 5))
    with pytest.raises(ValueError, match="cannot run"):
        logits(q, X, isa="neon")


# --------------------------------------------------------------------------- C export


@pytest.mark.may_skip("needs a C compiler (cc, gcc or clang)")
@pytest.mark.parametrize("signed", [False, True], ids=["unsigned", "signed"])
@pytest.mark.parametrize("sizes", [(9, 3), (17, 33, 10), (20, 16, 5, 31, 4)], ids=str)
def test_c_export_compiles_and_matches(tmp_path, sizes, signed):
    export = pytest.importorskip("test_export_c")
    if export.CC is None:
        pytest.skip("no C compiler")  # pragma: no cover
    q = fastmlp.quantize(random_model(sizes), inputs(200, sizes[0], signed=signed))
    q.to_c(tmp_path, "qm")
    (tmp_path / "driver.c").write_text(export.driver_source("qm", "proba", "float"))
    exe = export.compile_c(tmp_path, ["driver.c", "qm.c"], "driver")
    X = inputs(40, sizes[0], seed=3, signed=signed)
    X[0] *= 3
    X.tofile(tmp_path / "x.bin")
    import subprocess

    subprocess.run([str(exe), "x.bin", "40", "out.bin"], cwd=tmp_path, check=True, timeout=60)
    raw = (tmp_path / "out.bin").read_bytes()
    k = sizes[-1]
    size = 40 * k * 4
    row = np.frombuffer(raw[:size], np.float32).reshape(40, k)
    batch = np.frombuffer(raw[size : 2 * size], np.float32).reshape(40, k)
    classes = np.frombuffer(raw[2 * size :], np.intc)[:40]
    assert np.array_equal(row, batch)
    np.testing.assert_allclose(row, q.predict_proba(X), rtol=0, atol=2e-6)
    np.testing.assert_array_equal(q.classes_[classes], q.predict(X))
    source = (tmp_path / "qm.c").read_text()
    assert "static const int8_t qm_W0" in source and "int32_t acc" in source
    assert ("qm_offset0" in source) == signed
