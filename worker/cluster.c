/* cluster.c -- see cluster.h. */
#include "cluster.h"
#include "ckpt.h"
#include "log.h"
#include "tfps.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
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
    x->reg = tfps_psclient_register_req(o, l, &x->plan, tfps_job_name(c->task_type), c->task_index, x->rank,
                                        c->num_workers, x->opt_desc, sizeof(x->opt_desc));
    if (tfps_options_checkpoint_dir(o, x->ckpt_dir, sizeof(x->ckpt_dir)) != TFPS_OK) {
        tfps_error("--checkpoint-dir: the path is too long");
        return TFPS_EXIT_USAGE;
    }
    x->pc.consistency = o->consistency;
    x->pc.pushpull = o->pushpull;
    // the evaluator only pulls, and pulls alone come in fp32 (the master weights, exactly)
    x->pc.wire_dtype = c->task_type == TFPS_JOB_EVALUATOR ? TFPS_DTYPE_FP32 : o->wire_dtype;
    x->pc.replicas_to_aggregate = o->replicas_to_aggregate;
    x->pc.num_workers = c->num_workers;
    tfps_info("registering with %d ps (waiting up to %.0fs for them to come up)", c->num_ps, o->startup_timeout);
    if (tfps_psclient_register(&x->pc, &x->reg, o->startup_timeout, "--startup-timeout", &refused, err,
                               sizeof(err)) != TFPS_OK) {
        tfps_error("register: %s", err);
        return refused ? TFPS_EXIT_USAGE : TFPS_EXIT_FAIL;
    }
    char as[48];
    if (c->task_type == TFPS_JOB_EVALUATOR) snprintf(as, sizeof(as), "the evaluator");
    else snprintf(as, sizeof(as), "worker id %" PRIu32 " (rank %d)", x->pc.worker_id, x->rank);
    tfps_info("registered with %d ps as %s; model %d-%d-%d-%d, %s plan %016" PRIx64 ", %s backend; "
              "%s, %s; %s on the wire%s", c->num_ps, as, l->in, l->h1, l->h2, l->out,
              tfps_shard_strategy_name(x->plan.strategy), x->plan.digest, lp->be->name,
              tfps_consistency_name(o->consistency), x->opt_desc, tfps_wire_dtype_name(x->pc.wire_dtype),
              x->pc.wire_dtype ? " (gradients with error feedback; the ps keep fp32)" : "");
    return TFPS_EXIT_OK;
}

int tfps_cluster_recover(tfps_cluster_ctx *x, const char *why, char *err, size_t errlen) {
    const tfps_options *o = x->o;
    const int k = x->pc.failed_ps;
    const char *target = tfps_rpc_client_target(x->pc.rpc, k);
    if (++x->recoveries_in_row > TFPS_CLUSTER_MAX_RECOVERIES)
        return tfps_seterr(err, errlen, "ps %d (%s): %s (again after %d recoveries in a row: giving up)", k, target,
                           why, TFPS_CLUSTER_MAX_RECOVERIES);
    tfps_warn("ps %d (%s) %s: re-registering with every ps, waiting up to %.0f s for it (--ps-recovery-timeout)", k,
              target, why, o->ps_recovery_timeout);
    const double t0 = tfps_now();
    int refused = 0;
    char why2[TFPS_ERR_LEN];
    if (tfps_psclient_register(&x->pc, &x->reg, o->ps_recovery_timeout, "--ps-recovery-timeout", &refused, why2,
                               sizeof(why2)) != TFPS_OK)
        return tfps_seterr(err, errlen, "ps %d (%s) did not come back: %s", k, target, why2);
    x->recoveries++;
    x->t_failed = t0;
    char versions[300];
    size_t j = 0;
    versions[0] = '\0';
    for (int p = 0; p < x->pc.num_ps && j + 40 < sizeof(versions); p++)
        j += (size_t)snprintf(versions + j, sizeof(versions) - j, "%sps %d at %" PRIu64, p ? ", " : "", p,
                              x->pc.version[p]);
    tfps_info("re-registered with every ps after %.1f s (versions: %s)", tfps_now() - t0, versions);
    return TFPS_OK;
}

