/* test_ps.c -- a real tfps-ps process, spoken to over gRPC on a port chosen
 * by the kernel. Every bad request (malformed protobuf, a gradient of the
 * wrong size, a range the ps does not own, an unknown worker, NaN values, a
 * push from the evaluator, a mismatched layout) gets an error status and the
 * ps's weights stay byte-for-byte unchanged; a good push changes them by
 * exactly -lr * g; the health service answers; Shutdown makes the ps exit 0.
 *
 * A second suite runs a multi-core ps (--ps-threads 4: four server threads,
 * updates split over four) against four workers calling at once from
 * threads of their own (tfps_psclient, as tfps-worker does): in sync mode
 * (adam) the final weights equal, byte for byte, those of the same run
 * against --ps-threads 1; in async mode (sgd: the order of the updates
 * changes only roundings) every push is applied and the weights equal one
 * thread's to 1e-5. The ps run with TFPS_PS_APPLY_MIN_CHUNK=16384, so sgd's
 * updates of this model are split too (store.h). */
#define _POSIX_C_SOURCE 200809L
#include "layout.h"
#include "optim.h"
#include "options.h"
#include "psclient.h"
#include "rpc.h"
#include "service.h"
#include "shard.h"
#include "testutil.h"
#include "tfps.h"
#include "wire.h"

#include <CUnit/Basic.h>
#include <math.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static const char *PS = TFPS_BIN_DIR "/tfps-ps";
static tfps_layout L;
static tfps_shard_plan PLAN;   /* balanced over 2 ps: this ps (0) owns [0, 133305) */
static int ps_pid;
static char target[64], logpath[] = "/tmp/tfps-test-ps-XXXXXX";
static tfps_rpc_client *cli;
static uint32_t worker_id;
static tfps_session session;   /* from Register: every later call carries it */
static size_t OWN;   /* elements ps 0 owns */

static int call(int method, const uint8_t *body, size_t len, tfps_rpc_result *r) {
    char err[512];
    memset(r, 0, sizeof(*r));
    tfps_rpc_call_one(cli, 0, tfps_method_paths[method], body, len, 10.0, 1, r, err, sizeof(err));
    return r->status;
}

static tfps_wire_register_req reg_req(void) {
    return (tfps_wire_register_req){.task_type = "worker", .task_index = 0, .worker_rank = 0, .num_workers = 1,
                                    .num_ps = 2, .input = 784, .h1 = 300, .h2 = 100, .classes = 10,
                                    .layout_digest = tfps_layout_digest(&L), .shard_plan_digest = PLAN.digest,
                                    .shard_strategy = "balanced", .seed = 1, .learning_rate = 0.1,
                                    .consistency = "async", .optimizer = "sgd (lr 0.1)",
                                    .optimizer_digest = tfps_optim_digest(&(tfps_optim){.kind = TFPS_OPT_SGD, .lr = 0.1f,
                                        .momentum = 0.9f, .beta1 = 0.9, .beta2 = 0.999, .epsilon = 1e-7f,
                                        .initial_accumulator = 0.1f})};
}

/* Pulls everything ps 0 owns into a malloc'd array. */
static float *pull_all(void) {
    tfps_buf b = {0};
    tfps_wire_pull_req q = {.worker_id = worker_id, .nranges = 1, .ranges = {{0, OWN}}, .session = session};
    tfps_wire_pack_pull_req(&q, &b);
    tfps_rpc_result r;
    CU_ASSERT_EQUAL_FATAL(call(TFPS_M_PULL, b.data, b.len, &r), TFPS_RPC_OK);
    tfps_wire_pull_resp m;
    void *owner = NULL;
    char err[512];
    CU_ASSERT_FATAL(tfps_wire_unpack_pull_resp(r.resp, r.resp_len, &m, &owner, err, sizeof(err)) == 0);
    CU_ASSERT_EQUAL_FATAL(m.ntensors, 1);
    float *v = malloc(OWN * sizeof(float));
    memcpy(v, m.tensors[0].values, OWN * sizeof(float));
    tfps_wire_release(owner);
    tfps_rpc_result_clear(&r);
    tfps_buf_free(&b);
    return v;
}

/* The ps's Status now: tests compare counters against the start of the test,
 * so each counts only its own requests. */
