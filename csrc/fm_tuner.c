#include "fm_tuner.h"

/* A window lasts at least this many steps and this long: long enough that one window
   sees what the OS does to the threads (its time slices are milliseconds). */
#define FM_TUNER_MIN_STEPS 4
#define FM_TUNER_MIN_SECONDS 8e-3
/* A new tuner probes after its first window: a fit does not know whether it shares its
   cores, and each window of a paused thread costs several of one thread's. */
#define FM_TUNER_FIRST_PROBE 1
/* After this many steps a probe has lost without waiting for the window's end when it
   is already slower per row than the current level: FM_TUNER_SLOWDOWN times for more
   threads (two threads on a shared core ran 9x slower per row: a full window of them cost
   7 ms of one thread's 8), at all for fewer, which must be faster to win (on quiet cores
   every fit's first try of one thread cost most of a window). Two steps, so that waking
   the threads up is not all the first step measures. */
#define FM_TUNER_VERDICT_STEPS 2
/* Probes come after 4 to 64 windows. A probe of fewer threads must be 20% faster per row
   to win, of more threads 5%: a paused thread costs 2-5x, while a quiet VM's windows jitter
   by tens of percent, which must not talk the tuner out of threads that help (at batch 32
   two threads are only 1.2-1.4x one). A window twice as slow as the one before it calls a
   probe of fewer threads at once. */
#define FM_TUNER_PERIOD_MIN 4
#define FM_TUNER_PERIOD_MAX 64
#define FM_TUNER_MARGIN_DOWN 0.20
#define FM_TUNER_MARGIN_UP 0.05
#define FM_TUNER_SLOWDOWN 2.0

static void window_reset(fm_tuner *t, double now)
{
    t->steps = 0;
    t->rows = 0.0;
    t->start = now;
}

void fm_tuner_init(fm_tuner *t, int n_max, double now)
{
    t->n_max = n_max > 1 ? n_max : 1;
    t->current = t->n_max;
    t->probe = 0;
    t->up = 0;
    t->period = FM_TUNER_PERIOD_MIN;
    t->countdown = FM_TUNER_FIRST_PROBE;
    t->rate = 0.0;
    window_reset(t, now);
}

void fm_tuner_follow(fm_tuner *t, const fm_tuner *last, int n_max, double now)
{
    fm_tuner_init(t, n_max, now);
    if (last->current < last->n_max && last->current < t->n_max)
        t->current = last->current;
    t->period = last->period;
}

int fm_tuner_threads(const fm_tuner *t)
{
    return t->probe ? t->probe : t->current;
}

/* The level a probe tries: half or twice the threads, alternating from a middle level. */
static int probe_level(fm_tuner *t)
{
    int down = t->current / 2 > 0 ? t->current / 2 : 1;
    int up = 2 * t->current < t->n_max ? 2 * t->current : t->n_max;
    if (t->current == t->n_max)
        return down;
    if (t->current == 1)
        return up;
    t->up = !t->up;
    return t->up ? up : down;
}

/* The probe lost: back to the current level; the next probe waits twice as long. */
static void lost(fm_tuner *t)
{
    if (t->period < FM_TUNER_PERIOD_MAX)
        t->period *= 2;
    t->probe = 0;
    t->countdown = t->period;
}

void fm_tuner_resume(fm_tuner *t, double now)
{
    window_reset(t, now);
}

void fm_tuner_step(fm_tuner *t, double rows, double now)
{
    double per_row;
    t->steps += 1;
    t->rows += rows;
    if (t->probe && t->rate > 0.0 && t->steps >= FM_TUNER_VERDICT_STEPS && t->rows > 0.0 &&
        now - t->start > (t->probe > t->current ? FM_TUNER_SLOWDOWN : 1.0) * t->rate * t->rows) {
        lost(t);
        window_reset(t, now);
        return;
    }
    if (t->n_max == 1 || t->steps < FM_TUNER_MIN_STEPS ||
        now - t->start < FM_TUNER_MIN_SECONDS || t->rows <= 0.0)
        return;
    per_row = (now - t->start) / t->rows;
    if (t->probe) {
        double margin = t->probe < t->current ? FM_TUNER_MARGIN_DOWN : FM_TUNER_MARGIN_UP;
        if (t->rate > 0.0 && per_row < (1.0 - margin) * t->rate) {
            t->current = t->probe;
            t->rate = per_row;
            t->period = FM_TUNER_PERIOD_MIN;
            t->probe = 0;
            t->countdown = t->period;
        } else {
            lost(t);
        }
    } else {
        /* A slowdown is answered with fewer threads only: more would not help. */
        int slowed = t->current > 1 && t->rate > 0.0 && per_row > FM_TUNER_SLOWDOWN * t->rate;
        t->rate = per_row;
        t->countdown -= 1;
        if (slowed)
            t->probe = t->current / 2;
        else if (t->countdown <= 0)
            t->probe = probe_level(t);
    }
    window_reset(t, now);
}
