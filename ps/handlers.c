/* handlers.c -- see handlers.h. */
#include "handlers.h"
#include "rpc.h"
#include "tfps.h"

#include <inttypes.h>
#include <pthread.h>
#include <stdalign.h>
#include <stdatomic.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* 1 when x is inf or NaN (all exponent bits set): integer ops, so the scan
 * of a whole gradient vectorizes (isfinite() on each float kept it scalar). */
static inline uint32_t nonfinite(float x) {
    uint32_t u;
    memcpy(&u, &x, sizeof(u));
    return (u & 0x7f800000u) == 0x7f800000u;
}

static int not_owned(const tfps_store *s, int ps_index, const char *what, int i, tfps_wire_range r, char *msg,
                     size_t msglen) {
    char owned[256];
    tfps_store_describe(s, owned, sizeof(owned));
    snprintf(msg, msglen, "%s[%d] range [%" PRIu64 ", %" PRIu64 ") is not owned by ps %d, which owns %s", what, i,
             r.begin, r.end, ps_index, owned);
    return TFPS_RPC_OUT_OF_RANGE;
}

int tfps_handlers_pull(const tfps_store *s, int ps_index, const uint8_t *req, size_t len, tfps_pull *out, char *msg,
                       size_t msglen) {
    tfps_wire_pull_req m;
    void *owner = NULL;
    if (tfps_wire_unpack_pull_req(req, len, &m, &owner, msg, msglen) != TFPS_OK) return TFPS_RPC_INVALID_ARGUMENT;
    tfps_wire_release(owner);   // m holds no pointers into it
    out->worker_id = m.worker_id;
    out->min_version = m.min_version;
    out->clock = m.clock;
    out->session = m.session;
    out->dtype = m.dtype;
    out->n = 0;
    if (m.nranges == 0) {   // everything this ps owns
        for (int i = 0; i < s->nown && i < TFPS_WIRE_MAX_TENSORS; i++) {
            out->ranges[out->n] = (tfps_wire_range){s->own[i].begin, s->own[i].end};
            out->at[out->n++] = s->own[i].at;
        }
        return TFPS_RPC_OK;
    }
    for (int i = 0; i < m.nranges; i++) {
        long long at = tfps_store_locate(s, m.ranges[i].begin, m.ranges[i].end);
        if (at < 0) return not_owned(s, ps_index, "PullRequest.ranges", i, m.ranges[i], msg, msglen);
        for (int j = 0; j < i; j++)   // a range twice would make the reply grow with each copy
            if (m.ranges[i].begin < m.ranges[j].end && m.ranges[j].begin < m.ranges[i].end) {
                snprintf(msg, msglen, "PullRequest.ranges[%d] [%" PRIu64 ", %" PRIu64 ") overlaps ranges[%d]: expected "
                         "each element at most once", i, m.ranges[i].begin, m.ranges[i].end, j);
                return TFPS_RPC_INVALID_ARGUMENT;
            }
        out->ranges[out->n] = m.ranges[i];
        out->at[out->n++] = (size_t)at;
    }
    return TFPS_RPC_OK;
}

/* The calling thread's scratch for gradients that cannot be read in place
 * (grown as needed, freed when the thread ends). */
static pthread_key_t scratch_key;
static pthread_once_t scratch_once = PTHREAD_ONCE_INIT;

typedef struct {
    size_t cap;   /* floats */
    float v[];
} scratch;

static void scratch_key_make(void) {
    if (pthread_key_create(&scratch_key, free) != 0) abort();   // only when the process is out of keys
}

/* The scratch's uses on this thread, and a number per thread (0: none yet). */
static _Thread_local unsigned long scratch_uses;
static _Thread_local unsigned long scratch_thread;
static atomic_ulong scratch_threads;

int tfps_push_valid_here(const tfps_push *p) {
    if (!p->copied) return 1;
    return scratch_thread != 0 && p->scratch_use == (scratch_thread << 32 | (scratch_uses & 0xffffffffu));
}

