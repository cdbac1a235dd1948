#!/usr/bin/env bash
# One SLURM task: srun runs this from the sbatch script that `launch/launch.py slurm` writes,
# with the trainer's command line as arguments.
#
# BT_PROCESS_PER=gpu: jax.distributed.initialize() with no arguments reads SLURM_PROCID,
#   SLURM_NTASKS, SLURM_LOCALID (-> this task's GPU) and the node list; nothing to do here.
# BT_PROCESS_PER=node: one process drives all GPUs of its node. JAX's SLURM detection would
#   pin it to GPU number SLURM_LOCALID (= 0), so the layout is passed explicitly instead and
#   SLURM_LOCALID is hidden from the detection.
set -euo pipefail

if [[ "${BT_PROCESS_PER:-gpu}" == node ]]; then
  export JAX_COORDINATOR_ADDRESS="${BT_COORDINATOR_HOST:?}:${BT_COORDINATOR_PORT:?}"
  export JAX_NUM_PROCESSES="${SLURM_NTASKS:?}"
  export JAX_PROCESS_ID="${SLURM_PROCID:?}"
  unset SLURM_LOCALID
fi
exec "$@"
