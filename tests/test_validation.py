"""Bad input gets a clear error that names the argument (or the fix); odd but valid
arrays (strided, Fortran-ordered, read-only, memory-mapped) work."""

from __future__ import annotations

import contextlib
import copy
import re
from pathlib import Path

import numpy as np
import pytest

import fastmlp
from fastmlp import MLP

N_FEATURES = 10


def blobs(n, seed=0, n_features=N_FEATURES, k=3):
    rng = np.random.default_rng(seed)
    centers = 2.0 * rng.standard_normal((k, n_features))
    y = np.arange(n) % k
    X = centers[y] + rng.standard_normal((n, n_features))
    return X.astype(np.float32), y


X, Y = blobs(90)


def train(X, y, **options):
    defaults = dict(hidden=(4,), epochs=1, batch_size=16, seed=0, n_threads=1)
    return fastmlp.train(X, y, **{**defaults, **options})


@pytest.fixture(scope="module")
def model():
    return train(X, Y, epochs=3)


# Every entry point that takes X (and y where it needs one).
CALLS = {
    "train": lambda m, X, y: train(X, y),
    "fit_more": lambda m, X, y: copy.deepcopy(m).fit_more(X, y, epochs=1, n_threads=1),
    "predict": lambda m, X, y: m.predict(X),
    "predict_proba": lambda m, X, y: m.predict_proba(X),
    "decision_function": lambda m, X, y: m.decision_function(X),
    "score": lambda m, X, y: m.score(X, y),
    "loss_and_gradients": lambda m, X, y: m.loss_and_gradients(X, y),
}
WITH_Y = ["train", "fit_more", "score", "loss_and_gradients"]
WITH_MODEL = [name for name in CALLS if name != "train"]


# -- shapes ------------------------------------------------------------------------------


@pytest.mark.parametrize("call", CALLS)
def test_1d_X_suggests_reshape(model, call):
    with pytest.raises(ValueError, match=r"2-D.*reshape\(1, -1\)"):
        CALLS[call](model, X[0], Y[:1])


@pytest.mark.parametrize("call", CALLS)
def test_3d_X_is_refused(model, call):
    with pytest.raises(ValueError, match=r"X must be 2-D .*3-D"):
        CALLS[call](model, X[:, :, None], Y)


@pytest.mark.parametrize("call", CALLS)
def test_scalar_X_is_refused(model, call):
    with pytest.raises(ValueError, match=r"X must be 2-D"):
        CALLS[call](model, 3.0, Y[:1])


@pytest.mark.parametrize("call", WITH_MODEL)
@pytest.mark.parametrize("n_features", [N_FEATURES - 1, N_FEATURES + 1])
def test_wrong_number_of_features(model, call, n_features):
    Xw = np.zeros((5, n_features), np.float32)
    with pytest.raises(ValueError, match=rf"{n_features} features .* expects {N_FEATURES}"):
        CALLS[call](model, Xw, Y[:5])


@pytest.mark.parametrize("call", WITH_Y)
@pytest.mark.parametrize("n_labels", [89, 91])
def test_X_and_y_lengths_differ(model, call, n_labels):
    y = np.resize(Y, n_labels)
    with pytest.raises(ValueError, match=rf"different lengths: 90 samples but {n_labels} labels"):
        CALLS[call](model, X, y)


@pytest.mark.parametrize("call", WITH_Y)
def test_2d_y_is_refused(model, call):
    # train reads a 2-D y as multilabel, and refuses labels other than 0 and 1 in it.
    with pytest.raises(ValueError, match=r"y must be 1-D|For one label per sample pass a 1-D y"):
        CALLS[call](model, X, Y[:, None])


@pytest.mark.parametrize("call", CALLS)
def test_empty_X(model, call):
    with pytest.raises(ValueError, match=r"empty.*0 samples"):
        CALLS[call](model, X[:0], Y[:0])


def test_zero_features_in_train():
    with pytest.raises(ValueError, match=r"0 features"):
        train(np.zeros((6, 0)), np.arange(6) % 2)


def test_one_sample_in_train_names_the_single_class():
    # One sample is one class: train refuses it with the reason (it does not crash).
    with pytest.raises(ValueError, match=r"single class"):
        train(X[:1], Y[:1])