static float *scratch_get(size_t n) {
    if (!scratch_thread) scratch_thread = atomic_fetch_add(&scratch_threads, 1) + 1;
    scratch_uses++;
    pthread_once(&scratch_once, scratch_key_make);
    scratch *s = pthread_getspecific(scratch_key);
    if (s && s->cap >= n) return s->v;
    scratch *g = malloc(sizeof(*g) + n * sizeof(float));
    if (!g || pthread_setspecific(scratch_key, g) != 0) {
        free(g);
        return NULL;   // the old one stays the thread's
    }
    free(s);
    g->cap = n;
    return g->v;
}

static const float no_values[1];

/* The view as m: fp32 gradients at aligned addresses in place, the others
 * (bf16 / fp16, misaligned fp32) as fp32 in the thread's scratch. */
static int push_from_view(const tfps_wire_push_view *v, tfps_push *out, char *msg, size_t msglen) {
    tfps_wire_push_req *m = &out->m;
    *m = (tfps_wire_push_req){.worker_id = v->worker_id, .base_version = v->base_version, .step = v->step,
                              .loss = v->loss, .batch_size = v->batch_size, .session = v->session,
                              .ntensors = v->ntensors};
    size_t total = 0;
    for (int i = 0; i < v->ntensors; i++) {
        const tfps_wire_tensor_view *g = &v->gradients[i];
        if (g->dtype != TFPS_DTYPE_FP32 || (uintptr_t)g->bytes % alignof(float) != 0)
            total += (size_t)(g->range.end - g->range.begin);
    }
    float *sc = NULL;
    if (total && !(sc = scratch_get(total))) {
        snprintf(msg, msglen, "ps: out of memory decoding a %zu-element gradient", total);
        return TFPS_RPC_RESOURCE_EXHAUSTED;
    }
    out->copied = total > 0;
    out->scratch_use = total > 0 ? scratch_thread << 32 | (scratch_uses & 0xffffffffu) : 0;
    size_t at = 0;
    for (int i = 0; i < v->ntensors; i++) {
        const tfps_wire_tensor_view *g = &v->gradients[i];
        const size_t n = (size_t)(g->range.end - g->range.begin);
        m->gradients[i] = (tfps_wire_tensor){.range = g->range, .dtype = TFPS_DTYPE_FP32};
        if (n == 0) {   // nothing to read (and sc may be NULL): a valid, aligned address
            m->gradients[i].values = no_values;
            continue;
        }
        if (g->dtype == TFPS_DTYPE_FP32 && (uintptr_t)g->bytes % alignof(float) == 0) {
            m->gradients[i].values = (const float *)(const void *)g->bytes;   // in place: no copy
            continue;
        }
        if (g->dtype == TFPS_DTYPE_FP32) memcpy(sc + at, g->bytes, n * sizeof(float));
        else tfps_wire_decode(g->dtype, g->bytes, sc + at, n);
        m->gradients[i].values = sc + at;
        at += n;
    }
    return TFPS_RPC_OK;
}

