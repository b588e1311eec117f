/* backend.h -- the gradient backend interface a worker computes with.
 *
 * One interface, two implementations: the CPU reference (cpu.c, OpenBLAS +
 * plain loops) and the CUDA backend (its own issue). Both take the flat
 * parameter array of layout.h and produce the flat gradient in the same
 * layout, so the result can be pushed shard by shard without copies.
 *
 * Shapes: x [B][in] fp32 (pixels / 255), y [B] class ids < out,
 * params and grads [layout.total]. The loss is the batch MEAN of the softmax
 * cross-entropy, and grads is its exact gradient. */
#ifndef TFPS_BACKEND_H
#define TFPS_BACKEND_H

#include "layout.h"
#include "options.h"

#include <stdint.h>

typedef struct tfps_backend tfps_backend;

struct tfps_backend {
    const char *name;           /* "cpu", "cuda" */
    tfps_layout layout;
    int max_batch;
    /* grads = d(mean loss)/d(params) on the batch; *loss = mean loss. */
    int (*step)(tfps_backend *b, const float *params, const float *x, const uint8_t *y, int B, float *grads,
                float *loss);
    /* pred[i] = argmax of the logits of example i; logits [B][out] too
     * when not NULL (evaluation loss, tfps-predict's probabilities). */
    int (*predict)(tfps_backend *b, const float *params, const float *x, int B, uint8_t *pred, float *logits);
    void (*free)(tfps_backend *b);
    /* Optional (NULL on the CPU). Starts uploading the batch that the NEXT
     * step will be called with (same x and y pointers) while the current step
     * computes; x and y must come from host_alloc and stay unchanged until
     * that step. */
    int (*prefetch)(tfps_backend *b, const float *x, const uint8_t *y, int B);
    /* Host memory for params, grads and batches: page-locked on the GPU, so
     * the copies are DMA and can overlap; malloc on the CPU. */
    void *(*host_alloc)(tfps_backend *b, size_t bytes);
    void (*host_free)(tfps_backend *b, void *p);
    char err[256];   /* the last failure, for the caller's message */
};

/* Opens the backend --device asks for (backend.c): CUDA when asked for, or on
 * auto when a GPU is found, else the CPU; sets the OpenBLAS threads
 * (--threads). Returns NULL with a message in err; *usage is then 1 when the
 * cause is the user's choice (exit 2). */
tfps_backend *tfps_backend_open(const tfps_options *o, const tfps_layout *l, int max_batch, int *usage, char *err,
                                size_t errlen);

/* host_alloc / host_free through the backend, malloc/free when it has none. */
void *tfps_backend_host_alloc(tfps_backend *b, size_t bytes);
void tfps_backend_host_free(tfps_backend *b, void *p);

/* CUDA backend (cuda.cu; built when nvcc is found, TFPS_WITH_CUDA). probe:
 * the number of usable devices and device gpu's name and memory; 0 with the
 * reason in err when there is none (or gpu is not among them); -1 with the
 * reason when an NVIDIA driver is installed but older than this build's CUDA
 * runtime (a GPU that cannot be used, not a machine without one). new: NULL
 * with err on failure. */
int tfps_cuda_probe(int gpu, char *name, size_t namelen, size_t *mem_bytes, char *err, size_t errlen);
tfps_backend *tfps_cuda_backend_new(const tfps_layout *l, int max_batch, int gpu, char *err, size_t errlen);
/* After a step: copy the activations of that step back (a1 [B][h1], a2
 * [B][h2], probs [B][out]) for tests. */
int tfps_cuda_activations(tfps_backend *b, int B, float *a1, float *a2, float *probs);
/* Steps so far whose batch had been staged by a matching prefetch. */
long long tfps_cuda_prefetch_hits(const tfps_backend *b);

/* CPU reference backend for batches up to max_batch; NULL on out-of-memory. */
tfps_backend *tfps_cpu_backend_new(const tfps_layout *l, int max_batch);
void tfps_backend_free(tfps_backend *b);   /* NULL-safe */

/* The reference's layer functions, exposed for tests and for the CUDA
 * backend's comparisons. Outputs first, then inputs, then sizes; caller
 * allocates. Kernels w are [C][OC] row-major. */
void tfps_dense_forward(float *out, const float *inp, const float *w, const float *b, int B, int C, int OC);
void tfps_relu_forward(float *inout, int n);
/* probs [B][V] = softmax(logits); returns the mean cross-entropy. */
float tfps_softmax_xent_forward(float *probs, const float *logits, const uint8_t *y, int B, int V);
/* dlogits [B][V] = (probs - onehot(y)) / B. */
void tfps_softmax_xent_backward(float *dlogits, const float *probs, const uint8_t *y, int B, int V);
/* dw [C][OC] = inp^T dout; db [OC] = column sums of dout; dinp [B][C] = dout w^T (skipped when NULL). */
void tfps_dense_backward(float *dinp, float *dw, float *db, const float *dout, const float *inp, const float *w,
                         int B, int C, int OC);
/* d[i] = 0 where the ReLU output act[i] was 0. */
void tfps_relu_backward(float *d, const float *act, int n);

/* Forward pass storing activations, for tests: a1 [B][h1], a2 [B][h2] (after
 * ReLU), probs [B][out]; returns the mean loss. */
float tfps_cpu_forward(const tfps_layout *l, const float *params, const float *x, const uint8_t *y, int B, float *a1,
                       float *a2, float *logits, float *probs);

#endif
