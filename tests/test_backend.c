/* test_backend.c -- the CPU reference backend against a float64 computation.
 *
 * Forward: the float loss and probabilities match a double-precision forward
 * pass. Backward: every checked gradient matches central finite differences of
 * the double-precision loss:
 *
 *     |g_backend - g_fd| <= 1e-3 * |g_fd| + 1e-4 * max|g_fd|
 *
 * (float accumulates over the batch and the layer width; the second term
 * covers entries that are zero up to rounding). Small layouts check every
 * parameter; 784-300-100-10 checks all biases and a random sample of weights.
 *
 * At test_cuda's cases (refnet.h) every activation, the loss and every
 * gradient is also within test_cuda's tolerance (relative 1e-4) of the
 * float64 reference: the bound the GPU is held to is above fp32 rounding.
 *
 * Refusals: a batch outside 1..max_batch (step, predict) and a label >= the
 * classes (step) return TFPS_ERR with a message naming the value. */
#include "backend.h"
#include "data.h"
#include "refnet.h"
#include "tfps.h"

#include <CUnit/Basic.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static double urand(unsigned *s) {
    *s = *s * 1103515245u + 12345u;
    return ((*s >> 8) & 0xffffff) / (double)0x1000000;
}

/* Double-precision forward: the mean softmax cross-entropy. Kept naive on purpose. */
static double loss_f64(const tfps_layout *l, const double *p, const float *x, const uint8_t *y, int B,
                       double *probs /* [B][out] or NULL */) {
    double *a1 = malloc((size_t)l->h1 * sizeof(double)), *a2 = malloc((size_t)l->h2 * sizeof(double)),
           *z = malloc((size_t)l->out * sizeof(double));
    const double *W1 = p + l->off[TFPS_VAR_W1], *b1 = p + l->off[TFPS_VAR_B1], *W2 = p + l->off[TFPS_VAR_W2],
                 *b2 = p + l->off[TFPS_VAR_B2], *W3 = p + l->off[TFPS_VAR_W3], *b3 = p + l->off[TFPS_VAR_B3];
    double loss = 0;
    for (int i = 0; i < B; i++) {
        const float *xi = x + (size_t)i * l->in;
        for (int o = 0; o < l->h1; o++) {
            double s = b1[o];
            for (int c = 0; c < l->in; c++) s += xi[c] * W1[(size_t)c * l->h1 + o];
            a1[o] = s > 0 ? s : 0;
        }
        for (int o = 0; o < l->h2; o++) {
            double s = b2[o];
            for (int c = 0; c < l->h1; c++) s += a1[c] * W2[(size_t)c * l->h2 + o];
            a2[o] = s > 0 ? s : 0;
        }
        double m = -INFINITY;
        for (int o = 0; o < l->out; o++) {
            double s = b3[o];
            for (int c = 0; c < l->h2; c++) s += a2[c] * W3[(size_t)c * l->out + o];
            z[o] = s;
            if (s > m) m = s;
        }
        double sum = 0;
        for (int o = 0; o < l->out; o++) sum += exp(z[o] - m);
        loss += log(sum) - (z[y[i]] - m);
        if (probs)
            for (int o = 0; o < l->out; o++) probs[(size_t)i * l->out + o] = exp(z[o] - m) / sum;
    }
    free(a1);
    free(a2);
    free(z);
    return loss / B;
}

typedef struct {
    int in, h1, h2, out, B;
    int sample;   /* 0: check every parameter; else all biases + this many random weights */
} gcase;

