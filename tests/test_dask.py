"""fastmlp on Dask: block-wise prediction and streamed training over dask arrays, grid
searches on a cluster."""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import fastmlp

da = pytest.importorskip("dask.array")
import dask  # noqa: E402  (after the importorskip that guards it)

from fastmlp.dask import predict, predict_proba, train  # noqa: E402

N_FEATURES = 20
N_CLASSES = 3


def make_data(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, N_FEATURES)).astype(np.float32)
    y = (X[:, 0] > 0).astype(int) + (X[:, 1] > 0.5)
    return X, y


@pytest.fixture(scope="module")
def model() -> fastmlp.MLP:
    X, y = make_data(600)
    return fastmlp.train(X, y, hidden=(16,), epochs=3, seed=0, n_threads=1)


@pytest.fixture(scope="module")
def X_local() -> np.ndarray:
    return make_data(1000, seed=1)[0]


CHUNKINGS = [
    pytest.param((1000, N_FEATURES), id="one-block"),
    pytest.param((300, N_FEATURES), id="uneven-last"),
    pytest.param(((1, 499, 500), (N_FEATURES,)), id="single-row-chunk"),
    pytest.param((250, 7), id="column-chunks"),
    pytest.param(((10,) * 99 + (10,), (N_FEATURES,)), id="many-small"),
]


@pytest.mark.parametrize("chunks", CHUNKINGS)
def test_predict_matches_local(model, X_local, chunks):
    X = da.from_array(X_local, chunks=chunks)
    labels = predict(model, X)
    proba = predict_proba(model, X)
    assert labels.shape == (X.shape[0],) and labels.chunks[0] == X.chunks[0]
    assert proba.shape == (X.shape[0], N_CLASSES) and proba.chunks[0] == X.chunks[0]
    assert labels.dtype == model.classes_.dtype and proba.dtype == model.dtype
    got_labels, got_proba = dask.compute(labels, proba, scheduler="threads")
    assert np.array_equal(got_labels, model.predict(X_local))
    np.testing.assert_allclose(got_proba, model.predict_proba(X_local), rtol=0, atol=1e-6)


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
def test_string_labels_and_estimator(X_local):
    sklearn = pytest.importorskip("sklearn")  # noqa: F841
    from fastmlp.sklearn import MLPClassifier

    X_train, y = make_data(400)
    names = np.array(["ant", "bee", "cat"])[y]
    clf = MLPClassifier((8,), max_iter=3, random_state=0, n_threads=1).fit(X_train, names)
    X = da.from_array(X_local, chunks=(333, N_FEATURES))
    labels = predict(clf, X)
    assert labels.dtype == clf.classes_.dtype
    assert np.array_equal(labels.compute(scheduler="threads"), clf.predict(X_local))
    np.testing.assert_allclose(
        predict_proba(clf, X).compute(scheduler="threads"),
        clf.predict_proba(X_local),
        rtol=0,
        atol=1e-6,
    )


@pytest.mark.parametrize("n_outputs", [1, 2])
@pytest.mark.parametrize("chunks", CHUNKINGS[1:3] + CHUNKINGS[4:])
def test_regressor_predict_matches_local(X_local, chunks, n_outputs):
    X_train, _ = make_data(300)
    targets = np.c_[X_train[:, 0] - X_train[:, 1], X_train[:, 2]][:, :n_outputs]
    reg = fastmlp.train(X_train, targets, loss="squared_error", hidden=(8,), epochs=2, seed=0)
    X = da.from_array(X_local, chunks=chunks)
    out = predict(reg, X)
    want = reg.predict(X_local)
    assert out.shape == want.shape and out.dtype == reg.dtype
    assert out.chunks[0] == X.chunks[0]
    # Blocks are predicted separately, and a one-row block takes the one-row kernel.
    np.testing.assert_allclose(out.compute(scheduler="threads"), want, rtol=1e-6, atol=1e-6)
    with pytest.raises(ValueError, match="cross-entropy"):
        predict_proba(reg, X)