static tfps_wire_status_resp status_now(void) {
    tfps_wire_status_resp st;
    memset(&st, 0, sizeof(st));
    tfps_buf b = {0};
    tfps_wire_pack_status_req(&b);
    tfps_rpc_result r;
    CU_ASSERT_EQUAL_FATAL(call(TFPS_M_STATUS, b.data, b.len, &r), TFPS_RPC_OK);
    void *owner = NULL;
    char err[512];
    CU_ASSERT_FATAL(tfps_wire_unpack_status_resp(r.resp, r.resp_len, &st, &owner, err, sizeof(err)) == 0);
    tfps_wire_release(owner);
    tfps_rpc_result_clear(&r);
    tfps_buf_free(&b);
    return st;
}

static int suite_init(void) {
    tfps_layout_init(&L, 784, 300, 100, 10, NULL, 0);
    tfps_shard_plan_build(&PLAN, &L, 2, TFPS_SHARD_BALANCED, NULL, 0);
    OWN = tfps_shard_plan_ps_elems(&PLAN, 0);
    int port = tu_free_port(), other = tu_free_port();
    char tf[512];
    snprintf(tf, sizeof(tf),
             "TF_CONFIG={\"cluster\": {\"worker\": [\"127.0.0.1:1\"], \"ps\": [\"127.0.0.1:%d\", \"127.0.0.1:%d\"]}, "
             "\"task\": {\"type\": \"ps\", \"index\": 0}}",
             port, other);
    int fd = mkstemp(logpath);
    if (fd >= 0) close(fd);
    const char *argv[] = {PS, NULL}, *env[] = {tf, NULL};
    ps_pid = tu_spawn(argv, env, logpath);
    snprintf(target, sizeof(target), "127.0.0.1:%d", port);
    tfps_rpc_init();
    const char *targets[] = {target};
    cli = tfps_rpc_client_new(targets, 1, 8u << 20, NULL, 0);
    return cli ? 0 : 1;
}

static int suite_clean(void) {
    if (ps_pid > 0) {
        kill(ps_pid, SIGKILL);
        tu_wait(ps_pid, 5);
    }
    tfps_rpc_client_free(cli);
    tfps_rpc_shutdown();
    tfps_shard_plan_destroy(&PLAN);
    unlink(logpath);
    return 0;
}

static void test_register_and_init(void) {
    const tfps_wire_status_resp st0 = status_now();
    tfps_buf b = {0};
    tfps_rpc_result r;
    char err[512];
    // a layout that differs is refused, naming the caller's (the ps's own only in its log: no job secret here)
    tfps_wire_register_req q = reg_req();
    q.h1 = 256;
    tfps_wire_pack_register_req(&q, &b);
    CU_ASSERT_EQUAL(call(TFPS_M_REGISTER, b.data, b.len, &r), TFPS_RPC_FAILED_PRECONDITION);
    CU_ASSERT_PTR_NOT_NULL(strstr(r.details, "784-256-100-10"));
    CU_ASSERT_PTR_NULL(strstr(r.details, "784-300-100-10"));
    tfps_rpc_result_clear(&r);
    q = reg_req();
    q.shard_plan_digest ^= 1;
    tfps_wire_pack_register_req(&q, &b);
    CU_ASSERT_EQUAL(call(TFPS_M_REGISTER, b.data, b.len, &r), TFPS_RPC_FAILED_PRECONDITION);
    CU_ASSERT_PTR_NOT_NULL(strstr(r.details, "shard plan differs"));
    tfps_rpc_result_clear(&r);
    // the good one
    q = reg_req();
    tfps_wire_pack_register_req(&q, &b);
    CU_ASSERT_EQUAL_FATAL(call(TFPS_M_REGISTER, b.data, b.len, &r), TFPS_RPC_OK);
    tfps_wire_register_resp m;
    void *owner = NULL;
    CU_ASSERT_FATAL(tfps_wire_unpack_register_resp(r.resp, r.resp_len, &m, &owner, err, sizeof(err)) == 0);
    worker_id = m.worker_id;
    session = m.session;
    CU_ASSERT_EQUAL(worker_id, 1);
    CU_ASSERT(tfps_session_is_set(&session));
    CU_ASSERT_EQUAL(m.ps_index, 0);
    tfps_wire_release(owner);
    tfps_rpc_result_clear(&r);
    tfps_buf_free(&b);
    const tfps_wire_status_resp st = status_now();
    CU_ASSERT_EQUAL(st.refused - st0.refused, 2);   // the two mismatches
    CU_ASSERT_EQUAL(st.workers_registered - st0.workers_registered, 1);
    // the ps initialised its range with the single-process numbers
    float *v = pull_all(), *ref = malloc(OWN * sizeof(float));
    tfps_layout_init_range(&L, 1, 0, OWN, ref);
    CU_ASSERT(memcmp(v, ref, OWN * sizeof(float)) == 0);
    free(v);
    free(ref);
}

