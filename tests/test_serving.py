"""fastmlp inside a server: the HTTP example (examples/serve.py) and the library under threads.

HTTP tests start the real server (uvicorn in a background thread, and once as the
``python examples/serve.py`` command) on 127.0.0.1 and talk to it with httpx; they are
skipped when the ``[serve]`` extra (starlette, uvicorn, httpx) is not installed. The
library tests need nothing beyond fastmlp: many threads predicting on one model, prediction
while another thread trains, the thread budget afterwards, and memory over many calls.
"""

from __future__ import annotations

import asyncio
import gc
import importlib.util
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from threadpoolctl import threadpool_info

import fastmlp
from fastmlp import _threads
from fastmlp.datasets import load_mnist

ROOT = Path(__file__).resolve().parent.parent
MNIST_DIR = ROOT / "benches" / "data" / "mnist"
SERVE_PY = ROOT / "examples" / "serve.py"

# Limits of the server under test: small, so the refusals are cheap to provoke.
MAX_ROWS = 32
MAX_BODY_BYTES = 1_000_000
N_REQUESTS = 200
N_CLIENTS = 8
STARTUP_SECONDS = 20.0
# Batch sizes on both sides of model.SERIAL_ROWS (64): the calling-thread path and the
# parallel path that borrows cores; 300 and 1000 span several blocks.
BATCH_SIZES = (1, 7, 64, 65, 300, 1000)


# -- data and models (once per module) ---------------------------------------------------


@pytest.fixture(scope="module")
def mnist():
    """MNIST as float32 pixels in [0, 1]: (X, y) training and (X_test, y_test) test sets."""
    (X, y), (X_test, y_test) = load_mnist(MNIST_DIR)
    return X, y, X_test, y_test


@pytest.fixture(scope="module")
def model(mnist):
    """A 784-64-10 classifier trained for one epoch on 2,000 images; 2 threads for batches."""
    X, y, _, _ = mnist
    trained = fastmlp.train(X[:2000], y[:2000], hidden=(64,), epochs=1, n_threads=1, seed=0)
    trained.n_threads = 2
    return trained


