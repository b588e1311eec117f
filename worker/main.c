/* main.c -- tfps-worker: computes gradients; with TF_CONFIG unset, trains
 * the whole model in one process (local mode, local.h). With TF_CONFIG set,
 * picks the task's role (cluster.h): a training replica, which on the chief
 * then does the chief's duties (chief.h), or the evaluator (evaluator.h).
 * --export-checkpoint turns a checkpoint into model files (local.h).
 *
 * SIGTERM/SIGINT stop training before the next step (the chief first
 * checkpoints if it can within a few seconds); the exit code is then 128 +
 * the signal, 143 for SIGTERM. */
#define _POSIX_C_SOURCE 200809L
#include "chief.h"
#include "cluster.h"
#include "daemon.h"
#include "evaluator.h"
#include "export.h"
#include "local.h"
#include "log.h"
#include "loop.h"
#include "metrics.h"
#include "rpc.h"

#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

static void on_signal(int sig) {
    static const char msg[] = "tfps-worker: signal received: stopping before the next step\n";
    tfps_loop_stop_signal = sig;
    tfps_rpc_interrupt();   // a call waiting on a ps (a held pull, a ps that is down) ends now
    ssize_t ignored = write(STDERR_FILENO, msg, sizeof(msg) - 1);   // the loop logs the rest
    (void)ignored;
}

static int run_cluster(const tfps_options *o, const tfps_cluster *c) {
    tfps_loop lp;
    tfps_cluster_ctx x = {0};
    char task[64];
    int rc = tfps_loop_open(&lp, o);
    snprintf(task, sizeof(task), "%s-%d", tfps_job_name(c->task_type), c->task_index);
    if (rc == TFPS_EXIT_OK) lp.metrics = tfps_metrics_open(o->output_dir, task);
    if (rc == TFPS_EXIT_OK) rc = tfps_cluster_ctx_open(&x, &lp, o, c);
    if (rc == TFPS_EXIT_OK) {
        if (c->task_type == TFPS_JOB_EVALUATOR) {
            rc = tfps_evaluator_run(&x);
        } else {
            rc = tfps_cluster_ctx_train(&x);
            if (rc == TFPS_EXIT_OK && c->is_chief) rc = tfps_chief_finish(&x);
            else if (rc != TFPS_EXIT_OK && !tfps_loop_stop_signal && c->is_chief)   // a signal: the ps wait for a new chief
                tfps_chief_stop_ps(&x, "the chief failed in training", 1);
        }
    }
    tfps_cluster_ctx_close(&x);
    tfps_metrics_close(lp.metrics);
    tfps_loop_close(&lp);
    return rc;
}

int main(int argc, char **argv) {
    tfps_options o;
    tfps_cluster c;
    int rc = tfps_daemon_setup(TFPS_DAEMON_WORKER, argc, argv, &o, &c);
    if (rc < 0) {
        struct sigaction sa;
        memset(&sa, 0, sizeof(sa));
        sa.sa_handler = on_signal;
        sigaction(SIGTERM, &sa, NULL);
        sigaction(SIGINT, &sa, NULL);
        // the chief and local mode write there: find out now, not after training
        // (the evaluator writes eval.json and only reads the checkpoints)
        const int writes = c.local || c.is_chief || o.export_checkpoint[0];
        const int evaluator = c.task_type == TFPS_JOB_EVALUATOR;
        if ((writes || evaluator) && tfps_check_output_dir(&o, writes) != TFPS_OK) {
            rc = TFPS_EXIT_USAGE;
        } else if (o.export_checkpoint[0]) {
            rc = tfps_local_export_checkpoint(&o);
        } else if (c.local) {
            rc = tfps_local_train(&o);
        } else {
            tfps_rpc_init();
            rc = run_cluster(&o, &c);
            tfps_rpc_shutdown();
        }
        if (tfps_loop_stop_signal) {   // whatever it was doing when the signal came, the exit says why
            rc = 128 + (int)tfps_loop_stop_signal;
            tfps_info("stopped by signal %d: exit %d", rc - 128, rc);
        }
    }
    tfps_cluster_destroy(&c);
    return rc;
}
