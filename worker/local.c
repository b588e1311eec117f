/* local.c -- see local.h. */
#include "local.h"
#include "wire.h"
#include "metrics.h"
#include "ckpt.h"
#include "export.h"
#include "log.h"
#include "loop.h"
#include "tfps.h"

#include <cJSON.h>
#include <stdio.h>
#include <stdlib.h>

typedef struct {
    const tfps_options *o;
    const tfps_layout *l;
    uint64_t seed;
    tfps_optim opt;
    float *slot[TFPS_OPTIM_MAX_SLOTS];   /* the optimizer's state [total] each, as a ps keeps it for its ranges */
    uint64_t updates;
    int restored;                        /* params and slots came from a checkpoint */
    const float *params;                 /* the weights the loop trains (for checkpoints) */
    char ckpt_dir[TFPS_PATH_LEN + 32];
    uint64_t plan_digest;                /* of a one-ps plan: local mode writes what one ps would */
    double last_ckpt_t;
    uint64_t last_step;                  /* of the last checkpoint written */
    int checkpoints;
    double ckpt_max_s;
} local_mode;

/* The first weights: the seeded init every ps computes for its ranges too,
 * unless a checkpoint gave them. */
static int local_begin(void *ctx, float *params, tfps_loop_info *info, char *err, size_t errlen) {
    local_mode *lm = ctx;
    (void)info;
    (void)err;
    (void)errlen;
    lm->params = params;
    lm->last_ckpt_t = tfps_now();
    if (lm->restored) return TFPS_OK;
    tfps_layout_init_range(lm->l, lm->seed, 0, lm->l->total, params);
    tfps_optim_init_slots(&lm->opt, lm->slot, lm->l->total);
    return TFPS_OK;
}

/* A checkpoint of step `updates`: the shard a single ps owning everything
 * would write, and its MANIFEST; then prune. Logged; failures are not fatal. */
static void local_checkpoint(local_mode *lm, const char *why) {
    const uint64_t step = lm->updates;
    char err[TFPS_ERR_LEN], stepdir[1200];
    if (step == 0 || step == lm->last_step) return;   // written already (the final one after a periodic one)
    const double t0 = tfps_now();
    const tfps_ckpt_range all = {0, lm->l->total, 0};
    tfps_ckpt_shard sh = {.layout = lm->l, .num_ps = 1, .ps_index = 0, .strategy = TFPS_SHARD_BALANCED,
                          .plan_digest = lm->plan_digest, .step = step, .version = step, .updates = lm->updates,
                          .optim_kind = lm->opt.kind, .optim_digest = tfps_optim_digest(&lm->opt),
                          .nslots = tfps_optim_slots(&lm->opt), .nranges = 1, .ranges = &all, .w = lm->params};
    for (int k = 0; k < sh.nslots; k++) sh.slot[k] = lm->slot[k];
    tfps_ckpt_entry e = {0, 0, 0};
    if (tfps_ckpt_step_dir(lm->ckpt_dir, step, stepdir, sizeof(stepdir), err, sizeof(err)) != TFPS_OK ||
        tfps_ckpt_write_shard(stepdir, &sh, &e.bytes, &e.crc, err, sizeof(err)) != TFPS_OK ||
        tfps_ckpt_write_manifest(stepdir, step, lm->l, 1, &e, err, sizeof(err)) != TFPS_OK) {
        tfps_warn("checkpoint step %llu (%s) failed: %s", (unsigned long long)step, why, err);
    } else {
        tfps_ckpt_prune(lm->ckpt_dir, lm->o->keep_checkpoints, lm->l, lm->opt.kind);
        const double took = tfps_now() - t0;
        lm->checkpoints++;
        lm->last_step = step;
        if (took > lm->ckpt_max_s) lm->ckpt_max_s = took;
        tfps_info("checkpoint step %llu (%s): %.2f MB in %s, %.1f ms", (unsigned long long)step, why, e.bytes / 1e6,
                  stepdir, took * 1e3);
    }
    lm->last_ckpt_t = tfps_now();
}

