"""Peak resident memory of one training epoch of a wide network, above what the data holds.

Usage, from the repository root (after ``pip install .``, or with ``PYTHONPATH=.`` after an
in-place build)::

    python benches/memory.py [--hidden 2048] [--batch-size 256]

Loads MNIST (float32), then samples ``/proc/self/statm`` every 5 ms while
``fastmlp.train`` runs one epoch, and prints the resident set before and its peak during
training. Linux only (it reads /proc).
"""

from __future__ import annotations

import argparse
import os
import threading
import time
from pathlib import Path

import fastmlp
from fastmlp.datasets import load_mnist

MNIST = Path(__file__).resolve().parent / "data" / "mnist"


def resident_mib() -> float:
    """The resident set of this process now, in MiB."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def main() -> None:
    """Train one epoch while sampling the resident set; print before and peak."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hidden", default="2048", help="hidden widths, e.g. 1024,1024")
    parser.add_argument("--batch-size", type=int, default=256)
    args = parser.parse_args()
    hidden = tuple(int(h) for h in args.hidden.split(",") if h)
    (X, y), _ = load_mnist(MNIST)
    peak, done = [0.0], threading.Event()

    def watch() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], resident_mib())
            time.sleep(0.005)

    before = resident_mib()
    watcher = threading.Thread(target=watch)
    watcher.start()
    model = fastmlp.train(X, y, hidden=hidden, epochs=1, batch_size=args.batch_size, seed=0)
    done.set()
    watcher.join()
    arch = "-".join(map(str, model.layer_sizes))
    params = model.params_.nbytes / 2**20
    print(
        f"{arch}, batch {args.batch_size}: resident {before:.0f} MiB before training "
        f"(MNIST {X.nbytes / 2**20:.0f} MiB of it), peak {peak[0]:.0f} MiB during the epoch "
        f"(+{peak[0] - before:.0f} MiB; the parameters are {params:.1f} MiB, with gradients "
        "and Adam's two moments 4x that)"
    )


if __name__ == "__main__":
    main()
