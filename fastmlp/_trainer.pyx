# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
# cython: initializedcheck=False
"""``Trainer``: mini-batch training of a ``Network`` without the GIL.

Design, in three tiers (as scikit-learn's ``_loss.pyx.tp``):

1. ``csrc/``: the C kernels on a block of rows, and ``fm_dense``, our own GEMM tiles for
   the forward pass and the weight gradients A^T dZ of layers whose W fits in L2.
2. This file: the OpenMP loops, those kernels (also the backward dZ @ W^T, on a copy of
   W^T, see transposed_layer) and BLAS GEMMs (``_blas.pxd``: a wider layer's forward,
   weight gradient and backward, see blas_layer).
   A mini-batch step runs in two parallel phases, so the cores have one owner (OpenMP)
   and BLAS runs single-threaded inside each task:

   a. Row phase. The batch is cut into row blocks (block_rows, see block_rows_for); each
      block runs forward, loss and the backward chain of deltas on its own. Rows never
      interact, so no barrier is needed between layers.
   b. Parameter phase. Each weight gradient dW = A^T dZ is cut by its rows (the layer's
      inputs) into PARAM_PARTS parts; each part is one fm_dense_at over the whole batch
      followed by the optimizer update of exactly those parameters. No reduction across
      threads.

   The leading layers whose W passes L2 (wide_lead of them) run apart from (a), each
   over the whole batch in COLUMN_PARTS of its columns (wide_columns): their forward
   before (a), after the rows are gathered, and the deltas they pass back after it.
   Their GEMMs run on fm_dense where its AVX-512 variant runs, else on OpenBLAS
   (wide_on_blas).

   The blocks depend on the batch size alone and the parts are a fixed count, never the
   thread count, so the weights are bitwise identical for any number of threads.
3. Python (``training.py``): checks, one Trainer per fit, one ``epoch`` call per epoch.

A Trainer is built once per fit: it checks and binds the network, the data and the
optimizer state, and allocates the workspace and gradients; ``epoch`` then only checks
the order of the samples (C reads memory by it).
"""
from cython.parallel cimport prange
from libc.math cimport isfinite, INFINITY
from libc.stdint cimport int32_t, int64_t, uint8_t, uint64_t
from libc.string cimport memcpy, memset
from posix.time cimport clock_gettime, timespec, CLOCK_MONOTONIC

from cython cimport floating

from fastmlp cimport _ckernels as fm
from fastmlp._blas cimport gemm, single_thread_enter, single_thread_exit
from fastmlp._ckernels cimport (FM_IDENTITY, FM_ISA_AUTO, fm_hash64, fm_tuner, fm_tuner_follow,
                                fm_tuner_init, fm_tuner_resume, fm_tuner_step, fm_tuner_threads)
from fastmlp._network cimport (LOSS_BINARY_XENT, LOSS_CROSS_ENTROPY, MAX_LAYERS, MAX_RUNS,
                               NORM_BATCH, NORM_LAYER, NORM_NONE, Csr, Layout, Network,
                               active_runs, dense_runs, is_regression, mark_active,
                               regression_loss, uses_targets)

import numpy as np

from fastmlp._network import check_codes, check_csr, is_csr

cdef extern from "fm_fpu.h" nogil:
    unsigned int fm_denormals_off()
    void fm_fpu_restore(unsigned int old)

cdef extern from "Python.h":
    # Declared without Cython's `except -1`, so the exception a signal handler raises
    # stays set for the caller instead of being reported and dropped.
    int PyErr_CheckSignals()

cdef enum:
    MAX_BLOCKS = 256     # row blocks per mini-batch
    # The partition of a step (see the top): rows per block of the row phase (see
    # block_rows_for) and parts per weight matrix in the parameter phase.
    MIN_BLOCK_ROWS = 16
    MAX_BLOCK_ROWS = 128
    L2_WEIGHT_BYTES = 512 * 1024   # weights that stay in a core's L2 (see block_rows_for)
    PARAM_PARTS = 4
    COLUMN_PARTS = 2     # parts of a wide leading layer's columns (see wide_columns)

cpdef enum Optimizer:
    OPT_ADAM = 0
    OPT_SGD = 1
    OPT_ADAMW = 2        # Adam with decoupled weight decay; Adam's state layout

cpdef enum Status:
    STATUS_DONE = 0          # the epoch ran to its end
    STATUS_TIME = 1          # stopped at the deadline
    STATUS_NONFINITE = 2     # stopped on a NaN or inf mini-batch loss

OPTIMIZERS = {"adam": OPT_ADAM, "sgd": OPT_SGD, "adamw": OPT_ADAMW}
ADAM_FAMILY = ("adam", "adamw")   # the optimizers with two moments (state2)
MAX_STEPS = 1 << 62      # optimizer step counts beyond this are refused


cdef struct Workspace:
    # Offsets in the workspace buffer, each a (capacity x sizes[l]) block: activations
    # A_l (A_0: the gathered input rows), deltas D_l, dropout masks M_l and dropped
    # activations Ad_l, LayerNorm's normalized rows H_l (zhat, then D * zhat in the
    # backward pass) and output gradients G_l, with its per-row 1 / std (capacity each);
    # BatchNorm's H_l (zhat) and its batch mean and 1 / std per column (st_off, 2 sizes[l]),
    # with one buffer of per-block partial sums shared by its layers (part_off);
    # then per-row sample weights and regression target rows.
    Py_ssize_t a_off[MAX_LAYERS + 1]
    Py_ssize_t d_off[MAX_LAYERS + 1]
    Py_ssize_t m_off[MAX_LAYERS + 1]
    Py_ssize_t ad_off[MAX_LAYERS + 1]
    Py_ssize_t h_off[MAX_LAYERS + 1]
    Py_ssize_t g_off[MAX_LAYERS + 1]
    Py_ssize_t rstd_off[MAX_LAYERS + 1]
    Py_ssize_t st_off[MAX_LAYERS + 1]
    Py_ssize_t wt_off[MAX_LAYERS + 1]   # W_l^T for delta_rows (transposed_layer), or -1
    Py_ssize_t tr_off                   # D_l^T, then D_{l-1}^T, for wide_columns' fm_dense
    Py_ssize_t part_off
    Py_ssize_t w_off
    Py_ssize_t t_off
    Py_ssize_t size
    bint dropout
    bint sparse                         # X is CSR: no A_0, the first layer reads it
    bint wide_blas                      # layers beyond L2 run on OpenBLAS (wide_on_blas)
    int wide_lead                       # leading layers run by columns (wide_columns)
    Py_ssize_t block_rows               # rows per block of the row phase
    bint skip_zeros                     # the first layer skips zero input features


cdef struct Hyper:
    int loss
    int optimizer
    double lr, beta1, beta2, eps, momentum, l2, dropout
    double weight_decay                 # AdamW's decoupled decay (0 for the others)
    double smoothing                    # label smoothing of the cross-entropy
    double delta                        # Huber's threshold
    int64_t t                           # optimizer step, >= 1 during an update


cdef struct Buffers:
    # What a step reads and writes, as `floating *` of the network's dtype (void here:
    # a struct cannot be fused): the data, rows by sample index, and the trainer's arrays.
    const void *X                       # dense rows, or NULL for a sparse X (csr)
    Csr csr                             # a sparse X (csr.indptr NULL for a dense X)
    const int32_t *y                    # labels (classification) or NULL
    const void *targets                 # target rows (regression) or NULL
    const void *sample_weight           # or NULL
    void *params
    void *grads
    void *state1                        # Adam's first moment or SGD's velocity (or NULL)
    void *state2                        # Adam's second moment (or NULL)
    void *ws                            # the workspace (Workspace gives its layout)
    int32_t *ybuf                       # gathered labels
    # With skip_zeros, per row block which input features its rows use (1) or leave all
    # zero (0), sizes[0] bytes each; after the last block's, the batch's.
    uint8_t *active


cdef struct Batch:
    const int64_t *rows                 # sample indices of the mini-batch
    Py_ssize_t n
    double weight_sum                   # > 0
    uint64_t seed                       # dropout bits of this step


