/* policy.c -- see policy.h. */
#include "policy.h"
#include "options.h"
#include "rpc.h"
#include "tfps.h"

#include <assert.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct tfps_policy {
    tfps_store *store;
    int mode;                 /* tfps_consistency */
    int num_workers, r2a, staleness;
    uint64_t version;
    uint64_t *clock;          /* [num_workers] pushes applied or accepted per rank */
    uint8_t *live;            /* [num_workers] */
    int nlive;
    /* sync */
    float *acc;               /* [num_workers][nelems]: each rank's gradient for the current version */
    uint8_t *in;              /* [num_workers]: rank's gradient for the current version is in acc */
    int nin;
    uint8_t *notice;          /* [num_workers]: a step with rank's gradient was skipped as non-finite, untold */
    tfps_policy_stats st;
    tfps_held *held;          /* [cap], the first nheld used, in arrival order */
    int nheld, cap;
};

tfps_policy *tfps_policy_new(tfps_store *store, int consistency, int num_workers, int replicas_to_aggregate,
                             int staleness, char *err, size_t errlen) {
    if (num_workers < 1 || consistency < TFPS_CONSISTENCY_ASYNC || consistency > TFPS_CONSISTENCY_SSP ||
        replicas_to_aggregate < 0 || staleness < 0) {
        tfps_seterr(err, errlen, "policy: bad arguments (%d workers, consistency %d)", num_workers, consistency);
        return NULL;
    }
    if (replicas_to_aggregate > num_workers) {   // tfps_options_check_cluster says it to the user first
        tfps_seterr(err, errlen, "policy: %d replicas to aggregate of %d", replicas_to_aggregate, num_workers);
        return NULL;
    }
    tfps_policy *p = calloc(1, sizeof(*p));
    if (!p) goto oom;
    p->store = store;
    p->mode = consistency;
    p->num_workers = num_workers;
    p->r2a = replicas_to_aggregate ? replicas_to_aggregate : num_workers;
    p->staleness = staleness;
    p->clock = calloc((size_t)num_workers, sizeof(*p->clock));
    p->live = malloc((size_t)num_workers);
    if (!p->clock || !p->live) goto oom;
    memset(p->live, 1, (size_t)num_workers);
    p->nlive = num_workers;
    if (consistency == TFPS_CONSISTENCY_SYNC) {
        p->acc = malloc((size_t)num_workers * (store->nelems ? store->nelems : 1) * sizeof(float));
        p->in = calloc((size_t)num_workers, 1);
        p->notice = calloc((size_t)num_workers, 1);
        if (!p->acc || !p->in || !p->notice) goto oom;
    }
    return p;
oom:
    tfps_policy_free(p);
    tfps_seterr(err, errlen, "ps: out of memory for the %s policy", tfps_consistency_name(consistency));
    return NULL;
}

void tfps_policy_free(tfps_policy *p) {
    if (!p) return;
    free(p->clock);
    free(p->live);
    free(p->acc);
    free(p->in);
    free(p->notice);
    free(p->held);
    free(p);
}

uint64_t tfps_policy_version(const tfps_policy *p) { return p->version; }
uint64_t tfps_policy_clock(const tfps_policy *p, int rank) { return p->clock[rank]; }

void tfps_policy_get_stats(const tfps_policy *p, tfps_policy_stats *s) {
    *s = p->st;
    s->version = p->version;
    s->held = p->nheld;
    s->live = p->nlive;
}

static int required(const tfps_policy *p) { return p->r2a < p->nlive ? p->r2a : p->nlive; }

/* The mean of the gradients in, over elements [lo, hi): into the lowest
 * rank's buffer (first), the others added in rank order, then divided. */
typedef struct {
    tfps_policy *p;
    int first;
} mean_work;

static void mean_range(const tfps_policy *p, int first, size_t lo, size_t hi) {
    const size_t n = p->store->nelems;
    float *sum = p->acc + (size_t)first * n;
    for (int r = first + 1; r < p->num_workers; r++) {
        if (!p->in[r]) continue;
        const float *g = p->acc + (size_t)r * n;
        for (size_t i = lo; i < hi; i++) sum[i] += g[i];
    }
    const float count = (float)p->nin;
    if (p->nin > 1)   // x / 1.0f == x: one gradient needs no pass
        for (size_t i = lo; i < hi; i++) sum[i] /= count;
}

