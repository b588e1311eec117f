/* test_rpc.c -- the rpc module against real gRPC servers on loopback, each
 * on a port the kernel chose, run by tfps_rpc_server_run in a thread: echo of
 * 0 B to 6 MiB, calls to three servers at once, error statuses, a deferred
 * reply, deadlines, retries against nothing listening, wait-for-ready, the
 * message size limit on both sides, the health service, unknown methods,
 * a stop that answers held calls UNAVAILABLE, and mTLS (tfps_rpc_set_tls):
 * certificates made at test time by deploy/make-certs.sh, a good client
 * served, every bad one refused at the handshake while the server serves on.
 *
 * Every server here polls with TFPS_TEST_RPC_THREADS threads (default 3;
 * ctest runs the suite again with 1, the single loop of old): the handler
 * and tick must never overlap (checked on every call), calls must still be
 * handed to the handler by more than one thread, and a stop under load must
 * answer every call and join every thread. */
#define _POSIX_C_SOURCE 200809L
#include "log.h"
#include "rpc.h"
#include "tfps.h"

#include <CUnit/Basic.h>
#include <arpa/inet.h>
#include <stdatomic.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

enum { M_ECHO, M_FAIL, M_DEFER, M_HOLD, M_WHO, M_SLOW, M_COUNT };
static const char *const METHODS[M_COUNT] = {"/tfps.test.Svc/Echo", "/tfps.test.Svc/Fail", "/tfps.test.Svc/Defer",
                                             "/tfps.test.Svc/Hold", "/tfps.test.Svc/Who", "/tfps.test.Svc/Slow"};
static int rpc_threads = 3;      /* TFPS_TEST_RPC_THREADS */
static atomic_int inside;        /* handler or tick calls running now, over every server */
static atomic_int overlapped;    /* handler or tick calls that found another one of the same server running */
#define MAX_MSG (8u << 20)
#define DEFER_S 0.2
#define MAX_DEFERRED 256

/* ---- a test server running in its own thread ------------------------------ */
typedef struct {
    tfps_rpc_server *s;
    pthread_t th;
    int port, id;
    char target[64];
    /* loop thread only (read by the test after join): */
    tfps_rpc_call *deferred[MAX_DEFERRED];
    double due[MAX_DEFERRED];
    uint8_t dbody[MAX_DEFERRED][16];
    size_t dlen[MAX_DEFERRED];
    int ndeferred, nhold, overflow;
    pthread_mutex_t mu;   /* guards peer */
    char peer[128];
    atomic_int busy;      /* this server's handler or tick running (must never be 2) */
    pthread_t seen[8];    /* threads that called the handler (the first 8 different ones) */
    int nseen;
    atomic_int prepared, released, prepared_busy, bad_prepared;   /* the prepare hook (echo and slow calls) */
} tsrv;

/* prepare: a note of the request's length, made before the handler and
 * outside its lock (counted when the handler of another call runs meanwhile). */
typedef struct {
    size_t len;
} prep_note;

static void *prepare(void *ctx, int method, const uint8_t *req, size_t len) {
    (void)req;
    tsrv *t = ctx;
    if (!t || (method != M_ECHO && method != M_SLOW)) return NULL;
    prep_note *p = malloc(sizeof(*p));
    p->len = len;
    atomic_fetch_add(&t->prepared, 1);
    if (atomic_load(&t->busy)) atomic_fetch_add(&t->prepared_busy, 1);
    return p;
}

static void release(void *ctx, void *prepared) {
    tsrv *t = ctx;
    atomic_fetch_add(&t->released, 1);
    free(prepared);
}

/* Entering the handler or the tick: no other call of the same server's may run now. */
static void enter(tsrv *t) {
    if (atomic_fetch_add(&t->busy, 1) != 0) atomic_fetch_add(&overlapped, 1);
    atomic_fetch_add(&inside, 1);
}

static void leave(tsrv *t) {
    atomic_fetch_sub(&inside, 1);
    atomic_fetch_sub(&t->busy, 1);
}

static void handler_body(tsrv *t, tfps_rpc_call *call, int method, const uint8_t *req, size_t len);

static void handler(void *ctx, tfps_rpc_call *call, int method, const uint8_t *req, size_t len) {
    tsrv *t = ctx;
    if (!t) {   /* servers made without a context (server_new checks) */
        tfps_rpc_reply_error(call, TFPS_RPC_INTERNAL, "test: no context");
        return;
    }
    enter(t);
    int known = 0;
    for (int i = 0; i < t->nseen && !known; i++) known = pthread_equal(t->seen[i], pthread_self());
    if (!known && t->nseen < 8) t->seen[t->nseen++] = pthread_self();
    if (method == M_ECHO || method == M_SLOW) {
        const prep_note *p = tfps_rpc_call_prepared(call);
        if (!p || p->len != len) atomic_fetch_add(&t->bad_prepared, 1);
    }
    handler_body(t, call, method, req, len);
    leave(t);
}

static void handler_body(tsrv *t, tfps_rpc_call *call, int method, const uint8_t *req, size_t len) {
    switch (method) {
    case M_ECHO:
        tfps_rpc_reply(call, req, len);
        break;
    case M_FAIL:
        tfps_rpc_reply_error(call, TFPS_RPC_INVALID_ARGUMENT, "bad shard 7");
        break;
    case M_DEFER:
        if (t->ndeferred == MAX_DEFERRED || len > sizeof(t->dbody[0])) {
            t->overflow++;
            tfps_rpc_reply_error(call, TFPS_RPC_INTERNAL, "test: too many deferred calls");
            break;
        }
        t->deferred[t->ndeferred] = call;
        t->due[t->ndeferred] = tfps_now() + DEFER_S;
        memcpy(t->dbody[t->ndeferred], req, len);
        t->dlen[t->ndeferred] = len;
        t->ndeferred++;
        break;
    case M_HOLD:   /* never answered: the server's shutdown must do it */
        t->nhold++;
        break;
    case M_WHO: {
        uint8_t id = (uint8_t)t->id;
        pthread_mutex_lock(&t->mu);
        snprintf(t->peer, sizeof(t->peer), "%s", tfps_rpc_call_peer(call));
        pthread_mutex_unlock(&t->mu);
        tfps_rpc_reply(call, &id, 1);
        break;
    }
    case M_SLOW: {   /* 20 ms inside the handler: calls that come meanwhile wait for it on other threads */
        struct timespec ts = {0, 20 * 1000000L};
        nanosleep(&ts, NULL);
        tfps_rpc_reply(call, req, len);
        break;
    }
    default:
        tfps_rpc_reply_error(call, TFPS_RPC_INTERNAL, "test: no such method index");
    }
}

static void tick_body(tsrv *t);

static void tick(void *ctx) {
    tsrv *t = ctx;
    if (!t) return;
    enter(t);
    tick_body(t);
    leave(t);
}

static void tick_body(tsrv *t) {
    double now = tfps_now();
    int k = 0;
    for (int i = 0; i < t->ndeferred; i++) {
        if (t->due[i] <= now) {
            tfps_rpc_reply(t->deferred[i], t->dbody[i], t->dlen[i]);
        } else {
            t->deferred[k] = t->deferred[i];
            t->due[k] = t->due[i];
            memcpy(t->dbody[k], t->dbody[i], t->dlen[i]);
            t->dlen[k] = t->dlen[i];
            k++;
        }
    }
    t->ndeferred = k;
}

