/* test_optim.c -- every update rule of optim.c against a float64 reference of
 * Keras's formula, over many steps of random gradients.
 *
 * Tolerance: after STEPS updates the float32 weights stay within 1e-5 *
 * (1 + |w|) of the float64 ones; each step adds a few float32 roundings
 * (~6e-8 relative), so the bound leaves room for ~100 steps' worth of drift
 * yet a different rule misses it by far (test_reference_discriminates: Adam
 * checked against the reference of another beta2 misses by > 10x the bound). */
#include "optim.h"

#include <CUnit/Basic.h>
#include <float.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define N 512
#define STEPS 300
#define TOL 1e-5

static uint64_t rng = 88172645463325252ULL;
static double urand(void) {   /* xorshift64: reproducible */
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return (double)(rng >> 11) / 9007199254740992.0;
}

/* float64 reference of one update of element-wise state. */
static void ref_apply(const tfps_optim *o, uint64_t t, double *w, double *s0, double *s1, const double *g, int n) {
    const double lr = o->lr, mu = o->momentum, b1 = o->beta1, b2 = o->beta2, eps = o->epsilon;
    for (int i = 0; i < n; i++) {
        switch (o->kind) {
        case TFPS_OPT_SGD: w[i] -= lr * g[i]; break;
        case TFPS_OPT_MOMENTUM:
            s0[i] = mu * s0[i] - lr * g[i];
            w[i] += o->nesterov ? mu * s0[i] - lr * g[i] : s0[i];
            break;
        case TFPS_OPT_ADAM: {
            // Keras keeps beta1/beta2 as Python floats (doubles): the reference uses the same doubles
            const double alpha = lr * sqrt(1 - pow(b2, (double)t)) / (1 - pow(b1, (double)t));
            s0[i] = b1 * s0[i] + (1 - b1) * g[i];
            s1[i] = b2 * s1[i] + (1 - b2) * g[i] * g[i];
            w[i] -= alpha * s0[i] / (sqrt(s1[i]) + eps);
            break;
        }
        case TFPS_OPT_ADAGRAD:
            s0[i] += g[i] * g[i];
            w[i] -= lr * g[i] / sqrt(s0[i] + eps);
            break;
        }
    }
}

/* Runs STEPS updates of o in float32 and float64; returns the largest
 * |w32 - w64| / (1 + |w64|). */
static double run(const tfps_optim *o, int steps) {
    static float w[N], s0[N], s1[N], g[N];
    static double wd[N], s0d[N], s1d[N], gd[N];
    float *slot[TFPS_OPTIM_MAX_SLOTS] = {s0, s1};
    for (int i = 0; i < N; i++) wd[i] = w[i] = (float)(urand() * 2 - 1);
    tfps_optim_init_slots(o, slot, N);
    for (int i = 0; i < N; i++) {
        s0d[i] = tfps_optim_slots(o) > 0 ? s0[i] : 0;
        s1d[i] = tfps_optim_slots(o) > 1 ? s1[i] : 0;
    }
    double worst = 0;
    for (int t = 1; t <= steps; t++) {
        // gradients of mixed scale, some tiny, some zero: exercise epsilon and the bias correction
        for (int i = 0; i < N; i++) {
            double u = urand();
            gd[i] = g[i] = (float)(i % 17 == 0 ? 0.0 : (u * 2 - 1) * (i % 3 == 0 ? 1e-4 : 0.5));
        }
        tfps_optim_apply(o, (uint64_t)t, w, slot, g, N);
        ref_apply(o, (uint64_t)t, wd, s0d, s1d, gd, N);
    }
    for (int i = 0; i < N; i++) {
        double e = fabs((double)w[i] - wd[i]) / (1 + fabs(wd[i]));
        if (e > worst) worst = e;
    }
    return worst;
}

static tfps_optim make(int kind) {
    return (tfps_optim){.kind = kind, .lr = kind == TFPS_OPT_ADAM ? 0.001f : 0.05f, .momentum = 0.9f,
                        .beta1 = 0.9, .beta2 = 0.999, .epsilon = 1e-7f, .initial_accumulator = 0.1f};
}