static void run_case(const gcase *gc) {
    tfps_layout l;
    CU_ASSERT_FATAL(tfps_layout_init(&l, gc->in, gc->h1, gc->h2, gc->out, NULL, 0) == TFPS_OK);
    unsigned seed = 1234u + (unsigned)gc->B * 7u + (unsigned)gc->h1;
    float *params = malloc(l.total * sizeof(float)), *grads = malloc(l.total * sizeof(float));
    double *pd = malloc(l.total * sizeof(double)), *probs_d = malloc((size_t)gc->B * gc->out * sizeof(double));
    float *x = malloc((size_t)gc->B * gc->in * sizeof(float));
    uint8_t *y = malloc((size_t)gc->B);
    tfps_layout_init_range(&l, 99, 0, l.total, params);
    for (int v = TFPS_VAR_B1; v < TFPS_NVARS; v += 2)   // non-zero biases, so their gradients are exercised
        for (size_t i = 0; i < l.size[v]; i++) params[l.off[v] + i] = (float)(0.2 * (urand(&seed) - 0.5));
    for (int i = 0; i < gc->B * gc->in; i++) x[i] = (float)urand(&seed);
    for (int i = 0; i < gc->B; i++) y[i] = (uint8_t)(urand(&seed) * gc->out);
    for (size_t i = 0; i < l.total; i++) pd[i] = params[i];

    tfps_backend *be = tfps_cpu_backend_new(&l, gc->B);
    CU_ASSERT_PTR_NOT_NULL_FATAL(be);
    float loss = 0;
    CU_ASSERT_FATAL(be->step(be, params, x, y, gc->B, grads, &loss) == TFPS_OK);

    // forward: loss and probabilities against float64
    const double loss_ref = loss_f64(&l, pd, x, y, gc->B, probs_d);
    CU_ASSERT(fabs(loss - loss_ref) <= 1e-5 * fabs(loss_ref) + 1e-6);
    float *a1 = malloc((size_t)gc->B * gc->h1 * sizeof(float)), *a2 = malloc((size_t)gc->B * gc->h2 * sizeof(float)),
          *lg = malloc((size_t)gc->B * gc->out * sizeof(float)), *pr = malloc((size_t)gc->B * gc->out * sizeof(float));
    tfps_cpu_forward(&l, params, x, y, gc->B, a1, a2, lg, pr);
    double maxp = 0;
    for (int i = 0; i < gc->B * gc->out; i++) maxp = fmax(maxp, fabs(pr[i] - probs_d[i]));
    CU_ASSERT(maxp < 1e-5);

    // the indices to check
    size_t n = 0, *idx = malloc(l.total * sizeof(size_t));
    if (!gc->sample) {
        for (size_t i = 0; i < l.total; i++) idx[n++] = i;
    } else {
        for (int v = TFPS_VAR_B1; v < TFPS_NVARS; v += 2)
            for (size_t i = 0; i < l.size[v]; i++) idx[n++] = l.off[v] + i;
        for (int k = 0; k < gc->sample; k++) {
            int v = 2 * (k % 3);   // W1, W2, W3 in turn
            idx[n++] = l.off[v] + (size_t)(urand(&seed) * l.size[v]);
        }
    }
    double *fd = malloc(n * sizeof(double)), maxfd = 0;
    const double h = 1e-6;
    for (size_t k = 0; k < n; k++) {
        size_t i = idx[k];
        const double keep = pd[i];
        pd[i] = keep + h;
        double lp = loss_f64(&l, pd, x, y, gc->B, NULL);
        pd[i] = keep - h;
        double lm = loss_f64(&l, pd, x, y, gc->B, NULL);
        pd[i] = keep;
        fd[k] = (lp - lm) / (2 * h);
        maxfd = fmax(maxfd, fabs(fd[k]));
    }
    size_t bad = 0;
    double worst = 0;
    for (size_t k = 0; k < n; k++) {
        double diff = fabs(grads[idx[k]] - fd[k]), tol = 1e-3 * fabs(fd[k]) + 1e-4 * maxfd;
        worst = fmax(worst, diff / (fabs(fd[k]) + 1e-4 * maxfd));
        if (diff > tol) {
            if (bad < 5)
                printf("\n  %d-%d-%d-%d B=%d: grad[%zu] (%s) = %.8g, finite difference %.8g", gc->in, gc->h1, gc->h2,
                       gc->out, gc->B, idx[k], tfps_var_name(tfps_layout_var_of(&l, idx[k])), grads[idx[k]], fd[k]);
            bad++;
        }
    }
    printf("\n  %d-%d-%d-%d B=%d: %zu gradients checked, worst relative error %.2e ", gc->in, gc->h1, gc->h2, gc->out,
           gc->B, n, worst);
    CU_ASSERT_EQUAL(bad, 0);
    CU_ASSERT(maxfd > 0);   // the check is not vacuous

    // predict agrees with the argmax of the float64 probabilities (up to near-ties)
    uint8_t *pred = malloc((size_t)gc->B);
    float *plogits = malloc((size_t)gc->B * gc->out * sizeof(float));
    CU_ASSERT(be->predict(be, params, x, gc->B, pred, plogits) == TFPS_OK);
    // its logits are the training forward's (the same functions: equal bits)
    CU_ASSERT(memcmp(plogits, lg, (size_t)gc->B * gc->out * sizeof(float)) == 0);
    CU_ASSERT(be->predict(be, params, x, gc->B, pred, NULL) == TFPS_OK);   // logits are optional
    for (int i = 0; i < gc->B; i++) {
        int best = 0;
        for (int o = 1; o < gc->out; o++)
            if (probs_d[(size_t)i * gc->out + o] > probs_d[(size_t)i * gc->out + best]) best = o;
        double gap = probs_d[(size_t)i * gc->out + best] - probs_d[(size_t)i * gc->out + pred[i]];
        CU_ASSERT(pred[i] == best || gap < 1e-6);
    }
    CU_ASSERT_EQUAL(be->step(be, params, x, y, gc->B + 1, grads, &loss), TFPS_ERR);   // over max batch: refused

    tfps_backend_free(be);
    free(pred);
    free(plogits);
    free(fd);
    free(idx);
    free(a1);
    free(a2);
    free(lg);
    free(pr);
    free(params);
    free(grads);
    free(pd);
    free(probs_d);
    free(x);
    free(y);
}