static void *run_thread(void *arg) {
    tsrv *t = arg;
    tfps_rpc_server_run(t->s);
    return NULL;
}

static int tsrv_start_at(tsrv *t, const char *addr, size_t max_msg, int id) {
    char err[TFPS_ERR_LEN];
    memset(t, 0, sizeof(*t));
    pthread_mutex_init(&t->mu, NULL);
    t->id = id;
    t->s = tfps_rpc_server_new(addr, METHODS, M_COUNT, max_msg, handler, tick, 20, t, &t->port, err, sizeof(err));
    if (!t->s) {
        fprintf(stderr, "server_new %s: %s\n", addr, err);
        return -1;
    }
    if (tfps_rpc_server_threads(t->s) != 1) return -1;   /* the default */
    tfps_rpc_server_set_threads(t->s, rpc_threads);
    tfps_rpc_server_set_prepare(t->s, prepare, release);
    if (tfps_rpc_server_threads(t->s) != rpc_threads) return -1;
    snprintf(t->target, sizeof(t->target), "127.0.0.1:%d", t->port);
    return pthread_create(&t->th, NULL, run_thread, t) == 0 ? 0 : -1;
}

static int tsrv_start(tsrv *t, size_t max_msg, int id) {
    return tsrv_start_at(t, "127.0.0.1:0", max_msg, id);
}

static void tsrv_stop(tsrv *t) {
    tfps_rpc_server_request_stop(t->s);
    pthread_join(t->th, NULL);
    tfps_rpc_server_free(t->s);
    t->s = NULL;
    pthread_mutex_destroy(&t->mu);
}

static tfps_rpc_client *client_for(const char *target, size_t max_msg) {
    char err[TFPS_ERR_LEN];
    const char *targets[1] = {target};
    tfps_rpc_client *c = tfps_rpc_client_new(targets, 1, max_msg, err, sizeof(err));
    if (!c) fprintf(stderr, "client_new: %s\n", err);
    return c;
}

/* A loopback port nothing listens on (bound, then closed). */
static int free_port(void) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t n = sizeof(a);
    if (fd < 0 || bind(fd, (struct sockaddr *)&a, sizeof(a)) != 0 || getsockname(fd, (struct sockaddr *)&a, &n) != 0)
        return -1;
    close(fd);
    return ntohs(a.sin_port);
}

static void sleep_s(double s) {
    struct timespec ts = {(time_t)s, (long)((s - (double)(time_t)s) * 1e9)};
    nanosleep(&ts, NULL);
}

static tsrv A;                 /* the shared server, max_msg 8 MiB */
static tfps_rpc_client *CLI;   /* to A, max_msg 8 MiB */

static int suite_init(void) {
    if (tsrv_start(&A, MAX_MSG, 0) != 0) return -1;
    CLI = client_for(A.target, MAX_MSG);
    return CLI ? 0 : -1;
}

static int suite_clean(void) {
    tfps_rpc_client_free(CLI);
    tsrv_stop(&A);
    return 0;
}

static int call_a(int method, const uint8_t *body, size_t len, double timeout_s, tfps_rpc_result *r, char *err) {
    return tfps_rpc_call_one(CLI, 0, METHODS[method], body, len, timeout_s, 0, r, err, TFPS_ERR_LEN);
}

/* ---- tests ----------------------------------------------------------------- */

static void test_echo_sizes(void) {
    const size_t sizes[] = {0, 1024, 6u << 20};   /* 6 MiB: above gRPC's 4 MiB default */
    for (int i = 0; i < 3; i++) {
        size_t n = sizes[i];
        uint8_t *body = malloc(n ? n : 1);
        for (size_t j = 0; j < n; j++) body[j] = (uint8_t)(j * 131 + i);
        tfps_rpc_result r;
        char err[TFPS_ERR_LEN];
        CU_ASSERT_EQUAL(call_a(M_ECHO, body, n, 10.0, &r, err), TFPS_OK);
        CU_ASSERT_EQUAL(r.status, TFPS_RPC_OK);
        CU_ASSERT_STRING_EQUAL(r.details, "");
        CU_ASSERT_EQUAL(r.resp_len, n);
        CU_ASSERT(r.resp_len == n && (n == 0 || memcmp(r.resp, body, n) == 0));
        tfps_rpc_result_clear(&r);
        CU_ASSERT_PTR_NULL(r.resp);
        free(body);
    }
}

static void test_many_at_once(void) {
    /* More requests in one batch than the server keeps request slots (8 per
     * method): slots are re-armed as calls arrive. */
    enum { N = 40 };
    tfps_rpc_req reqs[N];
    tfps_rpc_result res[N];
    uint8_t bodies[N][8];
    for (int k = 0; k < N; k++) {
        memset(bodies[k], k, sizeof(bodies[k]));
        reqs[k] = tfps_rpc_req_of(0, METHODS[k % 2 ? M_DEFER : M_ECHO], bodies[k], sizeof(bodies[k]));
    }
    char err[TFPS_ERR_LEN];
    double t0 = tfps_now();
    CU_ASSERT_EQUAL(tfps_rpc_call_batch(CLI, reqs, N, 10.0, 0, res, err, sizeof(err)), TFPS_OK);
    double dt = tfps_now() - t0;
    CU_ASSERT(dt >= DEFER_S * 0.9 && dt < 2.0);   /* 20 deferred calls held at once, not one after another */
    for (int k = 0; k < N; k++) {
        CU_ASSERT_EQUAL(res[k].status, TFPS_RPC_OK);
        CU_ASSERT(res[k].resp_len == 8 && memcmp(res[k].resp, bodies[k], 8) == 0);
        tfps_rpc_result_clear(&res[k]);
    }
}

/* Calls from several clients at once: the handler runs one call at a time
 * (never two of one server together), yet with several threads calls are
 * handed over by more than one of them; the 20 ms handlers add up. */
typedef struct {
    const char *target;
    int method, n;
    size_t len;
    int ok;
    double timeout_s;   /* 0: 20 s; the first failure ends the thread */
} load_arg;

static void *load_thread(void *arg) {
    load_arg *a = arg;
    tfps_rpc_client *c = client_for(a->target, MAX_MSG);
    if (!c) return NULL;
    uint8_t *body = malloc(a->len ? a->len : 1);
    for (size_t j = 0; j < a->len; j++) body[j] = (uint8_t)(j * 7 + (size_t)a->n);
    for (int i = 0; i < a->n; i++) {
        tfps_rpc_result r;
        char err[TFPS_ERR_LEN];
        const int rc = tfps_rpc_call_one(c, 0, METHODS[a->method], body, a->len, a->timeout_s > 0 ? a->timeout_s : 20.0,
                                         0, &r, err, sizeof(err));
        if (rc == TFPS_OK && r.resp_len == a->len && (a->len == 0 || memcmp(r.resp, body, a->len) == 0)) a->ok++;
        tfps_rpc_result_clear(&r);
        if (rc != TFPS_OK) break;
    }
    free(body);
    tfps_rpc_client_free(c);
    return NULL;
}

