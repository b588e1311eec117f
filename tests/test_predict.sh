#!/usr/bin/env bash
# test_predict.sh BIN_DIR DATA_DIR -- tfps-predict against a real training run.
#
# 1. a local run of 150 steps; tfps-predict --model OUT --data-folder DATA --json: its accuracy and loss
#    equal summary.json's test_accuracy and test_loss exactly; the confusion matrix sums to the test
#    count, its trace is the correct count, its rows are the labels' per-class counts (read here from
#    the IDX file), the per-example predictions agree with it; the text output says the same accuracy;
# 2. the checkpoint folder, the step-N folder and model/model.tfps give the same predictions;
# 3. PGM (P5, P2) and PNG (gray, RGB) files written from test images predict the class the data-folder
#    run gave those examples; probabilities sum to 1 within 1e-6 and their argmax is the class; the
#    test IDX file itself with --labels gives the data-folder accuracy;
# 4. user mistakes exit 2 with one line on stderr: a 27x28 PGM, a missing model, a truncated model
#    file, a corrupt checkpoint, a data folder of 32x32 images, a labels file given as an image, a
#    folder with no model, bad flags.
set -uo pipefail
bin=${1:?usage: test_predict.sh BIN_DIR DATA_DIR}
data=${TFPS_TEST_DATA:-${2:?usage: test_predict.sh BIN_DIR DATA_DIR}}
ls "$data"/t10k-images*idx3-ubyte* >/dev/null 2>&1 ||
  { echo "test_predict: no MNIST data in $data: run deploy/get-data.sh mnist $data first" >&2; exit 1; }
tmp=$(mktemp -d /tmp/tfps-predict-XXXXXX)
trap 'rm -rf "$tmp"' EXIT
failed=0
fail() { echo "FAIL: $*" >&2; failed=1; }
ok() { echo "ok: $*"; }
P=$bin/tfps-predict

# 1. train, then evaluate the output folder
t0=$(date +%s.%N)
env -u TF_CONFIG "$bin/tfps-worker" --data-folder "$data" --steps 150 --output-dir "$tmp/run" --log-every 0 \
  >"$tmp/train.out" 2>"$tmp/train.err" || { tail -5 "$tmp/train.err" >&2; echo "FAIL: training" >&2; exit 1; }
ok "trained: $(tail -1 "$tmp/train.out")"
"$P" --model "$tmp/run" --data-folder "$data" --json >"$tmp/out.json" 2>"$tmp/out.err"; rc=$?
[ $rc -eq 0 ] || { cat "$tmp/out.err" >&2; fail "predict --model OUT --data-folder: exit $rc"; }
check=$(python3 - "$tmp/out.json" "$tmp/run/summary.json" "$data" <<'EOF'
import gzip, json, os, sys
p, s, data = json.load(open(sys.argv[1])), json.load(open(sys.argv[2])), sys.argv[3]
def labels():
    for name in ("t10k-labels-idx1-ubyte.gz", "t10k-labels-idx1-ubyte", "t10k-labels.idx1-ubyte.gz",
                 "t10k-labels.idx1-ubyte"):
        f = os.path.join(data, name)
        if os.path.exists(f):
            b = (gzip.open if f.endswith(".gz") else open)(f, "rb").read()
            return list(b[8:])
    raise SystemExit("no test labels in " + data)
y = labels()
n, V = p["examples"], p["model"]["layout"]["classes"]
cm, pred = p["confusion_matrix"], p["predictions"]
assert p["accuracy"] == s["test_accuracy"], (p["accuracy"], s["test_accuracy"])
assert p["loss"] == s["test_loss"], (p["loss"], s["test_loss"])
assert n == len(y) == len(pred), (n, len(y), len(pred))
assert sum(map(sum, cm)) == n, sum(map(sum, cm))
assert sum(cm[k][k] for k in range(V)) == p["correct"], p["correct"]
assert p["accuracy"] == p["correct"] / n
assert sum(a == b for a, b in zip(pred, y)) == p["correct"]
for k in range(V):
    assert sum(cm[k]) == y.count(k) == p["per_class"][k]["count"], (k, sum(cm[k]), y.count(k))
    assert p["per_class"][k]["correct"] == cm[k][k]
    assert all(cm[k][j] == sum(1 for a, b in zip(y, pred) if a == k and b == j) for j in range(V))
assert p["model"]["source"] == "model" and p["model"]["step"] == 150, p["model"]
print("accuracy %r (%d of %d) = summary.json's; confusion matrix %dx%d sums to %d, trace %d" %
      (p["accuracy"], p["correct"], n, V, V, n, p["correct"]))
EOF
) && ok "data folder: $check" || fail "data-folder JSON against summary.json and the labels"
"$P" --model "$tmp/run" --data-folder "$data" >"$tmp/out.txt" 2>&1 || fail "predict text output: exit $?"
acc=$(python3 -c 'import json,sys; print("%.4f" % json.load(open(sys.argv[1]))["test_accuracy"])' "$tmp/run/summary.json")
grep -q "^accuracy $acc (" "$tmp/out.txt" && grep -q "^true.pred" "$tmp/out.txt" ||
  { cat "$tmp/out.txt" >&2; fail "text output lacks \"accuracy $acc (\" or the confusion matrix"; }

