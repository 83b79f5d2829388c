"""`ladder sweep ladder=<grid>`: one Hydra multirun over the grid's rungs.

The sweep is a real Hydra multirun with one sweep parameter, `rung=<name>,<name>,...`, so every
Hydra launcher works: the basic one (sequential, in this process), `submitit_local` (one
subprocess per rung) and `submitit_slurm` (one SLURM job per rung). Each job looks its rung up
in the grid, points the config at `<sweep_root>/<rung>/` and hands the Rung itself to
`ladder.train.run_training` (the trainer does not size it again from the config).

- The whole grid is sized and validated before any job starts.
- Rungs with a DONE marker are not launched (and a job that finds one returns at once); partial
  ones resume from their checkpoint, because the trainer resumes whatever is in the run dir.
- A job never raises: a failing rung gets a FAILED marker and the others carry on; the summary
  at the end lists the failures and the exit code is 1.
- Under submitit with several tasks per job (one per GPU), the job exports torch's env://
  variables (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT) for the trainer.
- Under submitit, the preemption/timeout signal (USR2 unless SUBMITIT_PREEMPT_SIGNAL says
  otherwise) is first turned into SIGUSR1 for the trainer, which checkpoints and stops; then
  submitit's own handler requeues the job, which resumes from that checkpoint.
- Under the local launcher each rung takes its own GPUs (ladder.sweep.launchers).
- `--detach` submits the same jobs through submitit and returns (ladder.sweep.detach); rungs
  queued by a detached sweep are left to their jobs by any later sweep.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import signal
import sys
import threading
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hydra import compose, initialize_config_dir
from hydra.core.hydra_config import HydraConfig
from hydra.errors import HydraException
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from ladder.config import register_configs
from ladder.errors import LadderError
from ladder.hydra_app import CONF_DIR, HYDRA_VERSION, compose_config, describe_config_error, run_app
from ladder.ranks import is_rank_zero
from ladder.rungs import Rung, find_rung, grid_rungs, rungs_to_train
from ladder.runs.directory import RunBusy, RunDir
from ladder.runs.sweep_state import RungState, read_state, read_sweep_file, write_sweep_file
from ladder.sweep.detach import detached_cluster, submit_detached
from ladder.sweep.jobs import queued_rungs
from ladder.sweep.launchers import record_visible_gpus, take_rung_gpus
from ladder.sweep.plan import check_memory

log = logging.getLogger("ladder.sweep")

HYDRA_FLAGS = ("--cfg", "-c", "--help", "-h", "--hydra-help", "--info", "--resolve", "--package", "-p")


@dataclass(frozen=True)
class JobResult:
    """What one sweep job reports back to the launcher."""

    rung: str
    """Rung name."""
    status: str
    """'done', 'skipped' (already DONE), 'stopped' (max_steps or a signal), 'failed', or
    'not started' (the sweep was stopped by a signal before this rung)."""
    error: str | None = None
    """The error's one-line message when failed."""


def configure_rung(cfg: DictConfig, rung: Rung, run_dir: Path) -> None:
    """Point a composed config at one rung: its size, budget, role and run directory."""
    cfg.model.preset = rung.size
    if rung.multiplier is not None:
        cfg.multiplier = rung.multiplier
        cfg.train.tokens = None
    else:
        cfg.multiplier = 1.0  # unused beside train.tokens (ladder.config refuses both set)
        cfg.train.tokens = rung.tokens
    cfg.role = rung.role
    cfg.run_name = rung.name
    cfg.run_dir = str(run_dir)


def export_distributed_env() -> None:
    """Under submitit with one task per GPU, export torch's env:// variables for the trainer.

    torchrun sets them itself (RANK present): left alone.
    """
    if "RANK" in os.environ or not os.environ.get("SUBMITIT_EXECUTOR"):
        return
    import submitit

    if submitit.JobEnvironment().num_tasks > 1:
        # Each task sees all the node's GPUs; the trainer picks cuda:LOCAL_RANK.
        dist = submitit.helpers.TorchDistributedEnvironment().export(set_cuda_visible_devices=False)
        log.info(
            "torch.distributed: rank %d of %d, master %s:%d",
            dist.rank,
            dist.world_size,
            dist.master_addr,
            dist.master_port,
        )