static void test_threads_serialised(void) {
    tsrv t;
    CU_ASSERT_FATAL(tsrv_start(&t, MAX_MSG, 2) == 0);
    const int before = atomic_load(&overlapped);
    enum { CLIENTS = 4, SLOW = 6, ECHO = 20 };
    pthread_t th[2 * CLIENTS];
    load_arg a[2 * CLIENTS];
    const double t0 = tfps_now();
    for (int k = 0; k < 2 * CLIENTS; k++) {
        // half the clients call the 20 ms handler, half echo 1 MB (a request copy and a reply sent per call)
        a[k] = k < CLIENTS ? (load_arg){t.target, M_SLOW, SLOW, 16, 0, 0}
                        : (load_arg){t.target, M_ECHO, ECHO, 1u << 20, 0, 0};
        CU_ASSERT_FATAL(pthread_create(&th[k], NULL, load_thread, &a[k]) == 0);
    }
    for (int k = 0; k < 2 * CLIENTS; k++) pthread_join(th[k], NULL);
    const double dt = tfps_now() - t0;
    for (int k = 0; k < 2 * CLIENTS; k++) CU_ASSERT_EQUAL(a[k].ok, a[k].n);
    CU_ASSERT(dt >= CLIENTS * SLOW * 0.020 * 0.95);   /* one handler at a time: the sleeps add up */
    tsrv_stop(&t);
    CU_ASSERT_EQUAL(atomic_load(&overlapped), before);
    // every call prepared once, its note in the handler, released once
    CU_ASSERT_EQUAL(atomic_load(&t.prepared), CLIENTS * (SLOW + ECHO));
    CU_ASSERT_EQUAL(atomic_load(&t.released), CLIENTS * (SLOW + ECHO));
    CU_ASSERT_EQUAL(atomic_load(&t.bad_prepared), 0);
    if (rpc_threads > 1) {
        if (t.nseen < 2) printf("\n  only %d thread called the handler", t.nseen);
        CU_ASSERT(t.nseen >= 2);
        // calls prepared (their bytes copied) while a slow handler held the lock
        if (atomic_load(&t.prepared_busy) == 0) printf("\n  no call was prepared while a handler ran");
        CU_ASSERT(atomic_load(&t.prepared_busy) > 0);
    } else {
        CU_ASSERT_EQUAL(t.nseen, 1);
        CU_ASSERT_EQUAL(atomic_load(&t.prepared_busy), 0);
    }
}

/* request_stop while clients keep calling (1 MB echoes, calls held for the
 * tick): every call ends (OK, or UNAVAILABLE once the server stops), run
 * returns within the drain time and its threads are joined (ASan's leak
 * check sees a call never freed). */
static void test_stop_under_load(void) {
    for (int round = 0; round < 3; round++) {
        tsrv t;
        CU_ASSERT_FATAL(tsrv_start(&t, MAX_MSG, 3) == 0);
        enum { CLIENTS = 4 };
        pthread_t th[CLIENTS];
        load_arg a[CLIENTS];
        for (int k = 0; k < CLIENTS; k++) {
            a[k] = (load_arg){t.target, k % 2 ? M_ECHO : M_DEFER, k % 2 ? 5000 : 100, k % 2 ? 1u << 20 : 8, 0, 1.0};
            CU_ASSERT_FATAL(pthread_create(&th[k], NULL, load_thread, &a[k]) == 0);
        }
        sleep_s(0.5 + 0.2 * round);   /* a deferred call takes 0.2 s */
        const double t0 = tfps_now();
        tfps_rpc_server_request_stop(t.s);
        pthread_join(t.th, NULL);
        CU_ASSERT(tfps_now() - t0 < 3.0);
        for (int k = 0; k < CLIENTS; k++) {
            pthread_join(th[k], NULL);   /* its call in flight answered, or refused until its 1 s deadline */
            if (!(a[k].ok > 0 && a[k].ok < a[k].n))
                printf("\n  round %d client %d: %d of %d calls OK", round, k, a[k].ok, a[k].n);
            CU_ASSERT(a[k].ok > 0 && a[k].ok < a[k].n);   /* served before the stop, stopped before the end */
        }
        tfps_rpc_server_free(t.s);
        pthread_mutex_destroy(&t.mu);
        CU_ASSERT_EQUAL(atomic_load(&t.busy), 0);
    }
}

