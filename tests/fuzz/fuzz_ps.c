/* fuzz_ps.c -- libFuzzer target: the ps's request handlers end to end,
 * without the network: bytes -> decode -> validate -> policy -> store, as
 * tfps_ps_handle does for every call (ps.h; test_ps_handlers drives it the
 * same way). The handlers are the attack surface: whatever arrives, the ps
 * must answer without crashing, leaking or corrupting its state.
 *
 * Input: byte 0 picks the ps: consistency (async, sync, ssp), optimizer
 * (sgd, momentum, adam, adagrad), 1 or 2 ps (this is ps 0), sync with or
 * without a backup worker. Two workers and the evaluator are registered.
 * Then records until the input ends: [kind][len lo][len hi][len bytes]:
 *   kind % 8 = 0..5  raw bytes to Register, Pull, Push, Heartbeat, Status,
 *                    Shutdown (Checkpoint is left out: it writes files)
 *            = 6     a well-formed Push of every owned range, built here
 *                    with the session of the worker it names:
 *                    payload = worker id, base version, then the floats
 *                    (repeated to fill the ranges): reaches the optimizer
 *                    with any values (-3.4e38, denormals, ...)
 *            = 7     a well-formed Pull (with its session): worker id, min
 *                    version, clock; byte 3 odd: a Heartbeat(done) instead
 * Checked: every OK reply decodes; at the end the weights, pulled by the
 * evaluator, are all finite (an update that would make one inf or NaN must
 * be refused). Built only by tests/fuzz/run.sh (clang). */
#include "layout.h"
#include "log.h"
#include "optim.h"
#include "options.h"
#include "ps.h"
#include "rpc.h"
#include "service.h"
#include "shard.h"
#include "tfps.h"
#include "wire.h"

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int tokens[64];   /* a held call's token: any distinct address */
static int next_token;
static tfps_session sess[3];   /* from Register: workers 1 and 2, the evaluator */

/* The session a well-formed call of worker id carries (none for other ids). */
static tfps_session session_of(uint32_t id) {
    tfps_session none = {{0}};
    return id == 1 || id == 2 ? sess[id - 1] : id == TFPS_OBSERVER_ID ? sess[2] : none;
}

static void on_reply(void *ctx, void *token, int status, const uint8_t *resp, size_t len, const char *msg) {
    (void)ctx;
    (void)token;
    (void)msg;
    if (status == TFPS_RPC_OK) {   // a released pull: a PullResponse
        tfps_wire_pull_resp r;
        void *own = NULL;
        if (tfps_wire_unpack_pull_resp(resp, len, &r, &own, NULL, 0) != TFPS_OK) abort();
        tfps_wire_release(own);
    }
}

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    (void)argc;
    (void)argv;
    tfps_log_min_level = TFPS_LOG_ERROR + 1;   // quiet: refusals log lines, thousands per second here
    return 0;
}

