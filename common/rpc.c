/* rpc.c -- see rpc.h. Every grpc_* call of tfps lives in this file.
 *
 * Server: every tag on the completion queue is a tfps_rpc_call (or the
 * shutdown tag, &s->shutdown_tag). A call goes
 *
 *     WAITING (a request slot, re-armed as soon as it fills)
 *        -> HELD (handler called; on s->held until replied)
 *        -> REPLYING (one batch in flight) -> freed when that batch completes.
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
#define _POSIX_C_SOURCE 200809L
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
#include <limits.h>
#include <malloc.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define RPC_SLOTS_PER_METHOD 8    /* outstanding request_registered_call per method */
#define RPC_UNREG_SLOTS 2         /* for unknown methods, answered UNIMPLEMENTED */
#define RPC_DRAIN_CANCEL_S 5.0    /* shutdown: cancel calls still open after this */
#define RPC_BACKOFF_FIRST_S 0.05
#define RPC_BACKOFF_MAX_S 1.0
#define RPC_WAIT_LOG_EVERY_S 5.0  /* retry lines above debug level per target */
#define HEALTH_METHOD "/grpc.health.v1.Health/Check"

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
static void rpc_gpr_log(gpr_log_func_args *a) {
    tfps_log(a->severity == GPR_LOG_SEVERITY_ERROR ? TFPS_LOG_WARN : TFPS_LOG_DEBUG, "grpc: %s (%s:%d)", a->message,
             a->file, a->line);
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
    gpr_timespec deadline;
    grpc_metadata_array req_md;
    grpc_call_details details;  /* method < 0 only */
    grpc_byte_buffer *req;      /* the request message; NULL if the client sent none */
    grpc_byte_buffer *resp;
    grpc_slice status_msg;
    int has_status_msg;
    int cancelled;              /* RECV_CLOSE_ON_SERVER writes here */
    char *peer;                 /* gpr_malloc'd, on first tfps_rpc_call_peer */
    tfps_rpc_call *prev, *next; /* s->held while HELD */
};

struct tfps_rpc_server {
    grpc_server *srv;
    grpc_completion_queue *cq;
    void **mh;                  /* nmethods + 1 registered method handles; the last: health */
    const char *const *methods;
    int nmethods;
    tfps_rpc_handler handler;
    tfps_rpc_tick tick;
    int tick_ms;
    void *ctx;
    atomic_int stop;            /* lock-free: safe from a signal handler and from other threads */
    int stopping;               /* loop saw stop: handler no longer called, health NOT_SERVING */
    int shutdown_done;          /* the shutdown tag came back */
    int ran;
    tfps_rpc_call *held;        /* calls handed to the handler, not replied yet */
    int shutdown_tag;           /* only its address is used */
};

static void call_free(tfps_rpc_call *c) {
    if (c->req) grpc_byte_buffer_destroy(c->req);
    if (c->resp) grpc_byte_buffer_destroy(c->resp);
    if (c->has_status_msg) grpc_slice_unref(c->status_msg);
    grpc_metadata_array_destroy(&c->req_md);
    if (c->method < 0) grpc_call_details_destroy(&c->details);
    if (c->peer) gpr_free(c->peer);
    if (c->call) grpc_call_unref(c->call);   /* cancels it if it never finished */
    free(c);
}

static void request_slot(tfps_rpc_server *s, int method) {
    tfps_rpc_call *c = calloc(1, sizeof(*c));
    if (!c) {
        tfps_error("rpc: out of memory re-arming a request slot");
        return;
    }
    c->s = s;
    c->method = method;
    c->state = CALL_WAITING;
    grpc_metadata_array_init(&c->req_md);
    grpc_call_error e;
    if (method < 0) {
        grpc_call_details_init(&c->details);
        e = grpc_server_request_call(s->srv, &c->call, &c->details, &c->req_md, s->cq, s->cq, c);
    } else {
        e = grpc_server_request_registered_call(s->srv, s->mh[method], &c->call, &c->deadline, &c->req_md, &c->req,
                                                s->cq, s->cq, c);
    }
    if (e != GRPC_CALL_OK) {
        tfps_error("rpc: request_call refused (grpc_call_error %d)", (int)e);
        call_free(c);
    }
}

