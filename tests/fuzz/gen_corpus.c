/* gen_corpus.c -- writes the seed corpus of the fuzz targets
 * (tests/fuzz/corpus/<target>/): valid messages packed by common/wire.c,
 * valid and invalid TF_CONFIGs, and request sequences for the ps. The files
 * are committed; run.sh rebuilds this and `gen_corpus DIR` writes them
 * again (the same bytes every time). */
#include "service.h"
#include "tfps.h"
#include "wire.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

static const char *root;

static void put(const char *target, const char *name, uint8_t sel, const void *data, size_t len) {
    char dir[4096], path[4200];
    snprintf(dir, sizeof(dir), "%s/%s", root, target);
    mkdir(root, 0755);
    mkdir(dir, 0755);
    snprintf(path, sizeof(path), "%s/%s", dir, name);
    FILE *f = fopen(path, "wb");
    if (!f || fwrite(&sel, 1, 1, f) != 1 || (len && fwrite(data, 1, len, f) != len) || fclose(f) != 0) {
        perror(path);
        exit(1);
    }
}

static void wire_seeds(void) {
    tfps_buf b = {0};
    static float v[64];
    for (int i = 0; i < 64; i++) v[i] = (float)i * 0.25f - 3.0f;
    tfps_session se;   /* sessions and the job secret: their decoders get seeds too */
    for (int i = 0; i < TFPS_SESSION_LEN; i++) se.b[i] = (uint8_t)(i * 17 + 3);
    tfps_wire_register_req rq = {.task_type = "worker", .task_index = 1, .worker_rank = 1, .num_workers = 2,
                                 .num_ps = 2, .input = 784, .h1 = 300, .h2 = 100, .classes = 10, .layout_digest = 7,
                                 .shard_plan_digest = 9, .shard_strategy = "balanced", .seed = 1,
                                 .learning_rate = 0.1, .consistency = "sync", .replicas_to_aggregate = 1,
                                 .staleness = 2, .optimizer = "adam (lr 0.001, beta1 0.9, beta2 0.999, epsilon 1e-07)",
                                 .optimizer_digest = 42, .clock = 5, .job_secret = (const uint8_t *)"s3cret",
                                 .job_secret_len = 6, .session = se};
    tfps_wire_pack_register_req(&rq, &b);
    put("fuzz_wire", "register_req", 0, b.data, b.len);
    tfps_wire_register_resp rs = {.worker_id = 2, .version = 10, .ps_index = 1, .clock = 3, .restored_step = 8,
                                  .session = se};
    tfps_wire_pack_register_resp(&rs, &b);
    put("fuzz_wire", "register_resp", 1, b.data, b.len);
    tfps_wire_pull_req pq = {.worker_id = 1, .min_version = 4, .clock = 4, .nranges = 2,
                             .ranges = {{0, 10}, {20, 30}}, .session = se};
    tfps_wire_pack_pull_req(&pq, &b);
    put("fuzz_wire", "pull_req", 2, b.data, b.len);
    tfps_wire_pull_resp ps = {.version = 4, .ntensors = 2, .held_s = 0.5,
                              .tensors = {{.range = {0, 10}, .values = v}, {.range = {20, 50}, .values = v + 10}}};
    tfps_wire_pack_pull_resp(&ps, &b);
    put("fuzz_wire", "pull_resp", 3, b.data, b.len);
    // a PushPull's answer (with an evaluation and the push's tail) for its unpacking and the zero-copy reader
    uint8_t tail[TFPS_WIRE_PUSH_TAIL_MAX];
    const tfps_wire_push_resp pr = {.applied = 1, .version = 5, .nonfinite = 1};
    ps.tail = tail;
    ps.tail_len = tfps_wire_push_tail(&pr, tail);
    ps.examples = 640;
    ps.eval = (tfps_wire_eval){.count = 2, .step = 3, .accuracy = 0.5, .loss = 1.5};
    tfps_wire_pack_pull_resp(&ps, &b);
    put("fuzz_wire", "pushpull_resp", 17, b.data, b.len);
    put("fuzz_wire", "pull_view", 18, b.data, b.len);
    // the same in bf16 and fp16 (--wire-dtype): 2 bytes per element
    uint16_t h16[64];
    for (int i = 0; i < 64; i++) h16[i] = (uint16_t)(0x3c00 + i);
    ps.tensors[0] = (tfps_wire_tensor){.range = {0, 10}, .dtype = TFPS_DTYPE_BF16, .half = h16};
    ps.tensors[1] = (tfps_wire_tensor){.range = {20, 50}, .dtype = TFPS_DTYPE_FP16, .half = h16 + 10};
    tfps_wire_pack_pull_resp(&ps, &b);
    put("fuzz_wire", "pull_view_half", 18, b.data, b.len);
    put("fuzz_wire", "pull_resp_half", 3, b.data, b.len);
    pq.dtype = TFPS_DTYPE_BF16;
    tfps_wire_pack_pull_req(&pq, &b);
    put("fuzz_wire", "pull_req_bf16", 2, b.data, b.len);
    ps.tail = NULL;
    ps.tail_len = 0;
    tfps_wire_push_req hq = {.worker_id = 1, .base_version = 4, .step = 5, .loss = 2.3f, .batch_size = 64,
                             .ntensors = 2,
                             .gradients = {{.range = {0, 10}, .values = v}, {.range = {10, 64}, .values = v + 10}},
                             .session = se};
    tfps_wire_pack_push_req(&hq, &b);
    put("fuzz_wire", "push_req", 4, b.data, b.len);
    hq.gradients[1] = (tfps_wire_tensor){.range = {10, 64}, .dtype = TFPS_DTYPE_BF16, .half = h16};
    tfps_wire_pack_push_req(&hq, &b);
    put("fuzz_wire", "push_req_bf16", 4, b.data, b.len);
    put("fuzz_wire", "push_view_bf16", 19, b.data, b.len);
    hq.gradients[1] = (tfps_wire_tensor){.range = {10, 64}, .values = v + 10};
    tfps_wire_pack_push_req(&hq, &b);   // with pad fields: the values 4-byte aligned
    put("fuzz_wire", "push_view", 19, b.data, b.len);
    tfps_wire_push_resp hs = {.applied = 1, .version = 5, .nonfinite = 1};
    tfps_wire_pack_push_resp(&hs, &b);
    put("fuzz_wire", "push_resp", 5, b.data, b.len);
    tfps_wire_heartbeat_req bq = {.worker_id = 2, .step = 100, .examples = 6400, .done = 1, .session = se};
    tfps_wire_pack_heartbeat_req(&bq, &b);
    put("fuzz_wire", "heartbeat_req", 6, b.data, b.len);
    tfps_wire_heartbeat_resp bs = {.version = 9, .workers_registered = 2, .workers_done = 1, .shutting_down = 1,
                                   .workers_dead = 1};
    tfps_wire_pack_heartbeat_resp(&bs, &b);
    put("fuzz_wire", "heartbeat_resp", 7, b.data, b.len);
    tfps_wire_pack_status_req(&b);
    put("fuzz_wire", "status_req", 8, b.data, b.len);
    tfps_wire_status_resp ss = {.version = 1, .applied = 2, .refused = 3, .bytes_in = 4, .bytes_out = 5,
                                .uptime_s = 6.5, .ps_index = 1, .workers_registered = 2, .workers_done = 1,
                                .examples = 640, .consistency = "ssp", .optimizer = "sgd (lr 0.1)", .dropped = 7,
                                .wait_s = 0.25, .max_lead = 2, .held = 1, .aggregated = 8, .workers_dead = 1,
                                .checkpoints = 3, .last_checkpoint_step = 40, .restored_step = 20,
                                .checkpoint_pause_s = 0.001, .nonfinite = 12,
                                .unauthenticated = 4};
    tfps_wire_pack_status_resp(&ss, &b);
    put("fuzz_wire", "status_resp", 9, b.data, b.len);
    tfps_wire_shutdown_req dq = {.reason = "training finished (chief)", .failed = 1, .worker_id = 1, .session = se};
    tfps_wire_pack_shutdown_req(&dq, &b);
    put("fuzz_wire", "shutdown_req", 10, b.data, b.len);
    tfps_wire_pack_shutdown_resp(&b);
    put("fuzz_wire", "shutdown_resp", 11, b.data, b.len);
    tfps_wire_checkpoint_req cq = {.worker_id = 1, .step = 40, .version = 40, .session = se};
    tfps_wire_pack_checkpoint_req(&cq, &b);
    put("fuzz_wire", "checkpoint_req", 12, b.data, b.len);
    tfps_wire_checkpoint_resp cs = {.ps_index = 1, .version = 40, .bytes = 1066440, .crc = 0xdeadbeef,
                                    .pause_s = 0.0001, .write_s = 0.01};
    tfps_wire_pack_checkpoint_resp(&cs, &b);
    put("fuzz_wire", "checkpoint_resp", 13, b.data, b.len);
    const uint8_t health_req[] = {0x0a, 0x17, 't', 'f', 'p', 's', '.', 'v', '1', '.', 'P', 'a', 'r', 'a', 'm', 'e',
                                  't', 'e', 'r', 'S', 'e', 'r', 'v', 'e', 'r'};
    put("fuzz_wire", "health_req", 14, health_req, sizeof(health_req));
    tfps_wire_pack_health_resp(1, &b);
    put("fuzz_wire", "health_resp", 15, b.data, b.len);
    tfps_buf_free(&b);
}

