/* refnet.h -- the backend comparison cases and their float64 reference.
 *
 * test_cuda holds the GPU to the CPU backend at a relative error of 1e-4;
 * test_backend holds the CPU backend to a float64 computation of the same
 * cases at the same tolerance, so the bound measures bugs, not fp32 rounding.
 * Both draw the cases here:
 *
 *   784-h1-h2-10, batch B, Glorot weights (seed 3) with biases in +-0.1,
 *   pixels uniform in [0,1), labels uniform in 0..9.
 *
 * ReLU's derivative jumps at 0 and argmax at a tie, so an example whose
 * pre-activation lies within rounding of 0, or whose top two logits nearly
 * tie, has two right answers; such examples are redrawn until none is left
 * (|z| >= 1e-5 * max|z| of its layer, top-2 gap >= 1e-5 * max|logit|, both in
 * float64; fp32 rounding there is below 1e-6 relative, measured 4e-7).
 *
 * The error metric, per element, with the floor keeping entries that are zero
 * up to rounding from dividing by 0:
 *
 *     |got - ref| / max(|ref|, 1e-2 * max over the tensor of |ref|)  */
#ifndef TFPS_REFNET_H
#define TFPS_REFNET_H

#include "layout.h"

#include <stddef.h>
#include <stdint.h>

typedef struct {
    tfps_layout l;
    int B;
    float *params;   /* [l.total] */
    float *x;        /* [B][784] */
    uint8_t *y;      /* [B] */
    int redrawn;     /* examples drawn again off a ReLU kink or an argmax tie */
    /* float64 results */
    double *a1, *a2, *probs;   /* [B][h1], [B][h2] after ReLU, [B][10] */
    double *grads;             /* [l.total]: d(mean loss)/d(params) */
    double loss;
    int correct;               /* examples whose float64 argmax is the label */
} refnet_case;

/* Draws the case and computes its float64 reference. TFPS_OK, or TFPS_ERR
 * (out of memory, or no kink-free draw in 100 rounds) with c freed. */
int refnet_case_init(refnet_case *c, int h1, int h2, int B);
void refnet_case_free(refnet_case *c);

/* The metric above over n values; *at (may be NULL) gets the worst index.
 * NaN in got counts as infinitely wrong. */
double refnet_rel_err(const float *got, const double *ref, size_t n, size_t *at);
/* The same with a float reference (GPU against the CPU backend). */
double refnet_rel_err_f(const float *got, const float *ref, size_t n, size_t *at);

#endif
