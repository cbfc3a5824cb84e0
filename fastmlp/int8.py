"""int8 models: :func:`quantize` a trained classifier, predict, save, report, export as C.

Weights are int8 per output channel (symmetric: ``W[:, j] ~ W_q[:, j] * w_scale[j]``,
``W_q`` in [-127, 127]); the activations entering each layer are 7-bit unsigned integers
(``x ~ scale * (q - zero_point)``, ``q`` in [0, 127]) with one scale per layer calibrated on
``X_calibration``: the first layer's input from its minimum and maximum (a zero point for
inputs that go negative), the hidden layers' from a high percentile of the float model's
ReLU outputs. Each layer sums in int32, exactly, then in float32 ``y = acc * mult + b``,
ReLU and requantization for the next layer, and the last layer's logits a softmax
(``csrc/fm_int8.h``; ``fastmlp.reference.quantized_forward`` is the specification).

7 bits, not 8: AVX2's ``vpmaddubsw`` adds pairs of uint8 x int8 products into a saturating
int16, and ``2 * 127 * 127`` fits where ``2 * 255 * 127`` does not.

File format, version 1 (``QuantizedMLP.save``; :func:`fastmlp.load` reads it)
-----------------------------------------------------------------------------
A ``.npz`` of plain arrays, no pickle, as :mod:`fastmlp.persistence` writes its models:
``format`` (``"fastmlp-int8-model"``), ``version`` (int64, 1), ``meta`` (JSON:
``layer_sizes``, ``activation`` ``"relu"``, ``loss`` ``"cross_entropy"``, ``classes_kind``,
``classes_dtype``, ``input_zero_point``, ``source_dtype``, ``fastmlp_version``),
``classes``, ``input_scales`` (float32, one per layer) and per layer ``l`` = 1..L: ``W{l}``
(int8, fan_in x fan_out), ``w_scale{l}`` and ``b{l}`` (float32, fan_out). Every array is
checked against ``meta`` before it is read; a damaged file is a ValueError.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Sequence
from os import PathLike
from typing import Any

import numpy as np

from fastmlp import reference
from fastmlp._int8 import MAX_FAN_IN, QMAX, Int8Network
from fastmlp._network import LAYERS_LIMIT, WIDTH_LIMIT
from fastmlp._threads import forward_on_cores
from fastmlp._validation import check_labels, check_sample_weight, check_X, encode_labels
from fastmlp.model import MLP, fold_batch_norm
from fastmlp.persistence import INT8_MARKER

__all__ = ["QuantizedMLP", "QuantizationReport", "quantize", "MIN_CALIBRATION_ROWS"]

INT8_VERSION = 1
# Fewer rows than this do not show a layer's range of activations.
MIN_CALIBRATION_ROWS = 32
# The hidden layers' scale: this percentile of their (float) ReLU outputs on the
# calibration rows maps to 127; larger values saturate. On MNIST 784-256-128-10 it lost
# less accuracy than the maximum (one outlier stretches the maximum's scale).
DEFAULT_PERCENTILE = 99.99
# The largest float32, as a Python float: compared with float64 bounds, which a float32
# scalar would first round (and overflow) to its own type.
FLOAT32_MAX = float(np.finfo(np.float32).max)
META_KEYS = frozenset(
    {
        "layer_sizes",
        "activation",
        "loss",
        "classes_kind",
        "classes_dtype",
        "input_zero_point",
        "source_dtype",
        "fastmlp_version",
    }
)


# --------------------------------------------------------------------------- quantize


def quantize(
    model: MLP,
    X_calibration,
    *,
    validation_data: tuple | None = None,
    percentile: float = DEFAULT_PERCENTILE,
) -> QuantizedMLP:
    """An int8 copy of a trained classifier, calibrated on ``X_calibration``.

    Parameters
    ----------
    model : MLP
        A cross-entropy classifier with ReLU hidden layers (float32 or float64).
    X_calibration : array-like of shape (n_samples, n_features)
        Typical inputs, at least ``MIN_CALIBRATION_ROWS`` (32) rows, finite: a few thousand
        training rows are plenty. They set the range of each layer's activations.
    validation_data : (X, y), optional
        Labelled rows on which :attr:`QuantizedMLP.report` compares the float and int8
        models (accuracy, per-class accuracy, top-1 agreement, largest probability
        difference). Without it the report holds the file sizes only.
    percentile : float, default 99.99
        Percentile of each hidden layer's ReLU outputs that maps to the largest
        activation, 127; 100 takes the maximum.

    Returns
    -------
    QuantizedMLP
        With ``report`` filled in.

    Raises
    ------
    TypeError
        If ``model`` is not an :class:`MLP`.
    ValueError
        If the model is a regressor, not a ReLU cross-entropy classifier, or has a
        LayerNorm (``normalization="layer"``; a BatchNorm is folded into W and b), if
        ``X_calibration`` has the wrong width, NaN or infinity, or fewer than 32 rows, or
        if ``validation_data`` does not fit the model.
    """
    if not isinstance(model, MLP):
        raise TypeError(f"quantize() needs a fastmlp.MLP; got {type(model).__name__}")
    if model.is_regressor:
        raise ValueError(
            "int8 quantization is for classifiers; this model is a regressor "
            f"(loss={model.loss!r}). Keep the float model for regression."
        )
    if model.loss != "cross_entropy" or model.activation != "relu":
        raise ValueError(
            "int8 quantization supports cross-entropy classifiers with ReLU hidden layers; "
            f"this model has loss={model.loss!r}, activation={model.activation!r}"
        )
    if model.normalization == "layer":
        # Each LayerNorm needs its row's mean and spread in float between the int8 layers.
        raise ValueError(
            "int8 quantization does not support normalization='layer' yet; keep the float "
            "model (or train one without it, or with normalization='batch', to quantize)"
        )
    if max(model.layer_sizes[:-1]) > MAX_FAN_IN:
        raise ValueError(
            f"int8 layers take at most {MAX_FAN_IN} inputs (int32 sums must not overflow); "
            f"this model has layers {model.layer_sizes}"
        )
    if not 50.0 <= float(percentile) <= 100.0:
        raise ValueError(f"percentile must lie in [50, 100]; got {percentile!r}")
    X = check_X(X_calibration, np.dtype(np.float64), model.n_features_in_, name="X_calibration")
    if X.shape[0] < MIN_CALIBRATION_ROWS:
        raise ValueError(
            f"X_calibration has {X.shape[0]} rows; calibration needs at least "
            f"{MIN_CALIBRATION_ROWS} (a few thousand typical inputs are best)"
        )
    weights = [np.asarray(W, dtype=np.float64) for W in model.weights]
    biases = [np.asarray(b, dtype=np.float64) for b in model.biases]
    # BatchNorm with its running statistics is an affine map per unit: folded into W and
    # b, the int8 layers are those of a plain network that predicts the same.
    for i, bn in enumerate(
        zip(model.norm_weights, model.norm_biases, model.running_means, model.running_vars)
    ):
        weights[i], biases[i] = fold_batch_norm(weights[i], biases[i], *bn)
    if not all(np.isfinite(W).all() and np.isfinite(b).all() for W, b in zip(weights, biases)):
        raise ValueError("the model's parameters contain NaN or infinity; cannot quantize it")

    # The first layer's input: [min, max] onto [0, 127], with a zero point if it goes
    # negative (pixels in [0, 1] get zero point 0, so their zeros stay 0 and are skipped).
    lo, hi = min(float(X.min()), 0.0), max(float(X.max()), 0.0)
    if hi == lo:
        scale0, zero_point = 1.0, 0
    else:
        scale0 = (hi - lo) / QMAX
        zero_point = int(np.clip(np.rint(-lo / scale0), 0, QMAX))
    scales = [scale0]
    acts = ["relu"] * (len(weights) - 1) + ["identity"]
    hidden = reference.forward(weights, biases, X, acts)[1:-1]
    for A in hidden:
        top = float(np.percentile(A, percentile)) if percentile < 100 else float(A.max())
        if top <= 0:  # percentile inside the zeros: fall back on the maximum
            top = float(A.max())
        scales.append(top / QMAX if top > 0 else 1.0)

    pairs = [reference.quantize_weights(W) for W in weights]
    q = QuantizedMLP(
        model.layer_sizes,
        model.classes_,
        [W_q for W_q, _ in pairs],
        [s for _, s in pairs],
        [b.astype(np.float32) for b in biases],
        np.asarray(scales, dtype=np.float32),
        zero_point,
        source_dtype=model.dtype.name,
        n_threads=model.n_threads,
    )
    q.report = _report(model, q, validation_data)
    return q


# --------------------------------------------------------------------------- model


class QuantizedMLP:
    """An int8 classifier made by :func:`quantize` (or read by :func:`fastmlp.load`).

    Predictions run in integer arithmetic (``csrc/fm_int8.h``), bitwise the same for any
    thread count; outputs are float32 whatever the float model's dtype was.

    Attributes
    ----------
    layer_sizes : tuple of int
    classes_ : ndarray
    report : QuantizationReport or None
        Set by :func:`quantize`; None for a model read from a file.
    n_threads : int or None
        Default thread count for prediction (None: all cores OpenMP offers).
    """

    is_regressor = False
    loss = "cross_entropy"
    activation = "relu"
    output_activation = "identity"
    dtype = np.dtype(np.float32)

    def __init__(
        self,
        layer_sizes: Sequence[int],
        classes,
        weights_q: Sequence[np.ndarray],
        weight_scales: Sequence[np.ndarray],
        biases: Sequence[np.ndarray],
        input_scales: np.ndarray,
        input_zero_point: int,
        *,
        source_dtype: str = "float32",
        n_threads: int | None = None,
    ) -> None:
        self.layer_sizes = tuple(int(s) for s in layer_sizes)
        self.classes_ = np.asarray(classes)
        self.weights_q = [np.ascontiguousarray(W, dtype=np.int8) for W in weights_q]
        self.weight_scales = [np.ascontiguousarray(s, dtype=np.float32) for s in weight_scales]
        self.biases = [np.ascontiguousarray(b, dtype=np.float32) for b in biases]
        self.input_scales = np.ascontiguousarray(input_scales, dtype=np.float32)
        self.input_zero_point = int(input_zero_point)
        self.source_dtype = source_dtype
        self.n_threads = n_threads
        self.report: QuantizationReport | None = None
        scales = self.input_scales.astype(np.float64)
        # The derived constants, as reference.quantized_forward computes them. One that
        # overflows float32 is refused below, with the layer named: no numpy warning here.
        with np.errstate(over="ignore"):
            mults = [
                (scales[i] * s.astype(np.float64)).astype(np.float32)
                for i, s in enumerate(self.weight_scales)
            ]
        offsets = [
            (-self.input_zero_point * W.sum(axis=0, dtype=np.int64)).astype(np.int32)
            if i == 0
            else np.zeros(W.shape[1], np.int32)
            for i, W in enumerate(self.weights_q)
        ]
        # Each layer's int8 inputs are bounded, so its float outputs are too: refuse
        # constants that could take them past float32 (NaN probabilities otherwise).
        for i, (m, b, W) in enumerate(zip(mults, self.biases, self.weights_q)):
            reach = 2.0 * W.shape[0] * QMAX * 127 * float(np.abs(m).max(initial=0))
            reach += float(np.abs(b).max(initial=0))
            if not reach < FLOAT32_MAX:
                raise ValueError(
                    f"layer {i + 1}'s outputs could reach {reach:.3g}, beyond float32: its "
                    "scales or biases are too large (did the float model diverge, or is the "
                    "file damaged?)"
                )
        inv = [float(np.float32(1.0 / s)) for s in scales]
        self._network = Int8Network(
            self.weights_q,
            offsets,
            mults,
            self.biases,
            inv[1:],
            inv[0],
            self.input_zero_point,
        )

    @property
    def n_features_in_(self) -> int:
        """Number of input features."""
        return self.layer_sizes[0]

    # -- prediction -------------------------------------------------------------------
    def _outputs(self, X, n_threads: int | None, softmax: bool) -> np.ndarray:
        out = self._network.outputs(X, softmax)  # a request ready as it stands
        if out is not None:
            return out
        if not (
            type(X) is np.ndarray
            and X.dtype == np.float32
            and X.ndim == 2
            and X.shape[0] > 0
            and X.shape[1] == self.layer_sizes[0]
            and X.flags.c_contiguous
        ):
            X = check_X(X, np.dtype(np.float32), self.layer_sizes[0], finite=False)
        out = np.empty((X.shape[0], self.layer_sizes[-1]), dtype=np.float32)
        threads = self.n_threads if n_threads is None else n_threads
        forward_on_cores(self._network, X, out, softmax=softmax, n_threads=threads)
        return out

    def predict_proba(self, X, *, n_threads: int | None = None) -> np.ndarray:
        """Class probabilities, float32 of shape (n_samples, n_classes)."""
        return self._outputs(X, n_threads, softmax=True)

    def decision_function(self, X, *, n_threads: int | None = None) -> np.ndarray:
        """Logits of the last layer, float32 of shape (n_samples, n_classes)."""
        return self._outputs(X, n_threads, softmax=False)

    def predict(self, X, *, n_threads: int | None = None) -> np.ndarray:
        """Predicted labels, from ``classes_``."""
        return self.classes_[self._outputs(X, n_threads, softmax=False).argmax(axis=1)]

    def score(self, X, y, sample_weight=None) -> float:
        """Mean accuracy on (X, y)."""
        X = check_X(X, np.dtype(np.float32), self.layer_sizes[0], finite=False)
        w = check_sample_weight(sample_weight, X.shape[0], np.dtype(np.float64))
        codes = encode_labels(check_labels(y, X.shape[0]), self.classes_)
        pred = self._outputs(X, None, softmax=False).argmax(axis=1)
        return float(np.average(pred == codes, weights=w))

    # -- saving, export ---------------------------------------------------------------
    def save(self, path: str | PathLike[str]) -> None:
        """Write the model to one ``.npz`` file, atomically; :func:`fastmlp.load` reads it.

        The format is described in :mod:`fastmlp.int8`.
        """
        from fastmlp.persistence import _write_atomically

        _write_atomically(os.fspath(path), _to_arrays(self))

    def to_c(self, directory: str | PathLike[str], name: str = "model") -> tuple[str, str]:
        """Write the model as standalone C99 in integer arithmetic, ``name.h`` and ``name.c``.

        See :func:`fastmlp.export_c_int8.to_c_int8`; returns the two paths written.
        """
        from fastmlp.export_c_int8 import to_c_int8

        return to_c_int8(self, directory, name)

    def _state(self) -> dict[str, Any]:
        return {
            "layer_sizes": self.layer_sizes,
            "classes": self.classes_,
            "weights_q": self.weights_q,
            "weight_scales": self.weight_scales,
            "biases": self.biases,
            "input_scales": self.input_scales,
            "input_zero_point": self.input_zero_point,
            "source_dtype": self.source_dtype,
            "n_threads": self.n_threads,
        }

    def __getstate__(self) -> dict[str, Any]:
        return self._state()

    def __setstate__(self, state: dict[str, Any]) -> None:
        state = dict(state)
        self.__init__(
            state.pop("layer_sizes"),
            state.pop("classes"),
            state.pop("weights_q"),
            state.pop("weight_scales"),
            state.pop("biases"),
            state.pop("input_scales"),
            state.pop("input_zero_point"),
            **state,
        )

    def __repr__(self) -> str:
        arch = "-".join(map(str, self.layer_sizes))
        return f"QuantizedMLP({arch}, int8, from {self.source_dtype})"


# --------------------------------------------------------------------------- report


class QuantizationReport(dict):
    """What quantization cost and saved: a dict that prints as a readable table.

    Keys: ``float_bytes``, ``int8_bytes`` (the saved files; the float model without its
    optimizer state), ``size_ratio``; with validation data also ``n_validation``,
    ``float_accuracy``, ``int8_accuracy``, ``accuracy_change`` (int8 - float, in
    percentage points), ``top1_agreement`` (fraction of rows where both predict the same
    class), ``max_proba_difference`` (the largest absolute difference of a probability),
    ``classes``, ``per_class_float_accuracy``, ``per_class_int8_accuracy`` and
    ``per_class_support``.
    """

    def __str__(self) -> str:
        lines = [
            f"file size: float {self['float_bytes']:,} bytes, int8 {self['int8_bytes']:,} "
            f"bytes ({self['size_ratio']:.2f}x smaller)"
        ]
        if "float_accuracy" not in self:
            lines.append("no validation data: accuracy not measured")
            return "\n".join(lines)
        lines += [
            f"validation rows: {self['n_validation']}",
            f"accuracy: float {100 * self['float_accuracy']:.2f}%, int8 "
            f"{100 * self['int8_accuracy']:.2f}% ({self['accuracy_change']:+.2f} points)",
            f"top-1 agreement: {100 * self['top1_agreement']:.2f}%",
            f"largest probability difference: {self['max_proba_difference']:.4f}",
            "per-class accuracy (float -> int8):",
        ]
        for c, f, i, n in zip(
            self["classes"],
            self["per_class_float_accuracy"],
            self["per_class_int8_accuracy"],
            self["per_class_support"],
        ):
            if n:
                lines.append(f"  {c:>8}: {100 * f:6.2f}% -> {100 * i:6.2f}%  ({n} rows)")
            else:
                lines.append(f"  {c:>8}:    n/a  (0 rows)")
        return "\n".join(lines)


def _report(model: MLP, q: QuantizedMLP, validation_data) -> QuantizationReport:
    with tempfile.TemporaryDirectory() as tmp:
        model.save(os.path.join(tmp, "float.npz"), optimizer_state=False)
        q.save(os.path.join(tmp, "int8.npz"))
        float_bytes = os.path.getsize(os.path.join(tmp, "float.npz"))
        int8_bytes = os.path.getsize(os.path.join(tmp, "int8.npz"))
    report = QuantizationReport(
        float_bytes=float_bytes, int8_bytes=int8_bytes, size_ratio=float_bytes / int8_bytes
    )
    if validation_data is None:
        return report
    try:
        X_val, y_val = validation_data
    except (TypeError, ValueError):
        raise ValueError("validation_data must be a pair (X, y)") from None
    X_val = check_X(X_val, model.dtype, model.n_features_in_, name="validation X")
    codes = encode_labels(check_labels(y_val, X_val.shape[0], "validation y"), model.classes_)
    p_float = model.predict_proba(X_val)
    p_int8 = q.predict_proba(X_val)
    pred_float, pred_int8 = p_float.argmax(axis=1), p_int8.argmax(axis=1)
    k = len(model.classes_)
    support = np.bincount(codes, minlength=k)
    with np.errstate(invalid="ignore", divide="ignore"):
        per_float = np.bincount(codes, pred_float == codes, minlength=k) / support
        per_int8 = np.bincount(codes, pred_int8 == codes, minlength=k) / support
    acc_float, acc_int8 = float(np.mean(pred_float == codes)), float(np.mean(pred_int8 == codes))
    report.update(
        n_validation=int(X_val.shape[0]),
        float_accuracy=acc_float,
        int8_accuracy=acc_int8,
        accuracy_change=100 * (acc_int8 - acc_float),
        top1_agreement=float(np.mean(pred_float == pred_int8)),
        max_proba_difference=float(np.abs(p_float.astype(np.float64) - p_int8).max()),
        classes=[str(c) for c in model.classes_],
        per_class_float_accuracy=[float(v) for v in per_float],
        per_class_int8_accuracy=[float(v) for v in per_int8],
        per_class_support=[int(v) for v in support],
    )
    return report


# --------------------------------------------------------------------------- files


def _to_arrays(q: QuantizedMLP) -> dict[str, np.ndarray]:
    from fastmlp import __version__
    from fastmlp.persistence import CLASS_KINDS, _storable_classes

    classes = _storable_classes(q.classes_)
    meta = {
        "layer_sizes": list(q.layer_sizes),
        "activation": "relu",
        "loss": "cross_entropy",
        "classes_kind": CLASS_KINDS[classes.dtype.kind],
        "classes_dtype": classes.dtype.str,
        "input_zero_point": q.input_zero_point,
        "source_dtype": q.source_dtype,
        "fastmlp_version": __version__,
    }
    arrays = {
        "format": np.array(INT8_MARKER),
        "version": np.array(INT8_VERSION, dtype=np.int64),
        "meta": np.array(json.dumps(meta)),
        "classes": classes,
        "input_scales": q.input_scales,
    }
    for i, (W, s, b) in enumerate(zip(q.weights_q, q.weight_scales, q.biases), start=1):
        arrays[f"W{i}"] = W
        arrays[f"w_scale{i}"] = s
        arrays[f"b{i}"] = b
    return arrays


def _read(reader) -> QuantizedMLP:
    """The int8 model in the file ``reader`` (a ``persistence._Reader``) has opened, every
    array checked first; problems raise ``reader.error`` (ValueError)."""
    from fastmlp.persistence import HEADER_ALLOWANCE, MAX_META_CHARS, _is_int

    if "version" not in reader.members:
        raise reader.error("the 'version' array is missing")
    version = int(reader._array("version", HEADER_ALLOWANCE + 8, "iu", ())[()])
    if version > INT8_VERSION:
        raise reader.error(
            f"written by a newer fastmlp (int8 format version {version}); this one reads up "
            f"to {INT8_VERSION}: upgrade fastmlp"
        )
    if version < 1:
        raise reader.error(f"invalid int8 format version {version}")
    raw = reader._array("meta", 4 * MAX_META_CHARS + HEADER_ALLOWANCE, "U", ())
    try:
        meta = json.loads(str(raw[()]))
    except (ValueError, RecursionError) as exc:
        raise reader.error(f"its metadata is not valid JSON ({exc})") from None
    if not isinstance(meta, dict) or meta.keys() != META_KEYS:
        got = sorted(meta) if isinstance(meta, dict) else type(meta).__name__
        raise reader.error(f"int8 metadata must have keys {sorted(META_KEYS)}; got {got}")
    sizes = meta["layer_sizes"]
    if (
        not isinstance(sizes, list)
        or not 2 <= len(sizes) <= LAYERS_LIMIT + 1
        or not all(_is_int(s) and 1 <= s <= WIDTH_LIMIT for s in sizes)
        or max(sizes[:-1]) > MAX_FAN_IN
    ):
        raise reader.error(f"layer_sizes must be 2 to {LAYERS_LIMIT + 1} positive ints; got "
                           f"{sizes!r:.200}")  # fmt: skip
    zp = meta["input_zero_point"]
    if not _is_int(zp) or not 0 <= zp <= QMAX:
        raise reader.error(f"input_zero_point must be an int in [0, {QMAX}]; got {zp!r:.50}")
    if (meta["activation"], meta["loss"]) != ("relu", "cross_entropy"):
        raise reader.error("an int8 model must be a ReLU cross-entropy classifier")
    if meta["source_dtype"] not in ("float32", "float64") or not isinstance(
        meta["fastmlp_version"], str
    ):
        raise reader.error("source_dtype must be 'float32' or 'float64'")
    L = len(sizes) - 1
    expected = {"format", "version", "meta", "classes", "input_scales"}
    expected |= {f"{key}{i}" for i in range(1, L + 1) for key in ("W", "w_scale", "b")}
    names = set(reader.members)
    if names != expected:
        raise reader.error(
            f"arrays missing: {sorted(expected - names)}, unexpected: {sorted(names - expected)}"
        )
    classes = reader._classes(meta, sizes[-1])
    f32 = np.dtype(np.float32)
    scales = reader._array("input_scales", 4 * L + HEADER_ALLOWANCE, "f", (L,), f32)
    if not (np.isfinite(scales).all() and (scales > 0).all()):
        raise reader.error("input_scales must be finite and positive")
    weights, w_scales, biases = [], [], []
    for i in range(1, L + 1):
        k, n = sizes[i - 1], sizes[i]
        W = reader._array(f"W{i}", k * n + HEADER_ALLOWANCE, "i", (k, n), np.dtype(np.int8))
        s = reader._array(f"w_scale{i}", 4 * n + HEADER_ALLOWANCE, "f", (n,), f32)
        b = reader._array(f"b{i}", 4 * n + HEADER_ALLOWANCE, "f", (n,), f32)
        if (W < -QMAX).any():
            raise reader.error(f"W{i} holds -128; int8 weights lie in [-127, 127]")
        if not (np.isfinite(s).all() and (s > 0).all() and np.isfinite(b).all()):
            raise reader.error(f"w_scale{i} or b{i} holds NaN, infinity or a scale <= 0")
        weights.append(W)
        w_scales.append(s)
        biases.append(b)
    try:
        return QuantizedMLP(
            sizes,
            classes,
            weights,
            w_scales,
            biases,
            scales,
            zp,
            source_dtype=meta["source_dtype"],
        )
    except ValueError as exc:  # constants whose outputs could pass float32
        raise reader.error(str(exc)) from None
