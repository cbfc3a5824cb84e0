"""Tests for fastmlp.persistence: save/load round trips, atomic writes, hostile files."""

from __future__ import annotations

import io
import json
import os
import pickle
import stat
import time
import tracemalloc
import zipfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import fastmlp
from fastmlp import MLP, load, save
from fastmlp.persistence import FORMAT_VERSION

SIZES = (6, 5, 3)
LABELS = {
    "int": np.array([0, 1, 2]),
    "sparse_int": np.array([-7, 3, 1000]),
    "str": np.array(["cat", "dog", "emu"]),
    "float": np.array([0.5, 1.5, 2.25]),
}


def make_model(
    dtype=np.float32, classes=None, sizes=SIZES, seed: int = 0, activation: str = "tanh"
) -> MLP:
    rng = np.random.default_rng(seed)
    weights = [rng.standard_normal((a, b)) for a, b in zip(sizes, sizes[1:])]
    biases = [rng.standard_normal(b) for b in sizes[1:]]
    return MLP.from_weights(weights, biases, activation=activation, classes=classes, dtype=dtype)


def toy_data(n: int = 60, seed: int = 1):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, SIZES[0])).astype(np.float32)
    y = rng.choice(np.array(["a", "b", "c"]), n)
    return X, y


def trained(optimizer: str = "adam", epochs: int = 1, **options) -> MLP:
    X, y = toy_data()
    return fastmlp.train(
        X, y, hidden=SIZES[1:-1], optimizer=optimizer, epochs=epochs, batch_size=16, seed=3,
        n_threads=1, **options,
    )  # fmt: skip


def arrays_of(path) -> dict[str, np.ndarray]:
    with np.load(path, allow_pickle=False) as npz:
        return {key: npz[key] for key in npz.files}


def write_npz(path, arrays: dict[str, np.ndarray], **meta_changes) -> Path:
    """Write ``arrays`` as an .npz, first changing keys of its meta JSON (None deletes)."""
    arrays = dict(arrays)
    if meta_changes:
        meta = json.loads(str(arrays["meta"][()]))
        for key, value in meta_changes.items():
            if value is None:
                meta.pop(key, None)
            else:
                meta[key] = value
        arrays["meta"] = np.array(json.dumps(meta))
    with open(path, "wb") as fh:
        np.savez(fh, **arrays)
    return Path(path)


def inputs(model: MLP, n: int = 7, seed: int = 5) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, model.layer_sizes[0]))


def assert_same_model(a: MLP, b: MLP) -> None:
    assert a.layer_sizes == b.layer_sizes
    for name in ("activation", "loss", "output_activation"):
        assert getattr(a, name) == getattr(b, name)
    assert a.dtype == b.dtype == b.params_.dtype
    assert np.array_equal(a.params_, b.params_)
    assert a.classes_.tolist() == b.classes_.tolist()
    X = inputs(a, n=200)  # more than SERIAL_ROWS, so the threaded path runs too
    assert np.array_equal(a.predict(X), b.predict(X))
    assert np.array_equal(a.decision_function(X), b.decision_function(X))


@pytest.fixture
def saved(tmp_path) -> Path:
    """A valid file of a trained float32 model with Adam state and history."""
    path = tmp_path / "model.npz"
    save(trained(), path)
    return path


@pytest.fixture
def no_unpickling(monkeypatch):
    """Make any unpickling fail loudly with an error that is not a ValueError."""

    def refuse(*args, **kwargs):
        raise AssertionError("the loader tried to unpickle data")

    monkeypatch.setattr(pickle, "load", refuse)
    monkeypatch.setattr(pickle, "loads", refuse)


# -- round trips ---------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("labels", list(LABELS))
def test_round_trip_is_bit_exact(tmp_path, dtype, labels):
    model = make_model(dtype, LABELS[labels])
    path = tmp_path / "m.npz"
    save(model, path)
    back = load(path)
    assert_same_model(model, back)
    assert back.classes_.dtype.kind == model.classes_.dtype.kind
    assert back.params_.flags.c_contiguous and back.params_.flags.writeable
    assert back._optimizer is None and back.history == {}


