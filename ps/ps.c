/* ps.c -- see ps.h: membership, the method table, statistics, and answering
 * held calls once the policy allows. */
#include "ps.h"
#include "ckpt.h"
#include "handlers.h"
#include "log.h"
#include "optim.h"
#include "policy.h"
#include "pool.h"
#include "rpc.h"
#include "saver.h"
#include "service.h"
#include "store.h"
#include "tfps.h"
#include "wire.h"

#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define PS_LOG_EVERY_S 10.0
#define PS_HELD_LOG_AFTER_S 10.0
#define PS_REFUSAL_LOG_S 10.0

typedef struct {
    int registered, done;
    int dead;               /* no call for 3 heartbeat intervals (or never registered in time): not waited for */
    double last_seen;       /* tfps_now() of its last call */
    uint64_t step, pushes, dropped, nonfinite;
    double wait_s;          /* seconds its pulls were held */
    int push_refused;       /* its last push was refused: its next pull is not held for it */
    tfps_session session;   /* from its last Register: every call of it must carry it */
    tfps_session instance;  /* the process's id it registered with (RegisterRequest.instance) */
} worker_state;

struct tfps_ps {
    tfps_layout layout;
    uint64_t layout_digest, plan_digest;
    tfps_shard_strategy strategy;
    int num_ps, ps_index, num_workers;
    uint64_t seed;
    double lr;
    int consistency, r2a, staleness;   /* r2a: effective (0 in the options = num_workers) */
    tfps_optim opt;
    char opt_desc[160];
    uint64_t opt_digest;
    tfps_store store;
    int threads;             /* --ps-threads resolved (options.h) */
    tfps_pool *pool;         /* the store's update loops on `threads` cores; NULL: one loop */
    tfps_policy *pol;
    worker_state *workers;   /* [num_workers], by rank */
    int observers;
    tfps_session observer_session;   /* handed to every evaluator: it may pull and heartbeat, not push */
    tfps_wire_eval eval;             /* the evaluator's latest report (count 0: none): in pulls and Status */
    uint32_t eval_ignored;           /* the count of the last report ignored as out of range (logged once) */
    uint8_t secret[TFPS_JOB_SECRET_MAX];   /* the job secret Register must carry (secret_len 0: none) */
    size_t secret_len;
    double last_refusal_log;         /* refused calls are logged at most every PS_REFUSAL_LOG_S */
    uint64_t refusals_unlogged;
    tfps_ps_stats st;        /* refused, bytes, examples, workers, wait_s; the rest comes from store and policy */
    double t_start, last_log, last_held_log;
    uint64_t last_logged_version;
    uint64_t nonfinite_logged;   /* refusals as non-finite already in a log line */
    double last_nonfinite_log;
    int shutdown;
    int idle_exit;           /* stopped by --idle-timeout */
    int job_failed;          /* the chief's Shutdown said the job failed */
    /* fault tolerance */
    char ckpt_dir[TFPS_PATH_LEN + 32];
    double heartbeat_s, idle_timeout, startup_timeout, rpc_timeout;
    int keep_checkpoints;      /* --keep-checkpoints: for the checkpoint a lone ps completes on --idle-timeout */
    double last_replica_call;  /* tfps_now() of the last call of a training replica (or the start) */
    tfps_saver *saver;
    void *ckpt_token;        /* the Checkpoint call held until its write ends */
    double ckpt_pause;       /* seconds the snapshot of that call took */
    uint64_t checkpoints, last_ckpt_step, last_ckpt_version, restored_step;
    double ckpt_pause_max;
    tfps_ps_reply_fn reply;
    void *reply_ctx;
    struct ps_prepared *prepared;   /* the decoded push of the call being handled (tfps_ps_prepare), or NULL */
    tfps_buf out;            /* the reply of the call being handled */
    tfps_buf held_out;       /* the reply of a held call being released */
    uint16_t *half;          /* [store elements] the weights in bf16 / fp16 for a reply (--wire-dtype) */
    int half_dtype;          /* the format half holds, of the weights after half_updates updates; 0: none */
    uint64_t half_updates;
};

/* A Push's (or a PushPull's push part's) decoding and checks against the
 * owned ranges (tfps_handlers_push): a pure function of the bytes and of the
 * ranges, which never change, so it may be done before the call is handed
 * over, outside the server's handler lock; its outcome, message included, is
 * then used where push_apply would have computed it. */
typedef struct ps_prepared {
    int method;
    int rc;
    char msg[TFPS_ERR_LEN];
    tfps_push g;   /* points into the request bytes or the preparing thread's scratch */
} ps_prepared;

static void rpc_reply(void *ctx, void *token, int status, const uint8_t *resp, size_t len, const char *msg) {
    (void)ctx;
    if (status == TFPS_RPC_OK) tfps_rpc_reply(token, resp, len);
    else tfps_rpc_reply_error(token, status, msg);
}

tfps_ps *tfps_ps_new(const tfps_layout *l, const tfps_shard_plan *plan, int ps_index, const tfps_options *o,
                     int num_workers, tfps_ps_reply_fn reply, void *reply_ctx, char *err, size_t errlen) {
    if (ps_index < 0 || ps_index >= plan->num_ps) {
        tfps_seterr(err, errlen, "ps: index %d out of range: the plan has %d ps", ps_index, plan->num_ps);
        return NULL;
    }
    if (num_workers < 1) {
        tfps_seterr(err, errlen, "ps: %d workers: expected at least 1", num_workers);
        return NULL;
    }
    tfps_ps *ps = calloc(1, sizeof(*ps));
    if (!ps) {
        tfps_seterr(err, errlen, "ps: out of memory");
        return NULL;
    }
    ps->layout = *l;
    ps->layout_digest = tfps_layout_digest(l);
    ps->plan_digest = plan->digest;
    ps->strategy = plan->strategy;
    ps->num_ps = plan->num_ps;
    ps->ps_index = ps_index;
    ps->num_workers = num_workers;
    ps->seed = (uint64_t)o->seed;
    ps->lr = o->learning_rate;
    ps->consistency = o->consistency;
    ps->r2a = o->replicas_to_aggregate ? o->replicas_to_aggregate : num_workers;
    ps->staleness = o->staleness;
    tfps_options_optim(o, &ps->opt);
    tfps_optim_describe(&ps->opt, ps->opt_desc, sizeof(ps->opt_desc));
    ps->opt_digest = tfps_optim_digest(&ps->opt);
    if (tfps_options_check_cluster(o, num_workers, err, errlen) != TFPS_OK) goto fail;
    if (tfps_options_checkpoint_dir(o, ps->ckpt_dir, sizeof(ps->ckpt_dir)) != TFPS_OK) {
        tfps_seterr(err, errlen, "--checkpoint-dir: the path is too long");
        goto fail;
    }
    ps->heartbeat_s = o->heartbeat_secs;
    ps->idle_timeout = o->idle_timeout;
    ps->startup_timeout = o->startup_timeout;
    ps->rpc_timeout = o->rpc_timeout;
    ps->keep_checkpoints = o->keep_checkpoints;
    if (!(ps->saver = tfps_saver_new())) {
        tfps_seterr(err, errlen, "ps: out of memory");
        goto fail;
    }
    memcpy(ps->secret, o->job_secret, o->job_secret_len);
    ps->secret_len = o->job_secret_len;
    if (tfps_random_bytes(ps->observer_session.b, TFPS_SESSION_LEN) != TFPS_OK) {
        tfps_seterr(err, errlen, "ps: no random source for session tokens (getrandom and /dev/urandom failed)");
        goto fail;
    }
    ps->reply = reply ? reply : rpc_reply;
    ps->reply_ctx = reply_ctx;
    if (tfps_store_init(&ps->store, l, plan, ps_index, ps->seed, &ps->opt, err, errlen) != TFPS_OK) goto fail;
    ps->threads = tfps_options_ps_threads(o);
    const char *mc = getenv("TFPS_PS_APPLY_MIN_CHUNK");   // tests split a small model with it (store.h)
    if (mc && strtol(mc, NULL, 10) > 0) ps->store.min_chunk = (size_t)strtol(mc, NULL, 10);
    // a pool only when an update of this shard can be split: a small shard never wakes a thread
    if (ps->threads > 1 && ps->store.nelems >= 2 * tfps_store_min_chunk(&ps->store)) {
        char perr[TFPS_ERR_LEN];
        ps->pool = tfps_pool_new(ps->threads, perr, sizeof(perr));
        if (!ps->pool) tfps_warn("ps: updates run on one core: %s", perr);
        ps->store.pool = ps->pool;
    }
    ps->pol = tfps_policy_new(&ps->store, o->consistency, num_workers, o->replicas_to_aggregate, o->staleness, err,
                              errlen);
    if (!ps->pol) goto fail;
    ps->workers = calloc((size_t)num_workers, sizeof(*ps->workers));
    if (!ps->workers) {
        tfps_seterr(err, errlen, "ps: out of memory");
        goto fail;
    }
    ps->t_start = ps->last_log = ps->last_held_log = ps->last_replica_call = tfps_now();
    return ps;
fail:
    tfps_ps_free(ps);
    return NULL;
}

