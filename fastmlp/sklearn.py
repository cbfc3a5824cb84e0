"""scikit-learn estimators over :func:`fastmlp.train`: MLPClassifier and MLPRegressor.

This module needs scikit-learn; ``import fastmlp`` does not import it. Use it as

>>> from fastmlp.sklearn import MLPClassifier              # doctest: +SKIP
>>> clf = MLPClassifier(hidden_layer_sizes=(64,)).fit(X, y)  # doctest: +SKIP
>>> clf.predict(X_test)                                     # doctest: +SKIP

(also reachable as ``fastmlp.MLPClassifier`` and ``fastmlp.MLPRegressor``). The
parameters carry scikit-learn's names and defaults where the two libraries share the idea
(see :class:`sklearn.neural_network.MLPClassifier`), so the estimators work in pipelines,
grid searches, ``clone``, pickling and ``check_estimator``.
"""

from __future__ import annotations

import math
import numbers
import warnings
from collections.abc import Sequence

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin
from sklearn.exceptions import ConvergenceWarning
from sklearn.model_selection import train_test_split
from sklearn.utils import check_random_state
from sklearn.utils.multiclass import check_classification_targets, type_of_target
from sklearn.utils.validation import check_is_fitted, column_or_1d

from fastmlp._network import HIDDEN_ACTIVATIONS, MULTILABEL_LOSS, REGRESSION_LOSSES
from fastmlp._trainer import OPTIMIZERS
from fastmlp._validation import check_dtype, check_float
from fastmlp.model import MLP
from fastmlp.training import init_params, train

try:  # scikit-learn >= 1.6
    from sklearn.utils.validation import validate_data as _validate_data
except ImportError:  # pragma: no cover - older scikit-learn
    _validate_data = None

__all__ = ["MLPClassifier", "MLPRegressor"]

SOLVERS = tuple(OPTIMIZERS)
# Sparse X: scikit-learn converts every other format (CSC, COO, ...) to CSR, which the
# first layer's sparse kernels read in place.
SPARSE = "csr"
# scikit-learn's name for the sigmoid, beside fastmlp's own names.
ACTIVATIONS = (*HIDDEN_ACTIVATIONS, "logistic")


def _validate(estimator, X, *y, reset: bool, dtype, **options):
    """``validate_data`` where scikit-learn has it, else the older estimator method.

    Give ``y`` (even None, to get scikit-learn's "requires y" error) when fitting.
    """
    if _validate_data is not None:
        return _validate_data(estimator, X, *y, reset=reset, dtype=dtype, **options)
    return estimator._validate_data(  # pragma: no cover
        X, *y, reset=reset, dtype=dtype, **options
    )


# The parameters both estimators share, spliced into their docstrings below.
_SHARED_PARAMETERS = """hidden_layer_sizes : int or tuple of int, default=(100,)
        Width of each hidden layer; ``()`` gives a linear model.
    activation : {"relu", "tanh", "logistic"} or list of them, default="relu"
        Activation of the hidden layers ("sigmoid" is accepted for "logistic"): one name
        for all, or a list or tuple with one per hidden layer (kept as given, so
        ``get_params`` and ``clone`` return it unchanged; fastmlp only).
    alpha : float, default=0.0001
        Strength of the L2 penalty, passed to fastmlp as ``l2``: every mini-batch
        minimises its weighted mean loss plus ``0.5 * alpha * sum(W ** 2)`` over the
        weight matrices (not the biases). scikit-learn divides that penalty by the
        batch's sample count, so its ``alpha=a`` corresponds here to
        ``alpha=a / batch_size``; the same value regularises more strongly here.
    batch_size : int or "auto", default="auto"
        Samples per mini-batch; "auto" means ``min(200, n_samples)``. Larger values
        are clipped to the number of samples.
    learning_rate_init : float, default=0.001
        Step size of Adam or SGD.
    max_iter : int, default=200
        Most epochs per call of :meth:`fit`.
    shuffle : bool, default=True
        Reshuffle the samples every epoch.
    random_state : int, RandomState instance or None, default=None
        Seeds initialisation, shuffling, dropout and the validation split. An int gives
        reproducible results (whatever ``n_threads``).
    tol : float, default=1e-4
        Improvement of the training loss (or, with ``early_stopping``, of the validation
        score) below which an epoch counts as no progress.
    early_stopping : bool, default=False
        Hold out ``validation_fraction`` of the data (or use the ``X_val``, ``y_val``
        given to :meth:`fit`), stop when its score has not improved by ``tol`` for
        ``n_iter_no_change`` epochs, and keep the weights of the best epoch. Also
        works with :meth:`partial_fit` (see there).
    validation_fraction : float, default=0.1
        Share of the training data held out for ``early_stopping``.
    n_iter_no_change : int, default=10
        Epochs without progress (see ``tol``) tolerated before training stops.
    beta_1, beta_2 : float, default=0.9, 0.999
        Adam's decay rates of the first and second moment estimates.
    epsilon : float, default=1e-8
        Adam's numerical-stability constant.
    solver : {"adam", "adamw", "sgd"}, default="adam"
        Optimizer ("lbfgs" is not available); "adamw" is Adam with decoupled
        ``weight_decay`` (PyTorch's AdamW).
    weight_decay : float or None, default=None
        AdamW's decoupled weight decay of every parameter, biases included (as
        ``torch.optim.AdamW``); None means PyTorch's 0.01 with ``solver="adamw"``. Only
        "adamw" takes it: ``alpha`` is the L2 penalty of the other solvers (fastmlp only).
    momentum : float, default=0.9
        Momentum of SGD.
    warm_start : bool, default=False
        Make :meth:`fit` continue from the previous solution, optimizer state included,
        instead of starting anew.
    verbose : bool, default=False
        Print one line per epoch.
    dropout : float, default=0.0
        Inverted-dropout rate of the hidden layers during training (fastmlp only).
    normalization : {None, "layer", "batch"}, default=None
        "layer": a LayerNorm between each hidden layer's Linear part and its activation
        (``torch.nn.LayerNorm``; fastmlp only); "batch": a BatchNorm there
        (``torch.nn.BatchNorm1d``: batch statistics in training, running ones in
        prediction; needs mini-batches of 2 rows or more). warm_start and partial_fit
        refuse a change of it.
    dtype : numpy.float32 or numpy.float64, default=numpy.float32
        Precision of the parameters and of all computation (fastmlp only).
    n_threads : int or None, default=None
        Threads for training and prediction; None uses all cores OpenMP offers."""