static void mean_chunk(void *ctx, int j, int chunks) {
    const mean_work *m = ctx;
    size_t lo, hi;
    tfps_pool_chunk(m->p->store->nelems, j, chunks, &lo, &hi);
    mean_range(m->p, m->first, lo, hi);
}

/* sync: the mean of the gradients in (nin > 0), summed in rank order, is one
 * update; or, when it would make the state non-finite (a sum that overflows
 * included), a skipped step (policy.h). Either way the version advances.
 * Every element is summed in the same order whether the elements are cut
 * into chunks for the store's pool or not: the same bits. */
static void aggregate(tfps_policy *p) {
    const size_t n = p->store->nelems;
    assert(p->nin > 0);
    int first = 0;
    while (!p->in[first]) first++;   // nin > 0: the lowest rank's buffer becomes the sum
    mean_work m = {p, first};
    // the mean costs about an sgd update per gradient summed: chunks of sgd's length over nin
    const size_t min_chunk = TFPS_STORE_SGD_FACTOR * p->store->min_chunk / (size_t)p->nin;
    const int chunks = tfps_pool_chunks(p->store->pool, n, min_chunk);
    if (chunks > 1) tfps_pool_run(p->store->pool, chunks, mean_chunk, &m);
    else mean_range(p, first, 0, n);
    const size_t at = 0;
    const float *gs = p->acc + (size_t)first * n;
    if (tfps_store_update(p->store, 1, &at, &gs, &n)) {
        p->st.aggregated += (uint64_t)p->nin;
    } else {
        p->st.nonfinite++;
        for (int r = 0; r < p->num_workers; r++)
            if (p->in[r]) p->notice[r] = 1;
    }
    p->version++;
    memset(p->in, 0, (size_t)p->num_workers);
    p->nin = 0;
}

/* sync: enough gradients for the current version? Then one update. */
static void maybe_aggregate(tfps_policy *p) {
    if (p->mode != TFPS_CONSISTENCY_SYNC || p->nin == 0 || p->nin < required(p)) return;
    aggregate(p);
}

int tfps_policy_push(tfps_policy *p, int rank, const tfps_push *g, char *msg, size_t msglen) {
    const tfps_wire_push_req *m = &g->m;
    if (p->mode != TFPS_CONSISTENCY_SYNC) {
        const float *gs[TFPS_WIRE_MAX_TENSORS];
        size_t ns[TFPS_WIRE_MAX_TENSORS];
        for (int i = 0; i < m->ntensors; i++) {
            gs[i] = m->gradients[i].values;
            ns[i] = (size_t)(m->gradients[i].range.end - m->gradients[i].range.begin);
        }
        p->clock[rank]++;   // refused or not, the worker made its step (its pulls' clock counts it)
        if (!tfps_store_update(p->store, m->ntensors, g->at, gs, ns)) {
            p->st.nonfinite++;
            return TFPS_PUSH_NONFINITE;
        }
        p->version++;
        return TFPS_PUSH_APPLIED;
    }
    if (m->base_version < p->version) {
        p->st.dropped++;
        return TFPS_PUSH_STALE;
    }
    if (m->base_version > p->version) {
        snprintf(msg, msglen, "push computed on version %" PRIu64 ", but this ps is at version %" PRIu64
                 ": expected the version of the worker's last pull", m->base_version, p->version);
        return -TFPS_RPC_FAILED_PRECONDITION;
    }
    if (p->in[rank]) {
        snprintf(msg, msglen, "worker %d already pushed a gradient for version %" PRIu64 ": expected one per step",
                 rank + 1, p->version);
        return -TFPS_RPC_FAILED_PRECONDITION;
    }
    const size_t n = p->store->nelems;
    float *acc = p->acc + (size_t)rank * n;
    size_t covered = 0;
    for (int i = 0; i < m->ntensors; i++) covered += (size_t)(m->gradients[i].range.end - m->gradients[i].range.begin);
    if (covered < n) memset(acc, 0, n * sizeof(float));   // a push of part of the shard: the rest is 0
    for (int i = 0; i < m->ntensors; i++)
        memcpy(acc + g->at[i], m->gradients[i].values,
               (size_t)(m->gradients[i].range.end - m->gradients[i].range.begin) * sizeof(float));
    p->in[rank] = 1;
    p->nin++;
    p->clock[rank]++;
    const uint64_t before = p->version;
    maybe_aggregate(p);
    return p->version != before ? TFPS_PUSH_APPLIED : TFPS_PUSH_ACCEPTED;
}

