"""C export: the generated C, compiled by the system compiler, reproduces the model.

Every test compiles the export with warnings as errors (``-std=c99 -Wall -Wextra -pedantic
-Werror`` and a few stricter ones), links a small driver that runs the row and batch
functions over rows read from a file, and compares with ``predict_proba`` / ``predict`` /
``decision_function``.
"""

from __future__ import annotations

import os
import re
import shutil
import stat
import subprocess
from pathlib import Path

import numpy as np
import pytest

import fastmlp
import fastmlp.export_c as export_c
from fastmlp import MLP

CC = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")
pytestmark = pytest.mark.skipif(CC is None, reason="no C compiler (cc, gcc or clang) on PATH")

STRICT = ["-std=c99", "-Wall", "-Wextra", "-pedantic", "-Werror"]
# Stricter still: a float model that slipped into double arithmetic (-Wdouble-promotion), an
# implicit narrowing (-Wconversion), a public function without its prototype.
STRICTER = ["-Wshadow", "-Wstrict-prototypes", "-Wmissing-prototypes", "-Wconversion"]
STRICTER += ["-Wdouble-promotion", "-Wcast-qual", "-Wvla"]
ATOL = {np.float32: 1e-5, np.float64: 1e-12}


def compile_c(directory: Path, sources: list[str], out: str, *flags: str) -> Path:
    """Compile and link ``sources`` in ``directory`` into ``out``; fail on any warning."""
    cmd = [CC, *STRICT, *STRICTER, "-O2", *flags, *sources, "-o", out, "-lm"]
    proc = subprocess.run(cmd, cwd=directory, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0 and not proc.stderr, f"{' '.join(cmd)}\n{proc.stderr}"
    return directory / out


def driver_source(name: str, kind: str, real: str) -> str:
    """A program ``driver X.bin N OUT.bin`` that runs the exported row and batch functions.

    OUT.bin holds the row form's outputs, the batch form's, then (classifiers) the row
    form's class indices and the batch form's.
    """
    N = name.upper()
    if kind == "regressor":
        row = f"{name}_predict(x + r * F, out_row + r * K);"
        batch = f"{name}_predict_batch(n, x, out_batch);"
    else:
        scores = "predict_proba" if kind == "proba" else "decision_function"
        row = (
            f"{name}_{scores}(x + r * F, out_row + r * K);\n"
            f"        cls_row[r] = {name}_predict(x + r * F);"
        )
        batch = (
            f"{name}_{scores}_batch(n, x, out_batch);\n    {name}_predict_batch(n, x, cls_batch);"
        )
    return f"""\
#include <stdio.h>
#include <stdlib.h>
#include "{name}.h"

int main(int argc, char **argv)
{{
    const size_t F = {N}_N_FEATURES, K = {N}_N_OUTPUTS;
    size_t n, r;
    {real} *x, *out_row, *out_batch;
    int *cls_row, *cls_batch;
    FILE *f;
    if (argc != 4) return 2;
    n = (size_t)strtoul(argv[2], NULL, 10);
    x = malloc(n * F * sizeof *x);
    out_row = malloc(n * K * sizeof *out_row);
    out_batch = malloc(n * K * sizeof *out_batch);
    cls_row = calloc(n, sizeof *cls_row);
    cls_batch = calloc(n, sizeof *cls_batch);
    if (!x || !out_row || !out_batch || !cls_row || !cls_batch) return 3;
    f = fopen(argv[1], "rb");
    if (!f || fread(x, sizeof *x, n * F, f) != n * F) return 4;
    fclose(f);
    for (r = 0; r < n; r++) {{
        {row}
    }}
    {batch}
    f = fopen(argv[3], "wb");
    if (!f) return 5;
    fwrite(out_row, sizeof *out_row, n * K, f);
    fwrite(out_batch, sizeof *out_batch, n * K, f);
    fwrite(cls_row, sizeof *cls_row, n, f);
    fwrite(cls_batch, sizeof *cls_batch, n, f);
    fclose(f);
    free(x);
    free(out_row);
    free(out_batch);
    free(cls_row);
    free(cls_batch);
    return 0;
}}
"""


def _kind(model: MLP) -> str:
    if model.is_regressor:
        return "regressor"
    return "proba" if model.loss == "cross_entropy" else "scores"


class Exported:
    """A model exported to ``directory`` and linked with the driver."""

    def __init__(self, model: MLP, directory: Path, name: str = "model", *flags: str):
        self.model = model
        self.directory = directory
        self.real = "float" if model.dtype == np.float32 else "double"
        model.to_c(directory, name)
        (directory / "driver.c").write_text(driver_source(name, _kind(model), self.real))
        self.exe = compile_c(directory, ["driver.c", f"{name}.c"], "driver", *flags)

    def run(self, X: np.ndarray):
        """(row outputs, batch outputs, row classes, batch classes) for the rows of X."""
        X = np.ascontiguousarray(X, dtype=self.model.dtype)
        n, k = X.shape[0], self.model.layer_sizes[-1]
        X.tofile(self.directory / "x.bin")
        proc = subprocess.run(
            [str(self.exe), "x.bin", str(n), "out.bin"],
            cwd=self.directory,
            capture_output=True,
            timeout=60,
        )
        assert proc.returncode == 0, proc
        raw = (self.directory / "out.bin").read_bytes()
        size = n * k * self.model.dtype.itemsize
        outs = [np.frombuffer(raw[i * size : (i + 1) * size], self.model.dtype) for i in (0, 1)]
        ints = np.frombuffer(raw[2 * size :], np.intc)
        return outs[0].reshape(n, k), outs[1].reshape(n, k), ints[:n], ints[n:]


def random_model(
    sizes,
    *,
    activation="relu",
    loss="cross_entropy",
    output_activation=None,
    dtype=np.float32,
    classes=None,
    seed=0,
) -> MLP:
    """A model with random weights scaled so every unit works in its useful range."""
    rng = np.random.default_rng(seed)
    weights = [
        rng.standard_normal((a, b)) * np.sqrt(2.0 / a) for a, b in zip(sizes[:-1], sizes[1:])
    ]
    biases = [rng.standard_normal(b) * 0.1 for b in sizes[1:]]
    if classes is None and loss != "squared_error":
        classes = np.array([f"class {i}" for i in range(sizes[-1])])
    return MLP.from_weights(
        weights,
        biases,
        activation=activation,
        loss=loss,
        output_activation=output_activation,
        classes=classes,
        dtype=dtype,
    )


def inputs(n_features: int, n: int = 9, seed: int = 1, dtype=np.float32) -> np.ndarray:
    """Rows with some exact zeros (the kernel skips them) among normal values."""
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, n_features))
    X[rng.random(X.shape) < 0.3] = 0.0
    return X.astype(dtype)


