/* ps.h -- the parameter server without the network: bytes in, bytes (or a
 * gRPC status and message) out, or the call HELD and answered later.
 *
 * The pieces (each its own file, lower ones first):
 *   store.c     the owned ranges, their weights and optimizer state
 *   handlers.c  decoding and validation of every request
 *   policy.c    async / sync / ssp: when gradients apply, when pulls may be
 *               answered, the held calls
 *   pool.c      the threads an update's loops are split over
 *   ps.c        this: membership (who registered, who is done), the method
 *               table, statistics, and answering held calls when they may be
 * main.c puts it behind the RPC server; test_ps_handlers drives it in
 * process (no ports), test_ps over gRPC.
 *
 * Every request is validated completely before any state changes; a refused
 * request changes nothing but the `refused` counter. */
#ifndef TFPS_PS_H
#define TFPS_PS_H

#include "layout.h"
#include "options.h"
#include "rpc.h"
#include "shard.h"

#include <stddef.h>
#include <stdint.h>

typedef struct tfps_ps tfps_ps;

typedef struct {
    uint64_t version, applied, refused, bytes_in, bytes_out, examples;
    uint64_t dropped, aggregated, max_lead;
    uint64_t nonfinite;          /* updates refused: they would have made a weight or slot non-finite */
    uint32_t workers_registered, workers_done, workers_dead, held;
    double wait_s, uptime_s;
    uint64_t checkpoints, last_checkpoint_step, restored_step;
    double checkpoint_pause_s;   /* the longest snapshot */
    uint64_t unauthenticated;    /* calls refused for a missing or wrong session or job secret */
} tfps_ps_stats;

/* How a held call is answered later: status TFPS_RPC_OK with resp (len
 * bytes, valid during the call only) or an error status with msg. token is
 * what tfps_ps_handle was given for that call. */
typedef void (*tfps_ps_reply_fn)(void *ctx, void *token, int status, const uint8_t *resp, size_t len,
                                 const char *msg);

/* num_workers: training replicas expected (TF_CONFIG's chief + master +
 * worker tasks). reply may be NULL when tokens are tfps_rpc_call pointers
 * (tfps_rpc_reply answers them). NULL with a message on bad arguments
 * (e.g. --replicas-to-aggregate above num_workers) or OOM. */
tfps_ps *tfps_ps_new(const tfps_layout *l, const tfps_shard_plan *plan, int ps_index, const tfps_options *o,
                     int num_workers, tfps_ps_reply_fn reply, void *reply_ctx, char *err, size_t errlen);
void tfps_ps_free(tfps_ps *ps);   /* NULL-safe; held calls are dropped unanswered */

#define TFPS_PS_HELD (-1)
/* Handles one request of method (tfps_method). Returns TFPS_RPC_OK with
 * resp and resp_len set (valid until the next call), a gRPC status code with
 * a one-line message in msg, or TFPS_PS_HELD: the call (token) is answered
 * later through the reply function, from inside a later tfps_ps_handle. */
int tfps_ps_handle(tfps_ps *ps, int method, const uint8_t *req, size_t len, void *token, const uint8_t **resp,
                   size_t *resp_len, char *msg, size_t msglen);

/* tfps_ps_handle in two parts, for a server whose threads decode calls in
 * parallel: prepare does what reads nothing that changes (a Push's or a
 * PushPull's push decoded and checked against the owned ranges) and may run
 * on any thread while tfps_ps_handle_prepared runs for other calls; NULL
 * when the method has nothing to prepare (or out of memory: the handler
 * decodes itself). handle_prepared with what prepare gave for the same bytes
 * answers exactly as tfps_ps_handle (which is both, in one thread). A
 * prepared push may point into req and into the preparing thread's scratch
 * (tfps_handlers_push): handle_prepared must run on the thread that
 * prepared, with no other prepare there in between, and req unchanged (a
 * push found decoded elsewhere is refused INTERNAL, never applied wrong). */
void *tfps_ps_prepare(const tfps_ps *ps, int method, const uint8_t *req, size_t len);
void tfps_ps_prepared_free(void *prepared);   /* NULL-safe; after handle_prepared */
int tfps_ps_handle_prepared(tfps_ps *ps, int method, const uint8_t *req, size_t len, void *prepared, void *token,
                            const uint8_t **resp, size_t *resp_len, char *msg, size_t msglen);

/* The RPC handler of a ps server: answers call (now or when the policy
 * allows; with what the server's prepare made of it, tfps_rpc_call_prepared)
 * and, after the chief's Shutdown, asks srv to stop. */
void tfps_ps_serve(tfps_ps *ps, tfps_rpc_server *srv, tfps_rpc_call *call, int method, const uint8_t *req,
                   size_t len);
/* Periodic duties (every ~100 ms from the server's tick): acknowledges a
 * checkpoint written, marks replicas dead that stopped calling (3 x
 * --heartbeat-secs), logs progress and calls held for long. Returns 1 when
 * the ps should stop: --idle-timeout passed (tfps_ps_idle_exit). */
int tfps_ps_tick(tfps_ps *ps);
/* The ps stopped on --idle-timeout. */
int tfps_ps_idle_exit(const tfps_ps *ps);
/* The exit code once stopped: 1 after --idle-timeout or a Shutdown that
 * said the job failed, else 0. */
int tfps_ps_exit_code(const tfps_ps *ps);
/* Restores the newest complete checkpoint under --checkpoint-dir, if any
 * (logged either way). TFPS_ERR with err on an error that is not the
 * checkpoint's (out of memory). */
int tfps_ps_restore(tfps_ps *ps, char *err, size_t errlen);

/* The chief asked this ps to shut down. */
int tfps_ps_shutdown_requested(const tfps_ps *ps);
void tfps_ps_get_stats(const tfps_ps *ps, tfps_ps_stats *s);
/* "worker 1 0.8s, worker 2 3.1s": seconds each worker's pulls were held. */
void tfps_ps_describe_waits(const tfps_ps *ps, char *buf, size_t n);
/* Elements this ps owns. */
size_t tfps_ps_owned(const tfps_ps *ps);
/* --ps-threads resolved (options.h: 0 = the cores): what the RPC server of
 * this ps should poll its queue with (tfps_rpc_server_set_threads). */
int tfps_ps_threads(const tfps_ps *ps);
/* Threads an optimizer update (and a sync step's mean) is split over: 1 when
 * the shard is too small to split (store.h, TFPS_STORE_MIN_CHUNK) or
 * --ps-threads is 1. */
int tfps_ps_apply_threads(const tfps_ps *ps);

#endif
