/* evaluator.c -- see evaluator.h. */
#define _POSIX_C_SOURCE 200809L
#include "evaluator.h"
#include "ckpt.h"
#include "log.h"
#include "metrics.h"
#include "model.h"
#include "tfps.h"

#include <cJSON.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#define EVAL_POLL_S 0.25      /* heartbeats between evaluations: how soon the end of training is seen */
#define EVAL_CALL_S 5.0       /* a ps that does not answer a heartbeat or pull in this long is gone */
#define EVAL_WAIT_LOG_S 5.0

typedef struct {
    int valid;
    uint64_t step;
    double accuracy, loss;
    char source[160];
} eval_rec;

typedef struct {
    tfps_cluster_ctx *x;
    char task[64];
    int evals;
    eval_rec latest, best, final;
    double t_start;           /* wall clock (time()) at the start: a model file older than this is not ours */
} evaluator;

static cJSON *rec_json(const eval_rec *r) {
    if (!r->valid) return cJSON_CreateNull();
    cJSON *j = cJSON_CreateObject();
    if (!j) return NULL;
    cJSON_AddNumberToObject(j, "step", (double)r->step);
    cJSON_AddNumberToObject(j, "accuracy", r->accuracy);
    cJSON_AddNumberToObject(j, "loss", r->loss);
    if (r->source[0]) cJSON_AddStringToObject(j, "source", r->source);
    return j;
}

/* <output-dir>/eval.json, atomically; a failure is a warning (the log and
 * the metrics file have the numbers). */
static void write_eval_json(const evaluator *e) {
    const tfps_options *o = e->x->o;
    char err[TFPS_ERR_LEN], path[TFPS_PATH_LEN + 32];
    cJSON *j = cJSON_CreateObject();
    if (!j) return;
    cJSON_AddStringToObject(j, "task", e->task);
    cJSON_AddNumberToObject(j, "evaluations", e->evals);
    cJSON_AddItemToObject(j, "latest", rec_json(&e->latest));
    cJSON_AddItemToObject(j, "best", rec_json(&e->best));
    cJSON_AddItemToObject(j, "final", rec_json(&e->final));
    char *text = cJSON_Print(j);
    cJSON_Delete(j);
    if (!text) return;
    snprintf(path, sizeof(path), "%s/eval.json", o->output_dir);
    size_t len = strlen(text);
    text[len] = '\n';   // replaces the terminator; the length below excludes it
    if (tfps_write_file_atomic(path, text, len + 1, err, sizeof(err)) != TFPS_OK) tfps_warn("eval.json: %s", err);
    free(text);
}

/* Evaluates the loop's params (the weights of global step `step`), records
 * the result as kind "eval" or "final", and hands it to the ps in the next
 * heartbeats. */
static int evaluate(evaluator *e, uint64_t step, const char *kind, const char *source) {
    tfps_loop *lp = e->x->lp;
    tfps_eval ev;
    if (tfps_loop_evaluate(lp, &ev) != TFPS_OK) return TFPS_ERR;
    e->evals++;
    eval_rec r = {.valid = 1, .step = step, .accuracy = ev.accuracy, .loss = ev.loss};
    snprintf(r.source, sizeof(r.source), "%s", source);
    e->latest = r;
    if (!e->best.valid || r.accuracy > e->best.accuracy) e->best = r;
    const int final = strcmp(kind, "final") == 0;
    if (final) e->final = r;
    tfps_info("%s %d at global step %" PRIu64 ": test accuracy %.4f, loss %.4f (weights: %s)",
              final ? "final evaluation" : "evaluation", e->evals, step, ev.accuracy, ev.loss, source);
    tfps_metrics_eval(lp->metrics, kind, step, ev.accuracy, ev.loss, source);
    if (ev.loss >= 0.0 && ev.loss < INFINITY)   // the ps take finite reports only
        e->x->pc.eval_report = (tfps_wire_eval){.count = (uint32_t)e->evals, .step = step, .accuracy = ev.accuracy,
                                                .loss = ev.loss};
    else
        tfps_warn("evaluation %d: the test loss is not finite (weights so large the logits overflow: the run is "
                  "diverging); not reported to the ps", e->evals);
    write_eval_json(e);
    return TFPS_OK;
}

/* The chief's final model of this run, when it is there: evaluated as the
 * final evaluation. 1: done (*failed set when the evaluation failed); 0:
 * not there (yet). */
