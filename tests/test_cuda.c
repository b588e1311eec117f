/* test_cuda.c -- the CUDA backend against the CPU reference (cpu.c).
 *
 * The cases of refnet.h (784-300-100-10 and 784-1024-37-10, batches 1, 7, 64
 * and 1000; same random weights and inputs on both backends): every
 * activation (a1, a2, probs), the loss and every gradient of the GPU must
 * agree with the CPU backend within a relative error of 1e-4 (refnet.h's
 * metric). Each line also prints both backends' error against the float64
 * reference, so a failure shows which side is off (test_backend holds the
 * CPU to that reference). An evaluation pass gives the same predictions, so
 * the same accuracy; a step whose batch was prefetched on the copy stream
 * gives the bit-identical result of one that was not; a batch over the
 * maximum is refused with a message.
 *
 * Without a GPU (or in a build without CUDA) it exits 77: ctest reports SKIP,
 * never a pass. */
#include "backend.h"
#include "refnet.h"
#include "tfps.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define SKIP 77

#ifndef TFPS_WITH_CUDA
int main(void) {
    printf("test_cuda: SKIP: this build has no CUDA backend (nvcc was not found)\n");
    return SKIP;
}
#else

#define TOL 1e-4

static int failures = 0;

static void check(const char *what, const float *gpu, const float *cpu, const double *ref, size_t n) {
    size_t at = 0;
    const double e = refnet_rel_err_f(gpu, cpu, n, &at);
    const int bad = !(e <= TOL);
    printf("  %-6s %8zu values  gpu-cpu %.2e  (gpu-f64 %.2e  cpu-f64 %.2e)%s\n", what, n, e,
           refnet_rel_err(gpu, ref, n, NULL), refnet_rel_err(cpu, ref, n, NULL), bad ? "  <-- FAIL" : "");
    if (bad) {
        printf("         at %zu: gpu %.9g cpu %.9g f64 %.9g\n", at, gpu[at], cpu[at], ref[at]);
        failures++;
    }
}

static void fail(const char *what, const char *why) {
    printf("  %s: %s  <-- FAIL\n", what, why);
    failures++;
}