void tfps_ps_free(tfps_ps *ps) {
    if (!ps) return;
    tfps_saver_free(ps->saver);   // waits for a write in flight: a checkpoint is never cut short by an exit
    tfps_policy_free(ps->pol);
    tfps_store_destroy(&ps->store);
    tfps_pool_free(ps->pool);
    free(ps->workers);
    tfps_buf_free(&ps->out);
    tfps_buf_free(&ps->held_out);
    free(ps->half);
    free(ps);
}

int tfps_ps_shutdown_requested(const tfps_ps *ps) { return ps->shutdown; }
int tfps_ps_threads(const tfps_ps *ps) { return ps->threads; }
int tfps_ps_apply_threads(const tfps_ps *ps) { return tfps_pool_threads(ps->pool); }
size_t tfps_ps_owned(const tfps_ps *ps) { return ps->store.nelems; }

void tfps_ps_get_stats(const tfps_ps *ps, tfps_ps_stats *s) {
    tfps_policy_stats p;
    tfps_policy_get_stats(ps->pol, &p);
    *s = ps->st;
    s->version = p.version;
    s->applied = ps->store.updates;
    s->dropped = p.dropped;
    s->aggregated = p.aggregated;
    s->max_lead = p.max_lead;
    s->nonfinite = p.nonfinite;
    s->held = (uint32_t)p.held;
    s->uptime_s = tfps_now() - ps->t_start;
    s->checkpoints = ps->checkpoints;
    s->last_checkpoint_step = ps->last_ckpt_step;
    s->restored_step = ps->restored_step;
    s->checkpoint_pause_s = ps->ckpt_pause_max;
}

int tfps_ps_restore(tfps_ps *ps, char *err, size_t errlen) {
    tfps_ckpt_info info;
    int rc = tfps_store_restore(&ps->store, ps->ckpt_dir, ps->ps_index, ps->plan_digest, &info, err, errlen);
    if (rc == TFPS_CKPT_NONE) {
        tfps_info("no complete checkpoint in %s: starting from the initial weights", ps->ckpt_dir);
        return TFPS_OK;
    }
    if (rc != TFPS_OK) return TFPS_ERR;
    ps->half_dtype = TFPS_DTYPE_FP32;   // the weights changed without an update: no rounded copy holds
    tfps_policy_set_version(ps->pol, info.version);
    ps->restored_step = ps->last_ckpt_step = info.step;
    ps->last_ckpt_version = info.version;
    tfps_info("restored step %" PRIu64 " from %s (%d ps wrote it): version %" PRIu64 ", %" PRIu64
              " optimizer updates", info.step, info.path, info.num_ps, info.version, info.updates);
    return TFPS_OK;
}

/* A call from training replica `rank`: it is alive (again, if it was marked dead). */
static void seen(tfps_ps *ps, int rank) {
    if (rank < 0 || rank >= ps->num_workers) return;
    worker_state *w = &ps->workers[rank];
    w->last_seen = ps->last_replica_call = tfps_now();
    if (!w->dead) return;
    w->dead = 0;
    ps->st.workers_dead--;
    if (!w->done) tfps_policy_set_live(ps->pol, rank, 1);
    tfps_info("worker %d called again after being marked dead: it is waited for again", rank + 1);
}

/* The rank of a call that says it comes from worker id `id` with session
 * s: a registered training replica whose current session s is, or (when
 * allowed) the evaluator with the observer session: num_workers. Else -1
 * with msg set: the call is refused UNAUTHENTICATED. The message says
 * nothing about which part was wrong. */
static int caller_rank(const tfps_ps *ps, uint32_t id, const tfps_session *s, int allow_observer, char *msg,
                       size_t msglen) {
    if (allow_observer && id == TFPS_OBSERVER_ID && ps->observers > 0 &&
        tfps_session_equal(s, &ps->observer_session))
        return ps->num_workers;
    if (id >= 1 && id <= (uint32_t)ps->num_workers && ps->workers[id - 1].registered &&
        tfps_session_equal(s, &ps->workers[id - 1].session))
        return (int)id - 1;
    snprintf(msg, msglen, "worker id %" PRIu32 " has no session on ps %d with this token: call Register first (a "
             "restarted ps, or a newer registration of the rank, ends a session)", id, ps->ps_index);
    return -1;
}

static int refuse(tfps_ps *ps, int status) {
    ps->st.refused++;
    return status;
}

/* The weights of q's ranges, packed into out. */
static int pack_pull(tfps_ps *ps, const tfps_pull *q, double held_s, tfps_buf *out, char *msg, size_t msglen) {
    tfps_wire_pull_resp r = {.version = tfps_policy_version(ps->pol), .ntensors = q->n, .held_s = held_s,
                             .examples = ps->st.examples, .eval = ps->eval, .tail = q->tail,
                             .tail_len = q->tail_len};
    for (int i = 0; i < q->n; i++)
        r.tensors[i] = (tfps_wire_tensor){.range = q->ranges[i], .values = ps->store.w + q->at[i]};
    if (q->dtype != TFPS_DTYPE_FP32) {   // rounded to nearest into the scratch, at the store's offsets
        if (!ps->half && q->n > 0 && !(ps->half = malloc(ps->store.nelems * sizeof(uint16_t)))) {
            snprintf(msg, msglen, "ps: out of memory rounding the weights to %s", tfps_wire_dtype_name(q->dtype));
            return TFPS_RPC_RESOURCE_EXHAUSTED;
        }
        // once per version: the workers of a sync step all pull the same weights
        if (q->n > 0 && (ps->half_dtype != q->dtype || ps->half_updates != ps->store.updates)) {
            for (int i = 0; i < ps->store.nown; i++) {
                const tfps_store_range *o = &ps->store.own[i];
                tfps_wire_encode(q->dtype, ps->store.w + o->at, ps->half + o->at, o->end - o->begin);
            }
            ps->half_dtype = q->dtype;
            ps->half_updates = ps->store.updates;
        }
        for (int i = 0; i < q->n; i++)
            r.tensors[i] = (tfps_wire_tensor){.range = q->ranges[i], .dtype = q->dtype, .half = ps->half + q->at[i]};
    }
    if (tfps_wire_pack_pull_resp(&r, out) != TFPS_OK) {
        snprintf(msg, msglen, "ps: out of memory packing the reply");
        return TFPS_RPC_RESOURCE_EXHAUSTED;
    }
    return TFPS_RPC_OK;
}

/* An OK answer packed in *b, to the call `token`. On the RPC path the bytes
 * are handed over to the call (rpc.c sends them from where they are and
 * frees them: no second copy of ~1 MB while the server's handler lock is
 * held), and *b starts empty for the next answer. */
