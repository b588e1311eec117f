/* wire.c -- the tfps messages <-> protobuf-c (see wire.h). The only file of
 * tfps that calls protobuf-c, with tfevents.c for TensorBoard's event files
 * and onnx.c for the ONNX file format.
 *
 * Packing builds the protobuf-c structs on the stack, pointing into the
 * caller's memory (tensor values are never copied here), and packs them
 * straight into the caller's tfps_buf.
 *
 * Unpacking lets protobuf-c allocate the message (default allocator, i.e.
 * malloc) and hands it out as the owner: a small malloc'd wire_owner holding
 * the ProtobufCMessage *, freed generically by tfps_wire_release. The structs
 * of wire.h then point into it. protobuf-c 1.4 copies every `bytes` field into
 * its own do_alloc(len) block (parse_required_member, PROTOBUF_C_TYPE_BYTES),
 * so with the default allocator tensor values sit at the start of a malloc
 * block: aligned for any type, hence for float, whatever the alignment of the
 * received bytes. That is asserted, not re-copied. */
#include "wire.h"

#include "health.pb-c.h"
#include "tfps.h"
#include "tfps.pb-c.h"

#include <assert.h>
#include <limits.h>
#include <stdalign.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* Tensor values are the host's floats, reinterpreted in place as the wire's
 * little-endian IEEE fp32: a big-endian host would need byte swaps here. */
_Static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__, "tfps wire.c assumes a little-endian host");
_Static_assert(sizeof(float) == 4, "tfps wire.c assumes 4-byte IEEE fp32 floats");
_Static_assert(TFPS_WIRE_MAX_TENSORS > 0 && TFPS_WIRE_MAX_TENSORS < 1 << 20, "tensor count must fit an int");

typedef struct {
    ProtobufCMessage *msg;   /* from protobuf_c_message_unpack(..., NULL allocator, ...) */
} wire_owner;

/* Where an empty tensor's values point, so callers may memcpy 0 bytes from it. */
static const float wire_no_floats[1];

_Static_assert((int)TFPS__V1__DTYPE__FP32 == TFPS_DTYPE_FP32 && (int)TFPS__V1__DTYPE__BF16 == TFPS_DTYPE_BF16 &&
                   (int)TFPS__V1__DTYPE__FP16 == TFPS_DTYPE_FP16,
               "tfps_wire_dtype must follow tfps.proto's DType");

void tfps_buf_free(tfps_buf *b) {
    if (!b) return;
    free(b->data);
    b->data = NULL;
    b->len = b->cap = 0;
}

void tfps_wire_release(void *owner) {
    wire_owner *o = owner;
    if (!o) return;
    protobuf_c_message_free_unpacked(o->msg, NULL);
    free(o);
}

/* ---- packing ---- */

/* out can hold n bytes (its contents are not kept). */
static int reserve(tfps_buf *out, size_t n) {
    if (n > out->cap) {
        uint8_t *p = realloc(out->data, n);
        if (!p) return TFPS_ERR;   /* out untouched */
        out->data = p;
        out->cap = n;
    }
    return TFPS_OK;
}

static int pack_msg(const ProtobufCMessage *msg, tfps_buf *out) {
    size_t n = protobuf_c_message_get_packed_size(msg);
    if (reserve(out, n) != TFPS_OK) return TFPS_ERR;
    size_t w = n ? protobuf_c_message_pack(msg, out->data) : 0;
    assert(w == n);
    out->len = w;
    return TFPS_OK;
}

/* A tensor of the caller (its range and values) as protobuf-c structs that
 * point into it. Ranges and counts come from our own code: asserted. */
static void tensor_to_pb(const tfps_wire_tensor *t, Tfps__V1__Tensor *pt, Tfps__V1__Range *pr) {
    assert(t->range.end >= t->range.begin);
    assert(t->dtype >= 0 && t->dtype < TFPS_DTYPE_COUNT);
    uint64_t n = t->range.end - t->range.begin;
    assert(n <= SIZE_MAX / sizeof(float));
    const void *v = t->dtype == TFPS_DTYPE_FP32 ? (const void *)t->values : (const void *)t->half;
    assert(v || n == 0);
    tfps__v1__range__init(pr);
    pr->begin = t->range.begin;
    pr->end = t->range.end;
    tfps__v1__tensor__init(pt);
    pt->range = pr;
    pt->values.len = (size_t)n * tfps_wire_dtype_size(t->dtype);
    pt->values.data = (uint8_t *)(v ? v : (const void *)wire_no_floats);
    pt->dtype = (Tfps__V1__DType)t->dtype;
}

/* Room for one repeated Tensor field on the stack. */
typedef struct {
    Tfps__V1__Range ranges[TFPS_WIRE_MAX_TENSORS];
    Tfps__V1__Tensor tensors[TFPS_WIRE_MAX_TENSORS];
    Tfps__V1__Tensor *ptrs[TFPS_WIRE_MAX_TENSORS];
} tensor_slots;

static Tfps__V1__Tensor **tensors_to_pb(const tfps_wire_tensor *ts, int n, tensor_slots *s) {
    assert(n >= 0 && n <= TFPS_WIRE_MAX_TENSORS);
    for (int i = 0; i < n; i++) {
        tensor_to_pb(&ts[i], &s->tensors[i], &s->ranges[i]);
        s->ptrs[i] = &s->tensors[i];
    }
    return s->ptrs;
}

int tfps_session_is_set(const tfps_session *s) {
    uint8_t any = 0;
    for (int i = 0; i < TFPS_SESSION_LEN; i++) any |= s->b[i];
    return any != 0;
}

int tfps_session_equal(const tfps_session *a, const tfps_session *b) {
    uint8_t d = 0;
    for (int i = 0; i < TFPS_SESSION_LEN; i++) d |= (uint8_t)(a->b[i] ^ b->b[i]);
    return d == 0;
}

int tfps_secret_equal(const uint8_t *a, size_t alen, const uint8_t *b, size_t blen) {
    // the time depends on the lengths only, not on where the bytes differ
    uint8_t d = alen != blen;
    for (size_t i = 0; i < alen && i < blen; i++) d |= (uint8_t)(a[i] ^ b[i]);
    return d == 0;
}

/* A session as `bytes`: absent (empty) when all zero. Points into s. */
static ProtobufCBinaryData session_to_pb(const tfps_session *s) {
    ProtobufCBinaryData d = {0, NULL};
    if (tfps_session_is_set(s)) {
        d.len = TFPS_SESSION_LEN;
        d.data = (uint8_t *)s->b;   /* protobuf-c only reads it */
    }
    return d;
}

static char *str_to_pb(const char *s) {
    return (char *)(s ? s : "");   /* protobuf-c only reads it */
}

int tfps_wire_pack_register_req(const tfps_wire_register_req *m, tfps_buf *out) {
    Tfps__V1__RegisterRequest p = TFPS__V1__REGISTER_REQUEST__INIT;
    p.task_type = str_to_pb(m->task_type);
    p.task_index = m->task_index;
    p.worker_rank = m->worker_rank;
    p.num_workers = m->num_workers;
    p.num_ps = m->num_ps;
    p.input = m->input;
    p.h1 = m->h1;
    p.h2 = m->h2;
    p.classes = m->classes;
    p.layout_digest = m->layout_digest;
    p.shard_plan_digest = m->shard_plan_digest;
    p.shard_strategy = str_to_pb(m->shard_strategy);
    p.seed = m->seed;
    p.learning_rate = m->learning_rate;
    p.consistency = str_to_pb(m->consistency);
    p.replicas_to_aggregate = m->replicas_to_aggregate;
    p.staleness = m->staleness;
    p.optimizer = str_to_pb(m->optimizer);
    p.optimizer_digest = m->optimizer_digest;
    p.clock = m->clock;
    if (m->job_secret_len) {
        assert(m->job_secret && m->job_secret_len <= TFPS_WIRE_MAX_SECRET);
        p.job_secret.len = m->job_secret_len;
        p.job_secret.data = (uint8_t *)m->job_secret;   /* only read */
    }
    p.session = session_to_pb(&m->session);
    p.instance = session_to_pb(&m->instance);
    return pack_msg(&p.base, out);
}

int tfps_wire_pack_register_resp(const tfps_wire_register_resp *m, tfps_buf *out) {
    Tfps__V1__RegisterResponse p = TFPS__V1__REGISTER_RESPONSE__INIT;
    p.worker_id = m->worker_id;
    p.version = m->version;
    p.ps_index = m->ps_index;
    p.clock = m->clock;
    p.restored_step = m->restored_step;
    p.session = session_to_pb(&m->session);
    return pack_msg(&p.base, out);
}

