/* loop.h -- the one training loop of tfps-worker, for local and cluster mode.
 *
 * A step gathers the next batch ahead (feeder), runs forward/backward on the
 * backend, then EXCHANGES the gradient for the weights of the next step. The
 * exchange is the mode's (tfps_loop_mode): local mode applies SGD to its own
 * weights (local.h); cluster mode pushes the gradient to every ps and pulls
 * the new weights (cluster.h). The rest is the loop's, once: setup, batches,
 * progress lines, and the fields every summary.json has.
 *
 *     tfps_loop_open(&lp, o)          layout, data and its checks, backend, params
 *     tfps_loop_prepare(&lp, k, N)    slice k of N: batcher, feeder, gradient buffer
 *     tfps_loop_run(&lp, &mode)       mode.begin, then each step: prefetch,
 *                                     backend step, mode.exchange, progress line
 *     tfps_loop_close(&lp)            safe after any of the above, even failed
 *
 * Overlap: a mode whose exchange may lag one step sets overlap. The exchange
 * of step t then runs on a thread of the loop's while step t+1 computes on
 * the weights from the exchange of step t-1 (staleness 1); the loop keeps two
 * gradient buffers and two weight buffers and swaps the weights when it has
 * waited for the exchange. gRPC core only makes progress on a thread that
 * polls, so overlapping a blocking round needs that thread. A mode that must
 * not lag (local mode; later sync training) leaves overlap 0: each exchange
 * then finishes before the next step, in place on the weights it used. */
#ifndef TFPS_LOOP_H
#define TFPS_LOOP_H

#include "backend.h"
#include "data.h"
#include "idx.h"
#include "layout.h"
#include "options.h"

#include <stdint.h>

/* What an exchange reports back. The loop zeroes it before each exchange and
 * folds it into window, the exchanges since the last progress line (the
 * mode's progress hook shows it), and into totals, the whole run (for
 * summary.json). To report something new (a gradient the ps dropped as
 * stale, seconds waited): add a field here and its rule to fold_info
 * (loop.c), set it in the mode's exchange, show it in the mode's progress
 * hook and in tfps_loop_summary. */
typedef struct {
    uint64_t version;   /* the model version the new weights are at (0: not known); fold keeps the newest known */
    uint64_t dropped;   /* steps whose gradient a ps dropped as stale (sync); fold sums */
    uint64_t steps;     /* exchanges folded in; fold sums */
    double wait_s;      /* seconds the ps held the pulls (sync, ssp); fold sums */
    uint64_t nonfinite; /* steps whose update was refused as non-finite (by a ps, or local mode); fold sums */
    int nonfinite_ps;   /* the first ps that refused it this exchange (-1: local mode); fold keeps the newest */
    /* cluster mode, from ps 0's reply; fold keeps the newest: */
    uint64_t cluster_examples; /* examples in every replica's pushes it applied (0: local mode) */
    uint32_t evals;            /* the evaluator's reports so far (0: none; then eval_* are unset) */
    uint64_t eval_step;        /* the global step of its latest evaluation */
    double eval_accuracy;
} tfps_loop_info;

/* A diverging run: when the updates of this many steps in a row were all
 * refused as non-finite (each would have made a weight or optimizer slot
 * inf/NaN), the loop stops: exit 1, saying the training diverged and to
 * lower --learning-rate. Fewer in a row: a warning per step (the first 10,
 * then every 100th), the count in the progress lines and summary.json, and
 * training goes on. */
#define TFPS_LOOP_DIVERGED_STEPS 100

/* A mode: what differs between local and cluster training. */
typedef struct {
    void *ctx;     /* the mode's state, passed to every hook */
    int overlap;   /* 1: exchange on the loop's thread, one step behind (see above) */
    int cluster;   /* 1: info.version is the global step (ps 0's version); 0: the steps done are */
    /* The first weights into params [total]: the loop's clock is already
     * running. info as for exchange. */
    int (*begin)(void *ctx, float *params, tfps_loop_info *info, char *err, size_t errlen);
    /* Trades the gradient grads [total] of step `step` (1-based: the steps
     * done including this one; mean loss `loss` over `batch` examples) for
     * the weights of a later step, written into params [total]. Without
     * overlap, params is the buffer the step computed on; with overlap, the
     * other one, and this runs on the loop's thread (never two at once).
     * TFPS_OK, or TFPS_ERR with err. */
    int (*exchange)(void *ctx, const float *grads, float loss, int batch, uint64_t step, float *params,
                    tfps_loop_info *info, char *err, size_t errlen);
    /* Optional: the mode's tail of the progress line (" (ps version 42)")
     * from the exchanges since the last line. */
    void (*progress)(void *ctx, const tfps_loop_info *window, char *buf, size_t len);
} tfps_loop_mode;