static void reply_ok(tfps_ps *ps, void *token, tfps_buf *b) {
    if (ps->reply == rpc_reply && b->len > 0) {
        uint8_t *data = b->data;
        const size_t len = b->len;
        *b = (tfps_buf){0};
        tfps_rpc_reply_take(token, data, len);
        return;
    }
    ps->reply(ps->reply_ctx, token, TFPS_RPC_OK, b->data, b->len, NULL);
}

static void answer_held(tfps_ps *ps, const tfps_held *h, int status, const char *why) {
    const double waited = tfps_now() - h->t_held;
    ps->st.wait_s += waited;
    if (h->rank >= 0 && h->rank < ps->num_workers) ps->workers[h->rank].wait_s += waited;
    char msg[TFPS_ERR_LEN];
    snprintf(msg, sizeof(msg), "%s", why ? why : "");
    if (status == TFPS_RPC_OK) status = pack_pull(ps, &h->pull, waited, &ps->held_out, msg, sizeof(msg));
    if (status == TFPS_RPC_OK) {
        ps->st.bytes_out += ps->held_out.len;
        reply_ok(ps, h->token, &ps->held_out);
    } else {
        ps->reply(ps->reply_ctx, h->token, status, NULL, 0, msg);
    }
}

/* Answers every held call the policy now allows. */
static void release_ready(tfps_ps *ps) {
    tfps_held h;
    while (tfps_policy_pop_ready(ps->pol, &h)) answer_held(ps, &h, TFPS_RPC_OK, NULL);
}

/* A call refused for who sent it: a warning, at most one per
 * PS_REFUSAL_LOG_S (a flood of them cannot flood the log), with the count of
 * those not logged since. */
static void log_refusal(tfps_ps *ps, int method, int status, const char *msg) {
    const double now = tfps_now();
    if (ps->last_refusal_log && now - ps->last_refusal_log < PS_REFUSAL_LOG_S) {
        ps->refusals_unlogged++;
        tfps_debug("%s refused %s: %s", tfps_method_paths[method], tfps_rpc_status_name(status), msg);
        return;
    }
    char more[80] = "";
    if (ps->refusals_unlogged)
        snprintf(more, sizeof(more), " (and %" PRIu64 " more refused since the last such line)", ps->refusals_unlogged);
    tfps_warn("%s refused %s: %s%s", tfps_method_paths[method], tfps_rpc_status_name(status), msg, more);
    ps->last_refusal_log = now;
    ps->refusals_unlogged = 0;
}

/* The rank part of Register (the request fits this ps). The same process
 * (it shows the rank's session, or the instance id it registered with)
 * always gets its rank back. Another process gets it only once the holder
 * has been silent for 3 x --heartbeat-secs (a call of a dead process held
 * here does not count: it cannot tell a crash from a live holder), so a
 * second task with the same TF_CONFIG task is refused while the first one
 * runs, and a restarted task waits at most that long. A finished rank stays
 * finished for a new process (the chief does not wait for it again). */
static int register_rank(tfps_ps *ps, const tfps_wire_register_req *m, const char *task, char *msg, size_t msglen) {
    worker_state *w = &ps->workers[m->worker_rank];
    const int rank = (int)m->worker_rank;
    const int same = w->registered && ((tfps_session_is_set(&m->session) && tfps_session_equal(&m->session, &w->session)) ||
                                       (tfps_session_is_set(&m->instance) && tfps_session_equal(&m->instance, &w->instance)));
    const double silent = tfps_now() - w->last_seen, dead_after = 3 * ps->heartbeat_s;
    if (w->registered && !same && !w->dead && silent <= dead_after) {
        snprintf(msg, msglen, "rank %d (%s %" PRIu32 ") is held by a live process on ps %d (last call %.1f s ago): a "
                 "second task with the same TF_CONFIG task? A restarted task is taken once the old one has been "
                 "silent for 3 x --heartbeat-secs = %.1f s", rank, task, m->task_index, ps->ps_index, silent,
                 dead_after);
        log_refusal(ps, TFPS_M_REGISTER, TFPS_RPC_ALREADY_EXISTS, msg);
        return refuse(ps, TFPS_RPC_ALREADY_EXISTS);
    }
    tfps_session session;
    if (tfps_random_bytes(session.b, TFPS_SESSION_LEN) != TFPS_OK) {
        snprintf(msg, msglen, "ps: no random source for a session token");
        return TFPS_RPC_INTERNAL;
    }
    const int stays_done = w->registered && w->done && !same;
    if (w->registered) {
        tfps_info("worker %d (%s %" PRIu32 ") registered again (%s): its pending gradient and held pulls are dropped",
                  rank + 1, task, m->task_index,
                  same ? "the same process, after a failure" : stays_done ? "restarted after it finished" : "restarted");
        tfps_held h;
        while (tfps_policy_pop_rank(ps->pol, rank, &h))
            answer_held(ps, &h, TFPS_RPC_ABORTED, "this worker registered again (a newer process has its rank)");
        tfps_policy_restart(ps->pol, rank);
    } else {
        ps->st.workers_registered++;
    }
    if (w->done && !stays_done) ps->st.workers_done--;   // the same process registering again trains on
    if (w->dead) ps->st.workers_dead--;
    *w = (worker_state){.registered = 1, .done = stays_done, .session = session, .instance = m->instance};
    seen(ps, rank);
    if (!stays_done) tfps_policy_set_live(ps->pol, rank, 1);
    tfps_policy_adopt_clock(ps->pol, rank, m->clock);
    tfps_debug("registered %s %" PRIu32 " as worker %d", task, m->task_index, rank + 1);
    tfps_wire_register_resp r = {.worker_id = (uint32_t)rank + 1, .version = tfps_policy_version(ps->pol),
                                 .ps_index = (uint32_t)ps->ps_index, .clock = tfps_policy_clock(ps->pol, rank),
                                 .restored_step = ps->restored_step, .session = session};
    return tfps_wire_pack_register_resp(&r, &ps->out) == TFPS_OK ? TFPS_RPC_OK : TFPS_RPC_RESOURCE_EXHAUSTED;
}

/* A Register that does not fit this ps: what differs, the caller's values
 * and the hint. The ps's own values go to its log, and to the caller only
 * when it proved it belongs to the job (the job secret): an unauthenticated
 * caller learns nothing about this ps's seed, learning rate or plan. */
static int register_mismatch(tfps_ps *ps, const char *what, const char *theirs, const char *ours, const char *hint,
                             int trusted, char *msg, size_t msglen) {
    char full[TFPS_ERR_LEN];
    snprintf(full, sizeof(full), "%s differs: worker has %s, this ps has %s: %s", what, theirs, ours, hint);
    log_refusal(ps, TFPS_M_REGISTER, TFPS_RPC_FAILED_PRECONDITION, full);
    if (trusted) snprintf(msg, msglen, "%s differs: worker has %s, ps %d has %s: %s", what, theirs, ps->ps_index, ours, hint);
    else snprintf(msg, msglen, "%s differs: worker has %s; ps %d has other values (in its log): %s", what, theirs,
                  ps->ps_index, hint);
    return refuse(ps, TFPS_RPC_FAILED_PRECONDITION);
}

/* Register: the job secret first (a caller without it learns nothing), then
 * the model, plan and options, then the rank: a rank held by a live process
 * is refused (ALREADY_EXISTS) unless the call carries that process's own
 * session (a re-registration after a failure); a finished rank is not taken
 * again. Each accepted registration gets a new random session; the rank's
 * previous one stops working. */