# 2. the same weights from the checkpoints and from model/
same() {   # label json: predictions and accuracy equal out.json's
  python3 - "$tmp/out.json" "$2" "$1" <<'EOF'
import json, sys
a, b, what = json.load(open(sys.argv[1])), json.load(open(sys.argv[2])), sys.argv[3]
assert a["predictions"] == b["predictions"], what + ": predictions differ"
assert a["accuracy"] == b["accuracy"] and a["confusion_matrix"] == b["confusion_matrix"], what
assert b["model"]["step"] == 150, b["model"]
EOF
}
for m in "$tmp/run/checkpoints" "$tmp/run/checkpoints/step-150" "$tmp/run/model"; do
  "$P" --model "$m" --data-folder "$data" --json >"$tmp/m.json" 2>"$tmp/m.err" && same "$m" "$tmp/m.json" &&
    ok "--model ${m#$tmp/}: the same predictions" || { cat "$tmp/m.err" >&2; fail "--model $m"; }
done
grep -q '"source":	"checkpoint"' <("$P" --model "$tmp/run/checkpoints" --data-folder "$data" --json 2>/dev/null) ||
  fail "--model checkpoints: source is not checkpoint"

# 3. image files written from test examples
python3 - "$data" "$tmp" <<'EOF' || fail "writing the test images"
import gzip, os, struct, sys, zlib
data, tmp = sys.argv[1], sys.argv[2]
for name in ("t10k-images-idx3-ubyte.gz", "t10k-images-idx3-ubyte", "t10k-images.idx3-ubyte.gz", "t10k-images.idx3-ubyte"):
    f = os.path.join(data, name)
    if os.path.exists(f):
        b = (gzip.open if f.endswith(".gz") else open)(f, "rb").read()
        break
n, rows, cols = struct.unpack(">III", b[4:16])
d = rows * cols
def png(path, w, h, rows, colour):
    def chunk(t, x): return struct.pack(">I", len(x)) + t + x + struct.pack(">I", zlib.crc32(t + x) & 0xffffffff)
    raw = b"".join(b"\0" + r for r in rows)
    open(path, "wb").write(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, colour, 0, 0, 0)) +
                           chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))
for k in (0, 7, n - 1):
    img = b[16 + d * k:16 + d * (k + 1)]
    r = [img[i * cols:(i + 1) * cols] for i in range(rows)]
    open("%s/img%d.pgm" % (tmp, k), "wb").write(b"P5\n# test example %d\n%d %d\n255\n" % (k, cols, rows) + img)
    open("%s/img%d-p2.pgm" % (tmp, k), "w").write("P2\n%d %d\n255\n" % (cols, rows) +
                                                  "\n".join(" ".join(map(str, x)) for x in r) + "\n")
    png("%s/img%d.png" % (tmp, k), cols, rows, r, 0)
    png("%s/img%d-rgb.png" % (tmp, k), cols, rows, [bytes(v for p in x for v in (p, p, p)) for x in r], 2)
