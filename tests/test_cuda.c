/* test_cuda.c -- the CUDA backend against the CPU reference (cpu.c).
 *
 * The cases of refnet.h (784-300-100-10 and 784-1024-37-10, batches 1, 7, 64
 * and 1000; same random weights and inputs on both backends): every
 * activation (a1, a2, probs), the loss and every gradient of the GPU must
 * agree with the CPU backend within a relative error of 1e-4 (refnet.h's
 * metric). Each line also prints both backends' error against the float64
 * reference, so a failure shows which side is off (test_backend holds the
 * CPU to that reference). An evaluation pass gives the same predictions, so
 * the same accuracy; the training loop's prefetch pipeline over distinct
 * batches gives results bit-identical to plain steps (run_pipeline); a batch
 * over the maximum is refused with a message. A driver too old for this
 * build's CUDA runtime is a failure, not a skip.
 *
 * Without a GPU (or in a build without CUDA) it exits 77: ctest reports SKIP,
 * never a pass. */
#include "backend.h"
#include "refnet.h"
#include "tfps.h"

#include <math.h>
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

/* The training loop's path (worker/data.c's feeder): two page-locked host
 * buffers, the next batch prefetched on the copy stream while the current one
 * steps, over three distinct batches (thirds of the case) in turn, so a step
 * that read the wrong device buffer, or a stale one, gets another batch's
 * gradient. Each result must be bit-identical to a plain step on the same
 * rows, and every step must have found its batch staged. Then the odd path:
 * two batches staged, a third refused, a step on something else (one staged
 * batch is dropped after its upload lands), then the two. */