_SHARED_ATTRIBUTES = """n_features_in_ : int
        Number of features seen during :meth:`fit`.
    feature_names_in_ : ndarray of shape (n_features_in_,)
        Names of the features, when X had string column names.
    model_ : fastmlp.MLP
        The trained network; ``model_.history`` holds fastmlp's per-epoch figures.
    loss_curve_ : list of float
        Mean training loss (weighted by ``sample_weight``) of each epoch, all calls of
        :meth:`fit` and :meth:`partial_fit` together; the L2 penalty is not included.
    best_loss_ : float or None
        Lowest training loss of the last :meth:`fit`; None with ``early_stopping``.
    validation_scores_ : list of float or None
        Validation score of each epoch with ``early_stopping`` or a given ``X_val``
        (of each :meth:`partial_fit` call with a validation set there), else None.
    early_stopped_ : bool
        True once early stopping has ended a series of :meth:`partial_fit` calls.
    best_validation_score_ : float or None
        Best of ``validation_scores_``, else None.
    n_iter_ : int
        Epochs run so far (they accumulate across warm starts and partial fits)."""

_SHARED_NOTES = """Early stopping and convergence are decided by a callback of
    :func:`fastmlp.train` after each epoch, as scikit-learn decides them. Pickling keeps
    the weights but not the optimizer's moments (see ``fastmlp.MLP.__getstate__``): a
    warm start after unpickling restarts Adam's or SGD's memory from zero."""


def _with_shared_docs(cls):
    cls.__doc__ = (
        cls.__doc__.replace("%(parameters)s", _SHARED_PARAMETERS)
        .replace("%(attributes)s", _SHARED_ATTRIBUTES)
        .replace("%(notes)s", _SHARED_NOTES)
    )
    return cls


