/* test_wire.c -- CUnit suite for common/wire.c, the tfps messages on the wire.
 *
 * Round trips of every message with every field set to a value that would
 * show a mix-up (distinct, wide, non-zero); the field numbers and wire types
 * of proto/tfps.proto checked against a small hand-written protobuf encoder
 * (so a renumbered field fails here, not between two daemons of different
 * builds); tfps_buf reuse; and malformed input: bad tensor lengths, reversed
 * or missing ranges, too many tensors, random bytes, truncations and bit flips
 * of valid messages. The test itself never calls protobuf-c. */
#include "tfps.h"
#include "wire.h"

#include <CUnit/Basic.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define BIG 266610   /* floats of the 784-300-100-10 model */

/* Asserts that err contains sub; prints err when it does not. */
#define ASSERT_ERR_HAS(err, sub)                                                       \
    do {                                                                               \
        int has_ = strstr((err), (sub)) != NULL;                                       \
        if (!has_) fprintf(stderr, "\n  error was: \"%s\"\n  expected: \"%s\"\n", (err), (sub)); \
        CU_ASSERT(has_);                                                               \
    } while (0)

static uint64_t g_rng = 0x9E3779B97F4A7C15ull;
static uint64_t rnd(void) {   /* xorshift64*: reproducible */
    g_rng ^= g_rng >> 12;
    g_rng ^= g_rng << 25;
    g_rng ^= g_rng >> 27;
    return g_rng * 0x2545F4914F6CDD1Dull;
}

static float *floats(size_t n, float base) {
    float *v = malloc(n * sizeof(float) + 1);
    CU_ASSERT_FATAL(v != NULL);
    for (size_t i = 0; i < n; i++) v[i] = base + (float)i * 0.25f - (float)(i % 7) * 1e-3f;
    return v;
}

/* ---- a minimal protobuf encoder, independent of protobuf-c ---- */

typedef struct {
    uint8_t *b;
    size_t n, cap;
} enc;

static void put(enc *e, const void *p, size_t n) {
    if (e->n + n > e->cap) {
        e->cap = (e->n + n) * 2 + 64;
        e->b = realloc(e->b, e->cap);
        CU_ASSERT_FATAL(e->b != NULL);
    }
    if (n) memcpy(e->b + e->n, p, n);
    e->n += n;
}
static void put_varint(enc *e, uint64_t v) {
    do {
        uint8_t c = (uint8_t)(v & 0x7f);
        v >>= 7;
        if (v) c |= 0x80;
        put(e, &c, 1);
    } while (v);
}
static void put_tag(enc *e, unsigned field, unsigned wt) { put_varint(e, (uint64_t)field << 3 | wt); }
static void put_u(enc *e, unsigned field, uint64_t v) {
    put_tag(e, field, 0);
    put_varint(e, v);
}
static void put_fixed64(enc *e, unsigned field, uint64_t v) {
    put_tag(e, field, 1);
    put(e, &v, 8);   /* little-endian host */
}
static void put_fixed32(enc *e, unsigned field, uint32_t v) {
    put_tag(e, field, 5);
    put(e, &v, 4);
}
static void put_len(enc *e, unsigned field, const void *p, size_t n) {
    put_tag(e, field, 2);
    put_varint(e, n);
    put(e, p, n);
}
static void put_range(enc *e, unsigned field, uint64_t begin, uint64_t end) {
    enc r = {0};
    put_u(&r, 1, begin);
    put_u(&r, 2, end);
    put_len(e, field, r.b, r.n);
    free(r.b);
}
/* A Tensor with a range (unless has_range is 0) and nbytes of fp32 values. */
static void put_tensor(enc *e, unsigned field, int has_range, uint64_t begin, uint64_t end, const void *v,
                       size_t nbytes) {
    enc t = {0};
    if (has_range) put_range(&t, 1, begin, end);
    put_len(&t, 2, v, nbytes);
    put_len(e, field, t.b, t.n);
    free(t.b);
}

/* ---- round trips ---- */

static void test_register(void) {
    tfps_wire_register_req in = {.task_type = "worker",
                                 .task_index = 3,
                                 .worker_rank = 2,
                                 .num_workers = 7,
                                 .num_ps = 4,
                                 .input = 784,
                                 .h1 = 300,
                                 .h2 = 100,
                                 .classes = 10,
                                 .layout_digest = 0xFEDCBA9876543210ull,
                                 .shard_plan_digest = 0x0123456789ABCDEFull,
                                 .shard_strategy = "round-robin",
                                 .seed = 0x8000000000000005ull,
                                 .learning_rate = 0.0125};
    tfps_buf b = {0};
    CU_ASSERT_FATAL(tfps_wire_pack_register_req(&in, &b) == TFPS_OK);
    // the pack outlives the caller's strings: unpack from a copy, then drop the copy
    uint8_t *copy = malloc(b.len);
    memcpy(copy, b.data, b.len);
    tfps_wire_register_req out;
    void *own = NULL;
    char err[TFPS_ERR_LEN] = "";
    CU_ASSERT_FATAL(tfps_wire_unpack_register_req(copy, b.len, &out, &own, err, sizeof(err)) == TFPS_OK);
    memset(copy, 0xAB, b.len);
    free(copy);
    CU_ASSERT_PTR_NOT_NULL(own);
    CU_ASSERT_STRING_EQUAL(out.task_type, "worker");
    CU_ASSERT_EQUAL(out.task_index, 3);
    CU_ASSERT_EQUAL(out.worker_rank, 2);
    CU_ASSERT_EQUAL(out.num_workers, 7);
    CU_ASSERT_EQUAL(out.num_ps, 4);
    CU_ASSERT_EQUAL(out.input, 784);
    CU_ASSERT_EQUAL(out.h1, 300);
    CU_ASSERT_EQUAL(out.h2, 100);
    CU_ASSERT_EQUAL(out.classes, 10);
    CU_ASSERT_EQUAL(out.layout_digest, 0xFEDCBA9876543210ull);
    CU_ASSERT_EQUAL(out.shard_plan_digest, 0x0123456789ABCDEFull);
    CU_ASSERT_STRING_EQUAL(out.shard_strategy, "round-robin");
    CU_ASSERT_EQUAL(out.seed, 0x8000000000000005ull);
    CU_ASSERT_EQUAL(out.learning_rate, 0.0125);
    tfps_wire_release(own);

    // the same message written by hand with the field numbers and types of tfps.proto
    enc e = {0};
    put_len(&e, 1, "chief", 5);
    put_u(&e, 2, 1);
    put_u(&e, 3, 5);
    put_u(&e, 4, 6);
    put_u(&e, 5, 2);
    put_u(&e, 6, 28);
    put_u(&e, 7, 30);
    put_u(&e, 8, 20);
    put_u(&e, 9, 4);
    put_fixed64(&e, 10, 0x1111222233334444ull);
    put_fixed64(&e, 11, 0x5555666677778888ull);
    put_len(&e, 12, "greedy", 6);
    put_u(&e, 13, UINT64_MAX);
    double lr = -2.5e-3;
    uint64_t lr_bits;
    memcpy(&lr_bits, &lr, 8);
    put_fixed64(&e, 14, lr_bits);
    CU_ASSERT_FATAL(tfps_wire_unpack_register_req(e.b, e.n, &out, &own, err, sizeof(err)) == TFPS_OK);
    CU_ASSERT_STRING_EQUAL(out.task_type, "chief");
    CU_ASSERT_EQUAL(out.task_index, 1);
    CU_ASSERT_EQUAL(out.worker_rank, 5);
    CU_ASSERT_EQUAL(out.num_workers, 6);
    CU_ASSERT_EQUAL(out.num_ps, 2);
    CU_ASSERT_EQUAL(out.input, 28);
    CU_ASSERT_EQUAL(out.h1, 30);
    CU_ASSERT_EQUAL(out.h2, 20);
    CU_ASSERT_EQUAL(out.classes, 4);
    CU_ASSERT_EQUAL(out.layout_digest, 0x1111222233334444ull);
    CU_ASSERT_EQUAL(out.shard_plan_digest, 0x5555666677778888ull);
    CU_ASSERT_STRING_EQUAL(out.shard_strategy, "greedy");
    CU_ASSERT_EQUAL(out.seed, UINT64_MAX);
    CU_ASSERT_EQUAL(out.learning_rate, -2.5e-3);
    // packing it again gives these very bytes (fields in number order, all non-zero)
    CU_ASSERT_FATAL(tfps_wire_pack_register_req(&out, &b) == TFPS_OK);
    CU_ASSERT(b.len == e.n && memcmp(b.data, e.b, e.n) == 0);
    tfps_wire_release(own);
    free(e.b);
    tfps_buf_free(&b);
}

static void test_register_resp(void) {
    tfps_wire_register_resp in = {.worker_id = 4000000000u, .version = 1ull << 40, .ps_index = 9}, out;
    tfps_buf b = {0};
    void *own;
    char err[TFPS_ERR_LEN];
    CU_ASSERT_FATAL(tfps_wire_pack_register_resp(&in, &b) == TFPS_OK);
    CU_ASSERT_FATAL(tfps_wire_unpack_register_resp(b.data, b.len, &out, &own, err, sizeof(err)) == TFPS_OK);
    CU_ASSERT_EQUAL(out.worker_id, 4000000000u);
    CU_ASSERT_EQUAL(out.version, 1ull << 40);
    CU_ASSERT_EQUAL(out.ps_index, 9);
    tfps_wire_release(own);
    enc e = {0};
    put_u(&e, 1, 7);
    put_u(&e, 2, 8);
    put_u(&e, 3, 9);
    CU_ASSERT_FATAL(tfps_wire_unpack_register_resp(e.b, e.n, &out, &own, err, sizeof(err)) == TFPS_OK);
    CU_ASSERT(out.worker_id == 7 && out.version == 8 && out.ps_index == 9);
    tfps_wire_release(own);
    free(e.b);
    tfps_buf_free(&b);
}

static void test_pull_req(void) {
    static tfps_wire_pull_req in, out;   // static: ~1.5 KB each
    in.worker_id = 12;
    in.min_version = 123456789012ull;
    in.nranges = TFPS_WIRE_MAX_TENSORS;   // the limit itself is allowed
    for (int i = 0; i < in.nranges; i++) {
        in.ranges[i].begin = (uint64_t)i * 1000;
        in.ranges[i].end = (uint64_t)i * 1000 + (uint64_t)i;   // [0, 0) included
    }
    in.ranges[63].end = UINT64_MAX / 8;
    tfps_buf b = {0};
    void *own;
    char err[TFPS_ERR_LEN];
    CU_ASSERT_FATAL(tfps_wire_pack_pull_req(&in, &b) == TFPS_OK);
    CU_ASSERT_FATAL(tfps_wire_unpack_pull_req(b.data, b.len, &out, &own, err, sizeof(err)) == TFPS_OK);
    CU_ASSERT_EQUAL(out.worker_id, 12);
    CU_ASSERT_EQUAL(out.min_version, 123456789012ull);
    CU_ASSERT_EQUAL_FATAL(out.nranges, TFPS_WIRE_MAX_TENSORS);
    for (int i = 0; i < out.nranges; i++) {
        CU_ASSERT_EQUAL(out.ranges[i].begin, in.ranges[i].begin);
        CU_ASSERT_EQUAL(out.ranges[i].end, in.ranges[i].end);
    }
    tfps_wire_release(own);
    // field numbers: worker_id 1, min_version 2, ranges 3
    enc e = {0};
    put_u(&e, 1, 5);
    put_u(&e, 2, 6);
    put_range(&e, 3, 10, 20);
    put_range(&e, 3, 30, 31);
    CU_ASSERT_FATAL(tfps_wire_unpack_pull_req(e.b, e.n, &out, &own, err, sizeof(err)) == TFPS_OK);
    CU_ASSERT(out.worker_id == 5 && out.min_version == 6 && out.nranges == 2);
    CU_ASSERT(out.ranges[0].begin == 10 && out.ranges[0].end == 20 && out.ranges[1].begin == 30 &&
              out.ranges[1].end == 31);
    tfps_wire_release(own);
    free(e.b);
    tfps_buf_free(&b);
}

