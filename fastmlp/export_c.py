"""Export of a model as standalone C99: a ``NAME.h`` / ``NAME.c`` pair with no dependencies.

The generated code needs only ``<math.h>`` and ``<stddef.h>``: the weights are ``static const``
arrays written as exact round-trip literals, every buffer lives on the stack (two of the widest
hidden layer's size), nothing is allocated and no global is ever written, so the functions are
reentrant and thread-safe. float32 models become ``float`` code, float64 models ``double``.

How the generator is built (so an int8 model can reuse it):

- a model is turned into a list of *layers* (:class:`_DenseLayer` here), each of which emits
  its own ``static const`` arrays, names the *kernels* (static C functions) it needs and emits
  its call inside the forward function;
- kernels are emitted once each, from ``_KERNELS``, only those some layer (or the output) uses,
  so the file compiles warnings-clean (no unused static function);
- the forward function runs the layers through two ping-pong stack buffers; the public
  functions (per row and batch) wrap it, per model kind (cross-entropy classifier, squared
  error classifier, regressor).

A quantized layer kind adds its class and its kernels; the rest stays.

The dense kernel is the one-row axpy form of ``csrc/fm_kernels`` (``fm_vecmat``): the inner
loop runs over the outputs of a row-major ``W``, contiguous, so ``cc -O3 -march=native``
vectorises it. In the first layer, and in wide layers after ReLU, an input that is zero skips
its row of ``W`` (``dense_skip``; see ``_DenseLayer`` for when that pays).
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import textwrap
from collections.abc import Sequence
from dataclasses import dataclass
from os import PathLike

import numpy as np

from fastmlp._network import NORM_EPS
from fastmlp.model import MLP, fold_batch_norm
from fastmlp.persistence import _copy_mode, _fsync_directory

__all__ = ["to_c", "generate_c", "check_c_name"]

# C99 keywords, the C11/C23 ones (a file may later be built as C23), and the names of the
# standard headers: a model called "math" would write math.h, which `-I.` lets shadow
# <math.h>.
_C_KEYWORDS = frozenset(
    """auto break case char const continue default do double else enum extern float for goto
    if inline int long register restrict return short signed sizeof static struct switch
    typedef union unsigned void volatile while _Bool _Complex _Imaginary _Alignas _Alignof
    _Atomic _Generic _Noreturn _Static_assert _Thread_local alignas alignof bool constexpr
    false nullptr static_assert thread_local true typeof typeof_unqual _BitInt _Decimal32
    _Decimal64 _Decimal128""".split()
)
_C_HEADERS = frozenset(
    """assert complex ctype errno fenv float inttypes iso646 limits locale math setjmp signal
    stdalign stdarg stdatomic stdbool stddef stdint stdio stdlib stdnoreturn string tgmath
    threads time uchar wchar wctype""".split()
)
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
_LINE = 99  # width of the generated lines of numbers


def check_c_name(name: str) -> str:
    """Return ``name`` if it can prefix the generated C symbols and files, else raise.

    Parameters
    ----------
    name : str
        The prefix of every exported function (``name_predict``), of the macros
        (``NAME_N_FEATURES``) and of the files (``name.h``, ``name.c``).

    Returns
    -------
    str
        ``name`` itself.

    Raises
    ------
    TypeError
        If ``name`` is not a string.
    ValueError
        If ``name`` is not a C identifier, is a C keyword or a standard header's name, or
        starts with an underscore (reserved to the C implementation).
    """
    if not isinstance(name, str):
        raise TypeError(f"name must be a string; got {type(name).__name__}")
    if not _IDENTIFIER.match(name):
        raise ValueError(
            f"name must be a C identifier (letters, digits and '_', not starting with a "
            f"digit), such as 'model' or 'mnist_mlp'; got {name!r}"
        )
    if name in _C_KEYWORDS:
        raise ValueError(f"name {name!r} is a C keyword; choose another, such as 'model'")
    if name in _C_HEADERS:
        raise ValueError(
            f"name {name!r} would write {name}.h, which can shadow the standard header "
            f"<{name}.h>; choose another, such as 'model'"
        )
    if name.startswith("_"):
        raise ValueError(
            f"name {name!r} starts with '_': such names are reserved to the C implementation"
        )
    return name


# --------------------------------------------------------------------------- literals


@dataclass(frozen=True)
class _Ctx:
    """What every emitter needs: the symbol prefix and the floating type."""

    name: str  # prefix of every symbol
    real: str  # "float" or "double"
    suffix: str  # "f" for float (literals and <math.h> functions), "" for double

    @property
    def macro(self) -> str:
        return self.name.upper()

    def literal(self, value: float) -> str:
        """``value`` as a C literal of the model's type."""
        return _literals(np.asarray([value], dtype=self.dtype), self.suffix)[0]

    @property
    def dtype(self) -> np.dtype:
        return np.dtype(np.float32 if self.real == "float" else np.float64)


