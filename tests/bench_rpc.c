/* bench_rpc.c -- what one training step costs in RPC: tfps_rpc on loopback,
 * a server thread answering from its handler, the client waiting on every
 * call (as a worker does). Prints one table; not a test.
 *
 *     bench_rpc [calls] [--ps-threads N] [--multicore [--consistency async|sync]]
 *
 * calls: per case (default 300). --ps-threads: the "tfps step" rows' ps
 * (server threads and update threads; default 1, the single loop). With
 * --multicore only one table is printed: a real ps serving 1, 2 and 4
 * clients at once (each its own channel and rank, PushPull of the whole
 * model every round), with --ps-threads 1 and with N (default: the cores),
 * p50/p90 of a client's round and the rounds per second of all clients.
 *
 * The full model (784-300-100-10) is 1,066,440 bytes: a sync worker pushes
 * that much and pulls that much every step. The "default malloc" row runs
 * the 1 MB echo again in a child process with TFPS_RPC_DEFAULT_MALLOC=1, so
 * tfps_rpc_init leaves glibc's mmap threshold alone.
 *
 * The "tfps step" rows run the real thing on the same loopback: a
 * tfps_rpc_server thread per ps whose handler calls tfps_ps_handle exactly as
 * ps/main.c does (wire unpack, validation, finite check, SGD apply, pull
 * pack), and a tfps_psclient timing tfps_psclient_round (pack the gradient
 * slices, Push + Pull to every ps in parallel, unpack the weights into the
 * flat array). The last line divides its p50 by the bare push+pull echo
 * batch's: what tfps adds on top of the transport.
 *
 * The "mTLS" rows run the same cases again in the same process over mTLS
 * (tfps_rpc_set_tls, certificates made by deploy/make-certs.sh in a temp
 * folder; the handshake falls in the warm-up rounds), and a line gives each
 * one's p50 over the plaintext one's. */
#define _POSIX_C_SOURCE 200809L
#include "layout.h"
#include "log.h"
#include "options.h"
#include "ps.h"
#include "psclient.h"
#include "rpc.h"
#include "service.h"
#include "shard.h"
#include "store.h"
#include "tfps.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <spawn.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#define MODEL_BYTES 1066440u

extern char **environ;

enum { M_ECHO, M_PUSH, M_PULL, M_COUNT };
static const char *const METHODS[M_COUNT] = {"/tfps.bench.Svc/Echo", "/tfps.bench.Svc/Push", "/tfps.bench.Svc/Pull"};
static uint8_t *model;   /* what Pull answers */

static void handler(void *ctx, tfps_rpc_call *call, int method, const uint8_t *req, size_t len) {
    (void)ctx;
    if (method == M_ECHO)
        tfps_rpc_reply(call, req, len);
    else if (method == M_PUSH)
        tfps_rpc_reply(call, NULL, 0);   /* a real ps would apply the gradient here */
    else
        tfps_rpc_reply(call, model, MODEL_BYTES);
}