static void test_small_all_params(void) {
    const gcase cases[] = {{12, 7, 5, 4, 1, 0}, {12, 7, 5, 4, 3, 0}, {20, 16, 9, 10, 8, 0}, {9, 3, 11, 3, 33, 0}};
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) run_case(&cases[i]);
}

static void test_mnist_sized(void) {
    const gcase cases[] = {{784, 300, 100, 10, 4, 300}, {784, 64, 32, 10, 17, 300}, {784, 128, 50, 10, 64, 150}};
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) run_case(&cases[i]);
}

/* The CPU backend against refnet's float64 reference at test_cuda's cases. */
static void test_refnet_cases(void) {
    const int sizes[2][2] = {{300, 100}, {1024, 37}}, batches[] = {1, 7, 64, 1000};
    for (int s = 0; s < 2; s++)
        for (int bi = 0; bi < 4; bi++) {
            const int h1 = sizes[s][0], h2 = sizes[s][1], B = batches[bi];
            refnet_case rc;
            CU_ASSERT_FATAL(refnet_case_init(&rc, h1, h2, B) == TFPS_OK);
            const tfps_layout *l = &rc.l;
            tfps_backend *be = tfps_cpu_backend_new(l, B);
            float *g = malloc(l->total * sizeof(float)), *a1 = malloc((size_t)B * h1 * sizeof(float)),
                  *a2 = malloc((size_t)B * h2 * sizeof(float)), *z = malloc((size_t)B * 10 * sizeof(float)),
                  *pr = malloc((size_t)B * 10 * sizeof(float)), loss = 0;
            CU_ASSERT_FATAL(be && g && a1 && a2 && z && pr);
            CU_ASSERT_FATAL(be->step(be, rc.params, rc.x, rc.y, B, g, &loss) == TFPS_OK);
            tfps_cpu_forward(l, rc.params, rc.x, rc.y, B, a1, a2, z, pr);
            double e[4 + TFPS_NVARS], worst = 0;
            e[0] = refnet_rel_err(a1, rc.a1, (size_t)B * h1, NULL);
            e[1] = refnet_rel_err(a2, rc.a2, (size_t)B * h2, NULL);
            e[2] = refnet_rel_err(pr, rc.probs, (size_t)B * 10, NULL);
            e[3] = refnet_rel_err(&loss, &rc.loss, 1, NULL);
            for (int v = 0; v < TFPS_NVARS; v++) e[4 + v] = refnet_rel_err(g + l->off[v], rc.grads + l->off[v], l->size[v], NULL);
            printf("\n  784-%d-%d-10 B=%d (%d redrawn): a1 %.1e a2 %.1e probs %.1e loss %.1e", h1, h2, B, rc.redrawn,
                   e[0], e[1], e[2], e[3]);
            for (int v = 0; v < TFPS_NVARS; v++) printf(" %s %.1e", tfps_var_name(v), e[4 + v]);
            for (int k = 0; k < 4 + TFPS_NVARS; k++) {
                CU_ASSERT(e[k] <= 1e-4);
                worst = fmax(worst, e[k]);
            }
            CU_ASSERT(worst > 0);   // fp32 against float64: some rounding must show, or the comparison is vacuous
            tfps_backend_free(be);
            free(g); free(a1); free(a2); free(z); free(pr);
            refnet_case_free(&rc);
        }
}

/* Every refusal of step and predict: TFPS_ERR, one line in err naming the bad
 * value and the range expected, and the caller's outputs untouched. */