int tfps_policy_take_nonfinite(tfps_policy *p, int rank) {
    if (!p->notice || !p->notice[rank]) return 0;
    p->notice[rank] = 0;
    return 1;
}

void tfps_policy_set_live(tfps_policy *p, int rank, int live) {
    live = live != 0;
    if (p->live[rank] == live) return;
    p->live[rank] = (uint8_t)live;
    p->nlive += live ? 1 : -1;
    maybe_aggregate(p);   // a replica that leaves may complete the step it was holding up
}

int tfps_policy_close_stuck_step(tfps_policy *p, double held_before) {
    if (p->mode != TFPS_CONSISTENCY_SYNC || p->r2a >= p->num_workers || p->nin == 0 || p->nin >= required(p))
        return 0;
    for (int r = 0; r < p->num_workers; r++) {
        if (!p->live[r] || p->in[r]) continue;
        int waits = 0;   // a pull of r held here since before held_before, for the end of this step
        for (int i = 0; i < p->nheld && !waits; i++)
            waits = p->held[i].rank == r && p->held[i].pull.min_version == p->version + 1 &&
                    p->held[i].t_held < held_before;
        if (!waits) return 0;   // r may still push into this step
    }
    const int nin = p->nin;
    aggregate(p);
    return nin;
}

void tfps_policy_set_version(tfps_policy *p, uint64_t version) { p->version = version; }

void tfps_policy_adopt_clock(tfps_policy *p, int rank, uint64_t clock) {
    if (clock > p->clock[rank]) p->clock[rank] = clock;
}

void tfps_policy_restart(tfps_policy *p, int rank) {
    if (p->notice) p->notice[rank] = 0;   // the new process pushed nothing yet
    if (p->mode == TFPS_CONSISTENCY_SYNC && p->in[rank]) {
        p->in[rank] = 0;
        p->nin--;
    }
}

/* Slowest live clock; UINT64_MAX when nobody is live. */
static uint64_t slowest(const tfps_policy *p) {
    uint64_t m = UINT64_MAX;
    for (int r = 0; r < p->num_workers; r++)
        if (p->live[r] && p->clock[r] < m) m = p->clock[r];
    return m;
}

static int ready(tfps_policy *p, int rank, const tfps_pull *q) {
    if (p->version < q->min_version) return 0;
    if (p->mode != TFPS_CONSISTENCY_SSP || rank < 0) return 1;
    const uint64_t s = slowest(p);
    if (s != UINT64_MAX && q->clock > s + (uint64_t)p->staleness) return 0;
    const uint64_t lead = s == UINT64_MAX || q->clock <= s ? 0 : q->clock - s;
    if (lead > p->st.max_lead) p->st.max_lead = lead;
    return 1;
}

static int held_of(const tfps_policy *p, int rank) {
    int n = 0;
    for (int i = 0; i < p->nheld; i++) n += p->held[i].rank == rank;
    return n;
}

int tfps_policy_held_count(const tfps_policy *p, int rank) { return held_of(p, rank); }

double tfps_policy_newest_held(const tfps_policy *p, int rank) {
    double t = 0;
    for (int i = 0; i < p->nheld; i++)
        if (p->held[i].rank == rank && p->held[i].t_held > t) t = p->held[i].t_held;
    return t;
}

