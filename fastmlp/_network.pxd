# cython: language_level=3
"""The compiled network (``Network``), shared with the trainer; the request gate, shared
with the int8 network."""
from cpython.buffer cimport PyObject_GetBuffer, PyBuffer_Release, PyBUF_STRIDES
from cython cimport floating
from libc.stdint cimport int32_t, int64_t, uint8_t, uint32_t, uint64_t, uintptr_t
from libc.string cimport memset

from fastmlp cimport _ckernels as fm

cdef enum:
    MAX_LAYERS = 64      # Linear layers
    # The first layer's runs of input features (active_runs): zero features fewer than
    # ZERO_GAP stay inside a run, at most MAX_RUNS runs.
    ZERO_GAP = 8
    MAX_RUNS = 64


cpdef enum Loss:
    LOSS_CROSS_ENTROPY = 0
    LOSS_MSE = 1             # squared error against one-hot targets (a classifier)
    LOSS_SQUARED_ERROR = 2   # regression: real targets instead of labels; the codes from
    LOSS_HUBER = 3           # here on are all regression losses
    LOSS_ABSOLUTE_ERROR = 4
    LOSS_POISSON = 5         # log link: the output is the log of the mean
    LOSS_BINARY_XENT = 6     # multilabel classifier: sigmoid + cross-entropy per label


cpdef enum Norm:
    NORM_NONE = 0
    NORM_LAYER = 1           # LayerNorm: row-local
    NORM_BATCH = 2           # BatchNorm: batch statistics in training, running ones after


cdef struct Layout:
    int n_layers                        # L, the number of Linear layers
    int sizes[MAX_LAYERS + 1]           # sizes[0] inputs ... sizes[L] outputs
    int acts[MAX_LAYERS + 1]            # activation code of layer l = 1..L
    Py_ssize_t w_off[MAX_LAYERS + 1]    # offsets of W_l (fan_in x fan_out, row-major)
    Py_ssize_t b_off[MAX_LAYERS + 1]    # and of b_l in the flat parameter buffer
    int norm                            # a Norm after each hidden layer's Linear part
    double norm_eps                     # its eps, inside the square root
    Py_ssize_t g_off[MAX_LAYERS + 1]    # with norm, hidden l's gamma_l then beta_l
    # NORM_BATCH: the Network's running statistics (not parameters): hidden l's running
    # mean at stats + s_off[l], its running variance after it; momentum of their update.
    void *stats
    Py_ssize_t s_off[MAX_LAYERS + 1]
    double bn_momentum
    Py_ssize_t n_params


cdef struct Csr:
    # A sparse X in CSR form (see check_csr): row i's values data[indptr[i]:indptr[i+1]]
    # (of the network's dtype) in columns indices[...]; indptr NULL for a dense X.
    const int64_t *indptr
    const int32_t *indices
    const void *data


cdef class Network:
    cdef Layout layout
    cdef readonly object params         # flat ndarray: W_1, b_1, W_2, b_2, ...
    cdef const void *params_data        # its data: never replaced, only written in place
    cdef readonly object dtype
    cdef readonly int loss
    cdef readonly double delta          # Huber's threshold
    cdef readonly object normalization  # None, "layer" or "batch"
    cdef readonly object stats          # BatchNorm's running means and variances (flat)
    cdef bint is_double
    # The thread tuner of this network's last training (a Trainer's), so that the next
    # fit (warm start, partial_fit, Dask's blocks) goes on from what it found.
    cdef fm.fm_tuner tuner
    cdef bint has_tuner
    cdef init_stats(self, stats)


cdef inline bint aligned(const void *p, size_t size) noexcept nogil:
    return (<uintptr_t> p) % size == 0


cdef inline bint ready_rows(object X, Py_ssize_t width, Py_ssize_t max_rows,
                           Py_buffer *view) except -1:
    """Whether the ndarray X (of the caller's dtype) is a request the kernels read as it
    stands: 2-D, 1 to max_rows - 1 rows of `width`, C-contiguous and aligned. If so, view
    holds X's buffer, for the caller to release. X's buffer, not a typed memoryview: a
    request pays for no format parsing or memoryview object (benches/results.md)."""
    PyObject_GetBuffer(X, view, PyBUF_STRIDES)
    if (view.ndim == 2 and 0 < view.shape[0] < max_rows and view.shape[1] == width
            and view.strides[1] == view.itemsize
            and (view.shape[0] == 1 or view.strides[0] == width * view.itemsize)
            and aligned(view.buf, view.itemsize)):
        return True
    PyBuffer_Release(view)
    return False


cdef inline bint is_regression(int loss) noexcept nogil:
    return LOSS_SQUARED_ERROR <= loss <= LOSS_POISSON