def test_round_trip_bool_labels_and_mse_with_output_activation(tmp_path):
    rng = np.random.default_rng(0)
    model = MLP(
        (4, 3, 2),
        [True, False],
        activation="sigmoid",
        loss="mse",
        output_activation="sigmoid",
        dtype=np.float64,
        params=rng.standard_normal(4 * 3 + 3 + 3 * 2 + 2),
    )
    save(model, tmp_path / "m.npz")
    back = load(tmp_path / "m.npz")
    assert_same_model(model, back)
    assert back.classes_.dtype == np.bool_


def test_object_str_labels_are_stored_as_unicode(tmp_path):
    model = make_model(classes=np.array(["b", "a", "ccc"], dtype=object))
    assert model.classes_.dtype == object
    save(model, tmp_path / "m.npz")
    back = load(tmp_path / "m.npz")
    assert back.classes_.dtype.kind == "U"
    assert_same_model(model, back)


def test_object_labels_that_are_not_all_str_are_refused(tmp_path):
    model = make_model(classes=np.array([1, 2.5, 3], dtype=object))
    with pytest.raises(ValueError, match="dtype object.*float, int"):
        save(model, tmp_path / "m.npz")
    assert list(tmp_path.iterdir()) == []


def test_save_refuses_what_load_would_refuse(tmp_path):
    with pytest.raises(TypeError, match="fastmlp.MLP"):
        save({"params": [1.0]}, tmp_path / "m.npz")
    model = make_model()
    model.params_[3] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        save(model, tmp_path / "m.npz")
    model = make_model()
    model.history = {"loss": [0.5, "low"]}
    with pytest.raises(ValueError, match="history"):
        save(model, tmp_path / "m.npz")
    assert list(tmp_path.iterdir()) == []


def test_history_round_trips(tmp_path):
    model = trained(epochs=2, validation_split=0.25)
    model.history["custom"] = [np.float32(0.1), np.int64(7)]
    save(model, tmp_path / "m.npz")
    back = load(tmp_path / "m.npz")
    assert set(back.history) == {
        "epoch", "loss", "accuracy", "seconds", "val_loss", "val_accuracy", "custom",
    }  # fmt: skip
    for key, values in model.history.items():
        assert back.history[key] == [v.item() if isinstance(v, np.generic) else v for v in values]
    assert back.history["epoch"] == [1, 2]


@pytest.mark.parametrize("optimizer", ["adam", "sgd"])
def test_optimizer_state_round_trips(tmp_path, optimizer):
    model = trained(optimizer)
    save(model, tmp_path / "m.npz")
    back = load(tmp_path / "m.npz")
    assert_same_model(model, back)
    a, b = model._optimizer, back._optimizer
    assert (b["name"], b["t"]) == (a["name"], a["t"]) and a["t"] > 0
    for key in ("state1", "state2"):
        assert b[key].dtype == a[key].dtype
        assert np.array_equal(b[key], a[key])
    assert b["state2"].shape == ((back.params_.size,) if optimizer == "adam" else (0,))


def test_optimizer_state_can_be_left_out(tmp_path):
    model = trained()
    save(model, tmp_path / "with.npz")
    save(model, tmp_path / "without.npz", optimizer_state=False)
    back = load(tmp_path / "without.npz")
    assert back._optimizer is None
    assert_same_model(model, back)
    assert back.history == model.history
    assert set(arrays_of(tmp_path / "without.npz")) == {
        "format", "version", "meta", "params", "classes",
    }  # fmt: skip
    assert (tmp_path / "without.npz").stat().st_size < (tmp_path / "with.npz").stat().st_size