static void held_unlink(tfps_rpc_call *c) {
    tfps_rpc_server *s = c->s;
    if (c->prev)
        c->prev->next = c->next;
    else
        s->held = c->next;
    if (c->next) c->next->prev = c->prev;
    c->prev = c->next = NULL;
}

/* The one reply batch; the call is freed when it completes. body is copied
 * (once, into a slice) and sent only with status OK. */
static void start_reply(tfps_rpc_call *c, int status, const char *msg, const uint8_t *body, size_t len) {
    if (c->state == CALL_HELD) held_unlink(c);
    c->state = CALL_REPLYING;
    grpc_op ops[4], *op = ops;
    memset(ops, 0, sizeof(ops));
    op->op = GRPC_OP_SEND_INITIAL_METADATA;
    op->data.send_initial_metadata.count = 0;
    op++;
    op->op = GRPC_OP_RECV_CLOSE_ON_SERVER;
    op->data.recv_close_on_server.cancelled = &c->cancelled;
    op++;
    if (status == TFPS_RPC_OK) {
        if (len > 0) {
            grpc_slice sl = grpc_slice_from_copied_buffer((const char *)body, len);
            c->resp = grpc_raw_byte_buffer_create(&sl, 1);
            grpc_slice_unref(sl);
        } else {
            c->resp = grpc_raw_byte_buffer_create(NULL, 0);
        }
        op->op = GRPC_OP_SEND_MESSAGE;
        op->data.send_message.send_message = c->resp;
        op++;
    }
    op->op = GRPC_OP_SEND_STATUS_FROM_SERVER;
    op->data.send_status_from_server.trailing_metadata_count = 0;
    op->data.send_status_from_server.status = (grpc_status_code)status;
    if (msg && *msg) {
        c->status_msg = grpc_slice_from_copied_string(msg);
        c->has_status_msg = 1;
        op->data.send_status_from_server.status_details = &c->status_msg;
    }
    op++;
    grpc_call_error e = grpc_call_start_batch(c->call, ops, (size_t)(op - ops), c, NULL);
    if (e != GRPC_CALL_OK) {
        /* No tag will come back: free now (unref cancels the call). */
        tfps_error("rpc: reply batch refused (grpc_call_error %d)", (int)e);
        call_free(c);
    }
}

void tfps_rpc_reply(tfps_rpc_call *call, const uint8_t *body, size_t len) {
    assert(call && call->state == CALL_HELD);
    assert(body || len == 0);
    start_reply(call, TFPS_RPC_OK, NULL, body, len);
}

