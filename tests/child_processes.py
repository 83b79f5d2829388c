"""Tests that train in child processes (torchrun, `ladder sweep` in a subprocess): torchrun's command
line, the child's environment, waiting for the run it trains to log its first steps."""

import os
import subprocess
import sys
import time
from pathlib import Path


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