static void test_pull_resp_big(void) {
    float *w = floats(BIG, -3.0f);
    w[0] = -0.0f;
    w[1] = INFINITY;
    w[2] = 1e-45f;   // a denormal survives bit for bit
    static tfps_wire_pull_resp in, out;
    in.version = 77;
    in.ntensors = 1;
    in.tensors[0].range.begin = 0;
    in.tensors[0].range.end = BIG;
    in.tensors[0].values = w;
    tfps_buf b = {0};
    void *own;
    char err[TFPS_ERR_LEN];
    CU_ASSERT_FATAL(tfps_wire_pack_pull_resp(&in, &b) == TFPS_OK);
    CU_ASSERT(b.len > BIG * 4 && b.len < BIG * 4 + 32);
    // unpack from an odd address: the values still come out float-aligned (protobuf-c copies bytes
    // fields into their own malloc block) and independent of the input, which is freed first
    uint8_t *raw = malloc(b.len + 1), *odd = raw + 1;
    memcpy(odd, b.data, b.len);
    CU_ASSERT_FATAL(tfps_wire_unpack_pull_resp(odd, b.len, &out, &own, err, sizeof(err)) == TFPS_OK);
    CU_ASSERT((uintptr_t)out.tensors[0].values % 4 == 0);
    CU_ASSERT((const uint8_t *)out.tensors[0].values < raw || (const uint8_t *)out.tensors[0].values > odd + b.len);
    free(raw);
    CU_ASSERT_EQUAL(out.version, 77);
    CU_ASSERT_EQUAL_FATAL(out.ntensors, 1);
    CU_ASSERT_EQUAL(out.tensors[0].range.begin, 0);
    CU_ASSERT_EQUAL(out.tensors[0].range.end, BIG);
    CU_ASSERT(memcmp(out.tensors[0].values, w, BIG * sizeof(float)) == 0);
    CU_ASSERT(signbit(out.tensors[0].values[0]) && isinf(out.tensors[0].values[1]));
    CU_ASSERT(out.examples == 0 && out.eval.count == 0);
    tfps_wire_release(own);
    // the cluster's examples and the evaluator's report ride along
    in.examples = (1ull << 40) + 1;
    in.eval = (tfps_wire_eval){.count = 2, .step = 76, .accuracy = 0.875, .loss = 0.5};
    CU_ASSERT_FATAL(tfps_wire_pack_pull_resp(&in, &b) == TFPS_OK);
    CU_ASSERT_FATAL(tfps_wire_unpack_pull_resp(b.data, b.len, &out, &own, err, sizeof(err)) == TFPS_OK);
    CU_ASSERT(out.examples == (1ull << 40) + 1 && out.eval.count == 2 && out.eval.step == 76 &&
              out.eval.accuracy == 0.875 && out.eval.loss == 0.5);
    CU_ASSERT(memcmp(out.tensors[0].values, w, BIG * sizeof(float)) == 0);
    tfps_wire_release(own);
    tfps_buf_free(&b);
    free(w);
}

/* Views of the same bytes, one piece and split into segs (each piece a
 * block of its own, an empty one NULL: a read past a piece's end is ASan's):
 * equal, or both refused with the same message. */
static int split_views_agree(const uint8_t *d, size_t n, const size_t *cuts, int ncuts, float *out1, float *out2,
                             size_t max_floats) {
    static tfps_wire_pull_view a, b;
    static tfps_wire_seg segs[70];
    static size_t start[70];
    char e1[TFPS_ERR_LEN] = "", e2[TFPS_ERR_LEN] = "";
    size_t at = 0;
    int ns = 0, ok = 1;
    for (int c = 0; c <= ncuts; c++) {
        const size_t to = c < ncuts ? cuts[c] : n;
        uint8_t *piece = to > at ? malloc(to - at) : NULL;   // empty pieces included
        if (piece) memcpy(piece, d + at, to - at);
        start[ns] = at;
        segs[ns++] = (tfps_wire_seg){piece, to - at};
        at = to;
    }
    const int ra = tfps_wire_view_pull_resp(d, n, &a, e1, sizeof(e1)),
              rb = tfps_wire_view_pull_resp_segs(segs, ns, &b, e2, sizeof(e2));
    if (ra != rb || (ra != TFPS_OK && strcmp(e1, e2) != 0)) ok = 0;
    if (ra != TFPS_OK || !ok) goto out;
    if (a.version != b.version || a.examples != b.examples || memcmp(&a.held_s, &b.held_s, 8) ||
        a.ntensors != b.ntensors || memcmp(&a.eval, &b.eval, sizeof(a.eval)) ||
        memcmp(&a.push, &b.push, sizeof(a.push)))
        ok = 0;
    for (int t = 0; ok && t < a.ntensors; t++) {
        const size_t m = (size_t)(a.tensors[t].range.end - a.tensors[t].range.begin),
                     nb = m * tfps_wire_dtype_size(a.tensors[t].dtype), v0 = b.tensors[t].at;
        if (a.tensors[t].range.begin != b.tensors[t].range.begin || a.tensors[t].range.end != b.tensors[t].range.end ||
            a.tensors[t].dtype != b.tensors[t].dtype || a.tensors[t].at != v0 || m > max_floats) {
            ok = 0;
            break;
        }
        // bytes: a pointer into the piece holding all the values, NULL exactly when they cross a cut
        int k = 0;   // the piece holding the first value byte
        while (k < ns && !(v0 >= start[k] && v0 < start[k] + segs[k].len)) k++;
        const int one_piece = k < ns && v0 + nb <= start[k] + segs[k].len;
        if (nb && (k == ns || (one_piece ? b.tensors[t].bytes != segs[k].p + (v0 - start[k])
                                          : b.tensors[t].bytes != NULL))) {
            ok = 0;
            break;
        }
        const tfps_wire_seg one = {d, n};
        memset(out1, 0xa5, m * sizeof(float));
        memset(out2, 0x5a, m * sizeof(float));
        if (tfps_wire_view_copy(&one, 1, &a.tensors[t], out1) != TFPS_OK ||
            tfps_wire_view_copy(segs, ns, &b.tensors[t], out2) != TFPS_OK || memcmp(out1, out2, m * sizeof(float)))
            ok = 0;
    }
out:
    for (int i = 0; i < ns; i++) free((void *)segs[i].p);
    return ok;
}

/* The reader of answers in gRPC's pieces: any split of a PullResponse (fp32,
 * bf16, fp16 tensors, an evaluation, a push's tail), cut inside varints,
 * tags and elements, with empty pieces, reads as the one-piece reader reads
 * the whole, values copied or decoded across the cuts; truncated and bit-
 * flipped messages are refused the same way in pieces and whole. */
static void test_pull_view_segments(void) {
    const size_t N = 3000;
    float *w = floats(N, -1.5f), *o1 = malloc(N * sizeof(float)), *o2 = malloc(N * sizeof(float));
    uint16_t *h = malloc(N * sizeof(uint16_t));
    CU_ASSERT_FATAL(o1 && o2 && h);
    static tfps_wire_pull_resp in;
    tfps_buf b = {0};
    uint8_t tail[TFPS_WIRE_PUSH_TAIL_MAX];
    const tfps_wire_push_resp pr = {.applied = 1, .version = 77, .nonfinite = 0};
    uint32_t seed = 99;
    int agree = 0, cases = 0, refused = 0;
    for (int c = 0; c < 3000; c++) {
        seed = seed * 1103515245u + 12345u;
        memset(&in, 0, sizeof(in));
        in.version = seed % 1000;
        in.examples = (uint64_t)seed << 3;
        in.held_s = (seed % 7) * 0.25;
        if (seed % 3 == 0) in.eval = (tfps_wire_eval){.count = 2, .step = 5, .accuracy = 0.5, .loss = 1.25};
        in.ntensors = 1 + (int)(seed >> 8) % 3;
        const int dt = (int)(seed >> 12) % 3;
        if (dt) tfps_wire_encode(dt, w, h, N);
        size_t at = (seed >> 4) % 200;
        for (int t = 0; t < in.ntensors; t++) {
            const size_t m = (size_t)((seed >> (10 + 3 * t)) % 900);
            in.tensors[t] = dt ? (tfps_wire_tensor){.range = {at, at + m}, .dtype = dt, .half = h + t * 900}
                               : (tfps_wire_tensor){.range = {at, at + m}, .values = w + t * 900};
            at += m;
        }
        in.tail = seed % 2 ? tail : NULL;
        in.tail_len = seed % 2 ? tfps_wire_push_tail(&pr, tail) : 0;
        CU_ASSERT_FATAL(tfps_wire_pack_pull_resp(&in, &b) == TFPS_OK);
        if (c % 3 == 1 && b.len > 4) {   // a damaged message: cut short or a bit flipped
            if (seed % 2) b.len -= 1 + seed % (b.len / 2);
            else b.data[seed % b.len] ^= (uint8_t)(1u << (seed >> 5) % 8);
        }
        size_t cuts[64];
        const int ncuts = (int)(seed >> 16) % 64;
        for (int k = 0; k < ncuts; k++) {   // sorted, with repeats (empty pieces) and cuts one byte apart
            seed = seed * 1103515245u + 12345u;
            cuts[k] = k == 0 ? 0 : cuts[k - 1];
            const size_t room = b.len - cuts[k];
            cuts[k] += room ? (seed >> 8) % (k % 4 == 0 ? 2 : room / 4 + 1) : 0;
        }
        static tfps_wire_pull_view v;
        char e[TFPS_ERR_LEN];
        refused += tfps_wire_view_pull_resp(b.data, b.len, &v, e, sizeof(e)) != TFPS_OK;
        agree += split_views_agree(b.data, b.len, cuts, ncuts, o1, o2, N);
        cases++;
    }
    CU_ASSERT_EQUAL(agree, cases);
    CU_ASSERT(refused > 100 && refused < cases);   // both sides of the reader exercised
    free(w);
    free(o1);
    free(o2);
    free(h);
    tfps_buf_free(&b);
}

/* The zero-copy reader (tfps_wire_view_pull_resp): a PullResponse and a
 * PushPullResponse (a PullResponse + the push's tail) read in place from an
 * odd address, tensors pointing into the input, every field as protobuf-c
 * reads it; malformed answers refused with one line. */
