/* main.c -- tfps-worker: computes gradients; with TF_CONFIG unset, trains
 * the whole model in one process (local mode, local.h). With TF_CONFIG set,
 * picks the task's role (cluster.h): a training replica, which on the chief
 * then does the chief's duties (chief.h), or the evaluator (evaluator.h). */
#include "chief.h"
#include "cluster.h"
#include "daemon.h"
#include "evaluator.h"
#include "local.h"
#include "log.h"
#include "loop.h"
#include "rpc.h"

#include <stdio.h>

static int run_cluster(const tfps_options *o, const tfps_cluster *c) {
    tfps_loop lp;
    tfps_cluster_ctx x = {0};
    int rc = tfps_loop_open(&lp, o);
    if (rc == TFPS_EXIT_OK) rc = tfps_cluster_ctx_open(&x, &lp, o, c);
    if (rc == TFPS_EXIT_OK) {
        if (c->task_type == TFPS_JOB_EVALUATOR) {
            rc = tfps_evaluator_run(&x);
        } else {
            rc = tfps_cluster_ctx_train(&x);
            if (rc == TFPS_EXIT_OK && c->is_chief) rc = tfps_chief_finish(&x);
        }
    }
    tfps_cluster_ctx_close(&x);
    tfps_loop_close(&lp);
    return rc;
}

int main(int argc, char **argv) {
    tfps_options o;
    tfps_cluster c;
    int rc = tfps_daemon_setup(TFPS_DAEMON_WORKER, argc, argv, &o, &c);
    if (rc < 0) {
        if (c.local) {
            rc = tfps_local_train(&o);
        } else {
            tfps_rpc_init();
            rc = run_cluster(&o, &c);
            tfps_rpc_shutdown();
        }
    }
    tfps_cluster_destroy(&c);
    return rc;
}
