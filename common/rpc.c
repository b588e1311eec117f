/* rpc.c -- see rpc.h. Every grpc_* call of tfps lives in this file.
 *
 * Server: every tag on the completion queue is a tfps_rpc_call (or the
 * shutdown tag, &s->shutdown_tag). A call goes
 *
 *     WAITING (a request slot, re-armed as soon as it fills)
 *        -> HELD (handler called; on s->held until replied)
 *        -> REPLYING (one batch in flight) -> freed when that batch completes.
 *
 * Threads: the thread in run (ticks, the listener watchdog, shutdown) and
 * nthreads - 1 more all take events from the one queue. A filled slot is
 * delivered by the thread that took its event:
 *
 *     re-arm the slot (mu) -> request bytes into one slice, prepare (no lock)
 *        -> hmu: handler (its replies only built, queued on this thread)
 *        -> release hmu -> start the queued reply batches (gRPC may send inline)
 *
 * so the handler and the tick run one at a time, in the order the calls got
 * the lock, while copies, decoding and sending overlap across calls.
 *
 * The health service (grpc.health.v1.Health/Check) is answered here; its
 * messages go through wire.c (the one module that calls protobuf-c), which is
 * in the same library, tfps_common.
 *
 * Client: every request of a batch has one rpc_ccall, the tag of its one
 * batch; an attempt that ends UNAVAILABLE is torn down and started again
 * after a backoff, while the deadline allows.
 *
 * Ownership (gRPC 1.51): grpc_raw_byte_buffer_create takes its own ref on
 * the slices; a received byte buffer and readall's slice are ours to free;
 * everything a batch writes into lives in the call struct until its tag. */
#define _GNU_SOURCE   /* struct tcp_info, malloc_trim */
#include "rpc.h"
#include "log.h"
#include "tfps.h"
#include "wire.h"

#include <signal.h>
#include <grpc/byte_buffer.h>
#include <grpc/byte_buffer_reader.h>
#include <grpc/grpc.h>
#include <grpc/grpc_security.h>
#include <grpc/slice.h>
#include <grpc/support/alloc.h>
#include <grpc/support/log.h>
#include <grpc/support/time.h>

#include <assert.h>
#include <dirent.h>
#include <limits.h>
#include <malloc.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define RPC_SLOTS_PER_METHOD 8    /* outstanding request_registered_call per method */
#define RPC_UNREG_SLOTS 2         /* for unknown methods, answered UNIMPLEMENTED */
#define RPC_DRAIN_CANCEL_S 5.0    /* shutdown: cancel calls still open after this */

/* ThreadSanitizer (a -fsanitize=thread build) cannot see the synchronisation
 * inside gRPC (absl's futex-based mutexes, not pthread's): a tag handed to
 * gRPC and the event that brings it back on another thread order the
 * accesses to what the tag points at, and these annotations tell it so. */
#if defined(__SANITIZE_THREAD__)
void __tsan_acquire(void *addr);
void __tsan_release(void *addr);
#define RPC_TAG_OUT(tag) __tsan_release(tag)
#define RPC_TAG_IN(tag) __tsan_acquire(tag)
#else
#define RPC_TAG_OUT(tag) ((void)0)
#define RPC_TAG_IN(tag) ((void)0)
#endif
#define RPC_BACKOFF_FIRST_S 0.05
#define RPC_BACKOFF_MAX_S 1.0
#define RPC_WAIT_LOG_EVERY_S 5.0  /* retry lines above debug level per target */
#define HEALTH_METHOD "/grpc.health.v1.Health/Check"
#define RPC_WATCH_EVERY_S 1.0     /* listener watchdog period */
#define RPC_STUCK_CHECKS 3        /* accept queue non-empty, not shrinking, this many checks = dead listener */
#define RPC_FD_RESERVE 16         /* free descriptors needed before a listener is re-created */
#define RPC_MAX_OLD 4             /* gRPC servers draining after their listener was replaced */
#define RPC_TRIM_BYTES (8u << 20) /* malloc_trim once this much reply memory was released, */
#define RPC_TRIM_EVERY_S 5.0      /* at most this often */

static const char *const status_names[] = {
    "OK",           "CANCELLED",        "UNKNOWN",           "INVALID_ARGUMENT",   "DEADLINE_EXCEEDED",
    "NOT_FOUND",    "ALREADY_EXISTS",   "PERMISSION_DENIED", "RESOURCE_EXHAUSTED", "FAILED_PRECONDITION",
    "ABORTED",      "OUT_OF_RANGE",     "UNIMPLEMENTED",     "INTERNAL",           "UNAVAILABLE",
    "DATA_LOSS",    "UNAUTHENTICATED",
};

const char *tfps_rpc_status_name(int status) {
    if (status >= 0 && status < (int)(sizeof(status_names) / sizeof(status_names[0]))) return status_names[status];
    return "UNKNOWN_STATUS";
}

/* gRPC's own log lines (errors only, unless GRPC_VERBOSITY says more) in
 * the tfps format instead of glog's. */
static atomic_int accept_failed;   /* gRPC logged "Failed accept4": its listener is dead (rpc.h, limits) */
static tfps_rpc_limits server_limits;

void tfps_rpc_set_server_limits(const tfps_rpc_limits *l) {
    server_limits = l ? *l : (tfps_rpc_limits){0};
}

/* gRPC warns once per failed handshake, accept error, ...: a client that
 * fails on purpose could fill the log. At most RPC_GLOG_BURST of them per
 * RPC_GLOG_WINDOW_S are logged, then one line with the count of the rest.
 * Called from gRPC's threads: the counters are under a mutex. */
#define RPC_GLOG_BURST 20
#define RPC_GLOG_WINDOW_S 10.0
static pthread_mutex_t glog_mu = PTHREAD_MUTEX_INITIALIZER;
static double glog_window_start;
static long glog_logged, glog_dropped;

/* A window that ended with warnings not logged: one line with their count
 * (from the next warning, the server loop's tick, or the shutdown). */
static void glog_flush(double now, int force) {
    long dropped = 0;
    pthread_mutex_lock(&glog_mu);
    if (glog_dropped && (force || now - glog_window_start >= RPC_GLOG_WINDOW_S)) {
        dropped = glog_dropped;
        glog_window_start = now;
        glog_logged = glog_dropped = 0;
    }
    pthread_mutex_unlock(&glog_mu);
    if (dropped)
        tfps_log(TFPS_LOG_WARN, "grpc: %ld more warnings not logged (at most %d per %.0f s: a flood of failed "
                 "handshakes or connections?)", dropped, RPC_GLOG_BURST, RPC_GLOG_WINDOW_S);
}

static void rpc_gpr_log(gpr_log_func_args *a) {
    if (strncmp(a->message, "Failed accept4", 14) == 0) atomic_store(&accept_failed, 1);
    if (a->severity != GPR_LOG_SEVERITY_ERROR) {
        tfps_log(TFPS_LOG_DEBUG, "grpc: %s (%s:%d)", a->message, a->file, a->line);
        return;
    }
    const double now = tfps_now();
    glog_flush(now, 0);
    pthread_mutex_lock(&glog_mu);
    if (now - glog_window_start >= RPC_GLOG_WINDOW_S) {
        glog_window_start = now;
        glog_logged = 0;
    }
    const int emit = glog_logged < RPC_GLOG_BURST;
    if (emit) glog_logged++;
    else glog_dropped++;
    pthread_mutex_unlock(&glog_mu);
    if (emit) tfps_log(TFPS_LOG_WARN, "grpc: %s (%s:%d)", a->message, a->file, a->line);
    else tfps_log(TFPS_LOG_DEBUG, "grpc: %s (%s:%d)", a->message, a->file, a->line);
}

static volatile sig_atomic_t interrupted;

void tfps_rpc_interrupt(void) { interrupted = 1; }
void tfps_rpc_resume(void) { interrupted = 0; }
int tfps_rpc_interrupted(void) { return interrupted != 0; }

void tfps_rpc_init(void) {
    /* ~1 MB buffers per call: keep them in the heap instead of mmap/munmap
     * (and page faults) every call. TFPS_RPC_DEFAULT_MALLOC=1 skips this, to
     * measure the difference (bench_rpc). */
    const char *e = getenv("TFPS_RPC_DEFAULT_MALLOC");
    if (!e || !*e || strcmp(e, "0") == 0) {
        mallopt(M_MMAP_THRESHOLD, 64 << 20);
        mallopt(M_TRIM_THRESHOLD, 256 << 20);
    }
    gpr_set_log_function(rpc_gpr_log);
    grpc_init();
}

void tfps_rpc_shutdown(void) {
    glog_flush(tfps_now(), 1);
    grpc_shutdown();
}

/* ---- transport security: the setting new servers and clients copy -------- */

static char *tls_cert, *tls_key, *tls_ca;   /* NULL, NULL, NULL: plaintext */

int tfps_rpc_set_tls(const char *cert_pem, const char *key_pem, const char *ca_pem, char *err, size_t errlen) {
    const int pair = cert_pem && key_pem;
    if (!cert_pem != !key_pem || ((cert_pem || key_pem) && !ca_pem))
        return tfps_seterr(err, errlen, "rpc: TLS needs a certificate, its key and the CA together (or the CA alone "
                                        "for a client without a certificate; or none of them for plaintext)");
    char *c = pair ? strdup(cert_pem) : NULL, *k = pair ? strdup(key_pem) : NULL, *a = ca_pem ? strdup(ca_pem) : NULL;
    if ((pair && (!c || !k)) || (ca_pem && !a)) {
        free(c);
        free(k);
        free(a);
        return tfps_seterr(err, errlen, "rpc: out of memory copying the TLS credentials");
    }
    free(tls_cert);
    if (tls_key) memset(tls_key, 0, strlen(tls_key));   /* the key does not linger in freed memory */
    free(tls_key);
    free(tls_ca);
    tls_cert = c;
    tls_key = k;
    tls_ca = a;
    return TFPS_OK;
}

int tfps_rpc_tls_mode(void) {
    return tls_cert ? 1 : tls_ca ? 2 : 0;
}

/* The server's credentials of the moment (a new ref: release it); NULL with
 * err when only a CA is set (a server needs a certificate of its own). */
