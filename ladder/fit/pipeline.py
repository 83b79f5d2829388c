"""The two-stage fit of a whole results table: every task, every target, with intervals.

`fit_table` selects the ladder runs (sizes, multipliers, reruns), fits step 1 (by the chosen
method, methods.py) and step 2 and the single-step baseline per task, bootstraps prediction
intervals, widens them by the target's extrapolation (calibration.py), predicts every
`role=target` run (with the early-target offset when asked, early.py) and measures
checkpoint-to-checkpoint variance. The result, a `LadderFit`, is what the report layer
(`ladder.report.fit.write_fit_report`) writes out; this module writes no files.
"""

from __future__ import annotations

import math
import multiprocessing
import os
import zlib
from concurrent.futures import Executor, ProcessPoolExecutor
from contextlib import nullcontext
from dataclasses import dataclass, field, replace

import numpy as np
import pandas as pd

from ladder.errors import LadderError
from ladder.fit import methods
from ladder.fit.bootstrap import (
    BootstrapFits,
    bootstrap_laws,
    bootstrap_task,
    interval,
    refit_shared_replicates,
    run_weights,
)
from ladder.fit.calibration import DEFAULT_KAPPA, extrapolation, kappa_interval
from ladder.fit.chain import SingleStepFit, fit_single_step
from ladder.fit.early import early_offset
from ladder.fit.laws import LawFit
from ladder.fit.points import (
    CheckpointPoints,
    Step1Points,
    Step2Points,
    TargetPoint,
    chance_level,
    checkpoint_points,
    size_labels,
    step1_points,
    step2_points,
    target_points,
)
from ladder.fit.step1 import Step1Fit, fit_step1
from ladder.fit.step2 import Step2Fit, fit_step2
from ladder.fit.variance import checkpoint_variance
from ladder.progress import progress
from ladder.results import validate_table

PREDICTION_COLUMNS = (
    "task",
    "target",
    "N",
    "D",
    "pred_loss",
    "pred_loss_lo",
    "pred_loss_hi",
    "actual_loss",
    "loss_rel_err",
    "pred_acc",
    "pred_acc_lo",
    "pred_acc_hi",
    "acc_sd",
    "extrapolation",
    "pred_acc_lo_kappa",
    "pred_acc_hi_kappa",
    "actual_acc",
    "abs_err",
    "rel_err",
    "step2_acc",
    "step2_abs_err",
    "single_step_acc",
    "single_step_abs_err",
)
EARLY_COLUMNS = ("early_points", "early_offset", "early_acc", "early_abs_err")  # with --early-target
PARALLEL_MIN_BOOTSTRAP = 200  # fewer replicates: starting processes costs more than it saves
DEFAULT_WORKERS = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
NEAR_CHANCE_MARGIN = 0.02  # accuracy barely above chance, or rising less than this, carries little signal


@dataclass
class StepOptions:
    """How both steps fit a ladder: the options `ladder fit` shares with the ladders `ladder design` simulates."""

    method: str = methods.DEFAULT_METHOD
    """step-1 method (methods.METHODS): `paper` reproduces the paper, `ensemble` is the default"""
    last_n: int = 5
    """checkpoints averaged into each run's step-1 point (and a target's actual values)"""
    skip_fraction: float = 0.1
    """share of each run's first checkpoints left out of step 2 (and of the checkpoint laws)"""
    window: int = 5
    """trailing moving-average window of step 2"""
    delta: float = 1e-3
    """Huber threshold of step 1 (on log residuals)"""
    level: float = 0.9
    """coverage of the prediction intervals"""
    seed: int = 0
    """bootstrap seed"""

    def check(self) -> None:
        if self.method not in methods.METHODS:
            raise LadderError(f"--method must be one of {', '.join(methods.METHODS)}, got {self.method!r}")
        if self.last_n < 1 or self.window < 1:
            raise LadderError(f"--last-n and --window must be >= 1, got {self.last_n} and {self.window}")
        if self.seed < 0:
            raise LadderError(f"--seed must be >= 0, got {self.seed}")
        if not 0.0 <= self.skip_fraction < 1.0:
            raise LadderError(f"--skip must lie in [0, 1), got {self.skip_fraction}")
        if not 0.0 < self.level < 1.0:
            raise LadderError(f"--level must lie in (0, 1), got {self.level}")
        if not self.delta > 0:
            raise LadderError(f"--delta must be > 0, got {self.delta}")


