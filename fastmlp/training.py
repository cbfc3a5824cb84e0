"""``fastmlp.train``: check, build, allocate, loop.

The arithmetic of an epoch happens in ``Trainer.epoch`` (``_trainer.pyx``) without the
GIL; this module visits Python once per epoch (history, validation, callbacks, early
stopping).
"""

from __future__ import annotations

import functools
import inspect
import math
import threading
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import numpy as np

from fastmlp._network import (
    LAYERS_LIMIT,
    MULTILABEL_LOSS,
    REGRESSION_LOSS,
    REGRESSION_LOSSES,
    all_finite,
)
from fastmlp._threads import adaptive_threads, blas_guard, effective_n_threads
from fastmlp._trainer import ADAM_FAMILY, OPTIMIZERS, Status, Trainer
from fastmlp._validation import (
    CSR,
    check_dtype,
    check_float,
    check_labels,
    check_memory,
    check_positive_int,
    check_sample_weight,
    check_targets,
    check_X,
    unit_scale,
)
from fastmlp.model import (
    MLP,
    check_activation,
    check_label_smoothing,
    check_loss_targets,
    check_multilabel,
)


def init_params(model: MLP, rng: np.random.Generator) -> None:
    """Initialise weights in place: He normal for ReLU, Glorot uniform otherwise.

    Biases start at zero, a normalization's scale at 1 and shift at 0. He (2015)
    keeps the variance of ReLU activations constant across layers; Glorot & Bengio
    (2010) do so for tanh and sigmoid.
    """
    for gamma, beta in zip(model.norm_weights, model.norm_biases):
        gamma[...] = 1
        beta[...] = 0
    acts = model.activations
    for i, (W, b) in enumerate(zip(model.weights, model.biases)):
        fan_in, fan_out = W.shape
        # A hidden layer by its own activation, the output layer by the last hidden one's.
        if acts:
            act = acts[min(i, len(acts) - 1)]
        else:
            act = model.activation if isinstance(model.activation, str) else "relu"
        if act == "relu":
            W[...] = rng.standard_normal(W.shape) * math.sqrt(2.0 / fan_in)
        else:
            limit = math.sqrt(6.0 / (fan_in + fan_out))
            W[...] = rng.uniform(-limit, limit, W.shape)
        b[...] = 0


def _shown(label):
    """A label as users write it in an error: 2 or 'cat', not np.int64(2) or np.str_('cat')."""
    return label.item() if isinstance(label, np.generic) else label


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
            raise ValueError(f"class_weight names label {_shown(label)!r}, which is not in y")
        weights[hit[0]] = check_float(value, f"class_weight[{_shown(label)!r}]", 0.0, math.inf)
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
        Xv = check_X(
            validation_data[0], model.dtype, model.layer_sizes[0], name="X_val", accept_sparse=True
        )
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
    if isinstance(X, CSR):
        return X.take(tr), codes[tr], None if w is None else w[tr], X.take(val), codes[val]
    return X[tr], codes[tr], None if w is None else w[tr], X[val], codes[val]