def test_one_sample_continues_an_existing_model(model):
    m = copy.deepcopy(model)
    m.fit_more(X[:1], Y[:1], epochs=2, n_threads=1)
    assert m._optimizer["t"] == 2  # a copy starts a fresh optimizer
    assert m.history["epoch"][-2:] == [4, 5]
    assert np.all(np.isfinite(m.params_))
    assert m.predict(X[:1]).shape == (1,)
    m.loss_and_gradients(X[:1], Y[:1])
    assert m.score(X[:1], Y[:1]) in (0.0, 1.0)


@pytest.mark.parametrize(
    "labels,shown", [(np.zeros(90, int), "(0)"), (np.full(90, "cat"), "('cat')")]
)
def test_one_class_only(labels, shown):
    # The label as users write it, not numpy's repr (np.int64(0), np.str_('cat')).
    with pytest.raises(ValueError, match=r"single class .*needs two") as info:
        train(X, labels)
    assert shown in str(info.value) and "np." not in str(info.value)


def test_an_unknown_class_weight_label_is_shown_as_written():
    with pytest.raises(ValueError, match=r"class_weight names label 'dog', which is not in y"):
        train(X, np.array(["cat", "cow"])[Y % 2], class_weight={np.str_("dog"): 2.0})


# -- values ------------------------------------------------------------------------------


@pytest.mark.parametrize("call", CALLS)
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_nonfinite_X(model, call, bad):
    Xb = X.copy()
    Xb[7, 3] = bad
    with pytest.raises(ValueError, match=r"X contains NaN or infinity"):
        CALLS[call](model, Xb, Y)


@pytest.mark.parametrize("n_threads", [1, 2])
def test_nonfinite_X_large_scanned_by_threads(n_threads):
    # 2**22 elements and more are scanned in parts over train's threads.
    Xl = np.zeros((8193, 512), np.float32)
    Xl[8192, 511] = np.inf
    with pytest.raises(
        ValueError, match=r"X contains NaN or infinity \(first at row 8192, column 511\)"
    ):
        train(Xl, np.arange(8193) % 2, hidden=(4,), epochs=1, n_threads=n_threads)


def test_float64_X_overflowing_float32_is_refused(model):
    Xb = X.astype(np.float64)
    Xb[2, 1] = 1e300
    with pytest.raises(ValueError, match=r"X contains NaN or infinity"):
        model.predict(Xb)


@pytest.mark.parametrize("call", WITH_Y)
@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_nonfinite_y(model, call, bad):
    y = Y.astype(np.float64)
    y[4] = bad
    with pytest.raises(ValueError, match=r"y contains NaN or infinity"):
        CALLS[call](model, X, y)


@pytest.mark.parametrize("call", CALLS)
@pytest.mark.parametrize("kind", ["object", "complex", "str", "bytes", "datetime"])
def test_non_real_X(model, call, kind):
    Xb = {
        "object": X.astype(object),
        "complex": X.astype(np.complex64),
        "str": X.astype(str),
        "bytes": X.astype(bytes),
        "datetime": X.astype(np.int64).astype("datetime64[s]"),
    }[kind]
    with pytest.raises(TypeError, match=r"X must hold real numbers.*astype"):
        CALLS[call](model, Xb, Y)


def test_complex_y_is_refused():
    with pytest.raises(TypeError, match=r"y must not be complex"):
        train(X, Y.astype(complex))


def test_unsortable_mixed_labels_are_refused():
    with pytest.raises(TypeError, match=r"mixed types"):
        train(X, np.array([1, "a", 2.5] * 30, dtype=object))


@pytest.mark.parametrize("call", ["fit_more", "score", "loss_and_gradients"])
def test_unknown_label_is_named(model, call):
    y = Y.copy()
    y[3] = 17
    with pytest.raises(ValueError, match=r"labels the model does not know: \[17\]"):
        CALLS[call](model, X, y)


def test_labels_of_another_type_are_named(model):
    with pytest.raises(ValueError, match=r"does not know: \['0', '1', '2'\]"):
        model.loss_and_gradients(X, Y.astype(str))


# -- arrays that are odd but valid -------------------------------------------------------


