/* wire.h -- the tfps messages as C structs, and the ONLY module that calls
 * protobuf-c (proto/tfps.proto, package tfps.v1; grpc.health.v1 for probes),
 * but for its siblings for file formats, tfevents.c (TensorBoard event files)
 * and onnx.c (model.onnx).
 *
 * Packing: the caller fills a struct whose pointers point into memory it
 * owns (no copies), and tfps_wire_pack_* serialises it into a reusable
 * tfps_buf (grown as needed, never shrunk: no ~1 MB malloc per call).
 *
 * Unpacking: tfps_wire_unpack_* parses bytes into the struct; tensor values
 * and strings then point into memory owned by *owner, valid until
 * tfps_wire_release(owner). Malformed bytes, a tensor whose byte length is not
 * 4 * (end - begin), end < begin, or more than TFPS_WIRE_MAX_TENSORS tensors
 * give TFPS_ERR with a message; nothing is then owned.
 *
 * Tensors are little-endian fp32 in `bytes` (this code assumes a
 * little-endian host, checked at compile time), or bf16 / fp16 (2 bytes per
 * element, Tensor.dtype) when a worker asks for them (--wire-dtype). */
#ifndef TFPS_WIRE_H
#define TFPS_WIRE_H

#include <stddef.h>
#include <stdint.h>

#define TFPS_WIRE_MAX_TENSORS 64
#define TFPS_SESSION_LEN 16        /* bytes of a session token */
#define TFPS_WIRE_MAX_SECRET 1024  /* bytes of a job secret */
#define TFPS_WIRE_SHUTDOWN_REASON_MAX 400   /* bytes of a Shutdown reason the chief sends and a ps logs */

/* A session: 16 random bytes a ps hands out at Register; all zero = none
 * (the field absent on the wire). */
typedef struct {
    uint8_t b[TFPS_SESSION_LEN];
} tfps_session;
int tfps_session_is_set(const tfps_session *s);
/* Constant-time comparisons (no early exit on the first differing byte). */
int tfps_session_equal(const tfps_session *a, const tfps_session *b);
int tfps_secret_equal(const uint8_t *a, size_t alen, const uint8_t *b, size_t blen);

typedef struct {
    uint8_t *data;
    size_t len, cap;
} tfps_buf;
void tfps_buf_free(tfps_buf *b);

typedef struct {
    uint64_t begin, end;   /* flat element range [begin, end) */
} tfps_wire_range;

/* The number formats of tensor values on the wire (tfps.proto DType; the
 * order of --wire-dtype's names). */
typedef enum { TFPS_DTYPE_FP32 = 0, TFPS_DTYPE_BF16 = 1, TFPS_DTYPE_FP16 = 2 } tfps_wire_dtype;
#define TFPS_DTYPE_COUNT 3
const char *tfps_wire_dtype_name(int dtype);      /* "fp32", "bf16", "fp16"; "?" otherwise */
static inline size_t tfps_wire_dtype_size(int dtype) { return dtype == TFPS_DTYPE_FP32 ? 4 : 2; }

/* fp32 -> bf16 or fp16, rounded to nearest even; NaN and inf stay what
 * they are, and a finite value stays finite (it saturates at the largest
 * finite value: +-65504 in fp16, +-3.39e38 in bf16). */
void tfps_wire_encode(int dtype, const float *src, uint16_t *dst, size_t n);
/* The same with error feedback: v = src + residual is encoded, and residual
 * becomes v - decoded(v) (what the rounding left out, sent with the next
 * step's gradient). */
void tfps_wire_encode_ef(int dtype, const float *src, float *residual, uint16_t *dst, size_t n);
/* bf16 or fp16 -> fp32 (exact); src: 2 * n little-endian bytes, any alignment. */
void tfps_wire_decode(int dtype, const uint8_t *src, float *dst, size_t n);

