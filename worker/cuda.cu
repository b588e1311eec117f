/* cuda.cu -- the CUDA backend: the CPU reference (cpu.c) on the GPU.
 *
 * Same interface, same flat layout, same numbers within float tolerance
 * (tests/test_cuda.c compares every activation and gradient with cpu.c).
 *
 * Per step: one host->device copy of the pulled weights and one
 * device->host copy of the flat gradient (plus the 4-byte mean loss), both
 * from/to page-locked memory when the caller's buffers came from host_alloc.
 * The batch itself was uploaded on a second stream by prefetch() while the
 * previous step computed (or is uploaded now when no prefetch matched). The three dense layers are cuBLAS sgemm calls in FP32
 * (CUBLAS_DEFAULT_MATH: no TF32); bias+ReLU, softmax cross-entropy and its
 * gradient, and ReLU's backward are small kernels; bias gradients are gemv
 * with a vector of ones.
 *
 * Row-major [rows][cols] arrays are column-major [cols][rows] to cuBLAS, so
 * out[B][OC] = in[B][C] @ W[C][OC] is out^T = W^T in^T: sgemm(N, N, OC, B, C).
 *
 * Every CUDA and cuBLAS call is checked; a failure records file, line, the
 * error and a hint in b->err and returns TFPS_ERR (a daemon must not exit from
 * inside a library). */
#include <cublas_v2.h>
#include <cuda_runtime.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

extern "C" {
#include "backend.h"
#include "tfps.h"
}

namespace {

struct cuda_backend {
    tfps_backend base;   // first: the interface pointer is this struct's address
    int gpu;
    cudaStream_t compute, copy;
    cudaEvent_t uploaded[2];
    cudaEvent_t computed;             // recorded on compute before a prefetch, so it waits for readers
    cublasHandle_t blas;
    float *params, *grads;            // [total], [total + 1]: the mean loss rides after the gradient
    float *x[2];                      // [max_batch][in], double-buffered batch
    uint8_t *y[2];                    // [max_batch]
    const float *staged_x[2];         // host pointers whose batch sits in x[k]
    const uint8_t *staged_y[2];
    int staged_n[2];
    long long prefetch_hits;          // steps whose batch a prefetch had staged
    float *a1, *a2, *logits, *probs;  // activations
    float *d1, *d2, *dlogits;         // their gradients
    float *ones;                      // [max_batch] of 1.0f for bias gradients
    uint8_t *pred;                    // [max_batch]
    float *h_loss;                    // page-locked [1]: the mean loss of the last step
};

const char *blas_name(cublasStatus_t s) {
    switch (s) {
    case CUBLAS_STATUS_SUCCESS: return "CUBLAS_STATUS_SUCCESS";
    case CUBLAS_STATUS_NOT_INITIALIZED: return "CUBLAS_STATUS_NOT_INITIALIZED";
    case CUBLAS_STATUS_ALLOC_FAILED: return "CUBLAS_STATUS_ALLOC_FAILED";
    case CUBLAS_STATUS_INVALID_VALUE: return "CUBLAS_STATUS_INVALID_VALUE";
    case CUBLAS_STATUS_ARCH_MISMATCH: return "CUBLAS_STATUS_ARCH_MISMATCH";
    case CUBLAS_STATUS_EXECUTION_FAILED: return "CUBLAS_STATUS_EXECUTION_FAILED";
    case CUBLAS_STATUS_INTERNAL_ERROR: return "CUBLAS_STATUS_INTERNAL_ERROR";
    case CUBLAS_STATUS_NOT_SUPPORTED: return "CUBLAS_STATUS_NOT_SUPPORTED";
    default: return "cuBLAS error";
    }
}

const char *cuda_hint(cudaError_t e) {
    switch (e) {
    case cudaErrorInsufficientDriver:
    case cudaErrorNoDevice: return "no usable GPU or driver: run with --device cpu";
    case cudaErrorMemoryAllocation: return "GPU out of memory: lower --batch-size or free the GPU";
    case cudaErrorInvalidDevice: return "--gpu is beyond the visible devices (CUDA_VISIBLE_DEVICES)";
    case cudaErrorNoKernelImageForDevice:
    case cudaErrorUnsupportedPtxVersion: return "this build targets sm_90 (+PTX): rebuild for this GPU or use a newer driver";
    default: return "check nvidia-smi; --device cpu always works";
    }
}

int fail_cuda(char *err, size_t n, cudaError_t e, const char *what, const char *file, int line) {
    snprintf(err, n, "%s:%d: %s: %s (%s); %s", file, line, what, cudaGetErrorString(e), cudaGetErrorName(e),
             cuda_hint(e));
    return TFPS_ERR;
}

int fail_blas(char *err, size_t n, cublasStatus_t s, const char *what, const char *file, int line) {
    snprintf(err, n, "%s:%d: %s: %s; check the GPU with nvidia-smi, or use --device cpu", file, line, what,
             blas_name(s));
    return TFPS_ERR;
}

}  // namespace