static void test_three_servers(void) {
    tsrv s[3];
    for (int i = 0; i < 3; i++) CU_ASSERT_FATAL(tsrv_start(&s[i], MAX_MSG, 10 + i) == 0);
    const char *targets[3] = {s[0].target, s[1].target, s[2].target};
    char err[TFPS_ERR_LEN];
    tfps_rpc_client *c = tfps_rpc_client_new(targets, 3, MAX_MSG, err, sizeof(err));
    CU_ASSERT_FATAL(c != NULL);
    CU_ASSERT_EQUAL(tfps_rpc_client_targets(c), 3);
    CU_ASSERT_STRING_EQUAL(tfps_rpc_client_target(c, 2), s[2].target);

    /* Each target gets its own body; target 1 is skipped and its result untouched. */
    uint8_t b0[1000], b2[3000];
    memset(b0, 0xa0, sizeof(b0));
    memset(b2, 0xa2, sizeof(b2));
    const uint8_t *bodies[3] = {b0, NULL, b2};
    size_t lens[3] = {sizeof(b0), 0, sizeof(b2)};
    tfps_rpc_result res[3];
    memset(res, 0, sizeof(res));
    res[1].status = 99;
    CU_ASSERT_EQUAL(tfps_rpc_call_all(c, METHODS[M_ECHO], bodies, lens, 10.0, 0, res, err, sizeof(err)), TFPS_OK);
    CU_ASSERT(res[0].resp_len == sizeof(b0) && memcmp(res[0].resp, b0, sizeof(b0)) == 0);
    CU_ASSERT(res[2].resp_len == sizeof(b2) && memcmp(res[2].resp, b2, sizeof(b2)) == 0);
    CU_ASSERT_EQUAL(res[1].status, 99);
    CU_ASSERT_PTR_NULL(res[1].resp);
    for (int i = 0; i < 3; i++) tfps_rpc_result_clear(&res[i]);

    /* Every call reaches its own server, and they run in parallel. */
    uint8_t x = 7;
    const uint8_t *all[3] = {&x, &x, &x};
    size_t ones[3] = {1, 1, 1};
    CU_ASSERT_EQUAL(tfps_rpc_call_all(c, METHODS[M_WHO], all, ones, 10.0, 0, res, err, sizeof(err)), TFPS_OK);
    for (int i = 0; i < 3; i++) {
        CU_ASSERT(res[i].resp_len == 1 && res[i].resp[0] == 10 + i);
        tfps_rpc_result_clear(&res[i]);
    }
    pthread_mutex_lock(&s[1].mu);
    CU_ASSERT(strncmp(s[1].peer, "ipv4:127.0.0.1:", 15) == 0);
    pthread_mutex_unlock(&s[1].mu);
    double t0 = tfps_now();
    CU_ASSERT_EQUAL(tfps_rpc_call_all(c, METHODS[M_DEFER], all, ones, 10.0, 0, res, err, sizeof(err)), TFPS_OK);
    double dt = tfps_now() - t0;
    CU_ASSERT(dt >= DEFER_S * 0.9 && dt < 2 * DEFER_S);   /* 3 x 0.2 s in parallel, not 0.6 s */
    for (int i = 0; i < 3; i++) tfps_rpc_result_clear(&res[i]);

    /* The general form: a push and a pull to every server in one round. */
    tfps_rpc_req reqs[6];
    for (int i = 0; i < 3; i++) {
        reqs[2 * i] = tfps_rpc_req_of(i, METHODS[M_ECHO], b0, sizeof(b0));
        reqs[2 * i + 1] = tfps_rpc_req_of(i, METHODS[M_WHO], NULL, 0);
    }
    tfps_rpc_result r6[6];
    CU_ASSERT_EQUAL(tfps_rpc_call_batch(c, reqs, 6, 10.0, 0, r6, err, sizeof(err)), TFPS_OK);
    for (int i = 0; i < 3; i++) {
        CU_ASSERT_EQUAL(r6[2 * i].resp_len, sizeof(b0));
        CU_ASSERT(r6[2 * i + 1].resp_len == 1 && r6[2 * i + 1].resp[0] == 10 + i);
    }
    for (int k = 0; k < 6; k++) tfps_rpc_result_clear(&r6[k]);

    /* Bad arguments: refused before anything is sent, results untouched. */
    tfps_rpc_req bad = {.target = 3, .method = METHODS[M_ECHO], .body = b0, .len = 1};
    r6[0].status = 42;
    CU_ASSERT_EQUAL(tfps_rpc_call_batch(c, &bad, 1, 1.0, 0, r6, err, sizeof(err)), TFPS_ERR);
    CU_ASSERT_PTR_NOT_NULL(strstr(err, "target 3 out of range"));
    CU_ASSERT_EQUAL(r6[0].status, 42);
    bad = tfps_rpc_req_of(0, "Echo", b0, 1);
    CU_ASSERT_EQUAL(tfps_rpc_call_batch(c, &bad, 1, 1.0, 0, r6, err, sizeof(err)), TFPS_ERR);
    CU_ASSERT_PTR_NOT_NULL(strstr(err, "not a full path"));

    /* Bodies handed over (take): sent from where they are and freed by the RPC module, also a 0-byte one
     * and a batch refused before anything starts (the ASan build's leak check would see one kept). */
    tfps_rpc_req tk[3];
    for (int i = 0; i < 3; i++) {
        uint8_t *body = malloc(i == 2 ? 1 : 300000);
        CU_ASSERT_FATAL(body != NULL);
        if (i < 2)
            for (int j = 0; j < 300000; j++) body[j] = (uint8_t)(j * 7 + i);
        tk[i] = tfps_rpc_req_of(i, METHODS[i == 2 ? M_WHO : M_ECHO], body, i == 2 ? 0 : 300000);
        tk[i].take = 1;
    }
    CU_ASSERT_EQUAL(tfps_rpc_call_batch(c, tk, 3, 10.0, 0, r6, err, sizeof(err)), TFPS_OK);
    for (int i = 0; i < 2; i++) {
        int wrong = r6[i].resp_len != 300000;
        for (size_t j = 0; !wrong && j < r6[i].resp_len; j++) wrong = r6[i].resp[j] != (uint8_t)(j * 7 + (size_t)i);
        CU_ASSERT_EQUAL(wrong, 0);
    }
    CU_ASSERT(r6[2].resp_len == 1 && r6[2].resp[0] == 12);
    for (int k = 0; k < 3; k++) tfps_rpc_result_clear(&r6[k]);
    for (int i = 0; i < 2; i++) {
        tk[i] = tfps_rpc_req_of(i == 0 ? 0 : 5, METHODS[M_ECHO], malloc(64), 64);   // the second: no target 5
        tk[i].take = 1;
    }
    CU_ASSERT_EQUAL(tfps_rpc_call_batch(c, tk, 2, 1.0, 0, r6, err, sizeof(err)), TFPS_ERR);
    CU_ASSERT_PTR_NOT_NULL(strstr(err, "target 5 out of range"));

    /* Answers left in gRPC's pieces (segments): 1 MB comes in several, together the bytes sent; an empty
     * answer has none; cleared twice is fine (ASan: every piece's buffer freed once). */
    uint8_t *big = malloc(1 << 20);
    CU_ASSERT_FATAL(big != NULL);
    for (int j = 0; j < (1 << 20); j++) big[j] = (uint8_t)(j * 13 + 5);
    tfps_rpc_req sq[2] = {tfps_rpc_req_of(0, METHODS[M_ECHO], big, 1 << 20),
                          tfps_rpc_req_of(1, METHODS[M_ECHO], b0, 0)};
    sq[0].segments = sq[1].segments = 1;
    CU_ASSERT_EQUAL(tfps_rpc_call_batch(c, sq, 2, 10.0, 0, r6, err, sizeof(err)), TFPS_OK);
    CU_ASSERT(r6[0].resp == NULL && r6[0].nsegs > 1);
    size_t got = 0;
    int wrong = 0;
    for (int i = 0; i < r6[0].nsegs; i++)
        for (size_t j = 0; j < r6[0].segs[i].len; j++, got++) wrong += r6[0].segs[i].p[j] != (uint8_t)(got * 13 + 5);
    CU_ASSERT(got == (1u << 20) && wrong == 0);
    CU_ASSERT(r6[1].resp == NULL && r6[1].nsegs == 0);
    for (int k = 0; k < 2; k++) {
        tfps_rpc_result_clear(&r6[k]);
        tfps_rpc_result_clear(&r6[k]);
        CU_ASSERT(r6[k].segs == NULL && r6[k].nsegs == 0 && r6[k].held == NULL);
    }
    free(big);

    tfps_rpc_client_free(c);
    for (int i = 0; i < 3; i++) tsrv_stop(&s[i]);
}

static void test_error_status(void) {
    tfps_rpc_result r;
    char err[TFPS_ERR_LEN], want[TFPS_ERR_LEN];
    uint8_t b = 1;
    CU_ASSERT_EQUAL(call_a(M_FAIL, &b, 1, 5.0, &r, err), TFPS_ERR);
    CU_ASSERT_EQUAL(r.status, TFPS_RPC_INVALID_ARGUMENT);
    CU_ASSERT_STRING_EQUAL(r.details, "bad shard 7");
    CU_ASSERT_PTR_NULL(r.resp);
    snprintf(want, sizeof(want), "%s /tfps.test.Svc/Fail: INVALID_ARGUMENT: bad shard 7", A.target);
    CU_ASSERT_STRING_EQUAL(err, want);
    tfps_rpc_result_clear(&r);

    /* One failure in a batch: TFPS_ERR naming it, the other result still filled. */
    tfps_rpc_req reqs[2] = {{.target = 0, .method = METHODS[M_ECHO], .body = &b, .len = 1},
                            {.target = 0, .method = METHODS[M_FAIL], .body = &b, .len = 1}};
    tfps_rpc_result res[2];
    CU_ASSERT_EQUAL(tfps_rpc_call_batch(CLI, reqs, 2, 5.0, 0, res, err, sizeof(err)), TFPS_ERR);
    CU_ASSERT_STRING_EQUAL(err, want);
    CU_ASSERT(res[0].status == TFPS_RPC_OK && res[0].resp_len == 1 && res[0].resp[0] == 1);
    CU_ASSERT_EQUAL(res[1].status, TFPS_RPC_INVALID_ARGUMENT);
    tfps_rpc_result_clear(&res[0]);
    tfps_rpc_result_clear(&res[1]);

    CU_ASSERT_STRING_EQUAL(tfps_rpc_status_name(TFPS_RPC_UNAVAILABLE), "UNAVAILABLE");
    CU_ASSERT_STRING_EQUAL(tfps_rpc_status_name(0), "OK");
    CU_ASSERT_STRING_EQUAL(tfps_rpc_status_name(99), "UNKNOWN_STATUS");
}