def test_empty_blocks_keep_the_shape():
    reg = fastmlp.MLP((N_FEATURES, 2), loss="squared_error")
    X = da.zeros((0, N_FEATURES), chunks=(5, N_FEATURES), dtype=np.float32)
    assert predict(reg, X).compute().shape == (0, 2)


def test_model_is_one_key_not_copied_per_block():
    # Blocks refer to the model by key: each block's task stays far smaller than the model.
    big = fastmlp.MLP((N_FEATURES, 2000, N_CLASSES), [0, 1, 2])
    X = da.zeros((100, N_FEATURES), chunks=(10, N_FEATURES), dtype=np.float32)
    labels = predict(big, X)
    graph = dict(labels.__dask_graph__())
    blocks = [v for k, v in graph.items() if k[0] == labels.name]
    assert len(blocks) == 10
    assert all(len(pickle.dumps(task)) < big.params_.nbytes / 10 for task in blocks)
    # The model itself is one key (a delayed, not a chunk), and the same model used twice
    # is still one key: the key is a token of the model's content.
    assert len([k for k in graph if not isinstance(k, tuple)]) == 1
    both = da.concatenate([labels, predict_proba(big, X)[:, 0].astype(labels.dtype)])
    assert len([k for k in dict(both.__dask_graph__()) if not isinstance(k, tuple)]) == 1


def test_validation(model):
    X = da.zeros((10, N_FEATURES + 1), chunks=5)
    with pytest.raises(ValueError, match="20 columns"):
        predict(model, X)
    with pytest.raises(ValueError, match="2-D"):
        predict_proba(model, da.zeros(N_FEATURES, chunks=5))
    with pytest.raises(TypeError, match="dask"):
        predict(model, np.zeros((3, N_FEATURES)))
    with pytest.raises(TypeError, match="fastmlp.MLP"):
        predict(object(), da.zeros((10, N_FEATURES)))
    mse = fastmlp.MLP((N_FEATURES, 3), [0, 1, 2], loss="mse")
    with pytest.raises(ValueError, match="cross-entropy"):
        predict_proba(mse, da.zeros((10, N_FEATURES)))


def test_import_fastmlp_does_not_import_dask(tmp_path):
    code = "import sys, fastmlp, fastmlp.dask; assert 'dask' not in sys.modules"
    root = str(Path(fastmlp.__file__).resolve().parents[1])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([root, os.environ.get("PYTHONPATH", "")])}
    # cwd away from the repository root, whose fastmlp/ has no compiled modules after a
    # non-editable install.
    subprocess.run([sys.executable, "-c", code], check=True, env=env, timeout=60, cwd=tmp_path)


# -- streamed training -----------------------------------------------------------------------
STREAM = dict(hidden=(16,), epochs=3, batch_size=64, seed=0, n_threads=1)


def recorded(X: np.ndarray, chunks: int, log: list) -> da.Array:
    """X as a dask array whose blocks append (block index, rows) to ``log`` when computed."""

    def load(block, block_info=None):
        log.append((block_info[0]["chunk-location"][0], block.shape[0]))
        return block

    return da.from_array(X, chunks=(chunks, X.shape[1])).map_blocks(load, dtype=X.dtype)


def test_train_streams_each_block_once_per_epoch_in_shuffled_order():
    X, y = make_data(1000, seed=4)
    log: list = []
    with dask.config.set(scheduler="synchronous"):
        model = train(recorded(X, 200, log), y, **STREAM)
    assert len(model.history["epoch"]) == 3
    # One block per computation (nothing gathered), each block once per epoch.
    assert all(rows == 200 for _, rows in log) and len(log) == 3 * 5
    orders = [[b for b, _ in log[e * 5 : (e + 1) * 5]] for e in range(3)]
    assert all(sorted(order) == list(range(5)) for order in orders)
    assert len({tuple(order) for order in orders}) > 1  # shuffled, differently per epoch
    log.clear()
    with dask.config.set(scheduler="synchronous"):
        train(recorded(X, 200, log), y, **{**STREAM, "shuffle": False})
    assert [b for b, _ in log] == list(range(5)) * 3


