"""The first layer of 784-128-64-10 on the 10,000 MNIST test images, one thread.

``relu(X @ W1 + b1)``, float32 and float64, by:

- fastmlp: ``fm_dense``, prediction's own GEMM with bias and ReLU fused, in each variant
  this CPU runs (``_kernels.dense``, which also zero-pads the last panel as a call does);
- openblas: SciPy's OpenBLAS sgemm/dgemm through fastmlp's BLAS shim at one thread, then
  ``fm_bias_act``: what prediction did before issue 5;
- numpy: ``np.matmul`` at one thread (NumPy's own OpenBLAS copy), then the same kernel.

Run by ``pytest benches/`` (not summarised by report.py). The OpenBLAS figures depend on
what ran before in the process: its kernel stalls on pages of its buffer that only a
larger GEMM touches (docs/ARCHITECTURE.md), so a cold process shows up to 2x slower.
"""

from __future__ import annotations

import numpy as np
import pytest
from threadpoolctl import threadpool_limits

from fastmlp import _kernels
from fastmlp._threads import single_threaded_blas

IMPLS = [f"fastmlp-{isa}" for isa in _kernels.dense_isas() if isa != "wide"]
IMPLS += ["openblas", "numpy"]


@pytest.mark.parametrize("impl", IMPLS)
def test_first_layer(benchmark, mnist, initial_params, dtype, impl):
    benchmark.group = f"first layer relu(X @ W1 + b1) {dtype} 10000 rows, 1 thread"
    benchmark.extra_info.update(
        suite="dense", workload="first_layer", impl=impl, dtype=dtype, threads=1
    )
    X = np.ascontiguousarray(mnist.X_test[dtype])
    W, b = initial_params[dtype][0][0], initial_params[dtype][1][0]
    Z = np.empty((X.shape[0], W.shape[1]), dtype=dtype)
    if impl.startswith("fastmlp-"):
        isa = impl.split("-", 1)[1]
        result = benchmark(lambda: _kernels.dense(X, W, b, "relu", isa)[0])
    elif impl == "openblas":

        def call():
            _kernels.gemm(X, W, Z)
            _kernels.bias_act(Z, b, "relu")
            return Z

        with single_threaded_blas():
            result = benchmark(call)
    else:

        def call():
            np.matmul(X, W, out=Z)
            _kernels.bias_act(Z, b, "relu")
            return Z

        with threadpool_limits(limits=1, user_api="blas"):
            result = benchmark(call)
    expected = np.maximum(X.astype(np.float64) @ W.astype(np.float64) + b, 0)
    tol = 1e-4 if dtype == "float32" else 1e-10
    np.testing.assert_allclose(result, expected, rtol=tol, atol=tol)