void tfps_cluster_ctx_close(tfps_cluster_ctx *x) {
    tfps_psclient_destroy(&x->pc);
    tfps_shard_plan_destroy(&x->plan);
}

/* What every round tells the loop: the global step (ps 0's version: the
 * updates it applied; the same number the chief checkpoints at), the
 * examples every replica pushed and the evaluator's latest accuracy, as ps 0
 * knows them. */
static void note_round(const tfps_cluster_ctx *x, tfps_loop_info *info) {
    info->version = x->pc.version[0];
    info->cluster_examples = x->pc.examples;
    info->evals = x->pc.eval.count;
    info->eval_step = x->pc.eval.step;
    info->eval_accuracy = x->pc.eval.accuracy;
}

/* The first weights: a pull from every ps. */
static int cluster_begin(void *ctx, float *params, tfps_loop_info *info, char *err, size_t errlen) {
    tfps_cluster_ctx *x = ctx;
    char why[TFPS_ERR_LEN];
    if (x->last_ckpt_t == 0) x->last_ckpt_t = tfps_now();   // the first begin (not a re-pull after a recovery)
    for (;;) {
        if (tfps_psclient_round(&x->pc, NULL, 0, 0, 0, params, x->o->rpc_timeout, why, sizeof(why)) == TFPS_OK) break;
        if (!tfps_psclient_recoverable(&x->pc) || tfps_cluster_recover(x, why, err, errlen) != TFPS_OK)
            return tfps_seterr(err, errlen, "initial pull: %s", why);
    }
    note_round(x, info);
    return TFPS_OK;
}

int tfps_cluster_checkpoint(tfps_cluster_ctx *x, const char *why, double timeout_s) {
    const tfps_options *o = x->o;
    const int m = x->c->num_ps;
    // the global step: ps 0's version as of our last pull (sync: a step boundary on every ps)
    const uint64_t step = x->pc.version[0];
    char err[TFPS_ERR_LEN], stepdir[1200];
    if (step == 0 || step == x->last_ckpt_step) return TFPS_OK;   // nothing new to save
    tfps_wire_checkpoint_resp *resp = calloc((size_t)m, sizeof(*resp));
    tfps_ckpt_entry *e = calloc((size_t)m, sizeof(*e));
    int rc = TFPS_ERR;
    const double t0 = tfps_now();
    if (!resp || !e) {
        tfps_warn("checkpoint step %" PRIu64 ": out of memory", step);
        goto done;
    }
    if (tfps_psclient_checkpoint(&x->pc, step, o->consistency == TFPS_CONSISTENCY_SYNC, timeout_s, resp, err,
                                 sizeof(err)) != TFPS_OK) {
        // sync with backup workers: a ps already past our version asks for another try at the next step
        if (x->pc.failed_status == TFPS_RPC_ABORTED && strcmp(why, "final") != 0 && strcmp(why, "signal") != 0)
            tfps_debug("checkpoint step %" PRIu64 ": %s", step, err);
        else
            tfps_warn("checkpoint step %" PRIu64 " (%s) failed: %s", step, why, err);
        goto done;
    }
    double pause = 0, write = 0, mb = 0;
    for (int k = 0; k < m; k++) {
        e[k] = (tfps_ckpt_entry){k, resp[k].bytes, resp[k].crc};
        if (resp[k].pause_s > pause) pause = resp[k].pause_s;
        if (resp[k].write_s > write) write = resp[k].write_s;
        mb += resp[k].bytes / 1e6;
    }
    if (tfps_ckpt_step_dir(x->ckpt_dir, step, stepdir, sizeof(stepdir), err, sizeof(err)) != TFPS_OK ||
        tfps_ckpt_write_manifest(stepdir, step, &x->lp->l, m, e, err, sizeof(err)) != TFPS_OK) {
        tfps_warn("checkpoint step %" PRIu64 ": MANIFEST: %s", step, err);
        goto done;
    }
    const int pruned = tfps_ckpt_prune(x->ckpt_dir, o->keep_checkpoints, &x->lp->l, o->optimizer);
    const double took = tfps_now() - t0;
    x->checkpoints++;
    x->last_ckpt_step = step;
    if (pause > x->ckpt_pause_max) x->ckpt_pause_max = pause;
    if (took > x->ckpt_chief_max) x->ckpt_chief_max = took;
    tfps_info("checkpoint step %" PRIu64 " (%s): %d shards, %.2f MB in %s; ps paused serving %.2f ms at most, "
              "wrote in %.1f ms, the chief waited %.1f ms%s", step, why, m, mb, stepdir, pause * 1e3, write * 1e3,
              took * 1e3, pruned > 0 ? "; older ones pruned" : "");
    rc = TFPS_OK;
done:
    x->last_ckpt_t = tfps_now();
    free(resp);
    free(e);
    return rc;
}