static void run_pipeline(tfps_backend *g, const refnet_case *rc) {
    const tfps_layout *l = &rc->l;
    const int in = l->in, B = rc->B;
    const int start[4] = {0, B / 3, 2 * B / 3, B};
    float *ref[3] = {NULL, NULL, NULL}, *got = malloc(l->total * sizeof(float)), lref[3], lgot = 0;
    float *hx[2] = {tfps_backend_host_alloc(g, (size_t)B * in * sizeof(float)),
                    tfps_backend_host_alloc(g, (size_t)B * in * sizeof(float))};
    uint8_t *hy[2] = {tfps_backend_host_alloc(g, (size_t)B), tfps_backend_host_alloc(g, (size_t)B)};
    int n[2] = {0, 0}, bad = 0;
    if (!got || !hx[0] || !hx[1] || !hy[0] || !hy[1]) {
        fail("pipeline", "out of (page-locked) host memory");
        goto out;
    }
    for (int k = 0; k < 3; k++) {   // the references: plain steps from pageable memory
        const int nk = start[k + 1] - start[k];
        ref[k] = malloc(l->total * sizeof(float));
        if (!ref[k] || g->step(g, rc->params, rc->x + (size_t)start[k] * in, rc->y + start[k], nk, ref[k], &lref[k])) {
            fail("pipeline: plain step", ref[k] ? g->err : "out of memory");
            goto out;
        }
    }
#define LOAD(slot, k)                                                                                        \
    do {                                                                                                     \
        n[slot] = start[(k) + 1] - start[k];                                                                 \
        memcpy(hx[slot], rc->x + (size_t)start[k] * in, (size_t)n[slot] * in * sizeof(float));               \
        memcpy(hy[slot], rc->y + start[k], (size_t)n[slot]);                                                 \
    } while (0)
#define SAME(k) (memcmp(got, ref[k], l->total * sizeof(float)) == 0 && lgot == lref[k])
    const long long hits0 = tfps_cuda_prefetch_hits(g);
    const int steps = 6;
    LOAD(0, 0);
    if (g->prefetch(g, hx[0], hy[0], n[0]) != TFPS_OK) {
        fail("pipeline: prefetch", g->err);
        goto out;
    }
    for (int s = 0; s < steps; s++) {
        const int cur = s % 2, nxt = cur ^ 1;
        if (s + 1 < steps) {
            LOAD(nxt, (s + 1) % 3);
            if (g->prefetch(g, hx[nxt], hy[nxt], n[nxt]) != TFPS_OK) {
                fail("pipeline: prefetch", g->err);
                goto out;
            }
        }
        if (g->step(g, rc->params, hx[cur], hy[cur], n[cur], got, &lgot) != TFPS_OK) {
            fail("pipeline: step", g->err);
            goto out;
        }
        bad += !SAME(s % 3);
    }
    const long long hits = tfps_cuda_prefetch_hits(g) - hits0;
    printf("  pipeline: %d/%d steps bit-identical to plain ones, %lld/%d found their batch prefetched%s\n",
           steps - bad, steps, hits, steps, bad || hits != steps ? "  <-- FAIL" : "");
    failures += bad || hits != steps;

    LOAD(0, 0);
    LOAD(1, 1);
    int rc1 = g->prefetch(g, hx[0], hy[0], n[0]), rc2 = g->prefetch(g, hx[1], hy[1], n[1]);
    int rc3 = g->prefetch(g, hx[0], hy[0], n[0]);   // a third: refused
    int ok = rc1 == TFPS_OK && rc2 == TFPS_OK && rc3 == TFPS_ERR;
    const long long h0 = tfps_cuda_prefetch_hits(g);
    int n2 = start[3] - start[2];
    ok = ok && g->step(g, rc->params, rc->x + (size_t)start[2] * in, rc->y + start[2], n2, got, &lgot) == TFPS_OK &&
         SAME(2);
    ok = ok && g->step(g, rc->params, hx[0], hy[0], n[0], got, &lgot) == TFPS_OK && SAME(0);
    ok = ok && g->step(g, rc->params, hx[1], hy[1], n[1], got, &lgot) == TFPS_OK && SAME(1);
    const long long h = tfps_cuda_prefetch_hits(g) - h0;
    printf("  two staged, third refused, step on another batch, then the two: %s (%lld prefetch hit)%s\n",
           ok ? "right gradients" : "WRONG", h, ok && h == 1 ? "" : "  <-- FAIL");
    failures += !(ok && h == 1);
#undef LOAD
#undef SAME
out:
    for (int k = 0; k < 3; k++) free(ref[k]);
    free(got);
    for (int k = 0; k < 2; k++) {
        tfps_backend_host_free(g, hx[k]);
        tfps_backend_host_free(g, hy[k]);
    }
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
    float *gc = malloc(l->total * sizeof(float)), *gg = malloc(l->total * sizeof(float));
    float *a1c = malloc((size_t)B * h1 * sizeof(float)), *a2c = malloc((size_t)B * h2 * sizeof(float)),
          *zc = malloc((size_t)B * 10 * sizeof(float)), *prc = malloc((size_t)B * 10 * sizeof(float)),
          *a1g = malloc((size_t)B * h1 * sizeof(float)), *a2g = malloc((size_t)B * h2 * sizeof(float)),
          *prg = malloc((size_t)B * 10 * sizeof(float));
    uint8_t *pc = malloc((size_t)B), *pg = malloc((size_t)B);
    float *zcp = malloc((size_t)B * 10 * sizeof(float)), *zgp = malloc((size_t)B * 10 * sizeof(float));
    float lc = 0, lg = 0;
    if (!cpu || !gc || !gg || !a1c || !a2c || !zc || !prc || !a1g || !a2g || !prg || !pc || !pg) {
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

    if (B >= 7) run_pipeline(g, &rc);

    // evaluation: no example is near a tie, so the predictions agree one by one
    if (cpu->predict(cpu, rc.params, rc.x, B, pc, zcp) != TFPS_OK ||
        g->predict(g, rc.params, rc.x, B, pg, zgp) != TFPS_OK) {
        fail("predict", g->err);
    } else {
        // the logits it hands back (evaluation loss, tfps-predict) agree with the CPU's
        double worst = 0;
        for (int i = 0; i < B * 10; i++) worst = fmax(worst, fabs((double)zgp[i] - zcp[i]) / (1.0 + fabs(zcp[i])));
        printf("  predict logits: worst |gpu - cpu| / (1 + |cpu|) %.2e%s\n", worst, worst <= 1e-4 ? "" : "  <-- FAIL");
        failures += !(worst <= 1e-4);
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
    free(gc); free(gg);
    free(a1c); free(a2c); free(zc); free(prc); free(a1g); free(a2g); free(prg);
    free(pc); free(pg); free(zcp); free(zgp);
    refnet_case_free(&rc);
}

int main(void) {
    char name[256], err[TFPS_ERR_LEN];
    size_t mem = 0;
    const int found = tfps_cuda_probe(0, name, sizeof(name), &mem, err, sizeof(err));
    if (found < 0) {   // a driver, so a GPU, that this build cannot use: a failure, not a skip
        printf("test_cuda: FAIL: %s\n", err);
        return 1;
    }
    if (found == 0) {
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
