/* bench_cuda.c -- the CUDA backend's worker step, timed as a worker runs it.
 *
 *   build/bin/bench_cuda [-n iters=1000] [-w warmup=50] [batch ...=64 256 1024]
 *
 * One step is be->step(): the host->device copy of all 266,610 weights (the
 * pulled parameters), forward, backward, and the device->host copy of the full
 * flat gradient plus the loss, synchronised; every buffer comes from the
 * backend's host_alloc (page-locked). Two cases per batch size:
 *
 *   input=copy      step() alone: the batch is uploaded inside the step
 *   input=prefetch  prefetch() of the next batch, then step() on the current
 *                   one, alternating two host batch buffers as worker/data.c's
 *                   feeder does: the batch upload overlaps the previous step
 *
 * Each case: warm-up steps, then 5 repeats of `iters` steps; the median repeat
 * gives us_per_step and examples_per_s. One machine-readable line per case:
 *
 *   tfps_cuda B=64 input=copy us_per_step=123.45 examples_per_s=518421 min_us=... max_us=... loss=2.3456
 *
 * plus `tfps_cuda_gpu: <name>` (tests/bench_gpu.sh reads both). Without a
 * usable GPU it prints "bench_cuda: SKIP: <reason>" and exits 77. */
#include "backend.h"
#include "tfps.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define SKIP 77
#define REPS 5
#define MAX_BATCHES 16

#ifndef TFPS_WITH_CUDA
int main(void) {
    printf("bench_cuda: SKIP: this build has no CUDA backend (nvcc was not found)\n");
    return SKIP;
}
#else

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* Sorts v and returns its median. */
static double median(double *v, int n) {
    qsort(v, (size_t)n, sizeof(double), cmp_double);
    return v[n / 2];
}

/* Uniform in [0, 1) from a 64-bit LCG (top 24 bits). */
static float urand(uint64_t *s) {
    *s = *s * 6364136223846793005ULL + 1442695040888963407ULL;
    return (float)((*s >> 40) & 0xffffff) / (float)0x1000000;
}

static int usage(void) {
    fprintf(stderr, "usage: bench_cuda [-n iters>=1] [-w warmup>=0] [batch>=1 ...]\n");
    return 2;
}

/* One case for batch B; returns TFPS_OK after printing its line. */
static int run_case(tfps_backend *be, int B, int prefetch, int iters, int warmup, const float *params, float *const xs[2],
                    uint8_t *const ys[2], float *grads) {
    double t[REPS];
    float loss = 0;
    int cur = 0;
    for (int rep = -1; rep < REPS; rep++) {   // rep -1: the warm-up
        const int n = rep < 0 ? warmup : iters;
        if (n == 0) continue;
        // the feeder stages the first batch before the loop (tfps_feeder_init)
        if (prefetch && be->prefetch(be, xs[cur], ys[cur], B) != TFPS_OK) goto fail;
        double t0 = tfps_now();
        for (int it = 0; it < n; it++) {
            if (prefetch) {
                // the next step's batch starts uploading while this one computes
                if (be->prefetch(be, xs[cur ^ 1], ys[cur ^ 1], B) != TFPS_OK) goto fail;
                if (be->step(be, params, xs[cur], ys[cur], B, grads, &loss) != TFPS_OK) goto fail;
                cur ^= 1;
            } else {
                if (be->step(be, params, xs[cur], ys[cur], B, grads, &loss) != TFPS_OK) goto fail;
            }
        }
        double dt = tfps_now() - t0;
        // consume the one batch still staged, untimed, so nothing is left over for the next repeat
        if (prefetch && be->step(be, params, xs[cur], ys[cur], B, grads, &loss) != TFPS_OK) goto fail;
        if (rep >= 0) t[rep] = dt / n;
    }
    if (!isfinite(loss) || !isfinite(grads[0])) {
        fprintf(stderr, "bench_cuda: B=%d: non-finite loss %g or gradient %g\n", B, loss, grads[0]);
        return TFPS_ERR;
    }
    double lo = t[0], hi = t[0];
    for (int r = 1; r < REPS; r++) {
        lo = t[r] < lo ? t[r] : lo;
        hi = t[r] > hi ? t[r] : hi;
    }
    const double med = median(t, REPS);
    printf("tfps_cuda B=%d input=%s us_per_step=%.2f examples_per_s=%.0f min_us=%.2f max_us=%.2f loss=%.4f\n", B,
           prefetch ? "prefetch" : "copy", med * 1e6, B / med, lo * 1e6, hi * 1e6, loss);
    fflush(stdout);
    return TFPS_OK;
fail:
    fprintf(stderr, "bench_cuda: B=%d input=%s: %s\n", B, prefetch ? "prefetch" : "copy", be->err);
    return TFPS_ERR;
}

