"""Saving and loading models: one ``.npz`` file, written atomically, read without pickle.

File format, version 4
----------------------
A zip archive of ``.npy`` arrays as :func:`numpy.savez` writes it (members stored, not
compressed). No array holds Python objects, so loading never unpickles anything.

==============  ==========================  =================================================
array           dtype, shape                content
==============  ==========================  =================================================
``format``      unicode, ()                 the marker ``"fastmlp-model"``
``version``     int64, ()                   the format version: 1 to 4 (see below)
``meta``        unicode, ()                 a JSON object, keys below
``params``      float32 or float64,         the flat parameter buffer: W_1, b_1, W_2, b_2, ...
                (n_params,)                 row-major, W_i of shape (fan_in, fan_out); with
                                            normalization, a hidden layer's gamma and beta
                                            follow its b_i
``classes``     bool, int, uint, float or   the labels of the outputs, distinct, in output order
                unicode, (n_outputs,)       (a regressor: float64, empty, shape (0,))
``opt_state1``  as ``params``, (n_params,)  optimizer memory: Adam's first moment, SGD's
                                            velocity (only with saved optimizer state)
``opt_state2``  as ``params``, (n_params,)  Adam's (AdamW's) second moment; empty, (0,), for SGD
                or (0,)                     (only with saved optimizer state)
``running_*``   as ``params``,              ``running_means`` and ``running_vars``, only
                (sum of hidden widths,)     with ``normalization`` ``"batch"``: BatchNorm's
                                            running means (variances) of each hidden
                                            layer, one after the other; finite, >= 0
==============  ==========================  =================================================

``meta`` keys: ``layer_sizes`` (list of int, inputs to outputs), ``activation``,
``loss``, ``output_activation``, ``dtype`` (``"float32"`` or ``"float64"``), ``n_params``,
``classes_kind`` (``"bool"``, ``"int"``, ``"uint"``, ``"float"`` or ``"str"``; ``"none"``
for a regressor),
``classes_dtype`` (the numpy dtype string of ``classes``, e.g. ``"<i8"`` or ``"<U7"``),
``history`` (``{name: [number, ...]}``; NaN and infinities as Python's :mod:`json`
writes them), ``optimizer`` (null, or ``{"name": "adam" | "adamw" | "sgd", "t": steps taken}``)
and ``fastmlp_version`` (the writer's version, for information only).

Version 2 added regressors (``loss`` ``"squared_error"``, no classes). Version 3 added
AdamW's optimizer state (``"adamw"``), per-layer activations (``activation`` a list of
one name per hidden layer), the regression losses ``"huber"`` (with the meta key
``delta``, present only for it), ``"absolute_error"`` and ``"poisson"``, and multilabel
classifiers (``"binary_cross_entropy"``, classes the label indices). Version 4 added
LayerNorm and BatchNorm (the meta key ``normalization``, ``"layer"`` or ``"batch"``,
present only for them; ``"batch"`` with the arrays ``running_means`` and
``running_vars``). A file is
written with the lowest version that holds what it uses (a plain classifier as version 1,
a squared-error regressor as 2), so older fastmlp releases load every file they can
represent; a reader refuses a feature that its file's version does not have.

A reader refuses files of a newer format version rather than guess at them, and checks
every array against ``meta`` before it decompresses or allocates anything, so a damaged or
hostile file gives a ValueError, never a huge allocation or an unpickled object.
"""

from __future__ import annotations

import contextlib
import errno
import json
import numbers
import os
import secrets
import stat
import struct
import tokenize
import zipfile
import zlib
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.lib import format as npy_format

from fastmlp._network import (
    ACTIVATIONS,
    HIDDEN_ACTIVATIONS,
    LAYERS_LIMIT,
    LOSSES,
    MULTILABEL_LOSS,
    NORMALIZATIONS,
    REGRESSION_LOSS,
    REGRESSION_LOSSES,
    WIDTH_LIMIT,
    count_params,
)
from fastmlp._trainer import ADAM_FAMILY, OPTIMIZERS
from fastmlp.model import MLP

if TYPE_CHECKING:
    from fastmlp.int8 import QuantizedMLP

__all__ = ["FORMAT_VERSION", "load", "save"]

