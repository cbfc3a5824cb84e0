"""The ``python -m fastmlp`` command line: train, evaluate, predict, export and quantize.

Examples
--------
::

    python -m fastmlp train benches/data/mnist --hidden 128,64 --epochs 10 --out model.npz
    python -m fastmlp evaluate model.npz benches/data/mnist --report report/
    python -m fastmlp predict model.npz X.npy --proba --out predictions.csv
    python -m fastmlp export model.npz --c build/ --name mnist
    python -m fastmlp quantize model.npz benches/data/mnist --out q.npz --report change.png

Data (``DATA``) is an IDX directory in the MNIST layout, a ``.npz`` holding arrays ``X``
and ``y``, or a CSV file with a header and a label column. A ``.npz`` may hold a sparse X
instead, in ``scipy.sparse.save_npz``'s layout (with the array ``y`` added for labelled
data); a 2-D ``y`` of 0 and 1 in a ``.npz`` trains a multilabel classifier. Every expected
failure (a missing file, a malformed one, a model that does not fit the data, an option
``fastmlp.train`` refuses) is reported as one line on stderr with exit status 2.
"""

from __future__ import annotations

import argparse
import csv
import io
import math
import sys
import time
import zipfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse

__all__ = ["main", "load_data", "load_features"]

EXIT_ERROR = 2
_IDX_SPLITS = {"train": ("train",), "evaluate": ("t10k", "train")}
# Errors that describe the user's input; anything else is a bug and keeps its traceback.
_USER_ERRORS = (
    OSError,
    ValueError,
    TypeError,
    KeyError,
    FloatingPointError,
    MemoryError,
    zipfile.BadZipFile,
    csv.Error,
)


class CLIError(Exception):
    """A problem with the user's input, reported as one line and exit status 2."""


# --------------------------------------------------------------------------- data


def _idx_file(directory: Path, stem: str) -> Path | None:
    """``directory/stem`` or ``directory/stem.gz``, whichever exists, else None."""
    for candidate in (directory / stem, directory / f"{stem}.gz"):
        if candidate.is_file():
            return candidate
    return None


