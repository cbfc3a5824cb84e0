"""The NumPy reference: every kernel and a whole training step, written to be read.

This module is the specification of fastmlp. The fast path (``csrc/`` and the Cython
modules) is tested against these functions, and the benchmarks race them. Nothing here is
tuned for speed; each function does the textbook computation in the order a reader would
write it down.

Conventions: a layer computes ``Z = A_prev @ W + b`` with ``W`` of shape
``(fan_in, fan_out)``; activations are taken row-wise; labels are integers in ``[0, k)``.
A network is a list of weights, a list of biases and one activation name per layer (the
output layer's is ``"identity"`` for cross-entropy, whose softmax lives in the loss).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

ACTIVATIONS = ("identity", "relu", "tanh", "sigmoid")
NORM_EPS = 1e-5  # LayerNorm's and BatchNorm's eps, PyTorch's default
BN_MOMENTUM = 0.1  # BatchNorm's running statistics, torch.nn.BatchNorm1d's default


def activate(Z: np.ndarray, activation: str) -> np.ndarray:
    """Apply an activation element-wise.

    Parameters
    ----------
    Z : ndarray
        Pre-activations.
    activation : {"identity", "relu", "tanh", "sigmoid"}
        The activation.

    Returns
    -------
    ndarray
        The activations, a new array.
    """
    if activation == "relu":
        return np.maximum(Z, 0)
    if activation == "tanh":
        return np.tanh(Z)
    if activation == "sigmoid":
        with np.errstate(over="ignore"):
            return 1 / (1 + np.exp(-Z))
    if activation == "identity":
        return Z.copy()
    raise ValueError(f"unknown activation {activation!r}")


def activation_derivative(A: np.ndarray, activation: str) -> np.ndarray:
    """Derivative of an activation, written in terms of its output ``A = act(Z)``.

    Parameters
    ----------
    A : ndarray
        Activations (outputs of the activation).
    activation : str
        The activation.

    Returns
    -------
    ndarray
        ``d act / d Z`` at each element.
    """
    if activation == "relu":
        return (A > 0).astype(A.dtype)
    if activation == "tanh":
        return 1 - A * A
    if activation == "sigmoid":
        return A * (1 - A)
    if activation == "identity":
        return np.ones_like(A)
    raise ValueError(f"unknown activation {activation!r}")


def bias_act(Z: np.ndarray, b: np.ndarray, activation: str) -> np.ndarray:
    """``act(Z + b)``: the bias add and activation of a dense layer."""
    return activate(Z + b, activation)


def act_backward(
    A: np.ndarray, dA: np.ndarray, activation: str, mask: np.ndarray | None = None
) -> np.ndarray:
    """Gradient with respect to the pre-activation: ``dA * mask * act'(Z)``."""
    if mask is not None:
        dA = dA * mask
    return dA * activation_derivative(A, activation)


def softmax(Z: np.ndarray) -> np.ndarray:
    """Row-wise softmax, shifted by the row maximum so that exp never overflows."""
    E = np.exp(Z - Z.max(axis=1, keepdims=True))
    return E / E.sum(axis=1, keepdims=True)


def _weights(n: int, sample_weight: np.ndarray | None, dtype) -> np.ndarray:
    return np.ones(n, dtype) if sample_weight is None else np.asarray(sample_weight, dtype)