static int handle_register(tfps_ps *ps, const uint8_t *req, size_t len, void *token, char *msg, size_t msglen) {
    (void)token;
    tfps_wire_register_req m;
    void *owner = NULL;
    int rc = tfps_handlers_register(req, len, &m, &owner, msg, msglen);
    if (rc != TFPS_RPC_OK) return refuse(ps, rc);
    if (ps->secret_len && !tfps_secret_equal(m.job_secret, m.job_secret_len, ps->secret, ps->secret_len)) {
        snprintf(msg, msglen, "Register refused: %s job secret: expected the job's (--job-secret-file or "
                 "TFPS_JOB_SECRET, the same for every task)", m.job_secret_len ? "a wrong" : "no");
        tfps_wire_release(owner);
        return refuse(ps, TFPS_RPC_UNAUTHENTICATED);
    }
    const int trusted = ps->secret_len > 0;
    const tfps_layout *l = &ps->layout;
    char task[64], theirs[300], ours[300];
    tfps_handlers_sanitize(task, sizeof(task), m.task_type);
    const uint32_t their_r2a = m.replicas_to_aggregate ? m.replicas_to_aggregate : m.num_workers;
    if (m.input != (uint32_t)l->in || m.h1 != (uint32_t)l->h1 || m.h2 != (uint32_t)l->h2 ||
        m.classes != (uint32_t)l->out || m.layout_digest != ps->layout_digest) {
        snprintf(theirs, sizeof(theirs), "%" PRIu32 "-%" PRIu32 "-%" PRIu32 "-%" PRIu32 " (digest %016" PRIx64 ")",
                 m.input, m.h1, m.h2, m.classes, m.layout_digest);
        snprintf(ours, sizeof(ours), "%d-%d-%d-%d (digest %016" PRIx64 ")", l->in, l->h1, l->h2, l->out,
                 ps->layout_digest);
        rc = register_mismatch(ps, "model layout", theirs, ours,
                               "give every task the same --first-layer-neurons and --second-layer-neurons", trusted,
                               msg, msglen);
    } else if (m.shard_plan_digest != ps->plan_digest || m.num_ps != (uint32_t)ps->num_ps) {
        char strat[32];
        tfps_handlers_sanitize(strat, sizeof(strat), m.shard_strategy);
        snprintf(theirs, sizeof(theirs), "%s over %" PRIu32 " ps (digest %016" PRIx64 ")", strat, m.num_ps,
                 m.shard_plan_digest);
        snprintf(ours, sizeof(ours), "%s over %d ps (digest %016" PRIx64 ")", tfps_shard_strategy_name(ps->strategy),
                 ps->num_ps, ps->plan_digest);
        rc = register_mismatch(ps, "shard plan", theirs, ours,
                               "give every task the same TF_CONFIG cluster and --shard-strategy", trusted, msg, msglen);
    } else if (m.seed != ps->seed || m.learning_rate != ps->lr) {
        char lr_w[TFPS_NUM_LEN], lr_p[TFPS_NUM_LEN];   // exact: two different rates never print alike
        snprintf(theirs, sizeof(theirs), "--seed %" PRIu64 " --learning-rate %s", m.seed,
                 tfps_fmt_double(lr_w, sizeof(lr_w), m.learning_rate));
        snprintf(ours, sizeof(ours), "--seed %" PRIu64 " --learning-rate %s", ps->seed,
                 tfps_fmt_double(lr_p, sizeof(lr_p), ps->lr));
        rc = register_mismatch(ps, "training options", theirs, ours, "give every task the same options", trusted, msg,
                               msglen);
    } else if (strcmp(m.consistency, tfps_consistency_name(ps->consistency)) != 0 ||
               (ps->consistency == TFPS_CONSISTENCY_SYNC && their_r2a != (uint32_t)ps->r2a) ||
               (ps->consistency == TFPS_CONSISTENCY_SSP && m.staleness != (uint32_t)ps->staleness)) {
        char cons[16];
        tfps_handlers_sanitize(cons, sizeof(cons), m.consistency);
        snprintf(theirs, sizeof(theirs), "--consistency %s (--replicas-to-aggregate %" PRIu32 ", --staleness %" PRIu32
                 ")", cons, their_r2a, m.staleness);
        snprintf(ours, sizeof(ours), "--consistency %s (--replicas-to-aggregate %d, --staleness %d)",
                 tfps_consistency_name(ps->consistency), ps->r2a, ps->staleness);
        rc = register_mismatch(ps, "consistency", theirs, ours, "give every task the same --consistency options",
                               trusted, msg, msglen);
    } else if (m.optimizer_digest != ps->opt_digest) {
        tfps_handlers_sanitize(theirs, sizeof(theirs), m.optimizer);
        rc = register_mismatch(ps, "optimizer", theirs, ps->opt_desc,
                               "give every task the same --optimizer and its options", trusted, msg, msglen);
    } else if (strcmp(m.task_type, "evaluator") == 0) {
        ps->observers++;
        tfps_info("the evaluator registered (it may pull and report evaluations, never push)");
        tfps_wire_release(owner);
        tfps_wire_register_resp r = {.worker_id = TFPS_OBSERVER_ID, .version = tfps_policy_version(ps->pol),
                                     .ps_index = (uint32_t)ps->ps_index, .session = ps->observer_session};
        return tfps_wire_pack_register_resp(&r, &ps->out) == TFPS_OK ? TFPS_RPC_OK : TFPS_RPC_RESOURCE_EXHAUSTED;
    } else if (m.num_workers != (uint32_t)ps->num_workers || m.worker_rank >= m.num_workers) {
        snprintf(theirs, sizeof(theirs), "rank %" PRIu32 " of %" PRIu32 " training tasks (%s %" PRIu32 ")",
                 m.worker_rank, m.num_workers, task, m.task_index);
        snprintf(ours, sizeof(ours), "%d training tasks", ps->num_workers);
        rc = register_mismatch(ps, "cluster", theirs, ours, "give every task the same TF_CONFIG cluster", trusted, msg,
                               msglen);
    } else {
        rc = register_rank(ps, &m, task, msg, msglen);
    }
    tfps_wire_release(owner);
    return rc;
}

/* A decoded and authenticated pull q of rank (-1: the evaluator): answered
 * now, or held until the policy allows. q's tail (a PushPull's push
 * outcome) goes with the answer whenever it comes. */
static int pull_answer(tfps_ps *ps, tfps_pull *q, int rank, void *token, char *msg, size_t msglen) {
    int ready = tfps_policy_pull_ready(ps->pol, rank, q, msg, msglen);
    if (ready < 0) return refuse(ps, -ready);
    if (ready) return pack_pull(ps, q, 0.0, &ps->out, msg, msglen);
    if (rank >= 0 && ps->workers[rank].push_refused && tfps_policy_waits_on_own_push(ps->pol, rank, q)) {
        // this pull waits for its own round's push, which was refused: it may never be answered
        snprintf(msg, msglen, "the push of this step was refused; see its status");
        return TFPS_RPC_ABORTED;
    }
    if (!token || tfps_policy_hold(ps->pol, token, rank, q) != TFPS_OK) {
        snprintf(msg, msglen, "ps: cannot hold the pull until version %" PRIu64 " (%s)", q->min_version,
                 token ? "out of memory" : "no call to hold");
        return TFPS_RPC_RESOURCE_EXHAUSTED;
    }
    return TFPS_PS_HELD;
}

/* A pull's bytes decoded and its caller authenticated: *rank (-1 for the
 * evaluator when allowed), else a status with msg (counted as refused). */
static int pull_decode(tfps_ps *ps, const uint8_t *req, size_t len, int allow_observer, tfps_pull *q, int *rank,
                       char *msg, size_t msglen) {
    int rc = tfps_handlers_pull(&ps->store, ps->ps_index, req, len, q, msg, msglen);
    if (rc != TFPS_RPC_OK) return refuse(ps, rc);
    q->tail_len = 0;
    *rank = caller_rank(ps, q->worker_id, &q->session, allow_observer, msg, msglen);
    if (*rank < 0) return refuse(ps, TFPS_RPC_UNAUTHENTICATED);
    if (*rank == ps->num_workers) *rank = -1;   // the evaluator: never held by the ssp rule
    return TFPS_RPC_OK;
}

static int handle_pull(tfps_ps *ps, const uint8_t *req, size_t len, void *token, char *msg, size_t msglen) {
    tfps_pull q;
    int rank;
    const int rc = pull_decode(ps, req, len, 1, &q, &rank, msg, msglen);
    if (rc != TFPS_RPC_OK) return rc;
    seen(ps, rank);
    return pull_answer(ps, &q, rank, token, msg, msglen);
}

