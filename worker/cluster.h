/* cluster.h -- cluster mode (TF_CONFIG set): the context a task shares with
 * the chief's and the evaluator's duties. Private to worker/.
 *
 * Training replicas (TF's chief/master + worker tasks) are ranked: the
 * chief/master task is rank 0 and worker i is rank i+1 when there is one,
 * else worker i is rank i. Rank r trains on slice r of the training set
 * (data.h) with the training loop (loop.h), whose exchange is one round with
 * every ps: push this step's gradient, pull the weights (psclient.h), one
 * step behind with --overlap. The chief also trains (as in TF's estimator PS
 * mode), then does its duties (chief.h); an evaluator task only evaluates
 * (evaluator.h).
 *
 * Floors: chief.c and evaluator.c use this context and loop.h; neither
 * cluster.c nor loop.c calls them (main.c picks the role). */
#ifndef TFPS_CLUSTER_CTX_H
#define TFPS_CLUSTER_CTX_H

#include "loop.h"
#include "options.h"
#include "psclient.h"
#include "shard.h"
#include "tfconfig.h"

typedef struct {
    const tfps_options *o;
    const tfps_cluster *c;
    int rank;               /* training replica rank (0: the chief); -1 for the evaluator */
    tfps_loop *lp;          /* layout, data, backend, params: opened by the caller */
    tfps_shard_plan plan;
    tfps_psclient pc;       /* registered with every ps */
    char opt_desc[160];     /* the optimizer, as tfps_optim_describe says it */
} tfps_cluster_ctx;

/* Zeroes *x, then builds the shard plan for lp's layout, connects to every
 * ps and registers (waiting up to --startup-timeout for them). lp must be
 * open (tfps_loop_open) and outlive x. Returns TFPS_EXIT_OK, or an exit code
 * after logging why (2: a refusal, i.e. the flags differ from the ps's). */
int tfps_cluster_ctx_open(tfps_cluster_ctx *x, tfps_loop *lp, const tfps_options *o, const tfps_cluster *c);
/* Safe after any open, failed or not. */
void tfps_cluster_ctx_close(tfps_cluster_ctx *x);

/* A training replica's run: its slice through the loop with the cluster
 * exchange, then (except on the chief, whose duties follow) tells the ps it
 * is done. Returns an exit code, after logging why when not TFPS_EXIT_OK. */
int tfps_cluster_ctx_train(tfps_cluster_ctx *x);

#endif