class _BaseMLP(BaseEstimator):
    """What MLPClassifier and MLPRegressor share: parameters, checks and the fit loop.

    Subclasses say how X and y are validated (``_validate_Xy``), which network they build
    (``_new_model``), what a warm start or later partial fit must refuse
    (``_check_continuation``), how the early-stopping split is stratified (``_stratify``)
    and how a validation set is scored (``_validation_score``).
    """

    def __init__(
        self,
        hidden_layer_sizes: int | Sequence[int] = (100,),
        activation: str | Sequence[str] = "relu",
        *,
        solver: str = "adam",
        alpha: float = 0.0001,
        batch_size: int | str = "auto",
        learning_rate_init: float = 0.001,
        max_iter: int = 200,
        shuffle: bool = True,
        random_state=None,
        tol: float = 1e-4,
        verbose: bool = False,
        warm_start: bool = False,
        momentum: float = 0.9,
        weight_decay: float | None = None,
        early_stopping: bool = False,
        validation_fraction: float = 0.1,
        beta_1: float = 0.9,
        beta_2: float = 0.999,
        epsilon: float = 1e-8,
        n_iter_no_change: int = 10,
        dropout: float = 0.0,
        normalization: str | None = None,
        dtype=np.float32,
        n_threads: int | None = None,
    ) -> None:
        self.hidden_layer_sizes = hidden_layer_sizes
        self.activation = activation
        self.solver = solver
        self.alpha = alpha
        self.batch_size = batch_size
        self.learning_rate_init = learning_rate_init
        self.max_iter = max_iter
        self.shuffle = shuffle
        self.random_state = random_state
        self.tol = tol
        self.verbose = verbose
        self.warm_start = warm_start
        self.momentum = momentum
        self.weight_decay = weight_decay
        self.early_stopping = early_stopping
        self.validation_fraction = validation_fraction
        self.beta_1 = beta_1
        self.beta_2 = beta_2
        self.epsilon = epsilon
        self.n_iter_no_change = n_iter_no_change
        self.dropout = dropout
        self.normalization = normalization
        self.dtype = dtype
        self.n_threads = n_threads

    # -- scikit-learn plumbing ----------------------------------------------------------
    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.allow_nan = False
        tags.input_tags.sparse = True
        return tags

    # -- parameter checks ----------------------------------------------------------------
    def _check_params(self) -> None:
        """Check the parameters fastmlp.train does not check itself, or checks under its
        own names (lr, betas, eps, l2), with sklearn's."""
        lr = check_float(
            self.learning_rate_init, "learning_rate_init", 0.0, math.inf, low_open=True
        )
        check_float(self.beta_1, "beta_1", 0.0, 1.0)
        check_float(self.beta_2, "beta_2", 0.0, 1.0)
        check_float(self.epsilon, "epsilon", 0.0, math.inf, low_open=True)
        check_float(self.alpha, "alpha", 0.0, math.inf)
        decay = self.weight_decay
        if decay is None:  # fastmlp.train's default
            decay = 0.01 if self.solver == "adamw" else 0.0
        if _is_real(decay) and lr * decay >= 1:
            raise ValueError(
                f"weight_decay={decay} with learning_rate_init={lr}: AdamW "
                "multiplies the weights by 1 - learning_rate_init * weight_decay every step, "
                "which must stay above 0 (weight_decay is usually 1e-4 to 0.1)"
            )
        if self.solver not in SOLVERS:
            raise ValueError(f"solver must be one of {SOLVERS}; got {self.solver!r}")
        names = [self.activation] if isinstance(self.activation, str) else self.activation
        if not (
            isinstance(names, (list, tuple))
            and all(isinstance(a, str) and a in ACTIVATIONS for a in names)
        ):
            raise ValueError(
                'activation must be "relu", "tanh" or "logistic", or a list of them (one per '
                f"hidden layer); got {self.activation!r}"
            )
        n_hidden = len(self._hidden())
        if not isinstance(self.activation, str) and len(names) != n_hidden:
            raise ValueError(
                f"activation lists {len(names)} names but hidden_layer_sizes="
                f"{self.hidden_layer_sizes!r} has {n_hidden} hidden layers: give exactly "
                f"{n_hidden}, or a single name for all"
            )
        if not (self.batch_size == "auto" or _is_int(self.batch_size, 1)):
            raise ValueError(f'batch_size must be "auto" or an int >= 1; got {self.batch_size!r}')
        if not _is_int(self.max_iter, 1):
            raise ValueError(f"max_iter must be an int >= 1; got {self.max_iter!r}")
        if not _is_int(self.n_iter_no_change, 1):
            raise ValueError(
                f"n_iter_no_change must be an int >= 1; got {self.n_iter_no_change!r}"
            )
        if not _is_real(self.tol) or self.tol < 0:
            raise ValueError(f"tol must be a number >= 0; got {self.tol!r}")
        if self.early_stopping and not (
            _is_real(self.validation_fraction) and 0 < self.validation_fraction < 1
        ):
            raise ValueError(
                f"validation_fraction must lie in (0, 1); got {self.validation_fraction!r}"
            )
        check_dtype(self.dtype)

    def _hidden(self) -> tuple[int, ...]:
        sizes = self.hidden_layer_sizes
        sizes = (sizes,) if _is_int(sizes, 1) else sizes
        if not isinstance(sizes, (tuple, list)) or not all(_is_int(s, 1) for s in sizes):
            raise ValueError(
                "hidden_layer_sizes must be an int or a sequence of ints >= 1; got "
                f"{self.hidden_layer_sizes!r}"
            )
        return tuple(int(s) for s in sizes)

    def _train_options(self, n_samples: int) -> dict:
        batch = min(200, n_samples) if self.batch_size == "auto" else self.batch_size
        return {
            "optimizer": self.solver,
            "batch_size": int(batch),  # the Trainer caps it at n_samples
            "lr": self.learning_rate_init,
            "betas": (self.beta_1, self.beta_2),
            "eps": self.epsilon,
            "momentum": self.momentum,
            "weight_decay": self.weight_decay,
            "l2": self.alpha,
            "dropout": self.dropout,
            "shuffle": self.shuffle,
            "n_threads": self.n_threads,
            "verbose": bool(self.verbose),
        }

    def _network(self, n_inputs: int, n_outputs: int, classes, seed: int, **options) -> MLP:
        def fastmlp_name(a: str) -> str:
            return "sigmoid" if a == "logistic" else a

        if isinstance(self.activation, str):
            activation = fastmlp_name(self.activation)
        else:
            activation = tuple(fastmlp_name(a) for a in self.activation)
        model = MLP(
            (n_inputs, *self._hidden(), n_outputs),
            classes,
            activation=activation,
            dtype=self.dtype,
            n_threads=self.n_threads,
            normalization=self.normalization,
            **options,
        )
        init_params(model, np.random.default_rng(seed))
        return model

    def _check_continuation(self, y) -> None:
        """Refuse what a warm start or a later partial_fit cannot change."""
        if self.normalization != self.model_.normalization:
            raise ValueError(
                "warm_start and partial_fit keep the network's layers: it was fitted with "
                f"normalization={self.model_.normalization!r}; got {self.normalization!r}"
            )

    def _check_Xy(self, X, y, sample_weight, reset: bool):
        X, y = self._validate_Xy(X, y, reset)
        if sample_weight is not None:
            sample_weight = np.asarray(sample_weight)
            if sample_weight.ndim != 1 or sample_weight.shape[0] != X.shape[0]:
                raise ValueError(
                    f"sample_weight must have shape ({X.shape[0]},); got {sample_weight.shape}"
                )
        return X, y, sample_weight

    def _start(self, X, y, seed: int, classes=None) -> None:
        """A new network and fresh bookkeeping, as the first fit or partial_fit does."""
        self.model_ = self._new_model(X, y, seed, classes)
        self.loss_curve_ = []
        self.n_iter_ = 0
        self._reset_partial_validation()

    def _reset_partial_validation(self) -> None:
        # partial_fit's validation set and early-stopping state (see partial_fit).
        self._partial_validation = None
        self._partial_calls = 0
        self._partial_best = None
        self._partial_bad = 0
        self.early_stopped_ = False

    def _check_validation_set(self, X_val, y_val):
        """(X_val, y_val) checked against the fitted features, or None if neither given."""
        if X_val is None and y_val is None:
            return None
        if X_val is None or y_val is None:
            raise ValueError("give X_val and y_val together (a validation set and its targets)")
        X_val = _validate(self, X_val, reset=False, dtype=self.model_.dtype)
        y_val = np.asarray(y_val)
        if y_val.shape[0] != X_val.shape[0]:
            raise ValueError(f"X_val has {X_val.shape[0]} rows but y_val {y_val.shape[0]} targets")
        # The model's own check: unknown labels, wrong output count, NaN, negative counts.
        self.model_._encode_y(y_val, X_val.shape[0], "y_val")
        return X_val, y_val

    # -- fitting -----------------------------------------------------------------------
    def _fit(self, X, y, sample_weight, X_val=None, y_val=None):
        self._check_params()
        continuing = self.warm_start and hasattr(self, "model_")
        X, y, sample_weight = self._check_Xy(X, y, sample_weight, reset=not continuing)
        rng = check_random_state(self.random_state)
        if continuing:
            self._check_continuation(y)
            self._reset_partial_validation()
        else:
            self._start(X, y, rng.randint(2**31))

        validation_data = self._check_validation_set(X_val, y_val)
        validating = validation_data is not None or self.early_stopping
        if validation_data is not None:
            X_val, y_val = validation_data
            self.validation_scores_ = []
            self.best_validation_score_ = -math.inf
            self.best_loss_ = None if self.early_stopping else math.inf
        elif self.early_stopping:
            split = train_test_split(
                X,
                y,
                *(() if sample_weight is None else (sample_weight,)),
                test_size=self.validation_fraction,
                random_state=rng.randint(2**31),
                stratify=self._stratify(y),
            )
            X, X_val, y, y_val = split[:4]
            sample_weight = split[4] if sample_weight is not None else None
            validation_data = (X_val, y_val)
            self.validation_scores_ = []
            self.best_validation_score_ = -math.inf
            self.best_loss_ = None
        else:
            self.validation_scores_ = None
            self.best_validation_score_ = None
            self.best_loss_ = math.inf

        state = {"bad": 0, "best_params": None, "converged": False}

        def progress(figures: dict) -> bool:
            self.loss_curve_.append(float(figures["loss"]))
            self.n_iter_ += 1
            if validating:
                score = self._validation_score(figures, X_val, y_val)
                self.validation_scores_.append(score)
                improved = score > self.best_validation_score_ + self.tol
                if score > self.best_validation_score_:
                    self.best_validation_score_ = score
                    if self.early_stopping:
                        best = figures["model"]  # BatchNorm's statistics go with it
                        state["best_params"] = (best.params_.copy(), best._network.stats.copy())
            if not self.early_stopping:
                loss = self.loss_curve_[-1]
                improved = loss < self.best_loss_ - self.tol
                self.best_loss_ = min(self.best_loss_, loss)
            state["bad"] = 0 if improved else state["bad"] + 1
            if state["bad"] > self.n_iter_no_change:
                state["converged"] = True
                if self.verbose:
                    what = "Validation score" if self.early_stopping else "Training loss"
                    print(
                        f"{what} did not improve more than tol={self.tol} for "
                        f"{self.n_iter_no_change} consecutive epochs. Stopping."
                    )
                return True
            return False

        train(
            X,
            y,
            init=self.model_,
            epochs=self.max_iter,
            seed=rng.randint(2**31),
            sample_weight=sample_weight,
            validation_data=validation_data,
            callbacks=[progress],
            **self._train_options(X.shape[0]),
        )
        if self.early_stopping and state["best_params"] is not None:
            self.model_.params_[...], self.model_._network.stats[...] = state["best_params"]
        if not state["converged"]:
            warnings.warn(
                f"Stochastic Optimizer: Maximum iterations ({self.max_iter}) reached and "
                "the optimization hasn't converged yet.",
                ConvergenceWarning,
                stacklevel=3,
            )
        return self

    def _partial_fit(self, X, y, sample_weight, classes=None, X_val=None, y_val=None):
        """One epoch over (X, y); the validation set is fixed on the first call (see the
        estimators' partial_fit)."""
        self._check_params()
        first = not hasattr(self, "model_")
        X, y, sample_weight = self._check_Xy(X, y, sample_weight, reset=first)
        rng = check_random_state(self.random_state)
        if first:
            self._start(X, y, rng.randint(2**31), classes)
            self.best_loss_ = math.inf
            self.validation_scores_ = None
            self.best_validation_score_ = None
        else:
            self._check_continuation(y)
        if not hasattr(self, "_partial_validation"):  # fitted by an older fastmlp
            self._reset_partial_validation()
        given = self._check_validation_set(X_val, y_val)
        if given is not None and self._partial_calls > 0:
            raise ValueError(
                "partial_fit takes X_val and y_val on its first call only: the validation "
                "set stays fixed for the calls that follow (fit() starts anew)"
            )
        if self._partial_calls == 0:
            if given is None and self.early_stopping:
                # Hold out validation_fraction of the first chunk, for all later calls.
                split = train_test_split(
                    X,
                    y,
                    *(() if sample_weight is None else (sample_weight,)),
                    test_size=self.validation_fraction,
                    random_state=rng.randint(2**31),
                    stratify=self._stratify(y),
                )
                X, X_val_, y, y_val_ = split[:4]
                sample_weight = split[4] if sample_weight is not None else None
                given = (X_val_, y_val_)
            if given is not None:
                self._partial_validation = given
                self.validation_scores_ = []
                self.best_validation_score_ = -math.inf
        self._partial_calls += 1
        if self.early_stopped_:
            return self  # early stopping ended training; fit() starts anew
        # A different seed per call, so that successive epochs shuffle differently.
        seed = None
        if self.random_state is not None:
            seed = (check_random_state(self.random_state).randint(2**31) + self.n_iter_) % 2**31
        train(
            X,
            y,
            init=self.model_,
            epochs=1,
            seed=seed,
            sample_weight=sample_weight,
            **self._train_options(X.shape[0]),
        )
        self.loss_curve_.append(float(self.model_.history["loss"][-1]))
        self.best_loss_ = min(self.best_loss_ or math.inf, self.loss_curve_[-1])
        self.n_iter_ += 1
        if self._partial_validation is not None:
            self._partial_validate()
        return self

    def _partial_validate(self) -> None:
        """Score the fixed validation set after a partial_fit call; with early stopping,
        keep the best weights and stop after n_iter_no_change calls without progress."""
        X_val, y_val = self._partial_validation
        score = float(self.model_.score(X_val, y_val))
        self.validation_scores_.append(score)
        improved = score > self.best_validation_score_ + self.tol
        if score > self.best_validation_score_:
            self.best_validation_score_ = score
            if self.early_stopping:
                self._partial_best = (
                    self.model_.params_.copy(),
                    self.model_._network.stats.copy(),
                )
        self._partial_bad = 0 if improved else self._partial_bad + 1
        if self.early_stopping and self._partial_bad > self.n_iter_no_change:
            self.model_.params_[...], self.model_._network.stats[...] = self._partial_best
            self.early_stopped_ = True
            if self.verbose:
                print(
                    f"Validation score did not improve more than tol={self.tol} for "
                    f"{self.n_iter_no_change} consecutive calls. Stopping."
                )

    def _stratify(self, y):
        return None

    # -- prediction --------------------------------------------------------------------
    def _check_X(self, X) -> np.ndarray:
        check_is_fitted(self, "model_")
        return _validate(self, X, reset=False, dtype=self.model_.dtype, accept_sparse=SPARSE)


