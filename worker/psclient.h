/* psclient.h -- a worker's view of all the ps: register, and one round of
 * push + pull to every ps in parallel.
 *
 * Each ps's ranges come from the shard plan; the pull requests are packed
 * once. One round = for every ps, a Push of its slices of the flat gradient
 * (when grads != NULL) followed by a Pull of its ranges (when params !=
 * NULL), all 2*M calls in flight together on one completion queue. The Push
 * is sent first on each channel, so the ps normally applies it before it
 * answers the Pull (async SGD does not require it).
 *
 * Versions: each push carries the version of ps k's weights it was computed
 * on (the version of the last pull from k). In sync mode the pull asks for
 * the next version (held on the ps until the step is aggregated); in ssp it
 * carries this worker's clock (its pushes so far). A push the ps dropped as
 * stale is counted in `dropped` (the step is not counted as applied). A
 * push answered `nonfinite` (the ps refused an update with this gradient:
 * it would have made a weight inf/NaN; sync: possibly the previous step's)
 * is counted in last_nonfinite; the round still succeeds.
 *
 * Backup workers over more than one ps (sync, 0 < replicas_to_aggregate <
 * num_workers, num_ps > 1): ps 0 decides each step's members for all. A
 * round that pushes first pushes to ps 0 alone (base s = its ps 0 version)
 * and reads PushResponse.applied.
 *   Dropped as stale: the gradient goes to no other ps (counted in
 *   `dropped`); it pulls ps 0 for its next version (answered at once: ps 0
 *   is past s) and the others with no minimum.
 *   Taken into ps 0's step s: while some other ps k is below version s it
 *   pulls it for its next version (held until ps k finished that step), then
 *   pushes to every other ps with base s and pulls every ps for version
 *   s + 1, in one batch.
 * So ps k's step s holds only gradients of ps 0's step-s members, and a
 * pull waits only for steps whose members all push to that ps: a ps never
 * waits for a gradient it will not get. (Each ps picking its own first R
 * can deadlock: a worker taken by one ps and dropped by another, two such
 * workers each waiting for a step that needs the other's next push. So can
 * pushing to ps k with the base of the worker's last pull from ps k: a
 * member whose view of ps k lags lands in an older step there, or is
 * dropped, while the others wait on ps k for it. test_ps_handlers' fuzz
 * found both; it keeps checking that it finds the first.) The price: ps k's part of a gradient may be computed on
 * weights some steps older than s (a worker that had to catch up), and a
 * ps k whose replicas finished first may close step s before a member's
 * push lands (dropped there, counted); backup workers are not bit-exact
 * anyway, and TF's per-variable accumulators mix steps likewise. */
#ifndef TFPS_PSCLIENT_H
#define TFPS_PSCLIENT_H

#include "layout.h"
#include "options.h"
#include "rpc.h"
#include "shard.h"
#include "wire.h"

typedef struct {
    tfps_rpc_client *rpc;
    const tfps_layout *layout;
    const tfps_shard_plan *plan;
    int num_ps;
    uint32_t worker_id;
    tfps_buf *pull_req, *push_req;   /* [num_ps] */
    tfps_buf *pp_req;                /* [num_ps] a PushPull's body */
    int pushpull;                    /* 1 (init's default): a push and a pull to one ps go as one PushPull */
    int wire_dtype;                  /* tfps_wire_dtype of a training round's gradients and weights (fp32 default);
                                      * a round without a gradient (first, final, evaluator pulls) pulls fp32 */
    int pull_dtype;                  /* the dtype pull_req is packed with */
    float *residual;                 /* [layout total] error feedback: what rounding left out of the last gradient */
    uint16_t *half;                  /* [layout total] the gradient as sent (bf16 / fp16) */
    tfps_buf *ctl_req;               /* [num_ps] register, heartbeat, shutdown: one body per ps (its session) */
    tfps_session *session;           /* [num_ps] from each ps's RegisterResponse: carried by every later call */
    tfps_session instance;           /* random, this client's: in every Register (the same process again) */
    tfps_rpc_req *reqs;              /* [2 * num_ps] */
    tfps_rpc_result *res;            /* [2 * num_ps] */
    uint64_t version_sum;            /* sum of the versions of the last pull */
    uint64_t *version;               /* [num_ps] version of the last pull from each ps */
    int consistency;                 /* tfps_consistency: set before register (default async) */
    int replicas_to_aggregate;       /* sync: set after init (0 = every worker) */
    int num_workers;                 /* training replicas: set after init */
    uint64_t clock;                  /* pushes sent */
    uint64_t resume_clock;           /* at registration: the pushes the ps had from this rank (a restarted worker) */
    uint64_t restored_step;          /* at registration: the checkpoint ps 0 restored (0: none) */
    int failed_ps, failed_status;    /* the first failed call of the last failed operation */
    /* the last round: */
    int last_dropped;                /* 1 if any ps dropped its push as stale */
    int last_nonfinite;              /* ps that refused an update with our gradient as non-finite (PushResponse) */
    int last_nonfinite_ps;           /* the first of them (-1: none) */
    double last_held_s;              /* the longest any ps held its pull */
    /* from ps 0's last pull: */
    uint64_t examples;               /* examples in the pushes it applied (every replica's) */
    tfps_wire_eval eval;             /* the evaluator's latest report to it (count 0: none) */
    tfps_wire_pull_view view;        /* a pull answer being read (large: kept here, not on the stack) */
    tfps_wire_seg *segs;             /* its pieces, where gRPC received them (view_answer) */
    int nsegs, segs_cap;
    /* the evaluator: its latest evaluation, sent in every heartbeat (count 0: none) */
    tfps_wire_eval eval_report;
} tfps_psclient;

