/* fuzz_wire.c -- libFuzzer target: every decoder of common/wire.c.
 *
 * Input: byte 0 picks the message (mod the number of decoders), the rest is
 * the bytes handed to it. A decoder must refuse what is malformed with a
 * message, or give a struct whose tensors lie inside the message (read here
 * to the last float, so ASan sees a bad length) and that packs again and
 * decodes to the same numbers. Built only by tests/fuzz/run.sh (clang). */
#include "tfps.h"
#include "wire.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Sums every tensor value (touches all of them) and checks the ranges. */
static float touch(const tfps_wire_tensor *ts, int n) {
    float s = 0.0f;
    if (n < 0 || n > TFPS_WIRE_MAX_TENSORS) abort();
    for (int i = 0; i < n; i++) {
        if (ts[i].range.end < ts[i].range.begin) abort();
        const uint64_t m = ts[i].range.end - ts[i].range.begin;
        if (ts[i].dtype == TFPS_DTYPE_FP32) {
            for (uint64_t k = 0; k < m; k++) s += ts[i].values[k];
        } else {   // decoded as the ps decodes a gradient
            if (ts[i].dtype >= TFPS_DTYPE_COUNT || ts[i].values) abort();
            for (uint64_t k = 0; k < m; k++) {
                float f;
                tfps_wire_decode(ts[i].dtype, (const uint8_t *)(ts[i].half + k), &f, 1);
                s += f;
            }
        }
    }
    return s;
}

static size_t slen(const char *s) { return s ? strlen(s) : 0; }   // a string must be terminated

