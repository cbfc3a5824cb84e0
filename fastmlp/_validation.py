"""Checks of user input, with errors that say what was wrong and how to fix it."""

from __future__ import annotations

import math
import numbers
import os
import sys
from typing import NamedTuple

import numpy as np

from fastmlp._network import WIDTH_LIMIT, all_finite

FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


class CSR(NamedTuple):
    """A sparse X as the kernels read it (``_network.check_csr``): CSR with ``data`` of the
    model's dtype, int32 column ``indices`` and int64 row pointers ``indptr``; the fixed
    index types let one compiled kernel serve scipy's int32 and int64 matrices."""

    data: np.ndarray
    indices: np.ndarray
    indptr: np.ndarray
    shape: tuple[int, int]

    def take(self, rows: np.ndarray) -> CSR:
        """The rows ``rows`` (indices into the rows), as a new CSR."""
        import scipy.sparse

        picked = scipy.sparse.csr_matrix(
            (self.data, self.indices, self.indptr), shape=self.shape, copy=False
        )[rows]
        return _to_csr(picked, self.data.dtype)


def is_sparse(X) -> bool:
    """True if X is a ``scipy.sparse`` matrix or array (or a :class:`CSR`).

    scipy.sparse is not imported for this: if it has not been imported, X cannot be one.
    """
    sparse = sys.modules.get("scipy.sparse")
    return isinstance(X, CSR) or (sparse is not None and sparse.issparse(X))


def _to_csr(X, dtype: np.dtype) -> CSR:
    """X's CSR arrays in the kernels' types (copied only when they must be)."""
    with np.errstate(over="ignore"):  # values beyond float32 become inf, reported later
        data = np.require(X.data, dtype, ["C", "A"])
    return CSR(
        data,
        np.require(X.indices, np.int32, ["C", "A"]),
        np.require(X.indptr, np.int64, ["C", "A"]),
        (int(X.shape[0]), int(X.shape[1])),
    )


def check_sparse_X(X, dtype: np.dtype, n_features: int | None = None, name: str = "X") -> CSR:
    """Validate a ``scipy.sparse`` feature matrix or array and return it as :class:`CSR`.

    CSR is used as it is; any other format (CSC, COO, ...) is converted to CSR once, a
    copy, since the kernels read rows. NaN or infinity among the stored values is refused.
    """
    if isinstance(X, CSR):
        return X if X.data.dtype == dtype else X._replace(data=X.data.astype(dtype))
    if X.ndim != 2:
        raise ValueError(
            f"{name} must be 2-D (n_samples, n_features); got a {X.ndim}-D sparse array "
            f"with shape {X.shape}."
        )
    if X.dtype.kind not in "biuf":
        raise TypeError(
            f"{name} must hold real numbers (bool, int or float); got a sparse matrix of "
            f"dtype {X.dtype}. Convert it, e.g. X.astype(numpy.float32)."
        )
    n, d = X.shape
    if n == 0:
        raise ValueError(f"{name} is empty: it has 0 samples (shape {X.shape}).")
    if n_features is not None and d != n_features:
        raise ValueError(f"{name} has {d} features per sample but the model expects {n_features}.")
    if d == 0:
        raise ValueError(f"{name} has 0 features (shape {X.shape}).")
    if d > WIDTH_LIMIT:
        raise ValueError(
            f"{name} has {d} features; fastmlp's layers hold at most {WIDTH_LIMIT} "
            "(int32 column indices)."
        )
    if X.format != "csr":
        X = X.tocsr()  # one conversion (a copy): the kernels read X by rows
    out = _to_csr(X, dtype)
    if not all_finite(out.data):
        p = int(np.flatnonzero(~np.isfinite(out.data))[0])
        row = int(np.searchsorted(out.indptr, p, side="right")) - 1
        raise ValueError(
            f"{name} contains NaN or infinity among its stored values (first at row {row}, "
            f"column {out.indices[p]}); remove or impute those values first."
        )
    return out


def check_dtype(dtype) -> np.dtype:
    """Return ``dtype`` as a numpy float32 or float64 dtype, or raise ValueError."""
    try:
        dt = np.dtype(dtype)
    except TypeError as exc:
        raise ValueError(f"dtype must be numpy.float32 or numpy.float64; got {dtype!r}") from exc
    if dt not in FLOAT_DTYPES:
        raise ValueError(f"dtype must be numpy.float32 or numpy.float64; got {dt}")
    return dt


