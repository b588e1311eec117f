/* rpc.h -- unary RPCs over gRPC core: the ONLY module that calls grpc_*.
 *
 * The C core API is not a stable public API, so it stays in rpc.c. Messages
 * cross this interface as opaque bytes (wire.h packs and unpacks them).
 *
 * Server: one completion queue, polled by 1 thread (the default) or more
 * (tfps_rpc_server_set_threads). Every incoming call gets a per-call state
 * struct (the tag); the handler is called with the request bytes and may
 * reply at once or keep the call and reply later (tfps_rpc_reply from the
 * handler or the tick callback): that deferred reply is what sync training
 * needs. With several threads the handler and the tick are still called
 * one at a time (a lock), so whatever they share needs no lock of its own
 * and is seen in the order the calls were handed over; what runs in
 * parallel around them is gRPC's own work, the copy of a request into one
 * contiguous buffer, and the sending of replies (a reply made inside the
 * handler or the tick is started once that returns). The server answers the
 * standard grpc.health.v1.Health/Check itself (SERVING while running,
 * NOT_SERVING while stopping), so Kubernetes probes and grpc_health_probe
 * work.
 *
 *     new --> run (loop: calls -> handler, every tick_ms -> tick) --> free
 *                 ^ request_stop (async-signal-safe) makes run return after
 *                   replying UNAVAILABLE to held calls and draining
 *
 * Client: one channel per target (ps), all calls async on ONE completion
 * queue, so calls to every ps run in parallel. Every call has a deadline.
 * tfps_rpc_call_all retries a target that answered UNAVAILABLE with
 * exponential backoff (50 ms doubling to 1 s) until its deadline, logging
 * each wait; with wait_for_ready it also waits for a target that is not up
 * yet instead of failing at once (start-up).
 *
 * Message sizes: both sides accept messages up to max_msg bytes (set from the
 * shard sizes), so a shard larger than gRPC's default 4 MiB works.
 * Memory: tfps_rpc_init raises glibc's mmap/trim thresholds so the ~1 MB
 * buffers of every call are reused instead of mmap'd and page-faulted again
 * each time (measured: 2x throughput on 1 MB messages). */
#ifndef TFPS_RPC_H
#define TFPS_RPC_H

#include <stddef.h>
#include <stdint.h>

/* gRPC status codes used by tfps (same numbers as grpc_status_code). */
enum {
    TFPS_RPC_OK = 0,
    TFPS_RPC_CANCELLED = 1,
    TFPS_RPC_UNKNOWN = 2,
    TFPS_RPC_INVALID_ARGUMENT = 3,
    TFPS_RPC_DEADLINE_EXCEEDED = 4,
    TFPS_RPC_NOT_FOUND = 5,
    TFPS_RPC_ALREADY_EXISTS = 6,
    TFPS_RPC_PERMISSION_DENIED = 7,
    TFPS_RPC_RESOURCE_EXHAUSTED = 8,
    TFPS_RPC_FAILED_PRECONDITION = 9,
    TFPS_RPC_ABORTED = 10,
    TFPS_RPC_OUT_OF_RANGE = 11,
    TFPS_RPC_UNIMPLEMENTED = 12,
    TFPS_RPC_INTERNAL = 13,
    TFPS_RPC_UNAVAILABLE = 14,
    TFPS_RPC_UNAUTHENTICATED = 16,
};
const char *tfps_rpc_status_name(int status);   /* "UNAVAILABLE", ... */

/* Process-wide set-up (grpc_init, malloc thresholds) and tear-down
 * (grpc_shutdown). Call once each, from main. */
void tfps_rpc_init(void);
void tfps_rpc_shutdown(void);
/* Async-signal-safe (a daemon's SIGTERM handler): every client call in
 * flight ends CANCELLED "interrupted by a signal" within about a second,
 * and every call started afterwards at once, until tfps_rpc_resume (a last
 * checkpoint on the way out asks for it explicitly). */
