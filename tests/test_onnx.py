#!/usr/bin/env python3
"""test_onnx.py -- the ONNX export (<output-dir>/model/model.onnx) against tfps's own forward pass.

    test_onnx.py BIN_DIR DATA_DIR VERSION        (ctest test_onnx; TFPS_TEST_DATA overrides DATA_DIR)

For two layouts (the default 784-300-100-10 and a small 784-40-24-10, so the widths are seen to come
from the layout), trains a short local run (tfps-worker, TF_CONFIG unset, --steps 200), then:
- onnx.load + onnx.checker.check_model(full_check=True) + strict shape inference;
- IR version 7, opset 13 (default domain), producer tfps/VERSION, input `images` [N, in] and output
  `logits` [N, classes] float32 with N a dim_param, initializers FLOAT with raw_data, bit-identical to
  model.tfps's slices;
- evaluates the graph with numpy, walking its nodes generically (Gemm with transA/transB/alpha/beta,
  Relu; anything else fails), on the test set scaled as training scales it (pixels / 255), and
  compares with tfps's logits (tests/dump_logits: model.h's reader + worker/backend.h's
  tfps_cpu_forward): argmax identical for every example, max |logit diff| <= 1e-4 (printed), and the
  accuracy equal to summary.json's test_accuracy;
- negative checks: b3[0] + 1e-3 in memory, or a Gemm with transB flipped, is caught by the same
  comparison.
Needs python3-onnx and numpy (deploy/install-deps.sh); exits 77 (skip) when no python3 has them.
"""
import json
import os
import shutil
import subprocess
import sys
import tempfile


def _import_or_reexec():
    try:
        import numpy  # noqa: F401
        import onnx  # noqa: F401
        return
    except ImportError as e:
        why = str(e)
    # A python3 first on PATH (pyenv, a venv) may lack Debian's python3-onnx: try the system one.
    here = os.path.realpath(sys.executable)
    for alt in ("/usr/bin/python3",):
        if os.path.exists(alt) and os.path.realpath(alt) != here and not os.environ.get("TFPS_ONNX_REEXEC"):
            os.environ["TFPS_ONNX_REEXEC"] = "1"
            os.execv(alt, [alt] + sys.argv)
    print(f"test_onnx: skipped: {why} (apt-get install python3-onnx; deploy/install-deps.sh installs it)",
          file=sys.stderr)
    sys.exit(77)


_import_or_reexec()
import numpy as np  # noqa: E402
import onnx  # noqa: E402
from onnx import numpy_helper  # noqa: E402

TOL = 1e-4
failures = []


def check(cond, what):
    if not cond:
        failures.append(what)
        print(f"  FAIL: {what}")
    return cond


def attr(node, name, default):
    for a in node.attribute:
        if a.name == name:
            return onnx.helper.get_attribute_value(a)
    return default


def evaluate(model, feeds):
    """Runs the graph's nodes in order with numpy (float32). Gemm and Relu only."""
    env = dict(feeds)
    for t in model.graph.initializer:
        env[t.name] = numpy_helper.to_array(t)
    for node in model.graph.node:
        ins = [env[n] for n in node.input if n]
        if node.op_type == "Gemm":
            a, b = ins[0], ins[1]
            if attr(node, "transA", 0):
                a = a.T
            if attr(node, "transB", 0):
                b = b.T
            if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[0]:
                raise ValueError(f"{node.name}: Gemm of {a.shape} and {b.shape}")
            y = np.float32(attr(node, "alpha", 1.0)) * (a @ b)
            if len(ins) > 2:
                y = y + np.float32(attr(node, "beta", 1.0)) * ins[2]
            out = y.astype(np.float32)
        elif node.op_type == "Relu":
            out = np.maximum(ins[0], np.float32(0))
        else:
            raise ValueError(f"{node.name}: op {node.op_type} not evaluated by this test")
        env[node.output[0]] = out
    return [env[o.name] for o in model.graph.output]


def compare(ref, got):
    """(ok, max |diff|, examples whose argmax differs)."""
    if got.shape != ref.shape:
        return False, float("inf"), ref.shape[0]
    diff = float(np.max(np.abs(got.astype(np.float64) - ref.astype(np.float64))))
    mism = int(np.sum(np.argmax(got, axis=1) != np.argmax(ref, axis=1)))
    return diff <= TOL and mism == 0, diff, mism