def check_X(
    X,
    dtype: np.dtype,
    n_features: int | None = None,
    name: str = "X",
    finite: bool = True,
    accept_sparse: bool = False,
    n_threads: int = 1,
) -> np.ndarray | CSR:
    """Validate a feature matrix and return it C-contiguous in ``dtype``.

    Accepts anything array-like of real numbers, including read-only, memory-mapped,
    Fortran-ordered and strided arrays (copied only when they must be). ``finite=False``
    skips the NaN/inf scan for callers whose kernel scans as it reads. With
    ``accept_sparse``, a ``scipy.sparse`` matrix or array is returned as :class:`CSR` (see
    :func:`check_sparse_X`); without, it is refused with a hint. ``n_threads``: the
    threads a large X's scan may use (training's own).
    """
    if is_sparse(X):
        if not accept_sparse:
            raise TypeError(
                f"{name} is a scipy.sparse matrix, which is not accepted here; pass a dense "
                f"array ({name}.toarray())."
            )
        return check_sparse_X(X, dtype, n_features, name)
    try:
        arr = np.asarray(X)
    except ValueError as exc:  # rows of different lengths, mostly
        raise ValueError(f"{name} is not a table of numbers: {exc}") from None
    if arr.dtype.kind not in "biuf":
        raise TypeError(
            f"{name} must hold real numbers (bool, int or float); got dtype {arr.dtype}. "
            f"Convert it, e.g. {name}.astype(numpy.float32)."
        )
    if arr.ndim != 2:
        hint = " For a single sample use X.reshape(1, -1)." if arr.ndim == 1 else ""
        raise ValueError(
            f"{name} must be 2-D (n_samples, n_features); got {arr.ndim}-D with shape "
            f"{arr.shape}.{hint}"
        )
    if arr.shape[0] == 0:
        raise ValueError(f"{name} is empty: it has 0 samples (shape {arr.shape}).")
    if n_features is not None and arr.shape[1] != n_features:
        raise ValueError(
            f"{name} has {arr.shape[1]} features per sample but the model expects {n_features}."
        )
    if arr.shape[1] == 0:
        raise ValueError(f"{name} has 0 features (shape {arr.shape}).")
    with np.errstate(over="ignore"):  # values beyond float32 become inf, reported below
        # Aligned too: unaligned buffers (a Dask transfer, a protocol-5 pickle) are copied
        # here, since the kernels read whole elements with aligned loads.
        out = np.require(arr, dtype, ["C", "A"])
    if finite and arr.dtype.kind == "f" and not all_finite(out, n_threads):
        bad = np.argwhere(~np.isfinite(out))[0]
        raise ValueError(
            f"{name} contains NaN or infinity (first at row {bad[0]}, column {bad[1]}); "
            "remove or impute those values first."
        )
    return out


def check_labels(y, n_samples: int, name: str = "y") -> np.ndarray:
    """Validate a label vector of length ``n_samples`` and return it as an array."""
    arr = np.asarray(y)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be 1-D with one label per sample; got shape {arr.shape}.")
    if arr.shape[0] != n_samples:
        raise ValueError(
            f"X and {name} have different lengths: {n_samples} samples but {arr.shape[0]} labels."
        )
    if arr.dtype.kind == "c":
        raise TypeError(f"{name} must not be complex.")
    if arr.dtype.kind == "f" and not np.isfinite(arr).all():
        raise ValueError(f"{name} contains NaN or infinity; every sample needs a label.")
    if arr.dtype.kind == "O":
        try:
            np.unique(arr)
        except TypeError as exc:
            raise TypeError(f"{name} holds labels of mixed types that cannot be sorted.") from exc
    return arr