def _literals(values: np.ndarray, suffix: str) -> list[str]:
    """Shortest decimal literals that read back to exactly ``values`` (float32 or float64).

    NumPy's ``format_float_*(unique=True)`` for float32 and Python's ``repr`` for float64
    give the shortest strings that round to the same value (correctly rounded, as GCC and
    Clang read literals), positional or scientific as ``repr`` chooses; each holds a '.', so
    the ``f`` suffix is valid C. Not ``str``: NumPy's legacy print options make it lossy.
    """
    if values.dtype == np.float32:
        return [_float32_text(v) + suffix for v in values.ravel()]
    return [f"{v!r}{suffix}" for v in values.ravel().tolist()]


def _float32_text(value: np.float32) -> str:
    magnitude = abs(value)
    if magnitude != 0 and not 1e-4 <= magnitude < 1e16:
        return np.format_float_scientific(value, unique=True, trim="0")
    return np.format_float_positional(value, unique=True, trim="0")


def _wrap(items: Sequence[str], indent: str) -> list[str]:
    """``items`` comma-separated, on lines of at most ``_LINE`` characters."""
    lines, line = [], indent
    for item in items:
        if len(line) + len(item) + 2 > _LINE and line != indent:
            lines.append(line.rstrip())
            line = indent
        line += item + ", "
    lines.append(line.rstrip())
    lines[-1] = lines[-1].rstrip(",")
    return lines


def _comment_text(text: str) -> str:
    """``text`` safe inside a C block comment: no ``*/`` or ``/*``.

    A backslash goes between every ``*`` and ``/`` that touch (``*/`` would end the comment,
    ``/*`` warns under -Wall). Callers pass one line: ``ascii()`` has escaped newlines and
    non-ASCII, and its closing quote keeps a backslash or trigraph ``??/`` off the line's end.
    """
    return re.sub(r"(?<=\*)(?=/)|(?<=/)(?=\*)", r"\\", text)


def _comment_lines(paragraphs: Sequence[str], tail: Sequence[str] = ()) -> list[str]:
    """A block comment of ``paragraphs`` (text we generate) wrapped to the line width, then
    the lines of ``tail`` as they are (already made safe with :func:`_comment_text`)."""
    lines: list[str] = []
    for k, text in enumerate(paragraphs):
        if k:
            lines.append("")
        lines += textwrap.wrap(
            text,
            _LINE - 3,
            initial_indent="/* " if k == 0 else "   ",
            subsequent_indent="   ",
            break_long_words=False,
            break_on_hyphens=False,
        )
    lines += tail
    lines[-1] += " */"
    return lines


def _label_text(label) -> str:
    """One class label as one line of ASCII, as Python would write it."""
    value = label.item() if isinstance(label, np.generic) else label
    return _comment_text(ascii(value))


# --------------------------------------------------------------------------- kernels
# Each kernel is a static C function; ``_KERNELS`` maps its key to the function emitting it.


def _kernel_dense(ctx: _Ctx, skip_zeros: bool = False) -> str:
    r, n = ctx.real, ctx.name
    if skip_zeros:
        name, skip = "dense_skip", "        if (xi == 0) continue;\n"
        comment = """\
/* y = x W + b for one row, W n_in x n_out and row-major, in axpy form (the inner loop runs
   over the outputs, so the compiler vectorises it), skipping the row of W of every input
   that is zero: inputs such as pixels are mostly zeros, ReLU outputs about half. */"""
    else:
        name, skip = "dense", ""
        comment = """\
/* y = x W + b for one row. W is n_in x n_out, row-major (W[i][j] joins input i to output j).
   Axpy form: the inner loop runs over the outputs, contiguous in W and y, so the compiler
   vectorises it. */"""
    return f"""\
{comment}
static void {n}_{name}(size_t n_in, size_t n_out, const {r} *restrict W,
    const {r} *restrict b, const {r} *restrict x, {r} *restrict y)
{{
    size_t i, j;
    for (j = 0; j < n_out; j++) y[j] = b[j];
    for (i = 0; i < n_in; i++) {{
        const {r} xi = x[i];
        const {r} *restrict w = W + i * n_out;
{skip}        for (j = 0; j < n_out; j++) y[j] += xi * w[j];
    }}
}}
"""


