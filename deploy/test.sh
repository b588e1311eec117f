#!/usr/bin/env bash
# The test command of README.md (and of CI): installs what is missing, builds,
# fetches the test data, and runs every test twice -- a normal build, then an
# AddressSanitizer + UndefinedBehaviorSanitizer build.
#
#   bash deploy/test.sh            # everything
#   TFPS_NO_SANITIZE=1 bash deploy/test.sh   # skip the sanitizer pass
set -euo pipefail
cd "$(dirname "$0")/.."

bash deploy/install-deps.sh
bash deploy/get-data.sh mnist data/mnist

jobs=$(nproc 2>/dev/null || echo 2)
cmake -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo
cmake --build build -j "$jobs"
ctest --test-dir build --output-on-failure -j "$jobs"

if [ -z "${TFPS_NO_SANITIZE:-}" ]; then
  cmake -S . -B build-asan -DCMAKE_BUILD_TYPE=Debug -DTFPS_SANITIZE=ON
  cmake --build build-asan -j "$jobs"
  # tests/lsan.supp: leaks inside libcrypto that gRPC's TLS leaves at exit (not ours to free)
  ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
    LSAN_OPTIONS="suppressions=$PWD/tests/lsan.supp:print_suppressions=0" \
    ctest --test-dir build-asan --output-on-failure -j "$jobs"
fi
echo "test.sh: all tests passed"