static uint8_t *push_bytes(uint32_t wid, uint64_t begin, uint64_t end, const float *g, size_t *len, tfps_buf *b) {
    tfps_wire_push_req q = {.worker_id = wid, .step = 1, .batch_size = 64, .ntensors = 1,
                            .gradients = {{{begin, end}, g}}, .session = session};
    tfps_wire_pack_push_req(&q, b);
    *len = b->len;
    return b->data;
}

static void expect_refused(const char *what, int method, const uint8_t *body, size_t len, int want,
                           const char *needle, const float *before) {
    tfps_rpc_result r;
    int st = call(method, body, len, &r);
    if (st != want || (needle && !strstr(r.details, needle)))
        printf("\n  %s: status %d (%s) \"%s\"", what, st, tfps_rpc_status_name(st), r.details);
    CU_ASSERT_EQUAL(st, want);
    if (needle) CU_ASSERT_PTR_NOT_NULL(strstr(r.details, needle));
    tfps_rpc_result_clear(&r);
    float *after = pull_all();
    CU_ASSERT(memcmp(before, after, OWN * sizeof(float)) == 0);   // byte for byte unchanged
    free(after);
}

static void test_bad_requests(void) {
    const tfps_wire_status_resp st0 = status_now();
    float *before = pull_all();
    float g[16];
    for (int i = 0; i < 16; i++) g[i] = 0.5f;
    tfps_buf b = {0};
    size_t len;
    const uint8_t garbage[] = {0xff, 0xff, 0xff, 0xff, 0x0f, 0x32, 0x99};
    expect_refused("malformed protobuf", TFPS_M_PUSH, garbage, sizeof(garbage), TFPS_RPC_INVALID_ARGUMENT, NULL,
                   before);
    // hand-made PushRequest{worker_id 1, gradients [{range [0, 10), values: 12 bytes}]}: wrong size
    const uint8_t wrong[] = {0x08, 0x01, 0x32, 20,   0x0a, 0x04, 0x08, 0x00, 0x10, 0x0a, 0x12, 12,
                             1,    2,    3,    4,    5,    6,    7,    8,    9,    10,   11,   12};
    expect_refused("wrong gradient size", TFPS_M_PUSH, wrong, sizeof(wrong), TFPS_RPC_INVALID_ARGUMENT, "expected 40",
                   before);
    uint8_t *p = push_bytes(worker_id, OWN, OWN + 10, g, &len, &b);   // ps 1's range
    expect_refused("range not owned", TFPS_M_PUSH, p, len, TFPS_RPC_OUT_OF_RANGE, "not owned by ps 0", before);
    p = push_bytes(worker_id, OWN - 5, OWN + 5, g, &len, &b);        // straddles the boundary
    expect_refused("range straddling", TFPS_M_PUSH, p, len, TFPS_RPC_OUT_OF_RANGE, "not owned", before);
    p = push_bytes(7, 0, 10, g, &len, &b);
    expect_refused("unknown worker", TFPS_M_PUSH, p, len, TFPS_RPC_UNAUTHENTICATED, "worker id 7 has no session",
                   before);
    g[3] = NAN;
    p = push_bytes(worker_id, 0, 10, g, &len, &b);
    expect_refused("NaN", TFPS_M_PUSH, p, len, TFPS_RPC_INVALID_ARGUMENT, "non-finite", before);
    g[3] = INFINITY;
    p = push_bytes(worker_id, 0, 10, g, &len, &b);
    expect_refused("Inf", TFPS_M_PUSH, p, len, TFPS_RPC_INVALID_ARGUMENT, "non-finite", before);
    g[3] = 0.5f;
    p = push_bytes(TFPS_OBSERVER_ID, 0, 10, g, &len, &b);
    expect_refused("observer push", TFPS_M_PUSH, p, len, TFPS_RPC_PERMISSION_DENIED, "may pull but not push", before);
    tfps_wire_pull_req q = {.worker_id = worker_id, .nranges = 1, .ranges = {{OWN, OWN + 1}}, .session = session};
    tfps_wire_pack_pull_req(&q, &b);
    expect_refused("pull not owned", TFPS_M_PULL, b.data, b.len, TFPS_RPC_OUT_OF_RANGE, "not owned", before);
    expect_refused("malformed register", TFPS_M_REGISTER, garbage, sizeof(garbage), TFPS_RPC_INVALID_ARGUMENT, NULL,
                   before);

    // a good push changes exactly its range, by -lr * g
    p = push_bytes(worker_id, 100, 116, g, &len, &b);
    tfps_rpc_result r;
    CU_ASSERT_EQUAL(call(TFPS_M_PUSH, p, len, &r), TFPS_RPC_OK);
    tfps_rpc_result_clear(&r);
    float *after = pull_all();
    for (size_t i = 0; i < OWN; i++) {
        float want = (i >= 100 && i < 116) ? before[i] - 0.1f * 0.5f : before[i];
        if (after[i] != want) {
            CU_FAIL("good push changed the wrong values");
            break;
        }
    }
    free(after);

    // Status counts this test's 10 refusals and its one push
    const tfps_wire_status_resp st = status_now();
    CU_ASSERT_EQUAL(st.applied - st0.applied, 1);
    CU_ASSERT_EQUAL(st.version - st0.version, 1);
    CU_ASSERT_EQUAL(st.refused - st0.refused, 10);
    CU_ASSERT_EQUAL(st.workers_registered, st0.workers_registered);
    CU_ASSERT(st.bytes_in > st0.bytes_in && st.bytes_out - st0.bytes_out > OWN * 4);
    tfps_buf_free(&b);
    free(before);
}

