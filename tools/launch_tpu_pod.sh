#!/usr/bin/env bash
# Runs one polyglot training command on every worker of a Cloud TPU VM pod.
#
#   tools/launch_tpu_pod.sh TPU_NAME ZONE [--setup] [--dry_run] -- --gin_file=runs/pretrain_base.gin \
#       --gin_file=mesh/tpu_v4_32.gin --gin.TEXT_DIR="'/data/cc100'" \
#       --gin.VOCAB="'/data/spm.model'" --workdir=gs://bucket/polyglot/base
#
# The repository must be checked out at the same path on every worker (the
# path of this checkout); --setup first runs `make install ACCEL=tpu` there on
# all workers (JAX's TPU build, jax[tpu] with libtpu). Each worker runs
# `python -m polyglot.train --multihost ...`: jax.distributed.initialize()
# finds the pod's other workers by itself. --dry_run prints the command lines
# each worker would run (a shell script) instead of running them; it needs no
# gcloud.
set -euo pipefail
if [ $# -lt 3 ]; then
  echo "usage: $0 TPU_NAME ZONE [--setup] [--dry_run] -- TRAIN_FLAGS..." >&2
  exit 2
fi
tpu=$1 zone=$2
shift 2
setup=0 dry_run=0
while [ $# -gt 0 ] && [ "$1" != "--" ]; do
  case $1 in
    --setup) setup=1 ;;
    --dry_run|--dry-run) dry_run=1 ;;
    *) echo "error: unknown option $1; put training flags after --" >&2; exit 2 ;;
  esac
  shift
done
[ "${1:-}" = "--" ] && shift
repo=$(cd "$(dirname "$0")/.." && pwd)
repo=$(printf '%q' "$repo")  # the workers' shell reads it
if [ $dry_run = 1 ]; then
  echo "# every worker of TPU $tpu (zone $zone) would run, through" \
    "gcloud compute tpus tpu-vm ssh $tpu --zone $zone --worker=all --command:"
fi
ssh_all() {
  if [ $dry_run = 1 ]; then
    echo "$1"
  else
    gcloud compute tpus tpu-vm ssh "$tpu" --zone "$zone" --worker=all --command "$1"
  fi
}
if [ $setup = 1 ]; then
  ssh_all "cd $repo && make install ACCEL=tpu"
fi
flags=""
if [ $# -gt 0 ]; then flags=$(printf ' %q' "$@"); fi
ssh_all "cd $repo && .venv/bin/python -m polyglot.train --multihost$flags"
