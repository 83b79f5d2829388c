"""Which process of a launch this is, from the environment torchrun, submitit or srun sets.

Read without torch, so that the `ladder` command can decide who prints before anything heavy is
imported: under torchrun every rank runs the same command, and rank 0 speaks for them.

torchrun (and submitit's export) set RANK / LOCAL_RANK / WORLD_SIZE. `srun ladder train` without
torchrun sets only SLURM's SLURM_PROCID / SLURM_LOCALID / SLURM_NTASKS: those are read instead, so
that 8 tasks of one job become one 8-process run rather than 8 separate world-size-1 trainers.
"""

from __future__ import annotations

import os
from dataclasses import dataclass


@dataclass(frozen=True)
class LaunchRanks:
    """Where this process sits in its launch, and which launcher said so."""

    rank: int
    local_rank: int
    world_size: int
    source: str
    """'torchrun' (RANK and friends), 'slurm' (srun's SLURM_* variables) or 'single'."""


def launch_ranks() -> LaunchRanks:
    env = os.environ
    if "RANK" in env:
        rank = int(env["RANK"])
        return LaunchRanks(rank, int(env.get("LOCAL_RANK", str(rank))), int(env.get("WORLD_SIZE", "1")), "torchrun")
    if int(env.get("SLURM_NTASKS", "1")) > 1 and "SLURM_PROCID" in env and "SLURM_STEP_ID" in env:
        # A job step started by srun (SLURM_STEP_ID is unset in the batch script itself).
        return LaunchRanks(
            int(env["SLURM_PROCID"]), int(env.get("SLURM_LOCALID", "0")), int(env["SLURM_NTASKS"]), "slurm"
        )
    return LaunchRanks(0, 0, 1, "single")


def launch_rank() -> int:
    """This process's global rank, 0 when not launched as one of several."""
    return launch_ranks().rank


def is_rank_zero() -> bool:
    return launch_rank() == 0