typedef struct {
    tfps_wire_range range;
    const float *values;   /* fp32: end - begin floats; when unpacked: 4-byte aligned, inside the owner */
    int dtype;             /* tfps_wire_dtype; not fp32: the values are in `half` (values NULL) */
    const uint16_t *half;  /* bf16/fp16: end - begin elements; when unpacked: inside the owner */
} tfps_wire_tensor;

typedef struct {
    const char *task_type;     /* "chief", "worker", ... */
    uint32_t task_index;
    uint32_t worker_rank;      /* 0..num_workers-1 among training replicas */
    uint32_t num_workers;
    uint32_t num_ps;
    uint32_t input, h1, h2, classes;
    uint64_t layout_digest;
    uint64_t shard_plan_digest;
    const char *shard_strategy;
    uint64_t seed;
    double learning_rate;
    const char *consistency;   /* "async", "sync", "ssp" */
    uint32_t replicas_to_aggregate;
    uint32_t staleness;
    const char *optimizer;     /* tfps_optim_describe text */
    uint64_t optimizer_digest;
    uint64_t clock;            /* a re-registering worker's pushes so far */
    const uint8_t *job_secret; /* job_secret_len bytes (at most TFPS_WIRE_MAX_SECRET); NULL/0: none */
    size_t job_secret_len;
    tfps_session session;      /* a re-registration: the session this process holds */
    tfps_session instance;     /* random per process: a Register whose reply was lost is the same process */
} tfps_wire_register_req;

typedef struct {
    uint32_t worker_id;
    uint64_t version;
    uint32_t ps_index;
    uint64_t clock;            /* pushes this ps has from the rank */
    uint64_t restored_step;    /* the checkpoint this ps restored at start (0: none) */
    tfps_session session;      /* carried by every later call to this ps */
} tfps_wire_register_resp;

typedef struct {
    uint32_t worker_id;
    uint64_t min_version;
    uint64_t clock;            /* ssp: steps this worker has pushed */
    tfps_session session;
    int dtype;                 /* tfps_wire_dtype the weights are wanted in */
    int nranges;
    tfps_wire_range ranges[TFPS_WIRE_MAX_TENSORS];
} tfps_wire_pull_req;

/* An evaluation on the test set (tfps.proto Evaluation); count 0: none. */
typedef struct {
    uint32_t count;            /* evaluations reported so far */
    uint64_t step;             /* global step of the weights evaluated */
    double accuracy, loss;
} tfps_wire_eval;

typedef struct {
    uint64_t version;
    int ntensors;
    tfps_wire_tensor tensors[TFPS_WIRE_MAX_TENSORS];
    double held_s;             /* seconds the ps held the pull before answering */
    uint64_t examples;         /* examples in the pushes this ps applied */
    tfps_wire_eval eval;       /* the evaluator's latest report to this ps */
    /* packing only: bytes appended after the message (a PushPull's push outcome, tfps_wire_push_tail) */
    const uint8_t *tail;
    size_t tail_len;
} tfps_wire_pull_resp;

typedef struct {
    uint32_t worker_id;
    uint64_t base_version;
    uint64_t step;
    float loss;
    uint32_t batch_size;
    tfps_session session;
    int ntensors;
    tfps_wire_tensor gradients[TFPS_WIRE_MAX_TENSORS];
} tfps_wire_push_req;

typedef struct {
    int applied;               /* 0: dropped as stale (or, async/ssp, refused as non-finite) */
    uint64_t version;
    int nonfinite;             /* an update with this worker's gradient was refused as non-finite (tfps.proto) */
} tfps_wire_push_resp;

typedef struct {
    uint32_t worker_id;
    uint64_t step;
    uint64_t examples;
    int done;                  /* this worker finished training */
    tfps_session session;
    tfps_wire_eval eval;       /* the evaluator: its latest evaluation (count > 0) */
} tfps_wire_heartbeat_req;