static void check(const char *what, tfps_optim o) {
    double e = run(&o, STEPS);
    printf("\n    %-22s max rel. error vs float64 after %d steps: %.2e (tolerance %.0e)", what, STEPS, e, TOL);
    CU_ASSERT(e < TOL);
}

static void test_sgd(void) { check("sgd", make(TFPS_OPT_SGD)); }
static void test_momentum(void) { check("momentum", make(TFPS_OPT_MOMENTUM)); }
static void test_nesterov(void) {
    tfps_optim o = make(TFPS_OPT_MOMENTUM);
    o.nesterov = 1;
    check("momentum (nesterov)", o);
}
static void test_adam(void) { check("adam", make(TFPS_OPT_ADAM)); }
static void test_adagrad(void) { check("adagrad", make(TFPS_OPT_ADAGRAD)); }

/* The comparison can fail: the reference of a different rule or different
 * hyperparameters is far away. */
static void test_reference_discriminates(void) {
    tfps_optim a = make(TFPS_OPT_ADAM), b = a;
    b.beta2 = 0.9;   // same rule, other beta2: the float32 run is checked against b's reference below
    static float w[N], s0[N], s1[N], g[N];
    static double wd[N], s0d[N], s1d[N], gd[N];
    float *slot[TFPS_OPTIM_MAX_SLOTS] = {s0, s1};
    for (int i = 0; i < N; i++) {
        wd[i] = w[i] = 0.5f;
        s0[i] = s1[i] = 0;
        s0d[i] = s1d[i] = 0;
    }
    for (int t = 1; t <= 30; t++) {
        for (int i = 0; i < N; i++) gd[i] = g[i] = (float)(urand() - 0.5);
        tfps_optim_apply(&a, (uint64_t)t, w, slot, g, N);
        ref_apply(&b, (uint64_t)t, wd, s0d, s1d, gd, N);
    }
    double worst = 0;
    for (int i = 0; i < N; i++) worst = fmax(worst, fabs(w[i] - wd[i]));
    printf("\n    adam(beta2 0.999) vs reference of adam(beta2 0.9) after 30 steps: %.2e (must exceed %.0e)", worst, 10 * TOL);
    CU_ASSERT(worst > 10 * TOL);
}

static void test_describe_and_digest(void) {
    char buf[200];
    tfps_optim a = make(TFPS_OPT_ADAM), b = a;
    tfps_optim_describe(&a, buf, sizeof(buf));
    CU_ASSERT_STRING_EQUAL(buf, "adam (lr 0.001, beta1 0.9, beta2 0.999, epsilon 1e-07)");
    CU_ASSERT_EQUAL(tfps_optim_digest(&a), tfps_optim_digest(&b));
    b.beta2 = 0.998;
    CU_ASSERT_NOT_EQUAL(tfps_optim_digest(&a), tfps_optim_digest(&b));
    b = a;
    b.kind = TFPS_OPT_ADAGRAD;
    CU_ASSERT_NOT_EQUAL(tfps_optim_digest(&a), tfps_optim_digest(&b));
    CU_ASSERT_EQUAL(tfps_optim_slots(&a), 2);
    CU_ASSERT_STRING_EQUAL(tfps_optim_name(TFPS_OPT_MOMENTUM), "momentum");
    tfps_optim g = make(TFPS_OPT_ADAGRAD);
    float acc[4], *slot[TFPS_OPTIM_MAX_SLOTS] = {acc, NULL};
    tfps_optim_init_slots(&g, slot, 4);
    CU_ASSERT_EQUAL(acc[3], 0.1f);
}

/* SGD keeps the exact float arithmetic of plain w -= lr * g (the 1-ps,
 * 1-worker run's bit-for-bit equality with local mode relies on one code path,
 * and so do existing model files). */