static void config_seeds(void) {
    const char *good[] = {
        "{\"cluster\": {\"chief\": [\"host0:2222\"], \"worker\": [\"host1:2222\"], \"ps\": [\"host2:2222\", "
        "\"host3:2222\"], \"evaluator\": [\"host4:2222\"]}, \"task\": {\"type\": \"worker\", \"index\": 0}, "
        "\"environment\": \"cloud\"}",
        "{\"cluster\": {\"worker\": {\"0\": \"10.0.0.1:2222\", \"1\": \"10.0.0.2:2222\"}, \"ps\": "
        "[\"[::1]:2223\"]}, \"task\": {\"type\": \"ps\", \"index\": \"0\", \"trial\": \"3\"}, \"rpc_layer\": \"grpc\"}",
        "{\"cluster\": {\"master\": [\"m:1\"], \"ps\": [\"p:2\"]}, \"task\": {\"type\": \"master\", \"index\": 0}}",
        "{\"cluster\": {\"worker\": [\"w:1\"], \"ps\": [\"p:2\"], \"evaluator\": [\"e:3\"]}, "
        "\"task\": {\"type\": \"evaluator\", \"index\": 0}}",
        "",
        "{}",
    };
    const char *bad[] = {
        // the seeds' own example: a trailing comma
        "{\"cluster\": {\"worker\": [\"host1:2222\"], \"ps\": [\"host2:2222\"],}, \"task\": {\"type\": \"worker\", "
        "\"index\": 0}}",
        "{\"cluster\": {\"worker\": [\"w:1\", \"w:2\"], \"ps\": [\"p:2\"]}, \"task\": {\"type\": \"worker\", "
        "\"index\": 3}}",
        "{\"cluster\": {\"worker\": [\"w:1\"], \"ps\": [\"p:70000\"]}, \"task\": {\"type\": \"worker\", \"index\": 0}}",
        "{\"cluster\": {\"chief\": [\"c:1\"], \"master\": [\"m:1\"], \"ps\": [\"p:2\"]}, \"task\": {\"type\": "
        "\"chief\", \"index\": 0}}",
        "{\"cluster\": {\"worker\": {\"1000000000\": \"w:1\"}, \"ps\": [\"p:2\"]}, \"task\": {\"type\": \"worker\", "
        "\"index\": -1}}",
        "{\"cluster\": {\"worker\": [\"w:1\"]}, \"task\": {\"type\": \"tpu\", \"index\": 0}}",
        "{\"cluster\": [1, 2, {\"a\": null}], \"task\": 7",
        "{\"cluster\": {\"worker\": [\"w:1\", \"w:1\"], \"ps\": [\"p:2\"]}, \"task\": {\"type\": \"worker\", "
        "\"index\": 1.5}}",
    };
    char name[32];
    for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
        snprintf(name, sizeof(name), "tfconfig_good_%zu", i);
        put("fuzz_config", name, 0, good[i], strlen(good[i]));
    }
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        snprintf(name, sizeof(name), "tfconfig_bad_%zu", i);
        put("fuzz_config", name, 1, bad[i], strlen(bad[i]));
    }
    const char *addrs[] = {"host:2222", "[fe80::1]:80", "a:0", "h:65536", ":1", "[::1]", "x.y-z_w:1"};
    for (size_t i = 0; i < sizeof(addrs) / sizeof(addrs[0]); i++) {
        snprintf(name, sizeof(name), "addr_%zu", i);
        put("fuzz_config", name, 6, addrs[i], strlen(addrs[i]));
    }
    // argv split at NUL bytes
    const char args0[] = "--learning-rate\0" "1e-3\0" "--batch-size\0" "32\0" "--optimizer=adam";
    const char args1[] = "--learning-rate\0" "0x10\0" "--seed\0" "nan";
    const char args2[] = "--momentum=.5\0" "--epochs\0" "5.\0" "--consistency\0" "ssp";
    put("fuzz_config", "options_0", 7, args0, sizeof(args0) - 1);
    put("fuzz_config", "options_1", 7, args1, sizeof(args1) - 1);
    put("fuzz_config", "options_2", 7, args2, sizeof(args2) - 1);
}

