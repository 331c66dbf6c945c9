#!/usr/bin/env bash
# One sgns model trained on several machines under SLURM: one torchrun per node, torchrun starts one worker
# per GPU (or per CPU share) on it, and the workers find each other through the first node (c10d rendezvous).
#
#   sbatch scripts/tools/slurm_train.sh corpus=text corpus.path=/shared/corpus.txt.gz trainer.epochs=5
#
# Adjust the #SBATCH lines to your cluster. The run directory must be on a filesystem every node sees
# (rank 0 writes it; every rank reads the corpus path). Resubmitting the same command with the same
# hydra.run.dir continues from the last checkpoint (set trainer.checkpoint_every so there is one).
#SBATCH --job-name=sgns
#SBATCH --nodes=2
#SBATCH --ntasks-per-node=1
#SBATCH --gpus-per-node=4
#SBATCH --cpus-per-task=16
#SBATCH --time=12:00:00
#SBATCH --output=sgns-%j.out
set -euo pipefail

GPUS_PER_NODE=${SLURM_GPUS_ON_NODE:-4}
HEAD_NODE=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)
RUN_DIR=${RUN_DIR:-outputs/slurm-${SLURM_JOB_ID}}

# SIGTERM before the time limit reaches every worker through torchrun: they stop together at the next merge
# and rank 0 writes a checkpoint.
srun --kill-on-bad-exit=1 torchrun \
  --nnodes="$SLURM_JOB_NUM_NODES" --nproc_per_node="$GPUS_PER_NODE" \
  --rdzv-backend=c10d --rdzv-endpoint="$HEAD_NODE:29500" --rdzv-id="$SLURM_JOB_ID" \
  -m sgns.train trainer.device=cuda trainer.checkpoint_every=20000 "hydra.run.dir=$RUN_DIR" "$@"
