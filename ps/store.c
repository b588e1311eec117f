/* store.c -- see store.h. */
#include "store.h"
#include "ckpt.h"
#include "tfps.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int tfps_store_init(tfps_store *s, const tfps_layout *l, const tfps_shard_plan *plan, int ps_index, uint64_t seed,
                    const tfps_optim *opt, char *err, size_t errlen) {
    memset(s, 0, sizeof(*s));
    s->layout = *l;
    s->opt = *opt;
    s->min_chunk = TFPS_STORE_MIN_CHUNK;
    s->own = calloc((size_t)(plan->nranges ? plan->nranges : 1), sizeof(*s->own));
    if (!s->own) goto oom;
    for (int r = 0; r < plan->nranges; r++) {
        if (plan->ranges[r].ps != ps_index) continue;
        s->own[s->nown++] = (tfps_store_range){plan->ranges[r].begin, plan->ranges[r].end, s->nelems};
        s->nelems += plan->ranges[r].end - plan->ranges[r].begin;
    }
    const size_t bytes = (s->nelems ? s->nelems : 1) * sizeof(float);
    s->w = malloc(bytes);
    if (!s->w) goto oom;
    for (int k = 0; k < tfps_optim_slots(opt); k++)
        if (!(s->slot[k] = malloc(bytes))) goto oom;
    for (int r = 0; r < s->nown; r++)
        tfps_layout_init_range(l, seed, s->own[r].begin, s->own[r].end, s->w + s->own[r].at);
    tfps_optim_init_slots(opt, s->slot, s->nelems);
    return TFPS_OK;
oom:
    tfps_store_destroy(s);
    return tfps_seterr(err, errlen, "ps: out of memory for the shard's weights and %s state", tfps_optim_name(opt->kind));
}

void tfps_store_destroy(tfps_store *s) {
    free(s->own);
    free(s->w);
    for (int k = 0; k < TFPS_OPTIM_MAX_SLOTS; k++) free(s->slot[k]);
    memset(s, 0, sizeof(*s));
}

size_t tfps_store_min_chunk(const tfps_store *s) {
    return s->opt.kind == TFPS_OPT_SGD ? TFPS_STORE_SGD_FACTOR * s->min_chunk : s->min_chunk;
}

long long tfps_store_locate(const tfps_store *s, uint64_t begin, uint64_t end) {
    if (end <= begin) return -1;
    int lo = 0, hi = s->nown - 1;
    while (lo <= hi) {
        int mid = (lo + hi) / 2;
        const tfps_store_range *r = &s->own[mid];
        if (begin < r->begin) hi = mid - 1;
        else if (begin >= r->end) lo = mid + 1;
        else return end <= r->end ? (long long)(r->at + (begin - r->begin)) : -1;
    }
    return -1;
}

void tfps_store_describe(const tfps_store *s, char *buf, size_t n) {
    size_t j = 0;
    buf[0] = '\0';
    for (int r = 0; r < s->nown && j + 40 < n; r++)
        j += (size_t)snprintf(buf + j, n - j, "%s[%zu, %zu)", r ? " " : "", s->own[r].begin, s->own[r].end);
    if (s->nown == 0) snprintf(buf, n, "nothing");
}

static void slots_at(const tfps_store *s, size_t at, float *slot[TFPS_OPTIM_MAX_SLOTS]) {
    for (int k = 0; k < TFPS_OPTIM_MAX_SLOTS; k++) slot[k] = s->slot[k] ? s->slot[k] + at : NULL;
}

/* An update split over the pool: the pieces seen as one run of `total`
 * floats, chunk j of `chunks` a contiguous part of that run. */
typedef struct {
    tfps_store *s;
    uint64_t t;
    int npieces, chunks;
    const size_t *at, *n;
    const float *const *g;
    size_t total;
    int apply;               /* 0: check (ok[j]), 1: apply */
    uint8_t ok[TFPS_POOL_MAX_THREADS];
} update_work;

static void update_chunk(void *ctx, int j, int chunks) {
    update_work *u = ctx;
    size_t lo, hi, base = 0;
    tfps_pool_chunk(u->total, j, chunks, &lo, &hi);
    float *slot[TFPS_OPTIM_MAX_SLOTS];
    int ok = 1;
    for (int k = 0; k < u->npieces && base < hi; base += u->n[k], k++) {
        const size_t b = lo > base ? lo - base : 0, e = hi - base < u->n[k] ? hi - base : u->n[k];
        if (b >= e) continue;   // the piece ends before the chunk starts
        const size_t at = u->at[k] + b;
        slots_at(u->s, at, slot);
        if (u->apply)
            tfps_optim_apply(&u->s->opt, u->t, u->s->w + at, slot, u->g[k] + b, e - b);
        else if (ok)   // a chunk with a non-finite result needs no further look
            ok = tfps_optim_finite(&u->s->opt, u->t, u->s->w + at, (const float *const *)slot, u->g[k] + b, e - b);
    }
    if (!u->apply) u->ok[j] = (uint8_t)ok;
}

int tfps_store_update(tfps_store *s, int npieces, const size_t *at, const float *const *g, const size_t *n) {
    const uint64_t t = s->updates + 1;
    size_t total = 0;
    for (int k = 0; k < npieces; k++) total += n[k];
    const int chunks = tfps_pool_chunks(s->pool, total, tfps_store_min_chunk(s));
    if (chunks > 1) {
        update_work u = {.s = s, .t = t, .npieces = npieces, .chunks = chunks, .at = at, .n = n, .g = g,
                         .total = total};
        tfps_pool_run(s->pool, chunks, update_chunk, &u);
        for (int j = 0; j < chunks; j++)
            if (!u.ok[j]) return 0;   // the decision of the one loop: any element non-finite refuses all
        u.apply = 1;
        tfps_pool_run(s->pool, chunks, update_chunk, &u);
        s->updates = t;
        return 1;
    }
    float *slot[TFPS_OPTIM_MAX_SLOTS];
    for (int k = 0; k < npieces; k++) {   // check before writing anything: no partial update of a range
        slots_at(s, at[k], slot);
        if (!tfps_optim_finite(&s->opt, t, s->w + at[k], (const float *const *)slot, g[k], n[k])) return 0;
    }
    for (int k = 0; k < npieces; k++) {
        slots_at(s, at[k], slot);
        tfps_optim_apply(&s->opt, t, s->w + at[k], slot, g[k], n[k]);
    }
    s->updates = t;
    return 1;
}

int tfps_store_restore(tfps_store *s, const char *dir, int ps_index, uint64_t plan_digest, tfps_ckpt_info *info,
                       char *err, size_t errlen) {
    tfps_ckpt_range *want = malloc((size_t)(s->nown ? s->nown : 1) * sizeof(*want));
    if (!want) return tfps_seterr(err, errlen, "ps: out of memory");
    for (int r = 0; r < s->nown; r++) want[r] = (tfps_ckpt_range){s->own[r].begin, s->own[r].end, s->own[r].at};
    int rc = tfps_ckpt_restore(dir, &s->layout, &s->opt, ps_index, plan_digest, want, s->nown, s->w, s->slot, info,
                               err, errlen);
    free(want);
    if (rc == TFPS_OK) s->updates = info->updates;   // adam's bias correction goes on from its t
    return rc;
}
