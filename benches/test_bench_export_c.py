"""One-row prediction through the C export (``MLP.to_c``) against fastmlp's own call.

The float32 784-128-64-10 model (He-initialised, as in conftest) is exported, compiled with
``cc -std=c99 -O3 -march=native`` into a shared library in a temporary directory, together
with a timing loop written in C: ``bench_rows(x, n_rows, n_calls, proba)`` calls
``mnist_predict_proba`` once per row, ``n_calls`` times, over ``n_rows`` MNIST test rows.
Every call of a round gets a row it has not seen in that round: the CPU's branch predictor
would learn the zero patterns of a few rows repeated (100 rows cycled ten times ran 1.5-2x
faster than 1,000 distinct ones), which a service does not get.
Python calls that loop through ctypes once per round, so the ctypes overhead (about 1 us) is
spread over ``CALLS`` rows and is not what is measured.

Both tests time ``CALLS`` one-row calls over the same rows, so the group's figures compare
directly: the time per round in ms is the time per row in us. ``extra_info["ns_per_row"]``
holds the median per row. Target (issue 12): one MNIST row in under 2 us from exported C.

Run from the repository root::

    PYTHONPATH=. python -m pytest benches/test_bench_export_c.py --benchmark-only
"""

from __future__ import annotations

import ctypes
import os
import shutil
import subprocess

import numpy as np
import pytest

from fastmlp import MLP

CALLS = 1000  # one-row calls per round
ROWS = 1000  # distinct MNIST test rows, one per call
DTYPE = "float32"
GROUP = f"one-row predict_proba x {CALLS} (ms per round = us per row) {DTYPE}"
CC = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")
CFLAGS = ["-std=c99", "-O3", "-march=native", "-fPIC", "-shared"]

_TIMING_LOOP = """\
#include <stddef.h>
#include "mnist.h"

/* n_calls one-row predictions, cycling over the n_rows rows of x; the last call's
   probabilities go to proba. Returns the sum of every probability of class 0, so the calls
   have a visible effect and cannot be optimised away. */
double bench_rows(const float *x, size_t n_rows, size_t n_calls, float *proba);

double bench_rows(const float *x, size_t n_rows, size_t n_calls, float *proba)
{
    double checksum = 0;
    size_t call;
    for (call = 0; call < n_calls; call++) {
        mnist_predict_proba(x + (call % n_rows) * MNIST_N_FEATURES, proba);
        checksum += proba[0];
    }
    return checksum;
}
"""


@pytest.fixture(scope="module")
def model(initial_params) -> MLP:
    """The float32 784-128-64-10 model every predict benchmark uses."""
    return MLP.from_weights(*initial_params[DTYPE], dtype=DTYPE)


@pytest.fixture(scope="module")
def rows(mnist) -> np.ndarray:
    """The first ROWS MNIST test images, C-contiguous float32."""
    return np.ascontiguousarray(mnist.X_test[DTYPE][:ROWS])


@pytest.fixture(scope="module")
def c_library(model, tmp_path_factory):
    """The exported model and the timing loop, compiled into a shared library (ctypes)."""
    if CC is None:
        pytest.skip("no C compiler (cc, gcc or clang) on PATH")
    return _compiled(model, tmp_path_factory.mktemp("c_export"))


def _compiled(model, directory):
    """``model.to_c`` in ``directory`` with the timing loop, built into a ctypes library."""
    model.to_c(directory, "mnist")
    (directory / "bench_rows.c").write_text(_TIMING_LOOP)
    cmd = [CC, *CFLAGS, "bench_rows.c", "mnist.c", "-o", "libmnist.so", "-lm"]
    proc = subprocess.run(cmd, cwd=directory, capture_output=True, text=True, timeout=600)
    if proc.returncode != 0:
        pytest.fail(f"{' '.join(cmd)} failed:\n{proc.stderr}")
    lib = ctypes.CDLL(str(directory / "libmnist.so"))
    floats = np.ctypeslib.ndpointer(np.float32, flags="C_CONTIGUOUS")
    lib.bench_rows.argtypes = [floats, ctypes.c_size_t, ctypes.c_size_t, floats]
    lib.bench_rows.restype = ctypes.c_double
    lib.mnist_predict_proba_batch.argtypes = [ctypes.c_size_t, floats, floats]
    lib.mnist_predict_proba_batch.restype = None
    return lib


def _label(benchmark, impl: str) -> None:
    benchmark.group = GROUP
    benchmark.extra_info.update(
        suite="export_c",
        workload="predict_proba one row",
        impl=impl,
        dtype=DTYPE,
        n_samples=1,
        calls_per_round=CALLS,
        threads=1,
    )


def _per_row(benchmark) -> None:
    benchmark.extra_info["ns_per_row"] = benchmark.stats.stats.median / CALLS * 1e9


def test_c_export(benchmark, c_library, model, rows):
    _label(benchmark, "C export (cc -O3 -march=native)")
    proba = np.empty((ROWS, 10), dtype=np.float32)
    c_library.mnist_predict_proba_batch(ROWS, rows, proba)
    np.testing.assert_allclose(proba, model.predict_proba(rows), rtol=0, atol=1e-5)

    last = np.empty(10, dtype=np.float32)
    checksum = benchmark(c_library.bench_rows, rows, ROWS, CALLS, last)
    _per_row(benchmark)
    expected = proba[np.arange(CALLS) % ROWS, 0].astype(np.float64).sum()
    assert checksum == pytest.approx(expected, rel=1e-6)


def test_fastmlp(benchmark, model, rows):
    _label(benchmark, "fastmlp predict_proba")
    one_row = [rows[i : i + 1] for i in range(ROWS)]
    calls = [one_row[call % ROWS] for call in range(CALLS)]
    predict_proba = model.predict_proba

    def run() -> float:
        checksum = 0.0
        for x in calls:
            checksum += predict_proba(x)[0, 0]
        return checksum

    checksum = benchmark(run)
    _per_row(benchmark)
    expected = model.predict_proba(rows)[np.arange(CALLS) % ROWS, 0].astype(np.float64).sum()
    assert checksum == pytest.approx(expected, rel=1e-5)


@pytest.fixture(scope="module")
def c_library_int8(model, mnist, tmp_path_factory):
    """The int8 copy of the model (``fastmlp.quantize``), exported and compiled like
    ``c_library``; returns (library, int8 model)."""
    import fastmlp

    if CC is None:
        pytest.skip("no C compiler (cc, gcc or clang) on PATH")
    q = fastmlp.quantize(model, mnist.X[DTYPE][:2000])
    lib = _compiled(q, tmp_path_factory.mktemp("c_export_int8"))
    return lib, q


def test_c_export_int8(benchmark, c_library_int8, rows):
    """The int8 export (int8 weights, int32 sums): the same loop, the same rows."""
    lib, q = c_library_int8
    _label(benchmark, "C export int8 (cc -O3 -march=native)")
    proba = np.empty((ROWS, 10), dtype=np.float32)
    lib.mnist_predict_proba_batch(ROWS, rows, proba)
    # -march=native may fuse the epilogue's multiply and add (a rounding may move).
    np.testing.assert_allclose(proba, q.predict_proba(rows), rtol=0, atol=1e-2)
    last = np.empty(10, dtype=np.float32)
    checksum = benchmark(lib.bench_rows, rows, ROWS, CALLS, last)
    _per_row(benchmark)
    expected = proba[np.arange(CALLS) % ROWS, 0].astype(np.float64).sum()
    assert checksum == pytest.approx(expected, rel=1e-6)
