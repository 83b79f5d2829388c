"""Run the trainer in other processes from a test: in several CPU processes (gloo) with
torch.multiprocessing and the same environment torchrun gives (RANK, WORLD_SIZE, LOCAL_RANK,
MASTER_ADDR/PORT); torchrun's command line and a child's environment; waiting for a run that a
subprocess trains to log its first steps."""

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import torch.multiprocessing as mp


def child_env(**extra: str) -> dict[str, str]:
    """This environment for a subprocess that trains: wandb off, one thread, output unbuffered."""
    return {**os.environ, "WANDB_MODE": "disabled", "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1", **extra}


def torchrun(*args: str) -> list[str]:
    """The command that runs `args` (a script and its arguments, or `-m module ...`) under torchrun
    in two processes on this machine."""
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", *args]


def wait_for_steps(process: subprocess.Popen, run_dir: Path, steps: int, timeout: float = 90) -> bool:
    """Whether `run_dir` logs `steps` training steps within `timeout` seconds while `process`
    (which trains it) still runs."""
    metrics = Path(run_dir) / "metrics.jsonl"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and process.poll() is None:
        if metrics.exists() and len(metrics.read_text().splitlines()) >= steps:
            return True
        time.sleep(0.02)
    return False


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