def _kernel_relu(ctx: _Ctx) -> str:
    r = ctx.real
    return f"""\
/* max(y, 0) in place. */
static void {ctx.name}_relu(size_t n, {r} *y)
{{
    size_t j;
    for (j = 0; j < n; j++) y[j] = y[j] > 0 ? y[j] : 0;
}}
"""


def _kernel_tanh(ctx: _Ctx) -> str:
    return f"""\
/* tanh(y) in place. */
static void {ctx.name}_tanh(size_t n, {ctx.real} *y)
{{
    size_t j;
    for (j = 0; j < n; j++) y[j] = tanh{ctx.suffix}(y[j]);
}}
"""


def _kernel_sigmoid(ctx: _Ctx) -> str:
    one = ctx.literal(1.0)
    return f"""\
/* 1 / (1 + exp(-y)) in place; exp overflowing to inf gives 0, the right limit. */
static void {ctx.name}_sigmoid(size_t n, {ctx.real} *y)
{{
    size_t j;
    for (j = 0; j < n; j++) y[j] = {one} / ({one} + exp{ctx.suffix}(-y[j]));
}}
"""


def _kernel_exp(ctx: _Ctx) -> str:
    return f"""\
/* exp(y) in place: the inverse of the Poisson loss's log link. */
static void {ctx.name}_exp(size_t n, {ctx.real} *y)
{{
    size_t j;
    for (j = 0; j < n; j++) y[j] = exp{ctx.suffix}(y[j]);
}}
"""


def _kernel_softmax(ctx: _Ctx) -> str:
    r = ctx.real
    return f"""\
/* Softmax in place. The max is subtracted first, so exp never overflows (logits of 1e4 give
   probabilities, not NaN). */
static void {ctx.name}_softmax(size_t n, {r} *z)
{{
    size_t j;
    {r} max = z[0], sum = 0;
    for (j = 1; j < n; j++) max = z[j] > max ? z[j] : max;
    for (j = 0; j < n; j++) {{
        z[j] = exp{ctx.suffix}(z[j] - max);
        sum += z[j];
    }}
    for (j = 0; j < n; j++) z[j] /= sum;
}}
"""


def _kernel_layer_norm(ctx: _Ctx) -> str:
    r, sfx = ctx.real, ctx.suffix
    eps = ctx.literal(NORM_EPS)
    return f"""\
/* LayerNorm in place, as torch.nn.LayerNorm: (y - mean) / sqrt(var + eps) * gamma + beta
   over the n values, var the biased variance, computed about the mean (two passes). */
static void {ctx.name}_layer_norm(size_t n, const {r} *restrict gamma, const {r} *restrict beta,
    {r} *restrict y)
{{
    size_t j;
    {r} mean = 0, var = 0, rstd;
    for (j = 0; j < n; j++) mean += y[j];
    mean /= ({r})n;
    for (j = 0; j < n; j++) {{
        y[j] -= mean;
        var += y[j] * y[j];
    }}
    rstd = 1 / sqrt{sfx}(var / ({r})n + {eps});
    for (j = 0; j < n; j++) y[j] = y[j] * rstd * gamma[j] + beta[j];
}}
"""


def _kernel_argmax(ctx: _Ctx) -> str:
    return f"""\
/* Index of the largest of z[0..n-1], the first one on ties (as numpy.argmax). */
static int {ctx.name}_argmax(size_t n, const {ctx.real} *z)
{{
    size_t j, best = 0;
    for (j = 1; j < n; j++)
        if (z[j] > z[best]) best = j;
    return (int)best;
}}
"""


_KERNELS = {
    "dense": _kernel_dense,
    "dense_skip": lambda ctx: _kernel_dense(ctx, skip_zeros=True),
    "relu": _kernel_relu,
    "tanh": _kernel_tanh,
    "sigmoid": _kernel_sigmoid,
    "softmax": _kernel_softmax,
    "argmax": _kernel_argmax,
    "exp": _kernel_exp,
    "layer_norm": _kernel_layer_norm,
}


# --------------------------------------------------------------------------- layers