def train(
    X,
    y,
    *,
    hidden: Sequence[int] = (128, 64),
    activation: str | Sequence[str] = "relu",
    normalization: str | None = None,
    loss: str = "cross_entropy",
    delta: float = 1.0,
    optimizer: str = "adam",
    epochs: int = 10,
    batch_size: int = 128,
    lr: float = 1e-3,
    lr_schedule: str | Callable[[int], float] | None = None,
    betas: tuple[float, float] = (0.9, 0.999),
    eps: float = 1e-8,
    momentum: float = 0.9,
    weight_decay: float | None = None,
    l2: float = 0.0,
    dropout: float = 0.0,
    label_smoothing: float = 0.0,
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
    X : array-like or scipy.sparse matrix/array of shape (n_samples, n_features)
        Training inputs (e.g. pixels scaled to [0, 1]). Sparse X (CSR; CSC, COO and the
        other formats are converted to CSR once, a copy) trains the first layer by sparse
        kernels on its nonzeros alone, without densifying it.
    y : array-like of shape (n_samples,) or (n_samples, n_outputs)
        Class labels of any sortable type (ints, strings, ...); for a regressor
        (``loss="squared_error"``) real-valued targets, one column per output. A 2-D y of
        0 and 1 for a classifier is multilabel: one sigmoid output per column, trained
        with binary cross-entropy summed over the labels (``loss`` becomes
        "binary_cross_entropy"); ``predict`` returns the 0/1 matrix, ``predict_proba``
        each label's probability, ``classes_`` the column indices.
    hidden : sequence of int
        Widths of the hidden layers; ``()`` gives a linear (softmax regression) model.
    activation : {"relu", "tanh", "sigmoid"} or sequence of them
        Activation of the hidden layers: one name for all, or a list with one per hidden
        layer, e.g. ``hidden=(64, 32), activation=["relu", "tanh"]``.
    normalization : {None, "layer", "batch"}
        "layer": a LayerNorm between each hidden layer's Linear part and its activation
        (``torch.nn.LayerNorm`` over the layer's units, eps 1e-5), its scale starting at
        1 and its shift at 0. Row by row, so training stays bitwise the same for any
        thread count.
        "batch": a BatchNorm there instead (``torch.nn.BatchNorm1d``): in training each
        unit is normalized with the mini-batch's mean and biased variance (unweighted by
        sample weights), and running estimates (momentum 0.1, unbiased variance) move
        once per step; prediction and validation use those. Needs ``batch_size >= 2``;
        an epoch's last mini-batch of a single row is skipped (it has no variance).
        Bitwise the same for any thread count, too.
    loss : {"cross_entropy", "mse", "squared_error", "huber", "absolute_error", "poisson"}
        Classifiers: softmax + cross-entropy, or half squared error against one-hot
        targets. "squared_error" trains a regressor: half the squared error against
        real targets, averaged over the outputs (as scikit-learn's MLPRegressor).
        Targets are used as given; standardising them helps, as it does X. The other
        regressor losses, also averaged over the outputs: "huber" (``torch.nn.HuberLoss``
        with ``delta``), "absolute_error" (subgradient 0 where an output equals its
        target) and "poisson" (log link, ``torch.nn.PoissonNLLLoss(log_input=True)``:
        the output z is the log of the mean, the loss ``exp(z) - y z``; targets must be
        >= 0, and ``predict`` returns ``exp(z)``).
    delta : float > 0
        The threshold of ``loss="huber"``: squared error within ``delta`` of the target,
        linear beyond (other losses refuse any value other than 1).
    optimizer : {"adam", "adamw", "sgd"}
        Adam (``lr``, ``betas``, ``eps``), AdamW (Adam with ``weight_decay``) or SGD with
        ``momentum``.
    epochs : int
        Passes over the training data.
    batch_size : int
        Samples per mini-batch; the last batch of an epoch may be smaller. A batch size
        of at least n_samples gives full-batch gradient descent.
    lr, betas, eps, momentum : float
        Optimizer settings, named as in ``torch.optim``.
    weight_decay : float >= 0, optional
        AdamW's decoupled weight decay, as ``torch.optim.AdamW``: every step first
        multiplies each parameter by ``1 - lr * weight_decay``, then takes the Adam step
        on the loss gradient alone. It applies to all parameters, biases included (as
        PyTorch does by default; ``l2`` penalises the weights only). Default 0.01
        (PyTorch's) with ``optimizer="adamw"``; other optimizers refuse it (use ``l2``).
    lr_schedule : {"cosine", "warmup_cosine"} or callable, optional
        Learning-rate multiplier. "cosine" anneals from ``lr`` towards 0 over the
        ``epochs`` of this call (Loshchilov & Hutter 2017, without restarts), epoch ``e``
        at ``(1 + cos(pi e / epochs)) / 2``. "warmup_cosine" changes every mini-batch:
        at ``f`` epochs into this call, ``0.1 + 0.9 f / w`` while ``f < w`` (a warm-up,
        which lets ``lr`` be higher; ``w = min(0.5, epochs / 2)``), then
        ``(1 + cos(pi (f - w) / (epochs - w))) / 2``, with ``f`` at each mini-batch's
        middle. A callable gets the epoch index of this call (0, 1, ...) and returns the
        epoch's multiplier.
    l2 : float
        L2 penalty ``0.5 * l2 * sum W^2`` on the weights (not the biases).
    dropout : float in [0, 1)
        Inverted-dropout rate of the hidden layers' outputs during training only.
    label_smoothing : float in [0, 1)
        Cross-entropy against smoothed targets ``(1 - s) * onehot(y) + s / n_classes``, as
        ``torch.nn.CrossEntropyLoss(label_smoothing=s)``; ``history["loss"]`` is that
        objective, ``val_loss`` the plain cross-entropy. ``loss="cross_entropy"`` only.
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
        Seed (an integer >= 0) of initialisation, shuffling, validation split and dropout;
        None draws a fresh one. The same seed, data and options give bitwise identical
        weights, whatever ``n_threads``.
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
        state are kept; ``hidden``, ``activation``, ``normalization``, ``loss``,
        ``delta``, ``dtype`` and ``output_activation`` other than their defaults must
        match it).
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
    # Every keyword argument, checked in one place (first, before anything is bound).
    opts = _Options(**{k: v for k, v in locals().items() if k not in ("X", "y")})
    rng = np.random.default_rng(opts.seed)
    model, X, codes = _build(X, y, opts, rng)
    data = _prepare(model, X, codes, opts, rng)
    trainer = _allocate(model, data, opts)
    return _loop(model, trainer, data, opts, rng)


@dataclass
class _Options:
    """The keyword arguments of :func:`train`, checked and normalised on creation."""

    hidden: Sequence[int]
    activation: Any
    normalization: str | None
    loss: str
    delta: float
    optimizer: str
    epochs: int
    batch_size: int
    lr: float
    lr_schedule: Any
    betas: tuple[float, float]
    eps: float
    momentum: float
    weight_decay: float | None
    l2: float
    dropout: float
    label_smoothing: float
    validation_split: float
    validation_data: tuple | None
    early_stopping: bool
    patience: int
    shuffle: bool
    seed: int | None
    dtype: Any
    n_threads: int | None
    verbose: bool
    callbacks: Any
    sample_weight: Any
    class_weight: Any
    max_time: float | None
    init: MLP | None
    output_activation: str | None
    threads: int = field(init=False)

    def __post_init__(self) -> None:
        self.epochs = check_positive_int(self.epochs, "epochs")
        self.batch_size = check_positive_int(self.batch_size, "batch_size")
        norm = getattr(self.init, "normalization", None) if self.init else self.normalization
        if norm == "batch" and self.batch_size < 2:
            raise ValueError(
                "normalization='batch' needs batch_size >= 2: one sample per mini-batch "
                f"has no variance; got batch_size={self.batch_size}"
            )
        self.patience = check_positive_int(self.patience, "patience")
        if self.seed is not None:
            self.seed = check_positive_int(self.seed, "seed", minimum=0)
        self.lr = check_float(self.lr, "lr", 0.0, math.inf, low_open=True)
        if not isinstance(self.betas, (tuple, list)) or len(self.betas) != 2:
            raise ValueError(f"betas must be a pair (beta1, beta2); got {self.betas!r}")
        self.betas = (
            check_float(self.betas[0], "betas[0]", 0.0, 1.0),
            check_float(self.betas[1], "betas[1]", 0.0, 1.0),
        )
        self.eps = check_float(self.eps, "eps", 0.0, math.inf, low_open=True)
        self.momentum = check_float(self.momentum, "momentum", 0.0, 1.0)
        self.l2 = check_float(self.l2, "l2", 0.0, math.inf)
        self.dropout = check_float(self.dropout, "dropout", 0.0, 1.0)
        self.label_smoothing = check_float(self.label_smoothing, "label_smoothing", 0.0, 1.0)
        self.validation_split = check_float(self.validation_split, "validation_split", 0.0, 1.0)
        if self.max_time is not None:
            self.max_time = check_float(self.max_time, "max_time", 0.0, math.inf, low_open=True)
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(
                f"optimizer must be one of {tuple(OPTIMIZERS)}; got {self.optimizer!r}"
            )
        if self.weight_decay is None:
            self.weight_decay = 0.01 if self.optimizer == "adamw" else 0.0
        self.weight_decay = check_float(self.weight_decay, "weight_decay", 0.0, math.inf)
        if self.weight_decay and self.optimizer != "adamw":
            raise ValueError(
                f"weight_decay={self.weight_decay} is AdamW's decoupled decay: use "
                f"optimizer='adamw', or l2 for a penalty with optimizer={self.optimizer!r}"
            )
        if self.lr * self.weight_decay >= 1:
            raise ValueError(
                f"weight_decay={self.weight_decay} with lr={self.lr}: AdamW multiplies the "
                f"weights by 1 - lr * weight_decay = {1 - self.lr * self.weight_decay:.3g} "
                "every step, which must stay above 0 (weight_decay is usually 1e-4 to 0.1)"
            )
        if self.early_stopping and self.validation_data is None and not self.validation_split:
            raise ValueError("early_stopping needs validation_split > 0 or validation_data")
        self.lr_schedule = _lr_schedule(self.lr_schedule, self.epochs)
        if callable(self.callbacks):
            raise ValueError("callbacks must be a sequence of callables: use callbacks=[f]")
        self.callbacks = list(self.callbacks or [])
        if not all(callable(cb) for cb in self.callbacks):
            raise ValueError("callbacks must be a sequence of callables")
        self.threads = effective_n_threads(self.n_threads)  # resolved; the model keeps n_threads
        if self.init is not None and not isinstance(self.init, MLP):
            raise ValueError(f"init must be a fastmlp.MLP; got {type(self.init).__name__}")


def _as_tuple(v):
    return tuple(v) if isinstance(v, (tuple, list)) else v


@functools.cache
def _train_defaults() -> dict[str, Any]:
    """The defaults of :func:`train`'s keywords, read once (inspecting the signature took
    0.1 ms, 1.5% of a one-epoch call of a small tabular network)."""
    return {name: p.default for name, p in inspect.signature(train).parameters.items()}


def _check_kept(opts: _Options, model: MLP) -> None:
    """Refuse an architecture option that differs from both its default and ``init``'s.

    ``init`` keeps its architecture; a value the user changed would be silently ignored.
    """
    n_hidden = len(model.layer_sizes) - 2

    def layers(a):
        a = check_activation(a, n_hidden)
        return (a,) * n_hidden if isinstance(a, str) else tuple(a)

    def same(v):
        return v

    kept = [  # (name, init's value, how to compare)
        ("hidden", model.layer_sizes[1:-1], _as_tuple),
        ("activation", model.activation, layers),
        ("normalization", model.normalization, same),
        ("loss", model.loss, same),
        ("delta", model.delta, same),
        ("dtype", model.dtype, check_dtype),
        ("output_activation", model.output_activation, lambda a: a or "identity"),
    ]
    defaults = _train_defaults()
    for name, theirs, norm in kept:
        given, default = getattr(opts, name), defaults[name]
        if norm(given) != norm(default) and norm(given) != norm(theirs):
            given, theirs = (str(norm(v)) if name == "dtype" else repr(v) for v in (given, theirs))
            raise ValueError(
                f"{name}={given} differs from init's {name} ({theirs}): training continues "
                f"init as it is; leave {name} out, or train a new model"
            )


def _build(X, y, opts: _Options, rng: np.random.Generator) -> tuple[MLP, np.ndarray, np.ndarray]:
    """The model to train (``init``, or a new one, initialised) and X, y checked for it.

    Returns the model, X and the label codes (classifier) or target rows (regressor).
    """
    if opts.init is not None:
        model = opts.init
        _check_kept(opts, model)
        if not all_finite(model.params_):  # else: "diverged", blaming lr
            raise ValueError(
                "init's parameters contain NaN or infinity; was one written into its "
                "weights, or did the fit that made it diverge?"
            )
        X = check_X(
            X, model.dtype, model.layer_sizes[0], accept_sparse=True, n_threads=opts.threads
        )
        labels, targets = model._encode_y(y, X.shape[0])
        return model, X, labels if targets is None else targets
    dt = check_dtype(opts.dtype)
    hidden = opts.hidden
    if not isinstance(hidden, (tuple, list)):
        raise ValueError(
            f"hidden must be a sequence of layer widths, e.g. (128, 64); got {hidden!r}"
        )
    if len(hidden) > LAYERS_LIMIT - 1:
        raise ValueError(f"at most {LAYERS_LIMIT - 1} hidden layers; got {len(hidden)}")
    for width in hidden:
        check_positive_int(width, "every hidden layer size")
    X = check_X(X, dt, accept_sparse=True, n_threads=opts.threads)
    loss = opts.loss
    multilabel = loss == MULTILABEL_LOSS or (loss == "cross_entropy" and np.ndim(y) == 2)
    if multilabel:
        # A 2-D y of 0/1 columns: one sigmoid output per label, binary cross-entropy.
        loss = MULTILABEL_LOSS
        targets = check_multilabel(y, X.shape[0], dt)
        classes = np.arange(targets.shape[1])
        n_outputs = targets.shape[1]
    elif loss in REGRESSION_LOSSES:
        classes = None
        targets = check_loss_targets(loss, check_targets(y, X.shape[0], dt))
        n_outputs = targets.shape[1]
    else:
        labels = check_labels(y, X.shape[0])
        classes = np.unique(labels)
        if len(classes) < 2:
            raise ValueError(
                f"y has a single class ({_shown(classes[0])!r}); a classifier needs two (for "
                f"real-valued targets use loss={REGRESSION_LOSS!r})"
            )
        n_outputs = len(classes)
    model = MLP(
        (X.shape[1], *hidden, n_outputs),
        classes,
        activation=opts.activation,
        loss=loss,
        output_activation=opts.output_activation,
        dtype=dt,
        n_threads=opts.n_threads,
        delta=opts.delta,
        normalization=opts.normalization,
    )
    init_params(model, rng)
    if classes is None or multilabel:
        return model, X, targets
    return model, X, model._encode_y(labels, X.shape[0])[0]


class _Data(NamedTuple):
    """Training rows, their codes (labels or targets) and weights; the validation set."""

    X: np.ndarray | CSR
    codes: np.ndarray
    weights: np.ndarray | None
    X_val: np.ndarray | None
    y_val: np.ndarray | None


def _prepare(model: MLP, X, codes, opts: _Options, rng: np.random.Generator) -> _Data:
    """Sample and class weights, then the validation set carved out or checked."""
    w = check_sample_weight(opts.sample_weight, X.shape[0], model.dtype)
    if model.is_regressor and opts.class_weight is not None:
        raise ValueError("class_weight is for classifiers; weight samples with sample_weight")
    if model.is_multilabel and opts.class_weight is not None:
        raise ValueError("class_weight is for one label per sample; weight samples instead")
    cw = class_weights(opts.class_weight, model.classes_, codes)
    if cw is not None:
        # In float64, both scaled to ~1 first: 1e38 times 1e38 (or 1e-30 times 1e-30)
        # would leave float32 in the product.
        w = unit_scale(cw)[codes] * (1.0 if w is None else w.astype(np.float64))
        if not w.any():
            raise ValueError("class_weight gives every sample a weight of zero")
        w = np.require(unit_scale(w), model.dtype, ["C", "A"])
    return _Data(*_split(X, codes, w, opts.validation_split, opts.validation_data, model, rng))


def _allocate(model: MLP, data: _Data, opts: _Options) -> Trainer:
    """The Trainer (workspace and gradients, allocated here once) and optimizer state."""
    capacity = min(opts.batch_size, data.X.shape[0])
    nbytes = Trainer.workspace_bytes(
        model._network, capacity, opts.dropout, isinstance(data.X, CSR)
    )
    check_memory(
        nbytes + 3 * model.params_.nbytes,
        f"training layers {model.layer_sizes} with batch_size {capacity} (workspace, "
        "gradients and optimizer state)",
    )
    trainer = Trainer(
        model._network,
        data.X,
        data.codes,
        data.weights,
        batch_size=capacity,
        n_threads=opts.threads,
        l2=opts.l2,
        dropout=opts.dropout,
        adaptive_threads=adaptive_threads(),
        label_smoothing=check_label_smoothing(opts.label_smoothing, model.loss),
    )
    state = model._optimizer
    if state is None or state["name"] != opts.optimizer:
        adam = opts.optimizer in ADAM_FAMILY
        state = {
            "name": opts.optimizer,
            "t": 0,
            "state1": np.zeros_like(model.params_),
            "state2": np.zeros_like(model.params_) if adam else model.params_[:0],
        }
        model._optimizer = state
    else:  # kept from an earlier fit or a file: updated in place, so C-contiguous and aligned
        for key in ("state1", "state2"):
            state[key] = np.require(state[key], requirements=["C", "A", "W"])
    trainer.set_optimizer(
        opts.optimizer,
        state,
        betas=opts.betas,
        eps=opts.eps,
        momentum=opts.momentum,
        weight_decay=opts.weight_decay,
    )
    return trainer


def _loop(model: MLP, trainer: Trainer, data: _Data, opts: _Options, rng) -> MLP:
    """The epochs: one compiled call each, then history, validation and the stop rules."""
    val_out = None
    if data.X_val is not None:
        val_out = np.empty((data.X_val.shape[0], model.layer_sizes[-1]), dtype=model.dtype)
    seed_bits = int(rng.integers(0, 2**63))
    hist = model.history
    keys = ("epoch", "loss", "seconds") + (("val_loss",) if val_out is not None else ())
    if not model.is_regressor:
        keys += ("accuracy",) + (("val_accuracy",) if val_out is not None else ())
    for key in keys:
        hist.setdefault(key, [])
    first = len(hist["epoch"]) + 1
    best = (math.inf, None, None)  # validation loss, parameters and statistics of the best
    bad_epochs = 0
    deadline = math.inf if opts.max_time is None else time.monotonic() + opts.max_time
    is_main = threading.current_thread() is threading.main_thread()
    start_all = time.perf_counter()
    stop_reason = None
    n = data.X.shape[0]
    n_batches = -(-n // trainer.batch_size)

    for epoch in range(first, first + opts.epochs):
        order = rng.permutation(n) if opts.shuffle else np.arange(n)
        tic = time.perf_counter()
        try:
            with blas_guard():
                loss_sum, w_sum, correct, seen, status = trainer.epoch(
                    order,
                    opts.lr * opts.lr_schedule(epoch - first, n_batches),
                    (seed_bits + epoch) % 2**64,
                    deadline,
                    is_main,
                )
        except KeyboardInterrupt:
            warnings.warn(
                f"training interrupted in epoch {epoch}; returning the model with the "
                "weights of the last completed mini-batch",
                stacklevel=3,
            )
            stop_reason = "interrupted"
            break
        finally:
            model._optimizer["t"] = trainer.t
        figures = {
            "epoch": epoch,
            "loss": loss_sum / w_sum if w_sum else math.nan,
            "seconds": time.perf_counter() - tic,
        }
        if status == Status.STATUS_NONFINITE:
            raise FloatingPointError(
                _diverged(model, data, opts, epoch, f"the loss became {loss_sum}")
            )
        if not all_finite(model.params_):  # with a finite loss: ReLU outputs 0 for NaN
            what = "the parameters hold NaN or infinity"
            if opts.callbacks:
                what += " (unless a callback wrote them)"
            raise FloatingPointError(_diverged(model, data, opts, epoch, what))
        if not model.is_regressor:
            figures["accuracy"] = correct / seen if seen else math.nan
        if val_out is not None:
            vloss, vcorrect = model._network.evaluate(
                data.X_val, data.y_val, val_out, n_threads=opts.threads
            )
            figures["val_loss"] = vloss / data.X_val.shape[0]
            if not model.is_regressor:
                figures["val_accuracy"] = vcorrect / data.X_val.shape[0]
            if figures["val_loss"] < best[0]:
                best = (figures["val_loss"], model.params_.copy(), model._network.stats.copy())
                bad_epochs = 0
            else:
                bad_epochs += 1
        for key, value in figures.items():
            hist[key].append(value)
        if opts.verbose:
            _print_epoch(figures, first + opts.epochs - 1)
        # Every callback sees every epoch, including the one some callback stops.
        if any([cb({**figures, "model": model}) is True for cb in opts.callbacks]):
            stop_reason = "callback"
            break
        if status == Status.STATUS_TIME:
            stop_reason = "max_time"
            break
        if opts.early_stopping and bad_epochs >= opts.patience:
            stop_reason = "early_stopping"
            break

    if best[1] is not None and (opts.early_stopping or stop_reason == "max_time"):
        model.params_[...] = best[1]
        model._network.stats[...] = best[2]  # BatchNorm's running statistics with them
    model.stop_reason_ = stop_reason
    if opts.verbose:
        print(f"Training time: {time.perf_counter() - start_all:.2f} s")
    return model


def _diverged(model: MLP, data: _Data, opts: _Options, epoch: int, what: str) -> str:
    """Why training diverged (`what` it shows): targets whose squares pass the dtype's
    range, or else the learning rate or the inputs, with their largest magnitudes."""
    head = f"training diverged in epoch {epoch}: {what}. "
    big = float(np.finfo(model.dtype).max)
    values = data.X.data if isinstance(data.X, CSR) else data.X
    x_max = float(np.abs(values).max(initial=0))
    sizes = f"largest |x|: {x_max:.3g}"
    if model.is_regressor:
        y_max = float(np.abs(data.codes).max(initial=0))
        sizes += f", largest |y|: {y_max:.3g}"
        if model.loss == "squared_error" and y_max > math.sqrt(big):
            return head + (
                f"The targets reach {y_max:.3g}, whose squared error passes {model.dtype}'s "
                f"range ({big:.3g}): scale y (e.g. divide it by its standard deviation) or "
                "train with dtype=numpy.float64."
            )
    return head + (
        f"The learning rate lr={opts.lr:g} is likely too high (try lr={opts.lr / 10:g}); "
        f"unscaled inputs can do this too ({sizes})."
    )


def _lr_schedule(lr_schedule, epochs: int) -> Callable[[int, int], float | np.ndarray]:
    """The learning-rate multiplier, checked: ``f(e, n)`` gives epoch ``e``'s, one value
    for the whole epoch or one for each of its ``n`` mini-batches (or Dask blocks)."""
    if lr_schedule is None:
        return lambda e, n: 1.0
    if lr_schedule == "cosine":
        return lambda e, n: 0.5 * (1.0 + math.cos(math.pi * e / epochs))
    if lr_schedule == "warmup_cosine":
        return lambda e, n: _warmup_cosine(e + (np.arange(n) + 0.5) / n, epochs)
    if callable(lr_schedule):

        def checked(e: int, n: int) -> float:
            return check_float(lr_schedule(e), f"lr_schedule({e})", 0.0, math.inf)

        return checked
    raise ValueError(
        f'lr_schedule must be None, "cosine", "warmup_cosine" or a callable; got {lr_schedule!r}'
    )


# "warmup_cosine": a linear warm-up over the first WARMUP epochs from WARMUP_START, then a
# cosine to 0, per mini-batch. Chosen on MNIST (784-128-64-10, seeds 10-14; the runs are in
# benches/results.md): per mini-batch it reached in 4 epochs what per epoch took 5.
WARMUP = 0.5
WARMUP_START = 0.1


def _warmup_cosine(f: np.ndarray, epochs: int) -> np.ndarray:
    """The "warmup_cosine" multiplier at fractional epochs ``f`` in [0, epochs)."""
    warm = min(WARMUP, epochs / 2)
    rise = WARMUP_START + (1.0 - WARMUP_START) * f / warm
    fall = 0.5 * (1.0 + np.cos(np.pi * (f - warm) / (epochs - warm)))
    return np.where(f < warm, rise, fall)


def _print_epoch(f: dict, last: int) -> None:
    line = f"Epoch [{f['epoch']}/{last}], Train Loss: {f['loss']:.4f}"
    if "accuracy" in f:
        line += f", Train Accuracy: {100 * f['accuracy']:.2f}%"
    if "val_loss" in f:
        line += f", Val Loss: {f['val_loss']:.4f}"
    if "val_accuracy" in f:
        line += f", Val Accuracy: {100 * f['val_accuracy']:.2f}%"
    print(line + f", Time: {f['seconds']:.2f} s", flush=True)