def layouts(tmp_path):
    """X of 20 columns taken every other column, in several memory layouts."""
    wide = np.random.default_rng(1).standard_normal((90, 2 * N_FEATURES)).astype(np.float32)
    wide[:, ::2] = X
    fortran = np.asfortranarray(X)
    readonly = X.copy()
    readonly.setflags(write=False)
    path = tmp_path / "X.dat"
    mm = np.memmap(path, dtype=np.float32, mode="w+", shape=X.shape)
    mm[:] = X
    mm.flush()
    del mm
    return {
        "strided": wide[:, ::2],
        "fortran": fortran,
        "readonly": readonly,
        "memmap": np.memmap(path, dtype=np.float32, mode="r", shape=X.shape),
        "float64-strided": wide.astype(np.float64)[:, ::2],
        "reversed-rows": X[::-1][::-1],
    }


@pytest.mark.parametrize(
    "layout",
    ["strided", "fortran", "readonly", "memmap", "float64-strided", "reversed-rows"],
)
def test_odd_layouts_predict_like_a_c_copy(model, tmp_path, layout):
    Xo = layouts(tmp_path)[layout]
    assert not (Xo.flags.c_contiguous and Xo.flags.writeable) or layout == "reversed-rows"
    np.testing.assert_array_equal(Xo, X)
    np.testing.assert_array_equal(model.predict_proba(Xo), model.predict_proba(X))
    np.testing.assert_array_equal(model.decision_function(Xo), model.decision_function(X))
    np.testing.assert_array_equal(model.predict(Xo), model.predict(X))
    assert model.score(Xo, Y) == model.score(X, Y)
    assert model.loss_and_gradients(Xo, Y)[0] == model.loss_and_gradients(X, Y)[0]


@pytest.mark.parametrize("layout", ["strided", "fortran", "readonly", "memmap"])
def test_odd_layouts_train_like_a_c_copy(tmp_path, layout):
    Xo = layouts(tmp_path)[layout]
    y = Y.copy()
    y.setflags(write=False)
    w = np.linspace(0.5, 1.5, 90)
    w.setflags(write=False)
    options = dict(epochs=2, sample_weight=w, validation_data=(Xo, y))
    a = train(Xo, y, **options)
    b = train(np.ascontiguousarray(X), Y, **{**options, "validation_data": (X, Y)})
    np.testing.assert_array_equal(a.params_, b.params_)
    for key in ("loss", "accuracy", "val_loss", "val_accuracy"):
        assert a.history[key] == b.history[key], key
    np.testing.assert_array_equal(Xo, X)  # not written to


@pytest.mark.parametrize("call", ["train", "predict"])
def test_ragged_rows_are_named(model, call):
    with pytest.raises(ValueError, match=r"X is not a table of numbers: .*inhomogeneous"):
        CALLS[call](model, [[1.0] * N_FEATURES, [2.0]], [0, 1])


def test_int_and_bool_X_work(model):
    Xi = np.round(X).astype(np.int16)
    np.testing.assert_array_equal(model.predict(Xi), model.predict(Xi.astype(np.float32)))
    Xb = X > 0
    np.testing.assert_array_equal(model.predict(Xb), model.predict(Xb.astype(np.float32)))


# -- hyperparameters ---------------------------------------------------------------------

