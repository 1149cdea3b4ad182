#!/usr/bin/env bash
# Multi-node GPU training under SLURM: one process per node, all its GPUs.
#
#   sbatch --nodes=4 tools/launch_slurm.sh --gin_file=runs/pretrain_base.gin \
#       --gin.MeshConfig.data=4 --gin.MeshConfig.fsdp=8 --workdir=/shared/polyglot/base
#
# Run `make install ACCEL=gpu` (JAX's CUDA build, jax[cuda12]) once in this
# checkout on a shared filesystem, from a node with network access. srun starts
# `python -m polyglot.train --multihost` on every node; jax.distributed
# reads the coordinator, process count and id from SLURM's environment.
#SBATCH --job-name=polyglot
#SBATCH --ntasks-per-node=1
#SBATCH --gpus-per-node=8
#SBATCH --cpus-per-task=32
#SBATCH --output=polyglot-%j.log
set -euo pipefail
repo=${SLURM_SUBMIT_DIR:-$(cd "$(dirname "$0")/.." && pwd)}
cd "$repo"
if ! .venv/bin/python -c "import importlib.metadata as m; m.version('jax-cuda12-plugin')" \
    2>/dev/null; then
  echo "error: $repo/.venv has no CUDA build of JAX (jax-cuda12-plugin), so it would train" \
    "on the CPU: run \`make install ACCEL=gpu\` in $repo, then submit again" >&2
  exit 2
fi
srun --kill-on-bad-exit=1 .venv/bin/python -m polyglot.train --multihost "$@"