@pytest.mark.parametrize("dropout", [0.0, 0.2])
def test_train_same_weights_for_same_seed_and_blocks(dropout):
    X, y = make_data(900, seed=5)
    opts = {**STREAM, "dropout": dropout}
    with dask.config.set(scheduler="synchronous"):
        first = train(da.from_array(X, chunks=(250, 7)), y, **opts)
    with dask.config.set(scheduler="threads"):
        # y given as a differently chunked dask array, 2 threads: the same bits.
        again = train(
            da.from_array(X, chunks=(250, N_FEATURES)),
            da.from_array(y, chunks=100),
            **{**opts, "n_threads": 2},
        )
        other_seed = train(da.from_array(X, chunks=(250, N_FEATURES)), y, **{**opts, "seed": 1})
        other_blocks = train(da.from_array(X, chunks=(300, N_FEATURES)), y, **opts)
    assert np.array_equal(first.params_, again.params_)
    assert first.history["loss"] == again.history["loss"]
    assert not np.array_equal(first.params_, other_seed.params_)
    assert not np.array_equal(first.params_, other_blocks.params_)


def test_train_learns_like_in_memory_training():
    X, y = make_data(4000, seed=6)
    X_test, y_test = make_data(2000, seed=7)
    opts = {**STREAM, "hidden": (32,), "epochs": 20, "lr": 3e-3}
    with dask.config.set(scheduler="threads"):
        streamed = train(da.from_array(X, chunks=(1000, N_FEATURES)), y, **opts)
    in_memory = fastmlp.train(X, y, **opts)
    assert streamed.score(X_test, y_test) > 0.9
    assert abs(streamed.score(X_test, y_test) - in_memory.score(X_test, y_test)) < 0.03
    assert streamed.history["loss"][-1] < streamed.history["loss"][0]


def test_train_reads_classes_and_balanced_weights_from_every_block():
    X, y = make_data(1200, seed=8)
    order = np.argsort(y, kind="stable")  # one block per class: none sees all three
    X, y = X[order], y[order]
    labels = np.array(["ant", "bee", "cat"])[y]
    counts = np.bincount(y)
    blocks = (tuple(counts),)
    Xd = da.from_array(X, chunks=(blocks[0], (N_FEATURES,)))
    with dask.config.set(scheduler="synchronous"):
        model = train(Xd, da.from_array(labels, chunks=blocks), class_weight="balanced", **STREAM)
        by_hand = {c: len(y) / (3 * n) for c, n in zip(["ant", "bee", "cat"], counts)}
        same = train(Xd, labels, class_weight=by_hand, **STREAM)
        unweighted = train(Xd, labels, **STREAM)
        as_objects = train(Xd, labels.astype(object), **STREAM)  # e.g. from pandas
    assert list(model.classes_) == ["ant", "bee", "cat"]
    assert np.array_equal(model.params_, same.params_)
    assert not np.array_equal(model.params_, unweighted.params_)
    assert np.array_equal(as_objects.params_, unweighted.params_)
    assert list(as_objects.classes_) == ["ant", "bee", "cat"]


def test_train_regressor_with_sample_weight_and_validation():
    X, _ = make_data(800, seed=9)
    Y = np.stack([X[:, 0] - X[:, 1], 0.5 * X[:, 2]], axis=1)
    w = np.random.default_rng(0).uniform(0.5, 2.0, size=800)
    opts = {**STREAM, "loss": "squared_error", "epochs": 8, "lr": 3e-3}
    with dask.config.set(scheduler="synchronous"):
        model = train(
            da.from_array(X, chunks=(300, N_FEATURES)),
            da.from_array(Y, chunks=(200, 2)),
            sample_weight=da.from_array(w, chunks=150),
            validation_data=(X[:200], Y[:200]),
            **opts,
        )
        unweighted = train(
            da.from_array(X, chunks=(300, N_FEATURES)),
            Y,
            validation_data=(X[:200], Y[:200]),
            **opts,
        )
    assert model.is_regressor and model.layer_sizes[-1] == 2
    assert len(model.history["val_loss"]) == 8
    assert model.history["val_loss"][-1] < model.history["val_loss"][0]
    assert not np.array_equal(model.params_, unweighted.params_)