static grpc_server_credentials *server_creds(char *err, size_t errlen) {
    if (!tls_ca) return grpc_insecure_server_credentials_create();
    if (!tls_cert) {
        tfps_seterr(err, errlen, "rpc server: TLS needs the server's certificate and key, not only a CA");
        return NULL;
    }
    grpc_ssl_pem_key_cert_pair pair = {tls_key, tls_cert};
    return grpc_ssl_server_credentials_create_ex(tls_ca, &pair, 1,
                                                 GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY, NULL);
}

/* The channels' credentials of the moment (a new ref: release it). Always
 * the CA given, never the system roots (a NULL root falls back to them). */
static grpc_channel_credentials *client_creds(void) {
    if (!tls_ca) return grpc_insecure_credentials_create();
    grpc_ssl_pem_key_cert_pair pair = {tls_key, tls_cert};
    return grpc_ssl_credentials_create(tls_ca, tls_cert ? &pair : NULL, NULL, NULL);
}

/* Absolute monotonic deadline s seconds from now (gRPC's clock, not tfps_now's). */
static gpr_timespec rpc_after(double s) {
    if (s < 0) s = 0;
    if (s > 1e9) return gpr_inf_future(GPR_CLOCK_MONOTONIC);
    return gpr_time_add(gpr_now(GPR_CLOCK_MONOTONIC), gpr_time_from_micros((int64_t)(s * 1e6), GPR_TIMESPAN));
}

static grpc_arg rpc_int_arg(const char *key, int v) {
    grpc_arg a;
    memset(&a, 0, sizeof(a));
    a.type = GRPC_ARG_INTEGER;
    a.key = (char *)key;
    a.value.integer = v;
    return a;
}

static int rpc_msg_limit(size_t max_msg) {
    return max_msg > (size_t)INT_MAX ? INT_MAX : (int)max_msg;
}

/* The bytes of a received message as one slice (a new ref: unref it). A
 * single uncompressed slice is shared, not copied. Returns 0 if the buffer
 * cannot be read (bad compression). */
static int rpc_bb_slice(grpc_byte_buffer *bb, grpc_slice *out) {
    if (bb->type == GRPC_BB_RAW && bb->data.raw.compression == GRPC_COMPRESS_NONE &&
        bb->data.raw.slice_buffer.count == 1) {
        *out = grpc_slice_ref(bb->data.raw.slice_buffer.slices[0]);
        return 1;
    }
    grpc_byte_buffer_reader r;
    if (!grpc_byte_buffer_reader_init(&r, bb)) return 0;
    *out = grpc_byte_buffer_reader_readall(&r);
    grpc_byte_buffer_reader_destroy(&r);
    return 1;
}

/* ==== server ============================================================== */

enum { CALL_WAITING = 0, CALL_HELD, CALL_REPLYING };

struct tfps_rpc_call {
    tfps_rpc_server *s;
    int state;
    int method;                 /* index; s->nmethods = health; -1 = not registered */
    grpc_call *call;
    grpc_server *srv;           /* the gRPC server whose request slot this was */
    size_t reply_len;           /* an OK reply's bytes, counted in s->reply_bytes until freed */
    gpr_timespec deadline;
    grpc_metadata_array req_md;
    grpc_call_details details;  /* method < 0 only */
    grpc_byte_buffer *req;      /* the request message; NULL if the client sent none */
    grpc_byte_buffer *resp;
    grpc_slice status_msg;
    int has_status_msg;
    int cancelled;              /* RECV_CLOSE_ON_SERVER writes here */
    char *peer;                 /* gpr_malloc'd, on first tfps_rpc_call_peer */
    tfps_rpc_call *prev, *next; /* s->held while HELD (under s->mu) */
    grpc_op ops[4];             /* the reply batch, built by start_reply */
    size_t nops;
    tfps_rpc_call *defer_next;  /* on the thread's list of batches to start once the handler lock is released */
    void *prepared;             /* what s->prepare made of the request, during the handler call */
};

struct tfps_rpc_server {
    grpc_server *srv;
    grpc_completion_queue *cq;
    void **mh;                  /* nmethods + 1 registered method handles; the last: health */
    const char *const *methods;
    int nmethods;
    tfps_rpc_handler handler;
    tfps_rpc_prepare prepare;   /* optional: called before the handler, outside hmu */
    tfps_rpc_release release;
    tfps_rpc_tick tick;
    int tick_ms;
    void *ctx;
    atomic_int stop;            /* lock-free: safe from a signal handler and from other threads */
    atomic_int stopping;        /* loop saw stop: handler no longer called, health NOT_SERVING (set under hmu) */
    int shutdown_done;          /* the shutdown tag came back (mu) */
    int ran;
    /* Threads (rpc.h, tfps_rpc_server_set_threads): the run caller and nthreads - 1 more poll s->cq.
     * hmu serialises the handler and the tick; mu guards the server's bookkeeping: held, reply_bytes,
     * reply_peak, refuse_logged, shutdown_done, srv (written by the run thread only, under mu), mh,
     * old[] and the request slots. Lock order: hmu, then mu; nothing else is taken under mu. */
    int nthreads;
    pthread_t *th;              /* [nthreads - 1] started by run, joined by server_shutdown */
    int nth;                    /* threads started */
    pthread_mutex_t mu, hmu;
    tfps_rpc_call *held;        /* calls handed to the handler, not replied yet */
    int shutdown_tag;           /* only its address is used */
    /* limits (rpc.h) */
    char addr[320];             /* the address to bind again (with the bound port) */
    size_t max_msg;
    tfps_rpc_limits lim;
    grpc_resource_quota *quota;
    grpc_server_credentials *creds;   /* plaintext or mTLS, fixed at creation (tfps_rpc_set_tls) */
    size_t reply_bytes, reply_peak;   /* OK replies in flight; their largest total since the last trim */
    double refuse_logged, watch_at, rebuild_logged, trimmed_at;
    grpc_server *old[RPC_MAX_OLD];    /* shut down after their listener died; destroyed at their tag */
    int old_tag[RPC_MAX_OLD];
    int listen_fd[2], nlisten, stuck;   /* the listening sockets, found in /proc/self/fd */
    ino_t listen_ino[2];
    unsigned last_queue;
    int need_rebuild;
    int no_watch;               /* TFPS_RPC_LISTENER_WATCHDOG=0: shows gRPC's own behaviour (test_limits) */
};

/* Not with s->mu held (it takes it for an OK reply's bytes). */
static void call_free(tfps_rpc_call *c) {
    if (c->reply_len) {
        pthread_mutex_lock(&c->s->mu);
        c->s->reply_bytes -= c->reply_len;
        pthread_mutex_unlock(&c->s->mu);
    }
    if (c->req) grpc_byte_buffer_destroy(c->req);
    if (c->resp) grpc_byte_buffer_destroy(c->resp);
    if (c->has_status_msg) grpc_slice_unref(c->status_msg);
    grpc_metadata_array_destroy(&c->req_md);
    if (c->method < 0) grpc_call_details_destroy(&c->details);
    if (c->peer) gpr_free(c->peer);
    if (c->call) grpc_call_unref(c->call);   /* cancels it if it never finished */
    free(c);
}

/* With s->mu held, or before run started its threads. */
static void request_slot(tfps_rpc_server *s, int method) {
    if (!s->srv) return;   /* between a dead listener and its replacement */
    tfps_rpc_call *c = calloc(1, sizeof(*c));
    if (!c) {
        tfps_error("rpc: out of memory re-arming a request slot");
        return;
    }
    c->s = s;
    c->srv = s->srv;
    c->method = method;
    c->state = CALL_WAITING;
    grpc_metadata_array_init(&c->req_md);
    grpc_call_error e;
    if (method < 0) {
        grpc_call_details_init(&c->details);
        RPC_TAG_OUT(c);
        e = grpc_server_request_call(s->srv, &c->call, &c->details, &c->req_md, s->cq, s->cq, c);
    } else {
        RPC_TAG_OUT(c);
        e = grpc_server_request_registered_call(s->srv, s->mh[method], &c->call, &c->deadline, &c->req_md, &c->req,
                                                s->cq, s->cq, c);
    }
    if (e != GRPC_CALL_OK) {
        tfps_error("rpc: request_call refused (grpc_call_error %d)", (int)e);
        call_free(c);   /* no reply bytes: does not take s->mu */
    }
}

/* With s->mu held. */
static void held_unlink(tfps_rpc_call *c) {
    tfps_rpc_server *s = c->s;
    if (c->prev)
        c->prev->next = c->next;
    else
        s->held = c->next;
    if (c->next) c->next->prev = c->prev;
    c->prev = c->next = NULL;
}

/* Reply batches prepared inside the handler or the tick are started by the
 * same thread once it has released the handler lock (flush_deferred), so
 * sending (gRPC may write to the socket inline) runs in parallel with the
 * next handler on another thread. Elsewhere (shutdown) they start at once. */
static _Thread_local int tl_deferring;
static _Thread_local tfps_rpc_call *tl_defer_head, *tl_defer_tail;

static void start_batch(tfps_rpc_call *c) {
    grpc_call *call = c->call;   /* read before the hand-over: the tag may be back on another thread at once */
    const size_t nops = c->nops;
    RPC_TAG_OUT(c);
    grpc_call_error e = grpc_call_start_batch(call, c->ops, nops, c, NULL);
    if (e != GRPC_CALL_OK) {
        /* No tag will come back: free now (unref cancels the call). */
        tfps_error("rpc: reply batch refused (grpc_call_error %d)", (int)e);
        call_free(c);
    }
}

static void flush_deferred(void) {
    while (tl_defer_head) {
        tfps_rpc_call *c = tl_defer_head;
        tl_defer_head = c->defer_next;
        if (!tl_defer_head) tl_defer_tail = NULL;
        c->defer_next = NULL;
        start_batch(c);   /* c may be completed and freed by another thread from here on */
    }
}

/* The one reply batch; the call is freed when it completes. body is sent
 * only with status OK: copied (once, into a slice), or with take set,
 * handed over (freed with free() once gRPC is done with it). */