/* A Push, or a PushPull's (expect_id: its pull's worker id, which the push
 * must carry; 0: any): applied (or accepted, dropped) with the outcome in
 * *r; else a gRPC status with msg, the rank's held pulls answered ABORTED. */
static int push_apply(tfps_ps *ps, const uint8_t *req, size_t len, uint32_t expect_id, tfps_wire_push_resp *r,
                      char *msg, size_t msglen) {
    tfps_push g;
    int rc, rank = -1;
    ps_prepared *pp = ps->prepared;
    if (pp) {   // decoded already (tfps_ps_prepare, these bytes): taken over
        ps->prepared = NULL;
        g = pp->g;   // points into these bytes or this thread's scratch (tfps_handlers_push)
        rc = pp->rc;
        if (rc != TFPS_RPC_OK) snprintf(msg, msglen, "%s", pp->msg);
        if (rc == TFPS_RPC_OK && !tfps_push_valid_here(&g)) {   // a server that broke ps.h's same-thread rule
            snprintf(msg, msglen, "ps: internal error: a push decoded on another thread (tfps_ps_prepare)");
            return refuse(ps, TFPS_RPC_INTERNAL);
        }
    } else {
        rc = tfps_handlers_push(&ps->store, ps->ps_index, req, len, &g, msg, msglen);
    }
    if (rc == TFPS_RPC_OK && expect_id && g.m.worker_id != expect_id) {
        snprintf(msg, msglen, "PushPullRequest: the push is of worker id %" PRIu32 ", the pull of %" PRIu32
                 ": expected one worker's", g.m.worker_id, expect_id);
        return refuse(ps, TFPS_RPC_INVALID_ARGUMENT);
    }
    if (rc != TFPS_RPC_OK) {
        // the pull of the same round would wait for this push: tell it now (its own sender only)
        char ignore[8];
        rank = caller_rank(ps, g.m.worker_id, &g.m.session, 0, ignore, sizeof(ignore));
        goto refused;
    }
    if (g.m.worker_id == TFPS_OBSERVER_ID) {
        snprintf(msg, msglen, "the evaluator may pull but not push");
        rc = TFPS_RPC_PERMISSION_DENIED;
        goto refused;
    }
    if ((rank = caller_rank(ps, g.m.worker_id, &g.m.session, 0, msg, msglen)) < 0) {
        rc = TFPS_RPC_UNAUTHENTICATED;
        goto refused;
    }
    seen(ps, rank);
    int outcome = tfps_policy_push(ps->pol, rank, &g, msg, msglen);
    if (outcome < 0) {
        rc = -outcome;
        goto refused;
    }
    worker_state *w = &ps->workers[rank];
    w->step = g.m.step;
    w->push_refused = 0;   // a non-finite update is answered OK: the round goes on, its pull is not waiting in vain
    // sync: the step this push completed, or the one its previous push went into, may have been skipped
    const int nonfinite = outcome == TFPS_PUSH_NONFINITE || tfps_policy_take_nonfinite(ps->pol, rank);
    if (nonfinite) w->nonfinite++;
    if (outcome == TFPS_PUSH_STALE) {
        w->dropped++;
    } else if (outcome != TFPS_PUSH_NONFINITE) {
        w->pushes++;
        ps->st.examples += g.m.batch_size;
    }
    *r = (tfps_wire_push_resp){.applied = outcome == TFPS_PUSH_APPLIED || outcome == TFPS_PUSH_ACCEPTED,
                               .version = tfps_policy_version(ps->pol), .nonfinite = nonfinite};
    return TFPS_RPC_OK;
refused:
    if (rank >= 0) {
        tfps_held h;
        ps->workers[rank].push_refused = 1;
        while (tfps_policy_pop_rank(ps->pol, rank, &h))
            answer_held(ps, &h, TFPS_RPC_ABORTED, "the push of this step was refused; see its status");
    }
    return refuse(ps, rc);
}

static int handle_push(tfps_ps *ps, const uint8_t *req, size_t len, void *token, char *msg, size_t msglen) {
    (void)token;
    tfps_wire_push_resp r;
    const int rc = push_apply(ps, req, len, 0, &r, msg, msglen);
    if (rc != TFPS_RPC_OK) return rc;
    return tfps_wire_pack_push_resp(&r, &ps->out) == TFPS_OK ? TFPS_RPC_OK : TFPS_RPC_RESOURCE_EXHAUSTED;
}

/* PushPull: the push, then its pull (answered now or held as a Pull is), the
 * push's outcome riding on the answer. The pull is decoded, authenticated
 * and checked first, and the push must be the same worker's: a call refused
 * for either changes nothing. Once the push is applied the call can still
 * fail only for the hold itself (out of memory, too many held calls) or, a
 * held answer, for the ps stopping or the worker registering again; the
 * push's outcome is then not told (a client keeps one call per ps). */
static int handle_pushpull(tfps_ps *ps, const uint8_t *req, size_t len, void *token, char *msg, size_t msglen) {
    const uint8_t *push, *pull;
    size_t push_len, pull_len;
    if (tfps_wire_split_pushpull_req(req, len, &push, &push_len, &pull, &pull_len, msg, msglen) != TFPS_OK)
        return refuse(ps, TFPS_RPC_INVALID_ARGUMENT);
    tfps_pull q;
    int rank;
    int rc = pull_decode(ps, pull, pull_len, 0, &q, &rank, msg, msglen);
    if (rc != TFPS_RPC_OK) return rc;
    const int bad = tfps_policy_pull_check(ps->pol, rank, &q, msg, msglen);
    if (bad < 0) return refuse(ps, -bad);
    tfps_wire_push_resp r;
    rc = push_apply(ps, push, push_len, q.worker_id, &r, msg, msglen);
    if (rc != TFPS_RPC_OK) return rc;
    q.tail_len = tfps_wire_push_tail(&r, q.tail);   // (0 bytes when every field is its default: still right)
    return pull_answer(ps, &q, rank, token, msg, msglen);
}

static int handle_heartbeat(tfps_ps *ps, const uint8_t *req, size_t len, void *token, char *msg, size_t msglen) {
    (void)token;
    tfps_wire_heartbeat_req m;
    void *owner = NULL;
    int rc = tfps_handlers_heartbeat(req, len, &m, &owner, msg, msglen);
    if (rc != TFPS_RPC_OK) return refuse(ps, rc);
    int rank = caller_rank(ps, m.worker_id, &m.session, 1, msg, msglen);
    tfps_wire_release(owner);
    if (rank < 0) return refuse(ps, TFPS_RPC_UNAUTHENTICATED);
    if (m.eval.count > 0) {   // an evaluation report: kept, and handed to every pull (the chief's progress line)
        if (rank != ps->num_workers) {
            snprintf(msg, msglen, "HeartbeatRequest.eval: only the evaluator reports evaluations");
            return refuse(ps, TFPS_RPC_PERMISSION_DENIED);
        }
        if (!(m.eval.accuracy >= 0.0 && m.eval.accuracy <= 1.0) || !(m.eval.loss >= 0.0 && m.eval.loss < INFINITY)) {
            // the heartbeat itself still counts; the report is not kept (once per report, not per heartbeat)
            if (m.eval.count != ps->eval_ignored) {
                tfps_warn("evaluator: evaluation %" PRIu32 " ignored: accuracy %g, loss %g (expected an accuracy in "
                          "[0, 1] and a finite loss >= 0)", m.eval.count, m.eval.accuracy, m.eval.loss);
                ps->eval_ignored = m.eval.count;
            }
        } else {
            if (m.eval.count != ps->eval.count)
                tfps_info("evaluator: evaluation %" PRIu32 " at global step %" PRIu64 ": test accuracy %.4f, loss %.4f",
                          m.eval.count, m.eval.step, m.eval.accuracy, m.eval.loss);
            ps->eval = m.eval;
        }
    }
    if (rank < ps->num_workers) {
        worker_state *w = &ps->workers[rank];
        seen(ps, rank);
        w->step = m.step;
        if (m.done && !w->done) {
            w->done = 1;
            ps->st.workers_done++;
            tfps_policy_set_live(ps->pol, rank, 0);   // leaves the barrier: no hang at the end
            tfps_info("worker %d finished at step %" PRIu64 " (%" PRIu32 "/%d done)", rank + 1, m.step,
                      ps->st.workers_done, ps->num_workers);
        }
    }
    tfps_wire_heartbeat_resp r = {.version = tfps_policy_version(ps->pol),
                                  .workers_registered = ps->st.workers_registered,
                                  .workers_done = ps->st.workers_done, .shutting_down = ps->shutdown,
                                  .workers_dead = ps->st.workers_dead,
                                  .chief_done = ps->num_workers > 0 && ps->workers[0].done};
    return tfps_wire_pack_heartbeat_resp(&r, &ps->out) == TFPS_OK ? TFPS_RPC_OK : TFPS_RPC_RESOURCE_EXHAUSTED;
}

