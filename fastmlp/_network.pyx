# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
# cython: initializedcheck=False
"""``Network``: a compiled multi-layer perceptron (layout, parameters, prediction).

A Network is built and checked once from its layer sizes, activations, loss and dtype;
it owns the flat parameter buffer, per layer l = 1..L: W_l (fan_in x fan_out, row-major)
then b_l (fan_out). Gradients and optimizer state (``_trainer.pyx``) share that layout.

Prediction: each layer is one ``fm_dense`` call per block of rows (our own GEMM with the
bias, activation and NaN check fused; no BLAS). Rows go in blocks of at most
PREDICT_BLOCK_ROWS so a block's activations stay in cache; 64 rows and more make 2 to 4
blocks at least, so they run in parallel. The first layer skips the input features zero in
every row of a group of MARK_ROWS rows (first_layer_runs). fm_dense computes every row the
same way wherever it falls, so results are bitwise the same for any thread count and block
size.
This module is the one home of the names and limits the Python layer checks against.
"""
from cpython.buffer cimport PyObject_GetBuffer, PyBuffer_Release, PyBUF_WRITABLE
from cython.parallel cimport prange, threadid
from libc.math cimport INFINITY
from libc.stdint cimport int32_t, int64_t, uint8_t
from libc.stdlib cimport malloc, free

from cython cimport floating

from fastmlp cimport _ckernels as fm
from fastmlp._ckernels cimport (FM_IDENTITY, FM_RELU, FM_TANH, FM_SIGMOID, FM_ISA_AUTO,
                                fm_dense_isa_available, fm_dense_tail_size)

import numpy as np

NOT_FINITE = "X contains NaN or infinity; remove or impute them first."
# predict_block's findings: the first layer's sums are not finite (NaN or infinity in X,
# or a first layer that overflows), or a later layer's or the output's are (overflow).
cdef enum:
    BAD_FIRST = 1
    BAD_LATER = 2

cdef extern from "fm_openmp.h":
    int fm_openmp_enabled()
    int fm_openmp_max_threads()

cdef enum:
    SMALL_WORKSPACE = 4096   # elements of prediction workspace kept on the stack
    # Rows per prediction block: fm_dense gives the same bits for any split, so this is
    # for speed alone (benches/results.md); 256 rows of activations stay in L2.
    PREDICT_BLOCK_ROWS = 256
    PARALLEL_ROWS = 64       # fewer rows make one block, run on the calling thread
    MARK_ROWS = 32           # rows per group whose used input features are marked
    FINITE_PARALLEL_MIN = 1 << 22   # elements (16 MB of float) a finiteness scan splits
    FINITE_PARTS = 16

# The names users pass, with their codes; every other module takes them from here.
ACTIVATIONS = {"identity": FM_IDENTITY, "relu": FM_RELU, "tanh": FM_TANH,
               "sigmoid": FM_SIGMOID}
HIDDEN_ACTIVATIONS = ("relu", "tanh", "sigmoid")
LOSSES = {"cross_entropy": LOSS_CROSS_ENTROPY, "mse": LOSS_MSE,
          "squared_error": LOSS_SQUARED_ERROR, "huber": LOSS_HUBER,
          "absolute_error": LOSS_ABSOLUTE_ERROR, "poisson": LOSS_POISSON,
          "binary_cross_entropy": LOSS_BINARY_XENT}
MULTILABEL_LOSS = "binary_cross_entropy"   # a multilabel classifier's loss
REGRESSION_LOSS = "squared_error"   # the default loss of a regressor
# The losses that make a regressor (real targets, no classes).
REGRESSION_LOSSES = ("squared_error", "huber", "absolute_error", "poisson")
# normalization="layer": LayerNorm after each hidden Linear layer, with torch.nn.LayerNorm's
# default eps; "batch": BatchNorm (torch.nn.BatchNorm1d's eps and momentum).
NORMALIZATIONS = ("layer", "batch")
NORM_EPS = 1e-5
BN_MOMENTUM = 0.1
LAYERS_LIMIT = MAX_LAYERS           # Linear layers per network
WIDTH_LIMIT = 2**31 - 1             # units per layer (C int sizes)
DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