FORMAT_MARKER = "fastmlp-model"
INT8_MARKER = "fastmlp-int8-model"  # written by fastmlp.int8.QuantizedMLP.save
FORMAT_VERSION = 4
NO_CLASSES = "none"  # classes_kind of a regressor
# Slack for the .npy header in front of each array's data: numpy itself refuses headers
# over 10000 bytes, and its own are about 128.
HEADER_ALLOWANCE = 1 << 14
# Bounds on what meta may declare for the arrays that are not sized by the layers, so a
# file cannot make the reader decompress or allocate more than a few hundred MiB for them.
MAX_META_CHARS = 1 << 24
MAX_LABEL_CHARS = 1 << 12
FLOAT_NAMES = {"float32": np.dtype(np.float32), "float64": np.dtype(np.float64)}
CLASS_KINDS = {"b": "bool", "i": "int", "u": "uint", "f": "float", "U": "str"}
REQUIRED_ARRAYS = ("format", "version", "meta", "params", "classes")
OPTIMIZER_ARRAYS = ("opt_state1", "opt_state2")
STATS_ARRAYS = ("running_means", "running_vars")  # normalization="batch" (format 4)
# The Huber loss's threshold (format 3), LayerNorm (format 4).
OPTIONAL_META_KEYS = frozenset({"delta", "normalization"})
META_KEYS = frozenset(
    {
        "layer_sizes",
        "activation",
        "loss",
        "output_activation",
        "dtype",
        "n_params",
        "classes_kind",
        "classes_dtype",
        "history",
        "optimizer",
        "fastmlp_version",
    }
)
# What zipfile, zlib and numpy's .npy reader raise on damaged input. Our own checks run
# outside the blocks that catch these, so their messages are never wrapped twice.
_DECODE_ERRORS = (
    zipfile.BadZipFile,
    zipfile.LargeZipFile,
    zlib.error,
    EOFError,
    KeyError,
    IndexError,
    NotImplementedError,
    RuntimeError,
    struct.error,
    OverflowError,
    SyntaxError,
    TypeError,
    ValueError,
    tokenize.TokenError,  # numpy re-parses a header it cannot read with tokenize
)


# -- saving -------------------------------------------------------------------------------
def save(model: MLP, path: str | os.PathLike[str], *, optimizer_state: bool = True) -> None:
    """Write a model to one ``.npz`` file, atomically.

    The file is written under a temporary name in the same directory, flushed to disk and
    then renamed onto ``path``: a crash or an error part-way leaves any previous file at
    ``path`` untouched, never a truncated one. The file format is described in
    :mod:`fastmlp.persistence`.

    Parameters
    ----------
    model : MLP
        The model to save.
    path : str or os.PathLike
        Where to write, exactly: unlike :func:`numpy.savez`, no ``.npz`` suffix is added.
    optimizer_state : bool, default True
        Also save the optimizer's memory (Adam's moments, SGD's velocity) so that
        :meth:`MLP.fit_more` on the loaded model continues exactly where training stopped.
        This triples the file size for Adam; the model predicts the same without it.

    Raises
    ------
    TypeError
        If ``model`` is not an :class:`MLP`.
    ValueError
        If the model cannot be stored faithfully: labels of dtype object that are not all
        str, labels of other dtypes than bool, int, float or str, non-finite parameters
        (which :func:`load` would refuse), or a history that is not lists of numbers.
    OSError
        If the file cannot be written (missing directory, no permission, disk full).
    """
    if not isinstance(model, MLP):
        raise TypeError(f"save() needs a fastmlp.MLP; got {type(model).__name__}")
    target = os.fspath(path)
    _write_atomically(target, _to_arrays(model, optimizer_state))