/* A tester's attack: pushes of -3.4e38 (finite) until the weight would be
 * inf. SGD lr 0.1 moves element 200 by 3.4e37 per push; with its initial
 * value it passes FLT_MAX at the 10th or 11th push. Each push is answered OK;
 * once the update would be non-finite the reply says nonfinite (applied 0),
 * the weights stay byte for byte, the version stays and Status counts it.
 * Every pulled weight is finite throughout. */
static void test_nonfinite_update_refused(void) {
    const tfps_wire_status_resp st0 = status_now();
    float g[4] = {0.0f, -3.4e38f, 0.0f, 0.0f};
    tfps_buf b = {0};
    size_t len;
    int applied_n = 0, refused_n = 0;
    float *before = pull_all();
    for (int i = 0; i < 14; i++) {
        uint8_t *p = push_bytes(worker_id, 199, 203, g, &len, &b);
        tfps_rpc_result r;
        CU_ASSERT_EQUAL_FATAL(call(TFPS_M_PUSH, p, len, &r), TFPS_RPC_OK);
        tfps_wire_push_resp m;
        void *owner = NULL;
        CU_ASSERT_FATAL(tfps_wire_unpack_push_resp(r.resp, r.resp_len, &m, &owner, NULL, 0) == 0);
        tfps_wire_release(owner);
        tfps_rpc_result_clear(&r);
        CU_ASSERT_EQUAL(m.applied, !m.nonfinite);
        float *after = pull_all();
        for (size_t k = 0; k < OWN; k++) CU_ASSERT_FATAL(isfinite(after[k]));
        if (m.nonfinite) {
            refused_n++;
            CU_ASSERT(memcmp(before, after, OWN * sizeof(float)) == 0);
        } else {
            applied_n++;
            CU_ASSERT_EQUAL(after[200], before[200] - 0.1f * g[1]);   // the plain rule, until the edge
            CU_ASSERT_EQUAL(after[199], before[199]);
            CU_ASSERT(refused_n == 0);   // once refused, always refused (nothing changed)
        }
        free(before);
        before = after;
    }
    free(before);
    printf("\n    14 pushes of -3.4e38: %d applied, %d refused as non-finite", applied_n, refused_n);
    CU_ASSERT(applied_n >= 9 && applied_n <= 11 && refused_n == 14 - applied_n);
    const tfps_wire_status_resp st = status_now();
    CU_ASSERT_EQUAL(st.nonfinite - st0.nonfinite, (uint64_t)refused_n);
    CU_ASSERT_EQUAL(st.applied - st0.applied, (uint64_t)applied_n);
    CU_ASSERT_EQUAL(st.version - st0.version, (uint64_t)applied_n);
    CU_ASSERT_EQUAL(st.refused, st0.refused);   // not a malformed request: answered OK, counted apart
    tfps_buf_free(&b);
}