@_with_shared_docs
class MLPClassifier(ClassifierMixin, _BaseMLP):
    """Multi-layer perceptron classifier trained by fastmlp's multi-threaded kernels.

    A drop-in for :class:`sklearn.neural_network.MLPClassifier` with the "adam" and
    "sgd" solvers (and "adamw"). The output layer is a softmax over all classes, binary problems
    included (two outputs, not one logistic unit); the loss is cross-entropy. A 2-D y of 0
    and 1 (a multilabel indicator matrix) trains one sigmoid output per label with binary
    cross-entropy: :meth:`predict` returns the 0/1 matrix, :meth:`predict_proba` each
    label's probability, ``classes_`` the label indices.

    Parameters
    ----------
    %(parameters)s

    label_smoothing : float in [0, 1), default=0.0
        Train against smoothed targets ``(1 - s) * onehot(y) + s / n_classes``, as
        ``torch.nn.CrossEntropyLoss(label_smoothing=s)`` (fastmlp only).

    Attributes
    ----------
    classes_ : ndarray of shape (n_classes,)
        Class labels, in the order of the columns of :meth:`predict_proba`.
    %(attributes)s

    Notes
    -----
    The validation score of ``early_stopping`` is the accuracy (held out stratified).
    %(notes)s

    See Also
    --------
    fastmlp.train : The function this estimator wraps.
    sklearn.neural_network.MLPClassifier : scikit-learn's own implementation.
    """

    def __init__(
        self,
        hidden_layer_sizes: int | Sequence[int] = (100,),
        activation: str | Sequence[str] = "relu",
        *,
        solver: str = "adam",
        alpha: float = 0.0001,
        batch_size: int | str = "auto",
        learning_rate_init: float = 0.001,
        max_iter: int = 200,
        shuffle: bool = True,
        random_state=None,
        tol: float = 1e-4,
        verbose: bool = False,
        warm_start: bool = False,
        momentum: float = 0.9,
        weight_decay: float | None = None,
        early_stopping: bool = False,
        validation_fraction: float = 0.1,
        beta_1: float = 0.9,
        beta_2: float = 0.999,
        epsilon: float = 1e-8,
        n_iter_no_change: int = 10,
        dropout: float = 0.0,
        normalization: str | None = None,
        label_smoothing: float = 0.0,
        dtype=np.float32,
        n_threads: int | None = None,
    ) -> None:
        super().__init__(
            hidden_layer_sizes,
            activation,
            solver=solver,
            alpha=alpha,
            batch_size=batch_size,
            learning_rate_init=learning_rate_init,
            max_iter=max_iter,
            shuffle=shuffle,
            random_state=random_state,
            tol=tol,
            verbose=verbose,
            warm_start=warm_start,
            momentum=momentum,
            weight_decay=weight_decay,
            early_stopping=early_stopping,
            validation_fraction=validation_fraction,
            beta_1=beta_1,
            beta_2=beta_2,
            epsilon=epsilon,
            n_iter_no_change=n_iter_no_change,
            dropout=dropout,
            normalization=normalization,
            dtype=dtype,
            n_threads=n_threads,
        )
        self.label_smoothing = label_smoothing

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.classifier_tags.multi_class = True
        tags.classifier_tags.multi_label = True
        return tags

    def _train_options(self, n_samples: int) -> dict:
        return {**super()._train_options(n_samples), "label_smoothing": self.label_smoothing}

    def _validate_Xy(self, X, y, reset: bool):
        X, y = _validate(
            self,
            X,
            y,
            reset=reset,
            dtype=check_dtype(self.dtype),
            accept_sparse=SPARSE,
            multi_output=True,
        )
        check_classification_targets(y)
        if type_of_target(y) == "multilabel-indicator":
            return X, y  # one 0/1 column per label
        if y.ndim == 2 and y.shape[1] != 1:
            raise ValueError(
                "MLPClassifier takes one label per sample (1-D y) or a multilabel indicator "
                f"matrix of 0 and 1 (one column per label); got a {y.shape} y with other "
                "values"
            )
        return X, column_or_1d(y, warn=True)

    def _new_model(self, X, y, seed: int, classes=None) -> MLP:
        if y.ndim == 2:  # multilabel: one sigmoid output per column
            # partial_fit's classes are then the label indices, as in scikit-learn; a
            # different set would be refused on the next call, so refuse it now.
            k = y.shape[1]
            if classes is not None and set(np.ravel(classes).tolist()) != set(range(k)):
                raise ValueError(
                    f"for a multilabel y of {k} columns, classes are the label indices "
                    f"0..{k - 1} (classes=range({k})); got classes={classes!r}"
                )
            self._y_dtype = y.dtype
            model = self._network(
                X.shape[1], y.shape[1], np.arange(y.shape[1]), seed, loss=MULTILABEL_LOSS
            )
            self.classes_ = model.classes_
            return model
        classes = np.unique(y if classes is None else np.asarray(classes))
        if len(classes) < 2:
            raise ValueError(
                "MLPClassifier needs samples of at least 2 classes in y; got 1 class "
                f"({classes[0]!r})"
            )
        model = self._network(X.shape[1], len(classes), classes, seed)
        self.classes_ = model.classes_
        return model

    def _check_continuation(self, y) -> None:
        super()._check_continuation(y)
        if self.model_.is_multilabel != (y.ndim == 2):
            raise ValueError(
                "warm_start and partial_fit keep the kind of y: the network was fitted "
                f"{'with' if self.model_.is_multilabel else 'without'} a multilabel y"
            )
        if y.ndim == 2:
            if y.shape[1] != len(self.classes_):
                raise ValueError(
                    f"y has {y.shape[1]} labels but the network was fitted with "
                    f"{len(self.classes_)}"
                )
            return
        if not np.isin(np.unique(y), self.classes_).all():
            raise ValueError(
                "warm_start and partial_fit can not add classes: y has labels outside "
                f"classes_ {self.classes_.tolist()}"
            )

    def _stratify(self, y):
        if y.ndim == 2:  # multilabel
            return None
        return y if np.unique(y, return_counts=True)[1].min() >= 2 else None

    def _validation_score(self, figures: dict, X_val, y_val) -> float:
        return float(figures["val_accuracy"])

    def fit(self, X, y, sample_weight=None, *, X_val=None, y_val=None) -> MLPClassifier:
        """Train the network on (X, y) for up to ``max_iter`` epochs.

        Parameters
        ----------
        X : array-like or scipy.sparse matrix of shape (n_samples, n_features)
            Training inputs.
        y : array-like of shape (n_samples,)
            Class labels.
        sample_weight : array-like of shape (n_samples,), default=None
            Weight of each sample in the loss.
        X_val : array-like of shape (n_val, n_features), default=None
            A validation set of your own, given with ``y_val``: every epoch is scored on
            it (``validation_scores_``), and ``early_stopping`` stops on it instead of
            holding out ``validation_fraction`` of X (fastmlp only).
        y_val : array-like, default=None
            Its targets.

        Returns
        -------
        self : MLPClassifier
            The fitted estimator.
        """
        return self._fit(X, y, sample_weight, X_val, y_val)

    def partial_fit(
        self, X, y, classes=None, sample_weight=None, *, X_val=None, y_val=None
    ) -> MLPClassifier:
        """Train for one epoch over (X, y), continuing with the optimizer's state.

        Parameters
        ----------
        X : array-like or scipy.sparse matrix of shape (n_samples, n_features)
            A chunk of training inputs.
        y : array-like of shape (n_samples,) or (n_samples, n_labels)
            Its class labels, or a multilabel indicator matrix of 0 and 1 (the same
            number of columns on every call).
        classes : array-like of shape (n_classes,), default=None
            Every class of the whole problem. Required on the first call, which may not
            see them all; ignored (but checked) afterwards. For a multilabel y, the label
            indices ``range(n_labels)``, as in scikit-learn.
        sample_weight : array-like of shape (n_samples,), default=None
            Weight of each sample in the loss.
        X_val : array-like of shape (n_val, n_features), default=None
            A validation set, given with ``y_val`` on the first call only (later calls
            refuse it): every call is scored on it (``validation_scores_``), and with
            ``early_stopping`` training stops after ``n_iter_no_change`` calls without
            improvement by ``tol``, the best weights restored (``early_stopped_``; later
            calls then do nothing until :meth:`fit`). With ``early_stopping`` and no
            X_val, ``validation_fraction`` of the first call's chunk is held out (never
            trained on) and used for every call. scikit-learn raises here instead.
        y_val : array-like, default=None
            Its targets.

        Returns
        -------
        self : MLPClassifier
            The updated estimator.
        """
        if not hasattr(self, "model_") and classes is None:
            raise ValueError("classes must be passed on the first call to partial_fit.")
        if (
            hasattr(self, "model_")
            and classes is not None
            and not np.array_equal(np.unique(classes), self.classes_)
        ):
            raise ValueError(
                f"classes={classes!r} is not the same as on the first call to partial_fit: "
                f"{self.classes_.tolist()}"
            )
        return self._partial_fit(X, y, sample_weight, classes, X_val, y_val)

    def predict_proba(self, X) -> np.ndarray:
        """Probability of each class.

        Parameters
        ----------
        X : array-like or scipy.sparse matrix of shape (n_samples, n_features)
            Inputs.

        Returns
        -------
        ndarray of shape (n_samples, n_classes)
            Columns in the order of ``classes_``; in the model's dtype.
        """
        X = self._check_X(X)
        return self.model_.predict_proba(X)

    def predict_log_proba(self, X) -> np.ndarray:
        """Logarithm of :meth:`predict_proba`.

        Parameters
        ----------
        X : array-like or scipy.sparse matrix of shape (n_samples, n_features)
            Inputs.

        Returns
        -------
        ndarray of shape (n_samples, n_classes)
        """
        with np.errstate(divide="ignore"):
            return np.log(self.predict_proba(X))

    def predict(self, X) -> np.ndarray:
        """Most probable class of each sample.

        Parameters
        ----------
        X : array-like or scipy.sparse matrix of shape (n_samples, n_features)
            Inputs.

        Returns
        -------
        ndarray of shape (n_samples,) or (n_samples, n_labels)
            Labels from ``classes_``; for a multilabel fit the 0/1 indicator matrix (a
            label where its probability is above 0.5), in the dtype of the fitted y.
        """
        X = self._check_X(X)
        if self.model_.is_multilabel:
            return self.model_.predict(X).astype(self._y_dtype, copy=False)
        return self.model_.predict(X)


