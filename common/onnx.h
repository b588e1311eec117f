/* onnx.h -- the trained model as ONNX, <output-dir>/model/model.onnx.
 *
 * The one sibling of wire.c allowed to call protobuf-c: it packs ONNX's
 * ModelProto (Debian's onnx.proto, compiled by protoc-c at build time,
 * proto/CMakeLists.txt) and nothing else.
 *
 * The graph is the layout's MLP, layer widths from the layout:
 *
 *   images [N, in] float32 (pixels / 255, as in training; N = dim_param "N")
 *     -> Gemm(W1, b1) -> Relu -> Gemm(W2, b2) -> Relu -> Gemm(W3, b3)
 *     -> logits [N, out] float32 (no softmax: argmax is the class)
 *
 * Kernels stay [fan_in][fan_out] (layout.h), so every Gemm has transA = 0,
 * transB = 0, alpha = beta = 1 (written explicitly); biases broadcast as C.
 * Initializers W1 b1 W2 b2 W3 b3 are TensorProto FLOAT with dims and
 * little-endian raw_data, bit for bit the flat array's slices. Opset 13
 * (default domain), IR version 7, producer "tfps" and the version given.
 *
 * ONNX files are protobuf messages, which readers refuse beyond 2 GiB; a
 * model that large would need ONNX's external data, which is not written:
 * tfps_onnx_fits says whether a layout fits. */
#ifndef TFPS_ONNX_H
#define TFPS_ONNX_H

#include "layout.h"

#include <stddef.h>

#define TFPS_ONNX_FILE "model.onnx"
#define TFPS_ONNX_OPSET 13
#define TFPS_ONNX_IR_VERSION 7
/* protobuf's limit on one message; parameters plus ~1 MiB for the rest */
#define TFPS_ONNX_MAX_BYTES ((size_t)2147483647)

/* 1 when the layout's parameters fit one ONNX file (no external data). */
int tfps_onnx_fits(const tfps_layout *l);

/* Writes the model of params [l->total] to path as ONNX, atomically (temp
 * file, fsync, rename: tfps_write_file_atomic). Returns TFPS_OK, or TFPS_ERR
 * with one line in err (path untouched). */
int tfps_onnx_write(const char *path, const tfps_layout *l, const float *params, const char *producer_version,
                    char *err, size_t errlen);

#endif