/* The evaluator's reports (HeartbeatRequest.eval): kept and handed back in Status; one out of range
 * (a NaN loss from diverged weights) is ignored while the heartbeat still counts; a training worker's
 * report is refused PERMISSION_DENIED. */
static void heartbeat_eval(uint32_t id, tfps_session ses, tfps_wire_eval e, int want) {
    tfps_buf b = {0};
    tfps_wire_heartbeat_req h = {.worker_id = id, .session = ses, .eval = e};
    tfps_wire_pack_heartbeat_req(&h, &b);
    tfps_rpc_result r;
    const int got = call(TFPS_M_HEARTBEAT, b.data, b.len, &r);
    if (got != want) printf("\n  heartbeat with eval %u: status %d, expected %d (%s)", e.count, got, want, r.details);
    CU_ASSERT_EQUAL(got, want);
    tfps_rpc_result_clear(&r);
    tfps_buf_free(&b);
}

static void test_evaluator_reports(void) {
    // register as the evaluator: its id and the observer session
    tfps_wire_register_req q = reg_req();
    q.task_type = "evaluator";
    tfps_buf b = {0};
    tfps_wire_pack_register_req(&q, &b);
    tfps_rpc_result r;
    CU_ASSERT_EQUAL_FATAL(call(TFPS_M_REGISTER, b.data, b.len, &r), TFPS_RPC_OK);
    tfps_wire_register_resp rr;
    void *owner = NULL;
    char err[512];
    CU_ASSERT_FATAL(tfps_wire_unpack_register_resp(r.resp, r.resp_len, &rr, &owner, err, sizeof(err)) == 0);
    const uint32_t eid = rr.worker_id;
    const tfps_session es = rr.session;
    tfps_wire_release(owner);
    tfps_rpc_result_clear(&r);
    tfps_buf_free(&b);
    CU_ASSERT_EQUAL(eid, TFPS_OBSERVER_ID);

    CU_ASSERT_EQUAL(status_now().eval.count, 0);   // none yet
    heartbeat_eval(eid, es, (tfps_wire_eval){.count = 1, .step = 7, .accuracy = 0.625, .loss = 1.25}, TFPS_RPC_OK);
    tfps_wire_status_resp st = status_now();
    CU_ASSERT(st.eval.count == 1 && st.eval.step == 7 && st.eval.accuracy == 0.625 && st.eval.loss == 1.25);
    // out of range: the heartbeat is answered OK, the report not kept
    heartbeat_eval(eid, es, (tfps_wire_eval){.count = 2, .step = 9, .accuracy = 0.1, .loss = NAN}, TFPS_RPC_OK);
    heartbeat_eval(eid, es, (tfps_wire_eval){.count = 3, .step = 9, .accuracy = 1.5, .loss = 1.0}, TFPS_RPC_OK);
    heartbeat_eval(eid, es, (tfps_wire_eval){.count = 4, .step = 9, .accuracy = 0.5, .loss = -1.0}, TFPS_RPC_OK);
    heartbeat_eval(eid, es, (tfps_wire_eval){.count = 5, .step = 9, .accuracy = 0.5, .loss = INFINITY}, TFPS_RPC_OK);
    st = status_now();
    CU_ASSERT(st.eval.count == 1 && st.eval.step == 7 && st.eval.accuracy == 0.625);
    // a training worker may not report; nor may a caller without the evaluator's session
    heartbeat_eval(worker_id, session, (tfps_wire_eval){.count = 1, .step = 1, .accuracy = 0.9, .loss = 0.1},
                   TFPS_RPC_PERMISSION_DENIED);
    heartbeat_eval(eid, session, (tfps_wire_eval){.count = 9, .step = 1, .accuracy = 0.9, .loss = 0.1},
                   TFPS_RPC_UNAUTHENTICATED);
    heartbeat_eval(eid, es, (tfps_wire_eval){.count = 6, .step = 11, .accuracy = 0.75, .loss = 0.5}, TFPS_RPC_OK);
    st = status_now();
    CU_ASSERT(st.eval.count == 6 && st.eval.step == 11 && st.eval.accuracy == 0.75 && st.eval.loss == 0.5);
    char *log = tu_read_file(logpath);
    CU_ASSERT_PTR_NOT_NULL(log && strstr(log, "evaluation 2 ignored: accuracy 0.1, loss nan"));
    CU_ASSERT_PTR_NOT_NULL(log && strstr(log, "the evaluator registered"));
    free(log);
}