int main(int argc, char **argv) {
    int iters = 1000, warmup = 50, batches[MAX_BATCHES], nb = 0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "-n") && i + 1 < argc) {
            iters = atoi(argv[++i]);
            if (iters < 1) return usage();
        } else if (!strcmp(argv[i], "-w") && i + 1 < argc) {
            warmup = atoi(argv[++i]);
            if (warmup < 0) return usage();
        } else {
            int b = atoi(argv[i]);
            if (b < 1 || nb == MAX_BATCHES) return usage();
            batches[nb++] = b;
        }
    }
    if (nb == 0) {
        batches[nb++] = 64;
        batches[nb++] = 256;
        batches[nb++] = 1024;
    }

    char name[256] = "", err[TFPS_ERR_LEN] = "";
    size_t mem = 0;
    const int found = tfps_cuda_probe(0, name, sizeof(name), &mem, err, sizeof(err));
    if (found < 0) {
        fprintf(stderr, "bench_cuda: %s\n", err);
        return 1;
    }
    if (found == 0) {
        printf("bench_cuda: SKIP: %s\n", err);
        return SKIP;
    }
    tfps_layout l;
    if (tfps_layout_init(&l, 784, 300, 100, 10, err, sizeof(err)) != TFPS_OK) {
        fprintf(stderr, "bench_cuda: %s\n", err);
        return 1;
    }
    printf("tfps_cuda_gpu: %s\n", name);
    printf("bench_cuda: GPU 0: %s, %.1f GiB; model 784-300-100-10 (%zu params); %d warm-up + %d x %d steps, "
           "median of %d\n",
           name, mem / (1024.0 * 1024.0 * 1024.0), l.total, warmup, REPS, iters, REPS);
    fflush(stdout);

    int rc = 0;
    for (int bi = 0; bi < nb && rc == 0; bi++) {
        const int B = batches[bi];
        tfps_backend *be = tfps_cuda_backend_new(&l, B, 0, err, sizeof(err));
        if (!be) {
            fprintf(stderr, "bench_cuda: B=%d: %s\n", B, err);
            return 1;
        }
        float *params = tfps_backend_host_alloc(be, l.total * sizeof(float));
        float *grads = tfps_backend_host_alloc(be, l.total * sizeof(float));
        float *xs[2] = {NULL, NULL};
        uint8_t *ys[2] = {NULL, NULL};
        for (int k = 0; k < 2; k++) {
            xs[k] = tfps_backend_host_alloc(be, (size_t)B * l.in * sizeof(float));
            ys[k] = tfps_backend_host_alloc(be, (size_t)B);
        }
        if (!params || !grads || !xs[0] || !xs[1] || !ys[0] || !ys[1]) {
            fprintf(stderr, "bench_cuda: B=%d: out of page-locked host memory\n", B);
            rc = 1;
        } else {
            tfps_layout_init_range(&l, 1, 0, l.total, params);
            uint64_t seed = 12345u + (uint64_t)B;
            for (int k = 0; k < 2; k++) {
                for (size_t i = 0; i < (size_t)B * l.in; i++) xs[k][i] = urand(&seed);
                for (int i = 0; i < B; i++) ys[k][i] = (uint8_t)(i % 10);
            }
            if (run_case(be, B, 0, iters, warmup, params, xs, ys, grads) != TFPS_OK ||
                run_case(be, B, 1, iters, warmup, params, xs, ys, grads) != TFPS_OK)
                rc = 1;
        }
        for (int k = 0; k < 2; k++) {
            tfps_backend_host_free(be, xs[k]);
            tfps_backend_host_free(be, ys[k]);
        }
        tfps_backend_host_free(be, params);
        tfps_backend_host_free(be, grads);
        tfps_backend_free(be);
    }
    return rc;
}
#endif
