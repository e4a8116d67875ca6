#!/usr/bin/env bash
# The body of the sbatch scripts: one training process per task (srun), Lightning's SLURMEnvironment
# reads ranks, world size and the main address from srun's variables. A requeued job (SLURM_RESTART_COUNT
# > 0) resumes from the newest checkpoint; a run stopped by the warning signal exits with 75
# (callbacks/requeue.py) and this script requeues the job.
#   usage (inside a job, from the repository root): bash experiments/slurm/run.sh [--config FILE] [key=value ...]
set -uo pipefail
REQUEUE_EXIT_CODE=75
resume=()
if [[ "${SLURM_RESTART_COUNT:-0}" -gt 0 ]]; then
    resume=(--resume)
fi
echo "job ${SLURM_JOB_ID} (restart ${SLURM_RESTART_COUNT:-0}) on ${SLURM_JOB_NODELIST}: $*"
srun "${PYTHON:-python}" -m experiments.train "${resume[@]}" "$@" \
    trainer.devices="${SLURM_NTASKS_PER_NODE}" trainer.num_nodes="${SLURM_JOB_NUM_NODES}"
status=$?
if [[ $status -eq $REQUEUE_EXIT_CODE ]]; then
    echo "job ${SLURM_JOB_ID}: checkpointed on the warning signal, requeueing"
    scontrol requeue "${SLURM_JOB_ID}"
    exit 0
fi
echo "job ${SLURM_JOB_ID}: training exited with ${status}"
exit $status
