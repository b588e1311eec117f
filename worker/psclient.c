/* psclient.c -- see psclient.h. */
#include "psclient.h"
#include "log.h"
#include "options.h"
#include "service.h"
#include "tfps.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int tfps_psclient_init(tfps_psclient *pc, char *const *targets, const tfps_layout *l, const tfps_shard_plan *plan,
                       char *err, size_t errlen) {
    memset(pc, 0, sizeof(*pc));
    const int m = plan->num_ps;
    pc->layout = l;
    pc->plan = plan;
    pc->num_ps = m;
    pc->pull_req = calloc((size_t)m, sizeof(tfps_buf));
    pc->push_req = calloc((size_t)m, sizeof(tfps_buf));
    pc->pp_req = calloc((size_t)m, sizeof(tfps_buf));
    pc->pushpull = 1;
    pc->reqs = calloc(2 * (size_t)m, sizeof(tfps_rpc_req));
    pc->res = calloc(2 * (size_t)m, sizeof(tfps_rpc_result));
    pc->version = calloc((size_t)m, sizeof(uint64_t));
    pc->ctl_req = calloc((size_t)m, sizeof(tfps_buf));
    pc->session = calloc((size_t)m, sizeof(tfps_session));
    if (!pc->pull_req || !pc->push_req || !pc->pp_req || !pc->reqs || !pc->res || !pc->version || !pc->ctl_req || !pc->session) {
        tfps_psclient_destroy(pc);
        return tfps_seterr(err, errlen, "ps client: out of memory");
    }
    if (tfps_random_bytes(pc->instance.b, TFPS_SESSION_LEN) != TFPS_OK) {
        tfps_psclient_destroy(pc);
        return tfps_seterr(err, errlen, "ps client: no random source (getrandom and /dev/urandom failed)");
    }
    // the largest message is a pull of the whole model (plus framing)
    pc->rpc = tfps_rpc_client_new((const char *const *)targets, m, tfps_max_message_bytes(l), err, errlen);
    if (!pc->rpc) {
        tfps_psclient_destroy(pc);
        return TFPS_ERR;
    }
    return TFPS_OK;
}

void tfps_psclient_destroy(tfps_psclient *pc) {
    for (int k = 0; pc->pull_req && k < pc->num_ps; k++) tfps_buf_free(&pc->pull_req[k]);
    for (int k = 0; pc->push_req && k < pc->num_ps; k++) tfps_buf_free(&pc->push_req[k]);
    for (int k = 0; pc->pp_req && k < pc->num_ps; k++) tfps_buf_free(&pc->pp_req[k]);
    for (int k = 0; pc->ctl_req && k < pc->num_ps; k++) tfps_buf_free(&pc->ctl_req[k]);
    for (int k = 0; pc->res && k < 2 * pc->num_ps; k++) tfps_rpc_result_clear(&pc->res[k]);
    free(pc->segs);
    pc->segs = NULL;
    free(pc->pull_req);
    free(pc->push_req);
    free(pc->pp_req);
    free(pc->reqs);
    free(pc->res);
    free(pc->version);
    free(pc->ctl_req);
    free(pc->session);
    free(pc->residual);
    free(pc->half);
    tfps_rpc_client_free(pc->rpc);
    memset(pc, 0, sizeof(*pc));
}

/* Every call of a round goes through here: on failure, the first failed
 * call's ps and status are kept (tfps_psclient_recoverable). */
static int call_batch(tfps_psclient *pc, const tfps_rpc_req *reqs, int n, double timeout_s, int wait_for_ready,
                 tfps_rpc_result *res, char *err, size_t errlen) {
    pc->failed_status = TFPS_RPC_OK;
    int rc = tfps_rpc_call_batch(pc->rpc, reqs, n, timeout_s, wait_for_ready, res, err, errlen);
    if (rc == TFPS_OK) return rc;
    for (int i = 0; i < n; i++)
        if (res[i].status != TFPS_RPC_OK) {
            pc->failed_ps = reqs[i].target;
            pc->failed_status = res[i].status;
            break;
        }
    return rc;
}

