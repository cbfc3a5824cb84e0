"""Export of an int8 model (:class:`fastmlp.int8.QuantizedMLP`) as standalone C99.

The same interface as :mod:`fastmlp.export_c` gives a float classifier (``name_predict_proba``,
``name_predict`` and their batch forms, ``NAME_N_FEATURES``, ``NAME_N_OUTPUTS``; ``float``
inputs and probabilities), with the layers in integer arithmetic: the weights are
``static const int8_t`` arrays (a quarter of the float export's), each layer sums uint8
activations times int8 weights in ``int32_t`` and the float epilogue is the one
``csrc/fm_int8.h`` specifies, written as the same separate float operations. It needs
``<math.h>`` (``expf``), ``<stdint.h>`` and ``<stddef.h>``. This module reuses
the float exporter's pieces (names, comments, public functions, softmax, files) and adds the
integer layer.
"""

from __future__ import annotations

from os import PathLike

import numpy as np

from fastmlp import export_c as fc


def _int_lines(values: np.ndarray) -> list[str]:
    return fc._wrap([str(int(v)) for v in values.ravel()], "    ")


def _kernels(ctx: fc._Ctx) -> str:
    n = ctx.name
    return f"""\
/* v rounded to the nearest integer, ties to even, as rint in the default rounding mode,
   for |v| <= 128: the truncation and the remainder are exact for such v. Not lrintf, which
   -std=c99 (math errno) keeps a library call. */
static int {n}_round(float v)
{{
    const int i = (int)v;
    const float f = v - (float)i;
    return i + (((f > 0.5f) | ((f == 0.5f) & i)) - ((f < -0.5f) | ((f == -0.5f) & i)));
}}

/* Quantize n floats: q = rint(clamp(x * inv, -zero_point, 127 - zero_point)) + zero_point.
   NaN becomes zero_point's lowest value: inputs are not checked. */
static void {n}_quantize(size_t n, const float *restrict x, float inv, int zero_point,
    uint8_t *restrict q)
{{
    const float lo = (float)-zero_point, hi = (float)(127 - zero_point);
    size_t i;
    for (i = 0; i < n; i++) {{
        float v = x[i] * inv;
        v = v > lo ? v : lo;
        v = v < hi ? v : hi;
        q[i] = (uint8_t)({n}_round(v) + zero_point);
    }}
}}

/* acc = offset + q W for one row, exactly in int32 (|acc| < 2^31 for up to 65536 inputs),
   W n_in x n_out int8, row-major; axpy form, skipping the rows of W whose input is 0. */
static void {n}_dense_i8(size_t n_in, size_t n_out, const int8_t *restrict W,
    const int32_t *restrict offset, const uint8_t *restrict q, int32_t *restrict acc)
{{
    size_t i, j;
    for (j = 0; j < n_out; j++) acc[j] = offset ? offset[j] : 0;
    for (i = 0; i < n_in; i++) {{
        const int32_t qi = q[i];
        const int8_t *restrict w = W + i * n_out;
        if (qi == 0) continue;
        for (j = 0; j < n_out; j++) acc[j] += qi * (int32_t)w[j];
    }}
}}

"""


def _kernel_requantize(ctx: fc._Ctx) -> str:
    n = ctx.name
    return f"""\
/* Hidden layer epilogue: y = acc * mult + b (two float roundings), ReLU and requantize,
   q = rint(clamp(y * inv, 0, 127)). */
static void {n}_requantize(size_t n, const int32_t *restrict acc,
    const float *restrict mult, const float *restrict b, float inv, uint8_t *restrict q)
{{
    size_t j;
    for (j = 0; j < n; j++) {{
        const float p = (float)acc[j] * mult[j];
        const float y = p + b[j];
        float v = y * inv;
        v = v > 0.0f ? v : 0.0f;
        v = v < 127.0f ? v : 127.0f;
        q[j] = (uint8_t){n}_round(v);
    }}
}}
"""


def _kernel_dequantize(ctx: fc._Ctx) -> str:
    n = ctx.name
    return f"""\
/* Last layer epilogue: the logits y = acc * mult + b. */
static void {n}_dequantize(size_t n, const int32_t *acc, const float *mult, const float *b,
    float *y)
{{
    size_t j;
    for (j = 0; j < n; j++) {{
        const float p = (float)acc[j] * mult[j];
        y[j] = p + b[j];
    }}
}}
"""