static void expect_refused(tfps_backend *be, int rc, const char *what, const char *value, const char *range) {
    const int named = strstr(be->err, value) && strstr(be->err, range) && !strchr(be->err, '\n');
    if (rc != TFPS_ERR || !named)
        printf("\n  %s: rc %d, err \"%s\" (wanted \"%s\" and \"%s\")", what, rc, be->err, value, range);
    CU_ASSERT_EQUAL(rc, TFPS_ERR);
    CU_ASSERT(be->err[0] != '\0');
    CU_ASSERT(named);
    be->err[0] = '\0';
}

static void test_cpu_refusals(void) {
    enum { MAXB = 4 };
    tfps_layout l;
    CU_ASSERT_FATAL(tfps_layout_init(&l, 12, 7, 5, 10, NULL, 0) == TFPS_OK);
    tfps_backend *be = tfps_cpu_backend_new(&l, MAXB);
    CU_ASSERT_PTR_NOT_NULL_FATAL(be);
    float *params = calloc(l.total, sizeof(float)), *grads = malloc(l.total * sizeof(float));
    float x[(MAXB + 1) * 12] = {0}, loss = -1.0f;
    uint8_t y[MAXB + 1] = {0}, pred[MAXB + 1];
    CU_ASSERT_FATAL(params && grads);
    for (size_t i = 0; i < l.total; i++) grads[i] = 7.0f;
    memset(pred, 0xee, sizeof(pred));
    be->err[0] = '\0';

    expect_refused(be, be->step(be, params, x, y, MAXB + 1, grads, &loss), "step over max batch", "batch of 5",
                   "1..4");
    expect_refused(be, be->step(be, params, x, y, 0, grads, &loss), "step of 0", "batch of 0", "1..4");
    expect_refused(be, be->step(be, params, x, y, -3, grads, &loss), "step of -3", "batch of -3", "1..4");
    y[2] = 10;   // == classes
    expect_refused(be, be->step(be, params, x, y, 3, grads, &loss), "label 10", "label 10 of example 2", "0..9");
    y[2] = 0;
    y[0] = 255;
    expect_refused(be, be->step(be, params, x, y, 1, grads, &loss), "label 255", "label 255 of example 0", "0..9");
    y[0] = 0;
    expect_refused(be, be->predict(be, params, x, MAXB + 1, pred, NULL), "predict over max batch", "batch of 5", "1..4");
    expect_refused(be, be->predict(be, params, x, 0, pred, NULL), "predict of 0", "batch of 0", "1..4");

    int untouched = loss == -1.0f;
    for (size_t i = 0; i < l.total; i++) untouched &= grads[i] == 7.0f;
    for (int i = 0; i <= MAXB; i++) untouched &= pred[i] == 0xee;
    CU_ASSERT(untouched);   // refused before computing anything

    // the same backend still serves a good batch, at the edges of both ranges
    y[0] = 9;
    CU_ASSERT_EQUAL(be->step(be, params, x, y, MAXB, grads, &loss), TFPS_OK);
    CU_ASSERT_EQUAL(be->predict(be, params, x, 1, pred, NULL), TFPS_OK);
    tfps_backend_free(be);
    free(params);
    free(grads);
}

/* Batcher: slices are disjoint and cover the set; each epoch visits the slice once; deterministic. */
static void test_batcher(void) {
    enum { N = 103 };
    uint8_t images[N * 4], labels[N];
    for (int i = 0; i < N; i++) {
        labels[i] = (uint8_t)(i % 10);
        for (int k = 0; k < 4; k++) images[i * 4 + k] = (uint8_t)i;   // pixel value = example id
    }
    tfps_idx_set set = {.n = N, .rows = 2, .cols = 2, .images = images, .labels = labels};
    int owner[N];
    memset(owner, -1, sizeof(owner));
    const int W = 3, B = 8;
    for (int w = 0; w < W; w++) {
        tfps_batcher b, b2;
        CU_ASSERT_FATAL(tfps_batcher_init(&b, &set, w, W, 42, NULL, 0) == TFPS_OK);
        CU_ASSERT_FATAL(tfps_batcher_init(&b2, &set, w, W, 42, NULL, 0) == TFPS_OK);
        float x[B * 4], x2[B * 4];
        uint8_t y[B], y2[B];
        int epoch = 0, seen_epoch0[N] = {0};
        int prev_order_first = -1, differs = 0;
        for (long long s = 0; s < 2 * tfps_batcher_steps_per_epoch(&b, B); s++) {
            int n = tfps_batcher_next(&b, B, x, y, &epoch), n2 = tfps_batcher_next(&b2, B, x2, y2, NULL);
            CU_ASSERT_EQUAL(n, n2);
            CU_ASSERT(memcmp(x, x2, sizeof(float) * 4 * (size_t)n) == 0);   // same seed, same batches
            for (int i = 0; i < n; i++) {
                int id = (int)lroundf(x[i * 4] * 255.0f);
                CU_ASSERT_EQUAL(y[i], id % 10);
                if (epoch == 0) {
                    seen_epoch0[id]++;
                    CU_ASSERT(owner[id] == -1 || owner[id] == w);
                    owner[id] = w;
                } else if (s == tfps_batcher_steps_per_epoch(&b, B) && i == 0) {
                    differs = id != prev_order_first;
                }
                if (s == 0 && i == 0) prev_order_first = id;
            }
        }
        CU_ASSERT(differs);   // reshuffled per epoch (first example changed for this seed)
        for (int id = 0; id < N; id++) CU_ASSERT(seen_epoch0[id] == (id % W == w ? 1 : 0));
        tfps_batcher_destroy(&b);
        tfps_batcher_destroy(&b2);
    }
    for (int id = 0; id < N; id++) CU_ASSERT(owner[id] >= 0);
    tfps_batcher b;
    char err[TFPS_ERR_LEN];
    CU_ASSERT_EQUAL(tfps_batcher_init(&b, &set, 3, 3, 1, err, sizeof(err)), TFPS_ERR);
}

