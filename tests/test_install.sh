#!/usr/bin/env bash
# test_install.sh SRC_DIR BUILD_DIR DATA_DIR VERSION HAVE_CUDA -- the install target and the .deb.
#
# 1. `cmake --install BUILD_DIR --prefix TMP` installs exactly the expected files
#    (no tests, no benchmarks), the units rewritten to TMP's paths;
# 2. the installed tfps-ps / tfps-worker / tfps-predict / tfps-status print VERSION for --version;
#    tfps-make-certs and tfps-plot-metrics --help;
#    tfps-get-data with no argument exits 2;
# 3. the installed tfps-local-cluster (no TFPS_BIN, no build/bin next to it) finds its
#    sibling daemons: 1 ps + 1 worker, --steps 20, summary.json says cluster mode with 1 ps;
# 4. `systemd-analyze verify` on both installed units (ExecStart= is the TMP copy):
#    skipped with a message where systemd-analyze is absent;
# 5. `cpack -G DEB`: tfps_VERSION_<arch>.deb, its Depends name libgrpc and libopenblas
#    packages, its files are the expected ones under /usr and /etc/tfps; with HAVE_CUDA=OFF
#    no "cuda" in Depends nor in any installed ELF's NEEDED. Skipped with a message where
#    dpkg-deb or dpkg-shlibdeps is absent (deploy/install-deps.sh installs dpkg-dev).
set -uo pipefail
src=${1:?usage: test_install.sh SRC_DIR BUILD_DIR DATA_DIR VERSION HAVE_CUDA}
build=${2:?}; data=${TFPS_TEST_DATA:-${3:?}}; version=${4:?}; have_cuda=${5:?}
tmp=$(mktemp -d /tmp/tfps-install-XXXXXX)
trap 'rm -rf "$tmp"' EXIT
failed=0
fail() { echo "FAIL: $*" >&2; failed=1; }
ok() { echo "ok: $*"; }

# 1. the install tree
p=$tmp/prefix
cmake --install "$build" --prefix "$p" >"$tmp/install.log" 2>&1 || { cat "$tmp/install.log" >&2; fail "cmake --install"; }
(cd "$p" && find . -type f -o -type l | sed 's#^\./##' | sort) >"$tmp/got"
libexec=$(sed -n 's/^CMAKE_INSTALL_LIBEXECDIR:[A-Z]*=//p' "$build/CMakeCache.txt")
cat <<EOF2 | sort >"$tmp/want"
bin/tfps-get-data
bin/tfps-local-cluster
bin/tfps-make-certs
bin/tfps-plot-metrics
bin/tfps-predict
bin/tfps-ps
bin/tfps-status
bin/tfps-worker
etc/tfps/ps.env.example
etc/tfps/worker.env.example
${libexec:-libexec}/tfps/tfps-mnist-json2idx
lib/systemd/system/tfps-ps.service
lib/systemd/system/tfps-worker.service
share/doc/tfps/README.md
EOF2
if diff -u "$tmp/want" "$tmp/got" >"$tmp/diff"; then ok "install tree: $(wc -l <"$tmp/got") files as expected"
else cat "$tmp/diff" >&2; fail "install tree differs (- expected, + installed)"; fi
for f in tfps-ps tfps-worker tfps-predict tfps-status tfps-local-cluster tfps-get-data tfps-make-certs tfps-plot-metrics; do
  [ -x "$p/bin/$f" ] || fail "bin/$f is not executable"
done
for u in ps worker; do
  unit=$p/lib/systemd/system/tfps-$u.service
  grep -qx "ExecStart=$p/bin/tfps-$u" "$unit" || fail "$unit: ExecStart is not $p/bin/tfps-$u"
  grep -qx "EnvironmentFile=$p/etc/tfps/$u.env" "$unit" || fail "$unit: EnvironmentFile is not $p/etc/tfps/$u.env"
  grep -qx "RestartPreventExitStatus=2" "$unit" || fail "$unit: no RestartPreventExitStatus=2"
done

# 2. the installed programs run
for d in tfps-ps tfps-worker tfps-predict tfps-status; do
  v=$("$p/bin/$d" --version 2>&1); rc=$?
  [ $rc -eq 0 ] && [[ $v == *"$version"* ]] && ok "$d --version: $v" || fail "$d --version: exit $rc, \"$v\" lacks $version"
done
"$p/bin/tfps-make-certs" --help >"$tmp/mc" 2>&1 && grep -q "make-certs" "$tmp/mc" || fail "tfps-make-certs --help"
"$p/bin/tfps-plot-metrics" --help >"$tmp/pm" 2>&1 && grep -q "OUTPUT_DIR" "$tmp/pm" || fail "tfps-plot-metrics --help"
"$p/bin/tfps-get-data" >/dev/null 2>&1; rc=$?
[ $rc -eq 2 ] || fail "tfps-get-data without arguments: exit $rc, expected 2"

# 3. the installed launcher finds the installed daemons (not build/bin: there is none under $p)
if [ -r "$data/train-images-idx3-ubyte.gz" ]; then
  o=$tmp/run
  (cd "$tmp" && env -u TFPS_BIN timeout 120 "$p/bin/tfps-local-cluster" --ps 1 --workers 1 --data-folder "$data" \
     --output-dir "$o" --steps 20 --batch-size 32 --log-every 0 >"$tmp/run.out" 2>"$tmp/run.err"); rc=$?
  if [ $rc -eq 0 ] && python3 -c '