static void test_sgd_exact(void) {
    tfps_optim o = make(TFPS_OPT_SGD);
    float w[3] = {1.0f, -2.5f, 0.125f}, g[3] = {0.3f, -0.7f, 1e-3f}, e[3];
    for (int i = 0; i < 3; i++) e[i] = w[i] - o.lr * g[i];
    tfps_optim_apply(&o, 1, w, (float *[TFPS_OPTIM_MAX_SLOTS]){NULL, NULL}, g, 3);
    CU_ASSERT(memcmp(w, e, sizeof(w)) == 0);
}

/* Keras keeps beta1 and beta2 as doubles and casts 1 - beta to float32:
 * (float)(1 - 0.999) = 0.0010000000475, not 1.0f - 0.999f = 0.00099998713.
 * From zero state, one step with g = 1 leaves exactly those constants in m and v. */
static void test_adam_keras_constants(void) {
    tfps_optim o = make(TFPS_OPT_ADAM);
    float w = 0.5f, m = 0.0f, v = 0.0f, g = 1.0f;
    tfps_optim_apply(&o, 1, &w, (float *[TFPS_OPTIM_MAX_SLOTS]){&m, &v}, &g, 1);
    CU_ASSERT_EQUAL(m, (float)(1.0 - 0.9));
    CU_ASSERT_EQUAL(v, (float)(1.0 - 0.999));
    CU_ASSERT_NOT_EQUAL(v, 1.0f - 0.999f);   // the two really differ
}

/* Huge gradients (a tester made a weight inf with twelve pushes of -3.4e38):
 * 40 updates through tfps_optim_apply_checked with gradients of magnitude G
 * on every 61st element and small ones elsewhere. The float64 reference
 * predicts which updates would leave fp32's range (any weight or slot above
 * FLT_MAX): exactly those must be refused, with w and the slots unchanged
 * byte for byte (tfps_optim_finite says 0 first); the others applied,
 * within TOL of the reference. No weight or slot is ever non-finite.
 * *accepted, *refused: the counts. */
static void huge_run(const tfps_optim *o, double G, int *accepted, int *refused) {
    enum { M = 244, T = 40 };
    float w[M], s0[M], s1[M], g[M], w_before[M], s0_before[M], s1_before[M];
    double wd[M], s0d[M], s1d[M], gd[M], wd2[M], s0d2[M], s1d2[M];
    float *slot[TFPS_OPTIM_MAX_SLOTS] = {s0, s1};
    const int ns = tfps_optim_slots(o);
    for (int i = 0; i < M; i++) wd[i] = w[i] = (float)(urand() * 2 - 1);
    tfps_optim_init_slots(o, slot, M);
    for (int i = 0; i < M; i++) {
        s0d[i] = ns > 0 ? s0[i] : 0;
        s1d[i] = ns > 1 ? s1[i] : 0;
    }
    uint64_t t = 0;   // updates made: a refused one is not counted (the ps's optimizer count)
    *accepted = *refused = 0;
    double worst = 0;
    for (int step = 0; step < T; step++) {
        for (int i = 0; i < M; i++) gd[i] = g[i] = (float)(i % 61 == 0 ? -G : (urand() * 2 - 1) * 0.5);
        memcpy(wd2, wd, sizeof(wd));
        memcpy(s0d2, s0d, sizeof(s0d));
        memcpy(s1d2, s1d, sizeof(s1d));
        ref_apply(o, t + 1, wd2, s0d2, s1d2, gd, M);
        int ref_ok = 1;
        for (int i = 0; i < M; i++)
            ref_ok &= fabs(wd2[i]) <= FLT_MAX && fabs(s0d2[i]) <= FLT_MAX && fabs(s1d2[i]) <= FLT_MAX;
        memcpy(w_before, w, sizeof(w));
        memcpy(s0_before, s0, sizeof(s0));
        memcpy(s1_before, s1, sizeof(s1));
        const int finite = tfps_optim_finite(o, t + 1, w, (const float *const *)slot, g, M);
        const int ok = tfps_optim_apply_checked(o, t + 1, w, slot, g, M);
        CU_ASSERT_EQUAL(finite, ok);
        if (ok != ref_ok) printf("\n    %s G=%g update %d: checked apply says %d, float64 reference %d",
                                 tfps_optim_name(o->kind), G, step + 1, ok, ref_ok);
        CU_ASSERT_EQUAL(ok, ref_ok);
        if (ok) {
            (*accepted)++;
            t++;
            memcpy(wd, wd2, sizeof(wd));
            memcpy(s0d, s0d2, sizeof(s0d));
            memcpy(s1d, s1d2, sizeof(s1d));
        } else {
            (*refused)++;
            CU_ASSERT(memcmp(w, w_before, sizeof(w)) == 0);
            CU_ASSERT(memcmp(s0, s0_before, sizeof(s0)) == 0);
            CU_ASSERT(memcmp(s1, s1_before, sizeof(s1)) == 0);
        }
        for (int i = 0; i < M; i++) {
            CU_ASSERT_FATAL(isfinite(w[i]) && isfinite(s0[i]) && isfinite(s1[i]));
            double e = fabs((double)w[i] - wd[i]) / (1 + fabs(wd[i]));
            if (e > worst) worst = e;
        }
    }
    CU_ASSERT(worst < TOL);
}

