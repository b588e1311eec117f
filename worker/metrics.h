/* metrics.h -- a task's metrics history: JSON lines and TensorBoard events.
 *
 * Each task that trains or evaluates keeps, under <output-dir>/logs/:
 *
 *   metrics-<task>.jsonl         one JSON object per line, appended (a
 *                                restarted task continues its file)
 *   tensorboard/<task>/events.out.tfevents.*   TensorBoard scalars (common/tfevents.h)
 *
 * <task> is the TF_CONFIG task as the launcher names logs ("worker-0",
 * "chief-0", "evaluator-0"), or "local" in local mode.
 *
 * Lines (README, Outputs):
 *   training   {"time", "task", "step", "local_step", "epoch", "loss",
 *               "examples_per_s", "lr"[, "cluster_examples_per_s",
 *               "version", "dropped", "wait_s"][, "nonfinite"]}
 *   evaluation {"time", "task", "kind": "eval" | "final", "step",
 *               "accuracy", "loss"[, "source"]}
 * "step" is the global step everywhere: ps 0's version (the updates it
 * applied) in cluster mode, the steps done in local mode. TensorBoard tags:
 * loss, examples_per_sec, learning_rate (and cluster_examples_per_sec) for
 * training; eval/accuracy and eval/loss for evaluations.
 *
 * Metrics never stop training: a file that cannot be made or written gives
 * one warning and the rest of the run goes without it. */
#ifndef TFPS_METRICS_H
#define TFPS_METRICS_H

#include <stdint.h>

typedef struct tfps_metrics tfps_metrics;

/* NULL (after a warning) when neither file can be made; output_dir NULL or
 * empty: NULL, silently. */
tfps_metrics *tfps_metrics_open(const char *output_dir, const char *task);

typedef struct {
    uint64_t step;                 /* global step */
    long long local_step;          /* this process's steps (from its first) */
    int epoch;                     /* 1-based */
    double loss;                   /* mean over the steps since the last line */
    double examples_per_s;         /* this process's */
    double cluster_examples_per_s; /* every replica's (< 0: not known, local mode) */
    double lr;
    int cluster;                   /* 1: version, dropped, wait_s are meaningful */
    uint64_t version, dropped, nonfinite;
    double wait_s;
} tfps_metrics_train;

void tfps_metrics_train_line(tfps_metrics *m, const tfps_metrics_train *r);
/* kind "eval" (on a schedule) or "final"; source (NULL: none) says which
 * weights ("ps", "model", "checkpoint ..."). */
void tfps_metrics_eval(tfps_metrics *m, const char *kind, uint64_t step, double accuracy, double loss,
                       const char *source);
void tfps_metrics_close(tfps_metrics *m);   /* NULL-safe */

#endif
