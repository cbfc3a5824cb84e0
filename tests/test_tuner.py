"""The thread tuner (csrc/fm_tuner.h), driven by a simulated clock, and its use in training."""

from __future__ import annotations

import numpy as np
import pytest
from fastmlp._trainer import Trainer

import fastmlp
from fastmlp import _kernels, _threads


def run(tuner: _kernels.Tuner, cost: dict, steps: int, now: float = 0.0, rows: int = 128):
    """``steps`` steps of ``rows`` rows each costing ``cost[threads]`` seconds per row.

    Returns the threads of every step and the clock at the end."""
    used = []
    for _ in range(steps):
        threads = tuner.threads
        used.append(threads)
        now += rows * cost[threads]
        tuner.step(rows, now)
    return np.array(used), now


QUIET = {1: 10e-6, 2: 5.5e-6}  # 2 threads 1.8x faster: a step of 128 rows 0.7 ms
SHARED = {1: 10e-6, 2: 40e-6}  # another process on a core: 2 threads 4x slower


def test_quiet_cores_keep_all_threads():
    used, elapsed = run(_kernels.Tuner(2), QUIET, 20_000)
    assert np.mean(used == 2) > 0.95
    # What the probes of one thread cost, against always running two.
    assert elapsed < 1.03 * 20_000 * 128 * QUIET[2]


def test_shared_cores_fall_back_to_one_thread():
    used, elapsed = run(_kernels.Tuner(2), SHARED, 20_000)
    assert np.mean(used == 1) > 0.95
    assert elapsed < 1.2 * 20_000 * 128 * SHARED[1]  # the "within 20% of 1 thread"


def test_a_new_tuner_probes_after_its_first_window():
    # SHARED: a window lasts 4 steps (20 ms at two threads); one window, then a probe of
    # one thread, which wins.
    used, _ = run(_kernels.Tuner(2), SHARED, 100)
    assert np.all(used[:4] == 2) and used[4] == 1
    assert np.mean(used[4:] == 1) > 0.9


def test_a_losing_probe_ends_after_two_steps():
    # Steps of 16 rows: 0.16 ms at one thread, 0.64 ms at two, whose windows would last
    # 13 steps (8 ms). After the switch to one thread every probe of two lasts two steps.
    tuner = _kernels.Tuner(2)
    used, _ = run(tuner, SHARED, 20_000, rows=16)
    assert tuner.threads == 1
    starts = np.flatnonzero(np.diff(used.astype(int)) == 1) + 1
    assert len(starts) >= 3
    for s in starts:
        assert np.all(used[s : s + 2] == 2) and used[s + 2] == 1
    assert np.mean(used == 1) > 0.99


def test_a_losing_probe_of_fewer_threads_ends_after_two_steps():
    # QUIET: steps of 128 rows, 0.7 ms at two threads (windows of 12 steps), 1.28 ms at
    # one. Every try of one thread is slower from its first steps: it lasts two.
    used, _ = run(_kernels.Tuner(2), QUIET, 5_000)
    starts = np.flatnonzero(np.diff(used.astype(int)) == -1) + 1
    assert len(starts) >= 3
    for s in starts:
        assert np.all(used[s : s + 2] == 1) and used[s + 2] == 2


def test_follows_the_load_as_it_comes_and_goes():
    tuner = _kernels.Tuner(2)
    used, now = run(tuner, QUIET, 2_000)
    assert tuner.threads == 2 and not tuner.probing
    used, now = run(tuner, SHARED, 2_000, now)
    # The first slow window calls a probe of one thread at once, which wins: one window
    # at two threads, then one thread, save for probes of two ever further apart.
    switch = int(np.argmax(used == 1))
    assert switch <= 2 * 8
    assert np.mean(used[switch:] == 1) > 0.95
    used, now = run(tuner, QUIET, 2_000, now)
    # Back to two once a probe finds them faster (probes at most 64 windows apart).
    first_two = int(np.argmax(used == 2))
    assert first_two <= 70 * 8 and np.mean(used[first_two:] == 2) > 0.95


