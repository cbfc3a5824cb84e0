"""``python -m fastmlp``, run as a user runs it: in a subprocess, from a scratch directory."""

from __future__ import annotations

import csv
import gzip
import os
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import fastmlp
from fastmlp.datasets import read_idx

# The child imports the same fastmlp as this test (a source checkout built in place).
_ROOT = str(Path(fastmlp.__file__).resolve().parent.parent)
# The repository's copy, found from this file: an installed fastmlp lives in site-packages.
_MNIST_DIR = Path(__file__).resolve().parent.parent / "benches" / "data" / "mnist"
_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def run(cwd: Path, *args: str, extra_path: Path | None = None) -> subprocess.CompletedProcess[str]:
    """Run ``python -m fastmlp ARGS`` in ``cwd``; ``extra_path`` goes first on PYTHONPATH."""
    env = dict(os.environ)
    paths = [_ROOT] if extra_path is None else [str(extra_path), _ROOT]
    env["PYTHONPATH"] = os.pathsep.join(paths)
    env["MPLBACKEND"] = "Agg"
    return subprocess.run(
        [sys.executable, "-m", "fastmlp", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def assert_ok(proc: subprocess.CompletedProcess[str]) -> None:
    assert proc.returncode == 0, f"exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    assert "Traceback" not in proc.stderr


def assert_user_error(proc: subprocess.CompletedProcess[str], *fragments: str) -> None:
    assert proc.returncode == 2, f"exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def blobs(n: int = 300, n_features: int = 5, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Three well-separated Gaussian blobs."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(3, n_features)) * 5
    y = rng.integers(0, 3, n)
    return centres[y] + rng.normal(size=(n, n_features)), y


def write_csv(path: Path, X: np.ndarray, labels, label_column: str = "label") -> None:
    with open(path, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow([f"f{i}" for i in range(X.shape[1])] + [label_column])
        for row, label in zip(X, labels):
            writer.writerow([f"{v:.6f}" for v in row] + [label])


def write_idx(path: Path, array: np.ndarray, compress: bool = False) -> None:
    """Write a uint8 array as an IDX file (type code 0x08, big-endian sizes)."""
    assert array.dtype == np.uint8
    data = b"\x00\x00\x08" + bytes([array.ndim])
    data += struct.pack(f">{array.ndim}i", *array.shape) + array.tobytes()
    path.write_bytes(gzip.compress(data) if compress else data)


IDX_TRAIN = ["--hidden", "32", "--epochs", "5", "--batch-size", "32", "--seed", "0"]
IDX_TRAIN += ["--threads", "1", "--validation-split", "0.1", "--out", "mnist.npz"]
TRAIN = ["--epochs", "15", "--lr", "1e-2", "--batch-size", "32", "--seed", "0", "--threads", "1"]


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    """A directory with blobs.npz, blobs.csv (text labels) and models trained on each."""
    d = tmp_path_factory.mktemp("cli")
    X, y = blobs()
    np.savez(d / "blobs.npz", X=X, y=y)
    write_csv(d / "blobs.csv", X, ["abc"[k] for k in y], label_column="kind")
    np.save(d / "X.npy", X[:20])
    return d


@pytest.fixture(scope="module")
def npz_model(work) -> tuple[Path, subprocess.CompletedProcess[str]]:
    proc = run(work, "train", "blobs.npz", "--hidden", "16,8", *TRAIN, "--out", "m.npz")
    return work / "m.npz", proc


@pytest.fixture(scope="module")
def idx_dir(tmp_path_factory) -> Path:
    """train-* holds the first 600 MNIST training images, t10k-* (gzipped) 100 of them."""
    images = _MNIST_DIR / "train-images-idx3-ubyte.gz"
    labels = _MNIST_DIR / "train-labels-idx1-ubyte.gz"
    X, y = read_idx(images)[:600], read_idx(labels)[:600]
    d = tmp_path_factory.mktemp("mnist600")
    write_idx(d / "train-images-idx3-ubyte", X)
    write_idx(d / "train-labels-idx1-ubyte", y)
    write_idx(d / "t10k-images-idx3-ubyte.gz", X[500:], compress=True)
    write_idx(d / "t10k-labels-idx1-ubyte.gz", y[500:], compress=True)
    return d


# --------------------------------------------------------------------------- train


def test_train_npz_prints_epochs_and_saves(npz_model):
    path, proc = npz_model
    assert_ok(proc)
    epoch_lines = [line for line in proc.stdout.splitlines() if line.startswith("epoch ")]
    assert len(epoch_lines) == 15
    assert epoch_lines[0].startswith("epoch 1/15")
    assert "samples/s" in epoch_lines[-1] and "loss" in epoch_lines[-1]
    assert "val_accuracy" not in epoch_lines[-1]
    assert "final:" in proc.stdout
    model = fastmlp.load(path)
    assert model.layer_sizes == (5, 16, 8, 3)
    assert len(model.history["epoch"]) == 15
    X, y = blobs()
    assert model.score(X, y) > 0.9


def test_train_csv_with_validation_and_options(work):
    proc = run(
        work,
        "train",
        "blobs.csv",
        "--label-column",
        "kind",
        "--hidden",
        "12",
        "--validation-split",
        "0.2",
        "--lr-schedule",
        "cosine",
        "--dropout",
        "0.1",
        "--l2",
        "1e-4",
        *TRAIN,
        "--out",
        "csv_model.npz",
    )
    assert_ok(proc)
    epoch_lines = [line for line in proc.stdout.splitlines() if line.startswith("epoch ")]
    assert len(epoch_lines) == 15 and all("val_accuracy" in line for line in epoch_lines)
    assert "240 samples (60 for validation)" in proc.stdout
    model = fastmlp.load(work / "csv_model.npz")
    assert list(model.classes_) == ["a", "b", "c"]
    assert "val_accuracy" in model.history

    evaluation = run(work, "evaluate", "csv_model.npz", "blobs.csv", "--label-column", "kind")
    assert_ok(evaluation)
    assert "accuracy:" in evaluation.stdout
    assert "true\\pred" in evaluation.stdout


def test_seed_makes_training_reproducible(work, npz_model):
    again = run(work, "train", "blobs.npz", "--hidden", "16,8", *TRAIN, "--out", "m2.npz")
    assert_ok(again)
    a, b = fastmlp.load(npz_model[0]), fastmlp.load(work / "m2.npz")
    np.testing.assert_array_equal(a.params_, b.params_)


# --------------------------------------------------------------------------- evaluate


def test_evaluate_prints_accuracy_and_confusion_matrix(work, npz_model):
    path, _ = npz_model
    proc = run(work, "evaluate", path.name, "blobs.npz", "--threads", "1")
    assert_ok(proc)
    model = fastmlp.load(path)
    X, y = blobs()
    accuracy = model.score(X, y)
    assert f"accuracy: {100 * accuracy:.2f}%" in proc.stdout
    assert "per-class accuracy:" in proc.stdout
    lines = proc.stdout.splitlines()
    header = lines.index("confusion matrix (rows: true, columns: predicted):")
    table = lines[header + 1 : header + 5]
    assert table[0].split() == ["true\\pred", "0", "1", "2"]
    counts = np.array([[int(v) for v in row.split()[1:]] for row in table[1:]])
    assert counts.sum() == len(y)
    np.testing.assert_array_equal(counts.sum(axis=1), np.bincount(y, minlength=3))
    assert np.trace(counts) == round(accuracy * len(y))


# --------------------------------------------------------------------------- predict


def _read_predictions(text: str) -> list[list[str]]:
    return list(csv.reader(text.splitlines()))


@pytest.mark.parametrize("source", ["X.npy", "blobs.npz", "blobs.csv"])
def test_predict_matches_model_predict(work, npz_model, source):
    path, _ = npz_model
    extra = ["--label-column", "kind"] if source.endswith(".csv") else []
    proc = run(work, "predict", path.name, source, "--threads", "1", *extra)
    assert_ok(proc)
    rows = _read_predictions(proc.stdout)
    assert rows[0] == ["label"]
    X = np.load(work / "X.npy") if source == "X.npy" else blobs()[0]
    expected = fastmlp.load(path).predict(X)
    # The CSV holds the features to 6 decimals; no blob sits that close to a boundary.
    assert [r[0] for r in rows[1:]] == [str(v) for v in expected]


def test_predict_proba_to_file(work, npz_model):
    path, _ = npz_model
    proc = run(work, "predict", path.name, "X.npy", "--proba", "--out", "pred.csv")
    assert_ok(proc)
    rows = _read_predictions((work / "pred.csv").read_text())
    assert rows[0] == ["label", "p_0", "p_1", "p_2"]
    model = fastmlp.load(path)
    X = np.load(work / "X.npy")
    proba = np.array([[float(p) for p in r[1:]] for r in rows[1:]])
    np.testing.assert_allclose(proba, model.predict_proba(X), rtol=1e-4, atol=1e-6)
    assert [r[0] for r in rows[1:]] == [str(v) for v in model.predict(X)]


# --------------------------------------------------------------------------- errors


def test_errors_exit_2_with_one_line(work, npz_model, tmp_path):
    path = str(npz_model[0])
    (tmp_path / "notes.txt").write_text("hello\n")
    (tmp_path / "bad.csv").write_text("f0,label\n1.0,a\nxyz,b\n")
    (tmp_path / "nolabel.csv").write_text("f0,f1\n1,2\n")
    np.savez(tmp_path / "noX.npz", Z=np.zeros(3))
    np.save(tmp_path / "wide.npy", np.zeros((4, 7)))
    np.savez(tmp_path / "wide.npz", X=np.zeros((4, 7)), y=np.zeros(4, dtype=int))
    fastmlp.MLP((7, 1), loss="squared_error").save(tmp_path / "regressor.npz")
    cases = [
        (("train", "missing.npz", "--out", "m.npz"), ("missing.npz", "does not exist")),
        # --out is checked before the data is read, so before any training.
        (("train", "missing.npz", "--out", str(tmp_path)), ("is a directory",)),
        (("train", "notes.txt", "--out", "m.npz"), ("unknown data format",)),
        (("train", "bad.csv", "--out", "m.npz"), ("line 3", "'xyz'")),
        (("train", "nolabel.csv", "--out", "m.npz"), ("no column 'label'",)),
        (("train", "noX.npz", "--out", "m.npz"), ("no array 'X'",)),
        (("train", str(tmp_path), "--out", "m.npz"), ("holds no IDX data set",)),
        (("evaluate", "missing_model.npz", "wide.npz"), ("does not exist",)),
        (("evaluate", "notes.txt", "wide.npz"), ("not a fastmlp model file",)),
        (("evaluate", path, "wide.npz"), ("expects 5 features", "has 7")),
        (("predict", path, "wide.npy"), ("expects 5 features", "has 7")),
        (("predict", path, "missing.npy"), ("does not exist",)),
        (("predict", "regressor.npz", "wide.npy", "--proba"), ("holds a regressor",)),
        (("evaluate", "regressor.npz", "wide.npz", "--report", "r"), ("holds a regressor",)),
    ]
    for args, fragments in cases:
        assert_user_error(run(tmp_path, *args), *fragments)


def test_unknown_labels_are_an_error(work, npz_model):
    proc = run(work, "evaluate", str(npz_model[0]), "blobs.csv", "--label-column", "kind")
    assert_user_error(proc, "label a", "does not know")


def test_bad_option_is_a_usage_error(work):
    proc = run(work, "train", "blobs.npz", "--hidden", "12,x", "--out", "m.npz")
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr and "--hidden" in proc.stderr
    proc = run(work, "train", "blobs.npz", "--seed", "-1", "--out", "m.npz")
    assert proc.returncode == 2
    assert "--seed" in proc.stderr and "expected an integer >= 0; got '-1'" in proc.stderr


def test_help_documents_every_option(work):
    for command in ("train", "evaluate", "predict"):
        proc = run(work, command, "--help")
        assert_ok(proc)
        assert "--threads" in proc.stdout
    train_help = run(work, "train", "--help").stdout
    for option in ("--hidden", "--epochs", "--batch-size", "--lr-schedule", "--dropout",
                   "--l2", "--seed", "--validation-split", "--out", "--report"):  # fmt: skip
        assert option in train_help


def test_report_without_matplotlib_fails_before_training(work, tmp_path):
    # A stand-in package that fails to import, first on the path, hides any real matplotlib.
    fake = tmp_path / "fake"
    (fake / "matplotlib").mkdir(parents=True)
    (fake / "matplotlib" / "__init__.py").write_text("raise ImportError('hidden for the test')\n")
    proc = run(
        work, "train", "blobs.npz", *TRAIN, "--out", "never.npz", "--report", "r",
        extra_path=fake,
    )  # fmt: skip
    assert_user_error(proc, "matplotlib", "pip install matplotlib")
    assert "epoch" not in proc.stdout
    assert not (work / "never.npz").exists()


# --------------------------------------------------------------------------- IDX + reports


def test_idx_train_and_evaluate(idx_dir, tmp_path):
    proc = run(tmp_path, "train", str(idx_dir), *IDX_TRAIN)
    assert_ok(proc)
    assert "540 samples (60 for validation), 784 features, 10 classes" in proc.stdout
    model = fastmlp.load(tmp_path / "mnist.npz")
    assert model.layer_sizes == (784, 32, 10)
    # Pixels were scaled to [0, 1], as load_mnist does: training got somewhere.
    assert model.history["accuracy"][-1] > 0.7

    evaluation = run(tmp_path, "evaluate", "mnist.npz", str(idx_dir), "--threads", "1")
    assert_ok(evaluation)
    assert "samples: 100" in evaluation.stdout  # the t10k-* files, not train-*
    X = read_idx(idx_dir / "t10k-images-idx3-ubyte.gz").reshape(100, -1) / 255
    y = read_idx(idx_dir / "t10k-labels-idx1-ubyte.gz")
    assert f"accuracy: {100 * model.score(X, y):.2f}%" in evaluation.stdout


def _assert_png(path: Path) -> None:
    assert path.is_file(), path
    data = path.read_bytes()
    assert data.startswith(_PNG_MAGIC) and len(data) > 1000


def test_reports(idx_dir, tmp_path):
    pytest.importorskip("matplotlib")
    proc = run(tmp_path, "train", str(idx_dir), *IDX_TRAIN, "--report", "rep")
    assert_ok(proc)
    _assert_png(tmp_path / "rep" / "learning_curves.png")

    evaluation = run(tmp_path, "evaluate", "mnist.npz", str(idx_dir), "--report", "rep/eval")
    assert_ok(evaluation)
    _assert_png(tmp_path / "rep" / "eval" / "confusion_matrix.png")
    _assert_png(tmp_path / "rep" / "eval" / "most_confident_errors.png")


def test_report_for_non_image_data_has_no_error_grid(work, npz_model, tmp_path):
    pytest.importorskip("matplotlib")
    proc = run(work, "evaluate", str(npz_model[0]), "blobs.npz", "--report", str(tmp_path))
    assert_ok(proc)
    _assert_png(tmp_path / "confusion_matrix.png")
    assert not (tmp_path / "most_confident_errors.png").exists()


# --------------------------------------------------------------------------- export


def test_export_writes_the_c_files(work, npz_model, tmp_path):
    from fastmlp.export_c import generate_c

    path = npz_model[0]
    proc = run(tmp_path, "export", str(path), "--c", "out/c", "--name", "blobs")
    assert_ok(proc)
    header, source = tmp_path / "out" / "c" / "blobs.h", tmp_path / "out" / "c" / "blobs.c"
    assert f"written to {Path('out/c/blobs.h')} and {Path('out/c/blobs.c')}" in proc.stdout
    assert "cc -std=c99" in proc.stdout
    assert (header.read_text(), source.read_text()) == generate_c(fastmlp.load(path), "blobs")
    assert "int blobs_predict(const float *x);" in header.read_text()


def test_export_default_name_and_regressor(tmp_path):
    # Unlike evaluate and predict, export takes regressors too.
    fastmlp.MLP((7, 3, 2), None, loss="squared_error").save(tmp_path / "regressor.npz")
    assert_ok(run(tmp_path, "export", "regressor.npz", "--c", "."))
    assert "void model_predict(const float *x, float *y);" in (tmp_path / "model.h").read_text()
    assert (tmp_path / "model.c").is_file()


def test_export_errors_exit_2_with_one_line(npz_model, tmp_path):
    path = str(npz_model[0])
    (tmp_path / "notes.txt").write_text("hello\n")
    cases = [
        (("export", path, "--c", "out", "--name", "1x"), ("C identifier", "'1x'")),
        (("export", path, "--c", "out", "--name", "int"), ("C keyword",)),
        (("export", "missing.npz", "--c", "out"), ("missing.npz", "does not exist")),
        (("export", "notes.txt", "--c", "out"), ("not a fastmlp model file",)),
        (("export", path, "--c", "notes.txt"), ("notes.txt", "not a directory")),
    ]
    for args, fragments in cases:
        assert_user_error(run(tmp_path, *args), *fragments)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]  # nothing created
    proc = run(tmp_path, "export", path)
    assert proc.returncode == 2 and "--c" in proc.stderr and "Traceback" not in proc.stderr


def test_export_help(work):
    proc = run(work, "export", "--help")
    assert_ok(proc)
    for option in ("--c", "--name", "MODEL.npz"):
        assert option in proc.stdout
    assert "export" in run(work, "--help").stdout


# --------------------------------------------------------------------------- quantize


def test_quantize_prints_the_report_and_saves_an_int8_model(npz_model, tmp_path):
    proc = run(tmp_path, "quantize", str(npz_model[0]), str(npz_model[0].parent / "blobs.npz"),
               "--out", "q.npz", "--report", "change.png")  # fmt: skip
    assert_ok(proc)
    for fragment in (
        "calibrated on 300 rows",
        "accuracy: float",
        "top-1 agreement",
        "largest probability difference",
        "x smaller",
        "q.npz",
        "change.png",
    ):
        assert fragment in proc.stdout, fragment
    q = fastmlp.load(tmp_path / "q.npz")
    assert isinstance(q, fastmlp.QuantizedMLP)
    assert (tmp_path / "change.png").read_bytes()[:8] == _PNG_MAGIC
    X = np.load(npz_model[0].parent / "blobs.npz")["X"]
    assert q.score(X, np.load(npz_model[0].parent / "blobs.npz")["y"]) > 0.9
    # evaluate and export read the int8 model like any other
    assert_ok(run(tmp_path, "evaluate", "q.npz", str(npz_model[0].parent / "blobs.npz")))
    proc = run(tmp_path, "export", "q.npz", "--c", "c_out", "--name", "blobs8")
    assert_ok(proc)
    assert "int8 classifier" in proc.stdout
    from fastmlp.export_c_int8 import generate_c_int8

    text = (tmp_path / "c_out" / "blobs8.c").read_text()
    assert text == generate_c_int8(q, "blobs8")[1]
    assert "int8_t blobs8_W0" in text


def test_quantize_on_idx_data(idx_dir, tmp_path):
    assert_ok(run(tmp_path, "train", str(idx_dir), "--hidden", "32", "--epochs", "2",
                  "--seed", "0", "--out", "m.npz"))  # fmt: skip
    proc = run(tmp_path, "quantize", "m.npz", str(idx_dir), "--out", "q.npz",
               "--calibration-rows", "50")  # fmt: skip
    assert_ok(proc)
    assert "calibrated on 50 rows" in proc.stdout and "evaluated on all 100" in proc.stdout


def test_quantize_errors_exit_2_with_one_line(npz_model, tmp_path):
    path, data = str(npz_model[0]), str(npz_model[0].parent / "blobs.npz")
    fastmlp.MLP((5, 3, 2), None, loss="squared_error").save(tmp_path / "reg.npz")
    np.savez(tmp_path / "wide.npz", X=np.zeros((40, 6)), y=np.zeros(40, int))
    assert_ok(run(tmp_path, "quantize", path, data, "--out", "q.npz"))
    cases = [
        (("quantize", "reg.npz", data, "--out", "x.npz"), ("for classifiers",)),
        (("quantize", "q.npz", data, "--out", "x.npz"), ("already an int8 model",)),
        (("quantize", path, "wide.npz", "--out", "x.npz"), ("expects 5 features",)),
        (
            ("quantize", path, data, "--out", "x.npz", "--calibration-rows", "5"),
            ("at least 32",),
        ),  # fmt: skip
        (("quantize", path, data, "--out", "nodir/x.npz"), ("nodir", "does not exist")),
        (("quantize", "missing.npz", data, "--out", "."), ("is a directory",)),  # before all
        (("quantize", path, data, "--out", "x.npz", "--report", "no/r.png"), ("no", "not exist")),
        (("quantize", path, data, "--out", "x.npz", "--report", "."), ("directory",)),
        (("quantize", "missing.npz", data, "--out", "x.npz"), ("missing.npz", "does not exist")),
    ]
    for args, fragments in cases:
        assert_user_error(run(tmp_path, *args), *fragments)
    assert not (tmp_path / "x.npz").exists()
