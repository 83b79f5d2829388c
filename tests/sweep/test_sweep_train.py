"""Real sweeps of tiny CPU grids: the basic launcher (3 sizes x 2 budgets and a target, enough
for the fitter), a failing rung that does not stop the others, skip on rerun, submitit_local
(2 x 2), resume after a kill, stop on SIGTERM, two processes per rung (DDP), collect then fit.

Rungs are 1 to 16 steps of 2 x 64 tokens so that the whole file runs in about a minute.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pytest
from child_processes import wait_for_steps

from ladder.cli import main
from ladder.results import read_table
from ladder.runs.directory import RunDir

pytestmark = pytest.mark.slow  # trains models, spawns processes or refits the paper data

# Steps = ceil(multiplier x 20 N / 128 tokens per step).
STEPS = {
    "femto-0.0005xC": 1,
    "femto-0.001xC": 2,
    "femto-0.002xC": 4,
    "pico-0.0005xC": 2,
    "pico-0.001xC": 4,
    "pico-0.002xC": 8,
    "nano-0.0005xC": 4,
    "nano-0.001xC": 7,
    "nano-0.002xC": 13,
}
GRID_2X2 = ["femto-0.001xC", "femto-0.002xC", "pico-0.001xC", "pico-0.002xC"]
BASIC_GRID = [  # the order of the sweep: ladder rungs by size, then the target
    "femto-0.0005xC",
    "femto-0.001xC",
    "pico-0.0005xC",
    "pico-0.001xC",
    "nano-0.0005xC",
    "nano-0.001xC",
    "nano-0.002xC",
]
TARGET = "nano-0.002xC"
BROKEN = "femto-0.0005xC"


def grid_overrides(root: Path, data: Path, multipliers: str = "[0.001,0.002]") -> list[str]:
    """The cpu grid at tiny budgets: femto, pico x `multipliers`, without its target."""
    return [
        "ladder=cpu",
        "ladder.train_targets=false",
        f"ladder.multipliers={multipliers}",
        f"ladder.sweep_root={root}",
        f"data.prepared_root={data}",
        "wandb.mode=disabled",
        "tasks.names=[corpus_next_word]",
        "tasks.max_questions=8",
        "train.batch_size=2",
        "model.seq_len=64",
        "train.val_tokens=512",
        "train.threads=1",
        "train.log_interval=1",
        "train.eval_interval=2",
        "train.checkpoint_interval=1",
    ]


def basic_overrides(root: Path, data: Path) -> list[str]:
    """femto, pico, nano x 2 budgets and the target nano-0.002xC, evaluated at every step."""
    return grid_overrides(root, data, multipliers="[0.0005,0.001]") + [
        "ladder.sizes=[femto,pico,nano]",
        "ladder.train_targets=true",
        "train.eval_interval=1",
        f"ladder.targets=[{{name: {TARGET}, size: nano, multiplier: 0.002}}]",
    ]


def env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


LONG_RUNG = "pico-0.05xC"  # 194 steps: still training when a signal lands, even on a fast machine


def pico_sweep(root: Path, data: Path, multipliers: str = "[0.05]", *extra: str) -> list[str]:
    """The cpu grid's pico rungs at `multipliers` (LONG_RUNG's by default), evaluated rarely."""
    return grid_overrides(root, data, multipliers) + ["ladder.sizes=[pico]", "train.eval_interval=1000", *extra]


def start_sweep(overrides: list[str], **popen) -> subprocess.Popen:
    """`ladder sweep overrides` in a subprocess (its stderr discarded)."""
    return subprocess.Popen(
        [sys.executable, "-m", "ladder.cli", "sweep", *overrides], env=env(), stderr=subprocess.DEVNULL, **popen
    )


def metrics_steps(run_dir: Path) -> list[int]:
    return [json.loads(line)["step"] for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("data")


@dataclass
class BasicSweep:
    """Two sweeps of the basic grid: the first with one rung's run dir corrupted, then a rerun."""

    root: Path
    first_code: int
    first_out: str
    failed_after_first: list[str]
    done_stamps_after_first: dict[str, int]
    second_code: int
    second_out: str


@pytest.fixture(scope="module")
def basic_sweep(tmp_path_factory, data_dir) -> BasicSweep:
    """Sweeps through the basic (in-process, sequential) launcher. Before the first, BROKEN gets
    a checkpoint without a config (a crashed, hand-edited run dir), so it fails and the others
    must still train; the second sweep, after the repair, must train BROKEN alone."""
    root = tmp_path_factory.mktemp("basic") / "runs"
    broken = root / BROKEN / "checkpoint" / "step-00000001"
    broken.mkdir(parents=True)
    for name in (".metadata", "trainer.json"):
        (broken / name).write_bytes(b"not a checkpoint")
    with contextlib.redirect_stdout(io.StringIO()) as first_out:
        first_code = main(["sweep", *basic_overrides(root, data_dir)])
    failed = sorted(path.parent.name for path in root.glob("*/FAILED"))
    stamps = {path.parent.name: path.stat().st_mtime_ns for path in root.glob("*/DONE")}
    shutil.rmtree(root / BROKEN / "checkpoint")
    with contextlib.redirect_stdout(io.StringIO()) as second_out:
        second_code = main(["sweep", *basic_overrides(root, data_dir)])
    return BasicSweep(root, first_code, first_out.getvalue(), failed, stamps, second_code, second_out.getvalue())


