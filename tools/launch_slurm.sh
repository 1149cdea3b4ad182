#!/usr/bin/env bash
# Multi-node GPU training under SLURM: one process per node, all its GPUs.
#
#   sbatch --nodes=4 tools/launch_slurm.sh --gin_file=runs/pretrain_base.gin \
#       --gin.MeshConfig.data=4 --gin.MeshConfig.fsdp=8 --workdir=/shared/polyglot/base
#
# Run `make install` once in this checkout on a shared filesystem. srun starts
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
srun --kill-on-bad-exit=1 .venv/bin/python -m polyglot.train --multihost "$@"