def _to_arrays(model: MLP, optimizer_state: bool) -> dict[str, np.ndarray]:
    """The arrays of the file, checked so that :func:`load` will accept them."""
    params = np.ascontiguousarray(model.params_)
    if not np.isfinite(params).all():
        raise ValueError(
            "the model's parameters contain NaN or infinity; refusing to save a model that "
            "load() would reject (did training diverge?)"
        )
    regressor = model.is_regressor
    delta = float(model.delta)
    if not (np.isfinite(delta) and delta > 0):
        raise ValueError(f"the model's delta {delta!r} is not a finite number > 0")
    classes = np.zeros(0) if regressor else _storable_classes(model.classes_)
    import fastmlp  # here, not at the top: fastmlp/__init__ imports this module

    meta: dict[str, Any] = {
        "layer_sizes": [int(s) for s in model.layer_sizes],
        # One name, or (format 3) a list of one per hidden layer.
        "activation": model.activation
        if isinstance(model.activation, str)
        else list(model.activation),
        "loss": model.loss,
        "output_activation": model.output_activation,
        "dtype": model.dtype.name,
        "n_params": int(params.size),
        "classes_kind": NO_CLASSES if regressor else CLASS_KINDS[classes.dtype.kind],
        "classes_dtype": classes.dtype.str,
        "history": _history_to_json(model.history),
        "optimizer": None,
        "fastmlp_version": str(getattr(fastmlp, "__version__", "unknown")),
    }
    if model.loss == "huber":
        meta["delta"] = delta
    if model.normalization is not None:
        meta["normalization"] = model.normalization
    arrays = {
        "format": np.array(FORMAT_MARKER),
        "version": np.array(1, dtype=np.int64),
        "params": params,
        "classes": classes,
    }
    if model.normalization == "batch":
        means = np.concatenate(model.running_means)
        variances = np.concatenate(model.running_vars)
        if not (np.isfinite(means).all() and np.isfinite(variances).all()):
            raise ValueError(
                "the model's BatchNorm running statistics contain NaN or infinity; refusing "
                "to save a model that load() would reject"
            )
        arrays["running_means"] = means
        arrays["running_vars"] = variances
    if optimizer_state and model._optimizer is not None:
        name, t, state1, state2 = _checked_optimizer(model._optimizer, params)
        meta["optimizer"] = {"name": name, "t": t}
        arrays["opt_state1"] = state1
        arrays["opt_state2"] = state2
    arrays["version"] = np.array(_format_version(meta), dtype=np.int64)
    text = json.dumps(meta)
    if len(text) > MAX_META_CHARS:
        raise ValueError(
            f"the model's metadata (mostly its history) takes {len(text)} characters, more "
            f"than the {MAX_META_CHARS} a model file may hold; trim model.history"
        )
    # A 0-d unicode array, not an object array: it loads without pickle.
    arrays["meta"] = np.array(text)
    return arrays


def _format_version(meta: dict[str, Any]) -> int:
    """The lowest format version that holds what ``meta`` describes."""
    if "normalization" in meta:
        return 4
    if meta["optimizer"] is not None and meta["optimizer"]["name"] == "adamw":
        return 3
    if not isinstance(meta["activation"], str):
        return 3
    if meta["loss"] in REGRESSION_LOSSES and meta["loss"] != REGRESSION_LOSS:
        return 3
    if meta["loss"] == MULTILABEL_LOSS:
        return 3
    return 2 if meta["loss"] == REGRESSION_LOSS else 1


def _storable_classes(classes: np.ndarray) -> np.ndarray:
    """``classes`` as a bool, int, float or unicode array, or a ValueError saying why not."""
    arr = np.asarray(classes)
    if arr.dtype.kind == "O":
        items = arr.tolist()
        kinds = sorted({type(c).__name__ for c in items if not isinstance(c, str)})
        if kinds:
            raise ValueError(
                f"cannot save labels of dtype object unless all are str; these include "
                f"{', '.join(kinds)}. Train on labels of one plain type (str, int or float)."
            )
        # Labels from e.g. pandas arrive as objects; unicode keeps them pickle-free.
        converted = np.array(items, dtype=str)
        if converted.tolist() != items:
            raise ValueError("cannot save str labels that end in NUL characters ('\\x00')")
        arr = converted
    if arr.dtype.kind not in CLASS_KINDS:
        raise ValueError(
            f"cannot save labels of dtype {arr.dtype}: labels must be bools, ints, floats or "
            "str (convert bytes with .astype(str))"
        )
    if arr.dtype.kind in "biuf" and arr.dtype.itemsize > 8:
        raise ValueError(f"cannot save labels of dtype {arr.dtype}; use at most 64-bit types")
    if arr.dtype.kind == "U" and arr.dtype.itemsize > 4 * MAX_LABEL_CHARS:
        raise ValueError(f"cannot save labels longer than {MAX_LABEL_CHARS} characters")
    if arr.dtype.kind == "f" and not np.isfinite(arr).all():
        raise ValueError("cannot save NaN or infinite labels")
    if arr.ndim != 1 or len(np.unique(arr)) != len(arr):
        raise ValueError("the model's classes_ must be distinct to be saved")
    return np.ascontiguousarray(arr)


def _history_to_json(history: Any) -> dict[str, list[int | float]]:
    """``history`` with plain Python numbers, which :mod:`json` can write."""
    if not isinstance(history, dict):
        raise ValueError(f"model.history must be a dict of lists; got {type(history).__name__}")
    out: dict[str, list[int | float]] = {}
    for key, values in history.items():
        if not isinstance(key, str) or not isinstance(values, (list, tuple)):
            raise ValueError(
                f"model.history must map str to lists of numbers; got {key!r}: "
                f"{type(values).__name__}"
            )
        row: list[int | float] = []
        for v in values:
            # numpy scalars count too (numpy registers them with numbers); bools do not,
            # since they would come back as bools where numbers are expected.
            if isinstance(v, (bool, np.bool_)) or not isinstance(v, numbers.Real):
                raise ValueError(f"model.history[{key!r}] holds {v!r}; only numbers are saved")
            row.append(int(v) if isinstance(v, numbers.Integral) else float(v))
        out[key] = row
    return out