def dims(vi):
    out = []
    for d in vi.type.tensor_type.shape.dim:
        out.append(d.dim_param if d.WhichOneof("value") == "dim_param" else d.dim_value)
    return out


def read_tfps(path):
    raw = open(path, "rb").read()
    assert raw[:8] == b"TFPSMODL", path
    w = np.frombuffer(raw, dtype="<u4", count=4, offset=16)
    return [int(v) for v in w], np.frombuffer(raw, dtype="<f4", offset=64)


def run_case(name, bin_dir, data, version, tmp, flags):
    print(f"case {name}: {' '.join(flags) or 'default layout'}")
    out = os.path.join(tmp, name)
    env = {k: v for k, v in os.environ.items() if k != "TF_CONFIG"}
    cmd = [os.path.join(bin_dir, "tfps-worker"), "--data-folder", data, "--steps", "200", "--output-dir", out,
           "--device", "cpu", "--threads", "1", "--seed", "1", "--log-every", "0"] + flags
    p = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    if not check(p.returncode == 0, f"{name}: tfps-worker exited {p.returncode}: {p.stderr[-2000:]}"):
        return
    onnx_path = os.path.join(out, "model", "model.onnx")
    tfps_path = os.path.join(out, "model", "model.tfps")
    if not check(os.path.isfile(onnx_path), f"{name}: {onnx_path} missing"):
        return
    check("model.onnx" in p.stderr, f"{name}: the log does not name model.onnx")
    summary = json.load(open(os.path.join(out, "summary.json")))

    dump = os.path.join(tmp, name + "-dump")
    os.makedirs(dump)
    d = subprocess.run([os.path.join(bin_dir, "dump_logits"), tfps_path, data, dump], capture_output=True,
                       text=True, timeout=300)
    if not check(d.returncode == 0, f"{name}: dump_logits exited {d.returncode}: {d.stderr}"):
        return
    info = json.loads(d.stdout)
    n, nin, nout = info["n"], info["in"], info["out"]
    ref = np.fromfile(os.path.join(dump, "logits.f32"), dtype="<f4").reshape(n, nout)
    pixels = np.fromfile(os.path.join(dump, "pixels.u8"), dtype=np.uint8).reshape(n, nin)
    labels = np.fromfile(os.path.join(dump, "labels.u8"), dtype=np.uint8)
    check(info["step"] == 200, f"{name}: model.tfps step {info['step']}, expected 200")

    # the file itself
    m = onnx.load(onnx_path)
    try:
        onnx.checker.check_model(m, full_check=True)
    except Exception as e:  # noqa: BLE001
        check(False, f"{name}: check_model(full_check=True): {e}")
    try:
        inferred = onnx.shape_inference.infer_shapes(m, check_type=True, strict_mode=True)
        check(dims(inferred.graph.output[0]) == ["N", nout],
              f"{name}: inferred logits shape {dims(inferred.graph.output[0])}")
    except Exception as e:  # noqa: BLE001
        check(False, f"{name}: strict shape inference: {e}")
    check(m.ir_version == 7, f"{name}: ir_version {m.ir_version}, expected 7")
    ops = [(o.domain, o.version) for o in m.opset_import]
    check(ops in ([("", 13)], [("ai.onnx", 13)]), f"{name}: opset_import {ops}, expected [('', 13)]")
    check(m.producer_name == "tfps" and m.producer_version == version,
          f"{name}: producer {m.producer_name!r} {m.producer_version!r}, expected 'tfps' {version!r}")
    g = m.graph
    check([i.name for i in g.input] == ["images"], f"{name}: inputs {[i.name for i in g.input]}")
    check([o.name for o in g.output] == ["logits"], f"{name}: outputs {[o.name for o in g.output]}")
    f32 = onnx.TensorProto.FLOAT
    check(g.input[0].type.tensor_type.elem_type == f32 and g.output[0].type.tensor_type.elem_type == f32,
          f"{name}: input/output element types not FLOAT")
    check(dims(g.input[0]) == ["N", nin], f"{name}: images shape {dims(g.input[0])}, expected ['N', {nin}]")
    check(dims(g.output[0]) == ["N", nout], f"{name}: logits shape {dims(g.output[0])}, expected ['N', {nout}]")
    check([nd.op_type for nd in g.node] == ["Gemm", "Relu", "Gemm", "Relu", "Gemm"],
          f"{name}: nodes {[nd.op_type for nd in g.node]}")

    # initializers: FLOAT raw_data, the layout's shapes, model.tfps's bytes
    widths, flat = read_tfps(tfps_path)
    i_, h1, h2, o_ = widths
    check(widths == [info["in"], info["h1"], info["h2"], nout], f"{name}: model.tfps widths {widths}")
    shapes = {"W1": [i_, h1], "b1": [h1], "W2": [h1, h2], "b2": [h2], "W3": [h2, o_], "b3": [o_]}
    inits = {t.name: t for t in g.initializer}
    check(list(inits) == list(shapes), f"{name}: initializers {list(inits)}")
    off = 0
    for vname, shp in shapes.items():
        t = inits.get(vname)
        size = int(np.prod(shp))
        if check(t is not None, f"{name}: initializer {vname} missing"):
            check(t.data_type == f32 and list(t.dims) == shp and len(t.raw_data) == 4 * size and not t.float_data,
                  f"{name}: {vname}: type {t.data_type} dims {list(t.dims)} raw {len(t.raw_data)} bytes")
            check(t.raw_data == flat[off:off + size].tobytes(), f"{name}: {vname} differs from model.tfps")
        off += size
    check(off == flat.size, f"{name}: model.tfps has {flat.size} parameters, layout {off}")

    # the graph, evaluated, against tfps's logits
    x = pixels.astype(np.float32) / np.float32(255)
    (got,) = evaluate(m, {"images": x})
    ok, diff, mism = compare(ref, got)
    acc = float(np.mean(np.argmax(got, axis=1) == labels))
    print(f"  {n} test examples: max |logit diff| {diff:.3g} (tolerance {TOL:g}), argmax mismatches {mism}, "
          f"accuracy {acc:.4f} (summary.json test_accuracy {summary['test_accuracy']:.4f}), "
          f"max |logit| {float(np.max(np.abs(ref))):.3g}")
    check(ok, f"{name}: ONNX logits differ from tfps's: max diff {diff:.3g}, {mism} argmax mismatches")
    check(abs(acc - summary["test_accuracy"]) < 0.5 / n,
          f"{name}: ONNX accuracy {acc} vs summary.json {summary['test_accuracy']}")

    # the comparison can fail: a 1e-3 bias change, or a transposed kernel
    bad = onnx.ModelProto()
    bad.CopyFrom(m)
    b3 = [t for t in bad.graph.initializer if t.name == "b3"][0]
    arr = numpy_helper.to_array(b3).copy()
    arr[0] += np.float32(1e-3)
    b3.CopyFrom(numpy_helper.from_array(arr, "b3"))
    (got_bad,) = evaluate(bad, {"images": x})
    ok_bad, diff_bad, _ = compare(ref, got_bad)
    print(f"  negative: b3[0] + 1e-3 -> max diff {diff_bad:.3g}, detected {not ok_bad}")
    check(not ok_bad, f"{name}: a 1e-3 change of b3[0] went unnoticed")
    bad.CopyFrom(m)
    for a in bad.graph.node[2].attribute:
        if a.name == "transB":
            a.i = 1
    try:
        (got_bad,) = evaluate(bad, {"images": x})
        detected = not compare(ref, got_bad)[0]
    except ValueError:
        detected = True
    print(f"  negative: {bad.graph.node[2].name} transB=1 -> detected {detected}")
    check(detected, f"{name}: a transposed W2 went unnoticed")


def main():
    if len(sys.argv) != 4:
        print("usage: test_onnx.py BIN_DIR DATA_DIR VERSION", file=sys.stderr)
        return 2
    bin_dir, data, version = sys.argv[1], os.environ.get("TFPS_TEST_DATA") or sys.argv[2], sys.argv[3]
    if not os.access(os.path.join(data, "train-images-idx3-ubyte.gz"), os.R_OK):
        print(f"test_onnx: no MNIST data in {data}: run deploy/get-data.sh mnist {data} first", file=sys.stderr)
        return 1
    print(f"python {sys.version.split()[0]} ({sys.executable}), onnx {onnx.__version__}, numpy {np.__version__}")
    tmp = tempfile.mkdtemp(prefix="tfps-onnx-")
    try:
        run_case("default", bin_dir, data, version, tmp, [])
        run_case("small", bin_dir, data, version, tmp,
                 ["--first-layer-neurons", "40", "--second-layer-neurons", "24"])
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    if failures:
        print(f"test_onnx: {len(failures)} failure(s)")
        return 1
    print("test_onnx: all checks passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