void tfps_rpc_interrupt(void);
void tfps_rpc_resume(void);
int tfps_rpc_interrupted(void);

/* ---- transport security ---------------------------------------------------- */
/* Process-wide TLS setting, copied into every server and client created
 * afterwards (one already made keeps what it was made with, so a test may
 * switch between making a server and a client). PEM text, not paths:
 * tlscheck.h reads and checks the files first (a NULL key or certificate
 * string would abort inside gRPC).
 *
 *   cert, key, ca all NULL   plaintext (the default)
 *   cert, key, ca all given  mTLS: a server asks every client for a
 *                            certificate signed by ca and refuses the
 *                            handshake without one; a client presents
 *                            cert/key and checks that the server's
 *                            certificate is signed by ca and names the
 *                            target's host in its SANs
 *   only ca                  a client with no certificate of its own (probes,
 *                            tests); a server made so fails in server_new
 *
 * A handshake that fails ends the client's calls UNAVAILABLE (retried until
 * their deadline like any unreachable ps) and costs the server nothing but a
 * log line. Not thread-safe: call it before the threads that make servers or
 * clients. TFPS_ERR (setting unchanged) for any other combination or no
 * memory. */
int tfps_rpc_set_tls(const char *cert_pem, const char *key_pem, const char *ca_pem, char *err, size_t errlen);
/* 0 plaintext, 1 mTLS, 2 a CA only (see above): what new servers and clients get. */
int tfps_rpc_tls_mode(void);

/* ---- server --------------------------------------------------------------- */
typedef struct tfps_rpc_server tfps_rpc_server;
typedef struct tfps_rpc_call tfps_rpc_call;   /* one incoming call; valid until replied */

/* method: index into the methods array given to tfps_rpc_server_new.
 * req/len: the request bytes, valid only during the handler call.
 * The handler must eventually call tfps_rpc_reply or tfps_rpc_reply_error
 * exactly once for this call (now, or later from the handler of another
 * call or from the tick: never from a thread of its own). Handler and tick
 * calls never overlap, whatever the thread count. */
typedef void (*tfps_rpc_handler)(void *ctx, tfps_rpc_call *call, int method, const uint8_t *req, size_t len);
/* Optional (tfps_rpc_server_set_prepare): called for every call that will
 * reach the handler, just before it, on the thread that received the call
 * and WITHOUT the handler lock, so calls are prepared in parallel (decoding,
 * checks that read only what never changes while the server runs). What it
 * returns (NULL allowed) is the handler's through tfps_rpc_call_prepared, and
 * goes to release once the handler returned (or when the server stopped
 * before calling it). */
typedef void *(*tfps_rpc_prepare)(void *ctx, int method, const uint8_t *req, size_t len);
typedef void (*tfps_rpc_release)(void *ctx, void *prepared);
/* Called on the thread that called run about every tick_ms, and once more
 * just before run returns (no handler call after that one); may reply to
 * held calls or call tfps_rpc_server_request_stop. */
typedef void (*tfps_rpc_tick)(void *ctx);

/* Binds addr ("0.0.0.0:2222", "[::]:2222", "127.0.0.1:0" for a port chosen by
 * the kernel; a name binds every address it resolves to) with the TLS
 * setting of the moment (tfps_rpc_set_tls) and registers the methods (full paths such as
 * "/tfps.v1.ParameterServer/Pull"; the strings must outlive the server).
 * *bound_port gets the port. NULL with a message on failure (port in use...). */
tfps_rpc_server *tfps_rpc_server_new(const char *addr, const char *const *methods, int nmethods, size_t max_msg,
                                     tfps_rpc_handler handler, tfps_rpc_tick tick, int tick_ms, void *ctx,
                                     int *bound_port, char *err, size_t errlen);
/* Threads that poll the server's queue (1..TFPS_RPC_MAX_THREADS; values out
 * of range are clamped): run uses the calling thread and starts n - 1 more.
 * Call before run. 1 (the default) is the single loop thread of old. */
