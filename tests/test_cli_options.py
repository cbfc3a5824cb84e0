"""``fastmlp train``'s options from issue 13, run as a user runs them (in a subprocess).

Each flag's model must equal ``fastmlp.train`` called with the keyword, and differ from
the model trained without it, so a flag the command line dropped would fail here.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse
from test_cli import assert_ok, assert_user_error, idx_dir, run  # noqa: F401 (idx_dir: a fixture)

import fastmlp
from fastmlp.cli import load_data

# Small and fast; one thread and a seed make training bitwise reproducible.
BASE = ["--hidden", "8", "--epochs", "3", "--batch-size", "32", "--seed", "0", "--threads", "1"]
API = {"hidden": (8,), "epochs": 3, "batch_size": 32, "seed": 0, "n_threads": 1}


def write_csv(path: Path, X: np.ndarray, labels) -> None:
    with open(path, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow([f"f{i}" for i in range(X.shape[1])] + ["label"])
        for row, label in zip(X, labels):
            writer.writerow([f"{v:.6f}" for v in row] + [label])


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    """Classification, regression, count, multilabel and sparse data sets."""
    d = tmp_path_factory.mktemp("cli_options")
    rng = np.random.default_rng(13)
    X = rng.standard_normal((240, 5))
    classes = (X[:, 0] > 0).astype(int) + (X[:, 1] > 0.5)
    np.savez(d / "cls.npz", X=X[:200], y=classes[:200])
    np.savez(d / "cls_val.npz", X=X[200:], y=classes[200:])
    np.savez(d / "cls_val_4features.npz", X=X[200:, :4], y=classes[200:])
    np.savez(d / "cls_val_unknown.npz", X=X[200:], y=classes[200:] + 7)
    target = X[:, 0] - 0.5 * X[:, 1] + 0.1 * rng.standard_normal(240)
    np.savez(d / "reg.npz", X=X[:200], y=target[:200])
    np.savez(d / "reg_val.npz", X=X[200:], y=target[200:])
    write_csv(d / "reg.csv", X[:200], [f"{v:.6f}" for v in target[:200]])
    write_csv(d / "text.csv", X[:200], ["abc"[k] for k in classes[:200]])
    np.savez(d / "counts.npz", X=X[:200], y=rng.poisson(np.exp(0.5 * X[:200, 0])))
    labels = (X[:200, :3] + 0.3 * rng.standard_normal((200, 3)) > 0).astype(int)
    np.savez(d / "multi.npz", X=X[:200], y=labels)
    np.savez(d / "multi_bad.npz", X=X[:200], y=2 * labels)
    Xs = scipy.sparse.random(200, 40, density=0.1, format="csr", random_state=1)
    scipy.sparse.save_npz(d / "sparse_X.npz", Xs)
    np.savez(d / "sparse.npz", y=classes[:200], **np.load(d / "sparse_X.npz"))
    return d


def train_cli(d: Path, source: str, *args: str, out: str = "m.npz"):
    proc = run(d, "train", source, *BASE, *args, "--out", out)
    assert_ok(proc)
    return fastmlp.load(d / out), proc


def read(d: Path, source: str):
    X, y, _ = load_data(d / source, multi_output=True)
    return X, y


CASES = [  # id, data, flags, train's keywords
    ("adamw", "cls.npz", ["--optimizer", "adamw"], {"optimizer": "adamw"}),
    ("weight_decay", "cls.npz", ["--optimizer", "adamw", "--weight-decay", "0.5"],
     {"optimizer": "adamw", "weight_decay": 0.5}),
    ("label_smoothing", "cls.npz", ["--label-smoothing", "0.2"], {"label_smoothing": 0.2}),
    ("activation", "cls.npz", ["--activation", "tanh"], {"activation": "tanh"}),
    ("activations", "cls.npz", ["--hidden", "8,4", "--activation", "tanh,sigmoid"],
     {"hidden": (8, 4), "activation": ("tanh", "sigmoid")}),
    ("squared_error", "reg.npz", ["--loss", "squared_error"], {"loss": "squared_error"}),
    ("huber", "reg.npz", ["--loss", "huber", "--delta", "0.3"], {"loss": "huber", "delta": 0.3}),
    ("absolute_error", "reg.npz", ["--loss", "absolute_error"], {"loss": "absolute_error"}),
    ("poisson", "counts.npz", ["--loss", "poisson"], {"loss": "poisson"}),
    ("csv_targets", "reg.csv", ["--loss", "huber"], {"loss": "huber"}),
    ("normalization", "cls.npz", ["--normalization", "layer"], {"normalization": "layer"}),
]  # fmt: skip


@pytest.mark.parametrize(
    "source,flags,keywords", [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_flag_trains_as_the_keyword(data, source, flags, keywords):
    model, proc = train_cli(data, source, *flags, out=f"{source}-{'-'.join(flags)}.npz")
    X, y = read(data, source)
    if source.endswith(".csv") and keywords.get("loss") in ("huber", "squared_error"):
        y = y.astype(np.float64)  # a CSV's label column is text; the CLI reads numbers
    reference = fastmlp.train(X, y, **{**API, **keywords})
    np.testing.assert_array_equal(model.params_, reference.params_)
    baseline = {k: v for k, v in keywords.items() if k == "loss"}  # a regressor stays one
    if baseline != keywords:
        other = fastmlp.train(X, y, **{**API, **baseline})
        assert not np.array_equal(model.params_, other.params_)
    for key, value in keywords.items():
        if key == "optimizer":
            assert model._optimizer["name"] == value
        elif key == "activation":
            assert model.activations == ((value,) if isinstance(value, str) else value)
        elif key == "hidden":
            assert model.layer_sizes[1:-1] == value
        elif key in ("loss", "delta", "normalization"):
            assert getattr(model, key) == value, key
    if "loss" in keywords:  # regressors: no accuracy on the epoch lines
        assert model.is_regressor
        assert "regression" in proc.stdout and "accuracy" not in proc.stdout
        assert len([ln for ln in proc.stdout.splitlines() if ln.startswith("epoch ")]) == 3


def test_early_stopping(data):
    flags = ["--epochs", "12", "--lr", "0.05", "--validation-split", "0.25"]
    model, proc = train_cli(data, "cls.npz", *flags, "--early-stopping", "--patience", "1")
    X, y = read(data, "cls.npz")
    options = {**API, "epochs": 12, "lr": 0.05, "validation_split": 0.25}
    reference = fastmlp.train(X, y, early_stopping=True, patience=1, **options)
    np.testing.assert_array_equal(model.params_, reference.params_)
    assert len(model.history["epoch"]) == len(reference.history["epoch"]) < 12  # stopped
    # The best epoch's weights, not the last one's: those of training without it differ.
    assert not np.array_equal(model.params_, fastmlp.train(X, y, **options).params_)
    assert_user_error(
        run(data, "train", "cls.npz", *BASE, "--early-stopping", "--out", "never.npz"),
        "early_stopping needs validation_split > 0 or validation_data",
    )


def test_validation_data(data):
    model, proc = train_cli(data, "cls.npz", "--validation-data", "cls_val.npz")
    assert "200 samples (40 for validation)" in proc.stdout
    epochs = [ln for ln in proc.stdout.splitlines() if ln.startswith("epoch ")]
    assert all("val_accuracy" in ln for ln in epochs)
    X, y = read(data, "cls.npz")
    reference = fastmlp.train(X, y, validation_data=read(data, "cls_val.npz"), **API)
    assert model.history["val_loss"] == reference.history["val_loss"]
    assert model.history["val_accuracy"] == reference.history["val_accuracy"]
    assert len(model.history["val_loss"]) == 3
    # Scored on, not trained on: the weights are those of training without it.
    np.testing.assert_array_equal(model.params_, fastmlp.train(X, y, **API).params_)


def test_regressor_validation_data_and_report(data):
    pytest.importorskip("matplotlib")
    model, proc = train_cli(
        data, "reg.npz", "--loss", "huber", "--validation-data", "reg_val.npz", "--report", "rep"
    )
    epochs = [ln for ln in proc.stdout.splitlines() if ln.startswith("epoch ")]
    assert all("val_loss" in ln and "accuracy" not in ln for ln in epochs)
    assert "final: loss" in proc.stdout and "val_loss" in proc.stdout.splitlines()[-3]
    X, y = read(data, "reg.npz")
    reference = fastmlp.train(X, y, loss="huber", validation_data=read(data, "reg_val.npz"), **API)
    assert model.history["val_loss"] == reference.history["val_loss"]
    png = data / "rep" / "learning_curves.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_multilabel(data):
    model, proc = train_cli(data, "multi.npz", "--validation-split", "0.2")
    assert "160 samples (40 for validation), 5 features, 3 labels (multilabel)" in proc.stdout
    assert model.is_multilabel and model.layer_sizes == (5, 8, 3)
    X, Y = read(data, "multi.npz")
    reference = fastmlp.train(X, Y, validation_split=0.2, **API)
    np.testing.assert_array_equal(model.params_, reference.params_)
    assert model.predict(X).shape == Y.shape


def read_csv(text: str) -> tuple[list[str], np.ndarray]:
    lines = text.strip().splitlines()
    return lines[0].split(","), np.array([[float(v) for v in ln.split(",")] for ln in lines[1:]])


@pytest.mark.parametrize("source", ["reg.npz", "reg2.npz", "multi.npz"])
def test_evaluate_and_predict_regressors_and_multilabel(data, source):
    """Predictions as the model's own, one column per output or label; evaluate's figures
    as the model's score and the errors computed here."""
    if source == "reg2.npz":
        X, y = read(data, "reg.npz")
        np.savez(data / source, X=X, y=np.stack([y, -y], axis=1))
    flags = ["--loss", "huber"] if source.startswith("reg") else []
    model, _ = train_cli(data, source, *flags, out=f"model_{source}")
    X, y = read(data, source)
    proc = run(data, "predict", f"model_{source}", source, *([] if flags else ["--proba"]))
    assert_ok(proc)
    header, values = read_csv(proc.stdout)
    pred = model.predict(X).reshape(len(X), -1)
    k = pred.shape[1]
    if model.is_regressor:
        assert header == (["y"] if k == 1 else ["y_0", "y_1"])
        np.testing.assert_allclose(values, pred, rtol=1e-6, atol=1e-7)
    else:
        assert header == ["label_0", "label_1", "label_2", "p_0", "p_1", "p_2"]
        assert np.array_equal(values[:, :3], pred)
        np.testing.assert_allclose(values[:, 3:], model.predict_proba(X), rtol=1e-5)
    proc = run(data, "evaluate", f"model_{source}", source)
    assert_ok(proc)
    if model.is_regressor:
        assert f"R^2: {model.score(X, y):.6g}" in proc.stdout
        d = pred - np.asarray(y, dtype=np.float64).reshape(len(X), -1)
        mae, rmse = np.mean(np.abs(d[:, -1])), np.sqrt(np.mean(d[:, -1] ** 2))
        assert f"{k - 1:>8}: {mae:.6g}, {rmse:.6g}" in proc.stdout
    else:
        assert f"subset accuracy (every label right): {100 * model.score(X, y):.2f}%" in (
            proc.stdout
        )
        assert f"{2:>8}: {100 * np.mean(pred[:, 2] == y[:, 2]):6.2f}%" in proc.stdout


