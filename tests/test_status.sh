#!/usr/bin/env bash
# test_status.sh BIN_DIR DATA_DIR -- tfps-status against real ps.
#
# 1. 2 tfps-ps (TF_CONFIG chief + worker + 2 ps on free loopback ports); the non-chief worker trains
#    40 async steps and exits (no chief, so the ps stay up); tfps-status with the worker's TF_CONFIG
#    exits 0, both rows SERVING, and --json says version == applied == 40 on each ps, the worker
#    registered and done, ps_index as listed; a TF_CONFIG without a task and --ps give the same;
# 2. ps 1 killed: exit 1 within the deadline, ps 1 "unreachable", ps 0 still SERVING (text and JSON);
# 3. a ps serving mTLS: SERVING with a worker's certificate (deploy/make-certs.sh), unreachable without;
# 4. usage mistakes exit 2 with one line: no TF_CONFIG and no --ps, a malformed address, a bad
#    --timeout, a bad TF_CONFIG, half the TLS flags.
set -uo pipefail
bin=${1:?usage: test_status.sh BIN_DIR DATA_DIR}
data=${TFPS_TEST_DATA:-${2:?usage: test_status.sh BIN_DIR DATA_DIR}}
ls "$data"/train-images*idx3-ubyte* >/dev/null 2>&1 ||
  { echo "test_status: no MNIST data in $data: run deploy/get-data.sh mnist $data first" >&2; exit 1; }
tmp=$(mktemp -d /tmp/tfps-status-XXXXXX)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null; done
  rm -rf "$tmp"
}
trap cleanup EXIT
failed=0
fail() { echo "FAIL: $*" >&2; failed=1; }
ok() { echo "ok: $*"; }
S=$bin/tfps-status
t0=$(date +%s.%N)
STEPS=40