def _checked_optimizer(state: Any, params: np.ndarray) -> tuple[str, int, np.ndarray, np.ndarray]:
    """Name, step count and the two state arrays of ``model._optimizer``, checked."""
    try:
        name, t, state1, state2 = state["name"], state["t"], state["state1"], state["state2"]
    except (KeyError, TypeError) as exc:
        raise ValueError(
            f"model._optimizer is malformed ({exc!r}); save with optimizer_state=False"
        ) from None
    state1, state2 = np.asarray(state1), np.asarray(state2)
    n = params.size
    shape2 = (n,) if name in ADAM_FAMILY else (0,)
    if (
        name not in OPTIMIZERS
        or isinstance(t, bool)
        or not isinstance(t, numbers.Integral)
        or not 0 <= t < 2**62
        or state1.dtype != params.dtype
        or state2.dtype != params.dtype
        or state1.shape != (n,)
        or state2.shape != shape2
        or not np.isfinite(state1).all()
        or not np.isfinite(state2).all()
    ):
        raise ValueError(
            "model._optimizer does not match the model (wrong name, step count, shapes or "
            "dtypes, or non-finite values); save with optimizer_state=False"
        )
    return name, int(t), np.ascontiguousarray(state1), np.ascontiguousarray(state2)


def check_save_path(target: str) -> None:
    """Raise the OSError a save to ``target`` would meet: a directory, or a missing one.

    Checked before writing (and by the CLI before any work): otherwise the whole model is
    written before the rename fails, and the error names the temporary file.
    """
    directory = os.path.dirname(os.path.abspath(target))
    if os.path.isdir(target):
        raise IsADirectoryError(
            errno.EISDIR,
            "cannot save the model there: it is a directory; give a file path, such as "
            f"{os.path.join(target, 'model.npz')!r}",
            target,
        )
    if not os.path.isdir(directory):
        raise FileNotFoundError(
            errno.ENOENT,
            f"cannot save the model there: the directory {directory!r} does not exist; "
            "create it first",
            target,
        )


def _write_atomically(target: str, arrays: dict[str, np.ndarray]) -> None:
    """Write ``arrays`` with numpy.savez to a temporary file, then rename it onto target."""
    check_save_path(target)
    directory = os.path.dirname(os.path.abspath(target))
    base = os.path.basename(target)
    # Not tempfile.NamedTemporaryFile: it creates files with mode 0600, which would leave
    # the model unreadable to other users. os.open with 0666 lets the umask decide, as a
    # plain open(target, "wb") would; O_EXCL makes the random name safe to claim.
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
    for _ in range(100):
        tmp = os.path.join(directory, f".{base}.{secrets.token_hex(6)}.tmp")
        try:
            fd = os.open(tmp, flags, 0o666)
            break
        except FileExistsError:
            continue
    else:  # pragma: no cover - 100 collisions of 48 random bits
        raise FileExistsError(errno.EEXIST, "could not create a temporary file", directory)
    try:
        with os.fdopen(fd, "wb") as fh:
            # A file object, not a name: numpy.savez would append ".npz" to a name.
            np.savez(fh, **arrays)
            fh.flush()
            # On disk before the rename, or a crash could leave an empty file at target.
            os.fsync(fh.fileno())
        _copy_mode(target, tmp)
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    _fsync_directory(directory)


def _copy_mode(target: str, tmp: str) -> None:
    """Give ``tmp`` the permission bits of an existing regular file at ``target``."""
    try:
        st = os.stat(target)
    except OSError:
        return
    if stat.S_ISREG(st.st_mode):
        os.chmod(tmp, stat.S_IMODE(st.st_mode))


