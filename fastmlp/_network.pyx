# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
# cython: initializedcheck=False
"""The nogil training epoch and forward pass of a multi-layer perceptron.

Design, in three tiers (as scikit-learn's ``_loss.pyx.tp``):

1. ``csrc/fm_kernels.c``: element-wise and row-wise C kernels on a block of rows;
   ``csrc/fm_dense.c``: our own GEMM tiles: the dense layer (GEMM + bias + activation)
   of prediction and of the training forward pass, and the weight gradient A^T dZ.
2. This file: the OpenMP loops, those GEMMs and one BLAS GEMM (``_blas.pxd``: the
   backward dZ @ W^T, a small share of the work). A mini-batch step runs in two
   parallel phases, so the cores have one owner (OpenMP) and BLAS runs single-threaded
   inside each task:

   a. Row phase. The batch is cut into row blocks; each block runs forward, loss and the
      backward chain of deltas (dZ @ W^T) on its own. Rows never interact, so no barrier
      is needed between layers.
   b. Parameter phase. Each weight gradient dW = A^T dZ is cut by its rows (the layer's
      inputs) into parts; each part is one fm_dense_at over the whole batch followed by
      the optimizer update of exactly those parameters. No reduction across threads.

   The blocks depend on the batch size alone and the parts are a fixed count, never the
   thread count, so the weights are bitwise identical for any number of threads.
3. Python (``training.py``, ``model.py``): validation, allocation once per fit, one call
   of ``train_epoch`` per epoch.

Parameters live in one flat buffer, per layer l = 1..L: W_l (fan_in x fan_out, row-major)
then b_l (fan_out). Gradients and optimizer state use the same layout, so the optimizer
is one loop over a slice.
"""
from cython.parallel cimport prange, threadid
from libc.math cimport isfinite, INFINITY
from libc.stdint cimport int32_t, int64_t, uint64_t
from libc.stdlib cimport malloc, free
from libc.string cimport memcpy
from posix.time cimport clock_gettime, timespec, CLOCK_MONOTONIC

from cython cimport floating

from fastmlp._blas cimport gemm
from fastmlp._kernels cimport *

import numpy as np

cdef extern from "fm_fpu.h" nogil:
    unsigned int fm_denormals_off()
    void fm_fpu_restore(unsigned int old)

cdef extern from "pythread.h" nogil:
    ctypedef void *PyThread_type_lock
    PyThread_type_lock PyThread_allocate_lock()
    int PyThread_acquire_lock(PyThread_type_lock lock, int waitflag)
    void PyThread_release_lock(PyThread_type_lock lock)

cdef extern from "Python.h":
    # Declared here without Cython's `except -1`, so the exception a signal handler
    # raises stays set for the caller instead of being reported and dropped.
    int PyErr_CheckSignals()

cdef extern from "fm_openmp.h":
    int fm_openmp_enabled()
    int fm_openmp_max_threads()


def openmp_info():
    """``(built with OpenMP, OpenMP's current maximum thread count)``."""
    return bool(fm_openmp_enabled()), fm_openmp_max_threads()


# -- BLAS threads ---------------------------------------------------------------------
# OpenBLAS's thread count is one process-wide number. Every call below that runs GEMMs
# holds it at 1 (OpenMP, or the calling thread alone, owns the cores), counted so that
# concurrent calls from many threads set it once and the last one out restores it.
# _threads.py registers the get/set functions of each loaded OpenBLAS at import.
ctypedef int (*blas_get_t)() noexcept nogil
ctypedef void (*blas_set_t)(int) noexcept nogil

cdef enum:
    MAX_BLAS_LIBS = 4

cdef blas_get_t blas_get[MAX_BLAS_LIBS]
cdef blas_set_t blas_set[MAX_BLAS_LIBS]
cdef int blas_saved[MAX_BLAS_LIBS]
cdef int n_blas_libs = 0
cdef int blas_users = 0
cdef PyThread_type_lock blas_lock = PyThread_allocate_lock()


def register_blas_threads(size_t get_address, size_t set_address):
    """Register an OpenBLAS's ``openblas_get_num_threads`` and ``..._set_num_threads``."""
    global n_blas_libs
    if n_blas_libs == MAX_BLAS_LIBS or get_address == 0 or set_address == 0:
        return False
    blas_get[n_blas_libs] = <blas_get_t> get_address
    blas_set[n_blas_libs] = <blas_set_t> set_address
    n_blas_libs += 1
    return True


def blas_threads_registered():
    """How many BLAS libraries the calls of this module keep single-threaded."""
    return n_blas_libs


cdef void blas_single_enter() noexcept nogil:
    global blas_users
    cdef int i
    PyThread_acquire_lock(blas_lock, 1)
    if blas_users == 0:
        for i in range(n_blas_libs):
            blas_saved[i] = blas_get[i]()
            if blas_saved[i] != 1:
                blas_set[i](1)
    blas_users += 1
    PyThread_release_lock(blas_lock)


cdef void blas_single_exit() noexcept nogil:
    global blas_users
    cdef int i
    PyThread_acquire_lock(blas_lock, 1)
    blas_users -= 1
    if blas_users == 0:
        for i in range(n_blas_libs):
            if blas_saved[i] != 1:
                blas_set[i](blas_saved[i])
    PyThread_release_lock(blas_lock)


