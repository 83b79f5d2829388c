"""The scheduler's state of a detached sweep's jobs (recorded in sweep.json by
`ladder.runs.sweep_state.record_job`).

`scheduler_state` asks the scheduler about a rung's latest job: pending, running or requeued (it
is queued: a new sweep leaves the rung alone), completed, failed (or timeout, cancelled,
out_of_memory, node_fail, preempted: SLURM's words), ended (a local job whose process is gone
without a result) or unknown (no sacct here).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from ladder.runs.sweep_state import read_jobs

QUEUED = ("pending", "running", "requeued")
SACCT_TIMEOUT_S = 30


def scheduler_states(root: Path) -> dict[str, str]:
    """rung -> the scheduler state of its latest job (SLURM jobs asked in one sacct call)."""
    jobs = read_jobs(root)
    slurm = {name: str(job["id"]) for name, job in jobs.items() if job.get("cluster") == "slurm"}
    states = _sacct_states(list(slurm.values())) if slurm else {}
    result = {name: states.get(job_id, "unknown") for name, job_id in slurm.items()}
    for name, job in jobs.items():
        if job.get("cluster") == "local":
            result[name] = _local_state(str(job["id"]), Path(str(job.get("folder", ""))))
    return result


def queued_rungs(root: Path) -> set[str]:
    """Rungs whose latest job is pending, running or requeued."""
    return {name for name, state in scheduler_states(root).items() if state in QUEUED}


def _sacct_states(job_ids: list[str]) -> dict[str, str]:
    if shutil.which("sacct") is None:
        return {}
    try:
        listing = subprocess.run(
            ["sacct", "-X", "-n", "-P", "-o", "JobID,State", "-j", ",".join(job_ids)],
            capture_output=True,
            text=True,
            timeout=SACCT_TIMEOUT_S,
            check=False,
        ).stdout
    except subprocess.TimeoutExpired:
        return {}
    states = {}
    for line in listing.splitlines():
        job_id, _, state = line.partition("|")
        if state:
            states[job_id.strip()] = state.split()[0].lower()  # "CANCELLED by 123" -> cancelled
    return states


def _local_state(job_id: str, folder: str | Path) -> str:
    """A local job's state: its controller process (the job id is its pid) alive, or its result."""
    if _is_submitit_process(job_id):
        return "running"
    from submitit.core.utils import JobPaths

    result = JobPaths(folder, job_id=job_id, task_id=0).result_pickle
    if not result.exists():
        return "ended"
    from submitit.core.utils import pickle_load

    try:
        outcome, _ = pickle_load(result)
    except Exception:  # a result being written, or unreadable: the process is gone anyway
        return "ended"
    return "completed" if outcome == "success" else "failed"


def _is_submitit_process(pid: str) -> bool:
    try:
        return b"submitit" in (Path("/proc") / pid / "cmdline").read_bytes()
    except OSError:
        pass
    if Path("/proc").is_dir():
        return False
    try:  # no /proc (macOS): the pid alone
        os.kill(int(pid), 0)
    except (ProcessLookupError, ValueError):
        return False
    except PermissionError:
        return True
    return True
