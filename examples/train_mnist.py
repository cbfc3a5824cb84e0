"""The main job: train the 784-128-64-10 MLP on MNIST and report how it went.

Run from the repository root after ``pip install .``::

    python examples/train_mnist.py            # 3 epochs, batch 128, Adam lr 6e-3,
                                              # warm-up + cosine, label smoothing 0.1
    python examples/train_mnist.py --help     # options
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import fastmlp
from fastmlp.datasets import load_mnist

MNIST_DIR = Path(__file__).resolve().parent.parent / "benches" / "data" / "mnist"


def main() -> None:
    """Parse the options, train, print per-epoch figures, test accuracy and time."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--lr", type=float, default=6e-3)
    parser.add_argument(
        "--schedule", default="warmup_cosine", help='"warmup_cosine", "cosine" or "none"'
    )
    parser.add_argument("--hidden", default="128,64", help="hidden widths, e.g. 256,128")
    parser.add_argument("--dropout", type=float, default=0.0)
    parser.add_argument("--l2", type=float, default=0.0)
    parser.add_argument("--label-smoothing", type=float, default=0.1)
    parser.add_argument("--threads", type=int, default=None, help="default: all cores")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--data", type=Path, default=MNIST_DIR, help="MNIST IDX directory")
    args = parser.parse_args()

    (X, y), (X_test, y_test) = load_mnist(args.data)
    hidden = tuple(int(h) for h in args.hidden.split(",") if h)
    arch = "-".join(map(str, (X.shape[1], *hidden, 10)))
    print(f"MNIST: {len(X)} training and {len(X_test)} test images; network {arch}")
    # The test set is passed as validation data only to print its accuracy each epoch;
    # nothing is tuned on it.
    tic = time.perf_counter()
    model = fastmlp.train(
        X,
        y,
        hidden=hidden,
        epochs=args.epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        lr_schedule=None if args.schedule == "none" else args.schedule,
        dropout=args.dropout,
        l2=args.l2,
        label_smoothing=args.label_smoothing,
        n_threads=args.threads,
        seed=args.seed,
        validation_data=(X_test, y_test),
        verbose=True,
    )
    total = time.perf_counter() - tic
    train_seconds = sum(model.history["seconds"])
    print(f"Final test accuracy: {100 * model.score(X_test, y_test):.2f}%")
    print(
        f"Time in training epochs: {train_seconds:.2f} s ({train_seconds / args.epochs:.3f} s "
        f"per epoch; {total:.2f} s with the per-epoch test evaluation)"
    )


if __name__ == "__main__":
    main()