def single_threaded_blas_enter():
    """Python access to the counted BLAS limit (for benchmarks of single kernels)."""
    blas_single_enter()


def single_threaded_blas_exit():
    """Undo one :func:`single_threaded_blas_enter`."""
    blas_single_exit()


cdef enum:
    MAX_LAYERS = 64      # Linear layers; the Python layer rejects more
    MAX_BLOCKS = 256     # row blocks per mini-batch
    # Default partition of a step (see the design above): rows per block of the row
    # phase and parts per weight matrix in the parameter phase. 8-row blocks were the
    # fastest with OpenBLAS doing the forward GEMMs; with fm_dense, 8 to 64 rows measured
    # within noise at batch 32, 128 and 512 (AMD EPYC, 2 threads), and 8 leaves the most
    # blocks for machines with more cores.
    BLOCK_ROWS = 8
    PARAM_PARTS = 4
    SMALL_WORKSPACE = 4096   # elements of prediction workspace kept on the stack
    # Rows per prediction block: fm_dense gives the same bits for any split, so this is
    # for speed alone; 48 to 1024 measured within noise for MNIST at 1 and 2 threads
    # (issue 5), 256 keeps a block's activations (256 x 192 floats) in L2.
    PREDICT_BLOCK_ROWS = 256

cpdef enum Loss:
    LOSS_CROSS_ENTROPY = 0
    LOSS_MSE = 1
    LOSS_SQUARED_ERROR = 2   # regression: real targets instead of labels

cpdef enum Optimizer:
    OPT_ADAM = 0
    OPT_SGD = 1

cpdef enum Status:
    STATUS_DONE = 0          # the epoch ran to its end
    STATUS_TIME = 1          # stopped at the deadline
    STATUS_NONFINITE = 2     # stopped on a NaN or inf mini-batch loss

ACTIVATIONS = {"identity": FM_IDENTITY, "relu": FM_RELU, "tanh": FM_TANH,
               "sigmoid": FM_SIGMOID}


cdef struct Net:
    int n_layers                        # L, the number of Linear layers
    int sizes[MAX_LAYERS + 1]           # sizes[0] inputs ... sizes[L] outputs
    int acts[MAX_LAYERS + 1]            # activation of layer l = 1..L
    Py_ssize_t w_off[MAX_LAYERS + 1]    # offsets of W_l and b_l in the parameters
    Py_ssize_t b_off[MAX_LAYERS + 1]
    # Workspace offsets, each a (capacity x sizes[l]) block: activations A_l, deltas D_l,
    # dropout masks M_l and dropped activations Ad_l.
    Py_ssize_t a_off[MAX_LAYERS + 1]
    Py_ssize_t d_off[MAX_LAYERS + 1]
    Py_ssize_t m_off[MAX_LAYERS + 1]
    Py_ssize_t ad_off[MAX_LAYERS + 1]
    Py_ssize_t w_buf_off                # per-row sample weights (capacity)
    Py_ssize_t t_off                    # gathered regression targets (capacity x sizes[L])
    Py_ssize_t ws_size
    bint dropout


cdef struct Hyper:
    int loss
    int optimizer
    double lr, beta1, beta2, eps, momentum, l2, dropout
    int64_t t                           # optimizer step, >= 1 during an update


cdef int net_init(Net *net, const int[::1] sizes, const int[::1] acts, Py_ssize_t capacity,
                  bint training, bint dropout, bint targets=False) except -1:
    """Fill the layout of parameters and workspace for `capacity` rows.

    `targets`: training gathers real-valued target rows (regression) into the workspace.
    """
    cdef int L = sizes.shape[0] - 1, l
    cdef Py_ssize_t p = 0, w = 0
    if L < 1 or L > MAX_LAYERS or acts.shape[0] != L:
        raise ValueError(f"need 1..{MAX_LAYERS} layers and one activation per layer")
    net.n_layers = L
    net.dropout = dropout
    net.sizes[0] = sizes[0]
    for l in range(1, L + 1):
        net.sizes[l] = sizes[l]
        net.acts[l] = acts[l - 1]
        net.w_off[l] = p
        p += <Py_ssize_t> sizes[l - 1] * sizes[l]
        net.b_off[l] = p
        p += sizes[l]
    # Prediction needs only the hidden activations (the output goes to the caller's array).
    if training:
        net.a_off[0] = w
        w += capacity * sizes[0]
    for l in range(1, L + 1):
        if training or l < L:
            net.a_off[l] = w
            w += capacity * sizes[l]
        if training:
            net.d_off[l] = w
            w += capacity * sizes[l]
        if dropout and l < L:
            net.m_off[l] = w
            w += capacity * sizes[l]
            net.ad_off[l] = w
            w += capacity * sizes[l]
    net.w_buf_off = w
    if training:
        w += capacity
    net.t_off = w
    if training and targets:
        w += capacity * sizes[L]
    net.ws_size = w
    return 0