BAD_OPTIONS = [
    (dict(hidden=(0,)), r"hidden layer size must be an integer >= 1; got 0"),
    (dict(hidden=(8, -1)), r"hidden layer size must be an integer >= 1; got -1"),
    (dict(hidden=(4.5,)), r"hidden layer size must be an integer >= 1; got 4.5"),
    (dict(hidden=(2,) * 64), r"at most 63 hidden layers"),
    (dict(batch_size=0), r"batch_size must be an integer >= 1; got 0"),
    (dict(batch_size=-1), r"batch_size must be an integer >= 1; got -1"),
    (dict(batch_size=1.5), r"batch_size must be an integer >= 1; got 1.5"),
    (dict(batch_size=True), r"batch_size must be an integer >= 1; got True"),
    (dict(dropout=-0.1), r"dropout must lie in \[0.0, 1.0\); got -0.1"),
    (dict(dropout=1.0), r"dropout must lie in \[0.0, 1.0\); got 1.0"),
    (dict(lr=0), r"lr must lie in \(0.0, inf\); got 0"),
    (dict(lr=-1), r"lr must lie in \(0.0, inf\); got -1"),
    (dict(lr=float("nan")), r"lr must be a finite number; got nan"),
    (dict(lr=float("inf")), r"lr must be a finite number; got inf"),
    (dict(lr="0.1"), r"lr must be a finite number; got '0.1'"),
    (dict(epochs=0), r"epochs must be an integer >= 1; got 0"),
    (dict(epochs=2.0), r"epochs must be an integer >= 1; got 2.0"),
    (dict(patience=0), r"patience must be an integer >= 1; got 0"),
    (dict(optimizer="adamw", weight_decay=1e3), r"1 - lr \* weight_decay = 0 every step"),
    (dict(optimizer="adamw", weight_decay=1e6), r"1 - lr \* weight_decay = -999 every"),
    (dict(seed=-1), r"seed must be an integer >= 0; got -1"),
    (dict(seed=1.5), r"seed must be an integer >= 0; got 1.5"),
    (dict(seed="0"), r"seed must be an integer >= 0; got '0'"),
    (dict(betas=(1.0, 0.999)), r"betas\[0\] must lie in \[0.0, 1.0\); got 1.0"),
    (dict(betas=(-0.1, 0.999)), r"betas\[0\] must lie in \[0.0, 1.0\); got -0.1"),
    (dict(betas=(0.9, 1.5)), r"betas\[1\] must lie in \[0.0, 1.0\); got 1.5"),
    (dict(betas=(0.9,)), r"betas must be a pair"),
    (dict(betas=0.9), r"betas must be a pair"),
    (dict(eps=0), r"eps must lie in \(0.0, inf\)"),
    (dict(momentum=1.5, optimizer="sgd"), r"momentum must lie in \[0.0, 1.0\); got 1.5"),
    (dict(momentum=-0.5, optimizer="sgd"), r"momentum must lie in \[0.0, 1.0\); got -0.5"),
    (dict(l2=-1), r"l2 must lie in \[0.0, inf\); got -1"),
    (dict(l2=float("nan")), r"l2 must be a finite number"),
    (dict(validation_split=1.0), r"validation_split must lie in \[0.0, 1.0\); got 1.0"),
    (dict(validation_split=-0.2), r"validation_split must lie in \[0.0, 1.0\)"),
    (dict(max_time=0), r"max_time must lie in \(0.0, inf\)"),
    (dict(max_time=-1.0), r"max_time must lie in \(0.0, inf\)"),
    (dict(n_threads=0), r"n_threads must be a positive int, None or -1 .*got 0"),
    (dict(n_threads=-2), r"n_threads must be a positive int, None or -1 .*got -2"),
    (dict(n_threads="2"), r"n_threads must be a positive int, None or -1 .*got '2'"),
    (dict(n_threads=1.0), r"n_threads must be a positive int, None or -1 .*got 1.0"),
    (dict(dtype=np.int32), r"dtype must be numpy.float32 or numpy.float64; got int32"),
    (dict(dtype=np.float16), r"dtype must be numpy.float32 or numpy.float64; got float16"),
    (dict(dtype="no such type"), r"dtype must be numpy.float32 or numpy.float64"),
    (dict(activation="gelu"), r"activation must be one of \('relu', 'tanh', 'sigmoid'\)"),
    (dict(activation="ReLU"), r"activation must be one of .*got 'ReLU'"),
    (dict(loss="hinge"), r"loss must be one of \('cross_entropy', 'mse', 'squared_error', "),
    (dict(optimizer="rmsprop"), r"optimizer must be one of \('adam', 'sgd', 'adamw'\); got"),
    (dict(output_activation="softplus", loss="mse"), r"output_activation must be one of"),
    (dict(output_activation="sigmoid"), r"cross-entropy applies its own softmax"),
    (dict(init="model"), r"init must be a fastmlp.MLP; got str"),
    (dict(validation_data=X), r"validation_data must be a tuple \(X_val, y_val\)"),
    (dict(validation_data=(X[:, :4], Y)), r"X_val has 4 features .* expects 10"),
    (dict(validation_data=(X, Y + 5)), r"y_val has labels the model does not know"),
    (dict(validation_data=(X, Y[:10])), r"X and y_val have different lengths"),
    (dict(class_weight={0: -1.0}), r"class_weight\[0\] must lie in \[0.0, inf\)"),
    (dict(class_weight={0: 0, 1: 0, 2: 0}), r"class_weight gives every sample a weight of zero"),
    (dict(callbacks=[None]), r"callbacks must be a sequence of callables"),
]


@pytest.mark.parametrize("options,match", BAD_OPTIONS, ids=[repr(o)[:40] for o, _ in BAD_OPTIONS])
def test_bad_train_options(options, match):
    with pytest.raises(ValueError, match=match):
        train(X, Y, **options)


