/* optim.c -- see optim.h. */
#include "optim.h"
#include "layout.h"
#include "tfps.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

static const char *const names[TFPS_OPT_COUNT] = {"sgd", "momentum", "adam", "adagrad"};

const char *tfps_optim_name(int kind) { return kind >= 0 && kind < TFPS_OPT_COUNT ? names[kind] : "?"; }

int tfps_optim_slots(const tfps_optim *o) {
    switch (o->kind) {
    case TFPS_OPT_MOMENTUM: return 1;
    case TFPS_OPT_ADAM: return 2;
    case TFPS_OPT_ADAGRAD: return 1;
    default: return 0;
    }
}

void tfps_optim_describe(const tfps_optim *o, char *buf, size_t n) {
    // every number in its shortest exact form: two rules whose digests differ never read alike
    char lr[TFPS_NUM_LEN], a[TFPS_NUM_LEN], b[TFPS_NUM_LEN], e[TFPS_NUM_LEN];
    tfps_fmt_float(lr, sizeof(lr), o->lr);
    tfps_fmt_float(e, sizeof(e), o->epsilon);
    switch (o->kind) {
    case TFPS_OPT_MOMENTUM:
        snprintf(buf, n, "momentum (lr %s, momentum %s%s)", lr, tfps_fmt_float(a, sizeof(a), o->momentum),
                 o->nesterov ? ", nesterov" : "");
        break;
    case TFPS_OPT_ADAM:
        snprintf(buf, n, "adam (lr %s, beta1 %s, beta2 %s, epsilon %s)", lr, tfps_fmt_double(a, sizeof(a), o->beta1),
                 tfps_fmt_double(b, sizeof(b), o->beta2), e);
        break;
    case TFPS_OPT_ADAGRAD:
        snprintf(buf, n, "adagrad (lr %s, initial accumulator %s, epsilon %s)", lr,
                 tfps_fmt_float(a, sizeof(a), o->initial_accumulator), e);
        break;
    default: snprintf(buf, n, "sgd (lr %s)", lr); break;
    }
}

uint64_t tfps_optim_digest(const tfps_optim *o) {
    /* the exact bits, not the %g text: 0.1f and 0.10000001f differ */
    const float p[] = {o->lr, o->momentum, o->epsilon, o->initial_accumulator};
    const double b[] = {o->beta1, o->beta2};
    uint64_t h = tfps_fnv1a_u64(TFPS_FNV_OFFSET, (uint64_t)o->kind);
    h = tfps_fnv1a_u64(h, (uint64_t)o->nesterov);
    h = tfps_fnv1a(h, b, sizeof(b));
    return tfps_fnv1a(h, p, sizeof(p));
}

void tfps_optim_init_slots(const tfps_optim *o, float *const slot[TFPS_OPTIM_MAX_SLOTS], size_t n) {
    const int ns = tfps_optim_slots(o);
    const float v = o->kind == TFPS_OPT_ADAGRAD ? o->initial_accumulator : 0.0f;
    for (int k = 0; k < ns; k++)
        for (size_t i = 0; i < n; i++) slot[k][i] = v;
}

/* One element of each rule: the new w (and slots) from the old ones and g.
 * tfps_optim_finite and tfps_optim_apply both compute through these, so the
 * check sees exactly the floats the apply would write. */
static inline void el_sgd(float lr, float *w, float g) { *w -= lr * g; }

static inline void el_momentum(float lr, float mu, int nesterov, float *w, float *m, float g) {
    *m = mu * *m - lr * g;
    if (nesterov) *w += mu * *m - lr * g;
    else *w += *m;
}

static inline void el_adam(float alpha, float c1, float c2, float eps, float *w, float *m, float *v, float g) {
    *m += (g - *m) * c1;
    *v += (g * g - *v) * c2;
    *w -= alpha * *m / (sqrtf(*v) + eps);
}

static inline void el_adagrad(float lr, float eps, float *w, float *a, float g) {
    *a += g * g;
    *w -= lr * g / sqrtf(*a + eps);
}