class _DenseLayer:
    """A float layer: ``y = act(x W + b)`` with W and b as ``static const`` arrays; with
    ``norm`` (LayerNorm's gamma and beta), ``y = act(layer_norm(x W + b))``."""

    def __init__(
        self,
        index: int,
        W: np.ndarray,
        b: np.ndarray,
        activation: str,
        input_activation: str,
        norm: tuple[np.ndarray, np.ndarray] | None = None,
    ) -> None:
        self.index = index
        self.W = W
        self.b = b
        self.norm = norm
        self.activation = activation
        self.n_in, self.n_out = W.shape
        # Skipping a zero input costs a branch, which the CPU mispredicts on ReLU's scattered
        # zeros (~15 cycles): worth it for the first layer (pixels: long, predictable runs of
        # zeros; dense inputs: never taken) and for ReLU inputs to a wide layer, whose row of
        # W costs more than a misprediction. On MNIST 784-128-64-10, skipping in the hidden
        # layers too made a row 1.4-1.5x slower (rows never seen before; repeated rows are
        # learnt by the predictor, which hides it); on 784-1024-1024-10 skipping in the
        # 1024-wide layer made a row 1.3x faster.
        self.skip_zeros = index == 0 or (input_activation == "relu" and self.n_out >= 256)

    def kernels(self) -> list[str]:
        """Keys of ``_KERNELS`` this layer calls."""
        dense = "dense_skip" if self.skip_zeros else "dense"
        norm = [] if self.norm is None else ["layer_norm"]
        return [dense, *norm] + ([] if self.activation == "identity" else [self.activation])

    def arrays(self, ctx: _Ctx) -> str:
        """The definitions of the layer's weights and biases."""
        i, r = self.index, ctx.real
        W = f"{ctx.name}_W{i}"
        # One flat array rather than [n_in][n_out]: the kernel walks all of it through one
        # pointer, which C allows within one array only.
        lines = _comment_lines(
            [
                f"Layer {i + 1}: {self.n_in} -> {self.n_out}, {self.activation}. "
                f"{W}[i * {self.n_out} + j] joins input i to output j; row i (input i) starts "
                "a line."
            ]
        )
        lines.append(f"static const {r} {W}[{self.n_in} * {self.n_out}] = {{")
        for k, row in enumerate(self.W):
            row_lines = _wrap(_literals(row, ctx.suffix), "    ")
            if k and len(row_lines) > 1:
                lines.append("")  # rows of several lines are told apart by a blank line
            lines += row_lines
            lines[-1] += ","
        lines[-1] = lines[-1][:-1]  # no comma after the last row
        lines.append("};")
        vectors = [("b", self.b)]
        if self.norm is not None:
            lines += _comment_lines([f"Layer {i + 1}'s LayerNorm: scale g{i}, shift be{i}."])
            vectors += [("g", self.norm[0]), ("be", self.norm[1])]
        for prefix, values in vectors:
            lines.append(f"static const {r} {ctx.name}_{prefix}{i}[{self.n_out}] = {{")
            lines += _wrap(_literals(values, ctx.suffix), "    ")
            lines.append("};")
        return "\n".join(lines) + "\n"

    def call(self, ctx: _Ctx, src: str, dst: str) -> list[str]:
        """The statements computing this layer from ``src`` into ``dst``."""
        n, i = ctx.name, self.index
        lines = [
            f"/* layer {i + 1}: {self.n_in} -> {self.n_out}, {self.activation} */",
            f"{n}_{self.kernels()[0]}({self.n_in}, {self.n_out}, {n}_W{i}, {n}_b{i}, {src}, "
            f"{dst});",
        ]
        if self.norm is not None:
            lines.append(f"{n}_layer_norm({self.n_out}, {n}_g{i}, {n}_be{i}, {dst});")
        if self.activation != "identity":
            lines.append(f"{n}_{self.activation}({self.n_out}, {dst});")
        return lines


def _layers(model: MLP) -> list[_DenseLayer]:
    acts = [*model.activations, model.output_activation]
    norms = list(zip(model.norm_weights, model.norm_biases))
    stats = list(zip(model.running_means, model.running_vars))
    layers = []
    for i, (W, b, act) in enumerate(zip(model.weights, model.biases, acts)):
        norm = norms[i] if i < len(norms) else None
        checked = [W, b, *(norm or ()), *(stats[i] if i < len(stats) else ())]
        if not all(np.isfinite(p).all() for p in checked):
            raise ValueError(
                f"layer {i + 1} of the model holds NaN or infinite parameters; a model that "
                "diverged cannot be exported"
            )
        if norm is not None and model.normalization == "batch":
            # Inference BatchNorm is one affine map per unit: folded into W and b (in
            # float64, then rounded to the model's dtype).
            folded = fold_batch_norm(W, b, *norm, *stats[i])
            # Checked before the cast, which would warn and give inf.
            if not all(np.abs(a).max() <= np.finfo(W.dtype).max for a in folded):
                raise ValueError(
                    f"layer {i + 1}'s BatchNorm folded into its weights overflows "
                    f"{np.dtype(model.dtype).name}; export a float64 model"
                )
            W, b = (a.astype(W.dtype) for a in folded)
            norm = None
        layers.append(_DenseLayer(i, W, b, act, "input" if i == 0 else acts[i - 1], norm))
    return layers


