#!/usr/bin/env bash
# test_image.sh DATA_DIR -- builds deploy/Dockerfile and runs the image's entrypoint in it.
#
# No registry is reachable here, so the base the Dockerfile names (docker.io/library/debian:bookworm-slim)
# is made first, when the local storage lacks it: `debootstrap --variant=minbase bookworm` into a
# temporary folder, apt's caches removed, then `tar -C ROOTFS -c . | podman import - TAG`. Then
# `buildah bud --isolation chroot -f deploy/Dockerfile`, and in a working container of the image
# (`buildah run`, chroot isolation; `podman run` does not work in this sandbox):
# - uid 1000 (tfps); a ps TF_CONFIG runs tfps-ps (--version), a worker one --print-cluster;
# - an unknown task.type exits 2; a training run without data and without TFPS_FETCH_DATA exits 2;
# - a short local run (--steps 50) with DATA_DIR mounted read-only at /data writes /outputs/summary.json.
# Prints the build time and the image size. Skipped (77) without root, buildah, podman or debootstrap,
# or with TFPS_IMAGE_TEST=0. TFPS_IMAGE_KEEP=1 keeps the image (localhost/tfps:test); TFPS_IMAGE_BASE=new
# makes the base again even when it exists.
set -uo pipefail
data=${TFPS_TEST_DATA:-${1:?usage: test_image.sh DATA_DIR}}
src=$(cd "$(dirname "$0")/.." && pwd)
base=docker.io/library/debian:bookworm-slim
image=localhost/tfps:test
skip() { echo "test_image: SKIP: $*" >&2; exit 77; }
[[ ${TFPS_IMAGE_TEST:-1} != 0 ]] || skip "TFPS_IMAGE_TEST=0"
[[ $(id -u) -eq 0 ]] || skip "needs root (buildah, debootstrap)"
for t in buildah podman debootstrap; do
  command -v "$t" >/dev/null || skip "$t is not installed (apt-get install buildah podman debootstrap)"
done
grep -q "^FROM $base" "$src/deploy/Dockerfile" || { echo "FAIL: deploy/Dockerfile does not name $base" >&2; exit 1; }
[[ -r $data/train-images-idx3-ubyte.gz ]] ||
  { echo "test_image: no MNIST data in $data: run deploy/get-data.sh mnist $data first" >&2; exit 1; }

tmp=$(mktemp -d /tmp/tfps-image-XXXXXX)
ctr=
cleanup() {
  [[ -n $ctr ]] && buildah rm "$ctr" >/dev/null 2>&1
  [[ ${TFPS_IMAGE_KEEP:-0} == 1 ]] || buildah rmi "$image" >/dev/null 2>&1
  rm -rf "$tmp"
}
trap cleanup EXIT
failed=0
fail() { echo "FAIL: $*" >&2; failed=1; }
now() { date +%s.%N; }
secs() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.0f", b - a }'; }

# 1. the base
if [[ ${TFPS_IMAGE_BASE:-} == new ]] || ! podman image exists "$base"; then
  t0=$(now)
  debootstrap --variant=minbase bookworm "$tmp/rootfs" >"$tmp/debootstrap.log" 2>&1 ||
    { tail -5 "$tmp/debootstrap.log" >&2; echo "FAIL: debootstrap" >&2; exit 1; }
  rm -rf "$tmp/rootfs/var/cache/apt/archives/"*.deb "$tmp/rootfs/var/lib/apt/lists/"* "$tmp/rootfs/var/cache/apt/"*.bin
  tar -C "$tmp/rootfs" -c . | podman import - "$base" >"$tmp/import.log" 2>&1 || { echo "FAIL: podman import" >&2; exit 1; }
  rm -rf "$tmp/rootfs"
  echo "test_image: base $base made by debootstrap + podman import in $(secs "$t0" "$(now)") s" >&2
else
  echo "test_image: base $base already in the local storage" >&2
fi

# 2. the image
t0=$(now)
if ! buildah bud --isolation chroot -f "$src/deploy/Dockerfile" -t "$image" "$src" >"$tmp/bud.log" 2>&1; then
  tail -20 "$tmp/bud.log" >&2
  echo "FAIL: buildah bud -f deploy/Dockerfile" >&2
  exit 1
