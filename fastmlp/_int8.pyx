# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
# cython: initializedcheck=False
"""``Int8Network``: the compiled layers of a quantized MLP (``fastmlp/quantize.py``).

It packs each int8 weight matrix once, in the layout ``csrc/fm_int8.h`` describes, and
predicts in blocks of rows: each block quantizes its rows, runs every layer in integer
arithmetic with the float epilogue fused and (optionally) the softmax, with the GIL
released. Blocks are spread over OpenMP threads; every row is computed the same way
wherever it falls, so results are bitwise the same for any thread count. The network is
never written after it is built, so many threads may predict with it at once.
"""
from cpython.buffer cimport PyObject_GetBuffer, PyBuffer_Release, PyBUF_WRITABLE
from cython.parallel cimport prange, threadid
from libc.stdint cimport int8_t, int32_t, uint8_t, uintptr_t
from libc.stdlib cimport malloc, free

from fastmlp._network cimport ready_rows

import numpy as np

cdef extern from "fm_int8.h" nogil:
    enum:
        FM_INT8_ISA_AUTO
        FM_INT8_ISA_BASE
        FM_INT8_ISA_AVX2
        FM_INT8_ISA_AVX512_VNNI
        FM_INT8_ISA_AVX_VNNI
        FM_INT8_ISA_VNNI_EMULATED
        FM_INT8_TILE
        FM_INT8_GROUP
        FM_INT8_QMAX
        FM_INT8_MAX_FAN_IN
    ctypedef struct fm_int8_layer:
        Py_ssize_t k, n
        const int8_t *packed
        const int32_t *offset
        const float *mult
        const float *bias
        float inv_next
    int fm_int8_isa_available(int isa)
    int fm_int8_isa_best()
    Py_ssize_t fm_int8_packed_size(Py_ssize_t k, Py_ssize_t n)
    void fm_int8_pack(Py_ssize_t k, Py_ssize_t n, const int8_t *W, int8_t *P)
    int fm_int8_quantize(Py_ssize_t m, Py_ssize_t k, const float *X, Py_ssize_t ldx,
                         float inv, int zero_point, uint8_t *Q, Py_ssize_t ldq)
    size_t fm_int8_workspace_size(Py_ssize_t m, int n_layers, const fm_int8_layer *layers)
    int fm_int8_forward(Py_ssize_t m, int n_layers, const fm_int8_layer *layers, float in_inv,
                        int in_zero_point, const float *X, Py_ssize_t ldx, float *out,
                        Py_ssize_t ldo, int softmax, void *ws, int isa)

cdef enum:
    MAX_LAYERS = 64
    BLOCK_ROWS = 64        # rows per block: their activations stay in L1/L2
    PARALLEL_ROWS = 64     # fewer rows make one block, run on the calling thread
    SMALL_WORKSPACE = 16384

FLOAT32 = np.dtype(np.float32)
NOT_FINITE = ("X contains NaN or infinity (or values so large that quantizing them "
              "overflows); remove or impute them first.")

# The names of the variants, for tests and benchmarks.
# "vnni_emulated": the VNNI variants' code with vpdpbusd built of AVX2 instructions, so that
# tests run it on machines without VNNI; never the default.
ISAS = {"base": FM_INT8_ISA_BASE, "avx2": FM_INT8_ISA_AVX2,
        "avx512_vnni": FM_INT8_ISA_AVX512_VNNI, "avx_vnni": FM_INT8_ISA_AVX_VNNI,
        "vnni_emulated": FM_INT8_ISA_VNNI_EMULATED}
QMAX = FM_INT8_QMAX
MAX_FAN_IN = FM_INT8_MAX_FAN_IN


def isas():
    """Names of the variants this CPU runs."""
    return [name for name, code in ISAS.items() if fm_int8_isa_available(code)]


def isa_best():
    """Name of the variant used by default."""
    best = fm_int8_isa_best()
    return next(name for name, code in ISAS.items() if code == best)


def _isa_code(isa):
    if isa is None:
        return FM_INT8_ISA_AUTO
    if isa not in ISAS or not fm_int8_isa_available(ISAS[isa]):
        raise ValueError(f"this CPU cannot run the int8 variant {isa!r}; it runs {isas()}")
    return ISAS[isa]


def _aligned_empty(Py_ssize_t size, dtype):
    """A zeroed 1-D array of `size` elements whose data starts on a 64-byte boundary."""
    dtype = np.dtype(dtype)
    raw = np.zeros(size * dtype.itemsize + 64, dtype=np.uint8)
    start = (-raw.ctypes.data) % 64
    return raw[start:start + size * dtype.itemsize].view(dtype)