def check_against_model(exported: Exported, X: np.ndarray) -> None:
    model = exported.model
    atol = ATOL[model.dtype.type]
    out_row, out_batch, cls_row, cls_batch = exported.run(X)
    np.testing.assert_array_equal(out_row, out_batch)  # the batch form is the row form
    if model.is_regressor:
        expected = model.predict(X).reshape(X.shape[0], -1)
    elif model.loss == "cross_entropy":
        expected = model.predict_proba(X)
        np.testing.assert_allclose(out_row.sum(axis=1), 1.0, atol=atol)
    else:
        expected = model.decision_function(X)
    np.testing.assert_allclose(out_row, expected, rtol=0, atol=atol)
    if not model.is_regressor:
        np.testing.assert_array_equal(cls_row, cls_batch)
        np.testing.assert_array_equal(model.classes_[cls_row], model.predict(X))


# --------------------------------------------------------------------------- numbers


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["float32", "float64"])
@pytest.mark.parametrize("activation", ["relu", "tanh", "sigmoid"])
@pytest.mark.parametrize(
    "hidden", [(), (1,), (17,), (3, 33), (33, 17, 3, 1)], ids=lambda h: "-".join(map(str, h))
)
def test_classifier_matches_predict_proba(tmp_path, activation, hidden, dtype):
    model = random_model((9, *hidden, 3), activation=activation, dtype=dtype)
    exported = Exported(model, tmp_path)
    X = inputs(9, dtype=dtype)
    check_against_model(exported, X)
    check_against_model(exported, X[:1])  # batch of one row