#define TFPS_RPC_MAX_THREADS 64
/* Call before run. */
void tfps_rpc_server_set_prepare(tfps_rpc_server *s, tfps_rpc_prepare prepare, tfps_rpc_release release);
void tfps_rpc_server_set_threads(tfps_rpc_server *s, int n);
int tfps_rpc_server_threads(const tfps_rpc_server *s);
/* Runs the loop until request_stop; then stops accepting, answers calls still
 * held with UNAVAILABLE "server shutting down", drains, joins the threads it
 * started and returns TFPS_OK. */
int tfps_rpc_server_run(tfps_rpc_server *s);
/* Async-signal-safe: only sets a flag the loop checks every tick. */
void tfps_rpc_server_request_stop(tfps_rpc_server *s);
void tfps_rpc_server_free(tfps_rpc_server *s);   /* NULL-safe; after run returned */

/* Replies OK with body (copied; may be NULL with len 0), or an error status
 * with a one-line message. Frees the call: do not touch it afterwards. */
void tfps_rpc_reply(tfps_rpc_call *call, const uint8_t *body, size_t len);
/* As tfps_rpc_reply, but body (malloc'd; NULL with len 0 allowed) is taken
 * over, not copied: it is sent from where it is and freed with free() once
 * gRPC is done with it, on whatever thread that is. */
void tfps_rpc_reply_take(tfps_rpc_call *call, uint8_t *body, size_t len);
void tfps_rpc_reply_error(tfps_rpc_call *call, int status, const char *msg);
/* What the server's prepare made of this call's request (NULL without one);
 * valid during the handler call only. */
void *tfps_rpc_call_prepared(const tfps_rpc_call *call);
/* The peer's address ("ipv4:127.0.0.1:5555"), for logs. */
const char *tfps_rpc_call_peer(const tfps_rpc_call *call);

/* ---- server limits (README "Limits") ------------------------------------------
 * Process-wide, like the TLS setting: applied to servers created after the
 * call (tfps_rpc_server_new's signature stays as it is). Zero fields keep
 * gRPC's own defaults.
 *
 * gRPC 1.51 and descriptor exhaustion (reproduced in test_limits): when
 * accept4 fails with EMFILE, its tcp_server_posix.cc logs "Failed accept4"
 * and never re-arms the listener: the port stays bound and refuses service
 * for good, also after the descriptors are free again. 1.51 has no cap on
 * incoming connections either (GRPC_ARG_MAX_ALLOWED_INCOMING_CONNECTIONS
 * came later; its socket mutator API is not public). So the server watches
 * its listener (that log line, and a listening socket whose accept queue
 * stays non-empty) and, once descriptors are free, re-creates it: the old
 * gRPC server is shut down (GOAWAY; calls in flight, held ones too, finish
 * on it) and a new one binds the same port. */
typedef struct {
    int max_streams;            /* concurrent calls per connection (HTTP/2 MAX_CONCURRENT_STREAMS) */
    size_t memory_limit;        /* bytes: gRPC's resource quota, and replies sent but not yet read by
                                   their clients: beyond it new calls get UNAVAILABLE (retried) */
    int handshake_timeout_ms;   /* a connection that has not spoken HTTP/2 by then is closed */
    int idle_timeout_ms;        /* a connection without calls for this long gets GOAWAY */
} tfps_rpc_limits;
void tfps_rpc_set_server_limits(const tfps_rpc_limits *l);
/* Test/bench helper, never used by the daemons: starts n calls of method
 * with body on ONE new channel to target and never reads their replies (a
 * stalled reader), polling them on a thread of its own until stop cancels
 * them and closes the channel. NULL with a message on failure. */
typedef struct tfps_rpc_flood tfps_rpc_flood;
tfps_rpc_flood *tfps_rpc_flood_start(const char *target, const char *method, const uint8_t *body, size_t len, int n,
                                     char *err, size_t errlen);