read -r pc pw p0 p1 < <(python3 -c '
import socket
ss = [socket.socket() for _ in range(4)]
for s in ss: s.bind(("127.0.0.1", 0))
print(" ".join(str(s.getsockname()[1]) for s in ss))')
ps0=127.0.0.1:$p0; ps1=127.0.0.1:$p1
cluster="{\"chief\": [\"127.0.0.1:$pc\"], \"worker\": [\"127.0.0.1:$pw\"], \"ps\": [\"$ps0\", \"$ps1\"]}"
tfc() { echo "{\"cluster\": $cluster, \"task\": {\"type\": \"$1\", \"index\": $2}}"; }
for i in 0 1; do
  TF_CONFIG=$(tfc ps $i) "$bin/tfps-ps" --output-dir "$tmp/out" --idle-timeout 120 >"$tmp/ps$i.log" 2>&1 &
  pids+=($!)
done

# 1. a short async run by the worker that is not the chief
TF_CONFIG=$(tfc worker 0) timeout 60 "$bin/tfps-worker" --data-folder "$data" --output-dir "$tmp/out" \
  --steps $STEPS --batch-size 32 --log-every 0 >"$tmp/w.out" 2>"$tmp/w.err" ||
  { tail -5 "$tmp/w.err" >&2; echo "FAIL: the worker's run" >&2; exit 1; }
ok "worker 0 trained $STEPS steps against 2 ps"
TF_CONFIG=$(tfc worker 0) "$S" >"$tmp/t1" 2>"$tmp/t1.err"; rc=$?
cat "$tmp/t1"
[ $rc -eq 0 ] || { cat "$tmp/t1.err" >&2; fail "tfps-status with both ps up: exit $rc, expected 0"; }
[ "$(grep -c " SERVING " "$tmp/t1")" -eq 2 ] && head -1 "$tmp/t1" | grep -q "^PS  ADDRESS  *UP  *VERSION  *APPLIED" ||
  fail "the table lacks its header or two SERVING rows"
awk -v a="$ps0" -v b="$ps1" -v n=$STEPS '
  $2 == a && $1 == 0 && $4 == n && $5 == n && $7 == "0/1/0" { x++ }
  $2 == b && $1 == 1 && $4 == n && $5 == n && $7 == "0/1/0" { x++ } END { exit x != 2 }' "$tmp/t1" ||
  fail "the table does not show version = applied = $STEPS and workers 0/1/0 for both ps"
check_json() {   # file expected-up-list: every Status field there for the ps that answered
  python3 - "$1" "$STEPS" "$ps0" "$ps1" "$2" <<'EOF'
import json, sys
a, steps, addrs, up = json.load(open(sys.argv[1])), int(sys.argv[2]), sys.argv[3:5], sys.argv[5].split(",")
assert isinstance(a, list) and len(a) == 2, a
for i, (o, u) in enumerate(zip(a, up)):
    assert o["index"] == i and o["address"] == addrs[i], o
    if u == "down":
        assert o["health"] == "unreachable" and o["answered"] is False and "UNAVAILABLE" in o["error"], o
        continue
    assert o["health"] == "SERVING" and o["answered"] is True and o["ps_index"] == i, o
    assert o["version"] == steps and o["applied"] == steps, (o["version"], o["applied"])
    assert o["workers_registered"] == 1 and o["workers_done"] == 1 and o["workers_dead"] == 0, o
    assert o["workers_live"] == 0 and o["refused"] == 0 and o["consistency"] == "async", o
    assert o["examples"] == 32 * steps and o["bytes_in"] > 0 and o["bytes_out"] > 0 and o["uptime_s"] > 0, o
    for k in ("unauthenticated", "nonfinite", "optimizer", "dropped", "aggregated", "wait_s", "max_lead", "held",
              "checkpoints", "last_checkpoint_step", "restored_step", "checkpoint_pause_s"):
        assert k in o, k
EOF
}
TF_CONFIG=$(tfc worker 0) "$S" --json >"$tmp/j1" 2>"$tmp/j1.err" && check_json "$tmp/j1" up,up &&
  ok "--json: version = applied = $STEPS on both ps, 1 worker registered and done" || { cat "$tmp/j1.err" >&2; fail "--json with both up"; }
TF_CONFIG="{\"cluster\": $cluster}" "$S" --json >"$tmp/j2" 2>&1 && check_json "$tmp/j2" up,up &&
  ok "a TF_CONFIG without a task" || { cat "$tmp/j2" >&2; fail "TF_CONFIG without a task"; }
env -u TF_CONFIG "$S" --ps "$ps0,$ps1" --json >"$tmp/j3" 2>&1 && check_json "$tmp/j3" up,up &&
  ok "--ps $ps0,$ps1" || { cat "$tmp/j3" >&2; fail "--ps"; }

# the evaluator's report: it evaluates the ps's weights and tells them; tfps-status shows its latest (EVAL column,
# "eval" in --json) at the global step it evaluated (40: nothing trains now)
TF_CONFIG=$(tfc evaluator 0) timeout 60 "$bin/tfps-worker" --data-folder "$data" --output-dir "$tmp/eval" \
  --eval-every 0.2 >"$tmp/e.log" 2>&1 &
epid=$!
pids+=($epid)
for _ in $(seq 1 100); do
  TF_CONFIG=$(tfc worker 0) "$S" --json >"$tmp/j5" 2>/dev/null
  python3 -c 'import json,sys; a=json.load(open(sys.argv[1])); sys.exit(not all(o.get("eval") for o in a))' "$tmp/j5" 2>/dev/null && break
  sleep 0.2
done
kill -TERM $epid 2>/dev/null; wait $epid 2>/dev/null
TF_CONFIG=$(tfc worker 0) "$S" >"$tmp/t5" 2>&1
python3 - "$tmp/j5" "$STEPS" "$tmp/eval/eval.json" <<'EOF2' && grep -q "  EVAL  " "$tmp/t5" && grep -q "@$STEPS " "$tmp/t5" &&
import json, sys
a, steps, ej = json.load(open(sys.argv[1])), int(sys.argv[2]), json.load(open(sys.argv[3]))
for o in a:
    e = o["eval"]
    assert e and e["count"] >= 1 and e["step"] == steps and 0 < e["accuracy"] <= 1 and e["loss"] > 0, o
    assert abs(e["accuracy"] - ej["latest"]["accuracy"]) < 1e-12, (e, ej)   # what the evaluator wrote itself
EOF2
  ok "the evaluator's latest accuracy at step $STEPS in Status (table and --json), as in its eval.json" ||
  { cat "$tmp/j5" "$tmp/t5" "$tmp/e.log" >&2; fail "the evaluator's report in Status"; }

# 2. ps 1 down
kill -TERM "${pids[1]}"; wait "${pids[1]}" 2>/dev/null
s0=$(date +%s.%N)
TF_CONFIG=$(tfc worker 0) "$S" --timeout 2 >"$tmp/t2" 2>"$tmp/t2.err"; rc=$?
took=$(awk -v a="$s0" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }')
cat "$tmp/t2"
[ $rc -eq 1 ] || fail "tfps-status with ps 1 down: exit $rc, expected 1"
awk -v a="$ps0" '$2 == a && $3 == "SERVING" { x = 1 } END { exit !x }' "$tmp/t2" || fail "ps 0 is not SERVING in the table"
awk -v b="$ps1" '$2 == b && $3 == "unreachable:" { x = 1 } END { exit !x }' "$tmp/t2" || fail "ps 1 is not unreachable in the table"
awk -v t="$took" 'BEGIN { exit !(t < 10) }' || fail "tfps-status --timeout 2 took ${took}s"
[ $rc -eq 1 ] && ok "ps 1 down: exit 1 in ${took}s, ps 1 unreachable, ps 0 SERVING"
TF_CONFIG=$(tfc worker 0) "$S" --timeout 2 --json >"$tmp/j4" 2>"$tmp/j4.err"; rc=$?
[ $rc -eq 1 ] && check_json "$tmp/j4" up,down && ok "--json with ps 1 down: exit 1, ps 1 unreachable" ||
  { cat "$tmp/j4" "$tmp/j4.err" >&2; fail "--json with ps 1 down: exit $rc"; }

# 3. mTLS: a ps of its own serving TLS; tfps-status with a worker's certificate sees it, without sees it unreachable
src=$(cd "$(dirname "$0")/.." && pwd)
if command -v openssl >/dev/null; then
  read -r qw qp < <(python3 -c '
import socket
ss = [socket.socket() for _ in range(2)]
for s in ss: s.bind(("127.0.0.1", 0))
print(" ".join(str(s.getsockname()[1]) for s in ss))')
  tls_cluster="{\"worker\": [\"127.0.0.1:$qw\"], \"ps\": [\"127.0.0.1:$qp\"]}"
  c=$tmp/certs
  if bash "$src/deploy/make-certs.sh" --out "$c" "{\"cluster\": $tls_cluster}" >"$tmp/certs.log" 2>&1; then
    TF_CONFIG="{\"cluster\": $tls_cluster, \"task\": {\"type\": \"ps\", \"index\": 0}}" "$bin/tfps-ps" \
      --output-dir "$tmp/tls" --idle-timeout 120 --tls-cert "$c/ps-0.pem" --tls-key "$c/ps-0.key" --tls-ca "$c/ca.pem" \
      >"$tmp/tls.log" 2>&1 &
    pids+=($!)
    tls=(--tls-cert "$c/worker-0.pem" --tls-key "$c/worker-0.key" --tls-ca "$c/ca.pem")
    for _ in $(seq 1 50); do env -u TF_CONFIG "$S" --ps "127.0.0.1:$qp" "${tls[@]}" >/dev/null 2>&1 && break; sleep 0.2; done
    env -u TF_CONFIG "$S" --ps "127.0.0.1:$qp" "${tls[@]}" >"$tmp/t3" 2>&1 && grep -q " SERVING " "$tmp/t3" &&
      ok "mTLS: SERVING with a worker's certificate" || { cat "$tmp/t3" "$tmp/tls.log" >&2; fail "tfps-status over mTLS"; }
    env -u TF_CONFIG "$S" --ps "127.0.0.1:$qp" --timeout 1 >"$tmp/t4" 2>&1; rc=$?
    [ $rc -eq 1 ] && grep -q "unreachable" "$tmp/t4" && ok "mTLS ps without --tls-*: exit 1, unreachable" ||
      { cat "$tmp/t4" >&2; fail "plaintext against an mTLS ps: exit $rc, expected 1 and unreachable"; }
  else
    cat "$tmp/certs.log" >&2; fail "deploy/make-certs.sh"
  fi
else
  echo "SKIP: no openssl: the mTLS part was not run" >&2
fi

# 4. usage mistakes
mistake() {   # label expected-substring command...
  local what=$1 want=$2; shift 2
  "$@" >"$tmp/m.out" 2>"$tmp/m.err"; local rc=$?
  local lines; lines=$(wc -l <"$tmp/m.err")
  if [ $rc -eq 2 ] && [ "$lines" -eq 1 ] && grep -qF -- "$want" "$tmp/m.err"; then ok "$what: exit 2: $(cat "$tmp/m.err")"
  else cat "$tmp/m.err" >&2; fail "$what: exit $rc, $lines lines on stderr, expected 2 and one line with \"$want\""; fi
}
mistake "no TF_CONFIG, no --ps" "no ps to ask" env -u TF_CONFIG "$S"
mistake "a malformed address" "127.0.0.1" env -u TF_CONFIG "$S" --ps "$ps0,127.0.0.1"
mistake "a bad --timeout" "--timeout" env -u TF_CONFIG "$S" --ps "$ps0" --timeout 0
mistake "a bad TF_CONFIG" "TF_CONFIG" env TF_CONFIG='{"cluster": {"ps": ["a:1"],}}' "$S"
mistake "half the TLS flags" "--tls-key" env -u TF_CONFIG "$S" --ps "$ps0" --tls-cert /dev/null

echo "test_status: $(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }') s"
[ $failed -eq 0 ] && echo "test_status: all passed"
exit $failed
