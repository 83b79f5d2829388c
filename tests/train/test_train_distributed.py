"""DDP: two CPU processes (gloo, launched by torchrun) train exactly what one process trains."""

import json
import subprocess

import pytest
from child_processes import child_env, torchrun
from femto_runs import REFERENCE_STEPS, femto_overrides, losses

pytestmark = pytest.mark.slow  # trains models, spawns processes or refits the paper data


def test_two_gloo_processes_match_one_process_at_the_same_global_batch(tmp_path, prepared_root, reference):
    run_dir = tmp_path / "femto-ddp"
    command = torchrun(
        "-m",
        "ladder",
        "train",
        f"run_dir={run_dir}",
        f"data.prepared_root={prepared_root}",
        "wandb.mode=disabled",
        *femto_overrides(REFERENCE_STEPS),
    )
    result = subprocess.run(command, env=child_env(), capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    config = json.loads((run_dir / "rung.json").read_text())
    assert config["batch_sequences"] == 8  # the same global batch, 4 sequences per process
    expected, got = losses(reference), losses(run_dir)
    assert sorted(got) == sorted(expected)  # only rank 0 logged: one record per step
    assert max(abs(got[s] - expected[s]) for s in expected) < 1e-4
    assert json.loads((run_dir / "DONE").read_text())["loss"] == pytest.approx(expected[REFERENCE_STEPS], abs=1e-4)
    # One summary line and one "done" log line (rank 0), and no deprecation warning from DDP.
    output = result.stdout + result.stderr
    assert result.stdout.count(f"done: {run_dir}") == 1 and output.count("][INFO] - done:") == 1
    assert "FutureWarning" not in output


def test_a_sweep_under_torchrun_trains_rung_after_rung_in_one_process_group(tmp_path, prepared_root):
    root = tmp_path / "runs"
    command = torchrun(
        "-m",
        "ladder",
        "sweep",
        "ladder=cpu",
        "ladder.only=[femto-0.25xC,pico-0.25xC]",
        f"ladder.sweep_root={root}",
        f"data.prepared_root={prepared_root}",
        "wandb.mode=disabled",
        "train.max_steps=3",
        "train.log_interval=1",
    )
    result = subprocess.run(command, env=child_env(), capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    for rung in ("femto-0.25xC", "pico-0.25xC"):
        assert sorted(losses(root / rung)) == [1, 2, 3]
    assert result.stdout.count(f"sweep {root}: 2 stopped") == 1  # rank 0 speaks for both
