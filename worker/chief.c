/* chief.c -- see chief.h. */
#include "chief.h"
#include "export.h"
#include "log.h"
#include "metrics.h"
#include "tfps.h"
#include "wire.h"

#include <cJSON.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#define CHIEF_WAIT_LOG_S 5.0

/* Until every training replica is done or dead (the ps mark a replica dead
 * after 3 x --heartbeat-secs without a call, or --startup-timeout without a
 * Register: the bound of this wait). */
static int wait_for_workers(tfps_cluster_ctx *x, tfps_wire_heartbeat_resp *hb) {
    const tfps_options *o = x->o;
    const int n = x->c->num_workers;
    const uint64_t steps = (uint64_t)(x->lp->first_step + x->lp->steps);
    char err[TFPS_ERR_LEN];
    double last_log = tfps_now();
    for (;;) {
        if (tfps_loop_stop_signal) return 128 + (int)tfps_loop_stop_signal;
        if (tfps_psclient_heartbeat(&x->pc, steps, 0, 1, hb, o->rpc_timeout, err, sizeof(err)) != TFPS_OK) {
            char why[TFPS_ERR_LEN];
            if (tfps_loop_stop_signal) continue;
            if (!tfps_psclient_recoverable(&x->pc) || tfps_cluster_recover(x, err, why, sizeof(why)) != TFPS_OK) {
                tfps_error("waiting for the workers: %s", tfps_psclient_recoverable(&x->pc) ? why : err);
                return TFPS_EXIT_FAIL;
            }
            continue;
        }
        x->recoveries_in_row = 0;
        if (hb->workers_done + hb->workers_dead >= (uint32_t)n) return TFPS_EXIT_OK;
        if (tfps_now() - last_log > CHIEF_WAIT_LOG_S) {
            tfps_info("waiting for the workers: %" PRIu32 " of %d done, %" PRIu32 " dead (a worker is dead after 3 x "
                      "--heartbeat-secs %g without a call)", hb->workers_done, n, hb->workers_dead, o->heartbeat_secs);
            last_log = tfps_now();
        }
        tfps_sleep(0.05);
    }
}

