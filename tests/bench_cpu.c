/* bench_cpu.c -- CPU backend forward+backward throughput against a bare
 * OpenBLAS sgemm loop of the same shapes, in the same run.
 *
 *   build/bin/bench_cpu [batch=64] [iters=2000] [threads=1]
 *
 * The baseline is the 8 sgemm calls one step needs (3 forward, 5 backward: no
 * input gradient) and nothing else; the ratio shows what bias, ReLU, softmax
 * and bookkeeping add. Prints median microseconds per step of 5 repeats. */
#include "backend.h"
#include "optim.h"
#include "tfps.h"

#include <cblas.h>
#include <stdio.h>
#include <stdlib.h>

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double median5(double *v) {
    qsort(v, 5, sizeof(double), cmp_double);
    return v[2];
}

int main(int argc, char **argv) {
    const int B = argc > 1 ? atoi(argv[1]) : 64, iters = argc > 2 ? atoi(argv[2]) : 2000;
    const int threads = argc > 3 ? atoi(argv[3]) : 1;
    if (B < 1 || iters < 1 || threads < 1) {
        fprintf(stderr, "usage: bench_cpu [batch>=1] [iters>=1] [threads>=1]\n");
        return 2;
    }
    openblas_set_num_threads(threads);
    tfps_layout l;
    tfps_layout_init(&l, 784, 300, 100, 10, NULL, 0);
    float *params = malloc(l.total * sizeof(float)), *grads = malloc(l.total * sizeof(float));
    float *x = malloc((size_t)B * l.in * sizeof(float));
    uint8_t *y = malloc((size_t)B);
    tfps_layout_init_range(&l, 1, 0, l.total, params);
    for (int i = 0; i < B * l.in; i++) x[i] = (float)((i * 2654435761u) % 256) / 255.0f;
    for (int i = 0; i < B; i++) y[i] = (uint8_t)(i % 10);
    tfps_backend *be = tfps_cpu_backend_new(&l, B);
    float *a1 = malloc((size_t)B * l.h1 * 4), *a2 = malloc((size_t)B * l.h2 * 4), *z = malloc((size_t)B * l.out * 4);
    float *d1 = malloc((size_t)B * l.h1 * 4), *d2 = malloc((size_t)B * l.h2 * 4);
    const float *W1 = params + l.off[TFPS_VAR_W1], *W2 = params + l.off[TFPS_VAR_W2], *W3 = params + l.off[TFPS_VAR_W3];
    float *gW1 = grads + l.off[TFPS_VAR_W1], *gW2 = grads + l.off[TFPS_VAR_W2], *gW3 = grads + l.off[TFPS_VAR_W3];

    double t_sgemm[5], t_backend[5], t_train[5];
    float loss = 0;
    for (int rep = 0; rep < 5; rep++) {
        double t0 = tfps_now();
        for (int it = 0; it < iters; it++) {
            // forward: x@W1, a1@W2, a2@W3
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, B, l.h1, l.in, 1, x, l.in, W1, l.h1, 0, a1, l.h1);
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, B, l.h2, l.h1, 1, a1, l.h1, W2, l.h2, 0, a2, l.h2);
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, B, l.out, l.h2, 1, a2, l.h2, W3, l.out, 0, z, l.out);
            // backward: dW3, dA2, dW2, dA1, dW1
            cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, l.h2, l.out, B, 1, a2, l.h2, z, l.out, 0, gW3, l.out);
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, B, l.h2, l.out, 1, z, l.out, W3, l.out, 0, d2, l.h2);
            cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, l.h1, l.h2, B, 1, a1, l.h1, d2, l.h2, 0, gW2, l.h2);
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, B, l.h1, l.h2, 1, d2, l.h2, W2, l.h2, 0, d1, l.h1);
            cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, l.in, l.h1, B, 1, x, l.in, d1, l.h1, 0, gW1, l.h1);
        }
        t_sgemm[rep] = (tfps_now() - t0) / iters;
        t0 = tfps_now();
        for (int it = 0; it < iters; it++) be->step(be, params, x, y, B, grads, &loss);
        t_backend[rep] = (tfps_now() - t0) / iters;
        // a full local training step: backend step + the SGD update of every parameter
        float *p2 = malloc(l.total * sizeof(float));
        const tfps_optim sgd = {.kind = TFPS_OPT_SGD, .lr = 1e-6f};
        for (size_t i = 0; i < l.total; i++) p2[i] = params[i];
        t0 = tfps_now();
        for (int it = 0; it < iters; it++) {
            be->step(be, p2, x, y, B, grads, &loss);
            tfps_optim_apply(&sgd, 1, p2, (float *[TFPS_OPTIM_MAX_SLOTS]){NULL, NULL}, grads, l.total);
        }
        t_train[rep] = (tfps_now() - t0) / iters;
        free(p2);
    }
    double s = median5(t_sgemm), b = median5(t_backend), t = median5(t_train);
    printf("bench_cpu: model 784-300-100-10, batch %d, %d iters x 5 repeats, %d OpenBLAS thread(s), median\n", B,
           iters, threads);
    printf("%-34s %10s %14s %10s\n", "case", "us/step", "examples/s", "vs sgemm");
    printf("%-34s %10.1f %14.0f %10.2f\n", "bare sgemm loop (8 calls)", s * 1e6, B / s, 1.0);
    printf("%-34s %10.1f %14.0f %10.2f\n", "cpu backend forward+backward", b * 1e6, B / b, s / b);
    printf("%-34s %10.1f %14.0f %10.2f\n", "cpu backend step + SGD update", t * 1e6, B / t, s / t);
    printf("(loss %.4f)\n", loss);
    tfps_backend_free(be);
    free(params); free(grads); free(x); free(y); free(a1); free(a2); free(z); free(d1); free(d2);
    return 0;
}
