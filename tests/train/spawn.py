"""Run the trainer in several CPU processes (gloo) from a test: torch.multiprocessing, the same
environment torchrun gives (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR/PORT)."""

import json
import os
import socket
from pathlib import Path

import torch.multiprocessing as mp


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _worker(rank: int, world_size: int, port: int, cfg_yaml: str, report: str | None) -> None:
    os.environ.update(
        RANK=str(rank),
        LOCAL_RANK=str(rank),
        WORLD_SIZE=str(world_size),
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
        WANDB_MODE="disabled",
        OMP_NUM_THREADS="1",
    )
    import torch
    from omegaconf import OmegaConf
    from torch._dynamo.utils import counters

    from ladder.train import run_training

    torch.set_num_threads(1)
    counters.clear()
    outcome = run_training(OmegaConf.create(cfg_yaml))
    if report is not None and rank == 0:
        with open(report, "w") as out:
            json.dump(
                {
                    "status": outcome.status,
                    "step": outcome.step,
                    "counters": {key: dict(value) for key, value in counters.items()},
                },
                out,
            )


def train_in_processes(cfg, world_size: int, report=None) -> dict | None:
    """run_training(cfg) on `world_size` processes; rank 0's outcome and torch._dynamo counters."""
    from omegaconf import OmegaConf

    mp.spawn(
        _worker,
        args=(world_size, free_port(), OmegaConf.to_yaml(cfg, resolve=True), None if report is None else str(report)),
        nprocs=world_size,
        join=True,
    )
    return json.loads(Path(report).read_text()) if report is not None else None