int tfps_psclient_recoverable(const tfps_psclient *pc) {
    // the ps is down or restarted (it no longer knows us or our session), or a call outlived its deadline
    const int s = pc->failed_status;
    return s == TFPS_RPC_UNAVAILABLE || s == TFPS_RPC_DEADLINE_EXCEEDED || s == TFPS_RPC_FAILED_PRECONDITION ||
           s == TFPS_RPC_UNAUTHENTICATED;
}

enum { WAIT_NONE, WAIT_NEXT, WAIT_NEXT_OF_ONE, WAIT_STEP };

/* Packs the pull request of every ps: its ranges, the clock (ssp) and, in
 * sync, the minimum version: WAIT_NONE none; WAIT_NEXT each ps's next
 * version (version[k] + 1); WAIT_NEXT_OF_ONE that of ps `one` alone;
 * WAIT_STEP the version after step `one` on every ps. */
static int pack_pulls(tfps_psclient *pc, int wait, int64_t one, char *err, size_t errlen) {
    for (int k = 0; k < pc->num_ps; k++) {
        tfps_wire_pull_req q = {.worker_id = pc->worker_id, .clock = pc->clock, .session = pc->session[k],
                                .dtype = pc->pull_dtype};
        if (pc->consistency == TFPS_CONSISTENCY_SYNC) {
            if (wait == WAIT_NEXT || (wait == WAIT_NEXT_OF_ONE && k == one)) q.min_version = pc->version[k] + 1;
            else if (wait == WAIT_STEP) q.min_version = (uint64_t)one + 1;
        }
        for (int r = 0; r < pc->plan->nranges; r++) {
            if (pc->plan->ranges[r].ps != k) continue;
            if (q.nranges == TFPS_WIRE_MAX_TENSORS)
                return tfps_seterr(err, errlen, "ps %d owns more than %d ranges", k, TFPS_WIRE_MAX_TENSORS);
            q.ranges[q.nranges++] = (tfps_wire_range){pc->plan->ranges[r].begin, pc->plan->ranges[r].end};
        }
        if (q.nranges == 0) continue;   // this ps owns nothing: never pulled
        if (tfps_wire_pack_pull_req(&q, &pc->pull_req[k]) != TFPS_OK)
            return tfps_seterr(err, errlen, "ps client: out of memory");
    }
    return TFPS_OK;
}

tfps_wire_register_req tfps_psclient_register_req(const tfps_options *o, const tfps_layout *l,
                                                  const tfps_shard_plan *plan, const char *task_type, int task_index,
                                                  int rank, int num_workers, char *desc, size_t desclen) {
    tfps_optim opt;
    tfps_options_optim(o, &opt);
    tfps_optim_describe(&opt, desc, desclen);
    return (tfps_wire_register_req){
        .task_type = task_type, .task_index = (uint32_t)task_index, .worker_rank = (uint32_t)(rank < 0 ? 0 : rank),
        .num_workers = (uint32_t)num_workers, .num_ps = (uint32_t)plan->num_ps, .input = (uint32_t)l->in,
        .h1 = (uint32_t)l->h1, .h2 = (uint32_t)l->h2, .classes = (uint32_t)l->out,
        .layout_digest = tfps_layout_digest(l), .shard_plan_digest = plan->digest,
        .shard_strategy = tfps_shard_strategy_name(plan->strategy), .seed = (uint64_t)o->seed,
        .learning_rate = o->learning_rate, .consistency = tfps_consistency_name(o->consistency),
        .replicas_to_aggregate = (uint32_t)o->replicas_to_aggregate, .staleness = (uint32_t)o->staleness,
        .optimizer = desc, .optimizer_digest = tfps_optim_digest(&opt), .job_secret = o->job_secret,
        .job_secret_len = o->job_secret_len};
}

/* One Register attempt with the ps not registered yet (todo[k]), waiting at
 * most timeout_s for them to come up. */