def softmax_cross_entropy(
    Z: np.ndarray,
    y: np.ndarray,
    sample_weight: np.ndarray | None = None,
    scale: float = 1.0,
    label_smoothing: float = 0.0,
) -> tuple[float, int, np.ndarray]:
    """Softmax + cross-entropy of logits Z against labels y.

    With ``label_smoothing = s`` the target of row i is ``q_i = (1 - s) onehot(y_i) + s / k``
    (torch.nn.CrossEntropyLoss's label smoothing); without, ``q_i = onehot(y_i)``.

    Returns
    -------
    loss_sum : float
        ``sum_i w_i * -sum_j q_ij log softmax(Z)_ij``, computed from log-sum-exp so that
        logits of 1e4 stay finite.
    n_correct : int
        Rows whose arg-max is the label.
    dZ : ndarray
        ``scale * w_i * (softmax(Z) - q_i)``, the gradient of ``scale * loss_sum``.
    """
    n, k = Z.shape
    w = _weights(n, sample_weight, Z.dtype)
    shifted = Z - Z.max(axis=1, keepdims=True)
    log_p = shifted - np.log(np.exp(shifted).sum(axis=1))[:, None]
    rows = np.arange(n)
    q = np.full(Z.shape, label_smoothing / k)
    q[rows, y] += 1 - label_smoothing
    loss = float(np.sum(w.astype(np.float64) * -(q * log_p).sum(axis=1)))
    dZ = softmax(Z) - q
    dZ *= (scale * w)[:, None]
    return loss, int(np.sum(Z.argmax(axis=1) == y)), dZ.astype(Z.dtype)


def sigmoid_cross_entropy(
    Z: np.ndarray,
    Y: np.ndarray,
    sample_weight: np.ndarray | None = None,
    scale: float = 1.0,
) -> tuple[float, int, np.ndarray]:
    """Multilabel loss: a sigmoid and binary cross-entropy per label, summed over labels.

    Returns
    -------
    loss_sum : float
        ``sum_i w_i sum_j -(Y log p + (1 - Y) log(1 - p))``, ``p = sigmoid(Z)``, computed
        as ``logaddexp(0, Z) - Y Z`` so that any logit stays finite.
    n_correct : int
        Rows whose every label is predicted right (``Z > 0`` exactly where ``Y`` is 1).
    dZ : ndarray
        ``scale * w_i * (p - Y)``.
    """
    n = Z.shape[0]
    w = _weights(n, sample_weight, Z.dtype)
    per = np.logaddexp(0, Z) - Y * Z
    loss = float(np.sum(w.astype(np.float64) * per.sum(axis=1)))
    correct = int(np.sum(np.all((Z > 0) == (Y > 0.5), axis=1)))
    p = activate(Z, "sigmoid")
    return loss, correct, (scale * w)[:, None] * (p - Y)


def mse(
    A: np.ndarray,
    y: np.ndarray,
    sample_weight: np.ndarray | None = None,
    scale: float = 1.0,
) -> tuple[float, int, np.ndarray]:
    """Half squared error of outputs A against one-hot targets.

    Returns ``(sum_i w_i * 0.5 * |A_i - onehot(y_i)|^2, n_correct, scale * w * (A - T))``.
    """
    n, k = A.shape
    w = _weights(n, sample_weight, A.dtype)
    T = np.eye(k, dtype=A.dtype)[y]
    diff = A - T
    loss = float(np.sum(w.astype(np.float64) * 0.5 * np.sum(diff * diff, axis=1)))
    return loss, int(np.sum(A.argmax(axis=1) == y)), (scale * w)[:, None] * diff


def squared_error(
    A: np.ndarray,
    Y: np.ndarray,
    sample_weight: np.ndarray | None = None,
    scale: float = 1.0,
) -> tuple[float, np.ndarray]:
    """Half squared error of outputs A against real targets Y, averaged over the k outputs.

    Returns ``(sum_i w_i * 0.5 * |A_i - Y_i|^2 / k, scale * w * (A - Y) / k)``: the loss of
    a regression network (scikit-learn's ``squared_error``) and its gradient.
    """
    n, k = A.shape
    w = _weights(n, sample_weight, A.dtype)
    diff = A - Y
    loss = float(np.sum(w.astype(np.float64) * 0.5 * np.sum(diff * diff, axis=1) / k))
    return loss, (scale * w / k)[:, None] * diff


