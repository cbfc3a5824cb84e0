"""The thread tuner (csrc/fm_tuner.h), driven by a simulated clock, and its use in training."""

from __future__ import annotations

import numpy as np
import pytest
from fastmlp._trainer import Trainer, forget_last_tuner

import fastmlp
from fastmlp import _kernels, _threads


@pytest.fixture(autouse=True)
def fresh_process_tuner():
    """Each test's first fit starts afresh, whatever an earlier test's fits found."""
    forget_last_tuner()
    yield
    forget_last_tuner()


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


def settled(cost: dict, n_max: int = 2) -> _kernels.Tuner:
    """A tuner after a long fit at `cost`: its level found, its probes grown rare."""
    tuner = _kernels.Tuner(n_max)
    run(tuner, cost, 20_000)
    return tuner


def probes(used: np.ndarray, level: int) -> np.ndarray:
    """The steps at which a probe away from `level` threads began."""
    return np.flatnonzero((used[1:] != level) & (used[:-1] == level)) + 1


def test_a_fit_after_one_on_shared_cores_starts_at_one_thread():
    # An epoch of 469 steps (MNIST at batch 128). A fresh tuner spends its first window at
    # two threads, then probes of two ever further apart. A tuner following the last fit's
    # starts at one thread and probes after its first window (7 steps of 1.28 ms), then
    # 64 windows later, as rarely as the last fit did by its end.
    last = settled(SHARED)
    assert last.threads == 1
    fresh, fresh_elapsed = run(_kernels.Tuner(2), SHARED, 469)
    follows, elapsed = run(_kernels.Tuner(2, after=last), SHARED, 469)
    assert follows[0] == 1
    starts = probes(follows, 1)
    assert starts[0] == 7 and np.all(np.diff(starts) >= 64 * 7)
    assert np.sum(follows == 2) == 2 * len(starts) < np.sum(fresh == 2)
    assert elapsed < fresh_elapsed and elapsed < 1.03 * 469 * 128 * SHARED[1]


def test_a_fit_after_one_on_shared_cores_finds_quiet_cores_again():
    # QUIET at one thread: steps of 1.28 ms, a window of 7; then a probe of two, which wins.
    used, _ = run(_kernels.Tuner(2, after=settled(SHARED)), QUIET, 2_000)
    assert used[0] == 1 and probes(used, 1)[0] == 7
    assert np.mean(used[20:] == 2) > 0.95


def test_a_fit_after_one_on_quiet_cores_probes_as_rarely():
    last = settled(QUIET)
    assert last.threads == 2
    fresh, _ = run(_kernels.Tuner(2), QUIET, 2_000)
    follows, _ = run(_kernels.Tuner(2, after=last), QUIET, 2_000)
    # Probes of one thread after the first window (12 steps of 0.7 ms) for both; then the
    # fresh tuner's come 8, 16, 32, ... windows apart, and the follower's 64 windows apart.
    fresh_starts, starts = probes(fresh, 2), probes(follows, 2)
    assert follows[0] == 2 and starts[0] == fresh_starts[0] == 12
    assert np.all(np.diff(starts) >= 64 * 12) and len(starts) < len(fresh_starts)


@pytest.mark.parametrize(("n_last", "n_max", "start"), [(2, 8, 1), (2, 1, 1), (8, 2, 2)])
def test_a_fit_after_another_starts_within_its_threads(n_last, n_max, start):
    # The last fit found 1 of 2 threads, or 4 of 8 (cost below); the next has n_max.
    cost = SHARED if n_last == 2 else {8: 4e-6, 4: 2e-6, 2: 3e-6, 1: 5e-6}
    assert _kernels.Tuner(n_max, after=settled(cost, n_last)).threads == start


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


def test_a_fit_of_another_network_goes_on_from_the_process_s_last():
    X = np.eye(4, dtype=np.float32)
    y = np.array([0, 1, 0, 1], np.int32)
    model = fastmlp.train(X, y, hidden=(3,), epochs=1, seed=0)
    # Two networks without a tuner of their own, in a process where no adaptive epoch ran.
    models = [fastmlp.MLP.from_weights(model.weights, model.biases) for _ in range(2)]
    forget_last_tuner()
    tuner = _kernels.Tuner(2)
    run(tuner, SHARED, 2_000)
    tuner.give_to(models[0]._network)

    def trainer(model, n_threads=2):
        trainer = Trainer(
            model._network, X, y, batch_size=2, n_threads=n_threads, adaptive_threads=True
        )
        trainer.set_optimizer(
            "sgd", {"t": 0, "state1": np.zeros_like(model.params_), "state2": None}
        )
        return trainer

    assert trainer(models[1]).threads == 2
    # Two steps of microseconds: the epoch ends before any window does.
    trainer(models[0]).epoch(np.arange(4), 0.01, 0)
    assert trainer(models[1]).threads == 1
    assert trainer(models[1], n_threads=8).threads == 1
    forget_last_tuner()
    assert trainer(models[1]).threads == 2