@pytest.mark.parametrize(
    "options,match",
    [
        (dict(hidden=(5,)), r"hidden=\(5,\) differs from init's hidden \(\(4,\)\)"),
        (dict(activation="tanh"), r"activation='tanh' differs from init's activation"),
        (dict(normalization="layer"), r"normalization='layer' differs"),
        (dict(loss="mse"), r"loss='mse' differs from init's loss \('cross_entropy'\)"),
        (dict(dtype=np.float64), r"dtype=float64 differs from init's dtype \(float32\)"),
        (dict(delta=2.0), r"delta=2.0 differs"),
        (dict(output_activation="sigmoid"), r"output_activation='sigmoid' differs"),
    ],
)
def test_init_refuses_a_changed_architecture(model, options, match):
    """An option init cannot honour is an error, not silently ignored."""
    with pytest.raises(ValueError, match=match):
        train(X, Y, init=copy.deepcopy(model), **options)


def test_init_with_nan_parameters_is_refused_before_training(model):
    broken = copy.deepcopy(model)
    broken.weights[0][1, 2] = np.nan
    with pytest.raises(ValueError, match=r"init's parameters contain NaN or infinity"):
        train(X, Y, init=broken)


def test_init_accepts_its_own_architecture_and_the_defaults(model):
    same = dict(hidden=[4], activation=["relu"], dtype="float32", output_activation="identity")
    defaults = dict(hidden=(128, 64), activation="relu", loss="cross_entropy", delta=1.0)
    for options in (same, defaults):
        assert train(X, Y, init=copy.deepcopy(model), **options).layer_sizes == (10, 4, 3)


@pytest.mark.parametrize("bad", [0, -2, "2", 1.5])
@pytest.mark.parametrize("call", ["predict", "predict_proba", "decision_function"])
def test_bad_n_threads_at_prediction(model, call, bad):
    with pytest.raises(ValueError, match=r"n_threads must be a positive int"):
        getattr(model, call)(X, n_threads=bad)


@pytest.mark.parametrize("bad", [0, -2, "2", 1.5])
def test_bad_n_threads_of_a_model_is_refused_when_it_is_built(bad):
    # A small request runs on the calling thread, so prediction never read it.
    with pytest.raises(ValueError, match=r"n_threads must be a positive int"):
        MLP((4, 3, 2), classes=[0, 1], n_threads=bad)


@pytest.mark.parametrize("sizes", [(4, 3.7, 2), (4, 3.0, 2), "432", (4, True, 2), 5, ()])
def test_layer_sizes_must_be_ints(sizes):
    with pytest.raises(ValueError, match=r"layer_sizes must be a sequence of ints"):
        MLP(sizes, classes=[0, 1])


@pytest.mark.parametrize("bad", [0, -2, "2"])
def test_bad_n_threads_in_loss_and_gradients(model, bad):
    # n_threads=0 must not silently mean "all cores" (predict refuses it).
    with pytest.raises(ValueError, match=r"n_threads must be a positive int"):
        model.loss_and_gradients(X, Y, n_threads=bad)


@pytest.mark.parametrize("l2", [-1.0, float("nan"), float("inf")])
def test_bad_l2_in_loss_and_gradients(model, l2):
    # train refuses these; loss_and_gradients returned a negative or NaN objective.
    with pytest.raises(ValueError, match=r"l2 must"):
        model.loss_and_gradients(X, Y, l2=l2)


def test_numpy_integer_n_threads_is_accepted(model):
    # batch_size, epochs and hidden accept numpy integers; n_threads should as well.
    n = np.int64(1)
    train(X, Y, n_threads=n, batch_size=np.int64(16), epochs=np.int32(1))
    model.predict(X, n_threads=n)


def test_hidden_given_as_a_bare_int_is_clear():
    # hidden=16 (instead of (16,)) is an easy slip; say what hidden must be.
    try:
        model = train(X, Y, hidden=16)
    except (TypeError, ValueError) as exc:
        assert "hidden" in str(exc), f"unclear error: {exc!r}"
    else:
        assert model.layer_sizes == (N_FEATURES, 16, 3)