static int register_some(tfps_psclient *pc, const tfps_wire_register_req *req, int *todo, uint64_t *clocks,
                         double timeout_s, int *refused, char *err, size_t errlen) {
    int n = 0, at[TFPS_MAX_PS];
    for (int k = 0; k < pc->num_ps; k++)
        if (todo[k]) {
            tfps_wire_register_req q = *req;
            q.session = pc->session[k];   // the same process again: this ps gives it its rank back
            q.instance = pc->instance;    // ... even when the reply with the session was lost
            if (tfps_wire_pack_register_req(&q, &pc->ctl_req[k]) != TFPS_OK)
                return tfps_seterr(err, errlen, "out of memory");
            at[n] = k;
            pc->reqs[n++] = tfps_rpc_req_of(k, tfps_method_paths[TFPS_M_REGISTER], pc->ctl_req[k].data,
                                           pc->ctl_req[k].len);
        }
    int rc = call_batch(pc, pc->reqs, n, timeout_s, 1, pc->res, err, errlen);
    for (int i = 0; i < n; i++) {
        const int k = at[i];
        const int st = pc->res[i].status;
        if (st == TFPS_RPC_FAILED_PRECONDITION || st == TFPS_RPC_UNAUTHENTICATED ||
            st == TFPS_RPC_INVALID_ARGUMENT)
            *refused = 1;
        if (pc->res[i].status != TFPS_RPC_OK) continue;
        tfps_wire_register_resp r;
        void *owner = NULL;
        int one = tfps_wire_unpack_register_resp(pc->res[i].resp, pc->res[i].resp_len, &r, &owner, err, errlen);
        if (one == TFPS_OK && r.ps_index != (uint32_t)k)
            one = tfps_seterr(err, errlen, "%s answered as ps %" PRIu32 ", expected ps %d: TF_CONFIG cluster.ps order "
                              "differs between tasks", tfps_rpc_client_target(pc->rpc, k), r.ps_index, k);
        else if (one == TFPS_OK && pc->worker_id && r.worker_id != pc->worker_id)
            one = tfps_seterr(err, errlen, "ps %d gave worker id %" PRIu32 ", another ps gave %" PRIu32, k, r.worker_id,
                              pc->worker_id);
        if (one == TFPS_OK) {
            pc->worker_id = r.worker_id;
            pc->version[k] = r.version;
            pc->session[k] = r.session;
            if (r.clock > pc->clock) pc->clock = r.clock;   // a restarted worker resumes its clock
            clocks[k] = r.clock;
            if (r.clock > pc->resume_clock) pc->resume_clock = r.clock;
            if (k == 0) pc->restored_step = r.restored_step;
            todo[k] = 0;
        } else {
            *refused = 1;   // a ps that answers wrongly is a configuration mistake: waiting will not mend it
            rc = TFPS_ERR;
        }
        tfps_wire_release(owner);
    }
    for (int i = 0; i < n; i++) tfps_rpc_result_clear(&pc->res[i]);
    return rc;
}