def pack(W):
    """W (k x n int8) in the packed layout of fm_int8.h, a 64-byte aligned int8 array."""
    cdef const int8_t[:, ::1] w = np.ascontiguousarray(W, dtype=np.int8)
    cdef Py_ssize_t k = w.shape[0], n = w.shape[1]
    cdef int8_t[::1] p
    packed = _aligned_empty(fm_int8_packed_size(k, n), np.int8)
    p = packed
    if k and n:
        fm_int8_pack(k, n, &w[0, 0], &p[0])
    return packed


def quantize_rows(const float[:, ::1] X, float inv, int zero_point):
    """fm_int8_quantize: (Q of X's width, all finite) for tests."""
    cdef Py_ssize_t m = X.shape[0], k = X.shape[1]
    Q = np.zeros((m, (k + 3) // 4 * 4), dtype=np.uint8)
    cdef uint8_t[:, ::1] q = Q
    cdef int ok = 1
    if m and k:
        with nogil:
            ok = fm_int8_quantize(m, k, &X[0, 0], k, inv, zero_point, &q[0, 0], q.shape[1])
    return Q[:, :k], bool(ok)


cdef class Int8Network:
    """The packed layers of a quantized classifier, ready to predict.

    Parameters
    ----------
    weights : list of int8 arrays (fan_in, fan_out)
    offsets : list of int32 arrays (fan_out,)
        Added to each column's sum: -input zero point * the column's weight sum.
    mults : list of float32 arrays (fan_out,)
        Input scale * weight scale of the column.
    biases : list of float32 arrays (fan_out,)
    inv_next : list of float
        Per layer but the last, 1 / the next layer's input scale.
    in_inv : float
        1 / the first layer's input scale.
    in_zero_point : int
        The first layer's input zero point, in [0, 127].
    """
    cdef fm_int8_layer layers[MAX_LAYERS]
    cdef int n_layers
    cdef float in_inv
    cdef int in_zero_point
    cdef readonly tuple sizes
    cdef list _keep   # the arrays the layers point into

    def __init__(self, weights, offsets, mults, biases, inv_next, float in_inv,
                 int in_zero_point):
        cdef int l, L = len(weights)
        cdef Py_ssize_t k, n, n16
        cdef int8_t[::1] p
        cdef int32_t[::1] o
        cdef float[::1] mv, bv
        if not 1 <= L <= MAX_LAYERS or not len(offsets) == len(mults) == len(biases) == L \
                or len(inv_next) != L - 1:
            raise ValueError(f"need 1 to {MAX_LAYERS} layers, each with all its arrays")
        if not 0 <= in_zero_point <= FM_INT8_QMAX:
            raise ValueError(f"the input zero point must lie in [0, {FM_INT8_QMAX}]")
        self._keep = []
        sizes = [np.shape(weights[0])[0]]
        for l in range(L):
            W = np.ascontiguousarray(weights[l], dtype=np.int8)
            if W.ndim != 2 or W.shape[0] != sizes[l] or W.shape[1] < 1:
                raise ValueError(f"layer {l + 1}: weights do not chain")
            k, n = W.shape[0], W.shape[1]
            if not 1 <= k <= FM_INT8_MAX_FAN_IN:
                raise ValueError(f"layer {l + 1} has {k} inputs; int8 layers take 1 to "
                                 f"{FM_INT8_MAX_FAN_IN} (int32 sums must not overflow)")
            if (W == -128).any():
                raise ValueError("int8 weights must lie in [-127, 127]")
            n16 = (n + FM_INT8_TILE - 1) // FM_INT8_TILE * FM_INT8_TILE
            packed = pack(W)
            arrays = []
            for src, dtype in ((offsets[l], np.int32), (mults[l], np.float32),
                               (biases[l], np.float32)):
                a = _aligned_empty(n16, dtype)
                src = np.asarray(src)
                if src.shape != (n,):
                    raise ValueError(f"layer {l + 1}: expected {n} offsets, mults and biases")
                a[:n] = src
                arrays.append(a)
            p = packed
            o = arrays[0]
            mv = arrays[1]
            bv = arrays[2]
            self.layers[l].k = k
            self.layers[l].n = n
            self.layers[l].packed = &p[0]
            self.layers[l].offset = &o[0]
            self.layers[l].mult = &mv[0]
            self.layers[l].bias = &bv[0]
            self.layers[l].inv_next = inv_next[l] if l < L - 1 else 0
            self._keep += [packed] + arrays
            sizes.append(n)
        self.n_layers = L
        self.in_inv = in_inv
        self.in_zero_point = in_zero_point
        self.sizes = tuple(sizes)

    def parallel_blocks(self, Py_ssize_t n_rows):
        """Row blocks :meth:`forward` makes of n_rows (1: it runs on the calling thread)."""
        return block_count(n_rows)

    def forward(self, const float[:, ::1] X, float[:, ::1] out, *, bint softmax,
                int n_threads, isa=None):
        """out = the logits (or with `softmax` the probabilities) of the rows of X.

        X (n, inputs) and out (n, outputs) are C-contiguous float32 arrays. `isa` names a
        variant from :func:`isas` (tests); None is the best this CPU runs. NaN and
        infinity in X raise ValueError.
        """
        cdef int code = _isa_code(isa)
        if (X.shape[1] != self.sizes[0] or out.shape[0] != X.shape[0]
                or out.shape[1] != self.sizes[self.n_layers]):
            raise ValueError("X or out does not match the network")
        if X.shape[0] and self.run(&X[0, 0], X.shape[0], &out[0, 0], softmax, n_threads, code):
            raise ValueError(NOT_FINITE)

    def outputs(self, X, bint softmax):
        """The outputs for X in a new float32 array (softmax applied if `softmax`), or None.

        The path of a request, as ``Network.outputs``: an ndarray that :meth:`forward`
        reads as it stands (float32, the network's width, C-contiguous, aligned, 1 to
        PARALLEL_ROWS - 1 rows, which make one block) runs on the calling thread with no
        Python between the call and the kernels. Any other X returns None, for the caller
        to check and convert. NaN and infinity raise ValueError, as in :meth:`forward`.
        """
        cdef Py_buffer view, out
        cdef int bad = 0
        if type(X) is not np.ndarray or X.dtype is not FLOAT32:
            return None
        if not ready_rows(X, self.layers[0].k, PARALLEL_ROWS, &view):
            return None
        try:
            result = np.empty((view.shape[0], self.layers[self.n_layers - 1].n), FLOAT32)
            PyObject_GetBuffer(result, &out, PyBUF_WRITABLE)   # new: contiguous, aligned
            try:
                bad = self.run(<const float *> view.buf, view.shape[0], <float *> out.buf,
                               softmax, 1, FM_INT8_ISA_AUTO)
            finally:
                PyBuffer_Release(&out)
        finally:
            PyBuffer_Release(&view)
        if bad:
            raise ValueError(NOT_FINITE)
        return result

    cdef int run(self, const float *X, Py_ssize_t n, float *out, bint softmax,
                 int n_threads, int code) except -1:
        """The n >= 1 rows of X into out, in blocks over n_threads; 1 if X holds NaN or
        infinity, else 0."""
        cdef Py_ssize_t n_blocks, block_rows, b, r0, nr
        cdef Py_ssize_t ldx = self.layers[0].k, ldo = self.layers[self.n_layers - 1].n
        cdef size_t ws_size
        cdef int bad = 0, tid
        cdef char small[SMALL_WORKSPACE + 64]
        cdef char *raw
        cdef char *ws
        n_blocks = block_count(n)
        block_rows = (n + n_blocks - 1) // n_blocks
        block_rows = (block_rows + 3) // 4 * 4   # whole strips of 4 rows
        n_blocks = (n + block_rows - 1) // block_rows
        n_threads = <int> max(1, min(<Py_ssize_t> n_threads, n_blocks))
        ws_size = (fm_int8_workspace_size(block_rows, self.n_layers, self.layers) + 63) // 64 * 64
        if ws_size * n_threads <= SMALL_WORKSPACE:
            raw = NULL
            ws = small
        else:
            raw = <char *> malloc(ws_size * n_threads + 64)
            if raw == NULL:
                raise MemoryError()
            ws = raw
        ws = ws + (64 - (<uintptr_t> ws) % 64) % 64
        with nogil:
            if n_threads <= 1:
                for b in range(n_blocks):
                    r0 = b * block_rows
                    nr = min(block_rows, n - r0)
                    bad += 1 - fm_int8_forward(nr, self.n_layers, self.layers, self.in_inv,
                                               self.in_zero_point, X + r0 * ldx, ldx,
                                               out + r0 * ldo, ldo, softmax, ws, code)
            else:
                for b in prange(n_blocks, num_threads=n_threads, schedule="dynamic"):
                    tid = threadid()
                    r0 = b * block_rows
                    nr = min(block_rows, n - r0)
                    bad += 1 - fm_int8_forward(nr, self.n_layers, self.layers, self.in_inv,
                                               self.in_zero_point, X + r0 * ldx, ldx,
                                               out + r0 * ldo, ldo, softmax,
                                               ws + tid * ws_size, code)
        free(raw)
        return bad != 0


cdef inline Py_ssize_t block_count(Py_ssize_t n) noexcept nogil:
    """Blocks of at most BLOCK_ROWS rows, and 2 to 4 at least from PARALLEL_ROWS rows on."""
    return max((n + BLOCK_ROWS - 1) // BLOCK_ROWS, min(4, n // (PARALLEL_ROWS // 2)), 1)