def test_a_failing_rung_does_not_stop_the_others(basic_sweep):
    assert basic_sweep.first_code == 1
    assert basic_sweep.failed_after_first == [BROKEN]
    assert sorted(basic_sweep.done_stamps_after_first) == sorted(set(BASIC_GRID) - {BROKEN})
    assert f"sweep {basic_sweep.root}: 1 failed, 6 done" in basic_sweep.first_out
    assert f"{BROKEN}: failed, LadderError:" in basic_sweep.first_out


def test_basic_launcher_trains_every_rung(basic_sweep, capsys):
    root = basic_sweep.root
    assert basic_sweep.second_code == 0, basic_sweep.second_out
    assert json.loads((root / "sweep.json").read_text()) == {"grid": "cpu", "rungs": BASIC_GRID}
    for name in BASIC_GRID:
        run_dir = root / name
        done = json.loads((run_dir / "DONE").read_text())
        assert done["step"] == STEPS[name]
        rung = json.loads((run_dir / "rung.json").read_text())
        role = "target" if name == TARGET else "ladder"
        assert (rung["name"], rung["role"], rung["steps"]) == (name, role, STEPS[name])
        assert (run_dir / "config.yaml").is_file() and (run_dir / ".hydra" / "config.yaml").is_file()
        assert metrics_steps(run_dir) == list(range(1, STEPS[name] + 1))
        assert not (run_dir / "FAILED").exists()
    assert main(["status", str(root)]) == 0
    assert "7 done" in capsys.readouterr().out


def test_rerun_skips_finished_rungs_and_retries_failed_ones(basic_sweep, capsys):
    root = basic_sweep.root
    assert "6 of 7 rungs are DONE, skipped" in basic_sweep.second_out
    stamps = {name: (root / name / "DONE").stat().st_mtime_ns for name in basic_sweep.done_stamps_after_first}
    assert stamps == basic_sweep.done_stamps_after_first  # not trained again
    assert main(["sweep", *basic_overrides(root, Path("unused"))]) == 0
    assert "all 7 rungs are DONE" in capsys.readouterr().out


def test_collect_then_fit_round_trip(basic_sweep, tmp_path, capsys):
    root = basic_sweep.root
    table_path = tmp_path / "results" / "cpu.csv"
    assert main(["collect", str(root), "-o", str(table_path)]) == 0
    table = read_table(table_path)
    assert sorted(table["run"].unique()) == sorted(BASIC_GRID)
    assert set(table["task"]) == {"corpus_next_word"}
    assert len(table) == sum(STEPS[name] for name in BASIC_GRID)  # evaluated at every step
    last = table.sort_values("step").groupby("run").tail(1).set_index("run")
    assert {name: int(last.loc[name, "step"]) for name in BASIC_GRID} == {name: STEPS[name] for name in BASIC_GRID}
    assert last.loc["pico-0.001xC", "D"] == 4 * 128 and last.loc["pico-0.001xC", "N"] == 24_792
    assert last.loc[TARGET, "role"] == "target"
    assert "chance" in table.columns and set(table["chance"]) == {0.25}
    fit_dir = tmp_path / "fit"
    code = main(["fit", str(table_path), "--out", str(fit_dir), "--bootstrap", "0", "--no-plots"])
    assert code == 0, capsys.readouterr().err
    predictions = pd.read_csv(fit_dir / "predictions.csv")
    assert set(predictions["target"]) == {TARGET} and set(predictions["task"]) == {"corpus_next_word"}


def test_a_rung_another_trainer_holds_is_left_alone(tmp_path, data_dir, capsys):
    """While another session trains a rung (it holds the run directory's lock), the sweep skips it:
    no FAILED marker in a run directory that is not its own, and the sweep says it fell short."""
    root = tmp_path / "runs"
    overrides = grid_overrides(root, data_dir, multipliers="[0.001]") + ["ladder.sizes=[femto,pico]"]
    held = RunDir(root / "femto-0.001xC")
    with held.session():
        code = main(["sweep", *overrides])
    assert code == 1
    assert not (held.path / "FAILED").exists() and not (held.path / "DONE").exists()
    assert (root / "pico-0.001xC" / "DONE").is_file()
    assert "femto-0.001xC" in capsys.readouterr().out