# --------------------------------------------------------------------------- files


def _kind(model: MLP) -> str:
    if model.is_regressor:
        return "regressor"
    if model.is_multilabel:
        return "multilabel"
    return "proba" if model.loss == "cross_entropy" else "scores"


def _api(ctx: _Ctx, kind: str) -> list[tuple[str, str]]:
    """(prototype, one-sentence comment) of every public function."""
    n, r, M = ctx.name, ctx.real, ctx.macro
    x = f"const {r} *x"
    if kind == "multilabel":
        return [
            (
                f"void {n}_predict_proba({x}, {r} *proba)",
                f"The {M}_N_OUTPUTS label probabilities (a sigmoid each, independent) for one "
                f"row x of {M}_N_FEATURES values.",
            ),
            (
                f"void {n}_predict({x}, int *labels)",
                f"labels[j] = 1 if label j applies to row x (probability above 0.5), else 0; "
                f"{M}_N_OUTPUTS of them.",
            ),
            (
                f"void {n}_predict_proba_batch(size_t n_rows, {x}, {r} *proba)",
                f"predict_proba for n_rows rows: x is n_rows x {M}_N_FEATURES, proba n_rows x "
                f"{M}_N_OUTPUTS, row-major.",
            ),
            (
                f"void {n}_predict_batch(size_t n_rows, {x}, int *labels)",
                f"predict for n_rows rows: labels is n_rows x {M}_N_OUTPUTS, row-major.",
            ),
        ]
    if kind == "regressor":
        return [
            (
                f"void {n}_predict({x}, {r} *y)",
                f"The {M}_N_OUTPUTS predictions for one row x of {M}_N_FEATURES values.",
            ),
            (
                f"void {n}_predict_batch(size_t n_rows, {x}, {r} *y)",
                f"predict for n_rows rows: x is n_rows x {M}_N_FEATURES, y n_rows x "
                f"{M}_N_OUTPUTS, row-major.",
            ),
        ]
    scores = "predict_proba" if kind == "proba" else "decision_function"
    what = (
        "class probabilities (softmax; they sum to 1)"
        if kind == "proba"
        else "outputs of the last layer (the model was trained with squared error)"
    )
    return [
        (
            f"void {n}_{scores}({x}, {r} *{'proba' if kind == 'proba' else 'scores'})",
            f"The {M}_N_OUTPUTS {what} for one row x of {M}_N_FEATURES values.",
        ),
        (
            f"int {n}_predict({x})",
            "The predicted class of one row: an index into the class list above.",
        ),
        (
            f"void {n}_{scores}_batch(size_t n_rows, {x}, {r} *"
            f"{'proba' if kind == 'proba' else 'scores'})",
            f"{scores} for n_rows rows: x is n_rows x {M}_N_FEATURES, the result n_rows x "
            f"{M}_N_OUTPUTS, row-major.",
        ),
        (
            f"void {n}_predict_batch(size_t n_rows, {x}, int *classes)",
            "predict for n_rows rows: classes[r] is the class index of row r.",
        ),
    ]


def _describe(model: MLP) -> str:
    sizes = "-".join(str(s) for s in model.layer_sizes)
    if model.is_multilabel:
        what = "multilabel classifier (a sigmoid and binary cross-entropy per label)"
    elif model.is_regressor:
        what = f"regressor ({model.loss})"
    elif model.loss == "cross_entropy":
        what = "classifier (softmax + cross-entropy)"
    else:
        what = f"classifier ({model.loss})"
    hidden = (
        f"hidden activation {model.activation}"
        if isinstance(model.activation, str)
        else f"hidden activations {', '.join(model.activations)}"
    )
    if model.normalization == "layer":
        hidden += " (each after a LayerNorm)"
    elif model.normalization == "batch":
        hidden += " (each after a BatchNorm with its running statistics, folded into W, b)"
    return (
        f"{sizes} {what}, {hidden}, output activation {model.output_activation}, "
        f"{np.dtype(model.dtype).name}"
    )


