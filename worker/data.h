/* data.h -- the worker's input pipeline and evaluation.
 *
 * A batcher walks one worker's slice of a training set: worker k of N takes
 * examples k, k+N, k+2N, ... (a strided slice, so every worker sees every
 * class even if a file were sorted). Each epoch visits the slice in a fresh
 * order, a Fisher-Yates shuffle seeded from (seed, epoch, worker): the same
 * flags give the same batches on every run. The last batch of an epoch may be
 * smaller than B (TF's Dataset.batch keeps the remainder too). */
#ifndef TFPS_DATA_H
#define TFPS_DATA_H

#include "backend.h"
#include "idx.h"

#include <stdint.h>

typedef struct {
    const tfps_idx_set *set;
    int worker, num_workers;
    int n;            /* examples in this worker's slice */
    int *order;       /* [n] example indices into set, this epoch's order */
    uint64_t seed;
    int epoch;        /* 0-based epoch of the next batch */
    int pos;          /* next position in order */
} tfps_batcher;

/* Returns TFPS_ERR (nothing allocated) if the slice is empty or on OOM. */
int tfps_batcher_init(tfps_batcher *b, const tfps_idx_set *set, int worker, int num_workers, uint64_t seed, char *err,
                      size_t errlen);
void tfps_batcher_destroy(tfps_batcher *b);
/* Fills x [B][rows*cols] (pixels / 255) and y [B] with the next batch; returns
 * its size (B, or fewer at an epoch's end). *epoch gets the batch's epoch. */
int tfps_batcher_next(tfps_batcher *b, int B, float *x, uint8_t *y, int *epoch);
/* Steps in one epoch of this slice at batch B. */
long long tfps_batcher_steps_per_epoch(const tfps_batcher *b, int B);
/* Resume: puts b exactly where `steps` calls of tfps_batcher_next(b, B, ...)
 * from a fresh init leave it (epoch, position and that epoch's order),
 * whatever b's state now, so the next call returns batch `steps` (0-based).
 * Gathers no pixels: an epoch's order is a pure function of (seed, epoch,
 * worker), so this costs at most one shuffle, O(n). B must be the batch size
 * the run used (the last batch of each epoch is short). Call it BEFORE
 * tfps_feeder_init: the feeder gathers its first batch from the batcher at
 * init, and a skip after that leaves the feeder's batch stale. Returns TFPS_OK,
 * or TFPS_ERR (b unchanged) if B < 1, steps < 0 or the epoch would overflow. */
int tfps_batcher_skip(tfps_batcher *b, int B, long long steps);

/* A feeder keeps one batch ahead of the step: while step t computes, batch
 * t+1 is already gathered into the other host buffer and, on the GPU, on its
 * way to the device (backend prefetch). Buffers come from the backend's
 * host_alloc (page-locked on the GPU). Use:
 *
 *     tfps_batcher_skip(&batcher, B, start);           // resuming: before init, see above
 *     tfps_feeder_init(&f, &batcher, be, B);           // gathers batch 0 (or `start`)
 *     for (t = 0; t < total; t++) {
 *         if (t + 1 < total) tfps_feeder_prefetch(&f);  // gathers t+1, starts its upload
 *         be->step(be, params, f.x[f.cur], f.y[f.cur], f.n[f.cur], ...);
 *         tfps_feeder_advance(&f);
 *     }
 */
typedef struct {
    tfps_batcher *batcher;
    tfps_backend *be;
    float *x[2];
    uint8_t *y[2];
    int n[2], epoch[2];
    int cur, B, ahead;
} tfps_feeder;
int tfps_feeder_init(tfps_feeder *f, tfps_batcher *b, tfps_backend *be, int B, char *err, size_t errlen);
int tfps_feeder_prefetch(tfps_feeder *f);
void tfps_feeder_advance(tfps_feeder *f);
void tfps_feeder_destroy(tfps_feeder *f);

/* x [n][rows*cols] = images[idx[i]] / 255, y[i] = labels[idx[i]] (idx NULL: first n). */
void tfps_gather(const tfps_idx_set *set, const int *idx, int n, float *x, uint8_t *y);

/* The max batch to open a backend with that trains at batch B and evaluates:
 * max(B, TFPS_EVAL_CHUNK), since evaluation runs in chunks of the max batch. */
#define TFPS_EVAL_CHUNK 1000
int tfps_eval_max_batch(int B);

/* An evaluation of params on a whole set. */
typedef struct {
    double accuracy;       /* correct / n */
    double loss;           /* mean softmax cross-entropy, summed in float64 */
    long long correct, n;
    /* optional outputs, set by the caller before the call (NULL: not wanted) */
    uint8_t *pred;         /* [n] each example's predicted class */
    float *logits;         /* [n][classes] */
} tfps_eval;

/* Evaluates params on the whole set in chunks of the backend's max batch:
 * fills ev's accuracy, loss, correct, n (and pred, logits when given).
 * TFPS_OK, or TFPS_ERR with err. */
int tfps_evaluate(tfps_backend *be, const float *params, const tfps_idx_set *set, tfps_eval *ev, char *err,
                  size_t errlen);

#endif