/* fuzz_ps records: [kind][len lo][len hi][payload] */
static size_t rec(uint8_t *out, size_t at, int kind, const void *p, size_t len) {
    out[at] = (uint8_t)kind;
    out[at + 1] = (uint8_t)(len & 0xff);
    out[at + 2] = (uint8_t)(len >> 8);
    memcpy(out + at + 3, p, len);
    return at + 3 + len;
}

static void ps_seeds(void) {
    static uint8_t buf[1 << 16];
    tfps_buf b = {0};
    char name[32];
    for (int cfg = 0; cfg < 48; cfg += 1) {   // every consistency, optimizer, 1-2 ps, backup or not
        if (cfg % 5 && cfg != 47) continue;   // a spread of them, not all 48
        size_t at = 0;
        for (int step = 0; step < 14; step++) {
            // structured pushes of both workers: -3.4e38 (the tester's overflow), then their pulls
            uint8_t push[2 + 8];
            const float huge = -3.4e38f, small = 0.01f;
            for (int w = 1; w <= 2; w++) {
                push[0] = (uint8_t)w;
                push[1] = (uint8_t)step;
                memcpy(push + 2, &huge, 4);
                memcpy(push + 6, &small, 4);
                at = rec(buf, at, 6, push, sizeof(push));
                const uint8_t pull[3] = {(uint8_t)w, (uint8_t)(step + 1), (uint8_t)(step + 1)};
                at = rec(buf, at, 7, pull, sizeof(pull));
            }
        }
        // raw well-formed requests: a heartbeat "done", a status, a shutdown
        tfps_wire_heartbeat_req hb = {.worker_id = 2, .step = 14, .done = 1};
        tfps_wire_pack_heartbeat_req(&hb, &b);
        at = rec(buf, at, 3, b.data, b.len);
        tfps_wire_pack_status_req(&b);
        at = rec(buf, at, 4, b.data, b.len);
        tfps_wire_shutdown_req sd = {.reason = "done"};
        tfps_wire_pack_shutdown_req(&sd, &b);
        at = rec(buf, at, 5, b.data, b.len);
        snprintf(name, sizeof(name), "overflow_cfg%d", cfg);
        put("fuzz_ps", name, (uint8_t)cfg, buf, at);
    }
    // a raw push with a range (bytes packed by wire.c) and a raw pull of two ranges
    static float v[64];
    for (int i = 0; i < 64; i++) v[i] = 0.125f * (float)(i % 9);
    tfps_wire_push_req pq = {.worker_id = 1, .base_version = 0, .step = 1, .batch_size = 4, .ntensors = 2,
                             .gradients = {{.range = {0, 20}, .values = v}, {.range = {20, 29}, .values = v + 20}}};
    tfps_wire_pack_push_req(&pq, &b);
    size_t at = rec(buf, 0, 2, b.data, b.len);
    tfps_wire_pull_req lq = {.worker_id = 1, .min_version = 1, .clock = 1, .nranges = 2, .ranges = {{0, 5}, {5, 29}}};
    tfps_wire_pack_pull_req(&lq, &b);
    at = rec(buf, at, 1, b.data, b.len);
    put("fuzz_ps", "raw_push_pull_async_2ps", 12, buf, at);
    put("fuzz_ps", "raw_push_pull_sync_1ps", 1, buf, at);
    // pushes of an empty range (no values) at each alignment of the input: nothing to copy, nowhere to copy it
    static const uint8_t empty[] = {0x08, 0x01, 0x32, 0x06, 0x0a, 0x04, 0x08, 0x05, 0x10, 0x05};
    at = 0;
    for (int k = 0; k < 4; k++) {
        at = rec(buf, at, 2, empty, sizeof(empty));
        at = rec(buf, at, 4, empty, 0);   // a Status between: 3 bytes, so the next push lands elsewhere
        if (k % 2) at = rec(buf, at, 4, empty, 1);
    }
    put("fuzz_ps", "raw_push_empty_range", 0, buf, at);
    tfps_buf_free(&b);
}

int main(int argc, char **argv) {
    if (argc != 2) {
        fprintf(stderr, "usage: gen_corpus DIR\n");
        return 2;
    }
    root = argv[1];
    wire_seeds();
    config_seeds();
    ps_seeds();
    return 0;
}