def huber(
    A: np.ndarray,
    Y: np.ndarray,
    sample_weight: np.ndarray | None = None,
    scale: float = 1.0,
    delta: float = 1.0,
) -> tuple[float, np.ndarray]:
    """Huber loss of outputs A against targets Y (torch.nn.HuberLoss), averaged over the k
    outputs: ``0.5 d^2`` where ``|d| < delta``, else ``delta * (|d| - delta / 2)``, for
    ``d = A - Y``. Returns the weighted sum over rows and ``scale * w * clip(d, -delta,
    delta) / k``."""
    n, k = A.shape
    w = _weights(n, sample_weight, A.dtype)
    d = A - Y
    quadratic = np.abs(d) < delta
    per = np.where(quadratic, 0.5 * d * d, delta * (np.abs(d) - 0.5 * delta))
    loss = float(np.sum(w.astype(np.float64) * per.sum(axis=1) / k))
    return loss, (scale * w / k)[:, None] * np.clip(d, -delta, delta)


def absolute_error(
    A: np.ndarray,
    Y: np.ndarray,
    sample_weight: np.ndarray | None = None,
    scale: float = 1.0,
) -> tuple[float, np.ndarray]:
    """Absolute error ``|A - Y|`` averaged over the k outputs (torch.nn.L1Loss); the
    gradient is the subgradient ``scale * w * sign(A - Y) / k``, 0 where A == Y."""
    n, k = A.shape
    w = _weights(n, sample_weight, A.dtype)
    d = A - Y
    loss = float(np.sum(w.astype(np.float64) * np.abs(d).sum(axis=1) / k))
    return loss, (scale * w / k)[:, None] * np.sign(d)


def poisson(
    A: np.ndarray,
    Y: np.ndarray,
    sample_weight: np.ndarray | None = None,
    scale: float = 1.0,
) -> tuple[float, np.ndarray]:
    """Poisson negative log-likelihood with the log link (torch.nn.PoissonNLLLoss with
    log_input=True, full=False): the output A is the log of the mean, the loss
    ``exp(A) - Y * A`` (the log(Y!) constant left out), averaged over the k outputs.
    Returns its weighted sum over rows and ``scale * w * (exp(A) - Y) / k``."""
    n, k = A.shape
    w = _weights(n, sample_weight, A.dtype)
    mean = np.exp(A)
    loss = float(np.sum(w.astype(np.float64) * (mean - Y * A).sum(axis=1) / k))
    return loss, (scale * w / k)[:, None] * (mean - Y)


def col_sum(dZ: np.ndarray) -> np.ndarray:
    """Bias gradient: the column sums of dZ."""
    return dZ.sum(axis=0)


