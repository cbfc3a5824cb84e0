"""One MNIST epoch (784-128-64-10, float32) on cores that fastmlp does not have to itself.

Servers share their cores. Two situations, each at batch 32 and 128:

- ``competing process``: a CPU-bound process (a Python busy loop) runs beside the epoch
  for the whole group;
- ``after peers``: before every timed epoch, NumPy's OpenBLAS and PyTorch (when installed)
  each run a large matrix product on all threads in this process, whose worker threads
  then linger.

fastmlp runs at 1 thread, at all threads pinned (``FASTMLP_ADAPTIVE_THREADS=0``) and at
all threads adaptive (the default: ``csrc/fm_tuner.h`` picks the threads step by step).
The goal (issue 15): the adaptive run never slower than 1 thread, pinned or adaptive
within 20% of it at worst. The three run in paired rounds (``paired.race``: a warm-up
round, then ``ROUNDS``), pinned, adaptive, then 1 thread, which pytest-benchmark reports;
the seconds of every round go to ``extra_info["seconds"]``, and the ratios to 1 thread are
medians of the per-round ratios (benches/report.py, and the summary at the end of the run).
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from unittest import mock

import numpy as np
import pytest
from paired import race, record

import fastmlp

ROUNDS = 5
BUSY_LOOP = "while True:\n    pass\n"
# The races' names of the three runs; the 1-thread run is the one ratios are taken to.
ONE_THREAD, PINNED, ADAPTIVE = "fastmlp", "fastmlp pinned", "fastmlp adaptive"


@pytest.fixture
def competitor():
    """A CPU-bound process for the duration of one test (not the module's: it would still
    run beside the after-peers tests that follow)."""
    proc = subprocess.Popen([sys.executable, "-c", BUSY_LOOP])
    yield proc
    proc.kill()
    proc.wait()


def mnist_epoch(mnist, batch_size: int, threads: int, adaptive: bool) -> Callable[[], None]:
    """One MNIST epoch of a fresh fit at `threads`, adaptive or pinned."""
    X, y = mnist.X["float32"], mnist.y

    def epoch():
        with mock.patch.dict(os.environ, FASTMLP_ADAPTIVE_THREADS="1" if adaptive else "0"):
            fastmlp.train(
                X, y, hidden=(128, 64), epochs=1, batch_size=batch_size, seed=0, n_threads=threads
            )

    return epoch


def _run(benchmark, races, mnist, situation, batch_size, n_threads, before=None):
    seconds = race(
        benchmark,
        (ONE_THREAD, mnist_epoch(mnist, batch_size, 1, adaptive=False)),
        {
            PINNED: mnist_epoch(mnist, batch_size, n_threads, adaptive=False),
            ADAPTIVE: mnist_epoch(mnist, batch_size, n_threads, adaptive=True),
        },
        rounds=ROUNDS,
        warmup_rounds=1,
        before=before,
    )
    benchmark.group = f"shared cores: {situation}, 1-thread epoch batch {batch_size}"
    record(
        benchmark,
        races,
        f"{situation} / {batch_size}",
        seconds,
        {},
        main=ONE_THREAD,
        suite="shared",
        workload=situation,
        dtype="float32",
        batch_size=batch_size,
        threads=n_threads,
    )


@pytest.mark.parametrize("batch_size", [32, 128], ids=lambda bs: f"bs{bs}")
def test_competing_process(benchmark, races, mnist, competitor, batch_size, n_threads):
    assert competitor.poll() is None, "the competing process has stopped"
    _run(benchmark, races, mnist, "competing process", batch_size, n_threads)


@pytest.mark.parametrize("batch_size", [32, 128], ids=lambda bs: f"bs{bs}")
def test_after_peers(benchmark, races, mnist, batch_size, n_threads):
    try:
        import torch
    except ImportError:
        torch = None
    a = np.random.default_rng(0).random((1500, 1500), dtype=np.float32)

    def peers_run():
        a @ a  # OpenBLAS at its own thread count
        if torch is not None:
            t = torch.from_numpy(a)
            torch.mm(t, t)

    _run(benchmark, races, mnist, "after peers", batch_size, n_threads, before=peers_run)