int tfps_handlers_push(const tfps_store *s, int ps_index, const uint8_t *req, size_t len, tfps_push *out, char *msg,
                       size_t msglen) {
    tfps_wire_push_view v;   // ~2 KB: the stack
    int rc = TFPS_RPC_OK;
    out->copied = 0;
    if (tfps_wire_view_push_req(req, len, &v, msg, msglen) != TFPS_OK) {
        memset(&out->m, 0, sizeof(out->m));
        rc = TFPS_RPC_INVALID_ARGUMENT;
    } else {
        rc = push_from_view(&v, out, msg, msglen);
    }
    if (rc != TFPS_RPC_OK) return rc;
    const tfps_wire_push_req *m = &out->m;
    if (m->ntensors == 0) {
        snprintf(msg, msglen, "PushRequest.gradients is empty: expected the gradient of this ps's ranges");
        return TFPS_RPC_INVALID_ARGUMENT;
    }
    for (int i = 0; i < m->ntensors; i++) {
        const tfps_wire_tensor *g = &m->gradients[i];
        long long at = tfps_store_locate(s, g->range.begin, g->range.end);
        if (at < 0) return not_owned(s, ps_index, "PushRequest.gradients", i, g->range, msg, msglen);
        out->at[i] = (size_t)at;
        for (int j = 0; j < i; j++)   // at most 64 tensors: quadratic is fine
            if (g->range.begin < m->gradients[j].range.end && m->gradients[j].range.begin < g->range.end) {
                snprintf(msg, msglen, "PushRequest.gradients[%d] [%" PRIu64 ", %" PRIu64 ") overlaps gradients[%d]: "
                         "expected each element at most once", i, g->range.begin, g->range.end, j);
                return TFPS_RPC_INVALID_ARGUMENT;
            }
        const size_t n = (size_t)(g->range.end - g->range.begin);
        uint32_t bad = 0;   // no early exit: the common all-finite case runs straight through
        for (size_t k = 0; k < n; k++) bad |= nonfinite(g->values[k]);
        for (size_t k = 0; bad && k < n; k++)   // which one, for the message
            if (!isfinite(g->values[k])) {
                snprintf(msg, msglen, "PushRequest.gradients[%d] holds a non-finite value (%g) at flat index %" PRIu64
                         ": refused, weights unchanged (lower --learning-rate?)", i, (double)g->values[k],
                         g->range.begin + k);
                return TFPS_RPC_INVALID_ARGUMENT;
            }
    }
    return TFPS_RPC_OK;
}

int tfps_handlers_register(const uint8_t *req, size_t len, tfps_wire_register_req *m, void **owner, char *msg,
                           size_t msglen) {
    return tfps_wire_unpack_register_req(req, len, m, owner, msg, msglen) == TFPS_OK ? TFPS_RPC_OK
                                                                                    : TFPS_RPC_INVALID_ARGUMENT;
}

int tfps_handlers_heartbeat(const uint8_t *req, size_t len, tfps_wire_heartbeat_req *m, void **owner, char *msg,
                            size_t msglen) {
    return tfps_wire_unpack_heartbeat_req(req, len, m, owner, msg, msglen) == TFPS_OK ? TFPS_RPC_OK
                                                                                     : TFPS_RPC_INVALID_ARGUMENT;
}

int tfps_handlers_status(const uint8_t *req, size_t len, char *msg, size_t msglen) {
    void *owner = NULL;
    if (tfps_wire_unpack_status_req(req, len, &owner, msg, msglen) != TFPS_OK) return TFPS_RPC_INVALID_ARGUMENT;
    tfps_wire_release(owner);
    return TFPS_RPC_OK;
}

int tfps_handlers_shutdown(const uint8_t *req, size_t len, tfps_wire_shutdown_req *m, void **owner, char *msg,
                           size_t msglen) {
    return tfps_wire_unpack_shutdown_req(req, len, m, owner, msg, msglen) == TFPS_OK ? TFPS_RPC_OK
                                                                                    : TFPS_RPC_INVALID_ARGUMENT;
}

int tfps_handlers_checkpoint(const uint8_t *req, size_t len, tfps_wire_checkpoint_req *m, char *msg, size_t msglen) {
    void *owner = NULL;
    if (tfps_wire_unpack_checkpoint_req(req, len, m, &owner, msg, msglen) != TFPS_OK) return TFPS_RPC_INVALID_ARGUMENT;
    tfps_wire_release(owner);   // only numbers: nothing points into it
    if (m->step == 0) {
        snprintf(msg, msglen, "CheckpointRequest.step 0: expected the global step, at least 1");
        return TFPS_RPC_INVALID_ARGUMENT;
    }
    return TFPS_RPC_OK;
}

void tfps_handlers_sanitize(char *out, size_t n, const char *s) {
    size_t j = 0;
    for (; s && *s && j + 1 < n; s++) out[j++] = (unsigned char)*s < 0x20 || *s == 0x7f ? '?' : *s;
    if (n) out[j] = '\0';
}
