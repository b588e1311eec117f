/* evaluator.h -- the evaluator task (cluster mode, TF_CONFIG task.type
 * "evaluator"): it never trains. Every --eval-every seconds it pulls the ps's
 * weights, evaluates them on the test set and logs the accuracy, until the
 * ps are gone (the chief shut them down): training is then over. */
#ifndef TFPS_EVALUATOR_H
#define TFPS_EVALUATOR_H

#include "cluster.h"

/* x: registered (tfps_cluster_ctx_open). Returns the exit code: 0 once the
 * ps are unreachable, 1 when an evaluation fails (logged). */
int tfps_evaluator_run(tfps_cluster_ctx *x);

#endif