static int handle_status(tfps_ps *ps, const uint8_t *req, size_t len, void *token, char *msg, size_t msglen) {
    (void)token;
    int rc = tfps_handlers_status(req, len, msg, msglen);
    if (rc != TFPS_RPC_OK) return refuse(ps, rc);
    tfps_ps_stats s;
    tfps_ps_get_stats(ps, &s);
    tfps_wire_status_resp r = {.version = s.version, .applied = s.applied, .refused = s.refused,
                               .bytes_in = s.bytes_in, .bytes_out = s.bytes_out, .uptime_s = s.uptime_s,
                               .ps_index = (uint32_t)ps->ps_index, .workers_registered = s.workers_registered,
                               .workers_done = s.workers_done, .examples = s.examples,
                               .consistency = tfps_consistency_name(ps->consistency), .optimizer = ps->opt_desc,
                               .dropped = s.dropped, .wait_s = s.wait_s, .max_lead = s.max_lead, .held = s.held,
                               .aggregated = s.aggregated, .workers_dead = s.workers_dead,
                               .checkpoints = s.checkpoints, .last_checkpoint_step = s.last_checkpoint_step,
                               .restored_step = s.restored_step, .checkpoint_pause_s = s.checkpoint_pause_s,
                               .unauthenticated = s.unauthenticated, .nonfinite = s.nonfinite, .eval = ps->eval};
    return tfps_wire_pack_status_resp(&r, &ps->out) == TFPS_OK ? TFPS_RPC_OK : TFPS_RPC_RESOURCE_EXHAUSTED;
}

static int handle_shutdown(tfps_ps *ps, const uint8_t *req, size_t len, void *token, char *msg, size_t msglen) {
    (void)token;
    tfps_wire_shutdown_req m;
    void *owner = NULL;
    int rc = tfps_handlers_shutdown(req, len, &m, &owner, msg, msglen);
    if (rc != TFPS_RPC_OK) return refuse(ps, rc);
    const int rank = caller_rank(ps, m.worker_id, &m.session, 0, msg, msglen);
    if (rank != 0) {
        tfps_wire_release(owner);
        if (rank < 0) return refuse(ps, TFPS_RPC_UNAUTHENTICATED);
        snprintf(msg, msglen, "only the chief (worker id 1) may stop a ps; this call came from worker id %" PRIu32,
                 m.worker_id);
        return refuse(ps, TFPS_RPC_PERMISSION_DENIED);
    }
    char reason[TFPS_WIRE_SHUTDOWN_REASON_MAX + 1];   // a failed chief's own error line: it may name a lost ps
    tfps_handlers_sanitize(reason, sizeof(reason), m.reason);
    tfps_info("shutdown requested%s: %s", m.failed ? " (the job failed)" : "", reason[0] ? reason : "(no reason given)");
    tfps_wire_release(owner);
    ps->shutdown = 1;
    ps->job_failed = m.failed;
    return tfps_wire_pack_shutdown_resp(&ps->out) == TFPS_OK ? TFPS_RPC_OK : TFPS_RPC_RESOURCE_EXHAUSTED;
}

static int pack_checkpoint_resp(tfps_ps *ps, const tfps_saver_result *r, double pause_s, tfps_buf *out) {
    tfps_wire_checkpoint_resp resp = {.ps_index = (uint32_t)ps->ps_index, .version = r->version, .bytes = r->bytes,
                                      .crc = r->crc, .pause_s = pause_s, .write_s = r->write_s};
    return tfps_wire_pack_checkpoint_resp(&resp, out);
}

/* A write ended: count it and (when a call waits for it) answer. */
static void checkpoint_written(tfps_ps *ps, const tfps_saver_result *r) {
    if (r->ok) {
        ps->checkpoints++;
        ps->last_ckpt_step = r->step;
        ps->last_ckpt_version = r->version;
        tfps_info("checkpoint step %" PRIu64 ": ps-%d.ckpt, %.2f MB at version %" PRIu64 ", written in %.1f ms "
                  "(serving paused %.2f ms)", r->step, ps->ps_index, r->bytes / 1e6, r->version, r->write_s * 1e3,
                  ps->ckpt_pause * 1e3);
    } else {
        tfps_error("checkpoint step %" PRIu64 " failed: %s", r->step, r->err);
    }
    void *token = ps->ckpt_token;
    ps->ckpt_token = NULL;
    if (!token) return;
    if (r->ok && pack_checkpoint_resp(ps, r, ps->ckpt_pause, &ps->held_out) == TFPS_OK) {
        ps->st.bytes_out += ps->held_out.len;
        reply_ok(ps, token, &ps->held_out);
    } else {
        ps->reply(ps->reply_ctx, token, TFPS_RPC_INTERNAL, NULL, 0, r->ok ? "ps: out of memory" : r->err);
    }
}

static void poll_saver(tfps_ps *ps) {
    tfps_saver_result r;
    if (tfps_saver_poll(ps->saver, &r)) checkpoint_written(ps, &r);
}

static int start_checkpoint(tfps_ps *ps, uint64_t step, char *msg, size_t msglen) {
    const tfps_saver_meta meta = {.num_ps = ps->num_ps, .ps_index = ps->ps_index, .strategy = (int)ps->strategy,
                                  .plan_digest = ps->plan_digest, .step = step,
                                  .version = tfps_policy_version(ps->pol), .optim_digest = ps->opt_digest};
    if (tfps_saver_start(ps->saver, &ps->store, ps->ckpt_dir, &meta, &ps->ckpt_pause, msg, msglen) != TFPS_OK)
        return TFPS_ERR;
    if (ps->ckpt_pause > ps->ckpt_pause_max) ps->ckpt_pause_max = ps->ckpt_pause;
    return TFPS_OK;
}

/* Only the chief asks. The state is copied now (sync: at the version asked
 * for, a step boundary) and written in the background; the call is answered
 * once the file is durable (poll_saver). */