static void test_health_and_shutdown(void) {
    tfps_rpc_result r;
    char err[512];
    memset(&r, 0, sizeof(r));
    const uint8_t empty[1] = {0};
    CU_ASSERT_EQUAL(tfps_rpc_call_one(cli, 0, "/grpc.health.v1.Health/Check", empty, 0, 5.0, 0, &r, err, sizeof(err)), 0);
    int status = -1;
    void *owner = NULL;
    CU_ASSERT(tfps_wire_unpack_health_resp(r.resp, r.resp_len, &status, &owner, err, sizeof(err)) == 0);
    CU_ASSERT_EQUAL(status, 1);   // SERVING
    tfps_wire_release(owner);
    tfps_rpc_result_clear(&r);
    CU_ASSERT_EQUAL(tfps_rpc_call_one(cli, 0, "/tfps.v1.ParameterServer/NoSuchMethod", empty, 0, 5.0, 0, &r, err,
                                  sizeof(err)),
                    -1);
    CU_ASSERT_EQUAL(r.status, TFPS_RPC_UNIMPLEMENTED);
    tfps_rpc_result_clear(&r);
    tfps_buf b = {0};
    // a Shutdown without the chief's session: refused, the ps serves on
    tfps_wire_shutdown_req q = {.reason = "test\nfake line", .worker_id = 1};
    tfps_wire_pack_shutdown_req(&q, &b);
    CU_ASSERT_EQUAL(call(TFPS_M_SHUTDOWN, b.data, b.len, &r), TFPS_RPC_UNAUTHENTICATED);
    tfps_rpc_result_clear(&r);
    CU_ASSERT_EQUAL(status_now().unauthenticated, 3);   // this, test_bad_requests' worker 7, the report without the session
    q.session = session;
    tfps_wire_pack_shutdown_req(&q, &b);
    CU_ASSERT_EQUAL(call(TFPS_M_SHUTDOWN, b.data, b.len, &r), TFPS_RPC_OK);
    tfps_rpc_result_clear(&r);
    tfps_buf_free(&b);
    CU_ASSERT_EQUAL(tu_wait(ps_pid, 20), 0);   // exits 0 on the chief's Shutdown
    ps_pid = 0;
    char *log = tu_read_file(logpath);
    CU_ASSERT_PTR_NOT_NULL(log && strstr(log, "shutdown requested: test?fake line"));   // one line, not two
    CU_ASSERT_PTR_NULL(log && strstr(log, "\nfake line"));
    free(log);
}

/* ---- a multi-core ps, several workers at once ------------------------------ */

#define MC_WORKERS 4
#define MC_STEPS 12

typedef struct {
    const char *target;
    const tfps_options *o;
    const tfps_layout *l;
    const tfps_shard_plan *plan;
    int rank;
    float *params;   /* [total]: the weights after its last round */
    int ok;
    char err[512];
} mc_worker;

/* One worker: register, pull, MC_STEPS rounds of push (a gradient that depends
 * on rank and step only) + pull, then done. */
static void *mc_worker_main(void *arg) {
    mc_worker *w = arg;
    tfps_psclient pc;
    char *targets[1] = {(char *)w->target};
    if (tfps_psclient_init(&pc, targets, w->l, w->plan, w->err, sizeof(w->err)) != TFPS_OK) return NULL;
    pc.consistency = w->o->consistency;
    pc.num_workers = MC_WORKERS;
    char desc[160];
    tfps_wire_register_req q = tfps_psclient_register_req(w->o, w->l, w->plan, "worker", w->rank, w->rank, MC_WORKERS,
                                                          desc, sizeof(desc));
    int refused = 0;
    const size_t n = w->l->total;
    float *g = malloc(n * sizeof(float));
    int rc = g ? tfps_psclient_register(&pc, &q, 30.0, "test", &refused, w->err, sizeof(w->err)) : TFPS_ERR;
    if (rc == TFPS_OK) rc = tfps_psclient_round(&pc, NULL, 0, 0, 0, w->params, 60.0, w->err, sizeof(w->err));
    for (int step = 1; step <= MC_STEPS && rc == TFPS_OK; step++) {
        for (size_t i = 0; i < n; i++)
            g[i] = (float)((int)((i * 31 + (size_t)w->rank * 7919 + (size_t)step * 104729) % 2001) - 1000) * 1e-4f;
        rc = tfps_psclient_round(&pc, g, 2.3f, 32, (uint64_t)step, w->params, 60.0, w->err, sizeof(w->err));
    }
    if (rc == TFPS_OK) rc = tfps_psclient_heartbeat(&pc, MC_STEPS, 0, 1, NULL, 30.0, w->err, sizeof(w->err));
    w->ok = rc == TFPS_OK;
    free(g);
    tfps_psclient_destroy(&pc);
    return NULL;
}