@_with_shared_docs
class MLPRegressor(RegressorMixin, _BaseMLP):
    """Multi-layer perceptron regressor trained by fastmlp's multi-threaded kernels.

    A drop-in for :class:`sklearn.neural_network.MLPRegressor` with the "adam" and
    "sgd" solvers (and "adamw"): identity output layer, one unit per target, trained on half the
    squared error averaged over the outputs (scikit-learn's ``squared_error``; see
    ``loss`` for the others).
    Targets are fitted as given: standardise them (e.g. with
    :class:`sklearn.compose.TransformedTargetRegressor`) when they are far from unit scale.

    Parameters
    ----------
    %(parameters)s

    loss : {"squared_error", "huber", "absolute_error", "poisson"}, default="squared_error"
        The loss, averaged over the outputs: half the squared error (scikit-learn's);
        Huber's with ``delta`` (``torch.nn.HuberLoss``); the absolute error (subgradient
        0 at a perfect fit); or Poisson's with the log link (targets >= 0, the network's
        output is the log of the mean and :meth:`predict` returns its exp, as
        ``torch.nn.PoissonNLLLoss(log_input=True)`` and scikit-learn's "poisson").
    delta : float, default=1.0
        The threshold of the Huber loss; other losses take only 1.0 (fastmlp only).

    Attributes
    ----------
    n_outputs_ : int
        Number of targets.
    %(attributes)s

    Notes
    -----
    The validation score of ``early_stopping`` is R^2, as :meth:`score` computes it.
    %(notes)s

    See Also
    --------
    fastmlp.train : The function this estimator wraps (with ``loss="squared_error"``).
    sklearn.neural_network.MLPRegressor : scikit-learn's own implementation.
    """

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.target_tags.multi_output = True
        return tags

    def __init__(
        self,
        hidden_layer_sizes: int | Sequence[int] = (100,),
        activation: str | Sequence[str] = "relu",
        *,
        loss: str = "squared_error",
        delta: float = 1.0,
        solver: str = "adam",
        alpha: float = 0.0001,
        batch_size: int | str = "auto",
        learning_rate_init: float = 0.001,
        max_iter: int = 200,
        shuffle: bool = True,
        random_state=None,
        tol: float = 1e-4,
        verbose: bool = False,
        warm_start: bool = False,
        momentum: float = 0.9,
        weight_decay: float | None = None,
        early_stopping: bool = False,
        validation_fraction: float = 0.1,
        beta_1: float = 0.9,
        beta_2: float = 0.999,
        epsilon: float = 1e-8,
        n_iter_no_change: int = 10,
        dropout: float = 0.0,
        normalization: str | None = None,
        dtype=np.float32,
        n_threads: int | None = None,
    ) -> None:
        super().__init__(
            hidden_layer_sizes,
            activation,
            solver=solver,
            alpha=alpha,
            batch_size=batch_size,
            learning_rate_init=learning_rate_init,
            max_iter=max_iter,
            shuffle=shuffle,
            random_state=random_state,
            tol=tol,
            verbose=verbose,
            warm_start=warm_start,
            momentum=momentum,
            weight_decay=weight_decay,
            early_stopping=early_stopping,
            validation_fraction=validation_fraction,
            beta_1=beta_1,
            beta_2=beta_2,
            epsilon=epsilon,
            n_iter_no_change=n_iter_no_change,
            dropout=dropout,
            normalization=normalization,
            dtype=dtype,
            n_threads=n_threads,
        )
        self.loss = loss
        self.delta = delta

    def _check_params(self) -> None:
        super()._check_params()
        if self.loss not in REGRESSION_LOSSES:
            raise ValueError(f"loss must be one of {REGRESSION_LOSSES}; got {self.loss!r}")

    def _validate_Xy(self, X, y, reset: bool):
        return _validate(
            self,
            X,
            y,
            reset=reset,
            dtype=check_dtype(self.dtype),
            accept_sparse=SPARSE,
            multi_output=True,
            y_numeric=True,
        )

    def _new_model(self, X, y, seed: int, classes=None) -> MLP:
        self.n_outputs_ = 1 if y.ndim == 1 else y.shape[1]
        return self._network(
            X.shape[1], self.n_outputs_, None, seed, loss=self.loss, delta=self.delta
        )

    def _check_continuation(self, y) -> None:
        super()._check_continuation(y)
        if (self.loss, self.delta) != (self.model_.loss, self.model_.delta):
            raise ValueError(
                f"warm_start and partial_fit continue the loss the network was fitted with "
                f"({self.model_.loss!r}, delta={self.model_.delta}); got loss={self.loss!r}, "
                f"delta={self.delta}"
            )
        n_outputs = 1 if y.ndim == 1 else y.shape[1]
        if n_outputs != self.n_outputs_:
            raise ValueError(
                f"y has {n_outputs} outputs but the network was fitted with {self.n_outputs_}"
            )

    def _validation_score(self, figures: dict, X_val, y_val) -> float:
        return figures["model"].score(X_val, y_val)

    def fit(self, X, y, sample_weight=None, *, X_val=None, y_val=None) -> MLPRegressor:
        """Train the network on (X, y) for up to ``max_iter`` epochs.

        Parameters
        ----------
        X : array-like or scipy.sparse matrix of shape (n_samples, n_features)
            Training inputs.
        y : array-like of shape (n_samples,) or (n_samples, n_outputs)
            Targets.
        sample_weight : array-like of shape (n_samples,), default=None
            Weight of each sample in the loss.
        X_val : array-like of shape (n_val, n_features), default=None
            A validation set of your own, given with ``y_val``: every epoch is scored on
            it (``validation_scores_``), and ``early_stopping`` stops on it instead of
            holding out ``validation_fraction`` of X (fastmlp only).
        y_val : array-like, default=None
            Its targets.

        Returns
        -------
        self : MLPRegressor
            The fitted estimator.
        """
        return self._fit(X, y, sample_weight, X_val, y_val)

    def partial_fit(self, X, y, sample_weight=None, *, X_val=None, y_val=None) -> MLPRegressor:
        """Train for one epoch over (X, y), continuing with the optimizer's state.

        Parameters
        ----------
        X : array-like or scipy.sparse matrix of shape (n_samples, n_features)
            A chunk of training inputs.
        y : array-like of shape (n_samples,) or (n_samples, n_outputs)
            Its targets.
        sample_weight : array-like of shape (n_samples,), default=None
            Weight of each sample in the loss.
        X_val : array-like of shape (n_val, n_features), default=None
            A validation set, given with ``y_val`` on the first call only (later calls
            refuse it): every call is scored on it (``validation_scores_``), and with
            ``early_stopping`` training stops after ``n_iter_no_change`` calls without
            improvement by ``tol``, the best weights restored (``early_stopped_``; later
            calls then do nothing until :meth:`fit`). With ``early_stopping`` and no
            X_val, ``validation_fraction`` of the first call's chunk is held out (never
            trained on) and used for every call. scikit-learn raises here instead.
        y_val : array-like, default=None
            Its targets.

        Returns
        -------
        self : MLPRegressor
            The updated estimator.
        """
        return self._partial_fit(X, y, sample_weight, None, X_val, y_val)

    def predict(self, X) -> np.ndarray:
        """Predicted targets.

        Parameters
        ----------
        X : array-like or scipy.sparse matrix of shape (n_samples, n_features)
            Inputs.

        Returns
        -------
        ndarray of shape (n_samples,) or (n_samples, n_outputs)
            1-D when the network has one output, as scikit-learn's; in the model's dtype.
        """
        X = self._check_X(X)
        return self.model_.predict(X)


def _is_int(value, minimum: int) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool) and value >= minimum


def _is_real(value) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)