static int handle_checkpoint(tfps_ps *ps, const uint8_t *req, size_t len, void *token, char *msg, size_t msglen) {
    tfps_wire_checkpoint_req m;
    int rc = tfps_handlers_checkpoint(req, len, &m, msg, msglen);
    if (rc != TFPS_RPC_OK) return refuse(ps, rc);
    const int rank = caller_rank(ps, m.worker_id, &m.session, 0, msg, msglen);
    if (rank < 0) return refuse(ps, TFPS_RPC_UNAUTHENTICATED);
    if (rank != 0) {
        snprintf(msg, msglen, "only the chief (worker id 1) may ask for a checkpoint; this call came from worker id %"
                 PRIu32, m.worker_id);
        return refuse(ps, TFPS_RPC_PERMISSION_DENIED);
    }
    seen(ps, 0);
    const uint64_t v = tfps_policy_version(ps->pol);
    if (m.version && m.version != v) {   // a race the chief expects (backup workers): it asks again later
        snprintf(msg, msglen, "this ps is at version %" PRIu64 ", the checkpoint is of version %" PRIu64 ": ask again "
                 "at a step boundary", v, m.version);
        return TFPS_RPC_ABORTED;
    }
    if (tfps_saver_busy(ps->saver) || ps->ckpt_token) {   // UNAVAILABLE: the client retries until its deadline
        snprintf(msg, msglen, "a checkpoint is still being written");
        return TFPS_RPC_UNAVAILABLE;
    }
    if (start_checkpoint(ps, m.step, msg, msglen) != TFPS_OK) return TFPS_RPC_INTERNAL;
    if (token) {
        ps->ckpt_token = token;
        return TFPS_PS_HELD;
    }
    tfps_saver_result r;   // no call to hold (in-process use): wait for the write here
    while (!tfps_saver_poll(ps->saver, &r)) tfps_sleep(0.001);
    checkpoint_written(ps, &r);
    if (!r.ok) {
        snprintf(msg, msglen, "%s", r.err);
        return TFPS_RPC_INTERNAL;
    }
    return pack_checkpoint_resp(ps, &r, ps->ckpt_pause, &ps->out) == TFPS_OK ? TFPS_RPC_OK
                                                                             : TFPS_RPC_RESOURCE_EXHAUSTED;
}

/* Updates refused as non-finite since the last such line: one warning at
 * once, then at most one per PS_LOG_EVERY_S (a diverging run refuses every
 * update; the count is in Status and the final line). */
static void log_nonfinite(tfps_ps *ps, double now) {
    tfps_policy_stats p;
    tfps_policy_get_stats(ps->pol, &p);
    if (p.nonfinite == ps->nonfinite_logged) return;
    if (ps->nonfinite_logged > 0 && now - ps->last_nonfinite_log < PS_LOG_EVERY_S) return;
    tfps_warn("refused %" PRIu64 " update%s as non-finite (%" PRIu64 " in all, version %" PRIu64 "): %s would "
              "have made a weight or optimizer slot inf or NaN; the weights are unchanged and the workers are told "
              "(a diverging run: lower --learning-rate)", p.nonfinite - ps->nonfinite_logged,
              p.nonfinite - ps->nonfinite_logged == 1 ? "" : "s", p.nonfinite, p.version,
              ps->consistency == TFPS_CONSISTENCY_SYNC ? "the step's mean gradient" : "the pushed gradient");
    ps->nonfinite_logged = p.nonfinite;
    ps->last_nonfinite_log = now;
}

typedef int (*ps_handler)(tfps_ps *, const uint8_t *, size_t, void *, char *, size_t);
static const ps_handler handlers[TFPS_M_COUNT] = {
#define PS_HANDLER(E, N, n) [TFPS_M_##E] = handle_##n,
    TFPS_METHODS(PS_HANDLER)
#undef PS_HANDLER
};

void *tfps_ps_prepare(const tfps_ps *ps, int method, const uint8_t *req, size_t len) {
    const uint8_t *push = req, *pull;
    size_t push_len = len, pull_len;
    char ignore[8];
    if (method == TFPS_M_PUSHPULL) {   // a body that does not split is refused by the handler, as before
        if (tfps_wire_split_pushpull_req(req, len, &push, &push_len, &pull, &pull_len, ignore, sizeof(ignore)) !=
            TFPS_OK)
            return NULL;
    } else if (method != TFPS_M_PUSH) {
        return NULL;
    }
    ps_prepared *pp = malloc(sizeof(*pp));
    if (!pp) return NULL;   // the handler decodes it then
    pp->method = method;
    pp->msg[0] = '\0';
    pp->rc = tfps_handlers_push(&ps->store, ps->ps_index, push, push_len, &pp->g, pp->msg, sizeof(pp->msg));
    return pp;
}

void tfps_ps_prepared_free(void *prepared) {
    ps_prepared *pp = prepared;
    if (!pp) return;
    free(pp);
}

int tfps_ps_handle(tfps_ps *ps, int method, const uint8_t *req, size_t len, void *token, const uint8_t **resp,
                   size_t *resp_len, char *msg, size_t msglen) {
    // the server's path, in one thread: prepared, then handled
    void *pp = tfps_ps_prepare(ps, method, req, len);
    int rc = tfps_ps_handle_prepared(ps, method, req, len, pp, token, resp, resp_len, msg, msglen);
    tfps_ps_prepared_free(pp);
    return rc;
}

int tfps_ps_handle_prepared(tfps_ps *ps, int method, const uint8_t *req, size_t len, void *prepared, void *token,
                            const uint8_t **resp, size_t *resp_len, char *msg, size_t msglen) {
    *resp = NULL;
    *resp_len = 0;
    msg[0] = '\0';
    if (method < 0 || method >= TFPS_M_COUNT) {
        snprintf(msg, msglen, "unknown method %d", method);
        return TFPS_RPC_UNIMPLEMENTED;
    }
    ps->st.bytes_in += len;
    poll_saver(ps);   // a checkpoint written meanwhile is acknowledged without waiting for the tick
    ps_prepared *pp = prepared;
    ps->prepared = pp && pp->method == method ? pp : NULL;   // push_apply takes it
    int rc = handlers[method](ps, req, len, token, msg, msglen);
    ps->prepared = NULL;
    if (rc == TFPS_RPC_OK) {
        *resp = ps->out.data;
        *resp_len = ps->out.len;
        ps->st.bytes_out += ps->out.len;
    } else if (rc == TFPS_RPC_UNAUTHENTICATED || rc == TFPS_RPC_PERMISSION_DENIED) {
        if (rc == TFPS_RPC_UNAUTHENTICATED) ps->st.unauthenticated++;
        log_refusal(ps, method, rc, msg);
    } else if (rc != TFPS_PS_HELD && method != TFPS_M_REGISTER) {
        tfps_debug("%s refused: %s", tfps_method_paths[method], msg);
    }
    release_ready(ps);   // a push, a done or a register may let held pulls go (uses its own buffer)
    if (method == TFPS_M_PUSH || method == TFPS_M_PUSHPULL || method == TFPS_M_HEARTBEAT) log_nonfinite(ps, tfps_now());
    return rc;
}

void tfps_ps_serve(tfps_ps *ps, tfps_rpc_server *srv, tfps_rpc_call *call, int method, const uint8_t *req,
                   size_t len) {
    const uint8_t *resp;
    size_t resp_len;
    char msg[TFPS_ERR_LEN];
    int rc = tfps_ps_handle_prepared(ps, method, req, len, tfps_rpc_call_prepared(call), call, &resp, &resp_len, msg,
                                     sizeof(msg));
    if (rc == TFPS_RPC_OK && resp_len > 0 && resp == ps->out.data) {   // handed over, not copied (reply_ok)
        ps->out = (tfps_buf){0};
        tfps_rpc_reply_take(call, (uint8_t *)resp, resp_len);
    } else if (rc == TFPS_RPC_OK) {
        tfps_rpc_reply(call, resp, resp_len);
    } else if (rc != TFPS_PS_HELD) {
        tfps_rpc_reply_error(call, rc, msg);
    }
    if (ps->shutdown) tfps_rpc_server_request_stop(srv);
}

void tfps_ps_describe_waits(const tfps_ps *ps, char *buf, size_t n) {
    size_t j = 0;
    buf[0] = '\0';
    for (int r = 0; r < ps->num_workers && j + 40 < n; r++)
        j += (size_t)snprintf(buf + j, n - j, "%sworker %d %.1fs", r ? ", " : "", r + 1, ps->workers[r].wait_s);
}

/* Has rank a call held here that its client may still be waiting for (held
 * less than --rpc-timeout ago, the deadline every task's calls have)? The
 * server learns of a cancelled call only when it answers it. */
static int waits_here(const tfps_ps *ps, int rank, double now) {
    const double t = tfps_policy_newest_held(ps->pol, rank);
    return t > 0 && now - t < ps->rpc_timeout;
}