// Checks inside functions that have `cuda_backend *c`; return TFPS_ERR with c->base.err set.
#define CUDA_TRY(call)                                                                               \
    do {                                                                                             \
        cudaError_t e_ = (call);                                                                     \
        if (e_ != cudaSuccess) return fail_cuda(c->base.err, sizeof(c->base.err), e_, #call, __FILE__, __LINE__); \
    } while (0)
#define BLAS_TRY(call)                                                                               \
    do {                                                                                             \
        cublasStatus_t s_ = (call);                                                                  \
        if (s_ != CUBLAS_STATUS_SUCCESS)                                                             \
            return fail_blas(c->base.err, sizeof(c->base.err), s_, #call, __FILE__, __LINE__);      \
    } while (0)

// ---- kernels ------------------------------------------------------------------

// out[B][OC] += b[OC], then ReLU when relu != 0.
__global__ void bias_act_kernel(float *out, const float *b, int B, int OC, int relu) {
    long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= (long long)B * OC) return;
    float v = out[i] + b[i % OC];
    out[i] = relu && v < 0.0f ? 0.0f : v;
}

// One thread per example: probs = softmax(logits), loss_i, dlogits = (probs - onehot) / B.
__global__ void softmax_xent_kernel(float *probs, float *dlogits, float *losses, const float *logits,
                                    const uint8_t *y, int B, int V) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= B) return;
    const float *z = logits + (size_t)i * V;
    float m = z[0];
    for (int j = 1; j < V; j++) m = fmaxf(m, z[j]);
    float sum = 0.0f;
    for (int j = 0; j < V; j++) sum += expf(z[j] - m);
    const float inv_b = 1.0f / (float)B;
    for (int j = 0; j < V; j++) {
        float p = expf(z[j] - m) / sum;
        probs[(size_t)i * V + j] = p;
        dlogits[(size_t)i * V + j] = (p - (j == y[i] ? 1.0f : 0.0f)) * inv_b;
    }
    losses[i] = logf(sum) - (z[y[i]] - m);
}

// One block: *out = mean of losses[0..B) (sums in double for a stable mean).
__global__ void mean_kernel(float *out, const float *losses, int B) {
    __shared__ double part[256];
    double s = 0.0;
    for (int i = threadIdx.x; i < B; i += blockDim.x) s += losses[i];
    part[threadIdx.x] = s;
    __syncthreads();
    for (int w = blockDim.x / 2; w > 0; w /= 2) {
        if (threadIdx.x < w) part[threadIdx.x] += part[threadIdx.x + w];
        __syncthreads();
    }
    if (threadIdx.x == 0) *out = (float)(part[0] / B);
}

__global__ void relu_backward_kernel(float *d, const float *act, long long n) {
    long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n && act[i] <= 0.0f) d[i] = 0.0f;
}

__global__ void argmax_kernel(uint8_t *pred, const float *logits, int B, int V) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= B) return;
    const float *z = logits + (size_t)i * V;
    int best = 0;
    for (int j = 1; j < V; j++)
        if (z[j] > z[best]) best = j;
    pred[i] = (uint8_t)best;
}

__global__ void fill_kernel(float *p, float v, int n) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) p[i] = v;
}

static unsigned blocks(long long n, int t) { return (unsigned)((n + t - 1) / t); }

// ---- layers ------------------------------------------------------------------