@dataclass
class FitOptions(StepOptions):
    """What to fit and how (the `ladder fit` options)."""

    sizes: list[str] | None = None
    """ladder sizes to use (the `size` column, or N=<count> without one); None: all"""
    multipliers: list[float] | None = None
    """token multipliers to use; None: all"""
    tasks: list[str] | None = None
    """tasks to fit; None: every task in the table"""
    include_reruns: bool = False
    """use runs marked `rerun` as further ladder runs"""
    chance: float | None = None
    """chance accuracy for tasks with no `chance` column that are not the paper's (default 0.25)"""
    bootstrap: int = 1000
    """bootstrap replicates for the prediction intervals (0: none)"""
    variance_window: int = 10
    """last checkpoints of each run used by the variance analysis"""
    workers: int = DEFAULT_WORKERS
    """processes sharing the bootstrap's refits (the tasks', the shared law's replicates); default one per
    CPU core this process may use; 1: none"""
    kappa: float = DEFAULT_KAPPA
    """accuracy points of error per unit of extrapolation, for the kappa intervals (calibration.py)"""
    early_target: bool = False
    """also predict each target shifted by its early checkpoints' offset (early.py)"""

    def check(self) -> None:
        super().check()
        if not (math.isfinite(self.kappa) and self.kappa >= 0):
            raise LadderError(f"--kappa must be a finite number >= 0, got {self.kappa}")
        if self.variance_window < 2:
            raise LadderError(f"variance_window must be >= 2, got {self.variance_window}")
        if self.bootstrap < 0:
            raise LadderError(f"--bootstrap must be >= 0, got {self.bootstrap}")
        if self.chance is not None and not 0.0 <= self.chance < 1.0:
            raise LadderError(f"--chance must lie in [0, 1), got {self.chance}")
        if self.workers < 1:
            raise LadderError(f"--workers must be >= 1, got {self.workers}")


@dataclass
class TaskFit:
    """Everything fitted for one task."""

    task: str
    """task name"""
    chance: float
    """chance accuracy used by step 2"""
    points1: Step1Points
    """step-1 points (one per ladder run)"""
    step1: Step1Fit | methods.CombinedStep1
    """L(N, D): the paper's fit, or the laws of another method"""
    points2: Step2Points | None = None
    """step-2 points; None for a task without accuracies"""
    step2: Step2Fit | None = None
    """Acc(L); None for a task without accuracies"""
    single: SingleStepFit | None = None
    """single-step baseline; None without accuracies or with fewer runs than its parameters"""
    boot: BootstrapFits | None = None
    """bootstrap refits; None when no bootstrap was asked for"""
    flags: list[str] = field(default_factory=list)
    """warnings about this task's fits"""
    checkpoints: CheckpointPoints | None = None
    """intermediate checkpoints of the checkpoint laws; None for methods without them"""