static int handle(tfps_ps *ps, int method, const uint8_t *req, size_t len, const uint8_t **resp, size_t *resp_len) {
    char msg[TFPS_ERR_LEN];
    void *token = &tokens[next_token++ % 64];
    int rc = tfps_ps_handle(ps, method, req, len, token, resp, resp_len, msg, sizeof(msg));
    if (rc != TFPS_RPC_OK && rc != TFPS_PS_HELD && (!msg[0] || strchr(msg, '\n'))) abort();   // one line, always
    return rc;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 1) return 0;
    static const char *const modes[] = {"async", "sync", "ssp"};
    static const char *const optims[] = {"sgd", "momentum", "adam", "adagrad"};
    const int cfg = data[0];
    const int P = 1 + (cfg / 12) % 2, backup = (cfg / 24) % 2;
    char *argv[] = {"fuzz", "--consistency", (char *)modes[cfg % 3], "--optimizer", (char *)optims[(cfg / 3) % 4],
                    "--replicas-to-aggregate", backup ? "1" : "0", "--staleness", "1", NULL};
    tfps_options o;
    char err[TFPS_ERR_LEN];
    if (tfps_options_parse(&o, 9, argv, err, sizeof(err)) != TFPS_OK) abort();
    o.h1 = 4;
    o.h2 = 3;
    tfps_layout l;
    tfps_shard_plan plan;
    if (tfps_layout_init(&l, 8, 4, 3, 2, err, sizeof(err)) != TFPS_OK) abort();
    if (tfps_shard_plan_build(&plan, &l, P, TFPS_SHARD_BALANCED, err, sizeof(err)) != TFPS_OK) abort();
    tfps_ps *ps = tfps_ps_new(&l, &plan, 0, &o, 2, on_reply, NULL, err, sizeof(err));
    if (!ps) abort();
    tfps_optim opt;
    char desc[160];
    tfps_options_optim(&o, &opt);
    tfps_optim_describe(&opt, desc, sizeof(desc));
    tfps_buf b = {0}, pb = {0};
    const uint8_t *resp;
    size_t resp_len;
    for (int r = 0; r <= 2; r++) {   // workers 1 and 2, then the evaluator
        tfps_wire_register_req q = {
            .task_type = r == 2 ? "evaluator" : "worker", .task_index = (uint32_t)r % 2,
            .worker_rank = (uint32_t)r % 2, .num_workers = 2, .num_ps = (uint32_t)P, .input = 8, .h1 = 4, .h2 = 3,
            .classes = 2, .layout_digest = tfps_layout_digest(&l), .shard_plan_digest = plan.digest,
            .shard_strategy = "balanced", .seed = (uint64_t)o.seed, .learning_rate = o.learning_rate,
            .consistency = modes[cfg % 3], .replicas_to_aggregate = backup ? 1u : 0u, .staleness = 1,
            .optimizer = desc, .optimizer_digest = tfps_optim_digest(&opt)};
        tfps_wire_pack_register_req(&q, &b);
        if (handle(ps, TFPS_M_REGISTER, b.data, b.len, &resp, &resp_len) != TFPS_RPC_OK) abort();
        tfps_wire_register_resp rr;
        void *own = NULL;
        if (tfps_wire_unpack_register_resp(resp, resp_len, &rr, &own, NULL, 0) != TFPS_OK) abort();
        sess[r] = rr.session;
        tfps_wire_release(own);
    }
    // ps 0's ranges (balanced: one range)
    uint64_t own_b = 0, own_e = 0;
    for (int r = 0; r < plan.nranges; r++)
        if (plan.ranges[r].ps == 0) own_b = plan.ranges[r].begin, own_e = plan.ranges[r].end;
    static float g[64];
    static const int methods[6] = {TFPS_M_REGISTER, TFPS_M_PULL, TFPS_M_PUSH, TFPS_M_HEARTBEAT, TFPS_M_STATUS,
                                   TFPS_M_SHUTDOWN};
    size_t at = 1;
    while (at + 3 <= size) {
        const int kind = data[at] % 8;
        size_t len = (size_t)data[at + 1] | (size_t)data[at + 2] << 8;
        at += 3;
        if (len > size - at) len = size - at;
        const uint8_t *p = data + at;
        at += len;
        int method;
        const uint8_t *req = p;
        size_t req_len = len;
        if (kind < 6) {
            method = methods[kind];
            if (kind == 2 && len > 0 && p[0] == 0x0a) method = TFPS_M_PUSHPULL;   // raw bytes as a PushPull body
        } else if (kind == 6) {
            // a well-formed push of fuzzed values; every other one a PushPull with a pull of the same worker
            // (raw fuzzed PushPull bodies come with the raw bytes of the methods above: kind 0..5 never
            // makes one, so an odd first byte makes the body PushPull's)
            method = len > 0 && p[0] % 2 ? TFPS_M_PUSHPULL : TFPS_M_PUSH;
            tfps_wire_push_req q = {.worker_id = len > 0 ? p[0] : 1, .base_version = len > 1 ? p[1] : 0, .step = 1,
                                    .batch_size = 4, .ntensors = 1};
            q.session = session_of(q.worker_id);
            const size_t nf = len > 2 ? (len - 2) / 4 : 0, ne = (size_t)(own_e - own_b);
            for (size_t i = 0; i < ne; i++) {
                if (nf) memcpy(&g[i], p + 2 + 4 * (i % nf), 4);
                else g[i] = 0.5f;
            }
            q.gradients[0] = (tfps_wire_tensor){.range = {own_b, own_e}, .values = g};
            if (method == TFPS_M_PUSHPULL) {
                tfps_wire_pull_req pq = {.worker_id = q.worker_id, .min_version = len > 1 ? p[1] : 0,
                                         .session = q.session};
                tfps_wire_pack_pull_req(&pq, &pb);
                tfps_wire_pack_pushpull_req(&q, &pb, &b);
            } else {
                tfps_wire_pack_push_req(&q, &b);
            }
            req = b.data;
            req_len = b.len;
        } else if (len > 3 && p[3] % 2) {
            method = TFPS_M_HEARTBEAT;
            tfps_wire_heartbeat_req q = {.worker_id = p[0], .step = p[1], .done = 1, .session = session_of(p[0])};
            tfps_wire_pack_heartbeat_req(&q, &b);
            req = b.data;
            req_len = b.len;
        } else {
            method = TFPS_M_PULL;
            tfps_wire_pull_req q = {.worker_id = len > 0 ? p[0] : 1, .min_version = len > 1 ? p[1] : 0,
                                    .clock = len > 2 ? p[2] : 0};
            q.session = session_of(q.worker_id);
            tfps_wire_pack_pull_req(&q, &b);
            req = b.data;
            req_len = b.len;
        }
        int rc = handle(ps, method, req_len ? req : NULL, req_len, &resp, &resp_len);
        if (rc == TFPS_RPC_OK && method == TFPS_M_PUSH) {
            tfps_wire_push_resp r;
            void *own = NULL;
            if (tfps_wire_unpack_push_resp(resp, resp_len, &r, &own, NULL, 0) != TFPS_OK) abort();
            tfps_wire_release(own);
        }
        if (rc == TFPS_RPC_OK && method == TFPS_M_PUSHPULL) {   // an answer given now must parse as one
            tfps_wire_pull_resp r;
            tfps_wire_push_resp pr;
            void *own = NULL;
            if (tfps_wire_unpack_pushpull_resp(resp, resp_len, &r, &pr, &own, NULL, 0) != TFPS_OK) abort();
            tfps_wire_release(own);
        }
    }
    // the evaluator's view of everything ps 0 owns: every weight finite
    tfps_wire_pull_req q = {.worker_id = TFPS_OBSERVER_ID, .session = sess[2]};
    tfps_wire_pack_pull_req(&q, &b);
    if (handle(ps, TFPS_M_PULL, b.data, b.len, &resp, &resp_len) == TFPS_RPC_OK) {
        tfps_wire_pull_resp r;
        void *own = NULL;
        if (tfps_wire_unpack_pull_resp(resp, resp_len, &r, &own, NULL, 0) != TFPS_OK) abort();
        for (int t = 0; t < r.ntensors; t++)
            for (uint64_t i = 0; i < r.tensors[t].range.end - r.tensors[t].range.begin; i++)
                if (!isfinite(r.tensors[t].values[i])) {
                    fprintf(stderr, "fuzz_ps: weight %llu is %g\n",
                            (unsigned long long)(r.tensors[t].range.begin + i), (double)r.tensors[t].values[i]);
                    abort();
                }
        tfps_wire_release(own);
    }
    tfps_buf_free(&b);
    tfps_buf_free(&pb);
    tfps_ps_free(ps);
    tfps_shard_plan_destroy(&plan);
    return 0;
}
