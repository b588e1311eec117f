/* pool.c -- see pool.h. */
#include "pool.h"
#include "log.h"
#include "tfps.h"

#include <pthread.h>
#include <stdlib.h>

struct tfps_pool {
    pthread_mutex_t mu;
    pthread_cond_t go;     /* workers: a run has jobs left, or quit */
    pthread_cond_t done;   /* the caller: the last job of the run returned */
    pthread_t *th;
    int nth;               /* workers started */
    int quit;
    /* the run in progress (under mu) */
    tfps_pool_fn fn;
    void *ctx;
    int njobs, next, unfinished;
};

/* Takes jobs of the current run until none is left; with mu held (released
 * around each job). */
static void take_jobs(tfps_pool *p) {
    while (p->next < p->njobs) {
        const int j = p->next++;
        tfps_pool_fn fn = p->fn;
        void *ctx = p->ctx;
        const int n = p->njobs;
        pthread_mutex_unlock(&p->mu);
        fn(ctx, j, n);
        pthread_mutex_lock(&p->mu);
        if (--p->unfinished == 0) pthread_cond_signal(&p->done);
    }
}

static void *worker(void *arg) {
    tfps_pool *p = arg;
    pthread_mutex_lock(&p->mu);
    for (;;) {
        while (!p->quit && p->next >= p->njobs) pthread_cond_wait(&p->go, &p->mu);
        if (p->quit) break;
        take_jobs(p);
    }
    pthread_mutex_unlock(&p->mu);
    return NULL;
}

tfps_pool *tfps_pool_new(int threads, char *err, size_t errlen) {
    if (threads < 2) {
        tfps_seterr(err, errlen, "pool: %d thread%s: nothing to start", threads, threads == 1 ? "" : "s");
        return NULL;
    }
    if (threads > TFPS_POOL_MAX_THREADS) threads = TFPS_POOL_MAX_THREADS;
    tfps_pool *p = calloc(1, sizeof(*p));
    if (p) p->th = calloc((size_t)threads - 1, sizeof(*p->th));
    if (!p || !p->th) {
        if (p) free(p);
        tfps_seterr(err, errlen, "pool: out of memory");
        return NULL;
    }
    pthread_mutex_init(&p->mu, NULL);
    pthread_cond_init(&p->go, NULL);
    pthread_cond_init(&p->done, NULL);
    for (int i = 0; i < threads - 1; i++) {
        if (pthread_create(&p->th[p->nth], NULL, worker, p) != 0) break;
        p->nth++;
    }
    if (p->nth == 0) {
        tfps_pool_free(p);
        tfps_seterr(err, errlen, "pool: cannot start a thread");
        return NULL;
    }
    if (p->nth < threads - 1) tfps_warn("pool: could only start %d of %d threads", p->nth + 1, threads);
    return p;
}

void tfps_pool_free(tfps_pool *p) {
    if (!p) return;
    pthread_mutex_lock(&p->mu);
    p->quit = 1;
    pthread_cond_broadcast(&p->go);
    pthread_mutex_unlock(&p->mu);
    for (int i = 0; i < p->nth; i++) pthread_join(p->th[i], NULL);
    pthread_cond_destroy(&p->go);
    pthread_cond_destroy(&p->done);
    pthread_mutex_destroy(&p->mu);
    free(p->th);
    free(p);
}

int tfps_pool_threads(const tfps_pool *p) { return p ? p->nth + 1 : 1; }

void tfps_pool_run(tfps_pool *p, int njobs, tfps_pool_fn fn, void *ctx) {
    if (njobs <= 0) return;
    if (!p || njobs == 1) {
        for (int j = 0; j < njobs; j++) fn(ctx, j, njobs);
        return;
    }
    pthread_mutex_lock(&p->mu);
    p->fn = fn;
    p->ctx = ctx;
    p->njobs = njobs;
    p->next = 0;
    p->unfinished = njobs;
    const int wake = njobs - 1 < p->nth ? njobs - 1 : p->nth;   // the caller takes one job at least
    for (int i = 0; i < wake; i++) pthread_cond_signal(&p->go);
    take_jobs(p);
    while (p->unfinished > 0) pthread_cond_wait(&p->done, &p->mu);
    p->fn = NULL;
    p->ctx = NULL;
    pthread_mutex_unlock(&p->mu);
}

int tfps_pool_chunks(const tfps_pool *p, size_t n, size_t min_chunk) {
    if (min_chunk == 0) min_chunk = 1;
    const size_t most = n / min_chunk;   // chunks of at least min_chunk elements
    const int threads = tfps_pool_threads(p);
    if (most < 2 || threads < 2) return 1;
    return most < (size_t)threads ? (int)most : threads;
}

/* floor(n * j / chunks) without overflow: n = q * chunks + r. */
static size_t share(size_t n, int j, int chunks) {
    const size_t c = (size_t)chunks, q = n / c, r = n % c;
    return q * (size_t)j + r * (size_t)j / c;
}

void tfps_pool_chunk(size_t n, int j, int chunks, size_t *lo, size_t *hi) {
    // boundaries rounded down to 16 elements (monotonic, so chunks never overlap); the last ends at n
    *lo = j == 0 ? 0 : share(n, j, chunks) & ~(size_t)15;
    *hi = j + 1 >= chunks ? n : share(n, j + 1, chunks) & ~(size_t)15;
}