static int try_model(evaluator *e, int *failed) {
    const tfps_options *o = e->x->o;
    tfps_loop *lp = e->x->lp;
    char err[TFPS_ERR_LEN], path[TFPS_PATH_LEN + 64], src[TFPS_PATH_LEN + 96];
    snprintf(path, sizeof(path), "%s/model/%s", o->output_dir, TFPS_MODEL_FILE);
    struct stat sb;
    if (stat(path, &sb) != 0 || (double)sb.st_mtime < e->t_start - 1) return 0;   // none, or an older run's
    tfps_layout l;
    float *params = NULL;
    uint64_t step = 0;
    if (tfps_model_read(path, &l, &params, &step, err, sizeof(err)) != TFPS_OK) {
        tfps_debug("%s: %s (being written? trying again)", path, err);
        return 0;
    }
    if (tfps_layout_digest(&l) != tfps_layout_digest(&lp->l)) {
        free(params);
        tfps_debug("%s: its model %d-%d-%d-%d is not this job's", path, l.in, l.h1, l.h2, l.out);
        return 0;
    }
    memcpy(lp->params, params, lp->l.total * sizeof(float));
    free(params);
    snprintf(src, sizeof(src), "model %s", path);
    *failed = evaluate(e, step, "final", src) != TFPS_OK;
    return 1;
}

/* The ps are gone for good and no final model came: the newest complete
 * checkpoint, evaluated as kind "checkpoint" (not final: the run may have
 * failed before its end). TFPS_ERR when there was none or it failed
 * (*failed). */
static int last_checkpoint(evaluator *e, int *failed) {
    const tfps_options *o = e->x->o;
    tfps_loop *lp = e->x->lp;
    char err[TFPS_ERR_LEN], ckpt[TFPS_PATH_LEN + 32], src[TFPS_PATH_LEN + 96];
    if (tfps_options_checkpoint_dir(o, ckpt, sizeof(ckpt)) == TFPS_OK) {
        const tfps_ckpt_range all = {0, lp->l.total, 0};
        tfps_ckpt_info info;
        int r = tfps_ckpt_restore(ckpt, &lp->l, NULL, -1, 0, &all, 1, lp->params, NULL, &info, err, sizeof(err));
        if (r == TFPS_OK) {
            tfps_warn("no final model from this run in %s/model: evaluating the newest checkpoint (not a final "
                      "evaluation)", o->output_dir);
            snprintf(src, sizeof(src), "checkpoint %s", info.path);
            *failed = evaluate(e, info.step, "checkpoint", src) != TFPS_OK;
            return *failed ? TFPS_ERR : TFPS_OK;
        }
        if (r == TFPS_ERR) tfps_warn("checkpoints in %s: %s", ckpt, err);
    }
    tfps_warn("no final evaluation: the ps are gone, and neither a final model (%s/model) nor a checkpoint (%s) is "
              "here (on another host? give the evaluator the chief's --output-dir on a shared volume)", o->output_dir,
              ckpt);
    return TFPS_ERR;
}

static int finish(evaluator *e, int rc) {
    write_eval_json(e);
    if (e->final.valid)
        tfps_info("done: %d evaluations; final test accuracy %.4f at global step %" PRIu64 ", best %.4f at %" PRIu64,
                  e->evals, e->final.accuracy, e->final.step, e->best.accuracy, e->best.step);
    else if (e->best.valid)
        tfps_info("done: %d evaluations, best test accuracy %.4f at global step %" PRIu64 "; no final one", e->evals,
                  e->best.accuracy, e->best.step);
    return rc;
}

/* After a failed call: a restarted ps knows no session (register again,
 * briefly: TFPS_OK to go on); anything else TFPS_ERR. */
static int reconnect(tfps_cluster_ctx *x, const char *err) {
    if (x->pc.failed_status != TFPS_RPC_UNAUTHENTICATED) return TFPS_ERR;
    int refused = 0;
    char why[TFPS_ERR_LEN];
    if (tfps_psclient_register(&x->pc, &x->reg, 10.0, "the evaluator's re-registration", &refused, why,
                               sizeof(why)) != TFPS_OK)
        return TFPS_ERR;
    tfps_info("registered again with every ps (a ps restarted: %s)", err);
    return TFPS_OK;
}

