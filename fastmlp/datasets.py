"""Loaders for the datasets used by the fastmlp benchmarks.

Only MNIST is provided. Its files use the IDX format, which `read_idx` parses
on its own, without any dependency beyond numpy.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import math
import os
import struct
import zlib
from pathlib import Path
from typing import Union

import numpy as np
from numpy.typing import DTypeLike

__all__ = ["load_mnist", "read_idx"]

StrPath = Union[str, "os.PathLike[str]"]

# IDX type codes -> big-endian numpy dtypes (IDX stores data MSB first).
_IDX_DTYPES = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
_GZIP_MAGIC = b"\x1f\x8b"
_MAX_NDIM = 4
# Upper bound on the declared payload, checked before reading anything, so a
# forged header (or a gzip bomb) cannot make us allocate or inflate gigabytes.
_MAX_PAYLOAD_BYTES = 2**31
# Payloads are read in chunks so that memory grows with the bytes actually
# present, not with the size a (possibly lying) header declares.
_CHUNK_BYTES = 1 << 20

# sha256 of the decompressed files, as published with the dataset.
_MNIST_SHA256 = {
    "t10k-images-idx3-ubyte": ("0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7"),
    "t10k-labels-idx1-ubyte": ("ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2"),
    "train-images-idx3-ubyte": (
        "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db"
    ),
    "train-labels-idx1-ubyte": (
        "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5"
    ),
}
_MNIST_SPLITS = {"train": 60000, "t10k": 10000}
_MNIST_ENV = "FASTMLP_MNIST"
# Where the data lives in a source checkout (the package sits at the repo root).
_DEFAULT_MNIST_DIR = Path(__file__).resolve().parent.parent / "benches" / "data" / "mnist"


def _read_upto(stream: io.BufferedIOBase, limit: int) -> list[bytes]:
    """Read at most `limit` bytes from `stream`, fewer only at end of file."""
    chunks = []
    remaining = limit
    while remaining > 0:
        chunk = stream.read(min(remaining, _CHUNK_BYTES))
        if not chunk:
            break
        chunks.append(chunk)
        remaining -= len(chunk)
    return chunks


def _parse_idx_stream(stream: io.BufferedIOBase, name: str) -> tuple[bytes, np.ndarray]:
    """Parse an uncompressed IDX byte stream; see `_read_idx_bytes`."""
    magic = stream.read(4)
    if len(magic) < 4:
        raise ValueError(
            f"{name} is not an IDX file: {len(magic)} bytes is too short "
            "for the 4-byte magic number"
        )
    if magic[:2] != b"\x00\x00":
        raise ValueError(
            f"{name} is not an IDX file: magic number 0x{magic.hex()} "
            "does not start with two zero bytes"
        )
    code, ndim = magic[2], magic[3]
    if code not in _IDX_DTYPES:
        raise ValueError(f"{name} is not an IDX file: unknown data type code 0x{code:02X}")
    if not 1 <= ndim <= _MAX_NDIM:
        raise ValueError(
            f"{name} is not an IDX file: {ndim} dimensions, expected 1 to {_MAX_NDIM}"
        )

    dims_raw = stream.read(4 * ndim)
    if len(dims_raw) < 4 * ndim:
        raise ValueError(
            f"{name} is truncated: expected {4 * ndim} bytes of dimension sizes, "
            f"found {len(dims_raw)}"
        )
    # Signed, as in the IDX spec, so a forged 0xFFFFFFFF shows up as negative.
    shape = struct.unpack(f">{ndim}i", dims_raw)
    if any(d <= 0 for d in shape):
        raise ValueError(f"{name} declares a non-positive dimension: shape {shape}")

    dtype = _IDX_DTYPES[code]
    # Python ints, so the product cannot overflow before the cap is checked.
    size = math.prod(shape) * dtype.itemsize
    if size > _MAX_PAYLOAD_BYTES:
        raise ValueError(
            f"{name} declares {size} bytes of data (shape {shape}, {dtype.name}), "
            f"more than the limit of {_MAX_PAYLOAD_BYTES} bytes"
        )

    header = magic + dims_raw
    # One byte past the declared size tells "exact" from "trailing data"
    # while never inflating more than that from a compressed stream.
    chunks = _read_upto(stream, size + 1)
    found = sum(len(c) for c in chunks)
    if found < size:
        raise ValueError(f"{name} is truncated: expected {size} bytes of data, found {found}")
    if found > size:
        raise ValueError(f"{name} has trailing bytes: expected {size} bytes of data, found more")

    raw = b"".join([header, *chunks])
    array = np.frombuffer(raw, dtype=dtype, count=size // dtype.itemsize, offset=len(header))
    return raw, array.reshape(shape)


def _read_idx_bytes(path: StrPath) -> tuple[bytes, np.ndarray]:
    """Read one IDX file, returning its decompressed bytes and the data.

    Parameters
    ----------
    path : str or os.PathLike
        IDX file, gzipped or raw.

    Returns
    -------
    raw : bytes
        The whole decompressed file (header and data), e.g. for hashing.
    array : numpy.ndarray
        Read-only big-endian view of the data in `raw`, with the declared shape.

    Raises
    ------
    ValueError
        If the file is not a well-formed IDX file (see `read_idx`).
    OSError
        If the file cannot be opened or read.
    """
    name = os.fspath(path)
    with open(path, "rb") as f:
        # Sniff the content rather than trust the name: IDX starts with 00 00.
        is_gzip = f.read(2) == _GZIP_MAGIC
        f.seek(0)
        if not is_gzip:
            return _parse_idx_stream(f, name)
        try:
            with gzip.GzipFile(fileobj=f, mode="rb") as gz:
                return _parse_idx_stream(gz, name)
        except (gzip.BadGzipFile, EOFError, zlib.error) as exc:
            # These come from the compressed stream itself, not from I/O.
            detail = str(exc) or type(exc).__name__
            if isinstance(exc, EOFError):
                detail = f"compressed data ends early ({detail})"
            raise ValueError(f"{name}: gzip stream is corrupt: {detail}") from exc


def read_idx(path: StrPath) -> np.ndarray:
    """Read an array from an IDX file.

    Parameters
    ----------
    path : str or os.PathLike
        File in the IDX format (as used by MNIST), either raw or gzipped.
        Compression is detected from the gzip magic bytes, not the file name.

    Returns
    -------
    numpy.ndarray
        A new, writable, C-contiguous array in native byte order, with the
        shape and element type declared in the header (``uint8``, ``int8``,
        ``int16``, ``int32``, ``float32`` or ``float64``).

    Raises
    ------
    ValueError
        If the file is not a well-formed IDX file: bad magic number, unknown
        type code, not 1 to 4 dimensions, a dimension that is not positive, a
        declared size above 2**31 bytes (checked before reading the data), a
        payload shorter or longer than declared, or a corrupt gzip stream.
    OSError
        If the file cannot be opened or read.

    Notes
    -----
    The IDX header is two zero bytes, a type code byte, a byte giving the
    number of dimensions, then one big-endian 32-bit size per dimension,
    followed by the data in big-endian C order.
    """
    _, array = _read_idx_bytes(path)
    # astype copies, which also makes the array writable and native-endian.
    return array.astype(array.dtype.newbyteorder("="), order="C")


def _resolve_mnist_dir(path: StrPath | None) -> Path:
    """Directory holding the MNIST files, per the rules in `load_mnist`."""
    if path is not None:
        directory = Path(path)
        if directory.exists() and not directory.is_dir():
            raise NotADirectoryError(
                f"{directory} is a file; load_mnist takes the directory of the MNIST files"
            )
        if not directory.is_dir():
            raise FileNotFoundError(f"MNIST directory {directory} does not exist")
        return directory
    env = os.environ.get(_MNIST_ENV)
    if env:
        directory = Path(env)
        # An explicit setting that points nowhere is a mistake worth reporting,
        # not a reason to silently fall back to another copy of the data.
        if not directory.is_dir():
            raise FileNotFoundError(
                f"{_MNIST_ENV}={env} is not a directory; point it at the directory "
                f"holding the MNIST files, or pass path= to load_mnist"
            )
        return directory
    if _DEFAULT_MNIST_DIR.is_dir():
        return _DEFAULT_MNIST_DIR
    # An installed fastmlp (site-packages) has no data beside it: say where the files are.
    raise FileNotFoundError(
        f"MNIST data not found: {_MNIST_ENV} is not set and {_DEFAULT_MNIST_DIR} does not "
        f"exist (the default works only when fastmlp runs from its source checkout); pass "
        f"path= to load_mnist or set {_MNIST_ENV} to the directory holding the four MNIST "
        f"files (train-images-idx3-ubyte[.gz], ...), e.g. benches/data/mnist of the "
        f"fastmlp repository"
    )


def _load_mnist_file(directory: Path, stem: str, verify: bool) -> np.ndarray:
    """Read one MNIST file, raw or gzipped, checking its digest if asked."""
    candidates = [directory / stem, directory / f"{stem}.gz"]
    for candidate in candidates:
        if candidate.is_file():
            break
    else:
        raise FileNotFoundError(
            f"MNIST file {stem} not found: neither {candidates[0]} nor {candidates[1]} exists"
        )
    raw, array = _read_idx_bytes(candidate)
    if verify:
        digest = hashlib.sha256(raw).hexdigest()
        if digest != _MNIST_SHA256[stem]:
            raise ValueError(
                f"{candidate} failed its checksum: sha256 of the decompressed data is "
                f"{digest}, expected {_MNIST_SHA256[stem]}"
            )
    return array


def load_mnist(
    path: StrPath | None = None,
    *,
    dtype: DTypeLike = np.float32,
    verify: bool = True,
) -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
    """Load the MNIST training and test sets.

    Parameters
    ----------
    path : str or os.PathLike, optional
        Directory holding ``train-images-idx3-ubyte``,
        ``train-labels-idx1-ubyte``, ``t10k-images-idx3-ubyte`` and
        ``t10k-labels-idx1-ubyte``, each raw or with a ``.gz`` suffix. By
        default, the directory named by the ``FASTMLP_MNIST`` environment
        variable, else ``benches/data/mnist`` of the fastmlp source tree when fastmlp
        is imported from its source checkout (an installed fastmlp has no data beside
        it: pass `path`).
    dtype : {numpy.float32, numpy.float64}, optional
        Element type of the images.
    verify : bool, optional
        Check the sha256 of each decompressed file against the published
        digest. Shapes and label values are checked regardless.

    Returns
    -------
    (X_train, y_train), (X_test, y_test) : tuple of tuple of numpy.ndarray
        Images as C-contiguous `dtype` arrays of shape (60000, 784) and
        (10000, 784), pixels scaled to [0, 1]; labels as int64 arrays of
        shape (60000,) and (10000,) with values 0 to 9.

    Raises
    ------
    FileNotFoundError
        If the directory or one of the files does not exist.
    NotADirectoryError
        If `path` is a file.
    ValueError
        If `dtype` is not float32 or float64, a file is malformed, fails its
        checksum, or has an unexpected shape, type or label value.
    """
    try:
        out_dtype = np.dtype(dtype)
    except TypeError as exc:
        raise ValueError(f"dtype must be float32 or float64, not {dtype!r}") from exc
    if out_dtype not in (np.dtype(np.float32), np.dtype(np.float64)):
        raise ValueError(f"dtype must be float32 or float64, not {out_dtype}")
    directory = _resolve_mnist_dir(path)

    splits = []
    for split, n_expected in _MNIST_SPLITS.items():
        images = _load_mnist_file(directory, f"{split}-images-idx3-ubyte", verify)
        labels = _load_mnist_file(directory, f"{split}-labels-idx1-ubyte", verify)
        # With verify=False these checks are all that stands between a wrong
        # file and silently wrong benchmarks.
        if images.dtype != np.uint8 or images.shape != (n_expected, 28, 28):
            raise ValueError(
                f"{split} images in {directory} have shape {images.shape} and type "
                f"{images.dtype}, expected ({n_expected}, 28, 28) uint8"
            )
        if labels.dtype != np.uint8 or labels.shape != (n_expected,):
            raise ValueError(
                f"{split} labels in {directory} have shape {labels.shape} and type "
                f"{labels.dtype}, expected ({n_expected},) uint8"
            )
        if labels.max() > 9:
            raise ValueError(
                f"{split} labels in {directory} contain {int(labels.max())}, expected 0 to 9"
            )
        x = images.reshape(n_expected, 28 * 28).astype(out_dtype, order="C")
        x /= 255
        splits.append((x, labels.astype(np.int64)))
    return splits[0], splits[1]