int tfps_psclient_register(tfps_psclient *pc, const tfps_wire_register_req *req, double timeout_s, const char *what,
                           int *refused, char *err, size_t errlen) {
    int todo[TFPS_MAX_PS], rc = TFPS_ERR;
    uint64_t clocks[TFPS_MAX_PS] = {0};   /* each ps's count of our pushes */
    *refused = 0;
    tfps_wire_register_req q = *req;
    q.clock = pc->clock;   // a re-registration: the pushes so far (a restored ps adopts them)
    for (int k = 0; k < pc->num_ps; k++) todo[k] = 1;
    pc->worker_id = 0;
    const double t0 = tfps_now(), t_end = t0 + timeout_s;
    double last_log = t0;
    // short attempts, so the wait says every few seconds which ps it waits for
    for (;;) {
        const double left = t_end - tfps_now();
        if (left <= 0) break;
        if (tfps_rpc_interrupted()) {
            tfps_seterr(err, errlen, "interrupted by a signal");
            break;
        }
        const double t_try = tfps_now();
        rc = register_some(pc, &q, todo, clocks, left < TFPS_PSCLIENT_WAIT_LOG_S ? left : TFPS_PSCLIENT_WAIT_LOG_S,
                           refused, err, errlen);
        if (rc == TFPS_OK || *refused) break;
        // an answer at once (our rank's old process not silent long enough yet, any other error): ask again in
        // half a second, not in a tight loop
        const double pause = 0.5 - (tfps_now() - t_try);
        if (pause > 0) tfps_sleep(pause < t_end - tfps_now() ? pause : t_end - tfps_now());
        char who[400];
        size_t j = 0;
        who[0] = '\0';
        for (int k = 0; k < pc->num_ps && j + 80 < sizeof(who); k++)
            if (todo[k]) j += (size_t)snprintf(who + j, sizeof(who) - j, "%sps %d (%s)", j ? ", " : "", k,
                                               tfps_rpc_client_target(pc->rpc, k));
        if (tfps_now() >= t_end) {
            tfps_seterr(err, errlen, "%s did not answer within %.0f s (%s); last: %s%s", who, timeout_s, what,
                        pc->failed_status ? tfps_rpc_status_name(pc->failed_status) : "no answer",
                        tfps_rpc_tls_mode() ? " (mTLS: a failed handshake looks like this too: does every task's "
                                              "certificate come from the same --tls-ca and name the address dialled? "
                                              "gRPC's \"Handshake failed\" lines above say why)"
                                            : "");
        } else if (tfps_now() - last_log >= TFPS_PSCLIENT_WAIT_LOG_S - 0.01) {
            tfps_info("waiting for %s: %.0f s of %.0f s (%s); last: %s", who, tfps_now() - t0, timeout_s, what, err);
            last_log = tfps_now();
        }
    }
    // ssp: a ps restored from a checkpoint knows fewer of our pushes than another: tell it our clock, or our
    // pulls would be ahead of it (refused)
    int behind = 0;
    for (int k = 0; rc == TFPS_OK && k < pc->num_ps; k++)
        behind += todo[k] = pc->consistency == TFPS_CONSISTENCY_SSP && clocks[k] < pc->clock;
    if (behind) {
        q.clock = pc->clock;
        rc = register_some(pc, &q, todo, clocks, timeout_s, refused, err, errlen);
    }
    if (rc == TFPS_OK) rc = pack_pulls(pc, WAIT_NONE, 0, err, errlen);
    return rc;
}

/* reqs[0..n) not sent after all: the bodies handed over (take) are freed. */
static int drop_reqs(tfps_psclient *pc, int n) {
    for (int i = 0; i < n; i++)
        if (pc->reqs[i].take) free((void *)pc->reqs[i].body);
    return TFPS_ERR;
}

/* Packs this round's push of ps k and appends it to reqs; fused: as a
 * PushPull with ps k's packed pull (pull_req[k]). */
static int add_push(tfps_psclient *pc, int k, uint64_t base, const float *grads, float loss, int batch, uint64_t step,
                    int fused, int *n, char *err, size_t errlen) {
    tfps_wire_push_req q = {.worker_id = pc->worker_id, .base_version = base, .step = step, .loss = loss,
                            .batch_size = (uint32_t)batch, .session = pc->session[k]};
    const int dt = pc->wire_dtype;
    if (dt != TFPS_DTYPE_FP32 && !pc->half) {
        if (!pc->residual) pc->residual = calloc(pc->layout->total, sizeof(float));
        if (pc->residual) pc->half = malloc(pc->layout->total * sizeof(uint16_t));
        if (!pc->residual || !pc->half) return tfps_seterr(err, errlen, "ps client: out of memory");
    }
    for (int r = 0; r < pc->plan->nranges; r++) {
        const tfps_shard_range *g = &pc->plan->ranges[r];
        if (g->ps != k) continue;
        tfps_wire_tensor *t = &q.gradients[q.ntensors++];
        *t = (tfps_wire_tensor){.range = {g->begin, g->end}, .values = grads + g->begin};
        if (dt != TFPS_DTYPE_FP32) {   // rounded with error feedback: the residual goes out with the next step
            tfps_wire_encode_ef(dt, grads + g->begin, pc->residual + g->begin, pc->half + g->begin, g->end - g->begin);
            *t = (tfps_wire_tensor){.range = {g->begin, g->end}, .dtype = dt, .half = pc->half + g->begin};
        }
    }
    // the body is handed to gRPC, which sends it from where it is and frees it (tfps_rpc_req.take): the
    // next round packs into a new block
    tfps_buf *b = fused ? &pc->pp_req[k] : &pc->push_req[k];
    const int rc = fused ? tfps_wire_pack_pushpull_req(&q, &pc->pull_req[k], b) : tfps_wire_pack_push_req(&q, b);
    if (rc != TFPS_OK) return tfps_seterr(err, errlen, "ps client: out of memory");
    tfps_rpc_req *q_out = &pc->reqs[(*n)++];
    *q_out = tfps_rpc_req_of(k, tfps_method_paths[fused ? TFPS_M_PUSHPULL : TFPS_M_PUSH], b->data, b->len);
    q_out->take = 1;
    q_out->segments = fused;   // the answer read where it arrives (view_answer)
    *b = (tfps_buf){0};
    return TFPS_OK;
}