def test_sparse_data(data):
    model, proc = train_cli(data, "sparse.npz", "--validation-data", "sparse.npz")
    assert "40 features (sparse), 3 classes" in proc.stdout
    X = scipy.sparse.load_npz(data / "sparse_X.npz")
    y = np.load(data / "sparse.npz")["y"]
    reference = fastmlp.train(X, y, validation_data=(X, y), **API)
    np.testing.assert_array_equal(model.params_, reference.params_)
    # predict reads a plain scipy.sparse.save_npz file; evaluate the labelled one.
    proc = run(data, "predict", "m.npz", "sparse_X.npz", "--threads", "1")
    assert_ok(proc)
    rows = proc.stdout.splitlines()
    assert rows[1:] == [str(v) for v in model.predict(X)]
    proc = run(data, "evaluate", "m.npz", "sparse.npz", "--threads", "1")
    assert_ok(proc)
    assert f"accuracy: {100 * model.score(X, y):.2f}%" in proc.stdout


def test_bad_values_exit_2_with_one_line_before_training(data):
    model = train_cli(data, "multi.npz", out="multi_model.npz")[0]
    assert model.is_multilabel
    train_cli(data, "cls.npz", out="m.npz")  # for quantize below, whatever ran before
    cases = [
        (["--optimizer", "adamw", "--weight-decay", "-1"], "cls.npz", "weight_decay must lie"),
        (["--weight-decay", "0.1"], "cls.npz", "optimizer='adamw'"),
        (["--label-smoothing", "1"], "cls.npz", "label_smoothing must lie in [0.0, 1.0)"),
        (["--loss", "huber", "--label-smoothing", "0.1"], "reg.npz", "label_smoothing smooths"),
        (["--activation", "relu,tanh"], "cls.npz", "activation lists 2 names"),
        (["--activation", "gelu"], "cls.npz", "activation must be one of"),
        (["--delta", "0.5"], "cls.npz", "delta is the threshold of loss='huber'"),
        (["--loss", "huber", "--delta", "0"], "reg.npz", "delta must lie in"),
        (["--loss", "poisson"], "reg.npz", "negative values"),
        (["--loss", "huber"], "text.csv", "text.csv: target 'b' is not a number"),
        (["--loss", "squared_error", "--validation-data", "text.csv"], "reg.csv",
         "text.csv: target 'b' is not a number"),
        (["--validation-data", "cls_val.npz", "--validation-split", "0.1"], "cls.npz",
         "not both"),
        (["--validation-data", "missing.npz"], "cls.npz", "missing.npz does not exist"),
        (["--validation-data", "cls_val_4features.npz"], "cls.npz", "X_val has 4 features"),
        (["--validation-data", "cls_val_unknown.npz"], "cls.npz", "y_val has labels"),
        ([], "multi_bad.npz", "holds only 0 and 1"),
        ([], "sparse_X.npz", "holds a sparse X but no array 'y'"),
    ]  # fmt: skip
    for flags, source, message in cases:
        proc = run(data, "train", source, *BASE, *flags, "--out", "never.npz")
        assert_user_error(proc, message)
        assert "epoch" not in proc.stdout
        assert not (data / "never.npz").exists()
    for args, message in [
        (("evaluate", "multi_model.npz", "cls.npz"), "a multilabel y is a 2-D indicator"),
        (("evaluate", "multi_model.npz", "multi.npz", "--report", "r"), "confusion matrix"),
        (("quantize", "m.npz", "sparse.npz", "--out", "q.npz"), "calibrates on dense data"),
    ]:
        assert_user_error(run(data, *args), message)


