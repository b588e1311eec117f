/* refnet.c -- the backend comparison cases and their float64 reference (see refnet.h). */
#include "refnet.h"
#include "tfps.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

static double urand(unsigned *s) {
    *s = *s * 1103515245u + 12345u;
    return ((*s >> 8) & 0xffffff) / (double)0x1000000;
}

static double max_abs(const double *v, int n) {
    double m = 0;
    for (int i = 0; i < n; i++) m = fmax(m, fabs(v[i]));
    return m;
}

/* out[OC] = in[C] @ W[C][OC] + b, in float64 from the float weights. */
static void dense64(double *out, const double *in, const float *W, const float *b, int C, int OC) {
    for (int o = 0; o < OC; o++) out[o] = b[o];
    for (int k = 0; k < C; k++) {
        const double v = in[k];
        if (v == 0.0) continue;
        const float *w = W + (size_t)k * OC;
        for (int o = 0; o < OC; o++) out[o] += v * w[o];
    }
}

/* True when some pre-activation of z[n] lies within 1e-5 * max|z| of 0. */
static int near_kink(const double *z, int n) {
    const double tau = 1e-5 * max_abs(z, n);
    for (int i = 0; i < n; i++)
        if (fabs(z[i]) < tau) return 1;
    return 0;
}

/* Forward of example i into c->a1/a2/probs (z3 scratch [10]); returns its
 * loss, or NAN when it sits on a kink or a tie and must be redrawn. */
static double forward_one(refnet_case *c, int i, double *xd, double *z3) {
    const tfps_layout *l = &c->l;
    const float *P = c->params;
    double *a1 = c->a1 + (size_t)i * l->h1, *a2 = c->a2 + (size_t)i * l->h2, *pr = c->probs + (size_t)i * l->out;
    for (int k = 0; k < l->in; k++) xd[k] = c->x[(size_t)i * l->in + k];
    dense64(a1, xd, P + l->off[TFPS_VAR_W1], P + l->off[TFPS_VAR_B1], l->in, l->h1);
    if (near_kink(a1, l->h1)) return NAN;
    for (int o = 0; o < l->h1; o++) a1[o] = a1[o] > 0 ? a1[o] : 0;
    dense64(a2, a1, P + l->off[TFPS_VAR_W2], P + l->off[TFPS_VAR_B2], l->h1, l->h2);
    if (near_kink(a2, l->h2)) return NAN;
    for (int o = 0; o < l->h2; o++) a2[o] = a2[o] > 0 ? a2[o] : 0;
    dense64(z3, a2, P + l->off[TFPS_VAR_W3], P + l->off[TFPS_VAR_B3], l->h2, l->out);
    double top = -INFINITY, second = -INFINITY;
    for (int o = 0; o < l->out; o++) {
        if (z3[o] > top) {
            second = top;
            top = z3[o];
        } else if (z3[o] > second) {
            second = z3[o];
        }
    }
    if (top - second < 1e-5 * max_abs(z3, l->out)) return NAN;
    double sum = 0;
    for (int o = 0; o < l->out; o++) sum += exp(z3[o] - top);
    for (int o = 0; o < l->out; o++) pr[o] = exp(z3[o] - top) / sum;
    return log(sum) - (z3[c->y[i]] - top);
}

void refnet_case_free(refnet_case *c) {
    free(c->params);
    free(c->x);
    free(c->y);
    free(c->a1);
    free(c->a2);
    free(c->probs);
    free(c->grads);
    memset(c, 0, sizeof(*c));
}