def _header(model: MLP, ctx: _Ctx, layers: list[_DenseLayer], kind: str) -> str:
    from fastmlp import __version__

    n, M = ctx.name, ctx.macro
    guard = f"{M}_H_INCLUDED"
    widest = max((layer.n_out for layer in layers[:-1]), default=0)
    stack = 2 * widest * ctx.dtype.itemsize if len(layers) > 2 else widest * ctx.dtype.itemsize
    paragraphs = [
        f"{n}.h: a multi-layer perceptron exported by fastmlp {__version__} as C99.",
        f"{_describe(model)}.",
        f"Build: cc -std=c99 -O3 -march=native -c {n}.c (and link with -lm).",
        "The functions allocate nothing and write no global: they are reentrant and may be "
        "called from many threads at once."
        + (
            f" A call keeps the activations of the hidden layers on the stack ({stack} bytes)."
            if stack
            else ""
        )
        + " Inputs are not checked: NaN or infinity propagate to the outputs. The input and "
        "output arrays of a call must not overlap.",
    ]
    classes = []
    if kind == "multilabel":
        classes = ["", "   Labels (index j of the outputs: label):"]
        classes += [f"     {i}: {_label_text(c)}" for i, c in enumerate(model.classes_)]
    elif kind != "regressor":
        classes = ["", f"   Classes (index returned by {n}_predict: label):"]
        classes += [f"     {i}: {_label_text(c)}" for i, c in enumerate(model.classes_)]
    if kind == "multilabel":
        use = (
            f"{ctx.real} proba[{M}_N_OUTPUTS]; {n}_predict_proba(x, proba); or int "
            f"labels[{M}_N_OUTPUTS]; {n}_predict(x, labels);"
        )
    elif kind == "regressor":
        use = f"{ctx.real} y[{M}_N_OUTPUTS]; {n}_predict(x, y);"
    else:
        func, out = ("predict_proba", "proba") if kind == "proba" else ("decision_function", "s")
        use = f"{ctx.real} {out}[{M}_N_OUTPUTS]; {n}_{func}(x, {out}); or int c = {n}_predict(x);"
    paragraphs.insert(3, f"Use, for x of {M}_N_FEATURES values: {use}")
    lines = _comment_lines(paragraphs, classes)
    lines += [
        f"#ifndef {guard}",
        f"#define {guard}",
        "",
        "#include <stddef.h>",
        "",
        f"#define {M}_N_FEATURES {model.layer_sizes[0]}",
        f"#define {M}_N_OUTPUTS {model.layer_sizes[-1]}",
        "",
        "#ifdef __cplusplus",
        'extern "C" {',
        "#endif",
        "",
    ]
    for prototype, comment in _api(ctx, kind):
        lines += _comment_lines([comment]) + [f"{prototype};", ""]
    lines += ["#ifdef __cplusplus", "}", "#endif", "", f"#endif /* {guard} */"]
    return "\n".join(lines) + "\n"


def _forward(ctx: _Ctx, layers: list[_DenseLayer]) -> str:
    """The static function running every layer on one row, into the caller's ``out``."""
    n, r = ctx.name, ctx.real
    buffers = ["h0", "h1"][: min(2, len(layers) - 1)]
    how = {
        0: "No hidden layer: x goes straight to out.",
        1: "The stack buffer h0 holds the hidden layer's activations.",
        2: "Two stack buffers take turns holding a hidden layer's activations.",
    }[len(buffers)]
    lines = _comment_lines(
        [f"The outputs of the last layer for one row (before any softmax). {how}"]
    )
    lines += [f"static void {n}_forward(const {r} *x, {r} *out)", "{"]
    if buffers:
        lines.append(f"    {r} {', '.join(f'{h}[{ctx.macro}_MAX_WIDTH]' for h in buffers)};")
    src = "x"
    for k, layer in enumerate(layers):
        dst = "out" if k == len(layers) - 1 else buffers[k % 2]
        lines += ["    " + s for s in layer.call(ctx, src, dst)]
        src = dst
    lines.append("}")
    return "\n".join(lines) + "\n"