static void test_deferred(void) {
    tfps_rpc_result r;
    char err[TFPS_ERR_LEN];
    const uint8_t body[5] = "later";
    double t0 = tfps_now();
    CU_ASSERT_EQUAL(call_a(M_DEFER, body, 5, 5.0, &r, err), TFPS_OK);
    double dt = tfps_now() - t0;
    CU_ASSERT(dt >= DEFER_S && dt < DEFER_S + 1.0);   /* answered by the tick, not by the handler */
    CU_ASSERT(r.resp_len == 5 && memcmp(r.resp, "later", 5) == 0);
    tfps_rpc_result_clear(&r);
}

static void test_deadline(void) {
    tfps_rpc_result r;
    char err[TFPS_ERR_LEN];
    uint8_t b = 0;
    double t0 = tfps_now();
    CU_ASSERT_EQUAL(call_a(M_HOLD, &b, 1, 0.3, &r, err), TFPS_ERR);
    double dt = tfps_now() - t0;
    CU_ASSERT_EQUAL(r.status, TFPS_RPC_DEADLINE_EXCEEDED);
    CU_ASSERT(dt >= 0.25 && dt < 1.5);
    CU_ASSERT_PTR_NOT_NULL(strstr(err, "/tfps.test.Svc/Hold: DEADLINE_EXCEEDED"));
    tfps_rpc_result_clear(&r);
}

static void test_unavailable(void) {
    char target[64], err[TFPS_ERR_LEN];
    int port = free_port();
    CU_ASSERT_FATAL(port > 0);
    snprintf(target, sizeof(target), "127.0.0.1:%d", port);
    tfps_rpc_client *c = client_for(target, MAX_MSG);
    CU_ASSERT_FATAL(c != NULL);
    tfps_rpc_result r;
    uint8_t b = 0;
    double t0 = tfps_now();
    CU_ASSERT_EQUAL(tfps_rpc_call_one(c, 0, METHODS[M_ECHO], &b, 1, 1.0, 0, &r, err, sizeof(err)), TFPS_ERR);
    double dt = tfps_now() - t0;
    CU_ASSERT_EQUAL(r.status, TFPS_RPC_UNAVAILABLE);
    /* Refused at once, then retried after 0.05+0.1+0.2+0.4 s; the next wait
     * (0.8 s) would pass the deadline, so it gives up then, within it. */
    CU_ASSERT(dt >= 0.5 && dt <= 1.1);
    CU_ASSERT(strncmp(err, target, strlen(target)) == 0);
    CU_ASSERT_PTR_NOT_NULL(strstr(err, "UNAVAILABLE"));
    tfps_rpc_result_clear(&r);
    tfps_rpc_client_free(c);
}

typedef struct {
    char addr[64];
    double delay_s;
    tsrv srv;
    int started;
} late_start;

static void *late_thread(void *arg) {
    late_start *ls = arg;
    sleep_s(ls->delay_s);
    if (tsrv_start_at(&ls->srv, ls->addr, MAX_MSG, 5) == 0) ls->started = 1;
    return NULL;
}

static void test_wait_for_ready(void) {
    late_start ls = {.delay_s = 1.0};
    int port = free_port();
    CU_ASSERT_FATAL(port > 0);
    snprintf(ls.addr, sizeof(ls.addr), "127.0.0.1:%d", port);
    tfps_rpc_client *c = client_for(ls.addr, MAX_MSG);
    CU_ASSERT_FATAL(c != NULL);
    pthread_t th;
    CU_ASSERT_FATAL(pthread_create(&th, NULL, late_thread, &ls) == 0);
    tfps_rpc_result r;
    char err[TFPS_ERR_LEN];
    double t0 = tfps_now();
    int rc = tfps_rpc_call_one(c, 0, METHODS[M_WHO], NULL, 0, 10.0, 1, &r, err, sizeof(err));
    double dt = tfps_now() - t0;
    pthread_join(th, NULL);
    CU_ASSERT_EQUAL(rc, TFPS_OK);
    if (rc != TFPS_OK) fprintf(stderr, "wait_for_ready: %s\n", err);
    CU_ASSERT(r.resp_len == 1 && r.resp[0] == 5);
    CU_ASSERT(dt >= 0.9 && dt < 5.0);
    tfps_rpc_result_clear(&r);
    tfps_rpc_client_free(c);
    CU_ASSERT_FATAL(ls.started);
    tsrv_stop(&ls.srv);
}

static void test_too_big(void) {
    size_t n = MAX_MSG + 1024;
    uint8_t *big = calloc(n, 1);
    tfps_rpc_result r;
    char err[TFPS_ERR_LEN];
    /* The client's own limit. */
    CU_ASSERT_EQUAL(call_a(M_ECHO, big, n, 5.0, &r, err), TFPS_ERR);
    CU_ASSERT_EQUAL(r.status, TFPS_RPC_RESOURCE_EXHAUSTED);
    tfps_rpc_result_clear(&r);
    /* The server's limit, from a client that allows more. */
    tfps_rpc_client *c = client_for(A.target, 2 * MAX_MSG);
    CU_ASSERT_FATAL(c != NULL);
    CU_ASSERT_EQUAL(tfps_rpc_call_one(c, 0, METHODS[M_ECHO], big, n, 5.0, 0, &r, err, sizeof(err)), TFPS_ERR);
    CU_ASSERT_EQUAL(r.status, TFPS_RPC_RESOURCE_EXHAUSTED);
    tfps_rpc_result_clear(&r);
    tfps_rpc_client_free(c);
    /* A response above the client's receive limit. */
    c = client_for(A.target, 1u << 20);
    CU_ASSERT_FATAL(c != NULL);
    CU_ASSERT_EQUAL(tfps_rpc_call_one(c, 0, METHODS[M_ECHO], big, 1u << 20, 5.0, 0, &r, err, sizeof(err)), TFPS_OK);
    tfps_rpc_result_clear(&r);
    CU_ASSERT_EQUAL(tfps_rpc_call_one(c, 0, METHODS[M_ECHO], big, (1u << 20) + 1, 5.0, 0, &r, err, sizeof(err)), TFPS_ERR);
    CU_ASSERT_EQUAL(r.status, TFPS_RPC_RESOURCE_EXHAUSTED);
    tfps_rpc_result_clear(&r);
    tfps_rpc_client_free(c);
    free(big);
    /* The server still serves afterwards. */
    uint8_t b = 3;
    CU_ASSERT_EQUAL(call_a(M_ECHO, &b, 1, 5.0, &r, err), TFPS_OK);
    tfps_rpc_result_clear(&r);
}

