"""Coverage-guided fuzzing of ``fastmlp.load`` (model ``.npz`` files) with atheris.

Every input is written to a file and loaded. The contract under test, from ``load``'s
docstring and the format notes in ``fastmlp/persistence.py``:

* a damaged, truncated or hostile file raises ValueError (OSError only for I/O
  problems), never another exception type, a crash or a huge allocation;
* a file that loads gives a working model: ``predict``, ``decision_function`` and (for
  cross-entropy) ``predict_proba`` run on a few rows, on the serial path (<= 64 rows) and
  the parallel one, and return arrays of the right shapes with labels from ``classes_``;
* a loaded model saves and loads again to the same layers, parameters, labels and history
  (an int8 model: the same integer weights, scales, biases, zero point and labels).

Any other outcome raises, and atheris reports it as a crash with the input saved to
``crash-<sha1>`` under the artifact directory.

Inputs are whole files, so a crash file reproduces with ``fastmlp.load(path)`` alone. Most
mutations are structure-aware (see ``mutate``): they unpack the zip archive, change one
member, its ``.npy`` header, an array's values or the ``meta`` JSON, and pack it again with
valid CRCs, because byte flips inside a zip member mostly stop at the CRC check.

Usage (libFuzzer flags pass through)::

    PYTHONPATH=. python fuzz/fuzz_model.py -max_total_time=60
    PYTHONPATH=. python fuzz/fuzz_model.py CORPUS_DIR -runs=20000
    PYTHONPATH=. python fuzz/fuzz_model.py path/to/crash-1234abcd   # rerun one input

Without a corpus directory, the seeds (small models saved by this script: float32 and
float64, cross-entropy and MSE, int, uint, float, bool and str labels, with and without
Adam or SGD state, and one int8 model) and the corpus grown from them live in
``$FASTMLP_FUZZ_DIR/model`` (default ``<tmp>/fastmlp-fuzz/model``), and crash files go to
``$FASTMLP_FUZZ_DIR/model-artifacts/`` unless ``-artifact_prefix=`` is given.
"""

from __future__ import annotations

import io
import json
import os
import random
import sys
import tempfile
import warnings
import zipfile
from typing import Any

import numpy as np
from numpy.lib import format as npy_format

try:
    import atheris
except ImportError:  # pragma: no cover - a hint, not a feature
    sys.exit("fuzz_model.py needs atheris: python -m pip install atheris")

# Two OpenMP threads whatever the machine, so prediction's parallel path runs. libgomp
# reads this when the extension loads, so before fastmlp is imported.
os.environ.setdefault("OMP_NUM_THREADS", "2")

# Instrument fastmlp's Python modules, so that libFuzzer sees which of the loader's checks
# an input reaches and keeps the inputs that get further.
with atheris.instrument_imports(include=["fastmlp"]):
    import fastmlp

# Exception type names to pass over, comma-separated: a bug already reported need not stop
# the search for the next one (e.g. FASTMLP_FUZZ_KNOWN=TokenError,MemoryError).
KNOWN = frozenset(filter(None, os.environ.get("FASTMLP_FUZZ_KNOWN", "").split(",")))
FUZZ_DIR = os.environ.get("FASTMLP_FUZZ_DIR") or os.path.join(
    tempfile.gettempdir(), "fastmlp-fuzz"
)
# Inputs up to 64 KiB leave room for models of a few thousand parameters.
DEFAULT_MAX_LEN = 1 << 16
# Rows predicted: on the calling thread (<= model.SERIAL_ROWS) and in parallel.
ROW_COUNTS = (3, 70)


def scratch_file(suffix: str) -> tuple[int, str]:
    """A file descriptor and a path that opens it, rewritten for every input.

    fastmlp.load opens files by name. An in-memory file (Linux) is fastest and, since
    libFuzzer ends the process without Python's clean-up, the only kind that never
    outlives it.
    """
    if hasattr(os, "memfd_create") and os.path.isdir("/proc/self/fd"):
        fd = os.memfd_create(f"fastmlp-fuzz-{suffix}")
        return fd, f"/proc/self/fd/{fd}"
    fd, path = tempfile.mkstemp(prefix="fastmlp-fuzz-", suffix=f".{suffix}")
    return fd, path