@dataclass
class LadderFit:
    """The fit of a results table: per-task fits, predictions for its targets, parameters, variance."""

    options: FitOptions
    """the options used"""
    tasks: dict[str, TaskFit]
    """fits per task, in table order"""
    targets: dict[str, list[TargetPoint]]
    """per task, the table's target runs"""
    ladder_runs: list[str]
    """the ladder runs used"""
    variance: pd.DataFrame
    """checkpoint-to-checkpoint variance per run and task"""
    predictions: pd.DataFrame = field(init=False)
    """one row per task x target (PREDICTION_COLUMNS)"""
    params: pd.DataFrame = field(init=False)
    """one row per task: parameters, diagnostics, flags"""

    def __post_init__(self) -> None:
        rows = [
            self._prediction(fit, target) for fit in self.tasks.values() for target in self.targets.get(fit.task, [])
        ]
        self.predictions = pd.DataFrame(rows, columns=self.columns)
        self.params = pd.DataFrame([_param_row(fit) for fit in self.tasks.values()])

    def predict(self, N: float, D: float, name: str = "target") -> pd.DataFrame:
        """Predictions (one row per task) for one model not trained yet (actual columns empty);
        for several, call it once each and `pd.concat` the frames."""
        if np.ndim(N) or np.ndim(D):
            raise LadderError(f"target {name!r}: predict takes one model (numbers N and D); call it once per target")
        if not (math.isfinite(N) and math.isfinite(D) and N > 0 and D > 0):
            raise LadderError(f"target {name!r}: N and D must be finite and > 0")
        nan = math.nan
        rows = []
        for fit in self.tasks.values():
            # A run of that name in the table (one in progress) lends its checkpoints to --early-target.
            history = next((t.history for t in self.targets.get(fit.task, []) if t.run == name), None)
            target = (
                TargetPoint(name, N, D, nan, nan) if history is None else TargetPoint(name, N, D, nan, nan, history)
            )
            rows.append(self._prediction(fit, target))
        return pd.DataFrame(rows, columns=self.columns)

    @property
    def columns(self) -> list[str]:
        """The prediction columns: PREDICTION_COLUMNS, then EARLY_COLUMNS with --early-target."""
        return list(PREDICTION_COLUMNS) + (list(EARLY_COLUMNS) if self.options.early_target else [])

    def _prediction(self, fit: TaskFit, target: TargetPoint) -> dict:
        pred_loss = float(fit.step1.predict(target.N, target.D))
        row = {column: math.nan for column in self.columns}
        row.update(
            task=fit.task,
            target=target.run,
            N=target.N,
            D=target.D,
            pred_loss=pred_loss,
            actual_loss=target.actual_loss,
            loss_rel_err=100 * (pred_loss - target.actual_loss) / target.actual_loss,
            actual_acc=target.actual_acc,
        )
        boot_loss, boot_acc = fit.boot.predict(target.N, target.D) if fit.boot is not None else (None, None)
        if boot_loss is not None:
            row["pred_loss_lo"], row["pred_loss_hi"] = interval(boot_loss, self.options.level)
        if fit.step2 is not None:
            pred_acc = float(fit.step2.predict(pred_loss))
            row.update(
                pred_acc=pred_acc,
                abs_err=100 * (pred_acc - target.actual_acc),
                rel_err=100 * (pred_acc - target.actual_acc) / target.actual_acc,
            )
            row["extrapolation"] = extrapolation(
                target.N, target.D, float(fit.points1.N.max()), float(fit.points1.D.max())
            )
            if boot_acc is not None:
                row["pred_acc_lo"], row["pred_acc_hi"] = interval(boot_acc, self.options.level)
                finite = boot_acc[np.isfinite(boot_acc)]
                if len(finite) > 1:
                    row["acc_sd"] = float(np.std(finite, ddof=1))
                    row["pred_acc_lo_kappa"], row["pred_acc_hi_kappa"] = kappa_interval(
                        pred_acc, row["acc_sd"], row["extrapolation"], self.options.kappa, self.options.level
                    )
            if self.options.early_target:
                offset, count = early_offset(
                    target.history, target.D, fit.step2, self.options.skip_fraction, self.options.window
                )
                row.update(
                    early_points=count,
                    early_offset=offset,
                    early_acc=pred_acc + offset,
                    early_abs_err=100 * (pred_acc + offset - target.actual_acc),
                )
            if math.isfinite(target.actual_loss):
                row["step2_acc"] = float(fit.step2.predict(target.actual_loss))
                row["step2_abs_err"] = 100 * (row["step2_acc"] - target.actual_acc)
        if fit.single is not None:
            row["single_step_acc"] = float(fit.single.predict(target.N, target.D))
            row["single_step_abs_err"] = 100 * (row["single_step_acc"] - target.actual_acc)
        return row