int tfps_evaluator_run(tfps_cluster_ctx *x) {
    const tfps_options *o = x->o;
    const int n = x->c->num_workers;
    evaluator e = {.x = x, .t_start = (double)time(NULL)};
    snprintf(e.task, sizeof(e.task), "%s-%d", tfps_job_name(x->c->task_type), x->c->task_index);
    char err[TFPS_ERR_LEN];
    uint64_t last_step = UINT64_MAX;
    double next_eval = 0.0, down_since = 0.0, last_log = 0.0;
    int failed = 0, stopping = 0;   // stopping: the ps last said they were shutting down (the chief's Shutdown)
    for (;;) {
        if (tfps_loop_stop_signal) {
            tfps_info("signal %d: stopping", (int)tfps_loop_stop_signal);
            return finish(&e, 128 + (int)tfps_loop_stop_signal);
        }
        tfps_wire_heartbeat_resp hb;
        int rc = tfps_psclient_heartbeat(&x->pc, 0, 0, 0, &hb, EVAL_CALL_S, err, sizeof(err));
        int all_done = 0;
        if (rc == TFPS_OK) {
            stopping = hb.shutting_down;
            // the end, as the chief sees it: it is done, and every other replica done or dead (a replica that
            // only looks dead, cut off by a ps outage, comes back: without the chief done it is not the end)
            all_done = hb.chief_done && hb.workers_done + hb.workers_dead >= (uint32_t)n;
            if (all_done || tfps_now() >= next_eval)
                rc = tfps_psclient_round(&x->pc, NULL, 0, 0, 0, x->lp->params, EVAL_CALL_S, err, sizeof(err));
        }
        if (rc != TFPS_OK) {
            if (reconnect(x, err) == TFPS_OK) continue;
            if (!tfps_psclient_recoverable(&x->pc)) {   // a refusal: say so, and go on evaluating when we can
                if (tfps_now() - last_log >= EVAL_WAIT_LOG_S) {
                    tfps_error("a ps refused the evaluator: %s", err);
                    last_log = tfps_now();
                }
                x->pc.eval_report.count = 0;   // in case the report was what it refused
                tfps_sleep(1.0);
                continue;
            }
            // a ps unreachable: the end of training (the chief's Shutdown), or a ps that is restarting. Either
            // way the chief's final model ends the wait; else up to --ps-recovery-timeout (--rpc-timeout once
            // the ps said they were shutting down), then the newest checkpoint
            const double limit = stopping ? o->rpc_timeout : o->ps_recovery_timeout;
            if (down_since == 0) {
                down_since = tfps_now();
                last_log = down_since;
                tfps_info("ps unreachable (%s): waiting up to %.0f s (%s) for them or for the chief's final model in "
                          "%s/model", err, limit, stopping ? "--rpc-timeout: they were shutting down"
                                                          : "--ps-recovery-timeout", o->output_dir);
            }
            if (try_model(&e, &failed)) return finish(&e, failed ? TFPS_EXIT_FAIL : TFPS_EXIT_OK);
            if (tfps_now() - down_since >= limit) {
                if (last_checkpoint(&e, &failed) != TFPS_OK && failed) return finish(&e, TFPS_EXIT_FAIL);
                return finish(&e, TFPS_EXIT_OK);
            }
            if (tfps_now() - last_log >= EVAL_WAIT_LOG_S) {
                tfps_info("still waiting for the ps or the final model (%.0f of %.0f s)", tfps_now() - down_since,
                          limit);
                last_log = tfps_now();
            }
            tfps_sleep(EVAL_POLL_S);
            continue;
        }
        if (down_since > 0) {
            tfps_info("the ps answer again after %.1f s", tfps_now() - down_since);
            down_since = 0;
        }
        if (!all_done && tfps_now() < next_eval) {
            tfps_sleep(EVAL_POLL_S);
            continue;
        }
        const uint64_t step = x->pc.version[0];
        next_eval = tfps_now() + o->eval_every;
        if (all_done) {
            char src[96];
            snprintf(src, sizeof(src), "ps, every training replica done (%" PRIu32 " done, %" PRIu32 " dead)",
                     hb.workers_done, hb.workers_dead);
            if (evaluate(&e, step, "final", src) != TFPS_OK) return finish(&e, TFPS_EXIT_FAIL);
            // the ps and the chief's progress see the final one too (best effort: they may be stopping)
            tfps_psclient_heartbeat(&x->pc, 0, 0, 0, NULL, 1.0, err, sizeof(err));
            return finish(&e, TFPS_EXIT_OK);
        }
        if (step == last_step) continue;   // nothing new since the last evaluation
        last_step = step;
        if (evaluate(&e, step, "eval", "ps") != TFPS_OK) return finish(&e, TFPS_EXIT_FAIL);
    }
}
