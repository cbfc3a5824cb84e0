"""Coverage-guided fuzzing of ``fastmlp.datasets.read_idx`` with atheris.

Every input is written to a file (``read_idx`` takes a path, not a file object) and read
back. The contract under test, from ``read_idx``'s docstring:

* a malformed file raises ValueError, and nothing else (no OSError, IndexError, MemoryError,
  struct.error, zlib.error or EOFError escapes);
* a file that is accepted holds exactly what the array says: re-encoding the array as IDX
  gives back the (decompressed) input, byte for byte, and the array is native-endian,
  writable and C-contiguous.

Any other outcome raises, and atheris reports it as a crash with the input saved to
``crash-<sha1>`` under the artifact directory.

Usage (libFuzzer flags pass through)::

    PYTHONPATH=. python fuzz/fuzz_idx.py -max_total_time=60
    PYTHONPATH=. python fuzz/fuzz_idx.py CORPUS_DIR -runs=100000
    PYTHONPATH=. python fuzz/fuzz_idx.py path/to/crash-1234abcd   # rerun one input

Without a corpus directory, the seeds (small valid IDX files of every type code, raw and
gzipped, written by this script) and the corpus grown from them live in
``$FASTMLP_FUZZ_DIR/idx`` (default ``<tmp>/fastmlp-fuzz/idx``), and crash files go to
``$FASTMLP_FUZZ_DIR/idx-artifacts/`` unless ``-artifact_prefix=`` is given.
"""

from __future__ import annotations

import gzip
import io
import os
import random
import struct
import sys
import tempfile

import numpy as np

try:
    import atheris
except ImportError:  # pragma: no cover - a hint, not a feature
    sys.exit("fuzz_idx.py needs atheris: python -m pip install atheris")

# Instrument fastmlp's Python modules, so that libFuzzer sees which of read_idx's branches
# an input reaches and keeps the inputs that reach new ones.
with atheris.instrument_imports(include=["fastmlp"]):
    from fastmlp.datasets import read_idx

# IDX type code of each element type read_idx supports.
TYPE_CODES = {
    np.dtype(np.uint8): 0x08,
    np.dtype(np.int8): 0x09,
    np.dtype(np.int16): 0x0B,
    np.dtype(np.int32): 0x0C,
    np.dtype(np.float32): 0x0D,
    np.dtype(np.float64): 0x0E,
}
# Exception type names to pass over, comma-separated: a bug already reported need not stop
# the search for the next one (e.g. FASTMLP_FUZZ_KNOWN=TokenError,MemoryError).
KNOWN = frozenset(filter(None, os.environ.get("FASTMLP_FUZZ_KNOWN", "").split(",")))
FUZZ_DIR = os.environ.get("FASTMLP_FUZZ_DIR") or os.path.join(
    tempfile.gettempdir(), "fastmlp-fuzz"
)


def scratch_file() -> tuple[int, str]:
    """A file descriptor and a path that opens it, rewritten for every input.

    read_idx opens files by name. An in-memory file (Linux) is fastest and, since libFuzzer
    ends the process without Python's clean-up, the only kind that never outlives it.
    """
    if hasattr(os, "memfd_create") and os.path.isdir("/proc/self/fd"):
        fd = os.memfd_create("fastmlp-fuzz-idx")
        return fd, f"/proc/self/fd/{fd}"
    fd, path = tempfile.mkstemp(prefix="fastmlp-fuzz-", suffix=".idx")
    return fd, path


SCRATCH_FD, SCRATCH = scratch_file()


def encode_idx(array: np.ndarray) -> bytes:
    """The IDX file of ``array``: header, then big-endian data in C order."""
    code = TYPE_CODES[array.dtype.newbyteorder("=")]
    header = bytes([0, 0, code, array.ndim]) + struct.pack(f">{array.ndim}i", *array.shape)
    return header + np.ascontiguousarray(array, dtype=array.dtype.newbyteorder(">")).tobytes()


def seeds() -> dict[str, bytes]:
    """Small valid IDX files, every type code and 1 to 4 dimensions, raw and gzipped."""
    rng = np.random.default_rng(0)
    arrays = {
        "u8-3": np.arange(3, dtype=np.uint8),
        "i8-2x2": np.array([[-128, 127], [0, -1]], dtype=np.int8),
        "i16-2x3": rng.integers(-(2**15), 2**15, size=(2, 3)).astype(np.int16),
        "i32-4": np.array([-(2**31), 2**31 - 1, 0, 7], dtype=np.int32),
        "f32-1x2x3": rng.standard_normal((1, 2, 3)).astype(np.float32),
        "f64-2x1x1x2": np.array([0.5, -0.0, np.inf, np.nan]).reshape(2, 1, 1, 2),
        "mnist-like-2x4x4": rng.integers(0, 256, size=(2, 4, 4)).astype(np.uint8),
    }
    out = {}
    for name, array in arrays.items():
        raw = encode_idx(array)
        out[f"{name}.idx"] = raw
        # mtime=0: the same seed bytes on every run.
        out[f"{name}.idx.gz"] = gzip.compress(raw, mtime=0)
    return out


