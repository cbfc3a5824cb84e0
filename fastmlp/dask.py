"""Training and prediction over dask arrays, block by block.

This module needs dask (``pip install "dask[array]"``); it imports dask only when one of
its functions is called, and ``import fastmlp`` never imports it. Use it as

>>> import dask.array as da                                  # doctest: +SKIP
>>> from fastmlp.dask import predict, predict_proba           # doctest: +SKIP
>>> X = da.from_zarr("features.zarr")                         # doctest: +SKIP
>>> labels = predict(model, X).compute()                      # doctest: +SKIP

The model is a :class:`fastmlp.MLP` or a fitted :class:`fastmlp.sklearn.MLPClassifier`
or :class:`fastmlp.sklearn.MLPRegressor`. :func:`train` fits one model to data larger than
memory: every epoch streams the row blocks, in a shuffled order, through it.
It enters the task graph once, as a single key every block depends on, so a distributed
scheduler sends it to each worker once rather than with every block.

Grid searches need nothing from this module: run scikit-learn's ``GridSearchCV`` over
:class:`fastmlp.sklearn.MLPClassifier` inside ``joblib.parallel_backend("dask")`` with a
``distributed.Client`` open, and the fits fan out over the cluster.
"""

from __future__ import annotations

import inspect
import math
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

import numpy as np

from fastmlp import training
from fastmlp._network import REGRESSION_LOSSES
from fastmlp._validation import check_X
from fastmlp.model import MLP

if TYPE_CHECKING:  # pragma: no cover - for type checkers only
    import dask.array

__all__ = ["predict", "predict_proba", "train"]


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