#define SAME(x) if (a.x != b.x) abort()

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 1) return 0;
    const uint8_t *d = data + 1;
    const size_t n = size - 1;
    char err[TFPS_ERR_LEN];
    void *own = NULL, *own2 = NULL;
    static tfps_buf b;
    volatile float sink = 0.0f;
    volatile size_t slen_sink = 0;
    switch (data[0] % 20) {
    case 0: {
        tfps_wire_register_req a, c;
        if (tfps_wire_unpack_register_req(d, n, &a, &own, err, sizeof(err)) != TFPS_OK) break;
        slen_sink += slen(a.task_type) + slen(a.shard_strategy) + slen(a.consistency) + slen(a.optimizer);
        if (tfps_wire_pack_register_req(&a, &b) != TFPS_OK) abort();
        if (tfps_wire_unpack_register_req(b.data, b.len, &c, &own2, err, sizeof(err)) != TFPS_OK) abort();
        if (c.seed != a.seed || c.optimizer_digest != a.optimizer_digest || strcmp(c.optimizer, a.optimizer)) abort();
        break;
    }
    case 1: {
        tfps_wire_register_resp a;
        tfps_wire_unpack_register_resp(d, n, &a, &own, err, sizeof(err));
        break;
    }
    case 2: {
        tfps_wire_pull_req a, c;
        if (tfps_wire_unpack_pull_req(d, n, &a, &own, err, sizeof(err)) != TFPS_OK) break;
        if (a.nranges < 0 || a.nranges > TFPS_WIRE_MAX_TENSORS) abort();
        if (tfps_wire_pack_pull_req(&a, &b) != TFPS_OK) abort();
        if (tfps_wire_unpack_pull_req(b.data, b.len, &c, &own2, err, sizeof(err)) != TFPS_OK) abort();
        if (c.nranges != a.nranges || c.min_version != a.min_version || c.clock != a.clock || c.dtype != a.dtype)
            abort();
        break;
    }
    case 3: {
        static tfps_wire_pull_resp a, c;
        if (tfps_wire_unpack_pull_resp(d, n, &a, &own, err, sizeof(err)) != TFPS_OK) break;
        sink += touch(a.tensors, a.ntensors);
        if (tfps_wire_pack_pull_resp(&a, &b) != TFPS_OK) abort();
        if (tfps_wire_unpack_pull_resp(b.data, b.len, &c, &own2, err, sizeof(err)) != TFPS_OK) abort();
        if (c.ntensors != a.ntensors || c.version != a.version) abort();
        for (int i = 0; i < a.ntensors; i++) {
            const int dt = a.tensors[i].dtype;
            if (c.tensors[i].dtype != dt) abort();
            if (memcmp(dt ? (const void *)a.tensors[i].half : (const void *)a.tensors[i].values,
                       dt ? (const void *)c.tensors[i].half : (const void *)c.tensors[i].values,
                       (size_t)(a.tensors[i].range.end - a.tensors[i].range.begin) * tfps_wire_dtype_size(dt)))
                abort();
        }
        break;
    }
    case 4: {
        static tfps_wire_push_req a, c;
        if (tfps_wire_unpack_push_req(d, n, &a, &own, err, sizeof(err)) != TFPS_OK) break;
        sink += touch(a.gradients, a.ntensors);
        if (tfps_wire_pack_push_req(&a, &b) != TFPS_OK) abort();
        if (tfps_wire_unpack_push_req(b.data, b.len, &c, &own2, err, sizeof(err)) != TFPS_OK) abort();
        if (c.ntensors != a.ntensors || c.worker_id != a.worker_id || c.base_version != a.base_version) abort();
        break;
    }
    case 5: {
        tfps_wire_push_resp a, c;
        if (tfps_wire_unpack_push_resp(d, n, &a, &own, err, sizeof(err)) != TFPS_OK) break;
        if (tfps_wire_pack_push_resp(&a, &b) != TFPS_OK) abort();
        if (tfps_wire_unpack_push_resp(b.data, b.len, &c, &own2, err, sizeof(err)) != TFPS_OK) abort();
        if (c.applied != a.applied || c.nonfinite != a.nonfinite || c.version != a.version) abort();
        break;
    }
    case 6: {
        tfps_wire_heartbeat_req a;
        tfps_wire_unpack_heartbeat_req(d, n, &a, &own, err, sizeof(err));
        break;
    }
    case 7: {
        tfps_wire_heartbeat_resp a;
        tfps_wire_unpack_heartbeat_resp(d, n, &a, &own, err, sizeof(err));
        break;
    }
    case 8: tfps_wire_unpack_status_req(d, n, &own, err, sizeof(err)); break;
    case 9: {
        tfps_wire_status_resp a, c;
        if (tfps_wire_unpack_status_resp(d, n, &a, &own, err, sizeof(err)) != TFPS_OK) break;
        slen_sink += slen(a.consistency) + slen(a.optimizer);
        if (tfps_wire_pack_status_resp(&a, &b) != TFPS_OK) abort();
        if (tfps_wire_unpack_status_resp(b.data, b.len, &c, &own2, err, sizeof(err)) != TFPS_OK) abort();
        if (c.nonfinite != a.nonfinite || c.applied != a.applied) abort();
        break;
    }
    case 10: {
        tfps_wire_shutdown_req a;
        if (tfps_wire_unpack_shutdown_req(d, n, &a, &own, err, sizeof(err)) == TFPS_OK) slen_sink += slen(a.reason);
        break;
    }
    case 11: tfps_wire_unpack_shutdown_resp(d, n, &own, err, sizeof(err)); break;
    case 12: {
        tfps_wire_checkpoint_req a;
        tfps_wire_unpack_checkpoint_req(d, n, &a, &own, err, sizeof(err));
        break;
    }
    case 13: {
        tfps_wire_checkpoint_resp a;
        tfps_wire_unpack_checkpoint_resp(d, n, &a, &own, err, sizeof(err));
        break;
    }
    case 14: {
        const char *service = NULL;
        if (tfps_wire_unpack_health_req(d, n, &service, &own, err, sizeof(err)) == TFPS_OK) slen_sink += slen(service);
        break;
    }
    case 15: {
        int status = 0;
        tfps_wire_unpack_health_resp(d, n, &status, &own, err, sizeof(err));
        break;
    }
    case 16: {   // a PushPullRequest: its parts stay inside the input and decode (or not) as the methods do
        const uint8_t *push, *pull;
        size_t push_len, pull_len;
        if (tfps_wire_split_pushpull_req(d, n, &push, &push_len, &pull, &pull_len, err, sizeof(err)) != TFPS_OK) break;
        if (push < d || push + push_len > d + n || pull < d || pull + pull_len > d + n) abort();
        static tfps_wire_push_req a;
        tfps_wire_pull_req q;
        if (tfps_wire_unpack_push_req(push, push_len, &a, &own, err, sizeof(err)) == TFPS_OK)
            sink += touch(a.gradients, a.ntensors);
        tfps_wire_unpack_pull_req(pull, pull_len, &q, &own2, err, sizeof(err));
        break;
    }
    case 17: {   // a PushPullResponse: re-packed as the ps makes one (a PullResponse + the push's tail), the same
        static tfps_wire_pull_resp a, c;
        tfps_wire_push_resp pa, pc;
        if (tfps_wire_unpack_pushpull_resp(d, n, &a, &pa, &own, err, sizeof(err)) != TFPS_OK) break;
        sink += touch(a.tensors, a.ntensors);
        uint8_t tail[TFPS_WIRE_PUSH_TAIL_MAX];
        a.tail = tail;
        a.tail_len = tfps_wire_push_tail(&pa, tail);
        if (tfps_wire_pack_pull_resp(&a, &b) != TFPS_OK) abort();
        if (tfps_wire_unpack_pushpull_resp(b.data, b.len, &c, &pc, &own2, err, sizeof(err)) != TFPS_OK) abort();
        if (c.ntensors != a.ntensors || c.version != a.version || pc.applied != pa.applied ||
            pc.version != pa.version || pc.nonfinite != pa.nonfinite)
            abort();
        break;
    }
    case 18: {   // the zero-copy reader against protobuf-c: whatever it accepts, protobuf-c reads the same
        static tfps_wire_pull_view v, vs;
        const int rv = tfps_wire_view_pull_resp(d, n, &v, err, sizeof(err));
        {   // and the same bytes in pieces (as gRPC hands them over, each a block of its own) read alike
            static tfps_wire_seg segs[4096];
            const size_t step = n ? 1 + d[n - 1] % 13 : 1;
            int ns = 0;
            for (size_t at = 0; at < n; at += step) {
                const size_t len = ns == 4095 || at + step > n ? n - at : step;
                uint8_t *piece = malloc(len);
                if (!piece) abort();
                memcpy(piece, d + at, len);
                segs[ns++] = (tfps_wire_seg){piece, len};
                if (len != step) break;
            }
            char err2[TFPS_ERR_LEN];
            const int rs = tfps_wire_view_pull_resp_segs(segs, ns, &vs, err2, sizeof(err2));
            if (rs != rv || (rv != TFPS_OK && strcmp(err, err2) != 0)) abort();
            if (rv == TFPS_OK) {
                if (vs.version != v.version || vs.ntensors != v.ntensors || vs.examples != v.examples ||
                    memcmp(&vs.held_s, &v.held_s, sizeof(double)) || memcmp(&vs.eval, &v.eval, sizeof(v.eval)) ||
                    memcmp(&vs.push, &v.push, sizeof(v.push)))
                    abort();
                for (int i = 0; i < v.ntensors; i++) {
                    const size_t m = (size_t)(v.tensors[i].range.end - v.tensors[i].range.begin);
                    if (vs.tensors[i].at != v.tensors[i].at || vs.tensors[i].dtype != v.tensors[i].dtype) abort();
                    float *x = malloc(m * sizeof(float) + 1), *y = malloc(m * sizeof(float) + 1);
                    if (!x || !y) abort();
                    const tfps_wire_seg one = {d, n};
                    if (tfps_wire_view_copy(&one, 1, &v.tensors[i], x) != TFPS_OK ||
                        tfps_wire_view_copy(segs, ns, &vs.tensors[i], y) != TFPS_OK)
                        abort();
                    if (m && memcmp(x, y, m * sizeof(float))) abort();
                    free(x);
                    free(y);
                }
            }
            for (int i = 0; i < ns; i++) free((void *)segs[i].p);
        }
        if (rv != TFPS_OK) break;
        static tfps_wire_pull_resp a;
        tfps_wire_push_resp pa;
        if (tfps_wire_unpack_pushpull_resp(d, n, &a, &pa, &own, err, sizeof(err)) != TFPS_OK) {
            fprintf(stderr, "fuzz_wire: the view accepted what protobuf-c refuses: %s\n", err);
            abort();
        }
        if (a.version != v.version || a.examples != v.examples || a.ntensors != v.ntensors ||
            memcmp(&a.held_s, &v.held_s, sizeof(double)) || a.eval.count != v.eval.count ||
            a.eval.step != v.eval.step || memcmp(&a.eval.accuracy, &v.eval.accuracy, sizeof(double)) ||
            memcmp(&a.eval.loss, &v.eval.loss, sizeof(double)) || pa.applied != v.push.applied ||
            pa.version != v.push.version || pa.nonfinite != v.push.nonfinite)
            abort();
        for (int i = 0; i < a.ntensors; i++) {
            if (a.tensors[i].range.begin != v.tensors[i].range.begin || a.tensors[i].range.end != v.tensors[i].range.end)
                abort();
            if (a.tensors[i].dtype != v.tensors[i].dtype) abort();
            const size_t nb = (size_t)(a.tensors[i].range.end - a.tensors[i].range.begin) *
                              tfps_wire_dtype_size(v.tensors[i].dtype);
            const void *av = a.tensors[i].dtype == TFPS_DTYPE_FP32 ? (const void *)a.tensors[i].values
                                                                   : (const void *)a.tensors[i].half;
            if (v.tensors[i].bytes < d || v.tensors[i].bytes + nb > d + n) abort();   // inside the input
            if (nb && memcmp(av, v.tensors[i].bytes, nb)) abort();
        }
        break;
    }
    case 19: {   // the ps's zero-copy reader of pushes against protobuf-c: what it accepts, protobuf-c reads alike
        static tfps_wire_push_view v;
        if (tfps_wire_view_push_req(d, n, &v, err, sizeof(err)) != TFPS_OK) break;
        static tfps_wire_push_req a;
        if (tfps_wire_unpack_push_req(d, n, &a, &own, err, sizeof(err)) != TFPS_OK) {
            fprintf(stderr, "fuzz_wire: the push view accepted what protobuf-c refuses: %s\n", err);
            abort();
        }
        if (a.worker_id != v.worker_id || a.base_version != v.base_version || a.step != v.step ||
            memcmp(&a.loss, &v.loss, sizeof(float)) || a.batch_size != v.batch_size ||
            !tfps_session_equal(&a.session, &v.session) || a.ntensors != v.ntensors)
            abort();
        for (int i = 0; i < a.ntensors; i++) {
            if (a.gradients[i].range.begin != v.gradients[i].range.begin ||
                a.gradients[i].range.end != v.gradients[i].range.end || a.gradients[i].dtype != v.gradients[i].dtype)
                abort();
            const size_t nb = (size_t)(a.gradients[i].range.end - a.gradients[i].range.begin) *
                              tfps_wire_dtype_size(v.gradients[i].dtype);
            const void *av = a.gradients[i].dtype == TFPS_DTYPE_FP32 ? (const void *)a.gradients[i].values
                                                                     : (const void *)a.gradients[i].half;
            if (v.gradients[i].bytes < d || v.gradients[i].bytes + nb > d + n) abort();   // inside the input
            if (nb && memcmp(av, v.gradients[i].bytes, nb)) abort();
        }
        break;
    }
    }
    tfps_wire_release(own);
    tfps_wire_release(own2);
    (void)sink;
    (void)slen_sink;
    return 0;
}