static void start_reply(tfps_rpc_call *c, int status, const char *msg, const uint8_t *body, size_t len, int take) {
    tfps_rpc_server *s = c->s;
    const size_t counted = status == TFPS_RPC_OK ? len : 0;
    pthread_mutex_lock(&s->mu);
    if (c->state == CALL_HELD) held_unlink(c);
    c->state = CALL_REPLYING;
    if (counted) {
        c->reply_len = counted;
        s->reply_bytes += counted;
        if (s->reply_bytes > s->reply_peak) s->reply_peak = s->reply_bytes;
    }
    pthread_mutex_unlock(&s->mu);
    grpc_op *ops = c->ops, *op = ops;
    memset(c->ops, 0, sizeof(c->ops));
    op->op = GRPC_OP_SEND_INITIAL_METADATA;
    op->data.send_initial_metadata.count = 0;
    op++;
    op->op = GRPC_OP_RECV_CLOSE_ON_SERVER;
    op->data.recv_close_on_server.cancelled = &c->cancelled;
    op++;
    if (status == TFPS_RPC_OK) {
        if (len > 0) {
            grpc_slice sl = take ? grpc_slice_new((void *)body, len, free)
                                 : grpc_slice_from_copied_buffer((const char *)body, len);
            c->resp = grpc_raw_byte_buffer_create(&sl, 1);
            grpc_slice_unref(sl);
        } else {
            c->resp = grpc_raw_byte_buffer_create(NULL, 0);
        }
        op->op = GRPC_OP_SEND_MESSAGE;
        op->data.send_message.send_message = c->resp;
        op++;
    }
    if (take && (status != TFPS_RPC_OK || len == 0)) free((void *)body);
    op->op = GRPC_OP_SEND_STATUS_FROM_SERVER;
    op->data.send_status_from_server.trailing_metadata_count = 0;
    op->data.send_status_from_server.status = (grpc_status_code)status;
    if (msg && *msg) {
        c->status_msg = grpc_slice_from_copied_string(msg);
        c->has_status_msg = 1;
        op->data.send_status_from_server.status_details = &c->status_msg;
    }
    op++;
    c->nops = (size_t)(op - ops);
    if (tl_deferring) {
        c->defer_next = NULL;
        if (tl_defer_tail) tl_defer_tail->defer_next = c;
        else tl_defer_head = c;
        tl_defer_tail = c;
    } else {
        start_batch(c);
    }
}

void tfps_rpc_reply(tfps_rpc_call *call, const uint8_t *body, size_t len) {
    assert(call && call->state == CALL_HELD);
    assert(body || len == 0);
    start_reply(call, TFPS_RPC_OK, NULL, body, len, 0);
}

void tfps_rpc_reply_take(tfps_rpc_call *call, uint8_t *body, size_t len) {
    assert(call && call->state == CALL_HELD);
    assert(body || len == 0);
    start_reply(call, TFPS_RPC_OK, NULL, body, len, 1);
}

void tfps_rpc_reply_error(tfps_rpc_call *call, int status, const char *msg) {
    assert(call && call->state == CALL_HELD);
    if (status < 0 || status > 16) status = TFPS_RPC_UNKNOWN;
    start_reply(call, status, status == TFPS_RPC_OK ? NULL : msg, NULL, 0, 0);
}

void *tfps_rpc_call_prepared(const tfps_rpc_call *call) {
    return call->prepared;
}

void tfps_rpc_server_set_prepare(tfps_rpc_server *s, tfps_rpc_prepare prepare, tfps_rpc_release release) {
    assert(!s->ran);
    s->prepare = prepare;
    s->release = release;
}

const char *tfps_rpc_call_peer(const tfps_rpc_call *call) {
    tfps_rpc_call *c = (tfps_rpc_call *)call;   /* our own object: the cache is not visible state */
    if (!c->peer) c->peer = grpc_call_get_peer(c->call);
    return c->peer ? c->peer : "?";
}

/* Is svc "" or the service of one of our methods ("/svc/Method")? */
static int health_knows(const tfps_rpc_server *s, const char *svc) {
    size_t n = strlen(svc);
    if (n == 0) return 1;
    for (int i = 0; i < s->nmethods; i++) {
        const char *m = s->methods[i];
        if (strlen(m) > n + 1 && memcmp(m + 1, svc, n) == 0 && m[n + 1] == '/') return 1;
    }
    return 0;
}

static void health_check(tfps_rpc_server *s, tfps_rpc_call *c) {
    grpc_slice sl = grpc_empty_slice();
    if (c->req && !rpc_bb_slice(c->req, &sl)) {
        start_reply(c, TFPS_RPC_INVALID_ARGUMENT, "unreadable HealthCheckRequest", NULL, 0, 0);
        return;
    }
    const char *svc = NULL;
    void *owner = NULL;
    char err[TFPS_ERR_LEN];
    if (tfps_wire_unpack_health_req(GRPC_SLICE_START_PTR(sl), GRPC_SLICE_LENGTH(sl), &svc, &owner, err,
                                    sizeof(err)) != TFPS_OK) {
        start_reply(c, TFPS_RPC_INVALID_ARGUMENT, err, NULL, 0, 0);
    } else if (!health_knows(s, svc)) {
        char msg[160];
        snprintf(msg, sizeof(msg), "unknown service \"%.100s\"", svc);
        start_reply(c, TFPS_RPC_NOT_FOUND, msg, NULL, 0, 0);
    } else {
        tfps_buf resp = {0};
        if (tfps_wire_pack_health_resp(!atomic_load(&s->stopping), &resp) != TFPS_OK)
            start_reply(c, TFPS_RPC_RESOURCE_EXHAUSTED, "out of memory packing a HealthCheckResponse", NULL, 0, 0);
        else
            start_reply(c, TFPS_RPC_OK, NULL, resp.data, resp.len, 0);   /* copied: resp is ours to free */
        tfps_buf_free(&resp);
    }
    tfps_wire_release(owner);
    grpc_slice_unref(sl);
}

/* A request slot filled: answer it here or hand it to the handler. */
static void deliver(tfps_rpc_server *s, tfps_rpc_call *c) {
    if (c->method < 0) {
        char msg[300];
        const grpc_slice m = c->details.method;
        snprintf(msg, sizeof(msg), "unknown method %.*s",
                 GRPC_SLICE_LENGTH(m) > 256 ? 256 : (int)GRPC_SLICE_LENGTH(m), (const char *)GRPC_SLICE_START_PTR(m));
        start_reply(c, TFPS_RPC_UNIMPLEMENTED, msg, NULL, 0, 0);
        return;
    }
    if (c->method == s->nmethods) {
        health_check(s, c);
        return;
    }
    if (atomic_load(&s->stopping)) {
        start_reply(c, TFPS_RPC_UNAVAILABLE, "server shutting down", NULL, 0, 0);
        return;
    }
    if (s->lim.memory_limit) {   /* before the handler: nothing applied */
        char msg[200];
        int refuse = 0, say = 0;
        pthread_mutex_lock(&s->mu);
        if (s->reply_bytes >= s->lim.memory_limit) {
            refuse = 1;
            snprintf(msg, sizeof(msg), "server memory limit: %zu MB of replies not yet read by their clients (limit "
                     "%zu MB)", s->reply_bytes >> 20, s->lim.memory_limit >> 20);
            if (tfps_now() - s->refuse_logged >= RPC_WAIT_LOG_EVERY_S) {
                s->refuse_logged = tfps_now();
                say = 1;
            }
        }
        pthread_mutex_unlock(&s->mu);
        if (refuse) {
            if (say)
                tfps_warn("rpc: %s: refusing new calls with UNAVAILABLE (clients retry until their deadline)", msg);
            // UNAVAILABLE, not RESOURCE_EXHAUSTED: gRPC clients (tfps's too) retry it with backoff, so one stalled
            // reader holding the memory makes the workers wait, not exit
            start_reply(c, TFPS_RPC_UNAVAILABLE, msg, NULL, 0, 0);
            return;
        }
    }
    grpc_slice sl;
    if (!c->req) {
        start_reply(c, TFPS_RPC_INVALID_ARGUMENT, "request without a message", NULL, 0, 0);
        return;
    }
    /* the copy into one slice (a message of several slices) runs here, outside the handler lock */
    if (!rpc_bb_slice(c->req, &sl)) {
        start_reply(c, TFPS_RPC_INVALID_ARGUMENT, "unreadable request message", NULL, 0, 0);
        return;
    }
    grpc_byte_buffer_destroy(c->req);
    c->req = NULL;
    /* what needs no shared state (decoding, checks) is done here too, in parallel with other calls */
    void *prep = s->prepare ? s->prepare(s->ctx, c->method, GRPC_SLICE_START_PTR(sl), GRPC_SLICE_LENGTH(sl)) : NULL;
    pthread_mutex_lock(&s->hmu);
    if (atomic_load(&s->stopping)) {   /* stopped while this thread waited: no handler call after the last tick */
        pthread_mutex_unlock(&s->hmu);
        if (prep && s->release) s->release(s->ctx, prep);
        grpc_slice_unref(sl);
        start_reply(c, TFPS_RPC_UNAVAILABLE, "server shutting down", NULL, 0, 0);
        return;
    }
    pthread_mutex_lock(&s->mu);
    c->state = CALL_HELD;
    c->prev = NULL;
    c->next = s->held;
    if (s->held) s->held->prev = c;
    s->held = c;
    pthread_mutex_unlock(&s->mu);
    /* c may be replied (and, once its batch completes, freed) in here. */
    c->prepared = prep;
    tl_deferring = 1;
    s->handler(s->ctx, c, c->method, GRPC_SLICE_START_PTR(sl), GRPC_SLICE_LENGTH(sl));
    c->prepared = NULL;   // still ours: its reply, if any, is deferred; a held call keeps no pointer to prep
    tl_deferring = 0;
    pthread_mutex_unlock(&s->hmu);
    if (prep && s->release) s->release(s->ctx, prep);   /* c is not touched: it may be freed already */
    grpc_slice_unref(sl);
    flush_deferred();
}

