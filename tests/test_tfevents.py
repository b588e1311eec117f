#!/usr/bin/python3
"""test_tfevents.py TFEVENTS_WRITE -- TensorBoard event files as common/tfevents.c writes them,
decoded independently (tests/tfevents_decode.py: python3-crc32c and a hand-written protobuf
decoder, no generated code).

1. the driver (tests/tfevents_write.c) writes known scalars at known steps: 0.0, -1.5, 1e-30,
   3.4e38, the smallest denormal, -0.0, NaN, +-inf, UTF-8 tags, steps 0 .. 2^63-1 and negative;
   the file's name is events.out.tfevents.<10-digit secs near now>.<hostname>; it starts with
   the 12 bytes every TensorFlow event file starts with; every record's two CRCs hold; the
   first event is file_version "brain.Event:2"; each later one has the step, tags and float32
   values written (bit for bit) and a wall_time within a few seconds of now, non-decreasing;
2. a second writer in the same folder makes a file of its own and leaves the first intact;
3. the decoder can fail: each single byte of the file flipped in turn -> a CRC mismatch; a file
   cut short or with a byte appended -> truncated; well-framed records that are bad protobuf
   or bad events -> a format error; strict=False reads an unknown field that strict refuses.

Exit 0 when all pass, 1 on a failure, 77 (skip) without python3-crc32c. Debian's
python3-crc32c is installed for /usr/bin/python3: a python3 earlier on PATH (pyenv, a venv)
that lacks it re-runs this script under /usr/bin/python3.
"""
import math
import os
import re
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import tfevents_decode as td  # noqa: E402

if not td.have_crc32c():
    sysp = "/usr/bin/python3"
    if os.path.exists(sysp) and os.path.realpath(sys.executable) != os.path.realpath(sysp) \
            and not os.environ.get("TFPS_TFEVENTS_REEXEC"):
        os.environ["TFPS_TFEVENTS_REEXEC"] = "1"
        os.execv(sysp, [sysp] + sys.argv)
    print("SKIP: python3-crc32c missing (apt-get install python3-crc32c; deploy/install-deps.sh)", file=sys.stderr)
    sys.exit(77)

failures = []


def check(cond, what):
    if cond:
        print("ok: " + what)
    else:
        print("FAIL: " + what)
        failures.append(what)


def f32(v):
    """v rounded to float32, as a Python float (exact)."""
    return struct.unpack("<f", struct.pack("<f", v))[0]


def same_f32(a, b):
    if math.isnan(a) or math.isnan(b):
        return math.isnan(a) and math.isnan(b)
    return struct.pack("<f", a) == struct.pack("<f", b)   # tells -0.0 from 0.0


# (step, [(tag, value)]): what the driver writes and the decoder must read back
EVENTS = [
    (0, [("loss", 0.0), ("accuracy", 1.0)]),                       # step 0 and a value 0.0: proto3 defaults
    (1, [("loss", -1.5)]),
    (100, [("tiny", 1e-30), ("huge", 3.4e38), ("denormal", 1e-45), ("neg_zero", -0.0)]),
    (101, [("nan", float("nan")), ("inf", float("inf")), ("-inf", float("-inf"))]),
    (2 ** 40 + 1, [("λ/ü", 0.1), ("精度 ✓", 2.5), ("\U0001d11e clef", 12345.678)]),
    (-7, [("negative_step", 3.0)]),
    (2 ** 63 - 1, [("max_step", 1.0)]),
    (5, []),                                                       # an empty summary
]


def run_driver(exe, logdir):
    args = [exe, logdir]
    for step, vals in EVENTS:
        args += ["-s", str(step)]
        for tag, v in vals:
            args += [tag, float.hex(f32(v))]   # hex: strtof reads the float32 exactly
    r = subprocess.run(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=30)
    if r.returncode != 0:
        print(r.stderr.decode(errors="replace"), file=sys.stderr)
        raise SystemExit("FAIL: tfevents_write exited %d" % r.returncode)
    return r.stdout.decode().strip()


def expect_error(data, path, want, what, strict=True):
    with open(path, "wb") as f:
        f.write(data)
    try:
        td.read_events(path, strict=strict)
    except td.TFEventsError as e:
        check(want in str(e), "%s -> %s" % (what, e))
        return
    check(False, "%s -> no error raised" % what)