class PreemptionRelay:
    """Turns submitit's preemption signal into SIGUSR1 for the trainer, and requeues afterwards.

    submitit's handler requeues the job and exits at once, in the middle of a training step. The
    relay instead raises SIGUSR1 while the trainer runs (it checkpoints at the end of the step and
    returns 'stopped'), then hands the signal to submitit's handler, which requeues the job.
    """

    def __init__(self) -> None:
        self.signum: int | None = None
        self.submitit_handler: Callable | None = None
        self.training = False
        self.received = False
        if not os.environ.get("SUBMITIT_EXECUTOR"):
            return
        from submitit import JobEnvironment

        signum = JobEnvironment._usr_sig()
        handler = signal.getsignal(signum)
        if signum == signal.SIGUSR1 or not callable(handler):
            return  # the trainer's own SIGUSR1 handler stands in for submitit's: nothing to relay
        self.signum, self.submitit_handler = signum, handler
        signal.signal(signum, self._relay)

    def _relay(self, signum: int, frame: Any) -> None:
        self.received = True
        if self.training:
            os.kill(os.getpid(), signal.SIGUSR1)
        elif self.submitit_handler is not None:
            self.submitit_handler(signum, frame)

    @contextlib.contextmanager
    def while_training(self) -> Iterator[None]:
        self.training = True
        try:
            yield
        finally:
            self.training = False

    def requeue_if_preempted(self) -> None:
        if self.submitit_handler is not None and self.received:
            log.info("rung stopped by the preemption signal: requeueing")
            self.submitit_handler(self.signum, None)


class SweepStop:
    """Set when this process is told to stop (SIGTERM/SIGUSR1): remaining rungs do not start.

    One event for the whole sweep: between rungs the sweep's own handler sets it; a rung's
    trainer is handed the same event, so a signal that came while the rung was starting (before
    the trainer's handlers) still stops it at its first step, and one during training stops the
    rungs after it.
    """

    event = threading.Event()


def write_failed(run_dir: Path, error: BaseException) -> None:
    """FAILED marker, unless the trainer wrote its own (it knows the step)."""
    RunDir(run_dir).write_failed_unless_recorded(
        {"error": f"{type(error).__name__}: {error}", "traceback": traceback.format_exc()}
    )


def sweep_job(cfg: DictConfig) -> JobResult:
    """One rung: train it (resuming), or skip it if DONE; never raises for a failing rung."""
    if cfg.rung is None:
        raise LadderError("a sweep job needs rung=<name> (set by `ladder sweep`)")
    rung = find_rung(cfg, cfg.rung)
    run_dir = Path(cfg.ladder.sweep_root) / rung.name
    configure_rung(cfg, rung, run_dir)
    if RunDir(run_dir).is_done():
        log.info("%s: DONE, skipped", rung.name)
        return JobResult(rung.name, "skipped")
    if SweepStop.event.is_set():
        return JobResult(rung.name, "not started")
    gpus = take_rung_gpus(HydraConfig.get().job.num, cfg.ladder.gpus_per_rung) if HydraConfig.initialized() else None
    if gpus is not None:
        log.info("rung job %d (%s): CUDA_VISIBLE_DEVICES=%s", HydraConfig.get().job.num, rung.name, gpus)
    export_distributed_env()
    rank_zero = is_rank_zero()
    relay = PreemptionRelay()
    try:
        from ladder.train import run_training

        if rank_zero:
            RunDir(run_dir).clear_failed()  # a failed rung is retried by a new sweep
        with relay.while_training():
            outcome = run_training(cfg, stop=SweepStop.event, rung=rung)
    except RunBusy as error:  # another process trains it: neither FAILED nor its markers are ours to write
        log.warning("%s: skipped: %s", rung.name, error)
        return JobResult(rung.name, "busy", str(error))
    except Exception as error:  # one failing rung must not stop the others
        log.error("%s failed: %s", rung.name, error)
        if rank_zero:
            write_failed(run_dir, error)
        return JobResult(rung.name, "failed", f"{type(error).__name__}: {error}")
    max_steps = cfg.train.max_steps
    if outcome.status == "stopped" and (max_steps is None or outcome.step < max_steps):
        relay.requeue_if_preempted()  # under submitit: requeued, and this process exits
    return JobResult(rung.name, str(outcome.status))


