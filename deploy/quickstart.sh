#!/usr/bin/env bash
# README's first command, the main job: installs what is missing (Debian 12 /
# Ubuntu), builds, fetches MNIST into data/mnist, and trains on a local
# cluster of 2 ps + 2 workers (deploy/local-cluster.sh; its options pass
# through, e.g. --ps 1 --workers 4 --epochs 20 --output-dir out).
set -euo pipefail
cd "$(dirname "$0")/.."
bash deploy/install-deps.sh
# The build says it is building: cmake's [ NN%] lines (one updating line on a
# terminal); its full output in build/build.log, shown when it fails.
echo "quickstart: building tfps into build/ (full output in build/build.log)" >&2
mkdir -p build
tty=0; [ -t 2 ] && [ "${TERM:-dumb}" != dumb ] && tty=1
( cmake -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo &&
  cmake --build build -j "$(nproc 2>/dev/null || echo 2)" ) >build/build.log 2>&1 &
pid=$!
last=
while kill -0 "$pid" 2>/dev/null; do   # the newest percentage, twice a second
  pct=$(grep -o '^\[ *[0-9]*%\]' build/build.log 2>/dev/null | tail -n 1 | tr -d '[] ' || true)
  if [ -n "$pct" ] && [ "$pct" != "$last" ]; then
    if [ $tty = 1 ]; then printf '\rquickstart: building %s' "$pct" >&2; else echo "quickstart: building $pct" >&2; fi
    last=$pct
  fi
  sleep 0.5
done
[ $tty = 1 ] && [ -n "$last" ] && printf '\n' >&2
if ! wait "$pid"; then
  echo "quickstart: the build failed; the end of build/build.log:" >&2
  tail -n 30 build/build.log >&2
  exit 1
fi
echo "quickstart: built ($(ls build/bin | tr '\n' ' '))" >&2
bash deploy/get-data.sh mnist data/mnist
exec bash deploy/local-cluster.sh --data-folder data/mnist "$@"
