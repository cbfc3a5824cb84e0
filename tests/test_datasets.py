"""Tests for fastmlp.datasets: the IDX reader and the MNIST loader."""

from __future__ import annotations

import gzip
import hashlib
import re
import shutil
import struct
import time
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import fastmlp.datasets as datasets
from fastmlp.datasets import load_mnist, read_idx

MNIST_DIR = Path(__file__).resolve().parent.parent / "benches" / "data" / "mnist"
MNIST_STEMS = [
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
]
IDX_CODES = {"u1": 0x08, "i1": 0x09, "i2": 0x0B, "i4": 0x0C, "f4": 0x0D, "f8": 0x0E}
SHAPES = {1: (5,), 2: (3, 4), 3: (2, 3, 4), 4: (2, 1, 3, 2)}


def idx_header(code: int, dims: tuple[int, ...], ndim: int | None = None) -> bytes:
    """IDX header; `ndim` overrides the dimension count byte for bad inputs."""
    count = len(dims) if ndim is None else ndim
    return bytes([0, 0, code, count]) + struct.pack(f">{len(dims)}I", *dims)


def idx_bytes(array: np.ndarray) -> bytes:
    """Serialize `array` as IDX, independently of the reader under test."""
    header = idx_header(IDX_CODES[array.dtype.str[1:]], array.shape)
    return header + array.astype(array.dtype.newbyteorder(">")).tobytes()


def write(directory: Path, data: bytes, name: str = "data.idx", gz: bool = False) -> Path:
    path = directory / name
    path.write_bytes(gzip.compress(data) if gz else data)
    return path


def sample(dtype: str, shape: tuple[int, ...], seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    dt = np.dtype(dtype)
    if dt.kind == "f":
        return (rng.standard_normal(shape) * 1e3).astype(dt)
    info = np.iinfo(dt)
    return rng.integers(info.min, info.max, size=shape, endpoint=True, dtype=dt)


# --- real MNIST --------------------------------------------------------------


@pytest.fixture(scope="module")
def mnist():
    """The real data, loaded once per dtype for the whole module."""
    return {
        np.float32: load_mnist(MNIST_DIR),
        np.float64: load_mnist(MNIST_DIR, dtype=np.float64, verify=False),
    }


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_mnist_shapes_and_types(mnist, dtype):
    (x_train, y_train), (x_test, y_test) = mnist[dtype]
    for x, y, n in [(x_train, y_train, 60000), (x_test, y_test, 10000)]:
        assert x.shape == (n, 784)
        assert x.dtype == dtype
        assert x.flags.c_contiguous
        assert y.shape == (n,)
        assert y.dtype == np.int64
        assert x.min() == 0.0
        assert x.max() == 1.0
        assert y.min() == 0
        assert y.max() == 9
        # Scaled bytes: every value times 255 is (nearly) a whole number.
        head = x[:2000] * 255
        np.testing.assert_allclose(head, np.round(head), atol=1e-3)


def test_mnist_content(mnist):
    (x_train, y_train), (_, y_test) = mnist[np.float32]
    # First labels of each split, as published.
    assert y_train[:5].tolist() == [5, 0, 4, 1, 9]
    assert y_test[:4].tolist() == [7, 2, 1, 0]
    counts = np.bincount(y_train, minlength=10)
    assert counts.sum() == 60000
    assert ((counts >= 5000) & (counts <= 7000)).all(), counts
    assert (np.bincount(y_test, minlength=10) >= 800).all()
    # Digits cover roughly a fifth of the image on average.
    assert 0.05 < x_train.mean() < 0.25
    (x64, y64), _ = mnist[np.float64]
    np.testing.assert_allclose(x64[:5000], x_train[:5000], atol=1e-6)
    np.testing.assert_array_equal(y64, y_train)


@pytest.mark.parametrize("dtype", [np.int32, np.uint8, np.float16, "complex128"])
def test_mnist_rejects_dtype(dtype):
    with pytest.raises(ValueError, match="float32 or float64"):
        load_mnist(MNIST_DIR, dtype=dtype)


def test_mnist_rejects_non_dtype():
    with pytest.raises(ValueError, match="float32 or float64"):
        load_mnist(MNIST_DIR, dtype="not a dtype")


# --- MNIST copies: checksums, shapes and directory lookup ----------------------


@pytest.fixture(scope="module")
def raw_mnist_dir(tmp_path_factory):
    """Decompressed copies of the MNIST files, made once."""
    directory = tmp_path_factory.mktemp("mnist_raw")
    for stem in MNIST_STEMS:
        with gzip.open(MNIST_DIR / f"{stem}.gz") as src:
            (directory / stem).write_bytes(src.read())
    return directory


@pytest.fixture
def mnist_copy(raw_mnist_dir, tmp_path):
    directory = tmp_path / "mnist"
    shutil.copytree(raw_mnist_dir, directory)
    return directory


def test_mnist_checksum_mismatch(mnist_copy):
    labels = mnist_copy / "train-labels-idx1-ubyte"
    data = bytearray(labels.read_bytes())
    data[-1] = (data[-1] + 1) % 10  # still a valid label: only the hash can tell
    labels.write_bytes(bytes(data))
    expected = datasets._MNIST_SHA256["train-labels-idx1-ubyte"]
    actual = hashlib.sha256(data).hexdigest()

    with pytest.raises(ValueError, match="checksum") as excinfo:
        load_mnist(mnist_copy)
    message = str(excinfo.value)
    assert str(labels) in message
    assert expected in message
    assert actual in message

    (_, y_train), _ = load_mnist(mnist_copy, verify=False)
    assert y_train[-1] == data[-1]


def test_mnist_label_out_of_range(mnist_copy):
    labels = mnist_copy / "t10k-labels-idx1-ubyte"
    data = bytearray(labels.read_bytes())
    data[20] = 10
    labels.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="expected 0 to 9"):
        load_mnist(mnist_copy, verify=False)