/* The tick callback, serialised with the handler like it. */
static void run_tick(tfps_rpc_server *s) {
    if (!s->tick) return;
    pthread_mutex_lock(&s->hmu);
    tl_deferring = 1;
    s->tick(s->ctx);
    tl_deferring = 0;
    pthread_mutex_unlock(&s->hmu);
    flush_deferred();
}

/* Any of the server's threads. */
static void server_event(tfps_rpc_server *s, grpc_event ev) {
    RPC_TAG_IN(ev.tag);
    if (ev.tag == &s->shutdown_tag) {
        pthread_mutex_lock(&s->mu);
        s->shutdown_done = 1;
        pthread_mutex_unlock(&s->mu);
        return;
    }
    for (int k = 0; k < RPC_MAX_OLD; k++)
        if (ev.tag == &s->old_tag[k]) {   /* a replaced server finished its calls */
            pthread_mutex_lock(&s->mu);
            grpc_server_destroy(s->old[k]);
            s->old[k] = NULL;
            pthread_mutex_unlock(&s->mu);
            return;
        }
    tfps_rpc_call *c = ev.tag;
    if (c->state == CALL_REPLYING) {
        call_free(c);
        return;
    }
    assert(c->state == CALL_WAITING);
    pthread_mutex_lock(&s->mu);
    const int stopping = atomic_load(&s->stopping), current = c->srv == s->srv;
    if (!ev.success) {
        /* a slot of a replaced server: the new one has its own; else the server is shutting down */
        if (current && !stopping) {
            tfps_warn("rpc: a request slot failed while serving; re-arming it");
            request_slot(s, c->method);
        }
        pthread_mutex_unlock(&s->mu);
        call_free(c);
        return;
    }
    if (!stopping && current) request_slot(s, c->method);   /* re-arm before the handler runs */
    pthread_mutex_unlock(&s->mu);
    deliver(s, c);
}

/* Answers held calls, shuts the server down and drains and destroys the queue. */
static int old_servers(const tfps_rpc_server *s) {
    int n = 0;
    for (int k = 0; k < RPC_MAX_OLD; k++) n += s->old[k] != NULL;
    return n;
}

/* The extra threads: events until the queue is shut down and drained. */
static void *server_thread(void *arg) {
    tfps_rpc_server *s = arg;
    for (;;) {
        grpc_event ev = grpc_completion_queue_next(s->cq, gpr_inf_future(GPR_CLOCK_MONOTONIC), NULL);
        if (ev.type == GRPC_QUEUE_SHUTDOWN) break;
        if (ev.type == GRPC_OP_COMPLETE) server_event(s, ev);
    }
    return NULL;
}

/* On the run thread (or in free, when run never ran). The other threads
 * keep taking events until the queue is shut down; they are joined before
 * it is destroyed. */
static void server_shutdown(tfps_rpc_server *s) {
    if (!s->cq) return;
    /* No handler is running or will run: stopping is set under hmu (run), so
     * the held list only shrinks from here, and only here. */
    pthread_mutex_lock(&s->hmu);
    atomic_store(&s->stopping, 1);
    pthread_mutex_unlock(&s->hmu);
    int nheld = 0;
    for (;;) {
        pthread_mutex_lock(&s->mu);
        tfps_rpc_call *c = s->held;
        pthread_mutex_unlock(&s->mu);
        if (!c) break;
        start_reply(c, TFPS_RPC_UNAVAILABLE, "server shutting down", NULL, 0, 0);
        nheld++;
    }
    if (nheld)
        tfps_info("rpc: answered %d held call%s UNAVAILABLE (server shutting down)", nheld, nheld == 1 ? "" : "s");
    pthread_mutex_lock(&s->mu);
    if (s->srv) {
        RPC_TAG_OUT(&s->shutdown_tag);
        grpc_server_shutdown_and_notify(s->srv, s->cq, &s->shutdown_tag);
    } else {   /* between a dead listener and its replacement */
        s->shutdown_done = 1;
    }
    pthread_mutex_unlock(&s->mu);
    double cancel_at = tfps_now() + RPC_DRAIN_CANCEL_S;
    int cancelled = 0;
    for (;;) {
        pthread_mutex_lock(&s->mu);
        const int done = s->shutdown_done && old_servers(s) == 0;
        pthread_mutex_unlock(&s->mu);
        if (done) break;
        grpc_event ev = grpc_completion_queue_next(s->cq, rpc_after(0.1), NULL);
        if (ev.type == GRPC_OP_COMPLETE) server_event(s, ev);
        if (!cancelled && tfps_now() > cancel_at) {
            tfps_warn("rpc: calls still open %.0f s after shutdown began; cancelling them", RPC_DRAIN_CANCEL_S);
            pthread_mutex_lock(&s->mu);
            if (s->srv) grpc_server_cancel_all_calls(s->srv);
            for (int k = 0; k < RPC_MAX_OLD; k++)
                if (s->old[k]) grpc_server_cancel_all_calls(s->old[k]);
            pthread_mutex_unlock(&s->mu);
            cancelled = 1;
        }
    }
    pthread_mutex_lock(&s->mu);
    grpc_server *srv = s->srv;
    s->srv = NULL;
    pthread_mutex_unlock(&s->mu);
    if (srv) grpc_server_destroy(srv);
    grpc_completion_queue_shutdown(s->cq);
    for (;;) {
        grpc_event ev = grpc_completion_queue_next(s->cq, gpr_inf_future(GPR_CLOCK_MONOTONIC), NULL);
        if (ev.type == GRPC_QUEUE_SHUTDOWN) break;
        if (ev.type == GRPC_OP_COMPLETE) server_event(s, ev);
    }
    for (int i = 0; i < s->nth; i++) pthread_join(s->th[i], NULL);   /* each saw GRPC_QUEUE_SHUTDOWN too */
    s->nth = 0;
    grpc_completion_queue_destroy(s->cq);
    s->cq = NULL;
}

/* Creates s->srv with the limits, registers the methods, binds s->addr,
 * starts it and arms the request slots. TFPS_ERR with a message and nothing
 * left behind (s->srv NULL). Used at start and to replace a dead listener. */
static int server_build(tfps_rpc_server *s, int *port, char *err, size_t errlen) {
    grpc_arg args[8];
    size_t nargs = 0;
    /* No SO_REUSEPORT: a second ps on the same port must fail, not share it. */
    args[nargs++] = rpc_int_arg(GRPC_ARG_ALLOW_REUSEPORT, 0);
    if (s->max_msg > 0) {   /* 0: gRPC's defaults */
        args[nargs++] = rpc_int_arg(GRPC_ARG_MAX_RECEIVE_MESSAGE_LENGTH, rpc_msg_limit(s->max_msg));
        args[nargs++] = rpc_int_arg(GRPC_ARG_MAX_SEND_MESSAGE_LENGTH, rpc_msg_limit(s->max_msg));
    }
    if (s->lim.max_streams > 0) args[nargs++] = rpc_int_arg(GRPC_ARG_MAX_CONCURRENT_STREAMS, s->lim.max_streams);
    if (s->lim.handshake_timeout_ms > 0)
        args[nargs++] = rpc_int_arg(GRPC_ARG_SERVER_HANDSHAKE_TIMEOUT_MS, s->lim.handshake_timeout_ms);
    if (s->lim.idle_timeout_ms > 0) args[nargs++] = rpc_int_arg(GRPC_ARG_MAX_CONNECTION_IDLE_MS, s->lim.idle_timeout_ms);
    if (s->quota) {   /* a pointer arg: the server takes its own ref */
        grpc_arg *a = &args[nargs++];
        memset(a, 0, sizeof(*a));
        a->type = GRPC_ARG_POINTER;
        a->key = (char *)GRPC_ARG_RESOURCE_QUOTA;
        a->value.pointer.p = s->quota;
        a->value.pointer.vtable = grpc_resource_quota_arg_vtable();
    }
    grpc_channel_args ca = {nargs, args};
    s->srv = grpc_server_create(&ca, NULL);
    grpc_server_register_completion_queue(s->srv, s->cq, NULL);
    const char *fail = NULL;
    for (int i = 0; i <= s->nmethods && !fail; i++) {
        const char *m = i < s->nmethods ? s->methods[i] : HEALTH_METHOD;
        s->mh[i] = grpc_server_register_method(s->srv, m, NULL, GRPC_SRM_PAYLOAD_READ_INITIAL_BYTE_BUFFER, 0);
        if (!s->mh[i]) {
            fail = m;
            tfps_seterr(err, errlen, "rpc server: cannot register method %s (given twice, or the built-in %s?)", m,
                        HEALTH_METHOD);
        }
    }
    if (!fail) {
        *port = grpc_server_add_http2_port(s->srv, s->addr, s->creds);   /* not taken over: reusable */
        if (*port == 0) {
            fail = s->addr;
            tfps_seterr(err, errlen,
                        "rpc server: cannot listen on %s: port in use or bad address (expected host:port, e.g. "
                        "0.0.0.0:2222)",
                        s->addr);
        }
    }
    if (fail) {   /* never started, no listener: destroy directly */
        grpc_server_destroy(s->srv);
        s->srv = NULL;
        return TFPS_ERR;
    }
    grpc_server_start(s->srv);
    for (int i = 0; i <= s->nmethods; i++)
        for (int k = 0; k < RPC_SLOTS_PER_METHOD; k++) request_slot(s, i);
    for (int k = 0; k < RPC_UNREG_SLOTS; k++) request_slot(s, -1);
    s->nlisten = 0;   /* the watchdog looks the listening sockets up again */
    s->stuck = 0;
    return TFPS_OK;
}

