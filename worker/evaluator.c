/* evaluator.c -- see evaluator.h. */
#include "evaluator.h"
#include "log.h"
#include "tfps.h"

#include <inttypes.h>

int tfps_evaluator_run(tfps_cluster_ctx *x) {
    tfps_loop *lp = x->lp;
    char err[TFPS_ERR_LEN];
    double best = 0.0;
    int evals = 0;
    for (;;) {
        if (tfps_loop_stop_signal) {
            tfps_info("signal %d: %d evaluations, best test accuracy %.4f", (int)tfps_loop_stop_signal, evals, best);
            return 128 + (int)tfps_loop_stop_signal;
        }
        int rc = tfps_psclient_round(&x->pc, NULL, 0, 0, 0, lp->params, 5.0, err, sizeof(err));
        if (rc != TFPS_OK && x->pc.failed_status == TFPS_RPC_UNAUTHENTICATED) {
            // a restarted ps knows no session: register again (briefly: a ps that is gone stays gone)
            int refused = 0;
            char why[TFPS_ERR_LEN];
            if (tfps_psclient_register(&x->pc, &x->reg, 10.0, "the evaluator's re-registration", &refused, why,
                                       sizeof(why)) == TFPS_OK) {
                tfps_info("registered again with every ps (a ps restarted: %s)", err);
                continue;
            }
            snprintf(err, sizeof(err), "%s", why);
        }
        if (rc != TFPS_OK) {
            tfps_info("ps unreachable (%s): training is over; %d evaluations, best test accuracy %.4f", err, evals,
                      best);
            return TFPS_EXIT_OK;
        }
        tfps_eval ev;
        if (tfps_loop_evaluate(lp, &ev) != TFPS_OK) return TFPS_EXIT_FAIL;
        const double acc = ev.accuracy;
        evals++;
        if (acc > best) best = acc;
        tfps_info("evaluation %d: ps version %" PRIu64 ", test accuracy %.4f", evals, x->pc.version_sum, acc);
        tfps_sleep(x->o->eval_every);
    }
}