open(tmp + "/examples", "w").write("0 7 %d" % (n - 1))
img = b[16:16 + d]
open(tmp + "/small.pgm", "wb").write(b"P5\n%d %d\n255\n" % (cols - 1, rows) + img[:(cols - 1) * rows])
EOF
imgs=(); for k in $(cat "$tmp/examples"); do imgs+=("$tmp/img$k.pgm" "$tmp/img$k-p2.pgm" "$tmp/img$k.png" "$tmp/img$k-rgb.png"); done
"$P" --model "$tmp/run" --json "${imgs[@]}" >"$tmp/img.json" 2>"$tmp/img.err" || { cat "$tmp/img.err" >&2; fail "predict images: exit $?"; }
r=$(python3 - "$tmp/out.json" "$tmp/img.json" $(cat "$tmp/examples") <<'EOF2'
import json, sys
a, b, ks = json.load(open(sys.argv[1])), json.load(open(sys.argv[2])), [int(k) for k in sys.argv[3:]]
ims = b["images"]
assert len(ims) == 4 * len(ks), len(ims)
said = []
for i, k in enumerate(ks):
    want = a["predictions"][k]
    four = ims[4 * i:4 * i + 4]
    for e in four:
        p = e["probabilities"]
        assert e["predicted"] == want, (e["file"], e["predicted"], want)
        assert abs(sum(p) - 1) <= 1e-6, (e["file"], sum(p))
        assert max(range(len(p)), key=p.__getitem__) == e["predicted"], e
    # P5, P2 and a gray PNG hold the same bytes: the same probabilities to the last bit
    assert four[0]["probabilities"] == four[1]["probabilities"] == four[2]["probabilities"], "PGM, P2 and PNG differ"
    said.append("%d: class %d (p %.4f)" % (k, want, four[0]["probabilities"][want]))
print(", ".join(said))
EOF2
) && ok "examples as P5, P2, PNG and RGB PNG, as the data-folder run: $r" || fail "examples as images"
lab=$(ls "$data"/t10k-labels*idx1-ubyte* | head -1); im=$(ls "$data"/t10k-images*idx3-ubyte* | head -1)
"$P" --model "$tmp/run" --labels "$lab" --json "$im" >"$tmp/idx.json" 2>"$tmp/idx.err" &&
  python3 -c '
import json, sys
a, b = json.load(open(sys.argv[1])), json.load(open(sys.argv[2]))
assert b["correct"] == a["correct"] and b["accuracy"] == a["accuracy"], (b["correct"], a["correct"])
assert [e["predicted"] for e in b["images"]] == a["predictions"]
assert [e["index"] for e in b["images"]] == list(range(a["examples"]))' "$tmp/out.json" "$tmp/idx.json" &&
  ok "the test IDX file with --labels: the data-folder accuracy" || { cat "$tmp/idx.err" >&2; fail "IDX file with --labels"; }

# 4. user mistakes: exit 2, one line
head -c 100000 "$tmp/run/model/model.tfps" >"$tmp/short.tfps"
cp -r "$tmp/run/checkpoints" "$tmp/badckpt" && ck=$(ls "$tmp"/badckpt/step-150/ps-*.ckpt | head -1) &&
  printf 'XXXX' | dd of="$ck" bs=1 seek=5000 conv=notrunc status=none
python3 - "$tmp/big" <<'EOF' || fail "writing a 32x32 data folder"
import os, struct, sys
d = sys.argv[1]; os.makedirs(d)
for split in ("train", "t10k"):
    open("%s/%s-images-idx3-ubyte" % (d, split), "wb").write(struct.pack(">IIII", 0x803, 3, 32, 32) + bytes(3 * 1024))
    open("%s/%s-labels-idx1-ubyte" % (d, split), "wb").write(struct.pack(">II", 0x801, 3) + bytes([1, 2, 3]))
EOF
mistake() {   # label expected-substring args...
  local what=$1 want=$2; shift 2
  "$P" "$@" >"$tmp/m.out" 2>"$tmp/m.err"; local rc=$?
  local lines; lines=$(wc -l <"$tmp/m.err")
  if [ $rc -eq 2 ] && [ "$lines" -eq 1 ] && grep -qF -- "$want" "$tmp/m.err" && [ ! -s "$tmp/m.out" ]; then
    ok "$what: exit 2: $(cat "$tmp/m.err")"
  else
    cat "$tmp/m.err" >&2; fail "$what: exit $rc, $lines lines on stderr, expected 2 and one line with \"$want\""
  fi
}
mistake "a 27x28 PGM" "27x28 pixels: expected 28x28" --model "$tmp/run" "$tmp/small.pgm"
mistake "a missing model" "$tmp/nothing" --model "$tmp/nothing" --data-folder "$data"
mistake "a truncated model file" "short.tfps" --model "$tmp/short.tfps" --data-folder "$data"
mistake "a corrupt checkpoint" "step-150" --model "$tmp/badckpt" --data-folder "$data"
mistake "a data folder of 32x32 images" "32x32 = 1024 pixels" --model "$tmp/run" --data-folder "$tmp/big"
mistake "a labels file as an image" "labels" --model "$tmp/run" "$lab"
mistake "a folder with no model" "expected a model.tfps" --model "$tmp" --data-folder "$data"
mistake "an unknown flag" "--batch-size" --model "$tmp/run" --batch-size 8 "$tmp/img0.pgm"
mistake "no --model" "--model" --data-folder "$data"
mistake "a bad --device" "--device" --model "$tmp/run" --device tpu "$tmp/img0.pgm"

echo "test_predict: $(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }') s"
[ $failed -eq 0 ] && echo "test_predict: all passed"
exit $failed