tfps_rpc_server *tfps_rpc_server_new(const char *addr, const char *const *methods, int nmethods, size_t max_msg,
                                     tfps_rpc_handler handler, tfps_rpc_tick tick, int tick_ms, void *ctx,
                                     int *bound_port, char *err, size_t errlen) {
    if (!addr || !*addr || !handler || nmethods < 0 || (nmethods > 0 && !methods)) {
        tfps_seterr(err, errlen, "rpc server: address, handler and methods are required");
        return NULL;
    }
    for (int i = 0; i < nmethods; i++)
        if (!methods[i] || methods[i][0] != '/') {
            tfps_seterr(err, errlen, "rpc server: method %d \"%s\" is not a full path like /pkg.Service/Method", i,
                        methods[i] ? methods[i] : "(null)");
            return NULL;
        }
    if (strlen(addr) >= sizeof(((tfps_rpc_server *)0)->addr) - 8) {
        tfps_seterr(err, errlen, "rpc server: address \"%.100s...\" too long", addr);
        return NULL;
    }
    tfps_rpc_server *s = calloc(1, sizeof(*s));
    void **mh = calloc((size_t)nmethods + 1, sizeof(void *));
    if (!s || !mh) {
        free(s);
        free(mh);
        tfps_seterr(err, errlen, "rpc server: out of memory");
        return NULL;
    }
    atomic_init(&s->stop, 0);
    atomic_init(&s->stopping, 0);
    pthread_mutex_init(&s->mu, NULL);
    pthread_mutex_init(&s->hmu, NULL);
    s->nthreads = 1;
    s->mh = mh;
    s->methods = methods;
    s->nmethods = nmethods;
    s->handler = handler;
    s->tick = tick;
    s->tick_ms = tick_ms > 0 ? tick_ms : 100;
    s->ctx = ctx;
    s->max_msg = max_msg;
    s->lim = server_limits;
    s->refuse_logged = s->rebuild_logged = -1e18;
    snprintf(s->addr, sizeof(s->addr), "%s", addr);
    const char *w = getenv("TFPS_RPC_LISTENER_WATCHDOG");
    s->no_watch = w && strcmp(w, "0") == 0;
    if (s->lim.memory_limit > 0) {
        s->quota = grpc_resource_quota_create("tfps-server");
        grpc_resource_quota_resize(s->quota, s->lim.memory_limit);
    }
    s->cq = grpc_completion_queue_create_for_next(NULL);
    int port = 0;
    s->creds = server_creds(err, errlen);   /* this server's, also for a listener the watchdog re-creates */
    if (!s->creds || server_build(s, &port, err, errlen) != TFPS_OK) {
        if (s->creds) grpc_server_credentials_release(s->creds);
        grpc_completion_queue_shutdown(s->cq);
        while (grpc_completion_queue_next(s->cq, gpr_inf_future(GPR_CLOCK_MONOTONIC), NULL).type != GRPC_QUEUE_SHUTDOWN)
            ;
        grpc_completion_queue_destroy(s->cq);
        if (s->quota) grpc_resource_quota_unref(s->quota);
        pthread_mutex_destroy(&s->mu);
        pthread_mutex_destroy(&s->hmu);
        free(mh);
        free(s);
        return NULL;
    }
    /* a replacement binds the port the kernel chose, not ":0" again */
    char *colon = strrchr(s->addr, ':');
    if (colon) snprintf(colon + 1, sizeof(s->addr) - (size_t)(colon + 1 - s->addr), "%d", port);
    if (bound_port) *bound_port = port;
    tfps_debug("rpc: serving %d methods on %s (port %d, %s); limits: %d streams per connection, memory %zu MB, "
               "handshake %d ms, idle %d ms", nmethods, addr, port, tls_cert ? "mTLS" : "plaintext",
               s->lim.max_streams, s->lim.memory_limit >> 20, s->lim.handshake_timeout_ms, s->lim.idle_timeout_ms);
    return s;
}

/* ---- the listener watchdog (rpc.h, "server limits") ------------------------ */

/* Descriptors this process may still open: RLIMIT_NOFILE's soft limit minus
 * the entries of /proc/self/fd; 0 when not even that can be opened. */
static long fds_free(long *open_out, long *limit_out) {
    struct rlimit rl;
    long open_n = 0, limit = getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY ? (long)rl.rlim_cur
                                                                                                 : LONG_MAX;
    DIR *d = opendir("/proc/self/fd");
    if (!d) {
        if (open_out) *open_out = limit;
        if (limit_out) *limit_out = limit;
        return 0;
    }
    for (struct dirent *e; (e = readdir(d));)
        if (e->d_name[0] != '.') open_n++;
    closedir(d);
    if (open_out) *open_out = open_n - 1;   /* the directory's own descriptor */
    if (limit_out) *limit_out = limit;
    return limit - (open_n - 1);
}

/* The listening TCP sockets of this process on our port (gRPC's listener). */
static void find_listeners(tfps_rpc_server *s) {
    const char *colon = strrchr(s->addr, ':');
    int port = colon ? atoi(colon + 1) : 0;
    s->nlisten = 0;
    DIR *d = opendir("/proc/self/fd");
    if (!d) return;
    for (struct dirent *e; (e = readdir(d)) && s->nlisten < 2;) {
        int fd = atoi(e->d_name), acc = 0;
        socklen_t sl = sizeof(acc);
        struct stat st;
        struct sockaddr_storage a;
        socklen_t al = sizeof(a);
        if (e->d_name[0] == '.' || fd == dirfd(d) || fstat(fd, &st) != 0 || !S_ISSOCK(st.st_mode)) continue;
        if (getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &acc, &sl) != 0 || !acc) continue;
        if (getsockname(fd, (struct sockaddr *)&a, &al) != 0) continue;
        int p = a.ss_family == AF_INET6 ? ntohs(((struct sockaddr_in6 *)&a)->sin6_port)
                : a.ss_family == AF_INET ? ntohs(((struct sockaddr_in *)&a)->sin_port)
                                         : -1;
        if (p != port) continue;
        s->listen_fd[s->nlisten] = fd;
        s->listen_ino[s->nlisten++] = st.st_ino;
    }
    closedir(d);
}

/* Is gRPC's listener dead? Only a dead one leaves connections in its accept
 * queue (tcpi_unacked of a listening socket) check after check. */
static int listener_stuck(tfps_rpc_server *s) {
    if (s->nlisten == 0) find_listeners(s);
    unsigned queued = 0;
    for (int i = 0; i < s->nlisten; i++) {
        struct stat st;
        struct tcp_info ti;
        socklen_t tl = sizeof(ti);
        if (fstat(s->listen_fd[i], &st) != 0 || st.st_ino != s->listen_ino[i] ||
            getsockopt(s->listen_fd[i], IPPROTO_TCP, TCP_INFO, &ti, &tl) != 0) {
            s->nlisten = 0;   /* not ours any more: look again next time */
            s->stuck = 0;
            return 0;
        }
        queued += ti.tcpi_unacked;   /* for a listening socket: its accept queue */
    }
    s->stuck = queued > 0 && queued >= s->last_queue ? s->stuck + 1 : 0;
    s->last_queue = queued;
    return s->stuck >= RPC_STUCK_CHECKS;
}

/* Once a second: a dead listener is replaced as soon as descriptors are free
 * (rpc.h explains why gRPC 1.51 needs this). */
static void listener_watch(tfps_rpc_server *s) {
    if (atomic_exchange(&accept_failed, 0)) {
        s->need_rebuild = 1;
        tfps_warn("rpc: gRPC's listener on %s failed an accept (see its line above); gRPC 1.51 never accepts on "
                  "it again: replacing it", s->addr);
    } else if (s->srv && !s->need_rebuild && listener_stuck(s)) {
        s->need_rebuild = 1;
        tfps_warn("rpc: the listener on %s has left connections unaccepted for %d s: replacing it", s->addr,
                  RPC_STUCK_CHECKS);
    }
    if (!s->need_rebuild) return;
    long open_n, limit, nfree = fds_free(&open_n, &limit);
    double now = tfps_now();
    int say = now - s->rebuild_logged >= RPC_WAIT_LOG_EVERY_S;
    if (nfree < RPC_FD_RESERVE) {
        if (say) {
            s->rebuild_logged = now;
            tfps_warn("rpc: not accepting connections on %s: %ld of %ld file descriptors open; the listener comes "
                      "back when %d are free", s->addr, open_n, limit, RPC_FD_RESERVE);
        }
        return;
    }
    /* the other threads re-arm request slots on s->srv and destroy old servers: under mu */
    pthread_mutex_lock(&s->mu);
    if (s->srv) {
        int k = 0;
        while (k < RPC_MAX_OLD && s->old[k]) k++;
        if (k == RPC_MAX_OLD) {   /* four replaced servers still draining: cut their calls, try again later */
            for (k = 0; k < RPC_MAX_OLD; k++) grpc_server_cancel_all_calls(s->old[k]);
            pthread_mutex_unlock(&s->mu);
            return;
        }
        RPC_TAG_OUT(&s->old_tag[k]);
        grpc_server_shutdown_and_notify(s->srv, s->cq, &s->old_tag[k]);   /* closes the listener; calls finish */
        s->old[k] = s->srv;
        s->srv = NULL;
    }
    char err[TFPS_ERR_LEN];
    int port = 0;
    const int built = server_build(s, &port, err, sizeof(err));
    pthread_mutex_unlock(&s->mu);
    if (built != TFPS_OK) {   /* the old socket may close a moment later */
        if (say) {
            s->rebuild_logged = now;
            tfps_warn("rpc: %s; trying again", err);
        }
        return;
    }
    s->need_rebuild = 0;
    tfps_warn("rpc: listening on %s again (%ld of %ld file descriptors open)", s->addr, open_n, limit);
}

void tfps_rpc_server_set_threads(tfps_rpc_server *s, int n) {
    assert(!s->ran);
    s->nthreads = n < 1 ? 1 : n > TFPS_RPC_MAX_THREADS ? TFPS_RPC_MAX_THREADS : n;
}

int tfps_rpc_server_threads(const tfps_rpc_server *s) {
    return s->nthreads;
}