int tfps_wire_pack_pull_req(const tfps_wire_pull_req *m, tfps_buf *out) {
    assert(m->nranges >= 0 && m->nranges <= TFPS_WIRE_MAX_TENSORS);
    Tfps__V1__Range ranges[TFPS_WIRE_MAX_TENSORS];
    Tfps__V1__Range *ptrs[TFPS_WIRE_MAX_TENSORS];
    for (int i = 0; i < m->nranges; i++) {
        assert(m->ranges[i].end >= m->ranges[i].begin);
        tfps__v1__range__init(&ranges[i]);
        ranges[i].begin = m->ranges[i].begin;
        ranges[i].end = m->ranges[i].end;
        ptrs[i] = &ranges[i];
    }
    Tfps__V1__PullRequest p = TFPS__V1__PULL_REQUEST__INIT;
    p.worker_id = m->worker_id;
    p.min_version = m->min_version;
    p.clock = m->clock;
    p.session = session_to_pb(&m->session);
    assert(m->dtype >= 0 && m->dtype < TFPS_DTYPE_COUNT);
    p.dtype = (Tfps__V1__DType)m->dtype;
    p.n_ranges = (size_t)m->nranges;
    p.ranges = ptrs;
    return pack_msg(&p.base, out);
}

/* Evaluation: only a message with count > 0 goes on the wire. pb must
 * outlive the packing (the caller's stack). */
static Tfps__V1__Evaluation *eval_to_pb(const tfps_wire_eval *e, Tfps__V1__Evaluation *pb) {
    if (e->count == 0) return NULL;
    tfps__v1__evaluation__init(pb);
    pb->count = e->count;
    pb->step = e->step;
    pb->accuracy = e->accuracy;
    pb->loss = e->loss;
    return pb;
}

static void eval_from_pb(const Tfps__V1__Evaluation *pb, tfps_wire_eval *e) {
    memset(e, 0, sizeof(*e));
    if (!pb || pb->count == 0) return;
    e->count = pb->count;
    e->step = pb->step;
    e->accuracy = pb->accuracy;
    e->loss = pb->loss;
}

int tfps_wire_pack_pull_resp(const tfps_wire_pull_resp *m, tfps_buf *out) {
    tensor_slots s;
    Tfps__V1__PullResponse p = TFPS__V1__PULL_RESPONSE__INIT;
    Tfps__V1__Evaluation ev;
    p.version = m->version;
    p.held_s = m->held_s;
    p.examples = m->examples;
    p.eval = eval_to_pb(&m->eval, &ev);
    p.tensors = tensors_to_pb(m->tensors, m->ntensors, &s);
    p.n_tensors = (size_t)m->ntensors;
    if (!m->tail_len) return pack_msg(&p.base, out);
    // a PushPull's answer: the message, then the push's outcome (fields 16..18) right after it
    const size_t n = protobuf_c_message_get_packed_size(&p.base), total = n + m->tail_len;
    if (reserve(out, total) != TFPS_OK) return TFPS_ERR;
    size_t w = n ? protobuf_c_message_pack(&p.base, out->data) : 0;
    assert(w == n);
    (void)w;
    memcpy(out->data + n, m->tail, m->tail_len);
    out->len = total;
    return TFPS_OK;
}

/* tfps_wire_pack_push_req: with PushPull below (packed by hand, aligned). */

int tfps_wire_pack_push_resp(const tfps_wire_push_resp *m, tfps_buf *out) {
    Tfps__V1__PushResponse p = TFPS__V1__PUSH_RESPONSE__INIT;
    p.applied = m->applied != 0;
    p.version = m->version;
    p.nonfinite = m->nonfinite != 0;
    return pack_msg(&p.base, out);
}

int tfps_wire_pack_heartbeat_req(const tfps_wire_heartbeat_req *m, tfps_buf *out) {
    Tfps__V1__HeartbeatRequest p = TFPS__V1__HEARTBEAT_REQUEST__INIT;
    Tfps__V1__Evaluation ev;
    p.eval = eval_to_pb(&m->eval, &ev);
    p.worker_id = m->worker_id;
    p.step = m->step;
    p.examples = m->examples;
    p.done = m->done != 0;
    p.session = session_to_pb(&m->session);
    return pack_msg(&p.base, out);
}

int tfps_wire_pack_heartbeat_resp(const tfps_wire_heartbeat_resp *m, tfps_buf *out) {
    Tfps__V1__HeartbeatResponse p = TFPS__V1__HEARTBEAT_RESPONSE__INIT;
    p.version = m->version;
    p.workers_registered = m->workers_registered;
    p.workers_done = m->workers_done;
    p.shutting_down = m->shutting_down != 0;
    p.workers_dead = m->workers_dead;
    p.chief_done = m->chief_done != 0;
    return pack_msg(&p.base, out);
}

int tfps_wire_pack_status_req(tfps_buf *out) {
    Tfps__V1__StatusRequest p = TFPS__V1__STATUS_REQUEST__INIT;
    return pack_msg(&p.base, out);
}

int tfps_wire_pack_status_resp(const tfps_wire_status_resp *m, tfps_buf *out) {
    Tfps__V1__StatusResponse p = TFPS__V1__STATUS_RESPONSE__INIT;
    Tfps__V1__Evaluation ev;
    p.eval = eval_to_pb(&m->eval, &ev);
    p.version = m->version;
    p.applied = m->applied;
    p.refused = m->refused;
    p.bytes_in = m->bytes_in;
    p.bytes_out = m->bytes_out;
    p.uptime_s = m->uptime_s;
    p.ps_index = m->ps_index;
    p.workers_registered = m->workers_registered;
    p.workers_done = m->workers_done;
    p.examples = m->examples;
    p.consistency = str_to_pb(m->consistency);
    p.optimizer = str_to_pb(m->optimizer);
    p.dropped = m->dropped;
    p.wait_s = m->wait_s;
    p.max_lead = m->max_lead;
    p.held = m->held;
    p.aggregated = m->aggregated;
    p.workers_dead = m->workers_dead;
    p.checkpoints = m->checkpoints;
    p.last_checkpoint_step = m->last_checkpoint_step;
    p.restored_step = m->restored_step;
    p.checkpoint_pause_s = m->checkpoint_pause_s;
    p.unauthenticated = m->unauthenticated;
    p.nonfinite = m->nonfinite;
    return pack_msg(&p.base, out);
}

int tfps_wire_pack_shutdown_req(const tfps_wire_shutdown_req *m, tfps_buf *out) {
    Tfps__V1__ShutdownRequest p = TFPS__V1__SHUTDOWN_REQUEST__INIT;
    p.reason = str_to_pb(m->reason);
    p.failed = m->failed != 0;
    p.worker_id = m->worker_id;
    p.session = session_to_pb(&m->session);
    return pack_msg(&p.base, out);
}

int tfps_wire_pack_shutdown_resp(tfps_buf *out) {
    Tfps__V1__ShutdownResponse p = TFPS__V1__SHUTDOWN_RESPONSE__INIT;
    return pack_msg(&p.base, out);
}
int tfps_wire_pack_checkpoint_req(const tfps_wire_checkpoint_req *m, tfps_buf *out) {
    Tfps__V1__CheckpointRequest p = TFPS__V1__CHECKPOINT_REQUEST__INIT;
    p.worker_id = m->worker_id;
    p.step = m->step;
    p.version = m->version;
    p.session = session_to_pb(&m->session);
    return pack_msg(&p.base, out);
}
int tfps_wire_pack_checkpoint_resp(const tfps_wire_checkpoint_resp *m, tfps_buf *out) {
    Tfps__V1__CheckpointResponse p = TFPS__V1__CHECKPOINT_RESPONSE__INIT;
    p.ps_index = m->ps_index;
    p.version = m->version;
    p.bytes = m->bytes;
    p.crc = m->crc;
    p.pause_s = m->pause_s;
    p.write_s = m->write_s;
    return pack_msg(&p.base, out);
}

int tfps_wire_pack_health_resp(int serving, tfps_buf *out) {
    Grpc__Health__V1__HealthCheckResponse p = GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__INIT;
    p.status = serving ? GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__SERVING
                       : GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__NOT_SERVING;
    return pack_msg(&p.base, out);
}

/* ---- PushPull ---- */

/* A varint at p (at most 10 bytes); returns its length. */
static size_t put_varint(uint8_t *p, uint64_t v) {
    size_t n = 0;
    while (v >= 0x80) {
        p[n++] = (uint8_t)(v | 0x80);
        v >>= 7;
    }
    p[n++] = (uint8_t)v;
    return n;
}

