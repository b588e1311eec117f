/* onnx.c -- see onnx.h. With wire.c, the only file of tfps that calls
 * protobuf-c (the one sibling the ONNX format is allowed).
 *
 * The ModelProto is built on the stack, pointing into the caller's memory
 * (the initializers' raw_data are the flat array's slices, never copied
 * here), packed once into a malloc'd buffer of its exact size, and written
 * with tfps_write_file_atomic. proto2 optional scalars are written only when
 * their has_* flag is set: every one this file means to write sets it. */
#include "onnx.h"

#include "onnx.pb-c.h"
#include "tfps.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* raw_data is the host's floats as they are: ONNX's raw_data is little-endian. */
_Static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__, "tfps onnx.c assumes a little-endian host");
_Static_assert(sizeof(float) == 4, "tfps onnx.c assumes 4-byte IEEE fp32 floats");

/* Names in the graph: the inputs and outputs users bind to, and the rest. */
#define IN_NAME "images"
#define OUT_NAME "logits"

int tfps_onnx_fits(const tfps_layout *l) {
    return l->total <= (TFPS_ONNX_MAX_BYTES - ((size_t)1 << 20)) / sizeof(float);
}

/* A [N, width] float tensor's type: N a dim_param (any batch). */
typedef struct {
    Onnx__TensorShapeProto__Dimension d[2], *dp[2];
    Onnx__TensorShapeProto shape;
    Onnx__TypeProto__Tensor tensor;
    Onnx__TypeProto type;
    Onnx__ValueInfoProto info;
} batch_value;

static void batch_value_init(batch_value *v, const char *name, int width) {
    for (int k = 0; k < 2; k++) {
        v->d[k] = (Onnx__TensorShapeProto__Dimension)ONNX__TENSOR_SHAPE_PROTO__DIMENSION__INIT;
        v->dp[k] = &v->d[k];
    }
    v->d[0].value_case = ONNX__TENSOR_SHAPE_PROTO__DIMENSION__VALUE_DIM_PARAM;
    v->d[0].dim_param = (char *)"N";
    v->d[1].value_case = ONNX__TENSOR_SHAPE_PROTO__DIMENSION__VALUE_DIM_VALUE;
    v->d[1].dim_value = width;
    v->shape = (Onnx__TensorShapeProto)ONNX__TENSOR_SHAPE_PROTO__INIT;
    v->shape.n_dim = 2;
    v->shape.dim = v->dp;
    v->tensor = (Onnx__TypeProto__Tensor)ONNX__TYPE_PROTO__TENSOR__INIT;
    v->tensor.has_elem_type = 1;
    v->tensor.elem_type = ONNX__TENSOR_PROTO__DATA_TYPE__FLOAT;
    v->tensor.shape = &v->shape;
    v->type = (Onnx__TypeProto)ONNX__TYPE_PROTO__INIT;
    v->type.value_case = ONNX__TYPE_PROTO__VALUE_TENSOR_TYPE;
    v->type.tensor_type = &v->tensor;
    v->info = (Onnx__ValueInfoProto)ONNX__VALUE_INFO_PROTO__INIT;
    v->info.name = (char *)name;
    v->info.type = &v->type;
}

/* Gemm's four attributes, all written (the defaults, said out loud). */
typedef struct {
    Onnx__AttributeProto a[4], *ap[4];
} gemm_attrs;

static void gemm_attrs_init(gemm_attrs *g) {
    static const char *const fnames[2] = {"alpha", "beta"}, *const inames[2] = {"transA", "transB"};
    for (int k = 0; k < 4; k++) {
        g->a[k] = (Onnx__AttributeProto)ONNX__ATTRIBUTE_PROTO__INIT;
        g->ap[k] = &g->a[k];
        g->a[k].has_type = 1;
        if (k < 2) {
            g->a[k].name = (char *)fnames[k];
            g->a[k].type = ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__FLOAT;
            g->a[k].has_f = 1;
            g->a[k].f = 1.0f;
        } else {
            g->a[k].name = (char *)inames[k - 2];
            g->a[k].type = ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__INT;
            g->a[k].has_i = 1;
            g->a[k].i = 0;   // kernels are [fan_in][fan_out]: x W, no transpose
        }
    }
}

