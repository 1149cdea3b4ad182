#!/usr/bin/env bash
# Runs one polyglot training command on every worker of a Cloud TPU VM pod.
#
#   tools/launch_tpu_pod.sh TPU_NAME ZONE [--setup] -- --gin_file=runs/pretrain_base.gin \
#       --gin_file=mesh/tpu_v4_32.gin --workdir=gs://bucket/polyglot/base
#
# The repository must be checked out at the same path on every worker (the
# path of this checkout); --setup first runs `make install ACCEL=tpu` there on
# all workers (JAX's TPU build, jax[tpu] with libtpu). Each worker runs
# `python -m polyglot.train --multihost ...`: jax.distributed.initialize()
# finds the pod's other workers by itself.
set -euo pipefail
if [ $# -lt 3 ]; then
  echo "usage: $0 TPU_NAME ZONE [--setup] -- TRAIN_FLAGS..." >&2
  exit 2
fi
tpu=$1 zone=$2
shift 2
setup=0
while [ $# -gt 0 ] && [ "$1" != "--" ]; do
  case $1 in
    --setup) setup=1 ;;
    *) echo "error: unknown option $1; put training flags after --" >&2; exit 2 ;;
  esac
  shift
done
[ "${1:-}" = "--" ] && shift
repo=$(cd "$(dirname "$0")/.." && pwd)
ssh_all() {
  gcloud compute tpus tpu-vm ssh "$tpu" --zone "$zone" --worker=all --command "$1"
}
if [ $setup = 1 ]; then
  ssh_all "cd $repo && make install ACCEL=tpu"
fi
ssh_all "cd $repo && .venv/bin/python -m polyglot.train --multihost $(printf '%q ' "$@")"