def _param_row(fit: TaskFit) -> dict:
    row = {
        "task": fit.task,
        "chance": fit.chance,
        **{name: math.nan for name in ("A", "alpha", "B", "beta", "E")},
        **fit.step1.as_dict(),
    }
    row.update({name: math.nan for name in ("a", "k", "L0", "b")})
    if fit.step2 is not None:
        row.update(fit.step2.as_dict())
    row.update(
        step1_points=fit.step1.n_points,
        step1_objective=fit.step1.objective,
        step1_rmse_log=fit.step1.rmse_log,
        step1_starts=fit.step1.n_starts,
        step1_converged=fit.step1.converged,
        step1_at_bound=" ".join(fit.step1.at_bound),
        step2_points=fit.step2.n_points if fit.step2 else 0,
        step2_sse=fit.step2.sse if fit.step2 else math.nan,
        step2_rmse=fit.step2.rmse if fit.step2 else math.nan,
        step2_starts=fit.step2.n_starts if fit.step2 else 0,
        step2_converged=fit.step2.converged if fit.step2 else math.nan,
        step2_at_bound=" ".join(fit.step2.at_bound) if fit.step2 else "",
        single_step_sse=fit.single.sse if fit.single else math.nan,
        flags="; ".join(fit.flags),
    )
    return row


def _parse_selection(values: list, available: list, option: str) -> list:
    missing = [value for value in values if value not in available]
    if missing:
        shown = ", ".join(str(v) for v in available)
        raise LadderError(f"{option}: {', '.join(str(m) for m in missing)} not in the table (it has: {shown})")
    return values


def select_ladder(table: pd.DataFrame, options: FitOptions) -> pd.DataFrame:
    """The ladder rows the options select (reruns, sizes, multipliers)."""
    ladder = table[table["role"] == "ladder"]
    if ladder.empty:
        raise LadderError("the table has no ladder runs (role=ladder)")
    if not options.include_reruns and "rerun" in ladder:
        ladder = ladder[~ladder["rerun"].astype(bool)]
    if options.sizes is not None:
        labels = size_labels(ladder)
        available = list(dict.fromkeys(labels[ladder.sort_values("N").index]))
        _parse_selection(options.sizes, available, "--sizes")
        ladder = ladder[labels.isin(options.sizes)]
    if options.multipliers is not None:
        if "multiplier" not in ladder:
            raise LadderError("--multipliers: the table has no 'multiplier' column")
        available = sorted(ladder["multiplier"].dropna().unique().tolist())
        _parse_selection([float(m) for m in options.multipliers], available, "--multipliers")
        ladder = ladder[ladder["multiplier"].isin([float(m) for m in options.multipliers])]
    if ladder.empty:
        raise LadderError("no ladder runs left after selecting --sizes/--multipliers")
    return ladder


def _has_accuracy(rows: pd.DataFrame) -> bool:
    return "acc" in rows and bool(np.isfinite(rows["acc"].to_numpy(dtype=float)).any())


@dataclass
class JointInputs:
    """What a task's fit takes from the fit of the whole ladder (methods other than the paper's)."""

    runs: list[str]
    """every selected ladder run"""
    run_draws: np.ndarray | None
    """bootstrap draws of every run [B, len(runs)], the same for every task; None without bootstrap"""
    shared: LawFit | None = None
    """the task's view of the shared-exponent fit; None when the method has no shared law"""
    shared_theta: np.ndarray | None = None
    """the shared law's bootstrap replicates [B, P]"""