/* A 1-ps, MC_WORKERS-worker job: tfps-ps with args (NULL-ended, the same the
 * workers' options are parsed from), the workers at once; then the final
 * weights (pulled as the evaluator) into w, the ps's Status into *st, and
 * its log (stopped by SIGTERM: it must exit 0). 0 on success. */
static int mc_run(const char *const *args, float *w, tfps_wire_status_resp *st, char **log_out) {
    tfps_layout l;
    tfps_shard_plan plan = {0};
    tfps_options o;
    char err[512];
    const char *argv[32] = {"tfps-ps"};
    int argc = 1;
    while (args[argc - 1]) {
        argv[argc] = args[argc - 1];
        argc++;
    }
    argv[argc] = NULL;
    if (tfps_options_parse(&o, argc, (char **)argv, err, sizeof(err)) != TFPS_OK) {
        printf("\n  options: %s", err);
        return -1;
    }
    tfps_layout_init(&l, 784, o.h1, o.h2, 10, NULL, 0);
    tfps_shard_plan_build(&plan, &l, 1, TFPS_SHARD_BALANCED, NULL, 0);
    const int port = tu_free_port();
    char tf[512], mlog[] = "/tmp/tfps-test-ps-mc-XXXXXX", tgt[64];
    snprintf(tf, sizeof(tf),
             "TF_CONFIG={\"cluster\": {\"worker\": [\"127.0.0.1:1\", \"127.0.0.1:2\", \"127.0.0.1:3\", "
             "\"127.0.0.1:4\"], \"ps\": [\"127.0.0.1:%d\"]}, \"task\": {\"type\": \"ps\", \"index\": 0}}", port);
    snprintf(tgt, sizeof(tgt), "127.0.0.1:%d", port);
    int fd = mkstemp(mlog);
    if (fd >= 0) close(fd);
    argv[0] = PS;
    const char *env[] = {tf, "TFPS_PS_APPLY_MIN_CHUNK=16384", NULL};
    const int pid = tu_spawn(argv, env, mlog);
    mc_worker ws[MC_WORKERS];
    pthread_t th[MC_WORKERS];
    int rc = 0, started[MC_WORKERS];
    for (int r = 0; r < MC_WORKERS; r++) {
        ws[r] = (mc_worker){.target = tgt, .o = &o, .l = &l, .plan = &plan, .rank = r,
                            .params = malloc(l.total * sizeof(float))};
        started[r] = pthread_create(&th[r], NULL, mc_worker_main, &ws[r]) == 0;
    }
    for (int r = 0; r < MC_WORKERS; r++) {
        if (started[r]) pthread_join(th[r], NULL);
        if (ws[r].ok != 1) {
            printf("\n  worker %d: %s", r, ws[r].err);
            rc = -1;
        }
    }
    // the evaluator's view once every worker is done: the final weights and the ps's Status
    tfps_psclient pc;
    char *targets[1] = {tgt};
    memset(st, 0, sizeof(*st));
    if (rc == 0 && tfps_psclient_init(&pc, targets, &l, &plan, err, sizeof(err)) == TFPS_OK) {
        pc.consistency = o.consistency;
        pc.num_workers = MC_WORKERS;
        char desc[160];
        tfps_wire_register_req q = tfps_psclient_register_req(&o, &l, &plan, "evaluator", 0, 0, MC_WORKERS, desc,
                                                              sizeof(desc));
        int refused = 0;
        if (tfps_psclient_register(&pc, &q, 10.0, "test", &refused, err, sizeof(err)) != TFPS_OK ||
            tfps_psclient_round(&pc, NULL, 0, 0, 0, w, 10.0, err, sizeof(err)) != TFPS_OK ||
            tfps_psclient_status(&pc, 0, st, 10.0, err, sizeof(err)) != TFPS_OK) {
            printf("\n  evaluator: %s", err);
            rc = -1;
        }
        tfps_psclient_destroy(&pc);
    }
    kill(pid, SIGTERM);
    if (tu_wait(pid, 20) != 0) rc = -1;   // a clean stop: every thread joined, exit 0
    *log_out = tu_read_file(mlog);
    unlink(mlog);
    for (int r = 0; r < MC_WORKERS; r++) free(ws[r].params);
    tfps_shard_plan_destroy(&plan);
    return rc;
}

