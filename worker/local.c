/* local.c -- see local.h. */
#include "local.h"
#include "export.h"
#include "log.h"
#include "loop.h"
#include "tfps.h"

#include <cJSON.h>
#include <stdio.h>
#include <stdlib.h>

typedef struct {
    const tfps_layout *l;
    uint64_t seed;
    tfps_optim opt;
    float *slot[TFPS_OPTIM_MAX_SLOTS];   /* the optimizer's state [total] each, as a ps keeps it for its ranges */
    uint64_t updates;
} local_mode;

/* The first weights: the seeded init every ps computes for its ranges too. */
static int local_begin(void *ctx, float *params, tfps_loop_info *info, char *err, size_t errlen) {
    const local_mode *lm = ctx;
    (void)info;
    (void)err;
    (void)errlen;
    tfps_layout_init_range(lm->l, lm->seed, 0, lm->l->total, params);
    tfps_optim_init_slots(&lm->opt, lm->slot, lm->l->total);
    return TFPS_OK;
}

/* The exchange of local mode: the update, in place on the weights the step used. */
static int local_exchange(void *ctx, const float *grads, float loss, int batch, uint64_t step, float *params,
                          tfps_loop_info *info, char *err, size_t errlen) {
    local_mode *lm = ctx;
    (void)loss;
    (void)batch;
    (void)step;
    (void)info;
    (void)err;
    (void)errlen;
    // the same update function, in the same float32 order, as a ps's: 1 ps + 1 worker equals this bit for bit
    tfps_optim_apply(&lm->opt, ++lm->updates, params, lm->slot, grads, lm->l->total);
    return TFPS_OK;
}

int tfps_local_train(const tfps_options *o) {
    tfps_loop lp;
    local_mode lm = {.seed = (uint64_t)o->seed};   // before any goto done: done frees its slots
    int rc = tfps_loop_open(&lp, o);
    if (rc == TFPS_EXIT_OK) rc = tfps_loop_prepare(&lp, 0, 1);
    if (rc != TFPS_EXIT_OK) goto done;
    const tfps_layout *l = &lp.l;
    tfps_info("local mode: %d train / %d test examples from %s; model %d-%d-%d-%d (%zu parameters); %lld steps of "
              "batch %d on %s",
              lp.data.train.n, lp.data.test.n, o->data_folder, l->in, l->h1, l->h2, l->out, l->total, lp.total_steps,
              o->batch_size, lp.be->name);
    lm.l = l;
    tfps_options_optim(o, &lm.opt);
    char opt_desc[160];
    tfps_optim_describe(&lm.opt, opt_desc, sizeof(opt_desc));
    tfps_info("optimizer: %s", opt_desc);
    for (int k = 0; k < tfps_optim_slots(&lm.opt); k++)
        if (!(lm.slot[k] = malloc(l->total * sizeof(float)))) {
            tfps_error("out of memory for the %s state of %zu parameters", tfps_optim_name(lm.opt.kind), l->total);
            rc = TFPS_EXIT_FAIL;
            goto done;
        }
    const tfps_loop_mode mode = {.ctx = &lm, .overlap = 0, .begin = local_begin, .exchange = local_exchange};
    rc = tfps_loop_run(&lp, &mode);
    if (rc != TFPS_EXIT_OK) goto done;
    rc = TFPS_EXIT_FAIL;
    double acc = 0.0;
    if (tfps_loop_evaluate(&lp, &acc) != TFPS_OK) goto done;
    const double wall_s = tfps_now() - lp.t0;
    char mpath[TFPS_PATH_LEN + 64];
    if (tfps_export_model(o, l, lp.params, (uint64_t)lp.steps, mpath, sizeof(mpath)) != TFPS_OK) goto done;
    const tfps_loop_result sum = {.mode = "local", .model = mpath, .test_accuracy = acc, .steps = (double)lp.steps,
                              .examples = (double)lp.examples, .train_s = lp.train_s, .wall_s = wall_s};
    cJSON *s = tfps_loop_summary(&lp, &sum);
    if (!s) goto done;
    cJSON_AddNumberToObject(s, "final_loss", lp.loss);
    cJSON_AddStringToObject(s, "consistency", "local");
    cJSON_AddStringToObject(s, "optimizer", opt_desc);
    rc = tfps_write_summary(o, s);
    cJSON_Delete(s);
    if (rc == TFPS_EXIT_OK)
        printf("tfps: steps %lld, examples/s %.0f, test accuracy %.4f, wall %.2fs\n", lp.steps,
               tfps_loop_examples_per_s(&sum), acc, wall_s);
done:
    for (int k = 0; k < TFPS_OPTIM_MAX_SLOTS; k++) free(lm.slot[k]);
    tfps_loop_close(&lp);
    return rc;
}