int tfps_rpc_server_run(tfps_rpc_server *s) {
    assert(!s->ran);
    s->ran = 1;
    if (s->nthreads > 1 && (s->th = calloc((size_t)s->nthreads - 1, sizeof(*s->th))))
        for (int i = 0; i < s->nthreads - 1; i++) {
            if (pthread_create(&s->th[s->nth], NULL, server_thread, s) != 0) {
                tfps_warn("rpc: could only start %d of %d server threads", s->nth + 1, s->nthreads);
                break;
            }
            s->nth++;
        }
    const double period = s->tick_ms / 1000.0;
    double next_tick = tfps_now() + period;
    while (!atomic_load_explicit(&s->stop, memory_order_relaxed)) {
        grpc_event ev = grpc_completion_queue_next(s->cq, rpc_after(next_tick - tfps_now()), NULL);
        if (ev.type == GRPC_OP_COMPLETE) server_event(s, ev);
        double now = tfps_now();
        if (now >= next_tick) {   /* also under a steady stream of calls */
            run_tick(s);
            glog_flush(tfps_now(), 0);
            next_tick = now + period;
            /* rpc_init raised glibc's trim threshold for speed: after a flood of unread replies is
             * gone, give the memory back (measured in test_limits) */
            pthread_mutex_lock(&s->mu);
            const int trim =
                s->reply_peak - s->reply_bytes >= RPC_TRIM_BYTES && now - s->trimmed_at >= RPC_TRIM_EVERY_S;
            if (trim) {
                s->reply_peak = s->reply_bytes;
                s->trimmed_at = now;
            }
            pthread_mutex_unlock(&s->mu);
            /* at most every few s: training's own 1 MB buffers are not re-faulted each step */
            if (trim) malloc_trim(0);
            if (now >= s->watch_at && !s->no_watch) {
                s->watch_at = now + RPC_WATCH_EVERY_S;
                listener_watch(s);
            }
        }
    }
    /* health says NOT_SERVING; no handler call after this (deliver checks it under hmu) */
    pthread_mutex_lock(&s->hmu);
    atomic_store(&s->stopping, 1);
    pthread_mutex_unlock(&s->hmu);
    /* The last tick may still answer held calls properly; the rest get UNAVAILABLE. */
    run_tick(s);
    server_shutdown(s);
    free(s->th);
    s->th = NULL;
    return TFPS_OK;
}

_Static_assert(ATOMIC_INT_LOCK_FREE == 2, "request_stop must be async-signal-safe");

void tfps_rpc_server_request_stop(tfps_rpc_server *s) {
    atomic_store_explicit(&s->stop, 1, memory_order_relaxed);
}

void tfps_rpc_server_free(tfps_rpc_server *s) {
    if (!s) return;
    server_shutdown(s);   /* when run never ran */
    if (s->creds) grpc_server_credentials_release(s->creds);
    if (s->quota) grpc_resource_quota_unref(s->quota);
    pthread_mutex_destroy(&s->mu);
    pthread_mutex_destroy(&s->hmu);
    free(s->mh);
    free(s);
}

/* ==== client ============================================================== */

typedef struct {
    char *name;     /* outlives the channels, as grpc_channel_register_call requires */
    void **handle;  /* per target; registered on first use */
} rpc_method;

struct tfps_rpc_client {
    int n;
    char **targets;
    grpc_channel **ch;
    double *last_wait_log;   /* per target: tfps_now() of its last info-level retry line */
    grpc_completion_queue *cq;
    rpc_method *m;
    int nm, capm;
};

tfps_rpc_client *tfps_rpc_client_new(const char *const *targets, int ntargets, size_t max_msg, char *err,
                                     size_t errlen) {
    if (ntargets <= 0 || !targets) {
        tfps_seterr(err, errlen, "rpc client: no targets");
        return NULL;
    }
    for (int i = 0; i < ntargets; i++)
        if (!targets[i] || !*targets[i]) {
            tfps_seterr(err, errlen, "rpc client: target %d is empty (expected host:port)", i);
            return NULL;
        }
    tfps_rpc_client *c = calloc(1, sizeof(*c));
    if (c) {
        c->targets = calloc((size_t)ntargets, sizeof(char *));
        c->ch = calloc((size_t)ntargets, sizeof(grpc_channel *));
        c->last_wait_log = calloc((size_t)ntargets, sizeof(double));
    }
    if (!c || !c->targets || !c->ch || !c->last_wait_log) goto oom;
    for (int i = 0; i < ntargets; i++) {
        c->targets[i] = strdup(targets[i]);
        if (!c->targets[i]) goto oom;
        c->last_wait_log[i] = -1e18;
    }
    grpc_arg args[4];
    size_t nargs = 0;
    /* A restarted or late ps is noticed within ~1 s (defaults: 1 s up to 120 s). */
    args[nargs++] = rpc_int_arg(GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS, 100);
    args[nargs++] = rpc_int_arg(GRPC_ARG_MAX_RECONNECT_BACKOFF_MS, 1000);
    if (max_msg > 0) {
        args[nargs++] = rpc_int_arg(GRPC_ARG_MAX_RECEIVE_MESSAGE_LENGTH, rpc_msg_limit(max_msg));
        args[nargs++] = rpc_int_arg(GRPC_ARG_MAX_SEND_MESSAGE_LENGTH, rpc_msg_limit(max_msg));
    }
    grpc_channel_args ca = {nargs, args};
    grpc_channel_credentials *cr = client_creds();
    for (int i = 0; i < ntargets; i++) c->ch[i] = grpc_channel_create(c->targets[i], cr, &ca);
    grpc_channel_credentials_release(cr);
    c->n = ntargets;
    c->cq = grpc_completion_queue_create_for_next(NULL);
    return c;
oom:
    if (c) {
        for (int i = 0; c->targets && i < ntargets; i++) free(c->targets[i]);
        free(c->targets);
        free(c->ch);
        free(c->last_wait_log);
        free(c);
    }
    tfps_seterr(err, errlen, "rpc client: out of memory");
    return NULL;
}

void tfps_rpc_client_free(tfps_rpc_client *c) {
    if (!c) return;
    for (int i = 0; i < c->n; i++) grpc_channel_destroy(c->ch[i]);
    grpc_completion_queue_shutdown(c->cq);
    while (grpc_completion_queue_next(c->cq, gpr_inf_future(GPR_CLOCK_MONOTONIC), NULL).type != GRPC_QUEUE_SHUTDOWN)
        ;
    grpc_completion_queue_destroy(c->cq);
    for (int i = 0; i < c->nm; i++) {
        free(c->m[i].name);
        free(c->m[i].handle);
    }
    free(c->m);
    for (int i = 0; i < c->n; i++) free(c->targets[i]);
    free(c->targets);
    free(c->ch);
    free(c->last_wait_log);
    free(c);
}

int tfps_rpc_client_targets(const tfps_rpc_client *c) {
    return c->n;
}

const char *tfps_rpc_client_target(const tfps_rpc_client *c, int i) {
    return (i >= 0 && i < c->n) ? c->targets[i] : NULL;
}

/* The registered-call handle of (target, method); NULL when out of memory. */
static void *method_handle(tfps_rpc_client *c, int target, const char *method) {
    rpc_method *m = NULL;
    for (int i = 0; i < c->nm && !m; i++)
        if (strcmp(c->m[i].name, method) == 0) m = &c->m[i];
    if (!m) {
        if (c->nm == c->capm) {
            int cap = c->capm ? 2 * c->capm : 8;
            rpc_method *nm = realloc(c->m, (size_t)cap * sizeof(*nm));
            if (!nm) return NULL;
            c->m = nm;
            c->capm = cap;
        }
        m = &c->m[c->nm];
        m->name = strdup(method);
        m->handle = calloc((size_t)c->n, sizeof(void *));
        if (!m->name || !m->handle) {
            free(m->name);
            free(m->handle);
            return NULL;
        }
        c->nm++;
    }
    if (!m->handle[target]) m->handle[target] = grpc_channel_register_call(c->ch[target], m->name, NULL, NULL);
    return m->handle[target];
}

enum { CC_RUNNING = 1, CC_BACKOFF, CC_DONE };

typedef struct {
    int state;
    grpc_slice body;              /* the request (copied once, or taken over: tfps_rpc_req.take); each attempt shares it */
    void *handle;
    grpc_call *call;
    grpc_byte_buffer *send, *recv;
    grpc_metadata_array init_md, trail_md;
    grpc_status_code status;
    grpc_slice details;
    double retry_at, backoff;
    double t_start, t_logged;     /* the attempt's start; its last "no answer" line */
    int attempts;
} rpc_ccall;

static void attempt_start(tfps_rpc_client *c, rpc_ccall *x, int target, gpr_timespec deadline, int wait_for_ready) {
    x->attempts++;
    x->state = CC_RUNNING;
    x->t_start = x->t_logged = tfps_now();
    x->call = grpc_channel_create_registered_call(c->ch[target], NULL, GRPC_PROPAGATE_DEFAULTS, c->cq, x->handle,
                                                  deadline, NULL);
    x->send = grpc_raw_byte_buffer_create(&x->body, 1);
    x->recv = NULL;
    grpc_metadata_array_init(&x->init_md);
    grpc_metadata_array_init(&x->trail_md);
    x->status = GRPC_STATUS_UNKNOWN;
    x->details = grpc_empty_slice();
    grpc_op ops[6];
    memset(ops, 0, sizeof(ops));
    ops[0].op = GRPC_OP_SEND_INITIAL_METADATA;
    ops[0].flags = wait_for_ready ? GRPC_INITIAL_METADATA_WAIT_FOR_READY : 0;
    ops[1].op = GRPC_OP_SEND_MESSAGE;
    ops[1].data.send_message.send_message = x->send;
    ops[2].op = GRPC_OP_SEND_CLOSE_FROM_CLIENT;
    ops[3].op = GRPC_OP_RECV_INITIAL_METADATA;
    ops[3].data.recv_initial_metadata.recv_initial_metadata = &x->init_md;
    ops[4].op = GRPC_OP_RECV_MESSAGE;
    ops[4].data.recv_message.recv_message = &x->recv;
    ops[5].op = GRPC_OP_RECV_STATUS_ON_CLIENT;
    ops[5].data.recv_status_on_client.trailing_metadata = &x->trail_md;
    ops[5].data.recv_status_on_client.status = &x->status;
    ops[5].data.recv_status_on_client.status_details = &x->details;
    grpc_call *call = x->call;
    RPC_TAG_OUT(x);
    grpc_call_error e = grpc_call_start_batch(call, ops, 6, x, NULL);
    if (e != GRPC_CALL_OK) {
        /* No tag will come: mark it done at once (the caller checks). */
        x->status = GRPC_STATUS_INTERNAL;
        grpc_slice_unref(x->details);
        char msg[64];
        snprintf(msg, sizeof(msg), "grpc_call_start_batch refused (%d)", (int)e);
        x->details = grpc_slice_from_copied_string(msg);
        x->state = CC_DONE;
    }
}