@pytest.fixture(scope="module")
def model_file(model, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("serving") / "model.npz"
    fastmlp.save(model, path)
    return path


def _rss_bytes() -> int:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _blas_threads() -> list[int]:
    return [info["num_threads"] for info in threadpool_info() if info["user_api"] == "blas"]


# -- the library under threads -----------------------------------------------------------


def _inputs(X_test: np.ndarray) -> dict[int, np.ndarray]:
    """One C-contiguous slice of the test images per batch size, all different rows."""
    out, start = {}, 0
    for n in BATCH_SIZES:
        out[n] = np.ascontiguousarray(X_test[start : start + n])
        start += n
    return out


def _references(model, inputs) -> dict[int, tuple[np.ndarray, np.ndarray]]:
    """(probabilities, labels) per batch size from one-at-a-time calls on this thread."""
    refs = {}
    for n, X in inputs.items():
        P = model.predict_proba(X, n_threads=1)
        labels = model.predict(X, n_threads=1)
        # Rows are cut into blocks set by the row count, whatever the thread count, so the
        # parallel path (the model's 2 threads) must give the same bits as one thread.
        assert np.array_equal(model.predict_proba(X), P), n
        assert np.array_equal(model.predict(X), labels), n
        refs[n] = (P, labels)
    return refs


def _check_all(model, inputs, refs, order) -> list[str]:
    """Predict every batch size in ``order``; describe each result that differs."""
    wrong = []
    for n in order:
        P = model.predict_proba(inputs[n])
        labels = model.predict(inputs[n])
        if not np.array_equal(P, refs[n][0]):
            wrong.append(f"predict_proba, {n} rows: max diff {np.abs(P - refs[n][0]).max()}")
        if not np.array_equal(labels, refs[n][1]):
            wrong.append(f"predict, {n} rows: {np.sum(labels != refs[n][1])} labels differ")
    return wrong


def _rotation(t: int) -> tuple[int, ...]:
    # Each thread visits the sizes in its own order, so serial and parallel calls overlap
    # in every combination.
    k = t % len(BATCH_SIZES)
    return BATCH_SIZES[k:] + BATCH_SIZES[:k]


def _on_other_thread(fn, *args):
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(fn, *args).result()


def test_thread_budget_and_blas_limit_are_restored_after_concurrent_calls(model, mnist):
    inputs = _inputs(mnist[2])
    model.predict_proba(inputs[65])  # the budget is created by the first parallel call
    cores_free, blas = _threads._cores_free, _blas_threads()
    assert cores_free == _threads.effective_n_threads(None)
    start = threading.Barrier(N_CLIENTS)

    def client(t: int) -> None:
        start.wait()
        for _ in range(4):
            for n in _rotation(t):
                model.predict_proba(inputs[n])

    with ThreadPoolExecutor(N_CLIENTS) as pool:
        list(pool.map(client, range(N_CLIENTS)))
    assert _threads._cores_free == cores_free, "borrowed cores were not all given back"
    assert _blas_threads() == blas, "BLAS thread count not restored"


def test_single_threaded_blas_limits_blas_on_every_thread():
    # The guard behind parallel prediction and training: OpenMP workers must each call a
    # one-thread BLAS, whichever Python thread started the work (in a server: a request
    # thread, never the main one).
    with _threads.single_threaded_blas():  # as a first predict or train on the main thread
        assert set(_blas_threads()) == {1}

    def limited_here() -> list[int]:
        with _threads.single_threaded_blas():
            return _blas_threads()

    assert set(_on_other_thread(limited_here)) == {1}, "BLAS not limited on a second thread"


def test_small_batch_does_not_depend_on_a_concurrent_parallel_call(model, mnist):
    # A batch of <= 64 rows runs on the calling thread, by the docstring of SERIAL_ROWS,
    # with nothing else going on; its bits must not depend on whether another thread is
    # inside a parallel predict or a training run (which limit BLAS process-wide) meanwhile.
    X = np.ascontiguousarray(mnist[2][:64])
    alone = _on_other_thread(model.predict_proba, X)
    with _threads.single_threaded_blas():  # what a concurrent parallel call holds
        during = _on_other_thread(model.predict_proba, X)
    same = np.array_equal(during, alone)
    assert same, f"64 rows differ by up to {np.abs(during - alone).max()} while BLAS is limited"


def test_eight_threads_on_one_model_match_serial_calls(model, mnist):
    inputs = _inputs(mnist[2])
    refs = _references(model, inputs)
    start = threading.Barrier(N_CLIENTS)

    def client(t: int) -> list[str]:
        start.wait()
        return [
            f"thread {t}: {w}"
            for _ in range(6)
            for w in _check_all(model, inputs, refs, _rotation(t))
        ]

    with ThreadPoolExecutor(N_CLIENTS) as pool:
        wrong = [w for ws in pool.map(client, range(N_CLIENTS)) for w in ws]
    assert wrong == [], f"{len(wrong)} results differ from serial calls, e.g. {wrong[:3]}"


def _train_other(X, y):
    return fastmlp.train(X[:3000], y[:3000], hidden=(32,), epochs=2, n_threads=2, seed=3)


def test_predictions_stay_correct_while_another_model_trains(model, mnist):
    X, y, X_test, y_test = mnist
    inputs = {n: x for n, x in _inputs(X_test).items() if n != 1000}
    refs = _references(model, inputs)
    alone = _train_other(X, y)  # the same training with nothing else running
    model.predict_proba(inputs[65])
    cores_free = _threads._cores_free
    trained: dict = {}
    done = threading.Event()
    running = threading.Barrier(5)

    def trainer() -> None:
        running.wait()
        try:
            trained["model"] = _train_other(X, y)
        except BaseException as exc:  # reported by the main thread
            trained["error"] = exc
        finally:
            done.set()

    def predictor(t: int) -> tuple[int, list[str]]:
        running.wait()
        rounds, wrong = 0, []
        # Until training ends, and a few rounds at least; bounded in case it never ends.
        while (not done.is_set() or rounds < 3) and rounds < 2000:
            wrong += _check_all(model, inputs, refs, sorted(inputs, key=lambda n: (n * t) % 7))
            rounds += 1
        return rounds, wrong

    training = threading.Thread(target=trainer)
    training.start()
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(predictor, range(4)))
    training.join(timeout=60)
    assert not training.is_alive(), "training did not finish"
    assert "error" not in trained, trained.get("error")
    other = trained["model"]
    assert other.history["epoch"] == [1, 2]
    assert other.score(X_test[:2000], y_test[:2000]) > 0.6  # chance is 0.1
    assert all(rounds >= 3 for rounds, _ in results)
    assert _threads._cores_free == cores_free

    wrong = [w for _, ws in results for w in ws]
    assert wrong == [], f"{len(wrong)} predictions differ during training, e.g. {wrong[:3]}"
    # Training is bitwise reproducible for any thread count (docs/ARCHITECTURE.md), so
    # neither the predictions beside it nor the thread it runs on may change one bit.
    assert np.array_equal(other.params_, alone.params_), "training changed by the threads"