import json, sys
s = json.load(open(sys.argv[1]))
assert s["mode"] == "cluster" and s["num_ps"] == 1 and s["num_workers"] == 1, s
assert s["steps"] == 20, s["steps"]' "$o/summary.json"; then
    ok "installed tfps-local-cluster: 1 ps + 1 worker, 20 steps, $(tail -1 "$tmp/run.out")"
  else
    tail -5 "$tmp/run.err" >&2; fail "installed tfps-local-cluster: exit $rc or a wrong summary.json"
  fi
else
  fail "no MNIST data in $data: run deploy/get-data.sh mnist $data first"
fi

# 4. systemd-analyze verify
if command -v systemd-analyze >/dev/null; then
  for u in ps worker; do
    if SYSTEMD_LOG_LEVEL=warning systemd-analyze verify --man=no "$p/lib/systemd/system/tfps-$u.service" >"$tmp/v" 2>&1 &&
       ! grep -q . "$tmp/v"; then
      ok "systemd-analyze verify tfps-$u.service: clean"
    else cat "$tmp/v" >&2; fail "systemd-analyze verify tfps-$u.service"; fi
  done
else
  echo "SKIP: systemd-analyze absent: the units were not verified" >&2
fi

# 5. the .deb
if command -v dpkg-deb >/dev/null && command -v dpkg-shlibdeps >/dev/null && command -v cpack >/dev/null; then
  t0=$(date +%s.%N)
  (cd "$tmp" && cpack -G DEB -B "$tmp/pkg" --config "$build/CPackConfig.cmake" >"$tmp/cpack.log" 2>&1) ||
    { tail -20 "$tmp/cpack.log" >&2; fail "cpack -G DEB"; }
  secs=$(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }')
  deb=$(ls "$tmp/pkg"/tfps_"$version"_*.deb 2>/dev/null | head -1)
  if [ -z "$deb" ]; then fail "no tfps_${version}_<arch>.deb in $tmp/pkg: $(ls "$tmp/pkg" | tr "\n" " ")"
  else
    ok "cpack -G DEB: $(basename "$deb"), $(stat -c %s "$deb") bytes, ${secs}s"
    dep=$(dpkg-deb -f "$deb" Depends)
    echo "Depends: $dep"
    [[ $dep == *libgrpc* ]] || fail "Depends lacks a libgrpc package"
    [[ $dep == *libopenblas* ]] || fail "Depends lacks a libopenblas package"
    [[ $dep == *libprotobuf-c* ]] || fail "Depends lacks libprotobuf-c"
    [[ $dep == *libpng* ]] || fail "Depends lacks libpng (tfps-predict)"
    dpkg-deb -c "$deb" | awk '{print $NF}' | sed 's#^\./#/#' | grep -v '/$' | sort >"$tmp/debfiles"
    for f in /usr/bin/tfps-ps /usr/bin/tfps-worker /usr/bin/tfps-predict /usr/bin/tfps-status \
             /usr/bin/tfps-local-cluster /usr/bin/tfps-get-data /usr/bin/tfps-make-certs /usr/bin/tfps-plot-metrics \
             /usr/lib/systemd/system/tfps-ps.service /usr/lib/systemd/system/tfps-worker.service \
             /etc/tfps/ps.env.example /etc/tfps/worker.env.example /usr/share/doc/tfps/README.md; do
      grep -qx "$f" "$tmp/debfiles" || fail "the .deb lacks $f"
    done
    n=$(wc -l <"$tmp/debfiles"); [ "$n" -eq 14 ] || { cat "$tmp/debfiles" >&2; fail "the .deb holds $n files, expected 14"; }
    dpkg-deb --ctrl-tarfile "$deb" | tar -xO ./conffiles 2>/dev/null | grep -qx /etc/tfps/ps.env.example ||
      fail "/etc/tfps/ps.env.example is not a conffile"
    mkdir -p "$tmp/x" && dpkg-deb -x "$deb" "$tmp/x"
    grep -qx "ExecStart=/usr/bin/tfps-ps" "$tmp/x/usr/lib/systemd/system/tfps-ps.service" ||
      fail "the .deb's tfps-ps.service: ExecStart is not /usr/bin/tfps-ps"
    grep -qx "EnvironmentFile=/etc/tfps/worker.env" "$tmp/x/usr/lib/systemd/system/tfps-worker.service" ||
      fail "the .deb's tfps-worker.service: EnvironmentFile is not /etc/tfps/worker.env"
    needed=$(for f in "$tmp/x/usr/bin/"* "$tmp/x/usr/lib"*/tfps/*; do readelf -d "$f" 2>/dev/null; done |
             sed -n 's/.*(NEEDED).*\[\(.*\)\]/\1/p' | sort -u | tr '\n' ' ')
    if [ "$have_cuda" = OFF ]; then
      [[ ${dep,,} == *cuda* || ${dep,,} == *cublas* ]] && fail "a CPU-only build's Depends names CUDA: $dep"
      [[ $needed == *libcuda* || $needed == *libcublas* ]] && fail "a CPU-only build NEEDs CUDA: $needed"
      ok "CPU-only build: no CUDA in Depends nor NEEDED ($needed)"
    else
      echo "note: CUDA build (TFPS_HAVE_CUDA=ON): NEEDED $needed; the no-CUDA check needs -DTFPS_CUDA=OFF"
    fi
  fi
else
  echo "SKIP: dpkg-deb/dpkg-shlibdeps/cpack absent: no .deb built (apt-get install dpkg-dev)" >&2
fi

[ $failed -eq 0 ] && echo "test_install: all passed"
exit $failed