def test_many_threads_find_the_best_level():
    cost = {8: 4e-6, 4: 2e-6, 2: 3e-6, 1: 5e-6}  # 4 of the 8 are free
    used, _ = run(_kernels.Tuner(8), cost, 10_000)
    assert np.mean(used[2_000:] == 4) > 0.9
    assert set(np.unique(used)) <= {1, 2, 4, 8}


def test_one_thread_and_short_steps():
    tuner = _kernels.Tuner(1)
    used, _ = run(tuner, {1: 1e-3}, 100)
    assert np.all(used == 1) and not tuner.probing
    # Steps of a microsecond: a window lasts 8 ms, so no probe for the first 8000 steps.
    used, _ = run(_kernels.Tuner(2), {1: 1e-6, 2: 1e-6}, 7_900, rows=1)
    assert np.all(used == 2)


def test_adaptive_training_gives_the_bits_of_one_thread(monkeypatch):
    rng = np.random.default_rng(0)
    X = rng.normal(size=(3000, 40)).astype(np.float32)
    y = (X[:, 0] > 0).astype(int) + (X[:, 1] > 0)
    opts = dict(hidden=(64, 32), epochs=2, batch_size=16, seed=3, dropout=0.1)
    monkeypatch.setenv("FASTMLP_ADAPTIVE_THREADS", "0")
    one = fastmlp.train(X, y, n_threads=1, **opts)
    monkeypatch.setenv("FASTMLP_ADAPTIVE_THREADS", "1")
    adaptive = fastmlp.train(X, y, n_threads=2, **opts)
    assert np.array_equal(one.params_, adaptive.params_)


def test_the_switch(monkeypatch):
    monkeypatch.delenv("FASTMLP_ADAPTIVE_THREADS", raising=False)
    assert _threads.adaptive_threads()
    monkeypatch.setenv("FASTMLP_ADAPTIVE_THREADS", "0")
    assert not _threads.adaptive_threads()
    model = fastmlp.train(np.eye(4), [0, 1, 0, 1], hidden=(3,), epochs=1, seed=0)
    X = np.eye(4, dtype=np.float32)
    y = np.array([0, 1, 0, 1], np.int32)
    fixed = Trainer(model._network, X, y, batch_size=2, n_threads=2)
    tuned = Trainer(model._network, X, y, batch_size=2, n_threads=2, adaptive_threads=True)
    assert (fixed.adaptive_threads, fixed.threads) == (False, 2)
    assert (tuned.adaptive_threads, tuned.threads) == (True, 2)


@pytest.mark.parametrize("n_max", [0, -3])
def test_tuner_clamps_its_maximum(n_max):
    assert _kernels.Tuner(n_max).threads == 1


def test_resume_drops_the_time_between_epochs():
    """A pause between two steps (validation, callbacks) is not a slowdown of the steps."""
    after = {}
    for resume in (False, True):
        tuner = _kernels.Tuner(2)
        _, now = run(tuner, QUIET, 2_000)
        now += 1.0  # a second of Python between epochs
        if resume:
            tuner.resume(now)
        after[resume], _ = run(tuner, QUIET, 36, now)  # three windows
    # Counted in, the pause makes a window 100x slower, which calls a probe of one thread
    # at once; resumed, the windows are like the others.
    assert np.any(after[False] == 1)
    assert np.all(after[True] == 2)


def test_next_fit_goes_on_from_the_last_tuner():
    model = fastmlp.train(np.eye(4), [0, 1, 0, 1], hidden=(3,), epochs=1, seed=0)
    X = np.eye(4, dtype=model.dtype)
    y = np.array([0, 1, 0, 1], np.int32)
    tuner = _kernels.Tuner(2)
    run(tuner, SHARED, 2_000)
    assert tuner.threads == 1
    tuner.give_to(model._network)

    def threads(n_threads, adaptive=True):
        return Trainer(
            model._network, X, y, batch_size=2, n_threads=n_threads, adaptive_threads=adaptive
        ).threads

    assert threads(2) == 1  # what the last fit found
    assert threads(4) == 4  # found for another thread count: starts afresh
    assert threads(2, adaptive=False) == 2
