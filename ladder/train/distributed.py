"""Process-group set-up for data-parallel training (torchrun, mp.spawn or a single process).

torchrun sets RANK, LOCAL_RANK, WORLD_SIZE, MASTER_ADDR and MASTER_PORT; with WORLD_SIZE > 1 the
trainer joins a process group (NCCL on CUDA, gloo on CPU), wraps the model in DDP, and only rank 0
logs, evaluates and writes checkpoints.
"""

from __future__ import annotations

import atexit
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from ladder.errors import LadderError
from ladder.ranks import launch_rank


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
        if not self.distributed:
            return flag
        tensor = torch.tensor([int(flag)], device=self.device)
        dist.all_reduce(tensor, op=dist.ReduceOp.MAX)
        return bool(tensor.item())


def setup(device_name: str) -> DistContext:
    """Read the torchrun environment and join the process group if there is more than one process."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = launch_rank()
    local_rank = int(os.environ.get("LOCAL_RANK", str(rank)))
    if device_name == "cuda":
        if not torch.cuda.is_available():
            raise LadderError("device=cuda but no CUDA device is available (use device=cpu)")
        device = torch.device("cuda", local_rank % torch.cuda.device_count())
        torch.cuda.set_device(device)
    elif device_name == "cpu":
        device = torch.device("cpu")
    else:
        raise LadderError(f"device must be 'cpu' or 'cuda', got {device_name!r}")
    if world_size > 1 and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo", rank=rank, world_size=world_size)
        # One group for the life of the process: a sweep under torchrun trains rung after rung in
        # it (a gloo group created and destroyed per rung was seen to hang at the next rung).
        atexit.register(dist.destroy_process_group)
    return DistContext(rank=rank, local_rank=local_rank, world_size=world_size, device=device)