/* ---- PushRequest, packed by hand ----
 * protobuf-c writes fields in number order, values (2) before anything that
 * could shift them; here each gradient is written as range, dtype, pad (a
 * filler of 0-3 bytes, Tensor.pad = 4), values, the pad chosen so that the
 * values start at a multiple of 4 bytes from the start of the buffer. The
 * bytes are a valid PushRequest that protobuf-c reads the same (test_wire). */

static size_t varint_len(uint64_t v) {
    size_t n = 1;
    while (v >= 0x80) {
        v >>= 7;
        n++;
    }
    return n;
}

static size_t range_size(tfps_wire_range r) {
    return (r.begin ? 1 + varint_len(r.begin) : 0) + (r.end ? 1 + varint_len(r.end) : 0);
}

static size_t tensor_values_bytes(const tfps_wire_tensor *t) {
    assert(t->range.end >= t->range.begin && t->dtype >= 0 && t->dtype < TFPS_DTYPE_COUNT);
    return (size_t)(t->range.end - t->range.begin) * tfps_wire_dtype_size(t->dtype);
}

/* Tensor t's body with a pad field of p bytes. */
static size_t tensor_body(const tfps_wire_tensor *t, size_t p) {
    const size_t rs = range_size(t->range), nb = tensor_values_bytes(t);
    return 1 + varint_len(rs) + rs + (t->dtype ? 2 : 0) + p + 1 + varint_len(nb) + nb;
}

/* The offset of t's first value byte from the field's tag, with pad p. */
static size_t tensor_values_at(const tfps_wire_tensor *t, size_t p) {
    const size_t rs = range_size(t->range), nb = tensor_values_bytes(t);
    return 1 + varint_len(tensor_body(t, p)) + 1 + varint_len(rs) + rs + (t->dtype ? 2 : 0) + p + 1 + varint_len(nb);
}

static size_t push_head_size(const tfps_wire_push_req *m) {
    uint32_t lbits;
    memcpy(&lbits, &m->loss, sizeof(lbits));
    return (m->worker_id ? 1 + varint_len(m->worker_id) : 0) +
           (m->base_version ? 1 + varint_len(m->base_version) : 0) + (m->step ? 1 + varint_len(m->step) : 0) +
           (lbits ? 5 : 0) + (m->batch_size ? 1 + varint_len(m->batch_size) : 0) +
           (tfps_session_is_set(&m->session) ? 2 + TFPS_SESSION_LEN : 0);
}

/* m's size packed at offset base of a buffer, at least min_total bytes (the
 * last gradient's pad grows to reach it); pads[i]: gradient i's pad field. */
static size_t push_layout(const tfps_wire_push_req *m, size_t base, size_t min_total, uint8_t *pads) {
    assert(m->ntensors >= 0 && m->ntensors <= TFPS_WIRE_MAX_TENSORS);
    size_t at = push_head_size(m);
    for (int i = 0; i < m->ntensors; i++) {
        const tfps_wire_tensor *t = &m->gradients[i];
        const int last = i == m->ntensors - 1;
        // the pad changes the tensor's length, whose varint may then grow a byte: try each size
        pads[i] = 0;
        for (size_t p = 0; p <= 129; p++) {   // up to 127 filler bytes: the pad's length stays one byte
            if (p == 1) continue;   // a pad field is at least its tag and length
            const size_t end = at + 1 + varint_len(tensor_body(t, p)) + tensor_body(t, p);
            if ((base + at + tensor_values_at(t, p)) % 4 == 0 && (!last || end >= min_total)) {
                pads[i] = (uint8_t)p;
                break;
            }
        }
        at += 1 + varint_len(tensor_body(t, pads[i])) + tensor_body(t, pads[i]);
    }
    return at;
}

static uint8_t *put_tag_varint(uint8_t *w, uint8_t tag, uint64_t v) {
    *w++ = tag;
    return w + put_varint(w, v);
}

static void push_write(const tfps_wire_push_req *m, const uint8_t *pads, uint8_t *w) {
    uint32_t lbits;
    memcpy(&lbits, &m->loss, sizeof(lbits));
    if (m->worker_id) w = put_tag_varint(w, 0x08, m->worker_id);
    if (m->base_version) w = put_tag_varint(w, 0x10, m->base_version);
    if (m->step) w = put_tag_varint(w, 0x18, m->step);
    if (lbits) {
        *w++ = 0x25;   // field 4, fixed32, little-endian
        for (int b = 0; b < 4; b++) *w++ = (uint8_t)(lbits >> (8 * b));
    }
    if (m->batch_size) w = put_tag_varint(w, 0x28, m->batch_size);
    if (tfps_session_is_set(&m->session)) {
        w = put_tag_varint(w, 0x3a, TFPS_SESSION_LEN);
        memcpy(w, m->session.b, TFPS_SESSION_LEN);
        w += TFPS_SESSION_LEN;
    }
    for (int i = 0; i < m->ntensors; i++) {
        const tfps_wire_tensor *t = &m->gradients[i];
        const size_t nb = tensor_values_bytes(t);
        const void *v = t->dtype == TFPS_DTYPE_FP32 ? (const void *)t->values : (const void *)t->half;
        assert(v || nb == 0);
        w = put_tag_varint(w, 0x32, tensor_body(t, pads[i]));   // field 6: a Tensor
        w = put_tag_varint(w, 0x0a, range_size(t->range));
        if (t->range.begin) w = put_tag_varint(w, 0x08, t->range.begin);
        if (t->range.end) w = put_tag_varint(w, 0x10, t->range.end);
        if (t->dtype) w = put_tag_varint(w, 0x18, (uint64_t)t->dtype);
        if (pads[i]) {
            w = put_tag_varint(w, 0x22, (uint64_t)(pads[i] - 2));
            memset(w, 0, pads[i] - 2u);
            w += pads[i] - 2;
        }
        w = put_tag_varint(w, 0x12, nb);
        if (nb) memcpy(w, v, nb);
        w += nb;
    }
}

int tfps_wire_pack_push_req(const tfps_wire_push_req *m, tfps_buf *out) {
    uint8_t pads[TFPS_WIRE_MAX_TENSORS];
    const size_t n = push_layout(m, 0, 0, pads);
    if (reserve(out, n ? n : 1) != TFPS_OK) return TFPS_ERR;
    push_write(m, pads, out->data);
    out->len = n;
    return TFPS_OK;
}

int tfps_wire_pack_pushpull_req(const tfps_wire_push_req *push, const tfps_buf *pull_packed, tfps_buf *out) {
    // field 1 (the push, length-delimited) packed in place after its header; then field 2, the pull. The push's
    // length decides its header's length, which moves the push: find a header length L that the push, laid out
    // after it, needs (at a varint boundary the push is padded up to the shortest length that needs L)
    uint8_t pads[TFPS_WIRE_MAX_TENSORS];
    size_t n = 0;
    for (size_t l1 = 2; l1 <= 6; l1++) {
        n = push_layout(push, l1, l1 > 2 ? (size_t)1 << (7 * (l1 - 2)) : 0, pads);
        if (1 + varint_len(n) == l1) break;
    }
    uint8_t h1[11], h2[11];
    h1[0] = 0x0a;   // field 1, wire type 2
    h2[0] = 0x12;   // field 2, wire type 2
    const size_t l1 = 1 + put_varint(h1 + 1, n);   // the true length (were it not settled: valid, unaligned)
    const size_t l2 = 1 + put_varint(h2 + 1, pull_packed->len);
    const size_t total = l1 + n + l2 + pull_packed->len;
    if (reserve(out, total) != TFPS_OK) return TFPS_ERR;
    memcpy(out->data, h1, l1);
    push_write(push, pads, out->data + l1);
    memcpy(out->data + l1 + n, h2, l2);
    if (pull_packed->len) memcpy(out->data + l1 + n + l2, pull_packed->data, pull_packed->len);
    out->len = total;
    return TFPS_OK;
}

/* A varint of data[*at..len): TFPS_ERR when it runs past the end or over 10 bytes. */
static int get_varint(const uint8_t *data, size_t len, size_t *at, uint64_t *v) {
    *v = 0;
    for (int shift = 0; shift < 70; shift += 7) {
        if (*at >= len) return TFPS_ERR;
        const uint8_t b = data[(*at)++];
        *v |= (uint64_t)(b & 0x7f) << shift;
        if (!(b & 0x80)) return TFPS_OK;
    }
    return TFPS_ERR;
}