INPUT_FD, INPUT = scratch_file("input")


# -- seeds ---------------------------------------------------------------------------------
def seed_models() -> dict[str, fastmlp.MLP]:
    """Small trained models covering the format's variants."""
    rng = np.random.default_rng(0)
    X = rng.standard_normal((12, 3))
    codes = np.arange(12) % 3
    models = {
        "f32-xent-adam-int": fastmlp.train(X, codes, hidden=(4,), epochs=1, seed=0),
        "f64-mse-sgd-str": fastmlp.train(
            X,
            np.array(["cat", "dog", "emu"])[codes],
            hidden=(2,),
            loss="mse",
            activation="tanh",
            optimizer="sgd",
            dtype=np.float64,
            epochs=1,
            seed=0,
        ),
        "f32-xent-sigmoid-bool-2hidden": fastmlp.train(
            X, codes % 2 == 0, hidden=(3, 2), activation="sigmoid", epochs=2, seed=0
        ),
        "f64-mse-relu-out-uint": fastmlp.train(
            X,
            codes.astype(np.uint16),
            hidden=(2,),
            loss="mse",
            output_activation="relu",
            dtype=np.float64,
            epochs=1,
            seed=0,
        ),
        "f32-xent-float-labels": fastmlp.train(X, codes * 0.5 - 1, hidden=(2,), epochs=1, seed=0),
    }
    return models


def write_seeds(directory: str) -> None:
    """Save the seed models into ``directory``, one of them also without optimizer state."""
    os.makedirs(directory, exist_ok=True)
    models = seed_models()
    for name, model in models.items():
        fastmlp.save(model, os.path.join(directory, f"{name}.npz"))
    fastmlp.save(
        models["f32-xent-adam-int"],
        os.path.join(directory, "f32-xent-no-optimizer.npz"),
        optimizer_state=False,
    )
    # An int8 model (fastmlp.quantize), read by the same loader.
    calibration = np.random.default_rng(1).standard_normal((40, 3))
    fastmlp.quantize(models["f32-xent-adam-int"], calibration).save(
        os.path.join(directory, "int8.npz")
    )


# -- the target ----------------------------------------------------------------------------
def round_trip(model):
    """``model`` saved and loaded again, its layers checked."""
    # fastmlp.save writes a temporary file beside its target and renames it, so the round
    # trip needs a real directory; removed at once, as libFuzzer's exit skips clean-up.
    with tempfile.TemporaryDirectory(prefix="fastmlp-fuzz-") as tmp:
        model.save(os.path.join(tmp, "model.npz"))
        again = fastmlp.load(os.path.join(tmp, "model.npz"))
    assert again.layer_sizes == model.layer_sizes, (again.layer_sizes, model.layer_sizes)
    return again


def check_int8_model(model: fastmlp.QuantizedMLP) -> None:
    """Raise unless a loaded int8 ``model`` predicts, and saves and loads again, faithfully."""
    n_in, k = model.layer_sizes[0], model.layer_sizes[-1]
    model.classes_.tolist()
    for rows in ROW_COUNTS:
        X = np.linspace(-2, 2, rows * n_in).reshape(rows, n_in).astype(np.float32)
        proba = model.predict_proba(X)
        assert proba.shape == (rows, k) and np.isfinite(proba).all(), "int8 probabilities"
        assert np.isin(model.predict(X), model.classes_).all(), "a predicted label is not a class"
    again = round_trip(model)
    for a, b in zip(again.weights_q + again.weight_scales + again.biases,
                    model.weights_q + model.weight_scales + model.biases):  # fmt: skip
        assert np.array_equal(a, b), "an int8 array changed in a round trip"
    assert np.array_equal(again.input_scales, model.input_scales), "input scales changed"
    assert again.input_zero_point == model.input_zero_point, "the zero point changed"
    assert np.array_equal(again.classes_, model.classes_), "the labels changed"