def param_layout(const int[::1] sizes):
    """Offsets of each layer's weights and bias in the flat parameter buffer.

    Returns a list of ``(w_offset, b_offset)`` per layer and the total size.
    """
    cdef Net net
    cdef int[::1] acts = np.zeros(sizes.shape[0] - 1, dtype=np.intc)
    net_init(&net, sizes, acts, 0, False, False)
    total = net.b_off[net.n_layers] + net.sizes[net.n_layers]
    return [(net.w_off[l], net.b_off[l]) for l in range(1, net.n_layers + 1)], total


def workspace_size(const int[::1] sizes, Py_ssize_t capacity, bint dropout,
                   bint targets=False):
    """Number of elements of the training workspace for mini-batches of `capacity` rows.

    `targets`: the network is trained on real-valued targets (regression).
    """
    cdef Net net
    cdef int[::1] acts = np.zeros(sizes.shape[0] - 1, dtype=np.intc)
    net_init(&net, sizes, acts, capacity, True, dropout, targets)
    return net.ws_size


cdef inline void bias_act(Py_ssize_t n, Py_ssize_t m, floating *z, const floating *b,
                          int act) noexcept nogil:
    if floating is float:
        fm_bias_act_f(n, m, z, b, act)
    else:
        fm_bias_act_d(n, m, z, b, act)


cdef inline void act_backward(Py_ssize_t n, Py_ssize_t m, const floating *a,
                              const floating *mask, floating *d, int act) noexcept nogil:
    if floating is float:
        fm_act_backward_f(n, m, a, mask, d, act)
    else:
        fm_act_backward_d(n, m, a, mask, d, act)


cdef inline const floating *layer_input(const Net *net, const floating *ws, int l) noexcept nogil:
    """The (capacity x sizes[l]) matrix that feeds Linear layer l + 1 during training."""
    if net.dropout and 0 < l < net.n_layers:
        return ws + net.ad_off[l]
    return ws + net.a_off[l]


cdef int forward_rows(const Net *net, const floating *params, floating *ws,
                      const floating *x, floating *out, Py_ssize_t r0, Py_ssize_t nr,
                      double dropout, uint64_t seed, bint check) noexcept nogil:
    """Forward pass of rows r0..r0+nr of the workspace, reading the input from `x`.

    The last layer writes into `out` when it is not NULL (one-row prediction), else into
    A_L.
    With dropout > 0, hidden layers also write their masks and dropped activations.
    With `check`, returns 1 (and stops) if the input holds NaN or infinity: then the
    first layer's products are not all finite (NaN propagates, inf * w is inf or NaN),
    a test on fan_out columns instead of fan_in, done while they are in cache.
    Several rows (training) go through fm_dense: unlike OpenBLAS it does not repack W
    for each block of a few rows. It reads W's last n % 16 columns in place (no padded
    tail: W changes every step, and those columns are a tiny share of the work).
    """
    cdef int L = net.n_layers, l, fan_in = net.sizes[0], fan_out, ok
    cdef const floating *inp = x
    cdef floating *z
    cdef floating *dropped
    for l in range(1, L + 1):
        fan_out = net.sizes[l]
        if l == L and out != NULL:
            z = out
        else:
            z = ws + net.a_off[l] + r0 * fan_out
        if nr == 1:   # one sample: no GEMM (see fm_vecmat)
            if floating is float:
                fm_vecmat_f(fan_in, fan_out, inp, params + net.w_off[l], z)
                ok = fm_all_finite_f(fan_out, z) if check and l == 1 else 1
            else:
                fm_vecmat_d(fan_in, fan_out, inp, params + net.w_off[l], z)
                ok = fm_all_finite_d(fan_out, z) if check and l == 1 else 1
            bias_act(1, fan_out, z, params + net.b_off[l], net.acts[l])
        elif floating is float:   # bias and activation fused
            ok = fm_dense_f(nr, fan_in, fan_out, inp, fan_in, params + net.w_off[l],
                            params + net.b_off[l], NULL, net.acts[l], z,
                            fan_out, FM_ISA_AUTO)
        else:
            ok = fm_dense_d(nr, fan_in, fan_out, inp, fan_in, params + net.w_off[l],
                            params + net.b_off[l], NULL, net.acts[l], z,
                            fan_out, FM_ISA_AUTO)
        if check and l == 1 and not ok:
            return 1
        inp = z
        if dropout > 0 and l < L:
            dropped = ws + net.ad_off[l] + r0 * fan_out
            if floating is float:
                fm_dropout_f(nr, fan_out, z, ws + net.m_off[l] + r0 * fan_out, dropped,
                             dropout, fm_hash64(seed, l), r0)
            else:
                fm_dropout_d(nr, fan_out, z, ws + net.m_off[l] + r0 * fan_out, dropped,
                             dropout, fm_hash64(seed, l), r0)
            inp = dropped
        fan_in = fan_out
    return 0