/* The chief's periodic checkpoint, between its steps. */
static void maybe_checkpoint(tfps_cluster_ctx *x, uint64_t step) {
    const tfps_options *o = x->o;
    if (!x->c->is_chief) return;
    if (o->checkpoint_every_steps > 0 && step % (uint64_t)o->checkpoint_every_steps == 0)
        tfps_cluster_checkpoint(x, "--checkpoint-every-steps", o->rpc_timeout);
    else if (o->checkpoint_every_secs > 0 && tfps_now() - x->last_ckpt_t >= o->checkpoint_every_secs)
        tfps_cluster_checkpoint(x, "--checkpoint-every-secs", o->rpc_timeout);
}

/* The exchange of cluster mode: push this step's gradient and pull the
 * weights for a next step, every ps in parallel (psclient.h). */
static int cluster_exchange(void *ctx, const float *grads, float loss, int batch, uint64_t step, float *params,
                            tfps_loop_info *info, char *err, size_t errlen) {
    tfps_cluster_ctx *x = ctx;
    char why[TFPS_ERR_LEN];
    if (tfps_loop_stop_signal) return tfps_seterr(err, errlen, "not sent: stopped by signal %d", (int)tfps_loop_stop_signal);
    const double t_round = tfps_now();
    if (tfps_psclient_round(&x->pc, grads, loss, batch, step, params, x->o->rpc_timeout, why, sizeof(why)) ==
        TFPS_OK) {
        x->recoveries_in_row = 0;
        if (x->t_failed > 0 && grads) {
            tfps_info("training again: the first step after the failure applied %.2f s after the failed round "
                      "began, %.2f s after the failure was detected", tfps_now() - x->t_failed_round,
                      tfps_now() - x->t_failed);
            x->t_failed = 0;
        }
        note_round(x, info);
        info->dropped = (uint64_t)x->pc.last_dropped;
        info->nonfinite = x->pc.last_nonfinite > 0;
        info->nonfinite_ps = x->pc.last_nonfinite_ps;
        info->wait_s = x->pc.last_held_s;
        maybe_checkpoint(x, step);
        return TFPS_OK;
    }
    // a ps down or restarted: this step's gradient is lost; re-register and take the weights again
    if (!tfps_psclient_recoverable(&x->pc) || tfps_loop_stop_signal) return tfps_seterr(err, errlen, "%s", why);
    if (tfps_cluster_recover(x, why, err, errlen) != TFPS_OK) return TFPS_ERR;
    x->t_failed_round = t_round;
    return cluster_begin(x, params, info, err, errlen) == TFPS_OK ? TFPS_OK : TFPS_ERR;   // info: the new round's
}

static void cluster_progress(void *ctx, const tfps_loop_info *window, char *buf, size_t len) {
    const tfps_cluster_ctx *x = ctx;
    char nf[48] = "", ev[80] = "", sync[80] = "";   // each only when there is something to say
    if (window->nonfinite) snprintf(nf, sizeof(nf), ", non-finite %" PRIu64, window->nonfinite);
    if (window->evals)
        snprintf(ev, sizeof(ev), ", eval accuracy %.4f at step %" PRIu64, window->eval_accuracy, window->eval_step);
    if (x->o->consistency != TFPS_CONSISTENCY_ASYNC)   // how many of these steps were dropped as stale, how long held
        snprintf(sync, sizeof(sync), ", dropped %.1f%%, waited %.2fs",
                 window->steps ? 100.0 * (double)window->dropped / (double)window->steps : 0.0, window->wait_s);
    snprintf(buf, len, " (global step %" PRIu64 "%s%s%s)", window->version, sync, ev, nf);
}

