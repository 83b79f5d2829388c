"""The state of a sweep's rungs, read from their run directories alone (the trainer's files and
markers, through `ladder.runs.directory.RunDir`), and the sweep root's sweep.json.

done: DONE exists. failed: FAILED exists. running: a trainer's RUNNING marker is there and its
process is alive (checked on this host; for a run on another host, metrics.jsonl must have been
written within the last RUNNING_WINDOW_S seconds). partial: trained some steps, not running now
(resumes on the next sweep). pending: nothing trained yet. Progress is the last metrics.jsonl record against
rung.json's step count; the ETA assumes the last record's tokens/s.
"""

from __future__ import annotations

import json
import os
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ladder.atomic import read_json, write_text_atomic
from ladder.errors import LadderError
from ladder.progress import format_duration
from ladder.runs.directory import RunDir

SWEEP_FILE = "sweep.json"  # written by `ladder sweep` at the sweep root: grid name, rung names, detached jobs
RUNNING_WINDOW_S = 600.0
TAIL_BYTES = 65536


def write_json_atomic(path: Path, payload: dict[str, Any]) -> None:
    """`payload` as JSON, written atomically: readers never see half a file."""
    write_text_atomic(path, json.dumps(payload, indent=1))


def has_sweep_file(root: Path) -> bool:
    return (root / SWEEP_FILE).exists()


def read_sweep_file(root: Path) -> dict[str, Any] | None:
    """sweep.json's record ({"grid", "rungs"}, and "jobs" after a detached sweep), None when
    absent or unreadable."""
    return read_json(root / SWEEP_FILE)


def write_sweep_file(root: Path, grid: str, rungs: list[str]) -> None:
    """The grid and rungs (a detached sweep's jobs already recorded are kept)."""
    write_json_atomic(root / SWEEP_FILE, (read_sweep_file(root) or {}) | {"grid": grid, "rungs": rungs})


def read_jobs(root: Path) -> dict[str, dict[str, Any]]:
    """rung -> its latest scheduler job, as `ladder sweep --detach` recorded it (none before one):
    {"id": job id, "cluster": "slurm" | "local", "folder": submitit folder, "submitted": unix time}."""
    jobs = (read_sweep_file(root) or {}).get("jobs")
    return {name: job for name, job in jobs.items() if isinstance(job, dict)} if isinstance(jobs, dict) else {}


def record_job(root: Path, rung: str, job_id: str, cluster: str, folder: str) -> None:
    """Record a rung's job in sweep.json (it replaces the rung's earlier one; other keys are kept)."""
    sweep = read_sweep_file(root) or {}
    jobs = read_jobs(root) | {rung: {"id": job_id, "cluster": cluster, "folder": folder, "submitted": time.time()}}
    write_json_atomic(root / SWEEP_FILE, sweep | {"jobs": jobs})


def sweep_rungs(root: Path) -> list[str]:
    """The rung names sweep.json lists (none if it is absent); a malformed file is a LadderError."""
    if not has_sweep_file(root):
        return []
    rungs = (read_sweep_file(root) or {}).get("rungs")
    if not isinstance(rungs, list) or not all(isinstance(name, str) and name for name in rungs):
        raise LadderError(f'{root / SWEEP_FILE}: not a sweep file (expected {{"rungs": [names...]}}); was it edited?')
    return list(rungs)


def last_record(path: Path) -> dict[str, Any] | None:
    """The last complete JSON line of a JSONL file (reads only its tail)."""
    try:
        with open(path, "rb") as stream:
            stream.seek(0, os.SEEK_END)
            size = stream.tell()
            stream.seek(max(0, size - TAIL_BYTES))
            lines = stream.read().decode("utf-8", errors="replace").splitlines()
    except OSError:
        return None
    for line in reversed(lines):
        try:
            record = json.loads(line)
        except ValueError:
            continue  # a torn last line of a killed writer, or a cut first line of the tail
        if isinstance(record, dict):
            return record
    return None