// out[B][OC] = act(in[B][C] @ W[C][OC] + b)
static int dense_forward(cuda_backend *c, float *out, const float *in, const float *W, const float *b, int B, int C,
                         int OC, int relu) {
    const float one = 1.0f, zero = 0.0f;
    BLAS_TRY(cublasSgemm(c->blas, CUBLAS_OP_N, CUBLAS_OP_N, OC, B, C, &one, W, OC, in, C, &zero, out, OC));
    bias_act_kernel<<<blocks((long long)B * OC, 256), 256, 0, c->compute>>>(out, b, B, OC, relu);
    CUDA_TRY(cudaGetLastError());
    return TFPS_OK;
}

// dW[C][OC] = in^T dout; db = column sums of dout; din[B][C] = dout W^T (skipped when NULL).
static int dense_backward(cuda_backend *c, float *din, float *dW, float *db, const float *dout, const float *in,
                          const float *W, int B, int C, int OC) {
    const float one = 1.0f, zero = 0.0f;
    // dW^T (OC x C) = dout^T (OC x B) @ in (B x C)
    BLAS_TRY(cublasSgemm(c->blas, CUBLAS_OP_N, CUBLAS_OP_T, OC, C, B, &one, dout, OC, in, C, &zero, dW, OC));
    // db (OC) = dout^T (OC x B) @ ones (B)
    BLAS_TRY(cublasSgemv(c->blas, CUBLAS_OP_N, OC, B, &one, dout, OC, c->ones, 1, &zero, db, 1));
    // din^T (C x B) = W (C x OC, stored as W^T) @ dout^T (OC x B)
    if (din) BLAS_TRY(cublasSgemm(c->blas, CUBLAS_OP_T, CUBLAS_OP_N, C, B, OC, &one, W, OC, dout, OC, &zero, din, C));
    return TFPS_OK;
}

// A device batch buffer that holds no prefetched batch still waiting for its step.
static int free_buffer(const cuda_backend *c) { return c->staged_x[0] ? 1 : 0; }

// A buffer the compute stream may overwrite now. When both hold prefetched
// batches (a caller that stepped on something else), the second is dropped
// once its upload has landed, so the two copies never race.
static int claim_buffer(cuda_backend *c, int *k) {
    int j = free_buffer(c);
    if (c->staged_x[j]) {
        CUDA_TRY(cudaStreamWaitEvent(c->compute, c->uploaded[j], 0));
        c->staged_x[j] = NULL;
    }
    *k = j;
    return TFPS_OK;
}

// Makes x/y of this step resident in buffer *k: a matching prefetch, or an upload now.
static int stage_batch(cuda_backend *c, const float *x, const uint8_t *y, int B, int *k) {
    const tfps_layout *l = &c->base.layout;
    for (int j = 0; j < 2; j++)
        if (c->staged_x[j] == x && c->staged_y[j] == y && c->staged_n[j] == B) {
            CUDA_TRY(cudaStreamWaitEvent(c->compute, c->uploaded[j], 0));
            c->staged_x[j] = NULL;   // consumed: the host buffer may be refilled
            c->prefetch_hits++;
            *k = j;
            return TFPS_OK;
        }
    int j = 0;
    if (claim_buffer(c, &j)) return TFPS_ERR;
    CUDA_TRY(cudaMemcpyAsync(c->x[j], x, (size_t)B * l->in * sizeof(float), cudaMemcpyHostToDevice, c->compute));
    CUDA_TRY(cudaMemcpyAsync(c->y[j], y, (size_t)B, cudaMemcpyHostToDevice, c->compute));
    *k = j;
    return TFPS_OK;
}

static int forward(cuda_backend *c, int k, int B) {
    const tfps_layout *l = &c->base.layout;
    const float *P = c->params;
    if (dense_forward(c, c->a1, c->x[k], P + l->off[TFPS_VAR_W1], P + l->off[TFPS_VAR_B1], B, l->in, l->h1, 1) ||
        dense_forward(c, c->a2, c->a1, P + l->off[TFPS_VAR_W2], P + l->off[TFPS_VAR_B2], B, l->h1, l->h2, 1) ||
        dense_forward(c, c->logits, c->a2, P + l->off[TFPS_VAR_W3], P + l->off[TFPS_VAR_B3], B, l->h2, l->out, 0))
        return TFPS_ERR;
    return TFPS_OK;
}