void tfps_rpc_reply_error(tfps_rpc_call *call, int status, const char *msg) {
    assert(call && call->state == CALL_HELD);
    if (status < 0 || status > 16) status = TFPS_RPC_UNKNOWN;
    start_reply(call, status, status == TFPS_RPC_OK ? NULL : msg, NULL, 0);
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
        start_reply(c, TFPS_RPC_INVALID_ARGUMENT, "unreadable HealthCheckRequest", NULL, 0);
        return;
    }
    const char *svc = NULL;
    void *owner = NULL;
    char err[TFPS_ERR_LEN];
    if (tfps_wire_unpack_health_req(GRPC_SLICE_START_PTR(sl), GRPC_SLICE_LENGTH(sl), &svc, &owner, err,
                                    sizeof(err)) != TFPS_OK) {
        start_reply(c, TFPS_RPC_INVALID_ARGUMENT, err, NULL, 0);
    } else if (!health_knows(s, svc)) {
        char msg[160];
        snprintf(msg, sizeof(msg), "unknown service \"%.100s\"", svc);
        start_reply(c, TFPS_RPC_NOT_FOUND, msg, NULL, 0);
    } else {
        tfps_buf resp = {0};
        if (tfps_wire_pack_health_resp(!s->stopping, &resp) != TFPS_OK)
            start_reply(c, TFPS_RPC_RESOURCE_EXHAUSTED, "out of memory packing a HealthCheckResponse", NULL, 0);
        else
            start_reply(c, TFPS_RPC_OK, NULL, resp.data, resp.len);   /* copied: resp is ours to free */
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
        start_reply(c, TFPS_RPC_UNIMPLEMENTED, msg, NULL, 0);
        return;
    }
    if (c->method == s->nmethods) {
        health_check(s, c);
        return;
    }
    if (s->stopping) {
        start_reply(c, TFPS_RPC_UNAVAILABLE, "server shutting down", NULL, 0);
        return;
    }
    grpc_slice sl;
    if (!c->req) {
        start_reply(c, TFPS_RPC_INVALID_ARGUMENT, "request without a message", NULL, 0);
        return;
    }
    if (!rpc_bb_slice(c->req, &sl)) {
        start_reply(c, TFPS_RPC_INVALID_ARGUMENT, "unreadable request message", NULL, 0);
        return;
    }
    grpc_byte_buffer_destroy(c->req);
    c->req = NULL;
    c->state = CALL_HELD;
    c->prev = NULL;
    c->next = s->held;
    if (s->held) s->held->prev = c;
    s->held = c;
    /* c may be replied (and, once its batch completes, freed) in here. */
    s->handler(s->ctx, c, c->method, GRPC_SLICE_START_PTR(sl), GRPC_SLICE_LENGTH(sl));
    grpc_slice_unref(sl);
}

static void server_event(tfps_rpc_server *s, grpc_event ev) {
    if (ev.tag == &s->shutdown_tag) {
        s->shutdown_done = 1;
        return;
    }
    tfps_rpc_call *c = ev.tag;
    if (c->state == CALL_REPLYING) {
        call_free(c);
        return;
    }
    assert(c->state == CALL_WAITING);
    if (!ev.success) {   /* the server is shutting down */
        if (!s->stopping) tfps_warn("rpc: a request slot failed while serving; re-arming it");
        int method = c->method;
        call_free(c);
        if (!s->stopping) request_slot(s, method);
        return;
    }
    if (!s->stopping) request_slot(s, c->method);   /* re-arm before the handler runs */
    deliver(s, c);
}

