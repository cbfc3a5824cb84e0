"""The model object: a trained multi-layer perceptron, classifier or regressor."""

from __future__ import annotations

import numbers
from collections.abc import Sequence
from os import PathLike

import numpy as np
from scipy.special import expit

from fastmlp._network import (
    ACTIVATIONS,
    HIDDEN_ACTIVATIONS,
    LAYERS_LIMIT,
    LOSSES,
    MULTILABEL_LOSS,
    NORM_EPS,
    NORMALIZATIONS,
    REGRESSION_LOSS,
    REGRESSION_LOSSES,
    WIDTH_LIMIT,
    Network,
    count_params,
)
from fastmlp._threads import blas_guard, effective_n_threads, forward_on_cores
from fastmlp._trainer import Trainer
from fastmlp._validation import (
    check_dtype,
    check_float,
    check_labels,
    check_memory,
    check_sample_weight,
    check_targets,
    check_X,
    encode_labels,
    is_sparse,
)


class MLP:
    """A multi-layer perceptron: Linear layers with an activation between them.

    A classifier, or with a regression loss (``"squared_error"``, ``"huber"``,
    ``"absolute_error"``, ``"poisson"``) a regressor of real-valued targets.
    Build one with :func:`fastmlp.train`, :meth:`MLP.from_weights` or :func:`fastmlp.load`.

    Parameters
    ----------
    layer_sizes : sequence of int
        Inputs, hidden widths, outputs: ``(784, 128, 64, 10)``.
    classes : array-like or None
        The class labels, one per output, in the order of the outputs; None for a
        regressor.
    activation : {"relu", "tanh", "sigmoid"} or sequence of them
        Activation of the hidden layers: one name for all, or one per hidden layer (kept
        as given, a tuple; :attr:`activations` always lists one per layer).
    loss : {"cross_entropy", "mse", "squared_error", "huber", "absolute_error", "poisson"}
        Classifiers: softmax + cross-entropy, or half squared error against one-hot
        targets. Regressors, each averaged over the outputs: "squared_error", half the
        squared error (scikit-learn's MLPRegressor loss); "huber" (``torch.nn.HuberLoss``:
        half the squared error within ``delta`` of the target, linear beyond);
        "absolute_error" (its subgradient is 0 where an output equals its target);
        "poisson" (log link: the network's output z is the log of the mean, the loss
        ``exp(z) - y z`` as ``torch.nn.PoissonNLLLoss(log_input=True)``, targets >= 0,
        and :meth:`predict` returns ``exp(z)``). "binary_cross_entropy" makes a multilabel
        classifier: a sigmoid and binary cross-entropy per output, summed over the labels
        (its classes are the label indices; :func:`fastmlp.train` picks it for a 2-D 0/1
        y).
    output_activation : {"identity", "relu", "tanh", "sigmoid"} or None
        Activation of the output layer; None means "identity". Cross-entropy requires
        "identity" (the softmax is part of the loss).
    dtype : numpy.float32 or numpy.float64
        Precision of the parameters and of all computation.
    params : ndarray, optional
        The flat parameter buffer (W_1, b_1, W_2, b_2, ... row-major); zeros if omitted.
    n_threads : int or None
        Default thread count for prediction (None: all cores OpenMP offers).
    delta : float > 0
        The threshold of ``loss="huber"`` (other losses refuse any other value than 1).
    normalization : {None, "layer", "batch"}
        "layer": a LayerNorm (``torch.nn.LayerNorm`` over the layer's units, eps 1e-5,
        with a scale gamma and a shift beta per unit) between each hidden layer's Linear
        part and its activation. Its parameters follow each hidden layer's bias in
        :attr:`params_` (see :attr:`norm_weights`). "batch": a BatchNorm there instead
        (``torch.nn.BatchNorm1d``: each unit normalized with the mini-batch's mean and
        biased variance in training, eps 1e-5; prediction uses the running statistics
        :attr:`running_means` and :attr:`running_vars`, which are not parameters).

    Attributes
    ----------
    classes_ : ndarray or None
        Labels, in the order of the outputs; None for a regressor.
    history : dict of lists
        Per epoch: ``epoch``, ``loss``, ``accuracy`` (classifiers), ``seconds`` and, with a
        validation set, ``val_loss`` and ``val_accuracy`` (classifiers).
    """

    def __init__(
        self,
        layer_sizes: Sequence[int],
        classes=None,
        *,
        activation: str | Sequence[str] = "relu",
        loss: str = "cross_entropy",
        output_activation: str | None = None,
        dtype=np.float32,
        params: np.ndarray | None = None,
        n_threads: int | None = None,
        delta: float = 1.0,
        normalization: str | None = None,
    ) -> None:
        # Integers only: int() would truncate 3.7 to 3, and a str's digits make sizes.
        try:
            items = [] if isinstance(layer_sizes, (str, bytes)) else list(layer_sizes)
        except TypeError:  # not iterable
            items = []
        if not items or not all(
            isinstance(s, numbers.Integral) and not isinstance(s, bool) for s in items
        ):
            raise ValueError(
                f"layer_sizes must be a sequence of ints, such as (784, 128, 10); got "
                f"{layer_sizes!r}"
            )
        sizes = tuple(int(s) for s in items)
        if not 2 <= len(sizes) <= LAYERS_LIMIT + 1 or not all(
            1 <= s <= WIDTH_LIMIT for s in sizes
        ):
            raise ValueError(
                f"layer_sizes must be 2 to {LAYERS_LIMIT + 1} positive ints below 2**31; got "
                f"{layer_sizes!r}"
            )
        activation = check_activation(activation, len(sizes) - 2)
        if loss not in LOSSES:
            raise ValueError(f"loss must be one of {tuple(LOSSES)}; got {loss!r}")
        output_activation = output_activation or "identity"
        if output_activation not in ACTIVATIONS:
            raise ValueError(
                f"output_activation must be one of {tuple(ACTIVATIONS)}; got {output_activation!r}"
            )
        if loss in ("cross_entropy", MULTILABEL_LOSS) and output_activation != "identity":
            own = "softmax" if loss == "cross_entropy" else "sigmoid per label"
            raise ValueError(
                f"{loss.replace('_', '-')} applies its own {own}: use output_activation=None"
            )
        delta = check_float(delta, "delta", 0.0, float("inf"), low_open=True)
        if loss != "huber" and delta != 1.0:
            raise ValueError(f"delta is the threshold of loss='huber'; this loss is {loss!r}")
        if normalization is not None and normalization not in NORMALIZATIONS:
            raise ValueError(
                f"normalization must be None or one of {NORMALIZATIONS}; got {normalization!r}"
            )
        if loss in REGRESSION_LOSSES:
            if classes is not None:
                raise ValueError(f"a regressor (loss={loss!r}) has no classes: pass classes=None")
        elif classes is None:
            raise ValueError(
                f"a classifier needs its classes, one label per output; for a regressor use "
                f"loss={REGRESSION_LOSS!r}"
            )
        else:
            classes = np.asarray(classes)
            try:
                distinct = classes.ndim == 1 and len(np.unique(classes)) == len(classes)
            except TypeError as exc:
                raise TypeError("classes must be labels of one sortable type") from exc
            if not distinct or len(classes) != sizes[-1]:
                raise ValueError(
                    f"classes must be {sizes[-1]} distinct labels, one per output; got "
                    f"{classes.tolist()!r}"
                )
            if len(classes) < 2:
                raise ValueError("a classifier needs at least 2 classes")
        self.layer_sizes = sizes
        self.activation = activation
        self.loss = loss
        self.output_activation = output_activation
        self.delta = delta
        self.normalization = normalization
        self.dtype = check_dtype(dtype)
        self.classes_ = classes
        if n_threads is not None:
            effective_n_threads(n_threads)  # refuses 0, "2", 1.5 here, not at a later call
        self.n_threads = n_threads
        check_memory(
            count_params(sizes, normalization) * self.dtype.itemsize,
            f"the parameters of layers {sizes}",
        )
        self.params_ = params
        self.history: dict[str, list] = {}
        # Optimizer memory kept between fits: {"name", "t", "state1", "state2"}.
        self._optimizer: dict | None = None

    # -- parameters -------------------------------------------------------------------
    @property
    def params_(self) -> np.ndarray:
        """All parameters in one flat buffer: W_1, b_1, W_2, b_2, ... (W row-major); with
        normalization, each hidden layer's gamma and beta (LayerNorm's or BatchNorm's) follow its
        bias."""
        return self._network.params

    @params_.setter
    def params_(self, params: np.ndarray | None) -> None:
        # A new compiled network around the new buffer (zeros for None): it checks the
        # size and dtype, and copies only a buffer C cannot use in place.
        acts = [*self.activations, self.output_activation]
        if params is not None:
            params = np.asarray(params)
        # BatchNorm's running statistics stay with the model, not with a parameter buffer.
        old = getattr(self, "_network", None)
        same = (self.normalization, self.layer_sizes, self.dtype)
        keep = old is not None and (old.normalization, old.sizes, old.dtype) == same
        self._network = Network(
            self.layer_sizes,
            acts,
            self.loss,
            self.dtype,
            params,
            delta=self.delta,
            normalization=self.normalization,
            stats=old.stats if keep else None,
        )

    @property
    def activations(self) -> tuple[str, ...]:
        """The activation of each hidden layer, one name per layer."""
        n_hidden = len(self.layer_sizes) - 2
        if isinstance(self.activation, str):
            return (self.activation,) * n_hidden
        return self.activation

    @property
    def n_features_in_(self) -> int:
        """Number of input features."""
        return self.layer_sizes[0]

    @property
    def is_regressor(self) -> bool:
        """True for a regressor (a regression loss), False for a classifier."""
        return self.loss in REGRESSION_LOSSES

    @property
    def is_multilabel(self) -> bool:
        """True for a multilabel classifier (``loss="binary_cross_entropy"``)."""
        return self.loss == MULTILABEL_LOSS

    @property
    def weights(self) -> list[np.ndarray]:
        """Weight matrices, ``weights[i]`` of shape (fan_in, fan_out); views, not copies."""
        s = self.layer_sizes
        slices = self._network.slices()
        return [self.params_[w:b].reshape(s[i], s[i + 1]) for i, (w, b) in enumerate(slices)]

    @property
    def biases(self) -> list[np.ndarray]:
        """Bias vectors, one per layer; views, not copies."""
        s = self.layer_sizes
        return [self.params_[b : b + s[i + 1]] for i, (_, b) in enumerate(self._network.slices())]

    @property
    def norm_weights(self) -> list[np.ndarray]:
        """The normalization's scale gamma of each hidden layer (``weight`` of
        ``torch.nn.LayerNorm`` or ``BatchNorm1d``); views, not copies; empty without
        normalization."""
        return [self.params_[g : g + n] for g, n in self._norms()]

    @property
    def norm_biases(self) -> list[np.ndarray]:
        """The normalization's shift beta of each hidden layer (``bias`` of
        ``torch.nn.LayerNorm`` or ``BatchNorm1d``); views, not copies; empty without
        normalization."""
        return [self.params_[g + n : g + 2 * n] for g, n in self._norms()]

    @property
    def running_means(self) -> list[np.ndarray]:
        """BatchNorm's running mean of each hidden layer (``torch.nn.BatchNorm1d.
        running_mean``, momentum 0.1, starting at 0); views, not copies; empty without
        ``normalization="batch"``."""
        stats = self._network.stats
        return [stats[o : o + n] for o, n in self._stats()]

    @property
    def running_vars(self) -> list[np.ndarray]:
        """BatchNorm's running variance of each hidden layer (unbiased batch variances,
        momentum 0.1, starting at 1); views, not copies; empty without
        ``normalization="batch"``."""
        stats = self._network.stats
        return [stats[o + n : o + 2 * n] for o, n in self._stats()]

    def _stats(self) -> list[tuple[int, int]]:
        return list(zip(self._network.stats_offsets(), self.layer_sizes[1:-1]))

    def _set_running_stats(self, stats) -> None:
        """Copy a flat buffer of BatchNorm's running statistics (per hidden layer the
        means, then the variances) in; ValueError if it does not fit or is not finite
        with variances >= 0."""
        stats = np.asarray(stats)
        own = self._network.stats
        if stats.shape != own.shape:
            raise ValueError(
                f"the running statistics hold {stats.size} values; layers "
                f"{self.layer_sizes} with normalization={self.normalization!r} have {own.size}"
            )
        if stats.size and not np.isfinite(stats).all():
            raise ValueError("the running statistics hold NaN or infinity")
        own[...] = stats
        if any((v < 0).any() for v in self.running_vars):
            own[...] = 0
            raise ValueError("a running variance is negative")

    def _norms(self) -> list[tuple[int, int]]:
        return list(zip(self._network.norm_offsets(), self.layer_sizes[1:-1]))

    @classmethod
    def from_weights(
        cls,
        weights: Sequence[np.ndarray],
        biases: Sequence[np.ndarray],
        *,
        activation: str | Sequence[str] = "relu",
        classes=None,
        loss: str = "cross_entropy",
        output_activation: str | None = None,
        dtype=None,
        delta: float = 1.0,
        normalization: str | None = None,
    ) -> MLP:
        """Build a model from weight matrices and bias vectors.

        Parameters
        ----------
        weights : sequence of ndarray
            ``weights[i]`` of shape (fan_in, fan_out); consecutive shapes must chain.
        biases : sequence of ndarray
            ``biases[i]`` of shape (fan_out,).
        activation, loss, output_activation, delta
            As for :class:`MLP`.
        normalization : {None, "layer", "batch"}
            As for :class:`MLP`; each normalization starts as gamma = 1, beta = 0 (set
            :attr:`norm_weights` and :attr:`norm_biases` in place for other values).
        classes : array-like, optional
            One label per output; default ``0 .. n_outputs - 1`` (None for a regressor).
        dtype : numpy.float32 or numpy.float64, optional
            Default: the dtype of ``weights[0]`` if it is one of those, else float32.

        Returns
        -------
        MLP
        """
        if len(weights) == 0 or len(weights) != len(biases):
            raise ValueError("need one bias per weight matrix, and at least one layer")
        if any(is_sparse(a) for a in (*weights, *biases)):
            raise TypeError(
                "weights and biases must be dense arrays; got a scipy.sparse matrix: pass "
                "W.toarray()."
            )
        mats = [np.asarray(W) for W in weights]
        vecs = [np.asarray(b) for b in biases]
        if dtype is None:
            dtype = mats[0].dtype if mats[0].dtype in (np.float32, np.float64) else np.float32
        sizes = [mats[0].shape[0] if mats[0].ndim == 2 else -1]
        for i, (W, b) in enumerate(zip(mats, vecs)):
            if W.ndim != 2:
                raise ValueError(
                    f"weights[{i}] must be 2-D (fan_in, fan_out); got shape {W.shape}"
                )
            if W.shape[0] != sizes[-1]:
                raise ValueError(
                    f"weights[{i}] has shape {W.shape}, but weights[{i - 1}] has {sizes[-1]} "
                    "outputs: the matrices must chain, each (fan_in, fan_out)"
                )
            if b.shape != (W.shape[1],):
                raise ValueError(
                    f"biases[{i}] must have shape ({W.shape[1]},), one per output of "
                    f"weights[{i}]; got {b.shape}"
                )
            sizes.append(W.shape[1])
        if classes is None and loss not in REGRESSION_LOSSES:
            classes = np.arange(sizes[-1])
        model = cls(
            sizes,
            classes,
            activation=activation,
            loss=loss,
            output_activation=output_activation,
            dtype=dtype,
            delta=delta,
            normalization=normalization,
        )
        for gamma in model.norm_weights:
            gamma[...] = 1
        for i, (W, b, dst_W, dst_b) in enumerate(zip(mats, vecs, model.weights, model.biases)):
            dst_W[...] = check_X(W, model.dtype, name=f"weights[{i}]", finite=False)
            dst_b[...] = check_X(b[None, :], model.dtype, name=f"biases[{i}]", finite=False)[0]
            for got, given, name in ((dst_W, W, f"weights[{i}]"), (dst_b, b, f"biases[{i}]")):
                if not np.isfinite(got).all():
                    at = tuple(int(k) for k in np.argwhere(~np.isfinite(got))[0])
                    where = at if len(at) > 1 else at[0]
                    if np.isfinite(given[at]):
                        raise ValueError(
                            f"{name} holds {float(given[at]):.3g} at {where}, beyond "
                            f"{model.dtype}'s range; pass dtype=numpy.float64"
                        )
                    raise ValueError(
                        f"{name} holds NaN or infinity (first at {where}); a model needs "
                        "finite parameters"
                    )
        return model

    # -- prediction -------------------------------------------------------------------
    def _outputs(self, X, n_threads: int | None, softmax: bool) -> np.ndarray:
        # A request's few rows, already right, go straight to the kernels on this thread.
        out = self._network.outputs(X, softmax)
        if out is not None:
            return out
        # Other ndarrays already right skip the conversions; NaN and inf are caught by
        # the kernel as it reads X, in every case.
        if not (
            type(X) is np.ndarray
            and X.dtype == self.dtype
            and X.ndim == 2
            and X.shape[0] > 0
            and X.shape[1] == self.layer_sizes[0]
            and X.flags.c_contiguous
            and X.flags.aligned
        ):
            X = check_X(X, self.dtype, self.layer_sizes[0], finite=False, accept_sparse=True)
        out = np.empty((X.shape[0], self.layer_sizes[-1]), dtype=self.dtype)
        threads = self.n_threads if n_threads is None else n_threads
        forward_on_cores(self._network, X, out, softmax=softmax, n_threads=threads)
        return out

    def predict_proba(self, X, *, n_threads: int | None = None) -> np.ndarray:
        """Class probabilities (softmax of the outputs).

        Parameters
        ----------
        X : array-like or scipy.sparse matrix of shape (n_samples, n_features)
            float64 input to a float32 model is converted once.
        n_threads : int, optional
            Threads for this call; default the model's ``n_threads``.

        Returns
        -------
        ndarray of shape (n_samples, n_classes)
            Columns in the order of ``classes_``.
        """
        if self.loss == "cross_entropy":  # first: a request's path
            return self._outputs(X, n_threads, softmax=True)
        if self.is_multilabel:  # one sigmoid per label
            return expit(self._outputs(X, n_threads, softmax=False))
        instead = "predict" if self.is_regressor else "decision_function"
        raise ValueError(
            "predict_proba needs a cross-entropy classifier; this model was trained with "
            f"loss={self.loss!r}: use {instead} for its outputs."
        )

    def decision_function(self, X, *, n_threads: int | None = None) -> np.ndarray:
        """Raw outputs of the last layer (logits for cross-entropy models).

        Returns
        -------
        ndarray of shape (n_samples, n_outputs)
        """
        return self._outputs(X, n_threads, softmax=False)

    def predict(self, X, *, n_threads: int | None = None) -> np.ndarray:
        """Predicted class labels, or for a regressor the predicted targets.

        Returns
        -------
        ndarray of shape (n_samples,) or (n_samples, n_outputs)
            Labels from ``classes_``. A regressor returns its outputs, 1-D when it has
            one output (as scikit-learn does).
        """
        out = self._outputs(X, n_threads, softmax=False)
        if self.is_regressor:
            out = self._inverse_link(out)
            return out.ravel() if out.shape[1] == 1 else out
        if self.is_multilabel:  # probability above 0.5: logit above 0
            return (out > 0).astype(np.int64)
        return self.classes_[out.argmax(axis=1)]

    def _inverse_link(self, out: np.ndarray) -> np.ndarray:
        """A regressor's predictions from its outputs: exp for the Poisson loss's log link
        (in place), else the outputs themselves."""
        if self.loss == "poisson":
            with np.errstate(over="ignore"):
                np.exp(out, out=out)
        return out

    def score(self, X, y, sample_weight=None) -> float:
        """Mean accuracy on (X, y); for a regressor the coefficient of determination R^2.

        Labels the model does not know raise a ValueError rather than counting as wrong.
        R^2 is averaged over the outputs with equal weight, as scikit-learn's ``r2_score``.
        """
        X = check_X(X, self.dtype, self.layer_sizes[0], accept_sparse=True)
        w = check_sample_weight(sample_weight, X.shape[0], np.dtype(np.float64))
        out = self._outputs(X, None, softmax=False)
        if self.is_regressor:
            out = self._inverse_link(out)
            Y = check_targets(y, X.shape[0], np.dtype(np.float64), out.shape[1])
            return r2_score(Y, out, w)
        if self.is_multilabel:  # subset accuracy, as scikit-learn's for multilabel
            Y = check_multilabel(y, X.shape[0], self.dtype, out.shape[1])
            return float(np.average(np.all((out > 0) == (Y > 0.5), axis=1), weights=w))
        codes = encode_labels(check_labels(y, X.shape[0]), self.classes_)
        return float(np.average(out.argmax(axis=1) == codes, weights=w))

    def loss_and_gradients(
        self,
        X,
        y,
        *,
        sample_weight=None,
        l2: float = 0.0,
        label_smoothing: float = 0.0,
        n_threads: int | None = None,
    ) -> tuple:
        """Objective and gradient of every parameter, computed by the fast kernels.

        The objective is the weighted mean loss over (X, y) plus ``0.5 * l2 * sum W^2``
        (weights, not biases); ``label_smoothing`` smooths the cross-entropy's targets (see
        :func:`fastmlp.train`). Use a float64 model for exact checks. ``y`` holds labels,
        or a regressor's targets.

        Returns
        -------
        loss : float
        dW : list of ndarray
            Same shapes as :attr:`weights`.
        db : list of ndarray
            Same shapes as :attr:`biases`.
        dnorm : list of (ndarray, ndarray)
            Only with normalization: each hidden layer's normalization gradient
            ``(d gamma, d beta)``, as :attr:`norm_weights` and :attr:`norm_biases`.

        Notes
        -----
        With ``normalization="batch"`` this is the training-mode objective: BatchNorm
        normalizes with the statistics of the rows of X (at least 2; sample weights do not
        weight them), as one mini-batch of all of them would. The running statistics are
        left alone.
        """
        X = check_X(X, self.dtype, self.layer_sizes[0], accept_sparse=True)
        codes, targets = self._encode_y(y, X.shape[0])
        w = check_sample_weight(sample_weight, X.shape[0], self.dtype)
        l2 = check_float(l2, "l2", 0.0, float("inf"))
        label_smoothing = check_label_smoothing(label_smoothing, self.loss)
        threads = effective_n_threads(self.n_threads if n_threads is None else n_threads)
        trainer = Trainer(
            self._network,
            X,
            codes if targets is None else targets,
            w,
            batch_size=X.shape[0],
            n_threads=threads,
            l2=l2,
            label_smoothing=label_smoothing,
        )
        with blas_guard():
            value = trainer.gradient()
        grads = trainer.grads
        s = self.layer_sizes
        slices = self._network.slices()
        dW = [grads[a:b].reshape(s[i], s[i + 1]) for i, (a, b) in enumerate(slices)]
        db = [grads[b : b + s[i + 1]] for i, (_, b) in enumerate(slices)]
        if self.normalization is not None:
            dnorm = [(grads[g : g + n], grads[g + n : g + 2 * n]) for g, n in self._norms()]
            return float(value), dW, db, dnorm
        return float(value), dW, db

    def _encode_y(self, y, n_samples: int, name: str = "y"):
        """``(label codes, None)`` for a classifier, ``(None, targets)`` for a regressor."""
        if self.is_regressor:
            targets = check_targets(y, n_samples, self.dtype, self.layer_sizes[-1], name)
            return None, check_loss_targets(self.loss, targets, name)
        if self.is_multilabel:
            return None, check_multilabel(y, n_samples, self.dtype, self.layer_sizes[-1], name)
        return encode_labels(check_labels(y, n_samples, name), self.classes_, name), None

    # -- training, saving -------------------------------------------------------------
    def fit_more(self, X, y, **options) -> MLP:
        """Continue training this model, keeping the optimizer's state (Adam's moments).

        Takes the keyword arguments of :func:`fastmlp.train`; those of the architecture
        (``hidden``, ``activation``, ``dtype``, ...) must match this model, as for its
        ``init``. The history grows by the new epochs. Returns the model itself.
        """
        from fastmlp.training import train

        return train(X, y, init=self, **options)

    def save(self, path: str | PathLike, *, optimizer_state: bool = True) -> None:
        """Write the model to one ``.npz`` file, atomically (see :func:`fastmlp.save`)."""
        from fastmlp.persistence import save

        save(self, path, optimizer_state=optimizer_state)

    def to_onnx(self, path: str | PathLike) -> None:
        """Write the model as an ONNX graph (see :func:`fastmlp.export.to_onnx`)."""
        from fastmlp.export import to_onnx

        to_onnx(self, path)

    def to_c(self, directory: str | PathLike, name: str = "model") -> tuple[str, str]:
        """Write the model as standalone C99, ``name.h`` and ``name.c`` in ``directory``.

        See :func:`fastmlp.export_c.to_c`; returns the two paths written.
        """
        from fastmlp.export_c import to_c

        return to_c(self, directory, name)

    def __getstate__(self) -> dict:
        # Small and pickle-free inside: the parameters and what describes them. The
        # optimizer's moments are left out (they would triple the size).
        return {
            "layer_sizes": self.layer_sizes,
            "classes": self.classes_,
            "activation": self.activation,
            "loss": self.loss,
            "output_activation": self.output_activation,
            "dtype": self.dtype.str,
            "params": self.params_,
            "n_threads": self.n_threads,
            "history": self.history,
            "delta": self.delta,
            "normalization": self.normalization,
            "running_stats": self._network.stats,
        }

    def __setstate__(self, state: dict) -> None:
        self.__init__(
            state["layer_sizes"],
            state["classes"],
            activation=state["activation"],
            loss=state["loss"],
            output_activation=state["output_activation"],
            dtype=np.dtype(state["dtype"]),
            params=state["params"],
            n_threads=state["n_threads"],
            delta=state.get("delta", 1.0),  # pickles of fastmlp before Huber lack it
            normalization=state.get("normalization"),  # and before LayerNorm
        )
        if "running_stats" in state:  # and before BatchNorm
            self._set_running_stats(state["running_stats"])
        self.history = state["history"]

    def __repr__(self) -> str:
        arch = "-".join(map(str, self.layer_sizes))
        norm = f", normalization={self.normalization!r}" if self.normalization else ""
        return (
            f"MLP({arch}, activation={self.activation!r}, loss={self.loss!r}{norm}, "
            f"dtype={self.dtype})"
        )


