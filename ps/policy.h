/* policy.h -- the consistency models of a ps: when a gradient is applied and
 * when a pull may be answered; the calls it holds until then.
 *
 *   async  each push is one optimizer update, on arrival (TF's default).
 *   sync   (TF SyncReplicasOptimizer) pushes computed on the current version
 *          v are kept per rank; when `required` of them are in, their mean
 *          (summed in RANK order, so arrival order changes no bit) is one
 *          optimizer update and v becomes v + 1. A push computed on an
 *          older version is dropped and counted (backup workers: the slowest
 *          are dropped). required = min(replicas_to_aggregate, live ranks): a
 *          rank that finished leaves the barrier, so runs whose replicas end
 *          at different steps still end.
 *   ssp    as async, and a rank whose clock (pushes so far) is c may read
 *          only when every live rank's clock is >= c - staleness.
 *
 * Numerical safety: an update that would make any weight or optimizer slot
 * non-finite is refused whole (store.h: checked before anything is
 * written) and counted (nonfinite). async/ssp: the push is answered
 * TFPS_PUSH_NONFINITE; the version stays (it counts updates made) and the
 * rank's clock advances (the worker did its step; its next pull's clock
 * counts it). sync: the step is skipped, not retried: its gradients are
 * discarded, the weights, slots and optimizer count stay, and the version
 * STILL becomes v + 1, so the pulls waiting for v + 1 are answered and
 * every ps keeps counting the same steps (a ps cannot take back a step the
 * others made; each ps refuses or applies its own shard's part, so with
 * several ps a step may be skipped on one shard and applied on another).
 * Every rank whose gradient was in a skipped step gets a notice
 * (take_nonfinite), for the reply to its push.
 *
 * Pulls carry a minimum version (sync: the next one) and, in ssp, the
 * reader's clock; one that may not be answered yet is HELD here (with the
 * caller's token for its call) and handed back by pop_ready once it may.
 * Ranks start live (expected) and stop being live when they report done. */
#ifndef TFPS_PS_POLICY_H
#define TFPS_PS_POLICY_H

#include "handlers.h"
#include "store.h"

#include <stddef.h>
#include <stdint.h>

typedef struct tfps_policy tfps_policy;

typedef struct {
    void *token;      /* the caller's handle of the held call */
    int rank;         /* -1: an observer (the evaluator) */
    tfps_pull pull;
    double t_held;    /* tfps_now() when it was held */
} tfps_held;

typedef struct {
    uint64_t version;     /* sync: steps applied; async/ssp: pushes applied */
    uint64_t dropped;     /* sync: stale pushes dropped */
    uint64_t aggregated;  /* sync: gradients averaged into steps */
    uint64_t max_lead;    /* ssp: largest reader clock - slowest live clock at an answered pull */
    uint64_t nonfinite;   /* updates refused: they would have made a weight or slot non-finite */
    int held;             /* calls held now */
    int live;             /* ranks still training */
} tfps_policy_stats;

enum { TFPS_PUSH_APPLIED = 0, TFPS_PUSH_ACCEPTED, TFPS_PUSH_STALE, TFPS_PUSH_NONFINITE };

/* consistency: tfps_consistency; replicas_to_aggregate 0 = num_workers.
 * NULL with a message on bad arguments or OOM. The store must outlive it. */
tfps_policy *tfps_policy_new(tfps_store *store, int consistency, int num_workers, int replicas_to_aggregate,
                             int staleness, char *err, size_t errlen);
void tfps_policy_free(tfps_policy *p);   /* NULL-safe; drops held calls without answering them */

/* A checked push of rank (0..num_workers-1). Returns TFPS_PUSH_APPLIED
 * (an update was made), TFPS_PUSH_ACCEPTED (sync: kept for the step),
 * TFPS_PUSH_STALE (dropped, nothing changed), TFPS_PUSH_NONFINITE (async,
 * ssp: refused as non-finite, see above), or -status (a gRPC status: a base
 * version ahead of the ps, a second push for one version) with msg. In
 * sync, TFPS_PUSH_APPLIED also when the step it completed was skipped as
 * non-finite (the version moved on; take_nonfinite says it). */
