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
within 20% of it at worst. Timed like the training suite: a warm-up epoch, then the
median of three.
"""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

import fastmlp

ROUNDS = 3
BUSY_LOOP = "while True:\n    pass\n"


@pytest.fixture(scope="module")
def competitor():
    """A CPU-bound process for the module's duration."""
    proc = subprocess.Popen([sys.executable, "-c", BUSY_LOOP])
    yield proc
    proc.kill()
    proc.wait()


@pytest.fixture(params=["pinned", "adaptive", "1thr"])
def mode(request, n_threads, monkeypatch) -> tuple[str, int]:
    """(impl label, threads); sets FASTMLP_ADAPTIVE_THREADS for the run."""
    threads = 1 if request.param == "1thr" else n_threads
    monkeypatch.setenv("FASTMLP_ADAPTIVE_THREADS", "1" if request.param == "adaptive" else "0")
    return ("fastmlp" if request.param == "1thr" else f"fastmlp {request.param}"), threads


def _run(benchmark, mnist, situation, impl, threads, batch_size, setup=None):
    benchmark.group = f"shared cores: {situation}, epoch batch {batch_size}"
    benchmark.extra_info.update(
        suite="shared",
        workload=situation,
        impl=impl,
        dtype="float32",
        batch_size=batch_size,
        threads=threads,
    )
    X, y = mnist.X["float32"], mnist.y

    def epoch():
        return fastmlp.train(
            X, y, hidden=(128, 64), epochs=1, batch_size=batch_size, seed=0, n_threads=threads
        )

    kwargs = {} if setup is None else {"setup": setup}
    benchmark.pedantic(epoch, rounds=ROUNDS, warmup_rounds=1, **kwargs)


@pytest.mark.parametrize("batch_size", [32, 128], ids=lambda bs: f"bs{bs}")
def test_competing_process(benchmark, mnist, competitor, mode, batch_size):
    assert competitor.poll() is None, "the competing process has stopped"
    _run(benchmark, mnist, "competing process", *mode, batch_size)


@pytest.mark.parametrize("batch_size", [32, 128], ids=lambda bs: f"bs{bs}")
def test_after_peers(benchmark, mnist, mode, batch_size, n_threads):
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

    _run(benchmark, mnist, "after peers", *mode, batch_size, setup=peers_run)
