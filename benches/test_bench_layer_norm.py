"""What LayerNorm costs: one MNIST epoch of 784-128-64-10, float32, Adam, batch 128, with
and without ``normalization="layer"``, beside PyTorch with ``nn.LayerNorm`` after each
hidden Linear layer.

Timed as ``test_bench_training.py`` times epochs: one untimed warm-up epoch, then the
median of ``ROUNDS`` epochs, each from fresh parameters; every library at the session's
thread count.
"""

from __future__ import annotations

import pytest

import fastmlp

BATCH_SIZE = 128
WARMUP_ROUNDS = 1
ROUNDS = 3
# fastmlp and PyTorch run back to back per normalization (conftest.workload_order).
WORKLOAD_PARAMS = ("normalization",)


def _label(benchmark, impl: str, normalization: str) -> None:
    benchmark.group = f"epoch 784-128-64-10 float32 batch {BATCH_SIZE}, normalization"
    benchmark.extra_info.update(
        suite="layer_norm", workload="epoch", impl=impl, normalization=normalization
    )


@pytest.mark.parametrize("normalization", [None, "layer"], ids=["none", "layer"])
def test_fastmlp(benchmark, mnist, n_threads, normalization):
    _label(benchmark, "fastmlp", str(normalization))
    X, y = mnist.X["float32"], mnist.y

    def epoch():
        return fastmlp.train(
            X,
            y,
            hidden=(128, 64),
            normalization=normalization,
            epochs=1,
            batch_size=BATCH_SIZE,
            seed=0,
            n_threads=n_threads,
        )

    model = benchmark.pedantic(epoch, rounds=ROUNDS, warmup_rounds=WARMUP_ROUNDS)
    benchmark.extra_info["train_accuracy"] = model.history["accuracy"][-1]


@pytest.mark.parametrize("normalization", [None, "layer"], ids=["none", "layer"])
def test_torch(benchmark, torch, torch_epoch, mnist, normalization):
    _label(benchmark, "torch", str(normalization))
    X, y = torch.from_numpy(mnist.X["float32"]), torch.from_numpy(mnist.y)
    generator = torch.Generator().manual_seed(0)
    nn = torch.nn

    def hidden(fan_in: int, fan_out: int) -> list:
        norm = [nn.LayerNorm(fan_out)] if normalization else []
        return [nn.Linear(fan_in, fan_out), *norm, nn.ReLU()]

    def setup():
        torch.manual_seed(0)
        net = nn.Sequential(*hidden(784, 128), *hidden(128, 64), nn.Linear(64, 10))
        return (net, torch.optim.Adam(net.parameters(), lr=1e-3)), {}

    def epoch(net, optimizer):
        torch_epoch(net, optimizer, X, y, BATCH_SIZE, generator)

    benchmark.pedantic(epoch, setup=setup, rounds=ROUNDS, warmup_rounds=WARMUP_ROUNDS)
