/* What OpenMP offers, or one thread when the extension was built without it. */
#ifndef FM_OPENMP_H
#define FM_OPENMP_H

#ifdef _OPENMP
#include <omp.h>
static inline int fm_openmp_enabled(void) { return 1; }
/* Honours OMP_NUM_THREADS and threadpoolctl's OpenMP limit. */
static inline int fm_openmp_max_threads(void) { return omp_get_max_threads(); }
#else
static inline int fm_openmp_enabled(void) { return 0; }
static inline int fm_openmp_max_threads(void) { return 1; }
#endif

#endif
