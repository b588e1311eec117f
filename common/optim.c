/* optim.c -- see optim.h. */
#include "optim.h"
#include "layout.h"

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
    switch (o->kind) {
    case TFPS_OPT_MOMENTUM:
        snprintf(buf, n, "momentum (lr %g, momentum %g%s)", (double)o->lr, (double)o->momentum,
                 o->nesterov ? ", nesterov" : "");
        break;
    case TFPS_OPT_ADAM:
        snprintf(buf, n, "adam (lr %g, beta1 %g, beta2 %g, epsilon %g)", (double)o->lr, o->beta1, o->beta2,
                 (double)o->epsilon);
        break;
    case TFPS_OPT_ADAGRAD:
        snprintf(buf, n, "adagrad (lr %g, initial accumulator %g, epsilon %g)", (double)o->lr,
                 (double)o->initial_accumulator, (double)o->epsilon);
        break;
    default: snprintf(buf, n, "sgd (lr %g)", (double)o->lr); break;
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

void tfps_optim_apply(const tfps_optim *o, uint64_t t, float *w, float *const slot[TFPS_OPTIM_MAX_SLOTS],
                      const float *g, size_t n) {
    const float lr = o->lr;
    switch (o->kind) {
    case TFPS_OPT_SGD:
        for (size_t i = 0; i < n; i++) w[i] -= lr * g[i];
        break;
    case TFPS_OPT_MOMENTUM: {
        float *m = slot[0];
        const float mu = o->momentum;
        if (o->nesterov) {
            for (size_t i = 0; i < n; i++) {
                m[i] = mu * m[i] - lr * g[i];
                w[i] += mu * m[i] - lr * g[i];
            }
        } else {
            for (size_t i = 0; i < n; i++) {
                m[i] = mu * m[i] - lr * g[i];
                w[i] += m[i];
            }
        }
        break;
    }
    case TFPS_OPT_ADAM: {
        float *m = slot[0], *v = slot[1];
        const double b1 = o->beta1, b2 = o->beta2, td = (double)(t ? t : 1);
        const float alpha = (float)((double)lr * sqrt(1.0 - pow(b2, td)) / (1.0 - pow(b1, td)));
        const float c1 = (float)(1.0 - b1), c2 = (float)(1.0 - b2), eps = o->epsilon;
        for (size_t i = 0; i < n; i++) {
            m[i] += (g[i] - m[i]) * c1;
            v[i] += (g[i] * g[i] - v[i]) * c2;
            w[i] -= alpha * m[i] / (sqrtf(v[i]) + eps);
        }
        break;
    }
    case TFPS_OPT_ADAGRAD: {
        float *a = slot[0];
        const float eps = o->epsilon;
        for (size_t i = 0; i < n; i++) {
            a[i] += g[i] * g[i];
            w[i] -= lr * g[i] / sqrtf(a[i] + eps);
        }
        break;
    }
    }
}