def fit_task(
    task: str,
    ladder: pd.DataFrame,
    chance: float,
    options: FitOptions,
    seed: list[int],
    joint: JointInputs | None = None,
    baselines: dict[str, SingleStepFit | None] | None = None,
) -> TaskFit:
    """Both steps, the baseline and the bootstrap for one task's ladder rows; the baseline is taken
    from `baselines` (by task) when it has the task's."""
    what = f"task {task!r}"
    points1 = step1_points(ladder, options.last_n)
    paper_step1 = None
    if options.method == "paper":
        step1 = paper_step1 = fit_step1(points1.N, points1.D, points1.loss, delta=options.delta, what=what)
        checkpoints = None
    else:
        checkpoints, laws = None, {}
        if methods.uses_checkpoints(options.method):
            checkpoints = checkpoint_points(ladder, points1.runs, options.skip_fraction)
            laws = methods.fit_checkpoint_laws(options.method, checkpoints, options.delta, what)
        if joint.shared is not None:
            laws["shared"] = joint.shared
        step1 = methods.CombinedStep1({name: laws[name] for name in methods.LAWS[options.method]})
    fit = TaskFit(task, chance, points1, step1, checkpoints=checkpoints)
    if not fit.step1.converged:
        fit.flags.append("step 1 did not converge")
    if fit.step1.at_bound:
        fit.flags.append(f"step 1 at bound: {' '.join(fit.step1.at_bound)}")
    if _has_accuracy(ladder):
        fit.points2 = step2_points(ladder, points1.runs, options.skip_fraction, options.window)
        fit.step2 = fit_step2(fit.points2.loss, fit.points2.acc, chance, what=what)
        if not fit.step2.converged:
            fit.flags.append("step 2 did not converge")
        if fit.step2.at_bound:
            fit.flags.append(f"step 2 at bound: {' '.join(fit.step2.at_bound)}")
        points2 = fit.points2
        rise = float(fit.step2.predict(points2.loss.min()) - fit.step2.predict(points2.loss.max()))
        if rise < NEAR_CHANCE_MARGIN or float(np.quantile(points2.acc, 0.9)) < chance + NEAR_CHANCE_MARGIN:
            fit.flags.append("accuracy near chance or flat across the ladder: step 2 is unreliable")
        if baselines is not None and task in baselines:
            fit.single = baselines[task]
        elif np.isfinite(points1.acc).all() and len(points1.runs) >= 5:
            # The baseline starts from the paper's step 1 whatever the method, so it is the same baseline.
            if paper_step1 is None:
                paper_step1 = fit_step1(points1.N, points1.D, points1.loss, delta=options.delta, what=what)
            fit.single = fit_single_step(points1.N, points1.D, points1.acc, paper_step1, fit.step2)
    if options.bootstrap > 0 and options.method == "paper":
        fit.boot = bootstrap_task(
            points1, fit.step1, fit.points2, fit.step2, replicates=options.bootstrap, delta=options.delta, seed=seed
        )
    elif options.bootstrap > 0:
        per_run = joint.run_draws[:, [joint.runs.index(run) for run in points1.runs]]
        fit.boot = bootstrap_laws(
            points1, fit.step1.laws, checkpoints, joint.shared_theta, fit.points2, fit.step2, per_run=per_run, seed=seed
        )
    return fit


def _joint_inputs(
    ladder: pd.DataFrame,
    rows_of: dict[str, pd.DataFrame],
    seeds: dict[str, list[int]],
    options: FitOptions,
    pool: Executor | None,
) -> tuple[JointInputs, dict[str, LawFit]]:
    """The ladder's bootstrap draws (one per run and replicate, shared by every task) and, for a
    method with the shared law, its joint fit and replicates (shared among the `pool`'s workers);
    with each task's view of the fit."""
    runs = ladder.groupby("run").agg(N=("N", "first"), D=("D", "max")).sort_values(["N", "D"]).index.tolist()
    labels = size_labels(ladder).groupby(ladder["run"]).first()
    draws = None
    if options.bootstrap > 0:
        draws = run_weights([str(labels[run]) for run in runs], options.bootstrap, np.random.default_rng(options.seed))
    joint = JointInputs(runs, draws)
    views: dict[str, LawFit] = {}
    if methods.uses_shared(options.method):
        points = {task: step1_points(rows, options.last_n) for task, rows in rows_of.items()}
        shared = methods.fit_shared(points, options.delta, options.method)
        views = {task: shared.task_fit(task) for task in rows_of}
        if draws is not None:
            per_run = draws[:, [runs.index(run) for run in next(iter(points.values())).runs]]
            tails = {task: [*seed, 1] for task, seed in seeds.items()}  # a stream apart from the task's own draws
            joint.shared_theta = refit_shared_replicates(
                shared, points, per_run, tails, pool=pool, parts=options.workers
            )
    return joint, views


