"""``fastmlp.train``: argument checks, initialisation and the epoch loop.

The arithmetic of an epoch happens in ``_network.train_epoch`` without the GIL; this
module visits Python once per epoch (history, validation, callbacks, early stopping).
"""

from __future__ import annotations

import math
import threading
import time
import warnings
from collections.abc import Callable, Sequence

import numpy as np

from fastmlp import _network
from fastmlp._threads import blas_guard, effective_n_threads
from fastmlp._validation import (
    check_dtype,
    check_float,
    check_labels,
    check_memory,
    check_positive_int,
    check_sample_weight,
    check_targets,
    check_X,
)
from fastmlp.model import LOSSES, MAX_LAYERS, MLP, REGRESSION_LOSS

OPTIMIZERS = {"adam": _network.Optimizer.OPT_ADAM, "sgd": _network.Optimizer.OPT_SGD}


def init_params(model: MLP, rng: np.random.Generator) -> None:
    """Initialise weights in place: He normal for ReLU, Glorot uniform otherwise.

    Biases start at zero. He (2015) keeps the variance of ReLU activations constant
    across layers; Glorot & Bengio (2010) do so for tanh and sigmoid.
    """
    for W, b in zip(model.weights, model.biases):
        fan_in, fan_out = W.shape
        if model.activation == "relu":
            W[...] = rng.standard_normal(W.shape) * math.sqrt(2.0 / fan_in)
        else:
            limit = math.sqrt(6.0 / (fan_in + fan_out))
            W[...] = rng.uniform(-limit, limit, W.shape)
        b[...] = 0


def class_weights(class_weight, classes: np.ndarray, codes: np.ndarray) -> np.ndarray | None:
    """Per-class weights from ``"balanced"``, a dict ``{label: weight}`` or None."""
    if class_weight is None:
        return None
    k = len(classes)
    if isinstance(class_weight, str):
        if class_weight != "balanced":
            raise ValueError(
                f'class_weight must be "balanced", a dict or None; got {class_weight!r}'
            )
        counts = np.bincount(codes, minlength=k).astype(np.float64)
        # As scikit-learn: n_samples / (n_classes * count), for the classes present.
        return np.where(counts > 0, len(codes) / (k * np.maximum(counts, 1)), 0.0)
    if not isinstance(class_weight, dict):
        raise ValueError(f'class_weight must be "balanced", a dict or None; got {class_weight!r}')
    weights = np.ones(k)
    for label, value in class_weight.items():
        hit = np.flatnonzero(classes == label)
        if hit.size == 0:
            raise ValueError(f"class_weight names label {label!r}, which is not in y")
        weights[hit[0]] = check_float(value, f"class_weight[{label!r}]", 0.0, math.inf)
    return weights


def _split(X, codes, w, validation_split, validation_data, model, rng):
    """Carve out the validation set: given, or a random fraction of the training data.

    ``codes`` are label codes (classifier) or target rows (regressor).
    """
    if validation_data is not None:
        if validation_split:
            raise ValueError("give validation_data or validation_split, not both")
        if not isinstance(validation_data, (tuple, list)) or len(validation_data) != 2:
            raise ValueError("validation_data must be a tuple (X_val, y_val)")
        Xv = check_X(validation_data[0], model.dtype, model.layer_sizes[0], name="X_val")
        labels, targets = model._encode_y(validation_data[1], Xv.shape[0], "y_val")
        return X, codes, w, Xv, labels if targets is None else targets
    if not validation_split:
        return X, codes, w, None, None
    n_val = int(round(validation_split * X.shape[0]))
    if n_val < 1 or n_val >= X.shape[0]:
        raise ValueError(
            f"validation_split={validation_split} leaves {n_val} of {X.shape[0]} samples "
            "for validation; it must leave at least one on each side"
        )
    perm = rng.permutation(X.shape[0])
    val, tr = np.sort(perm[:n_val]), np.sort(perm[n_val:])
    return X[tr], codes[tr], None if w is None else w[tr], X[val], codes[val]