int tfps_wire_split_pushpull_req(const uint8_t *data, size_t len, const uint8_t **push, size_t *push_len,
                                 const uint8_t **pull, size_t *pull_len, char *err, size_t errlen) {
    const uint8_t *part[3] = {NULL, NULL, NULL};
    size_t plen[3] = {0, 0, 0}, at = 0;
    while (at < len) {
        uint64_t tag, n;
        if (get_varint(data, len, &at, &tag) != TFPS_OK)
            return tfps_seterr(err, errlen, "PushPullRequest: a truncated field tag at byte %zu of %zu", at, len);
        const uint64_t field = tag >> 3;
        if ((field != 1 && field != 2) || (tag & 7) != 2)
            return tfps_seterr(err, errlen, "PushPullRequest: unexpected field %llu (wire type %llu): expected push = 1 "
                               "and pull = 2, each a message", (unsigned long long)field, (unsigned long long)(tag & 7));
        if (get_varint(data, len, &at, &n) != TFPS_OK || n > len - at)
            return tfps_seterr(err, errlen, "PushPullRequest: field %llu runs past the end (%zu bytes)",
                               (unsigned long long)field, len);
        if (part[field])
            return tfps_seterr(err, errlen, "PushPullRequest: field %s given twice", field == 1 ? "push" : "pull");
        part[field] = data + at;
        plen[field] = (size_t)n;
        at += (size_t)n;
    }
    if (!part[1] || !part[2])
        return tfps_seterr(err, errlen, "PushPullRequest: no %s: expected both a push and a pull",
                           part[1] ? "pull" : "push");
    *push = part[1];
    *push_len = plen[1];
    *pull = part[2];
    *pull_len = plen[2];
    return TFPS_OK;
}

size_t tfps_wire_push_tail(const tfps_wire_push_resp *r, uint8_t *tail) {
    Tfps__V1__PushPullResponse p = TFPS__V1__PUSH_PULL_RESPONSE__INIT;
    p.push_applied = r->applied != 0;
    p.push_version = r->version;
    p.push_nonfinite = r->nonfinite != 0;
    const size_t n = protobuf_c_message_get_packed_size(&p.base);
    assert(n <= TFPS_WIRE_PUSH_TAIL_MAX);
    return n ? protobuf_c_message_pack(&p.base, tail) : 0;
}

/* ---- unpacking ---- */

/* Parses data as d. On error nothing is allocated and *owner is NULL. */
static ProtobufCMessage *unpack_msg(const ProtobufCMessageDescriptor *d, const uint8_t *data, size_t len,
                                    void **owner, char *err, size_t errlen) {
    assert(data || len == 0);
    assert(owner);
    *owner = NULL;
    ProtobufCMessage *msg = protobuf_c_message_unpack(d, NULL, len, data);
    if (!msg)   /* also what an out-of-memory looks like; malformed is far likelier */
        tfps_seterr(err, errlen, "%s: %zu bytes do not parse as a %s message (malformed or truncated)",
                    d->short_name, len, d->name);
    return msg;
}

/* Hands msg to a new owner; on failure frees it. */
static int own(ProtobufCMessage *msg, void **owner, char *err, size_t errlen) {
    wire_owner *o = malloc(sizeof(*o));
    if (!o) {
        const char *name = msg->descriptor->short_name;   /* the descriptor is static */
        protobuf_c_message_free_unpacked(msg, NULL);
        return tfps_seterr(err, errlen, "%s: out of memory", name);
    }
    o->msg = msg;
    *owner = o;
    return TFPS_OK;
}

static int fail(ProtobufCMessage *msg) {
    protobuf_c_message_free_unpacked(msg, NULL);
    return TFPS_ERR;
}

/* A range the receiver can turn into a float count and a byte count. */
static int check_range(const Tfps__V1__Range *r, const char *field, size_t i, char *err, size_t errlen) {
    if (r->end < r->begin)
        return tfps_seterr(err, errlen, "%s[%zu]: range [%llu, %llu) has end < begin", field, i,
                           (unsigned long long)r->begin, (unsigned long long)r->end);
    if (r->end - r->begin > SIZE_MAX / sizeof(float))
        return tfps_seterr(err, errlen, "%s[%zu]: range [%llu, %llu) is too large (%llu elements)", field, i,
                           (unsigned long long)r->begin, (unsigned long long)r->end,
                           (unsigned long long)(r->end - r->begin));
    return TFPS_OK;
}

static int check_count(size_t n, const char *field, const char *what, char *err, size_t errlen) {
    if (n > TFPS_WIRE_MAX_TENSORS)
        return tfps_seterr(err, errlen, "%s: %zu %s: at most %d allowed", field, n, what, TFPS_WIRE_MAX_TENSORS);
    return TFPS_OK;
}

static int check_dtype(int dtype, const char *field, size_t i, char *err, size_t errlen) {
    if (dtype >= 0 && dtype < TFPS_DTYPE_COUNT) return TFPS_OK;
    return tfps_seterr(err, errlen, "%s[%zu]: dtype %d: expected FP32 (0), BF16 (1) or FP16 (2)", field, i, dtype);
}

static int check_tensors(Tfps__V1__Tensor *const *ts, size_t n, const char *field, char *err, size_t errlen) {
    if (check_count(n, field, "tensors", err, errlen) != TFPS_OK) return TFPS_ERR;
    for (size_t i = 0; i < n; i++) {
        const Tfps__V1__Tensor *t = ts[i];
        if (!t->range) return tfps_seterr(err, errlen, "%s[%zu]: tensor without a range (Tensor.range is required)", field, i);
        if (check_range(t->range, field, i, err, errlen) != TFPS_OK) return TFPS_ERR;
        if (check_dtype((int)t->dtype, field, i, err, errlen) != TFPS_OK) return TFPS_ERR;
        uint64_t want = (t->range->end - t->range->begin) * tfps_wire_dtype_size((int)t->dtype);
        if (t->values.len != want)
            return tfps_seterr(err, errlen, "%s[%zu]: %zu bytes of %s values for range [%llu, %llu): expected %llu",
                               field, i, t->values.len, tfps_wire_dtype_name((int)t->dtype),
                               (unsigned long long)t->range->begin, (unsigned long long)t->range->end,
                               (unsigned long long)want);
    }
    return TFPS_OK;
}

/* After check_tensors. */
static void tensors_from_pb(Tfps__V1__Tensor *const *ts, size_t n, tfps_wire_tensor *out) {
    for (size_t i = 0; i < n; i++) {
        out[i].range.begin = ts[i]->range->begin;
        out[i].range.end = ts[i]->range->end;
        const void *v = ts[i]->values.len ? (const void *)ts[i]->values.data : (const void *)wire_no_floats;
        assert((uintptr_t)v % alignof(float) == 0);   /* a malloc block of protobuf-c's: see the top */
        out[i].dtype = (int)ts[i]->dtype;
        out[i].values = out[i].dtype == TFPS_DTYPE_FP32 ? v : NULL;
        out[i].half = out[i].dtype == TFPS_DTYPE_FP32 ? NULL : v;
    }
}

/* A `bytes` session field: empty (none) or exactly 16 bytes. */
static int session_from_pb(ProtobufCBinaryData d, const char *field, tfps_session *out, char *err, size_t errlen) {
    memset(out, 0, sizeof(*out));
    if (d.len == 0) return TFPS_OK;
    if (d.len != TFPS_SESSION_LEN)
        return tfps_seterr(err, errlen, "%s: %zu bytes: expected the %d bytes of RegisterResponse.session, or none",
                           field, d.len, TFPS_SESSION_LEN);
    memcpy(out->b, d.data, TFPS_SESSION_LEN);
    return TFPS_OK;
}

static const char *str_from_pb(const char *s) {
    return s ? s : "";   /* proto3 strings come back as "" when absent; defensive */
}

