/* Instantiates the sparse first-layer kernels of fm_sparse_impl.h for float (_f) and
   double (_d). */
#include "fm_kernels.h"

/* The axpy over a row of W is the whole of both kernels: copies per instruction set. */
#include "fm_dispatch.h"

#define T float
#define S _f
#include "fm_sparse_impl.h"
#undef T
#undef S

#define T double
#define S _d
#include "fm_sparse_impl.h"
#undef T
#undef S