def test_train_multilabel_and_poisson():
    X, y = make_data(900, seed=12)
    Y = np.stack([y == 0, y == 2, X[:, 3] > 0], axis=1).astype(int)
    counts = np.random.default_rng(1).poisson(np.exp(0.5 * X[:, 0]))
    with dask.config.set(scheduler="synchronous"):
        labels = train(
            da.from_array(X, chunks=(300, N_FEATURES)), Y, **{**STREAM, "epochs": 15, "lr": 1e-2}
        )
        poisson = train(
            da.from_array(X, chunks=(300, N_FEATURES)), counts, loss="poisson", **STREAM
        )
    assert labels.is_multilabel and labels.predict(X).shape == (900, 3)
    assert (labels.predict(X) == Y).mean() > 0.85  # per-label accuracy
    assert labels.history["loss"][-1] < labels.history["loss"][0]
    assert poisson.is_regressor and poisson.loss == "poisson" and np.all(poisson.predict(X) > 0)


def test_train_stop_rules_and_continuation():
    X, y = make_data(600, seed=10)
    Xd = da.from_array(X, chunks=(200, N_FEATURES))
    seen = []

    def stop_after_two(figures):
        seen.append(figures["epoch"])
        return figures["epoch"] == 2

    with dask.config.set(scheduler="synchronous"):
        model = train(Xd, y, callbacks=[stop_after_two], **{**STREAM, "epochs": 5})
        assert seen == [1, 2] and model.stop_reason_ == "callback"
        assert len(model.history["loss"]) == 2
        # lr so high the validation loss only rises: stops after `patience` bad epochs
        # with the best epoch's weights.
        stopped = train(
            Xd,
            y,
            validation_data=(X, y),
            early_stopping=True,
            patience=2,
            **{**STREAM, "epochs": 30, "lr": 0.5},
        )
        assert stopped.stop_reason_ == "early_stopping"
        best = int(np.argmin(stopped.history["val_loss"]))
        assert len(stopped.history["val_loss"]) == best + 3
        loss_now = stopped._network.evaluate(
            X,
            stopped._encode_y(y, len(y))[0],
            np.empty((len(y), 3), np.float32),
            n_threads=1,
        )[0] / len(y)
        assert loss_now == pytest.approx(stopped.history["val_loss"][best], rel=1e-6)
        more = train(Xd, y, init=model, epochs=2)
    assert more is model and more.history["epoch"] == [1, 2, 3, 4]


def test_train_errors():
    X, y = make_data(100)
    Xd = da.from_array(X, chunks=(50, N_FEATURES))
    with pytest.raises(TypeError, match="dask.array.Array"):
        train(X, y)
    with pytest.raises(ValueError, match="one entry per row of X"):
        train(Xd, y[:99])
    with pytest.raises(ValueError, match="one entry per row of X"):
        train(Xd, y, sample_weight=np.ones(3))
    with pytest.raises(ValueError, match="validation_data"):
        train(Xd, y, validation_split=0.2)
    with pytest.raises(ValueError, match="early_stopping needs validation_data"):
        train(Xd, y, early_stopping=True)
    with pytest.raises(TypeError, match="unknown options"):
        train(Xd, y, hiden=(4,))
    with pytest.raises(ValueError, match="lr"):
        train(Xd, y, lr=-1.0)
    with pytest.raises(ValueError, match="only 0 and 1"):
        train(Xd, np.stack([y, y], axis=1))  # 2-D: multilabel, whose labels are 0/1
    small = fastmlp.train(X[:, :5], y, hidden=(4,), epochs=1, seed=0)
    with pytest.raises(ValueError, match="init was trained on 5"):
        train(Xd, y, init=small)
    model = fastmlp.train(X, y, hidden=(4,), epochs=1, seed=0)
    with pytest.raises(ValueError, match="validation_data's y"):
        train(Xd, y, init=model, validation_data=(X, y + 7), epochs=1)
    X[70, 3] = np.nan  # row 20 of the second block
    with pytest.raises(ValueError, match=r"in the block of rows 50-99: X contains NaN .*row 20"):
        train(da.from_array(X, chunks=(50, N_FEATURES)), y, hidden=(4,), epochs=1)


