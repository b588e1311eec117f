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
 * The final evaluation: once the ps say the chief is done and every other
 * training replica done or dead (as the chief itself waits: a replica
 * cut off by a ps outage looks dead until it calls again, so without the
 * chief done it is not the end), the weights no longer change: it pulls them once more and
 * evaluates them ("final", source "ps"). When the ps are unreachable (the
 * chief shut them down first, or a ps is restarting) it keeps asking them,
 * and ends the wait as soon as the chief's final model of this run,
 * <output-dir>/model/model.tfps, is there: that is the final evaluation
 * (source "model ..."). Without one for --ps-recovery-timeout (--rpc-timeout
 * once the ps said they were shutting down) it evaluates the newest
 * complete checkpoint, as kind "checkpoint" (the run may have failed: not a
 * final evaluation), and exits 0 saying so. The chief's final evaluation
 * and this one see the same weights, so they agree. A refusal by a ps is
 * logged (every few seconds at most) and the evaluator goes on; a test
 * loss that is not finite (a diverging run) is logged and not reported.
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