/* The exchange of local mode: the update, in place on the weights the step used. */
static int local_exchange(void *ctx, const float *grads, float loss, int batch, uint64_t step, float *params,
                          tfps_loop_info *info, char *err, size_t errlen) {
    local_mode *lm = ctx;
    (void)loss;
    (void)batch;
    (void)err;
    (void)errlen;
    // the same update function, in the same float32 order, as a ps's: 1 ps + 1 worker equals this bit for bit;
    // and the same refusal of an update that would make the state non-finite (the loop logs and counts it)
    if (tfps_optim_apply_checked(&lm->opt, lm->updates + 1, params, lm->slot, grads, lm->l->total)) {
        lm->updates++;
    } else {
        info->nonfinite = 1;
        info->nonfinite_ps = -1;
    }
    const tfps_options *o = lm->o;
    if (o->checkpoint_every_steps > 0 && step % (uint64_t)o->checkpoint_every_steps == 0)
        local_checkpoint(lm, "--checkpoint-every-steps");
    else if (o->checkpoint_every_secs > 0 && tfps_now() - lm->last_ckpt_t >= o->checkpoint_every_secs)
        local_checkpoint(lm, "--checkpoint-every-secs");
    return TFPS_OK;
}

/* Fills params (and slots, when given) from the checkpoint at path: a step-N
 * folder or a checkpoint folder (its newest complete one). */
static int restore_all(const char *path, const tfps_layout *l, const tfps_optim *opt, float *params,
                       float *const slot[TFPS_OPTIM_MAX_SLOTS], tfps_ckpt_info *info, char *err, size_t errlen) {
    const tfps_ckpt_range all = {0, l->total, 0};
    return tfps_ckpt_restore(path, l, opt, -1, 0, &all, 1, params, slot, info, err, errlen);
}