def test_fit_more_continues_adam_exactly_after_a_round_trip(tmp_path):
    X, y = toy_data()
    model = trained()
    save(model, tmp_path / "m.npz")
    save(model, tmp_path / "fresh.npz", optimizer_state=False)
    restored, restarted = load(tmp_path / "m.npz"), load(tmp_path / "fresh.npz")
    options = {"epochs": 2, "batch_size": 16, "seed": 11, "n_threads": 1}
    model.fit_more(X, y, **options)
    restored.fit_more(X, y, **options)
    restarted.fit_more(X, y, **options)
    assert np.array_equal(model.params_, restored.params_)
    assert model._optimizer["t"] == restored._optimizer["t"]
    for key in ("epoch", "loss", "accuracy"):  # "seconds" are wall-clock times
        assert model.history[key] == restored.history[key]
    # Without the moments Adam starts over, and the weights come out different.
    assert not np.array_equal(model.params_, restarted.params_)


def test_pickle_round_trip_is_exact_and_small():
    rng = np.random.default_rng(0)
    sizes = (64, 128, 10)
    model = make_model(classes=np.arange(10) * 3, sizes=sizes)
    model.history = {"loss": rng.random(20).tolist()}
    blob = pickle.dumps(model)
    back = pickle.loads(blob)
    assert_same_model(model, back)
    assert back.history == model.history
    assert len(blob) < 1.2 * model.params_.nbytes + 4096


# -- writing -----------------------------------------------------------------------------
def test_save_writes_exactly_the_path_given(tmp_path):
    model = make_model()
    save(model, tmp_path / "model.bin")
    model.save(str(tmp_path / "other"))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.bin", "other"]
    assert_same_model(model, load(str(tmp_path / "model.bin")))
    assert_same_model(model, fastmlp.load(tmp_path / "other"))


def test_save_replaces_an_existing_file_and_keeps_its_mode(tmp_path):
    path = tmp_path / "m.npz"
    save(make_model(seed=1), path)
    path.chmod(0o640)
    new = make_model(seed=2)
    save(new, path)
    assert_same_model(new, load(path))
    assert stat.S_IMODE(path.stat().st_mode) == 0o640
    assert [p.name for p in tmp_path.iterdir()] == ["m.npz"]


def test_save_to_a_directory_or_into_a_missing_one_names_the_path(tmp_path):
    model = make_model()
    (tmp_path / "kept.npz").write_bytes(b"theirs")
    with pytest.raises(IsADirectoryError, match=r"is a directory; give a file path, such as"):
        save(model, tmp_path)
    with pytest.raises(FileNotFoundError, match=r"the directory .*nope.* does not exist"):
        save(model, tmp_path / "nope" / "m.npz")
    # No temporary file left behind, and nothing of the user's touched.
    assert [p.name for p in tmp_path.iterdir()] == ["kept.npz"]
    assert (tmp_path / "kept.npz").read_bytes() == b"theirs"


def test_new_files_get_the_umask_default_mode(tmp_path):
    old = os.umask(0o027)
    try:
        save(make_model(), tmp_path / "m.npz")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "m.npz").stat().st_mode) == 0o640


@pytest.mark.may_skip("root writes into a read-only directory: nothing to observe")
def test_save_into_a_read_only_directory_leaves_the_old_file(tmp_path):
    folder = tmp_path / "ro"
    folder.mkdir()
    path = folder / "m.npz"
    save(make_model(seed=1), path)
    before = path.read_bytes()
    folder.chmod(0o555)
    try:
        if os.access(folder, os.W_OK):
            pytest.skip("running as root: a read-only mode does not stop writes")
        with pytest.raises(OSError):
            save(make_model(seed=2), path)
    finally:
        folder.chmod(0o755)
    assert path.read_bytes() == before
    assert [p.name for p in folder.iterdir()] == ["m.npz"]