/* Answers held calls, shuts the server down and drains and destroys the queue. */
static void server_shutdown(tfps_rpc_server *s) {
    if (!s->srv) return;
    s->stopping = 1;
    int nheld = 0;
    while (s->held) {
        start_reply(s->held, TFPS_RPC_UNAVAILABLE, "server shutting down", NULL, 0);
        nheld++;
    }
    if (nheld)
        tfps_info("rpc: answered %d held call%s UNAVAILABLE (server shutting down)", nheld, nheld == 1 ? "" : "s");
    grpc_server_shutdown_and_notify(s->srv, s->cq, &s->shutdown_tag);
    double cancel_at = tfps_now() + RPC_DRAIN_CANCEL_S;
    int cancelled = 0;
    while (!s->shutdown_done) {
        grpc_event ev = grpc_completion_queue_next(s->cq, rpc_after(0.1), NULL);
        if (ev.type == GRPC_OP_COMPLETE) server_event(s, ev);
        if (!cancelled && tfps_now() > cancel_at) {
            tfps_warn("rpc: calls still open %.0f s after shutdown began; cancelling them", RPC_DRAIN_CANCEL_S);
            grpc_server_cancel_all_calls(s->srv);
            cancelled = 1;
        }
    }
    grpc_server_destroy(s->srv);
    s->srv = NULL;
    grpc_completion_queue_shutdown(s->cq);
    for (;;) {
        grpc_event ev = grpc_completion_queue_next(s->cq, gpr_inf_future(GPR_CLOCK_MONOTONIC), NULL);
        if (ev.type == GRPC_QUEUE_SHUTDOWN) break;
        if (ev.type == GRPC_OP_COMPLETE) server_event(s, ev);
    }
    grpc_completion_queue_destroy(s->cq);
    s->cq = NULL;
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
    tfps_rpc_server *s = calloc(1, sizeof(*s));
    void **mh = calloc((size_t)nmethods + 1, sizeof(void *));
    if (!s || !mh) {
        free(s);
        free(mh);
        tfps_seterr(err, errlen, "rpc server: out of memory");
        return NULL;
    }
    atomic_init(&s->stop, 0);
    s->mh = mh;
    s->methods = methods;
    s->nmethods = nmethods;
    s->handler = handler;
    s->tick = tick;
    s->tick_ms = tick_ms > 0 ? tick_ms : 100;
    s->ctx = ctx;

    grpc_arg args[3];
    size_t nargs = 0;
    /* No SO_REUSEPORT: a second ps on the same port must fail, not share it. */
    args[nargs++] = rpc_int_arg(GRPC_ARG_ALLOW_REUSEPORT, 0);
    if (max_msg > 0) {   /* 0: gRPC's defaults */
        args[nargs++] = rpc_int_arg(GRPC_ARG_MAX_RECEIVE_MESSAGE_LENGTH, rpc_msg_limit(max_msg));
        args[nargs++] = rpc_int_arg(GRPC_ARG_MAX_SEND_MESSAGE_LENGTH, rpc_msg_limit(max_msg));
    }
    grpc_channel_args ca = {nargs, args};
    s->srv = grpc_server_create(&ca, NULL);
    s->cq = grpc_completion_queue_create_for_next(NULL);
    grpc_server_register_completion_queue(s->srv, s->cq, NULL);

    const char *fail = NULL;
    for (int i = 0; i <= nmethods && !fail; i++) {
        const char *m = i < nmethods ? methods[i] : HEALTH_METHOD;
        mh[i] = grpc_server_register_method(s->srv, m, NULL, GRPC_SRM_PAYLOAD_READ_INITIAL_BYTE_BUFFER, 0);
        if (!mh[i]) {
            fail = m;
            tfps_seterr(err, errlen, "rpc server: cannot register method %s (given twice, or the built-in %s?)", m,
                        HEALTH_METHOD);
        }
    }
    int port = 0;
    if (!fail) {
        grpc_server_credentials *cr = server_creds(err, errlen);
        if (!cr) fail = addr;
        else port = grpc_server_add_http2_port(s->srv, addr, cr);
        if (cr) grpc_server_credentials_release(cr);
        if (!fail && port == 0) {
            fail = addr;
            tfps_seterr(err, errlen,
                        "rpc server: cannot listen on %s: port in use or bad address (expected host:port, e.g. "
                        "0.0.0.0:2222)",
                        addr);
        }
    }
    if (fail) {   /* never started, no listener: destroy directly */
        grpc_server_destroy(s->srv);
        grpc_completion_queue_shutdown(s->cq);
        while (grpc_completion_queue_next(s->cq, gpr_inf_future(GPR_CLOCK_MONOTONIC), NULL).type != GRPC_QUEUE_SHUTDOWN)
            ;
        grpc_completion_queue_destroy(s->cq);
        free(mh);
        free(s);
        return NULL;
    }
    grpc_server_start(s->srv);
    for (int i = 0; i <= nmethods; i++)
        for (int k = 0; k < RPC_SLOTS_PER_METHOD; k++) request_slot(s, i);
    for (int k = 0; k < RPC_UNREG_SLOTS; k++) request_slot(s, -1);
    if (bound_port) *bound_port = port;
    tfps_debug("rpc: serving %d methods on %s (port %d, %s)", nmethods, addr, port,
               tls_cert ? "mTLS" : "plaintext");
    return s;
}

int tfps_rpc_server_run(tfps_rpc_server *s) {
    assert(!s->ran);
    s->ran = 1;
    const double period = s->tick_ms / 1000.0;
    double next_tick = tfps_now() + period;
    while (!atomic_load_explicit(&s->stop, memory_order_relaxed)) {
        grpc_event ev = grpc_completion_queue_next(s->cq, rpc_after(next_tick - tfps_now()), NULL);
        if (ev.type == GRPC_OP_COMPLETE) server_event(s, ev);
        double now = tfps_now();
        if (now >= next_tick) {   /* also under a steady stream of calls */
            if (s->tick) s->tick(s->ctx);
            next_tick = now + period;
        }
    }
    s->stopping = 1;   /* health says NOT_SERVING; no more handler calls */
    /* The last tick may still answer held calls properly; the rest get UNAVAILABLE. */
    if (s->tick) s->tick(s->ctx);
    server_shutdown(s);
    return TFPS_OK;
}