int tfps_policy_push(tfps_policy *p, int rank, const tfps_push *g, char *msg, size_t msglen);
/* sync: was a step rank's gradient went into skipped as non-finite since
 * the last call? 1 (and cleared) or 0. async/ssp: always 0. */
int tfps_policy_take_nonfinite(tfps_policy *p, int rank);
/* Rank r stopped (done) or (re)started training. */
void tfps_policy_set_live(tfps_policy *p, int rank, int live);
/* Rank r registered again (a restarted process): its gradient waiting for
 * the current sync step is dropped (it will push again); its clock stays
 * (the worker resumes from it: RegisterResponse.clock). Its held calls are
 * for the caller to answer (pop_rank). */
void tfps_policy_restart(tfps_policy *p, int rank);

/* sync with backup workers (replicas_to_aggregate < workers): a step that
 * has gradients in but fewer than required, while every live rank without a
 * gradient in has a pull held here for the end of this step since before
 * held_before (tfps_now() time), can never fill: a member of ps 0's step
 * that died (or restarted) after its push to ps 0 and before its push here
 * leaves the step short, and the ranks waiting are not its members. Such a
 * step is closed with the gradients it has (a late member's push is then
 * dropped as stale here). Returns the gradients of the step closed, or 0. */
int tfps_policy_close_stuck_step(tfps_policy *p, double held_before);

/* A ps restored from a checkpoint continues from its version. */
void tfps_policy_set_version(tfps_policy *p, uint64_t version);
/* A re-registering rank's clock (its pushes so far): taken when larger, so a
 * ps restored from a checkpoint (which lost the pushes since) paces ssp from
 * where the worker is. */
void tfps_policy_adopt_clock(tfps_policy *p, int rank, uint64_t clock);

/* Calls one rank may have held at once (the evaluator's: TFPS_POLICY_MAX_HELD
 * in all); more are refused. A worker holds at most one pull per ps. */
#define TFPS_POLICY_MAX_HELD 4

/* The pull's own checks (a version more than one step ahead, an ssp clock
 * ahead of the rank's pushes): 0, or -status with msg. No state changes (a
 * PushPull checks its pull before its push is applied). */
int tfps_policy_pull_check(const tfps_policy *p, int rank, const tfps_pull *q, char *msg, size_t msglen);
/* May rank (-1: observer) be answered q now? 1 yes, 0 hold it, or -status
 * with msg (a minimum version more than one step ahead, an ssp clock ahead
 * of the rank's pushes, too many calls held for the rank). */
int tfps_policy_pull_ready(tfps_policy *p, int rank, const tfps_pull *q, char *msg, size_t msglen);
/* Would q wait for rank's own push of this round (sync: its gradient for
 * the current step is not in; ssp: its clock counts a push the ps lacks)? */
int tfps_policy_waits_on_own_push(const tfps_policy *p, int rank, const tfps_pull *q);
/* Calls of rank held now. */
int tfps_policy_held_count(const tfps_policy *p, int rank);
/* tfps_now() when rank's newest held call was held; 0 if none. */
double tfps_policy_newest_held(const tfps_policy *p, int rank);
/* Holds the call. TFPS_ERR on OOM. */
int tfps_policy_hold(tfps_policy *p, void *token, int rank, const tfps_pull *q);
/* Takes out one held call that may be answered now: 1 with *out, else 0. */
int tfps_policy_pop_ready(tfps_policy *p, tfps_held *out);
/* Takes out any held call of rank (any rank when rank < -1): 1 with *out, else 0. */
int tfps_policy_pop_rank(tfps_policy *p, int rank, tfps_held *out);
/* The held call held longest (NULL if none), for logs. */
const tfps_held *tfps_policy_oldest(const tfps_policy *p);
/* What a held pull waits for, one line ("version 5 (1 of 2 gradients in)"). */
void tfps_policy_describe_wait(const tfps_policy *p, const tfps_held *h, char *buf, size_t n);

uint64_t tfps_policy_version(const tfps_policy *p);
uint64_t tfps_policy_clock(const tfps_policy *p, int rank);
void tfps_policy_get_stats(const tfps_policy *p, tfps_policy_stats *s);

#endif
