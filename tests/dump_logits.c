/* dump_logits.c -- test helper of test_onnx.py: tfps's own logits for the
 * test set, to compare the ONNX export with.
 *
 *   dump_logits MODEL.tfps DATA_FOLDER OUT_DIR
 *
 * Reads the model with common/model.h's reader and the test split with
 * common/idx.h, scales the pixels as training does (worker/data.h's
 * tfps_gather: pixels / 255) and runs the CPU reference forward pass
 * (worker/backend.h's tfps_cpu_forward) on the whole set. Writes, raw:
 *   OUT_DIR/logits.f32  [n][out] float32 (host order, little-endian)
 *   OUT_DIR/pixels.u8   [n][in]  the unscaled pixels, so the test scales them itself
 *   OUT_DIR/labels.u8   [n]
 * and one JSON line on stdout: {"n":..,"in":..,"h1":..,"h2":..,"out":..,"step":..}.
 * Exit 0, or 1 with a line on stderr. */
#include "backend.h"
#include "data.h"
#include "idx.h"
#include "model.h"
#include "tfps.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>

static int write_raw(const char *dir, const char *name, const void *p, size_t len) {
    char path[4200], err[TFPS_ERR_LEN];
    snprintf(path, sizeof(path), "%s/%s", dir, name);
    if (tfps_write_file_atomic(path, p, len, err, sizeof(err)) != TFPS_OK) {
        fprintf(stderr, "dump_logits: %s\n", err);
        return 1;
    }
    return 0;
}

int main(int argc, char **argv) {
    if (argc != 4) {
        fprintf(stderr, "usage: dump_logits MODEL.tfps DATA_FOLDER OUT_DIR\n");
        return 2;
    }
    char err[TFPS_ERR_LEN];
    tfps_layout l;
    float *params = NULL;
    uint64_t step = 0;
    if (tfps_model_read(argv[1], &l, &params, &step, err, sizeof(err)) != TFPS_OK) {
        fprintf(stderr, "dump_logits: %s\n", err);
        return 1;
    }
    tfps_mnist m = {0};
    if (tfps_mnist_load(&m, argv[2], err, sizeof(err)) != TFPS_OK) {
        fprintf(stderr, "dump_logits: %s\n", err);
        free(params);
        return 1;
    }
    const tfps_idx_set *t = &m.test;
    const int n = t->n, d = t->rows * t->cols;
    int rc = 1;
    float *x = malloc((size_t)n * d * sizeof(float)), *a1 = malloc((size_t)n * l.h1 * sizeof(float)),
          *a2 = malloc((size_t)n * l.h2 * sizeof(float)), *logits = malloc((size_t)n * l.out * sizeof(float)),
          *probs = malloc((size_t)n * l.out * sizeof(float));
    uint8_t *y = malloc((size_t)n);
    if (d != l.in) {
        fprintf(stderr, "dump_logits: test images have %d pixels, the model takes %d\n", d, l.in);
        goto done;
    }
    if (!x || !a1 || !a2 || !logits || !probs || !y) {
        fprintf(stderr, "dump_logits: out of memory\n");
        goto done;
    }
    tfps_gather(t, NULL, n, x, y);
    tfps_cpu_forward(&l, params, x, y, n, a1, a2, logits, probs);
    if (write_raw(argv[3], "logits.f32", logits, (size_t)n * l.out * sizeof(float)) ||
        write_raw(argv[3], "pixels.u8", t->images, (size_t)n * d) || write_raw(argv[3], "labels.u8", y, (size_t)n))
        goto done;
    printf("{\"n\": %d, \"in\": %d, \"h1\": %d, \"h2\": %d, \"out\": %d, \"step\": %" PRIu64 "}\n", n, l.in, l.h1,
           l.h2, l.out, step);
    rc = 0;
done:
    free(x);
    free(a1);
    free(a2);
    free(logits);
    free(probs);
    free(y);
    free(params);
    tfps_mnist_free(&m);
    return rc;
}