def check_targets(
    y, n_samples: int, dtype: np.dtype, n_outputs: int | None = None, name: str = "y"
) -> np.ndarray:
    """Validate regression targets and return them as a C-contiguous (n, k) array.

    ``y`` is 1-D (one output) or 2-D (one column per output) and holds finite real numbers.
    """
    arr = np.asarray(y)
    if arr.dtype.kind not in "biuf":
        raise TypeError(
            f"{name} must hold real numbers for regression; got dtype {arr.dtype}. For class "
            "labels train a classifier (loss 'cross_entropy' or 'mse')."
        )
    if arr.ndim not in (1, 2):
        raise ValueError(
            f"{name} must be 1-D (one target per sample) or 2-D (n_samples, n_outputs); got "
            f"shape {arr.shape}."
        )
    if arr.shape[0] != n_samples:
        raise ValueError(
            f"X and {name} have different lengths: {n_samples} samples but {arr.shape[0]} targets."
        )
    arr = arr.reshape(n_samples, -1)
    if arr.shape[1] == 0:
        raise ValueError(f"{name} has 0 outputs (shape {np.shape(y)}).")
    if n_outputs is not None and arr.shape[1] != n_outputs:
        raise ValueError(
            f"{name} has {arr.shape[1]} outputs per sample but the model has {n_outputs}."
        )
    with np.errstate(over="ignore"):
        out = np.require(arr, dtype, ["C", "A"])
    if not np.isfinite(out).all():
        raise ValueError(
            f"{name} contains NaN or infinity (or values beyond {dtype}); every sample needs "
            "finite targets."
        )
    return out


def encode_labels(y: np.ndarray, classes: np.ndarray, name: str = "y") -> np.ndarray:
    """Map labels to their int32 index in ``classes`` (any order); unknown ones raise."""
    order = np.argsort(classes, kind="stable")
    try:
        pos = np.clip(np.searchsorted(classes[order], y), 0, len(classes) - 1)
    except TypeError as exc:
        raise TypeError(
            f"{name} holds labels that cannot be compared with the model's classes "
            f"{classes.tolist()[:20]}"
        ) from exc
    idx = order[pos]
    unknown = classes[idx] != y
    if np.any(unknown):
        bad = np.unique(y[unknown])[:5]
        raise ValueError(
            f"{name} has labels the model does not know: {bad.tolist()}; its classes are "
            f"{classes.tolist()[:20]}."
        )
    return idx.astype(np.int32)


def check_sample_weight(sample_weight, n_samples: int, dtype: np.dtype) -> np.ndarray | None:
    """Validate per-sample weights: finite, non-negative, not all zero.

    Returns them in `dtype`, scaled by :func:`unit_scale`.
    """
    if sample_weight is None:
        return None
    w = np.asarray(sample_weight)
    if w.dtype.kind not in "biuf" or w.ndim != 1 or w.shape[0] != n_samples:
        raise ValueError(
            f"sample_weight must be a 1-D array of {n_samples} real numbers; got "
            f"dtype {w.dtype}, shape {w.shape}."
        )
    w = w.astype(np.float64)
    if not np.isfinite(w).all() or (w < 0).any():
        raise ValueError("sample_weight must be finite and non-negative.")
    if not w.any():
        raise ValueError("sample_weight is zero everywhere: nothing to learn from.")
    return np.require(unit_scale(w), dtype, ["C", "A"])


def unit_scale(w: np.ndarray) -> np.ndarray:
    """Non-negative weights times the power of two that puts the largest in [1, 2).

    Every use of sample and class weights is a weighted mean (the loss, its gradient,
    a score), so a power of two changes no bit of it, while weights near a dtype's limits
    would not survive unscaled: float32 weights of 1e36 make 1 / sum(w) subnormal, which
    the kernels flush to 0 (no gradient), 1e-40 is subnormal itself, 1e300 is no float32.
    """
    top = float(w.max(initial=0))
    return np.ldexp(w, -(math.frexp(top)[1] - 1)) if top > 0 else w


def check_positive_int(value, name: str, minimum: int = 1) -> int:
    """Return ``value`` as an int >= minimum, or raise a ValueError naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}; got {value!r}")
    return int(value)


def check_float(value, name: str, low: float, high: float, *, low_open=False, high_open=True):
    """Return ``value`` as a float in the given interval, or raise a ValueError."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not np.isfinite(value):
        raise ValueError(f"{name} must be a finite number; got {value!r}")
    value = float(value)
    too_low = value <= low if low_open else value < low
    too_high = value >= high if high_open else value > high
    if too_low or too_high:
        interval = f"{'(' if low_open else '['}{low}, {high}{')' if high_open else ']'}"
        raise ValueError(f"{name} must lie in {interval}; got {value!r}")
    return value


def check_memory(nbytes: int, what: str) -> None:
    """Raise MemoryError, before allocating, if ``nbytes`` exceed the machine's memory."""
    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):  # not POSIX: assume 1 TiB
        total = 1 << 40
    if nbytes > total:
        raise MemoryError(
            f"{what} would need {nbytes / 2**30:.1f} GiB, more than this machine's "
            f"{total / 2**30:.1f} GiB of memory; use smaller layers or batches"
        )