cdef void rows_step(const Net *net, const Hyper *h, const floating *params, floating *ws,
                    int32_t *ybuf, const floating *X, const int32_t *y,
                    const floating *targets, const floating *sample_weight,
                    const int64_t *batch, Py_ssize_t r0, Py_ssize_t nr, double scale,
                    uint64_t seed, double *loss, int64_t *n_correct) noexcept nogil:
    """Row phase of a step: gather rows, forward, loss and dZ, backward chain of deltas.

    Classification reads labels `y`; regression (LOSS_SQUARED_ERROR) reads `targets`.
    """
    cdef int L = net.n_layers, l, d0 = net.sizes[0], k = net.sizes[L]
    cdef Py_ssize_t r, src
    cdef floating *a0 = ws + net.a_off[0] + r0 * d0
    cdef floating *wrow = NULL
    cdef floating *zL = ws + net.a_off[L] + r0 * k
    cdef floating *dL = ws + net.d_off[L] + r0 * k
    cdef floating *trow = ws + net.t_off + r0 * k
    cdef const floating *mask
    if sample_weight != NULL:
        wrow = ws + net.w_buf_off + r0
    for r in range(nr):
        src = batch[r0 + r]
        memcpy(a0 + r * d0, X + src * d0, d0 * sizeof(floating))
        if targets != NULL:
            memcpy(trow + r * k, targets + src * k, k * sizeof(floating))
        else:
            ybuf[r0 + r] = y[src]
        if wrow != NULL:
            wrow[r] = sample_weight[src]

    forward_rows(net, params, ws, a0, NULL, r0, nr, h.dropout, seed, False)

    if h.loss == LOSS_CROSS_ENTROPY:
        if floating is float:
            loss[0] = fm_softmax_xent_f(nr, k, zL, ybuf + r0, wrow, scale, dL, n_correct)
        else:
            loss[0] = fm_softmax_xent_d(nr, k, zL, ybuf + r0, wrow, scale, dL, n_correct)
    else:
        if h.loss == LOSS_MSE:
            if floating is float:
                loss[0] = fm_mse_f(nr, k, zL, ybuf + r0, wrow, scale, dL, n_correct)
            else:
                loss[0] = fm_mse_d(nr, k, zL, ybuf + r0, wrow, scale, dL, n_correct)
        elif floating is float:
            loss[0] = fm_squared_error_f(nr, k, zL, trow, wrow, scale, dL)
        else:
            loss[0] = fm_squared_error_d(nr, k, zL, trow, wrow, scale, dL)
        act_backward(nr, k, zL, <floating *> NULL, dL, net.acts[L])

    for l in range(L, 1, -1):
        # D_{l-1} = D_l @ W_l^T, then through dropout and the activation of layer l - 1.
        gemm(False, True, <int> nr, net.sizes[l - 1], net.sizes[l], <floating> 1,
             ws + net.d_off[l] + r0 * net.sizes[l], net.sizes[l], params + net.w_off[l],
             net.sizes[l], <floating> 0, ws + net.d_off[l - 1] + r0 * net.sizes[l - 1],
             net.sizes[l - 1])
        mask = ws + net.m_off[l - 1] + r0 * net.sizes[l - 1] if net.dropout else NULL
        act_backward(nr, net.sizes[l - 1], ws + net.a_off[l - 1] + r0 * net.sizes[l - 1],
                     mask, ws + net.d_off[l - 1] + r0 * net.sizes[l - 1], net.acts[l - 1])


cdef inline void optimizer_update(const Hyper *h, Py_ssize_t n, floating *p, const floating *g,
                                  floating *s1, floating *s2) noexcept nogil:
    if h.optimizer == OPT_ADAM:
        if floating is float:
            fm_adam_f(n, p, g, s1, s2, h.lr, h.beta1, h.beta2, h.eps, h.t)
        else:
            fm_adam_d(n, p, g, s1, s2, h.lr, h.beta1, h.beta2, h.eps, h.t)
    else:
        if floating is float:
            fm_sgd_f(n, p, g, s1, h.lr, h.momentum)
        else:
            fm_sgd_d(n, p, g, s1, h.lr, h.momentum)


cdef void param_part(const Net *net, const Hyper *h, floating *params, floating *grads,
                     floating *s1, floating *s2, const floating *ws, Py_ssize_t nb, int l,
                     int part, int n_parts, bint update) noexcept nogil:
    """Parameter phase for rows [i0, i1) of W_l (and b_l with part 0): gradient, update."""
    cdef int fan_in = net.sizes[l - 1], fan_out = net.sizes[l]
    cdef Py_ssize_t i0 = <Py_ssize_t> part * fan_in // n_parts
    cdef Py_ssize_t i1 = <Py_ssize_t> (part + 1) * fan_in // n_parts
    cdef Py_ssize_t off = net.w_off[l] + i0 * fan_out, cnt = (i1 - i0) * fan_out, i
    cdef int accumulate = 0
    cdef floating l2 = <floating> h.l2
    cdef const floating *dz = ws + net.d_off[l]
    if i1 > i0:
        if h.l2 > 0:
            # L2 enters the gradient itself (dW = A^T dZ + l2 W), so every optimizer and
            # loss_and_gradients see the same objective.
            for i in range(cnt):
                grads[off + i] = l2 * params[off + i]
            accumulate = 1
        # dW_l[i0:i1] (+)= A_{l-1}[:, i0:i1]^T @ D_l, by fm_dense's tiles (no repacking).
        if floating is float:
            fm_dense_at_f(i1 - i0, nb, fan_out, layer_input(net, ws, l - 1) + i0, fan_in, dz,
                          grads + off, fan_out, accumulate, FM_ISA_AUTO)
        else:
            fm_dense_at_d(i1 - i0, nb, fan_out, layer_input(net, ws, l - 1) + i0, fan_in, dz,
                          grads + off, fan_out, accumulate, FM_ISA_AUTO)
        if update:
            optimizer_update(h, cnt, params + off, grads + off, s1 + off, s2 + off)
    if part == 0:
        off = net.b_off[l]
        if floating is float:
            fm_col_sum_f(nb, fan_out, dz, grads + off)
        else:
            fm_col_sum_d(nb, fan_out, dz, grads + off)
        if update:
            optimizer_update(h, fan_out, params + off, grads + off, s1 + off, s2 + off)