def test_a_single_callback_not_in_a_list_is_clear():
    calls = []
    try:
        train(X, Y, epochs=2, callbacks=calls.append)
    except (TypeError, ValueError) as exc:
        assert "callbacks" in str(exc), f"unclear error: {exc!r}"
    else:
        assert [c["epoch"] for c in calls] == [1, 2]


def test_mse_model_has_no_probabilities():
    model = train(X, Y, loss="mse", output_activation="sigmoid")
    with pytest.raises(ValueError, match=r"decision_function"):
        model.predict_proba(X)
    assert model.decision_function(X).shape == (90, 3)


# -- sizes that cannot fit in memory -----------------------------------------------------


@contextlib.contextmanager
def address_space_cap(extra_bytes=4 << 30):
    """A safety net: cap this process's address space for the duration, so that a
    library that does try the huge allocation gets a MemoryError instead of the OOM
    killer on machines with enough virtual memory to let it through."""
    try:
        import resource

        status = Path("/proc/self/status").read_text()
        vm = int(re.search(r"VmSize:\s+(\d+) kB", status).group(1)) * 1024
    except (ImportError, OSError, AttributeError):
        yield
        return
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    cap = vm + extra_bytes
    if hard != resource.RLIM_INFINITY:
        cap = min(cap, hard)
    resource.setrlimit(resource.RLIMIT_AS, (cap, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))


def test_huge_workspace_is_refused_before_allocating():
    Xs, ys = blobs(10_000)
    with address_space_cap(), pytest.raises(MemoryError, match=r"workspace.*\d+\.\d GiB"):
        train(Xs, ys, hidden=(10**6,), batch_size=10**6)


def test_huge_layer_is_refused_before_allocating():
    """hidden=(10**9,) asks for 14e9 parameters (52 GiB) before any workspace: the
    library's own size check must refuse it, not numpy failing (or, with overcommit,
    succeeding) at the allocation."""
    with address_space_cap(), pytest.raises(MemoryError) as info:
        train(X[:50], Y[:50], hidden=(10**9,), batch_size=10**6)
    message = str(info.value)
    assert re.search(r"\d GiB", message)
    assert "layers" in message or "hidden" in message, f"not the library's check: {message}"


def test_layer_wider_than_a_c_int_is_clear():
    with address_space_cap(), pytest.raises((ValueError, MemoryError), match=r"hidden|layer"):
        train(X[:50], Y[:50], hidden=(3 * 10**9,))


# -- MLP.from_weights --------------------------------------------------------------------

W = [np.ones((N_FEATURES, 5)), np.ones((5, 3))]
B = [np.zeros(5), np.zeros(3)]


def test_from_weights_good_input_works():
    m = MLP.from_weights(W, B)
    assert m.layer_sizes == (N_FEATURES, 5, 3)
    assert m.dtype == np.float64
    assert list(m.classes_) == [0, 1, 2]


@pytest.mark.parametrize(
    "weights,biases,match",
    [
        (
            [W[0], np.ones((4, 3))],
            B,
            r"weights\[1\] has shape \(4, 3\), but weights\[0\] has 5 outputs",
        ),
        (W, [np.zeros(4), B[1]], r"biases\[0\] must have shape \(5,\).*got \(4,\)"),
        (W, [B[0], np.zeros((1, 3))], r"biases\[1\] must have shape \(3,\).*got \(1, 3\)"),
        (W, B[:1], r"one bias per weight matrix"),
        ([], [], r"at least one layer"),
        ([np.ones(N_FEATURES), W[1]], B, r"weights\[0\] must be 2-D .*got shape \(\d+,\)"),
        ([W[0][..., None], W[1]], B, r"weights\[0\] must be 2-D"),
        ([np.ones((N_FEATURES, 0)), np.ones((0, 3))], [np.zeros(0), B[1]], r"positive ints"),
        ([W[0], np.ones((5, 1))], [B[0], np.zeros(1)], r"at least 2 classes"),
    ],
)
def test_from_weights_bad_shapes(weights, biases, match):
    with pytest.raises(ValueError, match=match):
        MLP.from_weights(weights, biases)


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_from_weights_nonfinite(bad):
    Wb = [W[0].copy(), W[1]]
    Wb[0][2, 3] = bad
    with pytest.raises(
        ValueError, match=r"weights\[0\] holds NaN or infinity \(first at \(2, 3\)"
    ):
        MLP.from_weights(Wb, B)
    Bb = [B[0].copy(), B[1]]
    Bb[0][1] = bad
    with pytest.raises(ValueError, match=r"biases\[0\] holds NaN or infinity \(first at 1\)"):
        MLP.from_weights(W, Bb)


