"""`ladder status <sweep_root>`: where each rung of a sweep stands.

Rungs are the sweep's (sweep.json, written by `ladder sweep`, lists them, so rungs not started
yet show as pending) plus any run directory found under the root. After `ladder sweep --detach`,
a `job` column gives each rung's job id and scheduler state (ladder.sweep.jobs) beside its run
directory's state.
"""

from __future__ import annotations

import sys
from pathlib import Path

from ladder.errors import LadderError
from ladder.runs.directory import RunDir
from ladder.runs.sweep_state import SWEEP_FILE, RungState, format_duration, read_jobs, read_state, sweep_rungs
from ladder.sweep.jobs import scheduler_states
from ladder.sweep.plan import format_table


def sweep_states(root: Path) -> list[RungState]:
    """Every rung of the sweep at `root`, in the sweep's order, then other run dirs by name."""
    if not root.is_dir():
        raise LadderError(f"{root}: no such sweep directory")
    if RunDir(root).was_started():  # one run directory
        return [read_state(root, root.name)]
    names = sweep_rungs(root)
    found = sorted(
        path.name
        for path in root.iterdir()
        if path.is_dir() and not path.name.startswith(".") and RunDir(path).was_started()
    )
    names += [name for name in found if name not in names]
    if not names:
        raise LadderError(f"{root}: no sweep here (neither {SWEEP_FILE} nor run directories)")
    return [read_state(root / name, name) for name in names]


def format_status(root: Path, states: list[RungState], jobs: dict[str, str] | None = None) -> str:
    """The table; `jobs`: rung -> 'job <id> <scheduler state>' of a detached sweep's rungs."""
    header = ["rung", "status", *(["job"] if jobs else []), "progress", "loss", "ETA", "note"]
    rows = [
        [
            state.name,
            state.status,
            *([jobs.get(state.name, "-")] if jobs else []),
            state.progress,
            "-" if state.loss is None else f"{state.loss:.4g}",
            format_duration(state.eta_s) if state.status == "running" and state.eta_s is not None else "-",
            state.error
            or (f"idle {format_duration(state.idle_s)}" if state.status == "partial" and state.idle_s else ""),
        ]
        for state in states
    ]
    counts: dict[str, int] = {}
    for state in states:
        counts[state.status] = counts.get(state.status, 0) + 1
    summary = ", ".join(f"{count} {status}" for status, count in counts.items())
    return f"{root}: {summary}\n\n{format_table(header, rows)}"


STATUS_USAGE = """usage: ladder status SWEEP_ROOT | RUN_DIR

Each rung: done / running (its trainer is alive) / partial (resumes on the next sweep) / failed /
pending, its step against the budget, its last training loss and an ETA; after `ladder sweep
--detach`, its job id and scheduler state (pending, running, requeued, completed, failed, ...)."""


def status_main(argv: list[str]) -> int:
    if any(arg in ("-h", "--help") for arg in argv):
        print(STATUS_USAGE)
        return 0
    if len(argv) != 1:
        print(STATUS_USAGE, file=sys.stderr)
        return 2
    root = Path(argv[0])
    states = sweep_states(root)
    records = read_jobs(root)
    scheduler = scheduler_states(root) if records else {}
    jobs = {name: f"{job['id']} {scheduler.get(name, 'unknown')}" for name, job in records.items()}
    print(format_status(root, states, jobs))
    return 1 if any(state.status == "failed" for state in states) else 0