cdef inline bint uses_targets(int loss) noexcept nogil:
    """Rows of real targets (regression, and multilabel 0/1 rows) instead of labels."""
    return loss >= LOSS_SQUARED_ERROR


cdef inline double regression_loss(int loss, Py_ssize_t n, Py_ssize_t k, const floating *A,
                                   const floating *Y, const floating *w, double scale,
                                   double delta, floating *dA) noexcept nogil:
    """The regression loss `loss` (its fm_ kernel) of outputs A against targets Y."""
    if loss == LOSS_HUBER:
        return fm.huber(n, k, A, Y, w, scale, delta, dA)
    if loss == LOSS_ABSOLUTE_ERROR:
        return fm.absolute_error(n, k, A, Y, w, scale, dA)
    if loss == LOSS_POISSON:
        return fm.poisson(n, k, A, Y, w, scale, dA)
    return fm.squared_error(n, k, A, Y, w, scale, dA)


# -- the first layer over the input features its rows use (prediction and training) ----

cdef inline void mark_active(const floating *A, Py_ssize_t nr, Py_ssize_t width,
                             uint8_t *active) noexcept nogil:
    """active[j] = 1 where column j of the nr rows of A (width apart) holds any bit but
    +0's (NaN, inf and -0 count), else 0."""
    cdef Py_ssize_t r, j, used = 0
    cdef const uint32_t *a32 = <const uint32_t *> A
    cdef const uint64_t *a64 = <const uint64_t *> A
    memset(active, 0, width)
    for r in range(nr):
        if floating is float:
            for j in range(width):
                active[j] |= a32[r * width + j] != 0
        else:
            for j in range(width):
                active[j] |= a64[r * width + j] != 0
        if r == 0:   # a dense first row (tabular data) marks every feature
            for j in range(width):
                used += active[j]
            if used == width:
                return


cdef inline int active_runs(const uint8_t *active, Py_ssize_t i0, Py_ssize_t i1,
                            Py_ssize_t *runs) noexcept nogil:
    """The runs [runs[2r], runs[2r + 1]) of [i0, i1) that hold every active feature:
    fewer than ZERO_GAP inactive ones stay inside a run, and the MAX_RUNS-th run goes to
    the last active feature; one run of all [i0, i1) when the runs would hold more than
    7/8 of it (too few zeros to pay for a pass per run). Returns how many."""
    cdef Py_ssize_t i = i0, last, used = 0
    cdef int n = 0, r
    while True:
        while i < i1 and not active[i]:
            i += 1
        if i == i1:
            break
        runs[2 * n] = i
        last = i
        while i < i1 and (i - last < ZERO_GAP or n == MAX_RUNS - 1):
            if active[i]:
                last = i
            i += 1
        runs[2 * n + 1] = last + 1
        n += 1
        i = last + 1
    for r in range(n):
        used += runs[2 * r + 1] - runs[2 * r]
    if used * 8 > (i1 - i0) * 7:
        runs[0] = i0
        runs[1] = i1
        return 1
    return n


cdef inline int dense_runs(Py_ssize_t nr, Py_ssize_t fan_in, Py_ssize_t fan_out,
                           const floating *A, const floating *W, const floating *bias,
                           const floating *tail, int act, floating *Z,
                           const uint8_t *active, int isa) noexcept nogil:
    """fm_dense's Z = act(A @ W + bias) (A's rows fan_in apart, Z's fan_out) over the runs
    of `active` input features alone: a zero input adds +0 or -0 to a sum that started
    at +0, which changes no bit, so Z is the bits of the whole product. Rows of images and
    one-hot columns are zero in most features. `tail` (fm_dense's, or NULL) serves a
    run of all the features. Returns fm_dense's finite flag."""
    cdef Py_ssize_t runs[2 * MAX_RUNS]
    cdef int n = active_runs(active, 0, fan_in, runs), r, ok = 1
    if n == 0:   # Z = act(bias)
        return fm.dense(nr, 0, fan_out, A, fan_in, W, fan_out, bias, <const floating *> NULL,
                        act, Z, fan_out, 0, isa)
    for r in range(n):
        ok &= fm.dense(nr, runs[2 * r + 1] - runs[2 * r], fan_out, A + runs[2 * r], fan_in,
                       W + runs[2 * r] * fan_out, fan_out,
                       bias if r == n - 1 else <const floating *> NULL,
                       tail if runs[2 * r + 1] - runs[2 * r] == fan_in
                       else <const floating *> NULL,
                       act if r == n - 1 else fm.FM_IDENTITY, Z, fan_out, r > 0, isa)
    return ok