static void *run_thread(void *arg) {
    tfps_rpc_server_run(arg);
    return NULL;
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static long minflt(void) {
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return ru.ru_minflt;
}

static double cpu_now(void) {   /* CPU seconds of the whole process (client, server and ps threads) */
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* The CPU time per round of the last measure(), in s: steadier than the
 * latency on a loaded machine (copies cost CPU whoever waits). */
static double last_cpu;

#define NAME_W 70   /* width of the case column */

/* One timed round; returns TFPS_OK or TFPS_ERR with err set. */
typedef int (*round_fn)(void *ctx, char *err, size_t errlen);

/* `calls` rounds of fn after 20 warm-up rounds; prints a row. bytes_moved:
 * per round, both directions. Returns the median in s, or -1 on failure. */
static double measure(const char *name, round_fn fn, void *ctx, int calls, double bytes_moved) {
    char err[TFPS_ERR_LEN];
    double *t = malloc((size_t)calls * sizeof(double));
    if (!t) return -1;
    long f0 = 0;
    double c0 = 0;
    for (int i = -20; i < calls; i++) {
        if (i == 0) {
            f0 = minflt();
            c0 = cpu_now();
        }
        double t0 = tfps_now();
        if (fn(ctx, err, sizeof(err)) != TFPS_OK) {
            fprintf(stderr, "%s: %s\n", name, err);
            free(t);
            return -1;
        }
        if (i >= 0) t[i] = tfps_now() - t0;
    }
    last_cpu = (cpu_now() - c0) / calls;
    double faults = (double)(minflt() - f0) / calls;
    qsort(t, (size_t)calls, sizeof(double), cmp_double);
    double p50 = t[calls / 2], p90 = t[(calls * 9) / 10];
    printf("%-*s %9.0f %9.0f %10.0f %10.1f %9.0f\n", NAME_W, name, p50 * 1e6, p90 * 1e6,
           bytes_moved > 0 ? bytes_moved / p50 / 1e6 : 0.0, faults, last_cpu * 1e6);
    fflush(stdout);
    free(t);
    return p50;
}

/* ---- bare transport: a batch of requests to the echo server -------------- */
typedef struct {
    tfps_rpc_client *c;
    const tfps_rpc_req *reqs;
    int n;
} batch_ctx;

static int batch_round(void *arg, char *err, size_t errlen) {
    batch_ctx *b = arg;
    tfps_rpc_result res[4];
    int rc = tfps_rpc_call_batch(b->c, b->reqs, b->n, 30.0, 0, res, err, errlen);
    for (int k = 0; k < b->n; k++) tfps_rpc_result_clear(&res[k]);
    return rc;
}

static double run_case(tfps_rpc_client *c, const char *name, const tfps_rpc_req *reqs, int n, int calls,
                       double bytes_moved) {
    batch_ctx b = {c, reqs, n};
    return measure(name, batch_round, &b, calls, bytes_moved);
}

/* ---- the real thing: tfps_ps behind tfps_rpc_server, tfps_psclient ------- */
typedef struct {
    tfps_ps *ps;
    tfps_rpc_server *server;
    pthread_t th;
    int started;
    char target[64];
} bench_ps;

/* The handler of ps/main.c. */
static void ps_handle(void *ctx, tfps_rpc_call *call, int method, const uint8_t *req, size_t len) {
    bench_ps *d = ctx;
    tfps_ps_serve(d->ps, d->server, call, method, req, len);
}

static void *ps_prepare(void *ctx, int method, const uint8_t *req, size_t len) {
    return tfps_ps_prepare(((bench_ps *)ctx)->ps, method, req, len);
}

static void ps_release(void *ctx, void *prepared) {
    (void)ctx;
    tfps_ps_prepared_free(prepared);
}

typedef struct {
    tfps_psclient *pc;
    const float *grads;
    float *params;
    uint64_t step;
} step_ctx;

static int step_round(void *arg, char *err, size_t errlen) {
    step_ctx *x = arg;
    x->step++;
    return tfps_psclient_round(x->pc, x->grads, 2.3f, 64, x->step, x->params, 10.0, err, errlen);
}

/* Starts num_ps ps (balanced plan, 1 worker) on 127.0.0.1:0, registers one
 * worker, times `calls` rounds of Push + Pull, stops and frees everything.
 * Returns the p50 in s, or -1. */
static double run_tfps_case(const char *name, int num_ps, int calls, const tfps_options *o) {
    const int threads = tfps_options_ps_threads(o);
    char err[TFPS_ERR_LEN];
    tfps_layout l;
    tfps_shard_plan plan = {0};
    tfps_psclient pc;
    int have_pc = 0;
    bench_ps ps[2];
    char *targets[2];
    float *grads = NULL, *params = NULL;
    double p50 = -1;
    step_ctx x = {0};
    memset(ps, 0, sizeof(ps));
    memset(&pc, 0, sizeof(pc));
    if (num_ps < 1 || num_ps > 2) return -1;
    if (tfps_layout_init(&l, TFPS_INPUT_WIDTH, o->h1, o->h2, TFPS_CLASSES, err, sizeof(err)) != TFPS_OK ||
        tfps_shard_plan_build(&plan, &l, num_ps, TFPS_SHARD_BALANCED, err, sizeof(err)) != TFPS_OK) {
        fprintf(stderr, "%s: %s\n", name, err);
        goto done;
    }
    const size_t max_msg = tfps_max_message_bytes(&l);
    for (int k = 0; k < num_ps; k++) {
        int port = 0;
        ps[k].ps = tfps_ps_new(&l, &plan, k, o, 1, NULL, NULL, err, sizeof(err));
        if (!ps[k].ps) {
            fprintf(stderr, "%s: ps %d: %s\n", name, k, err);
            goto done;
        }
        ps[k].server = tfps_rpc_server_new("127.0.0.1:0", tfps_method_paths, TFPS_M_COUNT, max_msg, ps_handle, NULL,
                                           100, &ps[k], &port, err, sizeof(err));
        if (!ps[k].server) {
            fprintf(stderr, "%s: ps %d: %s\n", name, k, err);
            goto done;
        }
        tfps_rpc_server_set_threads(ps[k].server, threads);
        tfps_rpc_server_set_prepare(ps[k].server, ps_prepare, ps_release);
        if (pthread_create(&ps[k].th, NULL, run_thread, ps[k].server) != 0) {
            fprintf(stderr, "%s: ps %d: pthread_create failed\n", name, k);
            goto done;
        }
        ps[k].started = 1;
        snprintf(ps[k].target, sizeof(ps[k].target), "127.0.0.1:%d", port);
        targets[k] = ps[k].target;
    }
    if (tfps_psclient_init(&pc, targets, &l, &plan, err, sizeof(err)) != TFPS_OK) {
        fprintf(stderr, "%s: %s\n", name, err);
        goto done;
    }
    have_pc = 1;
    pc.pushpull = o->pushpull;   // 1: one PushPull per ps per step; 0: a Push and a Pull
    pc.wire_dtype = o->wire_dtype;   // fp32, bf16 or fp16 gradients and weights
    char desc[160];
    const tfps_wire_register_req q = tfps_psclient_register_req(o, &l, &plan, "worker", 0, 0, 1, desc, sizeof(desc));
    int refused = 0;
    if (tfps_psclient_register(&pc, &q, 10.0, "bench_rpc", &refused, err, sizeof(err)) != TFPS_OK) {
        fprintf(stderr, "%s: register%s: %s\n", name, refused ? " refused" : "", err);
        goto done;
    }
    grads = malloc(l.total * sizeof(float));
    params = malloc(l.total * sizeof(float));
    if (!grads || !params) {
        fprintf(stderr, "%s: out of memory\n", name);
        goto done;
    }
    for (size_t i = 0; i < l.total; i++) grads[i] = 1e-6f;   // small and finite: weights stay finite
    x = (step_ctx){&pc, grads, params, 0};
    p50 = measure(name, step_round, &x, calls, 2.0 * (double)l.total * (double)tfps_wire_dtype_size(o->wire_dtype));
done:
    if (have_pc) tfps_psclient_destroy(&pc);
    for (int k = 0; k < num_ps; k++) {
        if (ps[k].started) {
            tfps_rpc_server_request_stop(ps[k].server);
            pthread_join(ps[k].th, NULL);
        }
        if (ps[k].ps && p50 >= 0) {   // the loop thread is gone: safe to read the ps
            tfps_ps_stats st;
            tfps_ps_get_stats(ps[k].ps, &st);
            if (st.applied != x.step || st.refused != 0) {
                fprintf(stderr, "%s: ps %d applied %llu pushes (expected %llu), refused %llu\n", name, k,
                        (unsigned long long)st.applied, (unsigned long long)x.step, (unsigned long long)st.refused);
                p50 = -1;
            }
        }
        tfps_rpc_server_free(ps[k].server);
        tfps_ps_free(ps[k].ps);
    }
    free(grads);
    free(params);
    tfps_shard_plan_destroy(&plan);
    return p50;
}

/* ---- a multi-core ps: several clients at once ------------------------------ */
typedef struct {
    tfps_psclient pc;
    const float *grads;
    float *params;
    int calls, rank;
    double *t;        /* [calls] */
    double t_first;   /* tfps_now() when its first timed round began */
    int failed;
    pthread_barrier_t *start;
} mc_client;

static void *mc_client_main(void *arg) {
    mc_client *c = arg;
    char err[TFPS_ERR_LEN];
    uint64_t step = 0;
    pthread_barrier_wait(c->start);
    for (int i = -20; i < c->calls && !c->failed; i++) {
        if (i == 0) c->t_first = tfps_now();
        const double t0 = tfps_now();
        if (tfps_psclient_round(&c->pc, c->grads, 2.3f, 64, ++step, c->params, 30.0, err, sizeof(err)) != TFPS_OK) {
            fprintf(stderr, "client %d: %s\n", c->rank, err);
            c->failed = 1;
        }
        if (i >= 0) c->t[i] = tfps_now() - t0;
    }
    return NULL;
}

/* One ps (the whole model) with `threads` threads, `clients` workers each
 * running `calls` rounds at once; prints a row: p50 and p90 of a round (every
 * client's), rounds/s of all of them together (from the first timed round
 * to the last). Returns the rounds/s, or -1. */
static double run_multicore_case(int clients, int threads, int calls, const tfps_options *base) {
    char err[TFPS_ERR_LEN], name[128];
    snprintf(name, sizeof(name), "%s PushPull, 1 ps, %d client%s at once, --ps-threads %d",
             tfps_consistency_name(base->consistency), clients, clients == 1 ? "" : "s", threads);
    tfps_options o = *base;
    o.ps_threads = threads;
    tfps_layout l;
    tfps_shard_plan plan = {0};
    bench_ps ps = {0};
    mc_client *cs = calloc((size_t)clients, sizeof(*cs));
    float *grads = NULL;
    double result = -1;
    int port = 0, ninit = 0;
    pthread_t *th = calloc((size_t)clients, sizeof(*th));
    pthread_barrier_t start;
    pthread_barrier_init(&start, NULL, (unsigned)clients);
    if (!cs || !th || tfps_layout_init(&l, TFPS_INPUT_WIDTH, o.h1, o.h2, TFPS_CLASSES, err, sizeof(err)) != TFPS_OK ||
        tfps_shard_plan_build(&plan, &l, 1, TFPS_SHARD_BALANCED, err, sizeof(err)) != TFPS_OK)
        goto done;
    ps.ps = tfps_ps_new(&l, &plan, 0, &o, clients, NULL, NULL, err, sizeof(err));
    if (!ps.ps) goto done;
    ps.server = tfps_rpc_server_new("127.0.0.1:0", tfps_method_paths, TFPS_M_COUNT, tfps_max_message_bytes(&l),
                                    ps_handle, NULL, 100, &ps, &port, err, sizeof(err));
    if (!ps.server) goto done;
    tfps_rpc_server_set_threads(ps.server, tfps_ps_threads(ps.ps));
    tfps_rpc_server_set_prepare(ps.server, ps_prepare, ps_release);
    if (pthread_create(&ps.th, NULL, run_thread, ps.server) != 0) goto done;
    ps.started = 1;
    snprintf(ps.target, sizeof(ps.target), "127.0.0.1:%d", port);
    char *targets[1] = {ps.target};
    grads = malloc(l.total * sizeof(float));
    if (!grads) goto done;
    for (size_t i = 0; i < l.total; i++) grads[i] = 1e-6f;
    for (int k = 0; k < clients; k++, ninit++) {
        mc_client *c = &cs[k];
        if (tfps_psclient_init(&c->pc, targets, &l, &plan, err, sizeof(err)) != TFPS_OK) goto done;
        c->pc.consistency = o.consistency;
        c->pc.num_workers = clients;
        char desc[160];
        const tfps_wire_register_req q =
            tfps_psclient_register_req(&o, &l, &plan, "worker", k, k, clients, desc, sizeof(desc));
        int refused = 0;
        c->params = malloc(l.total * sizeof(float));
        c->t = malloc((size_t)calls * sizeof(double));
        if (!c->params || !c->t ||
            tfps_psclient_register(&c->pc, &q, 10.0, "bench_rpc", &refused, err, sizeof(err)) != TFPS_OK ||
            tfps_psclient_round(&c->pc, NULL, 0, 0, 0, c->params, 10.0, err, sizeof(err)) != TFPS_OK)
            goto done_init;
        c->grads = grads;
        c->calls = calls;
        c->rank = k;
        c->start = &start;
    }
    for (int k = 0; k < clients; k++) pthread_create(&th[k], NULL, mc_client_main, &cs[k]);
    for (int k = 0; k < clients; k++) pthread_join(th[k], NULL);
    const double t_end = tfps_now();
    double t_first = 1e300;
    int failed = 0;
    double *all = malloc((size_t)clients * (size_t)calls * sizeof(double));
    for (int k = 0; k < clients; k++) {
        failed |= cs[k].failed;
        if (cs[k].t_first < t_first) t_first = cs[k].t_first;
        memcpy(all + (size_t)k * (size_t)calls, cs[k].t, (size_t)calls * sizeof(double));
    }
    if (!failed && all) {
        const size_t nall = (size_t)clients * (size_t)calls;
        qsort(all, nall, sizeof(double), cmp_double);
        result = (double)nall / (t_end - t_first);
        printf("%-*s %9.0f %9.0f %10.0f\n", NAME_W, name, all[nall / 2] * 1e6, all[(nall * 9) / 10] * 1e6, result);
        fflush(stdout);
    }
    free(all);
    goto done;
done_init:
    ninit++;
done:
    if (result < 0) fprintf(stderr, "%s: %s\n", name, err);
    for (int k = 0; k < ninit; k++) {
        tfps_psclient_destroy(&cs[k].pc);
        free(cs[k].params);
        free(cs[k].t);
    }
    if (ps.started) {
        tfps_rpc_server_request_stop(ps.server);
        pthread_join(ps.th, NULL);
    }
    tfps_rpc_server_free(ps.server);
    tfps_ps_free(ps.ps);
    free(grads);
    free(cs);
    free(th);
    pthread_barrier_destroy(&start);
    tfps_shard_plan_destroy(&plan);
    return result;
}

/* ---- the update alone: one loop vs the pool -------------------------------- */
/* tfps_store_update of the whole model (check + apply) with each optimizer:
 * p50 of `calls` updates with one loop and with a pool of `threads`, in us. */
static void run_apply_cases(int threads, int calls) {
    char err[TFPS_ERR_LEN];
    tfps_layout l;
    tfps_shard_plan plan = {0};
    if (tfps_layout_init(&l, TFPS_INPUT_WIDTH, 300, 100, TFPS_CLASSES, err, sizeof(err)) != TFPS_OK ||
        tfps_shard_plan_build(&plan, &l, 1, TFPS_SHARD_BALANCED, err, sizeof(err)) != TFPS_OK)
        return;
    tfps_pool *pool = tfps_pool_new(threads, err, sizeof(err));
    float *g = malloc(l.total * sizeof(float));
    double *t = malloc((size_t)calls * sizeof(double));
    for (size_t i = 0; i < l.total; i++) g[i] = 1e-6f * (float)(i % 13);
    for (int kind = 0; kind < TFPS_OPT_COUNT && pool && g && t; kind++) {
        const tfps_optim opt = {.kind = kind, .lr = 0.001f, .momentum = 0.9f, .beta1 = 0.9, .beta2 = 0.999,
                                .epsilon = 1e-7f, .initial_accumulator = 0.1f};
        double p50[2];
        int chunks = 1;
        for (int pooled = 0; pooled < 2; pooled++) {
            tfps_store st;
            if (tfps_store_init(&st, &l, &plan, 0, 1, &opt, err, sizeof(err)) != TFPS_OK) break;
            st.pool = pooled ? pool : NULL;
            chunks = tfps_pool_chunks(st.pool, l.total, tfps_store_min_chunk(&st));
            const size_t at = 0;
            const float *gp = g;
            for (int i = -10; i < calls; i++) {
                const double t0 = tfps_now();
                tfps_store_update(&st, 1, &at, &gp, &l.total);
                if (i >= 0) t[i] = tfps_now() - t0;
            }
            qsort(t, (size_t)calls, sizeof(double), cmp_double);
            p50[pooled] = t[calls / 2];
            tfps_store_destroy(&st);
        }
        char name[128];
        snprintf(name, sizeof(name), "update of 266,610 floats, %s: one loop / %d threads (%d chunk%s)",
                 tfps_optim_name(kind), threads, chunks, chunks == 1 ? ": not split" : "s");
        printf("%-*s %9.0f %9.0f\n", NAME_W, name, p50[0] * 1e6, p50[1] * 1e6);
    }
    free(g);
    free(t);
    tfps_pool_free(pool);
    tfps_shard_plan_destroy(&plan);
}

/* ---- mTLS: certificates from deploy/make-certs.sh -------------------------- */
static char *slurp(const char *dir, const char *name) {
    char path[1200];
    snprintf(path, sizeof(path), "%s/%s", dir, name);
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    char *buf = calloc(1, 1 << 16);
    if (buf && fread(buf, 1, (1 << 16) - 1, f) == 0) buf[0] = '\0';
    fclose(f);
    return buf;
}

/* TLS setting from dir/<name>.pem, .key and dir/ca.pem; TFPS_OK or TFPS_ERR. */
static int use_cert(const char *dir, const char *name) {
    char pem[64], key[64], err[TFPS_ERR_LEN];
    snprintf(pem, sizeof(pem), "%s.pem", name);
    snprintf(key, sizeof(key), "%s.key", name);
    char *c = slurp(dir, pem), *k = slurp(dir, key), *a = slurp(dir, "ca.pem");
    int rc = c && k && a ? tfps_rpc_set_tls(c, k, a, err, sizeof(err)) : TFPS_ERR;
    free(c);
    free(k);
    free(a);
    return rc;
}

int main(int argc, char **argv) {
    int calls = 300, only_echo = 0, rc = 0, ps_threads = 1, multicore = 0, consistency = TFPS_CONSISTENCY_ASYNC;
    const char *optimizer = "sgd";
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--only-1mb-echo") == 0) {
            only_echo = 1;
        } else if (strcmp(argv[i], "--ps-threads") == 0 && i + 1 < argc) {
            ps_threads = atoi(argv[++i]);
        } else if (strcmp(argv[i], "--multicore") == 0) {
            multicore = 1;
        } else if (strcmp(argv[i], "--optimizer") == 0 && i + 1 < argc) {
            optimizer = argv[++i];
        } else if (strcmp(argv[i], "--consistency") == 0 && i + 1 < argc) {
            consistency = strcmp(argv[++i], "sync") == 0 ? TFPS_CONSISTENCY_SYNC : TFPS_CONSISTENCY_ASYNC;
        } else if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            printf("usage: bench_rpc [calls] [--ps-threads N] [--multicore [--consistency async|sync] [--optimizer "
                   "NAME]]\n"
                   "  calls          rounds timed per case (default 300)\n"
                   "  --ps-threads   the tfps rows' ps: server and update threads (default 1; with --multicore:\n"
                   "                 the second thread count, default the cores available)\n"
                   "  --multicore    only the table of a ps serving 1, 2 and 4 clients at once, --ps-threads 1\n"
                   "                 and N (--optimizer: the ps's, default sgd), then the update alone\n");
            return 0;
        } else {
            calls = atoi(argv[i]);
        }
    }
    if (calls < 10) calls = 10;
    tfps_log_min_level = TFPS_LOG_WARN;
    tfps_rpc_init();
    if (multicore) {
        tfps_options o;
        char err[TFPS_ERR_LEN];
        char *oargv[] = {argv[0], "--optimizer", (char *)optimizer, NULL};
        if (tfps_options_parse(&o, 3, oargv, err, sizeof(err)) != TFPS_OK) {
            fprintf(stderr, "bench_rpc: %s\n", err);
            return 1;
        }
        o.consistency = consistency;
        o.ps_threads = 0;
        int n = ps_threads > 1 ? ps_threads : tfps_options_ps_threads(&o);
        if (n < 2) n = 2;
        printf("bench_rpc --multicore: a ps of the whole model (784-300-100-10, %s), %d rounds per client, nproc %ld\n",
               optimizer, calls, sysconf(_SC_NPROCESSORS_ONLN));
        printf("%-*s %9s %9s %10s\n", NAME_W, "case (each client waits for its round)", "p50 us", "p90 us",
               "rounds/s");
        const int clients[3] = {1, 2, 4}, threads[2] = {1, n};
        for (int c = 0; c < 3; c++)
            for (int t = 0; t < 2; t++)
                if (run_multicore_case(clients[c], threads[t], calls, &o) < 0) rc = 1;
        printf("%-*s %9s %9s\n", NAME_W, "the update alone (check + apply), p50 us", "1 loop", "pool");
        run_apply_cases(n, calls);
        tfps_rpc_shutdown();
        return rc;
    }

    model = malloc(MODEL_BYTES);
    for (size_t i = 0; i < MODEL_BYTES; i++) model[i] = (uint8_t)(i * 7);
    char err[TFPS_ERR_LEN], target[64];
    int port = 0;
    tfps_rpc_server *s = tfps_rpc_server_new("127.0.0.1:0", METHODS, M_COUNT, 8u << 20, handler, NULL, 100, NULL,
                                             &port, err, sizeof(err));
    if (!s) {
        fprintf(stderr, "bench_rpc: %s\n", err);
        return 1;
    }
    pthread_t th;
    pthread_create(&th, NULL, run_thread, s);
    snprintf(target, sizeof(target), "127.0.0.1:%d", port);
    const char *targets[1] = {target};
    tfps_rpc_client *c = tfps_rpc_client_new(targets, 1, 8u << 20, err, sizeof(err));
    if (!c) {
        fprintf(stderr, "bench_rpc: %s\n", err);
        return 1;
    }

    uint8_t small[1024];
    memset(small, 1, sizeof(small));
    tfps_rpc_req echo1m = {.target = 0, .method = METHODS[M_ECHO], .body = model, .len = MODEL_BYTES};
    if (only_echo) {   /* the child of the "default malloc" row */
        run_case(c, "echo 1,066,440 B, default malloc thresholds", &echo1m, 1, calls, 2.0 * MODEL_BYTES);
    } else {
        printf("bench_rpc: tfps_rpc on loopback, %d calls per case, nproc %ld\n", calls, sysconf(_SC_NPROCESSORS_ONLN));
        printf("%-*s %9s %9s %10s %10s %9s\n", NAME_W, "case (client waits for each round)", "p50 us", "p90 us",
               "MB/s", "faults/rnd", "CPU us");
        tfps_rpc_req echo1k = {.target = 0, .method = METHODS[M_ECHO], .body = small, .len = sizeof(small)};
        double e1k = run_case(c, "echo 1 KB", &echo1k, 1, calls, 2.0 * sizeof(small));
        double e1m = run_case(c, "echo 1,066,440 B (model each way)", &echo1m, 1, calls, 2.0 * MODEL_BYTES);
        const double c_e1m = last_cpu;
        tfps_rpc_req echo_half = {.target = 0, .method = METHODS[M_ECHO], .body = model, .len = MODEL_BYTES / 2};
        double ehalf = run_case(c, "echo 533,220 B (model each way in bf16)", &echo_half, 1, calls, MODEL_BYTES);
        tfps_rpc_req step[2] = {{.target = 0, .method = METHODS[M_PUSH], .body = model, .len = MODEL_BYTES},
                                {.target = 0, .method = METHODS[M_PULL], .body = small, .len = 16}};
        double bare = run_case(c, "push 1 MB + pull 1 MB in one batch (a step)", step, 2, calls, 2.0 * MODEL_BYTES);
        tfps_options o;
        double tfps1 = -1, tfps2 = -1, tfps_sep = -1, tbf16 = -1, tfp16 = -1, c_tfps1 = -1, c_bf16 = -1;
        if (tfps_options_parse(&o, 1, argv, err, sizeof(err)) != TFPS_OK) {
            fprintf(stderr, "bench_rpc: %s\n", err);
        } else {
            o.ps_threads = ps_threads;
            tfps1 = run_tfps_case("tfps step: PushPull through a real ps (wire, validation, SGD apply)", 1, calls,
                                  &o);
            c_tfps1 = last_cpu;
            tfps_options half = o;
            half.wire_dtype = TFPS_DTYPE_BF16;
            tbf16 = run_tfps_case("tfps step: PushPull, --wire-dtype bf16 (half the bytes)", 1, calls, &half);
            c_bf16 = last_cpu;
            half.wire_dtype = TFPS_DTYPE_FP16;
            tfp16 = run_tfps_case("tfps step: PushPull, --wire-dtype fp16", 1, calls, &half);
            tfps_options sep = o;
            sep.pushpull = 0;
            tfps_sep = run_tfps_case("tfps step: Push + Pull, two calls (--pushpull 0)", 1, calls, &sep);
            tfps2 = run_tfps_case("tfps step, 2 ps (balanced plan): PushPull to both in parallel", 2, calls, &o);
        }
        /* the same over mTLS: a server with the ps's certificate, a client with a worker's */
        double t1k = -1, t1m = -1, tbare = -1, ttfps1 = -1;
        char tdir[] = "/tmp/tfps-bench-tls-XXXXXX", cmd[1024];
        if (mkdtemp(tdir)) {
            snprintf(cmd, sizeof(cmd), "bash " TFPS_SOURCE_DIR "/deploy/make-certs.sh --out %s --days 1 "
                     "'{\"cluster\": {\"ps\": [\"127.0.0.1:1\"], \"worker\": [\"127.0.0.1:2\"]}}' 2>/dev/null",
                     tdir);
            tfps_rpc_server *ts = NULL;
            tfps_rpc_client *tc = NULL;
            pthread_t tth;
            int tport = 0;
            if (system(cmd) == 0 && use_cert(tdir, "ps-0") == TFPS_OK)
                ts = tfps_rpc_server_new("127.0.0.1:0", METHODS, M_COUNT, 8u << 20, handler, NULL, 100, NULL, &tport,
                                         err, sizeof(err));
            if (ts && use_cert(tdir, "worker-0") == TFPS_OK) {
                pthread_create(&tth, NULL, run_thread, ts);
                char ttarget[64];
                snprintf(ttarget, sizeof(ttarget), "127.0.0.1:%d", tport);
                const char *tt[1] = {ttarget};
                tc = tfps_rpc_client_new(tt, 1, 8u << 20, err, sizeof(err));
            }
            if (tc) {
                t1k = run_case(tc, "mTLS: echo 1 KB", &echo1k, 1, calls, 2.0 * sizeof(small));
                t1m = run_case(tc, "mTLS: echo 1,066,440 B (model each way)", &echo1m, 1, calls, 2.0 * MODEL_BYTES);
                tbare = run_case(tc, "mTLS: push 1 MB + pull 1 MB in one batch (a step)", step, 2, calls,
                                 2.0 * MODEL_BYTES);
                if (tfps1 > 0)   // server and client of one process: the ps's certificate for both
                    ttfps1 = use_cert(tdir, "ps-0") == TFPS_OK
                                 ? run_tfps_case("mTLS: tfps step: PushPull through a real ps", 1, calls, &o)
                                 : -1;
            } else {
                fprintf(stderr, "bench_rpc: mTLS rows not run: %s\n", ts ? err : "make-certs.sh or the server failed");
            }
            tfps_rpc_client_free(tc);
            if (ts) {
                tfps_rpc_server_request_stop(ts);
                pthread_join(tth, NULL);
                tfps_rpc_server_free(ts);
            }
            tfps_rpc_set_tls(NULL, NULL, NULL, err, sizeof(err));
            snprintf(cmd, sizeof(cmd), "rm -rf %s", tdir);
            if (system(cmd) != 0) fprintf(stderr, "bench_rpc: could not remove %s\n", tdir);
        }
        fflush(stdout);
        /* posix_spawn, not fork: gRPC's threads may hold locks. */
        int nenv = 0;
        while (environ[nenv]) nenv++;
        char **env = calloc((size_t)nenv + 2, sizeof(char *));
        memcpy(env, environ, (size_t)nenv * sizeof(char *));
        env[nenv] = "TFPS_RPC_DEFAULT_MALLOC=1";
        char n[32];
        snprintf(n, sizeof(n), "%d", calls);
        char *child_argv[] = {argv[0], "--only-1mb-echo", n, NULL};
        pid_t pid;
        int st = 0;
        if (posix_spawn(&pid, "/proc/self/exe", NULL, NULL, child_argv, env) == 0) waitpid(pid, &st, 0);
        free(env);
        printf("(MB/s counts both directions; faults/rnd: minor page faults per round, whole process; CPU us: CPU "
               "time per round, whole process: client, server and ps threads)\n");
        if (bare > 0 && tfps1 > 0)
            printf("tfps step p50 / bare push+pull echo batch p50: %.2fx (1 ps)", tfps1 / bare);
        else
            printf("tfps step p50 / bare push+pull echo batch p50: n/a (a case failed)");
        if (bare > 0 && tfps2 > 0) printf(", %.2fx (2 ps)", tfps2 / bare);
        printf("\n");
        // issue 13's aim: a full-model PushPull no slower than the bare echo of the same bytes + 10%
        if (e1m > 0 && tfps1 > 0 && tfps_sep > 0)
            printf("tfps PushPull p50 / bare echo 1 MB p50: %.2fx (aim <= 1.10); PushPull / Push + Pull (two "
                   "calls): %.2fx\n", tfps1 / e1m, tfps1 / tfps_sep);
        if (c_e1m > 0 && c_tfps1 > 0 && c_bf16 > 0)
            printf("CPU per round: tfps PushPull / bare echo 1 MB: %.2fx; bf16 PushPull / fp32 PushPull: %.2fx\n",
                   c_tfps1 / c_e1m, c_bf16 / c_tfps1);
        if (tfps1 > 0 && tbf16 > 0 && tfp16 > 0 && ehalf > 0)
            printf("--wire-dtype PushPull p50 / fp32 PushPull p50: bf16 %.2fx, fp16 %.2fx (aim <= 0.60); bf16 / bare "
                   "echo of its bytes: %.2fx\n", tbf16 / tfps1, tfp16 / tfps1, tbf16 / ehalf);
        if (t1k > 0 && t1m > 0 && tbare > 0 && ttfps1 > 0)
            printf("mTLS p50 / plaintext p50: echo 1 KB %.2fx, echo 1 MB %.2fx, push+pull batch %.2fx, tfps step "
                   "%.2fx\n", t1k / e1k, t1m / e1m, tbare / bare, ttfps1 / tfps1);
        else
            printf("mTLS p50 / plaintext p50: n/a (an mTLS case failed)\n");
        if (bare <= 0 || tfps1 <= 0 || tfps2 <= 0 || tfps_sep <= 0 || tbf16 <= 0 || tfp16 <= 0 || t1k <= 0 || t1m <= 0 ||
            tbare <= 0 || ttfps1 <= 0)
            rc = 1;
    }
    tfps_rpc_client_free(c);
    tfps_rpc_server_request_stop(s);
    pthread_join(th, NULL);
    tfps_rpc_server_free(s);
    free(model);
    tfps_rpc_shutdown();
    return rc;
}
