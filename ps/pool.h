/* pool.h -- a small persistent thread pool for the ps's update loops: the
 * optimizer update of a gradient and the sync mean, split over chunks of
 * the owned ranges.
 *
 *     caller:  run(njobs, fn) --> wakes min(njobs - 1, threads - 1) workers
 *              takes jobs too          |
 *              waits until all done <--+  each job: fn(ctx, job, njobs)
 *
 * Jobs are handed out one at a time (a counter under the pool's mutex), so
 * which thread runs which job varies; a job must therefore depend on its
 * index only. The ps's jobs are elementwise over disjoint chunks, so the
 * numbers are the same bits as one loop over everything (store.c).
 * Workers sleep on a condition variable between runs (no busy wait).
 *
 * Not reentrant: one run at a time (the ps calls it from its handler, which
 * the RPC server serialises). */
#ifndef TFPS_PS_POOL_H
#define TFPS_PS_POOL_H

#include <stddef.h>

typedef struct tfps_pool tfps_pool;
typedef void (*tfps_pool_fn)(void *ctx, int job, int njobs);

#define TFPS_POOL_MAX_THREADS 64   /* more are not started; tfps_pool_chunks never gives more chunks */

/* A pool of `threads` threads in all (at most TFPS_POOL_MAX_THREADS): the
 * caller of run and threads - 1 workers started here. NULL with a message when threads < 2 (nothing to
 * start: callers run serially) or when no worker could be started; a pool
 * with fewer workers than asked for when only some could (logged). */
tfps_pool *tfps_pool_new(int threads, char *err, size_t errlen);
void tfps_pool_free(tfps_pool *p);   /* NULL-safe; joins the workers */
/* Threads a run may use: workers + the caller; 1 for NULL. */
int tfps_pool_threads(const tfps_pool *p);
/* fn(ctx, j, njobs) for every j in [0, njobs), on the workers and the
 * calling thread; returns once every job returned. A NULL pool (or njobs
 * 1) runs them in order on the caller. */
void tfps_pool_run(tfps_pool *p, int njobs, tfps_pool_fn fn, void *ctx);

/* How many chunks of at least min_chunk elements n elements are split into
 * for a pool of p's threads: 1 (no split) for small work, so a small update
 * pays no wake-up. min_chunk 0 counts as 1. */
int tfps_pool_chunks(const tfps_pool *p, size_t n, size_t min_chunk);
/* [*lo, *hi) of chunk j of `chunks` over n elements: near-equal, the
 * boundaries on multiples of 16 elements (64 bytes), contiguous, covering
 * [0, n). */
void tfps_pool_chunk(size_t n, int j, int chunks, size_t *lo, size_t *hi);

#endif
