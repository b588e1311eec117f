#!/usr/bin/env bash
# Makes the certificates of a tfps cluster for mTLS (--tls-cert --tls-key --tls-ca):
# a CA and one key + certificate per task of a TF_CONFIG cluster.
#
#   deploy/make-certs.sh [--out DIR] [--days N] [TF_CONFIG-or-file]
#
# TF_CONFIG-or-file: the JSON text, or a file holding it; default: $TF_CONFIG.
# Only its "cluster" is read. Writes into DIR (default certs):
#   ca.pem, ca.key                  the CA (EC P-256, self-signed, --days)
#   <job>-<index>.pem, .key         per task, e.g. ps-0.pem ps-0.key worker-1.pem
#                                   chief-0.pem evaluator-0.pem (an evaluator
#                                   without an address gets one too)
# Each task's certificate is signed by the CA; a ps's carries serverAuth and
# clientAuth, every other task's clientAuth only (a worker's key cannot serve
# as a ps). Each names in its SANs the host of the task's address (IP: for an
# IP literal, DNS: for a name) plus DNS:localhost and IP:127.0.0.1. Keys are
# written mode 0600 and have no passphrase. An existing DIR/ca.pem + ca.key
# is reused (certificates for new tasks join the same CA); task files are
# overwritten. Give each task its own three files:
#   tfps-ps --tls-cert DIR/ps-0.pem --tls-key DIR/ps-0.key --tls-ca DIR/ca.pem
# The CA key signs certificates that every ps accepts: keep it off the
# cluster's hosts. Needs openssl and python3. Bad input exits 2 with one line.
set -euo pipefail

die() { echo "make-certs: $*" >&2; exit 2; }
out=certs
days=365
src=
while [ $# -gt 0 ]; do
  case "$1" in
    --out) [ $# -ge 2 ] && [ -n "$2" ] || die "--out: missing value: expected --out DIR"; out=$2; shift 2;;
    --days)
      [ $# -ge 2 ] && [[ "$2" =~ ^[0-9]+$ ]] && [ "$2" -ge 1 ] && [ "$2" -le 36500 ] ||
        die "--days \"${2:-}\": expected an integer in 1..36500"
      days=$2; shift 2;;
    -h|--help) sed -n '2,23p' "$0" | sed 's/^# \{0,1\}//'; exit 0;;
    -*) die "unknown option \"$1\": expected --out DIR, --days N, then TF_CONFIG or a file holding it";;
    *) [ -z "$src" ] || die "unexpected argument \"$1\": give one TF_CONFIG (or file)"; src=$1; shift;;
  esac
done
command -v openssl >/dev/null || die "openssl not found: install it (apt-get install openssl)"
command -v python3 >/dev/null || die "python3 not found: install it (apt-get install python3)"
if [ -z "$src" ]; then
  [ -n "${TF_CONFIG:-}" ] || die "no TF_CONFIG: give it (or a file holding it) as the argument, or set TF_CONFIG"
  json=$TF_CONFIG
elif [ -f "$src" ]; then
  json=$(cat "$src") || die "$src: cannot be read"
