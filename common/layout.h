/* layout.h -- the model's one flat fp32 array and its named pieces.
 *
 * The MNIST DNN is 784 -> h1 -> h2 -> 10 with ReLU and softmax cross-entropy.
 * Every parameter lives in ONE flat float array, in this fixed order:
 *
 *   | W1 [in][h1] | b1 [h1] | W2 [h1][h2] | b2 [h2] | W3 [h2][out] | b3 [out] |
 *   0                                                              total
 *
 * Kernels are stored [fan_in][fan_out] row-major, as TensorFlow's Dense layer
 * stores them. Gradients use the same layout, so the flat array is what is
 * sharded, pushed, pulled, checkpointed and exported. Layer sizes are flags;
 * the layout is computed from them. */
#ifndef TFPS_LAYOUT_H
#define TFPS_LAYOUT_H

#include <stddef.h>
#include <stdint.h>

enum { TFPS_VAR_W1, TFPS_VAR_B1, TFPS_VAR_W2, TFPS_VAR_B2, TFPS_VAR_W3, TFPS_VAR_B3, TFPS_NVARS };

#define TFPS_MAX_UNITS 65536   /* per layer: keeps every offset well inside size_t and sane */
#define TFPS_INPUT_WIDTH 784   /* MNIST and Fashion-MNIST: 28 x 28 pixels */
#define TFPS_CLASSES 10

typedef struct {
    int in, h1, h2, out;           /* layer widths: 784, 300, 100, 10 by default */
    size_t off[TFPS_NVARS];        /* element offset of each variable in the flat array */
    size_t size[TFPS_NVARS];       /* elements in each variable */
    size_t total;                  /* elements in the flat array */
} tfps_layout;

/* Fills *l for the given widths. Returns TFPS_ERR (and leaves *l untouched) if a
 * width is < 1 or > TFPS_MAX_UNITS. */
int tfps_layout_init(tfps_layout *l, int in, int h1, int h2, int out, char *err, size_t errlen);
const char *tfps_var_name(int var);        /* "W1", "b1", ... */
/* Variable that holds flat index i (0 <= i < total). */
int tfps_layout_var_of(const tfps_layout *l, size_t i);
/* FNV-1a 64 over the widths: equal layouts have equal digests. */
uint64_t tfps_layout_digest(const tfps_layout *l);

/* Deterministic initial value of flat index i: a pure function of (seed, i)
 * and the layout, so a ps can initialise only its own ranges and still get the
 * same numbers as a single-process run. Kernels: Glorot-uniform, TF's Dense
 * default, U(-a, a) with a = sqrt(6 / (fan_in + fan_out)); biases: 0. */
float tfps_layout_init_value(const tfps_layout *l, uint64_t seed, size_t i);
/* out[k] = init value of flat index begin + k, for k in [0, end - begin). */
void tfps_layout_init_range(const tfps_layout *l, uint64_t seed, size_t begin, size_t end, float *out);

/* The largest gRPC message either daemon must accept: a pull or push of the
 * whole flat array (total fp32) plus 1 MiB for framing and the other fields.
 * The ps server and every worker's client use this one limit. */
size_t tfps_max_message_bytes(const tfps_layout *l);

/* FNV-1a 64 helpers, shared by every digest in the project. */
#define TFPS_FNV_OFFSET 1469598103934665603ULL
uint64_t tfps_fnv1a(uint64_t h, const void *data, size_t n);
uint64_t tfps_fnv1a_u64(uint64_t h, uint64_t v);

#endif
