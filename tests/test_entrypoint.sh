#!/usr/bin/env bash
# test_entrypoint.sh BIN_DIR DATA_DIR -- deploy/entrypoint.sh (the container entrypoint) on this host,
# pointed at the build's daemons with TFPS_BIN:
# - TF_CONFIG ps -> tfps-ps; chief, master, worker, evaluator -> tfps-worker (seen in --version's output
#   and in --print-cluster's task); no TF_CONFIG -> tfps-worker in local mode;
# - an unknown task.type or a broken TF_CONFIG -> exit 2 with one line, no daemon run;
# - every argument passes through (--batch-size, --model_dir, values with spaces);
# - SM_MODEL_DIR / SM_CHANNEL_TRAINING are the defaults of TFPS_OUTPUT_DIR / TFPS_DATA_FOLDER, only when
#   those are unset; the image defaults (TFPS_DEFAULT_*) come after them;
# - a data folder without the MNIST files: exit 2 with one line naming TFPS_FETCH_DATA; with
#   TFPS_FETCH_DATA=1 the get-data script (a stub here: no network) fills it and a short run trains.
set -uo pipefail
bin=${1:?usage: test_entrypoint.sh BIN_DIR DATA_DIR}
data=${TFPS_TEST_DATA:-${2:?usage: test_entrypoint.sh BIN_DIR DATA_DIR}}
src=$(cd "$(dirname "$0")/.." && pwd)
ep=$src/deploy/entrypoint.sh
tmp=$(mktemp -d /tmp/tfps-entrypoint-XXXXXX)
trap 'rm -rf "$tmp"' EXIT
failed=0
fail() { echo "FAIL: $*" >&2; failed=1; }