def check_activation(activation, n_hidden: int) -> str | tuple[str, ...]:
    """One hidden activation name, or a tuple of one per hidden layer; else ValueError."""
    if isinstance(activation, str):
        if activation not in HIDDEN_ACTIVATIONS:
            raise ValueError(f"activation must be one of {HIDDEN_ACTIVATIONS}; got {activation!r}")
        return activation
    if not isinstance(activation, (list, tuple)):
        raise ValueError(
            f"activation must be a name from {HIDDEN_ACTIVATIONS} or a list of one per hidden "
            f"layer; got {activation!r}"
        )
    if len(activation) != n_hidden:
        raise ValueError(
            f"activation lists {len(activation)} names but the network has {n_hidden} hidden "
            f"layers: give exactly {n_hidden}, one per hidden layer, or a single name for all"
        )
    bad = [a for a in activation if not isinstance(a, str) or a not in HIDDEN_ACTIVATIONS]
    if bad:
        raise ValueError(f"activation names must be from {HIDDEN_ACTIVATIONS}; got {bad[0]!r}")
    return tuple(activation)


def check_multilabel(
    y, n_samples: int, dtype: np.dtype, n_labels: int | None = None, name: str = "y"
) -> np.ndarray:
    """A multilabel indicator matrix (n_samples, n_labels) of 0 and 1, as a C-contiguous
    array of ``dtype``; else a ValueError saying what is wrong."""
    arr = np.asarray(y)
    if arr.ndim != 2 or arr.shape[0] != n_samples:
        raise ValueError(
            f"a multilabel {name} is a 2-D indicator matrix (n_samples={n_samples}, n_labels); "
            f"got shape {arr.shape}"
        )
    if n_labels is not None and arr.shape[1] != n_labels:
        raise ValueError(f"{name} has {arr.shape[1]} labels but the model has {n_labels}")
    if arr.shape[1] < 2:
        raise ValueError(
            f"a multilabel {name} needs 2 label columns or more; got {arr.shape[1]}. For one "
            f"label per sample pass a 1-D {name} ({name}.ravel())."
        )
    if arr.dtype.kind not in "biuf":
        raise ValueError(f"a multilabel {name} holds 0 or 1 per label; got dtype {arr.dtype}")
    bad = (arr != 0) & (arr != 1)
    if bad.any():
        raise ValueError(
            f"a multilabel {name} holds only 0 and 1 (one column per label); got "
            f"{arr[bad].flat[0].item()!r}. For one label per sample pass a 1-D y."
        )
    return np.require(arr, dtype, ["C", "A"])