def _fsync_directory(directory: str) -> None:
    """Make the rename durable; best effort, as not every platform can sync a directory."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


# -- loading ------------------------------------------------------------------------------
def load(path: str | os.PathLike[str]) -> MLP | QuantizedMLP:
    """Read a model written by :func:`save` (or :meth:`MLP.save`).

    Nothing is unpickled, and every array is checked against the file's metadata before it
    is decompressed, so a damaged, truncated or hostile file raises a ValueError instead of
    running code or exhausting memory.

    Parameters
    ----------
    path : str or os.PathLike
        The file to read; its name need not end in ``.npz``.

    Returns
    -------
    MLP or QuantizedMLP
        The model, with its ``history`` and, if it was saved, the optimizer state that lets
        :meth:`MLP.fit_more` continue training exactly. ``n_threads`` is not stored (it
        belongs to the machine, not the model) and is None. A file written by
        :meth:`fastmlp.QuantizedMLP.save` gives the int8 model (format in
        :mod:`fastmlp.int8`), checked the same way.

    Raises
    ------
    ValueError
        If the file is not a fastmlp model file, was written by a newer fastmlp, or is
        damaged or inconsistent; the message names the file and the problem.
    OSError
        If the file cannot be opened or read (missing, no permission).
    """
    name = os.fspath(path)
    with open(name, "rb") as fh:
        return _Reader(fh, name).model()


class _Reader:
    """Validates a model file step by step; every problem becomes a ValueError."""

    def __init__(self, fh, name: str) -> None:
        self.fh = fh
        self.name = name

    def error(self, problem: str) -> ValueError:
        return ValueError(f"cannot load {self.name!r}: {problem}")

    def model(self) -> MLP:
        head = self.fh.read(4)
        if not head:
            raise self.error("the file is empty; it is not a fastmlp model file")
        if head != b"PK\x03\x04":
            raise self.error(
                "not a fastmlp model file: it is not a .npz (zip) archive. Models are "
                "written by fastmlp.save or MLP.save."
            )
        self.fh.seek(0)
        try:
            npz = np.load(self.fh, allow_pickle=False)
            infos = npz.zip.infolist()
        except _DECODE_ERRORS as exc:
            raise self.error(f"not a valid .npz archive; damaged or truncated? ({exc})") from None
        except OSError as exc:
            raise self._os_error(exc) from None
        with npz:
            self.npz = npz
            return self._read(infos)

    def _os_error(self, exc: OSError) -> Exception:
        # zipfile seeks to offsets read from the file; corrupt ones fail with EINVAL. That
        # is damage, not an I/O problem.
        if exc.errno == errno.EINVAL:
            return self.error(f"not a valid .npz archive; damaged or truncated? ({exc})")
        return exc

    def _read(self, infos: list[zipfile.ZipInfo]) -> MLP:
        names = [info.filename for info in infos]
        if len(set(names)) != len(names):
            raise self.error("the archive holds two members of the same name")
        self.members = {
            info.filename[: -len(".npy")]: info for info in infos if info.filename.endswith(".npy")
        }
        if "format" not in self.members:
            raise self.error(
                f"not a fastmlp model file (no 'format' marker among its arrays {names[:10]})"
            )
        try:
            marker = self._array("format", HEADER_ALLOWANCE + 4 * 64, "U", ())
        except ValueError:
            marker = None
        if marker is not None and str(marker[()]) == INT8_MARKER:
            from fastmlp.int8 import _read as read_int8  # an int8 model (fastmlp.int8)

            return read_int8(self)
        if marker is None or str(marker[()]) != FORMAT_MARKER:
            raise self.error(f"not a fastmlp model file (its 'format' is not {FORMAT_MARKER!r})")
        version = int(self._array("version", HEADER_ALLOWANCE + 8, "iu", ())[()])
        if version > FORMAT_VERSION:
            raise self.error(
                f"written by a newer fastmlp (format version {version}); this one reads up "
                f"to {FORMAT_VERSION}: upgrade fastmlp"
            )
        if version < 1:
            raise self.error(f"invalid format version {version}")
        self.version = version
        expected = {f"{key}.npy" for key in REQUIRED_ARRAYS + OPTIMIZER_ARRAYS + STATS_ARRAYS}
        extra = sorted(set(names) - expected)
        if extra:
            raise self.error(f"unexpected arrays {extra}; not written by fastmlp.save?")
        missing = [key for key in REQUIRED_ARRAYS if key not in self.members]
        if missing:
            raise self.error(f"missing arrays {missing}")

        meta = self._meta()
        dtype = FLOAT_NAMES[meta["dtype"]]
        sizes = meta["layer_sizes"]
        n_params = meta["n_params"]
        limit = n_params * dtype.itemsize + HEADER_ALLOWANCE
        params = self._array("params", limit, "f", (n_params,), dtype)
        if not np.isfinite(params).all():
            raise self.error("the parameters contain NaN or infinity")
        classes = self._classes(meta, sizes[-1])
        stats = self._running_stats(meta, dtype)

        optimizer = meta["optimizer"]
        present = [key for key in OPTIMIZER_ARRAYS if key in self.members]
        if optimizer is None and present:
            raise self.error(f"arrays {present} are present but meta names no optimizer")
        state = None
        if optimizer is not None:
            if len(present) != 2:
                raise self.error(f"optimizer state is incomplete: it has only {present}")
            n2 = n_params if optimizer["name"] in ADAM_FAMILY else 0
            state1 = self._array("opt_state1", limit, "f", (n_params,), dtype)
            state2 = self._array(
                "opt_state2", n2 * dtype.itemsize + HEADER_ALLOWANCE, "f", (n2,), dtype
            )
            if not (np.isfinite(state1).all() and np.isfinite(state2).all()):
                raise self.error("the optimizer state contains NaN or infinity")
            if (state2 < 0).any():
                # Adam's second moment is a running mean of squares.
                raise self.error("Adam's second-moment state has negative values")
            state = {
                "name": optimizer["name"],
                "t": optimizer["t"],
                "state1": state1,
                "state2": state2,
            }

        try:
            model = MLP(
                sizes,
                classes,
                activation=meta["activation"],
                loss=meta["loss"],
                output_activation=meta["output_activation"],
                dtype=dtype,
                params=params,
                delta=meta.get("delta", 1.0),
                normalization=meta.get("normalization"),
            )
            if stats is not None:
                model._set_running_stats(stats)
        except ValueError as exc:  # checked above already; this is a second line of defence
            raise self.error(str(exc)) from None
        model.history = meta["history"]
        model._optimizer = state
        return model

    def _running_stats(self, meta: dict[str, Any], dtype: np.dtype) -> np.ndarray | None:
        """BatchNorm's running statistics as MLP keeps them (per hidden layer its means,
        then its variances), checked; None without normalization="batch"."""
        present = [key for key in STATS_ARRAYS if key in self.members]
        if meta.get("normalization") != "batch":
            if present:
                raise self.error(f"arrays {present} belong to normalization='batch' only")
            return None
        if len(present) != 2:
            raise self.error(
                f"a BatchNorm model needs the arrays {list(STATS_ARRAYS)}; it has {present}"
            )
        hidden = meta["layer_sizes"][1:-1]
        n = sum(hidden)
        limit = n * dtype.itemsize + HEADER_ALLOWANCE
        means = self._array("running_means", limit, "f", (n,), dtype)
        variances = self._array("running_vars", limit, "f", (n,), dtype)
        if not (np.isfinite(means).all() and np.isfinite(variances).all()):
            raise self.error("the BatchNorm running statistics contain NaN or infinity")
        if (variances < 0).any():
            raise self.error("a BatchNorm running variance is negative")
        parts, start = [], 0
        for width in hidden:
            parts += [means[start : start + width], variances[start : start + width]]
            start += width
        return np.concatenate(parts).astype(dtype, copy=False)

    def _array(
        self,
        key: str,
        limit: int,
        kinds: str,
        shape: tuple[int, ...],
        dtype: np.dtype | None = None,
    ) -> np.ndarray:
        """Read one array after checking its declared size, its header and its type.

        ``dtype`` may differ in byte order only; the result is native, C-contiguous and
        writeable.
        """
        info = self.members.get(key)
        if info is None:
            raise self.error(f"the {key!r} array is missing")
        if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
            raise self.error(f"array {key!r} uses an unsupported compression method")
        if info.compress_type == zipfile.ZIP_STORED and info.compress_size != info.file_size:
            raise self.error(f"array {key!r} is damaged (its stored and declared sizes differ)")
        # The zip directory's size is also where zipfile stops inflating, so checking it
        # here bounds the work and memory of the reads below (the zip bomb defence).
        if info.file_size > limit:
            raise self.error(
                f"array {key!r} declares {info.file_size} bytes, more than the {limit} its "
                "metadata allows; refusing to decompress it"
            )
        # Read the .npy header first: numpy allocates what the header declares before it
        # reads the data, and would unpickle an object array if allowed.
        try:
            with self.npz.zip.open(info) as member:
                version = npy_format.read_magic(member)
                read_header = {
                    (1, 0): npy_format.read_array_header_1_0,
                    (2, 0): npy_format.read_array_header_2_0,
                }.get(version)
                header = None if read_header is None else read_header(member)
                header_end = member.tell()
        except _DECODE_ERRORS as exc:
            raise self.error(f"array {key!r} is damaged or not a .npy array ({exc})") from None
        except OSError as exc:
            raise self._os_error(exc) from None
        if header is None:
            raise self.error(f"array {key!r} has an unsupported .npy version {version}")
        got_shape, _, got_dtype = header
        if got_dtype.hasobject:
            raise self.error(
                f"array {key!r} holds Python objects (pickled data), which fastmlp never loads"
            )
        if (
            got_dtype.kind not in kinds
            or got_dtype.fields is not None
            or got_dtype.subdtype is not None
            or (dtype is not None and got_dtype.newbyteorder("=") != dtype.newbyteorder("="))
        ):
            want = f"dtype {dtype}" if dtype is not None else f"a dtype of kind {kinds!r}"
            raise self.error(f"array {key!r} has dtype {got_dtype}; expected {want}")
        if tuple(got_shape) != shape:
            raise self.error(f"array {key!r} has shape {tuple(got_shape)}; expected {shape}")
        # numpy allocates the declared shape before reading: the member must really hold
        # that many bytes, or a small file could claim a huge array.
        expected = header_end + int(np.prod(shape, dtype=np.int64)) * got_dtype.itemsize
        if info.file_size != expected:
            raise self.error(
                f"array {key!r} holds {info.file_size - header_end} bytes of data; its "
                f"header declares {expected - header_end}"
            )
        try:
            # Through the member checked above: numpy's own lookup (npz[key]) would take
            # a member named exactly `key` first, which a damaged file can also hold.
            with self.npz.zip.open(info) as member:
                arr = npy_format.read_array(member, allow_pickle=False)
        except _DECODE_ERRORS as exc:
            raise self.error(f"array {key!r} is damaged ({exc})") from None
        except OSError as exc:
            raise self._os_error(exc) from None
        # The second read must agree with the header just checked (the file could have
        # changed on disk in between).
        if not isinstance(arr, np.ndarray) or arr.shape != shape or arr.dtype != got_dtype:
            raise self.error(f"array {key!r} changed while it was being read")
        arr = np.require(arr, dtype=got_dtype.newbyteorder("="), requirements=["C", "W"])
        # Text is UCS-4: a code point past U+10FFFF makes a str Python cannot use.
        if arr.dtype.kind == "U" and (np.frombuffer(arr.tobytes(), np.uint32) > 0x10FFFF).any():
            raise self.error(f"array {key!r} holds characters outside Unicode")
        return arr

    def _meta(self) -> dict[str, Any]:
        """The parsed and fully checked ``meta`` JSON object."""
        raw = self._array("meta", 4 * MAX_META_CHARS + HEADER_ALLOWANCE, "U", ())
        try:
            meta = json.loads(str(raw[()]))
        except (ValueError, RecursionError) as exc:
            raise self.error(f"its metadata is not valid JSON ({exc})") from None
        if not isinstance(meta, dict):
            raise self.error("its metadata is not a JSON object")
        missing = sorted(META_KEYS - meta.keys())
        unknown = sorted(meta.keys() - META_KEYS - OPTIONAL_META_KEYS)
        if missing or unknown:
            raise self.error(f"metadata keys missing: {missing}, unknown: {unknown}")

        sizes = meta["layer_sizes"]
        if (
            not isinstance(sizes, list)
            or not 2 <= len(sizes) <= LAYERS_LIMIT + 1
            or not all(_is_int(s) and 1 <= s <= WIDTH_LIMIT for s in sizes)
        ):
            raise self.error(
                f"layer_sizes must be 2 to {LAYERS_LIMIT + 1} positive ints; got {sizes!r:.200}"
            )
        activation = meta["activation"]
        if isinstance(activation, list):
            if self.version < 3:
                raise self.error(f"format version {self.version} holds no per-layer activations")
            if len(activation) != len(sizes) - 2 or not all(
                isinstance(a, str) and a in HIDDEN_ACTIVATIONS for a in activation
            ):
                raise self.error(
                    f"activation must list one of {HIDDEN_ACTIVATIONS} per hidden layer "
                    f"({len(sizes) - 2}); got {activation!r:.200}"
                )
        elif not isinstance(activation, str) or activation not in HIDDEN_ACTIVATIONS:
            raise self.error(
                f"activation must be one of {HIDDEN_ACTIVATIONS} or a list of them; got "
                f"{activation!r:.200}"
            )
        for key, allowed in (
            ("loss", tuple(LOSSES)),
            ("output_activation", tuple(ACTIVATIONS)),
            ("dtype", tuple(FLOAT_NAMES)),
        ):
            # isinstance first: `in` on a dict would raise TypeError for a JSON list.
            if not isinstance(meta[key], str) or meta[key] not in allowed:
                raise self.error(f"{key} must be one of {allowed}; got {meta[key]!r:.200}")
        if (
            meta["loss"] in ("cross_entropy", MULTILABEL_LOSS)
            and meta["output_activation"] != "identity"
        ):
            raise self.error("a cross-entropy model must have output_activation 'identity'")
        if meta["loss"] == MULTILABEL_LOSS and self.version < 3:
            raise self.error(f"format version {self.version} holds no multilabel classifiers")
        if meta["loss"] in REGRESSION_LOSSES and self.version < 2:
            raise self.error(f"format version {self.version} holds no regressors")
        if meta["loss"] in REGRESSION_LOSSES[1:] and self.version < 3:
            raise self.error(f"format version {self.version} holds no {meta['loss']!r} loss")
        if meta["loss"] == "huber":
            delta = meta.get("delta")
            if (
                not isinstance(delta, (int, float))
                or isinstance(delta, bool)
                or not (0 < delta < float("inf"))
            ):
                raise self.error(f"delta of a Huber model must be a number > 0; got {delta!r:.50}")
        elif "delta" in meta:
            raise self.error("only a Huber model ('huber' loss) has a delta")
        normalization = meta.get("normalization")
        if "normalization" in meta:
            if self.version < 4:
                raise self.error(f"format version {self.version} holds no normalization")
            if not isinstance(normalization, str) or normalization not in NORMALIZATIONS:
                raise self.error(
                    f"normalization must be one of {NORMALIZATIONS}; got {normalization!r:.50}"
                )
        n_params = count_params(sizes, normalization)
        if not _is_int(meta["n_params"]) or meta["n_params"] != n_params:
            raise self.error(
                f"n_params is {meta['n_params']!r:.100} but layers {sizes} have {n_params}"
            )
        if not isinstance(meta["fastmlp_version"], str):
            raise self.error("fastmlp_version must be a string")
        self._check_history(meta["history"])
        optimizer = meta["optimizer"]
        if optimizer is not None and not (
            isinstance(optimizer, dict)
            and optimizer.keys() == {"name", "t"}
            and isinstance(optimizer["name"], str)
            and optimizer["name"] in OPTIMIZERS
            and _is_int(optimizer["t"])
            and 0 <= optimizer["t"] < 2**62
        ):
            raise self.error(
                f'optimizer must be null or {{"name": one of {tuple(OPTIMIZERS)}, "t": '
                f"int >= 0}}; got {optimizer!r:.200}"
            )
        if optimizer is not None and optimizer["name"] == "adamw" and self.version < 3:
            raise self.error(f"format version {self.version} holds no AdamW state")
        return meta

    def _check_history(self, history: Any) -> None:
        if not isinstance(history, dict) or not all(
            isinstance(values, list)
            and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)
            for values in history.values()
        ):
            raise self.error("history must be a JSON object of lists of numbers")

    def _classes(self, meta: dict[str, Any], n_outputs: int) -> np.ndarray | None:
        """The labels, checked against meta: dtype, one per output, distinct; a regressor's
        None."""
        kind, spec = meta["classes_kind"], meta["classes_dtype"]
        if (meta["loss"] in REGRESSION_LOSSES) != (kind == NO_CLASSES):
            raise self.error(
                f"classes_kind {kind!r:.50} does not fit loss {meta['loss']!r}: a regressor "
                f"(and only a regressor) has classes_kind {NO_CLASSES!r}"
            )
        if kind == NO_CLASSES:
            self._array("classes", HEADER_ALLOWANCE, "f", (0,))
            return None
        try:
            dtype = np.dtype(spec) if isinstance(spec, str) else None
        except (TypeError, ValueError, SyntaxError):
            dtype = None
        if (
            dtype is None
            or dtype.fields is not None
            or dtype.subdtype is not None
            or CLASS_KINDS.get(dtype.kind) != kind
            or dtype.itemsize == 0
            or (dtype.kind != "U" and dtype.itemsize > 8)
            or dtype.itemsize > 4 * MAX_LABEL_CHARS
        ):
            raise self.error(
                f"classes_kind {kind!r:.50} and classes_dtype {spec!r:.50} are not a supported "
                f"label type (one of {sorted(CLASS_KINDS.values())}, at most "
                f"{MAX_LABEL_CHARS} characters)"
            )
        limit = n_outputs * dtype.itemsize + HEADER_ALLOWANCE
        classes = self._array("classes", limit, dtype.kind, (n_outputs,), dtype)
        if dtype.kind == "f" and not np.isfinite(classes).all():
            raise self.error("the classes contain NaN or infinity")
        if len(np.unique(classes)) != n_outputs:
            raise self.error("the classes contain duplicates")
        return classes


def _is_int(value: Any) -> bool:
    """True for JSON integers (Python ints that are not bools)."""
    return isinstance(value, int) and not isinstance(value, bool)
