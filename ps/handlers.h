/* handlers.h -- the ps's request decoding and validation, before any state
 * changes: bytes in, a checked request (or a gRPC status and a one-line
 * message) out. Checks that need only the message and the store live here
 * (well-formed protobuf, byte lengths, ranges owned by this ps, no overlaps,
 * finite values); who may call what (membership) is ps.c's.
 *
 * A decoded request may point into the request's bytes (Push) or into
 * memory owned by the wire module (*owner, released with tfps_wire_release). */
#ifndef TFPS_PS_HANDLERS_H
#define TFPS_PS_HANDLERS_H

#include "store.h"
#include "wire.h"

#include <stddef.h>
#include <stdint.h>

/* A checked Pull: every range with its offset in the store. A request that
 * names no range means everything the ps owns. Holds no wire memory. */
typedef struct {
    uint32_t worker_id;
    uint64_t min_version, clock;
    tfps_session session;
    int dtype;                  /* tfps_wire_dtype the weights are wanted in */
    int n;
    tfps_wire_range ranges[TFPS_WIRE_MAX_TENSORS];
    size_t at[TFPS_WIRE_MAX_TENSORS];
    /* a PushPull's: its push's outcome, appended to the answer (tfps_wire_push_tail); 0 bytes for a Pull */
    uint8_t tail[TFPS_WIRE_PUSH_TAIL_MAX];
    size_t tail_len;
} tfps_pull;

/* A checked Push, read in place (tfps_wire_view_push_req): m.gradients
 * point into the request's bytes when they are fp32 at a 4-byte aligned
 * address (what tfps workers send lands so in a ps's buffer); otherwise
 * (bf16 / fp16, or fp32 off alignment) they are decoded or copied into a
 * scratch buffer of the calling thread, reused by its next push. Valid
 * while the request bytes are and until this thread decodes another push:
 * the ps decodes a call's push and applies it on the same thread (rpc.c).
 * at[i] is gradient i's offset in the store. When the push is refused,
 * m.worker_id and m.session still name its sender (0 when the bytes did
 * not parse), so the caller can tell that worker. */
typedef struct {
    tfps_wire_push_req m;
    size_t at[TFPS_WIRE_MAX_TENSORS];
    int copied;                 /* gradients decoded or copied into the thread's scratch (not read in place) */
    unsigned long scratch_use;  /* copied: the scratch's use count on this thread then (tfps_push_valid_here) */
} tfps_push;

/* 0 if p was copied into a thread's scratch that has been reused since, or
 * is another thread's (a caller broke the same-thread rule above). */
int tfps_push_valid_here(const tfps_push *p);

/* Each returns TFPS_RPC_OK or a gRPC status with msg set. */
int tfps_handlers_pull(const tfps_store *s, int ps_index, const uint8_t *req, size_t len, tfps_pull *out, char *msg,
                       size_t msglen);
int tfps_handlers_push(const tfps_store *s, int ps_index, const uint8_t *req, size_t len, tfps_push *out, char *msg,
                       size_t msglen);

/* Register, Heartbeat, Status, Shutdown: decoded (no store checks); *owner
 * must be released with tfps_wire_release on TFPS_RPC_OK. */
int tfps_handlers_register(const uint8_t *req, size_t len, tfps_wire_register_req *m, void **owner, char *msg,
                           size_t msglen);
int tfps_handlers_heartbeat(const uint8_t *req, size_t len, tfps_wire_heartbeat_req *m, void **owner, char *msg,
                            size_t msglen);
int tfps_handlers_status(const uint8_t *req, size_t len, char *msg, size_t msglen);
int tfps_handlers_shutdown(const uint8_t *req, size_t len, tfps_wire_shutdown_req *m, void **owner, char *msg,
                           size_t msglen);

/* Checkpoint: decoded and checked (a step of at least 1); owns nothing. */
int tfps_handlers_checkpoint(const uint8_t *req, size_t len, tfps_wire_checkpoint_req *m, char *msg, size_t msglen);

/* Copies s into out (n bytes) with control characters replaced by '?' and
 * cut at n - 1: client text that goes into a log line stays one line. */
void tfps_handlers_sanitize(char *out, size_t n, const char *s);

#endif