@pytest.mark.parametrize(
    "flags,message",
    [
        (["--loss", "hinge"], "invalid choice: 'hinge'"),
        (["--optimizer", "rmsprop"], "invalid choice: 'rmsprop'"),
        (["--normalization", "group"], "invalid choice: 'group'"),
        (["--weight-decay", "lots"], "invalid float value: 'lots'"),
    ],
)
def test_unparsable_values_are_usage_errors(data, flags, message):
    proc = run(data, "train", "cls.npz", *flags, "--out", "never.npz")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert message in proc.stderr and flags[0] in proc.stderr


def test_help_lists_the_options(data):
    proc = run(data, "train", "--help")
    assert_ok(proc)
    for option in ("--optimizer", "--weight-decay", "--label-smoothing", "--activation",
                   "--loss", "--delta", "--validation-data", "training options"):  # fmt: skip
        assert option in proc.stdout
    assert all(len(line) <= 100 for line in proc.stdout.splitlines())


def test_validation_data_of_an_idx_directory(idx_dir, tmp_path):  # noqa: F811 (fixture)
    # An IDX directory validates on its t10k-* files, as evaluate reads them.
    proc = run(tmp_path, "train", str(idx_dir), *BASE, "--validation-data", str(idx_dir),
               "--out", "m.npz")  # fmt: skip
    assert_ok(proc)
    assert "600 samples (100 for validation), 784 features, 10 classes" in proc.stdout
    assert len(fastmlp.load(tmp_path / "m.npz").history["val_accuracy"]) == 3
