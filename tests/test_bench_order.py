"""How the benchmark suite races implementations: one workload's back to back
(benches/conftest.py), and the training epochs' in paired rounds (benches/paired.py).

The order is collected, not run: ``pytest --collect-only`` of benches/ lists the order the
benchmarks would run in.
"""

from __future__ import annotations

import importlib.util
import itertools
import os
import subprocess
import sys
from pathlib import Path

import pytest

import fastmlp

ROOT = Path(__file__).resolve().parent.parent

pytest.importorskip("pytest_benchmark")


# `pytest` as its console script runs it: without the working directory on sys.path, so
# that the child imports the fastmlp this process imported (the source tree only when it
# is built in place there).
PYTEST = "import sys; del sys.path[0]; import pytest; sys.exit(pytest.main(sys.argv[1:]))"


def collected(*modules: str) -> list[tuple[str, str, str]]:
    """(module, function, parameter id) of each benchmark, in run order."""
    env = dict(os.environ)
    if Path(fastmlp.__file__).resolve().parent.parent == ROOT:
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    args = ["--collect-only", "-q", "--benchmark-only", *(f"benches/{m}" for m in modules)]
    out = subprocess.run(
        [sys.executable, "-c", PYTEST, *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    rows = []
    for line in out.stdout.splitlines():
        if "::" not in line:
            continue
        path, test = line.split("::", 1)
        function, _, param = test.partition("[")
        rows.append((Path(path).name, function, param.rstrip("]")))
    return rows


def runs(keys: list) -> list:
    """The keys of consecutive runs of equal keys."""
    return [key for key, _ in itertools.groupby(keys)]


@pytest.fixture(scope="module")
def order() -> dict[str, list[tuple[str, str]]]:
    """Per module of three, (function, parameter id) of its benchmarks in run order."""
    modules = ("test_bench_grid.py", "test_bench_training.py", "test_bench_shared_cores.py")
    rows = collected(*modules)
    return {m: [(f, p) for module, f, p in rows if module == m] for m in modules}


def test_grid_races_every_shape_in_one_benchmark(order):
    # Each shape is one benchmark, whose rounds run every implementation (paired.race);
    # so is each dtype and batch of the MNIST epochs.
    rows = order["test_bench_grid.py"]
    assert len(rows) >= 8
    assert {function for function, _ in rows} == {"test_epoch"}
    assert len({param for _, param in rows}) == len(rows)


def load_paired():
    spec = importlib.util.spec_from_file_location("paired", ROOT / "benches" / "paired.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_race_runs_the_peers_and_main_in_turn_each_round(benchmark):
    paired = load_paired()
    log = []
    main = ("main", lambda: log.append("main"))
    peers = {name: (lambda name=name: log.append(name)) for name in ("torch", "jax")}
    seconds = paired.race(benchmark, main, peers, rounds=3, warmup_rounds=2, pause=0)
    assert log == ["torch", "jax", "main"] * 5
    # The warm-up rounds are not timed; every timed round holds one epoch of each.
    assert {name: len(times) for name, times in seconds.items()} == {
        "main": 3,
        "torch": 3,
        "jax": 3,
    }
    assert len(benchmark.stats.stats.data) == 3


def test_paired_ratio_is_the_median_of_per_round_ratios():
    paired = load_paired()
    # The peer's 2x slower rounds happen while the machine is 3x slower for both.
    peer, main = [2.0, 6.0, 2.0, 6.0, 2.2], [1.0, 3.0, 1.0, 3.0, 1.0]
    assert paired.paired_ratio(peer, main) == (2.0, 2.0, 2.2)
    assert paired.paired_ratio([], main) is None


def test_training_races_every_dtype_and_batch_in_one_benchmark(order):
    rows = order["test_bench_training.py"]
    assert {function for function, _ in rows} == {"test_epoch"}
    workloads = {"-".join(param.split("-")[:2]) for _, param in rows}
    assert len(workloads) == len(rows) == 6


def test_a_module_without_workload_params_keeps_pytests_order(order):
    # The shared-cores suite compares along a parameter of one function.
    functions = [function for function, _ in order["test_bench_shared_cores.py"]]
    assert runs(functions) == ["test_competing_process", "test_after_peers"]