typedef struct {
    uint64_t version;
    uint32_t workers_registered;
    uint32_t workers_done;
    int shutting_down;
    uint32_t workers_dead;
    int chief_done;            /* rank 0 (the chief) reported done */
} tfps_wire_heartbeat_resp;

typedef struct {
    uint64_t version, applied, refused, bytes_in, bytes_out;
    double uptime_s;
    uint32_t ps_index;
    uint32_t workers_registered, workers_done;
    uint64_t examples;         /* examples in the pushes applied (their batch sizes) */
    const char *consistency, *optimizer;
    uint64_t dropped;          /* sync: stale gradients dropped */
    double wait_s;             /* seconds pulls were held, all workers */
    uint64_t max_lead;         /* ssp: largest clock lead of a reader over the slowest live worker */
    uint32_t held;             /* calls held now */
    uint64_t aggregated;       /* sync: gradients averaged into steps */
    uint32_t workers_dead;     /* replicas that stopped calling */
    uint64_t checkpoints, last_checkpoint_step, restored_step;
    double checkpoint_pause_s; /* the longest snapshot pause */
    uint64_t unauthenticated;  /* calls refused for a missing or wrong session or job secret */
    uint64_t nonfinite;        /* updates refused: they would have made the state non-finite */
    tfps_wire_eval eval;       /* the evaluator's latest report */
} tfps_wire_status_resp;

typedef struct {
    uint32_t worker_id;
    uint64_t step;             /* global step: the shard goes to step-<step>/ */
    uint64_t version;          /* sync: snapshot at this version; 0: now */
    tfps_session session;      /* the chief's */
} tfps_wire_checkpoint_req;

typedef struct {
    uint32_t ps_index;
    uint64_t version, bytes;
    uint32_t crc;
    double pause_s, write_s;
} tfps_wire_checkpoint_resp;

typedef struct {
    const char *reason;
    int failed;                /* the job failed: the ps exits 1 */
    uint32_t worker_id;        /* the chief's (1) */
    tfps_session session;      /* the chief's: only the chief may stop a ps */
} tfps_wire_shutdown_req;

/* Pack into out (out->len set; previous contents replaced). TFPS_OK/TFPS_ERR (OOM). */
int tfps_wire_pack_register_req(const tfps_wire_register_req *m, tfps_buf *out);
int tfps_wire_pack_register_resp(const tfps_wire_register_resp *m, tfps_buf *out);
int tfps_wire_pack_pull_req(const tfps_wire_pull_req *m, tfps_buf *out);
int tfps_wire_pack_pull_resp(const tfps_wire_pull_resp *m, tfps_buf *out);
int tfps_wire_pack_push_req(const tfps_wire_push_req *m, tfps_buf *out);
int tfps_wire_pack_push_resp(const tfps_wire_push_resp *m, tfps_buf *out);
int tfps_wire_pack_heartbeat_req(const tfps_wire_heartbeat_req *m, tfps_buf *out);
int tfps_wire_pack_heartbeat_resp(const tfps_wire_heartbeat_resp *m, tfps_buf *out);
int tfps_wire_pack_status_req(tfps_buf *out);
int tfps_wire_pack_status_resp(const tfps_wire_status_resp *m, tfps_buf *out);
int tfps_wire_pack_shutdown_req(const tfps_wire_shutdown_req *m, tfps_buf *out);
int tfps_wire_pack_shutdown_resp(tfps_buf *out);
int tfps_wire_pack_checkpoint_req(const tfps_wire_checkpoint_req *m, tfps_buf *out);
int tfps_wire_pack_checkpoint_resp(const tfps_wire_checkpoint_resp *m, tfps_buf *out);
/* grpc.health.v1.HealthCheckResponse {status: SERVING (1) or NOT_SERVING (2)} */
int tfps_wire_pack_health_resp(int serving, tfps_buf *out);