static void test_pull_view(void) {
    float *w = floats(BIG, 2.0f);
    static tfps_wire_pull_resp in;
    static tfps_wire_pull_view v;
    memset(&in, 0, sizeof(in));
    in.version = 9;
    in.examples = 12345;
    in.held_s = 0.125;
    in.eval = (tfps_wire_eval){.count = 3, .step = 7, .accuracy = 0.75, .loss = 0.5};
    in.ntensors = 2;
    in.tensors[0] = (tfps_wire_tensor){.range = {0, 100}, .values = w};
    in.tensors[1] = (tfps_wire_tensor){.range = {100, BIG}, .values = w + 100};
    uint8_t tail[TFPS_WIRE_PUSH_TAIL_MAX];
    const tfps_wire_push_resp pr = {.applied = 1, .version = (1ull << 40) + 3, .nonfinite = 1};
    tfps_buf b = {0};
    char err[TFPS_ERR_LEN];
    for (int with_tail = 0; with_tail <= 1; with_tail++) {
        in.tail = with_tail ? tail : NULL;
        in.tail_len = with_tail ? tfps_wire_push_tail(&pr, tail) : 0;
        CU_ASSERT_FATAL(tfps_wire_pack_pull_resp(&in, &b) == TFPS_OK);
        uint8_t *raw = malloc(b.len + 1), *odd = raw + 1;
        memcpy(odd, b.data, b.len);
        CU_ASSERT_FATAL(tfps_wire_view_pull_resp(odd, b.len, &v, err, sizeof(err)) == TFPS_OK);
        CU_ASSERT(v.version == 9 && v.examples == 12345 && v.held_s == 0.125 && v.ntensors == 2);
        CU_ASSERT(v.eval.count == 3 && v.eval.step == 7 && v.eval.accuracy == 0.75 && v.eval.loss == 0.5);
        CU_ASSERT(v.tensors[0].range.begin == 0 && v.tensors[0].range.end == 100 && v.tensors[1].range.end == BIG);
        CU_ASSERT(v.tensors[1].bytes > odd && v.tensors[1].bytes + (BIG - 100) * 4 <= odd + b.len);   // in place
        CU_ASSERT(memcmp(v.tensors[0].bytes, w, 400) == 0 && memcmp(v.tensors[1].bytes, w + 100, (BIG - 100) * 4) == 0);
        if (with_tail) {
            CU_ASSERT(v.push.applied == 1 && v.push.version == (1ull << 40) + 3 && v.push.nonfinite == 1);
        } else {
            CU_ASSERT(v.push.applied == 0 && v.push.version == 0 && v.push.nonfinite == 0);
        }
        free(raw);
    }
    // malformed: each refused with one line saying what
    const struct { const char *what; uint8_t bytes[16]; size_t n; const char *want; } bad[] = {
        {"tensor without range", {0x12, 0x02, 0x12, 0x00}, 4, "without a range"},
        {"values of the wrong size", {0x12, 0x09, 0x0a, 0x02, 0x10, 0x01, 0x12, 0x03, 1, 2, 3}, 11, "expected 4"},
        {"a second range", {0x12, 0x06, 0x0a, 0x00, 0x0a, 0x00, 0x12, 0x00}, 8, "second range"},
        {"eval twice", {0x2a, 0x00, 0x2a, 0x00}, 4, "eval given twice"},
        {"version as fixed64", {0x09, 0, 0, 0, 0, 0, 0, 0, 0}, 9, "wire type 1, expected 0"},
        {"a 6-byte tag", {0x88, 0x80, 0x80, 0x80, 0x80, 0x00, 0x01}, 7, "malformed field tag"},
        {"truncated tensor", {0x12, 0x05, 0x0a}, 3, "truncated tensor"},
        {"a group", {0x0b}, 1, "wire type 3"},
        {"an unknown group", {0x33}, 1, "field 6 is malformed"},
        {"a 6-byte length", {0x32, 0x80, 0x80, 0x80, 0x80, 0x80, 0x00}, 7, "field 6 is malformed"},
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        err[0] = '\0';
        CU_ASSERT_EQUAL(tfps_wire_view_pull_resp(bad[i].bytes, bad[i].n, &v, err, sizeof(err)), TFPS_ERR);
        if (!strstr(err, bad[i].want)) printf("\n  view of %s: \"%s\" lacks \"%s\"", bad[i].what, err, bad[i].want);
        CU_ASSERT_PTR_NOT_NULL(strstr(err, bad[i].want));
        CU_ASSERT_PTR_NULL(strchr(err, '\n'));
    }
    // 65 tensors: one too many
    uint8_t many[65 * 4];
    for (int i = 0; i < 65; i++) {
        many[4 * i] = 0x12, many[4 * i + 1] = 0x02, many[4 * i + 2] = 0x0a, many[4 * i + 3] = 0x00;
    }
    CU_ASSERT_EQUAL(tfps_wire_view_pull_resp(many, sizeof(many), &v, err, sizeof(err)), TFPS_ERR);
    CU_ASSERT_PTR_NOT_NULL(strstr(err, "at most 64"));
    CU_ASSERT_EQUAL(tfps_wire_view_pull_resp(many, 64 * 4, &v, err, sizeof(err)), TFPS_OK);   // 64 empty ones: fine
    CU_ASSERT_EQUAL(v.ntensors, 64);
    tfps_buf_free(&b);
    free(w);
}

static void test_pull_resp_many(void) {
    // the 6 variables of 784-300-100-10 as 6 tensors, plus an empty one
    static const uint64_t off[] = {0, 235200, 235500, 265500, 265600, 266600, 266610};
    float *w = floats(BIG, 1.0f);
    static tfps_wire_pull_resp in, out;
    in.version = 3;
    in.ntensors = 7;
    for (int i = 0; i < 6; i++) {
        in.tensors[i].range.begin = off[i];
        in.tensors[i].range.end = off[i + 1];
        in.tensors[i].values = w + off[i];
    }
    in.tensors[6].range.begin = in.tensors[6].range.end = 5;
    in.tensors[6].values = NULL;   // allowed for zero elements
    tfps_buf b = {0};
    void *own;
    char err[TFPS_ERR_LEN];
    CU_ASSERT_FATAL(tfps_wire_pack_pull_resp(&in, &b) == TFPS_OK);
    CU_ASSERT_FATAL(tfps_wire_unpack_pull_resp(b.data, b.len, &out, &own, err, sizeof(err)) == TFPS_OK);
    CU_ASSERT_EQUAL_FATAL(out.ntensors, 7);
    for (int i = 0; i < 6; i++) {
        CU_ASSERT_EQUAL(out.tensors[i].range.begin, off[i]);
        CU_ASSERT_EQUAL(out.tensors[i].range.end, off[i + 1]);
        CU_ASSERT((uintptr_t)out.tensors[i].values % 4 == 0);
        CU_ASSERT(memcmp(out.tensors[i].values, w + off[i], (off[i + 1] - off[i]) * sizeof(float)) == 0);
    }
    CU_ASSERT(out.tensors[6].range.begin == 5 && out.tensors[6].range.end == 5);
    CU_ASSERT_PTR_NOT_NULL(out.tensors[6].values);   // callers may memcpy 0 bytes from it
    tfps_wire_release(own);
    free(w);
    tfps_buf_free(&b);
}

/* The packers put every gradient's values at a multiple of 4 bytes from the
 * start of the request, whatever the varint lengths before them (sizes
 * around 128 and 16,384 bytes, big ranges, sessions, bf16), also inside a
 * PushPull; the zero-copy reader and protobuf-c read the same message. */
static void check_push_view(const uint8_t *base, const uint8_t *d, size_t n, const tfps_wire_push_req *in,
                            int *misaligned) {
    static tfps_wire_push_view v;
    static tfps_wire_push_req a;
    void *own = NULL;
    char err[TFPS_ERR_LEN];
    CU_ASSERT_FATAL(tfps_wire_view_push_req(d, n, &v, err, sizeof(err)) == TFPS_OK);
    CU_ASSERT_FATAL(tfps_wire_unpack_push_req(d, n, &a, &own, err, sizeof(err)) == TFPS_OK);
    CU_ASSERT(v.worker_id == in->worker_id && a.worker_id == in->worker_id);
    CU_ASSERT(v.base_version == in->base_version && a.base_version == in->base_version);
    CU_ASSERT(v.step == in->step && a.step == in->step && v.batch_size == in->batch_size);
    CU_ASSERT(memcmp(&v.loss, &in->loss, 4) == 0 && memcmp(&a.loss, &in->loss, 4) == 0);
    CU_ASSERT(tfps_session_equal(&v.session, &in->session) && tfps_session_equal(&a.session, &in->session));
    CU_ASSERT_EQUAL_FATAL(v.ntensors, in->ntensors);
    CU_ASSERT_EQUAL_FATAL(a.ntensors, in->ntensors);
    for (int i = 0; i < in->ntensors; i++) {
        const tfps_wire_tensor *t = &in->gradients[i];
        const size_t nb = (size_t)(t->range.end - t->range.begin) * tfps_wire_dtype_size(t->dtype);
        const void *want = t->dtype == TFPS_DTYPE_FP32 ? (const void *)t->values : (const void *)t->half;
        const void *got = a.gradients[i].dtype == TFPS_DTYPE_FP32 ? (const void *)a.gradients[i].values
                                                                 : (const void *)a.gradients[i].half;
        CU_ASSERT(v.gradients[i].range.begin == t->range.begin && v.gradients[i].range.end == t->range.end);
        CU_ASSERT(v.gradients[i].dtype == t->dtype && a.gradients[i].dtype == t->dtype);
        CU_ASSERT(nb == 0 || (memcmp(v.gradients[i].bytes, want, nb) == 0 && memcmp(got, want, nb) == 0));
        CU_ASSERT(v.gradients[i].bytes >= d && v.gradients[i].bytes + nb <= d + n);
        if ((size_t)(v.gradients[i].bytes - base) % 4) (*misaligned)++;
    }
    tfps_wire_release(own);
}

static void test_push_view(void) {
    static const uint64_t sizes[] = {0, 1, 7, 29, 30, 31, 32, 33, 63, 64, 4094, 4095, 4096, 4097, 100000};
    static const uint64_t begins[] = {0, 1, 127, 128, 16383, 16384, 266000, 1ull << 40};
    float *g = floats(100000, 0.75f);
    uint16_t *h = malloc(100000 * sizeof(uint16_t));
    CU_ASSERT_FATAL(h != NULL);
    tfps_wire_encode(TFPS_DTYPE_BF16, g, h, 100000);
    static tfps_wire_push_req in;
    tfps_buf b = {0}, pp = {0}, pull = {0};
    tfps_wire_pull_req pq = {.worker_id = 3, .min_version = 5, .dtype = TFPS_DTYPE_BF16};
    CU_ASSERT_FATAL(tfps_wire_pack_pull_req(&pq, &pull) == TFPS_OK);
    int cases = 0, misaligned = 0;
    uint32_t seed = 12345;
    for (int c = 0; c < 2000; c++) {
        seed = seed * 1103515245u + 12345u;
        memset(&in, 0, sizeof(in));
        in.worker_id = seed % 3 ? (seed >> 8) % 300 : 0;
        in.base_version = (seed >> 4) % 5 ? (uint64_t)seed * 977 : 0;
        in.step = c;
        in.loss = c % 3 ? 2.5f + (float)c : 0.0f;
        in.batch_size = c % 4 ? 64 : 0;
        if (c % 2) memset(in.session.b, 0xa0 + c % 16, TFPS_SESSION_LEN);
        in.ntensors = 1 + (int)((seed >> 12) % 5);
        uint64_t at = begins[(seed >> 16) % 8];
        for (int i = 0; i < in.ntensors; i++) {
            seed = seed * 1103515245u + 12345u;
            const uint64_t len = sizes[(seed >> 10) % 15];
            const int dt = (seed >> 20) % 3 == 0 ? TFPS_DTYPE_BF16 : TFPS_DTYPE_FP32;
            in.gradients[i] = dt == TFPS_DTYPE_FP32
                                  ? (tfps_wire_tensor){.range = {at, at + len}, .values = g}
                                  : (tfps_wire_tensor){.range = {at, at + len}, .dtype = dt, .half = h};
            at += len + (seed >> 24) % 3;
        }
        CU_ASSERT_FATAL(tfps_wire_pack_push_req(&in, &b) == TFPS_OK);
        check_push_view(b.data, b.data, b.len, &in, &misaligned);
        CU_ASSERT_FATAL(tfps_wire_pack_pushpull_req(&in, &pull, &pp) == TFPS_OK);
        const uint8_t *push, *pl;
        size_t push_len, pl_len;
        char err[TFPS_ERR_LEN];
        CU_ASSERT_FATAL(tfps_wire_split_pushpull_req(pp.data, pp.len, &push, &push_len, &pl, &pl_len, err,
                                                     sizeof(err)) == TFPS_OK);
        CU_ASSERT(pl_len == pull.len && memcmp(pl, pull.data, pull.len) == 0);
        check_push_view(pp.data, push, push_len, &in, &misaligned);
        cases += 2;
    }
    CU_ASSERT_EQUAL(misaligned, 0);
    CU_ASSERT_EQUAL(cases, 4000);

    // refused alike by both readers: a pad of the wrong wire type, a 5-byte session, a cut loss
    tfps_wire_push_view v;
    char err[TFPS_ERR_LEN];
    void *own = NULL;
    static tfps_wire_push_req a;
    enc e = {0};
    put_u(&e, 1, 2);
    put_len(&e, 6, "\x0a\x02\x10\x01\x20\x05\x12\x04\x00\x00\x80\x3f", 12);   // pad as a varint
    CU_ASSERT_EQUAL(tfps_wire_view_push_req(e.b, e.n, &v, err, sizeof(err)), TFPS_ERR);
    CU_ASSERT(strstr(err, "PushRequest.gradients[0]: field 4 (pad)") != NULL);
    CU_ASSERT_EQUAL(tfps_wire_unpack_push_req(e.b, e.n, &a, &own, err, sizeof(err)), TFPS_ERR);
    e.n = 0;
    put_len(&e, 7, "abcde", 5);
    CU_ASSERT_EQUAL(tfps_wire_view_push_req(e.b, e.n, &v, err, sizeof(err)), TFPS_ERR);
    CU_ASSERT(strstr(err, "PushRequest.session: 5 bytes") != NULL);
    CU_ASSERT_EQUAL(tfps_wire_unpack_push_req(e.b, e.n, &a, &own, err, sizeof(err)), TFPS_ERR);
    static const uint8_t cut[] = {0x25, 0x00, 0x00};   // loss: 3 of its 4 bytes
    CU_ASSERT_EQUAL(tfps_wire_view_push_req(cut, sizeof(cut), &v, err, sizeof(err)), TFPS_ERR);
    CU_ASSERT_EQUAL(tfps_wire_unpack_push_req(cut, sizeof(cut), &a, &own, err, sizeof(err)), TFPS_ERR);
    free(e.b);
    free(g);
    free(h);
    tfps_buf_free(&b);
    tfps_buf_free(&pp);
    tfps_buf_free(&pull);
}

