"""Paired rounds: fastmlp and its peers timed in turn, one epoch each per round.

The shared machines these figures come from drift by 30% and more within minutes, in
phases several epochs long (benches/results.md, 2026-12-02). Timed one implementation after
the other, two runs of the grid put PyTorch / fastmlp on one shape at 1.22x and 1.64x on
the same day. In paired rounds each ratio compares epochs run seconds apart; the median of
the per-round ratios, with their range, is the figure reported.

``race`` is used by benches/test_bench_grid.py, test_bench_training.py and
test_bench_shared_cores.py, ``paired_ratio`` by benches/report.py and the summary
benches/conftest.py prints.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import pytest

# Seconds of rest before each implementation's epoch, so that the last one's threads no
# longer spin on the cores (PyTorch's took a fifth of a CPU in the first 5 ms after an
# epoch, none after 10 ms). Not longer: after 0.1 s of rest a short epoch of fastmlp ran
# 7-13% slower, on 1 thread too (a cold core), which back-to-back epochs never see.
PAUSE = 0.01
# The name under which a race times the yardstick of the sgemm peak (conftest's sgemm_round).
YARDSTICK = "sgemm"


def installed(builders: dict[str, Callable], *args) -> tuple[dict, dict]:
    """``({name: build(*args)}, {name: why})``: the peers whose fixtures do not skip, and
    the reasons of those that do (not installed), so that fastmlp races the others."""
    peers, missing = {}, {}
    for name, build in builders.items():
        try:
            peers[name] = build(*args)
        except pytest.skip.Exception as why:
            missing[name] = str(why)
    return peers, missing


def record(
    benchmark, races: list, label: str, seconds: dict, missing: dict, main="fastmlp", **info
) -> None:
    """Store a race in the benchmark's extra_info (with `info`; `main` is the run
    pytest-benchmark timed), and its epochs (not the yardstick's) under `label` for the
    summary at the end of the run."""
    benchmark.extra_info.update(info, impl=main, seconds=seconds, missing=missing)
    epochs = {name: times for name, times in seconds.items() if name != YARDSTICK}
    races.append((label, main, epochs, missing))


def race(
    benchmark,
    main: tuple[str, Callable[[], None]],
    peers: dict[str, Callable[[], None]],
    rounds: int,
    warmup_rounds: int,
    pause: float = PAUSE,
    before: Callable[[], None] | None = None,
) -> dict[str, list[float]]:
    """Time ``main`` with pytest-benchmark, and every peer once in each of its rounds.

    Each round runs the peers in turn, then ``main`` (which pytest-benchmark times), each
    after ``pause`` seconds of rest and then ``before`` (untimed). Warm-up rounds run
    everything untimed.

    Parameters
    ----------
    benchmark : pytest_benchmark.fixture.BenchmarkFixture
        The test's ``benchmark`` fixture.
    main : (str, callable)
        The name and one epoch of the implementation pytest-benchmark reports.
    peers : dict of str to callable
        One epoch of each peer, by name.
    rounds, warmup_rounds : int
        Timed and untimed rounds.
    pause : float
        Seconds of rest before each epoch.
    before : callable, optional
        Run untimed right before each epoch, after the rest.

    Returns
    -------
    dict of str to list of float
        Seconds of each timed round, by name (``main``'s name included), in round order.
    """
    name, run = main
    seconds: dict[str, list[float]] = {name: [], **{peer: [] for peer in peers}}
    done = 0  # rounds begun

    def prepare() -> None:
        time.sleep(pause)
        if before is not None:
            before()

    def timed(key: str, epoch: Callable[[], None]) -> None:
        prepare()
        tic = time.perf_counter()
        epoch()
        if done > warmup_rounds:
            seconds[key].append(time.perf_counter() - tic)

    def setup() -> None:
        nonlocal done
        done += 1
        for peer, epoch in peers.items():
            timed(peer, epoch)
        prepare()

    def target() -> None:
        tic = time.perf_counter()
        run()
        if done > warmup_rounds:
            seconds[name].append(time.perf_counter() - tic)

    benchmark.pedantic(target, setup=setup, rounds=rounds, warmup_rounds=warmup_rounds)
    # pytest-benchmark's profiling option runs one more round: pair the rounds main ran.
    return {key: values[: len(seconds[name])] for key, values in seconds.items()}


def paired_ratio(peer: list[float], main: list[float]) -> tuple[float, float, float] | None:
    """Median, least and greatest of ``peer[i] / main[i]`` over the rounds both ran.

    Above 1: ``main`` was faster. None when no round holds both.
    """
    ratios = [p / m for p, m in zip(peer, main) if m > 0]
    if not ratios:
        return None
    return statistics.median(ratios), min(ratios), max(ratios)


def fmt_paired(ratio: tuple[float, float, float] | None) -> str:
    """A paired ratio (``paired_ratio``) as "1.52x (1.31-1.70)", or a dash."""
    if ratio is None:
        return "—"
    return f"{ratio[0]:.2f}x ({ratio[1]:.2f}-{ratio[2]:.2f})"