// After a failure: let every copy in flight land before the caller may free
// or refill its pinned buffers, and forget staged batches (errors ignored:
// after a sticky error the sync reports it again).
static void drain(cuda_backend *c) {
    cudaStreamSynchronize(c->compute);
    cudaStreamSynchronize(c->copy);
    c->staged_x[0] = c->staged_x[1] = NULL;
}

// rc, after draining when it is a failure.
static int drained(tfps_backend *b, int rc) {
    if (rc != TFPS_OK) drain((cuda_backend *)b);
    return rc;
}

// 1 when B fits the buffers; else 0 with the message in b->err.
static int batch_ok(tfps_backend *b, const char *what, int B) {
    if (B >= 1 && B <= b->max_batch) return 1;
    snprintf(b->err, sizeof(b->err), "%s: batch %d outside 1..%d", what, B, b->max_batch);
    return 0;
}

static int step_once(tfps_backend *b, const float *params, const float *x, const uint8_t *y, int B, float *grads,
                     float *loss) {
    cuda_backend *c = (cuda_backend *)b;
    const tfps_layout *l = &b->layout;
    int k = 0;
    CUDA_TRY(cudaSetDevice(c->gpu));   // current device is per host thread
    // the one host->device copy of the weights
    CUDA_TRY(cudaMemcpyAsync(c->params, params, l->total * sizeof(float), cudaMemcpyHostToDevice, c->compute));
    if (stage_batch(c, x, y, B, &k) || forward(c, k, B)) return TFPS_ERR;
    softmax_xent_kernel<<<blocks(B, 128), 128, 0, c->compute>>>(c->probs, c->dlogits, c->d1 /* scratch */, c->logits,
                                                                 c->y[k], B, l->out);
    CUDA_TRY(cudaGetLastError());
    mean_kernel<<<1, 256, 0, c->compute>>>(c->grads + l->total, c->d1, B);
    CUDA_TRY(cudaGetLastError());
    float *G = c->grads;
    const float *P = c->params;
    if (dense_backward(c, c->d2, G + l->off[TFPS_VAR_W3], G + l->off[TFPS_VAR_B3], c->dlogits, c->a2,
                       P + l->off[TFPS_VAR_W3], B, l->h2, l->out))
        return TFPS_ERR;
    relu_backward_kernel<<<blocks((long long)B * l->h2, 256), 256, 0, c->compute>>>(c->d2, c->a2, (long long)B * l->h2);
    CUDA_TRY(cudaGetLastError());
    if (dense_backward(c, c->d1, G + l->off[TFPS_VAR_W2], G + l->off[TFPS_VAR_B2], c->d2, c->a1,
                       P + l->off[TFPS_VAR_W2], B, l->h1, l->h2))
        return TFPS_ERR;
    relu_backward_kernel<<<blocks((long long)B * l->h1, 256), 256, 0, c->compute>>>(c->d1, c->a1, (long long)B * l->h1);
    CUDA_TRY(cudaGetLastError());
    // the input needs no gradient: din = NULL skips the largest sgemm
    if (dense_backward(c, NULL, G + l->off[TFPS_VAR_W1], G + l->off[TFPS_VAR_B1], c->d1, c->x[k],
                       P + l->off[TFPS_VAR_W1], B, l->in, l->h1))
        return TFPS_ERR;
    // the one device->host copy of the flat gradient, straight into the caller's buffer (page-locked
    // when it came from host_alloc, as the worker's do), and the 4-byte mean loss beside it
    CUDA_TRY(cudaMemcpyAsync(grads, c->grads, l->total * sizeof(float), cudaMemcpyDeviceToHost, c->compute));
    CUDA_TRY(cudaMemcpyAsync(c->h_loss, c->grads + l->total, sizeof(float), cudaMemcpyDeviceToHost, c->compute));
    CUDA_TRY(cudaStreamSynchronize(c->compute));
    *loss = *c->h_loss;
    return TFPS_OK;
}

