#!/usr/bin/env bash
# Multi-node GPU training under SLURM: one process per node, all its GPUs.
#
#   sbatch --nodes=4 tools/launch_slurm.sh [--dry_run] --gin_file=runs/pretrain_base.gin \
#       --gin.TEXT_DIR="'/data/cc100'" --gin.VOCAB="'/data/spm.model'" \
#       --gin.MeshConfig.data=4 --gin.MeshConfig.fsdp=8 --workdir=/shared/polyglot/base
#
# Run `make install ACCEL=gpu` (JAX's CUDA build, jax[cuda12]) once in this
# checkout on a shared filesystem, from a node with network access. srun starts
# `python -m polyglot.train --multihost` on every node; jax.distributed
# reads the coordinator, process count and id from SLURM's environment.
# --dry_run (first) prints the command line each node would run instead of
# running it, and only reports a missing CUDA build; it runs anywhere.
#SBATCH --job-name=polyglot
#SBATCH --ntasks-per-node=1
#SBATCH --gpus-per-node=8
#SBATCH --cpus-per-task=32
#SBATCH --output=polyglot-%j.log
set -euo pipefail
dry_run=0
case ${1:-} in
  --dry_run|--dry-run) dry_run=1; shift ;;
esac
repo=${SLURM_SUBMIT_DIR:-$(cd "$(dirname "$0")/.." && pwd)}
cd "$repo"
if ! .venv/bin/python -c "import importlib.metadata as m; m.version('jax-cuda12-plugin')" \
    2>/dev/null; then
  problem="$repo/.venv has no CUDA build of JAX (jax-cuda12-plugin), so it would train on the CPU"
  if [ $dry_run = 0 ]; then
    echo "error: $problem: run \`make install ACCEL=gpu\` in $repo, then submit again" >&2
    exit 2
  fi
  echo "note: $problem; a real run stops here (exit 2)" >&2
fi
if [ $dry_run = 1 ]; then
  echo "# every node of the job would run (srun --kill-on-bad-exit=1, one task per node):"
  flags=""
  if [ $# -gt 0 ]; then flags=$(printf ' %q' "$@"); fi
  echo "cd $(printf '%q' "$repo") && .venv/bin/python -m polyglot.train --multihost$flags"
  exit 0
fi
srun --kill-on-bad-exit=1 .venv/bin/python -m polyglot.train --multihost "$@"