int tfps_wire_unpack_register_req(const uint8_t *data, size_t len, tfps_wire_register_req *m, void **owner, char *err,
                                  size_t errlen) {
    ProtobufCMessage *msg = unpack_msg(&tfps__v1__register_request__descriptor, data, len, owner, err, errlen);
    if (!msg) return TFPS_ERR;
    const Tfps__V1__RegisterRequest *p = (const Tfps__V1__RegisterRequest *)msg;
    if (p->job_secret.len > TFPS_WIRE_MAX_SECRET) {
        tfps_seterr(err, errlen, "RegisterRequest.job_secret: %zu bytes: expected at most %d", p->job_secret.len,
                    TFPS_WIRE_MAX_SECRET);
        return fail(msg);
    }
    if (session_from_pb(p->session, "RegisterRequest.session", &m->session, err, errlen) != TFPS_OK) return fail(msg);
    if (session_from_pb(p->instance, "RegisterRequest.instance", &m->instance, err, errlen) != TFPS_OK)
        return fail(msg);
    if (own(msg, owner, err, errlen) != TFPS_OK) return TFPS_ERR;
    m->job_secret = p->job_secret.len ? p->job_secret.data : NULL;
    m->job_secret_len = p->job_secret.len;
    m->task_type = str_from_pb(p->task_type);
    m->task_index = p->task_index;
    m->worker_rank = p->worker_rank;
    m->num_workers = p->num_workers;
    m->num_ps = p->num_ps;
    m->input = p->input;
    m->h1 = p->h1;
    m->h2 = p->h2;
    m->classes = p->classes;
    m->layout_digest = p->layout_digest;
    m->shard_plan_digest = p->shard_plan_digest;
    m->shard_strategy = str_from_pb(p->shard_strategy);
    m->seed = p->seed;
    m->learning_rate = p->learning_rate;
    m->consistency = str_from_pb(p->consistency);
    m->replicas_to_aggregate = p->replicas_to_aggregate;
    m->staleness = p->staleness;
    m->optimizer = str_from_pb(p->optimizer);
    m->optimizer_digest = p->optimizer_digest;
    m->clock = p->clock;
    return TFPS_OK;
}

int tfps_wire_unpack_register_resp(const uint8_t *data, size_t len, tfps_wire_register_resp *m, void **owner,
                                   char *err, size_t errlen) {
    ProtobufCMessage *msg = unpack_msg(&tfps__v1__register_response__descriptor, data, len, owner, err, errlen);
    if (!msg) return TFPS_ERR;
    const Tfps__V1__RegisterResponse *p = (const Tfps__V1__RegisterResponse *)msg;
    if (session_from_pb(p->session, "RegisterResponse.session", &m->session, err, errlen) != TFPS_OK) return fail(msg);
    if (own(msg, owner, err, errlen) != TFPS_OK) return TFPS_ERR;
    m->worker_id = p->worker_id;
    m->version = p->version;
    m->ps_index = p->ps_index;
    m->clock = p->clock;
    m->restored_step = p->restored_step;
    return TFPS_OK;
}

int tfps_wire_unpack_pull_req(const uint8_t *data, size_t len, tfps_wire_pull_req *m, void **owner, char *err,
                              size_t errlen) {
    ProtobufCMessage *msg = unpack_msg(&tfps__v1__pull_request__descriptor, data, len, owner, err, errlen);
    if (!msg) return TFPS_ERR;
    const Tfps__V1__PullRequest *p = (const Tfps__V1__PullRequest *)msg;
    if (check_count(p->n_ranges, "PullRequest.ranges", "ranges", err, errlen) != TFPS_OK) return fail(msg);
    for (size_t i = 0; i < p->n_ranges; i++)
        if (check_range(p->ranges[i], "PullRequest.ranges", i, err, errlen) != TFPS_OK) return fail(msg);
    if (session_from_pb(p->session, "PullRequest.session", &m->session, err, errlen) != TFPS_OK) return fail(msg);
    if ((int)p->dtype < 0 || (int)p->dtype >= TFPS_DTYPE_COUNT) {
        tfps_seterr(err, errlen, "PullRequest.dtype %d: expected FP32 (0), BF16 (1) or FP16 (2)", (int)p->dtype);
        return fail(msg);
    }
    if (own(msg, owner, err, errlen) != TFPS_OK) return TFPS_ERR;
    m->dtype = (int)p->dtype;
    m->worker_id = p->worker_id;
    m->min_version = p->min_version;
    m->clock = p->clock;
    m->nranges = (int)p->n_ranges;
    for (size_t i = 0; i < p->n_ranges; i++) {
        m->ranges[i].begin = p->ranges[i]->begin;
        m->ranges[i].end = p->ranges[i]->end;
    }
    return TFPS_OK;
}

int tfps_wire_unpack_pull_resp(const uint8_t *data, size_t len, tfps_wire_pull_resp *m, void **owner, char *err,
                               size_t errlen) {
    ProtobufCMessage *msg = unpack_msg(&tfps__v1__pull_response__descriptor, data, len, owner, err, errlen);
    if (!msg) return TFPS_ERR;
    const Tfps__V1__PullResponse *p = (const Tfps__V1__PullResponse *)msg;
    if (check_tensors(p->tensors, p->n_tensors, "PullResponse.tensors", err, errlen) != TFPS_OK) return fail(msg);
    if (own(msg, owner, err, errlen) != TFPS_OK) return TFPS_ERR;
    m->version = p->version;
    m->held_s = p->held_s;
    m->examples = p->examples;
    eval_from_pb(p->eval, &m->eval);
    m->tail = NULL;   // (packing only)
    m->tail_len = 0;
    m->ntensors = (int)p->n_tensors;
    tensors_from_pb(p->tensors, p->n_tensors, m->tensors);
    return TFPS_OK;
}

int tfps_wire_unpack_push_req(const uint8_t *data, size_t len, tfps_wire_push_req *m, void **owner, char *err,
                              size_t errlen) {
    ProtobufCMessage *msg = unpack_msg(&tfps__v1__push_request__descriptor, data, len, owner, err, errlen);
    if (!msg) return TFPS_ERR;
    const Tfps__V1__PushRequest *p = (const Tfps__V1__PushRequest *)msg;
    if (check_tensors(p->gradients, p->n_gradients, "PushRequest.gradients", err, errlen) != TFPS_OK)
        return fail(msg);
    if (session_from_pb(p->session, "PushRequest.session", &m->session, err, errlen) != TFPS_OK) return fail(msg);
    if (own(msg, owner, err, errlen) != TFPS_OK) return TFPS_ERR;
    m->worker_id = p->worker_id;
    m->base_version = p->base_version;
    m->step = p->step;
    m->loss = p->loss;
    m->batch_size = p->batch_size;
    m->ntensors = (int)p->n_gradients;
    tensors_from_pb(p->gradients, p->n_gradients, m->gradients);
    return TFPS_OK;
}

int tfps_wire_unpack_push_resp(const uint8_t *data, size_t len, tfps_wire_push_resp *m, void **owner, char *err,
                               size_t errlen) {
    ProtobufCMessage *msg = unpack_msg(&tfps__v1__push_response__descriptor, data, len, owner, err, errlen);
    if (!msg || own(msg, owner, err, errlen) != TFPS_OK) return TFPS_ERR;
    const Tfps__V1__PushResponse *p = (const Tfps__V1__PushResponse *)msg;
    m->applied = p->applied != 0;
    m->version = p->version;
    m->nonfinite = p->nonfinite != 0;
    return TFPS_OK;
}

int tfps_wire_unpack_heartbeat_req(const uint8_t *data, size_t len, tfps_wire_heartbeat_req *m, void **owner,
                                   char *err, size_t errlen) {
    ProtobufCMessage *msg = unpack_msg(&tfps__v1__heartbeat_request__descriptor, data, len, owner, err, errlen);
    if (!msg) return TFPS_ERR;
    const Tfps__V1__HeartbeatRequest *p = (const Tfps__V1__HeartbeatRequest *)msg;
    if (session_from_pb(p->session, "HeartbeatRequest.session", &m->session, err, errlen) != TFPS_OK) return fail(msg);
    if (own(msg, owner, err, errlen) != TFPS_OK) return TFPS_ERR;
    m->worker_id = p->worker_id;
    m->step = p->step;
    m->examples = p->examples;
    m->done = p->done != 0;
    eval_from_pb(p->eval, &m->eval);
    return TFPS_OK;
}

int tfps_wire_unpack_heartbeat_resp(const uint8_t *data, size_t len, tfps_wire_heartbeat_resp *m, void **owner,
                                    char *err, size_t errlen) {
    ProtobufCMessage *msg = unpack_msg(&tfps__v1__heartbeat_response__descriptor, data, len, owner, err, errlen);
    if (!msg || own(msg, owner, err, errlen) != TFPS_OK) return TFPS_ERR;
    const Tfps__V1__HeartbeatResponse *p = (const Tfps__V1__HeartbeatResponse *)msg;
    m->version = p->version;
    m->workers_registered = p->workers_registered;
    m->workers_done = p->workers_done;
    m->shutting_down = p->shutting_down != 0;
    m->workers_dead = p->workers_dead;
    m->chief_done = p->chief_done != 0;
    return TFPS_OK;
}