static void test_huge_gradients(void) {
    const struct {
        int kind, nesterov;
        double G;
        int accepted;   /* from the float64 reference's arithmetic, written down: the test can fail */
    } cases[] = {
        {TFPS_OPT_SGD, 0, 3.4e38, 20},    // lr 0.05: w grows 1.7e37 per update, FLT_MAX after 20
        {TFPS_OPT_SGD, 0, 1e19, 40},
        {TFPS_OPT_MOMENTUM, 0, 3.4e38, 6},
        {TFPS_OPT_MOMENTUM, 1, 3.4e38, 5},
        {TFPS_OPT_MOMENTUM, 0, 1e19, 40},
        {TFPS_OPT_ADAM, 0, 3.4e38, 0},    // g*g is inf: v would be
        {TFPS_OPT_ADAM, 0, 1e19, 40},     // v stays below 1e38; steps of ~lr
        {TFPS_OPT_ADAGRAD, 0, 3.4e38, 0},
        {TFPS_OPT_ADAGRAD, 0, 1e19, 3},   // a += 1e38 per update: the 4th passes FLT_MAX
    };
    for (size_t c = 0; c < sizeof(cases) / sizeof(cases[0]); c++) {
        tfps_optim o = make(cases[c].kind);
        o.nesterov = cases[c].nesterov;
        int accepted, refused;
        huge_run(&o, cases[c].G, &accepted, &refused);
        printf("\n    %-9s%s G=%-7g %2d updates applied, %2d refused as non-finite", tfps_optim_name(o.kind),
               o.nesterov ? " (nest.)" : "", cases[c].G, accepted, refused);
        CU_ASSERT_EQUAL(accepted, cases[c].accepted);
        CU_ASSERT_EQUAL(accepted + refused, 40);
    }
}

int main(void) {
    if (CU_initialize_registry() != CUE_SUCCESS) return 1;
    CU_pSuite s = CU_add_suite("optim", NULL, NULL);
    CU_add_test(s, "sgd vs float64", test_sgd);
    CU_add_test(s, "sgd exact arithmetic", test_sgd_exact);
    CU_add_test(s, "momentum vs float64", test_momentum);
    CU_add_test(s, "nesterov vs float64", test_nesterov);
    CU_add_test(s, "adam vs float64", test_adam);
    CU_add_test(s, "adagrad vs float64", test_adagrad);
    CU_add_test(s, "adam: Keras's float constants", test_adam_keras_constants);
    CU_add_test(s, "the reference discriminates", test_reference_discriminates);
    CU_add_test(s, "describe and digest", test_describe_and_digest);
    CU_add_test(s, "huge gradients: non-finite updates refused, state unchanged", test_huge_gradients);
    CU_basic_set_mode(CU_BRM_VERBOSE);
    CU_basic_run_tests();
    int failed = (int)(CU_get_number_of_tests_failed() + CU_get_number_of_suites_failed());
    CU_cleanup_registry();
    return failed;
}