int tfps_policy_pull_check(const tfps_policy *p, int rank, const tfps_pull *q, char *msg, size_t msglen) {
    if (q->min_version > p->version + 1) {
        snprintf(msg, msglen, "PullRequest.min_version %" PRIu64 " is more than one step ahead of this ps's version "
                 "%" PRIu64 ": expected at most the next version", q->min_version, p->version);
        return -TFPS_RPC_OUT_OF_RANGE;
    }
    // the clock of a worker's pull counts its pushes, the one of this round included (which may arrive just after)
    if (p->mode == TFPS_CONSISTENCY_SSP && rank >= 0 && q->clock > p->clock[rank] + 1) {
        snprintf(msg, msglen, "PullRequest.clock %" PRIu64 " is ahead of worker %d's %" PRIu64 " pushes to this ps: "
                 "expected at most one more", q->clock, rank + 1, p->clock[rank]);
        return -TFPS_RPC_OUT_OF_RANGE;
    }
    return 0;
}

int tfps_policy_pull_ready(tfps_policy *p, int rank, const tfps_pull *q, char *msg, size_t msglen) {
    const int bad = tfps_policy_pull_check(p, rank, q, msg, msglen);
    if (bad < 0) return bad;
    int r = ready(p, rank, q);
    if (r == 0 && held_of(p, rank) >= TFPS_POLICY_MAX_HELD) {
        snprintf(msg, msglen, "%s already has %d pulls held on this ps: expected one at a time",
                 rank < 0 ? "the evaluator" : "this worker", TFPS_POLICY_MAX_HELD);
        return -TFPS_RPC_RESOURCE_EXHAUSTED;
    }
    return r;
}

int tfps_policy_waits_on_own_push(const tfps_policy *p, int rank, const tfps_pull *q) {
    if (rank < 0) return 0;
    if (p->mode == TFPS_CONSISTENCY_SYNC) return !p->in[rank] && q->min_version == p->version + 1;
    if (p->mode == TFPS_CONSISTENCY_SSP) return q->clock > p->clock[rank];
    return 0;
}

int tfps_policy_hold(tfps_policy *p, void *token, int rank, const tfps_pull *q) {
    if (p->nheld == p->cap) {
        int cap = p->cap ? 2 * p->cap : 16;
        tfps_held *h = realloc(p->held, (size_t)cap * sizeof(*h));
        if (!h) return TFPS_ERR;
        p->held = h;
        p->cap = cap;
    }
    p->held[p->nheld++] = (tfps_held){token, rank, *q, tfps_now()};
    return TFPS_OK;
}

static void take(tfps_policy *p, int i, tfps_held *out) {
    *out = p->held[i];
    memmove(&p->held[i], &p->held[i + 1], (size_t)(p->nheld - i - 1) * sizeof(*p->held));
    p->nheld--;
}

int tfps_policy_pop_ready(tfps_policy *p, tfps_held *out) {
    for (int i = 0; i < p->nheld; i++)
        if (ready(p, p->held[i].rank, &p->held[i].pull)) {
            take(p, i, out);
            return 1;
        }
    return 0;
}

int tfps_policy_pop_rank(tfps_policy *p, int rank, tfps_held *out) {
    for (int i = 0; i < p->nheld; i++)
        if (rank < -1 || p->held[i].rank == rank) {
            take(p, i, out);
            return 1;
        }
    return 0;
}

const tfps_held *tfps_policy_oldest(const tfps_policy *p) { return p->nheld ? &p->held[0] : NULL; }

void tfps_policy_describe_wait(const tfps_policy *p, const tfps_held *h, char *buf, size_t n) {
    if (p->version < h->pull.min_version) {
        if (p->mode == TFPS_CONSISTENCY_SYNC)
            snprintf(buf, n, "version %" PRIu64 " (%d of %d gradients in)", h->pull.min_version, p->nin, required(p));
        else
            snprintf(buf, n, "version %" PRIu64 " (at %" PRIu64 ")", h->pull.min_version, p->version);
        return;
    }
    int r = -1;
    uint64_t s = UINT64_MAX;
    for (int k = 0; k < p->num_workers; k++)
        if (p->live[k] && p->clock[k] < s) s = p->clock[k], r = k;
    snprintf(buf, n, "worker %d (clock %" PRIu64 ") to come within %d of clock %" PRIu64, r + 1, s, p->staleness,
             h->pull.clock);
}