@dataclass
class RungState:
    """Where one rung stands."""

    name: str
    """Rung name (its run directory's name)."""
    status: str
    """done, running, partial, failed or pending."""
    step: int | None = None
    """Last logged step."""
    steps: int | None = None
    """Steps of the full budget (rung.json)."""
    loss: float | None = None
    """Last logged training loss."""
    eta_s: float | None = None
    """Seconds left at the last logged tokens/s (running rungs)."""
    idle_s: float | None = None
    """Seconds since metrics.jsonl was last written."""
    error: str | None = None
    """FAILED's error message."""

    @property
    def progress(self) -> str:
        if self.step is None:
            return "-"
        return f"{self.step}/{self.steps}" if self.steps else str(self.step)

    def describe(self) -> str:
        parts = [self.status]
        if self.step is not None:
            parts.append(f"step {self.progress}")
        if self.loss is not None:
            parts.append(f"loss {self.loss:.4g}")
        if self.eta_s is not None and self.status == "running":
            parts.append(f"ETA {format_duration(self.eta_s)}")
        if self.idle_s is not None and self.status == "partial":
            parts.append(f"last write {format_duration(self.idle_s)} ago")
        if self.error:
            parts.append(self.error)
        return ", ".join(parts)


def read_state(run_dir: Path, name: str | None = None, now: float | None = None) -> RungState:
    now = time.time() if now is None else now
    run = RunDir(run_dir)
    state = RungState(name=name or run.path.name, status="pending")
    rung = run.read_rung()
    state.steps = rung.steps if rung is not None else None
    metrics = run.metrics_path
    record = last_record(metrics) if metrics.exists() else None
    if record is not None:
        state.step = _number(record.get("step"), int)
        state.loss = _number(record.get("loss"), float)
        state.idle_s = now - metrics.stat().st_mtime
        tokens_per_s = _number(record.get("tokens_per_s"), float)
        batch_tokens = rung.batch_tokens if rung is not None else 0
        if tokens_per_s and batch_tokens and state.steps and state.step is not None:
            state.eta_s = (state.steps - state.step) * batch_tokens / tokens_per_s
    done = run.read_done_marker() if run.is_done() else None
    if run.is_done() and (done is None or _number(done.get("step"), int) is None):
        state.status = "failed"
        state.error = "DONE is not a DONE record (empty or edited): delete it to resume"
    elif done is not None:
        state.status = "done"
        state.step = _number(done.get("step"), int)
        state.loss = _number(done.get("loss"), float, state.loss)
    elif run.is_failed():
        state.status = "failed"
        failed = run.read_failed() or {}
        state.error = str(failed.get("error", "see the run's log")).splitlines()[0]
    elif _is_running(run.read_running(), state.idle_s):
        state.status = "running"
    elif record is not None:
        state.status = "partial"
    return state


def _number(value: Any, kind: type, default: Any = None) -> Any:
    """`value` if it is a number of `kind` (an int counts as a float; a bool as neither), else `default`:
    a hand-edited or foreign record shows as unknown instead of breaking the table."""
    if isinstance(value, bool) or not isinstance(value, (int, float) if kind is float else int):
        return default
    return value


def _is_running(running: dict[str, Any] | None, idle_s: float | None) -> bool:
    """A RUNNING marker whose process is alive: on this host, asked of the OS; on another host
    (a cluster node), judged by how recently metrics.jsonl was written."""
    if running is None:
        return False
    if running.get("host") != socket.gethostname():
        return idle_s is not None and idle_s < RUNNING_WINDOW_S
    pid = running.get("pid")
    if not isinstance(pid, int) or pid <= 0:
        return False  # not a marker the trainer wrote
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False  # killed without cleaning up (SIGKILL, out of memory)
    except (PermissionError, OverflowError):
        return True  # alive but another user's process
    return True