static int view_answer(tfps_psclient *pc, const tfps_rpc_result *res, char *err, size_t errlen);
static int take_pull(tfps_psclient *pc, int k, const tfps_wire_pull_view *r, float *params, char *err, size_t errlen);

/* Sync, a member of ps `decider`'s step s: waits (pulls held) until every
 * other ps finished its step s - 1 too, so that the push of this step lands
 * in its step s (never ahead of it, never late in an older step). A ps more
 * than one step behind is pulled once per step. */
static int wait_for_step(tfps_psclient *pc, int decider, uint64_t s, double timeout_s, char *err, size_t errlen) {
    int at[TFPS_MAX_PS];
    for (;;) {
        int n = 0;
        if (pack_pulls(pc, WAIT_NEXT, 0, err, errlen) != TFPS_OK) return TFPS_ERR;
        for (int k = 0; k < pc->num_ps; k++) {
            at[k] = -1;
            if (k == decider || tfps_shard_plan_ps_elems(pc->plan, k) == 0 || pc->version[k] >= s) continue;
            at[k] = n;
            pc->reqs[n] = tfps_rpc_req_of(k, tfps_method_paths[TFPS_M_PULL], pc->pull_req[k].data,
                                          pc->pull_req[k].len);
            pc->reqs[n++].segments = 1;
        }
        if (n == 0) return TFPS_OK;
        int rc = call_batch(pc, pc->reqs, n, timeout_s, 0, pc->res, err, errlen);
        for (int k = 0; k < pc->num_ps && rc == TFPS_OK; k++) {
            if (at[k] < 0) continue;
            // read in place; the weights are not taken (they come again after this step's push)
            rc = view_answer(pc, &pc->res[at[k]], err, errlen);
            if (rc == TFPS_OK) rc = take_pull(pc, k, &pc->view, NULL, err, errlen);
        }
        for (int i = 0; i < n; i++) tfps_rpc_result_clear(&pc->res[i]);
        if (rc != TFPS_OK) return rc;
    }
}

/* A push's outcome from ps k: *applied (applied or accepted; 0: dropped as
 * stale, or refused as non-finite); nonfinite refusals are noted in pc. */
static void note_push(tfps_psclient *pc, int k, const tfps_wire_push_resp *pr, int *applied) {
    const tfps_wire_push_resp r = *pr;
    *applied = r.applied != 0;
    if (r.nonfinite) {
        if (pc->last_nonfinite++ == 0) pc->last_nonfinite_ps = k;
        // async/ssp: refused, not stale (nothing to count as dropped); sync: applied stays the step's membership
        // (the notice may be of the previous step, on a push dropped as stale now)
        if (pc->consistency != TFPS_CONSISTENCY_SYNC) *applied = 1;
    }
}

/* The PushResponse of ps k in res, noted (note_push). */
static int read_push(tfps_psclient *pc, int k, const tfps_rpc_result *res, int *applied, char *err, size_t errlen) {
    tfps_wire_push_resp r;
    void *owner = NULL;
    if (tfps_wire_unpack_push_resp(res->resp, res->resp_len, &r, &owner, err, errlen) != TFPS_OK) return TFPS_ERR;
    note_push(pc, k, &r, applied);
    tfps_wire_release(owner);
    return TFPS_OK;
}

/* A Pull's or PushPull's answer in res (asked with `segments`: in gRPC's
 * pieces), read where it is into pc->view. */
