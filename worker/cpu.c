/* cpu.c -- the CPU reference backend: clear before fast.
 *
 * The three dense layers are cblas_sgemm calls; bias, ReLU and the
 * softmax cross-entropy are plain loops. Everything is on the flat layout of
 * layout.h: params + off[v] is variable v, grads + off[v] its gradient.
 *
 * step and predict refuse a batch outside 1..max_batch, and step a label
 * >= out, with TFPS_ERR and one line in b->err; nothing is computed then. */
#include "backend.h"
#include "tfps.h"

#include <cblas.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void tfps_dense_forward(float *out, const float *inp, const float *w, const float *b, int B, int C, int OC) {
    // out[B][OC] = b (broadcast) ...
    for (int i = 0; i < B; i++) memcpy(out + (size_t)i * OC, b, (size_t)OC * sizeof(float));
    // ... + inp[B][C] @ w[C][OC]
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, B, OC, C, 1.0f, inp, C, w, OC, 1.0f, out, OC);
}

void tfps_relu_forward(float *inout, int n) {
    for (int i = 0; i < n; i++)
        if (inout[i] < 0.0f) inout[i] = 0.0f;
}

float tfps_softmax_xent_forward(float *probs, const float *logits, const uint8_t *y, int B, int V) {
    double loss = 0.0;
    for (int i = 0; i < B; i++) {
        const float *z = logits + (size_t)i * V;
        float *p = probs + (size_t)i * V;
        float maxz = z[0];
        for (int j = 1; j < V; j++)
            if (z[j] > maxz) maxz = z[j];
        double sum = 0.0;
        for (int j = 0; j < V; j++) {
            p[j] = expf(z[j] - maxz);
            sum += p[j];
        }
        for (int j = 0; j < V; j++) p[j] = (float)(p[j] / sum);
        // -log softmax computed from the logits (stable even when p underflows)
        loss += log(sum) - (double)(z[y[i]] - maxz);
    }
    return (float)(loss / B);
}

void tfps_softmax_xent_backward(float *dlogits, const float *probs, const uint8_t *y, int B, int V) {
    const float inv = 1.0f / (float)B;
    for (int i = 0; i < B; i++) {
        for (int j = 0; j < V; j++) dlogits[(size_t)i * V + j] = probs[(size_t)i * V + j] * inv;
        dlogits[(size_t)i * V + y[i]] -= inv;
    }
}

void tfps_dense_backward(float *dinp, float *dw, float *db, const float *dout, const float *inp, const float *w,
                         int B, int C, int OC) {
    // dw[C][OC] = inp^T[C][B] @ dout[B][OC]
    cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, C, OC, B, 1.0f, inp, C, dout, OC, 0.0f, dw, OC);
    // db[OC] = sum over the batch of dout
    memset(db, 0, (size_t)OC * sizeof(float));
    for (int i = 0; i < B; i++)
        for (int j = 0; j < OC; j++) db[j] += dout[(size_t)i * OC + j];
    // dinp[B][C] = dout[B][OC] @ w^T[OC][C]
    if (dinp) cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, B, C, OC, 1.0f, dout, OC, w, OC, 0.0f, dinp, C);
}

void tfps_relu_backward(float *d, const float *act, int n) {
    for (int i = 0; i < n; i++)
        if (act[i] <= 0.0f) d[i] = 0.0f;
}

float tfps_cpu_forward(const tfps_layout *l, const float *params, const float *x, const uint8_t *y, int B, float *a1,
                       float *a2, float *logits, float *probs) {
    tfps_dense_forward(a1, x, params + l->off[TFPS_VAR_W1], params + l->off[TFPS_VAR_B1], B, l->in, l->h1);
    tfps_relu_forward(a1, B * l->h1);
    tfps_dense_forward(a2, a1, params + l->off[TFPS_VAR_W2], params + l->off[TFPS_VAR_B2], B, l->h1, l->h2);
    tfps_relu_forward(a2, B * l->h2);
    tfps_dense_forward(logits, a2, params + l->off[TFPS_VAR_W3], params + l->off[TFPS_VAR_B3], B, l->h2, l->out);
    return tfps_softmax_xent_forward(probs, logits, y, B, l->out);
}

/* The CPU backend object: the interface plus activation scratch for max_batch. */
typedef struct {
    tfps_backend base;
    float *a1, *a2, *logits, *probs;   /* [max_batch][h1], [.][h2], [.][out], [.][out] */
    float *d1, *d2, *dlogits;          /* gradients w.r.t. the same activations */
} cpu_backend;

/* 1 when B fits the scratch buffers; else 0 with the message in b->err. */
static int batch_ok(tfps_backend *b, const char *what, int B) {
    if (B >= 1 && B <= b->max_batch) return 1;
    snprintf(b->err, sizeof(b->err), "%s: batch of %d examples; expected 1..%d (the max batch)", what, B, b->max_batch);
    return 0;
}

