/* chief.c -- see chief.h. */
#include "chief.h"
#include "export.h"
#include "log.h"
#include "tfps.h"

#include <cJSON.h>
#include <inttypes.h>
#include <stdio.h>

int tfps_chief_finish(tfps_cluster_ctx *x) {
    const tfps_options *o = x->o;
    const tfps_cluster *c = x->c;
    tfps_loop *lp = x->lp;
    char err[TFPS_ERR_LEN], path[TFPS_PATH_LEN + 64];
    tfps_wire_heartbeat_resp hb = {0};
    double last_log = 0;
    for (;;) {
        if (tfps_psclient_heartbeat(&x->pc, (uint64_t)lp->steps, 0, 1, &hb, o->rpc_timeout, err, sizeof(err)) !=
            TFPS_OK) {
            tfps_error("waiting for the workers: %s", err);
            return TFPS_EXIT_FAIL;
        }
        if (hb.workers_done >= (uint32_t)c->num_workers) break;
        if (tfps_now() - last_log > 10.0) {
            tfps_info("waiting for the workers: %" PRIu32 " of %d done (%" PRIu32 " registered)", hb.workers_done,
                      c->num_workers, hb.workers_registered);
            last_log = tfps_now();
        }
        tfps_sleep(0.05);
    }
    const double train_s = tfps_now() - lp->t_train;
    tfps_wire_status_resp st;
    if (tfps_psclient_round(&x->pc, NULL, 0, 0, 0, lp->params, o->rpc_timeout, err, sizeof(err)) != TFPS_OK ||
        tfps_psclient_status(&x->pc, 0, &st, o->rpc_timeout, err, sizeof(err)) != TFPS_OK) {
        tfps_error("final pull: %s", err);
        return TFPS_EXIT_FAIL;
    }
    double acc = 0.0;
    if (tfps_loop_evaluate(lp, &acc) != TFPS_OK) return TFPS_EXIT_FAIL;
    if (tfps_export_model(o, &lp->l, lp->params, st.applied, path, sizeof(path)) != TFPS_OK) return TFPS_EXIT_FAIL;

    // steps: the pushes ps 0 applied, i.e. every replica's steps; examples as ps 0 counted them
    const tfps_loop_result sum = {.mode = "cluster", .model = path, .test_accuracy = acc, .steps = (double)st.applied,
                              .examples = (double)st.examples, .train_s = train_s, .wall_s = tfps_now() - lp->t0};
    cJSON *s = tfps_loop_summary(lp, &sum);
    int rc = TFPS_EXIT_FAIL;
    if (s) {
        cJSON_AddNumberToObject(s, "chief_steps", (double)lp->steps);
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
        cJSON_AddNumberToObject(s, "chief_wait_s", lp->totals.wait_s);
        rc = tfps_write_summary(o, s);
        cJSON_Delete(s);
    }
    if (tfps_psclient_shutdown(&x->pc, "training finished (chief)", o->rpc_timeout, err, sizeof(err)) != TFPS_OK)
        tfps_warn("shutdown: %s", err);   // the model and summary are written; a ps that is gone already is fine
    if (rc == TFPS_EXIT_OK)
        printf("tfps: %d ps, %d workers, steps %" PRIu64 ", examples/s %.0f, test accuracy %.4f, wall %.2fs\n",
               c->num_ps, c->num_workers, st.applied, tfps_loop_examples_per_s(&sum), acc, tfps_now() - lp->t0);
    return rc;
}