def main():
    exe = sys.argv[1] if len(sys.argv) > 1 else None
    if not exe or not os.access(exe, os.X_OK):
        raise SystemExit("usage: test_tfevents.py TFEVENTS_WRITE (the built test driver)")
    tmp = tempfile.mkdtemp(prefix="tfps-tfevents-py-")
    try:
        logdir = os.path.join(tmp, "logs", "tensorboard")
        t0 = time.time()
        path = run_driver(exe, logdir)
        t1 = time.time()

        # 1. name, first bytes, every event
        name = os.path.basename(path)
        m = re.fullmatch(r"events\.out\.tfevents\.(\d{10})\.(.+)", name)
        check(m is not None and os.path.dirname(path) == logdir, "file name %s in %s" % (name, logdir))
        if m:
            check(m.group(2) == socket.gethostname().replace("/", "_"), "hostname in the name: %s" % m.group(2))
            check(int(t0) - 1 <= int(m.group(1)) <= t1 + 1, "seconds in the name %s within the run" % m.group(1))
        with open(path, "rb") as f:
            data = f.read()
        # length 24 (the file_version event) and its masked CRC: the first 12 bytes of every TF event file
        check(data[:12] == b"\x18\x00\x00\x00\x00\x00\x00\x00\xa3\x7fK\"",
              "first 12 bytes as in TensorFlow's files: %s" % data[:12].hex())
        events = td.read_events(path)
        check(len(events) == 1 + len(EVENTS), "%d events (1 + %d), %d bytes" % (len(events), len(EVENTS), len(data)))
        first = events[0]
        check(first["file_version"] == "brain.Event:2" and first["values"] == {} and first["step"] == 0,
              "first event: file_version %r" % first["file_version"])
        prev, late = 0.0, []
        for k, ev in enumerate(events):
            wt = ev["wall_time"]
            if not (t0 - 2 <= wt <= t1 + 2 and wt >= prev):
                late.append("event %d: wall_time %.6f outside [%.3f, %.3f] or before %.6f" % (k, wt, t0, t1, prev))
            prev = wt
        check(not late, "every wall_time within the driver's run (+-2 s) and non-decreasing%s"
              % ("" if not late else ": " + "; ".join(late[:3])))
        check(abs(events[-1]["wall_time"] - time.time()) < 5, "wall_time within 5 s of now: %.6f" % prev)
        bad = 0
        for (step, vals), ev in zip(EVENTS, events[1:]):
            if ev["step"] != step or ev["file_version"] is not None:
                bad += 1
                print("  step %d read as %d (file_version %r)" % (step, ev["step"], ev["file_version"]))
            want = {tag: f32(v) for tag, v in vals}
            if set(want) != set(ev["values"]) or not all(same_f32(ev["values"][t], want[t]) for t in want):
                bad += 1
                print("  step %d: wrote %r, read %r" % (step, want, ev["values"]))
        check(bad == 0, "every step, tag and float32 value read back exactly (%d values)"
              % sum(len(v) for _, v in EVENTS))

        # 2. a second writer in the same folder, within the same second or not
        path2 = run_driver(exe, logdir)
        check(path2 != path and len(td.read_events(path2)) == 1 + len(EVENTS), "second writer: %s"
              % os.path.basename(path2))
        with open(path, "rb") as f:
            check(f.read() == data, "the first file untouched by the second writer")

        # 3. the decoder fails on what it must refuse
        bad_path = os.path.join(tmp, "bad.tfevents")
        missed = []
        for i in range(len(data)):
            b = bytearray(data)
            b[i] ^= 0x01
            with open(bad_path, "wb") as f:
                f.write(b)
            try:
                td.read_events(bad_path)
                missed.append((i, "no error"))
            except td.TFEventsError as e:
                if "CRC mismatch" not in str(e):
                    missed.append((i, str(e)))
        check(not missed, "each of the %d bytes flipped -> CRC mismatch%s"
              % (len(data), "" if not missed else ": missed %r" % missed[:5]))
        expect_error(data[:-1], bad_path, "truncated", "last byte cut")
        expect_error(data + b"\0", bad_path, "truncated", "a byte appended")
        expect_error(data[:5], bad_path, "truncated header", "5 bytes")

        fv = b"\x09" + struct.pack("<d", time.time()) + b"\x1a\x0dbrain.Event:2"
        check(td.frame_record(data[12:36]) == data[:40], "frame_record frames the first event byte for byte as the writer")
        wt = b"\x09" + struct.pack("<d", time.time())
        value = b"\x0a\x01a\x15" + struct.pack("<f", 1.0)
        summary = b"\x2a" + bytes([len(value) + 2]) + b"\x0a" + bytes([len(value)]) + value
        good = td.frame_record(fv) + td.frame_record(wt + b"\x10\x03" + summary)
        with open(bad_path, "wb") as f:
            f.write(good)
        check(td.read_events(bad_path)[1]["values"] == {"a": 1.0} and td.read_events(bad_path)[1]["step"] == 3,
              "a hand-framed file reads back")
        fr = td.frame_record
        expect_error(fr(fv) + fr(wt + b"\x0f"), bad_path, "wire type 7", "wire type 7")
        expect_error(fr(fv) + fr(wt + b"\x10\xff"), bad_path, "varint cut short", "varint cut short")
        expect_error(fr(fv) + fr(wt + b"\x10" + b"\xff" * 10 + b"\x01"), bad_path, "varint", "11-byte varint")
        expect_error(fr(fv) + fr(wt + b"\x2a\x05\x0a"), bad_path, "overruns", "length past the message")
        expect_error(fr(fv) + fr(wt + b"\x2a\x07\x0a\x05\x0a\x01a\x15\x00"), bad_path, "cut short", "fixed32 cut short")
        expect_error(fr(fv) + fr(wt + b"\x11" + bytes(8)), bad_path, "wire type 1, expected 0", "step as fixed64")
        no_value = b"\x0a\x01a"
        expect_error(fr(fv) + fr(wt + b"\x2a\x05\x0a\x03" + no_value), bad_path, "no simple_value",
                     "a Value without simple_value")
        expect_error(fr(fv) + fr(wt + b"\x2a\x0a\x0a\x08\x0a\x01\xff\x15" + bytes(4)), bad_path, "UTF-8",
                     "a tag that is not UTF-8")
        expect_error(fr(wt + b"\x10\x03" + summary), bad_path, "first event", "no file_version first")
        expect_error(fr(fv) + fr(wt), bad_path, "without a summary", "an event without a summary")
        expect_error(fr(fv) + fr(wt + summary + b"\x22\x00"), bad_path, "unknown field 4",
                     "graph_def (field 4) in strict mode")
        with open(bad_path, "wb") as f:
            f.write(fr(fv) + fr(wt + b"\x10\x03" + summary + b"\x22\x00"))
        check(td.read_events(bad_path, strict=False)[1]["values"] == {"a": 1.0}, "strict=False skips field 4")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    if failures:
        print("test_tfevents: %d failed" % len(failures))
        return 1
    print("test_tfevents: all passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