def check_model(model: fastmlp.MLP) -> None:
    """Raise unless a loaded ``model`` predicts, and saves and loads again, faithfully."""
    if isinstance(model, fastmlp.QuantizedMLP):
        check_int8_model(model)
        return
    n_in, k = model.layer_sizes[0], model.layer_sizes[-1]
    # Labels must be usable as Python objects (printing a prediction converts them).
    model.classes_.tolist()
    for rows in ROW_COUNTS:
        X = np.linspace(-2, 2, rows * n_in).reshape(rows, n_in).astype(model.dtype)
        try:
            labels = model.predict(X)
        except ValueError as exc:
            # Finite parameters near the dtype's limit: a documented refusal, not NaN.
            if "sums overflow" not in str(exc):
                raise
            break
        assert labels.shape == (rows,), labels.shape
        assert np.isin(labels, model.classes_).all(), "a predicted label is not a class"
        out = model.decision_function(X)
        assert out.shape == (rows, k) and out.dtype == model.dtype, (out.shape, out.dtype)
        if model.loss == "cross_entropy":
            proba = model.predict_proba(X)
            assert proba.shape == (rows, k), proba.shape
    again = round_trip(model)
    assert np.array_equal(again.params_, model.params_), "params changed in a round trip"
    assert again.classes_.dtype == model.classes_.dtype, "the labels' dtype changed"
    assert np.array_equal(again.classes_, model.classes_), "the labels changed"
    assert json.dumps(again.history) == json.dumps(model.history), "the history changed"


def test_one_input(data: bytes) -> None:
    """Fuzz target: load ``data`` as a model file; only ValueError and OSError may escape."""
    os.ftruncate(INPUT_FD, 0)
    os.pwrite(INPUT_FD, data, 0)
    try:
        model = fastmlp.load(INPUT)
    except (ValueError, OSError):
        return  # the documented answers to a damaged file
    except Exception as exc:
        if type(exc).__name__ in KNOWN:
            return
        raise
    # From here on every exception is a bug, ValueError included: the file was accepted.
    try:
        check_model(model)
    except Exception as exc:
        if type(exc).__name__ in KNOWN:
            return
        raise


# -- structure-aware mutations -------------------------------------------------------------
Members = list[tuple[str, bytes, int]]  # (name, content, zipfile compression method)

# Values that probe the loader's type and range checks.
JSON_VALUES: list[Any] = [
    None, True, False, 0, 1, -1, 2, 3, 64, 65, 2**31 - 1, 2**31, 2**53 + 1, 2**63 - 1,
    2**63, 2**64, 10**30, -(2**63), 0.5, 1.0, -0.0, 1e308, float("nan"), float("inf"),
    "", "relu", "tanh", "sigmoid", "identity", "softmax", "cross_entropy", "mse",
    "float32", "float64", "float16", "<i8", "<U0", "<U5000", "|b1", ">f8", "O", "V8",
    "int", "uint", "float", "bool", "str", "adam", "sgd", [], [1], [3, 2], [3, 4, 3],
    [1, 1], [2**31 - 1, 2], [0, 2], [-1, 2], [3.0, 2], ["3", 2], [True, 2], {},
    {"name": "adam", "t": 2**63 - 1}, {"name": "sgd", "t": 0}, {"name": "adam"},
    {"epoch": [1, 2]}, {"loss": ["x"]}, {"loss": [True]}, {"x": [1e308, -1e308]},
]  # fmt: skip
DESCRS = [
    "<f4", ">f4", "<f8", ">f8", "<f2", "<i8", ">i8", "<u8", "|b1", "<U1", "<U13", "<c8",
    "|O", "|V8", "|S4", "<M8[s]", [("a", "<f4")], ("<f4", (2,)), "<U0", "|u1",
]  # fmt: skip


def unzip(data: bytes) -> Members | None:
    """The members of a zip archive, or None if it is not one zipfile can read."""
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as zf:
            return [(i.filename, zf.read(i), i.compress_type) for i in zf.infolist()]
    except Exception:
        return None


def rezip(members: Members) -> bytes:
    """A zip archive of ``members``, with correct CRCs (duplicate names kept)."""
    buf = io.BytesIO()
    with warnings.catch_warnings(), zipfile.ZipFile(buf, "w") as zf:
        warnings.simplefilter("ignore")  # "Duplicate name": wanted here
        for name, content, method in members:
            info = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = method
            zf.writestr(info, content)
    return buf.getvalue()


