#!/usr/bin/env bash
# Installs what tfps needs to build and test, from Debian/Ubuntu packages.
# Safe to run again: apt-get skips what is already installed.
set -euo pipefail

pkgs=(build-essential cmake pkg-config curl ca-certificates
      libgrpc-dev libprotobuf-c-dev protobuf-c-compiler libcjson-dev
      libopenblas-dev libcunit1-dev zlib1g-dev
      libonnx-dev    # onnx.proto: protoc-c generates model.onnx's writer from it (proto/CMakeLists.txt)
      libpng-dev  # tfps-predict reads PNG images (worker/predict.c, libpng's simplified API)
      libssl-dev openssl python3   # --tls-* checks (common/tlscheck.c); deploy/make-certs.sh
      clang       # tests/fuzz: libFuzzer (clang -fsanitize=fuzzer)
      iproute2    # tests/test_netns.sh: ip netns, veth, bridge
      python3-yaml   # tests/test_manifests.sh: parses deploy/k8s/*.yaml, deploy/compose.yaml
      python3-crc32c       # tests/test_tfevents.py: checks the CRCs of TensorBoard event files
      python3-matplotlib   # deploy/plot-metrics (tfps-plot-metrics) and tests/test_plot.sh
      python3-onnx   # tests/test_onnx.py: checks model.onnx (onnx.checker) and evaluates it with numpy
      dpkg-dev    # tests/test_install.sh: cpack -G DEB runs dpkg-shlibdeps for Depends
      systemd)    # tests/test_install.sh: systemd-analyze verify on deploy/systemd/*.service

missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
  echo "install-deps: all ${#pkgs[@]} packages present" >&2
  exit 0
fi

sudo=""
if [ "$(id -u)" -ne 0 ]; then
  command -v sudo >/dev/null || { echo "install-deps: need root (or sudo) to install: ${missing[*]}" >&2; exit 2; }
  sudo="sudo"
fi
echo "install-deps: installing ${missing[*]}" >&2
$sudo apt-get update -qq
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
echo "install-deps: done" >&2