def _arrays(q, ctx: fc._Ctx, mults, offset0) -> str:
    n = ctx.name
    parts = []
    for i, (W, b) in enumerate(zip(q.weights_q, q.biases)):
        k, m = W.shape
        lines = fc._comment_lines(
            [
                f"Layer {i + 1}: {k} -> {m}, {'relu' if i < len(q.weights_q) - 1 else 'logits'}. "
                f"{n}_W{i}[i * {m} + j], int8, joins input i to output j; "
                f"{n}_mult{i}[j] = input scale * the scale of column j."
            ]
        )
        lines.append(f"static const int8_t {n}_W{i}[{k} * {m}] = {{")
        lines += _int_lines(W)
        lines.append("};")
        lines.append(f"static const float {n}_mult{i}[{m}] = {{")
        lines += fc._wrap(fc._literals(mults[i], "f"), "    ")
        lines.append("};")
        lines.append(f"static const float {n}_b{i}[{m}] = {{")
        lines += fc._wrap(fc._literals(b, "f"), "    ")
        lines.append("};")
        if i == 0 and offset0 is not None:
            lines.append(
                f"/* -input zero point * the column sums of {n}_W0: the zero point's share. */"
            )
            lines.append(f"static const int32_t {n}_offset0[{m}] = {{")
            lines += _int_lines(offset0)
            lines.append("};")
        parts.append("\n".join(lines) + "\n")
    return "\n".join(parts)


def _forward(q, ctx: fc._Ctx, invs, offset0) -> str:
    n, M = ctx.name, ctx.macro
    L = len(q.weights_q)
    sizes = q.layer_sizes
    lines = fc._comment_lines(
        ["The logits of one row: quantize x, then each layer in integers (see the header)."]
    )
    lines += [f"static void {n}_forward(const float *x, float *out)", "{"]
    lines.append(f"    uint8_t q0[{M}_N_FEATURES];")
    if L > 1:  # one buffer per hidden layer, up to two taking turns
        buffers = ", ".join(f"h{i}[{M}_MAX_WIDTH]" for i in range(min(2, L - 1)))
        lines.append(f"    uint8_t {buffers};")
    lines.append(f"    int32_t acc[{M}_MAX_OUTPUTS];")
    lines.append(
        f"    {n}_quantize({sizes[0]}, x, {fc._float32_text(np.float32(invs[0]))}f, "
        f"{q.input_zero_point}, q0);"
    )
    src = "q0"
    for i in range(L):
        off = f"{n}_offset0" if i == 0 and offset0 is not None else "NULL"
        k, m = sizes[i], sizes[i + 1]
        lines.append(f"    /* layer {i + 1}: {k} -> {m} */")
        lines.append(f"    {n}_dense_i8({k}, {m}, {n}_W{i}, {off}, {src}, acc);")
        if i < L - 1:
            dst = f"h{i % 2}"
            inv = fc._float32_text(np.float32(invs[i + 1])) + "f"
            lines.append(f"    {n}_requantize({m}, acc, {n}_mult{i}, {n}_b{i}, {inv}, {dst});")
            src = dst
        else:
            lines.append(f"    {n}_dequantize({m}, acc, {n}_mult{i}, {n}_b{i}, out);")
    lines.append("}")
    return "\n".join(lines) + "\n"