def openmp_info():
    """``(built with OpenMP, OpenMP's current maximum thread count)``."""
    return bool(fm_openmp_enabled()), fm_openmp_max_threads()


def all_finite(x, int n_threads=1):
    """True if no element of the float32/float64 array x is NaN or infinite.

    One vectorised pass without temporaries; x is read as a flat array. A large x (a
    training set) is scanned in parts by up to `n_threads` threads: one core does not
    reach the memory's bandwidth (MNIST's 188 MB: 12 ms on one Zen 3 core, 6.3-7.9 on two).
    """
    x = np.ascontiguousarray(x).reshape(-1)
    if x.size == 0:
        return True
    if x.dtype == np.float32:
        return bool(_all_finite[float](x, n_threads))
    return bool(_all_finite[double](x, n_threads))


cdef int _all_finite(const floating[::1] x, int n_threads) noexcept:
    """all_finite for one dtype: 1 if x holds no NaN or inf, in parts over threads."""
    cdef Py_ssize_t n = x.shape[0], part, parts = 1
    cdef int ok = 1
    if n_threads > 1 and n >= FINITE_PARALLEL_MIN:
        parts = FINITE_PARTS   # more parts than threads: a paused thread holds up no one
    with nogil:
        for part in prange(parts, num_threads=n_threads if parts > 1 else 1,
                           schedule="dynamic"):
            ok &= fm.all_finite(n * (part + 1) // parts - n * part // parts,
                                &x[n * part // parts])
    return ok


cdef Csr csr_pointers(const floating *like, X) except *:
    """Pointers to a CSR input's arrays (check_csr has checked them); `like` picks the
    dtype. An X with no nonzeros gets NULL data and indices, never read."""
    cdef Csr c
    cdef const int64_t[::1] indptr = X.indptr
    cdef const int32_t[::1] indices = X.indices
    cdef const floating[::1] data = X.data
    c.indptr = &indptr[0]
    c.indices = &indices[0] if indices.shape[0] else NULL
    c.data = &data[0] if data.shape[0] else NULL
    return c


cdef class Network:
    """A multi-layer perceptron as the kernels see it: layout, parameters, dtype, loss.

    Parameters
    ----------
    sizes : sequence of int
        Inputs, hidden widths, outputs.
    activations : sequence of str
        One per Linear layer (names from ``ACTIVATIONS``).
    loss : str
        A name from ``LOSSES``; cross-entropy needs an identity output layer.
    dtype : numpy.float32 or numpy.float64
    params : ndarray, optional
        The flat parameter buffer; used in place when it is a C-contiguous, aligned,
        writeable array of ``dtype`` and the right size, else copied. Zeros if omitted.
    delta : float > 0
        The threshold of the Huber loss (unused by the others).
    normalization : {None, "layer", "batch"}
        "layer": LayerNorm (scale gamma_l, shift beta_l; eps NORM_EPS) between each hidden
        layer's Linear part and its activation; its parameters follow b_l in params.
        "batch": BatchNorm there instead (same parameters; batch statistics in a Trainer's
        steps, which move the running ones (momentum BN_MOMENTUM); :meth:`forward` uses
        the running ones).
    stats : ndarray, optional
        With "batch": the running statistics, per hidden layer its running mean then its
        running variance (:attr:`stats`; used in place as params is). Means 0 and
        variances 1 if omitted.
    """

    def __init__(self, sizes, activations, str loss, dtype, params=None, double delta=1.0,
                 normalization=None, stats=None):
        cdef int L = len(sizes) - 1, l
        cdef Py_ssize_t p = 0
        if not 1 <= L <= MAX_LAYERS or len(activations) != L:
            raise ValueError(f"need 1 to {MAX_LAYERS} layers and one activation per layer")
        if not all(1 <= s <= WIDTH_LIMIT for s in sizes):
            raise ValueError(f"layer sizes must lie in [1, {WIDTH_LIMIT}]; got {sizes!r}")
        if any(a not in ACTIVATIONS for a in activations) or loss not in LOSSES:
            raise ValueError(f"unknown activation or loss: {activations!r}, {loss!r}")
        if loss in ("cross_entropy", "binary_cross_entropy") and \
                activations[L - 1] != "identity":
            raise ValueError("cross-entropy applies its own softmax (sigmoid): the output "
                             "layer must be 'identity'")
        self.dtype = np.dtype(dtype)
        if self.dtype not in DTYPES:
            raise ValueError(f"dtype must be float32 or float64; got {self.dtype}")
        self.is_double = self.dtype == np.float64
        self.loss = LOSSES[loss]
        if not delta > 0 or delta == INFINITY:
            raise ValueError(f"delta must be a finite number > 0; got {delta}")
        self.delta = delta
        if normalization is not None and normalization not in NORMALIZATIONS:
            raise ValueError(f"normalization must be None or one of {NORMALIZATIONS}; "
                             f"got {normalization!r}")
        self.normalization = normalization
        self.layout.norm = (NORM_NONE if normalization is None else
                            NORM_LAYER if normalization == "layer" else NORM_BATCH)
        self.layout.norm_eps = NORM_EPS
        self.layout.bn_momentum = BN_MOMENTUM
        self.layout.n_layers = L
        self.layout.sizes[0] = sizes[0]
        for l in range(1, L + 1):
            self.layout.sizes[l] = sizes[l]
            self.layout.acts[l] = ACTIVATIONS[activations[l - 1]]
            self.layout.w_off[l] = p
            p += <Py_ssize_t> sizes[l - 1] * sizes[l]
            self.layout.b_off[l] = p
            p += sizes[l]
            self.layout.g_off[l] = p
            if self.layout.norm and l < L:
                p += 2 * sizes[l]
        self.layout.n_params = p
        self.init_stats(stats)
        if params is None:
            self.params = np.zeros(p, dtype=self.dtype)
        elif (not isinstance(params, np.ndarray) or params.shape != (p,) or
                params.dtype != self.dtype):
            raise ValueError(
                f"params must be a flat {self.dtype} array of {p} values for layers "
                f"{tuple(sizes)}; got {getattr(params, 'dtype', type(params).__name__)} "
                f"of shape {np.shape(params)}"
            )
        else:
            # Unaligned buffers (protocol-5 pickles, Dask transfers) are copied: C reads
            # elements with aligned loads.
            self.params = np.require(params, requirements=["C", "A", "W"])
        # Prediction reads the weights through this pointer: a memoryview of them per
        # call cost about as much as the forward pass of a sparse row.
        self.params_data = <const void *> <size_t> self.params.ctypes.data

    cdef init_stats(self, stats):
        cdef int l, L = self.layout.n_layers
        cdef Py_ssize_t q = 0
        cdef size_t addr
        for l in range(1, L):
            self.layout.s_off[l] = q
            if self.layout.norm == NORM_BATCH:
                q += 2 * self.layout.sizes[l]
        if stats is None:
            self.stats = np.zeros(q, dtype=self.dtype)
            for l in range(1, L):
                self.stats[self.layout.s_off[l] + self.layout.sizes[l]:
                           self.layout.s_off[l] + 2 * self.layout.sizes[l]] = 1
        elif (not isinstance(stats, np.ndarray) or stats.shape != (q,)
              or stats.dtype != self.dtype):
            raise ValueError(
                f"stats must be a flat {self.dtype} array of {q} values (each hidden "
                f"layer's running mean and variance); got "
                f"{getattr(stats, 'dtype', type(stats).__name__)} of shape {np.shape(stats)}")
        else:
            self.stats = np.require(stats, requirements=["C", "A", "W"])
        self.layout.stats = NULL
        if q:   # the array is never replaced (only written in place): the pointer holds
            addr = self.stats.ctypes.data
            self.layout.stats = <void *> addr

    @property
    def sizes(self):
        """Layer sizes: inputs, hidden widths, outputs."""
        return tuple(self.layout.sizes[l] for l in range(self.layout.n_layers + 1))

    @property
    def n_params(self):
        """Number of parameters (weights and biases)."""
        return self.layout.n_params

    def slices(self):
        """``[(w_offset, b_offset), ...]``: where each layer's W and b start in params."""
        return [(self.layout.w_off[l], self.layout.b_off[l])
                for l in range(1, self.layout.n_layers + 1)]

    def norm_offsets(self):
        """Where each hidden layer's LayerNorm gamma starts in params (beta follows it);
        empty without normalization."""
        if not self.layout.norm:
            return []
        return [self.layout.g_off[l] for l in range(1, self.layout.n_layers)]

    def stats_offsets(self):
        """Where each hidden layer's running mean starts in stats (its running variance
        follows it); empty without normalization="batch"."""
        if self.layout.norm != NORM_BATCH:
            return []
        return [self.layout.s_off[l] for l in range(1, self.layout.n_layers)]

    def parallel_blocks(self, Py_ssize_t n_rows):
        """Row blocks :meth:`forward` makes of n_rows (1: it runs on the calling thread)."""
        return predict_blocks(n_rows, PREDICT_BLOCK_ROWS)

    def forward(self, X, out, *, bint softmax, int n_threads,
                Py_ssize_t max_block_rows=PREDICT_BLOCK_ROWS, int isa=FM_ISA_AUTO):
        """out = the network's output for X (softmax applied if `softmax`), without the GIL.

        X and out are C-contiguous, aligned arrays of the network's dtype, (n, inputs)
        and (n, outputs); or X is a CSR input (``_validation.CSR``, see check_csr), whose
        first layer runs fm_csr_matmul. `isa` picks an fm_dense variant (tests); the
        default is the best this CPU runs. NaN and infinity in X raise ValueError (found in
        the first layer's products, see fm_dense), as do finite inputs for which a layer's
        sums overflow (weights too large for the dtype). BatchNorm uses the running
        statistics (inference mode): a row's output does not depend on the other rows.
        """
        cdef int bad
        if max_block_rows < 1:
            raise ValueError("max_block_rows must be at least 1")
        if isa != FM_ISA_AUTO and not fm_dense_isa_available(isa):
            raise ValueError(f"this CPU cannot run fm_dense variant {isa}")
        if is_csr(X):
            check_csr(X, self.dtype, self.layout.sizes[0])
        if self.is_double:
            bad = predict[double](&self.layout, <const double *> self.params_data, X, out,
                                  softmax, n_threads, max_block_rows, isa)
        else:
            bad = predict[float](&self.layout, <const float *> self.params_data, X, out,
                                 softmax, n_threads, max_block_rows, isa)
        if bad:
            raise self.not_finite(X, bad)

    def not_finite(self, X, int bad):
        """The ValueError for what predict_block found (BAD_FIRST, BAD_LATER) in X's rows."""
        data = X.data if is_csr(X) else X
        if bad & BAD_FIRST and not np.isfinite(data).all():
            return ValueError(NOT_FINITE)
        if not np.isfinite(self.params).all():  # written into the weights' views
            return ValueError(
                "the model's parameters contain NaN or infinity; was one written into its "
                "weights or biases?"
            )
        return ValueError(
            f"the network's sums overflow {np.dtype(self.dtype).name} for these inputs, "
            f"which are finite (largest |x|: {np.abs(data).max(initial=0):.3g}, largest "
            f"|parameter|: {np.abs(self.params).max():.3g}): inputs that large need "
            "scaling; parameters that large mean a diverged model or a damaged file."
        )

    def outputs(self, X, bint softmax):
        """The outputs for X in a new array (softmax applied if `softmax`), or None.

        The path of a request: a few rows in an ndarray that :meth:`forward` reads as it
        stands (the network's dtype and width, C-contiguous, aligned, 1 to PARALLEL_ROWS - 1
        rows, which make one block) run on the calling thread, with no Python between the
        call and the kernels. Any other X returns None, for the caller to check, convert
        and call :meth:`forward`. NaN and infinity raise ValueError, as there.
        """
        cdef Py_buffer view
        if type(X) is not np.ndarray or X.dtype is not self.dtype:
            return None
        if not ready_rows(X, self.layout.sizes[0], PARALLEL_ROWS, &view):
            return None
        try:
            if self.is_double:
                return request[double](self, <const double *> view.buf, view.shape[0], X,
                                       softmax)
            return request[float](self, <const float *> view.buf, view.shape[0], X, softmax)
        finally:
            PyBuffer_Release(&view)

    def evaluate(self, X, y, out, *, int n_threads):
        """Summed loss and correct predictions of the network on (X, y).

        `y` holds int32 labels in [0, outputs) for a classifier, an (n, outputs) target
        array of the network's dtype for a regressor. `out` (n x outputs) receives the
        softmax probabilities (cross-entropy) or the outputs.
        Returns ``(loss_sum, n_correct)``; a regressor counts no correct predictions.
        """
        cdef int64_t n_correct = 0
        cdef double total
        cdef int k = self.layout.sizes[self.layout.n_layers]
        check_codes(self.loss, y, X.shape[0], k)
        self.forward(X, out, softmax=False, n_threads=n_threads)
        if self.is_double:
            total = loss_sum[double](self.loss, self.delta, out, y, &n_correct)
        else:
            total = loss_sum[float](self.loss, self.delta, out, y, &n_correct)
        return total, n_correct


def count_params(sizes, normalization=None):
    """Parameters (weights, biases, and the normalization's gamma and beta) of a network
    of these layer sizes."""
    norm = 2 * sum(sizes[1:len(sizes) - 1]) if normalization is not None else 0
    return sum(a * b + b for a, b in zip(sizes, sizes[1:])) + norm


def check_codes(int loss, y, Py_ssize_t n, int k):
    """The encoded y C reads: n int32 labels in [0, k) for classification, an (n, k)
    target array for regression (label encoding is ``_validation``'s job)."""
    cdef const int32_t[::1] labels
    cdef Py_ssize_t i
    cdef bint bad = False
    if n == 0:
        raise ValueError("X is empty")
    if uses_targets(loss):
        if not isinstance(y, np.ndarray) or y.shape != (n, k):
            raise ValueError(f"regression and multilabel need targets of shape ({n}, {k})")
        return
    if not isinstance(y, np.ndarray) or y.shape != (n,):
        raise ValueError(f"classification needs {n} labels")
    labels = y
    with nogil:
        for i in range(n):
            bad |= labels[i] < 0 or labels[i] >= k
    if bad:
        raise ValueError(f"labels must be encoded in [0, {k})")


def is_csr(X):
    """True if X is a CSR input as ``_validation.CSR`` holds it (not an ndarray)."""
    return not isinstance(X, np.ndarray) and hasattr(X, "indptr")


def check_csr(X, dtype, Py_ssize_t n_features):
    """The CSR X C reads (``_validation.CSR``): data of `dtype`, int32 column indices in
    [0, n_features) and int64 row pointers from 0, non-decreasing, to the number of
    nonzeros; every array 1-D, C-contiguous and aligned. C trusts these bounds, so they
    are checked here, once per call, in one pass over the indices."""
    cdef const int64_t[::1] indptr
    cdef const int32_t[::1] indices
    cdef Py_ssize_t n, i, nnz
    cdef bint bad = False
    n, width = X.shape
    for name, arr, dt in (("data", X.data, dtype), ("indices", X.indices, np.int32),
                          ("indptr", X.indptr, np.int64)):
        if not (isinstance(arr, np.ndarray) and arr.dtype == dt and arr.ndim == 1
                and arr.flags.c_contiguous and arr.flags.aligned):
            raise ValueError(f"a sparse X's {name} must be a C-contiguous aligned 1-D "
                             f"{np.dtype(dt)} array")
    if width != n_features:
        raise ValueError("X does not match the network")
    if n < 1:
        raise ValueError("X is empty")
    indptr = X.indptr
    indices = X.indices
    nnz = indices.shape[0]
    if indptr.shape[0] != n + 1 or X.data.shape[0] != nnz:
        raise ValueError("a sparse X needs n + 1 row pointers and one index per value")
    with nogil:
        bad = indptr[0] != 0 or indptr[n] != nnz
        for i in range(n):
            bad |= indptr[i] > indptr[i + 1]
        for i in range(nnz):
            bad |= indices[i] < 0 or indices[i] >= n_features
    if bad:
        raise ValueError(f"a sparse X's row pointers must rise from 0 to its {nnz} nonzeros "
                         f"and its column indices lie in [0, {n_features})")


cdef double loss_sum(int loss, double delta, floating[:, ::1] out, y,
                     int64_t *n_correct) except? -1:
    """The loss kernel over the outputs in `out` (see Network.evaluate)."""
    cdef const floating[:, ::1] targets
    cdef const int32_t[::1] labels
    cdef const floating *wp = NULL   # every row weighs 1
    cdef double total
    cdef Py_ssize_t n = out.shape[0], k = out.shape[1]
    if is_regression(loss):
        targets = y
        with nogil:
            total = regression_loss(loss, n, k, &out[0, 0], &targets[0, 0], wp, 0, delta,
                                    <floating *> NULL)
        return total
    if loss == LOSS_BINARY_XENT:
        targets = y
        with nogil:
            total = fm.sigmoid_xent(n, k, &out[0, 0], &targets[0, 0], wp, 0,
                                    <floating *> NULL, n_correct)
        return total
    labels = y
    with nogil:
        if loss == LOSS_CROSS_ENTROPY:
            total = fm.softmax_xent(n, k, &out[0, 0], &labels[0], wp, 0, 0,
                                    <floating *> NULL, n_correct)
        else:
            total = fm.mse(n, k, &out[0, 0], &labels[0], wp, 0, <floating *> NULL,
                           n_correct)
    return total


cdef inline int first_layer_runs(Py_ssize_t nr, Py_ssize_t fan_in, Py_ssize_t fan_out,
                                 const floating *A, const floating *W, const floating *bias,
                                 const floating *tail, int act, floating *Z, uint8_t *marks,
                                 int isa) noexcept nogil:
    """A block's first layer over the input features its rows use (images, one-hot
    columns), marked per MARK_ROWS rows: fewer rows leave more features zero in all of
    them (MNIST). Once a group uses every feature (dense data), the rest of the block is
    one product. The bits are fm_dense's whatever the split. Returns the finite flag."""
    cdef Py_ssize_t s = 0, ns, j, used
    cdef int ok = 1
    while s < nr:
        ns = min(<Py_ssize_t> MARK_ROWS, nr - s)
        mark_active(A + s * fan_in, ns, fan_in, marks)
        used = 0
        for j in range(fan_in):
            used += marks[j]
        if used == fan_in:
            ns = nr - s
        ok &= dense_runs(ns, fan_in, fan_out, A + s * fan_in, W, bias, tail, act,
                         Z + s * fan_out, marks, isa)
        s += ns
    return ok


cdef inline Py_ssize_t predict_blocks(Py_ssize_t n, Py_ssize_t max_block_rows) noexcept nogil:
    """Row blocks of a prediction of n rows: at most max_block_rows each, and 2 to 4 at
    least from PARALLEL_ROWS rows on, so they can run in parallel."""
    return max((n + max_block_rows - 1) // max_block_rows,
               min(4, n // (PARALLEL_ROWS // 2)), 1)


cdef int predict(const Layout *lay, const floating *params, X_obj,
                 floating[:, ::1] out, bint softmax, int n_threads,
                 Py_ssize_t max_block_rows, int isa) except -1:
    """Network.forward for one dtype; returns what predict_block found (0: all finite).

    X_obj: a C-contiguous array, or a CSR input check_csr has passed."""
    cdef const floating[:, ::1] X
    cdef Csr csr
    cdef const floating *xp = NULL
    cdef Py_ssize_t n = X_obj.shape[0]
    csr.indptr = NULL
    csr.indices = NULL
    csr.data = NULL
    if is_csr(X_obj):
        csr = csr_pointers(params, X_obj)
    else:
        X = X_obj
    if (X_obj.shape[1] != lay.sizes[0] or out.shape[0] != n
            or out.shape[1] != lay.sizes[lay.n_layers]):
        raise ValueError("X or out does not match the network")
    if n == 0:
        return 0
    if csr.indptr == NULL:
        xp = &X[0, 0]
    if not (aligned(xp, sizeof(floating)) and aligned(&out[0, 0], sizeof(floating))):
        raise ValueError("X and out must be aligned arrays")
    return predict_rows(lay, params, xp, &csr, &out[0, 0], n, softmax, n_threads,
                        max_block_rows, isa)


cdef object request(Network net, const floating *xp, Py_ssize_t n, X, bint softmax):
    """Network.outputs for one dtype: the n checked rows at xp (X's), in a new array."""
    cdef Py_buffer out
    cdef Csr dense
    cdef int bad
    cdef const Layout *lay = &net.layout
    cdef const floating *params = <const floating *> net.params_data
    result = np.empty((n, lay.sizes[lay.n_layers]), net.dtype)
    PyObject_GetBuffer(result, &out, PyBUF_WRITABLE)   # new: C-contiguous and aligned
    dense.indptr = NULL
    try:
        bad = predict_rows(lay, params, xp, &dense, <floating *> out.buf, n, softmax, 1,
                           PREDICT_BLOCK_ROWS, FM_ISA_AUTO)
    finally:
        PyBuffer_Release(&out)
    if bad:
        raise net.not_finite(X, bad)
    return result


cdef int predict_rows(const Layout *lay, const floating *params, const floating *xp,
                      const Csr *csr, floating *out, Py_ssize_t n, bint softmax,
                      int n_threads, Py_ssize_t max_block_rows, int isa) except -1:
    """The forward pass of n >= 1 checked rows (xp, or csr if csr.indptr) into out;
    returns what predict_block found in them, or-ed (0: all finite)."""
    cdef Py_ssize_t n_blocks, block_rows, b, tails_size = 0, need
    cdef Py_ssize_t ws_size = 0, h_off[MAX_LAYERS + 1], t_off[MAX_LAYERS + 1]
    cdef Py_ssize_t marks_off
    cdef int L = lay.n_layers, l, tid, bad = 0
    cdef floating small_ws[SMALL_WORKSPACE]
    cdef floating *buf
    cdef floating *tails
    n_blocks = predict_blocks(n, max_block_rows)
    block_rows = (n + n_blocks - 1) // n_blocks
    n_blocks = (n + block_rows - 1) // block_rows
    n_threads = <int> max(1, min(<Py_ssize_t> n_threads, n_blocks))
    # Per thread: the hidden activations of one block. Shared: the zero-padded last
    # columns of each W whose width is not a multiple of fm_dense's panel (the 10
    # outputs), packed once here and read by every block.
    for l in range(1, L):
        h_off[l] = ws_size
        ws_size += block_rows * lay.sizes[l]
    # And the marks of the input features the block's rows use (dense_runs).
    marks_off = -1
    if n > 1 and csr.indptr == NULL:
        marks_off = ws_size
        ws_size += (lay.sizes[0] + sizeof(floating) - 1) // sizeof(floating)
    if n > 1:
        for l in range(1, L + 1):
            t_off[l] = tails_size
            if l > 1 or csr.indptr == NULL:   # a sparse first layer reads W in place
                tails_size += fm_dense_tail_size(lay.sizes[l - 1], lay.sizes[l],
                                                 sizeof(floating))
    # A request's workspace fits on the stack: no allocation beyond the output.
    need = tails_size + ws_size * n_threads
    if need <= SMALL_WORKSPACE:
        buf = small_ws
    else:
        buf = <floating *> malloc(need * sizeof(floating))
        if buf == NULL:
            raise MemoryError()
    tails = buf
    buf = buf + tails_size
    try:
        with nogil:
            if n > 1:
                for l in range(1 if csr.indptr == NULL else 2, L + 1):
                    fm.dense_pack_tail(lay.sizes[l - 1], lay.sizes[l], params + lay.w_off[l],
                                       params + lay.b_off[l], tails + t_off[l])
            if n_threads <= 1:
                for b in range(n_blocks):
                    bad |= predict_block(lay, params, tails, t_off, buf, h_off, marks_off,
                                         xp, csr, out, n, block_rows, b, softmax, isa)
            else:
                for b in prange(n_blocks, num_threads=n_threads, schedule="dynamic"):
                    tid = threadid()
                    bad |= predict_block(lay, params, tails, t_off, buf + tid * ws_size,
                                         h_off, marks_off, xp, csr, out, n, block_rows, b,
                                         softmax, isa)
    finally:
        if tails != small_ws:
            free(tails)
    return bad


cdef int predict_block(const Layout *lay, const floating *params, const floating *tails,
                       const Py_ssize_t *t_off, floating *ws, const Py_ssize_t *h_off,
                       Py_ssize_t marks_off, const floating *X, const Csr *csr,
                       floating *out, Py_ssize_t n, Py_ssize_t block_rows, Py_ssize_t b,
                       bint softmax, int isa) noexcept nogil:
    """Forward pass of block b of X (dense, or csr if csr.indptr) into out; 0, or BAD_FIRST
    if the first layer's sums are not finite, BAD_LATER if a later layer's or the output
    are not. ws: the thread's hidden activations (h_off) and, from marks_off (-1: none),
    the marks of the features the block uses."""
    cdef Py_ssize_t r0 = b * block_rows, nr = min(block_rows, n - r0)
    cdef int L = lay.n_layers, k = lay.sizes[L], l, fan_in, fan_out, ok, act
    cdef bint norm
    cdef const floating *stats = <const floating *> lay.stats
    cdef const floating *inp = (X + r0 * lay.sizes[0]) if X != NULL else NULL
    cdef floating *z
    for l in range(1, L + 1):
        fan_in = lay.sizes[l - 1]
        fan_out = lay.sizes[l]
        norm = lay.norm != NORM_NONE and l < L
        act = FM_IDENTITY if norm else lay.acts[l]   # the normalization applies it
        z = out + r0 * k if l == L else ws + h_off[l]
        if l == 1 and csr.indptr != NULL:
            # Sparse X: its rows' nonzeros times rows of W (the block's row pointers start
            # at r0), then the NaN check on the products, as fm_dense does it.
            fm.csr_matmul(nr, fan_out, csr.indptr + r0, csr.indices,
                          <const floating *> csr.data, <const int64_t *> NULL,
                          params + lay.w_off[l], z, fan_out)
            ok = fm.all_finite(nr * fan_out, z)
            fm.bias_act(nr, fan_out, z, params + lay.b_off[l], act)
        elif n == 1:
            # One sample: fm_vecmat streams W once and skips the zeros of the input.
            fm.vecmat(fan_in, fan_out, inp, params + lay.w_off[l], z)
            ok = fm.all_finite(fan_out, z)
            fm.bias_act(1, fan_out, z, params + lay.b_off[l], act)
        elif l == 1 and marks_off >= 0:
            ok = first_layer_runs(nr, fan_in, fan_out, inp, params + lay.w_off[l],
                                  params + lay.b_off[l], tails + t_off[l], act, z,
                                  <uint8_t *> (ws + marks_off), isa)
        else:
            ok = fm.dense(nr, fan_in, fan_out, inp, fan_in, params + lay.w_off[l], fan_out,
                          params + lay.b_off[l], tails + t_off[l], act, z, fan_out, 0, isa)
        # NaN/inf in X show in the first layer's products (NaN propagates, inf * w is
        # inf or NaN): a test on fan_out columns instead of fan_in. Later, only weights
        # too large for the dtype make them.
        if not ok:
            return BAD_FIRST if l == 1 else BAD_LATER
        if norm and lay.norm == NORM_BATCH:   # the running statistics: one affine map
            fm.batch_norm_eval(nr, fan_out, z, stats + lay.s_off[l],
                               stats + lay.s_off[l] + fan_out, params + lay.g_off[l],
                               params + lay.g_off[l] + fan_out, lay.norm_eps, lay.acts[l])
        elif norm:
            fm.layer_norm(nr, fan_out, z, params + lay.g_off[l], params + lay.g_off[l] + fan_out,
                          lay.norm_eps, lay.acts[l], <floating *> NULL, <floating *> NULL)
        inp = z
    # A bias near the dtype's limit can still overflow the last layer's sums.
    if not fm.all_finite(nr * k, out + r0 * k):
        return BAD_LATER
    if softmax:
        fm.softmax(nr, k, out + r0 * k)
    return 0