static int cuda_step(tfps_backend *b, const float *params, const float *x, const uint8_t *y, int B, float *grads,
                     float *loss) {
    if (!batch_ok(b, "step", B)) return TFPS_ERR;
    return drained(b, step_once(b, params, x, y, B, grads, loss));
}

static int predict_once(tfps_backend *b, const float *params, const float *x, int B, uint8_t *pred, float *logits) {
    cuda_backend *c = (cuda_backend *)b;
    const tfps_layout *l = &b->layout;
    int k = 0;
    CUDA_TRY(cudaSetDevice(c->gpu));
    if (claim_buffer(c, &k)) return TFPS_ERR;
    CUDA_TRY(cudaMemcpyAsync(c->params, params, l->total * sizeof(float), cudaMemcpyHostToDevice, c->compute));
    CUDA_TRY(cudaMemcpyAsync(c->x[k], x, (size_t)B * l->in * sizeof(float), cudaMemcpyHostToDevice, c->compute));
    if (forward(c, k, B)) return TFPS_ERR;
    argmax_kernel<<<blocks(B, 128), 128, 0, c->compute>>>(c->pred, c->logits, B, l->out);
    CUDA_TRY(cudaGetLastError());
    CUDA_TRY(cudaMemcpyAsync(pred, c->pred, (size_t)B, cudaMemcpyDeviceToHost, c->compute));
    if (logits)
        CUDA_TRY(cudaMemcpyAsync(logits, c->logits, (size_t)B * l->out * sizeof(float), cudaMemcpyDeviceToHost,
                                 c->compute));
    CUDA_TRY(cudaStreamSynchronize(c->compute));
    return TFPS_OK;
}

static int cuda_predict(tfps_backend *b, const float *params, const float *x, int B, uint8_t *pred, float *logits) {
    if (!batch_ok(b, "predict", B)) return TFPS_ERR;
    return drained(b, predict_once(b, params, x, B, pred, logits));
}

static int prefetch_once(tfps_backend *b, const float *x, const uint8_t *y, int B) {
    cuda_backend *c = (cuda_backend *)b;
    const tfps_layout *l = &b->layout;
    CUDA_TRY(cudaSetDevice(c->gpu));
    int j = free_buffer(c);
    // the buffer may still be read by the step in flight on the compute stream: order after it
    CUDA_TRY(cudaEventRecord(c->computed, c->compute));
    CUDA_TRY(cudaStreamWaitEvent(c->copy, c->computed, 0));
    CUDA_TRY(cudaMemcpyAsync(c->x[j], x, (size_t)B * l->in * sizeof(float), cudaMemcpyHostToDevice, c->copy));
    CUDA_TRY(cudaMemcpyAsync(c->y[j], y, (size_t)B, cudaMemcpyHostToDevice, c->copy));
    CUDA_TRY(cudaEventRecord(c->uploaded[j], c->copy));
    c->staged_x[j] = x;
    c->staged_y[j] = y;
    c->staged_n[j] = B;
    return TFPS_OK;
}

static int cuda_prefetch(tfps_backend *b, const float *x, const uint8_t *y, int B) {
    if (!batch_ok(b, "prefetch", B)) return TFPS_ERR;
    cuda_backend *c = (cuda_backend *)b;
    if (c->staged_x[0] && c->staged_x[1]) {   // refused before anything is queued: both stay staged
        snprintf(b->err, sizeof(b->err), "prefetch: two batches already staged; call step in between");
        return TFPS_ERR;
    }
    return drained(b, prefetch_once(b, x, y, B));
}

static void *cuda_host_alloc(tfps_backend *b, size_t bytes) {
    cuda_backend *c = (cuda_backend *)b;
    void *p = NULL;
    if (cudaSetDevice(c->gpu) != cudaSuccess) return NULL;
    return cudaMallocHost(&p, bytes ? bytes : 1) == cudaSuccess ? p : NULL;
}

static void cuda_host_free(tfps_backend *b, void *p) {
    cuda_backend *c = (cuda_backend *)b;
    if (!p) return;
    // a prefetch never stepped on may still be reading p
    cudaSetDevice(c->gpu);
    cudaStreamSynchronize(c->copy);
    cudaStreamSynchronize(c->compute);
    cudaFreeHost(p);
}