static void run_case(tfps_backend *g, int h1, int h2, int B) {
    refnet_case rc;
    if (refnet_case_init(&rc, h1, h2, B) != TFPS_OK) {
        fail("case", "could not draw it (out of memory?)");
        return;
    }
    const tfps_layout *l = &rc.l;
    printf("784-%d-%d-10, batch %d (%d examples redrawn off ReLU kinks / argmax ties)\n", h1, h2, B, rc.redrawn);
    tfps_backend *cpu = tfps_cpu_backend_new(l, B);
    float *gc = malloc(l->total * sizeof(float)), *gg = malloc(l->total * sizeof(float)),
          *gg2 = malloc(l->total * sizeof(float));
    float *a1c = malloc((size_t)B * h1 * sizeof(float)), *a2c = malloc((size_t)B * h2 * sizeof(float)),
          *zc = malloc((size_t)B * 10 * sizeof(float)), *prc = malloc((size_t)B * 10 * sizeof(float)),
          *a1g = malloc((size_t)B * h1 * sizeof(float)), *a2g = malloc((size_t)B * h2 * sizeof(float)),
          *prg = malloc((size_t)B * 10 * sizeof(float));
    uint8_t *pc = malloc((size_t)B), *pg = malloc((size_t)B);
    float lc = 0, lg = 0, lg2 = 0;
    if (!cpu || !gc || !gg || !gg2 || !a1c || !a2c || !zc || !prc || !a1g || !a2g || !prg || !pc || !pg) {
        fail("case", "out of host memory");
        goto out;
    }
    if (cpu->step(cpu, rc.params, rc.x, rc.y, B, gc, &lc) != TFPS_OK) {
        fail("cpu step", cpu->err);
        goto out;
    }
    if (g->step(g, rc.params, rc.x, rc.y, B, gg, &lg) != TFPS_OK) {
        fail("gpu step", g->err);
        goto out;
    }
    tfps_cpu_forward(l, rc.params, rc.x, rc.y, B, a1c, a2c, zc, prc);
    if (tfps_cuda_activations(g, B, a1g, a2g, prg) != TFPS_OK) {
        fail("activations", g->err);
        goto out;
    }
    check("a1", a1g, a1c, rc.a1, (size_t)B * h1);
    check("a2", a2g, a2c, rc.a2, (size_t)B * h2);
    check("probs", prg, prc, rc.probs, (size_t)B * 10);
    check("loss", &lg, &lc, &rc.loss, 1);
    for (int v = 0; v < TFPS_NVARS; v++)
        check(tfps_var_name(v), gg + l->off[v], gc + l->off[v], rc.grads + l->off[v], l->size[v]);

    // the training loop's path: the batch prefetched on the copy stream, from page-locked memory
    float *x2 = tfps_backend_host_alloc(g, (size_t)B * 784 * sizeof(float));
    uint8_t *y2 = tfps_backend_host_alloc(g, (size_t)B);
    if (!x2 || !y2) {
        fail("host_alloc", "no page-locked memory");
    } else {
        memcpy(x2, rc.x, (size_t)B * 784 * sizeof(float));
        memcpy(y2, rc.y, (size_t)B);
        if (g->prefetch(g, x2, y2, B) != TFPS_OK || g->step(g, rc.params, x2, y2, B, gg2, &lg2) != TFPS_OK)
            fail("prefetched step", g->err);
        else if (memcmp(gg, gg2, l->total * sizeof(float)) != 0 || lg != lg2)
            fail("prefetched step", "differs from the plain one");
        else
            printf("  prefetched step: bit-identical\n");
    }
    tfps_backend_host_free(g, x2);
    tfps_backend_host_free(g, y2);

    // evaluation: no example is near a tie, so the predictions agree one by one
    if (cpu->predict(cpu, rc.params, rc.x, B, pc) != TFPS_OK || g->predict(g, rc.params, rc.x, B, pg) != TFPS_OK) {
        fail("predict", g->err);
    } else {
        int same = 0, correct_c = 0, correct_g = 0;
        for (int i = 0; i < B; i++) {
            same += pc[i] == pg[i];
            correct_c += pc[i] == rc.y[i];
            correct_g += pg[i] == rc.y[i];
        }
        printf("  predict: %d/%d equal; accuracy cpu %d/%d gpu %d/%d f64 %d/%d%s\n", same, B, correct_c, B, correct_g,
               B, rc.correct, B, same == B && correct_g == rc.correct ? "" : "  <-- FAIL");
        failures += !(same == B && correct_g == rc.correct);
    }
out:
    tfps_backend_free(cpu);
    free(gc); free(gg); free(gg2);
    free(a1c); free(a2c); free(zc); free(prc); free(a1g); free(a2g); free(prg);
    free(pc); free(pg);
    refnet_case_free(&rc);
}

int main(void) {
    char name[256], err[TFPS_ERR_LEN];
    size_t mem = 0;
    if (tfps_cuda_probe(0, name, sizeof(name), &mem, err, sizeof(err)) <= 0) {
        printf("test_cuda: SKIP: %s\n", err);
        return SKIP;
    }
    printf("test_cuda: GPU 0: %s, %.1f GiB; tolerance %.0e\n", name, mem / 1073741824.0, TOL);
    const int sizes[2][2] = {{300, 100}, {1024, 37}};
    const int batches[] = {1, 7, 64, 1000};
    for (int s = 0; s < 2; s++) {
        tfps_layout l;
        tfps_layout_init(&l, 784, sizes[s][0], sizes[s][1], 10, NULL, 0);
        tfps_backend *g = tfps_cuda_backend_new(&l, 1000, 0, err, sizeof(err));
        if (!g) {
            printf("test_cuda: FAIL: %s\n", err);
            return 1;
        }
        for (int b = 0; b < 4; b++) run_case(g, sizes[s][0], sizes[s][1], batches[b]);
        // over the maximum batch: refused with a message, the backend still usable
        float loss = 0;
        if (g->step(g, NULL, NULL, NULL, 1001, NULL, &loss) != TFPS_ERR || !g->err[0]) fail("batch 1001", "not refused");
        tfps_backend_free(g);
    }
    printf("test_cuda: %s (%d failures)\n", failures ? "FAIL" : "PASS", failures);
    return failures ? 1 : 0;
}
#endif