int tfps_cluster_ctx_train(tfps_cluster_ctx *x) {
    const tfps_options *o = x->o;
    const tfps_cluster *c = x->c;
    tfps_loop *lp = x->lp;
    char err[TFPS_ERR_LEN];
    // a restarted rank resumes from its own pushes, a restored job from the checkpoint's global step
    long long first = 0;
    const char *from = NULL;
    if (x->pc.resume_clock > 0) {
        first = (long long)x->pc.resume_clock;
        from = "this rank's steps the ps already have (a restarted worker)";
    } else if (x->pc.restored_step > 0) {
        first = (long long)(o->consistency == TFPS_CONSISTENCY_SYNC ? x->pc.version[0]
                                                                     : x->pc.version[0] / (uint64_t)c->num_workers);
        from = o->consistency == TFPS_CONSISTENCY_SYNC ? "the restored global step"
                                                       : "the restored global step over the training replicas";
    }
    if (x->pc.restored_step && x->pc.restored_step == x->pc.version[0])
        x->last_ckpt_step = x->pc.restored_step;   // the ps hold that checkpoint's state: saved already
    int rc = tfps_loop_prepare(lp, x->rank, c->num_workers, first);
    if (rc != TFPS_EXIT_OK) return rc;
    if (from) tfps_info("resuming at step %lld of %lld: %s", lp->first_step, lp->total_steps, from);
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
    const tfps_loop_mode mode = {.ctx = x, .overlap = overlap, .cluster = 1, .begin = cluster_begin,
                                 .exchange = cluster_exchange, .progress = cluster_progress};
    rc = tfps_loop_run(lp, &mode);
    if (tfps_loop_stop_signal && c->is_chief) {   // SIGTERM: save what the ps have if it takes no more than a few seconds
        tfps_rpc_resume();   // calls fail at once after a signal: this one is asked for
        tfps_cluster_checkpoint(x, "signal", 5.0);
    }
    if (rc != TFPS_EXIT_OK) return rc;
    tfps_info("finished %lld steps, %lld examples in %.2fs (%.0f examples/s)", lp->steps, lp->examples, lp->train_s,
              lp->examples / lp->train_s);
    if (lp->totals.nonfinite)
        tfps_warn("%" PRIu64 " of %lld steps had their update refused as non-finite by a ps (weights unchanged)",
                  lp->totals.nonfinite, lp->steps);
    if (o->consistency != TFPS_CONSISTENCY_ASYNC)
        tfps_info("%s: %" PRIu64 " of %lld steps dropped as stale (%.1f%%), pulls held %.2fs in all",
                  tfps_consistency_name(o->consistency), lp->totals.dropped, lp->steps,
                  lp->steps ? 100.0 * (double)lp->totals.dropped / (double)lp->steps : 0.0, lp->totals.wait_s);
    if (c->is_chief) return TFPS_EXIT_OK;
    for (;;) {   // a ps that failed meanwhile: register again and say it again
        if (tfps_psclient_heartbeat(&x->pc, (uint64_t)(lp->first_step + lp->steps), (uint64_t)lp->examples, 1, NULL,
                                    o->rpc_timeout, err, sizeof(err)) == TFPS_OK)
            return TFPS_EXIT_OK;
        char why[TFPS_ERR_LEN];
        if (!tfps_psclient_recoverable(&x->pc) || tfps_loop_stop_signal ||
            tfps_cluster_recover(x, err, why, sizeof(why)) != TFPS_OK) {
            tfps_error("reporting done: %s", tfps_psclient_recoverable(&x->pc) && !tfps_loop_stop_signal ? why : err);
            return TFPS_EXIT_FAIL;
        }
    }
}