/* PushPull (tfps.proto): a PushPullRequest of push (packed in place into
 * out: its tensors are read once, not copied first) and the pull already
 * packed (pull_packed). Like tfps_wire_pack_push_req, each gradient's values
 * start at a multiple of 4 bytes from out->data (see tfps_wire_view_push_req). */
int tfps_wire_pack_pushpull_req(const tfps_wire_push_req *push, const tfps_buf *pull_packed, tfps_buf *out);
/* The two embedded messages of a PushPullRequest as byte ranges of data (no
 * copy), for the Push and Pull decoders. TFPS_ERR with err unless it holds
 * exactly one push (field 1) and one pull (field 2), well framed. */
int tfps_wire_split_pushpull_req(const uint8_t *data, size_t len, const uint8_t **push, size_t *push_len,
                                 const uint8_t **pull, size_t *pull_len, char *err, size_t errlen);
/* A push's outcome as PushPullResponse's fields 16..18, to append to a
 * packed PullResponse (tfps_wire_pull_resp.tail): the two merge into one
 * PushPullResponse. Writes at most TFPS_WIRE_PUSH_TAIL_MAX bytes; returns
 * how many. */
#define TFPS_WIRE_PUSH_TAIL_MAX 32
size_t tfps_wire_push_tail(const tfps_wire_push_resp *r, uint8_t *tail);
/* A PushPullResponse: the pull's part into *pull (tensors pointing into
 * *owner), the push's into *push. */
int tfps_wire_unpack_pushpull_resp(const uint8_t *data, size_t len, tfps_wire_pull_resp *pull,
                                   tfps_wire_push_resp *push, void **owner, char *err, size_t errlen);

/* Unpack; on TFPS_OK *owner must be released with tfps_wire_release. */
int tfps_wire_unpack_register_req(const uint8_t *data, size_t len, tfps_wire_register_req *m, void **owner, char *err,
                                  size_t errlen);
int tfps_wire_unpack_register_resp(const uint8_t *data, size_t len, tfps_wire_register_resp *m, void **owner,
                                   char *err, size_t errlen);
int tfps_wire_unpack_pull_req(const uint8_t *data, size_t len, tfps_wire_pull_req *m, void **owner, char *err,
                              size_t errlen);
int tfps_wire_unpack_pull_resp(const uint8_t *data, size_t len, tfps_wire_pull_resp *m, void **owner, char *err,
                               size_t errlen);
int tfps_wire_unpack_push_req(const uint8_t *data, size_t len, tfps_wire_push_req *m, void **owner, char *err,
                              size_t errlen);
int tfps_wire_unpack_push_resp(const uint8_t *data, size_t len, tfps_wire_push_resp *m, void **owner, char *err,
                               size_t errlen);
int tfps_wire_unpack_heartbeat_req(const uint8_t *data, size_t len, tfps_wire_heartbeat_req *m, void **owner,
                                   char *err, size_t errlen);
int tfps_wire_unpack_heartbeat_resp(const uint8_t *data, size_t len, tfps_wire_heartbeat_resp *m, void **owner,
                                    char *err, size_t errlen);
int tfps_wire_unpack_status_req(const uint8_t *data, size_t len, void **owner, char *err, size_t errlen);
int tfps_wire_unpack_status_resp(const uint8_t *data, size_t len, tfps_wire_status_resp *m, void **owner, char *err,
                                 size_t errlen);
int tfps_wire_unpack_shutdown_req(const uint8_t *data, size_t len, tfps_wire_shutdown_req *m, void **owner, char *err,
                                  size_t errlen);
int tfps_wire_unpack_shutdown_resp(const uint8_t *data, size_t len, void **owner, char *err, size_t errlen);
int tfps_wire_unpack_checkpoint_req(const uint8_t *data, size_t len, tfps_wire_checkpoint_req *m, void **owner,
                                    char *err, size_t errlen);