cdef double step(const Net *net, const Hyper *h, floating *params, floating *grads,
                 floating *s1, floating *s2, floating *ws, int32_t *ybuf, const floating *X,
                 const int32_t *y, const floating *targets, const floating *sample_weight,
                 const int64_t *batch,
                 Py_ssize_t nb, double wsum, int n_threads, Py_ssize_t block_rows, int n_parts,
                 uint64_t seed, bint update, int64_t *n_correct) noexcept nogil:
    """One mini-batch of total sample weight wsum > 0: both phases.

    Returns the batch's summed (weighted) loss.
    """
    cdef double block_loss[MAX_BLOCKS]
    cdef int64_t block_correct[MAX_BLOCKS]
    # The partition depends on the batch size alone, never on the thread count.
    cdef int n_blocks = <int> min((nb + block_rows - 1) // block_rows, <Py_ssize_t> MAX_BLOCKS)
    cdef int b, item
    cdef int L = net.n_layers
    cdef Py_ssize_t r0, r1
    cdef double total = 0
    cdef unsigned int fpu
    for b in prange(n_blocks, num_threads=n_threads, schedule="dynamic"):
        r0 = b * nb // n_blocks
        r1 = (b + 1) * nb // n_blocks
        block_correct[b] = 0
        fpu = fm_denormals_off()
        rows_step(net, h, params, ws, ybuf, X, y, targets, sample_weight, batch, r0, r1 - r0,
                  1.0 / wsum, seed, &block_loss[b], &block_correct[b])
        fm_fpu_restore(fpu)
    # Dynamic scheduling: a thread the OS has paused does not hold up the others.
    for item in prange(L * n_parts, num_threads=n_threads, schedule="dynamic"):
        fpu = fm_denormals_off()
        param_part(net, h, params, grads, s1, s2, ws, nb, item // n_parts + 1,
                   item % n_parts, n_parts, update)
        fm_fpu_restore(fpu)
    for b in range(n_blocks):   # fixed order: the loss does not depend on the threads
        total += block_loss[b]
        n_correct[0] += block_correct[b]
    return total


cdef int check_indices(const int32_t[::1] y, int k, const int64_t[::1] order,
                       Py_ssize_t n) except -1:
    """Labels in [0, k) and sample indices in [0, n): C reads memory by them."""
    cdef Py_ssize_t i
    cdef bint bad_y = False, bad_order = False
    with nogil:
        if y is not None:
            for i in range(y.shape[0]):
                bad_y |= y[i] < 0 or y[i] >= k
        if order is not None:
            for i in range(order.shape[0]):
                bad_order |= order[i] < 0 or order[i] >= n
    if bad_y:
        raise ValueError(f"labels must be encoded in [0, {k})")
    if bad_order:
        raise ValueError(f"sample indices must lie in [0, {n})")
    return 0


cdef int check_targets(int loss, const int32_t[::1] y, const floating[:, ::1] targets,
                       Py_ssize_t n, int k) except -1:
    """Classification needs n labels in [0, k); regression an (n x k) target matrix."""
    if loss == LOSS_SQUARED_ERROR:
        if targets is None or targets.shape[0] != n or targets.shape[1] != k:
            raise ValueError(f"regression needs targets of shape ({n}, {k})")
    elif y is None or y.shape[0] != n:
        raise ValueError(f"classification needs {n} labels")
    return check_indices(y if loss != LOSS_SQUARED_ERROR else None, k, None, n)


cdef inline const int32_t *labels_ptr(const int32_t[::1] y) noexcept:
    return &y[0] if y is not None and y.shape[0] > 0 else NULL


cdef inline const floating *targets_ptr(const floating[:, ::1] t) noexcept:
    return &t[0, 0] if t is not None and t.shape[0] > 0 else NULL


cdef inline double batch_weight(const floating *sample_weight, const int64_t *batch,
                                Py_ssize_t nb) noexcept nogil:
    cdef double wsum = 0
    cdef Py_ssize_t r
    if sample_weight == NULL:
        return <double> nb
    for r in range(nb):
        wsum += sample_weight[batch[r]]
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


def train_epoch(floating[::1] params, floating[::1] grads, floating[::1] state1,
                floating[::1] state2, const floating[:, ::1] X, const int32_t[::1] y,
                const floating[::1] sample_weight, const int64_t[::1] order,
                floating[::1] ws, int32_t[::1] ybuf, const int[::1] sizes,
                const int[::1] acts, *, int loss, int optimizer, double lr, double beta1,
                double beta2, double eps, double momentum, double l2, double dropout,
                uint64_t seed, int64_t t, Py_ssize_t batch_size, int n_threads,
                const floating[:, ::1] targets=None,
                Py_ssize_t block_rows=BLOCK_ROWS, int n_parts=PARAM_PARTS,
                double deadline=INFINITY,
                bint check_interrupt=False):
    """Run one epoch of mini-batch training over ``X[order]`` without the GIL.

    Classification reads the labels `y`; regression (loss LOSS_SQUARED_ERROR) reads
    `targets` (one row of outputs per row of X) and may pass None for `y`.

    Returns ``(loss_sum, weight_sum, n_correct, n_seen, t, status)``: the summed
    (weighted) data loss, the summed sample weights and the correct predictions of the
    mini-batches run, the samples in them (a batch whose weights are all zero is
    skipped), the optimizer step count after the epoch, and
    STATUS_DONE, STATUS_TIME (the monotonic clock passed `deadline`) or STATUS_NONFINITE
    (a mini-batch loss was NaN or inf; the epoch stops after that step). An exception
    raised by a signal handler (Ctrl-C) propagates at the next mini-batch boundary, with
    the parameters as the last completed step left them.
    """
    cdef Net net
    cdef Hyper h
    cdef Py_ssize_t n = order.shape[0], start = 0, nb, n_seen = 0
    cdef double loss_sum = 0, weight_sum = 0, batch_loss, wsum
    cdef int64_t n_correct = 0
    cdef int status = STATUS_DONE, interrupted = 0, steps = 0
    cdef const floating *sw = NULL
    cdef const int32_t *yp = labels_ptr(y)
    cdef const floating *tp = targets_ptr(targets)
    net_init(&net, sizes, acts, batch_size, True, dropout > 0, loss == LOSS_SQUARED_ERROR)
    if ws.shape[0] < net.ws_size or ybuf.shape[0] < batch_size:
        raise ValueError("workspace too small")
    if params.shape[0] != net.b_off[net.n_layers] + net.sizes[net.n_layers]:
        raise ValueError("parameter buffer does not match the layer sizes")
    if X.shape[1] != net.sizes[0]:
        raise ValueError("X does not match the network")
    check_targets(loss, y, targets, X.shape[0], net.sizes[net.n_layers])
    if not (block_rows >= 1 and n_parts >= 1 and n_threads >= 1):
        raise ValueError("bad partition")
    if state1.shape[0] != params.shape[0] or grads.shape[0] != params.shape[0] or \
            (optimizer == OPT_ADAM and state2.shape[0] != params.shape[0]):
        raise ValueError("gradient or optimizer state does not match the parameters")
    if sample_weight is not None and sample_weight.shape[0] != X.shape[0]:
        raise ValueError("one sample weight per row of X")
    check_indices(None, 0, order, X.shape[0])
    if not 0 <= t <= (<int64_t> 1 << 62):
        raise ValueError(f"the optimizer step count {t} is out of range")
    if sample_weight is not None:
        sw = &sample_weight[0]
    h.loss = loss
    h.optimizer = optimizer
    h.lr = lr
    h.beta1 = beta1
    h.beta2 = beta2
    h.eps = eps
    h.momentum = momentum
    h.l2 = l2
    h.dropout = dropout
    with nogil:
        blas_single_enter()
        while start < n:
            nb = min(batch_size, n - start)
            wsum = batch_weight(sw, &order[start], nb)
            start += nb
            if wsum <= 0:   # every sample weighs 0: there is nothing to learn from
                continue
            h.t = t + 1
            batch_loss = step(&net, &h, &params[0], &grads[0], &state1[0], &state2[0],
                              &ws[0], &ybuf[0], &X[0, 0], yp, tp, sw, &order[start - nb],
                              nb, wsum, n_threads, block_rows, n_parts,
                              fm_hash64(seed, h.t), True, &n_correct)
            t += 1
            loss_sum += batch_loss
            weight_sum += wsum
            n_seen += nb
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
        blas_single_exit()
    if interrupted:
        reraise()
    return loss_sum, weight_sum, n_correct, n_seen, t, status


def loss_and_gradients(floating[::1] params, floating[::1] grads,
                       const floating[:, ::1] X, const int32_t[::1] y,
                       const floating[::1] sample_weight, const int[::1] sizes,
                       const int[::1] acts, *, int loss, double l2, int n_threads,
                       const floating[:, ::1] targets=None):
    """Weighted mean loss over all of X (plus 0.5 * l2 * sum W^2) and its gradient.

    Labels `y` for classification, `targets` for regression (as in train_epoch).

    The gradient of every parameter is written into `grads` (the flat layout). Runs the
    same code as a training step, with the whole data as one batch and no update.
    """
    cdef Net net
    cdef Hyper h
    cdef Py_ssize_t n = X.shape[0], i
    cdef double weight_sum, total, penalty = 0
    cdef int64_t n_correct = 0
    cdef int l
    cdef const floating *sw = NULL
    cdef const int32_t *yp = labels_ptr(y)
    cdef const floating *tp = targets_ptr(targets)
    net_init(&net, sizes, acts, n, True, False, loss == LOSS_SQUARED_ERROR)
    if params.shape[0] != grads.shape[0] or \
            params.shape[0] != net.b_off[net.n_layers] + net.sizes[net.n_layers]:
        raise ValueError("parameter buffer does not match the layer sizes")
    if X.shape[1] != net.sizes[0] or n == 0:
        raise ValueError("X does not match the network")
    if sample_weight is not None and sample_weight.shape[0] != n:
        raise ValueError("one sample weight per row of X")
    check_targets(loss, y, targets, n, net.sizes[net.n_layers])
    dtype = np.float32 if floating is float else np.float64
    cdef floating[::1] ws = np.empty(net.ws_size, dtype=dtype)
    cdef int32_t[::1] ybuf = np.empty(n, dtype=np.int32)
    cdef int64_t[::1] order = np.arange(n, dtype=np.int64)
    if sample_weight is not None:
        sw = &sample_weight[0]
    h.loss = loss
    h.l2 = l2
    h.dropout = 0
    with nogil:
        weight_sum = batch_weight(sw, &order[0], n)
    if not weight_sum > 0:
        raise ValueError("the sample weights sum to zero")
    with nogil:
        blas_single_enter()
        total = step(&net, &h, &params[0], &grads[0], <floating *> NULL,
                     <floating *> NULL, &ws[0], &ybuf[0], &X[0, 0], yp, tp, sw, &order[0],
                     n, weight_sum, n_threads, BLOCK_ROWS, PARAM_PARTS, 0, False,
                     &n_correct)
        blas_single_exit()
        for l in range(1, net.n_layers + 1):
            for i in range(<Py_ssize_t> net.sizes[l - 1] * net.sizes[l]):
                penalty += <double> params[net.w_off[l] + i] * params[net.w_off[l] + i]
    return total / weight_sum + 0.5 * l2 * penalty


def forward(const floating[::1] params, const floating[:, ::1] X, floating[:, ::1] out,
            const int[::1] sizes, const int[::1] acts, *, bint softmax, int n_threads,
            Py_ssize_t max_block_rows=PREDICT_BLOCK_ROWS, int isa=FM_ISA_AUTO):
    """out = the network's output for X (softmax applied if `softmax`), without the GIL.

    Each layer is one fm_dense call per block of rows (our own GEMM with bias and
    activation fused; no BLAS). Rows go in blocks of at most `max_block_rows`, so a
    block's activations stay in cache; batches of 64 rows and more make at least 2 to 4
    blocks so they can run in parallel. fm_dense computes every row the same way wherever
    it falls, so results are bitwise the same for any thread count (and block size). A
    single block runs on the calling thread with no OpenMP region; one row takes
    fm_vecmat instead. `isa` picks an fm_dense variant (tests); the default is the best
    this CPU runs. NaN and infinity in X raise ValueError (found in the first layer's
    products, see fm_dense), as do finite inputs so large that the first layer
    overflows.
    """
    cdef Net net
    cdef Py_ssize_t n = X.shape[0], n_blocks, block_rows, b, tails_size = 0, need
    cdef Py_ssize_t t_off[MAX_LAYERS + 1]
    cdef int L, k, l, tid, bad = 0
    cdef floating small_ws[SMALL_WORKSPACE]
    cdef floating *buf
    cdef floating *tails
    if max_block_rows < 1:
        raise ValueError("max_block_rows must be at least 1")
    if isa != FM_ISA_AUTO and not fm_dense_isa_available(isa):
        raise ValueError(f"this CPU cannot run fm_dense variant {isa}")
    n_blocks = max((n + max_block_rows - 1) // max_block_rows, min(4, n // 32), 1)
    block_rows = max((n + n_blocks - 1) // n_blocks, 1)
    net_init(&net, sizes, acts, block_rows, False, False)
    L = net.n_layers
    k = net.sizes[L]
    if params.shape[0] != net.b_off[L] + k:
        raise ValueError("parameter buffer does not match the layer sizes")
    if X.shape[1] != net.sizes[0] or out.shape[0] != n or out.shape[1] != k:
        raise ValueError("X or out does not match the network")
    if n == 0:
        return
    n_blocks = (n + block_rows - 1) // block_rows
    n_threads = <int> min(<Py_ssize_t> n_threads, n_blocks)
    # Zero-padded last columns of each W whose width is not a multiple of fm_dense's
    # panel (e.g. the 10 outputs): packed once here, read by every block.
    if n > 1:
        for l in range(1, L + 1):
            t_off[l] = tails_size
            tails_size += fm_dense_tail_size(net.sizes[l - 1], net.sizes[l], sizeof(floating))
    # A request's workspace (the hidden activations of a few rows) fits on the stack: no
    # allocation beyond the output for small batches.
    need = tails_size + net.ws_size * n_threads
    if need <= SMALL_WORKSPACE:
        buf = small_ws
    else:
        buf = <floating *> malloc(max(need, 1) * sizeof(floating))
        if buf == NULL:
            raise MemoryError()
    tails = buf
    buf = buf + tails_size
    try:
        with nogil:
            if n > 1:
                for l in range(1, L + 1):
                    if floating is float:
                        fm_dense_pack_tail_f(net.sizes[l - 1], net.sizes[l],
                                             &params[net.w_off[l]], &params[net.b_off[l]],
                                             tails + t_off[l])
                    else:
                        fm_dense_pack_tail_d(net.sizes[l - 1], net.sizes[l],
                                             &params[net.w_off[l]], &params[net.b_off[l]],
                                             tails + t_off[l])
            if n_threads <= 1:
                for b in range(n_blocks):
                    bad += forward_block(&net, &params[0], tails, t_off, buf, &X[0, 0],
                                         &out[0, 0], n, block_rows, b, softmax, isa)
            else:
                for b in prange(n_blocks, num_threads=n_threads, schedule="dynamic"):
                    tid = threadid()
                    bad += forward_block(&net, &params[0], tails, t_off,
                                         buf + tid * net.ws_size, &X[0, 0], &out[0, 0], n,
                                         block_rows, b, softmax, isa)
    finally:
        if tails != small_ws:
            free(tails)
    if bad:
        raise ValueError(
            "X contains NaN or infinity (or values so large that the first layer "
            "overflows); remove or impute them first."
        )


cdef int forward_block(const Net *net, const floating *params, const floating *tails,
                       const Py_ssize_t *t_off, floating *ws, const floating *X,
                       floating *out, Py_ssize_t n, Py_ssize_t block_rows, Py_ssize_t b,
                       bint softmax, int isa) noexcept nogil:
    """Forward pass of block b of X into out; 1 if the block holds NaN or infinity."""
    cdef Py_ssize_t r0 = b * block_rows, nr = min(block_rows, n - r0)
    cdef int L = net.n_layers, k = net.sizes[L], l, fan_in, fan_out, ok
    cdef const floating *inp = X + r0 * net.sizes[0]
    cdef floating *z
    if n == 1:   # one sample: no GEMM (see fm_vecmat)
        if forward_rows(net, params, ws, inp, out + r0 * k, 0, 1, 0, 0, True):
            return 1
    else:
        for l in range(1, L + 1):
            fan_in = net.sizes[l - 1]
            fan_out = net.sizes[l]
            z = out + r0 * k if l == L else ws + net.a_off[l]
            if floating is float:
                ok = fm_dense_f(nr, fan_in, fan_out, inp, fan_in, params + net.w_off[l],
                                params + net.b_off[l], tails + t_off[l], net.acts[l], z,
                                fan_out, isa)
            else:
                ok = fm_dense_d(nr, fan_in, fan_out, inp, fan_in, params + net.w_off[l],
                                params + net.b_off[l], tails + t_off[l], net.acts[l], z,
                                fan_out, isa)
            if l == 1 and not ok:
                return 1
            inp = z
    if softmax:
        if floating is float:
            fm_softmax_f(nr, k, out + r0 * k)
        else:
            fm_softmax_d(nr, k, out + r0 * k)
    return 0


def evaluate(const floating[::1] params, const floating[:, ::1] X, const int32_t[::1] y,
             const floating[::1] sample_weight, floating[:, ::1] out, const int[::1] sizes,
             const int[::1] acts, *, int loss, int n_threads,
             const floating[:, ::1] targets=None):
    """Summed (weighted) loss and correct predictions of the network on (X, y).

    `out` (n x k) receives the softmax probabilities (cross-entropy) or outputs (MSE).
    Regression reads `targets` instead of `y` and counts no correct predictions.
    """
    cdef int64_t n_correct = 0
    cdef double total
    cdef const floating *sw = NULL
    if X.shape[0] == 0:
        raise ValueError("X is empty")
    if sample_weight is not None and sample_weight.shape[0] != X.shape[0]:
        raise ValueError("one sample weight per row of X")
    check_targets(loss, y, targets, X.shape[0], sizes[sizes.shape[0] - 1])
    forward(params, X, out, sizes, acts, softmax=False, n_threads=n_threads)
    if sample_weight is not None:
        sw = &sample_weight[0]
    with nogil:
        if loss == LOSS_SQUARED_ERROR:
            if floating is float:
                total = fm_squared_error_f(out.shape[0], out.shape[1], &out[0, 0],
                                           &targets[0, 0], sw, 0, NULL)
            else:
                total = fm_squared_error_d(out.shape[0], out.shape[1], &out[0, 0],
                                           &targets[0, 0], sw, 0, NULL)
        elif loss == LOSS_CROSS_ENTROPY:
            if floating is float:
                total = fm_softmax_xent_f(out.shape[0], out.shape[1], &out[0, 0], &y[0], sw,
                                          0, NULL, &n_correct)
            else:
                total = fm_softmax_xent_d(out.shape[0], out.shape[1], &out[0, 0], &y[0], sw,
                                          0, NULL, &n_correct)
        else:
            if floating is float:
                total = fm_mse_f(out.shape[0], out.shape[1], &out[0, 0], &y[0], sw, 0, NULL,
                                 &n_correct)
            else:
                total = fm_mse_d(out.shape[0], out.shape[1], &out[0, 0], &y[0], sw, 0, NULL,
                                 &n_correct)
    return total, n_correct