int tfps_psclient_init(tfps_psclient *pc, char *const *targets, const tfps_layout *l, const tfps_shard_plan *plan,
                       char *err, size_t errlen);
void tfps_psclient_destroy(tfps_psclient *pc);

/* The Register request of a training task (or the evaluator: rank 0) with
 * options o: layout, plan, seed, learning rate, consistency, optimizer. The
 * request points into desc (the optimizer's description, >= 160 bytes). */
tfps_wire_register_req tfps_psclient_register_req(const tfps_options *o, const tfps_layout *l,
                                                  const tfps_shard_plan *plan, const char *task_type, int task_index,
                                                  int rank, int num_workers, char *desc, size_t desclen);

/* Registers with every ps (again after a failure: it carries the clock and
 * the sessions it holds, so each ps knows it is the same process), waiting
 * for those not up yet until timeout_s and logging every
 * TFPS_PSCLIENT_WAIT_LOG_S which ps it waits for (`what` names the timeout's
 * flag). A ps whose rank is still held by a live process (ALREADY_EXISTS:
 * the old process of a restarted task, until it has been silent for 3
 * heartbeat intervals) is asked again every half second, as is one that
 * answered any other error at once. A refusal (layout, plan, options differ, a wrong
 * job secret) comes back as TFPS_ERR with the ps's message; *refused is then
 * 1 (a user mistake). version[k] and session[k] get each ps's. */
#define TFPS_PSCLIENT_WAIT_LOG_S 5.0
int tfps_psclient_register(tfps_psclient *pc, const tfps_wire_register_req *req, double timeout_s, const char *what,
                           int *refused, char *err, size_t errlen);
/* After a failed operation: did it fail in a way a re-registration may mend
 * (the ps unreachable or restarted, a deadline passed)? failed_ps names it. */
int tfps_psclient_recoverable(const tfps_psclient *pc);
/* Asks every ps to checkpoint step `step` (at_version: each at the version
 * of this worker's last pull from it, sync's step boundary; else now);
 * out[k] gets ps k's answer. */
int tfps_psclient_checkpoint(tfps_psclient *pc, uint64_t step, int at_version, double timeout_s,
                             tfps_wire_checkpoint_resp *out, char *err, size_t errlen);
/* One round (see above). grads, params: flat [layout total] or NULL. */
int tfps_psclient_round(tfps_psclient *pc, const float *grads, float loss, int batch, uint64_t step, float *params,
                        double timeout_s, char *err, size_t errlen);
/* Heartbeat to every ps; *resp0 gets ps 0's answer (may be NULL). */
int tfps_psclient_heartbeat(tfps_psclient *pc, uint64_t step, uint64_t examples, int done,
                            tfps_wire_heartbeat_resp *resp0, double timeout_s, char *err, size_t errlen);
int tfps_psclient_status(tfps_psclient *pc, int ps, tfps_wire_status_resp *out, double timeout_s, char *err,
                         size_t errlen);
/* Shutdown to every ps; failed: the job failed (they exit 1). */
int tfps_psclient_shutdown(tfps_psclient *pc, const char *reason, int failed, double timeout_s, char *err,
                           size_t errlen);

#endif
