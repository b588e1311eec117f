/* evaluator.h -- the evaluator task (cluster mode, TF_CONFIG task.type
 * "evaluator"): it never trains, and names itself "the evaluator" in every
 * log (its own and the ps's).
 *
 * Every --eval-every seconds, when the global step moved, it pulls the ps's
 * weights and evaluates them on the test set (accuracy and mean loss), logs
 * the result, appends it to metrics-evaluator-<i>.jsonl and its TensorBoard
 * folder (metrics.h), reports it to every ps in its heartbeats (the chief's
 * progress lines show the latest; tfps-status too) and rewrites
 * <output-dir>/eval.json.
 *
 * The final evaluation: once the ps say every training replica is done (or
 * dead), the weights no longer change: it pulls them once more and
 * evaluates them ("final", source "ps"). When the ps are gone before that
 * (the chief shut them down first), it evaluates the chief's final model
 * instead, <output-dir>/model/model.tfps written during this run, waiting
 * up to --rpc-timeout for it (logging every few seconds), else the newest
 * complete checkpoint. The chief's final evaluation and this one see the
 * same weights, so they agree.
 *
 * eval.json: {"task", "evaluations", "latest", "best", "final"}, each of
 * the last three {"step", "accuracy", "loss"[, "source"]} or null. */
#ifndef TFPS_EVALUATOR_H
#define TFPS_EVALUATOR_H

#include "cluster.h"

/* x: registered (tfps_cluster_ctx_open). Returns the exit code: 0 after the
 * final evaluation (or, without one, after saying why), 1 when an
 * evaluation fails (logged), 128 + signal. */
int tfps_evaluator_run(tfps_cluster_ctx *x);

#endif