_Static_assert(ATOMIC_INT_LOCK_FREE == 2, "request_stop must be async-signal-safe");

void tfps_rpc_server_request_stop(tfps_rpc_server *s) {
    atomic_store_explicit(&s->stop, 1, memory_order_relaxed);
}

void tfps_rpc_server_free(tfps_rpc_server *s) {
    if (!s) return;
    server_shutdown(s);   /* when run never ran */
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
    grpc_slice body;              /* the request, copied once; each attempt shares it */
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
    grpc_call_error e = grpc_call_start_batch(x->call, ops, 6, x, NULL);
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

/* Copies the finished attempt into r (one copy of the response). */
static void result_fill(rpc_ccall *x, tfps_rpc_result *r) {
    r->status = (int)x->status;
    size_t n = GRPC_SLICE_LENGTH(x->details);
    if (n > sizeof(r->details) - 1) n = sizeof(r->details) - 1;
    memcpy(r->details, GRPC_SLICE_START_PTR(x->details), n);
    r->details[n] = '\0';
    r->resp = NULL;
    r->resp_len = 0;
    if (x->status != GRPC_STATUS_OK || !x->recv) return;
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
}

int tfps_rpc_call_batch(tfps_rpc_client *c, const tfps_rpc_req *reqs, int n, double timeout_s, int wait_for_ready,
                        tfps_rpc_result *results, char *err, size_t errlen) {
    if (n < 0 || (n > 0 && (!reqs || !results))) return tfps_seterr(err, errlen, "rpc: bad batch of %d requests", n);
    for (int k = 0; k < n; k++) {
        const tfps_rpc_req *q = &reqs[k];
        if (q->target < 0 || q->target >= c->n)
            return tfps_seterr(err, errlen, "rpc: request %d: target %d out of range 0..%d", k, q->target,
                               c->n - 1);
        if (!q->method || q->method[0] != '/')
            return tfps_seterr(err, errlen,
                               "rpc: request %d: method \"%s\" is not a full path like /pkg.Service/Method", k,
                               q->method ? q->method : "(null)");
        if (!q->body && q->len > 0)
            return tfps_seterr(err, errlen, "rpc: request %d: NULL body of %zu bytes", k, q->len);
    }
    if (n == 0) return TFPS_OK;
    rpc_ccall *xs = calloc((size_t)n, sizeof(*xs));
    if (!xs) return tfps_seterr(err, errlen, "rpc: out of memory for %d requests", n);
    for (int k = 0; k < n; k++) {
        xs[k].handle = method_handle(c, reqs[k].target, reqs[k].method);
        if (!xs[k].handle) {
            free(xs);
            return tfps_seterr(err, errlen, "rpc: cannot register method %s", reqs[k].method);
        }
    }
    const double t_end = tfps_now() + timeout_s;
    const gpr_timespec deadline = rpc_after(timeout_s);
    int active = n, cut = 0;
    for (int k = 0; k < n; k++) {
        rpc_ccall *x = &xs[k];
        x->body = reqs[k].len ? grpc_slice_from_copied_buffer((const char *)reqs[k].body, reqs[k].len)
                              : grpc_empty_slice();
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
                result_fill(x, &results[k]);
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
            result_fill(x, &results[k]);
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
    tfps_rpc_req q = {target, method, body, len};
    return tfps_rpc_call_batch(c, &q, 1, timeout_s, wait_for_ready, result, err, errlen);
}

void tfps_rpc_result_clear(tfps_rpc_result *r) {
    if (!r) return;
    free(r->resp);
    r->resp = NULL;
    r->resp_len = 0;
    r->status = TFPS_RPC_OK;
    r->details[0] = '\0';
}