def test_mnist_sized_classifier_under_march_native(tmp_path):
    # The benchmark's shape and flags: -O3 -march=native vectorises the axpy loops (on this
    # machine with AVX-512); results must not change beyond float32 rounding.
    model = random_model((784, 128, 64, 10), seed=3)
    exported = Exported(model, tmp_path, "mnist", "-O3", "-march=native")
    X = np.clip(inputs(784, n=20, seed=4), 0, 1)  # pixel-like: many zeros
    check_against_model(exported, X)


@pytest.mark.parametrize("activation", ["relu", "tanh"])
def test_zero_inputs_are_skipped_where_it_pays(tmp_path, activation):
    # The first layer always skips zero inputs; a hidden layer only after ReLU and when
    # wide (its row of W outweighs a mispredicted branch). Both kernels give the same sums.
    model = random_model((9, 5, 256, 3), activation=activation)
    check_against_model(Exported(model, tmp_path), inputs(9, n=12))
    source = (tmp_path / "model.c").read_text()
    assert "model_dense_skip(9, 5, " in source
    wide = "model_dense_skip(5, 256, " if activation == "relu" else "model_dense(5, 256, "
    assert wide in source
    assert "model_dense(256, 3, " in source


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["float32", "float64"])
@pytest.mark.parametrize("output_activation", ["identity", "relu", "tanh", "sigmoid"])
def test_mse_classifier_gives_decision_function(tmp_path, output_activation, dtype):
    model = random_model(
        (6, 5, 4), loss="mse", output_activation=output_activation, activation="tanh", dtype=dtype
    )
    check_against_model(Exported(model, tmp_path), inputs(6, dtype=dtype))


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["float32", "float64"])
@pytest.mark.parametrize("n_outputs", [1, 3])
@pytest.mark.parametrize("output_activation", ["identity", "relu", "tanh", "sigmoid"])
def test_regressor_matches_predict(tmp_path, n_outputs, output_activation, dtype):
    model = random_model(
        (7, 17, n_outputs),
        loss="squared_error",
        output_activation=output_activation,
        activation="sigmoid",
        dtype=dtype,
    )
    exported = Exported(model, tmp_path, "reg")
    X = inputs(7, dtype=dtype)
    check_against_model(exported, X)
    check_against_model(exported, X[:1])


def test_trained_models_match(tmp_path):
    rng = np.random.default_rng(5)
    X = rng.standard_normal((200, 8)).astype(np.float32)
    y = np.where(X[:, 0] + X[:, 1] > 0, "yes", "no")
    clf = fastmlp.train(X, y, hidden=(16, 8), epochs=3, seed=0, n_threads=1)
    (tmp_path / "clf").mkdir()
    check_against_model(Exported(clf, tmp_path / "clf"), X)
    targets = np.stack([X[:, 0] - X[:, 2], X[:, 3]], axis=1)
    reg = fastmlp.train(X, targets, loss="squared_error", hidden=(12,), epochs=3, seed=0)
    (tmp_path / "reg").mkdir()
    check_against_model(Exported(reg, tmp_path / "reg"), X)