int tfps_wire_unpack_status_req(const uint8_t *data, size_t len, void **owner, char *err, size_t errlen) {
    ProtobufCMessage *msg = unpack_msg(&tfps__v1__status_request__descriptor, data, len, owner, err, errlen);
    if (!msg) return TFPS_ERR;
    return own(msg, owner, err, errlen);
}

int tfps_wire_unpack_status_resp(const uint8_t *data, size_t len, tfps_wire_status_resp *m, void **owner, char *err,
                                 size_t errlen) {
    ProtobufCMessage *msg = unpack_msg(&tfps__v1__status_response__descriptor, data, len, owner, err, errlen);
    if (!msg || own(msg, owner, err, errlen) != TFPS_OK) return TFPS_ERR;
    const Tfps__V1__StatusResponse *p = (const Tfps__V1__StatusResponse *)msg;
    m->version = p->version;
    m->applied = p->applied;
    m->refused = p->refused;
    m->bytes_in = p->bytes_in;
    m->bytes_out = p->bytes_out;
    m->uptime_s = p->uptime_s;
    m->ps_index = p->ps_index;
    m->workers_registered = p->workers_registered;
    m->workers_done = p->workers_done;
    m->examples = p->examples;
    m->consistency = str_from_pb(p->consistency);
    m->optimizer = str_from_pb(p->optimizer);
    m->dropped = p->dropped;
    m->wait_s = p->wait_s;
    m->max_lead = p->max_lead;
    m->held = p->held;
    m->aggregated = p->aggregated;
    m->workers_dead = p->workers_dead;
    m->checkpoints = p->checkpoints;
    m->last_checkpoint_step = p->last_checkpoint_step;
    m->restored_step = p->restored_step;
    m->checkpoint_pause_s = p->checkpoint_pause_s;
    m->unauthenticated = p->unauthenticated;
    m->nonfinite = p->nonfinite;
    eval_from_pb(p->eval, &m->eval);
    return TFPS_OK;
}

int tfps_wire_unpack_shutdown_req(const uint8_t *data, size_t len, tfps_wire_shutdown_req *m, void **owner, char *err,
                                  size_t errlen) {
    ProtobufCMessage *msg = unpack_msg(&tfps__v1__shutdown_request__descriptor, data, len, owner, err, errlen);
    if (!msg) return TFPS_ERR;
    const Tfps__V1__ShutdownRequest *p = (const Tfps__V1__ShutdownRequest *)msg;
    if (session_from_pb(p->session, "ShutdownRequest.session", &m->session, err, errlen) != TFPS_OK) return fail(msg);
    if (own(msg, owner, err, errlen) != TFPS_OK) return TFPS_ERR;
    m->reason = str_from_pb(p->reason);
    m->failed = p->failed != 0;
    m->worker_id = p->worker_id;
    return TFPS_OK;
}

int tfps_wire_unpack_shutdown_resp(const uint8_t *data, size_t len, void **owner, char *err, size_t errlen) {
    ProtobufCMessage *msg = unpack_msg(&tfps__v1__shutdown_response__descriptor, data, len, owner, err, errlen);
    if (!msg) return TFPS_ERR;
    return own(msg, owner, err, errlen);
}
int tfps_wire_unpack_checkpoint_req(const uint8_t *data, size_t len, tfps_wire_checkpoint_req *m, void **owner,
                                    char *err, size_t errlen) {
    ProtobufCMessage *msg = unpack_msg(&tfps__v1__checkpoint_request__descriptor, data, len, owner, err, errlen);
    if (!msg) return TFPS_ERR;
    const Tfps__V1__CheckpointRequest *p = (const Tfps__V1__CheckpointRequest *)msg;
    if (session_from_pb(p->session, "CheckpointRequest.session", &m->session, err, errlen) != TFPS_OK)
        return fail(msg);
    if (own(msg, owner, err, errlen) != TFPS_OK) return TFPS_ERR;
    m->worker_id = p->worker_id;
    m->step = p->step;
    m->version = p->version;
    return TFPS_OK;
}
int tfps_wire_unpack_checkpoint_resp(const uint8_t *data, size_t len, tfps_wire_checkpoint_resp *m, void **owner,
                                     char *err, size_t errlen) {
    ProtobufCMessage *msg = unpack_msg(&tfps__v1__checkpoint_response__descriptor, data, len, owner, err, errlen);
    if (!msg || own(msg, owner, err, errlen) != TFPS_OK) return TFPS_ERR;
    const Tfps__V1__CheckpointResponse *p = (const Tfps__V1__CheckpointResponse *)msg;
    m->ps_index = p->ps_index;
    m->version = p->version;
    m->bytes = p->bytes;
    m->crc = p->crc;
    m->pause_s = p->pause_s;
    m->write_s = p->write_s;
    return TFPS_OK;
}

int tfps_wire_unpack_health_req(const uint8_t *data, size_t len, const char **service, void **owner, char *err,
                                size_t errlen) {
    ProtobufCMessage *msg =
        unpack_msg(&grpc__health__v1__health_check_request__descriptor, data, len, owner, err, errlen);
    if (!msg || own(msg, owner, err, errlen) != TFPS_OK) return TFPS_ERR;
    *service = str_from_pb(((const Grpc__Health__V1__HealthCheckRequest *)msg)->service);
    return TFPS_OK;
}

int tfps_wire_unpack_health_resp(const uint8_t *data, size_t len, int *status, void **owner, char *err,
                                 size_t errlen) {
    ProtobufCMessage *msg =
        unpack_msg(&grpc__health__v1__health_check_response__descriptor, data, len, owner, err, errlen);
    if (!msg || own(msg, owner, err, errlen) != TFPS_OK) return TFPS_ERR;
    *status = (int)((const Grpc__Health__V1__HealthCheckResponse *)msg)->status;
    return TFPS_OK;
}

int tfps_wire_unpack_pushpull_resp(const uint8_t *data, size_t len, tfps_wire_pull_resp *pull,
                                   tfps_wire_push_resp *push, void **owner, char *err, size_t errlen) {
    ProtobufCMessage *msg = unpack_msg(&tfps__v1__push_pull_response__descriptor, data, len, owner, err, errlen);
    if (!msg) return TFPS_ERR;
    const Tfps__V1__PushPullResponse *p = (const Tfps__V1__PushPullResponse *)msg;
    if (check_tensors(p->tensors, p->n_tensors, "PushPullResponse.tensors", err, errlen) != TFPS_OK) return fail(msg);
    if (own(msg, owner, err, errlen) != TFPS_OK) return TFPS_ERR;
    memset(pull, 0, sizeof(*pull));
    pull->version = p->version;
    pull->held_s = p->held_s;
    pull->examples = p->examples;
    eval_from_pb(p->eval, &pull->eval);
    pull->ntensors = (int)p->n_tensors;
    tensors_from_pb(p->tensors, p->n_tensors, pull->tensors);
    push->applied = p->push_applied != 0;
    push->version = p->push_version;
    push->nonfinite = p->push_nonfinite != 0;
    return TFPS_OK;
}

/* ---- zero-copy reading of pull answers ---- */

/* A cursor over a message held in segments (one, or gRPC's received
 * slices): pos and end are absolute byte positions; (i, off) is where pos
 * lies. */
typedef struct {
    const tfps_wire_seg *seg;
    int nseg, i;
    size_t off, pos, end;
} reader;

static const uint8_t wire_no_bytes[1];

static reader rd_init(const tfps_wire_seg *seg, int nseg, size_t total) {
    return (reader){.seg = seg, .nseg = nseg, .end = total};
}

static int rd_done(const reader *r) { return r->pos >= r->end; }

/* (i, off) moved past exhausted segments, so that it points at pos's byte. */
static void rd_settle(reader *r) {
    while (r->i < r->nseg && r->off >= r->seg[r->i].len) {
        r->i++;
        r->off = 0;
    }
}

static int rd_byte(reader *r, uint8_t *b) {
    if (r->pos >= r->end) return TFPS_ERR;
    rd_settle(r);
    assert(r->i < r->nseg);   // pos < end <= the pieces' total
    *b = r->seg[r->i].p[r->off++];
    r->pos++;
    return TFPS_OK;
}

/* Moves n bytes on (at most to end). */
static int rd_advance(reader *r, size_t n) {
    if (n > r->end - r->pos) return TFPS_ERR;
    r->pos += n;
    while (n > 0) {
        rd_settle(r);
        assert(r->i < r->nseg);
        const size_t room = r->seg[r->i].len - r->off, k = n < room ? n : room;
        r->off += k;
        n -= k;
    }
    return TFPS_OK;
}

