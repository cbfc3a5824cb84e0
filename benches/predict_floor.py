"""predict_proba of 10,000 MNIST-shaped rows against the GEMM floor, per thread count.

Usage, from the repository root (after ``python setup.py build_ext --inplace``)::

    PYTHONPATH=. python benches/predict_floor.py [--threads 1 2] [--rounds 5]

The floor is ``report.py``'s: the forward FLOPs of 784-128-64-10 for 10,000 rows at the
sgemm peak (NumPy 4096 x 4096 float32 matmul) of the same thread count. Each round
measures the peak, then fastmlp, then NumPy's three chained matmuls, one thread count
after the other; the figures are the best of all rounds, so a neighbour that steals the
CPU for a while does not decide the result. The inputs are uniform random pixels (a dense
X: no zeros for fastmlp to skip).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
from threadpoolctl import threadpool_limits

sys.path.insert(0, str(Path(__file__).resolve().parent))

import report  # noqa: E402

import fastmlp  # noqa: E402

ROWS = 10_000


def best_of(fn, repeats: int) -> float:
    fn()
    best = float("inf")
    for _ in range(repeats):
        tic = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - tic)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=10)
    args = parser.parse_args()

    rng = np.random.default_rng(0)
    X = rng.random((ROWS, report.LAYER_SIZES[0]), dtype=np.float32)
    sizes = report.LAYER_SIZES
    weights = [
        (rng.standard_normal((a, b)) / np.sqrt(a)).astype(np.float32)
        for a, b in zip(sizes, sizes[1:])
    ]
    biases = [np.zeros(b, np.float32) for b in sizes[1:]]
    model = fastmlp.MLP.from_weights(weights, biases)

    def numpy_forward():
        return ((X @ weights[0]) @ weights[1]) @ weights[2]

    best = {t: {"peak": 0.0, "fastmlp": np.inf, "numpy": np.inf} for t in args.threads}
    for _ in range(args.rounds):
        for t in args.threads:
            b = best[t]
            b["peak"] = max(b["peak"], report.sgemm_peak(t))
            fast = best_of(lambda t=t: model.predict_proba(X, n_threads=t), args.repeats)
            b["fastmlp"] = min(b["fastmlp"], fast)
            with threadpool_limits(limits=t, user_api="blas"):
                b["numpy"] = min(b["numpy"], best_of(numpy_forward, args.repeats))
    flops = report.forward_flops_per_sample() * ROWS
    print(f"predict_proba, {ROWS:,} rows, 784-128-64-10 float32; best of {args.rounds} rounds")
    for t in args.threads:
        b = best[t]
        floor = flops / b["peak"] / 1e9
        print(
            f"{t} thread(s): sgemm peak {b['peak']:.0f} GFLOP/s, floor {floor * 1e3:.1f} ms | "
            f"fastmlp {b['fastmlp'] * 1e3:.1f} ms ({b['fastmlp'] / floor:.2f}x floor) | "
            f"NumPy 3 matmuls {b['numpy'] * 1e3:.1f} ms ({b['numpy'] / floor:.2f}x)"
        )


if __name__ == "__main__":
    main()