static void test_push_req(void) {
    float *g = floats(1000, -0.5f);
    static tfps_wire_push_req in, out;
    in.worker_id = 2;
    in.base_version = 41;
    in.step = 9876543210ull;
    in.loss = 2.302585f;
    in.batch_size = 64;
    in.ntensors = 3;
    in.gradients[0] = (tfps_wire_tensor){.range = {100, 600}, .values = g};
    in.gradients[1] = (tfps_wire_tensor){.range = {5, 5}, .values = NULL};
    in.gradients[2] = (tfps_wire_tensor){.range = {266000, 266500}, .values = g + 500};
    tfps_buf b = {0};
    void *own;
    char err[TFPS_ERR_LEN];
    CU_ASSERT_FATAL(tfps_wire_pack_push_req(&in, &b) == TFPS_OK);
    CU_ASSERT_FATAL(tfps_wire_unpack_push_req(b.data, b.len, &out, &own, err, sizeof(err)) == TFPS_OK);
    CU_ASSERT_EQUAL(out.worker_id, 2);
    CU_ASSERT_EQUAL(out.base_version, 41);
    CU_ASSERT_EQUAL(out.step, 9876543210ull);
    CU_ASSERT_EQUAL(out.loss, 2.302585f);
    CU_ASSERT_EQUAL(out.batch_size, 64);
    CU_ASSERT_EQUAL_FATAL(out.ntensors, 3);
    CU_ASSERT(out.gradients[0].range.begin == 100 && out.gradients[0].range.end == 600);
    CU_ASSERT(memcmp(out.gradients[0].values, g, 500 * 4) == 0);
    CU_ASSERT(out.gradients[1].range.begin == 5 && out.gradients[1].range.end == 5);
    CU_ASSERT(out.gradients[2].range.begin == 266000 && out.gradients[2].range.end == 266500);
    CU_ASSERT(memcmp(out.gradients[2].values, g + 500, 500 * 4) == 0);
    tfps_wire_release(own);

    // by hand: worker_id 1, base_version 2, step 3, loss 4 (float), batch_size 5, gradients 6
    enc e = {0};
    float loss = -1.5f, v[3] = {1.0f, -2.0f, 0.5f};
    uint32_t loss_bits;
    memcpy(&loss_bits, &loss, 4);
    put_u(&e, 1, 8);
    put_u(&e, 2, 9);
    put_u(&e, 3, 10);
    put_fixed32(&e, 4, loss_bits);
    put_u(&e, 5, 32);
    put_tensor(&e, 6, 1, 7, 10, v, sizeof(v));
    CU_ASSERT_FATAL(tfps_wire_unpack_push_req(e.b, e.n, &out, &own, err, sizeof(err)) == TFPS_OK);
    CU_ASSERT(out.worker_id == 8 && out.base_version == 9 && out.step == 10 && out.loss == -1.5f &&
              out.batch_size == 32 && out.ntensors == 1);
    CU_ASSERT(out.gradients[0].range.begin == 7 && out.gradients[0].range.end == 10);
    CU_ASSERT(memcmp(out.gradients[0].values, v, sizeof(v)) == 0);
    tfps_wire_release(own);
    free(e.b);
    free(g);
    tfps_buf_free(&b);
}

static void test_small_messages(void) {
    tfps_buf b = {0};
    void *own;
    char err[TFPS_ERR_LEN];
    for (int applied = 0; applied <= 3; applied++) {   // bit 0: applied, bit 1: nonfinite
        tfps_wire_push_resp in = {.applied = applied & 1 ? 7 : 0, .version = 99, .nonfinite = applied & 2 ? 5 : 0},
                            out = {-1, 0, -1};
        CU_ASSERT_FATAL(tfps_wire_pack_push_resp(&in, &b) == TFPS_OK);
        CU_ASSERT_FATAL(tfps_wire_unpack_push_resp(b.data, b.len, &out, &own, err, sizeof(err)) == TFPS_OK);
        CU_ASSERT_EQUAL(out.applied, applied & 1);   // any non-zero packs as true, comes back 1
        CU_ASSERT_EQUAL(out.nonfinite, (applied & 2) >> 1);
        CU_ASSERT_EQUAL(out.version, 99);
        tfps_wire_release(own);
    }
    {
        tfps_wire_heartbeat_req in = {.worker_id = 6, .step = 1ull << 33, .examples = 123456789, .done = 1}, out;
        CU_ASSERT_FATAL(tfps_wire_pack_heartbeat_req(&in, &b) == TFPS_OK);
        const size_t plain = b.len;
        CU_ASSERT_FATAL(tfps_wire_unpack_heartbeat_req(b.data, b.len, &out, &own, err, sizeof(err)) == TFPS_OK);
        CU_ASSERT(out.worker_id == 6 && out.step == 1ull << 33 && out.examples == 123456789 && out.done == 1);
        CU_ASSERT_EQUAL(out.eval.count, 0);   // none sent: none received
        tfps_wire_release(own);
        // an evaluation report: every field back, odd doubles exact; count 0 puts nothing on the wire
        in.eval = (tfps_wire_eval){.count = 4000000000u, .step = (1ull << 63) + 5, .accuracy = 0.1, .loss = 1e-300};
        CU_ASSERT_FATAL(tfps_wire_pack_heartbeat_req(&in, &b) == TFPS_OK);
        CU_ASSERT(b.len > plain);
        CU_ASSERT_FATAL(tfps_wire_unpack_heartbeat_req(b.data, b.len, &out, &own, err, sizeof(err)) == TFPS_OK);
        CU_ASSERT(out.eval.count == 4000000000u && out.eval.step == (1ull << 63) + 5 && out.eval.accuracy == 0.1 &&
                  out.eval.loss == 1e-300);
        tfps_wire_release(own);
        in.eval = (tfps_wire_eval){.count = 0, .step = 9, .accuracy = 0.5, .loss = 1};
        CU_ASSERT_FATAL(tfps_wire_pack_heartbeat_req(&in, &b) == TFPS_OK);
        CU_ASSERT_EQUAL(b.len, plain);
    }
    {
        tfps_wire_heartbeat_resp in = {.version = 5, .workers_registered = 3, .workers_done = 2, .shutting_down = 1,
                                       .workers_dead = 1, .chief_done = 1},
                                 out;
        CU_ASSERT_FATAL(tfps_wire_pack_heartbeat_resp(&in, &b) == TFPS_OK);
        CU_ASSERT_FATAL(tfps_wire_unpack_heartbeat_resp(b.data, b.len, &out, &own, err, sizeof(err)) == TFPS_OK);
        CU_ASSERT(out.version == 5 && out.workers_registered == 3 && out.workers_done == 2 && out.shutting_down == 1 &&
                  out.workers_dead == 1 && out.chief_done == 1);
        tfps_wire_release(own);
    }
    {
        CU_ASSERT_FATAL(tfps_wire_pack_status_req(&b) == TFPS_OK);
        CU_ASSERT_EQUAL(b.len, 0);
        CU_ASSERT_FATAL(tfps_wire_unpack_status_req(b.data, b.len, &own, err, sizeof(err)) == TFPS_OK);
        CU_ASSERT_PTR_NOT_NULL(own);
        tfps_wire_release(own);
    }
    {
        tfps_wire_status_resp in = {.version = 1,
                                    .applied = 2,
                                    .refused = 3,
                                    .bytes_in = 1ull << 50,
                                    .bytes_out = (1ull << 50) + 1,
                                    .uptime_s = 3600.25,
                                    .ps_index = 4,
                                    .workers_registered = 5,
                                    .workers_done = 6, .examples = 123456789012ULL,
                                    .nonfinite = (1ull << 40) + 3,
                                    .eval = {.count = 3, .step = 77, .accuracy = 0.9375, .loss = 0.25}},
                              out;
        CU_ASSERT_FATAL(tfps_wire_pack_status_resp(&in, &b) == TFPS_OK);
        CU_ASSERT_FATAL(tfps_wire_unpack_status_resp(b.data, b.len, &out, &own, err, sizeof(err)) == TFPS_OK);
        CU_ASSERT(out.version == 1 && out.applied == 2 && out.refused == 3 && out.bytes_in == 1ull << 50 &&
                  out.bytes_out == (1ull << 50) + 1 && out.uptime_s == 3600.25 && out.ps_index == 4 &&
                  out.workers_registered == 5 && out.workers_done == 6 && out.examples == 123456789012ULL &&
                  out.nonfinite == (1ull << 40) + 3 && out.eval.count == 3 && out.eval.step == 77 &&
                  out.eval.accuracy == 0.9375 && out.eval.loss == 0.25);
        tfps_wire_release(own);
    }
    {
        tfps_wire_shutdown_req in = {.reason = "training finished: 10 epochs"}, out;
        CU_ASSERT_FATAL(tfps_wire_pack_shutdown_req(&in, &b) == TFPS_OK);
        CU_ASSERT_FATAL(tfps_wire_unpack_shutdown_req(b.data, b.len, &out, &own, err, sizeof(err)) == TFPS_OK);
        CU_ASSERT_STRING_EQUAL(out.reason, "training finished: 10 epochs");
        tfps_wire_release(own);
        in.reason = NULL;   // packs as ""
        CU_ASSERT_FATAL(tfps_wire_pack_shutdown_req(&in, &b) == TFPS_OK);
        CU_ASSERT_FATAL(tfps_wire_unpack_shutdown_req(b.data, b.len, &out, &own, err, sizeof(err)) == TFPS_OK);
        CU_ASSERT_STRING_EQUAL(out.reason, "");
        tfps_wire_release(own);
        CU_ASSERT_FATAL(tfps_wire_pack_shutdown_resp(&b) == TFPS_OK);
        CU_ASSERT_EQUAL(b.len, 0);
        CU_ASSERT_FATAL(tfps_wire_unpack_shutdown_resp(b.data, b.len, &own, err, sizeof(err)) == TFPS_OK);
        tfps_wire_release(own);
    }
    tfps_wire_release(NULL);
    tfps_buf_free(&b);
    tfps_buf_free(&b);   // twice is fine
    tfps_buf_free(NULL);
}

