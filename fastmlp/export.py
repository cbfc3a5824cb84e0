"""Export of a model to ONNX, for runtimes other than fastmlp (needs the ``onnx`` extra).

The graph is the standard one: per layer a ``Gemm`` (weights stored as ``(fan_in,
fan_out)``, so no transpose), with normalization a ``LayerNormalization`` (opset 17) or
an inference-mode ``BatchNormalization`` (its running statistics as inputs) in hidden
layers, and the activation node, then ``Softmax`` over the classes for
cross-entropy models. Input ``X`` is ``(batch, n_features)``; output ``probabilities`` (or
``outputs`` for MSE models and regressors, after an ``Exp`` for the Poisson loss's log
link, so they are what ``predict`` returns). Labels are not part of the graph: map the
arg-max through ``model.classes_``.
"""

from __future__ import annotations

import os
from os import PathLike

import numpy as np

from fastmlp._network import NORM_EPS, all_finite
from fastmlp.model import MLP
from fastmlp.persistence import check_save_path

OPSET = 13  # Softmax over one axis, as the model computes it, is defined from opset 13
OPSET_NORM = 17  # LayerNormalization is defined from opset 17
_NODES = {"relu": "Relu", "tanh": "Tanh", "sigmoid": "Sigmoid"}


def to_onnx(model: MLP, path: str | PathLike[str]) -> None:
    """Write ``model`` as an ONNX graph to ``path`` (atomically).

    Parameters
    ----------
    model : MLP
        The model to export.
    path : str or path-like
        Destination file.

    Raises
    ------
    ImportError
        If the ``onnx`` package is missing (``pip install 'fastmlp[onnx]'``).
    ValueError
        If the model holds NaN or infinite parameters (a graph that answers NaN).
    OSError
        If ``path`` is a directory or its directory does not exist (before any work).
    """
    if not (all_finite(model.params_) and all_finite(model._network.stats)):
        raise ValueError(
            "the model holds NaN or infinite parameters; a model that diverged cannot be exported"
        )
    check_save_path(os.fspath(path))
    try:
        import onnx
        from onnx import TensorProto, helper, numpy_helper
    except ImportError as exc:
        raise ImportError(
            "ONNX export needs the onnx package: pip install 'fastmlp[onnx]'"
        ) from exc

    elem = TensorProto.FLOAT if model.dtype == np.float32 else TensorProto.DOUBLE
    acts = [*model.activations, model.output_activation]
    nodes, inits, current = [], [], "X"
    norms = list(zip(model.norm_weights, model.norm_biases))
    for i, (W, b, act) in enumerate(zip(model.weights, model.biases, acts)):
        inits += [numpy_helper.from_array(W, f"W{i}"), numpy_helper.from_array(b, f"b{i}")]
        nodes.append(helper.make_node("Gemm", [current, f"W{i}", f"b{i}"], [f"z{i}"]))
        current = f"z{i}"
        if i < len(norms):
            gamma, beta = norms[i]
            inits += [
                numpy_helper.from_array(gamma, f"g{i}"),
                numpy_helper.from_array(beta, f"be{i}"),
            ]
            if model.normalization == "batch":  # inference mode: the running statistics
                inits += [
                    numpy_helper.from_array(model.running_means[i], f"rm{i}"),
                    numpy_helper.from_array(model.running_vars[i], f"rv{i}"),
                ]
                op, inputs, axis = "BatchNormalization", [f"rm{i}", f"rv{i}"], {}
            else:
                op, inputs, axis = "LayerNormalization", [], {"axis": -1}
            nodes.append(
                helper.make_node(
                    op,
                    [current, f"g{i}", f"be{i}", *inputs],
                    [f"n{i}"],
                    epsilon=NORM_EPS,
                    **axis,
                )
            )
            current = f"n{i}"
        if act in _NODES:
            nodes.append(helper.make_node(_NODES[act], [current], [f"a{i}"]))
            current = f"a{i}"
    proba = model.loss in ("cross_entropy", "binary_cross_entropy")
    output = "probabilities" if proba else "outputs"
    if model.loss == "cross_entropy":
        nodes.append(helper.make_node("Softmax", [current], [output], axis=1))
    elif model.is_multilabel:  # one independent probability per label
        nodes.append(helper.make_node("Sigmoid", [current], [output]))
    elif model.loss == "poisson":  # the log link: predictions are exp of the outputs
        nodes.append(helper.make_node("Exp", [current], [output]))
    else:
        nodes.append(helper.make_node("Identity", [current], [output]))
    graph = helper.make_graph(
        nodes,
        "fastmlp_mlp",
        [helper.make_tensor_value_info("X", elem, ["batch", model.layer_sizes[0]])],
        [helper.make_tensor_value_info(output, elem, ["batch", model.layer_sizes[-1]])],
        inits,
    )
    opset = OPSET_NORM if model.normalization == "layer" else OPSET
    onnx_model = helper.make_model(
        graph, producer_name="fastmlp", opset_imports=[helper.make_opsetid("", opset)]
    )
    onnx.checker.check_model(onnx_model)
    tmp = f"{os.fspath(path)}.tmp-{os.getpid()}"
    try:
        with open(tmp, "wb") as f:
            f.write(onnx_model.SerializeToString())
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