static void attempt_end(rpc_ccall *x) {
    grpc_byte_buffer_destroy(x->send);
    x->send = NULL;
    if (x->recv) grpc_byte_buffer_destroy(x->recv);
    x->recv = NULL;
    grpc_metadata_array_destroy(&x->init_md);
    grpc_metadata_array_destroy(&x->trail_md);
    grpc_slice_unref(x->details);
    x->details = grpc_empty_slice();
    grpc_call_unref(x->call);
    x->call = NULL;
}

/* The finished attempt into r: the response copied into one block, or, with
 * segments, its pieces left where gRPC received them (the byte buffer moves
 * to r). */
static void result_fill(rpc_ccall *x, int segments, tfps_rpc_result *r) {
    r->status = (int)x->status;
    size_t n = GRPC_SLICE_LENGTH(x->details);
    if (n > sizeof(r->details) - 1) n = sizeof(r->details) - 1;
    memcpy(r->details, GRPC_SLICE_START_PTR(x->details), n);
    r->details[n] = '\0';
    r->resp = NULL;
    r->resp_len = 0;
    r->segs = NULL;
    r->nsegs = 0;
    r->held = NULL;
    if (x->status != GRPC_STATUS_OK || !x->recv) return;
    if (segments && x->recv->type == GRPC_BB_RAW && x->recv->data.raw.compression == GRPC_COMPRESS_NONE) {
        const grpc_slice_buffer *sb = &x->recv->data.raw.slice_buffer;
        tfps_rpc_seg *sg = sb->count ? malloc(sb->count * sizeof(*sg)) : NULL;
        if (sg || !sb->count) {
            for (size_t i = 0; i < sb->count; i++)
                sg[i] = (tfps_rpc_seg){GRPC_SLICE_START_PTR(sb->slices[i]), GRPC_SLICE_LENGTH(sb->slices[i])};
            r->segs = sg;
            r->nsegs = (int)sb->count;
            r->held = x->recv;   // the slices stay alive with it (tfps_rpc_result_clear)
            x->recv = NULL;
            return;
        }   // out of memory for the list: one block, as without segments
    }
    grpc_byte_buffer_reader rd;
    if (!grpc_byte_buffer_reader_init(&rd, x->recv)) {
        r->status = TFPS_RPC_INTERNAL;
        snprintf(r->details, sizeof(r->details), "unreadable response message");
        return;
    }
    size_t len = grpc_byte_buffer_length(x->recv), off = 0;
    uint8_t *buf = len ? malloc(len) : NULL;
    grpc_slice sl;
    while (grpc_byte_buffer_reader_next(&rd, &sl)) {
        size_t k = GRPC_SLICE_LENGTH(sl);
        if (off + k > len) {   /* only if the length was that of a compressed buffer */
            uint8_t *nb = realloc(buf, off + k);
            if (!nb) {
                grpc_slice_unref(sl);
                break;
            }
            buf = nb;
            len = off + k;
        }
        if (k) memcpy(buf + off, GRPC_SLICE_START_PTR(sl), k);
        off += k;
        grpc_slice_unref(sl);
    }
    grpc_byte_buffer_reader_destroy(&rd);
    if (len && (!buf || off != len)) {
        free(buf);
        r->status = TFPS_RPC_RESOURCE_EXHAUSTED;
        snprintf(r->details, sizeof(r->details), "out of memory copying a %zu-byte response", len);
        return;
    }
    r->resp = buf;
    r->resp_len = off;
    tfps_rpc_seg *one = segments && off ? malloc(sizeof(*one)) : NULL;
    if (one) {   // (a compressed message, or no memory for the list before): one piece, the block
        *one = (tfps_rpc_seg){buf, off};
        r->segs = one;
        r->nsegs = 1;
    } else if (segments && off) {
        free(buf);
        r->resp = NULL;
        r->resp_len = 0;
        r->status = TFPS_RPC_RESOURCE_EXHAUSTED;
        snprintf(r->details, sizeof(r->details), "out of memory listing a %zu-byte response", off);
    }
}

/* A batch refused before any call started: the bodies handed over are freed. */
static int batch_refused(const tfps_rpc_req *reqs, int n) {
    for (int k = 0; reqs && k < n; k++)
        if (reqs[k].take) free((void *)reqs[k].body);
    return TFPS_ERR;
}

int tfps_rpc_call_batch(tfps_rpc_client *c, const tfps_rpc_req *reqs, int n, double timeout_s, int wait_for_ready,
                        tfps_rpc_result *results, char *err, size_t errlen) {
    if (n < 0 || (n > 0 && (!reqs || !results))) {
        tfps_seterr(err, errlen, "rpc: bad batch of %d requests", n);
        return batch_refused(reqs, n);
    }
    for (int k = 0; k < n; k++) {
        const tfps_rpc_req *q = &reqs[k];
        if (q->target < 0 || q->target >= c->n) {
            tfps_seterr(err, errlen, "rpc: request %d: target %d out of range 0..%d", k, q->target, c->n - 1);
            return batch_refused(reqs, n);
        }
        if (!q->method || q->method[0] != '/') {
            tfps_seterr(err, errlen, "rpc: request %d: method \"%s\" is not a full path like /pkg.Service/Method", k,
                        q->method ? q->method : "(null)");
            return batch_refused(reqs, n);
        }
        if (!q->body && q->len > 0) {
            tfps_seterr(err, errlen, "rpc: request %d: NULL body of %zu bytes", k, q->len);
            return batch_refused(reqs, n);
        }
    }
    if (n == 0) return TFPS_OK;
    rpc_ccall *xs = calloc((size_t)n, sizeof(*xs));
    if (!xs) {
        tfps_seterr(err, errlen, "rpc: out of memory for %d requests", n);
        return batch_refused(reqs, n);
    }
    for (int k = 0; k < n; k++) {
        xs[k].handle = method_handle(c, reqs[k].target, reqs[k].method);
        if (!xs[k].handle) {
            free(xs);
            tfps_seterr(err, errlen, "rpc: cannot register method %s", reqs[k].method);
            return batch_refused(reqs, n);
        }
    }
    const double t_end = tfps_now() + timeout_s;
    const gpr_timespec deadline = rpc_after(timeout_s);
    int active = n, cut = 0;
    for (int k = 0; k < n; k++) {
        rpc_ccall *x = &xs[k];
        if (reqs[k].take && reqs[k].len)   // sent from where it is; gRPC frees it after its last use
            x->body = grpc_slice_new((void *)reqs[k].body, reqs[k].len, free);
        else
            x->body = reqs[k].len ? grpc_slice_from_copied_buffer((const char *)reqs[k].body, reqs[k].len)
                                  : grpc_empty_slice();
        if (reqs[k].take && !reqs[k].len) free((void *)reqs[k].body);
        x->backoff = RPC_BACKOFF_FIRST_S;
        attempt_start(c, x, reqs[k].target, deadline, wait_for_ready);
        if (x->state == CC_DONE) active--;
    }
    while (active > 0) {
        if (interrupted && !cut) {   // a signal: every call of this batch ends now
            cut = 1;
            for (int k = 0; k < n; k++) {
                rpc_ccall *x = &xs[k];
                if (x->state == CC_RUNNING) {
                    grpc_call_cancel_with_status(x->call, GRPC_STATUS_CANCELLED, "interrupted by a signal", NULL);
                } else if (x->state == CC_BACKOFF) {
                    results[k] = (tfps_rpc_result){.status = TFPS_RPC_CANCELLED};
                    snprintf(results[k].details, sizeof(results[k].details), "interrupted by a signal");
                    x->state = CC_DONE;
                    active--;
                }
            }
        }
        if (active == 0) break;
        double wake = tfps_now() + 1.0;   /* calls end by their deadline; the timeout only paces the loop */
        for (int k = 0; k < n; k++)
            if (xs[k].state == CC_BACKOFF && xs[k].retry_at < wake) wake = xs[k].retry_at;
        grpc_event ev = grpc_completion_queue_next(c->cq, rpc_after(wake - tfps_now()), NULL);
        if (ev.type == GRPC_OP_COMPLETE) {
            RPC_TAG_IN(ev.tag);
            rpc_ccall *x = ev.tag;
            int k = (int)(x - xs);
            assert(k >= 0 && k < n && x->state == CC_RUNNING);
            if (!ev.success && x->status == GRPC_STATUS_OK) {   /* not seen in practice */
                x->status = GRPC_STATUS_INTERNAL;
                grpc_slice_unref(x->details);
                x->details = grpc_slice_from_static_string("call batch failed");
            }
            double now = tfps_now();
            if (x->status == GRPC_STATUS_UNAVAILABLE && now + x->backoff < t_end && !cut) {
                const char *tgt = c->targets[reqs[k].target];
                size_t dl = GRPC_SLICE_LENGTH(x->details);
                int lvl = TFPS_LOG_DEBUG;
                if (now - c->last_wait_log[reqs[k].target] >= RPC_WAIT_LOG_EVERY_S) {
                    lvl = TFPS_LOG_INFO;
                    c->last_wait_log[reqs[k].target] = now;
                }
                tfps_log(lvl, "rpc: waiting for %s (UNAVAILABLE: %.*s), retry in %.2gs", tgt, dl > 200 ? 200 : (int)dl,
                         (const char *)GRPC_SLICE_START_PTR(x->details), x->backoff);
                attempt_end(x);
                x->state = CC_BACKOFF;
                x->retry_at = now + x->backoff;
                x->backoff = x->backoff * 2 < RPC_BACKOFF_MAX_S ? x->backoff * 2 : RPC_BACKOFF_MAX_S;
            } else {
                result_fill(x, reqs[k].segments, &results[k]);
                attempt_end(x);
                x->state = CC_DONE;
                active--;
            }
        }
        double now = tfps_now();
        for (int k = 0; k < n; k++) {   // a call that hangs (a link down, a held pull) says so every few seconds
            rpc_ccall *x = &xs[k];
            if (x->state != CC_RUNNING || now - x->t_logged < RPC_WAIT_LOG_EVERY_S || wait_for_ready) continue;
            x->t_logged = now;
            tfps_info("rpc: %s %s: no answer for %.0f s (deadline in %.0f s)", c->targets[reqs[k].target],
                      reqs[k].method, now - x->t_start, t_end - now);
        }
        for (int k = 0; k < n; k++) {
            rpc_ccall *x = &xs[k];
            if (x->state != CC_BACKOFF || x->retry_at > now || cut) continue;
            attempt_start(c, x, reqs[k].target, deadline, wait_for_ready);
            if (x->state == CC_DONE) active--;
        }
    }
    int rc = TFPS_OK;
    for (int k = 0; k < n; k++) {
        rpc_ccall *x = &xs[k];
        if (x->call) {   /* start_batch refused: never went through the queue */
            result_fill(x, reqs[k].segments, &results[k]);
            attempt_end(x);
        }
        grpc_slice_unref(x->body);
        if (rc == TFPS_OK && results[k].status != TFPS_RPC_OK) {
            if (results[k].details[0])
                tfps_seterr(err, errlen, "%s %s: %s: %s", c->targets[reqs[k].target], reqs[k].method,
                            tfps_rpc_status_name(results[k].status), results[k].details);
            else
                tfps_seterr(err, errlen, "%s %s: %s", c->targets[reqs[k].target], reqs[k].method,
                            tfps_rpc_status_name(results[k].status));
            rc = TFPS_ERR;
        }
    }
    free(xs);
    return rc;
}