@pytest.mark.may_skip("reads /proc/self/statm, which only Linux has")
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/statm")
def test_memory_stays_flat_over_many_calls(model, mnist):
    X_test = mnist[2]
    one, hundred = X_test[:1].copy(), X_test[:100].copy()
    bad = one.copy()
    bad[0, 3] = np.nan

    def calls(n_one: int, n_hundred: int, n_bad: int) -> None:
        for _ in range(n_one):
            model.predict_proba(one)
        for _ in range(n_hundred):
            model.predict_proba(hundred)
        for _ in range(n_bad):  # the error path frees its workspace too
            with pytest.raises(ValueError):
                model.predict_proba(bad)

    calls(1000, 100, 100)  # warm-up: allocator pools, threadpoolctl, OpenMP threads
    gc.collect()
    before = _rss_bytes()
    calls(20_000, 2_000, 2_000)
    gc.collect()
    grown = _rss_bytes() - before
    # 20,000 leaked outputs of one row would be ~1 MB, of the 2,000 hundred-row ones
    # 8 MB, and of the forward pass's workspace far more: 20 MB is loose but catches them.
    assert grown < 20 * 2**20, f"RSS grew by {grown / 2**20:.1f} MB"


def test_one_dimensional_input_is_refused_with_a_hint(model, mnist):
    with pytest.raises(ValueError, match="reshape"):
        model.predict(mnist[2][0])
    with pytest.raises(ValueError, match="reshape"):
        model.predict_proba(mnist[2][0])


@pytest.mark.parametrize("n", [1, 65])
def test_float64_input_equals_its_float32_conversion(model, mnist, n):
    X64 = mnist[2][:n].astype(np.float64) + 1e-9  # not exactly representable in float32
    X32 = X64.astype(np.float32)
    assert np.array_equal(model.predict_proba(X64), model.predict_proba(X32))
    assert np.array_equal(model.predict(X64), model.predict(X32))


# -- the HTTP service --------------------------------------------------------------------


@pytest.fixture(scope="module")
def serve():
    """examples/serve.py as a module; skips without the [serve] extra."""
    for name in ("starlette", "uvicorn", "httpx"):
        pytest.importorskip(name, reason=f'{name} is not installed (pip install ".[serve]")')
    spec = importlib.util.spec_from_file_location("fastmlp_example_serve", SERVE_PY)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _wait_healthy(url: str, alive) -> dict:
    """GET /health until it answers 200, for at most STARTUP_SECONDS."""
    import httpx

    deadline = time.monotonic() + STARTUP_SECONDS
    while time.monotonic() < deadline:
        if not alive():
            pytest.fail("the server stopped before it answered /health")
        try:
            response = httpx.get(f"{url}/health", timeout=2.0)
            if response.status_code == 200:
                return response.json()
        except httpx.TransportError:
            pass
        time.sleep(0.05)
    pytest.fail(f"no answer from {url}/health within {STARTUP_SECONDS} s")