static int mc_init(void) {
    tfps_rpc_init();
    return 0;
}

static int mc_clean(void) {
    tfps_rpc_shutdown();
    return 0;
}

static void test_multicore_same_bits(void) {
    const size_t n = 266610;
    float *w1 = malloc(n * sizeof(float)), *w4 = malloc(n * sizeof(float));
    const char *modes[2] = {"sync", "async"}, *optim[2] = {"adam", "sgd"};
    for (int m = 0; m < 2; m++) {
        const char *a1[] = {"--consistency", modes[m], "--optimizer", optim[m], "--learning-rate", "0.01",
                            "--ps-threads", "1", NULL};
        const char *a4[] = {"--consistency", modes[m], "--optimizer", optim[m], "--learning-rate", "0.01",
                            "--ps-threads", "4", NULL};
        tfps_wire_status_resp s1, s4;
        char *log1 = NULL, *log4 = NULL;
        CU_ASSERT_EQUAL(mc_run(a1, w1, &s1, &log1), 0);
        CU_ASSERT_EQUAL(mc_run(a4, w4, &s4, &log4), 0);
        CU_ASSERT_PTR_NOT_NULL(log1 && strstr(log1, "1 thread (--ps-threads), updates split over 1"));
        CU_ASSERT_PTR_NOT_NULL(log4 && strstr(log4, "4 threads (--ps-threads), updates split over 4"));
        CU_ASSERT_EQUAL(s1.refused, 0);
        CU_ASSERT_EQUAL(s4.refused, 0);
        if (m == 0) {   // sync: one step per round, the mean in rank order: the same bytes
            CU_ASSERT_EQUAL(s4.version, MC_STEPS);
            CU_ASSERT_EQUAL(s4.aggregated, MC_WORKERS * MC_STEPS);
            CU_ASSERT_EQUAL(s4.dropped, 0);
            if (memcmp(w1, w4, n * sizeof(float)) != 0) printf("\n  sync: --ps-threads 4 and 1 end with other weights");
            CU_ASSERT(memcmp(w1, w4, n * sizeof(float)) == 0);
        } else {   // async: every push applied; the same sum of updates, in another order
            CU_ASSERT_EQUAL(s1.applied, MC_WORKERS * MC_STEPS);
            CU_ASSERT_EQUAL(s4.applied, MC_WORKERS * MC_STEPS);
            double worst = 0;
            for (size_t i = 0; i < n; i++) {
                const double d = fabs((double)w1[i] - (double)w4[i]);
                if (!(d <= worst)) worst = d;   // NaN too
            }
            if (!(worst < 1e-5)) printf("\n  async: largest difference %g", worst);
            CU_ASSERT(worst < 1e-5);   // sgd: lr * 48 gradients of at most 0.1 each, summed in another order
        }
        free(log1);
        free(log4);
    }
    free(w1);
    free(w4);
}

int main(void) {
    if (CU_initialize_registry() != CUE_SUCCESS) return 1;
    CU_pSuite s = CU_add_suite("ps_over_grpc", suite_init, suite_clean);
    CU_add_test(s, "register: refusals name both sides; ranges start as in one process", test_register_and_init);
    CU_add_test(s, "bad requests refused, weights unchanged; a good push applies", test_bad_requests);
    CU_add_test(s, "pushes of -3.4e38: the update that would be inf is refused, told, counted",
                test_nonfinite_update_refused);
    CU_add_test(s, "the evaluator's reports: kept, out of range ignored, a worker's refused", test_evaluator_reports);
    CU_add_test(s, "health check, unknown method, Shutdown exits 0", test_health_and_shutdown);
    CU_pSuite mc = CU_add_suite("multicore_ps", mc_init, mc_clean);
    CU_add_test(mc, "--ps-threads 4 vs 1, 4 workers at once: sync byte-identical, async all applied",
                test_multicore_same_bits);
    CU_basic_set_mode(CU_BRM_VERBOSE);
    CU_basic_run_tests();
    int failed = (int)(CU_get_number_of_tests_failed() + CU_get_number_of_suites_failed());
    CU_cleanup_registry();
    return failed;
}