def split_npy(content: bytes) -> tuple[dict[str, Any], bytes] | None:
    """(header dict, data bytes) of a .npy file, or None."""
    readers = {(1, 0): npy_format.read_array_header_1_0, (2, 0): npy_format.read_array_header_2_0}
    try:
        f = io.BytesIO(content)
        shape, fortran, dtype = readers[npy_format.read_magic(f)](f)
    except Exception:
        return None
    header = {"descr": npy_format.dtype_to_descr(dtype), "fortran_order": fortran}
    header["shape"] = shape
    return header, content[f.tell() :]


def join_npy(header: dict[str, Any], data: bytes) -> bytes:
    """A .npy file of ``header`` (written as is, even if inconsistent) and ``data``."""
    # By hand, not with numpy's writer, which would refuse or fix an inconsistent header.
    body = repr(header).encode("latin1")
    # Magic (6 bytes), version (2) and length (2 or 4), then the header padded so the data
    # starts at a multiple of 64, as numpy writes it.
    big = len(body) + 64 >= 2**16
    pad = -(6 + 2 + (4 if big else 2) + len(body) + 1) % 64
    body += b" " * pad + b"\n"
    if big:
        prefix = npy_format.magic(2, 0) + len(body).to_bytes(4, "little")
    else:
        prefix = npy_format.magic(1, 0) + len(body).to_bytes(2, "little")
    return prefix + body + data


def npy_bytes(array: np.ndarray) -> bytes:
    """``array`` as a .npy file."""
    f = io.BytesIO()
    np.save(f, array, allow_pickle=False)
    return f.getvalue()


def load_npy(content: bytes) -> np.ndarray | None:
    """The array of a .npy file, or None; None too for one too big to mutate quickly.

    A zero-size dtype (``<U0``) makes an array of 2**62 elements cost no memory, but numpy
    then takes hours to write it back: such arrays are left to the header mutations.
    """
    try:
        array = np.load(io.BytesIO(content), allow_pickle=False)
    except Exception:
        return None
    return array if array.size <= len(content) else None


def mutate_json(rng: random.Random, meta: Any) -> Any:
    """One change to the ``meta`` object: a value replaced, a key removed or added."""
    if not isinstance(meta, dict) or not meta:
        return rng.choice(JSON_VALUES + [meta])
    key = rng.choice(sorted(meta))
    choice = rng.random()
    if choice < 0.6:
        meta[key] = rng.choice(JSON_VALUES)
    elif choice < 0.7:
        del meta[key]
    elif choice < 0.8:
        meta[rng.choice(["extra", "Layer_sizes", key + " "])] = rng.choice(JSON_VALUES)
    elif isinstance(meta[key], list) and meta[key]:
        i = rng.randrange(len(meta[key]))
        meta[key][i] = rng.choice(JSON_VALUES)
    elif isinstance(meta[key], dict) and meta[key]:
        meta[key][rng.choice(sorted(meta[key]))] = rng.choice(JSON_VALUES)
    else:
        meta[key] = [meta[key]]
    return meta


SIZED_ARRAYS = ("classes", "params", "opt_state1", "opt_state2")


