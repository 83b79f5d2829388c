"""`ladder sweep ... --detach`: submit every pending rung as its own submitit job and return.

The blocking Hydra launchers wait for every job (days for the paper grid), and rungs not yet
submitted die with the login session. Detached, each rung that is neither DONE nor queued (its
latest job pending, running or requeued: ladder.sweep.jobs) is submitted at once through the
submitit executor of `hydra/launcher=local|slurm` (same settings, `ladder.sweep.launchers`), its
job id goes into sweep.json, and the command returns. `ladder status` shows each rung's
scheduler state beside its run directory's; the same command later submits only what is
missing (failed, stopped or never submitted rungs).

A job composes the sweep's config for its rung and runs the same `sweep_job` as a Hydra job
would: it resumes the rung's checkpoint, turns the preemption signal into a checkpoint and a
requeue (`checkpoint` below makes the job requeueable on timeout too), and writes FAILED.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

from ladder.config import register_configs
from ladder.errors import LadderError
from ladder.hydra_app import CONF_DIR, HYDRA_VERSION
from ladder.runs.directory import RunDir
from ladder.runs.sweep_state import record_job
from ladder.sweep.jobs import queued_rungs
from ladder.sweep.launchers import record_visible_gpus, submitit_executor, take_rung_gpus

log = logging.getLogger("ladder.sweep")
CLUSTERS = {"local": "local", "submitit_local": "local", "slurm": "slurm", "submitit_slurm": "slurm"}


class RungJob:
    """One rung of a detached sweep, as submitit runs it (picklable: config overrides, a rung name,
    its index in the sweep, and the job function, `ladder.sweep.launch.sweep_job`)."""

    def __init__(self, overrides: list[str], rung: str, index: int, task: Callable[[DictConfig], Any]):
        self.overrides, self.rung, self.index, self.task = overrides, rung, index, task

    def __call__(self) -> dict[str, Any]:
        from ladder.hydra_app import compose_config

        cfg = compose_config([*self.overrides, f"rung={self.rung}"])
        run_dir = Path(cfg.ladder.sweep_root) / self.rung
        run_dir.mkdir(parents=True, exist_ok=True)
        logging.basicConfig(level=logging.INFO, format="[%(asctime)s][%(name)s][%(levelname)s] - %(message)s")
        to_file = logging.FileHandler(run_dir / "sweep.log")  # as a Hydra job logs
        to_file.setFormatter(logging.getLogger().handlers[0].formatter)
        logging.getLogger().addHandler(to_file)
        gpus = take_rung_gpus(self.index, cfg.ladder.gpus_per_rung)
        if gpus is not None:
            log.info("rung job %d (%s): CUDA_VISIBLE_DEVICES=%s", self.index, self.rung, gpus)
        return asdict(self.task(cfg))

    def checkpoint(self, *args: Any, **kwargs: Any) -> Any:
        """Requeue the same job after a timeout (submitit asks when the signal comes)."""
        import submitit

        return submitit.helpers.DelayedSubmission(self, *args, **kwargs)


def detached_cluster(launcher: str) -> str:
    """'local' or 'slurm' for a `hydra/launcher=` choice; a LadderError for any other."""
    if launcher not in CLUSTERS:
        raise LadderError(
            f"--detach submits through submitit: add hydra/launcher=local or hydra/launcher=slurm (got {launcher})"
        )
    return CLUSTERS[launcher]


def launcher_config(config_overrides: list[str], hydra_overrides: list[str], root: Path):
    """The resolved `hydra.launcher` of the sweep (its submitit folder under `root`)."""
    register_configs()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base=HYDRA_VERSION):
        cfg = compose(
            config_name="config",
            return_hydra_config=True,
            overrides=[
                *config_overrides,
                *hydra_overrides,
                f"hydra.sweep.dir={root}",
                "hydra.job.name=sweep",
            ],
        )
    return cfg.hydra.launcher


def submit_detached(
    config_overrides: list[str],
    hydra_overrides: list[str],
    root: Path,
    names: list[str],
    launcher: str,
    task: Callable[[DictConfig], Any],
) -> str:
    """Submit every rung of `names` neither DONE nor queued, each job running `task` on its rung's
    config; a summary for the user."""
    cluster = detached_cluster(launcher)
    done = [name for name in names if RunDir(root / name).is_done()]
    queued = queued_rungs(root)
    todo = [name for name in names if name not in done and name not in queued]
    lines = []
    if todo:
        if cluster == "local":
            record_visible_gpus()
        settings = launcher_config(config_overrides, hydra_overrides, root)
        executor = submitit_executor(settings, cluster)
        overrides = [*config_overrides, f"ladder.sweep_root={root}"]
        for name in todo:
            job = executor.submit(RungJob(overrides, name, names.index(name), task))
            record_job(root, name, str(job.job_id), cluster, str(settings.submitit_folder))
            lines.append(f"  {name}: job {job.job_id}")
    summary = f"sweep {root}: submitted {len(todo)} rung{'s' * (len(todo) != 1)}"
    others = [f"{len(done)} done"] * bool(done) + [f"{len(queued & set(names))} already queued"] * bool(
        queued & set(names)
    )
    if others:
        summary += f" ({', '.join(others)})"
    return "\n".join(
        [summary, *lines, f"follow them with `ladder status {root}`; the same command submits what is missing"]
    )