int tfps_wire_unpack_checkpoint_resp(const uint8_t *data, size_t len, tfps_wire_checkpoint_resp *m, void **owner,
                                     char *err, size_t errlen);
/* Health: the request's service name (may be ""). */
int tfps_wire_unpack_health_req(const uint8_t *data, size_t len, const char **service, void **owner, char *err,
                                size_t errlen);
int tfps_wire_unpack_health_resp(const uint8_t *data, size_t len, int *status, void **owner, char *err, size_t errlen);
void tfps_wire_release(void *owner);   /* NULL-safe */

/* Zero-copy reading of a PullResponse or PushPullResponse (the worker's hot
 * path): tensors point into data itself, so the weights are copied once,
 * from the received bytes into their place. Stricter than protobuf (what
 * our ps sends always passes): a Tensor needs exactly one range and one
 * values field of size(dtype) * (end - begin) bytes, at most TFPS_WIRE_MAX_TENSORS
 * tensors, no message field twice, known fields with their wire type;
 * unknown fields are skipped; a repeated scalar keeps the last. Whatever
 * it accepts, tfps_wire_unpack_pushpull_resp reads the same (fuzz_wire
 * checks). */
typedef struct {
    tfps_wire_range range;
    int dtype;              /* tfps_wire_dtype */
    const uint8_t *bytes;   /* size(dtype) * (end - begin) little-endian bytes, not aligned: memcpy or decode them;
                               NULL when a message in segments has them across two or more (tfps_wire_view_copy) */
    size_t at;              /* their first byte's position in the message */
} tfps_wire_tensor_view;

typedef struct {
    uint64_t version, examples;
    double held_s;
    tfps_wire_eval eval;
    int ntensors;
    tfps_wire_tensor_view tensors[TFPS_WIRE_MAX_TENSORS];
    tfps_wire_push_resp push;   /* a PushPullResponse's push_* fields (zero for a PullResponse) */
} tfps_wire_pull_view;

int tfps_wire_view_pull_resp(const uint8_t *data, size_t len, tfps_wire_pull_view *v, char *err, size_t errlen);

/* The same over a message held in segments (gRPC's received slices, in
 * order), read where they are: the weights go from the received bytes into
 * their place in one copy (tfps_wire_view_copy). Reads exactly what the
 * one-piece reader reads of the concatenation (test_wire, fuzz_wire). */
typedef struct {
    const uint8_t *p;
    size_t len;
} tfps_wire_seg;
int tfps_wire_view_pull_resp_segs(const tfps_wire_seg *segs, int nsegs, tfps_wire_pull_view *v, char *err,
                                  size_t errlen);
/* Tensor t of a view of segs, as fp32 into dst (end - begin floats): copied,
 * or decoded from bf16 / fp16, also across segment boundaries. TFPS_ERR
 * (nothing written) if t does not lie inside segs. */
int tfps_wire_view_copy(const tfps_wire_seg *segs, int nsegs, const tfps_wire_tensor_view *t, float *dst);

/* Zero-copy reading of a PushRequest (the ps's hot path), with the same
 * rules as the pull view; the session is empty or 16 bytes. Gradients point
 * into data: tfps_wire_pack_push_req and _pushpull_req put each one's values
 * at a multiple of 4 bytes from the start of the request (Tensor.pad), so a
 * receiver whose buffer is 4-byte aligned can read fp32 values in place.
 * Whatever it accepts, tfps_wire_unpack_push_req reads the same (fuzz_wire). */
typedef struct {
    uint32_t worker_id;
    uint64_t base_version, step;
    float loss;
    uint32_t batch_size;
    tfps_session session;
    int ntensors;
    tfps_wire_tensor_view gradients[TFPS_WIRE_MAX_TENSORS];
} tfps_wire_push_view;

int tfps_wire_view_push_req(const uint8_t *data, size_t len, tfps_wire_push_view *v, char *err, size_t errlen);

#endif
