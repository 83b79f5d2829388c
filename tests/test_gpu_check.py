"""scripts/gpu_check.py: refuses to run without CUDA in one line; its code runs on CPU (--dry-run)."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

pytestmark = pytest.mark.slow  # trains models, spawns processes or refits the paper data

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "gpu_check.py"
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "WANDB_MODE": "disabled"}


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a machine without CUDA")
def test_without_cuda_it_exits_2_in_one_line():
    result = subprocess.run([sys.executable, str(SCRIPT)], env=ENV, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1
    assert "no CUDA device" in result.stderr


def test_dry_run_trains_plans_evaluates_and_runs_the_two_rank_smoke_test():
    command = [
        sys.executable,
        str(SCRIPT),
        "--dry-run",
        "--sizes",
        "femto",
        "--steps",
        "2",
        "--warmup",
        "1",
        "--eval-questions",
        "5",
    ]
    result = subprocess.run(command, env=ENV, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    lines = result.stdout.splitlines()
    assert any(line.startswith("femto   ddp") and "planned" in line and "tokens/s" in line for line in lines)
    assert (
        any(line.startswith("evaluation: arc_easy, 5 questions") for line in lines)
        or "evaluation skipped" in result.stdout
    )
    assert any(line.startswith("femto  fsdp") for line in lines)  # the two ranks, sharded
    assert any("sharded checkpoint of femto on 2 rank(s)" in line and "2 shard files" in line for line in lines)