elif [[ "$src" =~ ^[[:space:]]*\{ ]]; then
  json=$src
else
  die "\"$src\": neither a file nor TF_CONFIG JSON (expected {\"cluster\": {...}} or a file holding it)"
fi

# One line per task: "<job>-<index> <SANs>". Jobs and addresses as tfps reads them
# (config/tfconfig.h): lists or sparse objects, host:port or [v6]:port.
tasks=$(python3 - "$json" <<'EOF'
import ipaddress, json, re, sys
def die(msg):
    print("make-certs: " + msg, file=sys.stderr); sys.exit(2)
try:
    tf = json.loads(sys.argv[1])
except ValueError as e:
    die("TF_CONFIG: invalid JSON: %s" % e)
if not isinstance(tf, dict) or not isinstance(tf.get("cluster"), dict) or not tf["cluster"]:
    die("TF_CONFIG: no \"cluster\" object with tasks: expected {\"cluster\": {\"ps\": [\"host:port\"], ...}}")
jobs = ("chief", "master", "worker", "ps", "evaluator")
out = []
for job, tasks in tf["cluster"].items():
    if job not in jobs:
        die("TF_CONFIG: cluster.%s: unknown job; expected one of %s" % (job, ", ".join(jobs)))
    if isinstance(tasks, list):
        items = list(enumerate(tasks))
    elif isinstance(tasks, dict) and all(re.fullmatch(r"[0-9]+", k) for k in tasks):
        items = sorted((int(k), v) for k, v in tasks.items())
    else:
        die("TF_CONFIG: cluster.%s: expected a list of \"host:port\" or {\"0\": \"host:port\"}" % job)
    for i, addr in items:
        m = re.fullmatch(r"\[([0-9A-Fa-f:.]+)\]:([0-9]{1,5})|([A-Za-z0-9._-]+):([0-9]{1,5})", addr) if isinstance(addr, str) else None
        if not m:
            die("TF_CONFIG: cluster.%s[%d] %s: expected host:port or [ipv6]:port" % (job, i, json.dumps(addr)))
        host = m.group(1) or m.group(3)
        sans = ["DNS:localhost", "IP:127.0.0.1"]
        try:
            ipaddress.ip_address(host)
            name = "IP:" + host
        except ValueError:
            if m.group(1):
                die("TF_CONFIG: cluster.%s[%d] %s: not an IPv6 address" % (job, i, addr))
            name = "DNS:" + host
        if name not in sans:
            sans.insert(0, name)
        out.append("%s-%d %s" % (job, i, ",".join(sans)))
if "evaluator" not in tf["cluster"] and isinstance(tf.get("task"), dict) and tf["task"].get("type") == "evaluator":
    out.append("evaluator-0 DNS:localhost,IP:127.0.0.1")
print("\n".join(out))
EOF
) || exit 2

mkdir -p "$out" || die "--out $out: cannot be made"
[ -w "$out" ] || die "--out $out: not writable"
umask 077
tmp=$(mktemp -d "$out/.make-certs.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
run() {   # openssl quietly; its own message if it fails
  "$@" >"$tmp/log" 2>&1 || { echo "make-certs: openssl failed: $*" >&2; cat "$tmp/log" >&2; exit 1; }
}

if [ -f "$out/ca.pem" ] && [ -f "$out/ca.key" ]; then
  echo "make-certs: reusing the CA in $out/ca.pem" >&2
elif [ -e "$out/ca.pem" ] || [ -e "$out/ca.key" ]; then
  die "$out holds ca.pem or ca.key but not both: remove the one left, or use another --out"
else
  run openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$tmp/ca.key"
  run openssl req -x509 -new -key "$tmp/ca.key" -subj "/O=tfps/CN=tfps cluster CA $(openssl rand -hex 4)" -days "$days" -sha256 \
    -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" -out "$tmp/ca.pem"
  mv "$tmp/ca.key" "$out/ca.key"
  chmod 644 "$tmp/ca.pem"
  mv "$tmp/ca.pem" "$out/ca.pem"
fi

n=0
while read -r name sans; do
  [ -n "$name" ] || continue
  run openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$tmp/$name.key"
  run openssl req -new -key "$tmp/$name.key" -subj "/O=tfps/CN=$name" -out "$tmp/$name.csr"
  printf '%s\n' "basicConstraints=critical,CA:FALSE" "keyUsage=critical,digitalSignature,keyEncipherment" \
    "extendedKeyUsage=$(case $name in ps-*) echo serverAuth,clientAuth;; *) echo clientAuth;; esac)" \
    "subjectAltName=$sans" >"$tmp/$name.ext"
  run openssl x509 -req -in "$tmp/$name.csr" -CA "$out/ca.pem" -CAkey "$out/ca.key" -set_serial "0x$(openssl rand -hex 16)" \
    -days "$days" -sha256 -extfile "$tmp/$name.ext" -out "$tmp/$name.pem"
  chmod 644 "$tmp/$name.pem"
  mv -f "$tmp/$name.key" "$out/$name.key"
  mv -f "$tmp/$name.pem" "$out/$name.pem"
  echo "make-certs: $out/$name.pem ($sans)" >&2
  n=$((n + 1))
done <<<"$tasks"
echo "make-certs: $n task certificates signed by $out/ca.pem, valid $days days" >&2