# -- on a distributed cluster ----------------------------------------------------------------
@pytest.fixture(scope="module")
def client(request):
    distributed = pytest.importorskip("distributed")
    # Worker processes must import fastmlp from this tree, however pytest found it.
    root = str(Path(fastmlp.__file__).resolve().parents[1])
    # LocalCluster also sets OMP_NUM_THREADS=1 (and the BLAS counts) in this process's
    # environment and leaves them: a library that reads them later (torch's first
    # parallel op calls omp_set_num_threads) would cap fastmlp's OpenMP for the session.
    saved_environ = dict(os.environ)
    old = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = os.pathsep.join([root] + ([old] if old else []))
    cluster = distributed.LocalCluster(
        n_workers=2,
        processes=True,
        threads_per_worker=1,
        host="127.0.0.1",
        dashboard_address=None,
        timeout="30s",
    )
    client = distributed.Client(cluster, timeout="30s")

    def close():
        client.close(timeout=10)
        cluster.close(timeout=10)
        os.environ.clear()
        os.environ.update(saved_environ)

    request.addfinalizer(close)
    client.wait_for_workers(2, timeout=30)
    return client


def test_predict_on_cluster(client, model):
    X_local = make_data(2000, seed=2)[0]
    X = da.from_array(X_local, chunks=(500, N_FEATURES))
    assert X.numblocks == (4, 1)
    labels, proba = client.compute([predict(model, X), predict_proba(model, X)], sync=True)
    assert np.array_equal(labels, model.predict(X_local))
    np.testing.assert_allclose(proba, model.predict_proba(X_local), rtol=0, atol=1e-6)


# max_iter is kept tiny for speed, so the fits stop before they converge.
@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
def test_grid_search_on_cluster(client):
    pytest.importorskip("sklearn")
    import joblib
    from distributed import get_task_stream
    from sklearn.model_selection import GridSearchCV

    from fastmlp.sklearn import MLPClassifier

    X, y = make_data(300, seed=3)
    grid = {"hidden_layer_sizes": [(4,), (8,)], "learning_rate_init": [1e-3, 1e-2]}

    def search(n_jobs):
        estimator = MLPClassifier(max_iter=5, n_threads=1, random_state=0)
        return GridSearchCV(estimator, grid, cv=2, n_jobs=n_jobs).fit(X, y)

    local = search(None)
    with get_task_stream(client) as stream, joblib.parallel_backend("dask"):
        remote = search(-1)
    assert len(stream.data) >= 2 * 4  # the fits ran on the cluster's workers
    assert len(set(local.cv_results_["mean_test_score"])) > 1  # the grid is not a tie
    assert remote.best_params_ == local.best_params_
    np.testing.assert_array_equal(
        remote.cv_results_["mean_test_score"], local.cv_results_["mean_test_score"]
    )


def test_train_on_cluster(client):
    from distributed import get_task_stream

    X, y = make_data(1200, seed=11)
    Xd = da.from_array(X, chunks=(300, N_FEATURES))
    opts = {**STREAM, "dropout": 0.1}
    with get_task_stream(client) as stream:
        remote = train(Xd, da.from_array(y, chunks=300), **opts)
    with dask.config.set(scheduler="synchronous"):
        local = train(Xd, y, **opts)
    assert {t["worker"] for t in stream.data}  # the blocks were computed on the workers
    assert np.array_equal(remote.params_, local.params_)
