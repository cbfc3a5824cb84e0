"""fastmlp on Dask: block-wise prediction over dask arrays, grid searches on a cluster."""

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

from fastmlp.dask import predict, predict_proba  # noqa: E402

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
