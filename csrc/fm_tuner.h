/*
 * fm_tuner: how many threads the next training step should use.
 *
 * On a machine whose cores are shared (a server, another process at full load), a thread
 * the OS has paused holds every barrier of a step: two threads measured 2-5x slower than
 * one on the 2-core machine. The partition of a step never depends on the thread count,
 * so the count may change between any two steps without changing a bit of the result.
 * The tuner times windows of steps and, now and then, runs one window at the next level
 * (half or twice the threads, within 1..n_max); it moves there when that window was
 * faster per row. The first probe follows the first window; a probe already slower than
 * the current level (twice as slow, for more threads) ends after two steps. Probes grow
 * rarer (the period doubles) while they lose; a window much slower than the one before
 * calls a probe of fewer threads at once. A fit's tuner starts from the last fit's
 * (fm_tuner_follow): each fresh fit spent its first window and two probes at two threads
 * beside a busy process, 8-9% of an MNIST epoch.
 *
 * Plain C, no globals, no clock: the caller passes the time, so tests drive it with their
 * own; the caller keeps the last fit's tuner. One tuner per Trainer, used by one thread
 * (the one that runs the epoch).
 */
#ifndef FM_TUNER_H
#define FM_TUNER_H

typedef struct fm_tuner {
    int n_max;        /* the most threads (the Trainer's n_threads) */
    int current;      /* threads used outside probes */
    int probe;        /* threads of the window being timed as a probe; 0 = none */
    int up;           /* direction of the next probe from a middle level: 1 up, 0 down */
    int period;       /* windows between probes */
    int countdown;    /* windows left until the next probe */
    long steps;       /* steps in the window so far */
    double rows;      /* rows in the window so far */
    double start;     /* time the window started (seconds, the caller's clock) */
    double rate;      /* seconds per row of the last full window at `current`; 0 = none */
} fm_tuner;

/* A tuner that starts at n_max threads; `now` is the caller's clock in seconds. */
void fm_tuner_init(fm_tuner *t, int n_max, double now);

/* A tuner for a fit that follows another in the same process, whose tuner ended as
   `last`: it starts at the level `last` found (within 1..n_max) and probes as rarely, since
   the load on the cores outlives a fit; its first probe still follows its first window,
   in case the load has changed. The rate is not carried: it is another network's. */
void fm_tuner_follow(fm_tuner *t, const fm_tuner *last, int n_max, double now);

/* The threads for the next step. */
int fm_tuner_threads(const fm_tuner *t);

/* Record a step of `rows` rows that ended at `now`. */
void fm_tuner_step(fm_tuner *t, double rows, double now);

/* Start a new window at `now`, dropping the steps of an unfinished one: the time since
   the last step (validation and callbacks between epochs, another fit) is not theirs. */
void fm_tuner_resume(fm_tuner *t, double now);

#endif