static int view_answer(tfps_psclient *pc, const tfps_rpc_result *res, char *err, size_t errlen) {
    const int n = res->segs ? res->nsegs : res->resp_len ? 1 : 0;
    if (n > pc->segs_cap) {
        tfps_wire_seg *g = realloc(pc->segs, (size_t)n * sizeof(*g));
        if (!g) return tfps_seterr(err, errlen, "ps client: out of memory");
        pc->segs = g;
        pc->segs_cap = n;
    }
    for (int i = 0; i < n; i++)
        pc->segs[i] = res->segs ? (tfps_wire_seg){res->segs[i].p, res->segs[i].len}
                                : (tfps_wire_seg){res->resp, res->resp_len};
    pc->nsegs = n;
    return tfps_wire_view_pull_resp_segs(pc->segs, n, &pc->view, err, errlen);
}

/* ps k's answer, read by view_answer into pc->view: its ranges copied once
 * from the received bytes into params (each checked to be ps k's; params
 * NULL: none taken), its version, held time, and ps 0's examples and
 * evaluation, noted. */
static int take_pull(tfps_psclient *pc, int k, const tfps_wire_pull_view *r, float *params, char *err, size_t errlen) {
    for (int t = 0; t < r->ntensors; t++) {
        const tfps_wire_tensor_view *v = &r->tensors[t];
        if (v->range.end > pc->layout->total || tfps_shard_plan_owner(pc->plan, v->range.begin) != k)
            return tfps_seterr(err, errlen, "ps %d sent range [%" PRIu64 ", %" PRIu64 ") it does not own", k,
                               v->range.begin, v->range.end);
        if (params && tfps_wire_view_copy(pc->segs, pc->nsegs, v, params + v->range.begin) != TFPS_OK)
            return tfps_seterr(err, errlen, "ps %d: an answer's tensor outside its bytes", k);   // not seen
    }
    pc->version[k] = r->version;
    if (r->held_s > pc->last_held_s) pc->last_held_s = r->held_s;
    if (k == 0) {
        pc->examples = r->examples;
        pc->eval = r->eval;
    }
    return TFPS_OK;
}

/* Backup workers over more than one ps (sync, replicas_to_aggregate below
 * the workers): the first ps that owns parameters (ps 0) decides each step's
 * members for all; see psclient.h. */
static int decider_ps(const tfps_psclient *pc) {
    if (pc->consistency != TFPS_CONSISTENCY_SYNC || pc->replicas_to_aggregate <= 0 ||
        pc->replicas_to_aggregate >= pc->num_workers || pc->num_ps < 2)
        return -1;
    for (int k = 0; k < pc->num_ps; k++)
        if (tfps_shard_plan_ps_elems(pc->plan, k) > 0) return k;
    return -1;
}