def test_mnist_wrong_shape(mnist_copy):
    (mnist_copy / "t10k-labels-idx1-ubyte").unlink()
    write(mnist_copy, idx_bytes(np.arange(5, dtype="u1")), "t10k-labels-idx1-ubyte.gz")
    with pytest.raises(ValueError, match=re.escape("expected (10000,) uint8")):
        load_mnist(mnist_copy, verify=False)


def test_mnist_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="train-images-idx3-ubyte"):
        load_mnist(tmp_path)


def test_mnist_path_that_is_a_file(tmp_path):
    (tmp_path / "train-images-idx3-ubyte").write_bytes(b"")
    with pytest.raises(NotADirectoryError, match="is a file; load_mnist takes the directory"):
        load_mnist(tmp_path / "train-images-idx3-ubyte")


def test_mnist_missing_directory(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_mnist(tmp_path / "nowhere")


def test_mnist_env_var_is_used(tmp_path, monkeypatch):
    monkeypatch.setenv("FASTMLP_MNIST", str(tmp_path))
    with pytest.raises(FileNotFoundError, match=re.escape(str(tmp_path))):
        load_mnist()


def test_mnist_env_var_missing_directory(tmp_path, monkeypatch):
    monkeypatch.setenv("FASTMLP_MNIST", str(tmp_path / "nowhere"))
    with pytest.raises(FileNotFoundError, match="FASTMLP_MNIST"):
        load_mnist()


def test_mnist_default_directory(tmp_path, monkeypatch):
    monkeypatch.delenv("FASTMLP_MNIST", raising=False)
    monkeypatch.setattr(datasets, "_DEFAULT_MNIST_DIR", tmp_path)
    with pytest.raises(FileNotFoundError, match=re.escape(str(tmp_path))):
        load_mnist()
    monkeypatch.setattr(datasets, "_DEFAULT_MNIST_DIR", tmp_path / "nowhere")
    with pytest.raises(FileNotFoundError, match=r"pass path=.*FASTMLP_MNIST"):
        load_mnist()


# --- read_idx: valid files -----------------------------------------------------


@pytest.mark.parametrize("gz", [False, True], ids=["raw", "gzip"])
@pytest.mark.parametrize("ndim", sorted(SHAPES))
@pytest.mark.parametrize("dtype", sorted(IDX_CODES))
def test_read_idx_round_trip(tmp_path, dtype, ndim, gz):
    array = sample(dtype, SHAPES[ndim], seed=ndim)
    result = read_idx(write(tmp_path, idx_bytes(array), gz=gz))
    assert result.shape == array.shape
    assert result.dtype == array.dtype
    assert result.dtype.isnative
    assert result.flags.c_contiguous
    assert result.flags.writeable
    np.testing.assert_array_equal(result, array)


def test_read_idx_is_big_endian(tmp_path):
    data = idx_header(0x0B, (2,)) + bytes([0x01, 0x02, 0xFF, 0xFE])
    assert read_idx(write(tmp_path, data)).tolist() == [258, -2]


def test_read_idx_detects_gzip_by_content(tmp_path):
    array = np.arange(12, dtype="u1").reshape(3, 4)
    gzipped = write(tmp_path, idx_bytes(array), name="no_suffix", gz=True)
    raw = write(tmp_path, idx_bytes(array), name="misnamed.gz")
    np.testing.assert_array_equal(read_idx(gzipped), array)
    np.testing.assert_array_equal(read_idx(raw), array)


def test_read_idx_accepts_str_path(tmp_path):
    path = write(tmp_path, idx_bytes(np.arange(3, dtype="i4")))
    assert read_idx(str(path)).tolist() == [0, 1, 2]


# --- read_idx: invalid files ---------------------------------------------------

GOOD_DATA = bytes(range(12))  # payload for a (3, 4) ubyte array


@pytest.mark.parametrize(
    ("data", "match"),
    [
        (b"", "is not an IDX file"),
        (b"\x00\x00", "is not an IDX file"),
        (b"hello, world\n", "is not an IDX file"),
        (b"\x01\x00\x08\x01\x00\x00\x00\x01\x00", "is not an IDX file.*magic"),
        (b"\x00\x01\x08\x01\x00\x00\x00\x01\x00", "is not an IDX file.*magic"),
        (idx_header(0x0A, (3, 4)) + GOOD_DATA, "unknown data type code 0x0A"),
        (idx_header(0x07, (3, 4)) + GOOD_DATA, "unknown data type code 0x07"),
        (idx_header(0xFF, (3, 4)) + GOOD_DATA, "unknown data type code 0xFF"),
        (idx_header(0x08, (), ndim=0), "0 dimensions, expected 1 to 4"),
        (idx_header(0x08, (1,) * 5) + b"\x00", "5 dimensions, expected 1 to 4"),
        (idx_header(0x08, (3, 0)), r"non-positive dimension: shape \(3, 0\)"),
        (idx_header(0x08, (0,)), "non-positive dimension"),
        (idx_header(0x08, (2**32 - 1,)), r"non-positive dimension: shape \(-1,\)"),
        (idx_header(0x08, (3, 4))[:9], "truncated: expected 8 bytes of dimension"),
        (idx_header(0x08, (3, 4)) + GOOD_DATA[:-1], "expected 12 bytes of data, found 11"),
        (idx_header(0x08, (3, 4)), "truncated: expected 12 bytes of data, found 0"),
        (idx_header(0x0E, (3,)) + bytes(17), "truncated: expected 24 bytes of data"),
        (idx_header(0x08, (3, 4)) + GOOD_DATA + b"\x00", "trailing bytes"),
        (idx_header(0x08, (3, 4)) + GOOD_DATA * 100, "trailing bytes"),
    ],
)
@pytest.mark.parametrize("gz", [False, True], ids=["raw", "gzip"])
def test_read_idx_rejects_malformed(tmp_path, data, match, gz):
    path = write(tmp_path, data, gz=gz)
    with pytest.raises(ValueError, match=match) as excinfo:
        read_idx(path)
    assert str(path) in str(excinfo.value)


def gzip_of_good_file() -> bytes:
    return gzip.compress(idx_header(0x08, (3, 4)) + GOOD_DATA, mtime=0)


def corrupt_deflate(data: bytes) -> bytes:
    out = bytearray(data)
    for i in range(10, len(out) - 8):  # between the gzip header and trailer
        out[i] ^= 0xFF
    return bytes(out)


def corrupt_crc(data: bytes) -> bytes:
    out = bytearray(data)
    out[-8] ^= 0x01
    return bytes(out)


@pytest.mark.parametrize(
    "mangle",
    [
        pytest.param(lambda d: d[: len(d) // 2], id="truncated_stream"),
        pytest.param(lambda d: d[:-1], id="truncated_trailer"),
        pytest.param(lambda d: d[:5], id="truncated_header"),
        pytest.param(lambda d: b"\x1f\x8b", id="magic_only"),
        pytest.param(lambda d: b"\x1f\x8b\x07" + d[3:], id="bad_method"),
        pytest.param(corrupt_deflate, id="bad_deflate"),
        pytest.param(corrupt_crc, id="bad_crc"),
        pytest.param(lambda d: d + b"garbage!", id="garbage_after_member"),
    ],
)
def test_read_idx_rejects_corrupt_gzip(tmp_path, mangle):
    path = write(tmp_path, mangle(gzip_of_good_file()))
    with pytest.raises(ValueError, match="gzip stream is corrupt") as excinfo:
        read_idx(path)
    assert str(path) in str(excinfo.value)


def test_read_idx_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError):
        read_idx(tmp_path / "missing.idx")


def run_bounded(path: Path, match: str) -> tuple[float, int]:
    """Expect read_idx(path) to fail; return its run time and peak allocation."""
    tracemalloc.start()
    start = time.perf_counter()
    try:
        with pytest.raises(ValueError, match=match):
            read_idx(path)
        return time.perf_counter() - start, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


@pytest.mark.parametrize("gz", [False, True], ids=["raw", "gzip"])
def test_read_idx_huge_header_fails_fast(tmp_path, gz):
    data = idx_header(0x08, (2**20, 2**20, 2**10)) + bytes(64)
    elapsed, peak = run_bounded(write(tmp_path, data, gz=gz), "more than the limit")
    assert elapsed < 1.0
    assert peak < 1 << 20


@pytest.mark.parametrize("gz", [False, True], ids=["raw", "gzip"])
def test_read_idx_memory_follows_actual_size(tmp_path, gz):
    # 1 GiB declared (under the cap) but 100 bytes present: nothing declared-
    # size may be allocated up front.
    data = idx_header(0x08, (2**15, 2**15)) + bytes(100)
    elapsed, peak = run_bounded(write(tmp_path, data, gz=gz), "found 100")
    assert elapsed < 1.0
    assert peak < 8 << 20


def test_read_idx_bounded_inflate(tmp_path):
    # A tiny header followed by 64 MiB of zeros that compress to ~64 KiB: the
    # reader must stop one byte past the declared size, not inflate it all.
    bomb = gzip.compress(idx_header(0x08, (4,)) + bytes(64 << 20), compresslevel=1)
    elapsed, peak = run_bounded(write(tmp_path, bomb), "trailing bytes")
    assert elapsed < 1.0
    assert peak < 8 << 20


# --- read_idx: property-based --------------------------------------------------

VALID_FILES = [
    idx_bytes(sample("u1", (3, 4))),
    idx_bytes(sample("i2", (2, 3))),
    idx_bytes(sample("f8", (2,))),
    idx_bytes(sample("i4", (1, 2, 1, 2))),
]


@pytest.fixture(scope="module")
def fuzz_path(tmp_path_factory):
    return tmp_path_factory.mktemp("fuzz") / "fuzz.idx"


def check_read(path: Path) -> None:
    """read_idx must return an array or raise ValueError, nothing else."""
    try:
        result = read_idx(path)
    except ValueError:
        return
    assert isinstance(result, np.ndarray)
    assert 1 <= result.ndim <= 4


@settings(max_examples=200, deadline=None)
@given(
    base=st.sampled_from(VALID_FILES),
    gz=st.booleans(),
    edit_compressed=st.booleans(),
    edits=st.lists(st.tuples(st.integers(0, 255), st.integers(0, 255)), max_size=4),
    cut=st.one_of(st.none(), st.integers(0, 255)),
    tail=st.binary(max_size=4),
)
def test_read_idx_mutations(fuzz_path, base, gz, edit_compressed, edits, cut, tail):
    def mutate(data: bytes) -> bytes:
        out = bytearray(data)
        for index, value in edits:
            out[index % len(out)] = value
        if cut is not None:
            out = out[: cut % (len(out) + 1)]
        return bytes(out) + tail

    if gz and edit_compressed:
        data = mutate(gzip.compress(base, mtime=0))
    elif gz:
        data = gzip.compress(mutate(base), mtime=0)
    else:
        data = mutate(base)
    fuzz_path.write_bytes(data)
    check_read(fuzz_path)


@settings(max_examples=200, deadline=None)
@given(data=st.binary(max_size=64), prefix=st.sampled_from([b"", b"\x00\x00", b"\x1f\x8b"]))
def test_read_idx_arbitrary_bytes(fuzz_path, data, prefix):
    fuzz_path.write_bytes(prefix + data)
    check_read(fuzz_path)