/* 1 when x is inf or NaN (all exponent bits set): integer ops only, so the
 * check loops below vectorize (isfinite() on each float kept them scalar:
 * the check cost 3x the sgd update). */
static inline uint32_t nonfinite(float x) {
    uint32_t u;
    memcpy(&u, &x, sizeof(u));
    return (u & 0x7f800000u) == 0x7f800000u;
}

/* Adam's step factor of update t: in double, rounded once (optim.h). */
static float adam_alpha(const tfps_optim *o, uint64_t t) {
    const double td = (double)(t ? t : 1);
    return (float)((double)o->lr * sqrt(1.0 - pow(o->beta2, td)) / (1.0 - pow(o->beta1, td)));
}

int tfps_optim_finite(const tfps_optim *o, uint64_t t, const float *w, const float *const slot[TFPS_OPTIM_MAX_SLOTS],
                      const float *g, size_t n) {
    const float lr = o->lr;
    uint32_t bad = 0;   // or-ed over the loop (no early exit): the common all-finite case runs straight through
    switch (o->kind) {
    case TFPS_OPT_SGD:
        for (size_t i = 0; i < n; i++) {
            float wi = w[i];
            el_sgd(lr, &wi, g[i]);
            bad |= nonfinite(wi);
        }
        break;
    case TFPS_OPT_MOMENTUM:
        for (size_t i = 0; i < n; i++) {
            float wi = w[i], mi = slot[0][i];
            el_momentum(lr, o->momentum, o->nesterov, &wi, &mi, g[i]);
            bad |= nonfinite(wi) | nonfinite(mi);
        }
        break;
    case TFPS_OPT_ADAM: {
        const float alpha = adam_alpha(o, t), c1 = (float)(1.0 - o->beta1), c2 = (float)(1.0 - o->beta2);
        for (size_t i = 0; i < n; i++) {
            float wi = w[i], mi = slot[0][i], vi = slot[1][i];
            el_adam(alpha, c1, c2, o->epsilon, &wi, &mi, &vi, g[i]);
            bad |= nonfinite(wi) | nonfinite(mi) | nonfinite(vi);
        }
        break;
    }
    case TFPS_OPT_ADAGRAD:
        for (size_t i = 0; i < n; i++) {
            float wi = w[i], ai = slot[0][i];
            el_adagrad(lr, o->epsilon, &wi, &ai, g[i]);
            bad |= nonfinite(wi) | nonfinite(ai);
        }
        break;
    }
    return !bad;
}

void tfps_optim_apply(const tfps_optim *o, uint64_t t, float *w, float *const slot[TFPS_OPTIM_MAX_SLOTS],
                      const float *g, size_t n) {
    const float lr = o->lr;
    switch (o->kind) {
    case TFPS_OPT_SGD:
        for (size_t i = 0; i < n; i++) el_sgd(lr, &w[i], g[i]);
        break;
    case TFPS_OPT_MOMENTUM:
        for (size_t i = 0; i < n; i++) el_momentum(lr, o->momentum, o->nesterov, &w[i], &slot[0][i], g[i]);
        break;
    case TFPS_OPT_ADAM: {
        float *m = slot[0], *v = slot[1];
        const float alpha = adam_alpha(o, t), c1 = (float)(1.0 - o->beta1), c2 = (float)(1.0 - o->beta2);
        for (size_t i = 0; i < n; i++) el_adam(alpha, c1, c2, o->epsilon, &w[i], &m[i], &v[i], g[i]);
        break;
    }
    case TFPS_OPT_ADAGRAD:
        for (size_t i = 0; i < n; i++) el_adagrad(lr, o->epsilon, &w[i], &slot[0][i], g[i]);
        break;
    }
}

int tfps_optim_apply_checked(const tfps_optim *o, uint64_t t, float *w, float *const slot[TFPS_OPTIM_MAX_SLOTS],
                             const float *g, size_t n) {
    if (!tfps_optim_finite(o, t, w, (const float *const *)slot, g, n)) return 0;
    tfps_optim_apply(o, t, w, slot, g, n);
    return 1;
}