static int finish(tfps_cluster_ctx *x) {
    const tfps_options *o = x->o;
    const tfps_cluster *c = x->c;
    tfps_loop *lp = x->lp;
    char err[TFPS_ERR_LEN], path[TFPS_PATH_LEN + 64];
    tfps_wire_heartbeat_resp hb = {0};
    int rc = wait_for_workers(x, &hb);
    if (rc != TFPS_EXIT_OK) {
        if (tfps_loop_stop_signal) {   // what the ps have now, if quick (calls fail at once after a signal unless asked)
            tfps_rpc_resume();
            tfps_cluster_checkpoint(x, "signal", 5.0);
        }
        return rc;
    }
    if (hb.workers_dead > 0)
        tfps_warn("finishing without %" PRIu32 " dead worker%s: the model has the steps the ps applied",
                  hb.workers_dead, hb.workers_dead == 1 ? "" : "s");
    const double train_s = tfps_now() - lp->t_train;
    tfps_wire_status_resp st;
    for (int tries = 0;; tries++) {   // a ps that failed since: once more after registering again
        if (tfps_psclient_round(&x->pc, NULL, 0, 0, 0, lp->params, o->rpc_timeout, err, sizeof(err)) == TFPS_OK &&
            tfps_psclient_status(&x->pc, 0, &st, o->rpc_timeout, err, sizeof(err)) == TFPS_OK)
            break;
        char why[TFPS_ERR_LEN];
        if (tries > 0 || tfps_loop_stop_signal || !tfps_psclient_recoverable(&x->pc) ||
            tfps_cluster_recover(x, err, why, sizeof(why)) != TFPS_OK) {
            tfps_error("final pull: %s", err);
            return TFPS_EXIT_FAIL;
        }
    }
    // updates refused as non-finite: every ps's own (with several ps a step may be refused on one shard only);
    // the bytes every ps received and sent (all calls, --wire-dtype shows here)
    uint64_t nonfinite = st.nonfinite, bytes_in = st.bytes_in, bytes_out = st.bytes_out;
    for (int k = 1; k < c->num_ps; k++) {
        tfps_wire_status_resp sk;
        if (tfps_psclient_status(&x->pc, k, &sk, o->rpc_timeout, err, sizeof(err)) == TFPS_OK) {
            nonfinite += sk.nonfinite;
            bytes_in += sk.bytes_in;
            bytes_out += sk.bytes_out;
        } else {
            tfps_warn("Status of ps %d: %s (its counts are left out of summary.json)", k, err);
        }
    }
    if (nonfinite) tfps_warn("the ps refused %" PRIu64 " update%s as non-finite (weights unchanged)", nonfinite,
                             nonfinite == 1 ? "" : "s");
    tfps_cluster_checkpoint(x, "final", o->rpc_timeout);   // before anything else can fail
    tfps_eval ev;
    if (tfps_loop_evaluate(lp, &ev) != TFPS_OK) return TFPS_EXIT_FAIL;
    const double acc = ev.accuracy;
    tfps_info("final evaluation at global step %" PRIu64 ": test accuracy %.4f, loss %.4f", x->pc.version[0], acc,
              ev.loss);
    tfps_metrics_eval(lp->metrics, "final", x->pc.version[0], acc, ev.loss, "ps");
    // the model's step: the global step (ps 0's version), as everywhere (in sync it passes the updates applied
    // when a step was skipped as non-finite)
    if (tfps_export_model(o, &lp->l, lp->params, x->pc.version[0], path, sizeof(path)) != TFPS_OK)
        return TFPS_EXIT_FAIL;

    // steps: the pushes ps 0 applied, i.e. every replica's steps; examples as ps 0 counted them
    const tfps_loop_result sum = {.mode = "cluster", .model = path, .test_accuracy = acc, .test_loss = ev.loss,
                              .steps = (double)st.applied,
                              .examples = (double)st.examples, .train_s = train_s, .wall_s = tfps_now() - lp->t0};
    cJSON *s = tfps_loop_summary(lp, &sum);
    if (!s) return TFPS_EXIT_FAIL;
    cJSON_AddNumberToObject(s, "chief_steps", (double)lp->steps);
    cJSON_AddNumberToObject(s, "chief_first_step", (double)lp->first_step);
    cJSON_AddNumberToObject(s, "refused", (double)st.refused);
    cJSON_AddNumberToObject(s, "num_ps", c->num_ps);
    cJSON_AddNumberToObject(s, "num_workers", c->num_workers);
    // the training semantics and what they cost (ps 0's account; every ps sees the same steps)
    cJSON_AddStringToObject(s, "consistency", tfps_consistency_name(o->consistency));
    cJSON_AddStringToObject(s, "optimizer", x->opt_desc);
    cJSON_AddNumberToObject(s, "dropped", (double)st.dropped);
    cJSON_AddNumberToObject(s, "aggregated", (double)st.aggregated);
    cJSON_AddNumberToObject(s, "wait_s", st.wait_s);
    cJSON_AddNumberToObject(s, "max_lead", (double)st.max_lead);
    cJSON_AddNumberToObject(s, "chief_dropped", (double)lp->totals.dropped);
    cJSON_AddNumberToObject(s, "nonfinite", (double)nonfinite);   // summed over every ps
    cJSON_AddNumberToObject(s, "chief_nonfinite", (double)lp->totals.nonfinite);
    cJSON_AddNumberToObject(s, "chief_wait_s", lp->totals.wait_s);
    // the wire: what the ps received and sent in all (every task's calls: pushes, pulls, the evaluator's, control),
    // and that per update ps 0 applied (async: one worker's step; sync: every member's push and pull of a step)
    cJSON_AddStringToObject(s, "wire_dtype", tfps_wire_dtype_name(o->wire_dtype));
    cJSON_AddNumberToObject(s, "ps_bytes_in", (double)bytes_in);
    cJSON_AddNumberToObject(s, "ps_bytes_out", (double)bytes_out);
    cJSON_AddNumberToObject(s, "bytes_per_step", st.applied ? (double)(bytes_in + bytes_out) / (double)st.applied : 0);
    // faults and checkpoints
    cJSON_AddNumberToObject(s, "workers_done", hb.workers_done);
    cJSON_AddNumberToObject(s, "workers_dead", hb.workers_dead);
    cJSON_AddNumberToObject(s, "recoveries", x->recoveries);
    cJSON_AddNumberToObject(s, "restored_step", (double)st.restored_step);
    cJSON_AddNumberToObject(s, "checkpoints", x->checkpoints);
    cJSON_AddNumberToObject(s, "last_checkpoint_step", (double)x->last_ckpt_step);
    cJSON_AddNumberToObject(s, "checkpoint_ps_pause_ms", x->ckpt_pause_max * 1e3);
    cJSON_AddNumberToObject(s, "checkpoint_chief_pause_ms", x->ckpt_chief_max * 1e3);
    cJSON_AddStringToObject(s, "checkpoint_dir", x->ckpt_dir);
    rc = tfps_write_summary(o, s);
    cJSON_Delete(s);
    if (rc == TFPS_EXIT_OK)
        printf("tfps: %d ps, %d workers, steps %" PRIu64 ", examples/s %.0f, test accuracy %.4f, wall %.2fs\n",
               c->num_ps, c->num_workers, st.applied, tfps_loop_examples_per_s(&sum), acc, tfps_now() - lp->t0);
    return rc;
}

int tfps_chief_finish(tfps_cluster_ctx *x) {
    int rc = finish(x);
    if (tfps_loop_stop_signal) return rc;   // a signal: the ps stay for the chief that replaces this one
    if (rc == TFPS_EXIT_OK) tfps_chief_stop_ps(x, "training finished (chief)", 0);
    else tfps_chief_stop_ps(x, "the chief failed at the end", 1);
    return rc;
}

void tfps_chief_stop_ps(tfps_cluster_ctx *x, const char *reason, int failed) {
    char err[TFPS_ERR_LEN], last[TFPS_ERR_LEN], why[TFPS_WIRE_SHUTDOWN_REASON_MAX + 1];
    if (failed) {   // the chief's own error: the ps that stay say why the job failed (e.g. which ps was lost)
        tfps_log_last_error(last, sizeof(last));
        const int n = snprintf(why, sizeof(why), "%s: %s", reason, last[0] ? last : "see the chief's log");
        if (n >= (int)sizeof(why)) memcpy(why + sizeof(why) - 4, "...", 4);   // cut: say so
        reason = why;
    }
    // a ps that is gone already is fine; one that does not answer stops on its own (--idle-timeout)
    if (tfps_psclient_shutdown(&x->pc, reason, failed, failed ? 3.0 : 10.0, err, sizeof(err)) != TFPS_OK)
        tfps_warn("shutdown: %s; a ps that did not get it stops after --idle-timeout %g s", err, x->o->idle_timeout);
}