def train(
    X,
    y,
    *,
    hidden: Sequence[int] = (128, 64),
    activation: str = "relu",
    loss: str = "cross_entropy",
    optimizer: str = "adam",
    epochs: int = 10,
    batch_size: int = 128,
    lr: float = 1e-3,
    lr_schedule: str | Callable[[int], float] | None = None,
    betas: tuple[float, float] = (0.9, 0.999),
    eps: float = 1e-8,
    momentum: float = 0.9,
    l2: float = 0.0,
    dropout: float = 0.0,
    validation_split: float = 0.0,
    validation_data: tuple | None = None,
    early_stopping: bool = False,
    patience: int = 5,
    shuffle: bool = True,
    seed: int | None = None,
    dtype=np.float32,
    n_threads: int | None = None,
    verbose: bool = False,
    callbacks: Sequence[Callable[[dict], bool | None]] | None = None,
    sample_weight=None,
    class_weight=None,
    max_time: float | None = None,
    init: MLP | None = None,
    output_activation: str | None = None,
) -> MLP:
    """Train a multi-layer perceptron classifier or regressor with mini-batch gradient descent.

    Parameters
    ----------
    X : array-like of shape (n_samples, n_features)
        Training inputs (e.g. pixels scaled to [0, 1]).
    y : array-like of shape (n_samples,) or (n_samples, n_outputs)
        Class labels of any sortable type (ints, strings, ...); for a regressor
        (``loss="squared_error"``) real-valued targets, one column per output.
    hidden : sequence of int
        Widths of the hidden layers; ``()`` gives a linear (softmax regression) model.
    activation : {"relu", "tanh", "sigmoid"}
        Activation of the hidden layers.
    loss : {"cross_entropy", "mse", "squared_error"}
        Classifiers: softmax + cross-entropy, or half squared error against one-hot
        targets. "squared_error" trains a regressor: half the squared error against
        real targets, averaged over the outputs (as scikit-learn's MLPRegressor).
        Targets are used as given; standardising them helps, as it does X.
    optimizer : {"adam", "sgd"}
        Adam (``lr``, ``betas``, ``eps``) or SGD with ``momentum``.
    epochs : int
        Passes over the training data.
    batch_size : int
        Samples per mini-batch; the last batch of an epoch may be smaller. A batch size
        of at least n_samples gives full-batch gradient descent.
    lr, betas, eps, momentum : float
        Optimizer settings, named as in ``torch.optim``.
    lr_schedule : {"cosine"} or callable, optional
        Per-epoch learning-rate multiplier. "cosine" anneals from ``lr`` towards 0 over
        the ``epochs`` of this call (Loshchilov & Hutter 2017, without restarts); a
        callable gets the epoch index of this call (0, 1, ...) and returns the multiplier.
    l2 : float
        L2 penalty ``0.5 * l2 * sum W^2`` on the weights (not the biases).
    dropout : float in [0, 1)
        Inverted-dropout rate of the hidden layers' outputs during training only.
    validation_split : float in [0, 1)
        Fraction of (X, y) held out, at random, to validate on after each epoch.
    validation_data : tuple (X_val, y_val), optional
        A validation set of your own (instead of ``validation_split``).
    early_stopping : bool
        Stop when the validation loss has not improved for ``patience`` epochs, and
        restore the weights of the best epoch. Needs a validation set.
    patience : int
        Epochs without improvement tolerated by early stopping.
    shuffle : bool
        Reshuffle the samples every epoch.
    seed : int, optional
        Seed of initialisation, shuffling, validation split and dropout. The same seed,
        data and options give bitwise identical weights, whatever ``n_threads``.
    dtype : numpy.float32 or numpy.float64
        Precision of the model and of the computation.
    n_threads : int, optional
        Threads for training; default all the cores OpenMP offers.
    verbose : bool
        Print one line per epoch and the total training time.
    callbacks : sequence of callables, optional
        Each is called after every epoch with a dict of that epoch's figures (the keys of
        ``model.history``) and the model under ``"model"``; returning True stops training.
    sample_weight : array-like of shape (n_samples,), optional
        Weight of each sample in the loss and its gradient.
    class_weight : "balanced" or dict, optional
        Weight of each class (multiplies ``sample_weight``); classifiers only.
    max_time : float, optional
        Time budget in seconds: training stops at the first mini-batch boundary past it
        and keeps the best weights so far.
    init : MLP, optional
        Continue training this model (its architecture, dtype, classes and optimizer
        state are kept; ``hidden``, ``activation``, ``loss`` and ``dtype`` are ignored).
    output_activation : str, optional
        Activation of the output layer for ``loss="mse"`` (e.g. "sigmoid").

    Returns
    -------
    MLP
        The trained model; ``model.history`` holds the per-epoch figures (a regressor's
        have no accuracy).

    Raises
    ------
    FloatingPointError
        If the loss becomes NaN or infinite (usually a learning rate that is too high).
    """
    epochs = check_positive_int(epochs, "epochs")
    batch_size = check_positive_int(batch_size, "batch_size")
    patience = check_positive_int(patience, "patience")
    lr = check_float(lr, "lr", 0.0, math.inf, low_open=True)
    if not isinstance(betas, (tuple, list)) or len(betas) != 2:
        raise ValueError(f"betas must be a pair (beta1, beta2); got {betas!r}")
    beta1 = check_float(betas[0], "betas[0]", 0.0, 1.0)
    beta2 = check_float(betas[1], "betas[1]", 0.0, 1.0)
    eps = check_float(eps, "eps", 0.0, math.inf, low_open=True)
    momentum = check_float(momentum, "momentum", 0.0, 1.0)
    l2 = check_float(l2, "l2", 0.0, math.inf)
    dropout = check_float(dropout, "dropout", 0.0, 1.0)
    validation_split = check_float(validation_split, "validation_split", 0.0, 1.0)
    if max_time is not None:
        max_time = check_float(max_time, "max_time", 0.0, math.inf, low_open=True)
    if optimizer not in OPTIMIZERS:
        raise ValueError(f"optimizer must be one of {tuple(OPTIMIZERS)}; got {optimizer!r}")
    if early_stopping and validation_data is None and not validation_split:
        raise ValueError("early_stopping needs validation_split > 0 or validation_data")
    schedule = _lr_schedule(lr_schedule, epochs)
    if callable(callbacks):
        raise ValueError("callbacks must be a sequence of callables: use callbacks=[f]")
    callbacks = list(callbacks or [])
    if not all(callable(cb) for cb in callbacks):
        raise ValueError("callbacks must be a sequence of callables")
    threads = effective_n_threads(n_threads)
    rng = np.random.default_rng(seed)

    if init is not None:
        if not isinstance(init, MLP):
            raise ValueError(f"init must be a fastmlp.MLP; got {type(init).__name__}")
        model = init
        X = check_X(X, model.dtype, model.layer_sizes[0])
        labels, targets = model._encode_y(y, X.shape[0])
        codes = labels if targets is None else targets
    else:
        dt = check_dtype(dtype)
        if not isinstance(hidden, (tuple, list)):
            raise ValueError(
                f"hidden must be a sequence of layer widths, e.g. (128, 64); got {hidden!r}"
            )
        hidden = tuple(hidden)
        if len(hidden) > MAX_LAYERS - 1:
            raise ValueError(f"at most {MAX_LAYERS - 1} hidden layers; got {len(hidden)}")
        for width in hidden:
            check_positive_int(width, "every hidden layer size")
        X = check_X(X, dt)
        if loss == REGRESSION_LOSS:
            classes = None
            codes = check_targets(y, X.shape[0], dt)
            n_outputs = codes.shape[1]
        else:
            labels = check_labels(y, X.shape[0])
            classes = np.unique(labels)
            if len(classes) < 2:
                raise ValueError(
                    f"y has a single class ({classes[0]!r}); a classifier needs two (for "
                    f"real-valued targets use loss={REGRESSION_LOSS!r})"
                )
            n_outputs = len(classes)
        model = MLP(
            (X.shape[1], *hidden, n_outputs),
            classes,
            activation=activation,
            loss=loss,
            output_activation=output_activation,
            dtype=dt,
            n_threads=n_threads,
        )
        init_params(model, rng)
        if classes is not None:
            codes, _ = model._encode_y(labels, X.shape[0])

    w = check_sample_weight(sample_weight, X.shape[0], model.dtype)
    regressor = model.is_regressor
    if regressor and class_weight is not None:
        raise ValueError("class_weight is for classifiers; weight samples with sample_weight")
    cw = class_weights(class_weight, model.classes_, codes)
    if cw is not None:
        w = (np.ones(X.shape[0], model.dtype) if w is None else w) * cw[codes].astype(model.dtype)
        if not w.any():
            raise ValueError("class_weight gives every sample a weight of zero")
    X, codes, w, X_val, y_val = _split(X, codes, w, validation_split, validation_data, model, rng)

    # Everything the epoch loop touches is allocated here, once.
    capacity = min(batch_size, X.shape[0])
    ws_elems = _network.workspace_size(model._sizes, capacity, dropout > 0, regressor)
    check_memory(
        (ws_elems + 4 * model.params_.size) * model.dtype.itemsize,
        f"training layers {model.layer_sizes} with batch_size {capacity} (workspace, "
        "gradients and optimizer state)",
    )
    ws = np.empty(ws_elems, dtype=model.dtype)
    ybuf = np.empty(capacity, dtype=np.int32)
    grads = np.empty_like(model.params_)
    state = model._optimizer
    if state is None or state["name"] != optimizer:
        state = {
            "name": optimizer,
            "t": 0,
            "state1": np.zeros_like(model.params_),
            "state2": np.zeros_like(model.params_) if optimizer == "adam" else model.params_[:0],
        }
        model._optimizer = state
    val_out = (
        None
        if X_val is None
        else np.empty((X_val.shape[0], model.layer_sizes[-1]), dtype=model.dtype)
    )
    seed_bits = int(rng.integers(0, 2**63))
    hist = model.history
    keys = ("epoch", "loss", "seconds") + (("val_loss",) if X_val is not None else ())
    if not regressor:
        keys += ("accuracy",) + (("val_accuracy",) if X_val is not None else ())
    for key in keys:
        hist.setdefault(key, [])
    first_epoch = len(hist["epoch"]) + 1
    best = (math.inf, None)  # validation loss and parameters of the best epoch
    bad_epochs = 0
    deadline = math.inf if max_time is None else time.monotonic() + max_time
    is_main = _is_main_thread()
    start_all = time.perf_counter()
    stop_reason = None

    for epoch in range(first_epoch, first_epoch + epochs):
        epoch_lr = lr * schedule(epoch - first_epoch)
        order = rng.permutation(X.shape[0]) if shuffle else np.arange(X.shape[0])
        tic = time.perf_counter()
        try:
            with blas_guard():
                loss_sum, w_sum, correct, seen, state["t"], status = _network.train_epoch(
                    model.params_,
                    grads,
                    state["state1"],
                    state["state2"],
                    X,
                    None if regressor else codes,
                    w,
                    order,
                    ws,
                    ybuf,
                    model._sizes,
                    model._acts,
                    loss=LOSSES[model.loss],
                    optimizer=OPTIMIZERS[optimizer],
                    lr=epoch_lr,
                    beta1=beta1,
                    beta2=beta2,
                    eps=eps,
                    momentum=momentum,
                    l2=l2,
                    dropout=dropout,
                    seed=(seed_bits + epoch) % 2**64,
                    t=state["t"],
                    batch_size=capacity,
                    n_threads=threads,
                    targets=codes if regressor else None,
                    deadline=deadline,
                    check_interrupt=is_main,
                )
        except KeyboardInterrupt:
            warnings.warn(
                f"training interrupted in epoch {epoch}; returning the model with the "
                "weights of the last completed mini-batch",
                stacklevel=2,
            )
            stop_reason = "interrupted"
            break
        seconds = time.perf_counter() - tic
        if status == _network.Status.STATUS_NONFINITE:
            raise FloatingPointError(
                f"training diverged in epoch {epoch}: the loss became {loss_sum}. The "
                f"learning rate lr={lr:g} is likely too high (try lr={lr / 10:g}); "
                "unscaled inputs can do this too."
            )
        figures = {
            "epoch": epoch,
            "loss": loss_sum / w_sum if w_sum else math.nan,
            "seconds": seconds,
        }
        if not regressor:
            figures["accuracy"] = correct / seen if seen else math.nan
        if X_val is not None:
            # Prediction runs fm_dense, no BLAS: no BLAS limit needed here.
            vloss, vcorrect = _network.evaluate(
                model.params_,
                X_val,
                None if regressor else y_val,
                None,
                val_out,
                model._sizes,
                model._acts,
                loss=LOSSES[model.loss],
                n_threads=threads,
                targets=y_val if regressor else None,
            )
            figures["val_loss"] = vloss / X_val.shape[0]
            if not regressor:
                figures["val_accuracy"] = vcorrect / X_val.shape[0]
            if figures["val_loss"] < best[0]:
                best = (figures["val_loss"], model.params_.copy())
                bad_epochs = 0
            else:
                bad_epochs += 1
        for key, value in figures.items():
            hist[key].append(value)
        if verbose:
            _print_epoch(figures, first_epoch + epochs - 1)
        # Every callback sees every epoch, including the one some callback stops.
        if any([cb({**figures, "model": model}) is True for cb in callbacks]):
            stop_reason = "callback"
            break
        if status == _network.Status.STATUS_TIME:
            stop_reason = "max_time"
            break
        if early_stopping and bad_epochs >= patience:
            stop_reason = "early_stopping"
            break

    if best[1] is not None and (early_stopping or stop_reason == "max_time"):
        model.params_[...] = best[1]
    model.stop_reason_ = stop_reason
    if verbose:
        print(f"Training time: {time.perf_counter() - start_all:.2f} s")
    return model


def _lr_schedule(lr_schedule, epochs: int) -> Callable[[int], float]:
    """The per-epoch multiplier of the learning rate, checked."""
    if lr_schedule is None:
        return lambda e: 1.0
    if lr_schedule == "cosine":
        return lambda e: 0.5 * (1.0 + math.cos(math.pi * e / epochs))
    if callable(lr_schedule):

        def checked(e: int) -> float:
            return check_float(lr_schedule(e), f"lr_schedule({e})", 0.0, math.inf)

        return checked
    raise ValueError(f'lr_schedule must be None, "cosine" or a callable; got {lr_schedule!r}')


def _print_epoch(f: dict, last: int) -> None:
    line = f"Epoch [{f['epoch']}/{last}], Train Loss: {f['loss']:.4f}"
    if "accuracy" in f:
        line += f", Train Accuracy: {100 * f['accuracy']:.2f}%"
    if "val_loss" in f:
        line += f", Val Loss: {f['val_loss']:.4f}"
    if "val_accuracy" in f:
        line += f", Val Accuracy: {100 * f['val_accuracy']:.2f}%"
    print(line + f", Time: {f['seconds']:.2f} s", flush=True)


def _is_main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()