static void test_health(void) {
    const char *H = "/grpc.health.v1.Health/Check";
    tfps_rpc_result r;
    char err[TFPS_ERR_LEN];
    const uint8_t empty[1] = {0};
    CU_ASSERT_EQUAL(tfps_rpc_call_one(CLI, 0, H, empty, 0, 5.0, 0, &r, err, sizeof(err)), TFPS_OK);
    CU_ASSERT(r.resp_len == 2 && r.resp[0] == 0x08 && r.resp[1] == 1);   /* status: SERVING */
    tfps_rpc_result_clear(&r);
    /* HealthCheckRequest{service: "tfps.test.Svc"}: field 1, length 13. */
    const uint8_t svc[] = {0x0a, 13, 't', 'f', 'p', 's', '.', 't', 'e', 's', 't', '.', 'S', 'v', 'c'};
    CU_ASSERT_EQUAL(tfps_rpc_call_one(CLI, 0, H, svc, sizeof(svc), 5.0, 0, &r, err, sizeof(err)), TFPS_OK);
    CU_ASSERT(r.resp_len == 2 && r.resp[0] == 0x08 && r.resp[1] == 1);
    tfps_rpc_result_clear(&r);
    const uint8_t other[] = {0x0a, 4, 'n', 'o', 'p', 'e'};
    CU_ASSERT_EQUAL(tfps_rpc_call_one(CLI, 0, H, other, sizeof(other), 5.0, 0, &r, err, sizeof(err)), TFPS_ERR);
    CU_ASSERT_EQUAL(r.status, TFPS_RPC_NOT_FOUND);
    CU_ASSERT_PTR_NOT_NULL(strstr(r.details, "nope"));
    tfps_rpc_result_clear(&r);
    const uint8_t prefix[] = {0x0a, 4, 't', 'f', 'p', 's'};   /* a prefix of the service is not it */
    CU_ASSERT_EQUAL(tfps_rpc_call_one(CLI, 0, H, prefix, sizeof(prefix), 5.0, 0, &r, err, sizeof(err)), TFPS_ERR);
    CU_ASSERT_EQUAL(r.status, TFPS_RPC_NOT_FOUND);
    tfps_rpc_result_clear(&r);
    /* Malformed HealthCheckRequests: INVALID_ARGUMENT, and the details name the message. */
    const struct {
        const char *what;
        uint8_t bytes[4];
        size_t len;
    } bad[] = {
        {"length past the end", {0x0a, 5, 'a'}, 3},
        {"truncated varint key", {0x80}, 1},
        {"wire type 7", {0x0f, 0x00}, 2},
        {"service (field 1) as a varint", {0x08, 0x01}, 2},
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        CU_ASSERT_EQUAL(tfps_rpc_call_one(CLI, 0, H, bad[i].bytes, bad[i].len, 5.0, 0, &r, err, sizeof(err)),
                        TFPS_ERR);
        if (r.status != TFPS_RPC_INVALID_ARGUMENT || !strstr(r.details, "HealthCheckRequest"))
            printf("\n  malformed health request (%s): %s \"%s\"", bad[i].what, tfps_rpc_status_name(r.status),
                   r.details);
        CU_ASSERT_EQUAL(r.status, TFPS_RPC_INVALID_ARGUMENT);
        CU_ASSERT_PTR_NOT_NULL(strstr(r.details, "HealthCheckRequest"));
        tfps_rpc_result_clear(&r);
    }
    /* Unknown fields are skipped, as protobuf requires. */
    const uint8_t extra[] = {0x10, 0x05, 0x0a, 13, 't', 'f', 'p', 's', '.', 't', 'e', 's', 't', '.', 'S', 'v', 'c'};
    CU_ASSERT_EQUAL(tfps_rpc_call_one(CLI, 0, H, extra, sizeof(extra), 5.0, 0, &r, err, sizeof(err)), TFPS_OK);
    CU_ASSERT(r.resp_len == 2 && r.resp[0] == 0x08 && r.resp[1] == 1);
    tfps_rpc_result_clear(&r);
}

static void test_unimplemented(void) {
    tfps_rpc_result r;
    char err[TFPS_ERR_LEN];
    uint8_t b = 0;
    for (int i = 0; i < 5; i++) {   /* more than the server's slots for unknown methods */
        CU_ASSERT_EQUAL(tfps_rpc_call_one(CLI, 0, "/tfps.test.Svc/Nope", &b, 1, 5.0, 0, &r, err, sizeof(err)), TFPS_ERR);
        CU_ASSERT_EQUAL(r.status, TFPS_RPC_UNIMPLEMENTED);
        tfps_rpc_result_clear(&r);
    }
    CU_ASSERT_EQUAL(tfps_rpc_call_one(CLI, 0, "/grpc.health.v1.Health/Watch", &b, 0, 5.0, 0, &r, err, sizeof(err)),
                    TFPS_ERR);
    CU_ASSERT_EQUAL(r.status, TFPS_RPC_UNIMPLEMENTED);
    tfps_rpc_result_clear(&r);
}

typedef struct {
    tsrv *t;
    double delay_s;
    double stopped_at;
} stopper;

static void *stop_thread(void *arg) {
    stopper *st = arg;
    sleep_s(st->delay_s);
    st->stopped_at = tfps_now();
    tfps_rpc_server_request_stop(st->t->s);
    return NULL;
}

static void test_stop_answers_held(void) {
    /* Capture this process's log lines (stderr) for the retry line; before the
     * server's threads start, which read the level and scan the descriptors. */
    char logpath[] = "/tmp/tfps-test-rpc-XXXXXX";
    int logfd = mkstemp(logpath);
    CU_ASSERT_FATAL(logfd >= 0);
    fflush(stderr);
    int saved = dup(2);
    dup2(logfd, 2);
    int level = tfps_log_min_level;
    tfps_log_min_level = TFPS_LOG_INFO;
    tsrv t;
    CU_ASSERT_FATAL(tsrv_start(&t, MAX_MSG, 1) == 0);
    tfps_rpc_client *c = client_for(t.target, MAX_MSG);
    CU_ASSERT_FATAL(c != NULL);

    stopper st = {&t, 0.3, 0};
    pthread_t th;
    CU_ASSERT_FATAL(pthread_create(&th, NULL, stop_thread, &st) == 0);
    tfps_rpc_result r;
    char err[TFPS_ERR_LEN];
    uint8_t b = 0;
    /* Held until the server stops: answered UNAVAILABLE, then retried
     * against a closed port until the deadline: still UNAVAILABLE, never
     * DEADLINE_EXCEEDED. */
    CU_ASSERT_EQUAL(tfps_rpc_call_one(c, 0, METHODS[M_HOLD], &b, 1, 1.5, 0, &r, err, sizeof(err)), TFPS_ERR);
    CU_ASSERT_EQUAL(r.status, TFPS_RPC_UNAVAILABLE);
    tfps_rpc_result_clear(&r);
    pthread_join(th, NULL);
    pthread_join(t.th, NULL);   /* run returned */
    double stop_latency = tfps_now() - st.stopped_at;

    tfps_log_min_level = level;
    fflush(stderr);
    dup2(saved, 2);
    close(saved);
    char log[8192] = {0};
    lseek(logfd, 0, SEEK_SET);
    ssize_t got = read(logfd, log, sizeof(log) - 1);
    close(logfd);
    unlink(logpath);
    CU_ASSERT(got > 0);
    char want[160];
    snprintf(want, sizeof(want), "waiting for %s (UNAVAILABLE: server shutting down), retry in 0.05s", t.target);
    CU_ASSERT_PTR_NOT_NULL(strstr(log, want));
    CU_ASSERT_PTR_NOT_NULL(strstr(log, "answered 1 held call UNAVAILABLE"));
    if (!strstr(log, want)) fprintf(stderr, "log was:\n%s\n", log);

    CU_ASSERT_EQUAL(t.nhold, 1);
    CU_ASSERT(stop_latency < 1.5);
    tfps_rpc_server_free(t.s);
    pthread_mutex_destroy(&t.mu);
    tfps_rpc_client_free(c);
}