def write_seeds(directory: str) -> None:
    """Put the seed files in ``directory`` (created if need be)."""
    os.makedirs(directory, exist_ok=True)
    for name, data in seeds().items():
        with open(os.path.join(directory, name), "wb") as f:
            f.write(data)


def decompressed(data: bytes) -> bytes:
    """What read_idx parses: ``data``, gunzipped if it starts with the gzip magic."""
    if data[:2] != b"\x1f\x8b":
        return data
    with gzip.GzipFile(fileobj=io.BytesIO(data), mode="rb") as gz:
        return gz.read()


def check_accepted(data: bytes, array: np.ndarray) -> None:
    """Raise AssertionError unless ``array`` is exactly the IDX content of ``data``."""
    assert isinstance(array, np.ndarray), type(array)
    assert array.dtype.isnative and array.dtype in TYPE_CODES, array.dtype
    assert array.flags.writeable and array.flags.c_contiguous, array.flags
    assert 1 <= array.ndim <= 4 and array.size > 0, array.shape
    try:
        content = decompressed(data)
    except Exception as exc:  # read_idx accepted a stream that gzip itself refuses
        raise AssertionError(
            f"read_idx accepted a gzip stream that gzip rejects: {exc!r}"
        ) from exc
    # Compare bytes, not values: NaN payloads and -0.0 must survive too.
    assert encode_idx(array) == content, "the array differs from the file's content"


def regzip(rng: random.Random, inner: bytes, max_size: int) -> bytes:
    """``inner`` gzipped, sometimes with a second member, trailing bytes or cut short."""
    out = gzip.compress(inner, mtime=0)
    choice = rng.random()
    if choice < 0.1:  # gzip allows several members; read_idx must see their concatenation
        out += gzip.compress(inner[: rng.randint(0, len(inner))], mtime=0)
    elif choice < 0.2:  # zero padding after the stream, as some tools write
        out += bytes(rng.randint(1, 8))
    elif choice < 0.3:
        out = out[: rng.randint(2, len(out))]
    return out[:max_size]


def mutate(data: bytes, max_size: int, seed: int) -> bytes:
    """libFuzzer's byte mutations, applied inside the gzip layer more often than not.

    Byte mutations of a gzip file almost always break its CRC, so without this the IDX
    parser would rarely see a header or payload of a gzipped input other than the seeds'.
    """
    rng = random.Random(seed)
    if data[:2] == b"\x1f\x8b" and rng.random() < 0.7:
        try:
            with gzip.GzipFile(fileobj=io.BytesIO(data), mode="rb") as gz:
                inner = gz.read(max_size + 1)
        except Exception:  # a corrupt stream: mutate its bytes as they are
            inner = None
        if inner is not None:
            return regzip(rng, atheris.Mutate(inner[:max_size], max_size), max_size)
    out = atheris.Mutate(data, max_size)
    if rng.random() < 0.05:
        out = regzip(rng, out, max_size)
    return out


def test_one_input(data: bytes) -> None:
    """Fuzz target: read ``data`` as an IDX file; only ValueError may escape read_idx."""
    os.ftruncate(SCRATCH_FD, 0)
    os.pwrite(SCRATCH_FD, data, 0)
    try:
        array = read_idx(SCRATCH)
    except ValueError:
        return  # the documented answer to a malformed file
    except Exception as exc:
        if type(exc).__name__ in KNOWN:
            return
        raise
    check_accepted(data, array)


def main(argv: list[str]) -> None:
    """Seed the default corpus if no input is named, then hand over to libFuzzer."""
    args = list(argv)
    positional = [a for a in args[1:] if not a.startswith("-")]
    if not positional:
        corpus = os.path.join(FUZZ_DIR, "idx")
        write_seeds(corpus)
        args.append(corpus)
    elif all(os.path.isdir(p) for p in positional):
        # New inputs go to the first corpus directory named; the seeds come along.
        seed_dir = os.path.join(FUZZ_DIR, "idx-seeds")
        write_seeds(seed_dir)
        args.append(seed_dir)
    if not any(a.startswith("-artifact_prefix=") for a in args):
        artifacts = os.path.join(FUZZ_DIR, "idx-artifacts")
        os.makedirs(artifacts, exist_ok=True)
        args.insert(1, f"-artifact_prefix={artifacts}{os.sep}")
    atheris.Setup(args, test_one_input, custom_mutator=mutate)
    atheris.Fuzz()


if __name__ == "__main__":
    main(sys.argv)
