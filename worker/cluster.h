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
    tfps_wire_register_req reg;   /* this task's Register (again after a ps failure) */
    int recoveries, recoveries_in_row;
    double t_failed;        /* tfps_now() when the failure being recovered from was detected; 0: none */
    double t_failed_round;  /* when the round that failed began */
    /* the chief's checkpoints */
    char ckpt_dir[TFPS_PATH_LEN + 32];
    double last_ckpt_t;     /* tfps_now() of the last checkpoint (or of the start) */
    int checkpoints;
    uint64_t last_ckpt_step;
    double ckpt_pause_max;  /* the longest a ps stopped serving for one */
    double ckpt_chief_max;  /* the longest the chief waited for one (its training paused) */
} tfps_cluster_ctx;

/* Recoveries without a good round in between before a task gives up. */
#define TFPS_CLUSTER_MAX_RECOVERIES 3

/* Zeroes *x, then builds the shard plan for lp's layout, connects to every
 * ps and registers (waiting up to --startup-timeout for them). lp must be
 * open (tfps_loop_open) and outlive x. Returns TFPS_EXIT_OK, or an exit code
 * after logging why (2: a refusal, i.e. the flags differ from the ps's). */
int tfps_cluster_ctx_open(tfps_cluster_ctx *x, tfps_loop *lp, const tfps_options *o, const tfps_cluster *c);
/* After an operation of x->pc failed recoverably (tfps_psclient_recoverable:
 * a ps down or restarted): logs it and re-registers with every ps, waiting
 * up to --ps-recovery-timeout. TFPS_ERR with err naming the ps when it did
 * not come back (or after TFPS_CLUSTER_MAX_RECOVERIES in a row). */
int tfps_cluster_recover(tfps_cluster_ctx *x, const char *why, char *err, size_t errlen);

/* The chief: asks every ps to checkpoint the global step (ps 0's version of
 * the last pull; in sync each ps at that step boundary), then writes the
 * MANIFEST and prunes to --keep-checkpoints. Logs the outcome; TFPS_ERR is
 * not fatal to training. A step already checkpointed is skipped. */
int tfps_cluster_checkpoint(tfps_cluster_ctx *x, const char *why, double timeout_s);

/* Safe after any open, failed or not. */
void tfps_cluster_ctx_close(tfps_cluster_ctx *x);

/* A training replica's run: its slice through the loop with the cluster
 * exchange, then (except on the chief, whose duties follow) tells the ps it
 * is done. Returns an exit code, after logging why when not TFPS_EXIT_OK. */
int tfps_cluster_ctx_train(tfps_cluster_ctx *x);

#endif