int tfps_psclient_round(tfps_psclient *pc, const float *grads, float loss, int batch, uint64_t step, float *params,
                        double timeout_s, char *err, size_t errlen) {
    int n = 0, pulls_at[TFPS_MAX_PS], pushes_at[TFPS_MAX_PS];
    if (grads) pc->clock++;
    pc->last_dropped = 0;
    pc->last_nonfinite = 0;
    pc->last_nonfinite_ps = -1;
    pc->last_held_s = 0;
    int rc = TFPS_OK;
    // a training round moves --wire-dtype; a pull alone (the first weights, the final model, the evaluator) fp32
    const int pull_dtype = grads ? pc->wire_dtype : TFPS_DTYPE_FP32;
    if (params && pull_dtype != pc->pull_dtype) {
        pc->pull_dtype = pull_dtype;
        if (pc->consistency == TFPS_CONSISTENCY_ASYNC && pack_pulls(pc, WAIT_NONE, 0, err, errlen) != TFPS_OK)
            return TFPS_ERR;   // (sync and ssp pack their pulls below, every round)
    }
    // backup workers over several ps (psclient.h): phase 1, the decider alone takes the push into its step s or
    // drops it as stale. A member waits until the other ps finished step s - 1, then pushes to them with base s
    // and waits for step s everywhere; a dropped push goes nowhere else and waits on nobody but the decider
    const int decider = grads ? decider_ps(pc) : -1;
    int push_to_others = 1, wait = grads ? WAIT_NEXT : WAIT_NONE;
    uint64_t s = 0;
    if (decider >= 0) {
        s = pc->version[decider];
        if (add_push(pc, decider, s, grads, loss, batch, step, 0, &n, err, errlen) != TFPS_OK) return TFPS_ERR;
        rc = call_batch(pc, pc->reqs, n, timeout_s, 0, pc->res, err, errlen);
        int applied = 0;
        if (rc == TFPS_OK) rc = read_push(pc, decider, &pc->res[0], &applied, err, errlen);
        tfps_rpc_result_clear(&pc->res[0]);
        n = 0;
        if (rc == TFPS_OK && applied) {
            rc = wait_for_step(pc, decider, s, timeout_s, err, errlen);
            wait = WAIT_STEP;
        } else {
            // dropped everywhere: the decider is past step s (its pull is answered at once); the others not waited for
            pc->last_dropped = 1;
            push_to_others = 0;
            wait = WAIT_NEXT_OF_ONE;
        }
        if (rc != TFPS_OK) return rc;
    }
    if (params && pc->consistency != TFPS_CONSISTENCY_ASYNC &&
        pack_pulls(pc, wait, wait == WAIT_NEXT_OF_ONE ? decider : (int64_t)s, err, errlen) != TFPS_OK)
        return TFPS_ERR;
    for (int k = 0; k < pc->num_ps; k++) {
        pulls_at[k] = pushes_at[k] = -1;
        if (tfps_shard_plan_ps_elems(pc->plan, k) == 0) continue;   // owns nothing: nothing to push or pull
        // a push and a pull to the same ps: one PushPull (one round trip), unless turned off
        const int fused = pc->pushpull && grads && params && k != decider && push_to_others;
        if (grads && k != decider && push_to_others) {
            pushes_at[k] = n;
            if (add_push(pc, k, decider >= 0 ? s : pc->version[k], grads, loss, batch, step, fused, &n, err,
                         errlen) != TFPS_OK)
                return drop_reqs(pc, n);
        }
        if (params && fused) {
            pulls_at[k] = pushes_at[k];
        } else if (params) {
            pulls_at[k] = n;
            pc->reqs[n] = tfps_rpc_req_of(k, tfps_method_paths[TFPS_M_PULL], pc->pull_req[k].data,
                                          pc->pull_req[k].len);
            pc->reqs[n++].segments = 1;
        }
    }
    rc = n ? call_batch(pc, pc->reqs, n, timeout_s, 0, pc->res, err, errlen) : TFPS_OK;
    for (int k = 0; k < pc->num_ps && rc == TFPS_OK; k++) {
        if (pushes_at[k] < 0) continue;
        int applied = 0;
        if (pushes_at[k] == pulls_at[k]) {   // a PushPull: both answers in one message, read in place
            const tfps_rpc_result *res = &pc->res[pushes_at[k]];
            rc = view_answer(pc, res, err, errlen);
            if (rc == TFPS_OK) {
                note_push(pc, k, &pc->view.push, &applied);
                rc = take_pull(pc, k, &pc->view, params, err, errlen);
            }
        } else {
            rc = read_push(pc, k, &pc->res[pushes_at[k]], &applied, err, errlen);
        }
        if (rc == TFPS_OK && !applied) pc->last_dropped = 1;
    }
    if (rc == TFPS_OK && params) {
        uint64_t vsum = 0;
        for (int k = 0; k < pc->num_ps && rc == TFPS_OK; k++) {
            if (pulls_at[k] < 0) continue;
            if (pulls_at[k] != pushes_at[k]) {   // a Pull's answer (a PushPull's is taken above), read in place
                const tfps_rpc_result *res = &pc->res[pulls_at[k]];
                rc = view_answer(pc, res, err, errlen);
                if (rc == TFPS_OK) rc = take_pull(pc, k, &pc->view, params, err, errlen);
            }
            vsum += pc->version[k];
        }
        pc->version_sum = vsum;
    }
    for (int i = 0; i < n; i++) tfps_rpc_result_clear(&pc->res[i]);
    return rc;
}

