"""`ladder sweep ... --detach` through submitit's local executor (real subprocesses): it submits
and returns at once, records the job ids, `ladder status` shows the scheduler's state beside the
run directory's, and the same command submits only rungs neither DONE nor queued."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import pytest

from ladder.cli import main
from ladder.sweep.jobs import QUEUED, scheduler_states

pytestmark = pytest.mark.slow  # trains models, spawns processes or refits the paper data

BROKEN, LONG = "femto-0.001xC", "femto-0.05xC"


def overrides(root: Path, data: Path) -> list[str]:
    return [
        "ladder=cpu",
        "ladder.train_targets=false",
        "ladder.sizes=[femto]",
        "ladder.multipliers=[0.001,0.05]",
        f"ladder.sweep_root={root}",
        f"data.prepared_root={data}",
        "wandb.mode=disabled",
        "train.batch_size=2",
        "model.seq_len=64",
        "train.val_tokens=512",
        "train.threads=1",
        "train.eval_interval=1000",
        "hydra/launcher=local",
        "ladder.gpus_per_rung=0",
    ]


def wait_for_jobs(root: Path, timeout_s: float = 180) -> dict[str, str]:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        states = scheduler_states(root)
        if not any(state in QUEUED for state in states.values()):
            return states
        time.sleep(0.2)
    raise AssertionError(f"jobs still queued after {timeout_s} s: {scheduler_states(root)}")


def job_ids(root: Path) -> dict[str, str]:
    return {name: job["id"] for name, job in json.loads((root / "sweep.json").read_text())["jobs"].items()}


def test_detached_sweep_submits_returns_and_resubmits_only_what_is_missing(tmp_path, capsys):
    root, data = tmp_path / "runs", tmp_path / "data"
    broken = root / BROKEN / "checkpoint" / "step-00000001"  # a checkpoint without a config: the rung fails
    broken.mkdir(parents=True)
    for name in (".metadata", "trainer.json"):
        (broken / name).write_bytes(b"not a checkpoint")

    started = time.monotonic()
    assert main(["sweep", *overrides(root, data), "--detach"]) == 0
    returned_after = time.monotonic() - started
    out = capsys.readouterr().out
    assert f"sweep {root}: submitted 2 rungs" in out
    first = job_ids(root)
    assert sorted(first) == [BROKEN, LONG]
    assert not (root / LONG / "DONE").exists(), f"returned after {returned_after:.1f} s, once the rungs were done"

    # Again while they run: nothing is submitted twice.
    assert main(["sweep", *overrides(root, data), "--detach"]) == 0
    assert "already queued" in capsys.readouterr().out
    assert job_ids(root)[LONG] == first[LONG]
    main(["status", str(root)])
    status = capsys.readouterr().out
    assert f"{first[LONG]} running" in status  # the scheduler's word beside the run dir's

    states = wait_for_jobs(root)
    assert states == {BROKEN: "completed", LONG: "completed"}  # a job never raises: its rung's FAILED says it
    assert main(["status", str(root)]) == 1
    rows = {line.split()[0]: line.split() for line in capsys.readouterr().out.splitlines()[3:]}
    assert rows[LONG][1:4] == ["done", first[LONG], "completed"]
    assert rows[BROKEN][1:4] == ["failed", first[BROKEN], "completed"]

    # The repaired rung, and it alone, is submitted again; it trains to the end.
    shutil.rmtree(root / BROKEN / "checkpoint")
    assert main(["sweep", *overrides(root, data), "--detach"]) == 0
    out = capsys.readouterr().out
    assert "submitted 1 rung (1 done)" in out and BROKEN in out
    second = job_ids(root)
    assert second[LONG] == first[LONG] and second[BROKEN] != first[BROKEN]
    assert wait_for_jobs(root) == {BROKEN: "completed", LONG: "completed"}
    assert json.loads((root / BROKEN / "DONE").read_text())["step"] == 2
    assert (root / BROKEN / "sweep.log").is_file()


def test_detach_needs_a_submitit_launcher(tmp_path, capsys):
    assert main(["sweep", "ladder=cpu", f"ladder.sweep_root={tmp_path / 'runs'}", "--detach"]) == 2
    assert "--detach submits through submitit: add hydra/launcher=local" in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()