static void cuda_free(tfps_backend *b) {
    cuda_backend *c = (cuda_backend *)b;
    if (!c) return;
    cudaSetDevice(c->gpu);
    if (c->compute) cudaStreamSynchronize(c->compute);
    if (c->copy) cudaStreamSynchronize(c->copy);
    void *dev[] = {c->params, c->grads, c->x[0], c->x[1], c->y[0], c->y[1], c->a1, c->a2, c->logits,
                   c->probs, c->d1, c->d2, c->dlogits, c->ones, c->pred};
    for (size_t i = 0; i < sizeof(dev) / sizeof(dev[0]); i++)
        if (dev[i]) cudaFree(dev[i]);
    if (c->h_loss) cudaFreeHost(c->h_loss);
    for (int j = 0; j < 2; j++)
        if (c->uploaded[j]) cudaEventDestroy(c->uploaded[j]);
    if (c->computed) cudaEventDestroy(c->computed);
    if (c->blas) cublasDestroy(c->blas);
    if (c->compute) cudaStreamDestroy(c->compute);
    if (c->copy) cudaStreamDestroy(c->copy);
    free(c);
}

static int cuda_init(cuda_backend *c, const tfps_layout *l, int max_batch, int gpu) {
    const size_t B = (size_t)max_batch;
    CUDA_TRY(cudaSetDevice(gpu));
    CUDA_TRY(cudaStreamCreateWithFlags(&c->compute, cudaStreamNonBlocking));
    CUDA_TRY(cudaStreamCreateWithFlags(&c->copy, cudaStreamNonBlocking));
    for (int j = 0; j < 2; j++) CUDA_TRY(cudaEventCreateWithFlags(&c->uploaded[j], cudaEventDisableTiming));
    CUDA_TRY(cudaEventCreateWithFlags(&c->computed, cudaEventDisableTiming));
    BLAS_TRY(cublasCreate(&c->blas));
    BLAS_TRY(cublasSetStream(c->blas, c->compute));
    BLAS_TRY(cublasSetMathMode(c->blas, CUBLAS_DEFAULT_MATH));   // FP32 throughout: no TF32, to match the CPU
    CUDA_TRY(cudaMalloc((void **)&c->params, l->total * sizeof(float)));
    CUDA_TRY(cudaMalloc((void **)&c->grads, (l->total + 1) * sizeof(float)));
    for (int j = 0; j < 2; j++) {
        CUDA_TRY(cudaMalloc((void **)&c->x[j], B * l->in * sizeof(float)));
        CUDA_TRY(cudaMalloc((void **)&c->y[j], B));
    }
    CUDA_TRY(cudaMalloc((void **)&c->a1, B * l->h1 * sizeof(float)));
    CUDA_TRY(cudaMalloc((void **)&c->a2, B * l->h2 * sizeof(float)));
    CUDA_TRY(cudaMalloc((void **)&c->logits, B * l->out * sizeof(float)));
    CUDA_TRY(cudaMalloc((void **)&c->probs, B * l->out * sizeof(float)));
    // d1 doubles as the per-example loss scratch: it needs B floats, it has B * h1
    CUDA_TRY(cudaMalloc((void **)&c->d1, B * l->h1 * sizeof(float)));
    CUDA_TRY(cudaMalloc((void **)&c->d2, B * l->h2 * sizeof(float)));
    CUDA_TRY(cudaMalloc((void **)&c->dlogits, B * l->out * sizeof(float)));
    CUDA_TRY(cudaMalloc((void **)&c->ones, B * sizeof(float)));
    CUDA_TRY(cudaMalloc((void **)&c->pred, B));
    CUDA_TRY(cudaMallocHost((void **)&c->h_loss, sizeof(float)));
    fill_kernel<<<blocks((long long)B, 256), 256, 0, c->compute>>>(c->ones, 1.0f, max_batch);
    CUDA_TRY(cudaGetLastError());
    CUDA_TRY(cudaStreamSynchronize(c->compute));
    return TFPS_OK;
}