typedef struct {
    const tfps_options *o;
    double t0;                  /* tfps_now() when open began: wall_s counts from here */
    tfps_layout l;
    tfps_mnist data;
    tfps_backend *be;
    float *params;              /* [l.total] the weights the next step computes on (page-locked on the GPU) */
    /* tfps_loop_prepare */
    tfps_batcher batcher;
    tfps_feeder feed;
    long long total_steps;      /* --steps, or --epochs over this slice */
    long long first_step;       /* a resumed run starts here (its data position too) */
    float *grads[2];            /* [l.total]; grads[1] only with overlap */
    float *params2;             /* [l.total] with overlap: the exchange in flight writes here */
    /* tfps_loop_run */
    double t_train;             /* tfps_now() when run began, before mode.begin */
    double train_s;             /* seconds run took */
    long long steps, examples;  /* done by this process (from first_step) */
    float loss;                 /* mean loss of the last step */
    long long nonfinite_streak; /* steps in a row whose update was refused as non-finite */
    tfps_loop_info window, totals;
    double prog_t;              /* tfps_now() of the last progress line with cluster_examples (0: none yet) */
    uint64_t prog_cx;           /* its cluster_examples */
    uint64_t prog_step;         /* the global step of the last progress line (cluster mode) */
    /* Set by the caller before run (NULL: none): a line per progress line (metrics.h) */
    struct tfps_metrics *metrics;
} tfps_loop;

/* Zeroes *lp, then: layout from the flags, the data set (--data-folder) and
 * its checks, the backend (--device) sized to train at --batch-size and
 * evaluate (tfps_eval_max_batch), and the params buffer (not initialised).
 * Returns TFPS_EXIT_OK, or an exit code after logging why (2: the user's
 * data or flags). */
int tfps_loop_open(tfps_loop *lp, const tfps_options *o);

/* For training on slice `slice` of `num_slices` (data.h) from step
 * first_step (0, or where a restored or restarted run resumes): the batcher
 * at that step's batch, the feeder (gathers it) and total_steps. Returns as
 * open does. */
int tfps_loop_prepare(tfps_loop *lp, int slice, int num_slices, long long first_step);

/* Set by the daemon's SIGTERM/SIGINT handler to the signal: the loop stops
 * before its next step and run returns 128 + the signal (143 for SIGTERM). */
#include <signal.h>
extern volatile sig_atomic_t tfps_loop_stop_signal;

/* Trains steps first_step..total_steps with mode m; logs "step i/n epoch e
 * loss l examples/s r [(cluster R)] eta t[mode's tail]" every --log-every
 * (r: this process; R: every replica's, from the growth of the window's
 * cluster_examples), and a metrics line when lp->metrics is set. On return (either way) no exchange is in flight,
 * params holds the newest weights the exchanges gave, and steps, examples,
 * loss, train_s and totals are set. Returns TFPS_EXIT_OK, TFPS_EXIT_FAIL
 * after logging why, or 128 + signal when tfps_loop_stop_signal stopped it. */
int tfps_loop_run(tfps_loop *lp, const tfps_loop_mode *m);

/* Test-set accuracy and loss of params (ev zeroed first: no per-example
 * outputs); TFPS_OK, or TFPS_ERR after logging why. */
int tfps_loop_evaluate(tfps_loop *lp, tfps_eval *ev);

void tfps_loop_close(tfps_loop *lp);

/* The numbers every summary.json has, from the mode. steps and examples count the whole
 * run: this process's in local mode, every replica's (as the ps counted
 * them) in cluster mode. */
typedef struct {
    const char *mode;    /* "local", "cluster" */
    const char *model;   /* the exported model's path */
    double test_accuracy;
    double test_loss;    /* mean cross-entropy on the test set */
    double steps, examples;
    double train_s, wall_s;
} tfps_loop_result;

/* examples / train_s of r, 0 when train_s is 0. */
double tfps_loop_examples_per_s(const tfps_loop_result *r);

/* A new cJSON object with r and the loop's fields: dataset (name, source,
 * folder, train_examples, test_examples), mode, model, version,
 * test_accuracy, test_loss, final_loss (this process's last step's mean
 * loss), test_examples, train_examples, steps, epochs, examples,
 * examples_per_s, train_s, wall_s, parameters, backend. The mode adds its
 * own; tfps_write_summary (export.h) adds the options and writes it. NULL
 * when out of memory. */
struct cJSON;
struct cJSON *tfps_loop_summary(const tfps_loop *lp, const tfps_loop_result *r);

#endif