def resize(rng: random.Random, members: Members, meta: dict[str, Any]) -> Members:
    """New layer sizes with everything that depends on them made consistent, or not.

    meta's n_params and the .npy headers of params, opt_state1/2 and classes are set to
    match the new sizes; the data is kept, cut or padded, so the headers (which decide
    what numpy allocates) and the data disagree unless ``pad`` fills it.
    """
    n_layers = rng.randint(1, 3)
    big = [2**31 - 1, 2**20, 50_000, 46_341, 100_000]
    sizes = [rng.choice(big) if rng.random() < 0.2 else rng.randint(1, 6)]
    for _ in range(n_layers):
        sizes.append(rng.choice(big) if rng.random() < 0.2 else rng.randint(1, 6))
    n = sum(a * b + b for a, b in zip(sizes, sizes[1:]))
    meta.update(layer_sizes=sizes, n_params=n)
    pad = rng.random() < 0.5 and n < 4096
    out = []
    for name, content, method in members:
        key = name.removesuffix(".npy")
        classes = load_npy(content) if key == "classes" else None
        parts = split_npy(content) if key in SIZED_ARRAYS else None
        k = sizes[-1]
        if classes is not None and classes.ndim == 1 and k <= 4096:
            # Distinct labels of the same dtype, as many as the new outputs.
            labels = [str(i) for i in range(k)] if classes.dtype.kind == "U" else range(k)
            content = npy_bytes(np.array(labels).astype(classes.dtype))
        elif parts is not None:
            header, data = parts
            count = 0 if key == "opt_state2" and len(data) == 0 else n
            header["shape"] = (k,) if key == "classes" else (count,)
            if pad:
                itemsize = np.dtype(header["descr"]).itemsize
                data = (data * (count * itemsize // max(len(data), 1) + 1))[: count * itemsize]
            content = join_npy(header, data)
        out.append((name, content, method))
    return out


def mutate_member(rng: random.Random, members: Members, max_size: int) -> Members:
    """One structured change to one member: its bytes, header, values or meta."""
    i = rng.randrange(len(members))
    name, content, method = members[i]
    choice = rng.random()
    parts = split_npy(content)
    if name == "meta.npy" and choice < 0.6:
        meta_array = load_npy(content)
        text = str(meta_array[()]) if meta_array is not None and meta_array.ndim == 0 else ""
        try:
            meta = json.loads(text)
        except ValueError:
            meta = None
        if isinstance(meta, dict) and choice < 0.2:
            members = resize(rng, members, meta)
            i = next(j for j, m in enumerate(members) if m[0] == name)
            new_text = json.dumps(meta)
        elif choice < 0.45:
            new_text = json.dumps(mutate_json(rng, meta))
        else:  # libFuzzer's byte mutations of the JSON text
            raw = atheris.Mutate(text.encode(), max(64, 2 * len(text)))
            new_text = raw.decode("utf-8", "replace")
        content = npy_bytes(np.array(new_text))
    elif parts is not None and choice < 0.35:
        header, data = parts
        field = rng.choice(["descr", "shape", "shape", "fortran_order", "data"])
        if field == "descr":
            header["descr"] = rng.choice(DESCRS)
        elif field == "shape":
            header["shape"] = rng.choice(
                [(), (0,), (1,), (2, 2), (2**31,), (2**62,), (-1,), (len(data) // 4,)]
                + [tuple(header["shape"]) + (1,), tuple(header["shape"])[:-1]]
            )
        elif field == "fortran_order":
            header["fortran_order"] = not header["fortran_order"]
        else:
            cut = rng.randint(0, len(data))
            data = data[:cut] if rng.random() < 0.5 else data + data[:cut]
        content = join_npy(header, data)
    elif choice < 0.6 and (array := load_npy(content)) is not None:
        content = npy_bytes(mutate_array(rng, array))
    else:
        content = atheris.Mutate(content, max(len(content) + 64, 128))
    members[i] = (name, content, method)
    return members


def mutate_array(rng: random.Random, array: np.ndarray) -> np.ndarray:
    """The array with other values, dtype, byte order or shape."""
    with np.errstate(all="ignore"):  # overflowing casts are intended
        return _mutate_array(rng, array)


def _mutate_array(rng: random.Random, array: np.ndarray) -> np.ndarray:
    choice = rng.random()
    if choice < 0.3 and array.size and array.dtype.kind in "biuf":
        array = array.copy()
        special = [np.nan, np.inf, -np.inf, 1e38, -1e38, 1e300, 0, -1, 2**62, 1]
        value = rng.choice(special)
        try:
            array.flat[rng.randrange(array.size)] = value
        except (OverflowError, ValueError):
            pass
        return array
    if choice < 0.4 and array.size > 1:
        array = array.copy()
        array.flat[rng.randrange(array.size)] = array.flat[0]  # duplicate labels
        return array
    if choice < 0.7:
        targets = ["<f4", ">f4", "<f8", ">f8", "<f2", "<i4", "<i8", "<u1", "|b1", "<U3"]
        try:
            return array.astype(rng.choice(targets))
        except (TypeError, ValueError):
            return array
    if choice < 0.85:
        return array.reshape(-1)[: rng.randint(0, max(array.size, 1))]
    return np.concatenate([array.reshape(-1), array.reshape(-1)[:3]])


def mutate_archive(rng: random.Random, members: Members) -> Members:
    """Members dropped, duplicated, renamed, added, reordered or compressed."""
    choice = rng.random()
    i = rng.randrange(len(members))
    if choice < 0.2 and len(members) > 1:
        del members[i]
    elif choice < 0.35:
        members.append(members[i])
    elif choice < 0.5:
        name, content, method = members[i]
        others = ["params.npy", "classes.npy", "meta.npy", "opt_state1.npy", "extra.npy"]
        members[i] = (rng.choice(others + [name.removesuffix(".npy")]), content, method)
    elif choice < 0.6:
        members.append(("opt_state2.npy", npy_bytes(np.zeros(0, np.float32)), 0))
    elif choice < 0.7:
        rng.shuffle(members)
    else:
        methods = [zipfile.ZIP_DEFLATED, zipfile.ZIP_STORED, zipfile.ZIP_BZIP2]
        method = rng.choice(methods)
        members = [(n, c, method if rng.random() < 0.5 else m) for n, c, m in members]
    return members


def mutate(data: bytes, max_size: int, seed: int) -> bytes:
    """libFuzzer's byte mutations a quarter of the time, structured ones otherwise."""
    rng = random.Random(seed)
    members = unzip(data) if rng.random() < 0.75 else None
    if members:
        try:
            if rng.random() < 0.8:
                members = mutate_member(rng, members, max_size)
            else:
                members = mutate_archive(rng, members)
            out = rezip(members)
            if len(out) <= max_size:
                return out
        except Exception:  # a mutation that could not be packed: fall back to bytes
            pass
    return atheris.Mutate(data, max_size)


def limit_address_space() -> None:
    """Make an allocation of more than FASTMLP_FUZZ_AS_MB (default 1024) MiB fail.

    The loader promises never to allocate much for a small file, but on Linux a huge
    allocation that is never touched succeeds and costs nothing, so without a limit the
    fuzzer would not notice one. With it, such an allocation raises MemoryError, which
    the target reports.
    """
    try:
        import resource

        with open("/proc/self/status") as f:
            vm_kb = next(int(line.split()[1]) for line in f if line.startswith("VmSize:"))
    except (ImportError, OSError, StopIteration):
        return  # not Linux: no limit
    headroom = int(os.environ.get("FASTMLP_FUZZ_AS_MB", "1024")) << 20
    resource.setrlimit(resource.RLIMIT_AS, (vm_kb * 1024 + headroom, resource.RLIM_INFINITY))


def main(argv: list[str]) -> None:
    """Seed the default corpus if no input is named, then hand over to libFuzzer."""
    args = list(argv)
    positional = [a for a in args[1:] if not a.startswith("-")]
    if not positional:
        corpus = os.path.join(FUZZ_DIR, "model")
        write_seeds(corpus)
        args.append(corpus)
    elif all(os.path.isdir(p) for p in positional):
        seed_dir = os.path.join(FUZZ_DIR, "model-seeds")
        write_seeds(seed_dir)
        args.append(seed_dir)
    if not any(a.startswith("-artifact_prefix=") for a in args):
        artifacts = os.path.join(FUZZ_DIR, "model-artifacts")
        os.makedirs(artifacts, exist_ok=True)
        args.insert(1, f"-artifact_prefix={artifacts}{os.sep}")
    if not any(a.startswith("-max_len=") for a in args):
        args.insert(1, f"-max_len={DEFAULT_MAX_LEN}")
    # numpy warns about odd .npy headers ("created on Python 2") and casts thousands of
    # times a second; warnings are not failures here, and the noise would hide the report.
    warnings.simplefilter("ignore")
    # Warm up what prediction starts once (OpenMP and BLAS threads) before the limit.
    check_model(seed_models()["f32-xent-adam-int"])
    limit_address_space()
    atheris.Setup(args, test_one_input, custom_mutator=mutate)
    atheris.Fuzz()


if __name__ == "__main__":
    main(sys.argv)
