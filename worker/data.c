/* data.c -- see data.h. */
#include "data.h"
#include "tfps.h"

#include <limits.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

static uint64_t splitmix64(uint64_t *s) {
    uint64_t z = (*s += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

static void shuffle_epoch(tfps_batcher *b) {
    for (int i = 0; i < b->n; i++) b->order[i] = b->worker + i * b->num_workers;
    uint64_t s = b->seed * 0x100000001b3ULL ^ ((uint64_t)b->epoch << 20) ^ (uint64_t)b->worker;
    for (int i = b->n - 1; i > 0; i--) {
        int j = (int)(splitmix64(&s) % (uint64_t)(i + 1));
        int t = b->order[i];
        b->order[i] = b->order[j];
        b->order[j] = t;
    }
}

int tfps_batcher_init(tfps_batcher *b, const tfps_idx_set *set, int worker, int num_workers, uint64_t seed, char *err,
                      size_t errlen) {
    memset(b, 0, sizeof(*b));
    if (num_workers < 1 || worker < 0 || worker >= num_workers)
        return tfps_seterr(err, errlen, "data: worker %d of %d: expected 0 <= worker < workers", worker, num_workers);
    int n = set->n > worker ? (set->n - worker + num_workers - 1) / num_workers : 0;
    if (n == 0)
        return tfps_seterr(err, errlen, "data: worker %d of %d gets no examples from a set of %d", worker,
                           num_workers, set->n);
    b->order = malloc((size_t)n * sizeof(int));
    if (!b->order) return tfps_seterr(err, errlen, "data: out of memory");
    b->set = set;
    b->worker = worker;
    b->num_workers = num_workers;
    b->n = n;
    b->seed = seed;
    shuffle_epoch(b);
    return TFPS_OK;
}

void tfps_batcher_destroy(tfps_batcher *b) {
    free(b->order);
    memset(b, 0, sizeof(*b));
}

long long tfps_batcher_steps_per_epoch(const tfps_batcher *b, int B) { return (b->n + B - 1) / B; }

int tfps_batcher_skip(tfps_batcher *b, int B, long long steps) {
    if (B < 1 || steps < 0) return TFPS_ERR;
    // next() only moves to epoch e+1 when a call finds pos == n, so after k >= 1
    // calls the batcher sits in the epoch of batch k-1, just past it (pos may be n)
    const long long per_epoch = tfps_batcher_steps_per_epoch(b, B);
    long long epoch = 0, pos = 0;
    if (steps > 0) {
        epoch = (steps - 1) / per_epoch;
        pos = ((steps - 1) % per_epoch + 1) * (long long)B;
        if (pos > b->n) pos = b->n;
    }
    if (epoch > INT_MAX) return TFPS_ERR;
    if (b->epoch != (int)epoch) {
        b->epoch = (int)epoch;
        shuffle_epoch(b);   // from the identity, not from the current order: any epoch is one shuffle away
    }
    b->pos = (int)pos;
    return TFPS_OK;
}

void tfps_gather(const tfps_idx_set *set, const int *idx, int n, float *x, uint8_t *y) {
    const size_t d = (size_t)set->rows * set->cols;
    const float scale = 1.0f / 255.0f;
    for (int i = 0; i < n; i++) {
        size_t src = idx ? (size_t)idx[i] : (size_t)i;
        const uint8_t *img = set->images + src * d;
        float *dst = x + (size_t)i * d;
        for (size_t k = 0; k < d; k++) dst[k] = img[k] * scale;
        y[i] = set->labels[src];
    }
}

int tfps_batcher_next(tfps_batcher *b, int B, float *x, uint8_t *y, int *epoch) {
    if (b->pos >= b->n) {
        b->epoch++;
        b->pos = 0;
        shuffle_epoch(b);
    }
    int take = b->n - b->pos < B ? b->n - b->pos : B;
    tfps_gather(b->set, b->order + b->pos, take, x, y);
    b->pos += take;
    if (epoch) *epoch = b->epoch;
    return take;
}

static int feeder_load(tfps_feeder *f, int k) {
    f->n[k] = tfps_batcher_next(f->batcher, f->B, f->x[k], f->y[k], &f->epoch[k]);
    return f->be->prefetch ? f->be->prefetch(f->be, f->x[k], f->y[k], f->n[k]) : TFPS_OK;
}

int tfps_feeder_init(tfps_feeder *f, tfps_batcher *b, tfps_backend *be, int B, char *err, size_t errlen) {
    memset(f, 0, sizeof(*f));
    f->batcher = b;
    f->be = be;
    f->B = B;
    const size_t d = (size_t)b->set->rows * b->set->cols;
    for (int k = 0; k < 2; k++) {
        f->x[k] = tfps_backend_host_alloc(be, (size_t)B * d * sizeof(float));
        f->y[k] = tfps_backend_host_alloc(be, (size_t)B);
        if (!f->x[k] || !f->y[k]) {
            tfps_feeder_destroy(f);
            return tfps_seterr(err, errlen, "data: out of memory for two batches of %d", B);
        }
    }
    if (feeder_load(f, 0) != TFPS_OK) {
        tfps_seterr(err, errlen, "data: %s backend could not stage a batch: %s", be->name, be->err);
        tfps_feeder_destroy(f);
        return TFPS_ERR;
    }
    return TFPS_OK;
}

int tfps_feeder_prefetch(tfps_feeder *f) {
    f->ahead = 1;
    return feeder_load(f, f->cur ^ 1);
}

void tfps_feeder_advance(tfps_feeder *f) {
    if (f->ahead) f->cur ^= 1;
    f->ahead = 0;
}

void tfps_feeder_destroy(tfps_feeder *f) {
    for (int k = 0; k < 2; k++) {
        if (f->x[k]) tfps_backend_host_free(f->be, f->x[k]);
        if (f->y[k]) tfps_backend_host_free(f->be, f->y[k]);
    }
    memset(f, 0, sizeof(*f));
}

int tfps_eval_max_batch(int B) {
    return B > TFPS_EVAL_CHUNK ? B : TFPS_EVAL_CHUNK;
}

int tfps_evaluate(tfps_backend *be, const float *params, const tfps_idx_set *set, tfps_eval *ev, char *err,
                  size_t errlen) {
    const int chunk = be->max_batch, V = be->layout.out;
    const size_t d = (size_t)set->rows * set->cols;
    float *x = malloc((size_t)chunk * d * sizeof(float)), *z = malloc((size_t)chunk * V * sizeof(float));
    uint8_t *y = malloc((size_t)chunk), *pred = malloc((size_t)chunk);
    int rc = TFPS_OK;
    long long correct = 0;
    double loss = 0.0;
    if (!x || !z || !y || !pred) {
        rc = tfps_seterr(err, errlen, "evaluate: out of memory");
        goto done;
    }
    for (int start = 0; start < set->n; start += chunk) {
        int n = set->n - start < chunk ? set->n - start : chunk;
        const size_t off = (size_t)start;
        const tfps_idx_set view = {.n = n, .rows = set->rows, .cols = set->cols,
                                   .images = set->images + off * d, .labels = set->labels + off};
        tfps_gather(&view, NULL, n, x, y);
        if (be->predict(be, params, x, n, pred, z) != TFPS_OK) {
            rc = tfps_seterr(err, errlen, "evaluate: %s backend failed to predict: %s", be->name, be->err);
            goto done;
        }
        for (int i = 0; i < n; i++) {
            const float *zi = z + (size_t)i * V;
            double m = zi[0], s = 0.0;
            for (int j = 1; j < V; j++) m = zi[j] > m ? zi[j] : m;
            for (int j = 0; j < V; j++) s += exp((double)zi[j] - m);
            loss += m + log(s) - (double)zi[y[i]];   // -log softmax(z)[y], stable
            correct += pred[i] == y[i];
        }
        if (ev->pred) memcpy(ev->pred + off, pred, (size_t)n);
        if (ev->logits) memcpy(ev->logits + off * V, z, (size_t)n * V * sizeof(float));
    }
    ev->n = set->n;
    ev->correct = correct;
    ev->accuracy = set->n ? (double)correct / set->n : 0.0;
    ev->loss = set->n ? loss / set->n : 0.0;
done:
    free(x);
    free(z);
    free(y);
    free(pred);
    return rc;
}