static int cpu_step(tfps_backend *b, const float *params, const float *x, const uint8_t *y, int B, float *grads,
                    float *loss) {
    cpu_backend *c = (cpu_backend *)b;
    const tfps_layout *l = &b->layout;
    if (!batch_ok(b, "step", B)) return TFPS_ERR;
    for (int i = 0; i < B; i++)   // a label >= out would index past the logits
        if (y[i] >= l->out) {
            snprintf(b->err, sizeof(b->err), "step: label %d of example %d; expected 0..%d (%d classes)", (int)y[i],
                     i, l->out - 1, l->out);
            return TFPS_ERR;
        }
    *loss = tfps_cpu_forward(l, params, x, y, B, c->a1, c->a2, c->logits, c->probs);
    tfps_softmax_xent_backward(c->dlogits, c->probs, y, B, l->out);
    tfps_dense_backward(c->d2, grads + l->off[TFPS_VAR_W3], grads + l->off[TFPS_VAR_B3], c->dlogits, c->a2,
                        params + l->off[TFPS_VAR_W3], B, l->h2, l->out);
    tfps_relu_backward(c->d2, c->a2, B * l->h2);
    tfps_dense_backward(c->d1, grads + l->off[TFPS_VAR_W2], grads + l->off[TFPS_VAR_B2], c->d2, c->a1,
                        params + l->off[TFPS_VAR_W2], B, l->h1, l->h2);
    tfps_relu_backward(c->d1, c->a1, B * l->h1);
    // the input needs no gradient: dinp = NULL skips the largest sgemm of the backward pass
    tfps_dense_backward(NULL, grads + l->off[TFPS_VAR_W1], grads + l->off[TFPS_VAR_B1], c->d1, x,
                        params + l->off[TFPS_VAR_W1], B, l->in, l->h1);
    return TFPS_OK;
}

static int cpu_predict(tfps_backend *b, const float *params, const float *x, int B, uint8_t *pred, float *logits) {
    cpu_backend *c = (cpu_backend *)b;
    const tfps_layout *l = &b->layout;
    if (!batch_ok(b, "predict", B)) return TFPS_ERR;
    tfps_dense_forward(c->a1, x, params + l->off[TFPS_VAR_W1], params + l->off[TFPS_VAR_B1], B, l->in, l->h1);
    tfps_relu_forward(c->a1, B * l->h1);
    tfps_dense_forward(c->a2, c->a1, params + l->off[TFPS_VAR_W2], params + l->off[TFPS_VAR_B2], B, l->h1, l->h2);
    tfps_relu_forward(c->a2, B * l->h2);
    tfps_dense_forward(c->logits, c->a2, params + l->off[TFPS_VAR_W3], params + l->off[TFPS_VAR_B3], B, l->h2,
                       l->out);
    for (int i = 0; i < B; i++) {
        const float *z = c->logits + (size_t)i * l->out;
        int best = 0;
        for (int j = 1; j < l->out; j++)
            if (z[j] > z[best]) best = j;
        pred[i] = (uint8_t)best;
    }
    if (logits) memcpy(logits, c->logits, (size_t)B * l->out * sizeof(float));
    return TFPS_OK;
}

static void cpu_free(tfps_backend *b) {
    cpu_backend *c = (cpu_backend *)b;
    free(c->a1);
    free(c->a2);
    free(c->logits);
    free(c->probs);
    free(c->d1);
    free(c->d2);
    free(c->dlogits);
    free(c);
}

tfps_backend *tfps_cpu_backend_new(const tfps_layout *l, int max_batch) {
    if (max_batch < 1) return NULL;
    cpu_backend *c = calloc(1, sizeof(*c));
    if (!c) return NULL;
    size_t B = (size_t)max_batch;
    c->a1 = malloc(B * l->h1 * sizeof(float));
    c->a2 = malloc(B * l->h2 * sizeof(float));
    c->logits = malloc(B * l->out * sizeof(float));
    c->probs = malloc(B * l->out * sizeof(float));
    c->d1 = malloc(B * l->h1 * sizeof(float));
    c->d2 = malloc(B * l->h2 * sizeof(float));
    c->dlogits = malloc(B * l->out * sizeof(float));
    c->base = (tfps_backend){.name = "cpu", .layout = *l, .max_batch = max_batch, .step = cpu_step,
                             .predict = cpu_predict, .free = cpu_free};
    if (!c->a1 || !c->a2 || !c->logits || !c->probs || !c->d1 || !c->d2 || !c->dlogits) {
        cpu_free(&c->base);   // half-built: release what was allocated
        return NULL;
    }
    return &c->base;
}