def _load_idx_dir(directory: Path, prefixes: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """Images and labels of the first split in ``prefixes`` whose files are present.

    Pixels are scaled by 1/255 to float32 and flattened, as in
    :func:`fastmlp.datasets.load_mnist`.
    """
    from fastmlp.datasets import read_idx

    for prefix in prefixes:
        images = _idx_file(directory, f"{prefix}-images-idx3-ubyte")
        labels = _idx_file(directory, f"{prefix}-labels-idx1-ubyte")
        if images is not None and labels is not None:
            break
    else:
        wanted = " or ".join(f"{p}-images-idx3-ubyte + {p}-labels-idx1-ubyte" for p in prefixes)
        raise CLIError(f"{directory} holds no IDX data set: expected {wanted} (optionally .gz)")
    X = read_idx(images)
    y = read_idx(labels)
    if X.ndim < 2 or y.ndim != 1:
        raise CLIError(
            f"{images} / {labels}: expected images of 2 or more dimensions and 1-D labels; "
            f"got shapes {X.shape} and {y.shape}"
        )
    if X.shape[0] != y.shape[0]:
        raise CLIError(f"{images} holds {X.shape[0]} images but {labels} {y.shape[0]} labels")
    pixels = X.dtype == np.uint8
    X = X.reshape(X.shape[0], -1).astype(np.float32)
    if pixels:  # bytes 0-255 become [0, 1], as in load_mnist
        X /= 255
    return X, y.astype(np.int64)


def _read_csv(path: Path, label_column: str | None, need_labels: bool):
    """Features (and labels, if the label column exists) of a CSV file with a header."""
    with open(path, newline="", encoding="utf-8") as fh:
        reader = csv.reader(fh)
        header = next(reader, None)
        if header is None:
            raise CLIError(f"{path} is empty: expected a header line and data rows")
        header = [name.strip() for name in header]
        rows = [row for row in reader if row and any(cell.strip() for cell in row)]
    if not rows:
        raise CLIError(f"{path} has a header but no data rows")
    if label_column is not None and label_column in header:
        li = header.index(label_column)
    elif need_labels:
        raise CLIError(
            f"{path} has no column {label_column!r} (columns: {', '.join(header)}); "
            "name the label column with --label-column"
        )
    else:
        li = None
    features = [i for i in range(len(header)) if i != li]
    if not features:
        raise CLIError(f"{path} has no feature columns besides the label column")
    X = np.empty((len(rows), len(features)), dtype=np.float64)
    labels = []
    for r, row in enumerate(rows, start=2):
        if len(row) != len(header):
            raise CLIError(
                f"{path}, line {r}: {len(row)} fields, but the header has {len(header)}"
            )
        try:
            X[r - 2] = [float(row[i]) for i in features]
        except ValueError:
            bad = next(row[i] for i in features if not _is_float(row[i]))
            raise CLIError(f"{path}, line {r}: {bad!r} is not a number") from None
        if li is not None:
            labels.append(row[li].strip())
    if li is None:
        return X, None
    try:
        y = np.array([int(v) for v in labels], dtype=np.int64)
    except ValueError:
        y = np.array(labels)
    return X, y


def _is_float(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


# The arrays scipy.sparse.save_npz writes (every format has these; CSR adds indices, indptr).
_SPARSE_NPZ = {"format", "shape", "data"}


def _read_npz(path: Path, need_labels: bool):
    """Arrays ``X`` and ``y`` (``y`` optional unless ``need_labels``) of a .npz file.

    A file in ``scipy.sparse.save_npz``'s layout (no array ``X``) holds a sparse X; for
    labelled data it also holds ``y``: ``np.savez(path, y=y, **np.load(sparse_npz))``.
    """
    try:
        with np.load(path, allow_pickle=False) as npz:
            names = set(npz.files)
            sparse = "X" not in names and _SPARSE_NPZ <= names
            if "X" not in names and not sparse:
                raise CLIError(
                    f"{path} has no array 'X' (arrays: {', '.join(sorted(names)) or 'none'}) "
                    "and is not a scipy.sparse.save_npz file"
                )
            if need_labels and "y" not in names:
                if sparse:
                    raise CLIError(
                        f"{path} holds a sparse X but no array 'y' of labels: add them with "
                        f"np.savez(path, y=y, **np.load({str(path)!r}))"
                    )
                raise CLIError(f"{path} has no array 'y' of labels")
            X = None if sparse else npz["X"]
            y = npz["y"] if "y" in names else None
        if sparse:
            X = scipy.sparse.load_npz(path)  # reads only its own arrays, not y
    except (zipfile.BadZipFile, EOFError) as exc:
        raise CLIError(f"{path} is not a valid .npz archive ({exc})") from None
    return X, y


def load_data(
    path: str | Path,
    *,
    command: str = "train",
    label_column: str = "label",
    multi_output: bool = False,
) -> tuple[np.ndarray, np.ndarray, bool]:
    """Read a labelled data set given on the command line.

    Parameters
    ----------
    path : str or pathlib.Path
        An IDX directory in the MNIST layout, a ``.npz`` with arrays ``X`` and ``y``, or a
        ``.csv`` with a header line.
    command : {"train", "evaluate"}
        Which IDX split to read: ``train-*`` for training; for evaluation ``t10k-*`` if
        present, else ``train-*``.
    label_column : str
        Name of the CSV column holding the labels; the other columns are features.
    multi_output : bool
        Accept a 2-D ``y`` (a multilabel indicator, or several regression targets).

    Returns
    -------
    X : numpy.ndarray or scipy.sparse matrix of shape (n_samples, n_features)
    y : numpy.ndarray of shape (n_samples,), or (n_samples, n_outputs) if ``multi_output``
    is_image : bool
        True for IDX data (images).

    Raises
    ------
    CLIError, OSError, ValueError
        If the data is missing or malformed.
    """
    p = Path(path)
    if not p.exists():
        raise CLIError(f"{p} does not exist")
    if p.is_dir():
        X, y = _load_idx_dir(p, _IDX_SPLITS[command])
        return X, y, True
    suffix = p.suffix.lower()
    if suffix == ".npz":
        X, y = _read_npz(p, need_labels=True)
    elif suffix == ".csv":
        X, y = _read_csv(p, label_column, need_labels=True)
    else:
        raise CLIError(
            f"{p}: unknown data format {suffix or '(no suffix)'!r}; expected an IDX directory, "
            "a .npz with arrays X and y, or a .csv"
        )
    return _check_arrays(p, X, y, multi_output) + (False,)


def _check_arrays(
    p: Path, X, y: np.ndarray | None, multi_output: bool = False
) -> tuple[np.ndarray, ...]:
    if not scipy.sparse.issparse(X):  # sparse X is 2-D already
        X = np.asarray(X)
        if X.ndim == 1:
            X = X.reshape(-1, 1)
        elif X.ndim > 2:
            X = X.reshape(X.shape[0], -1)
    if X.dtype.kind not in "biuf":
        raise CLIError(f"{p}: X must hold numbers; got dtype {X.dtype}")
    if X.shape[0] == 0:
        raise CLIError(f"{p}: X has no samples")
    if y is None:
        return (X,)
    y = np.asarray(y)
    if y.ndim not in ((1, 2) if multi_output else (1,)) or y.shape[0] != X.shape[0]:
        expected = f"({X.shape[0]},), one label per row"
        if multi_output:
            expected += f", or ({X.shape[0]}, n_outputs)"
        raise CLIError(f"{p}: y has shape {y.shape}; expected {expected}")
    return X, y


def load_features(path: str | Path, *, label_column: str = "label") -> np.ndarray:
    """Read the inputs of ``predict``: a .npy array, a .npz with ``X``, or a CSV.

    Parameters
    ----------
    path : str or pathlib.Path
        The input file. A CSV's label column, if present, is ignored.
    label_column : str
        Name of a CSV column to leave out of the features.

    Returns
    -------
    numpy.ndarray or scipy.sparse matrix of shape (n_samples, n_features)
        Sparse for a ``scipy.sparse.save_npz`` file.
    """
    p = Path(path)
    if not p.is_file():
        raise CLIError(f"{p} does not exist" if not p.exists() else f"{p} is not a file")
    suffix = p.suffix.lower()
    if suffix == ".npy":
        try:
            X = np.load(p, allow_pickle=False)
        except ValueError as exc:
            raise CLIError(f"{p} is not a valid .npy array ({exc})") from None
    elif suffix == ".npz":
        X, _ = _read_npz(p, need_labels=False)
    elif suffix == ".csv":
        X, _ = _read_csv(p, label_column, need_labels=False)
    else:
        raise CLIError(f"{p}: unknown input format {suffix!r}; expected .npy, .npz or .csv")
    return _check_arrays(p, X, None)[0]


def _check_features(model: Any, X: np.ndarray, source: str) -> None:
    if X.shape[1] != model.n_features_in_:
        raise CLIError(
            f"the model expects {model.n_features_in_} features per sample, but {source} has "
            f"{X.shape[1]}"
        )


def _load_model(path: str) -> Any:
    import fastmlp

    if not Path(path).exists():
        raise CLIError(f"model file {path} does not exist")
    return fastmlp.load(path)


def _one_label(model: Any) -> bool:
    """True for a classifier of one label per sample (an int8 model is one)."""
    return not (model.is_regressor or getattr(model, "is_multilabel", False))


# --------------------------------------------------------------------------- reports


def _pyplot() -> Any:
    """matplotlib.pyplot with the Agg backend, or a CLIError saying how to install it."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise CLIError(
            "--report needs matplotlib, which is not installed: pip install matplotlib"
        ) from None
    return plt


def _report_dir(path: str) -> Path:
    directory = Path(path)
    if directory.exists() and not directory.is_dir():
        raise CLIError(f"--report {directory}: exists and is not a directory")
    directory.mkdir(parents=True, exist_ok=True)
    return directory


def plot_learning_curves(plt: Any, history: dict, out: Path) -> None:
    """Write loss and accuracy (a regressor has none) per epoch, train and, if any,
    validation, to ``out``."""
    from matplotlib.ticker import MaxNLocator

    names = ("loss", "accuracy") if "accuracy" in history else ("loss",)
    fig, axes = plt.subplots(1, len(names), figsize=(5 * len(names), 4), squeeze=False)
    epochs = history["epoch"]
    for ax, name in zip(axes[0], names):
        ax.plot(epochs, history[name], "o-", label="train")
        if history.get(f"val_{name}"):
            ax.plot(epochs, history[f"val_{name}"], "s--", label="validation")
    for ax, name in zip(axes[0], names):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel("epoch")
        ax.set_ylabel(name)
        ax.set_title(name.capitalize())
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)


def plot_confusion_matrix(plt: Any, cm: np.ndarray, classes: np.ndarray, out: Path) -> None:
    """Write the confusion matrix (rows: true class, columns: predicted) to ``out``."""
    k = len(classes)
    size = max(4.0, min(12.0, 0.6 * k + 2))
    fig, ax = plt.subplots(figsize=(size, size))
    image = ax.imshow(cm, cmap="Blues")
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
    names = [str(c) for c in classes]
    ax.set_xticks(range(k), names, rotation=90 if k > 10 else 0)
    ax.set_yticks(range(k), names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title("Confusion matrix")
    if k <= 20:
        threshold = cm.max() / 2 if cm.size else 0
        for i in range(k):
            for j in range(k):
                ax.text(
                    j,
                    i,
                    str(cm[i, j]),
                    ha="center",
                    va="center",
                    fontsize=8,
                    color="white" if cm[i, j] > threshold else "black",
                )
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)


def plot_confident_errors(
    plt: Any,
    X: np.ndarray,
    y: np.ndarray,
    pred: np.ndarray,
    confidence: np.ndarray,
    out: Path,
    n: int = 16,
) -> None:
    """Write a grid of the most confidently misclassified images to ``out``."""
    side = math.isqrt(X.shape[1])
    wrong = np.flatnonzero(pred != y)
    wrong = wrong[np.argsort(-confidence[wrong], kind="stable")][:n]
    cols = 4
    rows = max(1, math.ceil(len(wrong) / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(2.2 * cols, 2.4 * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, i in zip(axes.flat, wrong):
        ax.imshow(X[i].reshape(side, side), cmap="gray_r")
        ax.set_title(f"{y[i]} → {pred[i]} ({confidence[i]:.2f})", fontsize=9)
    if len(wrong) == 0:
        axes[0, 0].text(0, 0.5, "no misclassified samples", fontsize=12)
    fig.suptitle("Most confident errors: true → predicted (p)")
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)


# --------------------------------------------------------------------------- commands


def _print_epoch(figures: dict, total: int, n_train: int) -> None:
    line = f"epoch {figures['epoch']}/{total}  loss {figures['loss']:.4f}"
    if "accuracy" in figures:
        line += f"  accuracy {100 * figures['accuracy']:.2f}%"
    if "val_accuracy" in figures:
        line += f"  val_accuracy {100 * figures['val_accuracy']:.2f}%"
    elif "val_loss" in figures:  # a regressor
        line += f"  val_loss {figures['val_loss']:.4f}"
    seconds = figures["seconds"]
    rate = n_train / seconds if seconds > 0 else math.inf
    print(line + f"  {rate:,.0f} samples/s", flush=True)


def _targets(y: np.ndarray, source: str) -> np.ndarray:
    """A regressor's targets as numbers (a CSV's label column is read as text)."""
    if y.dtype.kind not in "US":
        return y
    try:
        return y.astype(np.float64)
    except ValueError:
        bad = next(str(v) for v in y.ravel() if not _is_float(str(v)))
        raise CLIError(
            f"{source}: target {bad!r} is not a number; a regression --loss needs numeric targets"
        ) from None


def _outputs(y: np.ndarray, loss: str | None) -> tuple[int, str]:
    """Output count and its description (for the line printed before training)."""
    from fastmlp._network import REGRESSION_LOSSES

    if loss in REGRESSION_LOSSES:
        k = 1 if y.ndim == 1 else y.shape[1]
        return k, f"{k} target{'s' if k > 1 else ''} ({loss} regression)"
    if y.ndim == 2:  # fastmlp.train: a 2-D y of a classifier is multilabel
        return y.shape[1], f"{y.shape[1]} labels (multilabel)"
    k = len(np.unique(y))
    return k, f"{k} classes"


def cmd_train(args: argparse.Namespace) -> int:
    """``train``: fit a model on DATA and save it to ``--out``."""
    import fastmlp
    from fastmlp._network import REGRESSION_LOSSES

    plt = _pyplot() if args.report else None  # fail before training, not after
    report = _report_dir(args.report) if args.report else None
    out = _model_out(args.out)
    options = _train_options(args)
    regressor = options.get("loss") in REGRESSION_LOSSES
    X, y, _ = load_data(
        args.data, command="train", label_column=args.label_column, multi_output=True
    )
    if regressor:
        y = _targets(y, args.data)
    if args.validation_data is not None:
        # IDX: the t10k-* split if present, as evaluate reads it.
        X_val, y_val, _ = load_data(
            args.validation_data,
            command="evaluate",
            label_column=args.label_column,
            multi_output=True,
        )
        if regressor:
            y_val = _targets(y_val, args.validation_data)
        options["validation_data"] = (X_val, y_val)
        n_val, n_train = X_val.shape[0], X.shape[0]
    else:
        n_val = int(round(args.validation_split * X.shape[0])) if args.validation_split else 0
        n_train = X.shape[0] - n_val
    k, outputs = _outputs(y, options.get("loss"))
    sparse = " (sparse)" if scipy.sparse.issparse(X) else ""
    print(
        f"training on {n_train} samples ({n_val} for validation), {X.shape[1]} features"
        f"{sparse}, {outputs}; layers {X.shape[1]}-"
        + "".join(f"{h}-" for h in args.hidden)
        + f"{k}",
        flush=True,
    )

    def progress(figures: dict) -> None:
        _print_epoch(figures, args.epochs, n_train)

    tic = time.perf_counter()
    # fastmlp.train checks every option: its ValueError is the one-line error.
    model = fastmlp.train(X, y, n_threads=args.threads, callbacks=[progress], **options)
    elapsed = time.perf_counter() - tic
    fastmlp.save(model, out)
    h = model.history
    final = f"final: loss {h['loss'][-1]:.4f}"
    if h.get("accuracy"):
        final += f"  accuracy {100 * h['accuracy'][-1]:.2f}%"
    if h.get("val_loss"):
        final += f"  val_loss {h['val_loss'][-1]:.4f}"
    if h.get("val_accuracy"):
        final += f"  val_accuracy {100 * h['val_accuracy'][-1]:.2f}%"
    print(final + f"  time {elapsed:.2f} s")
    print(f"model saved to {out}")
    if report is not None:
        target = report / "learning_curves.png"
        plot_learning_curves(plt, h, target)
        print(f"learning curves written to {target}")
    return 0


def confusion_matrix(codes_true: np.ndarray, codes_pred: np.ndarray, k: int) -> np.ndarray:
    """Counts ``cm[i, j]`` of samples of class i predicted as class j."""
    return np.bincount(codes_true * k + codes_pred, minlength=k * k).reshape(k, k)


def format_table(cm: np.ndarray, classes: np.ndarray) -> str:
    """The confusion matrix as a text table: rows true classes, columns predictions."""
    names = [str(c) for c in classes]
    width = max(max(len(n) for n in names), len(str(int(cm.max()))) if cm.size else 1, 4)
    corner = "true\\pred"
    first = max(len(corner), width)
    lines = [corner.rjust(first) + " " + " ".join(n.rjust(width) for n in names)]
    for name, row in zip(names, cm):
        lines.append(name.rjust(first) + " " + " ".join(str(v).rjust(width) for v in row))
    return "\n".join(lines)


def _encode(labels: np.ndarray, classes: np.ndarray, source: str) -> np.ndarray:
    """Positions of ``labels`` in ``classes``; unknown labels are a CLIError.

    Labels are matched by value, or by their text when one side is numeric and the other
    text (a CSV of "3"s against a model trained on the integer 3).
    """
    uniques, inverse = np.unique(labels, return_inverse=True)
    by_value = {c.item(): i for i, c in enumerate(classes)}
    by_text = {str(c): i for i, c in enumerate(classes)}
    positions = []
    for u in uniques:
        hit = by_value.get(u.item(), by_text.get(str(u)))
        if hit is None:
            known = ", ".join(map(str, classes[:10]))
            raise CLIError(
                f"{source} has label {u!s}, which the model does not know (classes: {known})"
            )
        positions.append(hit)
    return np.asarray(positions, dtype=np.intp)[inverse.reshape(-1)]


def cmd_evaluate(args: argparse.Namespace) -> int:
    """``evaluate``: accuracy, per-class accuracy and confusion matrix of a model on DATA."""
    model = _load_model(args.model)
    if not _one_label(model):
        return _evaluate_outputs(model, args)
    plt = _pyplot() if args.report else None
    report = _report_dir(args.report) if args.report else None
    X, y, is_image = load_data(args.data, command="evaluate", label_column=args.label_column)
    _check_features(model, X, args.data)
    classes = model.classes_
    codes = _encode(y, classes, args.data)
    scores = model.decision_function(X, n_threads=args.threads)
    pred_codes = scores.argmax(axis=1)
    k = len(classes)
    cm = confusion_matrix(codes, pred_codes, k)
    accuracy = float(np.mean(pred_codes == codes))
    print(f"samples: {X.shape[0]}")
    print(f"accuracy: {100 * accuracy:.2f}%")
    print("per-class accuracy:")
    support = cm.sum(axis=1)
    for c, name in enumerate(classes):
        if support[c]:
            print(f"  {str(name):>8}: {100 * cm[c, c] / support[c]:6.2f}%  ({support[c]} samples)")
        else:
            print(f"  {str(name):>8}:    n/a  (0 samples)")
    print("confusion matrix (rows: true, columns: predicted):")
    print(format_table(cm, classes))
    if report is not None:
        target = report / "confusion_matrix.png"
        plot_confusion_matrix(plt, cm, classes, target)
        print(f"confusion matrix written to {target}")
        side = math.isqrt(X.shape[1])
        square = side * side == X.shape[1] and (is_image or side >= 8)
        if square and not scipy.sparse.issparse(X):
            if model.loss == "cross_entropy":
                proba = model.predict_proba(X, n_threads=args.threads)
            else:
                proba = scores
            confidence = proba[np.arange(X.shape[0]), pred_codes]
            target = report / "most_confident_errors.png"
            plot_confident_errors(plt, X, classes[codes], classes[pred_codes], confidence, target)
            print(f"most confident errors written to {target}")
    return 0


def _evaluate_outputs(model: Any, args: argparse.Namespace) -> int:
    """``evaluate`` of a regressor (R^2, and per output the mean absolute and root mean
    squared error) or a multilabel classifier (subset accuracy, and per label accuracy)."""
    kind = "a regressor" if model.is_regressor else "a multilabel classifier"
    if args.report:
        raise CLIError(
            f"--report draws a confusion matrix, for classifiers of one label per sample; "
            f"{args.model} holds {kind}"
        )
    X, y, _ = load_data(
        args.data, command="evaluate", label_column=args.label_column, multi_output=True
    )
    _check_features(model, X, args.data)
    if model.is_regressor:
        y = _targets(y, args.data)
    from fastmlp._validation import check_targets
    from fastmlp.model import check_multilabel, r2_score

    # y checked as MLP.score checks it; one forward pass gives the score and the errors.
    k = model.layer_sizes[-1]
    f64 = np.dtype(np.float64)
    if model.is_regressor:
        Y = check_targets(y, X.shape[0], f64, k)
    else:
        Y = check_multilabel(y, X.shape[0], f64, k)
    out = np.asarray(model.predict(X, n_threads=args.threads), dtype=np.float64)
    out = out.reshape(Y.shape)
    if model.is_regressor:
        score = r2_score(Y, out, None)
    else:
        score = float(np.mean(np.all(out == Y, axis=1)))
    print(f"samples: {X.shape[0]}")
    if model.is_regressor:
        print(f"R^2: {score:.6g}")
        print("per output: mean absolute error, root mean squared error")
        for j in range(k):
            d = out[:, j] - Y[:, j]
            print(f"  {j:>8}: {np.mean(np.abs(d)):.6g}, {np.sqrt(np.mean(d * d)):.6g}")
    else:
        print(f"subset accuracy (every label right): {100 * score:.2f}%")
        print("per-label accuracy:")
        for j, name in enumerate(model.classes_):
            print(f"  {str(name):>8}: {100 * np.mean(out[:, j] == Y[:, j]):6.2f}%")
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    """``predict``: per input row, a classifier's label (and optionally the class
    probabilities), a regressor's outputs, or a multilabel classifier's 0/1 labels (and
    optionally their probabilities)."""
    model = _load_model(args.model)
    if args.proba and model.is_regressor:
        raise CLIError(f"--proba: {args.model} holds a regressor, which has no probabilities")
    X = load_features(args.input, label_column=args.label_column)
    _check_features(model, X, args.input)
    pred = model.predict(X, n_threads=args.threads)
    proba = model.predict_proba(X, n_threads=args.threads) if args.proba else None
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    if _one_label(model):
        header, rows = ["label"], [[str(label)] for label in pred]
    elif model.is_regressor:
        pred = pred.reshape(len(pred), -1)
        k = pred.shape[1]
        header = ["y"] if k == 1 else [f"y_{j}" for j in range(k)]
        rows = [[f"{v:.9g}" for v in row] for row in pred]
    else:
        header = [f"label_{c}" for c in model.classes_]
        rows = [[str(int(v)) for v in row] for row in pred]
    if proba is not None:
        header += [f"p_{c}" for c in model.classes_]
        rows = [row + [f"{p:.6g}" for p in ps] for row, ps in zip(rows, proba)]
    writer.writerow(header)
    writer.writerows(rows)
    if args.out:
        out = Path(args.out)
        if not out.parent.is_dir():
            raise CLIError(f"--out {out}: directory {out.parent} does not exist")
        out.write_text(buf.getvalue(), encoding="utf-8")
        print(f"{len(rows)} predictions written to {out}", file=sys.stderr)
    else:
        sys.stdout.write(buf.getvalue())
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    """``export``: write a model (classifier or regressor) as standalone C to ``--c DIR``."""
    import fastmlp
    from fastmlp.export_c import check_c_name

    check_c_name(args.name)  # before reading the model or creating DIR
    if not Path(args.model).exists():
        raise CLIError(f"model file {args.model} does not exist")
    model = fastmlp.load(args.model)
    directory = Path(args.c)
    if directory.exists() and not directory.is_dir():
        raise CLIError(f"--c {directory}: exists and is not a directory")
    directory.mkdir(parents=True, exist_ok=True)
    # MLP.to_c, or QuantizedMLP.to_c for an int8 model (fastmlp quantize).
    header, source = model.to_c(directory, args.name)
    sizes = "-".join(str(s) for s in model.layer_sizes)
    kind = "regressor" if model.is_regressor else "classifier"
    if isinstance(model, fastmlp.QuantizedMLP):
        kind = "int8 classifier"
    print(f"{sizes} {kind} written to {header} and {source}")
    print(f"build: cc -std=c99 -O3 -march=native -c {source} (link with -lm)")
    return 0


def plot_accuracy_change(plt: Any, report: dict, out: Path) -> None:
    """Write a bar chart of the per-class accuracy change (int8 - float, points) to ``out``."""
    classes = report["classes"]
    change = [
        100 * (i - f) if n else 0.0
        for f, i, n in zip(
            report["per_class_float_accuracy"],
            report["per_class_int8_accuracy"],
            report["per_class_support"],
        )
    ]
    fig, ax = plt.subplots(figsize=(max(5.0, min(14.0, 0.5 * len(classes) + 2)), 4))
    colors = ["tab:red" if c < 0 else "tab:green" for c in change]
    ax.bar(range(len(classes)), change, color=colors)
    ax.axhline(0, color="black", linewidth=0.8)
    ax.set_xticks(range(len(classes)), classes, rotation=90 if len(classes) > 10 else 0)
    ax.set_xlabel("class")
    ax.set_ylabel("accuracy change (points)")
    ax.set_title(
        f"int8 - float accuracy per class (overall {report['accuracy_change']:+.2f} points)"
    )
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)


def _model_out(path: str) -> Path:
    """``--out``, checked before any work as saving will check it."""
    from fastmlp.persistence import check_save_path

    try:
        check_save_path(path)
    except OSError as exc:
        raise CLIError(f"--out {path}: {exc.strerror}") from None
    return Path(path)


def cmd_quantize(args: argparse.Namespace) -> int:
    """``quantize``: an int8 copy of a classifier, calibrated and evaluated on DATA."""
    import fastmlp

    plt = _pyplot() if args.report else None  # fail before the work, not after
    if args.report and Path(args.report).is_dir():
        raise CLIError(f"--report {args.report}: is a directory; give a .png file name")
    if args.report and not Path(args.report).parent.is_dir():
        raise CLIError(
            f"--report {args.report}: directory {Path(args.report).parent} does not exist"
        )
    _model_out(args.out)
    if not Path(args.model).exists():
        raise CLIError(f"model file {args.model} does not exist")
    model = fastmlp.load(args.model)
    if isinstance(model, fastmlp.QuantizedMLP):
        raise CLIError(f"{args.model} is already an int8 model; quantize its float model")
    X, y, _ = load_data(args.data, command="evaluate", label_column=args.label_column)
    if scipy.sparse.issparse(X):
        raise CLIError(f"{args.data} holds a sparse X; quantize calibrates on dense data")
    _check_features(model, X, args.data)
    labels = model.classes_[_encode(y, model.classes_, args.data)] if not model.is_regressor else y
    # Calibration rows: a fixed random sample of DATA (no labels are used).
    rng = np.random.default_rng(0)
    n_cal = min(args.calibration_rows, X.shape[0])
    calibration = X[np.sort(rng.choice(X.shape[0], n_cal, replace=False))]
    model.n_threads = args.threads
    q = fastmlp.quantize(model, calibration, validation_data=(X, labels))
    q.save(args.out)
    print(f"calibrated on {n_cal} rows of {args.data}, evaluated on all {X.shape[0]}")
    print(q.report)
    print(f"int8 model saved to {args.out}")
    if args.report:
        plot_accuracy_change(plt, q.report, Path(args.report))
        print(f"per-class accuracy change written to {args.report}")
    return 0


# --------------------------------------------------------------------------- parser


def _hidden(text: str) -> tuple[int, ...]:
    """Parse ``--hidden 128,64`` (an empty string or "none" means no hidden layer)."""
    if text.strip().lower() in ("", "none"):
        return ()
    try:
        widths = tuple(int(part) for part in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated layer widths such as 128,64; got {text!r}"
        ) from None
    if any(w <= 0 for w in widths):
        raise argparse.ArgumentTypeError(f"layer widths must be positive; got {text!r}")
    return widths


def _positive_int(text: str) -> int:
    return _int_at_least(text, 1, "a positive integer")


def _seed(text: str) -> int:
    return _int_at_least(text, 0, "an integer >= 0")


def _int_at_least(text: str, minimum: int, what: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {what}; got {text!r}") from None
    if value < minimum:
        raise argparse.ArgumentTypeError(f"expected {what}; got {text!r}")
    return value


def _fraction(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number in [0, 1); got {text!r}") from None
    if not 0.0 <= value < 1.0:
        raise argparse.ArgumentTypeError(f"expected a number in [0, 1); got {text!r}")
    return value


def _non_negative(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number; got {text!r}") from None
    if not value >= 0.0 or math.isinf(value):
        raise argparse.ArgumentTypeError(f"expected a finite number >= 0; got {text!r}")
    return value


def _activation(text: str) -> str | tuple[str, ...]:
    """Parse ``--activation relu`` (every hidden layer) or ``relu,tanh`` (one per layer)."""
    names = tuple(part.strip() for part in text.split(","))
    return names[0] if len(names) == 1 else names


def _train_option_specs() -> tuple[tuple[str, dict], ...]:
    """The train command's options that go to :func:`fastmlp.train` as they are.

    Each is ``(flag, add_argument settings)``; the keyword is the flag's name with "_"
    for "-". An option left at None is not passed, so train's own default applies, and
    train checks every value (its ValueError becomes the one-line error). Exposing one
    more train keyword is one more entry here.
    """
    from fastmlp._network import (
        HIDDEN_ACTIVATIONS,
        LOSSES,
        MULTILABEL_LOSS,
        NORMALIZATIONS,
        REGRESSION_LOSSES,
    )
    from fastmlp._trainer import OPTIMIZERS

    losses = [name for name in LOSSES if name != MULTILABEL_LOSS]  # that one: a 2-D y
    return (
        ("--hidden", {"type": _hidden, "default": (128, 64), "metavar": "W1,W2,...",
                      "help": 'hidden layer widths, comma-separated; "none" for no hidden '
                      "layer (default: 128,64)"}),
        ("--activation", {"type": _activation, "metavar": "NAME[,NAME...]",
                          "help": "activation of the hidden layers, one of "
                          f"{', '.join(HIDDEN_ACTIVATIONS)}: one name for all, or one per "
                          "hidden layer, comma-separated (default: relu)"}),
        ("--normalization", {"choices": list(NORMALIZATIONS), "metavar": "KIND",
                             "help": f"{', '.join(NORMALIZATIONS)}: a normalization between "
                             "each hidden layer's Linear part and its activation (layer: "
                             "LayerNorm, batch: BatchNorm; default: none)"}),
        ("--loss", {"choices": losses, "metavar": "LOSS",
                    "help": "cross_entropy (default) or mse train a classifier; "
                    f"{', '.join(REGRESSION_LOSSES)} a regressor on numeric targets "
                    "(poisson: counts >= 0). A 2-D 0/1 y in a .npz trains a multilabel "
                    "classifier (binary cross-entropy)"}),
        ("--delta", {"type": float,
                     "help": "threshold of --loss huber: squared error within it, linear "
                     "beyond (default: 1)"}),
        ("--optimizer", {"choices": list(OPTIMIZERS), "metavar": "NAME",
                         "help": f"{', '.join(OPTIMIZERS)} (default: adam)"}),
        ("--epochs", {"type": _positive_int, "default": 10,
                      "help": "passes over the data (default: 10)"}),
        ("--batch-size", {"type": _positive_int, "default": 128, "metavar": "N",
                          "help": "samples per mini-batch (default: 128)"}),
        ("--lr", {"type": float, "default": 1e-3,
                  "help": "learning rate of the optimizer (default: 1e-3)"}),
        ("--lr-schedule", {"choices": ["cosine", "warmup_cosine"],
                           "help": "learning-rate schedule: cosine anneals from --lr towards "
                           "0 per epoch; warmup_cosine warms up from 0.1 --lr over half an "
                           "epoch, then anneals to 0 per mini-batch (default: constant)"}),
        ("--weight-decay", {"type": float, "metavar": "DECAY",
                            "help": "decoupled weight decay of --optimizer adamw, as "
                            "torch.optim.AdamW (default with adamw: 0.01)"}),
        ("--dropout", {"type": _fraction, "default": 0.0, "metavar": "RATE",
                       "help": "dropout rate of the hidden layers during training, in "
                       "[0, 1) (default: 0)"}),
        ("--l2", {"type": _non_negative, "default": 0.0, "metavar": "LAMBDA",
                  "help": "L2 penalty 0.5*LAMBDA*sum(W^2) on the weights (default: 0)"}),
        ("--label-smoothing", {"type": float, "metavar": "S",
                               "help": "cross-entropy against (1 - S) onehot(y) + S / "
                               "n_classes, in [0, 1) (default: 0)"}),
        ("--seed", {"type": _seed,
                    "help": "random seed, for reproducible training (default: unseeded)"}),
        ("--validation-split", {"type": _fraction, "default": 0.0, "metavar": "FRACTION",
                                "help": "fraction of DATA held out to validate on after "
                                "each epoch (default: 0)"}),
        ("--early-stopping", {"action": "store_true", "default": None,
                              "help": "stop once the validation loss has not improved for "
                              "--patience epochs, keeping the best epoch's weights (needs "
                              "--validation-split or --validation-data)"}),
        ("--patience", {"type": _positive_int, "metavar": "N",
                        "help": "epochs without improvement before --early-stopping stops "
                        "(default: 5)"}),
    )  # fmt: skip


def _train_options(args: argparse.Namespace) -> dict:
    """The keyword arguments of :func:`fastmlp.train` given on the command line."""
    options = {}
    for flag, _ in _train_option_specs():
        keyword = flag[2:].replace("-", "_")
        if getattr(args, keyword) is not None:
            options[keyword] = getattr(args, keyword)
    return options


_DATA_HELP = (
    "an IDX directory in the MNIST layout ({split} files), a .npz with arrays X and y (or "
    "a scipy.sparse.save_npz file of X with an array y added), or a CSV file with a header "
    "line and a label column"
)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``python -m fastmlp``."""
    parser = argparse.ArgumentParser(
        prog="python -m fastmlp",
        description="Train, evaluate and apply fastmlp multi-layer perceptrons.",
    )
    from fastmlp import __version__

    parser.add_argument("--version", action="version", version=f"fastmlp {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--threads",
        type=_positive_int,
        default=None,
        metavar="N",
        help="threads to use (default: all the cores OpenMP offers)",
    )
    common.add_argument(
        "--label-column",
        default="label",
        metavar="NAME",
        help="name of the CSV column holding the labels; the other columns are features "
        "(default: %(default)s)",
    )

    train = sub.add_parser(
        "train",
        parents=[common],
        help="train a model and save it",
        description="Train an MLP classifier (or, with a regression --loss, a regressor) on "
        "DATA, printing one line per epoch, and save it.",
    )
    train.add_argument("data", metavar="DATA", help=_DATA_HELP.format(split="train-*"))
    options = train.add_argument_group(
        "training options", "passed to fastmlp.train, which checks them (see its docstring)"
    )
    for flag, settings in _train_option_specs():
        options.add_argument(flag, **settings)
    train.add_argument(
        "--validation-data",
        metavar="DATA",
        default=None,
        help="a validation set of your own, in a DATA format (an IDX directory's "
        "t10k-* files if present), scored after each epoch; instead of --validation-split",
    )
    train.add_argument(
        "--out",
        required=True,
        metavar="MODEL.npz",
        help="where to save the trained model (fastmlp.save format)",
    )
    train.add_argument(
        "--report",
        metavar="DIR",
        default=None,
        help="write DIR/learning_curves.png (needs matplotlib)",
    )
    train.set_defaults(func=cmd_train)

    evaluate = sub.add_parser(
        "evaluate",
        parents=[common],
        help="accuracy and confusion matrix of a model on labelled data",
        description="Print the accuracy, per-class accuracy and confusion matrix of a "
        "classifier; for a regressor R^2 and each output's errors, for a multilabel "
        "classifier the subset accuracy and each label's accuracy.",
    )
    evaluate.add_argument("model", metavar="MODEL.npz", help="a model saved by train")
    evaluate.add_argument(
        "data", metavar="DATA", help=_DATA_HELP.format(split="t10k-* if present, else train-*")
    )
    evaluate.add_argument(
        "--report",
        metavar="DIR",
        default=None,
        help="write DIR/confusion_matrix.png and, for square images, "
        "DIR/most_confident_errors.png (needs matplotlib)",
    )
    evaluate.set_defaults(func=cmd_evaluate)

    predict = sub.add_parser(
        "predict",
        parents=[common],
        help="predict the label (or a regressor's outputs) of each input row",
        description="Print (or write as CSV) the prediction for each row of INPUT: a "
        "classifier's label (column label), a regressor's outputs (y, or y_0, y_1, ...), a "
        "multilabel classifier's 0/1 labels (label_0, label_1, ...).",
    )
    predict.add_argument("model", metavar="MODEL.npz", help="a model saved by train")
    predict.add_argument(
        "input",
        metavar="INPUT",
        help="features: a .npy array, a .npz with an array X, or a CSV with a header "
        "(its label column, if any, is ignored)",
    )
    predict.add_argument(
        "--proba",
        action="store_true",
        help="also give the probability of every class (or label): p_CLASS columns",
    )
    predict.add_argument(
        "--out",
        metavar="FILE.csv",
        default=None,
        help="write the predictions to this CSV file instead of standard output",
    )
    predict.set_defaults(func=cmd_predict)

    export = sub.add_parser(
        "export",
        help="write a model as standalone C",
        description="Write MODEL as C99 source with no dependencies (NAME.h and NAME.c in "
        "DIR): the weights as constants and the prediction functions (for a classifier "
        "NAME_predict_proba, or NAME_decision_function if trained with squared error, and "
        "NAME_predict; for a regressor NAME_predict). Existing files are replaced atomically.",
    )
    export.add_argument(
        "model", metavar="MODEL.npz", help="a model saved by train or fastmlp.save"
    )
    export.add_argument(
        "--c",
        required=True,
        metavar="DIR",
        help="directory to write NAME.h and NAME.c to (created if missing)",
    )
    export.add_argument(
        "--name",
        default="model",
        help="prefix of the files, functions and macros; a C identifier (default: %(default)s)",
    )
    export.set_defaults(func=cmd_export)

    quantize = sub.add_parser(
        "quantize",
        parents=[common],
        help="quantize a classifier to int8 and report what it costs",
        description="Quantize MODEL to int8 (weights per output channel, activations "
        "calibrated on a sample of DATA), print the report (float and int8 accuracy on DATA, "
        "top-1 agreement, largest probability difference, file sizes) and save the int8 "
        "model, which evaluate, predict and export read like any model.",
    )
    quantize.add_argument("model", metavar="MODEL.npz", help="a classifier saved by train")
    quantize.add_argument(
        "data", metavar="DATA", help=_DATA_HELP.format(split="t10k-* if present, else train-*")
    )
    quantize.add_argument(
        "--out", required=True, metavar="INT8.npz", help="where to save the int8 model"
    )
    quantize.add_argument(
        "--calibration-rows",
        type=_positive_int,
        default=2000,
        metavar="N",
        help="rows of DATA (a fixed random sample) that set the activation ranges "
        "(default: %(default)s; at least 32)",
    )
    quantize.add_argument(
        "--report",
        metavar="PNG",
        default=None,
        help="write a bar chart of the per-class accuracy change to this PNG (needs matplotlib)",
    )
    quantize.set_defaults(func=cmd_quantize)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line.

    Parameters
    ----------
    argv : sequence of str, optional
        Arguments without the program name; default ``sys.argv[1:]``.

    Returns
    -------
    int
        The exit status: 0 on success, 2 on a usage or input error (with a one-line
        message on stderr), 130 if interrupted.
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except CLIError as exc:
        message = str(exc)
    except _USER_ERRORS as exc:
        message = str(exc) or type(exc).__name__
        if isinstance(exc, FileNotFoundError) and exc.filename:
            message = f"{exc.filename} does not exist"
    except KeyboardInterrupt:
        print("fastmlp: interrupted", file=sys.stderr)
        return 130
    message = " ".join(message.split())  # one line
    print(f"fastmlp {args.command}: error: {message}", file=sys.stderr)
    return EXIT_ERROR