@pytest.fixture(scope="module")
def server(serve, model_file):
    """uvicorn serving the saved model in a background thread; yields its base URL."""
    import uvicorn

    app = serve.create_app(
        fastmlp.load(model_file), max_rows=MAX_ROWS, max_body_bytes=MAX_BODY_BYTES
    )
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))  # port 0: the kernel picks a free one, no race
    url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    config = uvicorn.Config(app, log_level="warning", lifespan="off", timeout_graceful_shutdown=5)
    uv = uvicorn.Server(config)
    thread = threading.Thread(target=uv.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        _wait_healthy(url, thread.is_alive)
        yield url
    finally:
        uv.should_exit = True
        thread.join(timeout=STARTUP_SECONDS)
        sock.close()
    assert not thread.is_alive(), "uvicorn did not shut down"


def test_health_describes_the_model(server, model):
    import httpx

    body = httpx.get(f"{server}/health").json()
    assert body["status"] == "ok"
    assert body["model"]["layer_sizes"] == [784, 64, 10]
    assert body["model"]["classes"] == list(range(10))
    assert body["model"]["dtype"] == "float32"
    assert body["limits"] == {"max_rows": MAX_ROWS, "max_body_bytes": MAX_BODY_BYTES}


def test_concurrent_requests_answer_as_the_local_model(server, model, mnist):
    import httpx

    rng = np.random.default_rng(7)
    X_test = mnist[2]
    batches = []
    for i in range(N_REQUESTS):
        X = X_test[rng.choice(len(X_test), size=int(rng.integers(1, 17)), replace=False)]
        if i % 4 == 0:  # MNIST-like but new: noisy images, clipped to [0, 1]
            X = np.clip(X + rng.normal(0, 0.2, X.shape).astype(np.float32), 0, 1)
        batches.append(np.ascontiguousarray(X))

    def client(k: int) -> list[tuple[int, int, object]]:
        out = []
        with httpx.Client(base_url=server, timeout=30.0) as http:
            for i in range(k, N_REQUESTS, N_CLIENTS):
                try:
                    r = http.post("/predict", json={"instances": batches[i].tolist()})
                    out.append((i, r.status_code, r.json() if r.status_code == 200 else r.text))
                except httpx.HTTPError as exc:
                    out.append((i, -1, repr(exc)))
        return out

    with ThreadPoolExecutor(N_CLIENTS) as pool:
        answers = [a for part in pool.map(client, range(N_CLIENTS)) for a in part]
    errors = [(i, status, body) for i, status, body in answers if status != 200]
    assert errors == []
    assert sorted(i for i, _, _ in answers) == list(range(N_REQUESTS))
    for i, _, body in answers:
        X = batches[i]
        assert body["labels"] == model.predict(X).tolist(), i
        assert all(type(label) is int for label in body["labels"])
        P = np.asarray(body["probabilities"])
        np.testing.assert_allclose(P, model.predict_proba(X), rtol=0, atol=1e-6, err_msg=str(i))


def _row(value: str = "0.5", n: int = 784) -> str:
    return "[" + ",".join([value] * n) + "]"


def _chunks(total: int):
    # A generator body: httpx sends it chunked, with no Content-Length to refuse up front.
    for _ in range(total // 65536):
        yield b" " * 65536


BAD_REQUESTS = {
    "malformed JSON": (b'{"instances": [[0.1, 0.2', 400),
    "not JSON at all": (b"\xff\xfe\xfd", 400),
    "empty body": (b"", 400),
    "not an object": (f"[{_row()}]".encode(), 422),
    "missing key": (f'{{"rows": [{_row()}]}}'.encode(), 422),
    "instances not a list": (b'{"instances": {"a": 1}}', 422),
    "no instances": (b'{"instances": []}', 422),
    "row not a list": (b'{"instances": [0.5]}', 422),
    "row too short": (f'{{"instances": [{_row(n=783)}]}}'.encode(), 422),
    "row too long": (f'{{"instances": [{_row(n=785)}]}}'.encode(), 422),
    "second row wrong": (f'{{"instances": [{_row()}, {_row(n=10)}]}}'.encode(), 422),
    "string value": (f'{{"instances": [{_row(chr(34) + "0.5" + chr(34))}]}}'.encode(), 422),
    "null value": (f'{{"instances": [{_row("null")}]}}'.encode(), 422),
    "boolean value": (f'{{"instances": [{_row("true")}]}}'.encode(), 422),
    "nested list": (f'{{"instances": [{_row("[1]")}]}}'.encode(), 422),
    "NaN": (f'{{"instances": [{_row("NaN")}]}}'.encode(), 422),
    "Infinity": (f'{{"instances": [{_row("-Infinity")}]}}'.encode(), 422),
    "beyond float64": (f'{{"instances": [{_row("1e400")}]}}'.encode(), 422),
    "beyond float32": (f'{{"instances": [{_row("1e39")}]}}'.encode(), 422),
    "too many rows": (f'{{"instances": [{",".join([_row()] * (MAX_ROWS + 1))}]}}'.encode(), 413),
    "body too large": (b" " * (MAX_BODY_BYTES + 1), 413),
}


@pytest.mark.parametrize("case", list(BAD_REQUESTS))
def test_bad_requests_get_a_4xx_with_a_json_error(server, case):
    import httpx

    body, status = BAD_REQUESTS[case]
    r = httpx.post(f"{server}/predict", content=body, timeout=30.0)
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == "application/json"
    assert isinstance(r.json()["error"], str) and r.json()["error"]


def test_chunked_body_too_large_is_refused(server):
    import httpx

    r = httpx.post(f"{server}/predict", content=_chunks(2 * MAX_BODY_BYTES), timeout=30.0)
    assert r.status_code == 413
    assert "error" in r.json()


def test_integer_beyond_float64_is_refused(server):
    import httpx

    row = [10**400] + [0] * 783  # json.dumps writes the 401 digits; float() cannot hold them
    r = httpx.post(f"{server}/predict", content=json.dumps({"instances": [row]}), timeout=30)
    assert r.status_code == 422
    assert "too large" in r.json()["error"]


def test_wrong_method_and_path_get_json_errors(server):
    import httpx

    r = httpx.get(f"{server}/predict")
    assert r.status_code == 405 and "error" in r.json()
    r = httpx.get(f"{server}/nowhere")
    assert r.status_code == 404 and "error" in r.json()


def test_server_still_answers_after_bad_requests(server, model, mnist):
    import httpx

    X = mnist[2][:MAX_ROWS]  # exactly the limit is allowed
    r = httpx.post(f"{server}/predict", json={"instances": X.tolist()}, timeout=30.0)
    assert r.status_code == 200
    assert r.json()["labels"] == model.predict(X).tolist()


def test_app_without_a_port_and_a_model_without_probabilities(serve, mnist):
    import httpx

    X, y = mnist[0][:500], mnist[1][:500].astype(str)  # string labels stay strings in JSON
    mse = fastmlp.train(X, y, hidden=(16,), loss="mse", epochs=1, n_threads=1, seed=0)
    app = serve.create_app(mse)

    async def ask():
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
            return await http.post("/predict", json={"instances": X[:3].tolist()})

    r = asyncio.run(ask())
    assert r.status_code == 200
    assert r.json() == {"labels": mse.predict(X[:3]).tolist(), "probabilities": None}
    with pytest.raises(ValueError, match="max_rows"):
        serve.create_app(mse, max_rows=0)


def test_app_answers_a_regressor_with_its_predictions(serve, mnist):
    import httpx

    X = mnist[0][:300]
    targets = np.c_[X.mean(axis=1), X.std(axis=1)]
    reg = fastmlp.train(X, targets, hidden=(8,), loss="squared_error", epochs=1, seed=0)
    app = serve.create_app(reg)

    async def ask():
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
            health = await http.get("/health")
            return health, await http.post("/predict", json={"instances": X[:3].tolist()})

    health, r = asyncio.run(ask())
    assert health.json()["model"]["classes"] is None
    assert r.status_code == 200
    assert r.json() == {"predictions": reg.predict(X[:3]).tolist()}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_command_line_serves_and_stops_on_sigint(serve, model_file, model, mnist, tmp_path):
    import httpx

    port = _free_port()
    env = {
        **os.environ,
        # The fastmlp this test imported (installed, or an in-place build), not the sources.
        "PYTHONPATH": os.pathsep.join(
            [str(Path(fastmlp.__file__).resolve().parent.parent), os.environ.get("PYTHONPATH", "")]
        ),
    }
    cmd = [sys.executable, str(SERVE_PY), str(model_file), "--port", str(port)]
    log = (tmp_path / "serve.log").open("w+")
    proc = subprocess.Popen(
        [*cmd, "--threads", "1", "--log-level", "warning"], stdout=log, stderr=log, env=env
    )
    try:
        health = _wait_healthy(f"http://127.0.0.1:{port}", lambda: proc.poll() is None)
        assert health["model"]["layer_sizes"] == [784, 64, 10]
        X = mnist[2][:5]
        r = httpx.post(f"http://127.0.0.1:{port}/predict", json={"instances": X.tolist()})
        assert r.json()["labels"] == model.predict(X).tolist()
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=STARTUP_SECONDS) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        log.seek(0)
        output = log.read()
        log.close()
    assert "Traceback" not in output, output

    missing = subprocess.run(
        [sys.executable, str(SERVE_PY), str(tmp_path / "none.npz")],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert missing.returncode == 2
    assert "cannot serve" in missing.stderr