def test_softmax_is_stable_for_huge_logits(tmp_path):
    # Logits of +-1e4: exp without the max subtracted would give inf / inf = NaN.
    W = np.array([[1e4, -1e4, 0.0], [0.0, 1e4, 1e4]], dtype=np.float32)
    model = MLP.from_weights([W], [np.zeros(3, np.float32)], classes=["a", "b", "c"])
    exported = Exported(model, tmp_path)
    X = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]], dtype=np.float32)
    out, _, cls, _ = exported.run(X)
    assert np.isfinite(out).all()
    np.testing.assert_allclose(out, model.predict_proba(X), atol=1e-6)
    assert list(cls) == [0, 1, 0]  # a tie (row 3: 1e4, 0, 1e4) goes to the first, as argmax


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["float32", "float64"])
def test_weights_round_trip_exactly(tmp_path, dtype):
    # The driver includes the generated .c, so it sees the static arrays, and compares them
    # bit for bit with the model's; extreme values included.
    info = np.finfo(dtype)
    special = np.array(
        [0.0, -0.0, 1.0, -1.0, 0.1, 1 / 3, info.max, -info.max, info.tiny, info.smallest_subnormal,
         -info.smallest_subnormal, info.eps, 1 + info.eps, 123456789.0, 1e-30, np.pi],
        dtype=dtype,
    )  # fmt: skip
    rng = np.random.default_rng(0)
    W0 = rng.standard_normal((4, 5)).astype(dtype)
    W0.ravel()[: special.size] = special
    W1 = (rng.standard_normal((5, 3)) * 1e-3).astype(dtype)
    b0, b1 = special[:5][::-1].copy(), rng.standard_normal(3).astype(dtype)
    model = MLP.from_weights([W0, W1], [b0, b1], dtype=dtype)
    model.to_c(tmp_path, "rt")
    real = "float" if dtype == np.float32 else "double"
    dump = f"""\
#include <stdio.h>
#include "rt.c"
int main(void)
{{
    FILE *f = fopen("dump.bin", "wb");
    if (!f) return 1;
    fwrite(rt_W0, sizeof({real}), 4 * 5, f);
    fwrite(rt_b0, sizeof({real}), 5, f);
    fwrite(rt_W1, sizeof({real}), 5 * 3, f);
    fwrite(rt_b1, sizeof({real}), 3, f);
    return fclose(f) != 0;
}}
"""
    (tmp_path / "dump.c").write_text(dump)
    exe = compile_c(tmp_path, ["dump.c"], "dump", "-Wno-missing-prototypes")
    assert subprocess.run([str(exe)], cwd=tmp_path, timeout=60).returncode == 0
    got = np.fromfile(tmp_path / "dump.bin", dtype=dtype)
    want = np.concatenate([W0.ravel(), b0, W1.ravel(), b1])
    np.testing.assert_array_equal(got.view(f"u{got.itemsize}"), want.view(f"u{want.itemsize}"))


def test_literals_ignore_numpy_print_options(tmp_path):
    # NumPy's legacy printing writes float32 scalars with 6 digits: not round-trip.
    model = random_model((5, 4, 3), dtype=np.float32)
    expected = export_c.generate_c(model)
    with np.printoptions(legacy="1.13", precision=3):
        assert export_c.generate_c(model) == expected
    assert "0.33333334f" in export_c._literals(np.array([1 / 3], np.float32), "f")


# --------------------------------------------------------------------------- the files


def test_header_declares_the_interface(tmp_path):
    model = random_model((5, 4, 3))
    header = Path(model.to_c(tmp_path, "net")[0]).read_text()
    assert "#define NET_N_FEATURES 5\n" in header
    assert "#define NET_N_OUTPUTS 3\n" in header
    assert "void net_predict_proba(const float *x, float *proba);" in header
    assert "int net_predict(const float *x);" in header
    assert "void net_predict_proba_batch(size_t n_rows, const float *x, float *proba);" in header
    assert "void net_predict_batch(size_t n_rows, const float *x, int *classes);" in header

    reg = random_model((5, 2), loss="squared_error", dtype=np.float64)
    header = Path(reg.to_c(tmp_path, "reg")[0]).read_text()
    assert "void reg_predict(const double *x, double *y);" in header
    assert "void reg_predict_batch(size_t n_rows, const double *x, double *y);" in header
    assert "#define REG_N_OUTPUTS 2\n" in header
    assert "proba" not in header and "Classes" not in header


def test_source_depends_on_nothing_and_writes_no_global(tmp_path):
    model = random_model((6, 5, 4, 3), activation="sigmoid")
    _, source_path = model.to_c(tmp_path, "m")
    source = Path(source_path).read_text()
    assert re.findall(r"#include\s*(\S+)", source) == ['"m.h"', "<math.h>"]
    header = (tmp_path / "m.h").read_text()
    assert re.findall(r"#include\s*(\S+)", header) == ["<stddef.h>"]
    for word in ("malloc", "calloc", "alloca", "free("):
        assert word not in source
    # Every file-scope object is static const; everything else static is a function.
    for line in source.splitlines():
        if line.startswith("static ") and not line.startswith("static const "):
            assert "(" in line, line
    assert "_MAX_WIDTH 5" in source  # buffers sized by the widest hidden layer