# runs the entrypoint with a clean tfps environment plus "VAR=value"... before "--", then the arguments;
# sets rc, out (stdout) and err (stderr)
run() {
  local envs=()
  while [[ $# -gt 0 && $1 != -- ]]; do envs+=("$1"); shift; done
  shift
  rc=0
  env -u TF_CONFIG -u SM_MODEL_DIR -u SM_CHANNEL_TRAINING -u TFPS_OUTPUT_DIR -u TFPS_DATA_FOLDER \
    -u TFPS_FETCH_DATA -u TFPS_GET_DATA -u TFPS_DEFAULT_OUTPUT_DIR -u TFPS_DEFAULT_DATA_FOLDER -u TFPS_LOG_LEVEL \
    TFPS_BIN="$bin" TFPS_SAGEMAKER_ROOT="$tmp/no-sagemaker" "${envs[@]}" timeout 120 bash "$ep" "$@" \
    >"$tmp/out" 2>"$tmp/err" || rc=$?
  out=$(cat "$tmp/out"); err=$(cat "$tmp/err")
}
expect_rc() { [[ $rc -eq $1 ]] || fail "$2: exit $rc, expected $1; stderr: $err"; }
one_line() { [[ $(printf '%s\n' "$err" | wc -l) -eq 1 && -n $err ]] || fail "$1: stderr is not one line: $err"; }
# json KEY.PATH: a value from the --print-cluster output in $out
json() { python3 -c 'import json,sys
v=json.load(open(sys.argv[1]))
for k in sys.argv[2].split("."): v=v[k]
print(str(v).lower() if isinstance(v,bool) else v)' "$tmp/out" "$1" 2>/dev/null || echo "<no $1>"; }
eq() { [[ $1 == "$2" ]] || fail "$3: got \"$1\", expected \"$2\""; }

cl='"cluster": {"chief": ["h0:2222"], "worker": ["h1:2222", "h2:2222"], "ps": ["h3:2222", "h4:2222"]}'
cl_master='"cluster": {"master": ["h0:2222"], "worker": ["h1:2222"], "ps": ["h3:2222"]}'
tf() { echo "{$1, \"task\": {\"type\": \"$2\", \"index\": $3}}"; }
ver=$("$bin/tfps-worker" --version | awk '{print $2}')

# 1. each task type -> its daemon (--version names it), and --print-cluster is that task's view
for t in "ps 1 tfps-ps" "chief 0 tfps-worker" "worker 1 tfps-worker" "evaluator 0 tfps-worker" \
         "master 0 tfps-worker"; do
  set -- $t
  c=$cl; [[ $1 == master ]] && c=$cl_master
  run "TF_CONFIG=$(tf "$c" "$1" "$2")" -- --version
  expect_rc 0 "$1 --version"
  eq "$out" "$3 $ver" "$1: daemon run"
  run "TF_CONFIG=$(tf "$c" "$1" "$2")" -- --print-cluster
  expect_rc 0 "$1 --print-cluster"
  eq "$(json task.type)" "$1" "$1: task.type"
  eq "$(json task.index)" "$2" "$1: task.index"
done
# the chief is the chief; a ps is none
run "TF_CONFIG=$(tf "$cl" chief 0)" -- --print-cluster
eq "$(json is_chief)" true "chief is_chief"
eq "$(json num_workers)" 3 "chief num_workers"

# 2. no TF_CONFIG: local mode in tfps-worker
run -- --version
expect_rc 0 "local --version"
eq "$out" "tfps-worker $ver" "no TF_CONFIG: daemon run"
run -- --print-cluster
eq "$(json mode)" local "no TF_CONFIG: mode"

# 3. unknown type, broken TF_CONFIG: exit 2, one line, nothing else runs
run "TF_CONFIG=$(tf "$cl" trainer 0)" -- --version
expect_rc 2 "unknown type"; one_line "unknown type"
[[ $err == *'"trainer"'* ]] || fail "unknown type: message lacks the type: $err"
[[ -z $out ]] || fail "unknown type: a daemon ran: $out"
run 'TF_CONFIG={"cluster": ' -- --version
expect_rc 2 "broken TF_CONFIG"; one_line "broken TF_CONFIG"
run "TF_CONFIG=$(tf "$cl" ps 0)" TFPS_BIN="$tmp/nowhere" -- --version
expect_rc 2 "TFPS_BIN without daemons"; one_line "TFPS_BIN without daemons"

# 4. arguments pass through, in order, both forms, a value with a space
run "TF_CONFIG=$(tf "$cl" ps 0)" -- --print-cluster --batch-size 32 --output-dir="$tmp/out dir" --shard-strategy greedy
expect_rc 0 "ps pass-through"
eq "$(json options.batch-size)" 32 "ps --batch-size"
eq "$(json options.output-dir)" "$tmp/out dir" "ps --output-dir="
eq "$(json options.shard-strategy)" greedy "ps --shard-strategy"
run "TF_CONFIG=$(tf "$cl" ps 0)" -- --print-cluster --bogus 1
expect_rc 2 "bad flag through the entrypoint"; one_line "bad flag"
[[ $err == *'tfps-ps: unknown option "--bogus"'* ]] || fail "bad flag: not tfps-ps's message: $err"

# 5. SageMaker: SM_* defaults only when TFPS_* are unset; --model_dir (s3 ignored, local = output dir)
run "TF_CONFIG=$(tf "$cl" worker 0)" SM_MODEL_DIR=/opt/ml/model SM_CHANNEL_TRAINING=/opt/ml/input/data/training \
  -- --print-cluster
eq "$(json options.output-dir)" /opt/ml/model "SM_MODEL_DIR -> output-dir"
eq "$(json options.data-folder)" /opt/ml/input/data/training "SM_CHANNEL_TRAINING -> data-folder"
run "TF_CONFIG=$(tf "$cl" worker 0)" SM_MODEL_DIR=/opt/ml/model SM_CHANNEL_TRAINING=/sm TFPS_OUTPUT_DIR=/o \
  TFPS_DATA_FOLDER=/d TFPS_DEFAULT_OUTPUT_DIR=/img-out -- --print-cluster
eq "$(json options.output-dir)" /o "TFPS_OUTPUT_DIR over SM_MODEL_DIR"
eq "$(json options.data-folder)" /d "TFPS_DATA_FOLDER over SM_CHANNEL_TRAINING"
run TFPS_DEFAULT_OUTPUT_DIR=/outputs TFPS_DEFAULT_DATA_FOLDER=/data -- --print-cluster
eq "$(json options.output-dir)" /outputs "image default output"
eq "$(json options.data-folder)" /data "image default data"
run SM_MODEL_DIR=/opt/ml/model TFPS_DEFAULT_OUTPUT_DIR=/outputs -- --print-cluster
eq "$(json options.output-dir)" /opt/ml/model "SM_MODEL_DIR over the image default"
# SageMaker: `IMAGE train` (the word dropped), and its /opt/ml folders when SM_* are not set
mkdir -p "$tmp/ml/model" "$tmp/ml/input/data/training"
run TFPS_SAGEMAKER_ROOT="$tmp/ml" TFPS_DEFAULT_OUTPUT_DIR=/outputs TFPS_DEFAULT_DATA_FOLDER=/data -- train --print-cluster
expect_rc 0 "SageMaker's train argument"
[[ $err == *'"train" (SageMaker'* ]] || fail "train: not said: $err"
eq "$(json options.output-dir)" "$tmp/ml/model" "/opt/ml/model when it exists"
eq "$(json options.data-folder)" "$tmp/ml/input/data/training" "/opt/ml/input/data/training when it exists"
run TFPS_OUTPUT_DIR= TFPS_DEFAULT_OUTPUT_DIR=/outputs -- --print-cluster
eq "$(json options.output-dir)" /outputs "an empty TFPS_OUTPUT_DIR counts as unset"
run "TF_CONFIG=$(tf "$cl" ps 0)" SM_MODEL_DIR=/opt/ml/model -- --print-cluster --model_dir s3://bucket/job/model
expect_rc 0 "--model_dir s3://"
eq "$(json options.output-dir)" /opt/ml/model "--model_dir s3:// ignored"
eq "$(json options.model_dir)" s3://bucket/job/model "--model_dir recorded"
[[ $(grep -c -- '--model_dir s3://bucket/job/model: a URI, ignored' "$tmp/err") -eq 1 ]] ||
  fail "--model_dir s3://: no single info line: $err"
run "TF_CONFIG=$(tf "$cl" worker 1)" -- --print-cluster --model_dir "$tmp/model"
eq "$(json options.output-dir)" "$tmp/model" "--model_dir local path -> output-dir"

# 6. data: missing without TFPS_FETCH_DATA -> exit 2, one line; actions need none
run TFPS_DATA_FOLDER="$tmp/nodata" -- --epochs 1
expect_rc 2 "missing data"; one_line "missing data"
[[ $err == *"$tmp/nodata"*TFPS_FETCH_DATA=1* ]] || fail "missing data: message: $err"
[[ ! -e $tmp/nodata ]] || fail "missing data: the folder was created"
run "TF_CONFIG=$(tf "$cl" worker 1)" -- --data-folder "$tmp/nodata" --steps 1
expect_rc 2 "missing data (--data-folder)"
[[ $err == *"$tmp/nodata"* ]] || fail "missing data: --data-folder not the folder checked: $err"
run "TF_CONFIG=$(tf "$cl" ps 0)" TFPS_DATA_FOLDER="$tmp/nodata" -- --print-cluster
expect_rc 0 "ps needs no data"

# 7. TFPS_FETCH_DATA=1: the get-data script gets (dataset, folder); a stub copies the test data, then a
#    short local run through the entrypoint trains and writes summary.json
cat >"$tmp/get-data" <<EOF
#!/usr/bin/env bash
echo "\$@" >"$tmp/get-data.args"
mkdir -p "\$2" && cp "$data"/*-ubyte.gz "\$2"/
EOF
if [[ -r $data/train-images-idx3-ubyte.gz ]]; then
  run TFPS_FETCH_DATA=1 TFPS_GET_DATA="$tmp/get-data" SM_CHANNEL_TRAINING="$tmp/fetched" SM_MODEL_DIR="$tmp/sm-out" \
    -- --epochs 1 --steps 30 --batch-size 32 --log-every 0 --device cpu
  expect_rc 0 "fetch and train"
  eq "$(cat "$tmp/get-data.args" 2>/dev/null)" "mnist $tmp/fetched" "get-data arguments"
  [[ -s $tmp/sm-out/summary.json ]] || fail "local run: no summary.json in SM_MODEL_DIR $tmp/sm-out"
  steps=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["steps"])' "$tmp/sm-out/summary.json" \
          2>/dev/null || echo "?")
  eq "$steps" 30 "local run steps"
else
  fail "no MNIST data in $data: the fetch-and-train case was not run"
fi
# a failing get-data: exit 1, the daemon is not run
printf '#!/bin/sh\nexit 3\n' >"$tmp/bad-get-data"
run TFPS_FETCH_DATA=1 TFPS_GET_DATA="$tmp/bad-get-data" TFPS_DATA_FOLDER="$tmp/nodata2" -- --epochs 1
expect_rc 1 "failing get-data"
[[ $err == *"fetching the data into $tmp/nodata2 failed"* ]] || fail "failing get-data: message: $err"

[[ $failed -eq 0 ]] && echo "test_entrypoint: all checks passed"
exit "$failed"