def layer_norm(
    Z: np.ndarray, gamma: np.ndarray, beta: np.ndarray, eps: float, activation: str
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """LayerNorm of each row (torch.nn.LayerNorm: biased variance, eps inside the root),
    scaled and shifted, then the activation.

    Returns ``(act(gamma * zhat + beta), zhat, rstd)``: the normalized rows
    ``zhat = (z - mean) * rstd`` and ``rstd = 1 / sqrt(var + eps)`` per row, which the
    backward pass reuses.
    """
    mean = Z.mean(axis=1, keepdims=True)
    rstd = 1 / np.sqrt(((Z - mean) ** 2).mean(axis=1, keepdims=True) + eps)
    zhat = (Z - mean) * rstd
    return activate(gamma * zhat + beta, activation), zhat, rstd[:, 0]


def layer_norm_backward(
    dY: np.ndarray, zhat: np.ndarray, rstd: np.ndarray, gamma: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Gradients through LayerNorm from ``dY``, that of its output ``gamma * zhat + beta``.

    Returns ``(dZ, dgamma, dbeta)``. With ``g = gamma * dY``, the gradient of the
    normalization is ``rstd * (g - mean(g) - zhat * mean(g * zhat))`` per row.
    """
    g = gamma * dY
    dZ = rstd[:, None] * (
        g - g.mean(axis=1, keepdims=True) - zhat * (g * zhat).mean(axis=1, keepdims=True)
    )
    return dZ, (dY * zhat).sum(axis=0), dY.sum(axis=0)


def batch_norm(
    Z: np.ndarray, gamma: np.ndarray, beta: np.ndarray, eps: float, activation: str
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """BatchNorm in training mode (torch.nn.BatchNorm1d): each column normalized with the
    batch's mean and biased variance, eps inside the root; scaled, shifted, activated.

    Returns ``(act(gamma * zhat + beta), zhat, rstd, mean, var)``, per column ``rstd =
    1 / sqrt(var + eps)`` and the batch ``mean`` and biased ``var``.
    """
    mean = Z.mean(axis=0)
    var = ((Z - mean) ** 2).mean(axis=0)
    rstd = 1 / np.sqrt(var + eps)
    zhat = (Z - mean) * rstd
    return activate(gamma * zhat + beta, activation), zhat, rstd, mean, var


def batch_norm_eval(
    Z: np.ndarray,
    gamma: np.ndarray,
    beta: np.ndarray,
    running_mean: np.ndarray,
    running_var: np.ndarray,
    eps: float,
    activation: str,
) -> np.ndarray:
    """BatchNorm at inference: the running statistics instead of the batch's."""
    zhat = (Z - running_mean) / np.sqrt(running_var + eps)
    return activate(gamma * zhat + beta, activation)


def batch_norm_backward(
    dY: np.ndarray, zhat: np.ndarray, rstd: np.ndarray, gamma: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Gradients through training-mode BatchNorm from ``dY``, that of its output
    ``gamma * zhat + beta``. Returns ``(dZ, dgamma, dbeta)``: the batch statistics depend
    on every row, so ``dZ = gamma * rstd * (dY - mean(dY) - zhat * mean(dY * zhat))``
    with the means over the batch (columns)."""
    dgamma = (dY * zhat).sum(axis=0)
    dbeta = dY.sum(axis=0)
    n = dY.shape[0]
    dZ = gamma * rstd * (dY - dbeta / n - zhat * dgamma / n)
    return dZ, dgamma, dbeta


def update_running_stats(
    running_mean: np.ndarray,
    running_var: np.ndarray,
    mean: np.ndarray,
    var: np.ndarray,
    n: int,
    momentum: float = BN_MOMENTUM,
) -> None:
    """PyTorch's running statistics, in place: ``(1 - momentum) * running + momentum *
    batch``, with the unbiased batch variance ``var * n / (n - 1)``."""
    running_mean[...] = (1 - momentum) * running_mean + momentum * mean
    running_var[...] = (1 - momentum) * running_var + momentum * var * (n / (n - 1))


def adam(p, g, m, v, lr, beta1, beta2, eps, t):
    """One Adam step with bias correction (Kingma & Ba 2015, Algorithm 1).

    Returns the new ``(p, m, v)``; t counts steps from 1.
    """
    m = beta1 * m + (1 - beta1) * g
    v = beta2 * v + (1 - beta2) * g * g
    m_hat = m / (1 - beta1**t)
    v_hat = v / (1 - beta2**t)
    return p - lr * m_hat / (np.sqrt(v_hat) + eps), m, v


def adamw(p, g, m, v, lr, beta1, beta2, eps, t, weight_decay):
    """One AdamW step (Loshchilov & Hutter 2019), in torch.optim.AdamW's order: the
    decoupled decay ``p * (1 - lr * weight_decay)`` first, then the Adam step of the loss
    gradient alone. Returns the new ``(p, m, v)``."""
    p = p * (1 - lr * weight_decay)
    return adam(p, g, m, v, lr, beta1, beta2, eps, t)


def sgd(p, g, velocity, lr, momentum):
    """One step of SGD with momentum (torch convention). Returns ``(p, velocity)``."""
    velocity = momentum * velocity + g
    return p - lr * velocity, velocity


def forward(
    weights: Sequence[np.ndarray],
    biases: Sequence[np.ndarray],
    X: np.ndarray,
    activations: Sequence[str],
    masks: Sequence[np.ndarray | None] | None = None,
    norms: Sequence[tuple[np.ndarray, np.ndarray]] | None = None,
    normalization: str = "layer",
    running: Sequence[tuple[np.ndarray, np.ndarray]] | None = None,
) -> list[np.ndarray]:
    """Forward pass; returns ``[A_0 = X, A_1, ..., A_L]``.

    ``masks[l]`` (optional) is the inverted-dropout mask multiplied into the output of
    hidden layer ``l + 1``; the returned list holds the activations *before* dropout.
    ``norms[l]`` (optional) is ``(gamma, beta)`` of the normalization between hidden layer
    ``l + 1``'s Linear part and its activation: a LayerNorm, or with ``normalization=
    "batch"`` a BatchNorm, in training mode (the statistics of the rows of X) or, given
    ``running[l] = (running_mean, running_var)``, in inference mode.
    """
    return _forward(weights, biases, X, activations, masks, norms, normalization, running)[0]


def _forward(weights, biases, X, activations, masks, norms, normalization="layer", running=None):
    """:func:`forward`, and per hidden layer what the normalization's backward pass needs:
    LayerNorm's ``(zhat, rstd)``, training BatchNorm's ``(zhat, rstd, mean, var)`` (or
    None)."""
    A = [X]
    saved: list[tuple | None] = []
    inp = X
    for layer, (W, b, act) in enumerate(zip(weights, biases, activations)):
        hidden = layer < len(weights) - 1
        if norms is not None and hidden and normalization == "batch":
            gamma, beta = norms[layer]
            if running is not None:
                out = batch_norm_eval(inp @ W + b, gamma, beta, *running[layer], NORM_EPS, act)
                saved.append(None)
            else:
                out, *stats = batch_norm(inp @ W + b, gamma, beta, NORM_EPS, act)
                saved.append(tuple(stats))
        elif norms is not None and hidden:
            gamma, beta = norms[layer]
            out, zhat, rstd = layer_norm(inp @ W + b, gamma, beta, NORM_EPS, act)
            saved.append((zhat, rstd))
        else:
            out = bias_act(inp @ W, b, act)
            saved.append(None)
        A.append(out)
        mask = masks[layer] if masks is not None and hidden else None
        inp = out if mask is None else out * mask
    return A, saved


def loss_and_gradients(
    weights: Sequence[np.ndarray],
    biases: Sequence[np.ndarray],
    X: np.ndarray,
    y: np.ndarray,
    activations: Sequence[str],
    loss: str = "cross_entropy",
    l2: float = 0.0,
    sample_weight: np.ndarray | None = None,
    masks: Sequence[np.ndarray | None] | None = None,
    label_smoothing: float = 0.0,
    delta: float = 1.0,
    norms: Sequence[tuple[np.ndarray, np.ndarray]] | None = None,
    normalization: str = "layer",
    running: Sequence[tuple[np.ndarray, np.ndarray]] | None = None,
) -> tuple:
    """Objective and its gradient by backpropagation.

    With ``norms`` and ``normalization="batch"``, BatchNorm runs in training mode: its
    statistics are those of the rows of X (unweighted), so every row's output depends on
    all rows. Given ``running`` (a list of ``(running_mean, running_var)``), those are
    updated in place once from the batch statistics (:func:`update_running_stats`).

    The objective is the weighted mean of the per-sample losses,
    ``sum_i w_i L_i / sum_i w_i``, plus ``0.5 * l2 * sum ||W||^2`` over the weights (not
    the biases).
    ``y`` holds integer labels in [0, k), or with a regression loss the real
    targets, shape (n, k).

    Returns
    -------
    loss : float
    dW : list of ndarray
        Gradients of the weights, shapes as the weights.
    db : list of ndarray
        Gradients of the biases.
    dnorms : list of (ndarray, ndarray)
        Only with ``norms``: the gradients of each normalization's ``(gamma, beta)``.
    """
    n = X.shape[0]
    w = _weights(n, sample_weight, X.dtype)
    scale = 1.0 / float(w.astype(np.float64).sum())
    A, saved = _forward(weights, biases, X, activations, masks, norms, normalization)
    if running is not None:
        for (run_mean, run_var), (_, _, mean, var) in zip(running, saved):
            update_running_stats(run_mean, run_var, mean, var, n)
    L = len(weights)
    if loss == "cross_entropy":
        total, _, dZ = softmax_cross_entropy(A[L], y, w, scale, label_smoothing)
    elif loss == "binary_cross_entropy":
        total, _, dZ = sigmoid_cross_entropy(A[L], y, w, scale)
    elif loss == "mse":
        total, _, dA = mse(A[L], y, w, scale)
        dZ = act_backward(A[L], dA, activations[L - 1])
    elif loss in ("squared_error", "huber", "absolute_error", "poisson"):
        if loss == "huber":
            total, dA = huber(A[L], y, w, scale, delta)
        elif loss == "absolute_error":
            total, dA = absolute_error(A[L], y, w, scale)
        elif loss == "poisson":
            total, dA = poisson(A[L], y, w, scale)
        else:
            total, dA = squared_error(A[L], y, w, scale)
        dZ = act_backward(A[L], dA, activations[L - 1])
    else:
        raise ValueError(f"unknown loss {loss!r}")
    dW: list[np.ndarray] = [np.empty(0)] * L
    db: list[np.ndarray] = [np.empty(0)] * L
    dnorms: list = [None] * (L - 1)
    for layer in range(L - 1, -1, -1):
        mask = masks[layer - 1] if masks is not None and layer > 0 else None
        inp = A[layer] if mask is None else A[layer] * mask
        dW[layer] = inp.T @ dZ + l2 * weights[layer]
        db[layer] = col_sum(dZ)
        if layer > 0:
            dZ = act_backward(A[layer], dZ @ weights[layer].T, activations[layer - 1], mask)
            if norms is not None:
                zhat, rstd = saved[layer - 1][:2]
                backward = batch_norm_backward if normalization == "batch" else layer_norm_backward
                dZ, dgamma, dbeta = backward(dZ, zhat, rstd, norms[layer - 1][0])
                dnorms[layer - 1] = (dgamma, dbeta)
    penalty = 0.5 * l2 * sum(float(np.sum(W.astype(np.float64) ** 2)) for W in weights)
    if norms is not None:
        return total * scale + penalty, dW, db, dnorms
    return total * scale + penalty, dW, db


def train_step(
    weights: list[np.ndarray],
    biases: list[np.ndarray],
    state: dict,
    X: np.ndarray,
    y: np.ndarray,
    activations: Sequence[str],
    *,
    loss: str = "cross_entropy",
    optimizer: str = "adam",
    lr: float = 1e-3,
    betas: tuple[float, float] = (0.9, 0.999),
    eps: float = 1e-8,
    momentum: float = 0.9,
    weight_decay: float = 0.0,
    l2: float = 0.0,
    sample_weight: np.ndarray | None = None,
    masks: Sequence[np.ndarray | None] | None = None,
    label_smoothing: float = 0.0,
    delta: float = 1.0,
    norms: Sequence[tuple[np.ndarray, np.ndarray]] | None = None,
    normalization: str = "layer",
    running: Sequence[tuple[np.ndarray, np.ndarray]] | None = None,
) -> float:
    """One mini-batch step, updating ``weights``, ``biases`` (and the normalization's
    ``norms``, and BatchNorm's ``running`` statistics) and ``state`` in place.

    ``state`` holds the optimizer's memory: ``{"t": steps so far, "m": [...], "v": [...]}``
    for Adam (moments per parameter: per layer the weights, the bias, and with ``norms``
    a hidden layer's gamma and beta) or ``{"velocity": [...]}`` for SGD; missing entries
    start at zero. ``optimizer="adamw"`` is Adam with the decoupled ``weight_decay`` of
    every parameter.

    Returns
    -------
    float
        The mini-batch objective before the update.
    """
    value, dW, db, *dnorms = loss_and_gradients(
        weights,
        biases,
        X,
        y,
        activations,
        loss=loss,
        l2=l2,
        sample_weight=sample_weight,
        masks=masks,
        label_smoothing=label_smoothing,
        delta=delta,
        norms=norms,
        normalization=normalization,
        running=running,
    )
    params: list[np.ndarray] = []
    grads: list[np.ndarray] = []
    for layer in range(len(weights)):
        params += [weights[layer], biases[layer]]
        grads += [dW[layer], db[layer]]
        if norms is not None and layer < len(weights) - 1:
            params += list(norms[layer])
            grads += list(dnorms[0][layer])
    zeros = [np.zeros_like(p) for p in params]
    if optimizer in ("adam", "adamw"):
        state["t"] = state.get("t", 0) + 1
        m, v = state.setdefault("m", zeros), state.setdefault("v", list(zeros))
        wd = weight_decay if optimizer == "adamw" else 0.0
        for i, (p, g) in enumerate(zip(params, grads)):
            new_p, m[i], v[i] = adamw(
                p, g, m[i], v[i], lr, betas[0], betas[1], eps, state["t"], wd
            )
            p[...] = new_p
    elif optimizer == "sgd":
        vel = state.setdefault("velocity", zeros)
        for i, (p, g) in enumerate(zip(params, grads)):
            new_p, vel[i] = sgd(p, g, vel[i], lr, momentum)
            p[...] = new_p
    else:
        raise ValueError(f"unknown optimizer {optimizer!r}")
    return value


def train_epoch(
    weights: list[np.ndarray],
    biases: list[np.ndarray],
    state: dict,
    X: np.ndarray,
    y: np.ndarray,
    activations: Sequence[str],
    batch_size: int,
    order: np.ndarray | None = None,
    **step_options,
) -> float:
    """One epoch of mini-batch training over ``X[order]``; returns the mean batch loss."""
    order = np.arange(X.shape[0]) if order is None else order
    losses = []
    for start in range(0, len(order), batch_size):
        idx = order[start : start + batch_size]
        losses.append(
            train_step(weights, biases, state, X[idx], y[idx], activations, **step_options)
        )
    return float(np.mean(losses))


def csr_matmul(
    indptr: np.ndarray,
    indices: np.ndarray,
    data: np.ndarray,
    W: np.ndarray,
    rows: np.ndarray | None = None,
) -> np.ndarray:
    """The sparse first layer's product ``X[rows] @ W`` for a CSR ``X``.

    Row ``i`` of X holds ``data[indptr[i]:indptr[i + 1]]`` in the columns
    ``indices[indptr[i]:indptr[i + 1]]``; its product with W is the sum, over those
    nonzeros, of value times the row of W of that column. ``forward`` gives the same for
    a ``scipy.sparse`` X, since ``X @ W`` is this product.
    """
    rows = np.arange(len(indptr) - 1) if rows is None else rows
    Z = np.zeros((len(rows), W.shape[1]), dtype=W.dtype)
    for r, i in enumerate(rows):
        for p in range(indptr[i], indptr[i + 1]):
            Z[r] += data[p] * W[indices[p]]
    return Z


def csr_at(
    indptr: np.ndarray,
    indices: np.ndarray,
    data: np.ndarray,
    D: np.ndarray,
    n_features: int,
    rows: np.ndarray | None = None,
) -> np.ndarray:
    """The sparse first layer's weight gradient ``X[rows].T @ D`` for a CSR ``X``.

    Each nonzero ``X[i, c]`` adds ``value * D[r]`` (r: i's place in ``rows``) to row c of
    the gradient; columns with no nonzero in the batch get zero rows.
    """
    rows = np.arange(len(indptr) - 1) if rows is None else rows
    C = np.zeros((n_features, D.shape[1]), dtype=D.dtype)
    for r, i in enumerate(rows):
        for p in range(indptr[i], indptr[i + 1]):
            C[indices[p]] += data[p] * D[r]
    return C


# -- int8 inference (fastmlp.quantize; csrc/fm_int8.h) ------------------------------------
INT8_QMAX = 127  # weights in [-127, 127], activations in [0, 127] (7 bits)


def quantize_weights(W: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Symmetric per-output-channel quantization of ``W`` (fan_in, fan_out).

    Returns ``(W_q, scale)``: int8 ``W_q`` in [-127, 127] and float32 ``scale`` (fan_out,)
    with ``W ~ W_q * scale``; ``scale[j] = max |W[:, j]| / 127`` (1 for a zero column).
    """
    W = np.asarray(W, dtype=np.float64)
    top = np.abs(W).max(axis=0)
    scale = np.where(top > 0, top / INT8_QMAX, 1.0).astype(np.float32)
    W_q = np.clip(np.rint(W / scale.astype(np.float64)), -INT8_QMAX, INT8_QMAX)
    return W_q.astype(np.int8), scale


def quantize_activations(X: np.ndarray, inv: np.float32, zero_point: int = 0) -> np.ndarray:
    """``rint(clip(X * inv, -zero_point, 127 - zero_point)) + zero_point`` as uint8.

    ``X`` and ``inv`` are float32: one float32 product, then the clip and the rounding
    (half to even). With ``zero_point`` 0 this is also the ReLU of a hidden layer.
    """
    v = np.asarray(X, dtype=np.float32) * np.float32(inv)
    v = np.minimum(np.maximum(v, np.float32(-zero_point)), np.float32(INT8_QMAX - zero_point))
    return (np.rint(v).astype(np.int32) + zero_point).astype(np.uint8)


def quantized_forward(
    X: np.ndarray,
    weights_q: Sequence[np.ndarray],
    weight_scales: Sequence[np.ndarray],
    biases: Sequence[np.ndarray],
    input_scales: Sequence[float],
    input_zero_point: int,
) -> np.ndarray:
    """The logits of an int8 model (hidden activations ReLU), in float32.

    Layer ``l`` reads uint8 activations ``q`` with ``x ~ input_scales[l] * (q - zp)`` (``zp``
    is ``input_zero_point`` for the first layer, 0 after ReLU) and computes, exactly in
    integers, ``acc = q @ W_q - zp * W_q.sum(axis=0)``, then in float32 ``y = acc * mult +
    b`` with ``mult = float32(input_scales[l] * weight_scales[l])`` (the product taken in
    float64); a hidden layer requantizes ``y`` with ``inv = float32(1 / input_scales[l+1])``.
    """
    L = len(weights_q)
    q = quantize_activations(X, np.float32(1.0 / np.float64(input_scales[0])), input_zero_point)
    zp = input_zero_point
    for layer in range(L):
        W_q = np.asarray(weights_q[layer], dtype=np.int64)
        acc = q.astype(np.int64) @ W_q - zp * W_q.sum(axis=0)
        assert np.abs(acc).max(initial=0) < 2**31, "int32 overflow"
        mult = (np.float64(input_scales[layer]) * weight_scales[layer].astype(np.float64)).astype(
            np.float32
        )
        y = acc.astype(np.int32).astype(np.float32) * mult + np.asarray(biases[layer], np.float32)
        if layer == L - 1:
            return y
        q = quantize_activations(y, np.float32(1.0 / np.float64(input_scales[layer + 1])), 0)
        zp = 0
    raise ValueError("no layers")