static int rd_varint(reader *r, uint64_t *v) {
    *v = 0;
    for (int shift = 0; shift < 70; shift += 7) {
        uint8_t b;
        if (rd_byte(r, &b) != TFPS_OK) return TFPS_ERR;
        if (shift == 63 && b > 1) return TFPS_ERR;   // more than 64 bits
        *v |= (uint64_t)(b & 0x7f) << shift;
        if (!(b & 0x80)) return TFPS_OK;
    }
    return TFPS_ERR;
}

/* n little-endian bytes (n <= 8) as a number. */
static int rd_le(reader *r, int n, uint64_t *v) {
    if (r->end - r->pos < (size_t)n) return TFPS_ERR;
    uint64_t x = 0;
    for (int k = 0; k < n; k++) {
        uint8_t b = 0;
        rd_byte(r, &b);
        x |= (uint64_t)b << (8 * k);
    }
    *v = x;
    return TFPS_OK;
}

static int rd_fixed64(reader *r, uint64_t *v) { return rd_le(r, 8, v); }

static double as_double(uint64_t bits) {
    double d;
    memcpy(&d, &bits, sizeof(d));
    return d;
}

/* A length-delimited field's bytes as sub. The length takes at most 5 bytes
 * and is at most INT_MAX, as protobuf-c requires. */
static int rd_bytes(reader *r, reader *sub) {
    uint64_t n;
    const size_t start = r->pos;
    if (rd_varint(r, &n) != TFPS_OK || r->pos - start > 5 || n > INT_MAX || n > (uint64_t)(r->end - r->pos))
        return TFPS_ERR;
    *sub = *r;
    sub->end = r->pos + (size_t)n;
    return rd_advance(r, (size_t)n);
}

/* sub's bytes as one pointer when they lie in one segment (always, for a
 * message in one piece), else NULL; for 0 bytes a valid address. */
static const uint8_t *rd_ptr(reader sub) {
    if (sub.pos >= sub.end)   // where it stands, inside the message (one past a segment's end at most)
        return sub.i < sub.nseg && sub.seg[sub.i].p ? sub.seg[sub.i].p + sub.off : wire_no_bytes;
    rd_settle(&sub);
    return sub.off + (sub.end - sub.pos) <= sub.seg[sub.i].len ? sub.seg[sub.i].p + sub.off : NULL;
}

/* Skips a field of wire type wt (no groups). */
static int rd_skip(reader *r, unsigned wt) {
    uint64_t v;
    reader sub;
    switch (wt) {
    case 0: return rd_varint(r, &v);
    case 1: return rd_fixed64(r, &v);
    case 2: return rd_bytes(r, &sub);
    case 5: return rd_advance(r, 4);
    default: return TFPS_ERR;
    }
}

/* Reads the tag at r: field number and wire type. */
static int rd_tag(reader *r, uint64_t *field, unsigned *wt) {
    uint64_t tag;
    const size_t start = r->pos;
    if (rd_varint(r, &tag) != TFPS_OK || r->pos - start > 5 || (tag >> 3) == 0 || (tag >> 3) > 0x1fffffff)
        return TFPS_ERR;   // a tag is at most 5 bytes (protobuf-c refuses longer ones, padded or not)
    *field = tag >> 3;
    *wt = (unsigned)(tag & 7);
    return TFPS_OK;
}

static int view_range(reader r, tfps_wire_range *out) {
    out->begin = out->end = 0;
    while (!rd_done(&r)) {
        uint64_t f, v;
        unsigned wt;
        if (rd_tag(&r, &f, &wt) != TFPS_OK) return TFPS_ERR;
        if ((f == 1 || f == 2) && wt != 0) return TFPS_ERR;
        if (f == 1 || f == 2) {
            if (rd_varint(&r, &v) != TFPS_OK) return TFPS_ERR;
            if (f == 1) out->begin = v;
            else out->end = v;
        } else if (rd_skip(&r, wt) != TFPS_OK) {
            return TFPS_ERR;
        }
    }
    return TFPS_OK;
}

static int view_tensor(reader r, const char *field, tfps_wire_tensor_view *t, size_t i, char *err, size_t errlen) {
    int have_range = 0, have_values = 0;
    uint64_t dtype = TFPS_DTYPE_FP32;
    reader values = r;   // (none: 0 bytes where the tensor ends, set after the loop)
    while (!rd_done(&r)) {
        uint64_t f;
        unsigned wt;
        reader sub;
        if (rd_tag(&r, &f, &wt) != TFPS_OK) return tfps_seterr(err, errlen, "%s[%zu]: a malformed field", field, i);
        if (f == 1 || f == 2) {
            if (wt != 2 || rd_bytes(&r, &sub) != TFPS_OK)
                return tfps_seterr(err, errlen, "%s[%zu]: field %llu malformed", field, i, (unsigned long long)f);
            if (f == 1) {
                if (have_range++ || view_range(sub, &t->range) != TFPS_OK)
                    return tfps_seterr(err, errlen, "%s[%zu]: a malformed or second range", field, i);
            } else {
                if (have_values++) return tfps_seterr(err, errlen, "%s[%zu]: values given twice", field, i);
                values = sub;
            }
        } else if (f == 4) {   // pad: filler before values (a known field: protobuf-c refuses another wire type)
            if (wt != 2 || rd_bytes(&r, &sub) != TFPS_OK)
                return tfps_seterr(err, errlen, "%s[%zu]: field 4 (pad) malformed", field, i);
        } else if (f == 3) {   // dtype: an enum (int32 varint); a repeated scalar keeps the last
            if (wt != 0 || rd_varint(&r, &dtype) != TFPS_OK)
                return tfps_seterr(err, errlen, "%s[%zu]: field 3 (dtype) malformed", field, i);
        } else if (rd_skip(&r, wt) != TFPS_OK) {
            return tfps_seterr(err, errlen, "%s[%zu]: a malformed field %llu", field, i, (unsigned long long)f);
        }
    }
    if (!have_values) values = r;   // at the tensor's end: 0 bytes
    if (dtype >= TFPS_DTYPE_COUNT)
        return tfps_seterr(err, errlen, "%s[%zu]: dtype %lld: expected FP32 (0), BF16 (1) or FP16 (2)", field, i,
                           (long long)dtype);
    t->dtype = (int)dtype;
    if (!have_range)
        return tfps_seterr(err, errlen, "%s[%zu]: tensor without a range (Tensor.range is required)", field, i);
    if (t->range.end < t->range.begin || t->range.end - t->range.begin > SIZE_MAX / sizeof(float))
        return tfps_seterr(err, errlen, "%s[%zu]: range [%llu, %llu) is invalid", field, i,
                           (unsigned long long)t->range.begin, (unsigned long long)t->range.end);
    const size_t want = (size_t)(t->range.end - t->range.begin) * tfps_wire_dtype_size(t->dtype),
                 got = have_values ? values.end - values.pos : 0;
    if (got != want)
        return tfps_seterr(err, errlen, "%s[%zu]: %zu bytes of %s values for range [%llu, %llu): expected %zu",
                           field, i, got, tfps_wire_dtype_name(t->dtype), (unsigned long long)t->range.begin,
                           (unsigned long long)t->range.end, want);
    t->at = values.pos;
    t->bytes = rd_ptr(values);
    return TFPS_OK;
}

static int view_eval(reader r, tfps_wire_eval *e) {
    memset(e, 0, sizeof(*e));
    while (!rd_done(&r)) {
        uint64_t f, v;
        unsigned wt;
        if (rd_tag(&r, &f, &wt) != TFPS_OK) return TFPS_ERR;
        if (f == 1 || f == 2) {
            if (wt != 0 || rd_varint(&r, &v) != TFPS_OK) return TFPS_ERR;
            if (f == 1) e->count = (uint32_t)v;   // protobuf: a uint32 keeps the low 32 bits
            else e->step = v;
        } else if (f == 3 || f == 4) {
            if (wt != 1 || rd_fixed64(&r, &v) != TFPS_OK) return TFPS_ERR;
            if (f == 3) e->accuracy = as_double(v);
            else e->loss = as_double(v);
        } else if (rd_skip(&r, wt) != TFPS_OK) {
            return TFPS_ERR;
        }
    }
    if (e->count == 0) memset(e, 0, sizeof(*e));   // as eval_from_pb: count 0 is none
    return TFPS_OK;
}

