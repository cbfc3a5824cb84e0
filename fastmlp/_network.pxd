# cython: language_level=3
"""The compiled network (``Network``), shared with the trainer."""
from libc.stdint cimport int32_t, int64_t

cdef enum:
    MAX_LAYERS = 64      # Linear layers


cpdef enum Loss:
    LOSS_CROSS_ENTROPY = 0
    LOSS_MSE = 1             # squared error against one-hot targets (a classifier)
    LOSS_SQUARED_ERROR = 2   # regression: real targets instead of labels


cdef struct Layout:
    int n_layers                        # L, the number of Linear layers
    int sizes[MAX_LAYERS + 1]           # sizes[0] inputs ... sizes[L] outputs
    int acts[MAX_LAYERS + 1]            # activation code of layer l = 1..L
    Py_ssize_t w_off[MAX_LAYERS + 1]    # offsets of W_l (fan_in x fan_out, row-major)
    Py_ssize_t b_off[MAX_LAYERS + 1]    # and of b_l in the flat parameter buffer
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
    cdef readonly object dtype
    cdef readonly int loss
    cdef bint is_double