def _fit_job(job: tuple) -> TaskFit:
    return fit_task(*job)


def _pool(options: FitOptions) -> ProcessPoolExecutor | nullcontext:
    """Worker processes when the bootstrap makes it worth starting them (else a context of None)."""
    if options.workers < 2 or options.bootstrap < PARALLEL_MIN_BOOTSTRAP:
        return nullcontext()
    methods = multiprocessing.get_all_start_methods()
    context = multiprocessing.get_context("fork" if "fork" in methods else None)
    return ProcessPoolExecutor(max_workers=options.workers, mp_context=context)


def _run_jobs(jobs: list[tuple], pool: Executor | None) -> list[TaskFit]:
    """Fit tasks, in the pool's processes when there is one."""
    if pool is None or len(jobs) < 2:
        fits = (fit_task(*job) for job in jobs)
    else:
        fits = pool.map(_fit_job, jobs)
    return list(progress(fits, total=len(jobs), desc="fit", unit="task", leave=False))


def fit_table(
    table: pd.DataFrame,
    options: FitOptions | None = None,
    *,
    baselines: dict[str, SingleStepFit | None] | None = None,
    **overrides,
) -> LadderFit:
    """Fit every (selected) task of a results table and predict its targets.

    Options come as a FitOptions and/or keyword overrides of its fields, e.g.
    `fit_table(table, sizes=["190M", "370M"], bootstrap=0)`. `baselines`: single-step baselines
    fitted already on the same ladder rows and options, by task (they do not depend on the
    method: a comparison of methods fits them once); a task not in it is fitted here.
    """
    options = replace(options or FitOptions(), **overrides)
    options.check()
    table = validate_table(table)
    ladder = select_ladder(table, options)
    if options.tasks is not None:
        tasks = _parse_selection(options.tasks, list(dict.fromkeys(table["task"])), "--tasks")
    else:
        tasks = list(dict.fromkeys(ladder["task"]))  # a task only targets have cannot be fitted
    targets_rows = table[table["role"] == "target"]
    rows_of = {}
    for task in tasks:
        rows_of[task] = ladder[ladder["task"] == task]
        if rows_of[task].empty:
            raise LadderError(f"task {task!r} has no rows in the selected ladder runs")
    # Seeded by the task's name, so that a task's draws do not depend on the other tasks selected.
    seeds = {task: [options.seed, zlib.crc32(task.encode("utf-8"))] for task in tasks}
    with _pool(options) as pool:
        joint = None if options.method == "paper" else _joint_inputs(ladder, rows_of, seeds, options, pool)
        jobs = []
        for task in tasks:
            task_joint = None if joint is None else replace(joint[0], shared=joint[1].get(task))
            chance = chance_level(table, task, options.chance)
            jobs.append((task, rows_of[task], chance, options, seeds[task], task_joint, baselines))
        fits = dict(zip(tasks, _run_jobs(jobs, pool)))
    targets = {}
    for task in tasks:
        target_rows = targets_rows[targets_rows["task"] == task]
        targets[task] = target_points(target_rows, options.last_n) if not target_rows.empty else []
    used = table[table["task"].isin(tasks) & (table.index.isin(ladder.index) | (table["role"] == "target"))]
    runs = ladder.groupby("run").agg(N=("N", "first"), D=("D", "max")).sort_values(["N", "D"]).index.tolist()
    return LadderFit(options, fits, targets, runs, checkpoint_variance(used, options.variance_window))