def _public(ctx: _Ctx, kind: str, exp_link: bool = False) -> str:
    """The definitions of the public functions, in the header's order; ``exp_link``: a
    Poisson regressor, which predicts exp of its outputs."""
    n, r, M = ctx.name, ctx.real, ctx.macro
    out = []
    protos = [p for p, _ in _api(ctx, kind)]
    if kind == "multilabel":
        out.append(
            f"{protos[0]}\n{{\n    {n}_forward(x, proba);\n"
            f"    {n}_sigmoid({M}_N_OUTPUTS, proba);\n}}\n"
        )
        # A label applies where its logit is above 0, as MLP.predict decides.
        out.append(
            f"{protos[1]}\n{{\n    size_t j;\n    {r} z[{M}_N_OUTPUTS];\n    {n}_forward(x, z);\n"
            f"    for (j = 0; j < {M}_N_OUTPUTS; j++) labels[j] = z[j] > 0;\n}}\n"
        )
        out.append(
            f"{protos[2]}\n{{\n    size_t row;\n    for (row = 0; row < n_rows; row++)\n"
            f"        {n}_predict_proba(x + row * {M}_N_FEATURES, proba + row * {M}_N_OUTPUTS);"
            f"\n}}\n"
        )
        out.append(
            f"{protos[3]}\n{{\n    size_t row;\n    for (row = 0; row < n_rows; row++)\n"
            f"        {n}_predict(x + row * {M}_N_FEATURES, labels + row * {M}_N_OUTPUTS);\n}}\n"
        )
        return "\n".join(out)
    if kind == "regressor":
        link = f"    {n}_exp({M}_N_OUTPUTS, y);\n" if exp_link else ""
        out.append(f"{protos[0]}\n{{\n    {n}_forward(x, y);\n{link}}}\n")
        out.append(
            f"{protos[1]}\n{{\n    size_t row;\n    for (row = 0; row < n_rows; row++)\n"
            f"        {n}_predict(x + row * {M}_N_FEATURES, y + row * {M}_N_OUTPUTS);\n}}\n"
        )
        return "\n".join(out)
    scores = "predict_proba" if kind == "proba" else "decision_function"
    arg = "proba" if kind == "proba" else "scores"
    body = f"    {n}_forward(x, {arg});\n"
    if kind == "proba":
        body += f"    {n}_softmax({M}_N_OUTPUTS, {arg});\n"
    out.append(f"{protos[0]}\n{{\n{body}}}\n")
    # The class is the arg-max of the logits, as MLP.predict takes it (the softmax is
    # monotonic, and rounding in exp could only create ties).
    out.append(
        f"{protos[1]}\n{{\n    {r} z[{M}_N_OUTPUTS];\n    {n}_forward(x, z);\n"
        f"    return {n}_argmax({M}_N_OUTPUTS, z);\n}}\n"
    )
    out.append(
        f"{protos[2]}\n{{\n    size_t row;\n    for (row = 0; row < n_rows; row++)\n"
        f"        {n}_{scores}(x + row * {M}_N_FEATURES, {arg} + row * {M}_N_OUTPUTS);\n}}\n"
    )
    out.append(
        f"{protos[3]}\n{{\n    size_t row;\n    for (row = 0; row < n_rows; row++)\n"
        f"        classes[row] = {n}_predict(x + row * {M}_N_FEATURES);\n}}\n"
    )
    return "\n".join(out)


def _source(model: MLP, ctx: _Ctx, layers: list[_DenseLayer], kind: str) -> str:
    from fastmlp import __version__

    n, M = ctx.name, ctx.macro
    comment = _comment_lines(
        [f"{n}.c: {_describe(model)}. Generated by fastmlp {__version__}; the interface and "
         f"its contract are in {n}.h."]
    )  # fmt: skip
    parts = ["\n".join(comment) + f'\n#include "{n}.h"\n\n#include <math.h>\n']
    if len(layers) > 1:
        widest = max(layer.n_out for layer in layers[:-1])
        parts.append(
            f"/* The widest hidden layer: the size of the stack buffers. */\n"
            f"#define {M}_MAX_WIDTH {widest}\n"
        )
    parts += [layer.arrays(ctx) for layer in layers]
    needed = {key for layer in layers for key in layer.kernels()}
    if kind == "multilabel":
        needed.add("sigmoid")
    elif kind != "regressor":
        needed.add("argmax")
    if kind == "proba":
        needed.add("softmax")
    if model.loss == "poisson":
        needed.add("exp")
    parts += [emit(ctx) for key, emit in _KERNELS.items() if key in needed]
    parts.append(_forward(ctx, layers))
    parts.append(_public(ctx, kind, exp_link=model.loss == "poisson"))
    return "\n".join(parts)


def generate_c(model: MLP, name: str = "model") -> tuple[str, str]:
    """The text of ``name.h`` and ``name.c`` for ``model`` (see :func:`to_c`).

    Parameters
    ----------
    model : MLP
        A classifier or regressor, float32 or float64.
    name : str
        Prefix of the C symbols; must be a C identifier.

    Returns
    -------
    header, source : str
    """
    check_c_name(name)
    ctx = _Ctx(
        name,
        "float" if model.dtype == np.float32 else "double",
        "f" if model.dtype == np.float32 else "",
    )
    layers = _layers(model)
    kind = _kind(model)
    return _header(model, ctx, layers, kind), _source(model, ctx, layers, kind)