int refnet_case_init(refnet_case *c, int h1, int h2, int B) {
    memset(c, 0, sizeof(*c));
    if (B < 1 || tfps_layout_init(&c->l, 784, h1, h2, 10, NULL, 0) != TFPS_OK) return TFPS_ERR;
    const tfps_layout *l = &c->l;
    c->B = B;
    c->params = malloc(l->total * sizeof(float));
    c->x = malloc((size_t)B * l->in * sizeof(float));
    c->y = malloc((size_t)B);
    c->a1 = malloc((size_t)B * l->h1 * sizeof(double));
    c->a2 = malloc((size_t)B * l->h2 * sizeof(double));
    c->probs = malloc((size_t)B * l->out * sizeof(double));
    c->grads = calloc(l->total, sizeof(double));
    double *loss_i = malloc((size_t)B * sizeof(double)), *xd = malloc((size_t)l->in * sizeof(double)),
           *z3 = malloc((size_t)l->out * sizeof(double)), *d2 = malloc((size_t)l->h2 * sizeof(double)),
           *d1 = malloc((size_t)l->h1 * sizeof(double)), *dz = malloc((size_t)l->out * sizeof(double));
    int rc = TFPS_ERR;
    if (!c->params || !c->x || !c->y || !c->a1 || !c->a2 || !c->probs || !c->grads || !loss_i || !xd || !z3 || !d2 ||
        !d1 || !dz)
        goto out;

    unsigned seed = 7u * (unsigned)B + (unsigned)h1;
    tfps_layout_init_range(l, 3, 0, l->total, c->params);
    for (int v = TFPS_VAR_B1; v < TFPS_NVARS; v += 2)   // non-zero biases, so their gradients are exercised
        for (size_t i = 0; i < l->size[v]; i++) c->params[l->off[v] + i] = (float)(0.2 * (urand(&seed) - 0.5));
    for (size_t i = 0; i < (size_t)B * l->in; i++) c->x[i] = (float)urand(&seed);
    for (int i = 0; i < B; i++) c->y[i] = (uint8_t)(urand(&seed) * 10);

    // forward, redrawing the pixels of examples on a kink or a tie
    for (int i = 0; i < B; i++) loss_i[i] = NAN;
    for (int round = 0;; round++) {
        int dirty = 0;
        for (int i = 0; i < B; i++) {
            if (!isnan(loss_i[i])) continue;
            if (round > 0) {
                for (int k = 0; k < l->in; k++) c->x[(size_t)i * l->in + k] = (float)urand(&seed);
                c->redrawn++;
            }
            loss_i[i] = forward_one(c, i, xd, z3);
            dirty += isnan(loss_i[i]);
        }
        if (!dirty) break;
        if (round == 100) goto out;
    }

    // backward, example by example, accumulated in float64
    const float *P = c->params;
    const float *W2 = P + l->off[TFPS_VAR_W2], *W3 = P + l->off[TFPS_VAR_W3];
    double *gW1 = c->grads + l->off[TFPS_VAR_W1], *gb1 = c->grads + l->off[TFPS_VAR_B1],
           *gW2 = c->grads + l->off[TFPS_VAR_W2], *gb2 = c->grads + l->off[TFPS_VAR_B2],
           *gW3 = c->grads + l->off[TFPS_VAR_W3], *gb3 = c->grads + l->off[TFPS_VAR_B3];
    double loss = 0;
    for (int i = 0; i < B; i++) {
        const double *a1 = c->a1 + (size_t)i * l->h1, *a2 = c->a2 + (size_t)i * l->h2,
                     *pr = c->probs + (size_t)i * l->out;
        loss += loss_i[i];
        int best = 0;
        for (int o = 0; o < l->out; o++) {
            dz[o] = (pr[o] - (o == c->y[i] ? 1.0 : 0.0)) / B;
            if (pr[o] > pr[best]) best = o;
        }
        c->correct += best == c->y[i];
        for (int k = 0; k < l->h2; k++) {
            double s = 0;
            for (int o = 0; o < l->out; o++) {
                gW3[(size_t)k * l->out + o] += a2[k] * dz[o];
                s += W3[(size_t)k * l->out + o] * dz[o];
            }
            d2[k] = a2[k] > 0 ? s : 0;
        }
        for (int o = 0; o < l->out; o++) gb3[o] += dz[o];
        for (int k = 0; k < l->h1; k++) {
            double s = 0;
            for (int o = 0; o < l->h2; o++) {
                gW2[(size_t)k * l->h2 + o] += a1[k] * d2[o];
                s += W2[(size_t)k * l->h2 + o] * d2[o];
            }
            d1[k] = a1[k] > 0 ? s : 0;
        }
        for (int o = 0; o < l->h2; o++) gb2[o] += d2[o];
        for (int k = 0; k < l->in; k++) {
            const double v = c->x[(size_t)i * l->in + k];
            if (v == 0.0) continue;
            double *g = gW1 + (size_t)k * l->h1;
            for (int o = 0; o < l->h1; o++) g[o] += v * d1[o];
        }
        for (int o = 0; o < l->h1; o++) gb1[o] += d1[o];
    }
    c->loss = loss / B;
    rc = TFPS_OK;
out:
    free(loss_i);
    free(xd);
    free(z3);
    free(d2);
    free(d1);
    free(dz);
    if (rc != TFPS_OK) refnet_case_free(c);
    return rc;
}

#define REL_ERR_BODY                                                                                   \
    double maxabs = 0, worst = 0;                                                                      \
    size_t w = 0;                                                                                      \
    for (size_t i = 0; i < n; i++) maxabs = fmax(maxabs, fabs((double)ref[i]));                        \
    const double floor_ = maxabs > 0 ? 1e-2 * maxabs : 1e-30;                                          \
    for (size_t i = 0; i < n; i++) {                                                                   \
        double e = fabs((double)got[i] - (double)ref[i]) / fmax(fabs((double)ref[i]), floor_);         \
        if (!(e <= worst)) { /* NaN too */                                                             \
            worst = isnan(e) ? INFINITY : e;                                                           \
            w = i;                                                                                     \
        }                                                                                              \
    }                                                                                                  \
    if (at) *at = w;                                                                                   \
    return worst;

double refnet_rel_err(const float *got, const double *ref, size_t n, size_t *at) { REL_ERR_BODY }

double refnet_rel_err_f(const float *got, const float *ref, size_t n, size_t *at) { REL_ERR_BODY }
