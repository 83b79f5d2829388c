"""`ladder status`: each rung's state, progress, last loss and ETA from its run directory."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ladder.cli import main
from ladder.rungs import make_rung
from ladder.runs.sweep_state import read_state


def write_rung(run_dir: Path, steps: int, records: list[dict], age_s: float = 0.0) -> None:
    run_dir.mkdir(parents=True)
    rung = make_rung("femto", tokens=steps * 8 * 256, batch=8, name=run_dir.name)
    assert (rung.steps, rung.batch_sequences, rung.seq_len) == (steps, 8, 256)
    (run_dir / "rung.json").write_text(json.dumps(rung.to_record()))
    metrics = run_dir / "metrics.jsonl"
    metrics.write_text("".join(json.dumps(r) + "\n" for r in records))
    stamp = time.time() - age_s
    os.utime(metrics, (stamp, stamp))


def write_marker(run_dir: Path, host: str, pid: int) -> None:
    (run_dir / "RUNNING").write_text(json.dumps({"host": host, "pid": pid, "started": time.time()}))


def dead_pid() -> int:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


@pytest.fixture
def sweep_root(tmp_path: Path) -> Path:
    root = tmp_path / "runs"
    root.mkdir()
    (root / "sweep.json").write_text(
        json.dumps({"grid": "cpu", "rungs": ["femto-1xC", "femto-2xC", "pico-1xC", "pico-2xC", "nano-1xC"]})
    )
    write_rung(root / "femto-1xC", 100, [{"step": 100, "loss": 2.5, "tokens_per_s": 2048.0}])
    (root / "femto-1xC" / "DONE").write_text(json.dumps({"step": 100, "tokens": 204800, "loss": 2.41, "wall_s": 12.0}))
    # Running: 40 of 200 steps at 1024 tokens/s with 2048-token batches -> 160 x 2 s = 320 s left.
    write_rung(
        root / "femto-2xC",
        200,
        [{"step": 30, "loss": 3.0, "tokens_per_s": 900.0}, {"step": 40, "loss": 2.9, "tokens_per_s": 1024.0}],
    )
    with open(root / "femto-2xC" / "metrics.jsonl", "a") as stream:
        stream.write('{"step": 50, "lo')  # torn line of a writer killed mid-line
    write_marker(root / "femto-2xC", socket.gethostname(), os.getpid())  # this (live) process trains it
    write_rung(root / "pico-1xC", 120, [{"step": 60, "loss": 3.2, "tokens_per_s": 500.0}], age_s=7200)
    write_rung(root / "pico-2xC", 240, [{"step": 5, "loss": 5.0, "tokens_per_s": 500.0}])
    (root / "pico-2xC" / "FAILED").write_text(json.dumps({"error": "loss is NaN at step 6\ntraceback..."}))
    return root


def test_states_of_every_kind(sweep_root):
    states = {
        name: read_state(sweep_root / name) for name in ["femto-1xC", "femto-2xC", "pico-1xC", "pico-2xC", "nano-1xC"]
    }
    assert states["femto-1xC"].status == "done" and states["femto-1xC"].loss == 2.41
    running = states["femto-2xC"]
    assert (running.status, running.step, running.steps, running.loss) == ("running", 40, 200, 2.9)
    assert running.eta_s == pytest.approx(320.0)
    partial = states["pico-1xC"]
    assert partial.status == "partial" and partial.progress == "60/120" and partial.idle_s > 7000
    assert states["pico-2xC"].status == "failed" and states["pico-2xC"].error == "loss is NaN at step 6"
    assert states["nano-1xC"].status == "pending" and states["nano-1xC"].progress == "-"


def test_status_command_table(sweep_root, capsys):
    assert main(["status", str(sweep_root)]) == 1  # a failed rung
    out = capsys.readouterr().out
    assert "1 done, 1 running, 1 partial, 1 failed, 1 pending" in out
    lines = {line.split()[0]: line for line in out.splitlines()[3:]}
    assert lines["femto-2xC"].split()[1:5] == ["running", "40/200", "2.9", "5m20s"]
    assert "loss is NaN at step 6" in lines["pico-2xC"]
    assert lines["nano-1xC"].split()[1] == "pending"


def test_status_of_a_missing_sweep(tmp_path, capsys):
    assert main(["status", str(tmp_path / "nope")]) == 2
    assert "no such sweep directory" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("marker", "age_s", "status"),
    [
        (None, 0.0, "partial"),  # fresh metrics but no trainer: the session ended (stopped, max_steps)
        ("dead", 0.0, "partial"),  # killed without cleaning up (SIGKILL): its process is gone
        ("other-host", 0.0, "running"),  # a cluster node: judged by how recent the metrics are
        ("other-host", 7200.0, "partial"),
    ],
)
def test_running_needs_a_live_trainer(tmp_path, marker, age_s, status):
    run_dir = tmp_path / "femto-1xC"
    write_rung(run_dir, 100, [{"step": 10, "loss": 3.0, "tokens_per_s": 1000.0}], age_s=age_s)
    if marker == "dead":
        write_marker(run_dir, socket.gethostname(), dead_pid())
    elif marker == "other-host":
        write_marker(run_dir, "node-that-is-not-this-one", 12345)
    assert read_state(run_dir).status == status


@pytest.mark.parametrize("rungs", ["null", "[1, 2]", '"abc"', '[""]'])
def test_malformed_sweep_file_is_one_line(sweep_root, capsys, rungs):
    (sweep_root / "sweep.json").write_text(f'{{"grid": "cpu", "rungs": {rungs}}}')
    assert main(["status", str(sweep_root)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "sweep.json: not a sweep file" in err


def test_status_without_a_root_prints_usage_to_stderr(capsys):
    assert main(["status"]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err.startswith("usage: ladder status")