int tfps_rpc_call_all(tfps_rpc_client *c, const char *method, const uint8_t *const *bodies, const size_t *lens,
                      double timeout_s, int wait_for_ready, tfps_rpc_result *results, char *err, size_t errlen) {
    tfps_rpc_req *reqs = calloc((size_t)c->n, sizeof(*reqs));
    tfps_rpc_result *rs = calloc((size_t)c->n, sizeof(*rs));
    if (!reqs || !rs) {
        free(reqs);
        free(rs);
        return tfps_seterr(err, errlen, "rpc: out of memory");
    }
    int n = 0;
    for (int i = 0; i < c->n; i++) {
        if (!bodies[i]) continue;
        reqs[n].target = i;
        reqs[n].method = method;
        reqs[n].body = bodies[i];
        reqs[n].len = lens[i];
        n++;
    }
    int rc = tfps_rpc_call_batch(c, reqs, n, timeout_s, wait_for_ready, rs, err, errlen);
    /* results[i] of a target not called stays as it was. */
    for (int k = 0; k < n; k++) results[reqs[k].target] = rs[k];
    free(reqs);
    free(rs);
    return rc;
}

int tfps_rpc_call_one(tfps_rpc_client *c, int target, const char *method, const uint8_t *body, size_t len,
                      double timeout_s, int wait_for_ready, tfps_rpc_result *result, char *err, size_t errlen) {
    tfps_rpc_req q = {.target = target, .method = method, .body = body, .len = len};
    return tfps_rpc_call_batch(c, &q, 1, timeout_s, wait_for_ready, result, err, errlen);
}

void tfps_rpc_result_clear(tfps_rpc_result *r) {
    if (!r) return;
    free(r->resp);
    r->resp = NULL;
    r->resp_len = 0;
    if (r->held) grpc_byte_buffer_destroy(r->held);
    free((void *)r->segs);
    r->held = NULL;
    r->segs = NULL;
    r->nsegs = 0;
    r->status = TFPS_RPC_OK;
    r->details[0] = '\0';
}

/* ==== test/bench helper: a stalled reader (rpc.h) ========================== */

struct tfps_rpc_flood {
    grpc_channel *ch;
    grpc_completion_queue *cq;
    grpc_call **calls;
    grpc_byte_buffer **send;
    grpc_status_code *status;
    grpc_metadata_array *trail, *init;
    grpc_slice *details;
    int n, pending;             /* pending: tags not back yet */
    atomic_int finished, stop;
    pthread_t thread;
};

/* Tags: 2*i+1 the send batch of call i, 2*i+2 its status. */
static void *flood_poll(void *arg) {
    tfps_rpc_flood *f = arg;
    while (!atomic_load(&f->stop)) {
        grpc_event ev = grpc_completion_queue_next(f->cq, rpc_after(0.05), NULL);
        if (ev.type != GRPC_OP_COMPLETE) continue;
        f->pending--;
        if (((intptr_t)ev.tag & 1) == 0) atomic_fetch_add(&f->finished, 1);
    }
    return NULL;
}

tfps_rpc_flood *tfps_rpc_flood_start(const char *target, const char *method, const uint8_t *body, size_t len, int n,
                                     char *err, size_t errlen) {
    tfps_rpc_flood *f = calloc(1, sizeof(*f));
    if (!f || n <= 0 || !(f->calls = calloc((size_t)n, sizeof(*f->calls))) ||
        !(f->send = calloc((size_t)n, sizeof(*f->send))) || !(f->status = calloc((size_t)n, sizeof(*f->status))) ||
        !(f->trail = calloc((size_t)n, sizeof(*f->trail))) || !(f->init = calloc((size_t)n, sizeof(*f->init))) ||
        !(f->details = calloc((size_t)n, sizeof(*f->details)))) {
        if (f) {
            free(f->calls);
            free(f->send);
            free(f->status);
            free(f->trail);
            free(f->init);
            free(f);
        }
        tfps_seterr(err, errlen, "rpc flood: out of memory or n %d < 1", n);
        return NULL;
    }
    f->n = n;
    atomic_init(&f->finished, 0);
    atomic_init(&f->stop, 0);
    /* No BDP probing: the streams keep HTTP/2's 64 KB window, so the replies really stall on the server
     * (with it, the client's transport would take ~MBs per stream whether the application reads or not). */
    /* A connection of its own (channels with equal args share one by default). */
    grpc_arg a[2] = {rpc_int_arg(GRPC_ARG_HTTP2_BDP_PROBE, 0), rpc_int_arg(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1)};
    grpc_channel_args ca = {2, a};
    grpc_channel_credentials *cr = grpc_insecure_credentials_create();
    f->ch = grpc_channel_create(target, cr, &ca);
    grpc_channel_credentials_release(cr);
    f->cq = grpc_completion_queue_create_for_next(NULL);
    grpc_slice m = grpc_slice_from_copied_string(method);
    for (int i = 0; i < n; i++) {
        f->calls[i] = grpc_channel_create_call(f->ch, NULL, GRPC_PROPAGATE_DEFAULTS, f->cq, m, NULL,
                                               gpr_inf_future(GPR_CLOCK_REALTIME), NULL);
        grpc_slice b = grpc_slice_from_copied_buffer((const char *)body, len);
        f->send[i] = grpc_raw_byte_buffer_create(&b, 1);
        grpc_slice_unref(b);
        grpc_metadata_array_init(&f->trail[i]);
        grpc_metadata_array_init(&f->init[i]);
        f->details[i] = grpc_empty_slice();
        grpc_op ops[3];
        memset(ops, 0, sizeof(ops));
        ops[0].op = GRPC_OP_SEND_INITIAL_METADATA;
        ops[0].flags = GRPC_INITIAL_METADATA_WAIT_FOR_READY;
        ops[1].op = GRPC_OP_SEND_MESSAGE;
        ops[1].data.send_message.send_message = f->send[i];
        ops[2].op = GRPC_OP_SEND_CLOSE_FROM_CLIENT;
        if (grpc_call_start_batch(f->calls[i], ops, 3, (void *)(intptr_t)(2 * i + 1), NULL) == GRPC_CALL_OK)
            f->pending++;
        /* no RECV_MESSAGE ever: the reply stays unread; the status comes only for calls refused without one */
        memset(ops, 0, sizeof(ops));
        ops[0].op = GRPC_OP_RECV_INITIAL_METADATA;
        ops[0].data.recv_initial_metadata.recv_initial_metadata = &f->init[i];
        ops[1].op = GRPC_OP_RECV_STATUS_ON_CLIENT;
        ops[1].data.recv_status_on_client.trailing_metadata = &f->trail[i];
        ops[1].data.recv_status_on_client.status = &f->status[i];
        ops[1].data.recv_status_on_client.status_details = &f->details[i];
        if (grpc_call_start_batch(f->calls[i], ops, 2, (void *)(intptr_t)(2 * i + 2), NULL) == GRPC_CALL_OK)
            f->pending++;
    }
    grpc_slice_unref(m);
    if (pthread_create(&f->thread, NULL, flood_poll, f) != 0) {
        atomic_store(&f->stop, 1);
        f->thread = 0;
    }
    return f;
}

int tfps_rpc_flood_finished(const tfps_rpc_flood *f) {
    return atomic_load(&((tfps_rpc_flood *)f)->finished);
}

void tfps_rpc_flood_stop(tfps_rpc_flood *f) {
    if (!f) return;
    atomic_store(&f->stop, 1);
    if (f->thread) pthread_join(f->thread, NULL);
    for (int i = 0; i < f->n; i++) grpc_call_cancel(f->calls[i], NULL);
    double until = tfps_now() + 10;   /* cancelled calls come back at once; bounded anyway */
    while (f->pending > 0 && tfps_now() < until) {
        grpc_event ev = grpc_completion_queue_next(f->cq, rpc_after(0.1), NULL);
        if (ev.type == GRPC_OP_COMPLETE) f->pending--;
    }
    for (int i = 0; i < f->n; i++) {
        grpc_call_unref(f->calls[i]);
        grpc_byte_buffer_destroy(f->send[i]);
        grpc_metadata_array_destroy(&f->trail[i]);
        grpc_metadata_array_destroy(&f->init[i]);
        grpc_slice_unref(f->details[i]);
    }
    grpc_channel_destroy(f->ch);
    grpc_completion_queue_shutdown(f->cq);
    while (grpc_completion_queue_next(f->cq, gpr_inf_future(GPR_CLOCK_MONOTONIC), NULL).type != GRPC_QUEUE_SHUTDOWN)
        ;
    grpc_completion_queue_destroy(f->cq);
    free(f->calls);
    free(f->send);
    free(f->status);
    free(f->trail);
    free(f->init);
    free(f->details);
    free(f);
}