/* Batcher resume: skip(k) then next() gives exactly batch k of a fresh run
 * (x, y, size, epoch), for sizes that divide the slice and ones that leave a
 * short last batch, k inside an epoch, on its boundaries and epochs ahead;
 * from a fresh batcher and from one that has already moved (skip is absolute).
 * A feeder initialised after the skip starts at batch k. */
static void test_batcher_skip(void) {
    enum { MAXN = 61, MAXB = 16, D = 4 };
    static const struct { int n, W, w, B; } cases[] = {
        {1, 1, 0, 1},  {1, 1, 0, 4},  {10, 1, 0, 5},  {10, 1, 0, 3},   {11, 1, 0, 1},   {11, 1, 0, 16},
        {61, 1, 0, 7}, {61, 2, 1, 7}, {61, 3, 2, 10}, {61, 4, 0, 16},  {60, 3, 1, 5},   {59, 5, 4, 2},
    };
    uint8_t images[MAXN * D], labels[MAXN];
    for (int i = 0; i < MAXN; i++) {
        labels[i] = (uint8_t)(i % 10);
        for (int k = 0; k < D; k++) images[i * D + k] = (uint8_t)(i * 4 + k);   // every pixel names its example
    }
    tfps_layout l;
    CU_ASSERT_FATAL(tfps_layout_init(&l, D, 3, 3, 10, NULL, 0) == TFPS_OK);
    tfps_backend *be = tfps_cpu_backend_new(&l, MAXB);
    CU_ASSERT_PTR_NOT_NULL_FATAL(be);
    for (size_t c = 0; c < sizeof(cases) / sizeof(cases[0]); c++) {
        const int B = cases[c].B;
        tfps_idx_set set = {.n = cases[c].n, .rows = 2, .cols = 2, .images = images, .labels = labels};
        tfps_batcher ref, moved;
        CU_ASSERT_FATAL(tfps_batcher_init(&ref, &set, cases[c].w, cases[c].W, 7, NULL, 0) == TFPS_OK);
        CU_ASSERT_FATAL(tfps_batcher_init(&moved, &set, cases[c].w, cases[c].W, 7, NULL, 0) == TFPS_OK);
        const long long per = tfps_batcher_steps_per_epoch(&ref, B), horizon = 4 * per + 3;
        float xr[MAXB * D], xs[MAXB * D];
        uint8_t yr[MAXB], ys[MAXB];
        int er = -1, es = -1, bad = 0;
        for (int i = 0; i < 5; i++) tfps_batcher_next(&moved, B, xs, ys, NULL);   // somewhere else first
        for (long long k = 0; k < horizon; k++) {
            // ref has made k calls: its next one is batch k
            const int nr = tfps_batcher_next(&ref, B, xr, yr, &er);
            tfps_batcher s;
            CU_ASSERT_FATAL(tfps_batcher_init(&s, &set, cases[c].w, cases[c].W, 7, NULL, 0) == TFPS_OK);
            CU_ASSERT_EQUAL(tfps_batcher_skip(&s, B, k), TFPS_OK);
            const int ns = tfps_batcher_next(&s, B, xs, ys, &es);
            if (nr != ns || er != es || memcmp(xr, xs, sizeof(float) * D * (size_t)nr) != 0 ||
                memcmp(yr, ys, (size_t)nr) != 0) {
                if (!bad++)
                    fprintf(stderr, "\n  case n=%d W=%d w=%d B=%d: skip(%lld) gives %d examples of epoch %d, "
                                    "fresh run %d of epoch %d\n", cases[c].n, cases[c].W, cases[c].w, B, k, ns,
                            es, nr, er);
            }
            CU_ASSERT_EQUAL(er, (int)(k / per));
            tfps_batcher_destroy(&s);
            // absolute: the batcher that had moved ahead (and back) lands on the same batch
            CU_ASSERT_EQUAL(tfps_batcher_skip(&moved, B, k), TFPS_OK);
            const int nm = tfps_batcher_next(&moved, B, xs, ys, &es);
            CU_ASSERT(nm == nr && es == er && memcmp(xr, xs, sizeof(float) * D * (size_t)nr) == 0);
            CU_ASSERT_EQUAL(tfps_batcher_skip(&moved, B, horizon - k), TFPS_OK);
        }
        CU_ASSERT_EQUAL(bad, 0);
        // a feeder initialised after the skip holds batch k first, then k+1
        const long long k = per + 1;
        tfps_batcher s;
        tfps_feeder f;
        CU_ASSERT_FATAL(tfps_batcher_init(&s, &set, cases[c].w, cases[c].W, 7, NULL, 0) == TFPS_OK);
        CU_ASSERT_EQUAL(tfps_batcher_skip(&s, B, k), TFPS_OK);
        CU_ASSERT_FATAL(tfps_feeder_init(&f, &s, be, B, NULL, 0) == TFPS_OK);
        tfps_batcher_destroy(&ref);
        CU_ASSERT_FATAL(tfps_batcher_init(&ref, &set, cases[c].w, cases[c].W, 7, NULL, 0) == TFPS_OK);
        for (long long i = 0; i <= k + 1; i++) {
            const int nr = tfps_batcher_next(&ref, B, xr, yr, &er);
            if (i < k) continue;
            const int cur = f.cur;
            CU_ASSERT(f.n[cur] == nr && f.epoch[cur] == er &&
                      memcmp(f.x[cur], xr, sizeof(float) * D * (size_t)nr) == 0 &&
                      memcmp(f.y[cur], yr, (size_t)nr) == 0);
            CU_ASSERT_EQUAL(tfps_feeder_prefetch(&f), TFPS_OK);
            tfps_feeder_advance(&f);
        }
        tfps_feeder_destroy(&f);
        // refusals change nothing
        const int ep = s.epoch, pos = s.pos;
        CU_ASSERT_EQUAL(tfps_batcher_skip(&s, 0, 3), TFPS_ERR);
        CU_ASSERT_EQUAL(tfps_batcher_skip(&s, B, -1), TFPS_ERR);
        CU_ASSERT_EQUAL(tfps_batcher_skip(&s, 1, (long long)set.n * ((long long)INT_MAX + 2)), TFPS_ERR);
        CU_ASSERT(s.epoch == ep && s.pos == pos);
        tfps_batcher_destroy(&s);
        tfps_batcher_destroy(&ref);
        tfps_batcher_destroy(&moved);
    }
    tfps_backend_free(be);
}

int main(void) {
    if (CU_initialize_registry() != CUE_SUCCESS) return 1;
    CU_pSuite s = CU_add_suite("cpu_backend", NULL, NULL);
    CU_add_test(s, "gradient check, every parameter, small layouts", test_small_all_params);
    CU_add_test(s, "gradient check, sampled, MNIST-sized layouts", test_mnist_sized);
    CU_add_test(s, "within test_cuda's 1e-4 of float64 at test_cuda's cases", test_refnet_cases);
    CU_add_test(s, "step and predict refusals name the value and the range expected", test_cpu_refusals);
    CU_add_test(s, "batcher: disjoint slices, per-epoch shuffle, deterministic", test_batcher);
    CU_add_test(s, "batcher: skip(k) then next() is batch k of a fresh run; a feeder after it starts there",
                test_batcher_skip);
    CU_basic_set_mode(CU_BRM_VERBOSE);
    CU_basic_run_tests();
    int failed = (int)(CU_get_number_of_tests_failed() + CU_get_number_of_suites_failed());
    CU_cleanup_registry();
    return failed;
}