def test_two_models_link_into_one_program(tmp_path):
    a = random_model((4, 3, 2), seed=1)
    b = random_model((4, 6, 2), seed=2, dtype=np.float64)
    a.to_c(tmp_path, "first")
    b.to_c(tmp_path, "second")
    (tmp_path / "both.c").write_text(
        '#include "first.h"\n#include "second.h"\n'
        "int main(void)\n{\n    const float x[FIRST_N_FEATURES] = {1, 2, 3, 4};\n"
        "    const double y[SECOND_N_FEATURES] = {1, 2, 3, 4};\n"
        "    return first_predict(x) + 2 * second_predict(y);\n}\n"
    )
    exe = compile_c(tmp_path, ["both.c", "first.c", "second.c"], "both")
    code = subprocess.run([str(exe)], timeout=60).returncode
    x = np.array([[1, 2, 3, 4]])
    assert code == np.argmax(a.decision_function(x)) + 2 * np.argmax(b.decision_function(x))


@pytest.mark.skipif(shutil.which("c++") is None, reason="no C++ compiler (c++) on PATH")
def test_header_is_usable_from_cpp(tmp_path):
    # extern "C" in the header: a C++ program links against the C object.
    model = random_model((4, 3, 2), seed=1)
    model.to_c(tmp_path)
    compile_c(tmp_path, ["-c", "model.c"], "model.o")
    (tmp_path / "use.cpp").write_text(
        '#include "model.h"\nint main()\n{\n    const float x[MODEL_N_FEATURES] = {1, 2, 3, 4};\n'
        "    return model_predict(x);\n}\n"
    )
    cmd = ["c++", "-std=c++11", "-Wall", "-Wextra", "-pedantic", "-Werror", "use.cpp"]
    cmd += ["model.o", "-o", "use", "-lm"]
    proc = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0 and not proc.stderr, proc.stderr
    code = subprocess.run([str(tmp_path / "use")], timeout=60).returncode
    assert code == np.argmax(model.decision_function(np.array([[1, 2, 3, 4]])))


def test_labels_cannot_break_the_header(tmp_path):
    labels = np.array(
        ["a*/b", "/*c", "line\nbreak", "cr\rret", 'q"uote', "it's", "tri??/", "back\\",
         "é ü", "\u2028sep", "*/", "?", "", "  #define X 1"]
    )  # fmt: skip
    model = random_model((3, 4, len(labels)), classes=labels)
    exported = Exported(model, tmp_path)
    check_against_model(exported, inputs(3))
    header = (tmp_path / "model.h").read_text(encoding="ascii")
    comment = header[: header.index("*/") + 2]
    assert comment.count("/*") == 1  # the only comment opener is the first one
    assert header.index("*/") > header.index(f"{len(labels) - 1}: ")  # all labels inside it
    for i, label in enumerate(labels):
        line = f"     {i}: {export_c._comment_text(ascii(str(label)))}"
        assert line in [text.removesuffix(" */") for text in comment.splitlines()]
        # Undo the escapes: the comment shows the label as Python writes it.
        shown = line.split(": ", 1)[1].replace("*\\/", "*/").replace("/\\*", "/*")
        assert eval(shown) == label  # noqa: S307 - our own ascii()


@pytest.mark.parametrize("classes", [[3, 1, 2], [0.5, -1.0, 2.5]])
def test_numeric_labels_are_listed(tmp_path, classes):
    model = random_model((3, len(classes)), classes=np.array(classes))
    header = Path(model.to_c(tmp_path)[0]).read_text()
    for i, c in enumerate(model.classes_):
        assert f"     {i}: {c.item()!r}" in header