def test_from_weights_beyond_float32_names_the_value_and_the_way_out():
    Wb = [W[0].copy(), W[1]]
    Wb[0][1, 2] = 1e300
    with pytest.raises(
        ValueError, match=r"weights\[0\] holds 1e\+300 at \(1, 2\), beyond float32"
    ):
        MLP.from_weights(Wb, B, dtype=np.float32)
    assert MLP.from_weights(Wb, B, dtype=np.float64).weights[0][1, 2] == 1e300


def test_from_weights_bad_types():
    with pytest.raises(
        TypeError, match=r"weights\[0\] must hold real numbers.*weights\[0\]\.astype"
    ):
        MLP.from_weights([W[0].astype(str), W[1]], B)
    with pytest.raises(ValueError, match=r"dtype must be numpy.float32 or numpy.float64"):
        MLP.from_weights(W, B, dtype=np.int32)
    with pytest.raises(ValueError, match=r"activation must be one of"):
        MLP.from_weights(W, B, activation="gelu")


@pytest.mark.parametrize("classes", [[1, 2], [1, 1, 2], [[0, 1, 2]], np.array(["a", "a", "b"])])
def test_from_weights_bad_classes(classes):
    with pytest.raises(ValueError, match=r"classes must be 3 distinct labels") as info:
        MLP.from_weights(W, B, classes=classes)
    # As written, not numpy's repr: array([...], dtype='<U1').
    assert str(np.asarray(classes).tolist()) in str(info.value)
    assert "array(" not in str(info.value) and "dtype" not in str(info.value)


# -- sample weights ----------------------------------------------------------------------

SAMPLE_WEIGHT_CALLS = {
    "train": lambda m, w: train(X, Y, sample_weight=w),
    "fit_more": lambda m, w: copy.deepcopy(m).fit_more(X, Y, sample_weight=w, n_threads=1),
    "score": lambda m, w: m.score(X, Y, sample_weight=w),
    "loss_and_gradients": lambda m, w: m.loss_and_gradients(X, Y, sample_weight=w),
}


def _with(value, index=5):
    w = np.ones(90)
    w[index] = value
    return w


BAD_WEIGHTS = [
    ("negative", _with(-1.0), r"sample_weight must be finite and non-negative"),
    ("nan", _with(np.nan), r"sample_weight must be finite and non-negative"),
    ("inf", _with(np.inf), r"sample_weight must be finite and non-negative"),
    ("all-zero", np.zeros(90), r"sample_weight is zero everywhere"),
    ("short", np.ones(89), r"sample_weight must be a 1-D array of 90 .*shape \(89,\)"),
    ("long", np.ones(91), r"sample_weight must be a 1-D array of 90 .*shape \(91,\)"),
    ("2-D", np.ones((90, 1)), r"sample_weight must be a 1-D array of 90 .*shape \(90, 1\)"),
    ("str", np.full(90, "1"), r"sample_weight must be a 1-D array of 90 real numbers"),
]


@pytest.mark.parametrize("call", SAMPLE_WEIGHT_CALLS)
@pytest.mark.parametrize(
    "weights,match", [b[1:] for b in BAD_WEIGHTS], ids=[b[0] for b in BAD_WEIGHTS]
)
def test_bad_sample_weight(model, call, weights, match):
    with pytest.raises(ValueError, match=match):
        SAMPLE_WEIGHT_CALLS[call](model, weights)


@pytest.mark.parametrize("bad", [np.inf, -np.inf, np.nan])
@pytest.mark.parametrize("rows", [1, 3, 2000])
def test_non_finite_input_is_caught_even_where_relu_would_hide_it(bad, rows):
    # Every weight negative: +inf would become -inf and ReLU would turn it into 0, a
    # silent wrong answer if prediction only looked at its output.
    W1 = -np.ones((4, 3), np.float32)
    model = fastmlp.MLP.from_weights([W1, np.ones((3, 2), np.float32)], [np.zeros(3), np.zeros(2)])
    X = np.ones((rows, 4), np.float32)
    X[rows // 2, 1] = bad
    for method in (model.predict, model.predict_proba, model.decision_function):
        with pytest.raises(ValueError, match="NaN or infinity"):
            method(X)