def submitit_children() -> list[int]:
    """Process ids of this process's submitit jobs (the local launcher's rungs), read from /proc;
    none where there is no /proc."""
    children = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            parent = int(stat.read_text().rsplit(")", 1)[1].split()[1])
            if parent == os.getpid() and b"submitit" in (stat.parent / "cmdline").read_bytes():
                children.append(int(stat.parent.name))
        except (OSError, ValueError, IndexError):
            continue  # a process that ended while we looked
    return children


def signal_jobs(signum: int) -> int:
    """Send `signum` to the local launcher's running rungs; how many got it."""
    sent = 0
    for pid in submitit_children():
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signum)
            sent += 1
    return sent


@contextlib.contextmanager
def stop_between_rungs() -> Iterator[None]:
    """SIGTERM/SIGUSR1 outside a rung's training stop the sweep before its next rung. Under the
    local launcher (rungs in subprocesses) the signal is passed on to them: `kill <sweep pid>`
    makes every running rung checkpoint and stop, as it does in the basic launcher."""

    def request_stop(signum: int, frame: Any) -> None:
        SweepStop.event.set()
        signal_jobs(signum)

    previous = {sig: signal.signal(sig, request_stop) for sig in (signal.SIGTERM, signal.SIGUSR1)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def run_multirun(argv: list[str]) -> None:
    """Run `sweep_job` as the Hydra app `ladder sweep` with command line `argv` (a multirun)."""
    SweepStop.event = threading.Event()
    with stop_between_rungs():
        try:
            run_app("sweep", sweep_job, argv)
        except KeyboardInterrupt:
            # Ctrl-C in a terminal reaches the rungs too; an interrupt sent to this process alone
            # would leave them training unattended: ask them to checkpoint and stop.
            if signal_jobs(signal.SIGTERM):
                log.warning("interrupted: the rungs still running were told to checkpoint and stop")
            raise


def summarize(root: Path, names: list[str], max_steps: int | None) -> tuple[str, int]:
    """The end-of-sweep summary from the run dirs (launchers lose job results on requeue), and the
    exit code: 1 when a rung failed or stopped short of what was asked (its budget, or
    `train.max_steps` for smoke runs), e.g. because a signal stopped it."""
    states = [read_state(root / name, name) for name in names]
    for state in states:
        if state.status in ("running", "partial"):
            state.status = "stopped"  # the launcher has returned: no job of this sweep still runs
    failed = [state for state in states if state.status == "failed"]
    short = [
        state
        for state in states
        if state.status in ("stopped", "pending") and (max_steps is None or (state.step or 0) < max_steps)
    ]
    lines = [f"sweep {root}: " + ", ".join(f"{count} {status}" for status, count in _counts(states).items())]
    for state in states:
        if state.status != "done":
            lines.append(f"  {state.name}: {state.describe()}")
    if short and SweepStop.event.is_set():
        lines.append("stopped by a signal: the same command resumes the sweep")
    elif short:
        lines.append("stopped before the end: the same command resumes these rungs from their checkpoints")
    elif any(state.status == "stopped" for state in states):
        lines.append(f"rungs stopped at train.max_steps={max_steps}; without it the same command trains them on")
    return "\n".join(lines), 1 if failed or short else 0


def _counts(states: list[RungState]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for state in states:
        counts[state.status] = counts.get(state.status, 0) + 1
    return counts


def check_sweep_root(overrides: list[str]) -> None:
    """Refuse a sweep_root that uses Hydra's job state: it is resolved once, before any job exists."""
    register_configs()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base=HYDRA_VERSION):
        try:
            raw = compose(config_name="config", overrides=overrides)
        except (HydraException, OmegaConfBaseException, ValueError):
            return  # compose_config reports the bad override
    sweep_root = OmegaConf.to_container(raw.ladder, resolve=False)["sweep_root"]
    if "${hydra:" in str(sweep_root):
        raise LadderError(
            f"ladder.sweep_root={sweep_root} uses ${{hydra:...}}: the sweep resolves it once, before any "
            "job exists; use a fixed path"
        )


def sweep_file_rungs(root: Path, cfg: DictConfig, launched: list[str]) -> list[str]:
    """The rungs sweep.json lists for `ladder status`: those already listed, the grid's (a sweep
    of some rungs, `ladder.only=[...]`, must not hide the others) and this sweep's."""
    listed = (read_sweep_file(root) or {}).get("rungs")
    names = [n for n in listed if isinstance(n, str)] if isinstance(listed, list) else []
    grid = [rung.name for rung in grid_rungs(cfg) if rung.role == "ladder" or cfg.ladder.train_targets]
    for name in [*grid, *launched]:
        if name not in names:
            names.append(name)
    return names


def check_hydra_choices(argv: list[str]) -> None:
    """Refuse an unknown Hydra group choice (hydra/launcher=nope) before the sweep writes anything."""
    choices = [arg for arg in argv if arg.lstrip("+~").startswith("hydra/") and "=" in arg]
    if not choices:
        return
    register_configs()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base=HYDRA_VERSION):
        try:
            compose(config_name="config", overrides=choices, return_hydra_config=True)
        except (HydraException, OmegaConfBaseException) as error:
            raise LadderError(f"bad Hydra option: {describe_config_error(error)}") from None


