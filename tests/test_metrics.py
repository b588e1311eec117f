#!/usr/bin/python3
"""test_metrics.py BIN_DIR DATA_DIR SOURCE_DIR -- what a real run leaves for the user to look at.

A local cluster (deploy/local-cluster.sh: 1 ps, 2 workers, an evaluator; --log-every 20) trains
the digits; then, decoded independently (tests/tfevents_decode.py: python3-crc32c and a
hand-written protobuf decoder):
  - logs/tensorboard/<task>/events.out.tfevents.* for worker-0, worker-1 and evaluator-0: every
    CRC holds, the first event is "brain.Event:2"; the training tasks have one event per line of
    logs/metrics-<task>.jsonl with loss, examples_per_sec, learning_rate and
    cluster_examples_per_sec equal (as float32) to the line's numbers at the line's step; the
    evaluator's (and the chief's final) eval/accuracy and eval/loss equal its lines';
  - the last eval/accuracy of the evaluator and of the chief equal summary.json's test_accuracy
    (as float32), and eval.json's final;
  - deploy/plot-metrics draws the run: a PNG with PNG's signature.
Exit 0 when all pass, 1 on a failure, 77 without python3-crc32c.
"""
import glob
import json
import math
import os
import shutil
import struct
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import tfevents_decode as td  # noqa: E402

if not td.have_crc32c():
    sysp = "/usr/bin/python3"
    if os.path.exists(sysp) and os.path.realpath(sys.executable) != os.path.realpath(sysp) \
            and not os.environ.get("TFPS_METRICS_REEXEC"):
        os.environ["TFPS_METRICS_REEXEC"] = "1"
        os.execv(sysp, [sysp] + sys.argv)
    print("test_metrics: SKIP: python3-crc32c is not installed")
    sys.exit(77)

failures = 0


def check(ok, what):
    global failures
    if not ok:
        failures += 1
        print("FAIL: " + what)
    return ok


def f32(x):
    return struct.unpack("<f", struct.pack("<f", x))[0]


def main():
    bin_dir, data_dir, src = sys.argv[1], os.environ.get("TFPS_TEST_DATA") or sys.argv[2], sys.argv[3]
    out = tempfile.mkdtemp(prefix="tfps-metrics-")
    try:
        env = dict(os.environ, TFPS_BIN=bin_dir)
        env.pop("TF_CONFIG", None)
        r = subprocess.run(["bash", os.path.join(src, "deploy/local-cluster.sh"), "--ps", "1", "--workers", "2",
                            "--evaluator", "--data-folder", data_dir, "--output-dir", out, "--epochs", "2",
                            "--log-every", "20", "--eval-every", "0.5"],
                           env=env, capture_output=True, text=True, timeout=240)
        if not check(r.returncode == 0, "local-cluster.sh exited %d:\n%s" % (r.returncode, r.stderr[-3000:])):
            return
        with open(os.path.join(out, "summary.json")) as f:
            summary = json.load(f)
        with open(os.path.join(out, "eval.json")) as f:
            evaljson = json.load(f)
        acc = summary["test_accuracy"]
        check(evaljson["final"] is not None and abs(evaljson["final"]["accuracy"] - acc) <= 1e-9,
              "eval.json final %r, summary.json test_accuracy %r" % (evaljson["final"], acc))

        for task in ("worker-0", "worker-1", "evaluator-0"):
            lines = []
            with open(os.path.join(out, "logs", "metrics-%s.jsonl" % task)) as f:
                for n, text in enumerate(f, 1):
                    try:
                        lines.append(json.loads(text))
                    except ValueError:
                        check(False, "%s line %d is not JSON: %r" % (task, n, text))
            files = glob.glob(os.path.join(out, "logs", "tensorboard", task, "events.out.tfevents.*"))
            if not check(len(files) == 1, "%s: event files %r (expected one)" % (task, files)):
                continue
            try:
                events = td.read_events(files[0])
            except td.TFEventsError as e:
                check(False, "%s: %s" % (task, e))
                continue
            check(events[0]["file_version"] == "brain.Event:2", "%s: first event %r" % (task, events[0]))
            scalars = [e for e in events[1:]]
            train = [ln for ln in lines if "kind" not in ln]
            evals = [ln for ln in lines if "kind" in ln]
            check(len(scalars) == len(lines), "%s: %d events for %d metrics lines" % (task, len(scalars), len(lines)))
            want = []
            for ln in lines:
                if "kind" in ln:
                    want.append((ln["step"], {"eval/accuracy": f32(ln["accuracy"]), "eval/loss": f32(ln["loss"])}))
                else:
                    want.append((ln["step"], {"loss": f32(ln["loss"]), "examples_per_sec": f32(ln["examples_per_s"]),
                                              "learning_rate": f32(ln["lr"]),
                                              "cluster_examples_per_sec": f32(ln["cluster_examples_per_s"])}))
            # the JSON line's numbers are doubles printed by cJSON with 15 significant digits when that
            # reads back within its tolerance: the float32 of the event may be one float32 ulp from the
            # float32 of the printed number (seen: 0.38899528980255127 vs 0.38899526000023), not more
            def same(a, b):
                return a.keys() == b.keys() and all(math.isclose(a[t], b[t], rel_tol=2.4e-7, abs_tol=1e-38)
                                                    for t in a)
            for (step, values), ev in zip(want, scalars):
                check(ev["step"] == step and same(ev["values"], values),
                      "%s: event step %r values %r; the metrics line says step %r values %r"
                      % (task, ev["step"], ev["values"], step, values))
            if task == "evaluator-0":
                check(len(train) == 0 and len(evals) >= 2, "%s: %d training, %d evaluation lines"
                      % (task, len(train), len(evals)))
            else:
                check(len(train) >= 2, "%s: %d training lines" % (task, len(train)))
                steps = [ln["step"] for ln in train]
                check(steps == sorted(steps), "%s: global steps not rising: %r" % (task, steps))
            if task in ("worker-0", "evaluator-0"):   # the chief's and the evaluator's final evaluation
                last = scalars[-1]["values"] if scalars else {}
                check(evals and evals[-1]["kind"] == "final" and
                      math.isclose(last.get("eval/accuracy", -1), f32(acc), rel_tol=2.4e-7),
                      "%s: last event %r, summary.json test_accuracy %r" % (task, last, acc))
            print("  %s: %d events (%d training, %d evaluations) decoded, CRCs and values checked"
                  % (task, len(scalars), len(train), len(evals)))

        # the picture of the run
        png = os.path.join(out, "metrics.png")
        r = subprocess.run([sys.executable, os.path.join(src, "deploy/plot-metrics"), out, "-o", png],
                           capture_output=True, text=True, timeout=120)
        if r.returncode == 2 and "matplotlib" in r.stderr:
            print("  plot-metrics: skipped (no matplotlib)")
        elif check(r.returncode == 0, "plot-metrics exited %d: %s" % (r.returncode, r.stderr)):
            with open(png, "rb") as f:
                head = f.read(24)
            check(head[:8] == b"\x89PNG\r\n\x1a\n", "metrics.png is not a PNG")
            w, h = struct.unpack(">II", head[16:24])
            print("  plot-metrics: %s, %dx%d" % (png, w, h))
    finally:
        shutil.rmtree(out, ignore_errors=True)


main()
print("test_metrics: %s" % ("PASS" if failures == 0 else "%d FAILED" % failures))
sys.exit(1 if failures else 0)
