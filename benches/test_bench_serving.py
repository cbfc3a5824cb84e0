"""fastmlp behind a request server: latency of small batches and calls per second.

Two groups, both on the 784-128-64-10 float32 model with conftest's He-initialised weights,
through the library (no HTTP, no JSON: see ``examples/serve.py`` for those costs):

- ``serving-latency``: one ``MLP.predict_proba`` call of 1, 8 or 64 rows, the sizes of a
  request. Batches of at most 64 rows run on the calling thread (``model.SERIAL_ROWS``),
  so no thread count applies.
- ``serving-concurrency``: 1, 2 or 4 client threads, each making a fixed number of
  batch-1 ``predict_proba`` calls at once, as a server's request threads do. The time is
  that of the whole round; ``extra_info["calls_per_s"]`` is all clients' calls divided by
  the median round. The forward pass releases the GIL, so calls/s grows with clients until
  the cores, or the Python part of each call (which holds the GIL), run out.

Random pixels in [0, 1] stand in for images: the time does not depend on the values.
"""

from __future__ import annotations

import statistics
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from threadpoolctl import threadpool_info

from fastmlp import MLP, reference

ACTIVATIONS = ("relu", "relu", "identity")  # 784-128-64-10, as in conftest
DTYPE = "float32"
LATENCY_BATCHES = (1, 8, 64)
CLIENTS = (1, 2, 4)
CALLS_PER_CLIENT = 2000
ROUNDS = 5


@pytest.fixture(scope="module")
def params(initial_params):
    """(weights, biases) of the float32 model."""
    return initial_params[DTYPE]


@pytest.fixture(scope="module")
def model(params) -> MLP:
    """The 784-128-64-10 float32 model."""
    return MLP.from_weights(*params, dtype=DTYPE)


@pytest.fixture(scope="module")
def images() -> np.ndarray:
    """64 rows of random pixels, float32, C-contiguous."""
    return np.random.default_rng(0).random((64, 784), dtype=np.float32)


def _blas_threads() -> list[int]:
    return [info["num_threads"] for info in threadpool_info() if info["user_api"] == "blas"]


def _expected(params, X) -> np.ndarray:
    return reference.softmax(reference.forward(*params, X, ACTIVATIONS)[-1])


@pytest.mark.parametrize("batch", LATENCY_BATCHES, ids=lambda n: f"batch{n}")
def test_latency(benchmark, model, params, images, batch):
    X = np.ascontiguousarray(images[:batch])
    benchmark.group = "serving-latency"
    benchmark.extra_info.update(
        suite="serving",
        workload="predict_proba",
        impl="fastmlp",
        dtype=DTYPE,
        batch=batch,
        # BLAS's own threads are process-wide, set by conftest to the session's count;
        # recorded because small batches run their BLAS calls with it.
        blas_threads=_blas_threads(),
    )
    P = benchmark(model.predict_proba, X)
    np.testing.assert_allclose(P, _expected(params, X), rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("clients", CLIENTS, ids=lambda n: f"{n}clients")
def test_concurrency(benchmark, model, params, images, clients):
    benchmark.group = "serving-concurrency"
    rows = [np.ascontiguousarray(images[k : k + 1]) for k in range(clients)]
    last: list[np.ndarray | None] = [None] * clients
    seconds: list[float] = []

    def client(k: int) -> None:
        x = rows[k]
        for _ in range(CALLS_PER_CLIENT):
            P = model.predict_proba(x)
        last[k] = P

    with ThreadPoolExecutor(clients) as pool:
        # The threads exist before the first round: a round times the calls, not their
        # creation.
        list(pool.map(lambda _: None, range(clients)))

        def one_round() -> None:
            tic = time.perf_counter()
            list(pool.map(client, range(clients)))
            seconds.append(time.perf_counter() - tic)

        benchmark.pedantic(one_round, rounds=ROUNDS, iterations=1, warmup_rounds=1)

    calls = clients * CALLS_PER_CLIENT
    median = statistics.median(seconds[1:])  # the first is the warm-up round
    benchmark.extra_info.update(
        suite="serving",
        workload="predict_proba batch 1",
        impl="fastmlp",
        dtype=DTYPE,
        clients=clients,
        calls_per_round=calls,
        calls_per_s=round(calls / median),
        us_per_call=round(median / calls * 1e6, 2),
    )
    for k in range(clients):
        np.testing.assert_allclose(last[k], _expected(params, rows[k]), rtol=1e-4, atol=1e-6)