static void test_health(void) {
    tfps_buf b = {0};
    void *own;
    char err[TFPS_ERR_LEN];
    int status = -1;
    CU_ASSERT_FATAL(tfps_wire_pack_health_resp(1, &b) == TFPS_OK);
    CU_ASSERT_EQUAL_FATAL(b.len, 2);
    CU_ASSERT(b.data[0] == 0x08 && b.data[1] == 0x01);   // status (1, varint) = SERVING
    CU_ASSERT_FATAL(tfps_wire_unpack_health_resp(b.data, b.len, &status, &own, err, sizeof(err)) == TFPS_OK);
    CU_ASSERT_EQUAL(status, 1);
    tfps_wire_release(own);
    CU_ASSERT_FATAL(tfps_wire_pack_health_resp(0, &b) == TFPS_OK);
    CU_ASSERT_EQUAL_FATAL(b.len, 2);
    CU_ASSERT(b.data[0] == 0x08 && b.data[1] == 0x02);   // NOT_SERVING
    CU_ASSERT_FATAL(tfps_wire_unpack_health_resp(b.data, b.len, &status, &own, err, sizeof(err)) == TFPS_OK);
    CU_ASSERT_EQUAL(status, 2);
    tfps_wire_release(own);

    const char *svc = NULL;
    const uint8_t req[] = {0x0a, 0x0f, 't', 'f', 'p', 's', '.', 'v', '1', '.', 'P', 'a', 'r', 'a', 'm', 'S', 'v'};
    CU_ASSERT_FATAL(tfps_wire_unpack_health_req(req, sizeof(req), &svc, &own, err, sizeof(err)) == TFPS_OK);
    CU_ASSERT_STRING_EQUAL(svc, "tfps.v1.ParamSv");
    tfps_wire_release(own);
    CU_ASSERT_FATAL(tfps_wire_unpack_health_req(NULL, 0, &svc, &own, err, sizeof(err)) == TFPS_OK);
    CU_ASSERT_STRING_EQUAL(svc, "");   // grpc_health_probe's default: the whole server
    tfps_wire_release(own);
    CU_ASSERT_EQUAL(tfps_wire_unpack_health_req(req, sizeof(req) - 1, &svc, &own, err, sizeof(err)), TFPS_ERR);
    ASSERT_ERR_HAS(err, "HealthCheckRequest");
    tfps_buf_free(&b);
}

/* An empty buffer is a valid proto3 message of any type: every field at its default. */
static void test_empty_is_defaults(void) {
    void *own;
    char err[TFPS_ERR_LEN];
    static const uint8_t nothing[1];
    const uint8_t *bufs[2] = {NULL, nothing};
    for (int k = 0; k < 2; k++) {
        const uint8_t *d = bufs[k];
        tfps_wire_register_req rq;
        memset(&rq, 0x5A, sizeof(rq));
        CU_ASSERT_FATAL(tfps_wire_unpack_register_req(d, 0, &rq, &own, err, sizeof(err)) == TFPS_OK);
        CU_ASSERT(rq.task_type && rq.task_type[0] == '\0' && rq.shard_strategy && rq.shard_strategy[0] == '\0');
        CU_ASSERT(rq.task_index == 0 && rq.worker_rank == 0 && rq.num_workers == 0 && rq.num_ps == 0 && rq.input == 0 &&
                  rq.h1 == 0 && rq.h2 == 0 && rq.classes == 0 && rq.layout_digest == 0 &&
                  rq.shard_plan_digest == 0 && rq.seed == 0 && rq.learning_rate == 0.0);
        tfps_wire_release(own);
        tfps_wire_register_resp rs;
        memset(&rs, 0x5A, sizeof(rs));
        CU_ASSERT_FATAL(tfps_wire_unpack_register_resp(d, 0, &rs, &own, err, sizeof(err)) == TFPS_OK);
        CU_ASSERT(rs.worker_id == 0 && rs.version == 0 && rs.ps_index == 0);
        tfps_wire_release(own);
        static tfps_wire_pull_req pq;
        memset(&pq, 0x5A, sizeof(pq));
        CU_ASSERT_FATAL(tfps_wire_unpack_pull_req(d, 0, &pq, &own, err, sizeof(err)) == TFPS_OK);
        CU_ASSERT(pq.worker_id == 0 && pq.min_version == 0 && pq.nranges == 0);
        tfps_wire_release(own);
        static tfps_wire_pull_resp pr;
        memset(&pr, 0x5A, sizeof(pr));
        CU_ASSERT_FATAL(tfps_wire_unpack_pull_resp(d, 0, &pr, &own, err, sizeof(err)) == TFPS_OK);
        CU_ASSERT(pr.version == 0 && pr.ntensors == 0);
        tfps_wire_release(own);
        static tfps_wire_push_req sq;
        memset(&sq, 0x5A, sizeof(sq));
        CU_ASSERT_FATAL(tfps_wire_unpack_push_req(d, 0, &sq, &own, err, sizeof(err)) == TFPS_OK);
        CU_ASSERT(sq.worker_id == 0 && sq.base_version == 0 && sq.step == 0 && sq.loss == 0.0f && sq.batch_size == 0 &&
                  sq.ntensors == 0);
        tfps_wire_release(own);
        tfps_wire_push_resp ss;
        memset(&ss, 0x5A, sizeof(ss));
        CU_ASSERT_FATAL(tfps_wire_unpack_push_resp(d, 0, &ss, &own, err, sizeof(err)) == TFPS_OK);
        CU_ASSERT(ss.applied == 0 && ss.version == 0 && ss.nonfinite == 0);
        tfps_wire_release(own);
        tfps_wire_heartbeat_req hq;
        memset(&hq, 0x5A, sizeof(hq));
        CU_ASSERT_FATAL(tfps_wire_unpack_heartbeat_req(d, 0, &hq, &own, err, sizeof(err)) == TFPS_OK);
        CU_ASSERT(hq.worker_id == 0 && hq.step == 0 && hq.examples == 0 && hq.done == 0);
        tfps_wire_release(own);
        tfps_wire_heartbeat_resp hs;
        memset(&hs, 0x5A, sizeof(hs));
        CU_ASSERT_FATAL(tfps_wire_unpack_heartbeat_resp(d, 0, &hs, &own, err, sizeof(err)) == TFPS_OK);
        CU_ASSERT(hs.version == 0 && hs.workers_registered == 0 && hs.workers_done == 0 && hs.shutting_down == 0);
        tfps_wire_release(own);
        tfps_wire_status_resp st;
        memset(&st, 0x5A, sizeof(st));
        CU_ASSERT_FATAL(tfps_wire_unpack_status_resp(d, 0, &st, &own, err, sizeof(err)) == TFPS_OK);
        CU_ASSERT(st.version == 0 && st.applied == 0 && st.refused == 0 && st.bytes_in == 0 && st.bytes_out == 0 &&
                  st.uptime_s == 0.0 && st.ps_index == 0 && st.workers_registered == 0 && st.workers_done == 0 &&
                  st.nonfinite == 0);
        tfps_wire_release(own);
        tfps_wire_shutdown_req sd;
        sd.reason = NULL;
        CU_ASSERT_FATAL(tfps_wire_unpack_shutdown_req(d, 0, &sd, &own, err, sizeof(err)) == TFPS_OK);
        CU_ASSERT(sd.reason && sd.reason[0] == '\0');
        tfps_wire_release(own);
        int status = -1;
        CU_ASSERT_FATAL(tfps_wire_unpack_health_resp(d, 0, &status, &own, err, sizeof(err)) == TFPS_OK);
        CU_ASSERT_EQUAL(status, 0);   // UNKNOWN
        tfps_wire_release(own);
    }
}

/* A big message then a small one in the same buffer: no shrink, no realloc for the small one,
 * nor for the big one again. */
static void test_buffer_reuse(void) {
    float *w = floats(BIG, 0.0f);
    static tfps_wire_pull_resp big, out;
    big.version = 1;
    big.ntensors = 1;
    big.tensors[0] = (tfps_wire_tensor){.range = {0, BIG}, .values = w};
    tfps_buf b = {0};
    void *own;
    char err[TFPS_ERR_LEN];
    CU_ASSERT_FATAL(tfps_wire_pack_pull_resp(&big, &b) == TFPS_OK);
    size_t big_len = b.len, cap = b.cap;
    uint8_t *data = b.data;
    CU_ASSERT(cap >= big_len && big_len > BIG * 4);

    tfps_wire_heartbeat_req hb = {.worker_id = 3, .step = 4, .examples = 5, .done = 0}, hbo;
    CU_ASSERT_FATAL(tfps_wire_pack_heartbeat_req(&hb, &b) == TFPS_OK);
    CU_ASSERT(b.len > 0 && b.len < 16);
    CU_ASSERT_EQUAL(b.cap, cap);
    CU_ASSERT_PTR_EQUAL(b.data, data);
    CU_ASSERT_FATAL(tfps_wire_unpack_heartbeat_req(b.data, b.len, &hbo, &own, err, sizeof(err)) == TFPS_OK);
    CU_ASSERT(hbo.worker_id == 3 && hbo.step == 4 && hbo.examples == 5 && hbo.done == 0);
    tfps_wire_release(own);

    w[BIG - 1] = 42.0f;
    CU_ASSERT_FATAL(tfps_wire_pack_pull_resp(&big, &b) == TFPS_OK);
    CU_ASSERT_EQUAL(b.len, big_len);
    CU_ASSERT_EQUAL(b.cap, cap);
    CU_ASSERT_PTR_EQUAL(b.data, data);
    CU_ASSERT_FATAL(tfps_wire_unpack_pull_resp(b.data, b.len, &out, &own, err, sizeof(err)) == TFPS_OK);
    CU_ASSERT(out.ntensors == 1 && out.tensors[0].values[BIG - 1] == 42.0f);
    CU_ASSERT(memcmp(out.tensors[0].values, w, BIG * 4) == 0);
    tfps_wire_release(own);

    // an empty message in a used buffer: len 0, the buffer is kept
    CU_ASSERT_FATAL(tfps_wire_pack_status_req(&b) == TFPS_OK);
    CU_ASSERT(b.len == 0 && b.cap == cap && b.data == data);
    tfps_buf_free(&b);
    CU_ASSERT(b.data == NULL && b.len == 0 && b.cap == 0);
    free(w);
}

/* ---- malformed input ---- */

/* Unpacks d as a PushRequest expecting an error containing sub; checks that nothing is owned and
 * the output struct is untouched. */
static void expect_push_err(const enc *e, const char *sub) {
    static tfps_wire_push_req m, before;
    memset(&m, 0x5A, sizeof(m));
    before = m;
    void *own = (void *)&m;
    char err[TFPS_ERR_LEN] = "";
    CU_ASSERT_EQUAL(tfps_wire_unpack_push_req(e->b, e->n, &m, &own, err, sizeof(err)), TFPS_ERR);
    CU_ASSERT_PTR_NULL(own);
    CU_ASSERT(memcmp(&m, &before, sizeof(m)) == 0);
    CU_ASSERT(strchr(err, '\n') == NULL);
    ASSERT_ERR_HAS(err, sub);
}

