/* Flush denormals to zero while training.
 *
 * Adam's second moments of rarely-active weights decay into the denormal range, where every
 * operation is slow (benches/results.md); flushing changes values only below 1e-38 (float)
 * and 1e-308 (double). The state is per thread, so every parallel task sets and restores it.
 */
#ifndef FM_FPU_H
#define FM_FPU_H

#if defined(__SSE__) || defined(_M_X64)
#include <xmmintrin.h>
static inline unsigned int fm_denormals_off(void)
{
    unsigned int old = _mm_getcsr();
    _mm_setcsr(old | 0x8040); /* FTZ (bit 15) and DAZ (bit 6) */
    return old;
}
static inline void fm_fpu_restore(unsigned int old) { _mm_setcsr(old); }
#else
static inline unsigned int fm_denormals_off(void) { return 0; }
static inline void fm_fpu_restore(unsigned int old) { (void)old; }
#endif

#endif