def test_killed_rung_resumes(tmp_path, data_dir):
    """SIGKILL a sweep mid-rung; the next sweep resumes that rung from its last checkpoint."""
    root = tmp_path / "runs"
    overrides = pico_sweep(root, data_dir)
    run_dir = root / LONG_RUNG
    process = start_sweep(overrides, stdout=subprocess.DEVNULL, start_new_session=True)
    try:
        assert wait_for_steps(process, run_dir, 3), "the sweep ended (or had not trained 3 steps) before the kill"
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
    killed_at = max(metrics_steps(run_dir))
    assert not (run_dir / "DONE").exists() and 3 <= killed_at < 194
    assert main(["sweep", *overrides]) == 0
    assert json.loads((run_dir / "DONE").read_text())["step"] == 194
    assert metrics_steps(run_dir) == list(range(1, 195))  # no step trained twice in the record
    log_text = (run_dir / "sweep.log").read_text()
    assert "resumed" in log_text


def test_submitit_local_launcher_runs_rungs_in_subprocesses_each_on_its_own_gpu(
    tmp_path, data_dir, capsys, monkeypatch
):
    """Four rungs, one subprocess each; with three visible GPUs (a fake CUDA_VISIBLE_DEVICES: the
    rungs train on the CPU) rung i sees GPU i mod 3, and nothing else."""
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3,5,7")
    root = tmp_path / "runs"
    code = main(["sweep", *grid_overrides(root, data_dir), "hydra/launcher=local"])
    assert code == 0, capsys.readouterr().out
    for name in GRID_2X2:
        assert json.loads((root / name / "DONE").read_text())["step"] == STEPS[name]
    logs = list((root / ".submitit").glob("*/*_log.out"))
    assert len(logs) == 4  # one subprocess per rung, each with its own log
    assert all("done:" in log.read_text() for log in logs)
    seen = {}
    for log in logs:
        text = log.read_text()
        number = int(text.split("rung job ")[1].split()[0])
        seen[number] = text.split("CUDA_VISIBLE_DEVICES=")[1].split()[0]
    assert seen == {0: "3", 1: "5", 2: "7", 3: "3"}


def sweep_then_sigterm(overrides: list[str], run_dir: Path) -> tuple[int, str]:
    """Run `ladder sweep` in a subprocess, SIGTERM it (that process alone) once `run_dir` has
    logged two steps; its exit code and output."""
    process = start_sweep(overrides, stdout=subprocess.PIPE, text=True)
    assert wait_for_steps(process, run_dir, 2), "the rung was not training within 90 s"
    process.send_signal(signal.SIGTERM)
    out, _ = process.communicate(timeout=90)
    return process.returncode, out


def test_sigterm_checkpoints_the_rung_and_stops_the_sweep(tmp_path, data_dir):
    """SIGTERM (SLURM's preemption, a Ctrl-C'd tmux): the rung checkpoints, later rungs do not start."""
    root = tmp_path / "runs"
    overrides = pico_sweep(root, data_dir, "[0.05,0.001]", "train.checkpoint_interval=1000")
    run_dir = root / LONG_RUNG
    code, out = sweep_then_sigterm(overrides, run_dir)
    assert code == 1, out
    assert "stopped by a signal: the same command resumes the sweep" in out
    assert "pico-0.001xC: pending" in out
    assert not (run_dir / "DONE").exists() and any((run_dir / "checkpoint").glob("step-*/.metadata"))
    assert not (root / "pico-0.001xC" / "metrics.jsonl").exists()


def test_sigterm_to_a_local_sweep_reaches_its_rungs(tmp_path, data_dir):
    """Under the local launcher the rungs are subprocesses: `kill <sweep pid>` must still make
    them checkpoint and stop (the sweep passes the signal on), and the sweep then exits 1."""
    root = tmp_path / "runs"
    overrides = pico_sweep(root, data_dir, "[0.05]", "train.checkpoint_interval=1000", "hydra/launcher=local")
    run_dir = root / LONG_RUNG
    code, out = sweep_then_sigterm(overrides, run_dir)  # to the launcher alone, as `kill <pid>` does
    assert code == 1, out
    assert "stopped by a signal: the same command resumes the sweep" in out
    assert not (run_dir / "DONE").exists() and any((run_dir / "checkpoint").glob("step-*/.metadata"))
    assert not (run_dir / "RUNNING").exists()


def test_submitit_local_two_tasks_per_rung_train_with_ddp(tmp_path, data_dir):
    """tasks_per_node=2: submitit starts two processes for the rung; the job exports RANK,
    WORLD_SIZE, LOCAL_RANK, MASTER_ADDR/PORT and the trainer runs DDP (gloo on CPU)."""
    root = tmp_path / "runs"
    overrides = grid_overrides(root, data_dir, multipliers="[0.002]") + [
        "ladder.sizes=[femto]",
        "train.eval_interval=100",
        "hydra/launcher=local",
        "hydra.launcher.tasks_per_node=2",
    ]
    assert main(["sweep", *overrides]) == 0
    assert json.loads((root / "femto-0.002xC" / "DONE").read_text())["step"] == STEPS["femto-0.002xC"]
    logs = sorted((root / ".submitit").glob("*/*_log.out"))
    assert [log.name.split("_")[1] for log in logs] == ["0", "1"]  # task 0 and task 1 of one job
    assert ["rank 0 of 2" in log.read_text() for log in logs] == [True, False]
    assert ["rank 1 of 2" in log.read_text() for log in logs] == [False, True]
