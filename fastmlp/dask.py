"""Prediction over dask arrays, block by block.

This module needs dask (``pip install "dask[array]"``); it imports dask only when one of
its functions is called, and ``import fastmlp`` never imports it. Use it as

>>> import dask.array as da                                  # doctest: +SKIP
>>> from fastmlp.dask import predict, predict_proba           # doctest: +SKIP
>>> X = da.from_zarr("features.zarr")                         # doctest: +SKIP
>>> labels = predict(model, X).compute()                      # doctest: +SKIP

The model is a :class:`fastmlp.MLP` or a fitted :class:`fastmlp.sklearn.MLPClassifier`
or :class:`fastmlp.sklearn.MLPRegressor`.
It enters the task graph once, as a single key every block depends on, so a distributed
scheduler sends it to each worker once rather than with every block.

Grid searches need nothing from this module: run scikit-learn's ``GridSearchCV`` over
:class:`fastmlp.sklearn.MLPClassifier` inside ``joblib.parallel_backend("dask")`` with a
``distributed.Client`` open, and the fits fan out over the cluster.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from fastmlp.model import MLP

if TYPE_CHECKING:  # pragma: no cover - for type checkers only
    import dask.array

__all__ = ["predict", "predict_proba"]


def predict(model: Any, X: dask.array.Array) -> dask.array.Array:
    """Predicted class labels (or a regressor's targets) of a dask array, block by block.

    Parameters
    ----------
    model : fastmlp.MLP or fitted fastmlp.sklearn.MLPClassifier or MLPRegressor
        The trained network.
    X : dask.array.Array of shape (n_samples, n_features)
        Inputs, chunked along the rows. Chunks that split the columns are merged first.

    Returns
    -------
    dask.array.Array of shape (n_samples,) or (n_samples, n_outputs)
        Lazy labels from ``model.classes_``, one chunk per row chunk of ``X``; for a
        regressor its outputs, 1-D when it has one output (as ``model.predict``).

    Raises
    ------
    TypeError
        If ``X`` is not a dask array.
    ValueError
        If ``X`` is not 2-D with ``model.n_features_in_`` columns.
    """
    X, network = _prepare(model, X, proba=False)
    k = network.layer_sizes[-1]
    if (network.is_regressor and k > 1) or network.is_multilabel:
        # A row of outputs per sample: a multi-output regressor's, or the 0/1 labels.
        dtype = _multilabel_dtype(model) if network.is_multilabel else network.dtype
        return X.map_blocks(
            _predict_block,
            _shipped(model),
            dtype=dtype,
            chunks=(X.chunks[0], (k,)),
            meta=np.empty((0, 0), dtype=dtype),
        )
    dtype = network.dtype if network.is_regressor else np.asarray(network.classes_).dtype
    return X.map_blocks(
        _predict_block,
        _shipped(model),
        dtype=dtype,
        chunks=(X.chunks[0],),
        drop_axis=1,
        meta=np.empty((0,), dtype=dtype),
    )


def predict_proba(model: Any, X: dask.array.Array) -> dask.array.Array:
    """Class probabilities of a dask array, computed block by block.

    Parameters
    ----------
    model : fastmlp.MLP or fitted fastmlp.sklearn.MLPClassifier
        The trained network; an :class:`fastmlp.MLP` must use the cross-entropy loss.
    X : dask.array.Array of shape (n_samples, n_features)
        Inputs, chunked along the rows. Chunks that split the columns are merged first.

    Returns
    -------
    dask.array.Array of shape (n_samples, n_classes)
        Lazy probabilities in the model's dtype, columns in the order of
        ``model.classes_``, one chunk per row chunk of ``X``.

    Raises
    ------
    TypeError
        If ``X`` is not a dask array.
    ValueError
        If ``X`` is not 2-D with ``model.n_features_in_`` columns, or if the model was
        not trained with the cross-entropy loss.
    """
    X, network = _prepare(model, X, proba=True)
    dtype = network.dtype
    return X.map_blocks(
        _predict_proba_block,
        _shipped(model),
        dtype=dtype,
        chunks=(X.chunks[0], (len(network.classes_),)),
        meta=np.empty((0, 0), dtype=dtype),
    )


# -- helpers -------------------------------------------------------------------------------
def _network_of(model: Any) -> MLP:
    """The fastmlp.MLP behind ``model``, checking that an estimator is fitted."""
    if isinstance(model, MLP):
        return model
    network = getattr(model, "model_", None)
    if isinstance(network, MLP):
        return network
    if hasattr(model, "fit") and hasattr(model, "get_params"):
        from sklearn.exceptions import NotFittedError

        raise NotFittedError(
            f"This {type(model).__name__} instance is not fitted yet. Call 'fit' before "
            "predicting with fastmlp.dask."
        )
    raise TypeError(
        "model must be a fastmlp.MLP or a fitted fastmlp.sklearn.MLPClassifier or "
        f"MLPRegressor; got {type(model).__name__}"
    )


def _prepare(model: Any, X: Any, *, proba: bool) -> tuple[dask.array.Array, MLP]:
    """Check the model and X; return X with whole rows in each block, and the network."""
    import dask.array as da

    network = _network_of(model)
    if proba and network.loss not in ("cross_entropy", "binary_cross_entropy"):
        raise ValueError(
            "predict_proba needs a cross-entropy model; this one was trained with "
            f"loss={network.loss!r}."
        )
    if not isinstance(X, da.Array):
        raise TypeError(f"X must be a dask.array.Array; got {type(X).__name__}")
    n_features = network.n_features_in_
    if X.ndim != 2 or X.shape[1] != n_features:
        raise ValueError(
            f"X must be 2-D with {n_features} columns (the model's n_features_in_); got "
            f"shape {X.shape}"
        )
    if len(X.chunks[1]) > 1:
        # The network needs every feature of a row at once: a block holding only some of
        # the columns can not be predicted. Merge the column chunks, keep the row chunks.
        X = X.rechunk({1: -1})
    return X, network


def _shipped(model: Any):
    """The model as one delayed graph key, so workers receive it once, not per block."""
    import dask

    # pure=True names the key by the model's content (tokenize), so the same model used
    # twice in a graph is one key, and a changed model is a new one.
    return dask.delayed(model, pure=True, traverse=False)


def _predict_block(block: np.ndarray, model: Any) -> np.ndarray:
    if block.shape[0] == 0:  # an empty chunk, e.g. after filtering rows
        network = _network_of(model)
        k = network.layer_sizes[-1]
        if network.is_multilabel:
            return np.empty((0, k), dtype=_multilabel_dtype(model))
        if network.is_regressor:
            return np.empty((0, k) if k > 1 else (0,), dtype=network.dtype)
        return np.empty((0,), dtype=np.asarray(network.classes_).dtype)
    return model.predict(block)


def _multilabel_dtype(model: Any) -> np.dtype:
    """The dtype a multilabel model's predict returns: the fitted y's for an estimator."""
    return np.dtype(getattr(model, "_y_dtype", np.int64))


def _predict_proba_block(block: np.ndarray, model: Any) -> np.ndarray:
    if block.shape[0] == 0:
        return np.empty((0, len(model.classes_)), dtype=_network_of(model).dtype)
    return model.predict_proba(block)