static void test_bad_tensors(void) {
    float v[8] = {1, 2, 3, 4, 5, 6, 7, 8};
    enc e = {0};
    // gradients[1] has 3 floats for a range of 5
    put_u(&e, 1, 1);
    put_tensor(&e, 6, 1, 10, 12, v, 8);
    put_tensor(&e, 6, 1, 0, 5, v, 12);
    expect_push_err(&e, "PushRequest.gradients[1]: 12 bytes of fp32 values for range [0, 5): expected 20");
    // too many bytes
    e.n = 0;
    put_tensor(&e, 6, 1, 0, 1, v, 8);
    expect_push_err(&e, "PushRequest.gradients[0]: 8 bytes of fp32 values for range [0, 1): expected 4");
    // not a multiple of 4
    e.n = 0;
    put_tensor(&e, 6, 1, 0, 2, v, 7);
    expect_push_err(&e, "7 bytes of fp32 values for range [0, 2): expected 8");
    // end < begin
    e.n = 0;
    put_tensor(&e, 6, 1, 9, 7, v, 8);
    expect_push_err(&e, "PushRequest.gradients[0]: range [9, 7) has end < begin");
    // no range
    e.n = 0;
    put_tensor(&e, 6, 1, 0, 2, v, 8);
    put_tensor(&e, 6, 0, 0, 0, v, 8);
    expect_push_err(&e, "PushRequest.gradients[1]: tensor without a range");
    // a range no machine can hold: 4 * (end - begin) would overflow
    e.n = 0;
    put_tensor(&e, 6, 1, 0, UINT64_MAX, v, 8);
    expect_push_err(&e, "PushRequest.gradients[0]: range [0, 18446744073709551615) is too large");
    e.n = 0;
    put_tensor(&e, 6, 1, 0, 1ull << 62, v, 0);   // 4 * n wraps to exactly 0 bytes: still refused
    expect_push_err(&e, "too large");
    // too many tensors: 65 empty, valid ones
    e.n = 0;
    for (int i = 0; i < TFPS_WIRE_MAX_TENSORS + 1; i++) put_tensor(&e, 6, 1, (uint64_t)i, (uint64_t)i, v, 0);
    expect_push_err(&e, "PushRequest.gradients: 65 tensors: at most 64");
    // the same count is fine at the limit
    e.n = 0;
    for (int i = 0; i < TFPS_WIRE_MAX_TENSORS; i++) put_tensor(&e, 6, 1, (uint64_t)i, (uint64_t)i + 1, v + i % 8, 4);
    static tfps_wire_push_req ok;
    void *own;
    char err[TFPS_ERR_LEN];
    CU_ASSERT_FATAL(tfps_wire_unpack_push_req(e.b, e.n, &ok, &own, err, sizeof(err)) == TFPS_OK);
    CU_ASSERT_EQUAL(ok.ntensors, TFPS_WIRE_MAX_TENSORS);
    CU_ASSERT_EQUAL(ok.gradients[63].values[0], v[63 % 8]);
    tfps_wire_release(own);

    // the same checks guard PullResponse and PullRequest
    static tfps_wire_pull_resp pr;
    e.n = 0;
    put_u(&e, 1, 5);
    put_tensor(&e, 2, 1, 0, 5, v, 12);
    CU_ASSERT_EQUAL(tfps_wire_unpack_pull_resp(e.b, e.n, &pr, &own, err, sizeof(err)), TFPS_ERR);
    ASSERT_ERR_HAS(err, "PullResponse.tensors[0]: 12 bytes of fp32 values for range [0, 5): expected 20");
    CU_ASSERT_PTR_NULL(own);
    e.n = 0;
    put_tensor(&e, 2, 0, 0, 0, v, 0);
    CU_ASSERT_EQUAL(tfps_wire_unpack_pull_resp(e.b, e.n, &pr, &own, err, sizeof(err)), TFPS_ERR);
    ASSERT_ERR_HAS(err, "PullResponse.tensors[0]: tensor without a range");
    e.n = 0;
    for (int i = 0; i < 100; i++) put_tensor(&e, 2, 1, 0, 0, v, 0);
    CU_ASSERT_EQUAL(tfps_wire_unpack_pull_resp(e.b, e.n, &pr, &own, err, sizeof(err)), TFPS_ERR);
    ASSERT_ERR_HAS(err, "PullResponse.tensors: 100 tensors: at most 64");

    static tfps_wire_pull_req pq;
    e.n = 0;
    put_range(&e, 3, 0, 10);
    put_range(&e, 3, 20, 19);
    CU_ASSERT_EQUAL(tfps_wire_unpack_pull_req(e.b, e.n, &pq, &own, err, sizeof(err)), TFPS_ERR);
    ASSERT_ERR_HAS(err, "PullRequest.ranges[1]: range [20, 19) has end < begin");
    CU_ASSERT_PTR_NULL(own);
    e.n = 0;
    for (int i = 0; i < TFPS_WIRE_MAX_TENSORS + 1; i++) put_range(&e, 3, 0, 1);
    CU_ASSERT_EQUAL(tfps_wire_unpack_pull_req(e.b, e.n, &pq, &own, err, sizeof(err)), TFPS_ERR);
    ASSERT_ERR_HAS(err, "PullRequest.ranges: 65 ranges: at most 64");
    e.n = 0;
    put_range(&e, 3, 0, UINT64_MAX);
    CU_ASSERT_EQUAL(tfps_wire_unpack_pull_req(e.b, e.n, &pq, &own, err, sizeof(err)), TFPS_ERR);
    ASSERT_ERR_HAS(err, "PullRequest.ranges[0]: range [0, 18446744073709551615) is too large");

    // a field with the wrong wire type (step as fixed64) is malformed, and err may be NULL
    e.n = 0;
    put_fixed64(&e, 3, 1);
    expect_push_err(&e, "PushRequest: 9 bytes do not parse as a tfps.v1.PushRequest message");
    CU_ASSERT_EQUAL(tfps_wire_unpack_push_req(e.b, e.n, &ok, &own, NULL, 0), TFPS_ERR);
    // unknown fields are skipped (a newer peer may add some)
    e.n = 0;
    put_u(&e, 1, 3);
    put_len(&e, 99, "future", 6);
    put_fixed32(&e, 100, 7);
    CU_ASSERT_FATAL(tfps_wire_unpack_push_req(e.b, e.n, &ok, &own, err, sizeof(err)) == TFPS_OK);
    CU_ASSERT(ok.worker_id == 3 && ok.ntensors == 0);
    tfps_wire_release(own);
    free(e.b);
}

/* Runs bytes through every unpack function: each must either fail with a one-line message and own
 * nothing, or succeed with a result that keeps wire.h's promises. Returns how many succeeded. */
static int unpack_all(const uint8_t *d, size_t n) {
    static tfps_wire_register_req rq;
    static tfps_wire_register_resp rs;
    static tfps_wire_pull_req pq;
    static tfps_wire_pull_resp pr;
    static tfps_wire_push_req sq;
    static tfps_wire_push_resp ss;
    static tfps_wire_heartbeat_req hq;
    static tfps_wire_heartbeat_resp hs;
    static tfps_wire_status_resp st;
    static tfps_wire_shutdown_req sd;
    const char *svc;
    int status;
    int oks = 0;
    for (int k = 0; k < 14; k++) {
        void *own = &oks;   // must be overwritten
        char err[TFPS_ERR_LEN];
        err[0] = '\0';
        int rc = TFPS_ERR;
        switch (k) {
        case 0: rc = tfps_wire_unpack_register_req(d, n, &rq, &own, err, sizeof(err)); break;
        case 1: rc = tfps_wire_unpack_register_resp(d, n, &rs, &own, err, sizeof(err)); break;
        case 2: rc = tfps_wire_unpack_pull_req(d, n, &pq, &own, err, sizeof(err)); break;
        case 3: rc = tfps_wire_unpack_pull_resp(d, n, &pr, &own, err, sizeof(err)); break;
        case 4: rc = tfps_wire_unpack_push_req(d, n, &sq, &own, err, sizeof(err)); break;
        case 5: rc = tfps_wire_unpack_push_resp(d, n, &ss, &own, err, sizeof(err)); break;
        case 6: rc = tfps_wire_unpack_heartbeat_req(d, n, &hq, &own, err, sizeof(err)); break;
        case 7: rc = tfps_wire_unpack_heartbeat_resp(d, n, &hs, &own, err, sizeof(err)); break;
        case 8: rc = tfps_wire_unpack_status_req(d, n, &own, err, sizeof(err)); break;
        case 9: rc = tfps_wire_unpack_status_resp(d, n, &st, &own, err, sizeof(err)); break;
        case 10: rc = tfps_wire_unpack_shutdown_req(d, n, &sd, &own, err, sizeof(err)); break;
        case 11: rc = tfps_wire_unpack_shutdown_resp(d, n, &own, err, sizeof(err)); break;
        case 12: rc = tfps_wire_unpack_health_req(d, n, &svc, &own, err, sizeof(err)); break;
        case 13: rc = tfps_wire_unpack_health_resp(d, n, &status, &own, err, sizeof(err)); break;
        }
        if (rc != TFPS_OK) {
            CU_ASSERT_EQUAL(rc, TFPS_ERR);
            CU_ASSERT_PTR_NULL(own);
            CU_ASSERT(err[0] != '\0' && strchr(err, '\n') == NULL);
            continue;
        }
        oks++;
        CU_ASSERT(own != NULL && own != (void *)&oks);
        // what succeeded must be usable: touch every byte the struct points at (ASan checks)
        volatile float sink = 0;
        if (k == 0) CU_ASSERT(strlen(rq.task_type) + strlen(rq.shard_strategy) < n + 1);
        if (k == 2) {
            CU_ASSERT(pq.nranges >= 0 && pq.nranges <= TFPS_WIRE_MAX_TENSORS);
            for (int i = 0; i < pq.nranges; i++) CU_ASSERT(pq.ranges[i].end >= pq.ranges[i].begin);
        }
        if (k == 3 || k == 4) {
            int nt = k == 3 ? pr.ntensors : sq.ntensors;
            const tfps_wire_tensor *t = k == 3 ? pr.tensors : sq.gradients;
            CU_ASSERT(nt >= 0 && nt <= TFPS_WIRE_MAX_TENSORS);
            for (int i = 0; i < nt; i++) {
                CU_ASSERT(t[i].range.end >= t[i].range.begin && t[i].values != NULL);
                CU_ASSERT((t[i].range.end - t[i].range.begin) * 4 <= n);
                for (uint64_t j = 0; j < t[i].range.end - t[i].range.begin; j++) sink += t[i].values[j];
            }
        }
        if (k == 10) CU_ASSERT(strlen(sd.reason) <= n);
        if (k == 12) CU_ASSERT(strlen(svc) <= n);
        (void)sink;
        tfps_wire_release(own);
    }
    return oks;
}

static void test_fuzz_random(void) {
    uint8_t buf[300];
    int oks = 0;
    for (int it = 0; it < 20000; it++) {
        size_t n = (size_t)(rnd() % sizeof(buf));
        for (size_t i = 0; i < n; i++) buf[i] = (uint8_t)rnd();
        // a third of them start like a real message (a valid tag) to get past the first byte
        if (it % 3 == 0 && n > 0) buf[0] = (uint8_t)((1 + rnd() % 6) << 3 | (rnd() % 3));
        // exact-size copy so ASan sees any read past the end
        uint8_t *d = malloc(n ? n : 1);
        memcpy(d, buf, n);
        oks += unpack_all(d, n);
        free(d);
    }
    CU_ASSERT(oks > 0);   // some garbage does parse; that is fine as long as it checks out
}

static void test_fuzz_truncate_and_flip(void) {
    float *g = floats(40, 0.5f);
    static tfps_wire_push_req in;
    in.worker_id = 300;
    in.base_version = 1ull << 35;
    in.step = 17;
    in.loss = 0.7f;
    in.batch_size = 128;
    in.ntensors = 3;
    in.gradients[0] = (tfps_wire_tensor){.range = {0, 10}, .values = g};
    in.gradients[1] = (tfps_wire_tensor){.range = {200, 220}, .values = g + 10};
    in.gradients[2] = (tfps_wire_tensor){.range = {1000, 1010}, .values = g + 30};
    tfps_wire_register_req rq = {.task_type = "worker", .task_index = 1, .input = 784, .h1 = 300, .h2 = 100,
                                 .classes = 10, .layout_digest = ~0ull, .shard_strategy = "balanced", .seed = 1,
                                 .learning_rate = 0.1};
    tfps_buf b[2] = {{0}, {0}};
    CU_ASSERT_FATAL(tfps_wire_pack_push_req(&in, &b[0]) == TFPS_OK);
    CU_ASSERT_FATAL(tfps_wire_pack_register_req(&rq, &b[1]) == TFPS_OK);
    for (int m = 0; m < 2; m++) {
        int push_fails = 0;
        for (size_t n = 0; n <= b[m].len; n++) {   // every prefix
            uint8_t *d = malloc(n ? n : 1);
            memcpy(d, b[m].data, n);
            unpack_all(d, n);
            if (m == 0) {
                static tfps_wire_push_req out;
                void *own;
                char err[TFPS_ERR_LEN];
                if (tfps_wire_unpack_push_req(d, n, &out, &own, err, sizeof(err)) == TFPS_OK)
                    tfps_wire_release(own);
                else
                    push_fails++;
            }
            free(d);
        }
        if (m == 0) CU_ASSERT(push_fails > (int)b[0].len / 2);   // most cuts land inside a field
        uint8_t *d = malloc(b[m].len);
        for (int it = 0; it < 3000; it++) {   // 1 to 3 random bit flips
            memcpy(d, b[m].data, b[m].len);
            int flips = 1 + (int)(rnd() % 3);
            for (int f = 0; f < flips; f++) d[rnd() % b[m].len] ^= (uint8_t)(1u << (rnd() % 8));
            unpack_all(d, b[m].len);
        }
        free(d);
        tfps_buf_free(&b[m]);
    }
    free(g);
}

