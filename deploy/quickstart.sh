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
# In the foreground (Ctrl-C stops the build too): cmake's output to build/build.log, its newest
# percentage to the user.
show_build() {
  local line pct last=
  while IFS= read -r line; do
    [[ $line =~ ^\[\ *([0-9]+)%\] ]] || continue
    pct=${BASH_REMATCH[1]}
    [ "$pct" = "$last" ] && continue
    last=$pct
    if [ $tty = 1 ]; then printf '\rquickstart: building %s%%' "$pct" >&2; else echo "quickstart: building $pct%" >&2; fi
  done
  if [ $tty = 1 ] && [ -n "$last" ]; then printf '\n' >&2; fi
}
if ! { cmake -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo &&
       cmake --build build -j "$(nproc 2>/dev/null || echo 2)"; } 2>&1 | tee build/build.log | show_build; then
  echo "quickstart: the build failed; the end of build/build.log:" >&2
  tail -n 30 build/build.log >&2
  exit 1
fi
echo "quickstart: built ($(ls build/bin | tr '\n' ' '))" >&2
bash deploy/get-data.sh mnist data/mnist
exec bash deploy/local-cluster.sh --data-folder data/mnist "$@"