def train(
    X: dask.array.Array,
    y,
    *,
    epochs: int = 10,
    lr: float = 1e-3,
    lr_schedule: str | Callable[[int], float] | None = None,
    seed: int | None = None,
    shuffle: bool = True,
    sample_weight=None,
    class_weight=None,
    validation_data: tuple | None = None,
    early_stopping: bool = False,
    patience: int = 5,
    verbose: bool = False,
    callbacks: Sequence[Callable[[dict], bool | None]] | None = None,
    max_time: float | None = None,
    init: MLP | None = None,
    **options: Any,
) -> MLP:
    """Train one model on a dask array larger than memory, streaming its row blocks.

    Every epoch computes the row blocks of ``X`` (and ``y``) one at a time, in a shuffled
    order, and runs each through the model as :func:`fastmlp.train` runs an epoch over it
    (mini-batches of shuffled rows, the optimizer's state carried from block to block).
    The data is never gathered: the client holds the block being trained on and the next
    one, fetched while it trains. Rows mix within a block, never across blocks, so blocks
    should be large (thousands of rows) and not sorted by label.

    Parameters
    ----------
    X : dask.array.Array of shape (n_samples, n_features)
        Inputs, chunked along the rows. Chunks that split the columns are merged first.
    y : dask.array.Array or array-like of shape (n_samples,) or (n_samples, n_outputs)
        Labels (classifier) or targets (regressor); rechunked to the row blocks of ``X``.
        A classifier's classes are read from all of ``y`` before training.
    epochs, lr, lr_schedule, shuffle, early_stopping, patience, verbose, callbacks, max_time
        As in :func:`fastmlp.train`, per pass over all blocks. ``shuffle`` also shuffles
        the order of the blocks.
    seed : int, optional
        Seeds the initial weights, the block orders and each block's shuffle and dropout:
        the same seed and the same blocks give the same weights, whatever the scheduler.
    sample_weight : dask.array.Array or array-like of shape (n_samples,), optional
        Weight of each row, rechunked to the row blocks of ``X``.
    class_weight : "balanced" or dict, optional
        As in :func:`fastmlp.train`; "balanced" counts the classes over all of ``y``.
    validation_data : tuple (X_val, y_val), optional
        A validation set (small enough for memory; dask arrays are computed once), scored
        after every epoch; needed for ``early_stopping``.
    init : fastmlp.MLP, optional
        A model to train further (its optimizer state is kept).
    **options
        Any other keyword argument of :func:`fastmlp.train` (``hidden``, ``loss``,
        ``batch_size``, ``dropout``, ``n_threads``...). ``validation_split`` is refused:
        a stream can not be split; give ``validation_data``.

    Returns
    -------
    fastmlp.MLP
        The trained model. Its ``history`` has one entry per epoch; ``loss`` and
        ``accuracy`` are the row-weighted means over the blocks.

    Raises
    ------
    TypeError
        If ``X`` is not a dask array, or an option is not one :func:`fastmlp.train` takes.
    ValueError
        If the shapes of ``X``, ``y`` and ``sample_weight`` do not agree, or an option is
        invalid (the messages of :func:`fastmlp.train`). A block's bad data (NaN, a label
        outside ``y``'s classes) is found when that block is computed, and named by its
        rows; the blocks before it have trained the model (``init`` too).
    """
    import dask
    import dask.array as da

    if not isinstance(X, da.Array):
        raise TypeError(f"X must be a dask.array.Array; got {type(X).__name__}")
    if X.ndim != 2:
        raise ValueError(f"X must be 2-D (n_samples, n_features); got shape {X.shape}")
    X = X.rechunk({1: -1})
    row_chunks = X.chunks[0]
    y = _rows_like(y, row_chunks, "y")
    if sample_weight is not None:
        sample_weight = _rows_like(sample_weight, row_chunks, "sample_weight")
    opts = _stream_options(
        options,
        epochs=epochs,
        lr=lr,
        lr_schedule=lr_schedule,
        seed=seed,
        shuffle=shuffle,
        validation_data=validation_data,
        early_stopping=early_stopping,
        patience=patience,
        verbose=verbose,
        callbacks=callbacks,
        max_time=max_time,
        init=init,
    )
    rng = np.random.default_rng(seed)
    model, class_weight = _stream_model(X, y, class_weight, opts, rng)
    val = None if validation_data is None else _validation_set(model, validation_data)

    starts = np.concatenate([[0], np.cumsum(row_chunks)])  # the blocks' first rows
    blocks = [
        (xb, yb, None if sample_weight is None else wb)
        for xb, yb, wb in zip(
            X.to_delayed().ravel(),
            y.to_delayed().ravel(),
            [None] * X.numblocks[0] if sample_weight is None else sample_weight.to_delayed(),
        )
    ]
    hist = model.history
    keys = ("epoch", "loss", "seconds") + (("val_loss",) if val else ())
    if not model.is_regressor:
        keys += ("accuracy",) + (("val_accuracy",) if val else ())
    for key in keys:
        hist.setdefault(key, [])
    first = len(hist["epoch"]) + 1
    deadline = math.inf if opts.max_time is None else time.monotonic() + opts.max_time
    best, bad_epochs, stop_reason = (math.inf, None, None), 0, None

    with ThreadPoolExecutor(1, thread_name_prefix="fastmlp-dask-fetch") as fetcher:
        for epoch in range(first, first + opts.epochs):
            tic = time.perf_counter()
            n_blocks = len(blocks)
            order = rng.permutation(n_blocks) if opts.shuffle else np.arange(n_blocks)
            seeds = rng.integers(0, 2**63, size=n_blocks)
            # Schedules that change within an epoch change from block to block here.
            lr_blocks = opts.lr * np.broadcast_to(
                opts.lr_schedule(epoch - first, n_blocks), (n_blocks,)
            )
            rows = loss = correct = 0.0
            pending = fetcher.submit(dask.compute, *blocks[order[0]])
            for j in range(n_blocks):
                Xb, yb, wb = pending.result()
                if j + 1 < n_blocks:
                    pending = fetcher.submit(dask.compute, *blocks[order[j + 1]])
                if Xb.shape[0] == 0 or (Xb.shape[0] == 1 and model.normalization == "batch"):
                    continue  # (a single row has no BatchNorm variance: skipped)
                if time.monotonic() >= deadline:
                    stop_reason = "max_time"
                    break
                sizes = {key: len(values) for key, values in hist.items()}
                try:
                    training.train(
                        Xb,
                        yb,
                        init=model,
                        epochs=1,
                        lr=float(lr_blocks[j]),
                        seed=int(seeds[j]),
                        shuffle=opts.shuffle,
                        sample_weight=wb,
                        class_weight=class_weight,
                        max_time=None if deadline == math.inf else deadline - time.monotonic(),
                        **options,
                    )
                except ValueError as exc:  # its row numbers count from the block's start
                    first, last = starts[order[j]], starts[order[j] + 1] - 1
                    raise ValueError(f"in the block of rows {first}-{last}: {exc}") from None
                if len(hist["epoch"]) > sizes["epoch"]:  # the block's figures, folded in
                    block = {k: v.pop() for k, v in hist.items() if len(v) > sizes.get(k, 0)}
                    rows += Xb.shape[0]
                    loss += block["loss"] * Xb.shape[0]
                    correct += block.get("accuracy", 0.0) * Xb.shape[0]
                if model.stop_reason_ in ("interrupted", "max_time"):
                    stop_reason = model.stop_reason_
                    break
            if stop_reason == "interrupted" or not rows:
                break
            figures = {
                "epoch": epoch,
                "loss": loss / rows,
                "seconds": time.perf_counter() - tic,
            }
            if not model.is_regressor:
                figures["accuracy"] = correct / rows
            if val:
                figures.update(_score_validation(model, val, opts.threads))
                if figures["val_loss"] < best[0]:
                    stats = model._network.stats.copy()  # BatchNorm's, with the parameters
                    best, bad_epochs = (figures["val_loss"], model.params_.copy(), stats), 0
                else:
                    bad_epochs += 1
            for key, value in figures.items():
                hist[key].append(value)
            if opts.verbose:
                training._print_epoch(figures, first + opts.epochs - 1)
            # Every callback sees every epoch, including the one that ends the run.
            if any([cb({**figures, "model": model}) is True for cb in opts.callbacks]):
                stop_reason = stop_reason or "callback"
            if opts.early_stopping and bad_epochs >= opts.patience:
                stop_reason = stop_reason or "early_stopping"
            if stop_reason is not None:
                break

    if best[1] is not None and stop_reason in ("early_stopping", "max_time"):
        model.params_[...] = best[1]
        model._network.stats[...] = best[2]
    model.stop_reason_ = stop_reason
    return model


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