def _check_directory(directory: str | PathLike[str]) -> str:
    path = os.fspath(directory)
    if not os.path.exists(path):
        raise FileNotFoundError(f"export directory {path} does not exist; create it first")
    if not os.path.isdir(path):
        raise NotADirectoryError(f"export directory {path} is not a directory")
    if not os.access(path, os.W_OK | os.X_OK):
        raise PermissionError(f"export directory {path} is not writable")
    return path


def _open_temporary(target: str) -> tuple[int, str]:
    """A new file beside ``target``, opened for writing, with a random name.

    Mode 0666 less the umask, as a plain ``open(target, "w")`` would give (tempfile's 0600
    would hide the export from other users); O_EXCL makes the random name safe to claim.
    """
    directory, base = os.path.split(target)
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
    while True:
        tmp = os.path.join(directory, f".{base}.{secrets.token_hex(6)}.tmp")
        try:
            return os.open(tmp, flags, 0o666), tmp
        except FileExistsError:  # pragma: no cover - a collision of 48 random bits
            continue


def _write_files(files: dict[str, str]) -> None:
    """Write every ``{path: text}`` atomically, all or none.

    Each text goes to a temporary file beside its target first. Only when every one is
    written are they renamed over the targets; if a rename fails, the targets renamed so far
    get their old files back (kept meanwhile as hard links), so a failing export loses
    nothing and leaves no half-written file.
    """
    temps: dict[str, str] = {}
    backups: dict[str, str] = {}
    replaced: list[str] = []
    try:
        for path, text in files.items():
            if os.path.isdir(path):
                raise IsADirectoryError(f"cannot write {path}: it is a directory")
            fd, temps[path] = _open_temporary(path)
            with os.fdopen(fd, "w", encoding="ascii", newline="\n") as fh:
                fh.write(text)
                fh.flush()
                os.fsync(fh.fileno())  # on disk before the rename
            _copy_mode(path, temps[path])
        for path in files:
            if os.path.isfile(path):
                backups[path] = f"{temps[path]}.old"
                os.link(path, backups[path])
        for path in files:
            os.replace(temps[path], path)
            del temps[path]
            replaced.append(path)
    except BaseException:
        for path in reversed(replaced):
            with contextlib.suppress(OSError):
                if path in backups:
                    os.replace(backups.pop(path), path)
                else:
                    os.remove(path)
        raise
    finally:
        for leftover in [*temps.values(), *backups.values()]:
            with contextlib.suppress(OSError):
                os.remove(leftover)
    _fsync_directory(os.path.dirname(next(iter(files))))


def to_c(model: MLP, directory: str | PathLike[str], name: str = "model") -> tuple[str, str]:
    """Write ``model`` as standalone C99: ``directory/name.h`` and ``directory/name.c``.

    The header declares, with ``T`` the model's type (``float`` for float32 models,
    ``double`` for float64 ones) and ``NAME`` the upper-cased name:

    - a cross-entropy classifier: ``void name_predict_proba(const T *x, T *proba)`` and
      ``int name_predict(const T *x)`` (an index into ``model.classes_``, which the header
      lists in a comment);
    - a squared-error classifier: ``void name_decision_function(const T *x, T *scores)``
      (as :meth:`MLP.decision_function`) and ``int name_predict(const T *x)``;
    - a regressor: ``void name_predict(const T *x, T *y)``;
    - a ``_batch`` form of each, taking ``size_t n_rows`` first, then row-major arrays;
    - the macros ``NAME_N_FEATURES`` and ``NAME_N_OUTPUTS``.

    The code is C99 with no dependency beyond ``<math.h>`` and ``<stddef.h>``, allocates
    nothing and writes no global (thread-safe), and compiles warnings-clean under
    ``-std=c99 -Wall -Wextra -pedantic``. Link with ``-lm``.

    Parameters
    ----------
    model : MLP
        The model to export.
    directory : str or path-like
        An existing, writable directory.
    name : str
        Prefix of the files and of every C symbol; a C identifier, not a keyword.

    Returns
    -------
    header, source : str
        The paths written.

    Raises
    ------
    ValueError, TypeError
        If ``name`` cannot be a C identifier, or the model holds NaN or infinity.
    OSError
        If ``directory`` does not exist or cannot be written. Both files are written to
        temporary files and renamed into place: a failed export leaves any earlier
        ``name.h`` and ``name.c`` as they were.
    """
    header, source = generate_c(model, name)
    path = _check_directory(directory)
    h_path = os.path.join(path, f"{name}.h")
    c_path = os.path.join(path, f"{name}.c")
    _write_files({h_path: header, c_path: source})
    return h_path, c_path
