#!/usr/bin/env bash
# entrypoint.sh -- the container entrypoint (installed as /usr/local/bin/tfps-entrypoint; tini runs it,
# it execs the daemon, so signals reach the daemon and its exit status is the container's).
#
#   TF_CONFIG task.type ps                               -> exec tfps-ps "$@"
#   TF_CONFIG task.type chief, master, worker, evaluator -> exec tfps-worker "$@"
#   no TF_CONFIG                                         -> exec tfps-worker "$@" (local mode)
#
# The type comes from the daemons' own TF_CONFIG parser (tfps-worker --print-task-type), so a TF_CONFIG
# the daemons would refuse is refused here with their one-line message (exit 2), an unknown type too.
# Every argument is passed through unchanged.
#
# Defaults, each applied only when the variable is unset (flags still win over all of them):
#   TFPS_OUTPUT_DIR  = $SM_MODEL_DIR (SageMaker), else $TFPS_DEFAULT_OUTPUT_DIR (image: /outputs)
#   TFPS_DATA_FOLDER = $SM_CHANNEL_TRAINING (SageMaker), else $TFPS_DEFAULT_DATA_FOLDER (image: /data)
# SageMaker's --model_dir argument is handled by the daemons themselves (see --help).
#
# Data: before a training run of tfps-worker (not for --help, --version, --print-cluster,
# --print-task-type), the data folder (the last --data-folder flag, else TFPS_DATA_FOLDER) must hold the
# four MNIST IDX files (.gz or raw). When it does not: with TFPS_FETCH_DATA=1 the entrypoint runs
# get-data.sh ${TFPS_DATASET:-mnist} FOLDER; otherwise it exits 2 with one line saying what to do.
#
# Environment of its own: TFPS_BIN (folder of tfps-ps and tfps-worker; default: this script's folder
# when they are there, else PATH), TFPS_GET_DATA (the get-data script; default: tfps-get-data or
# get-data.sh next to this script), TFPS_FETCH_DATA, TFPS_DATASET (mnist or fashion-mnist).
# Exit status: the daemon's; 2 for a usage mistake found here; 1 when fetching the data failed.
set -euo pipefail

me=tfps-entrypoint
usage_error() { echo "$me: $*" >&2; exit 2; }

here=$(cd "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")" && pwd)
bin=${TFPS_BIN:-}
if [[ -z $bin ]]; then
    if [[ -x $here/tfps-worker ]]; then bin=$here
    else bin=$(dirname "$(command -v tfps-worker || echo /nonexistent/tfps-worker)")
    fi
fi
for d in tfps-ps tfps-worker; do
    [[ -x $bin/$d ]] || usage_error "$bin/$d: not found or not executable (set TFPS_BIN to the folder of the daemons)"
done

# SageMaker starts a training image as `IMAGE train`: that word is SageMaker's, not an option
if [[ ${1:-} == train ]]; then
    echo "$me: \"train\" (SageMaker's first argument) dropped" >&2
    shift
fi

# SageMaker's conventions first (its variables, else its /opt/ml folders when they exist), then the
# image's folders; never over what the user set (an empty value counts as unset)
if [[ -z ${TFPS_OUTPUT_DIR:-} ]]; then
    if [[ -n ${SM_MODEL_DIR:-} ]]; then export TFPS_OUTPUT_DIR=$SM_MODEL_DIR
    elif [[ -d ${TFPS_SAGEMAKER_ROOT:-/opt/ml}/model ]]; then export TFPS_OUTPUT_DIR=${TFPS_SAGEMAKER_ROOT:-/opt/ml}/model
    elif [[ -n ${TFPS_DEFAULT_OUTPUT_DIR:-} ]]; then export TFPS_OUTPUT_DIR=$TFPS_DEFAULT_OUTPUT_DIR
    else unset TFPS_OUTPUT_DIR
    fi
fi
if [[ -z ${TFPS_DATA_FOLDER:-} ]]; then
    if [[ -n ${SM_CHANNEL_TRAINING:-} ]]; then export TFPS_DATA_FOLDER=$SM_CHANNEL_TRAINING
    elif [[ -d ${TFPS_SAGEMAKER_ROOT:-/opt/ml}/input/data/training ]]; then
        export TFPS_DATA_FOLDER=${TFPS_SAGEMAKER_ROOT:-/opt/ml}/input/data/training
    elif [[ -n ${TFPS_DEFAULT_DATA_FOLDER:-} ]]; then export TFPS_DATA_FOLDER=$TFPS_DEFAULT_DATA_FOLDER
    else unset TFPS_DATA_FOLDER
    fi
fi

# task.type by the daemons' parser; its one-line message and exit status 2 pass through on a bad TF_CONFIG
rc=0
type=$("$bin/tfps-worker" --print-task-type) || rc=$?
[[ $rc -eq 0 ]] || exit "$rc"
case $type in
    ps) daemon=tfps-ps ;;
    chief | master | worker | evaluator | local) daemon=tfps-worker ;;
    *) usage_error "TF_CONFIG task.type \"$type\": expected chief, master, worker, ps or evaluator" ;;
esac

# does this run read the data? Only a tfps-worker run that trains, evaluates or exports does
needs_data=0
data=${TFPS_DATA_FOLDER:-data/mnist}
if [[ $daemon == tfps-worker ]]; then
    needs_data=1
    args=("$@")
    for ((i = 0; i < ${#args[@]}; i++)); do
        case ${args[i]} in
            --help | -h | --version | --print-cluster | --print-task-type) needs_data=0 ;;
            --data-folder) [[ $((i + 1)) -lt ${#args[@]} ]] && data=${args[i + 1]} ;;
            --data-folder=*) data=${args[i]#--data-folder=} ;;
        esac
    done
fi

has_data() {
    local f
    for f in train-images-idx3-ubyte train-labels-idx1-ubyte t10k-images-idx3-ubyte t10k-labels-idx1-ubyte; do
        [[ -f $1/$f.gz || -f $1/$f ]] || return 1
    done
}

if [[ $needs_data -eq 1 ]] && ! has_data "$data"; then
    if [[ ${TFPS_FETCH_DATA:-0} != 1 ]]; then
        usage_error "data folder $data lacks the four MNIST IDX files: mount them there (or set" \
            "TFPS_DATA_FOLDER/--data-folder), or set TFPS_FETCH_DATA=1 to download them with get-data.sh"
    fi
    getdata=${TFPS_GET_DATA:-}
    if [[ -z $getdata ]]; then
        if [[ -x $here/tfps-get-data ]]; then getdata=$here/tfps-get-data; else getdata=$here/get-data.sh; fi
    fi
    [[ -f $getdata ]] || usage_error "TFPS_FETCH_DATA=1 but $getdata is missing (set TFPS_GET_DATA)"
    echo "$me: $data lacks the MNIST files: fetching ${TFPS_DATASET:-mnist} with $getdata" >&2
    bash "$getdata" "${TFPS_DATASET:-mnist}" "$data" || { echo "$me: fetching the data into $data failed" >&2; exit 1; }
fi

exec "$bin/$daemon" "$@"