int tfps_local_train(const tfps_options *o) {
    tfps_loop lp;
    local_mode lm = {.o = o, .seed = (uint64_t)o->seed};   // before any goto done: done frees its slots
    tfps_shard_plan plan = {0};
    char err[TFPS_ERR_LEN];
    int rc = tfps_loop_open(&lp, o);
    if (rc != TFPS_EXIT_OK) goto done;
    lp.metrics = tfps_metrics_open(o->output_dir, "local");
    const tfps_layout *l = &lp.l;
    lm.l = l;
    tfps_options_optim(o, &lm.opt);
    for (int k = 0; k < tfps_optim_slots(&lm.opt); k++)
        if (!(lm.slot[k] = malloc(l->total * sizeof(float)))) {
            tfps_error("out of memory for the %s state of %zu parameters", tfps_optim_name(lm.opt.kind), l->total);
            rc = TFPS_EXIT_FAIL;
            goto done;
        }
    if (tfps_options_checkpoint_dir(o, lm.ckpt_dir, sizeof(lm.ckpt_dir)) != TFPS_OK ||
        tfps_shard_plan_build(&plan, l, 1, TFPS_SHARD_BALANCED, err, sizeof(err)) != TFPS_OK) {
        tfps_error("checkpoints: %s", o->checkpoint_dir[0] ? "--checkpoint-dir is too long" : err);
        rc = TFPS_EXIT_USAGE;
        goto done;
    }
    lm.plan_digest = plan.digest;
    // resume from the newest complete checkpoint, as TF's MonitoredTrainingSession does
    tfps_ckpt_info info;
    int r = restore_all(lm.ckpt_dir, l, &lm.opt, lp.params, lm.slot, &info, err, sizeof(err));
    if (r == TFPS_ERR) {
        tfps_error("restore: %s", err);
        rc = TFPS_EXIT_FAIL;
        goto done;
    }
    lm.restored = r == TFPS_OK;
    if (lm.restored) {
        lm.updates = info.updates;
        lm.last_step = info.step;   // that state is saved already
    }
    rc = tfps_loop_prepare(&lp, 0, 1, lm.restored ? (long long)info.step : 0);
    if (rc != TFPS_EXIT_OK) goto done;
    if (lm.restored)
        tfps_info("resumed from %s: step %llu of %lld%s", info.path, (unsigned long long)info.step, lp.total_steps,
                  (long long)info.step >= lp.total_steps ? ": nothing left to train (a new --output-dir or "
                                                           "--checkpoint-dir starts over)" : "");
    tfps_info("local mode: %d train / %d test examples from %s; model %d-%d-%d-%d (%zu parameters); %lld steps of "
              "batch %d on %s",
              lp.data.train.n, lp.data.test.n, o->data_folder, l->in, l->h1, l->h2, l->out, l->total, lp.total_steps,
              o->batch_size, lp.be->name);
    char opt_desc[160];
    tfps_optim_describe(&lm.opt, opt_desc, sizeof(opt_desc));
    tfps_info("optimizer: %s", opt_desc);
    if (o->wire_dtype != TFPS_DTYPE_FP32)
        tfps_info("--wire-dtype %s: local mode sends nothing over a wire; training is fp32",
                  tfps_wire_dtype_name(o->wire_dtype));
    const tfps_loop_mode mode = {.ctx = &lm, .overlap = 0, .begin = local_begin, .exchange = local_exchange};
    rc = tfps_loop_run(&lp, &mode);
    if (lm.params) local_checkpoint(&lm, rc == TFPS_EXIT_OK ? "final" : "stopped");
    if (rc != TFPS_EXIT_OK) goto done;
    rc = TFPS_EXIT_FAIL;
    tfps_eval ev;
    if (tfps_loop_evaluate(&lp, &ev) != TFPS_OK) goto done;
    const double acc = ev.accuracy;
    tfps_metrics_eval(lp.metrics, "final", (uint64_t)(lp.first_step + lp.steps), acc, ev.loss, "local");
    const double wall_s = tfps_now() - lp.t0;
    char mpath[TFPS_PATH_LEN + 64];
    if (tfps_export_model(o, l, lp.params, (uint64_t)(lp.first_step + lp.steps), mpath, sizeof(mpath)) != TFPS_OK)
        goto done;
    const tfps_loop_result sum = {.mode = "local", .model = mpath, .test_accuracy = acc,
                                  .test_loss = ev.loss, .steps = (double)(lp.first_step + lp.steps),
                              .examples = (double)lp.examples, .train_s = lp.train_s, .wall_s = wall_s};
    cJSON *s = tfps_loop_summary(&lp, &sum);
    if (!s) goto done;
    cJSON_AddStringToObject(s, "consistency", "local");
    cJSON_AddStringToObject(s, "optimizer", opt_desc);
    cJSON_AddNumberToObject(s, "first_step", (double)lp.first_step);
    cJSON_AddNumberToObject(s, "nonfinite", (double)lp.totals.nonfinite);
    cJSON_AddNumberToObject(s, "checkpoints", lm.checkpoints);
    cJSON_AddNumberToObject(s, "checkpoint_pause_ms", lm.ckpt_max_s * 1e3);
    cJSON_AddStringToObject(s, "checkpoint_dir", lm.ckpt_dir);
    rc = tfps_write_summary(o, s);
    cJSON_Delete(s);
    if (rc == TFPS_EXIT_OK)
        printf("tfps: steps %lld, examples/s %.0f, test accuracy %.4f, wall %.2fs\n", lp.first_step + lp.steps,
               tfps_loop_examples_per_s(&sum), acc, wall_s);
done:
    for (int k = 0; k < TFPS_OPTIM_MAX_SLOTS; k++) free(lm.slot[k]);
    tfps_shard_plan_destroy(&plan);
    tfps_metrics_close(lp.metrics);
    tfps_loop_close(&lp);
    return rc;
}

int tfps_local_export_checkpoint(const tfps_options *o) {
    tfps_loop lp;
    char err[TFPS_ERR_LEN], mpath[TFPS_PATH_LEN + 64];
    int rc = tfps_loop_open(&lp, o);
    if (rc != TFPS_EXIT_OK) goto done;
    tfps_optim opt;
    tfps_options_optim(o, &opt);
    tfps_ckpt_info info;
    int r = restore_all(o->export_checkpoint, &lp.l, &opt, lp.params, NULL, &info, err, sizeof(err));
    if (r != TFPS_OK) {
        tfps_error("--export-checkpoint %s: %s", o->export_checkpoint,
                   r == TFPS_CKPT_NONE ? "no complete checkpoint there (see the lines above for the ones refused)" : err);
        rc = TFPS_EXIT_USAGE;
        goto done;
    }
    tfps_eval ev;
    rc = TFPS_EXIT_FAIL;
    if (tfps_loop_evaluate(&lp, &ev) != TFPS_OK ||
        tfps_export_model(o, &lp.l, lp.params, info.step, mpath, sizeof(mpath)) != TFPS_OK)
        goto done;
    printf("tfps: checkpoint %s (step %llu) -> %s, test accuracy %.4f\n", info.path, (unsigned long long)info.step,
           mpath, ev.accuracy);
    rc = TFPS_EXIT_OK;
done:
    tfps_loop_close(&lp);
    return rc;
}