/* Replicas that stopped calling are marked dead: the sync barrier and the
 * chief stop waiting for them. A worker waiting on a call held here is not
 * dead. A rank that never registered is dead after --startup-timeout, or,
 * on a ps restored from a checkpoint (whose replicas may have finished or
 * died before it), after 3 heartbeat intervals: live ones register again
 * as soon as their calls fail. */
static void check_liveness(tfps_ps *ps, double now) {
    const double dead_after = 3 * ps->heartbeat_s;
    const double unregistered_after = ps->restored_step ? dead_after : ps->startup_timeout;
    for (int r = 0; r < ps->num_workers; r++) {
        worker_state *w = &ps->workers[r];
        if (w->done || w->dead) continue;
        char why[160];
        if (w->registered) {
            if (now - w->last_seen <= dead_after || waits_here(ps, r, now)) continue;
            snprintf(why, sizeof(why), "no call for %.1f s (3 x --heartbeat-secs %g)", now - w->last_seen,
                     ps->heartbeat_s);
        } else {
            if (now - ps->t_start <= unregistered_after) continue;
            snprintf(why, sizeof(why), "not registered %.1f s after this ps started (%s)", now - ps->t_start,
                     ps->restored_step ? "restored: 3 x --heartbeat-secs" : "--startup-timeout");
        }
        w->dead = 1;
        ps->st.workers_dead++;
        tfps_policy_set_live(ps->pol, r, 0);
        tfps_warn("worker %d marked dead: %s; %s", r + 1, why,
                  ps->consistency == TFPS_CONSISTENCY_SYNC ? "the sync barrier no longer waits for it"
                                                           : "training goes on without it");
    }
}

/* The idle checkpoint of a lone ps (num_ps 1: its shard is the whole model):
 * the MANIFEST the chief would write once the shard is durable, by the same
 * code (ckpt.h), then the chief's pruning; so the checkpoint restores. Says
 * what became of it in where. */
static void complete_own_checkpoint(tfps_ps *ps, const tfps_saver_result *r, char *where, size_t n) {
    char stepdir[1200], err[TFPS_ERR_LEN];
    const tfps_ckpt_entry e = {ps->ps_index, r->bytes, r->crc};
    if (tfps_ckpt_step_dir(ps->ckpt_dir, r->step, stepdir, sizeof(stepdir), err, sizeof(err)) != TFPS_OK ||
        tfps_ckpt_write_manifest(stepdir, r->step, &ps->layout, 1, &e, err, sizeof(err)) != TFPS_OK) {
        snprintf(where, n, "its shard is saved but its MANIFEST is not (%s): not restorable", err);
        return;
    }
    const int pruned = tfps_ckpt_prune(ps->ckpt_dir, ps->keep_checkpoints, &ps->layout, ps->opt.kind);
    snprintf(where, n, "saved as the complete checkpoint %s (the only ps: its shard is the whole model, and this ps "
             "wrote the MANIFEST)%s", stepdir, pruned > 0 ? "; older ones pruned" : "");
}

/* --idle-timeout: no training replica called (or waits here) for that long.
 * The state goes to a last checkpoint, then the ps stops: 1. With one ps
 * the checkpoint is complete (complete_own_checkpoint); with more it is this
 * ps's shard only, which restores only with every other ps's shard of the
 * same step under a MANIFEST, and only the chief writes those. */
static int check_idle(tfps_ps *ps, double now) {
    if (now - ps->last_replica_call < ps->idle_timeout) return 0;
    for (int r = 0; r < ps->num_workers; r++)
        if (waits_here(ps, r, now)) return 0;
    const uint64_t v = tfps_policy_version(ps->pol);
    char where[2048] = "nothing new to save";   // room for a step directory and an error: the log line cuts it
    if (v != ps->last_ckpt_version && tfps_ckpt_has_manifest(ps->ckpt_dir, v ? v : 1)) {
        // never over a complete checkpoint of the chief's (its step numbers are ps 0's versions)
        snprintf(where, sizeof(where), "step-%" PRIu64 " is a complete checkpoint already: not overwritten", v);
    } else if (v != ps->last_ckpt_version && !tfps_saver_busy(ps->saver) && !ps->ckpt_token) {
        char err[TFPS_ERR_LEN];
        tfps_saver_result r;
        if (start_checkpoint(ps, v ? v : 1, err, sizeof(err)) == TFPS_OK) {
            while (!tfps_saver_poll(ps->saver, &r)) tfps_sleep(0.001);
            checkpoint_written(ps, &r);
            if (!r.ok)
                snprintf(where, sizeof(where), "%s", r.err);
            else if (ps->num_ps == 1)
                complete_own_checkpoint(ps, &r, where, sizeof(where));
            else
                snprintf(where, sizeof(where), "its shard ps-%d.ckpt of step-%" PRIu64 " is saved, a shard only, "
                         "not restorable alone: a checkpoint needs the shards of all %d ps of that step and a "
                         "MANIFEST, which only the chief writes", ps->ps_index, r.step, ps->num_ps);
        } else {
            snprintf(where, sizeof(where), "%s", err);
        }
    }
    tfps_error("no training replica called for %.0f s (--idle-timeout): stopping at version %" PRIu64 "; %s",
               now - ps->last_replica_call, v, where);
    ps->idle_exit = 1;
    return 1;
}

int tfps_ps_idle_exit(const tfps_ps *ps) { return ps->idle_exit; }
int tfps_ps_exit_code(const tfps_ps *ps) { return ps->idle_exit || ps->job_failed ? TFPS_EXIT_FAIL : TFPS_EXIT_OK; }

int tfps_ps_tick(tfps_ps *ps) {
    const double now = tfps_now();
    poll_saver(ps);
    check_liveness(ps, now);
    // a heartbeat interval, less than the 3 after which ps 0 would think the waiting workers dead
    const uint64_t v = tfps_policy_version(ps->pol);
    const int nin = tfps_policy_close_stuck_step(ps->pol, now - ps->heartbeat_s);
    if (nin > 0)
        tfps_warn("sync step %" PRIu64 " closed with %d gradient%s: every other live worker waits for it (a member of "
                  "ps 0's step died or restarted before its push here)", v, nin, nin == 1 ? "" : "s");
    release_ready(ps);   // a dead worker may complete a sync step
    log_nonfinite(ps, now);
    if (!ps->idle_exit && check_idle(ps, now)) return 1;
    const tfps_held *h = tfps_policy_oldest(ps->pol);
    if (h && now - h->t_held > PS_HELD_LOG_AFTER_S && now - ps->last_held_log > PS_LOG_EVERY_S) {
        char what[200];
        tfps_policy_describe_wait(ps->pol, h, what, sizeof(what));
        tfps_info("a pull of %s%d held %.0f s: waiting for %s", h->rank < 0 ? "the evaluator" : "worker ",
                  h->rank < 0 ? 0 : h->rank + 1, now - h->t_held, what);
        ps->last_held_log = now;
    }
    if (now - ps->last_log < PS_LOG_EVERY_S) return 0;
    ps->last_log = now;
    tfps_ps_stats s;
    tfps_ps_get_stats(ps, &s);
    if (s.version == ps->last_logged_version) return 0;
    ps->last_logged_version = s.version;
    char waits[512] = "", each[400];
    if (ps->consistency != TFPS_CONSISTENCY_ASYNC) {
        tfps_ps_describe_waits(ps, each, sizeof(each));
        snprintf(waits, sizeof(waits), "; dropped %" PRIu64 "; waited: %s", s.dropped, each);
    }
    tfps_info("version %" PRIu64 ", applied %" PRIu64 ", refused %" PRIu64 ", non-finite %" PRIu64 ", workers %"
              PRIu32 " registered / %" PRIu32 " done / %" PRIu32 " dead%s", s.version, s.applied, s.refused,
              s.nonfinite, s.workers_registered,
              s.workers_done, s.workers_dead, waits);
    return 0;
}