int tfps_psclient_heartbeat(tfps_psclient *pc, uint64_t step, uint64_t examples, int done,
                            tfps_wire_heartbeat_resp *resp0, double timeout_s, char *err, size_t errlen) {
    for (int k = 0; k < pc->num_ps; k++) {
        tfps_wire_heartbeat_req q = {.worker_id = pc->worker_id, .step = step, .examples = examples, .done = done,
                                     .session = pc->session[k], .eval = pc->eval_report};
        if (tfps_wire_pack_heartbeat_req(&q, &pc->ctl_req[k]) != TFPS_OK)
            return tfps_seterr(err, errlen, "out of memory");
        pc->reqs[k] = tfps_rpc_req_of(k, tfps_method_paths[TFPS_M_HEARTBEAT], pc->ctl_req[k].data, pc->ctl_req[k].len);
    }
    int rc = call_batch(pc, pc->reqs, pc->num_ps, timeout_s, 0, pc->res, err, errlen);
    if (rc == TFPS_OK && resp0) {
        void *owner = NULL;
        rc = tfps_wire_unpack_heartbeat_resp(pc->res[0].resp, pc->res[0].resp_len, resp0, &owner, err, errlen);
        tfps_wire_release(owner);
    }
    for (int k = 0; k < pc->num_ps; k++) tfps_rpc_result_clear(&pc->res[k]);
    return rc;
}

int tfps_psclient_status(tfps_psclient *pc, int ps, tfps_wire_status_resp *out, double timeout_s, char *err,
                         size_t errlen) {
    tfps_buf body = {0};
    tfps_rpc_result res = {0};
    if (tfps_wire_pack_status_req(&body) != TFPS_OK) return tfps_seterr(err, errlen, "out of memory");
    int rc = tfps_rpc_call_one(pc->rpc, ps, tfps_method_paths[TFPS_M_STATUS], body.data, body.len, timeout_s, 0, &res, err,
                           errlen);
    if (rc == TFPS_OK) {
        void *owner = NULL;
        rc = tfps_wire_unpack_status_resp(res.resp, res.resp_len, out, &owner, err, errlen);
        tfps_wire_release(owner);
    }
    tfps_buf_free(&body);
    tfps_rpc_result_clear(&res);
    return rc;
}

int tfps_psclient_shutdown(tfps_psclient *pc, const char *reason, int failed, double timeout_s, char *err,
                           size_t errlen) {
    for (int k = 0; k < pc->num_ps; k++) {
        tfps_wire_shutdown_req q = {.reason = reason, .failed = failed, .worker_id = pc->worker_id,
                                    .session = pc->session[k]};
        if (tfps_wire_pack_shutdown_req(&q, &pc->ctl_req[k]) != TFPS_OK)
            return tfps_seterr(err, errlen, "out of memory");
        pc->reqs[k] = tfps_rpc_req_of(k, tfps_method_paths[TFPS_M_SHUTDOWN], pc->ctl_req[k].data, pc->ctl_req[k].len);
    }
    int rc = call_batch(pc, pc->reqs, pc->num_ps, timeout_s, 0, pc->res, err, errlen);
    for (int k = 0; k < pc->num_ps; k++) tfps_rpc_result_clear(&pc->res[k]);
    return rc;
}

int tfps_psclient_checkpoint(tfps_psclient *pc, uint64_t step, int at_version, double timeout_s,
                             tfps_wire_checkpoint_resp *out, char *err, size_t errlen) {
    tfps_buf *body = pc->push_req;   // one body per ps: the version may differ (reuses the push buffers)
    int n = 0, at[TFPS_MAX_PS];
    for (int k = 0; k < pc->num_ps; k++) {
        const tfps_wire_checkpoint_req q = {.worker_id = pc->worker_id, .step = step,
                                            .version = at_version ? pc->version[k] : 0, .session = pc->session[k]};
        if (tfps_wire_pack_checkpoint_req(&q, &body[k]) != TFPS_OK) return tfps_seterr(err, errlen, "out of memory");
        at[k] = n;
        pc->reqs[n++] = tfps_rpc_req_of(k, tfps_method_paths[TFPS_M_CHECKPOINT], body[k].data, body[k].len);
    }
    int rc = call_batch(pc, pc->reqs, n, timeout_s, 0, pc->res, err, errlen);
    for (int k = 0; k < pc->num_ps && rc == TFPS_OK; k++) {
        void *owner = NULL;
        rc = tfps_wire_unpack_checkpoint_resp(pc->res[at[k]].resp, pc->res[at[k]].resp_len, &out[k], &owner, err,
                                              errlen);
        tfps_wire_release(owner);
    }
    for (int i = 0; i < n; i++) tfps_rpc_result_clear(&pc->res[i]);
    return rc;
}