extern "C" int tfps_cuda_probe(int gpu, char *name, size_t namelen, size_t *mem_bytes, char *err, size_t errlen) {
    int n = 0;
    cudaError_t e = cudaGetDeviceCount(&n);
    int drv = 0, rt = 0;
    if (e != cudaSuccess && cudaDriverGetVersion(&drv) == cudaSuccess && cudaRuntimeGetVersion(&rt) == cudaSuccess &&
        drv > 0 && drv < rt) {
        // a driver is installed (so most likely a GPU too) but predates this build's runtime
        snprintf(err, errlen,
                 "the NVIDIA driver supports CUDA %d.%d but this build's runtime is CUDA %d.%d; update the driver "
                 "(CUDA 13 needs R580 or newer) or use --device cpu",
                 drv / 1000, drv % 1000 / 10, rt / 1000, rt % 1000 / 10);
        return -1;
    }
    if (e != cudaSuccess || n == 0) {
        // with no driver this is cudaErrorInsufficientDriver (35) and the driver version 0
        snprintf(err, errlen, "cudaGetDeviceCount found no device (%s)",
                 e == cudaSuccess ? "count 0"
                 : drv == 0 && e == cudaErrorInsufficientDriver ? "no NVIDIA driver is loaded"
                                                                : cudaGetErrorString(e));
        return 0;
    }
    if (gpu < 0 || gpu >= n) {
        snprintf(err, errlen, "--gpu %d: %d visible device(s) (0..%d; CUDA_VISIBLE_DEVICES applies)", gpu, n, n - 1);
        return 0;
    }
    cudaDeviceProp p;
    e = cudaGetDeviceProperties(&p, gpu);
    if (e != cudaSuccess) {
        snprintf(err, errlen, "cudaGetDeviceProperties(%d): %s", gpu, cudaGetErrorString(e));
        return 0;
    }
    if (name) snprintf(name, namelen, "%s (sm_%d%d)", p.name, p.major, p.minor);
    if (mem_bytes) *mem_bytes = p.totalGlobalMem;
    return n;
}

extern "C" tfps_backend *tfps_cuda_backend_new(const tfps_layout *l, int max_batch, int gpu, char *err,
                                               size_t errlen) {
    if (max_batch < 1) {
        snprintf(err, errlen, "cuda backend: max batch %d: expected >= 1", max_batch);
        return NULL;
    }
    cuda_backend *c = (cuda_backend *)calloc(1, sizeof(*c));
    if (!c) {
        snprintf(err, errlen, "cuda backend: out of host memory");
        return NULL;
    }
    c->gpu = gpu;
    c->base.name = "cuda";
    c->base.layout = *l;
    c->base.max_batch = max_batch;
    c->base.step = cuda_step;
    c->base.predict = cuda_predict;
    c->base.free = cuda_free;
    c->base.prefetch = cuda_prefetch;
    c->base.host_alloc = cuda_host_alloc;
    c->base.host_free = cuda_host_free;
    if (cuda_init(c, l, max_batch, gpu) != TFPS_OK) {
        snprintf(err, errlen, "cuda backend: %s", c->base.err);
        cuda_free(&c->base);   // half-built: release what was allocated
        return NULL;
    }
    return &c->base;
}

extern "C" int tfps_cuda_activations(tfps_backend *b, int B, float *a1, float *a2, float *probs) {
    cuda_backend *c = (cuda_backend *)b;
    const tfps_layout *l = &b->layout;
    if (!batch_ok(b, "activations", B)) return TFPS_ERR;
    CUDA_TRY(cudaSetDevice(c->gpu));
    CUDA_TRY(cudaStreamSynchronize(c->compute));
    CUDA_TRY(cudaMemcpy(a1, c->a1, (size_t)B * l->h1 * sizeof(float), cudaMemcpyDeviceToHost));
    CUDA_TRY(cudaMemcpy(a2, c->a2, (size_t)B * l->h2 * sizeof(float), cudaMemcpyDeviceToHost));
    CUDA_TRY(cudaMemcpy(probs, c->probs, (size_t)B * l->out * sizeof(float), cudaMemcpyDeviceToHost));
    return TFPS_OK;
}

extern "C" long long tfps_cuda_prefetch_hits(const tfps_backend *b) {
    return ((const cuda_backend *)b)->prefetch_hits;
}