/* Sessions travel as 16 bytes (absent when none) and come back equal; a
 * session of any other length and a job secret over the limit are refused;
 * the job secret round-trips byte for byte (NUL included). */
/* ---- bf16 / fp16 on the wire (--wire-dtype) ---- */

/* References by value, in float64, independent of wire.c's bit tricks. */
static double ref_fp16_val(uint16_t h) {
    const int e = (h >> 10) & 31, m = h & 1023;
    const double v = e == 0 ? ldexp(m, -24) : e == 31 ? (m ? NAN : INFINITY) : ldexp(1024 + m, e - 25);
    return (h & 0x8000) ? -v : v;
}
static double ref_bf16_val(uint16_t h) {
    const uint32_t u = (uint32_t)h << 16;
    float f;
    memcpy(&f, &u, 4);
    return f;
}
/* The nearest of the finite codes [0, maxcode] of a monotonic format to |x|,
 * ties to the even code; beyond the largest: the largest (saturation). */
static uint16_t ref_nearest(double x, double (*val)(uint16_t), uint16_t maxcode) {
    if (x >= val(maxcode)) return maxcode;
    uint16_t lo = 0, hi = maxcode;   // val(lo) <= x < val(hi)
    while (hi - lo > 1) {
        const uint16_t mid = (uint16_t)((lo + hi) / 2);
        if (val(mid) <= x) lo = mid;
        else hi = mid;
    }
    const double dl = x - val(lo), dh = val(hi) - x;
    return dl < dh ? lo : dh < dl ? hi : (lo & 1) ? hi : lo;
}
static uint16_t ref_encode(int dtype, float f) {
    const uint16_t sign = signbit(f) ? 0x8000 : 0, inf = dtype == TFPS_DTYPE_BF16 ? 0x7f80 : 0x7c00;
    if (isinf(f)) return sign | inf;
    return sign | ref_nearest(fabs((double)f), dtype == TFPS_DTYPE_BF16 ? ref_bf16_val : ref_fp16_val,
                              (uint16_t)(inf - 1));
}
static float dec1(int dtype, uint16_t h) {
    float f;
    tfps_wire_decode(dtype, (const uint8_t *)&h, &f, 1);
    return f;
}

static void test_dtype_numbers(void) {
    // decoding: every one of the 65,536 codes of each format, exactly
    int bad = 0;
    for (uint32_t h = 0; h <= 0xffff; h++) {
        const double f16 = ref_fp16_val((uint16_t)h), b16 = ref_bf16_val((uint16_t)h);
        const float d16 = dec1(TFPS_DTYPE_FP16, (uint16_t)h), db16 = dec1(TFPS_DTYPE_BF16, (uint16_t)h);
        if (isnan(f16) ? !isnan(d16) : (double)d16 != f16 || !signbit(d16) != !signbit(f16)) bad++;
        if (isnan(b16) ? !isnan(db16) : (double)db16 != b16) bad++;
    }
    CU_ASSERT_EQUAL(bad, 0);
    // encoding: known values, then 300,000 random floats of every magnitude against the float64 reference
    const struct { float f; uint16_t bf16, fp16; } known[] = {
        {1.0f, 0x3f80, 0x3c00},          {-2.0f, 0xc000, 0xc000},     {0.0f, 0x0000, 0x0000},
        {-0.0f, 0x8000, 0x8000},         {65504.0f, 0x4780, 0x7bff},  {1e6f, 0x4974, 0x7bff},
        {-1e6f, 0xc974, 0xfbff},         {65519.0f, 0x4780, 0x7bff},  {65520.0f, 0x4780, 0x7bff},
        {5.9604645e-8f, 0x3380, 0x0001}, {2.9802322e-8f, 0x3300, 0x0000},   // 2^-24: the least fp16; 2^-25 ties to 0
        {1.00390625f, 0x3f80, 0x3c04},   // 1 + 2^-8: a bf16 tie, to even (down)
        {1.01171875f, 0x3f82, 0x3c0c},   // 1 + 3 * 2^-8: a bf16 tie, to even (up)
        {3.4028235e38f, 0x7f7f, 0x7bff}, // FLT_MAX: finite stays finite
        {INFINITY, 0x7f80, 0x7c00},      {-INFINITY, 0xff80, 0xfc00},
    };
    for (size_t i = 0; i < sizeof(known) / sizeof(known[0]); i++) {
        uint16_t b, h;
        tfps_wire_encode(TFPS_DTYPE_BF16, &known[i].f, &b, 1);
        tfps_wire_encode(TFPS_DTYPE_FP16, &known[i].f, &h, 1);
        if (b != known[i].bf16 || h != known[i].fp16)
            printf("\n  %.9g: bf16 %04x (want %04x), fp16 %04x (want %04x)", (double)known[i].f, b, known[i].bf16, h,
                   known[i].fp16);
        CU_ASSERT(b == known[i].bf16 && h == known[i].fp16);
    }
    const float nan = NAN;
    uint16_t hb, hh;
    tfps_wire_encode(TFPS_DTYPE_BF16, &nan, &hb, 1);
    tfps_wire_encode(TFPS_DTYPE_FP16, &nan, &hh, 1);
    CU_ASSERT(isnan(dec1(TFPS_DTYPE_BF16, hb)) && isnan(dec1(TFPS_DTYPE_FP16, hh)));
    enum { N = 300000 };
    float *x = malloc(N * sizeof(float));
    uint16_t *out = malloc(N * sizeof(uint16_t));
    CU_ASSERT_FATAL(x && out);
    for (int i = 0; i < N; i++) {
        const uint64_t r = rnd();
        uint32_t u = (uint32_t)r;
        if (i % 3 == 1) u = (u & 0x80000000u) | (0x33000000u + (uint32_t)(r >> 32) % 0x15000000u);   // 2^-25 .. 2^17
        if (i % 3 == 2) u = (u & 0x80000000u) | (0x3f800000u + (uint32_t)(r >> 40));   // [1, 2): mantissa ties
        if ((u & 0x7f800000u) == 0x7f800000u) u &= 0xff7fffffu;   // no NaN (checked above)
        memcpy(&x[i], &u, 4);
    }
    for (int dt = TFPS_DTYPE_BF16; dt <= TFPS_DTYPE_FP16; dt++) {
        tfps_wire_encode(dt, x, out, N);
        int wrong = 0;
        for (int i = 0; i < N; i++)
            if (out[i] != ref_encode(dt, x[i]) && wrong++ < 3)
                printf("\n  %s of %a: %04x, reference %04x", tfps_wire_dtype_name(dt), (double)x[i], out[i],
                       ref_encode(dt, x[i]));
        CU_ASSERT_EQUAL(wrong, 0);
    }
    // error feedback: what was sent plus the residual is what was given (float64 sums), and each residual is at
    // most half a unit in the last place of what was sent
    enum { M = 1000, STEPS = 200 };
    for (int dt = TFPS_DTYPE_BF16; dt <= TFPS_DTYPE_FP16; dt++) {
        float g[M], res[M] = {0};
        uint16_t q[M];
        double given = 0, sent = 0;
        int over = 0;
        for (int s = 0; s < STEPS; s++) {
            for (int i = 0; i < M; i++) {
                g[i] = (float)((double)(rnd() >> 11) / 9007199254740992.0 - 0.5) * 1e-2f;
                given += g[i];
            }
            tfps_wire_encode_ef(dt, g, res, q, M);
            for (int i = 0; i < M; i++) {
                const float d = dec1(dt, q[i]);
                sent += d;
                const double ulp = dt == TFPS_DTYPE_BF16 ? ldexp(fabs((double)d), -7) : ldexp(fabs((double)d), -10);
                if (fabs((double)res[i]) > ulp / 2 + ldexp(1, -24)) over++;
            }
        }
        double left = 0;
        for (int i = 0; i < M; i++) left += res[i];
        CU_ASSERT(fabs(sent + left - given) <= 1e-6 * (double)M * STEPS * 1e-2);
        CU_ASSERT_EQUAL(over, 0);
        // without feedback the rounding error of a constant small gradient piles up; with it, it does not
        float c = 1.0009765625f * 1e-3f, r0 = 0.0f, w_ef = 0.0f, w_plain = 0.0f;   // not a bf16 value
        for (int s = 0; s < 1000; s++) {
            uint16_t e1, e2;
            tfps_wire_encode_ef(dt, &c, &r0, &e1, 1);
            tfps_wire_encode(dt, &c, &e2, 1);
            w_ef += dec1(dt, e1);
            w_plain += dec1(dt, e2);
        }
        CU_ASSERT(fabs((double)w_ef - 1000.0 * c) < 1e-5);
        if (dt == TFPS_DTYPE_BF16) CU_ASSERT(fabs((double)w_plain - 1000.0 * c) > 1e-4);
    }
    free(x);
    free(out);
}