static void test_server_errors(void) {
    char err[TFPS_ERR_LEN];
    int port = 0;
    /* A port some other socket listens on (no SO_REUSEPORT sharing). */
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t n = sizeof(a);
    CU_ASSERT_FATAL(fd >= 0 && bind(fd, (struct sockaddr *)&a, sizeof(a)) == 0 && listen(fd, 4) == 0 &&
                    getsockname(fd, (struct sockaddr *)&a, &n) == 0);
    char addr[64];
    snprintf(addr, sizeof(addr), "127.0.0.1:%d", ntohs(a.sin_port));
    tfps_rpc_server *s = tfps_rpc_server_new(addr, METHODS, M_COUNT, MAX_MSG, handler, tick, 20, NULL, &port, err,
                                             sizeof(err));
    CU_ASSERT_PTR_NULL(s);
    CU_ASSERT_PTR_NOT_NULL(strstr(err, "cannot listen on"));
    close(fd);
    /* The port of a running tfps server. */
    s = tfps_rpc_server_new(A.target, METHODS, M_COUNT, MAX_MSG, handler, tick, 20, NULL, &port, err, sizeof(err));
    CU_ASSERT_PTR_NULL(s);
    CU_ASSERT_PTR_NOT_NULL(strstr(err, A.target));
    s = tfps_rpc_server_new("not an address", METHODS, M_COUNT, MAX_MSG, handler, tick, 20, NULL, &port, err,
                            sizeof(err));
    CU_ASSERT_PTR_NULL(s);
    const char *const twice[] = {"/a.B/C", "/a.B/C"};
    s = tfps_rpc_server_new("127.0.0.1:0", twice, 2, MAX_MSG, handler, tick, 20, NULL, &port, err, sizeof(err));
    CU_ASSERT_PTR_NULL(s);
    CU_ASSERT_PTR_NOT_NULL(strstr(err, "cannot register method /a.B/C"));
    const char *const health[] = {"/grpc.health.v1.Health/Check"};
    s = tfps_rpc_server_new("127.0.0.1:0", health, 1, MAX_MSG, handler, tick, 20, NULL, &port, err, sizeof(err));
    CU_ASSERT_PTR_NULL(s);
    const char *const relative[] = {"Push"};
    s = tfps_rpc_server_new("127.0.0.1:0", relative, 1, MAX_MSG, handler, tick, 20, NULL, &port, err, sizeof(err));
    CU_ASSERT_PTR_NULL(s);
    CU_ASSERT_PTR_NOT_NULL(strstr(err, "not a full path"));
    /* Created, never run: free shuts it down cleanly. */
    s = tfps_rpc_server_new("127.0.0.1:0", METHODS, M_COUNT, MAX_MSG, handler, tick, 20, NULL, &port, err, sizeof(err));
    CU_ASSERT_PTR_NOT_NULL(s);
    CU_ASSERT(port > 0);
    tfps_rpc_server_free(s);
    tfps_rpc_server_free(NULL);
    tfps_rpc_client_free(NULL);
    CU_ASSERT_PTR_NULL(tfps_rpc_client_new(NULL, 0, MAX_MSG, err, sizeof(err)));
    CU_ASSERT_PTR_NOT_NULL(strstr(err, "no targets"));
}

/* ---- mTLS ------------------------------------------------------------------ */

static char *slurp(const char *dir, const char *name) {
    char path[1200];
    snprintf(path, sizeof(path), "%s/%s", dir, name);
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    char *buf = calloc(1, 1 << 16);
    if (buf) fread(buf, 1, (1 << 16) - 1, f);
    fclose(f);
    return buf;
}

/* The TLS setting from PEM files in dir ("" for none of that file). */
static int set_tls_files(const char *dir, const char *cert, const char *key, const char *ca) {
    char *c = *cert ? slurp(dir, cert) : NULL, *k = *key ? slurp(dir, key) : NULL, *a = *ca ? slurp(dir, ca) : NULL;
    char err[TFPS_ERR_LEN];
    int rc = (*cert && !c) || (*key && !k) || (*ca && !a) ? TFPS_ERR : tfps_rpc_set_tls(c, k, a, err, sizeof(err));
    free(c);
    free(k);
    free(a);
    return rc;
}

/* One echo from a client made now (with the TLS setting of the moment) to
 * target; returns its status and copies the details into why. */
static int tls_echo(const char *target, double timeout_s, char *why, size_t n) {
    tfps_rpc_client *c = client_for(target, MAX_MSG);
    if (!c) return -1;
    const uint8_t body[5] = {'h', 'e', 'l', 'l', 'o'};
    tfps_rpc_result r;
    char err[TFPS_ERR_LEN];
    double t0 = tfps_now();
    tfps_rpc_call_one(c, 0, METHODS[M_ECHO], body, sizeof(body), timeout_s, 0, &r, err, sizeof(err));
    int st = r.status;
    if (st == TFPS_RPC_OK && (r.resp_len != sizeof(body) || memcmp(r.resp, body, sizeof(body)) != 0)) st = -2;
    snprintf(why, n, "%s (%.2f s)", r.details, tfps_now() - t0);
    tfps_rpc_result_clear(&r);
    tfps_rpc_client_free(c);
    return st;
}

#define EXPECT_TLS(what, target, want)                                                                    \
    do {                                                                                                  \
        char why_[600];                                                                                   \
        int st_ = tls_echo(target, 1.5, why_, sizeof(why_));                                              \
        printf("\n  %-52s %s %s", what, st_ >= 0 ? tfps_rpc_status_name(st_) : "(no result)", why_);      \
        CU_ASSERT_EQUAL(st_, want);                                                                       \
    } while (0)

/* Certificates made at test time by deploy/make-certs.sh (two CAs, a and b)
 * and, for the SAN case, one signed by CA a for DNS:localhost only. */