int tfps_onnx_write(const char *path, const tfps_layout *l, const float *params, const char *producer_version,
                    char *err, size_t errlen) {
    if (!tfps_onnx_fits(l))
        return tfps_seterr(err, errlen,
                           "onnx %s: %zu parameters (%zu bytes) exceed the 2 GiB an ONNX file holds without "
                           "external data",
                           path, l->total, l->total * sizeof(float));

    // initializers W1 b1 W2 b2 W3 b3: dims from the layout, raw_data the flat array's slices
    const int fan_in[3] = {l->in, l->h1, l->h2}, fan_out[3] = {l->h1, l->h2, l->out};
    Onnx__TensorProto init[TFPS_NVARS], *initp[TFPS_NVARS];
    int64_t dims[TFPS_NVARS][2];
    for (int v = 0; v < TFPS_NVARS; v++) {
        const int layer = v / 2, is_kernel = v % 2 == 0;
        init[v] = (Onnx__TensorProto)ONNX__TENSOR_PROTO__INIT;
        initp[v] = &init[v];
        init[v].name = (char *)tfps_var_name(v);
        if (is_kernel) {
            dims[v][0] = fan_in[layer];
            dims[v][1] = fan_out[layer];
        } else {
            dims[v][0] = fan_out[layer];
        }
        if ((size_t)(is_kernel ? dims[v][0] * dims[v][1] : dims[v][0]) != l->size[v])
            return tfps_seterr(err, errlen, "onnx %s: layout variable %s has %zu elements, expected %lld", path,
                               tfps_var_name(v), l->size[v],
                               (long long)(is_kernel ? dims[v][0] * dims[v][1] : dims[v][0]));
        init[v].n_dims = is_kernel ? 2 : 1;
        init[v].dims = dims[v];
        init[v].has_data_type = 1;
        init[v].data_type = ONNX__TENSOR_PROTO__DATA_TYPE__FLOAT;
        init[v].has_raw_data = 1;
        init[v].raw_data.len = l->size[v] * sizeof(float);
        // packing only reads it
        init[v].raw_data.data = (uint8_t *)(uintptr_t)(params + l->off[v]);
    }

    // nodes: Gemm -> Relu -> Gemm -> Relu -> Gemm
    static const char *const gemm_name[3] = {"dense1", "dense2", "dense3"};
    static const char *const relu_name[2] = {"relu1", "relu2"};
    static const char *const gemm_out[3] = {"dense1_out", "dense2_out", OUT_NAME};
    static const char *const relu_out[2] = {"hidden1", "hidden2"};
    gemm_attrs attrs;
    gemm_attrs_init(&attrs);
    Onnx__NodeProto node[5], *nodep[5];
    char *gemm_in[3][3], *relu_in[2][1], *gemm_outs[3][1], *relu_outs[2][1];
    int n = 0;
    for (int layer = 0; layer < 3; layer++) {
        gemm_in[layer][0] = (char *)(layer == 0 ? IN_NAME : relu_out[layer - 1]);
        gemm_in[layer][1] = (char *)tfps_var_name(2 * layer);
        gemm_in[layer][2] = (char *)tfps_var_name(2 * layer + 1);
        gemm_outs[layer][0] = (char *)gemm_out[layer];
        Onnx__NodeProto *g = &node[n];
        *g = (Onnx__NodeProto)ONNX__NODE_PROTO__INIT;
        g->name = (char *)gemm_name[layer];
        g->op_type = (char *)"Gemm";
        g->n_input = 3;
        g->input = gemm_in[layer];
        g->n_output = 1;
        g->output = gemm_outs[layer];
        g->n_attribute = 4;
        g->attribute = attrs.ap;
        nodep[n] = g;
        n++;
        if (layer == 2) break;
        relu_in[layer][0] = (char *)gemm_out[layer];
        relu_outs[layer][0] = (char *)relu_out[layer];
        Onnx__NodeProto *r = &node[n];
        *r = (Onnx__NodeProto)ONNX__NODE_PROTO__INIT;
        r->name = (char *)relu_name[layer];
        r->op_type = (char *)"Relu";
        r->n_input = 1;
        r->input = relu_in[layer];
        r->n_output = 1;
        r->output = relu_outs[layer];
        nodep[n] = r;
        n++;
    }

    batch_value in, out;
    batch_value_init(&in, IN_NAME, l->in);
    batch_value_init(&out, OUT_NAME, l->out);
    Onnx__ValueInfoProto *inp[1] = {&in.info}, *outp[1] = {&out.info};
    in.info.doc_string = (char *)"pixels / 255 (0..1), row-major 28x28 for MNIST, as in training";
    out.info.doc_string = (char *)"class scores before softmax; argmax is the predicted class";

    char graph_name[96];
    snprintf(graph_name, sizeof(graph_name), "tfps_mlp_%d_%d_%d_%d", l->in, l->h1, l->h2, l->out);
    Onnx__GraphProto graph = ONNX__GRAPH_PROTO__INIT;
    graph.name = graph_name;
    graph.n_node = (size_t)n;
    graph.node = nodep;
    graph.n_initializer = TFPS_NVARS;
    graph.initializer = initp;
    graph.n_input = 1;
    graph.input = inp;
    graph.n_output = 1;
    graph.output = outp;

    Onnx__OperatorSetIdProto opset = ONNX__OPERATOR_SET_ID_PROTO__INIT, *opsetp[1] = {&opset};
    opset.domain = (char *)"";   // the default ai.onnx domain
    opset.has_version = 1;
    opset.version = TFPS_ONNX_OPSET;

    Onnx__ModelProto model = ONNX__MODEL_PROTO__INIT;
    model.has_ir_version = 1;
    model.ir_version = TFPS_ONNX_IR_VERSION;
    model.n_opset_import = 1;
    model.opset_import = opsetp;
    model.producer_name = (char *)"tfps";
    model.producer_version = (char *)producer_version;
    model.doc_string = (char *)"tfps MLP: images [N, in] (pixels / 255) -> Gemm, Relu, Gemm, Relu, Gemm -> "
                               "logits [N, classes]";
    model.graph = &graph;

    const size_t len = onnx__model_proto__get_packed_size(&model);
    uint8_t *buf = malloc(len ? len : 1);
    if (!buf) return tfps_seterr(err, errlen, "onnx %s: out of memory for %zu bytes", path, len);
    const size_t packed = onnx__model_proto__pack(&model, buf);
    int rc = packed == len ? tfps_write_file_atomic(path, buf, len, err, errlen)
                           : tfps_seterr(err, errlen, "onnx %s: packed %zu bytes, expected %zu", path, packed, len);
    free(buf);
    return rc;
}