SWEEP_USAGE = """usage: ladder sweep ladder=<grid> [OVERRIDES...] [hydra/launcher=local|slurm] [--detach]

Train every rung of a grid into <ladder.sweep_root>/<rung>/ (Hydra multirun over rung names).
Finished rungs (DONE) are skipped, partial ones resume, failures are listed at the end (exit 1).
  ladder.only=[name,...]          train only these rungs
  ladder.train_targets=true|false train the grid's targets too, or not
  hydra/launcher=local            every rung at once, one subprocess each (submitit)
  hydra/launcher=slurm            one SLURM job per rung: hydra.launcher.partition=..., see docs/sweep.md
  --detach                        submit the rungs (local or slurm) and return; `ladder status` follows them
  --cfg hydra                     show the Hydra config (the launcher's settings) and exit"""


def say(text: str, error: bool = False) -> None:
    """Print once (to stderr if `error`): under torchrun every rank runs the sweep, and rank 0
    speaks for them."""
    if is_rank_zero():
        print(text, file=sys.stderr if error else sys.stdout)


def sweep_main(argv: list[str]) -> int:
    if any(arg in ("-h", "--help") for arg in argv):
        print(SWEEP_USAGE)
        return 0
    detach = "--detach" in argv
    argv = [arg for arg in argv if arg != "--detach"]
    config_overrides = [
        a for a in argv if "=" in a and not a.startswith("-") and not a.lstrip("+~").startswith("hydra")
    ]
    if any(a.split("=", 1)[0].lstrip("+~") == "rung" for a in config_overrides):
        raise LadderError("`ladder sweep` sets rung itself; choose rungs with ladder.only=[...]")
    if any(a.lstrip("+~").startswith("hydra.sweep.") for a in argv):
        raise LadderError(
            "`ladder sweep` sets hydra.sweep.dir itself (to each rung's run directory): "
            "move the sweep with ladder.sweep_root=<path>"
        )
    check_sweep_root(config_overrides)
    check_hydra_choices(argv)
    cfg = compose_config(config_overrides)
    rungs = rungs_to_train(cfg)
    if cfg.device == "cuda":
        check_memory(cfg, rungs)  # a rung that cannot fit its GPUs is refused before any job starts
    launcher = next((a.split("=", 1)[1] for a in argv if a.lstrip("+~").startswith("hydra/launcher=")), "basic")
    showing_config = any(arg.split("=", 1)[0] in HYDRA_FLAGS for arg in argv)
    if "slurm" in launcher and not showing_config and shutil.which("srun") is None:
        raise LadderError(
            f"hydra/launcher={launcher} needs SLURM (no srun on PATH): run it on the cluster's login node"
        )
    root = Path(cfg.ladder.sweep_root).resolve()
    names = [rung.name for rung in rungs]
    if detach and not showing_config:
        detached_cluster(launcher)  # before anything is written
        root.mkdir(parents=True, exist_ok=True)
        write_sweep_file(root, cfg.ladder.name, sweep_file_rungs(root, cfg, names))
        hydra_overrides = [a for a in argv if a.lstrip("+~").startswith("hydra")]
        say(submit_detached(config_overrides, hydra_overrides, root, names, launcher, sweep_job))
        return 0
    queued = set() if showing_config else queued_rungs(root)
    done = [name for name in names if RunDir(root / name).is_done()]
    pending = names if showing_config else [name for name in names if name not in done and name not in queued]
    if queued & set(names):
        say(f"sweep {root}: {len(queued & set(names))} rungs are queued by a detached sweep, left to it")
    if not pending:
        say(f"sweep {root}: all {len(names)} rungs are DONE" if not queued else f"sweep {root}: nothing to launch")
        return 0
    if len(pending) < len(names) and done:
        say(f"sweep {root}: {len(done)} of {len(names)} rungs are DONE, skipped")
    if not showing_config:
        check_rungs(cfg, [rung for rung in rungs if rung.name in pending], root)
        if not cfg.tasks.names:  # the fit needs eval rows: say so now, not when `collect` finds none
            say(
                "ladder sweep: warning: no tasks (tasks.names is empty): the rungs will write no eval rows for "
                "`ladder collect` and `ladder fit`; add tasks=cpu, tasks=olmes or tasks.names=[...]",
                error=True,
            )
        root.mkdir(parents=True, exist_ok=True)
        write_sweep_file(root, cfg.ladder.name, sweep_file_rungs(root, cfg, names))
    if "local" in launcher:
        record_visible_gpus()  # each rung's job takes its share (ladder.sweep.launchers)
    run_multirun(
        [
            # Hydra shows a config (--cfg ...) in run mode only: show the first rung's.
            *(["--multirun", f"rung={','.join(pending)}"] if not showing_config else [f"rung={pending[0]}"]),
            # Absolute, so that jobs running elsewhere (SLURM nodes, subprocesses) agree on it.
            f"ladder.sweep_root={root}",
            f"hydra.sweep.dir={root}",
            "hydra.sweep.subdir=${rung}",
            "hydra.job.name=sweep",  # each rung's log: <run dir>/sweep.log
            *[arg for arg in argv if arg.split("=", 1)[0].lstrip("+~") != "ladder.sweep_root"],
        ]
    )
    if showing_config:
        return 0
    summary, code = summarize(root, names, cfg.train.max_steps)
    say(summary)
    if code != 0:  # the summary is the sweep's output; that it fell short is also an error for scripts
        say(f"ladder sweep: {summary.splitlines()[0]}: not every rung got what was asked (listed above)", error=True)
    return code


def check_rungs(cfg: DictConfig, rungs: list[Rung], root: Path) -> None:
    """Before launching: each rung's config as its job will see it, checked as `ladder train` checks
    one (values, batch split, tasks, run directory). A config every rung refuses launches nothing;
    a rung refused alone fails in the sweep and is listed with the others."""
    from ladder.train.loop import check_run

    refusals = []
    for rung in rungs:
        job_cfg = cfg.copy()
        configure_rung(job_cfg, rung, root / rung.name)
        try:
            check_run(job_cfg, rung)
        except LadderError as error:
            refusals.append(f"{rung.name}: {error}")
    if refusals and len(refusals) == len(rungs):
        raise LadderError(f"every rung is refused, nothing launched ({refusals[0]})")