static void test_tls(void) {
    char dir[] = "/tmp/tfps-tls-XXXXXX", cmd[4096];
    CU_ASSERT_PTR_NOT_NULL_FATAL(mkdtemp(dir));
    snprintf(cmd, sizeof(cmd),
             "set -e; cd %s; tf='{\"cluster\": {\"ps\": [\"127.0.0.1:1\"], \"worker\": [\"127.0.0.1:2\"]}}';"
             "bash " TFPS_SOURCE_DIR "/deploy/make-certs.sh --out a --days 2 \"$tf\" 2>/dev/null;"
             "bash " TFPS_SOURCE_DIR "/deploy/make-certs.sh --out b --days 2 \"$tf\" 2>/dev/null;"
             "openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out a/lo.key 2>/dev/null;"
             "openssl req -new -key a/lo.key -subj /CN=lo -out lo.csr;"
             "printf 'extendedKeyUsage=serverAuth,clientAuth\\nsubjectAltName=DNS:localhost\\n' >lo.ext;"
             "openssl x509 -req -in lo.csr -CA a/ca.pem -CAkey a/ca.key -set_serial 7 -days 2 -extfile lo.ext "
             "-out a/lo.pem 2>/dev/null",
             dir);
    CU_ASSERT_EQUAL_FATAL(system(cmd), 0);
    char a[64], b[64];
    snprintf(a, sizeof(a), "%s/a", dir);
    snprintf(b, sizeof(b), "%s/b", dir);
    tsrv T, L;   /* T: the ps's certificate (SANs localhost, 127.0.0.1); L: localhost only */
    CU_ASSERT_EQUAL_FATAL(set_tls_files(a, "ps-0.pem", "ps-0.key", "ca.pem"), TFPS_OK);
    CU_ASSERT_EQUAL(tfps_rpc_tls_mode(), 1);
    CU_ASSERT_EQUAL_FATAL(tsrv_start(&T, MAX_MSG, 7), 0);
    CU_ASSERT_EQUAL_FATAL(set_tls_files(a, "lo.pem", "lo.key", "ca.pem"), TFPS_OK);
    CU_ASSERT_EQUAL_FATAL(tsrv_start(&L, MAX_MSG, 8), 0);

    CU_ASSERT_EQUAL(set_tls_files(a, "worker-0.pem", "worker-0.key", "ca.pem"), TFPS_OK);
    EXPECT_TLS("mTLS client, same CA", T.target, TFPS_RPC_OK);
    /* the health service over TLS, on a client that stays open through what follows */
    tfps_rpc_client *good = client_for(T.target, MAX_MSG);
    CU_ASSERT_PTR_NOT_NULL_FATAL(good);
    tfps_rpc_result r;
    char err[TFPS_ERR_LEN];
    const uint8_t empty[1] = {0};
    CU_ASSERT_EQUAL(tfps_rpc_call_one(good, 0, "/grpc.health.v1.Health/Check", empty, 0, 5.0, 0, &r, err,
                                      sizeof(err)), TFPS_OK);
    CU_ASSERT(r.resp_len == 2 && r.resp[0] == 0x08 && r.resp[1] == 1);   /* SERVING */
    tfps_rpc_result_clear(&r);

    CU_ASSERT_EQUAL(tfps_rpc_set_tls(NULL, NULL, NULL, err, sizeof(err)), TFPS_OK);
    CU_ASSERT_EQUAL(tfps_rpc_tls_mode(), 0);
    EXPECT_TLS("plaintext client", T.target, TFPS_RPC_UNAVAILABLE);
    CU_ASSERT_EQUAL(set_tls_files(a, "", "", "ca.pem"), TFPS_OK);
    CU_ASSERT_EQUAL(tfps_rpc_tls_mode(), 2);
    EXPECT_TLS("TLS client without a certificate", T.target, TFPS_RPC_UNAVAILABLE);
    CU_ASSERT_EQUAL(set_tls_files(b, "worker-0.pem", "worker-0.key", ""), TFPS_ERR);   /* refused: no CA */
    CU_ASSERT_EQUAL(tfps_rpc_tls_mode(), 2);   /* and nothing changed */
    char ca_a[80];
    snprintf(ca_a, sizeof(ca_a), "../a/ca.pem");
    CU_ASSERT_EQUAL(set_tls_files(b, "worker-0.pem", "worker-0.key", ca_a), TFPS_OK);
    EXPECT_TLS("client certificate of another CA (trusts the ps's)", T.target, TFPS_RPC_UNAVAILABLE);
    CU_ASSERT_EQUAL(set_tls_files(b, "worker-0.pem", "worker-0.key", "ca.pem"), TFPS_OK);
    EXPECT_TLS("client of another CA altogether", T.target, TFPS_RPC_UNAVAILABLE);

    /* the ps kept serving: the open client and a new one */
    const uint8_t body[3] = {1, 2, 3};
    CU_ASSERT_EQUAL(tfps_rpc_call_one(good, 0, METHODS[M_ECHO], body, 3, 5.0, 0, &r, err, sizeof(err)), TFPS_OK);
    CU_ASSERT(r.resp_len == 3 && memcmp(r.resp, body, 3) == 0);
    tfps_rpc_result_clear(&r);
    tfps_rpc_client_free(good);
    CU_ASSERT_EQUAL(set_tls_files(a, "worker-0.pem", "worker-0.key", "ca.pem"), TFPS_OK);
    EXPECT_TLS("mTLS client after those", T.target, TFPS_RPC_OK);

    /* the worker checks the target's host against the ps's SANs: L names localhost only */
    char lo[64];
    snprintf(lo, sizeof(lo), "localhost:%d", L.port);
    EXPECT_TLS("server certificate without the target's SAN", L.target, TFPS_RPC_UNAVAILABLE);
    EXPECT_TLS("same server, by the name its SAN holds", lo, TFPS_RPC_OK);

    /* a server needs a certificate of its own */
    CU_ASSERT_EQUAL(set_tls_files(a, "", "", "ca.pem"), TFPS_OK);
    int port = 0;
    tfps_rpc_server *s = tfps_rpc_server_new("127.0.0.1:0", METHODS, M_COUNT, MAX_MSG, handler, tick, 20, NULL, &port,
                                             err, sizeof(err));
    CU_ASSERT_PTR_NULL(s);
    CU_ASSERT_PTR_NOT_NULL(strstr(err, "not only a CA"));
    tfps_rpc_server_free(s);
    CU_ASSERT_EQUAL(tfps_rpc_set_tls("x", NULL, "y", err, sizeof(err)), TFPS_ERR);   /* a certificate without key */

    CU_ASSERT_EQUAL(tfps_rpc_set_tls(NULL, NULL, NULL, err, sizeof(err)), TFPS_OK);
    tsrv_stop(&T);
    tsrv_stop(&L);
    snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
    CU_ASSERT(system(cmd) == 0);
}

int main(void) {
    tfps_log_min_level = TFPS_LOG_WARN;   /* retry lines are info; test_stop_answers_held lowers it */
    const char *th = getenv("TFPS_TEST_RPC_THREADS");
    if (th && atoi(th) > 0) rpc_threads = atoi(th);
    printf("server threads: %d (TFPS_TEST_RPC_THREADS)\n", rpc_threads);
    /* test_tls resolves "localhost": with getaddrinfo, as c-ares leaks 10 bytes once (LeakSanitizer) */
    setenv("GRPC_DNS_RESOLVER", "native", 0);
    tfps_rpc_init();
    if (CU_initialize_registry() != CUE_SUCCESS) return 1;
    CU_pSuite s = CU_add_suite("rpc", suite_init, suite_clean);
    CU_add_test(s, "echo of 0 B, 1 KB and 6 MiB", test_echo_sizes);
    CU_add_test(s, "40 calls in one batch, 20 of them held at once", test_many_at_once);
    CU_add_test(s, "call_all and call_batch over three servers in parallel", test_three_servers);
    CU_add_test(s, "error status and message reach the client", test_error_status);
    CU_add_test(s, "a reply deferred to the tick arrives", test_deferred);
    CU_add_test(s, "a call never answered ends DEADLINE_EXCEEDED", test_deadline);
    CU_add_test(s, "nothing listening: UNAVAILABLE after retries, within the timeout", test_unavailable);
    CU_add_test(s, "wait_for_ready: a server up 1 s later is reached", test_wait_for_ready);
    CU_add_test(s, "messages above max_msg: RESOURCE_EXHAUSTED both ways", test_too_big);
    CU_add_test(s, "grpc.health.v1.Health/Check", test_health);
    CU_add_test(s, "unknown methods: UNIMPLEMENTED", test_unimplemented);
    CU_add_test(s, "request_stop answers held calls UNAVAILABLE and run returns", test_stop_answers_held);
    CU_add_test(s, "clients at once: one handler call at a time, handed over by several threads",
                test_threads_serialised);
    CU_add_test(s, "request_stop under load: every call ends, every thread joined", test_stop_under_load);
    CU_add_test(s, "server_new refuses busy ports and bad methods", test_server_errors);
    CU_add_test(s, "mTLS: good client served; plaintext, no-cert, other-CA, wrong-SAN refused", test_tls);
    CU_basic_set_mode(CU_BRM_VERBOSE);
    CU_basic_run_tests();
    int failed = (int)(CU_get_number_of_tests_failed() + CU_get_number_of_suites_failed());
    CU_cleanup_registry();
    tfps_rpc_shutdown();
    return failed;
}