def generate_c_int8(q, name: str = "model") -> tuple[str, str]:
    """The text of ``name.h`` and ``name.c`` for the int8 model ``q`` (see :func:`to_c_int8`)."""
    from fastmlp import __version__

    fc.check_c_name(name)
    ctx = fc._Ctx(name, "float", "f")
    n, M = name, ctx.macro
    sizes = q.layer_sizes
    scales = q.input_scales.astype(np.float64)
    invs = [np.float32(1.0 / s) for s in scales]
    mults = [(scales[i] * s.astype(np.float64)).astype(np.float32) for i, s in
             enumerate(q.weight_scales)]  # fmt: skip
    offset0 = None
    if q.input_zero_point:
        offset0 = (-q.input_zero_point * q.weights_q[0].sum(axis=0, dtype=np.int64)).astype(
            np.int32
        )
    arch = "-".join(str(s) for s in sizes)
    what = f"{arch} int8 classifier (quantized from {q.source_dtype}; softmax outputs)"
    guard = f"{M}_H_INCLUDED"
    paragraphs = [
        f"{n}.h: a multi-layer perceptron quantized to int8, exported by fastmlp {__version__} "
        "as C99.",
        f"{what}.",
        f"Use, for x of {M}_N_FEATURES floats: float proba[{M}_N_OUTPUTS]; "
        f"{n}_predict_proba(x, proba); or int c = {n}_predict(x);",
        f"Build: cc -std=c99 -O3 -march=native -c {n}.c (and link with -lm).",
        "Each layer sums uint8 activations times int8 weights exactly in int32_t; then, in "
        "float, y = acc * mult + b (a multiply, then an add: GCC's default -ffp-contract=fast "
        "in its GNU modes may fuse them, which can move a rounding; -std=c99 does not), ReLU "
        "and requantization to 0..127 for the next layer. fastmlp's own int8 predict_proba "
        "gives the same logits. The functions allocate nothing and write no global: they are "
        "reentrant and thread-safe. Inputs are not checked (NaN is quantized as the lowest "
        "value). The input and output arrays of a call must not overlap.",
    ]
    classes = ["", f"   Classes (index returned by {n}_predict: label):"]
    classes += [f"     {i}: {fc._label_text(c)}" for i, c in enumerate(q.classes_)]
    lines = fc._comment_lines(paragraphs, classes)
    lines += [
        f"#ifndef {guard}",
        f"#define {guard}",
        "",
        "#include <stddef.h>",
        "",
        f"#define {M}_N_FEATURES {sizes[0]}",
        f"#define {M}_N_OUTPUTS {sizes[-1]}",
        "",
        "#ifdef __cplusplus",
        'extern "C" {',
        "#endif",
        "",
    ]
    for prototype, comment in fc._api(ctx, "proba"):
        lines += fc._comment_lines([comment]) + [f"{prototype};", ""]
    lines += ["#ifdef __cplusplus", "}", "#endif", "", f"#endif /* {guard} */"]
    header = "\n".join(lines) + "\n"

    comment = fc._comment_lines(
        [f"{n}.c: {what}. Generated by fastmlp {__version__}; the interface and its "
         f"contract are in {n}.h."]
    )  # fmt: skip
    parts = [
        "\n".join(comment) + f'\n#include "{n}.h"\n\n#include <math.h>\n#include <stdint.h>\n'
    ]
    defines = "/* The widest layer output: the size of the stack buffers. */\n"
    defines += f"#define {M}_MAX_OUTPUTS {max(sizes[1:])}\n"
    if len(sizes) > 2:
        defines += f"#define {M}_MAX_WIDTH {max(sizes[1:-1])}\n"
    parts.append(defines)
    parts.append(_arrays(q, ctx, mults, offset0))
    parts.append(_kernels(ctx))
    if len(sizes) > 2:  # no unused static function: the file compiles warnings-clean
        parts.append(_kernel_requantize(ctx))
    parts.append(_kernel_dequantize(ctx))
    parts += [fc._KERNELS[key](ctx) for key in ("softmax", "argmax")]
    parts.append(_forward(q, ctx, invs, offset0))
    parts.append(fc._public(ctx, "proba"))
    return header, "\n".join(parts)


def to_c_int8(q, directory: str | PathLike[str], name: str = "model") -> tuple[str, str]:
    """Write the int8 model ``q`` as standalone C99: ``directory/name.h`` and ``name.c``.

    The header declares ``void name_predict_proba(const float *x, float *proba)``,
    ``int name_predict(const float *x)`` (an index into ``q.classes_``, listed in a
    comment), their ``_batch`` forms taking ``size_t n_rows`` first, and the macros
    ``NAME_N_FEATURES`` and ``NAME_N_OUTPUTS``. The layers run in integer arithmetic and
    give the logits of :meth:`QuantizedMLP.decision_function` exactly (compiled with
    ``-std=c99``); warnings-clean under ``-std=c99 -Wall -Wextra -pedantic``. Link with
    ``-lm``.

    Parameters
    ----------
    q : QuantizedMLP
    directory : str or path-like
        An existing, writable directory.
    name : str
        Prefix of the files and C symbols; a C identifier.

    Returns
    -------
    header, source : str
        The paths written (atomically, both or neither).

    Raises
    ------
    ValueError, TypeError
        If ``name`` cannot be a C identifier.
    OSError
        If ``directory`` does not exist or cannot be written.
    """
    import os

    header, source = generate_c_int8(q, name)
    path = fc._check_directory(directory)
    h_path = os.path.join(path, f"{name}.h")
    c_path = os.path.join(path, f"{name}.c")
    fc._write_files({h_path: header, c_path: source})
    return h_path, c_path