int tfps_wire_view_pull_resp(const uint8_t *data, size_t len, tfps_wire_pull_view *v, char *err, size_t errlen) {
    if (len && !data) {
        memset(v, 0, sizeof(*v));
        return tfps_seterr(err, errlen, "PullResponse: no bytes");
    }
    const tfps_wire_seg one = {data, len};
    return tfps_wire_view_pull_resp_segs(&one, len ? 1 : 0, v, err, errlen);
}

int tfps_wire_view_pull_resp_segs(const tfps_wire_seg *segs, int nsegs, tfps_wire_pull_view *v, char *err,
                                  size_t errlen) {
    int have_eval = 0;
    memset(v, 0, sizeof(*v));
    size_t len = 0;
    for (int i = 0; i < nsegs; i++) {
        if (!segs[i].p && segs[i].len) return tfps_seterr(err, errlen, "PullResponse: no bytes");
        len += segs[i].len;
    }
    if (!len) return TFPS_OK;   // an empty message: every field its default
    reader r = rd_init(segs, nsegs, len);
    while (!rd_done(&r)) {
        uint64_t f, x = 0;
        unsigned wt;
        reader sub;
        if (rd_tag(&r, &f, &wt) != TFPS_OK) return tfps_seterr(err, errlen, "PullResponse: a malformed field tag");
        const unsigned want = f == 2 || f == 5 ? 2 : f == 3 ? 1 : (f == 1 || f == 4 || (f >= 16 && f <= 18)) ? 0 : 99;
        if (want != 99 && wt != want)
            return tfps_seterr(err, errlen, "PullResponse: field %llu has wire type %u, expected %u",
                               (unsigned long long)f, wt, want);
        int rc = TFPS_OK;
        switch (f) {
        case 1: rc = rd_varint(&r, &v->version); break;
        case 2:
            if (v->ntensors >= TFPS_WIRE_MAX_TENSORS)
                return tfps_seterr(err, errlen, "PullResponse.tensors: more than %d tensors: at most %d allowed",
                                   TFPS_WIRE_MAX_TENSORS, TFPS_WIRE_MAX_TENSORS);
            if (rd_bytes(&r, &sub) != TFPS_OK) return tfps_seterr(err, errlen, "PullResponse: a truncated tensor");
            if (view_tensor(sub, "PullResponse.tensors", &v->tensors[v->ntensors], (size_t)v->ntensors, err,
                            errlen) != TFPS_OK)
                return TFPS_ERR;
            v->ntensors++;
            break;
        case 3:
            rc = rd_fixed64(&r, &x);
            v->held_s = as_double(x);
            break;
        case 4: rc = rd_varint(&r, &v->examples); break;
        case 5:
            if (have_eval++) return tfps_seterr(err, errlen, "PullResponse: eval given twice");
            rc = rd_bytes(&r, &sub);
            if (rc == TFPS_OK) rc = view_eval(sub, &v->eval);
            break;
        case 16: case 17: case 18:
            rc = rd_varint(&r, &x);
            if (f == 16) v->push.applied = x != 0;
            else if (f == 17) v->push.version = x;
            else v->push.nonfinite = x != 0;
            break;
        default: rc = rd_skip(&r, wt);
        }
        if (rc != TFPS_OK)
            return tfps_seterr(err, errlen, "PullResponse: field %llu is malformed or truncated", (unsigned long long)f);
    }
    return TFPS_OK;
}

int tfps_wire_view_push_req(const uint8_t *data, size_t len, tfps_wire_push_view *v, char *err, size_t errlen) {
    memset(v, 0, sizeof(*v));
    if (!len) return TFPS_OK;   // an empty message: every field its default (data may be NULL)
    if (!data) return tfps_seterr(err, errlen, "PushRequest: no bytes");
    const tfps_wire_seg one = {data, len};
    reader r = rd_init(&one, 1, len), session = r;
    session.end = 0;   // none until field 7
    while (!rd_done(&r)) {
        uint64_t f, x = 0;
        unsigned wt;
        reader sub;
        if (rd_tag(&r, &f, &wt) != TFPS_OK) return tfps_seterr(err, errlen, "PushRequest: a malformed field tag");
        const unsigned want = f == 4 ? 5 : f == 6 || f == 7 ? 2 : f <= 5 ? 0 : 99;
        if (want != 99 && wt != want)
            return tfps_seterr(err, errlen, "PushRequest: field %llu has wire type %u, expected %u",
                               (unsigned long long)f, wt, want);
        int rc = TFPS_OK;
        switch (f) {
        case 1:
            rc = rd_varint(&r, &x);
            v->worker_id = (uint32_t)x;   // protobuf: a uint32 keeps the low 32 bits
            break;
        case 2: rc = rd_varint(&r, &v->base_version); break;
        case 3: rc = rd_varint(&r, &v->step); break;
        case 4:
            rc = rd_le(&r, 4, &x);
            if (rc == TFPS_OK) {
                const uint32_t bits = (uint32_t)x;
                memcpy(&v->loss, &bits, sizeof(v->loss));
            }
            break;
        case 5:
            rc = rd_varint(&r, &x);
            v->batch_size = (uint32_t)x;
            break;
        case 6:
            if (v->ntensors >= TFPS_WIRE_MAX_TENSORS)
                return tfps_seterr(err, errlen, "PushRequest.gradients: more than %d tensors: at most %d allowed",
                                   TFPS_WIRE_MAX_TENSORS, TFPS_WIRE_MAX_TENSORS);
            if (rd_bytes(&r, &sub) != TFPS_OK) return tfps_seterr(err, errlen, "PushRequest: a truncated gradient");
            if (view_tensor(sub, "PushRequest.gradients", &v->gradients[v->ntensors], (size_t)v->ntensors, err,
                            errlen) != TFPS_OK)
                return TFPS_ERR;
            v->ntensors++;
            break;
        case 7: rc = rd_bytes(&r, &session); break;   // a repeated scalar: the last counts
        default: rc = rd_skip(&r, wt);
        }
        if (rc != TFPS_OK)
            return tfps_seterr(err, errlen, "PushRequest: field %llu is malformed or truncated", (unsigned long long)f);
    }
    const size_t sl = session.end - session.pos;
    if (sl != 0 && sl != TFPS_SESSION_LEN)
        return tfps_seterr(err, errlen, "PushRequest.session: %zu bytes: expected the %d bytes of "
                           "RegisterResponse.session, or none", sl, TFPS_SESSION_LEN);
    if (sl) memcpy(v->session.b, rd_ptr(session), TFPS_SESSION_LEN);   // one segment: a pointer
    return TFPS_OK;
}

int tfps_wire_view_copy(const tfps_wire_seg *segs, int nsegs, const tfps_wire_tensor_view *t, float *dst) {
    const size_t n = (size_t)(t->range.end - t->range.begin), es = tfps_wire_dtype_size(t->dtype);
    if (t->bytes) {   // in one piece
        if (t->dtype == TFPS_DTYPE_FP32) memcpy(dst, t->bytes, n * sizeof(float));
        else tfps_wire_decode(t->dtype, t->bytes, dst, n);
        return TFPS_OK;
    }
    size_t total = 0;
    for (int i = 0; i < nsegs; i++) total += segs[i].len;
    reader r = rd_init(segs, nsegs, total);
    if (t->at > total || n * es > total - t->at || rd_advance(&r, t->at) != TFPS_OK)
        return TFPS_ERR;   // not a view of these segments
    r.end = t->at + n * es;
    size_t done = 0;   // bytes of the tensor consumed
    uint8_t split[4];  // an element cut by a segment's end
    while (done < n * es) {
        rd_settle(&r);
        const size_t room = r.seg[r.i].len - r.off, want = n * es - done, k = room < want ? room : want;
        const uint8_t *p = r.seg[r.i].p + r.off;
        if (t->dtype == TFPS_DTYPE_FP32) {
            memcpy((uint8_t *)dst + done, p, k);
        } else {   // whole elements here; one cut at the end is put together from the next segment
            size_t head = done % es ? es - done % es : 0;   // the rest of an element begun before
            if (head > k) head = k;
            if (head) {
                memcpy(split + done % es, p, head);
                if ((done + head) % es == 0) tfps_wire_decode(t->dtype, split, dst + (done + head) / es - 1, 1);
            }
            const size_t whole = (k - head) / es;
            tfps_wire_decode(t->dtype, p + head, dst + (done + head) / es, whole);
            const size_t rest = k - head - whole * es;
            if (rest) memcpy(split, p + head + whole * es, rest);
        }
        done += k;
        rd_advance(&r, k);
    }
    return TFPS_OK;
}