def failing_savez(exc: BaseException):
    real = np.savez

    def savez(file, *args, **kwargs):
        # Write a real, partial archive first, as a crash part-way would.
        buffer = io.BytesIO()
        real(buffer, *args, **kwargs)
        file.write(buffer.getvalue()[: len(buffer.getvalue()) // 2])
        raise exc

    return savez


@pytest.mark.parametrize(
    "failure",
    ["savez_oserror", "savez_interrupt", "replace_oserror", "fsync_oserror"],
)
def test_a_failed_save_leaves_the_old_file_byte_identical(tmp_path, monkeypatch, failure):
    path = tmp_path / "m.npz"
    save(make_model(seed=1), path)
    before = path.read_bytes()
    exc: BaseException = OSError(28, "No space left on device")
    if failure == "savez_oserror":
        monkeypatch.setattr(np, "savez", failing_savez(exc))
    elif failure == "savez_interrupt":
        exc = KeyboardInterrupt()
        monkeypatch.setattr(np, "savez", failing_savez(exc))
    elif failure == "replace_oserror":
        monkeypatch.setattr(os, "replace", lambda src, dst: (_ for _ in ()).throw(exc))
    else:
        monkeypatch.setattr(os, "fsync", lambda fd: (_ for _ in ()).throw(exc))
    with pytest.raises(type(exc)):
        save(make_model(seed=2), path)
    monkeypatch.undo()
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["m.npz"]  # no temporary file left
    assert_same_model(make_model(seed=1), load(path))


def test_save_to_a_missing_directory_raises_oserror(tmp_path):
    with pytest.raises(FileNotFoundError):
        save(make_model(), tmp_path / "no" / "such" / "m.npz")


# -- loading bad files ---------------------------------------------------------------------
def test_missing_file_raises_oserror(tmp_path):
    with pytest.raises(FileNotFoundError):
        load(tmp_path / "absent.npz")
    with pytest.raises(IsADirectoryError):
        load(tmp_path)


def test_foreign_npz_is_not_a_fastmlp_model(tmp_path):
    rng = np.random.default_rng(0)
    path = tmp_path / "data.npz"
    np.savez(path, X=rng.random((4, 3)), y=np.arange(4))
    with pytest.raises(ValueError, match="not a fastmlp model") as info:
        load(path)
    assert "data.npz" in str(info.value)
    np.savez(path, format=np.array("something-else"), version=np.array(1))
    with pytest.raises(ValueError, match="not a fastmlp model"):
        load(path)
    np.savez(path, format=np.arange(3))
    with pytest.raises(ValueError, match="not a fastmlp model"):
        load(path)


def test_a_member_named_like_an_array_is_not_read_in_its_place(tmp_path, saved):
    """numpy's npz["version"] takes a member named exactly "version" before
    "version.npy": the loader reads the member it checked, so a damaged file's raw
    "version" is not read instead (the fuzzer's crash-70591900 had one claiming 2.8 GB)."""
    path = tmp_path / "twin.npz"
    newer = io.BytesIO()
    np.save(newer, np.array(FORMAT_VERSION + 1))
    with zipfile.ZipFile(saved) as src, zipfile.ZipFile(path, "w") as dst:
        for name in src.namelist():
            dst.writestr(name, src.read(name))
        dst.writestr("version", newer.getvalue())
    with pytest.raises(ValueError, match=r"cannot load .*unexpected arrays \['version'\]"):
        load(path)


def test_text_outside_unicode_is_refused(saved):
    """A 'U' array is UCS-4: a code point past U+10FFFF made a str that json's scanner
    rejected with SystemError (the fuzzer's crash-f51c46b6)."""
    arrays = arrays_of(saved)
    meta = str(arrays["meta"][()])
    codes = np.frombuffer(meta.encode("utf-32-le"), np.uint32).copy()
    codes[2] = 0x110000  # inside the first key, which the scanner builds as a str
    arrays["meta"] = np.frombuffer(codes.tobytes(), f"<U{len(meta)}").reshape(())
    write_npz(saved, arrays)
    with pytest.raises(ValueError, match="array 'meta' holds characters outside Unicode"):
        load(saved)


@pytest.mark.parametrize(
    "prefix", [b"", b"\x93NUMPY", b"PK\x03\x04", b"\x80\x04\x95", b"\x1f\x8b"]
)
def test_random_bytes_are_refused(tmp_path, prefix):
    path = tmp_path / "junk.npz"
    path.write_bytes(prefix + np.random.default_rng(len(prefix)).bytes(3000))
    with pytest.raises(ValueError, match="junk.npz"):
        load(path)


def test_empty_file_is_refused(tmp_path):
    path = tmp_path / "empty.npz"
    path.write_bytes(b"")
    with pytest.raises(ValueError, match="empty"):
        load(path)


def test_truncated_files_are_refused(saved, tmp_path):
    data = saved.read_bytes()
    cut_path = tmp_path / "cut.npz"
    n = len(data)
    for cut in [1, 4, 30, 100, 500, n // 2, n - 100, n - 22, n - 1]:
        cut_path.write_bytes(data[:cut])
        with pytest.raises(ValueError, match="cut.npz"):
            load(cut_path)


def test_a_newer_format_version_asks_for_an_upgrade(saved):
    arrays = arrays_of(saved)
    arrays["version"] = np.array(FORMAT_VERSION + 1)
    write_npz(saved, arrays)
    newer = rf"newer fastmlp \(format version {FORMAT_VERSION + 1}\).*upgrade fastmlp"
    with pytest.raises(ValueError, match=newer):
        load(saved)
    arrays["version"] = np.array(0)
    write_npz(saved, arrays)
    with pytest.raises(ValueError, match="version 0"):
        load(saved)


@pytest.mark.parametrize(
    "params, match",
    [
        (lambda p: p[:-1], "shape"),
        (lambda p: np.concatenate([p, p[:1]]), "shape|declares"),
        (lambda p: p.reshape(1, -1), "shape"),
        (lambda p: p.astype(np.float64), "dtype"),
        (lambda p: p.astype(np.int32), "dtype"),
        (lambda p: np.where(np.arange(p.size) == 7, np.inf, p).astype(p.dtype), "NaN or inf"),
    ],
)
def test_bad_params_are_refused(saved, params, match):
    arrays = arrays_of(saved)
    arrays["params"] = params(arrays["params"])
    write_npz(saved, arrays)
    with pytest.raises(ValueError, match=match):
        load(saved)


@pytest.mark.parametrize(
    "changes, match",
    [
        ({"activation": "swish"}, "activation"),
        ({"activation": ["relu"]}, "activation"),
        ({"loss": "hinge"}, "loss"),
        ({"output_activation": "sigmoid"}, "cross-entropy"),
        ({"dtype": "float16"}, "dtype"),
        ({"layer_sizes": [6, 0, 3]}, "layer_sizes"),
        ({"layer_sizes": [6, True, 3]}, "layer_sizes"),
        ({"layer_sizes": [6, "5", 3]}, "layer_sizes"),
        ({"layer_sizes": [6]}, "layer_sizes"),
        ({"layer_sizes": [6] + [5] * 65 + [3]}, "layer_sizes"),
        ({"layer_sizes": "6-5-3"}, "layer_sizes"),
        ({"n_params": 52}, "n_params"),
        ({"n_params": 53.0}, "n_params"),
        ({"classes_kind": "int"}, "classes_kind"),
        ({"classes_dtype": "<i8"}, "dtype"),
        ({"classes_dtype": "O"}, "classes_dtype"),
        ({"classes_dtype": "not a dtype"}, "classes_dtype"),
        ({"classes_dtype": "(3,)<U1"}, "classes_dtype"),
        ({"history": [1, 2]}, "history"),
        ({"history": {"loss": ["x"]}}, "history"),
        ({"optimizer": {"name": "rmsprop", "t": 1}}, "optimizer"),
        ({"optimizer": {"name": "adam", "t": -1}}, "optimizer"),
        ({"optimizer": {"name": "sgd", "t": 1}}, "opt_state2"),
        ({"fastmlp_version": 1}, "fastmlp_version"),
        ({"activation": None}, "missing"),
        ({"surprise": 1}, "unknown"),
    ],
)
def test_bad_meta_is_refused(saved, changes, match):
    write_npz(saved, arrays_of(saved), **changes)
    with pytest.raises(ValueError, match=match):
        load(saved)


@pytest.mark.parametrize(
    "meta, match",
    [
        ("{not json", "not valid JSON"),
        ("[1, 2, 3]", "not a JSON object"),
        ("[" * 100_000 + "]" * 100_000, "not valid JSON"),
        ('{"n": ' + "9" * 5000 + "}", "not valid JSON"),
    ],
    ids=["broken", "array", "deeply-nested", "huge-int"],
)
def test_meta_that_is_not_a_json_object_is_refused(saved, meta, match):
    arrays = arrays_of(saved)
    arrays["meta"] = np.array(meta)
    write_npz(saved, arrays)
    with pytest.raises(ValueError, match=match):
        load(saved)


@pytest.mark.parametrize(
    "classes, match",
    [
        (np.array(["a", "b"]), "shape"),
        (np.array(["a", "b", "c", "d"]), "shape|declares"),
        (np.array(["a", "a", "c"]), "duplicates"),
        (np.array([b"a", b"b", b"c"]), "dtype"),
        (np.array(["a", "b", "cc"]), "dtype"),
    ],
)
def test_bad_classes_are_refused(saved, classes, match):
    arrays = arrays_of(saved)
    arrays["classes"] = classes
    write_npz(saved, arrays)
    with pytest.raises(ValueError, match=match):
        load(saved)


def test_classes_keep_the_order_of_the_outputs(tmp_path):
    # from_weights accepts labels in any order: output i is classes[i], before and after.
    rng = np.random.default_rng(7)
    model = fastmlp.MLP.from_weights(
        [rng.standard_normal((4, 3))], [np.zeros(3)], classes=["c", "a", "b"]
    )
    X = rng.standard_normal((20, 4))
    expected = np.array(["c", "a", "b"])[model.decision_function(X).argmax(axis=1)]
    path = tmp_path / "m.npz"
    save(model, path)
    loaded = load(path)
    assert loaded.classes_.tolist() == ["c", "a", "b"]
    assert np.array_equal(loaded.predict(X), expected)
    assert loaded.score(X, expected) == 1.0


def test_nan_float_classes_are_refused(tmp_path):
    path = tmp_path / "m.npz"
    save(make_model(classes=LABELS["float"]), path)
    arrays = arrays_of(path)
    arrays["classes"] = np.array([0.5, 1.5, np.nan])
    write_npz(path, arrays)
    with pytest.raises(ValueError, match="NaN"):
        load(path)


@pytest.mark.parametrize(
    "edit, match",
    [
        (lambda a: a.pop("opt_state2"), "incomplete"),
        (lambda a: a.update(opt_state1=a["opt_state1"][:-1]), "shape"),
        (lambda a: a.update(opt_state2=a["opt_state2"].astype(np.float64)), "dtype"),
        (lambda a: a.update(opt_state1=np.full_like(a["opt_state1"], np.nan)), "NaN"),
        (lambda a: a.update(opt_state2=-np.ones_like(a["opt_state2"])), "negative"),
        (lambda a: a.pop("params"), "missing"),
        (lambda a: a.pop("meta"), "missing"),
        (lambda a: a.update(extra=np.zeros(3)), "unexpected"),
    ],
)
def test_bad_arrays_are_refused(saved, edit, match):
    arrays = arrays_of(saved)
    edit(arrays)
    write_npz(saved, arrays)
    with pytest.raises(ValueError, match=match):
        load(saved)


def test_optimizer_arrays_without_an_optimizer_are_refused(saved):
    write_npz(saved, arrays_of(saved), optimizer={})
    with pytest.raises(ValueError, match="optimizer"):
        load(saved)
    arrays = arrays_of(saved)
    meta = json.loads(str(arrays["meta"][()]))
    meta["optimizer"] = None
    arrays["meta"] = np.array(json.dumps(meta))
    write_npz(saved, arrays)
    with pytest.raises(ValueError, match="no optimizer"):
        load(saved)


@pytest.mark.parametrize("where", ["classes", "params", "extra", "format"])
def test_object_arrays_are_never_unpickled(saved, no_unpickling, where):
    arrays = arrays_of(saved)
    payload = np.array([{"evil": 1}, "b", "c"], dtype=object)
    if where == "classes":
        arrays["classes"] = payload
    elif where == "params":
        arrays["params"] = np.array(list(arrays["params"]), dtype=object)
    elif where == "extra":
        arrays["extra"] = payload
    else:
        arrays["format"] = np.array("fastmlp-model", dtype=object)
    write_npz(saved, arrays)  # numpy.savez pickles object arrays
    with pytest.raises(ValueError):
        load(saved)


def test_big_endian_and_compressed_files_load(saved, tmp_path):
    model = load(saved)
    arrays = arrays_of(saved)
    arrays["params"] = arrays["params"].astype(">f4")
    arrays["opt_state1"] = arrays["opt_state1"].astype(">f4")
    write_npz(saved, arrays)
    back = load(saved)
    assert back.params_.dtype == np.float32 and back.params_.dtype.isnative
    assert_same_model(model, back)
    np.savez_compressed(tmp_path / "small.npz", **arrays_of(saved))
    assert_same_model(model, load(tmp_path / "small.npz"))


def zip_with_huge_params(path: Path, source: Path, declared_bytes: int) -> None:
    """Copy ``source`` but replace params by a deflated run of zeros of that size."""
    arrays = arrays_of(source)
    with zipfile.ZipFile(path, "w") as zf:
        for key in ("format", "version", "meta", "classes"):
            with zf.open(f"{key}.npy", "w") as member:
                np.lib.format.write_array(member, arrays[key])
        info = zipfile.ZipInfo("params.npy")
        info.compress_type = zipfile.ZIP_DEFLATED
        header = io.BytesIO()
        count = (declared_bytes - 128) // 4
        np.lib.format.write_array_header_1_0(
            header, {"descr": "<f4", "fortran_order": False, "shape": (count,)}
        )
        chunk = bytes(1 << 20)
        with zf.open(info, "w", force_zip64=True) as member:
            member.write(header.getvalue())
            left = count * 4
            while left:
                member.write(chunk[: min(left, len(chunk))])
                left -= min(left, len(chunk))


def test_a_zip_bomb_is_refused_from_its_declared_size(saved, tmp_path):
    bomb = tmp_path / "bomb.npz"
    zip_with_huge_params(bomb, saved, 200 * 2**20)
    assert bomb.stat().st_size < 2**20
    tracemalloc.start()
    start = time.perf_counter()
    try:
        with pytest.raises(ValueError, match="declares .* bytes.*refusing to decompress"):
            load(bomb)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert time.perf_counter() - start < 0.5  # inflating 200 MB would take longer
    assert peak < 8 * 2**20


def test_an_npy_header_declaring_a_huge_shape_is_refused(saved):
    """The zip sizes are honest here; the .npy header lies, and numpy would allocate it."""
    arrays = arrays_of(saved)
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        header, {"descr": "<f4", "fortran_order": False, "shape": (10**12,)}
    )
    with zipfile.ZipFile(saved, "w") as zf:
        for key, arr in arrays.items():
            if key != "params":
                with zf.open(f"{key}.npy", "w") as member:
                    np.lib.format.write_array(member, arr)
        zf.writestr("params.npy", header.getvalue() + arrays["params"].tobytes())
    tracemalloc.start()
    try:
        with pytest.raises(ValueError, match="'params' has shape"):
            load(saved)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 2**20


# -- fuzzing -------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def valid_file_bytes(tmp_path_factory) -> bytes:
    path = tmp_path_factory.mktemp("fuzz") / "model.npz"
    save(trained(), path)
    return path.read_bytes()


mutation = st.one_of(
    st.tuples(st.just("flip"), st.integers(0, 10**6), st.integers(0, 7)),
    st.tuples(st.just("set"), st.integers(0, 10**6), st.integers(0, 255)),
    st.tuples(st.just("truncate"), st.integers(0, 10**6), st.just(0)),
    st.tuples(st.just("overwrite"), st.integers(0, 10**6), st.binary(min_size=1, max_size=16)),
)


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(mutations=st.lists(mutation, min_size=1, max_size=4))
def test_damaged_files_load_or_raise_valueerror(
    valid_file_bytes, tmp_path_factory, no_unpickling, mutations
):
    data = bytearray(valid_file_bytes)
    for kind, pos, value in mutations:
        if not data:
            break
        pos %= len(data)
        if kind == "flip":
            data[pos] ^= 1 << value
        elif kind == "set":
            data[pos] = value
        elif kind == "truncate":
            del data[pos:]
        else:
            data[pos : pos + len(value)] = value
    path = tmp_path_factory.mktemp("fuzzed", numbered=True) / "model.npz"
    path.write_bytes(bytes(data))
    try:
        model = load(path)
    except ValueError:
        return
    assert isinstance(model, MLP)
    labels = model.predict(inputs(model, n=3))
    assert labels.shape == (3,) and set(labels.tolist()) <= set(model.classes_.tolist())


# -- regressions found by fuzz/fuzz_model.py ---------------------------------------------
def test_an_unparsable_npy_header_is_a_clean_error(tmp_path):
    # numpy re-parses such a header with tokenize, whose TokenError once escaped load().
    path = tmp_path / "m.npz"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("format.npy", b"\x93NUMPY\x01\x00\x11\x00{'descr': '<f4',\n")
    with pytest.raises(ValueError, match="cannot load"):
        load(path)


def test_an_array_header_larger_than_its_data_is_refused_before_allocating(saved):
    # A few bytes that declare a huge array: numpy would allocate it all before reading.
    big = [40_000, 40_000, 3]
    n_params = 40_000 * 40_000 + 40_000 + 40_000 * 3 + 3
    arrays = arrays_of(saved)
    for key in ("opt_state1", "opt_state2"):
        arrays.pop(key)
    arrays["params"] = np.zeros(1, np.float32)  # replaced by a bare header below
    meta = json.loads(str(arrays["meta"][()]))
    meta.update(layer_sizes=big, n_params=n_params, optimizer=None)
    arrays["meta"] = np.array(json.dumps(meta))
    write_npz(saved, arrays)
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        header, {"descr": "<f4", "fortran_order": False, "shape": (n_params,)}
    )
    forged = saved.with_name("forged.npz")
    with zipfile.ZipFile(saved) as src, zipfile.ZipFile(forged, "w") as dst:
        for name in src.namelist():
            dst.writestr(name, header.getvalue() if name == "params.npy" else src.read(name))
    tracemalloc.start()
    try:
        with pytest.raises(ValueError, match="header declares"):
            load(forged)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 64 * 2**20


def test_classes_beyond_unicode_are_refused(saved):
    arrays = arrays_of(saved)
    classes = arrays["classes"]
    bad = classes.copy()
    bad.view(np.uint32)[0] = 0x110000
    arrays["classes"] = bad
    write_npz(saved, arrays)
    with pytest.raises(ValueError, match="array 'classes' holds characters outside Unicode"):
        load(saved)


def test_a_step_count_near_overflow_is_refused(tmp_path):
    model = trained()
    model._optimizer["t"] = 2**62 + 1
    with pytest.raises(ValueError):
        save(model, tmp_path / "m.npz")