def _rows_like(values: Any, row_chunks: tuple, name: str) -> dask.array.Array:
    """``values`` (dask or array-like) as a dask array with the row blocks of X."""
    import dask.array as da

    if not isinstance(values, da.Array):
        values = np.asarray(values)
        if values.dtype == object and all(isinstance(v, str) for v in values.ravel()):
            values = values.astype(str)  # string labels in a dtype dask can find unique
        values = da.from_array(values, chunks=-1)
    n = sum(row_chunks)
    if values.ndim not in (1, 2) or values.shape[0] != n:
        raise ValueError(
            f"{name} must have one entry per row of X ({n} rows); got shape {values.shape}"
        )
    return values.rechunk({0: row_chunks, **({1: -1} if values.ndim == 2 else {})})


def _stream_options(options: dict, **given: Any) -> training._Options:
    """The options of :func:`fastmlp.train`, checked once before any block is computed."""
    defaults = {
        name: p.default
        for name, p in inspect.signature(training.train).parameters.items()
        if p.kind is p.KEYWORD_ONLY
    }
    unknown = sorted(set(options) - set(defaults))
    if unknown:
        raise TypeError(f"fastmlp.dask.train got unknown options {unknown}")
    if options.get("validation_split"):
        raise ValueError(
            "validation_split can not split a stream of blocks; give validation_data=(X_val, "
            "y_val) instead"
        )
    if given["early_stopping"] and given["validation_data"] is None:
        raise ValueError("early_stopping needs validation_data=(X_val, y_val)")
    return training._Options(**{**defaults, **options, **given})


def _stream_model(X, y, class_weight, opts: training._Options, rng: np.random.Generator):
    """The model to train (``init``, or new, built as :func:`fastmlp.train` builds it) and
    the class weights as a dict over all of ``y``."""
    import dask
    import dask.array as da

    n_features = X.shape[1]
    if opts.init is not None:
        model = opts.init
        if model.n_features_in_ != n_features:
            raise ValueError(
                f"X has {n_features} columns but init was trained on {model.n_features_in_}"
            )
    elif opts.loss in REGRESSION_LOSSES or y.ndim == 2:
        # Shapes are all that building a regressor or a multilabel classifier needs: rows
        # of X's width and targets (or 0/1 labels) of y's.
        fake_y = np.zeros((2,) + y.shape[1:])
        fake_y[1] = 1
        model = training._build(np.zeros((2, n_features)), fake_y, opts, rng)[0]
    else:
        classes = dask.compute(da.unique(y))[0]
        model = training._build(np.zeros((len(classes), n_features)), classes, opts, rng)[0]
    if class_weight == "balanced" and not (model.is_regressor or model.is_multilabel):
        labels, counts = dask.compute(*da.unique(y, return_counts=True))
        k = len(model.classes_)
        # As scikit-learn: n_samples / (n_classes * count), over every block.
        class_weight = {c: counts.sum() / (k * n) for c, n in zip(labels.tolist(), counts)}
    return model, class_weight


def _validation_set(model: MLP, validation_data: tuple) -> tuple:
    """X_val, its codes (labels or targets) and an output buffer, computed and checked."""
    import dask

    if not isinstance(validation_data, (tuple, list)) or len(validation_data) != 2:
        raise ValueError("validation_data must be a pair (X_val, y_val)")
    X_val, y_val = dask.compute(*validation_data)
    X_val = check_X(X_val, model.dtype, model.n_features_in_, name="validation_data's X")
    labels, targets = model._encode_y(y_val, X_val.shape[0], "validation_data's y")
    out = np.empty((X_val.shape[0], model.layer_sizes[-1]), dtype=model.dtype)
    return X_val, labels if targets is None else targets, out


def _score_validation(model: MLP, val: tuple, n_threads: int) -> dict:
    X_val, codes, out = val
    loss, correct = model._network.evaluate(X_val, codes, out, n_threads=n_threads)
    figures = {"val_loss": loss / X_val.shape[0]}
    if not model.is_regressor:
        figures["val_accuracy"] = correct / X_val.shape[0]
    return figures
