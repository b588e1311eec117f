/* saver.c -- see saver.h. */
#define _POSIX_C_SOURCE 200809L
#include "saver.h"
#include "ckpt.h"
#include "tfps.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct tfps_saver {
    pthread_t th;
    int running;              /* a thread was started and not joined yet */
    atomic_int finished;      /* the thread is done: poll may join it */
    /* the copy the thread writes (reused: no ~MB malloc per checkpoint) */
    float *buf;
    size_t cap;               /* floats in buf */
    tfps_layout layout;
    tfps_ckpt_range *ranges;
    int nranges, nslots;
    size_t nelems;
    int optim_kind;
    uint64_t updates;
    tfps_saver_meta meta;
    char stepdir[1200];
    tfps_saver_result res;
};

tfps_saver *tfps_saver_new(void) { return calloc(1, sizeof(tfps_saver)); }

static void join(tfps_saver *sv) {
    if (!sv->running) return;
    pthread_join(sv->th, NULL);
    sv->running = 0;
}

void tfps_saver_free(tfps_saver *sv) {
    if (!sv) return;
    join(sv);
    free(sv->buf);
    free(sv->ranges);
    free(sv);
}

int tfps_saver_busy(const tfps_saver *sv) { return sv->running; }

static void *write_main(void *arg) {
    tfps_saver *sv = arg;
    const double t0 = tfps_now();
    tfps_ckpt_shard sh = {.layout = &sv->layout, .num_ps = sv->meta.num_ps, .ps_index = sv->meta.ps_index,
                          .strategy = sv->meta.strategy, .plan_digest = sv->meta.plan_digest, .step = sv->meta.step,
                          .version = sv->meta.version, .updates = sv->updates, .optim_kind = sv->optim_kind,
                          .optim_digest = sv->meta.optim_digest, .nslots = sv->nslots, .nranges = sv->nranges,
                          .ranges = sv->ranges, .w = sv->buf};
    for (int k = 0; k < sv->nslots; k++) sh.slot[k] = sv->buf + (size_t)(k + 1) * sv->nelems;
    tfps_saver_result *r = &sv->res;
    r->ok = tfps_ckpt_write_shard(sv->stepdir, &sh, &r->bytes, &r->crc, r->err, sizeof(r->err)) == TFPS_OK;
    r->step = sv->meta.step;
    r->version = sv->meta.version;
    r->write_s = tfps_now() - t0;
    atomic_store(&sv->finished, 1);
    return NULL;
}

int tfps_saver_start(tfps_saver *sv, const tfps_store *s, const char *dir, const tfps_saver_meta *m,
                     double *pause_s, char *err, size_t errlen) {
    if (sv->running) return tfps_seterr(err, errlen, "the checkpoint of step %llu is still being written",
                                        (unsigned long long)sv->meta.step);
    if (tfps_ckpt_step_dir(dir, m->step, sv->stepdir, sizeof(sv->stepdir), err, errlen) != TFPS_OK) return TFPS_ERR;
    const double t0 = tfps_now();
    const int nslots = tfps_optim_slots(&s->opt);
    const size_t need = (size_t)(nslots + 1) * (s->nelems ? s->nelems : 1);
    if (need > sv->cap) {
        float *b = realloc(sv->buf, need * sizeof(float));
        if (!b) return tfps_seterr(err, errlen, "out of memory for a checkpoint copy of %zu floats", need);
        sv->buf = b;
        sv->cap = need;
    }
    tfps_ckpt_range *rg = realloc(sv->ranges, (size_t)(s->nown ? s->nown : 1) * sizeof(*rg));
    if (!rg) return tfps_seterr(err, errlen, "out of memory for a checkpoint's ranges");
    sv->ranges = rg;
    // the pause: everything the thread needs is copied before the ps serves again
    memcpy(sv->buf, s->w, s->nelems * sizeof(float));
    for (int k = 0; k < nslots; k++) memcpy(sv->buf + (size_t)(k + 1) * s->nelems, s->slot[k], s->nelems * sizeof(float));
    for (int r = 0; r < s->nown; r++) rg[r] = (tfps_ckpt_range){s->own[r].begin, s->own[r].end, s->own[r].at};
    sv->nranges = s->nown;
    sv->nslots = nslots;
    sv->nelems = s->nelems;
    sv->layout = s->layout;
    sv->optim_kind = s->opt.kind;
    sv->updates = s->updates;
    sv->meta = *m;
    *pause_s = tfps_now() - t0;
    memset(&sv->res, 0, sizeof(sv->res));
    atomic_store(&sv->finished, 0);
    if (pthread_create(&sv->th, NULL, write_main, sv) != 0)
        return tfps_seterr(err, errlen, "cannot start the checkpoint writer thread");
    sv->running = 1;
    return TFPS_OK;
}

int tfps_saver_poll(tfps_saver *sv, tfps_saver_result *r) {
    if (!sv->running || !atomic_load(&sv->finished)) return 0;
    join(sv);
    *r = sv->res;
    return 1;
}
