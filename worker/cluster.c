/* cluster.c -- see cluster.h. */
#include "cluster.h"
#include "log.h"
#include "tfps.h"

#include <inttypes.h>
#include <stdio.h>
#include <string.h>

static int rank_of(const tfps_cluster *c) {
    if (c->task_type == TFPS_JOB_EVALUATOR) return -1;
    if (c->task_type == TFPS_JOB_CHIEF || c->task_type == TFPS_JOB_MASTER) return 0;
    int has_chief = c->jobs[TFPS_JOB_CHIEF].present || c->jobs[TFPS_JOB_MASTER].present;
    return c->task_index + (has_chief ? 1 : 0);
}

int tfps_cluster_ctx_open(tfps_cluster_ctx *x, tfps_loop *lp, const tfps_options *o, const tfps_cluster *c) {
    char err[TFPS_ERR_LEN];
    int refused = 0;
    memset(x, 0, sizeof(*x));
    x->o = o;
    x->c = c;
    x->lp = lp;
    x->rank = rank_of(c);
    const tfps_layout *l = &lp->l;
    if (tfps_shard_plan_build(&x->plan, l, c->num_ps, (tfps_shard_strategy)o->shard_strategy, err, sizeof(err)) !=
        TFPS_OK) {
        tfps_error("%s", err);
        return TFPS_EXIT_USAGE;
    }
    if (tfps_psclient_init(&x->pc, c->jobs[TFPS_JOB_PS].addr, l, &x->plan, err, sizeof(err)) != TFPS_OK) {
        tfps_error("%s", err);
        return TFPS_EXIT_FAIL;
    }
    const tfps_wire_register_req q =
        tfps_psclient_register_req(o, l, &x->plan, tfps_job_name(c->task_type), c->task_index, x->rank,
                                   c->num_workers, x->opt_desc, sizeof(x->opt_desc));
    tfps_info("registering with %d ps (waiting up to %.0fs for them to come up)", c->num_ps, o->startup_timeout);
    if (tfps_psclient_register(&x->pc, &q, o->startup_timeout, &refused, err, sizeof(err)) != TFPS_OK) {
        tfps_error("register: %s", err);
        return refused ? TFPS_EXIT_USAGE : TFPS_EXIT_FAIL;
    }
    x->pc.consistency = o->consistency;
    x->pc.replicas_to_aggregate = o->replicas_to_aggregate;
    x->pc.num_workers = c->num_workers;
    tfps_info("registered with %d ps as worker id %" PRIu32 "; model %d-%d-%d-%d, %s plan %016" PRIx64 ", %s backend; "
              "%s, %s", c->num_ps, x->pc.worker_id, l->in, l->h1, l->h2, l->out,
              tfps_shard_strategy_name(x->plan.strategy), x->plan.digest, lp->be->name,
              tfps_consistency_name(o->consistency), x->opt_desc);
    return TFPS_EXIT_OK;
}

void tfps_cluster_ctx_close(tfps_cluster_ctx *x) {
    tfps_psclient_destroy(&x->pc);
    tfps_shard_plan_destroy(&x->plan);
}

/* The first weights: a pull from every ps. */
static int cluster_begin(void *ctx, float *params, tfps_loop_info *info, char *err, size_t errlen) {
    tfps_cluster_ctx *x = ctx;
    char why[TFPS_ERR_LEN];
    if (tfps_psclient_round(&x->pc, NULL, 0, 0, 0, params, x->o->rpc_timeout, why, sizeof(why)) != TFPS_OK)
        return tfps_seterr(err, errlen, "initial pull: %s", why);
    info->version = x->pc.version_sum;
    return TFPS_OK;
}

/* The exchange of cluster mode: push this step's gradient and pull the
 * weights for a next step, every ps in parallel (psclient.h). */
static int cluster_exchange(void *ctx, const float *grads, float loss, int batch, uint64_t step, float *params,
                            tfps_loop_info *info, char *err, size_t errlen) {
    tfps_cluster_ctx *x = ctx;
    if (tfps_psclient_round(&x->pc, grads, loss, batch, step, params, x->o->rpc_timeout, err, errlen) != TFPS_OK)
        return TFPS_ERR;
    info->version = x->pc.version_sum;
    info->dropped = (uint64_t)x->pc.last_dropped;
    info->wait_s = x->pc.last_held_s;
    return TFPS_OK;
}

static void cluster_progress(void *ctx, const tfps_loop_info *window, char *buf, size_t len) {
    const tfps_cluster_ctx *x = ctx;
    if (x->o->consistency == TFPS_CONSISTENCY_ASYNC) {
        snprintf(buf, len, " (ps version %" PRIu64 ")", window->version);
        return;
    }
    // sync, ssp: how many of these steps the ps dropped as stale, and how long the barrier held us
    snprintf(buf, len, " (ps version %" PRIu64 ", dropped %.1f%%, waited %.2fs)", window->version,
             window->steps ? 100.0 * (double)window->dropped / (double)window->steps : 0.0, window->wait_s);
}

int tfps_cluster_ctx_train(tfps_cluster_ctx *x) {
    const tfps_options *o = x->o;
    const tfps_cluster *c = x->c;
    tfps_loop *lp = x->lp;
    char err[TFPS_ERR_LEN];
    int rc = tfps_loop_prepare(lp, x->rank, c->num_workers);
    if (rc != TFPS_EXIT_OK) return rc;
    tfps_info("rank %d of %d: %d training examples in this slice, %lld steps of batch %d", x->rank, c->num_workers,
              lp->batcher.n, lp->total_steps, o->batch_size);
    int overlap = o->overlap;
    if (overlap && o->consistency != TFPS_CONSISTENCY_ASYNC) {
        // sync needs the step's own version (a gradient computed one step behind would always be stale);
        // ssp counts clocks per exchange: the bound only means what it says without a step in flight
        tfps_info("--overlap 1 turned off: --consistency %s", o->consistency == TFPS_CONSISTENCY_SYNC
                  ? "sync computes each step on the newest version (one step behind, every gradient would be stale)"
                  : "ssp bounds the clocks of pulls, which overlap would run one step ahead of the pushes");
        overlap = 0;
    }
    const tfps_loop_mode mode = {.ctx = x, .overlap = overlap, .begin = cluster_begin, .exchange = cluster_exchange,
                            .progress = cluster_progress};
    rc = tfps_loop_run(lp, &mode);
    if (rc != TFPS_EXIT_OK) return rc;
    tfps_info("finished %lld steps, %lld examples in %.2fs (%.0f examples/s)", lp->steps, lp->examples, lp->train_s,
              lp->examples / lp->train_s);
    if (o->consistency != TFPS_CONSISTENCY_ASYNC)
        tfps_info("%s: %" PRIu64 " of %lld steps dropped as stale (%.1f%%), pulls held %.2fs in all",
                  tfps_consistency_name(o->consistency), lp->totals.dropped, lp->steps,
                  lp->steps ? 100.0 * (double)lp->totals.dropped / (double)lp->steps : 0.0, lp->totals.wait_s);
    if (c->is_chief) return TFPS_EXIT_OK;
    if (tfps_psclient_heartbeat(&x->pc, (uint64_t)lp->steps, (uint64_t)lp->examples, 1, NULL, o->rpc_timeout, err,
                                sizeof(err)) != TFPS_OK) {
        tfps_error("reporting done: %s", err);
        return TFPS_EXIT_FAIL;
    }
    return TFPS_EXIT_OK;
}