fi
build_s=$(secs "$t0" "$(now)")
size=$(podman image inspect --format '{{.Size}}' "$image")
base_size=$(podman image inspect --format '{{.Size}}' "$base")
echo "test_image: built $image in $build_s s; size $((size / 1000000)) MB (base $((base_size / 1000000)) MB)" >&2

# 3. the entrypoint in it
ctr=$(buildah from "$image") || { echo "FAIL: buildah from $image" >&2; exit 1; }
brun() { # [buildah run options...] -- args...: the image's ENTRYPOINT with args; sets rc, out, err
  local opts=()
  while [[ $1 != -- ]]; do opts+=("$1"); shift; done
  shift
  rc=0
  timeout 300 buildah run --isolation chroot "${opts[@]}" "$ctr" -- /usr/bin/tini -s -- /usr/local/bin/tfps-entrypoint \
    "$@" >"$tmp/out" 2>"$tmp/err" || rc=$?
  out=$(cat "$tmp/out"); err=$(cat "$tmp/err")
}
tf() { echo "{\"cluster\": {\"chief\": [\"h0:2222\"], \"worker\": [\"h1:2222\"], \"ps\": [\"h2:2222\"]}, \"task\": {\"type\": \"$1\", \"index\": 0}}"; }
ver=$(sed -n 's/^project(tfps VERSION \([0-9.]*\).*/\1/p' "$src/CMakeLists.txt")

uid=$(buildah run --isolation chroot "$ctr" -- id -u 2>/dev/null)
[[ $uid == 1000 ]] || fail "runs as uid \"$uid\", expected 1000"
buildah inspect --format '{{.OCIv1.Config}}' "$ctr" >"$tmp/config" 2>/dev/null
grep -q 'tfps-entrypoint' "$tmp/config" || fail "image config lacks the entrypoint: $(cat "$tmp/config")"
grep -q '2222/tcp' "$tmp/config" || fail "image config lacks EXPOSE 2222"
grep -q '/outputs' "$tmp/config" && grep -q '/data' "$tmp/config" || fail "image config lacks the volumes"

brun -e "TF_CONFIG=$(tf ps)" -- --version
[[ $rc -eq 0 && $out == "tfps-ps $ver" ]] || fail "ps --version: exit $rc, \"$out\"; $err"
brun -e "TF_CONFIG=$(tf worker)" -- --print-cluster --batch-size 16
[[ $rc -eq 0 && $out == *'"type":'*'"worker"'* && $out == *'"batch-size":'*16* && $out == *'"/outputs"'* ]] ||
  fail "worker --print-cluster: exit $rc; $out; $err"
brun -e "TF_CONFIG=$(tf trainer)" -- --version
[[ $rc -eq 2 && $err == *'"trainer"'* ]] || fail "unknown type: exit $rc, $err"
brun -- --epochs 1
[[ $rc -eq 2 && $err == *"/data lacks"*TFPS_FETCH_DATA=1* ]] || fail "no data: exit $rc, $err"
mkdir -p "$tmp/data" && cp "$data"/*-ubyte.gz "$tmp/data/" && chmod -R a+rX "$tmp"
t0=$(now)
brun -v "$tmp/data:/data:ro" -- --epochs 1 --steps 50 --batch-size 32 --log-every 0
echo "test_image: local run of 50 steps in the image: exit $rc in $(secs "$t0" "$(now)") s; ${err##*$'\n'}" >&2
[[ $rc -eq 0 ]] || fail "local run: exit $rc; $err"
steps=$(buildah run --isolation chroot "$ctr" -- sed -n 's/.*"steps":[[:space:]]*\([0-9]*\).*/\1/p' \
        /outputs/summary.json 2>/dev/null | head -n 1)
[[ $steps == 50 ]] || fail "local run: /outputs/summary.json steps \"$steps\", expected 50"

[[ $failed -eq 0 ]] && echo "test_image: all checks passed (build $build_s s, image $((size / 1000000)) MB)"
exit "$failed"