int tfps_rpc_flood_finished(const tfps_rpc_flood *f);   /* calls that ended (e.g. refused UNAVAILABLE) */
void tfps_rpc_flood_stop(tfps_rpc_flood *f);            /* NULL-safe */

/* ---- client --------------------------------------------------------------- */
typedef struct tfps_rpc_client tfps_rpc_client;

/* A piece of a received message, in place in gRPC's buffers. */
typedef struct {
    const uint8_t *p;
    size_t len;
} tfps_rpc_seg;

typedef struct {
    int status;          /* TFPS_RPC_OK or the gRPC status */
    char details[512];   /* the status message (empty when OK) */
    uint8_t *resp;       /* response bytes, owned by the result (free with tfps_rpc_result_clear) */
    size_t resp_len;
    /* a request with `segments` set: the response as nsegs pieces (resp NULL), read where gRPC received
     * them, no copy; valid until tfps_rpc_result_clear */
    const tfps_rpc_seg *segs;
    int nsegs;
    void *held;          /* what holds them (rpc.c's) */
} tfps_rpc_result;

/* One channel per target ("host:port"); max_msg as for the server; the TLS
 * setting of the moment (tfps_rpc_set_tls). */
tfps_rpc_client *tfps_rpc_client_new(const char *const *targets, int ntargets, size_t max_msg, char *err,
                                     size_t errlen);
void tfps_rpc_client_free(tfps_rpc_client *c);   /* NULL-safe */
int tfps_rpc_client_targets(const tfps_rpc_client *c);
const char *tfps_rpc_client_target(const tfps_rpc_client *c, int i);

/* Calls method on the targets whose bodies[i] is not NULL (bodies[i] with
 * lens[i] bytes; len 0 allowed with a non-NULL pointer), all in parallel, and
 * waits until every one finished: results[i] for each of them. timeout_s is
 * the deadline of the whole operation; UNAVAILABLE is retried with backoff
 * until then; wait_for_ready waits for targets not up yet. Returns TFPS_OK
 * when every called target answered OK; else TFPS_ERR with err naming the
 * first failed target, its status and message (results still filled). */
int tfps_rpc_call_all(tfps_rpc_client *c, const char *method, const uint8_t *const *bodies, const size_t *lens,
                      double timeout_s, int wait_for_ready, tfps_rpc_result *results, char *err, size_t errlen);
/* The general form: n requests, each to its own target and method (several
 * may go to the same target, e.g. a Push and a Pull to every ps in one round),
 * all in flight together; results[k] for reqs[k]. Same deadline, retry and
 * return semantics as tfps_rpc_call_all. */
typedef struct {
    int target;
    const char *method;
    const uint8_t *body;
    size_t len;
    /* 1: body is a malloc'd block handed over: gRPC sends it from where it
     * is (no copy) and it is freed once gRPC is done with it, whatever the
     * outcome (also when the call is refused before it starts) */
    int take;
    /* 1: the response is left in gRPC's pieces (tfps_rpc_result.segs) instead of copied into one block */
    int segments;
} tfps_rpc_req;
static inline tfps_rpc_req tfps_rpc_req_of(int target, const char *method, const uint8_t *body, size_t len) {
    return (tfps_rpc_req){.target = target, .method = method, .body = body, .len = len};
}
int tfps_rpc_call_batch(tfps_rpc_client *c, const tfps_rpc_req *reqs, int n, double timeout_s, int wait_for_ready,
                        tfps_rpc_result *results, char *err, size_t errlen);
/* One target, same semantics. */
int tfps_rpc_call_one(tfps_rpc_client *c, int target, const char *method, const uint8_t *body, size_t len,
                      double timeout_s, int wait_for_ready, tfps_rpc_result *result, char *err, size_t errlen);
void tfps_rpc_result_clear(tfps_rpc_result *r);   /* frees resp (or the pieces); keeps the struct reusable */

#endif
