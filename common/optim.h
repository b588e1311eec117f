/* optim.h -- the update rules, one implementation for the ps and local mode.
 *
 * Keras's formulas (keras.optimizers, Keras 3), in float32, elementwise:
 *
 *   sgd       w -= lr * g
 *   momentum  m = momentum * m - lr * g;   w += m                 (slot m)
 *             nesterov: w += momentum * m - lr * g   (m updated first)
 *   adam      t = update count (1, 2, ...)
 *             alpha = lr * sqrt(1 - beta2^t) / (1 - beta1^t)
 *             m += (g - m) * (1 - beta1);  v += (g * g - v) * (1 - beta2)
 *             w -= alpha * m / (sqrt(v) + epsilon)              (slots m, v)
 *   adagrad   a += g * g;  w -= lr * g / sqrt(a + epsilon)       (slot a,
 *             starting at initial_accumulator)
 *
 * The scalars are Keras's: beta1 and beta2 are doubles (Python floats there),
 * so 1 - beta is computed in double and rounded to float once (as Keras
 * casts it), and alpha is computed in double and rounded to float once per
 * update, so every caller that applies update t gets the same float. The
 * state ("slots") of element i lives at index i of each slot array, so a ps
 * keeps its slots at the same offsets as its weights, and because every rule
 * is elementwise the numbers do not depend on how the flat array is sharded:
 * a 1-ps run and a 3-ps run update each element identically. */
#ifndef TFPS_OPTIM_H
#define TFPS_OPTIM_H

#include <stddef.h>
#include <stdint.h>

typedef enum { TFPS_OPT_SGD = 0, TFPS_OPT_MOMENTUM, TFPS_OPT_ADAM, TFPS_OPT_ADAGRAD, TFPS_OPT_COUNT } tfps_optim_kind;

#define TFPS_OPTIM_MAX_SLOTS 2

typedef struct {
    int kind;                      /* tfps_optim_kind */
    float lr;
    float momentum;                /* momentum */
    int nesterov;                  /* momentum */
    double beta1, beta2;           /* adam: doubles, as Keras keeps them (see above) */
    float epsilon;                 /* adam, adagrad */
    float initial_accumulator;     /* adagrad */
} tfps_optim;

const char *tfps_optim_name(int kind);          /* "sgd", "momentum", ... ("?" if out of range) */
/* Slot arrays the rule keeps per element: sgd 0, momentum 1, adam 2, adagrad 1. */
int tfps_optim_slots(const tfps_optim *o);
/* One line with the rule and every hyperparameter it uses, e.g.
 * "adam (lr 0.001, beta1 0.9, beta2 0.999, epsilon 1e-07)". */
void tfps_optim_describe(const tfps_optim *o, char *buf, size_t n);
/* FNV-1a digest of what describe prints: equal rules, equal digests. */
uint64_t tfps_optim_digest(const tfps_optim *o);

/* Initial state of n elements: slot[k] points at element 0 of slot array k
 * (tfps_optim_slots of them; the others are ignored and may be NULL). */
void tfps_optim_init_slots(const tfps_optim *o, float *const slot[TFPS_OPTIM_MAX_SLOTS], size_t n);
/* Update t (1-based: the t-th update these elements get) of n elements:
 * w and slot[k] at element 0, g the gradient of the same elements. */
void tfps_optim_apply(const tfps_optim *o, uint64_t t, float *w, float *const slot[TFPS_OPTIM_MAX_SLOTS],
                      const float *g, size_t n);

/* Numerical safety (a gradient of -3.4e38 twelve times makes an fp32 weight
 * inf): would update t of these n elements leave every weight and slot
 * finite? 1 yes, 0 no. Writes nothing; computes exactly what apply would
 * (the same per-element code), so 1 means apply gives only finite numbers.
 * Costs one more pass of the rule's arithmetic. A caller that must not
 * write part of an update checks every piece first, then applies them. */
int tfps_optim_finite(const tfps_optim *o, uint64_t t, const float *w, const float *const slot[TFPS_OPTIM_MAX_SLOTS],
                      const float *g, size_t n);
/* finite, then apply: 1 applied, 0 refused (w and slots untouched). */
int tfps_optim_apply_checked(const tfps_optim *o, uint64_t t, float *w, float *const slot[TFPS_OPTIM_MAX_SLOTS],
                             const float *g, size_t n);

#endif