cdef Py_ssize_t block_rows_for(const Layout *lay, Py_ssize_t batch_size,
                               size_t elem) noexcept nogil:
    """Rows per block of the row phase, from the shape alone (never the threads).

    Every block streams all of W through its forward and backward GEMMs. Weights that
    stay in L2 cost little to stream again: blocks of MIN_BLOCK_ROWS leave blocks for
    many cores (8 at batch 128). 16 rows ran MNIST epochs about 20% faster than 8 on one
    Zen 3 thread (W read by 3 strips of tiles per 16 rows instead of 4, half the BLAS
    calls of the backward), 24 another 7% but 6 blocks at batch 128 (benches/results.md).
    Wider weights come from L3 or memory: half the batch per block (at most
    MAX_BLOCK_ROWS rows) streams them twice per step instead of batch / 16 times.
    """
    cdef Py_ssize_t w_bytes = 0
    cdef int l
    for l in range(1, lay.n_layers + 1):
        w_bytes += <Py_ssize_t> lay.sizes[l - 1] * lay.sizes[l] * elem
    if w_bytes <= L2_WEIGHT_BYTES:
        return MIN_BLOCK_ROWS
    return min(<Py_ssize_t> MAX_BLOCK_ROWS, max(<Py_ssize_t> MIN_BLOCK_ROWS,
                                                (batch_size + 1) // 2))


cdef inline bint wide_layer(Py_ssize_t fan_in, Py_ssize_t fan_out, size_t elem) noexcept nogil:
    """Whether layer fan_in x fan_out has a W beyond L2 (it streams from L3 or memory)."""
    return fan_in * fan_out * <Py_ssize_t> elem > L2_WEIGHT_BYTES


# Where the GEMMs of layers beyond L2 run: None chooses by the CPU (wide_on_blas); tests
# set "blas" or "fm_dense" to run either path on any CPU.
WIDE_GEMM = None


def wide_on_blas():
    """Whether layers beyond L2 train on OpenBLAS's GEMM rather than fm_dense's tiles.

    Small W stay on fm_dense, which reads them in place where OpenBLAS repacks W for every
    block of rows (MNIST). Beyond L2, OpenBLAS's packed panels ran the GEMMs of 784-2048-10
    and 3072-512-256-100 about 10% faster per epoch on a Zen 3 (AVX2), but fm_dense's
    AVX-512 tiles ran those GEMMs 1.6-1.9x as fast as OpenBLAS on one Zen 5 core (the
    epochs 1.5-1.7x), where this machine's OpenBLAS takes its AVX2 kernels
    (benches/results.md). The choice reads the CPU and the
    shapes, never the thread count, so the bits do not depend on it.
    """
    if WIDE_GEMM is not None:
        if WIDE_GEMM not in ("blas", "fm_dense"):
            raise ValueError(f"WIDE_GEMM must be None, 'blas' or 'fm_dense'; got {WIDE_GEMM!r}")
        return WIDE_GEMM == "blas"
    return fm.fm_dense_isa_best() != fm.FM_ISA_AVX512


cdef inline bint blas_layer(const Workspace *wsl, Py_ssize_t fan_in, Py_ssize_t fan_out,
                            size_t elem) noexcept nogil:
    """Whether layer fan_in x fan_out trains on OpenBLAS's GEMM (see wide_on_blas)."""
    return wsl.wide_blas and wide_layer(fan_in, fan_out, elem)


cdef inline bint transposed_layer(const Workspace *wsl, const Layout *lay, int l,
                                  size_t elem) noexcept nogil:
    """Whether layer l passes its deltas back by fm_dense on a copy of W_l^T.

    OpenBLAS's D @ W^T ran 10-16 GFLOP/s on one Zen 1 core wherever D was 256 or 512 wide
    (fm_dense on W^T 32-36, OpenBLAS's other shapes 30-35), and even elsewhere (Zen 3)
    fm_dense was as fast. The copy costs a transpose of the rows each parameter part
    updates. A layer on OpenBLAS keeps it for this too; a wide leading layer passes back
    by wide_columns; layer 1 passes nothing back.
    """
    return (l >= 2 and l > wsl.wide_lead
            and not blas_layer(wsl, lay.sizes[l - 1], lay.sizes[l], elem))


cdef void transpose_weights(const Layout *lay, const Workspace *wsl, const floating *params,
                            floating *ws) noexcept nogil:
    """Refresh every copy of W_l^T from W_l (before a run of steps: the caller may have
    changed the weights; each step's parameter phase keeps the copies current)."""
    cdef int l
    for l in range(2, lay.n_layers + 1):
        if wsl.wt_off[l] >= 0:
            fm.transpose(lay.sizes[l - 1], lay.sizes[l], params + lay.w_off[l], lay.sizes[l],
                         ws + wsl.wt_off[l], lay.sizes[l - 1])


cdef Workspace workspace_layout(const Layout *lay, Py_ssize_t capacity, bint dropout,
                                bint targets, size_t elem, bint sparse=False):
    cdef Workspace w
    cdef int L = lay.n_layers, l
    # A sparse X is read in place: no gathered A_0.
    cdef Py_ssize_t p = 0 if sparse else capacity * lay.sizes[0], widest = 0, tr_width = 0
    w.wide_blas = wide_on_blas()
    w.dropout = dropout
    w.sparse = sparse
    w.a_off[0] = 0
    for l in range(1, L + 1):
        w.a_off[l] = p
        w.d_off[l] = p + capacity * lay.sizes[l]
        p += 2 * capacity * lay.sizes[l]
        if dropout and l < L:
            w.m_off[l] = p
            w.ad_off[l] = p + capacity * lay.sizes[l]
            p += 2 * capacity * lay.sizes[l]
        if lay.norm == NORM_LAYER and l < L:
            w.h_off[l] = p
            w.g_off[l] = p + capacity * lay.sizes[l]
            w.rstd_off[l] = p + 2 * capacity * lay.sizes[l]
            p += (2 * lay.sizes[l] + 1) * capacity
        if lay.norm == NORM_BATCH and l < L:
            w.h_off[l] = p
            w.st_off[l] = p + capacity * lay.sizes[l]
            p += (capacity + 2) * lay.sizes[l]
            widest = max(widest, lay.sizes[l])
    w.block_rows = block_rows_for(lay, capacity, elem)
    w.skip_zeros = (not sparse and lay.norm != NORM_BATCH
                    and not wide_layer(lay.sizes[0], lay.sizes[1], elem))
    # LayerNorm needs whole rows between layers: with it, the first layer at most.
    w.wide_lead = 0
    if not sparse and lay.norm != NORM_BATCH:
        while (w.wide_lead < (1 if lay.norm == NORM_LAYER else L)
               and wide_layer(lay.sizes[w.wide_lead], lay.sizes[w.wide_lead + 1], elem)):
            w.wide_lead += 1
    # BatchNorm's partial sums: 2 rows of the widest hidden layer per row block.
    w.part_off = p
    p += 2 * widest * min((capacity + w.block_rows - 1) // w.block_rows,
                          <Py_ssize_t> MAX_BLOCKS)
    w.w_off = p
    p += capacity
    w.t_off = p
    if targets:
        p += capacity * lay.sizes[L]
    for l in range(1, L + 1):
        w.wt_off[l] = -1
        if transposed_layer(&w, lay, l, elem):
            w.wt_off[l] = p
            p += <Py_ssize_t> lay.sizes[l - 1] * lay.sizes[l]
    w.tr_off = p
    if not w.wide_blas:
        for l in range(2, w.wide_lead + 1):
            tr_width = max(tr_width, lay.sizes[l - 1] + lay.sizes[l])
        p += capacity * tr_width
    w.size = p
    return w


# The tuner of the process's last adaptive epoch: a fit of another network starts from
# it (fm_tuner_follow). Read and written with the GIL held.
cdef fm_tuner last_tuner
cdef bint has_last_tuner = False


def forget_last_tuner():
    """Start the next fit's thread tuner afresh, not from the last fit's (tests)."""
    global has_last_tuner
    has_last_tuner = False


cdef class Trainer:
    """Mini-batch training of a Network: workspace, gradients, optimizer state, partition.

    Parameters
    ----------
    network : Network
        Trained in place (its ``params``).
    X : ndarray of the network's dtype, (n, inputs), C-contiguous and aligned
        Or a CSR input (``_validation.CSR``, checked by ``_network.check_csr``): its
        first layer runs fm_csr_matmul and its weight gradient fm_csr_at.
    y : ndarray
        int32 labels in [0, outputs) (classifier), or (n, outputs) targets of the dtype
        (regressor).
    sample_weight : ndarray of the dtype, (n,), or None
    batch_size : int
        Rows per mini-batch (at most n; the workspace holds that many).
    n_threads : int
        OpenMP threads of each step (the most, with `adaptive_threads`); results do not
        depend on it.
    l2 : float
        L2 penalty ``0.5 * l2 * sum W^2`` (weights only), part of the gradient.
    dropout : float in [0, 1)
        Inverted-dropout rate of the hidden layers' outputs.
    label_smoothing : float in [0, 1)
        Label smoothing of the cross-entropy (torch.nn.CrossEntropyLoss's).
    adaptive_threads : bool
        Let csrc/fm_tuner.c choose, step by step, how many of the `n_threads` to use:
        fewer when they run faster (cores shared with other processes). It starts from
        what the network's last fit found (with the same `n_threads`), else from the level
        the process's last fit found.
    """
    cdef readonly Network network
    cdef const Layout *lay
    cdef Workspace wsl
    cdef Hyper h
    cdef readonly Py_ssize_t batch_size
    cdef readonly int n_threads
    cdef readonly object grads
    cdef object ws, ybuf, active, X, y, sample_weight, state1, state2
    cdef int64_t n_last                 # rows of the last step (for dropout_masks)
    cdef readonly bint adaptive_threads
    cdef fm_tuner tuner

    def __init__(self, Network network, X, y, sample_weight=None, *,
                 Py_ssize_t batch_size, int n_threads, double l2=0.0, double dropout=0.0,
                 double label_smoothing=0.0, bint adaptive_threads=False):
        dtype = network.dtype
        sparse = is_csr(X)
        if sparse:
            check_csr(X, dtype, network.layout.sizes[0])
        elif not (isinstance(X, np.ndarray) and X.dtype == dtype and X.ndim == 2
                  and X.flags.c_contiguous and X.flags.aligned):
            raise ValueError(f"X must be a C-contiguous aligned 2-D {dtype} array")
        if X.shape[1] != network.layout.sizes[0]:
            raise ValueError("X does not match the network")
        if batch_size < 1 or n_threads < 1:
            raise ValueError("batch_size and n_threads must be at least 1")
        if not (l2 >= 0 and isfinite(l2)) or not 0 <= dropout < 1:
            raise ValueError("l2 must be >= 0 and dropout in [0, 1)")
        if not 0 <= label_smoothing < 1:
            raise ValueError(f"label_smoothing must lie in [0, 1); got {label_smoothing}")
        if label_smoothing and network.loss != LOSS_CROSS_ENTROPY:
            raise ValueError("label_smoothing applies to the cross-entropy loss only")
        check_codes(network.loss, y, X.shape[0],
                      network.layout.sizes[network.layout.n_layers])
        if sample_weight is not None and not (
                isinstance(sample_weight, np.ndarray) and sample_weight.dtype == dtype
                and sample_weight.shape == (X.shape[0],)):
            raise ValueError(f"sample_weight must hold one {dtype} weight per row of X")
        self.network = network
        self.lay = &network.layout
        self.X = X
        self.y = np.require(y, dtype if uses_targets(network.loss) else np.int32,
                            ["C", "A"])
        self.sample_weight = (None if sample_weight is None
                              else np.require(sample_weight, requirements=["C", "A"]))
        self.batch_size = min(batch_size, X.shape[0])
        if network.layout.norm == NORM_BATCH and self.batch_size < 2:
            raise ValueError(
                "normalization='batch' needs mini-batches of at least 2 rows (a batch "
                f"variance); got {X.shape[0]} sample{'s' if X.shape[0] != 1 else ''} and "
                f"batch_size {batch_size}")
        self.n_threads = n_threads
        self.adaptive_threads = adaptive_threads
        if network.has_tuner and network.tuner.n_max == n_threads:
            self.tuner = network.tuner   # what the last fit of this network found
        elif has_last_tuner:
            fm_tuner_follow(&self.tuner, &last_tuner, n_threads, monotonic())
        else:
            fm_tuner_init(&self.tuner, n_threads, monotonic())
        self.h.loss = network.loss
        self.h.optimizer = -1
        self.h.weight_decay = 0
        self.h.l2 = l2
        self.h.dropout = dropout
        self.h.smoothing = label_smoothing
        self.h.delta = network.delta
        self.h.t = 0
        self.wsl = workspace_layout(self.lay, self.batch_size, dropout > 0,
                                    uses_targets(network.loss), dtype.itemsize, sparse)
        self.ws = np.empty(self.wsl.size, dtype=dtype)
        self.ybuf = np.empty(self.batch_size, dtype=np.int32)
        self.active = None   # the first layer's marks (Buffers.active)
        if self.wsl.skip_zeros:
            self.active = np.empty((row_blocks(&self.wsl, self.batch_size) + 1)
                                   * network.layout.sizes[0], dtype=np.uint8)
        self.grads = np.zeros_like(network.params)
        self.n_last = 0

    @staticmethod
    def workspace_bytes(Network network, Py_ssize_t batch_size, double dropout,
                        bint sparse=False):
        """Bytes a Trainer of mini-batches of batch_size rows allocates (workspace,
        gradients), for a memory check before it does; `sparse`: for a CSR X."""
        cdef Workspace w = workspace_layout(&network.layout, batch_size, dropout > 0,
                                            uses_targets(network.loss),
                                            network.dtype.itemsize, sparse)
        cdef Py_ssize_t marks = 0
        if w.skip_zeros:
            marks = (row_blocks(&w, batch_size) + 1) * network.layout.sizes[0]
        return (w.size + network.layout.n_params) * network.dtype.itemsize + marks

    def set_optimizer(self, str name, dict state, *, betas=(0.9, 0.999), double eps=1e-8,
                      double momentum=0.9, double weight_decay=0.0):
        """Use optimizer `name` ("adam", "adamw" or "sgd") with its memory in `state`.

        state: ``{"t": steps so far, "state1": ..., "state2": ...}``, arrays shaped like
        the parameters (Adam's two moments, or SGD's velocity in state1), updated in
        place; ``t`` is read here and kept in :attr:`t`. `weight_decay` is AdamW's
        decoupled decay of every parameter (weights and biases, as torch.optim.AdamW).
        """
        if name not in OPTIMIZERS:
            raise ValueError(f"optimizer must be one of {tuple(OPTIMIZERS)}; got {name!r}")
        if not (weight_decay >= 0 and isfinite(weight_decay)):
            raise ValueError(f"weight_decay must be a finite number >= 0; got {weight_decay}")
        if weight_decay and name != "adamw":
            raise ValueError("weight_decay is AdamW's decoupled decay: use optimizer='adamw' "
                             "(or l2 for a penalty in the gradient)")
        s1, s2, t = state["state1"], state["state2"], state["t"]
        shape, dtype = self.network.params.shape, self.network.dtype
        for s in ((s1, s2) if name in ADAM_FAMILY else (s1,)):
            if not (isinstance(s, np.ndarray) and s.shape == shape and s.dtype == dtype
                    and s.flags.c_contiguous and s.flags.aligned and s.flags.writeable):
                raise ValueError("optimizer state does not match the parameters")
        if not 0 <= t <= MAX_STEPS:
            raise ValueError(f"the optimizer step count {t} is out of range")
        self.h.optimizer = OPTIMIZERS[name]
        self.h.beta1, self.h.beta2 = betas
        self.h.eps = eps
        self.h.momentum = momentum
        self.h.weight_decay = weight_decay
        self.h.t = t
        self.state1, self.state2 = s1, s2 if name in ADAM_FAMILY else s1

    @property
    def threads(self):
        """Threads the next step will use (less than n_threads when the tuner chose so)."""
        return fm_tuner_threads(&self.tuner) if self.adaptive_threads else self.n_threads

    @property
    def t(self):
        """Optimizer steps taken so far (Adam's bias correction uses it)."""
        return self.h.t

    def epoch(self, order, lr, uint64_t seed, double deadline=INFINITY,
              bint check_interrupt=False):
        """One epoch of mini-batches over ``X[order]``, without the GIL.

        `lr` is one learning rate, or one per mini-batch (``ceil(len(order) /
        batch_size)`` of them, float64) for schedules that change within an epoch.

        Returns ``(loss_sum, weight_sum, n_correct, n_seen, status)``: the summed
        (weighted) data loss, the summed sample weights and the correct predictions of
        the mini-batches run, the samples in them (a batch whose weights are all zero is
        skipped), and STATUS_DONE, STATUS_TIME (the monotonic clock passed `deadline`) or
        STATUS_NONFINITE (a mini-batch loss was NaN or inf; the epoch stops after that
        step). With `check_interrupt`, an exception raised by a signal handler (Ctrl-C)
        propagates at the next mini-batch boundary, with the parameters as the last
        completed step left them.
        """
        self.check_ready(order)
        lrs = np.ascontiguousarray(lr, dtype=np.float64).reshape(-1)
        n_batches = (len(order) + self.batch_size - 1) // self.batch_size
        if lrs.shape[0] == 1:
            lrs = np.full(max(n_batches, 1), lrs[0])
        if lrs.shape[0] != n_batches:
            raise ValueError(f"lr must be one value or one per mini-batch ({n_batches})")
        if not (np.all(lrs >= 0) and np.all(np.isfinite(lrs))):
            raise ValueError("learning rates must be finite and >= 0")
        if self.network.is_double:
            return run_epoch[double](self, self.network.params, order, lrs, seed, deadline,
                                     check_interrupt)
        return run_epoch[float](self, self.network.params, order, lrs, seed, deadline,
                                check_interrupt)

    def step(self, batch, double lr, uint64_t seed):
        """One mini-batch over the samples ``batch`` (as an epoch runs it); its mean loss."""
        batch = np.ascontiguousarray(batch, dtype=np.int64)
        if not 1 <= len(batch) <= self.batch_size:
            raise ValueError(f"a batch holds 1 to {self.batch_size} samples")
        if self.lay.norm == NORM_BATCH and len(batch) < 2:
            raise ValueError("normalization='batch' needs a batch of at least 2 samples")
        loss_sum, weight_sum, _, _, _ = self.epoch(batch, lr, seed)
        return loss_sum / weight_sum if weight_sum else float("nan")

    def dropout_masks(self):
        """Copies of the dropout masks of the last step, one (rows, width) per hidden layer.

        Entries are 0 (dropped) or 1 / (1 - dropout); rows in the order of the batch.
        """
        if not self.wsl.dropout:
            return []
        ws = self.ws
        return [ws[self.wsl.m_off[l]:self.wsl.m_off[l] + self.n_last * self.lay.sizes[l]]
                .reshape(self.n_last, self.lay.sizes[l]).copy()
                for l in range(1, self.lay.n_layers)]

    def gradient(self):
        """Objective over all the bound data as one batch, and its gradient in ``grads``.

        The objective is the weighted mean loss plus ``0.5 * l2 * sum W^2``; the same
        code as a training step runs, with no update. Needs ``batch_size`` >= the rows.
        """
        cdef Py_ssize_t n
        n = self.X.shape[0]
        if n > self.batch_size:
            raise ValueError("gradient() takes all rows as one batch: batch_size >= rows")
        if self.h.dropout > 0:
            raise ValueError("the gradient is of the network without dropout")
        if self.lay.norm == NORM_BATCH and n < 2:
            raise ValueError("normalization='batch' needs at least 2 rows (a batch variance)")
        if self.network.is_double:
            return full_gradient[double](self, self.network.params)
        return full_gradient[float](self, self.network.params)

    cdef int check_ready(self, order) except -1:
        cdef const int64_t[::1] o = order
        cdef Py_ssize_t i, n
        cdef bint bad = False
        if self.h.optimizer < 0:
            raise ValueError("choose the optimizer first (set_optimizer)")
        n = self.X.shape[0]
        with nogil:
            for i in range(o.shape[0]):
                bad |= o[i] < 0 or o[i] >= n
        if bad:
            raise ValueError(f"sample indices must lie in [0, {n})")
        return 0


# -- the fused engine: Python above, nogil below ---------------------------------------

cdef Buffers buffers(Trainer tr, floating[::1] params) except *:
    """Pointers to the trainer's arrays for one call (params selects the dtype)."""
    cdef Buffers buf
    cdef const floating[:, ::1] X
    cdef const int64_t[::1] indptr
    cdef const int32_t[::1] indices
    cdef const floating[::1] data
    cdef const floating[:, ::1] T
    cdef const int32_t[::1] y
    cdef const floating[::1] w
    cdef floating[::1] g = tr.grads
    cdef floating[::1] ws = tr.ws
    cdef floating[::1] s1
    cdef floating[::1] s2
    cdef int32_t[::1] ybuf = tr.ybuf
    cdef uint8_t[::1] active
    buf.X = NULL
    buf.csr.indptr = NULL
    buf.csr.indices = NULL
    buf.csr.data = NULL
    if tr.wsl.sparse:
        indptr, indices, data = tr.X.indptr, tr.X.indices, tr.X.data
        buf.csr.indptr = &indptr[0]
        # No nonzeros at all: no value is ever read.
        buf.csr.indices = &indices[0] if indices.shape[0] else NULL
        buf.csr.data = &data[0] if data.shape[0] else NULL
    else:
        X = tr.X
        buf.X = &X[0, 0]
    buf.y = NULL
    buf.targets = NULL
    buf.sample_weight = NULL
    buf.state1 = NULL
    buf.state2 = NULL
    if uses_targets(tr.h.loss):
        T = tr.y
        buf.targets = &T[0, 0]
    else:
        y = tr.y
        buf.y = &y[0]
    if tr.sample_weight is not None:
        w = tr.sample_weight
        buf.sample_weight = &w[0]
    if tr.state1 is not None:
        s1 = tr.state1
        s2 = tr.state2
        buf.state1 = &s1[0]
        buf.state2 = &s2[0]
    buf.params = &params[0]
    buf.grads = &g[0]
    buf.ws = &ws[0]
    buf.ybuf = &ybuf[0]
    buf.active = NULL
    if tr.active is not None:
        active = tr.active
        buf.active = &active[0]
    return buf


cdef tuple run_epoch(Trainer tr, floating[::1] params, const int64_t[::1] order,
                     const double[::1] lrs, uint64_t seed, double deadline,
                     bint check_interrupt):
    """Trainer.epoch for one dtype."""
    global last_tuner, has_last_tuner
    cdef Buffers buf = buffers(tr, params)
    cdef Batch b
    cdef Py_ssize_t n = order.shape[0], start = 0, n_seen = 0
    cdef double loss_sum = 0, weight_sum = 0, batch_loss
    cdef int64_t n_correct = 0
    cdef int status = STATUS_DONE, interrupted = 0, steps = 0
    with nogil:
        transpose_weights(tr.lay, &tr.wsl, &params[0], <floating *> buf.ws)
        single_thread_enter()
        fm_tuner_resume(&tr.tuner, monotonic())
        while start < n:
            tr.h.lr = lrs[start // tr.batch_size]
            b.rows = &order[start]
            b.n = min(tr.batch_size, n - start)
            b.weight_sum = batch_weight(<const floating *> buf.sample_weight, b.rows, b.n)
            start += b.n
            if b.weight_sum <= 0:   # every sample weighs 0: nothing to learn from
                continue
            if b.n < 2 and tr.lay.norm == NORM_BATCH:
                continue   # a last batch of one row has no batch variance: skipped
            tr.h.t += 1
            b.seed = fm_hash64(seed, tr.h.t)
            batch_loss = step(tr.lay, &tr.wsl, &tr.h, &buf, &b, <floating *> buf.ws,
                              fm_tuner_threads(&tr.tuner) if tr.adaptive_threads
                              else tr.n_threads, True, &n_correct)
            if tr.adaptive_threads:
                fm_tuner_step(&tr.tuner, b.n, monotonic())
            tr.n_last = b.n
            loss_sum += batch_loss
            weight_sum += b.weight_sum
            n_seen += b.n
            steps += 1
            if not isfinite(batch_loss):
                status = STATUS_NONFINITE
                break
            if monotonic() > deadline:
                status = STATUS_TIME
                break
            if check_interrupt and steps % 8 == 0 and check_signals():
                interrupted = 1
                break
        single_thread_exit()
    if tr.adaptive_threads:
        tr.network.tuner = tr.tuner
        tr.network.has_tuner = True
        last_tuner = tr.tuner
        has_last_tuner = True
    if interrupted:
        reraise()
    return loss_sum, weight_sum, n_correct, n_seen, status


cdef double full_gradient(Trainer tr, floating[::1] params) except? -1:
    """Trainer.gradient for one dtype."""
    cdef Buffers buf = buffers(tr, params)
    cdef Batch b
    cdef const Layout *lay = tr.lay
    cdef Py_ssize_t i, n = tr.X.shape[0]
    cdef int64_t[::1] order = np.arange(n, dtype=np.int64)
    cdef int64_t n_correct = 0
    cdef double total, penalty = 0
    cdef int l
    cdef const floating *p = &params[0]
    b.rows = &order[0]
    b.n = n
    b.seed = 0
    with nogil:
        b.weight_sum = batch_weight(<const floating *> buf.sample_weight, b.rows, n)
    if not b.weight_sum > 0:
        raise ValueError("the sample weights sum to zero")
    with nogil:
        transpose_weights(lay, &tr.wsl, &params[0], <floating *> buf.ws)
        single_thread_enter()
        total = step(lay, &tr.wsl, &tr.h, &buf, &b, <floating *> buf.ws, tr.n_threads,
                     False, &n_correct)
        single_thread_exit()
        for l in range(1, lay.n_layers + 1):
            for i in range(<Py_ssize_t> lay.sizes[l - 1] * lay.sizes[l]):
                penalty += <double> p[lay.w_off[l] + i] * p[lay.w_off[l] + i]
    return total / b.weight_sum + 0.5 * tr.h.l2 * penalty


cdef double step(const Layout *lay, const Workspace *wsl, const Hyper *h,
                 const Buffers *buf, const Batch *b, floating *ws, int n_threads,
                 bint update, int64_t *n_correct) noexcept nogil:
    """One mini-batch: the row phase, then the parameter phase; its summed loss.

    ws: the workspace (its layout in wsl), typed: it fixes the dtype of buf's pointers.
    """
    cdef double block_loss[MAX_BLOCKS]
    cdef int64_t block_correct[MAX_BLOCKS]
    # The partition depends on the batch size alone, never on the thread count.
    cdef int n_blocks = row_blocks(wsl, b.n)
    cdef int i, item, l, L = lay.n_layers
    cdef Py_ssize_t r0, r1
    cdef double total = 0
    cdef unsigned int fpu
    if lay.norm == NORM_BATCH and L > 1:
        bn_rows_phase(lay, wsl, h, buf, b, ws, n_threads, n_blocks, update, block_loss,
                      block_correct)
    else:
        if wsl.wide_lead:
            for i in prange(n_blocks, num_threads=n_threads, schedule="dynamic"):
                r0 = i * b.n // n_blocks
                r1 = (i + 1) * b.n // n_blocks
                gather_rows(lay, wsl, buf, b, ws, r0, r1 - r0)
            for l in range(1, wsl.wide_lead + 1):
                for item in prange(COLUMN_PARTS, num_threads=n_threads, schedule="dynamic"):
                    fpu = fm_denormals_off()
                    wide_columns(lay, wsl, buf, ws, b.n, l, item, 0)
                    fm_fpu_restore(fpu)
                if wsl.dropout and l < wsl.wide_lead:
                    for i in prange(n_blocks, num_threads=n_threads, schedule="dynamic"):
                        r0 = i * b.n // n_blocks
                        r1 = (i + 1) * b.n // n_blocks
                        dropout_rows(lay, wsl, h, ws, b.seed, l, r0, r1 - r0)
        for i in prange(n_blocks, num_threads=n_threads, schedule="dynamic"):
            r0 = i * b.n // n_blocks
            r1 = (i + 1) * b.n // n_blocks
            block_correct[i] = 0
            fpu = fm_denormals_off()   # Adam's decaying moments make denormals
            block_loss[i] = rows_step(lay, wsl, h, buf, b, ws, i, r0, r1 - r0,
                                      &block_correct[i])
            fm_fpu_restore(fpu)
    # The deltas the wide leading layers pass back: D_{l-1} from D_l, for the whole batch.
    for l in range(wsl.wide_lead, 1, -1):
        if not wsl.wide_blas:
            for item in prange(COLUMN_PARTS, num_threads=n_threads, schedule="dynamic"):
                transpose_deltas(lay, wsl, ws, b.n, l, item)
        for item in prange(COLUMN_PARTS, num_threads=n_threads, schedule="dynamic"):
            fpu = fm_denormals_off()
            wide_columns(lay, wsl, buf, ws, b.n, l, item, 1)
            fm_fpu_restore(fpu)
    # Dynamic scheduling: a thread the OS has paused does not hold up the others.
    for item in prange(L * PARAM_PARTS, num_threads=n_threads, schedule="dynamic"):
        fpu = fm_denormals_off()
        param_part(lay, wsl, h, buf, ws, b.n, item // PARAM_PARTS + 1, item % PARAM_PARTS,
                   update, b.rows)
        fm_fpu_restore(fpu)
    for i in range(n_blocks):   # fixed order: the loss does not depend on the threads
        total += block_loss[i]
        n_correct[0] += block_correct[i]
    return total


cdef double rows_step(const Layout *lay, const Workspace *wsl, const Hyper *h,
                      const Buffers *buf, const Batch *b, floating *ws, int block,
                      Py_ssize_t r0, Py_ssize_t nr, int64_t *n_correct) noexcept nogil:
    """Row phase for row block `block`, rows r0..r0+nr of the batch: gather, forward,
    loss and dZ, backward chain of deltas; with wide_lead, what wide_columns does is left
    out (the gather, those layers' linear part and the deltas they pass back). Returns the
    rows' summed (weighted) loss."""
    cdef int L = lay.n_layers, l, width
    cdef const floating *params = <const floating *> buf.params
    cdef double loss
    if not wsl.wide_lead:
        gather_rows(lay, wsl, buf, b, ws, r0, nr)
    forward_rows(lay, wsl, h, buf, ws, b.seed, block, r0, nr, b.rows + r0)
    loss = loss_rows(lay, wsl, h, buf, b, ws, r0, nr, n_correct)
    for l in range(L, max(wsl.wide_lead, 1), -1):
        # D_{l-1} = D_l @ W_l^T, then through dropout and the activation of layer l - 1.
        delta_rows(lay, wsl, buf, ws, l, r0, nr)
        if lay.norm == NORM_LAYER:   # then through LayerNorm, keeping what its
            width = lay.sizes[l - 1]   # parameters' gradients need
            fm.layer_norm_backward(nr, width, params + lay.g_off[l - 1],
                                   (ws + wsl.rstd_off[l - 1] + r0),
                                   (ws + wsl.h_off[l - 1] + r0 * width),
                                   (ws + wsl.d_off[l - 1] + r0 * width),
                                   (ws + wsl.g_off[l - 1] + r0 * width))
    return loss


cdef inline void gather_rows(const Layout *lay, const Workspace *wsl, const Buffers *buf,
                             const Batch *b, floating *ws, Py_ssize_t r0,
                             Py_ssize_t nr) noexcept nogil:
    """Copy rows r0..r0+nr of the batch (inputs, labels or targets, weights) into the
    workspace."""
    cdef int L = lay.n_layers, d0 = lay.sizes[0], k = lay.sizes[L]
    cdef Py_ssize_t r, src
    cdef const floating *X = <const floating *> buf.X
    cdef const floating *targets = <const floating *> buf.targets
    cdef const floating *sw = <const floating *> buf.sample_weight
    cdef floating *a0 = (ws + wsl.a_off[0] + r0 * d0)
    cdef floating *trow = (ws + wsl.t_off + r0 * k)
    cdef floating *wrow = (ws + wsl.w_off + r0) if sw != NULL else NULL
    cdef int32_t *yrow = buf.ybuf + r0
    for r in range(nr):
        src = b.rows[r0 + r]
        if X != NULL:   # a sparse X is read in place by the first layer
            memcpy(a0 + r * d0, X + src * d0, d0 * sizeof(floating))
        if targets != NULL:
            memcpy(trow + r * k, targets + src * k, k * sizeof(floating))
        else:
            yrow[r] = buf.y[src]
        if wrow != NULL:
            wrow[r] = sw[src]


cdef inline double loss_rows(const Layout *lay, const Workspace *wsl, const Hyper *h,
                             const Buffers *buf, const Batch *b, floating *ws, Py_ssize_t r0,
                             Py_ssize_t nr, int64_t *n_correct) noexcept nogil:
    """The rows' summed loss, and their output deltas D_L."""
    cdef int L = lay.n_layers, k = lay.sizes[L]
    cdef const floating *sw = <const floating *> buf.sample_weight
    cdef floating *zL = (ws + wsl.a_off[L] + r0 * k)
    cdef floating *dL = (ws + wsl.d_off[L] + r0 * k)
    cdef floating *trow = (ws + wsl.t_off + r0 * k)
    cdef floating *wrow = (ws + wsl.w_off + r0) if sw != NULL else NULL
    cdef int32_t *yrow = buf.ybuf + r0
    cdef double scale = 1.0 / b.weight_sum, loss
    if is_regression(h.loss):
        loss = regression_loss(h.loss, nr, k, zL, trow, wrow, scale, h.delta, dL)
    elif h.loss == LOSS_BINARY_XENT:   # its sigmoid is part of the loss
        loss = fm.sigmoid_xent(nr, k, zL, trow, wrow, scale, dL, n_correct)
    elif h.loss == LOSS_CROSS_ENTROPY:   # its softmax is part of the loss
        loss = fm.softmax_xent(nr, k, zL, yrow, wrow, scale, h.smoothing, dL, n_correct)
    else:
        loss = fm.mse(nr, k, zL, yrow, wrow, scale, dL, n_correct)
    if h.loss != LOSS_CROSS_ENTROPY and h.loss != LOSS_BINARY_XENT:
        fm.act_backward(nr, k, zL, <floating *> NULL, dL, lay.acts[L])
    return loss


cdef inline void delta_rows(const Layout *lay, const Workspace *wsl, const Buffers *buf,
                            floating *ws, int l, Py_ssize_t r0, Py_ssize_t nr) noexcept nogil:
    """D_{l-1} = D_l @ W_l^T for rows r0..r0+nr, through dropout and layer l - 1's
    activation."""
    cdef int width = lay.sizes[l - 1]
    cdef const floating *params = <const floating *> buf.params
    cdef const floating *mask
    if wsl.wt_off[l] >= 0:   # see transposed_layer
        fm.dense(nr, lay.sizes[l], width, (ws + wsl.d_off[l] + r0 * lay.sizes[l]),
                 lay.sizes[l], (ws + wsl.wt_off[l]), width, <const floating *> NULL,
                 <const floating *> NULL, FM_IDENTITY, (ws + wsl.d_off[l - 1] + r0 * width),
                 width, 0, FM_ISA_AUTO)
    else:
        gemm(False, True, <int> nr, width, lay.sizes[l], <floating> 1,
             (ws + wsl.d_off[l] + r0 * lay.sizes[l]), lay.sizes[l],
             params + lay.w_off[l], lay.sizes[l], <floating> 0,
             (ws + wsl.d_off[l - 1] + r0 * width), width)
    mask = (ws + wsl.m_off[l - 1] + r0 * width) if wsl.dropout else NULL
    fm.act_backward(nr, width, (ws + wsl.a_off[l - 1] + r0 * width), mask,
                    (ws + wsl.d_off[l - 1] + r0 * width), lay.acts[l - 1])


cdef void forward_rows(const Layout *lay, const Workspace *wsl, const Hyper *h,
                       const Buffers *buf, floating *ws, uint64_t seed, int block,
                       Py_ssize_t r0, Py_ssize_t nr, const int64_t *rows) noexcept nogil:
    """Forward pass of row block `block`, rows r0..r0+nr of the workspace (A_0
    gathered), into A_1..A_L; with dropout, hidden layers also write their masks and
    dropped activations. A sparse X's first layer reads samples `rows` (the block's) from
    the CSR arrays instead."""
    cdef int L = lay.n_layers, l, fan_out
    cdef bint norm
    cdef const floating *params = <const floating *> buf.params
    for l in range(1, L + 1):
        fan_out = lay.sizes[l]
        norm = lay.norm == NORM_LAYER and l < L
        # LayerNorm applies the activation
        if l > wsl.wide_lead:
            linear_rows(lay, wsl, buf, ws, l, block, r0, nr, rows,
                        FM_IDENTITY if norm else lay.acts[l])
        if norm:
            fm.layer_norm(nr, fan_out, (ws + wsl.a_off[l] + r0 * fan_out),
                          params + lay.g_off[l], params + lay.g_off[l] + fan_out,
                          lay.norm_eps, lay.acts[l], (ws + wsl.h_off[l] + r0 * fan_out),
                          (ws + wsl.rstd_off[l] + r0))
        if wsl.dropout and l < L and l >= wsl.wide_lead:
            dropout_rows(lay, wsl, h, ws, seed, l, r0, nr)


cdef inline void linear_rows(const Layout *lay, const Workspace *wsl, const Buffers *buf,
                             floating *ws, int l, int block, Py_ssize_t r0, Py_ssize_t nr,
                             const int64_t *rows, int act) noexcept nogil:
    """A_l = act(input W_l + b_l) for rows r0..r0+nr (row block `block`, or -1 outside
    the row phase); the input is A_{l-1}, its dropped copy with dropout, or for l = 1 a
    sparse X's samples `rows`.

    fm_dense reads W in place (unlike OpenBLAS, which repacks W for every block of a few
    rows), its last n % 16 columns through a padded copy per block (tail NULL: W changes
    every step); a W beyond L2 may go to OpenBLAS (blas_layer). With skip_zeros, the first
    layer runs over the block's runs of input features that are not all zero.
    """
    cdef int fan_in = lay.sizes[l - 1], fan_out = lay.sizes[l]
    cdef const floating *params = <const floating *> buf.params
    cdef const floating *inp
    cdef floating *z = (ws + wsl.a_off[l] + r0 * fan_out)
    if l == 1 and wsl.sparse:
        fm.csr_matmul(nr, fan_out, buf.csr.indptr, buf.csr.indices,
                      <const floating *> buf.csr.data, rows, params + lay.w_off[l], z,
                      fan_out)
        fm.bias_act(nr, fan_out, z, params + lay.b_off[l], act)
        return
    inp = (ws + (wsl.ad_off[l - 1] if wsl.dropout and l > 1 else wsl.a_off[l - 1])
           + r0 * fan_in)
    if blas_layer(wsl, fan_in, fan_out, sizeof(floating)):
        gemm(False, False, <int> nr, fan_out, fan_in, <floating> 1, inp, fan_in,
             params + lay.w_off[l], fan_out, <floating> 0, z, fan_out)
        fm.bias_act(nr, fan_out, z, params + lay.b_off[l], act)
        return
    if l == 1 and block >= 0 and buf.active != NULL:
        mark_active(inp, nr, fan_in, buf.active + block * fan_in)
        dense_runs(nr, fan_in, fan_out, inp, params + lay.w_off[l], params + lay.b_off[l],
                   <const floating *> NULL, act, z, buf.active + block * fan_in, FM_ISA_AUTO)
        return
    fm.dense(nr, fan_in, fan_out, inp, fan_in, params + lay.w_off[l], fan_out,
             params + lay.b_off[l], <const floating *> NULL, act, z, fan_out, 0, FM_ISA_AUTO)


cdef inline int row_blocks(const Workspace *wsl, Py_ssize_t n) noexcept nogil:
    """Row blocks of a step of n rows: from the batch size alone, never the threads."""
    return <int> min((n + wsl.block_rows - 1) // wsl.block_rows, <Py_ssize_t> MAX_BLOCKS)


cdef void wide_columns(const Layout *lay, const Workspace *wsl, const Buffers *buf,
                       floating *ws, Py_ssize_t nb, int l, int part,
                       bint backward) noexcept nogil:
    """Part `part` of COLUMN_PARTS of a wide leading layer l, for all nb rows of the batch:
    forward, A_l[:, c] = act(input W_l[:, c] + b_l[c]) (LayerNorm, then the activation,
    follow in the row phase); backward, D_{l-1}[:, c] = act'(A_{l-1}) mask (D_l W_l[c, :]^T)
    for the columns c of layer l - 1.

    OpenBLAS and fm_dense pack W's blocks at every call: by row blocks, all of a W beyond
    L2 (6 MB for 3072 x 512) for each block. By columns, each part packs its share of W
    once per step.

    fm_dense passes back as D_{l-1}[:, c]^T = W_l[c, :] @ D_l^T, reading W's rows in place:
    D_l^T (transpose_deltas) and the result's transpose move batch x width elements where
    a copy of W_l^T kept current would move all of W every step (8% of a 784-1024-1024-10
    epoch). The products and their order are those of D_l @ W_l^T, so are the bits.
    """
    cdef int fan_in = lay.sizes[l - 1], fan_out = lay.sizes[l]
    cdef int width = fan_in if backward else fan_out
    cdef Py_ssize_t c0 = <Py_ssize_t> part * width // COLUMN_PARTS
    cdef Py_ssize_t c1 = <Py_ssize_t> (part + 1) * width // COLUMN_PARTS, r
    cdef const floating *params = <const floating *> buf.params
    cdef const floating *W = params + lay.w_off[l]
    cdef floating *out
    cdef const floating *inp
    cdef floating *dt
    cdef const floating *act_in
    cdef const floating *mask = NULL
    cdef int act
    if c1 <= c0:
        return
    if backward:
        out = ws + wsl.d_off[l - 1] + c0
        if not wsl.wide_blas:
            dt = ws + wsl.tr_off + fan_out * nb + c0 * nb   # rows c0..c1 of D_{l-1}^T
            fm.dense(c1 - c0, fan_out, nb, W + c0 * fan_out, fan_out, ws + wsl.tr_off, nb,
                     <const floating *> NULL, <const floating *> NULL, FM_IDENTITY, dt, nb,
                     0, FM_ISA_AUTO)
            fm.transpose(c1 - c0, nb, dt, nb, out, width)
        else:
            gemm(False, True, <int> nb, <int> (c1 - c0), fan_out, <floating> 1,
                 ws + wsl.d_off[l], fan_out, W + c0 * fan_out, fan_out, <floating> 0, out,
                 width)
        act_in = ws + wsl.a_off[l - 1] + c0
        if wsl.dropout:
            mask = ws + wsl.m_off[l - 1] + c0
        for r in range(nb):
            fm.act_backward(1, c1 - c0, act_in + r * width,
                            (mask + r * width) if mask != NULL else <const floating *> NULL,
                            out + r * width, lay.acts[l - 1])
        return
    out = ws + wsl.a_off[l] + c0
    inp = ws + (wsl.ad_off[l - 1] if wsl.dropout and l > 1 else wsl.a_off[l - 1])
    act = FM_IDENTITY if lay.norm == NORM_LAYER and l < lay.n_layers else lay.acts[l]
    if not wsl.wide_blas:
        fm.dense(nb, fan_in, c1 - c0, inp, fan_in, W + c0, fan_out, params + lay.b_off[l] + c0,
                 <const floating *> NULL, act, out, fan_out, 0, FM_ISA_AUTO)
        return
    gemm(False, False, <int> nb, <int> (c1 - c0), fan_in, <floating> 1, inp, fan_in,
         W + c0, fan_out, <floating> 0, out, fan_out)
    for r in range(nb):
        fm.bias_act(1, c1 - c0, out + r * fan_out, params + lay.b_off[l] + c0, act)


cdef inline void transpose_deltas(const Layout *lay, const Workspace *wsl, floating *ws,
                                  Py_ssize_t nb, int l, int part) noexcept nogil:
    """Part `part` of COLUMN_PARTS of D_l^T (fan_out x nb, at tr_off), which every part
    of wide_columns' backward reads."""
    cdef int fan_out = lay.sizes[l]
    cdef Py_ssize_t j0 = <Py_ssize_t> part * fan_out // COLUMN_PARTS
    cdef Py_ssize_t j1 = <Py_ssize_t> (part + 1) * fan_out // COLUMN_PARTS
    if j1 > j0:
        fm.transpose(nb, j1 - j0, ws + wsl.d_off[l] + j0, fan_out, ws + wsl.tr_off + j0 * nb,
                     nb)


cdef inline void dropout_rows(const Layout *lay, const Workspace *wsl, const Hyper *h,
                              floating *ws, uint64_t seed, int l, Py_ssize_t r0,
                              Py_ssize_t nr) noexcept nogil:
    """Hidden layer l's mask and dropped activations for rows r0..r0+nr."""
    cdef int fan_out = lay.sizes[l]
    fm.dropout(nr, fan_out, (ws + wsl.a_off[l] + r0 * fan_out),
               (ws + wsl.m_off[l] + r0 * fan_out), (ws + wsl.ad_off[l] + r0 * fan_out),
               h.dropout, fm_hash64(seed, l), r0)


# -- BatchNorm's row phase: a barrier at each BatchNorm layer, forward and backward ----

cdef void bn_rows_phase(const Layout *lay, const Workspace *wsl, const Hyper *h,
                        const Buffers *buf, const Batch *b, floating *ws, int n_threads,
                        int n_blocks, bint update, double *block_loss,
                        int64_t *block_correct) noexcept nogil:
    """The row phase of a network with BatchNorm, as stages over the same row blocks.

    Forward stage s (1..L) finishes hidden layer s - 1 (normalization with the batch
    statistics, activation, dropout) and runs Linear layer s; for s < L each block then
    writes its column means and squared deviations of layer s, which fm_batch_norm_stats
    combines in block order (and moves the running statistics with, on an update). Stage
    L also takes the loss and the deltas down to layer L - 1's dL/dy, with each block's
    column sums of dL/dy and dL/dy * zhat. Backward stage l (L - 1..1) combines those in
    block order into dgamma_l, dbeta_l (the gradients themselves), takes each block
    through the normalization's backward pass, and on to layer l - 1's partial sums.
    Blocks and block order depend on the batch size alone, so the bits do not depend on
    the thread count.
    """
    cdef int L = lay.n_layers, s, l, i, m
    cdef Py_ssize_t r0, r1
    cdef unsigned int fpu
    cdef floating *part = ws + wsl.part_off
    cdef floating *grads = <floating *> buf.grads
    cdef floating *stats = <floating *> lay.stats
    for s in range(1, L + 1):
        for i in prange(n_blocks, num_threads=n_threads, schedule="dynamic"):
            r0 = i * b.n // n_blocks
            r1 = (i + 1) * b.n // n_blocks
            fpu = fm_denormals_off()
            if s == L:
                block_correct[i] = 0
                block_loss[i] = bn_forward_stage(lay, wsl, h, buf, b, ws, s, i, n_blocks, r0,
                                                 r1 - r0, &block_correct[i])
            else:
                bn_forward_stage(lay, wsl, h, buf, b, ws, s, i, n_blocks, r0, r1 - r0,
                                 <int64_t *> NULL)
            fm_fpu_restore(fpu)
        if s < L:
            m = lay.sizes[s]
            fm.batch_norm_stats(n_blocks, b.n, m, part, part + n_blocks * m, lay.norm_eps,
                                lay.bn_momentum, (ws + wsl.st_off[s]),
                                (ws + wsl.st_off[s] + m),
                                (stats + lay.s_off[s]) if update else NULL,
                                (stats + lay.s_off[s] + m) if update else NULL)
    for l in range(L - 1, 0, -1):
        # dgamma_l then dbeta_l: the blocks' sums, added in block order.
        fm.col_sum(n_blocks, 2 * lay.sizes[l], part, grads + lay.g_off[l])
        for i in prange(n_blocks, num_threads=n_threads, schedule="dynamic"):
            r0 = i * b.n // n_blocks
            r1 = (i + 1) * b.n // n_blocks
            fpu = fm_denormals_off()
            bn_backward_stage(lay, wsl, buf, b, ws, l, i, r0, r1 - r0)
            fm_fpu_restore(fpu)


cdef double bn_forward_stage(const Layout *lay, const Workspace *wsl, const Hyper *h,
                             const Buffers *buf, const Batch *b, floating *ws, int s, int i,
                             int n_blocks, Py_ssize_t r0, Py_ssize_t nr,
                             int64_t *n_correct) noexcept nogil:
    """Forward stage s of block i (rows r0..r0+nr), see bn_rows_phase; stage L returns
    the block's loss."""
    cdef int L = lay.n_layers, m
    cdef const floating *params = <const floating *> buf.params
    cdef floating *part = ws + wsl.part_off
    cdef double loss
    if s == 1:
        gather_rows(lay, wsl, buf, b, ws, r0, nr)
    else:
        m = lay.sizes[s - 1]
        fm.batch_norm(nr, m, (ws + wsl.a_off[s - 1] + r0 * m), (ws + wsl.st_off[s - 1]),
                      (ws + wsl.st_off[s - 1] + m), params + lay.g_off[s - 1],
                      params + lay.g_off[s - 1] + m, lay.acts[s - 1],
                      (ws + wsl.h_off[s - 1] + r0 * m))
        if wsl.dropout:
            dropout_rows(lay, wsl, h, ws, b.seed, s - 1, r0, nr)
    m = lay.sizes[s]
    if s < L:
        linear_rows(lay, wsl, buf, ws, s, -1, r0, nr, b.rows + r0, FM_IDENTITY)
        fm.batch_norm_partial(nr, m, (ws + wsl.a_off[s] + r0 * m), part + i * m,
                              part + (n_blocks + i) * m)
        return 0
    linear_rows(lay, wsl, buf, ws, s, -1, r0, nr, b.rows + r0, lay.acts[s])
    loss = loss_rows(lay, wsl, h, buf, b, ws, r0, nr, n_correct)
    delta_rows(lay, wsl, buf, ws, L, r0, nr)
    m = lay.sizes[L - 1]
    fm.batch_norm_backward_partial(nr, m, (ws + wsl.d_off[L - 1] + r0 * m),
                                   (ws + wsl.h_off[L - 1] + r0 * m), part + 2 * i * m)
    return loss


cdef void bn_backward_stage(const Layout *lay, const Workspace *wsl, const Buffers *buf,
                            const Batch *b, floating *ws, int l, int i, Py_ssize_t r0,
                            Py_ssize_t nr) noexcept nogil:
    """Backward stage of hidden layer l for block i (rows r0..r0+nr): D_l from dL/dy to
    dL/dz, then layer l - 1's dL/dy and its partial sums (see bn_rows_phase)."""
    cdef int m = lay.sizes[l]
    cdef const floating *params = <const floating *> buf.params
    cdef const floating *grads = <const floating *> buf.grads
    cdef floating *part = ws + wsl.part_off
    fm.batch_norm_backward(nr, m, params + lay.g_off[l], (ws + wsl.st_off[l] + m),
                           grads + lay.g_off[l], b.n, (ws + wsl.h_off[l] + r0 * m),
                           (ws + wsl.d_off[l] + r0 * m))
    if l > 1:
        delta_rows(lay, wsl, buf, ws, l, r0, nr)
        m = lay.sizes[l - 1]
        fm.batch_norm_backward_partial(nr, m, (ws + wsl.d_off[l - 1] + r0 * m),
                                       (ws + wsl.h_off[l - 1] + r0 * m), part + 2 * i * m)


cdef void param_part(const Layout *lay, const Workspace *wsl, const Hyper *h,
                     const Buffers *buf, floating *ws, Py_ssize_t nb, int l, int part,
                     bint update, const int64_t *rows) noexcept nogil:
    """Parameter phase for rows [i0, i1) of W_l (and b_l with part 0): gradient, update.

    rows: the batch's samples, which a sparse X's first layer reads in place."""
    cdef int fan_in = lay.sizes[l - 1], fan_out = lay.sizes[l]
    cdef Py_ssize_t i0 = <Py_ssize_t> part * fan_in // PARAM_PARTS
    cdef Py_ssize_t i1 = <Py_ssize_t> (part + 1) * fan_in // PARAM_PARTS
    cdef Py_ssize_t off = lay.w_off[l] + i0 * fan_out, cnt = (i1 - i0) * fan_out, i
    cdef Py_ssize_t in_off
    cdef int accumulate = 0
    cdef floating l2 = <floating> h.l2
    cdef floating *params = <floating *> buf.params
    cdef floating *grads = <floating *> buf.grads
    cdef const floating *dz = (ws + wsl.d_off[l])
    if i1 > i0:
        if h.l2 > 0:
            # L2 enters the gradient itself (dW = A^T dZ + l2 W), so every optimizer and
            # the gradient check see the same objective.
            for i in range(cnt):
                grads[off + i] = l2 * params[off + i]
            accumulate = 1
        # The input of layer l: the dropped activations of a hidden layer with dropout.
        in_off = wsl.ad_off[l - 1] if wsl.dropout and l > 1 else wsl.a_off[l - 1]
        if l == 1 and wsl.sparse:
            # The part owns W's rows (input features) [i0, i1): it scatters the batch's
            # nonzeros of those columns alone, in a fixed order (no atomics).
            fm.csr_at(nb, fan_out, buf.csr.indptr, buf.csr.indices,
                      <const floating *> buf.csr.data, rows, <int32_t> i0, <int32_t> i1, dz,
                      grads + off, fan_out, accumulate)
        else:
            # dW_l[i0:i1] (+)= A_{l-1}[:, i0:i1]^T @ D_l: OpenBLAS (blas_layer), or
            # fm_dense's tiles (no repacking).
            if blas_layer(wsl, fan_in, fan_out, sizeof(floating)):
                gemm(True, False, <int> (i1 - i0), fan_out, <int> nb, <floating> 1,
                     (ws + in_off + i0), fan_in, dz, fan_out,
                     <floating> accumulate, grads + off, fan_out)
            elif l == 1 and buf.active != NULL:
                dense_at_runs(wsl, buf.active, nb, i0, i1, fan_in, fan_out, ws + in_off, dz,
                              grads + lay.w_off[l], accumulate)
            else:
                fm.dense_at(i1 - i0, nb, fan_out, (ws + in_off + i0), fan_in, dz,
                            grads + off, fan_out, accumulate, 0, FM_ISA_AUTO)
        if update:
            optimizer_update(h, buf, params, off, cnt)
            if wsl.wt_off[l] >= 0:   # the part's rows of W_l are its columns of W_l^T
                fm.transpose(i1 - i0, fan_out, params + off, fan_out,
                             ws + wsl.wt_off[l] + i0, fan_in)
    if part == 0:
        # b_l, and the normalization's gamma_l and beta_l right after it: one update.
        off = lay.b_off[l]
        cnt = fan_out
        fm.col_sum(nb, fan_out, dz, grads + off)
        if lay.norm != NORM_NONE and l < lay.n_layers:
            if lay.norm == NORM_LAYER:   # (BatchNorm's come from its row phase)
                fm.col_sum(nb, fan_out, (ws + wsl.h_off[l]), grads + lay.g_off[l])
                fm.col_sum(nb, fan_out, (ws + wsl.g_off[l]), grads + lay.g_off[l] + fan_out)
            cnt = 3 * fan_out
        if update:
            optimizer_update(h, buf, params, off, cnt)


cdef inline void dense_at_runs(const Workspace *wsl, uint8_t *active, Py_ssize_t nb,
                               Py_ssize_t i0, Py_ssize_t i1, Py_ssize_t fan_in,
                               Py_ssize_t fan_out, const floating *A, const floating *dz,
                               floating *G, int accumulate) noexcept nogil:
    """Rows [i0, i1) of the first layer's weight gradient, G (+)= A^T @ dz (A: the nb
    gathered rows), over the runs of input features some row of the batch uses (the row
    blocks' marks, combined here for these features): a feature zero in every row has a
    gradient of +0 exactly (or keeps its L2 term), as the whole product would give."""
    cdef Py_ssize_t runs[2 * MAX_RUNS]
    cdef Py_ssize_t i, prev = i0
    cdef int n_blocks = row_blocks(wsl, nb), blk, n, r, skip_rows = 0
    cdef uint8_t *batch = active + n_blocks * fan_in
    for i in range(i0, i1):
        batch[i] = 0
    for blk in range(n_blocks):
        for i in range(i0, i1):
            batch[i] |= active[blk * fan_in + i]
    n = active_runs(batch, i0, i1, runs)
    # Within the runs, fm_dense_at's tiles also skip the rows zero in all their features
    # (an image's 6 neighbouring pixels, one-hot columns), unless the first row has no
    # zero there (tabular data, where the test would cost 4% and skip nothing).
    for i in range(i0, i1):
        if A[i] == 0:
            skip_rows = 1
            break
    for r in range(n + 1):
        if not accumulate:   # the features before run r (or after the last): all zero
            memset(G + prev * fan_out, 0,
                   ((runs[2 * r] if r < n else i1) - prev) * fan_out * sizeof(floating))
        if r == n:
            break
        fm.dense_at(runs[2 * r + 1] - runs[2 * r], nb, fan_out, A + runs[2 * r], fan_in, dz,
                    G + runs[2 * r] * fan_out, fan_out, accumulate, skip_rows, FM_ISA_AUTO)
        prev = runs[2 * r + 1]


cdef inline void optimizer_update(const Hyper *h, const Buffers *buf, floating *params,
                                  Py_ssize_t off, Py_ssize_t n) noexcept nogil:
    """Update parameters [off, off + n) from their gradient."""
    cdef floating *p = params + off
    cdef const floating *g = (<const floating *> buf.grads) + off
    cdef floating *s1 = (<floating *> buf.state1) + off
    if h.optimizer == OPT_ADAM or h.optimizer == OPT_ADAMW:
        fm.adam(n, p, g, s1, (<floating *> buf.state2) + off, h.lr, h.beta1, h.beta2, h.eps,
                h.t, h.weight_decay)
    else:
        fm.sgd(n, p, g, s1, h.lr, h.momentum)


cdef inline double batch_weight(const floating *sample_weight, const int64_t *rows,
                                Py_ssize_t nb) noexcept nogil:
    cdef double wsum = 0
    cdef Py_ssize_t r
    if sample_weight == NULL:
        return <double> nb
    for r in range(nb):
        wsum += sample_weight[rows[r]]
    return wsum


cdef inline double monotonic() noexcept nogil:
    cdef timespec ts
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return ts.tv_sec + 1e-9 * ts.tv_nsec


cdef int check_signals() noexcept with gil:
    """1 if a signal handler raised (the exception stays set for the caller), else 0."""
    return 1 if PyErr_CheckSignals() < 0 else 0


cdef int reraise() except -1:
    return -1