def check_loss_targets(loss: str, targets: np.ndarray, name: str = "y") -> np.ndarray:
    """``targets`` (checked by check_targets), refused where ``loss`` cannot take them."""
    if loss == "poisson" and (targets < 0).any():
        raise ValueError(
            f"{name} holds negative values; loss='poisson' models counts or rates, which are "
            ">= 0 (for targets of any sign use 'squared_error' or 'huber')"
        )
    return targets


def check_label_smoothing(value, loss: str) -> float:
    """``value`` as a float in [0, 1), refused (unless 0) for losses other than
    cross-entropy."""
    value = check_float(value, "label_smoothing", 0.0, 1.0)
    if value and loss != "cross_entropy":
        raise ValueError(
            f"label_smoothing smooths the targets of loss='cross_entropy'; this model's loss "
            f"is {loss!r}: leave label_smoothing at 0"
        )
    return value


def r2_score(Y: np.ndarray, pred: np.ndarray, sample_weight: np.ndarray | None) -> float:
    """Coefficient of determination, averaged over outputs (scikit-learn's convention).

    An output whose targets are constant scores 1 if predicted exactly, else 0.
    """
    w = np.ones(Y.shape[0]) if sample_weight is None else sample_weight
    mean = np.average(Y, axis=0, weights=w)
    residual = w @ (Y - pred) ** 2
    total = w @ (Y - mean) ** 2
    with np.errstate(divide="ignore", invalid="ignore"):
        per_output = np.where(total > 0, 1 - residual / total, np.where(residual > 0, 0.0, 1.0))
    return float(per_output.mean())


def fold_batch_norm(W, b, gamma, beta, running_mean, running_var):
    """``(W', b')`` in float64 with ``x W' + b' == batch_norm_eval(x W + b)``: inference
    BatchNorm is one affine map per unit, so W's columns scale by
    ``gamma / sqrt(running_var + eps)`` and the bias shifts to match (the C export and
    int8 quantization use it)."""
    scale = np.asarray(gamma, np.float64) / np.sqrt(np.asarray(running_var, np.float64) + NORM_EPS)
    folded_b = (np.asarray(b, np.float64) - running_mean) * scale + beta
    return np.asarray(W, np.float64) * scale, folded_b