static void test_dtype_messages(void) {
    tfps_buf b = {0};
    void *own = NULL;
    char err[TFPS_ERR_LEN];
    uint16_t h[300];
    for (int i = 0; i < 300; i++) h[i] = (uint16_t)(0x3c00 + i);
    float f[200];
    for (int i = 0; i < 200; i++) f[i] = (float)i * 0.25f;
    // a push of three tensors: bf16, fp32, fp16
    static tfps_wire_push_req in, out;
    memset(&in, 0, sizeof(in));
    in.worker_id = 3;
    in.ntensors = 3;
    in.gradients[0] = (tfps_wire_tensor){.range = {0, 100}, .dtype = TFPS_DTYPE_BF16, .half = h};
    in.gradients[1] = (tfps_wire_tensor){.range = {100, 300}, .values = f};
    in.gradients[2] = (tfps_wire_tensor){.range = {300, 500}, .dtype = TFPS_DTYPE_FP16, .half = h + 100};
    CU_ASSERT_FATAL(tfps_wire_pack_push_req(&in, &b) == TFPS_OK);
    CU_ASSERT_FATAL(tfps_wire_unpack_push_req(b.data, b.len, &out, &own, err, sizeof(err)) == TFPS_OK);
    CU_ASSERT(out.ntensors == 3 && out.gradients[0].dtype == TFPS_DTYPE_BF16 && out.gradients[1].dtype == 0 &&
              out.gradients[2].dtype == TFPS_DTYPE_FP16);
    CU_ASSERT(out.gradients[0].values == NULL && memcmp(out.gradients[0].half, h, 200) == 0);
    CU_ASSERT(out.gradients[1].half == NULL && memcmp(out.gradients[1].values, f, 800) == 0);
    CU_ASSERT(memcmp(out.gradients[2].half, h + 100, 400) == 0);
    tfps_wire_release(own);
    // the bytes: 2 per element (100 bf16 + 200 fp32 + 200 fp16 = 1,400) and a little framing
    if (b.len <= 1400 || b.len >= 1460) printf("\n  push of 1,400 value bytes: %zu bytes", b.len);
    CU_ASSERT(b.len > 1400 && b.len < 1460);
    // field numbers: Tensor.dtype 3, PullRequest.dtype 6
    enc e = {0}, t = {0};
    put_range(&t, 1, 10, 12);
    put_len(&t, 2, h, 4);
    put_u(&t, 3, 2);
    put_len(&e, 6, t.b, t.n);
    CU_ASSERT_FATAL(tfps_wire_unpack_push_req(e.b, e.n, &out, &own, err, sizeof(err)) == TFPS_OK);
    CU_ASSERT(out.ntensors == 1 && out.gradients[0].dtype == TFPS_DTYPE_FP16 && out.gradients[0].half[1] == h[1]);
    tfps_wire_release(own);
    free(e.b);
    e = (enc){0};
    put_u(&e, 1, 4);
    put_u(&e, 6, 1);
    static tfps_wire_pull_req pq;
    CU_ASSERT_FATAL(tfps_wire_unpack_pull_req(e.b, e.n, &pq, &own, err, sizeof(err)) == TFPS_OK);
    CU_ASSERT(pq.worker_id == 4 && pq.dtype == TFPS_DTYPE_BF16);
    tfps_wire_release(own);
    pq.dtype = TFPS_DTYPE_FP16;
    CU_ASSERT_FATAL(tfps_wire_pack_pull_req(&pq, &b) == TFPS_OK);
    CU_ASSERT_FATAL(tfps_wire_unpack_pull_req(b.data, b.len, &pq, &own, err, sizeof(err)) == TFPS_OK);
    CU_ASSERT(pq.dtype == TFPS_DTYPE_FP16);
    tfps_wire_release(own);
    // a PullRequest asking for a format there is not
    free(e.b);
    e = (enc){0};
    put_u(&e, 6, 3);
    CU_ASSERT(tfps_wire_unpack_pull_req(e.b, e.n, &pq, &own, err, sizeof(err)) == TFPS_ERR);
    ASSERT_ERR_HAS(err, "PullRequest.dtype 3: expected FP32 (0), BF16 (1) or FP16 (2)");
    // a pull answer in bf16: protobuf-c and the zero-copy reader agree; the bytes are the codes
    static tfps_wire_pull_resp pr, pr2;
    static tfps_wire_pull_view v;
    memset(&pr, 0, sizeof(pr));
    pr.version = 5;
    pr.ntensors = 2;
    pr.tensors[0] = (tfps_wire_tensor){.range = {0, 300}, .dtype = TFPS_DTYPE_BF16, .half = h};
    pr.tensors[1] = (tfps_wire_tensor){.range = {300, 400}, .values = f};
    CU_ASSERT_FATAL(tfps_wire_pack_pull_resp(&pr, &b) == TFPS_OK);
    CU_ASSERT_FATAL(tfps_wire_view_pull_resp(b.data, b.len, &v, err, sizeof(err)) == TFPS_OK);
    CU_ASSERT(v.ntensors == 2 && v.tensors[0].dtype == TFPS_DTYPE_BF16 && v.tensors[1].dtype == TFPS_DTYPE_FP32);
    CU_ASSERT(memcmp(v.tensors[0].bytes, h, 600) == 0 && memcmp(v.tensors[1].bytes, f, 400) == 0);
    CU_ASSERT_FATAL(tfps_wire_unpack_pull_resp(b.data, b.len, &pr2, &own, err, sizeof(err)) == TFPS_OK);
    CU_ASSERT(pr2.tensors[0].dtype == TFPS_DTYPE_BF16 && memcmp(pr2.tensors[0].half, h, 600) == 0);
    tfps_wire_release(own);
    // refused by both readers: a dtype there is not; bf16 values of fp32's length; fp32 of bf16's
    const struct { int dtype; size_t nbytes; const char *want; } bad[] = {
        {3, 4, "dtype 3: expected FP32 (0), BF16 (1) or FP16 (2)"},
        {TFPS_DTYPE_BF16, 8, "8 bytes of bf16 values for range [10, 12): expected 4"},
        {TFPS_DTYPE_FP16, 2, "2 bytes of fp16 values for range [10, 12): expected 4"},
        {TFPS_DTYPE_FP32, 4, "4 bytes of fp32 values for range [10, 12): expected 8"},
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        free(e.b);
        free(t.b);
        e = (enc){0};
        t = (enc){0};
        put_range(&t, 1, 10, 12);
        put_len(&t, 2, f, bad[i].nbytes);
        if (bad[i].dtype) put_u(&t, 3, (uint64_t)bad[i].dtype);
        put_len(&e, 2, t.b, t.n);
        CU_ASSERT(tfps_wire_unpack_pull_resp(e.b, e.n, &pr2, &own, err, sizeof(err)) == TFPS_ERR);
        ASSERT_ERR_HAS(err, bad[i].want);
        CU_ASSERT(tfps_wire_view_pull_resp(e.b, e.n, &v, err, sizeof(err)) == TFPS_ERR);
        ASSERT_ERR_HAS(err, bad[i].want);
    }
    free(e.b);
    free(t.b);
    tfps_buf_free(&b);
}

static void test_session_and_secret(void) {
    tfps_buf b = {0};
    void *own = NULL;
    char err[TFPS_ERR_LEN] = "";
    tfps_session s = {{0}};
    for (int i = 0; i < TFPS_SESSION_LEN; i++) s.b[i] = (uint8_t)(0xA0 + i);
    CU_ASSERT_TRUE(tfps_session_is_set(&s));
    {
        tfps_wire_push_req in = {.worker_id = 2, .session = s}, out;
        CU_ASSERT_FATAL(tfps_wire_pack_push_req(&in, &b) == TFPS_OK);
        CU_ASSERT_FATAL(tfps_wire_unpack_push_req(b.data, b.len, &out, &own, err, sizeof(err)) == TFPS_OK);
        CU_ASSERT_TRUE(tfps_session_equal(&out.session, &s));
        tfps_wire_release(own);
        const size_t with = b.len;
        in.session = (tfps_session){{0}};   // none: not on the wire at all
        CU_ASSERT_FATAL(tfps_wire_pack_push_req(&in, &b) == TFPS_OK);
        CU_ASSERT_EQUAL(with - b.len, 2 + TFPS_SESSION_LEN);
        CU_ASSERT_FATAL(tfps_wire_unpack_push_req(b.data, b.len, &out, &own, err, sizeof(err)) == TFPS_OK);
        CU_ASSERT_FALSE(tfps_session_is_set(&out.session));
        tfps_wire_release(own);
    }
    {
        const uint8_t secret[5] = {'a', 0, 'b', '\n', 0xff};
        tfps_wire_register_req in = {.task_type = "worker", .job_secret = secret, .job_secret_len = 5, .session = s},
                               out;
        CU_ASSERT_FATAL(tfps_wire_pack_register_req(&in, &b) == TFPS_OK);
        CU_ASSERT_FATAL(tfps_wire_unpack_register_req(b.data, b.len, &out, &own, err, sizeof(err)) == TFPS_OK);
        CU_ASSERT_EQUAL(out.job_secret_len, 5);
        CU_ASSERT(out.job_secret && memcmp(out.job_secret, secret, 5) == 0);
        CU_ASSERT_TRUE(tfps_secret_equal(out.job_secret, out.job_secret_len, secret, 5));
        CU_ASSERT_FALSE(tfps_secret_equal(out.job_secret, out.job_secret_len, secret, 4));
        CU_ASSERT_TRUE(tfps_session_equal(&out.session, &s));
        tfps_wire_release(own);
        tfps_wire_register_resp r = {.worker_id = 1, .session = s}, ro;
        CU_ASSERT_FATAL(tfps_wire_pack_register_resp(&r, &b) == TFPS_OK);
        CU_ASSERT_FATAL(tfps_wire_unpack_register_resp(b.data, b.len, &ro, &own, err, sizeof(err)) == TFPS_OK);
        CU_ASSERT_TRUE(tfps_session_equal(&ro.session, &s));
        tfps_wire_release(own);
    }
    {
        tfps_wire_shutdown_req in = {.reason = "r", .worker_id = 1, .session = s}, out;
        CU_ASSERT_FATAL(tfps_wire_pack_shutdown_req(&in, &b) == TFPS_OK);
        CU_ASSERT_FATAL(tfps_wire_unpack_shutdown_req(b.data, b.len, &out, &own, err, sizeof(err)) == TFPS_OK);
        CU_ASSERT_EQUAL(out.worker_id, 1);
        CU_ASSERT_TRUE(tfps_session_equal(&out.session, &s));
        tfps_wire_release(own);
    }
    // HeartbeatRequest {worker_id 1, session: 3 bytes}: refused, naming the field
    const uint8_t short_session[] = {0x08, 0x01, 0x2a, 0x03, 1, 2, 3};
    tfps_wire_heartbeat_req hq;
    own = NULL;
    CU_ASSERT_EQUAL(tfps_wire_unpack_heartbeat_req(short_session, sizeof(short_session), &hq, &own, err, sizeof(err)),
                    TFPS_ERR);
    CU_ASSERT_PTR_NULL(own);
    CU_ASSERT_PTR_NOT_NULL(strstr(err, "HeartbeatRequest.session: 3 bytes"));
    // RegisterRequest {job_secret (field 21): 1025 bytes}: refused
    uint8_t big[1100];
    memset(big, 'x', sizeof(big));
    big[0] = 0xaa;   // field 21, wire type 2: (21 << 3) | 2 = 170 = 0xaa 0x01
    big[1] = 0x01;
    big[2] = 0x81;   // length 1025 = 0x81 0x08
    big[3] = 0x08;
    tfps_wire_register_req rq;
    CU_ASSERT_EQUAL(tfps_wire_unpack_register_req(big, 4 + 1025, &rq, &own, err, sizeof(err)), TFPS_ERR);
    CU_ASSERT_PTR_NOT_NULL(strstr(err, "job_secret: 1025 bytes"));
    CU_ASSERT_FATAL(tfps_wire_unpack_register_req(big, 4 + 1025 - 1, &rq, &own, err, sizeof(err)) == TFPS_ERR);
    big[2] = 0x80;   // length 1024: accepted
    CU_ASSERT_FATAL(tfps_wire_unpack_register_req(big, 4 + 1024, &rq, &own, err, sizeof(err)) == TFPS_OK);
    CU_ASSERT_EQUAL(rq.job_secret_len, 1024);
    tfps_wire_release(own);
    tfps_buf_free(&b);
}

int main(void) {
    if (CU_initialize_registry() != CUE_SUCCESS) return 1;
    CU_pSuite s = CU_add_suite("wire", NULL, NULL);
    CU_add_test(s, "RegisterRequest round trip and field numbers", test_register);
    CU_add_test(s, "RegisterResponse round trip and field numbers", test_register_resp);
    CU_add_test(s, "sessions and the job secret on the wire", test_session_and_secret);
    CU_add_test(s, "PullRequest with 64 ranges, field numbers", test_pull_req);
    CU_add_test(s, "PullResponse, one 266,610-float tensor, aligned and owned", test_pull_resp_big);
    CU_add_test(s, "the zero-copy reader of pull answers: in place, as protobuf-c, malformed refused", test_pull_view);
    CU_add_test(s, "pull answers in gRPC's pieces: any split reads as the whole, values across cuts",
                test_pull_view_segments);
    CU_add_test(s, "PullResponse, 7 tensors including an empty one", test_pull_resp_many);
    CU_add_test(s, "PushRequest round trip and field numbers", test_push_req);
    CU_add_test(s, "PushRequest: values 4-byte aligned in the request, the zero-copy reader as protobuf-c",
                test_push_view);
    CU_add_test(s, "bf16 and fp16: every code decoded, rounding to nearest even, saturation, error feedback",
                test_dtype_numbers);
    CU_add_test(s, "bf16 and fp16 tensors and the pull's dtype on the wire; wrong formats refused", test_dtype_messages);
    CU_add_test(s, "Push/Heartbeat/Status/Shutdown round trips", test_small_messages);
    CU_add_test(s, "health: SERVING is 08 01, request service name", test_health);
    CU_add_test(s, "empty buffer: every message at its defaults", test_empty_is_defaults);
    CU_add_test(s, "tfps_buf reuse: big, small, big", test_buffer_reuse);
    CU_add_test(s, "bad tensors: lengths, ranges, counts, wire types", test_bad_tensors);
    CU_add_test(s, "fuzz: 20k random buffers through every unpack", test_fuzz_random);
    CU_add_test(s, "fuzz: truncations and bit flips of valid messages", test_fuzz_truncate_and_flip);
    CU_basic_set_mode(CU_BRM_VERBOSE);
    CU_basic_run_tests();
    int failed = (int)(CU_get_number_of_tests_failed() + CU_get_number_of_suites_failed());
    CU_cleanup_registry();
    return failed;
}
