"""Process-group set-up for data-parallel training (torchrun, srun, mp.spawn or a single process).

torchrun sets RANK, LOCAL_RANK, WORLD_SIZE, MASTER_ADDR and MASTER_PORT; `srun` without torchrun
sets SLURM_PROCID, SLURM_LOCALID and SLURM_NTASKS, which are read instead (`ladder.ranks`). With
more than one process the trainer joins a process group (NCCL on CUDA, gloo on CPU), wraps the
model in DDP, and only rank 0 logs and writes checkpoints.

Timeouts: a collective that waits longer than its timeout fails instead of hanging. Start-up (the
process group, rank 0's corpus check, the first barriers) gets `train.startup_timeout_min`;
training and evaluation get `train.timeout_min`.

Failure: the process group cannot be used again once one rank has raised (the others are blocked
in, or will block in, a collective). `fail_fast` therefore records the error in FAILED (naming the
rank) and ends the process at once; gloo peers see the closed connection and fail at once too,
and torchrun or srun ends the rest of the job.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import sys
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist

from ladder.errors import LadderError
from ladder.ranks import launch_ranks

log = logging.getLogger("ladder.train")


@dataclass(frozen=True)
class DistContext:
    """Where this process sits in the job."""

    rank: int
    """Global rank (0 = the one that logs and checkpoints)."""
    local_rank: int
    """Rank on this machine (selects the GPU)."""
    world_size: int
    """Number of processes."""
    device: torch.device
    """This process's device."""

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    def barrier(self) -> None:
        if self.distributed:
            dist.barrier()

    def mean(self, value: float) -> float:
        """Average a float over all ranks."""
        if not self.distributed:
            return value
        tensor = torch.tensor([value], dtype=torch.float64, device=self.device)
        dist.all_reduce(tensor)
        return tensor.item() / self.world_size

    def any(self, flag: bool) -> bool:
        """True on every rank if it is true on any rank (e.g. a signal arrived at one of them)."""
        return self.any_of_each(flag)[0]

    def any_of_each(self, *flags: bool) -> tuple[bool, ...]:
        """Each flag true on every rank if it is true on any rank, in one collective."""
        if not self.distributed:
            return tuple(bool(flag) for flag in flags)
        tensor = torch.tensor([int(flag) for flag in flags], device=self.device)
        dist.all_reduce(tensor, op=dist.ReduceOp.MAX)
        return tuple(bool(value) for value in tensor.tolist())

    def gather(self, payload: object) -> list[object]:
        """Every rank's `payload` (picklable), in rank order, on every rank."""
        if not self.distributed:
            return [payload]
        gathered: list[object] = [None] * self.world_size
        dist.all_gather_object(gathered, payload)
        return gathered

    def set_timeout(self, minutes: float) -> None:
        """The timeout of every later collective of this process group."""
        if self.distributed:
            dist.distributed_c10d._set_pg_timeout(timedelta(minutes=minutes))


def setup(device_name: str, startup_timeout_min: float = 30.0) -> DistContext:
    """Read the launcher's environment and join the process group if there is more than one process."""
    ranks = launch_ranks()
    rank, local_rank, world_size = ranks.rank, ranks.local_rank, ranks.world_size
    if ranks.source == "slurm":
        _slurm_rendezvous()
    if device_name == "cuda":
        if not torch.cuda.is_available():
            raise LadderError("device=cuda but no CUDA device is available (use device=cpu)")
        device = torch.device("cuda", local_rank % torch.cuda.device_count())
        torch.cuda.set_device(device)
    elif device_name == "cpu":
        device = torch.device("cpu")
    else:
        raise LadderError(f"device must be 'cpu' or 'cuda', got {device_name!r}")
    context = DistContext(rank=rank, local_rank=local_rank, world_size=world_size, device=device)
    if world_size > 1 and not dist.is_initialized():
        dist.init_process_group(
            backend="nccl" if device.type == "cuda" else "gloo",
            rank=rank,
            world_size=world_size,
            timeout=timedelta(minutes=startup_timeout_min),
        )
        # One group for the life of the process: a sweep under torchrun trains rung after rung in
        # it (a gloo group created and destroyed per rung was seen to hang at the next rung).
        atexit.register(dist.destroy_process_group)
    else:
        context.set_timeout(startup_timeout_min)  # the next rung of a sweep starts up again
    return context


def check_launch() -> None:
    """Refuse, before anything is written, a launch the process group cannot be formed from:
    srun tasks on several nodes without MASTER_ADDR/MASTER_PORT."""
    if launch_ranks().source != "slurm" or ("MASTER_ADDR" in os.environ and "MASTER_PORT" in os.environ):
        return
    if int(os.environ.get("SLURM_NNODES", os.environ.get("SLURM_JOB_NUM_NODES", "1"))) > 1:
        raise LadderError(
            "started by srun on several nodes without torchrun: export MASTER_ADDR (the first node, "
            "`scontrol show hostnames $SLURM_JOB_NODELIST | head -n1`) and MASTER_PORT, or run torchrun in each task"
        )


def _slurm_rendezvous() -> None:
    """MASTER_ADDR/MASTER_PORT for tasks started by srun without torchrun on one node: this node,
    and a port derived from the job id (two jobs on one node differ)."""
    check_launch()
    os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
    os.environ.setdefault("MASTER_PORT", str(20_000 + int(os.environ.get("SLURM_JOB_ID", "0")) % 40_000))


def failure_record(context: DistContext, step: int, error: BaseException) -> dict:
    """What FAILED says: the step, the error (prefixed with the rank when there are several) and
    the traceback."""
    where = f"rank {context.rank}: " if context.distributed else ""
    return {
        "step": step,
        "rank": context.rank,
        "error": f"{where}{type(error).__name__}: {error}",
        "traceback": traceback.format_exc(),
    }


@contextlib.contextmanager
def fail_fast(context: DistContext, record_failure: Callable[[dict], None], step: Callable[[], int]) -> Iterator[None]:
    """Run the block; on an error, `record_failure` gets the failure record. With several
    processes the record is written by whichever rank failed first (a later write by a rank that
    only saw its peer vanish does not replace it) and the process then ends at once with exit
    code 1: its peers must not wait for it until the timeout."""
    try:
        yield
    except Exception as error:
        record_failure(failure_record(context, step(), error))
        if not context.distributed:
            raise
        log.error("rank %d failed: %s: %s", context.rank, type(error).__name__, error)
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(1)