# --------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    "name",
    ["", "1model", "my-model", "my model", "model.h", "int", "static", "bool", "math", "stdio",
     "_model", "mödel", "a/b"],
)  # fmt: skip
def test_bad_names_are_refused(tmp_path, name):
    with pytest.raises(ValueError, match="name"):
        random_model((3, 2)).to_c(tmp_path, name)
    assert list(tmp_path.iterdir()) == []


def test_name_must_be_a_string(tmp_path):
    with pytest.raises(TypeError, match="name must be a string"):
        random_model((3, 2)).to_c(tmp_path, 7)


def test_directory_errors(tmp_path):
    model = random_model((3, 2))
    with pytest.raises(FileNotFoundError, match="does not exist"):
        model.to_c(tmp_path / "missing")
    (tmp_path / "file").write_text("x")
    with pytest.raises(NotADirectoryError, match="not a directory"):
        model.to_c(tmp_path / "file")
    (tmp_path / "model.h").mkdir()
    with pytest.raises(IsADirectoryError, match="is a directory"):
        model.to_c(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file", "model.h"]


def test_read_only_directory_is_refused(tmp_path, monkeypatch):
    # os.access answers for the real user; root may write anywhere, so the answer a
    # read-only directory gives everyone else is simulated.
    real_access = os.access
    monkeypatch.setattr(
        os,
        "access",
        lambda p, mode: False if os.fspath(p) == os.fspath(tmp_path) else real_access(p, mode),
    )
    with pytest.raises(PermissionError, match="not writable"):
        random_model((3, 2)).to_c(tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_non_finite_weights_are_refused(tmp_path):
    model = random_model((3, 4, 2))
    model.weights[1][2, 1] = np.nan
    with pytest.raises(ValueError, match="layer 2 .* NaN or infinite"):
        model.to_c(tmp_path)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("failing_call", [1, 2])
def test_failed_export_keeps_the_old_files(tmp_path, monkeypatch, failing_call):
    (tmp_path / "model.h").write_text("old header")
    (tmp_path / "model.c").write_text("old source")
    real_replace, calls = os.replace, []

    def replace(src, dst):
        calls.append(dst)
        if len(calls) == failing_call:
            raise OSError("disk full (simulated)")
        return real_replace(src, dst)

    monkeypatch.setattr(export_c.os, "replace", replace)
    with pytest.raises(OSError, match="simulated"):
        random_model((3, 2)).to_c(tmp_path)
    monkeypatch.undo()
    assert (tmp_path / "model.h").read_text() == "old header"
    assert (tmp_path / "model.c").read_text() == "old source"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.c", "model.h"]


def test_failed_first_export_leaves_nothing(tmp_path, monkeypatch):
    real_replace, calls = os.replace, []

    def replace(src, dst):
        calls.append(dst)
        if len(calls) == 2:
            raise OSError("disk full (simulated)")
        return real_replace(src, dst)

    monkeypatch.setattr(export_c.os, "replace", replace)
    with pytest.raises(OSError, match="simulated"):
        random_model((3, 2)).to_c(tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_failure_while_writing_leaves_nothing(tmp_path, monkeypatch):
    def boom(*args):
        raise OSError("no space left (simulated)")

    monkeypatch.setattr(export_c, "_copy_mode", boom)
    (tmp_path / "model.c").write_text("old source")
    with pytest.raises(OSError, match="simulated"):
        random_model((3, 2)).to_c(tmp_path)
    assert [p.name for p in tmp_path.iterdir()] == ["model.c"]
    assert (tmp_path / "model.c").read_text() == "old source"


def test_export_overwrites_and_keeps_the_file_mode(tmp_path):
    first = random_model((3, 2), seed=1)
    second = random_model((3, 2), seed=2)
    first.to_c(tmp_path)
    (tmp_path / "model.c").chmod(0o640)
    h, c = second.to_c(tmp_path)
    assert Path(h).read_text() == export_c.generate_c(second)[0]
    assert Path(c).read_text() == export_c.generate_c(second)[1]
    assert stat.S_IMODE(os.stat(c).st_mode) == 0o640
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.c", "model.h"]
