"""Designing a ladder: which grid of rungs is worth its compute, by simulating ladders.

A prior law per task (step 1 L(N, D) and step 2 Acc(L), from an earlier fit) and a noise model
stand in for the ladders not trained yet. For a candidate grid (sizes x token multipliers) with
runs r = (N_r, D_r), each of `sims` simulated ladders has J checkpoints per run at D_r j / J:

    loss[r, j] = L(N_r, D_r j / J) exp(u[size(r)] + w[r] + e[r, j])
    acc[r, j]  = Acc(loss[r, j]) + v[size(r)] + z[r] + e'[r, j]          (clipped to [0, 1])

e ~ N(0, loss_ckpt^2) and e' ~ N(0, acc_ckpt^2) are the checkpoint-to-checkpoint noise, w and z
~ N(0, run^2) the seed-to-seed noise (reruns), u and v ~ N(0, size^2) one deviation of a whole
model size from the law: the part of a real ladder's scatter around its fit that neither
checkpoints nor seeds explain (the law's own error). A target is a size of its own: its truth is
Acc(L(N_t, D_t) exp(u_t)) + v_t, so no grid predicts it better than v_t and u_t allow.

The prior law and the refits follow one step-1 method (methods.py, the default `ensemble` as in
`ladder fit`): L(N, D) above is the method's prediction (for `ensemble`, the geometric mean of its
three laws). Each simulated ladder becomes the pipeline's points (the paper's and the shared law:
the mean of each run's last `last_n` checkpoints at its final D; the checkpoint laws: every
checkpoint after the first `skip_fraction`; step 2: those checkpoints smoothed by a trailing mean
of `window`) and is fitted with the fitter's own kernels, every simulation at once: each law by
`step1.refit_step1` (from its fit to the union's noise-free points, as the bootstrap refits it
from the full-data fit; the shared law couples the tasks, so its refit is one of every task's
ladders together), their predictions combined as the method combines them; step 2 by
`batched.solve` (from the prior law), then chained to the target. Per grid and task the scores are the mean absolute error |pred - truth| in accuracy points, its 90th
percentile, and the width of the central `level` range of pred - truth: the narrowest interval
that would hold the truth as often as its level says. Compute is 6 N D summed over the runs.
`interval_coverage` runs the whole pipeline (bootstrap intervals included) on simulated results
tables, to say how often the intervals `ladder fit` would print hold the truth for a grid.

Starting every refit from the prior law, and a noise model that ignores how checkpoints of one
run are correlated, make the simulated errors a little optimistic; docs/decide.md compares them
with what `ladder backtest` measures on the paper's ladder.
"""

from __future__ import annotations

import itertools
import math
import zlib
from dataclasses import dataclass, field, replace

import numpy as np
import pandas as pd

from ladder.errors import LadderError
from ladder.fit import batched, methods
from ladder.fit import step1 as step1_module
from ladder.fit.laws import SharedProblem
from ladder.fit.pipeline import FitOptions, StepOptions, fit_table
from ladder.fit.points import step1_points, trailing_mean
from ladder.fit.step1 import Step1Problem
from ladder.fit.step2 import Step2Problem, sigmoid, sigmoid_residuals

STEP2_PARAMS = ("a", "k", "L0", "b")
STEP2_ITERATIONS = 60  # simulated step-2 refits start at the prior law, as the bootstrap's do


@dataclass(frozen=True)
class TaskLaw:
    """The prior law of one task: L(N, D) and Acc(L)."""

    task: str
    """task name"""
    step1: dict[str, float]
    """the step-1 method's parameters (`methods.param_names`: A, alpha, B, beta, E for the paper's)"""
    step2: dict[str, float]
    """a, k, L0, b"""
    chance: float
    """the task's chance accuracy"""
    method: str = "paper"
    """the step-1 method whose parameters `step1` holds"""

    def loss(self, N, D) -> np.ndarray:
        return methods.method_loss(self.method, self.step1, N, D)

    def acc(self, loss) -> np.ndarray:
        return sigmoid(loss, *(self.step2[name] for name in STEP2_PARAMS))


@dataclass(frozen=True)
class Noise:
    """Standard deviations of one task's noise: log loss and accuracy (a fraction)."""

    loss_ckpt: float = 0.0
    """checkpoint to checkpoint, log loss"""
    acc_ckpt: float = 0.0
    """checkpoint to checkpoint, accuracy"""
    loss_run: float = 0.0
    """run to run (seeds), log loss"""
    acc_run: float = 0.0
    """run to run (seeds), accuracy"""
    loss_size: float = 0.0
    """a whole size off the law, log loss"""
    acc_size: float = 0.0
    """a whole size off the law, accuracy"""

    def without_law_error(self) -> Noise:
        return replace(self, loss_size=0.0, acc_size=0.0)


@dataclass(frozen=True)
class Size:
    """A candidate model size: a label and its N (a preset's paper N, or given)."""

    label: str
    N: float
    preset: bool


@dataclass(frozen=True)
class Target:
    """A model to predict."""

    name: str
    N: float
    D: float

    @property
    def flops(self) -> float:
        return 6.0 * self.N * self.D


@dataclass(frozen=True)
class Grid:
    """A candidate ladder: every size x every multiplier."""

    sizes: tuple[Size, ...]
    multipliers: tuple[float, ...]
    tokens: tuple[tuple[float, ...], ...]
    """tokens of each run, per size then multiplier"""

    @property
    def runs(self) -> list[tuple[Size, float, float]]:
        """(size, multiplier, D) of every run, sizes from the smallest."""
        return [(size, m, d) for size, row in zip(self.sizes, self.tokens) for m, d in zip(self.multipliers, row)]

    @property
    def flops(self) -> float:
        return sum(6.0 * size.N * d for size, _, d in self.runs)

    @property
    def label(self) -> str:
        return f"{','.join(s.label for s in self.sizes)} x {','.join(f'{m:g}' for m in self.multipliers)}"


@dataclass
class DesignOptions(StepOptions):
    """How ladders are simulated and fitted (the `ladder design` options). Of the fit's options
    (StepOptions), `level` is the central share of pred - truth whose width is reported and `seed`
    the simulations' (the same draws for every grid: common random numbers)."""

    sims: int = 64
    """simulated ladders per grid"""
    checkpoints: int = 40
    """evaluations per simulated run"""
    law_error: bool = True
    """simulate the size-level deviations from the law (False: checkpoint and seed noise only)"""

    def check(self) -> None:
        super().check()
        if self.sims < 8:
            raise LadderError(f"--sims must be >= 8, got {self.sims}")
        if self.checkpoints < max(self.last_n, 2) or self.checkpoints > 1000:
            raise LadderError(f"--checkpoints must lie in [max(2, --last-n), 1000], got {self.checkpoints}")

    def fit_options(self, **fields) -> FitOptions:
        """The options of `ladder fit` that fits these ladders as design does (and `fields`)."""
        return FitOptions(**{name: getattr(self, name) for name in StepOptions.__dataclass_fields__}, **fields)


# ---------------------------------------------------------------- prior laws and noise


def laws_from_params(
    params: pd.DataFrame, source: str = "params.csv", method: str = methods.DEFAULT_METHOD
) -> dict[str, TaskLaw]:
    """Per task, the law of a `params.csv` written by `ladder fit --method METHOD`."""
    step1_params = methods.param_names(method)
    no_law = (
        f"{source}: no step-1 law of --method {method} (fit it with `ladder fit --method {method}`, or give "
        "design the --method of that fit)"
    )
    needed = ("task", "chance", *STEP2_PARAMS)
    missing = [column for column in needed if column not in params]
    if missing:
        raise LadderError(f"{source}: missing column(s) {', '.join(missing)} (is it a params.csv of `ladder fit`?)")
    if any(column not in params for column in step1_params):
        raise LadderError(no_law)
    laws = {}
    for _, row in params.iterrows():
        values = {name: row[name] for name in ("chance", *STEP2_PARAMS, *step1_params)}
        try:
            values = {name: float(value) for name, value in values.items()}
        except (TypeError, ValueError):
            raise LadderError(f"{source}: task {row['task']!r} has a non-numeric parameter") from None
        if not all(math.isfinite(values[name]) for name in step1_params):
            raise LadderError(f"{no_law}: task {row['task']!r} has none")
        if not all(math.isfinite(values[name]) for name in STEP2_PARAMS):
            raise LadderError(f"{source}: task {row['task']!r} has no accuracy law (step 2); design scores accuracy")
        if min(values[name] for name in step1_params if name.split(".")[-1] in ("A", "B", "E")) <= 0:
            raise LadderError(f"{source}: task {row['task']!r}: A, B and E must be > 0")
        laws[str(row["task"])] = TaskLaw(
            str(row["task"]),
            {n: values[n] for n in step1_params},
            {n: values[n] for n in STEP2_PARAMS},
            values["chance"],
            method,
        )
    if not laws:
        raise LadderError(f"{source}: no tasks")
    return laws


def noise_from_variance(
    variance: pd.DataFrame, params: pd.DataFrame, options: DesignOptions, source: str = "variance.csv"
) -> dict[str, Noise]:
    """Noise per task from a fit's `variance.csv` (checkpoint noise: `checkpoint_noise`)
    and `params.csv` (the scatter around the law left over after checkpoint noise is taken as the
    size-level deviation; seed noise cannot be told apart from it there and is counted in it)."""
    needed = ("task", "role", "loss_sd", "loss_rel_sd", "loss_step_change", "acc_step_change")
    missing = [column for column in needed if column not in variance]
    if missing:
        raise LadderError(f"{source}: missing column(s) {', '.join(missing)} (is it a variance.csv of `ladder fit`?)")
    for column in ("step1_rmse_log", "step1_points", "step2_rmse"):
        if column not in params:
            raise LadderError(f"params: missing column {column!r} (is it a params.csv of `ladder fit`?)")
    ladder = variance[variance["role"] == "ladder"]
    noises = {}
    # The step-1 residuals' mean square holds the size-level deviation plus each point's checkpoint
    # noise: a checkpoint law's points are single checkpoints, the others' the mean of last_n.
    per_point = np.mean(
        [1.0 if law in methods.CHECKPOINT_LAWS else 1.0 / options.last_n for law in methods.LAWS[options.method]]
    )
    n_params = len(methods.param_names(options.method)) / len(methods.LAWS[options.method])
    for row in params.itertuples(index=False):
        rows = ladder[ladder["task"] == row.task]
        if rows.empty:
            raise LadderError(f"{source}: no ladder rows for task {row.task!r}")
        loss_ckpt, acc_ckpt = checkpoint_noise(rows)
        points = int(row.step1_points)
        scatter1 = float(row.step1_rmse_log) ** 2 * points / max(points - n_params, 1)
        noises[str(row.task)] = Noise(
            loss_ckpt=loss_ckpt,
            acc_ckpt=acc_ckpt,
            loss_size=math.sqrt(max(0.0, scatter1 - loss_ckpt**2 * per_point)),
            acc_size=math.sqrt(max(0.0, float(row.step2_rmse) ** 2 - acc_ckpt**2 / options.window)),
        )
    return noises


def checkpoint_noise(variance_rows: pd.DataFrame) -> tuple[float, float]:
    """SD of log loss and of accuracy between checkpoints, the median over runs: from the mean
    change between consecutive checkpoints (E|x1 - x2| = 2 sd / sqrt(pi) for independent normal
    noise), which a run's downward trend barely touches, unlike the SD over its last checkpoints."""
    to_sd = math.sqrt(math.pi) / 2.0
    mean_loss = variance_rows["loss_sd"] / variance_rows["loss_rel_sd"]
    loss = float(np.nanmedian(variance_rows["loss_step_change"] / mean_loss)) * to_sd
    acc = float(np.nanmedian(variance_rows["acc_step_change"])) * to_sd
    return loss, acc


def _rerun_pairs(table: pd.DataFrame) -> list[tuple[str, str]]:
    """(original, rerun) run names: a rerun and the non-rerun ladder run of the same N and final D."""
    if "rerun" not in table:
        return []
    ends = (
        table[table["role"] == "ladder"].groupby("run").agg(N=("N", "first"), D=("D", "max"), rerun=("rerun", "first"))
    )
    pairs = []
    for run, end in ends[ends["rerun"]].iterrows():
        same = ends[~ends["rerun"] & (ends["N"] == end["N"]) & (np.abs(ends["D"] / end["D"] - 1.0) < 0.01)]
        if len(same) == 1:
            pairs.append((str(same.index[0]), str(run)))
    return pairs


def laws_and_noise_from_table(table: pd.DataFrame, fit_options=None) -> tuple[dict[str, TaskLaw], dict[str, Noise]]:
    """Fit a results table (no bootstrap) for the prior laws, and measure its noise per task:
    checkpoint noise from `checkpoint_variance` (`checkpoint_noise`), seed noise from its reruns (when it has any),
    and the size-level deviation from the fit's residuals grouped by size, less what the other
    two explain (a method-of-moments estimate from few sizes: rough)."""
    options = replace(fit_options or FitOptions(), bootstrap=0)
    fit = fit_table(table, options)
    pairs = _rerun_pairs(table)
    variance = fit.variance[fit.variance["role"] == "ladder"]
    laws, noises = {}, {}
    for task, task_fit in fit.tasks.items():
        if task_fit.step2 is None:
            raise LadderError(f"task {task!r} has no accuracies; design scores accuracy (select tasks with --tasks)")
        laws[task] = TaskLaw(task, task_fit.step1.as_dict(), task_fit.step2.as_dict(), task_fit.chance, options.method)
        loss_ckpt, acc_ckpt = checkpoint_noise(variance[variance["task"] == task])
        loss_run = acc_run = 0.0
        if pairs:
            task_rows = table[table["task"] == task]
            ends = step1_points(
                task_rows[task_rows["run"].isin([run for pair in pairs for run in pair])], options.last_n
            )
            where = {run: i for i, run in enumerate(ends.runs)}
            loss_diff = np.array([math.log(ends.loss[where[a]] / ends.loss[where[b]]) for a, b in pairs])
            acc_diff = np.array([ends.acc[where[a]] - ends.acc[where[b]] for a, b in pairs])
            loss_run = math.sqrt(max(0.0, np.mean(loss_diff**2) / 2 - loss_ckpt**2 / options.last_n))
            acc_run = math.sqrt(max(0.0, np.nanmean(acc_diff**2) / 2 - acc_ckpt**2 / options.last_n))
        points1, step1 = task_fit.points1, task_fit.step1
        residual1 = np.log(points1.loss) - np.log(step1.predict(points1.N, points1.D))
        point_var1 = loss_run**2 + loss_ckpt**2 / options.last_n
        loss_size = _size_deviation(residual1, np.array(points1.sizes), point_var1, absorbed=2)
        points2 = task_fit.points2
        residual2 = points2.acc - task_fit.step2.predict(points2.loss)
        per_run = pd.Series(residual2).groupby(points2.run_index).mean()
        run_sizes = np.array(points1.sizes)[per_run.index.to_numpy()]
        per_point = len(points2.acc) / max(len(per_run), 1)
        acc_size = _size_deviation(per_run.to_numpy(), run_sizes, acc_run**2 + acc_ckpt**2 / per_point, absorbed=1)
        noises[task] = Noise(loss_ckpt, acc_ckpt, loss_run, acc_run, loss_size, acc_size)
    return laws, noises


def _size_deviation(residuals: np.ndarray, sizes: np.ndarray, point_variance: float, absorbed: int) -> float:
    """SD of a whole size's deviation: the per-size mean residuals' mean square (with `absorbed`
    degrees of freedom taken by the fit) less what the points' own noise puts into each mean."""
    labels = list(dict.fromkeys(sizes))
    if len(labels) <= absorbed:
        return 0.0
    means = np.array([residuals[sizes == label].mean() for label in labels])
    counts = np.array([(sizes == label).sum() for label in labels])
    excess = np.sum(means**2 - point_variance / counts) / (len(labels) - absorbed)
    return math.sqrt(max(0.0, float(excess)))


# ---------------------------------------------------------------- candidate grids


def make_grid(sizes: list[Size], multipliers: list[float]) -> Grid:
    """The grid's runs; a preset's tokens are the rung's (whole batches), others 20 x multiplier x N."""
    from ladder.rungs import chinchilla_tokens, make_rung

    tokens = tuple(
        tuple(
            float(make_rung(size.label, m).tokens) if size.preset else float(chinchilla_tokens(int(size.N), m))
            for m in multipliers
        )
        for size in sizes
    )
    return Grid(tuple(sizes), tuple(multipliers), tokens)


def _subsets(values: list, least: int, exhaustive: bool) -> list[tuple]:
    """Every subset of >= `least` values (`exhaustive`), or every run of >= `least` consecutive ones."""
    if exhaustive:
        return [c for count in range(least, len(values) + 1) for c in itertools.combinations(values, count)]
    return [tuple(values[i:j]) for i in range(len(values)) for j in range(i + least, len(values) + 1)]


def candidate_grids(
    sizes: list[Size],
    multipliers: list[float],
    *,
    min_sizes: int = 3,
    min_multipliers: int = 2,
    exhaustive: bool = False,
) -> list[Grid]:
    """Every run of >= `min_sizes` consecutive sizes (by N) x every run of >= `min_multipliers`
    consecutive multipliers; every subset of each when `exhaustive` (sizes skipped in between)."""
    sizes = sorted(sizes, key=lambda size: size.N)
    multipliers = sorted(multipliers)
    if min_sizes < 2 or min_multipliers < 1:
        raise LadderError(f"--min-sizes must be >= 2 and --min-multipliers >= 1, got {min_sizes} and {min_multipliers}")
    if len(sizes) < min_sizes:
        raise LadderError(f"--sizes: {len(sizes)} candidate size(s), fewer than --min-sizes {min_sizes}")
    if len(set(multipliers)) != len(multipliers) or not all(0 < m < math.inf for m in multipliers):
        raise LadderError("--multipliers: distinct numbers > 0 only")
    if len(multipliers) < min_multipliers:
        raise LadderError(
            f"--multipliers: {len(multipliers)} candidate(s), fewer than --min-multipliers {min_multipliers}"
        )
    return [
        make_grid(list(s), list(m))
        for s in _subsets(sizes, min_sizes, exhaustive)
        for m in _subsets(multipliers, min_multipliers, exhaustive)
    ]


# ---------------------------------------------------------------- simulation


@dataclass
class Draws:
    """Simulated ladders of one grid and task, and the truth at the targets."""

    loss: np.ndarray
    """[S, R, J] task loss of every checkpoint"""
    acc: np.ndarray
    """[S, R, J] accuracy of every checkpoint"""
    D: np.ndarray
    """[R, J] tokens of every checkpoint"""
    truth_loss: np.ndarray
    """[S, T] the targets' loss"""
    truth_acc: np.ndarray
    """[S, T] the targets' accuracy"""


def draw(
    law: TaskLaw, noise: Noise, grid: Grid, targets: list[Target], sims: int, checkpoints: int, rng: np.random.Generator
) -> Draws:
    """`sims` ladders of `grid` and the targets' truths (the model in the module docstring)."""
    runs = grid.runs
    size_index = np.array([grid.sizes.index(size) for size, _, _ in runs])
    N = np.array([size.N for size, _, _ in runs])
    D = np.array([d for _, _, d in runs])[:, None] * (np.arange(1, checkpoints + 1) / checkpoints)[None, :]
    # The targets' deviations are drawn first, so that every grid sees the same truths.
    target_u = rng.normal(0.0, noise.loss_size, (sims, len(targets)))
    target_v = rng.normal(0.0, noise.acc_size, (sims, len(targets)))
    size_u = rng.normal(0.0, noise.loss_size, (sims, len(grid.sizes)))
    size_v = rng.normal(0.0, noise.acc_size, (sims, len(grid.sizes)))
    run_w = rng.normal(0.0, noise.loss_run, (sims, len(runs)))
    run_z = rng.normal(0.0, noise.acc_run, (sims, len(runs)))
    shift = size_u[:, size_index] + run_w
    loss = law.loss(N[:, None], D)[None] * np.exp(
        shift[:, :, None] + rng.normal(0.0, noise.loss_ckpt, (sims, len(runs), checkpoints))
    )
    offset = size_v[:, size_index] + run_z
    acc = np.clip(law.acc(loss) + offset[:, :, None] + rng.normal(0.0, noise.acc_ckpt, loss.shape), 0.0, 1.0)
    target_loss = law.loss(np.array([t.N for t in targets]), np.array([t.D for t in targets]))[None] * np.exp(target_u)
    target_acc = np.clip(law.acc(target_loss) + target_v, 0.0, 1.0)
    return Draws(loss, acc, D, target_loss, target_acc)


def run_positions(union: Grid, grid: Grid) -> np.ndarray:
    """Where each run of `grid` sits among the runs of `union` (a grid holding it)."""
    where = {(size.label, m): i for i, (size, m, _) in enumerate(union.runs)}
    try:
        return np.array([where[(size.label, m)] for size, m, _ in grid.runs])
    except KeyError as missing:
        raise LadderError(f"grid {grid.label}: run {missing} is not among the simulated runs") from None


def _law_points(law: str, union: Grid, draws: Draws, options: DesignOptions):
    """A step-1 law's points of every run of `union`: (N [M], D [M], simulated loss [S, M], run of each point [M])."""
    sims, n_runs, checkpoints = draws.loss.shape
    N = np.array([size.N for size, _, _ in union.runs])
    if law in methods.CHECKPOINT_LAWS:
        skip = math.ceil(options.skip_fraction * checkpoints)
        kept = checkpoints - skip
        loss = draws.loss[:, :, skip:].reshape(sims, -1)
        return np.repeat(N, kept), draws.D[:, skip:].reshape(-1), loss, np.repeat(np.arange(n_runs), kept)
    last_n = min(options.last_n, checkpoints)
    return N, draws.D[:, -1], draws.loss[:, :, -last_n:].mean(axis=2), np.arange(n_runs)


def _refit(problem, loss: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """A step-1 law (`problem`, on the noise-free points of every candidate run) refitted on every
    grid x simulated ladder [G * S, P], grid-major: loss [S, M], mask [G, M] (1 on the points of
    the runs a grid has, 0 elsewhere), from the law's fit to the noise-free points of every run.

    The paper's law, as the bootstrap refits it, also from a generic start, every grid in one batch
    (a grid's points weighted 1, the others 0). The other laws, as the bootstrap refits them, by
    Newton steps from that fit alone (a generic start too moved the paper data's expected errors by
    at most 0.03 points, on grids of 6-12 runs, for 1.5x the time), each grid on its own points
    (`step1.subset`, same parametrisation): their hundreds of points make that 1.2-1.9x faster
    than weighting them 0, where the paper law's 25 make one batch 3x faster than 60."""
    prior = step1_module.fit_problem(problem, "design: the prior law's noise-free ladder")
    if isinstance(problem, Step1Problem):
        starts = problem.starts()
        weights = np.repeat(mask, len(loss), axis=0)
        return step1_module.refit_step1(
            problem, np.tile(loss, (len(mask), 1)), weights, prior.theta, starts[len(starts) // 2][None, :]
        )
    thetas = []
    for row in mask:
        points = np.flatnonzero(row)
        part = step1_module.subset(problem, points)
        ones = np.ones((len(loss), len(points)))
        no_others = np.zeros((0, len(prior.theta)))
        thetas.append(step1_module.refit_step1(part, loss[:, points], ones, prior.theta, no_others, newton=True))
    return np.concatenate(thetas)


def _at_targets(predict, theta: np.ndarray, targets: list[Target], n_grids: int) -> np.ndarray:
    """`predict(theta, N, D)` at every target, [G, S, T]."""
    return np.stack([predict(theta, t.N, t.D) for t in targets], axis=1).reshape(n_grids, -1, len(targets))


def _shared_predictions(
    laws: dict[str, TaskLaw], union: Grid, draws: dict[str, Draws], mask: np.ndarray, targets: list[Target], options
) -> dict[str, np.ndarray]:
    """Per task, the shared-exponent law's predicted loss [G, S, T], refitted on every task's
    simulated ladders at once (the law couples the tasks, as in `ladder fit`)."""
    tasks = list(laws)
    points = {task: _law_points("shared", union, draws[task], options) for task in tasks}
    N, D, _, _ = points[tasks[0]]
    problem = SharedProblem(
        np.tile(N, len(tasks)),
        np.tile(D, len(tasks)),
        np.concatenate([laws[task].loss(N, D) for task in tasks]),
        np.repeat(np.arange(len(tasks)), len(N)),
        tasks,
        options.delta,
    )
    loss = np.concatenate([points[task][2] for task in tasks], axis=1)
    theta = _refit(problem, loss, np.tile(mask, (1, len(tasks))))
    return {
        task: _at_targets(lambda th, n, d, i=i: problem.predict_task(th, i, n, d), theta, targets, len(mask))
        for i, task in enumerate(tasks)
    }


def step2_predictions(
    law: TaskLaw, union: Grid, draws: Draws, grids: list[Grid], pred_loss: np.ndarray, options: DesignOptions
) -> np.ndarray:
    """Every grid's predicted accuracy [G, S, T] at its predicted loss `pred_loss` [G, S, T]: step 2
    refitted on each grid's smoothed checkpoints of every simulated ladder, from the prior law."""
    sims, _, checkpoints = draws.loss.shape
    skip = math.ceil(options.skip_fraction * checkpoints)
    smoothed_loss = trailing_mean(draws.loss[:, :, skip:], options.window)
    smoothed_acc = trailing_mean(draws.acc[:, :, skip:], options.window)
    pred_acc = np.empty_like(pred_loss)
    for g, grid in enumerate(grids):
        where = run_positions(union, grid)
        x = np.concatenate([smoothed_loss[:, where].reshape(sims, -1), np.zeros((sims, 1))], axis=1)  # + the anchor
        y = np.concatenate([smoothed_acc[:, where].reshape(sims, -1), np.ones((sims, 1))], axis=1)
        problem2 = Step2Problem(x[:, :-1].max(axis=0), y[0, :-1], law.chance)
        theta2_0 = np.clip([law.step2[name] for name in STEP2_PARAMS], problem2.lower, problem2.upper)
        theta2, _ = batched.solve(
            lambda t, rows, x=x, y=y: sigmoid_residuals(t, x[rows], y[rows]),
            np.tile(theta2_0, (sims, 1)),
            np.ones_like(x),
            problem2.lower,
            problem2.upper,
            huber=False,
            max_iter=STEP2_ITERATIONS,
            rtol=1e-8,
        )
        a, k, L0, b = (theta2[:, i : i + 1] for i in range(4))
        pred_acc[g] = sigmoid(pred_loss[g], a, k, L0, b)
    return pred_acc


def fit_draws(
    laws: dict[str, TaskLaw],
    union: Grid,
    draws: dict[str, Draws],
    grids: list[Grid],
    targets: list[Target],
    options: DesignOptions,
    progress=None,
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Fit every grid on every simulated ladder of every task as the pipeline would, and predict
    the targets: per task (loss, acc), each [G, S, T].

    Step 1: the method's laws refitted, combined as the method combines them. The draws are of
    `union` (every candidate run); a grid's ladder is its runs of the same draw, so all grids see
    the same noise (common random numbers). Each law's refits of every grid and simulation run in
    one batch: a grid's fit is the union's with weight 0 on the runs it lacks.
    """
    mask = np.zeros((len(grids), len(union.runs)))
    for g, grid in enumerate(grids):
        mask[g, run_positions(union, grid)] = 1.0
    logs: dict[str, list[np.ndarray]] = {task: [] for task in laws}
    for name in methods.LAWS[options.method]:
        if name == "shared":
            for task, loss in _shared_predictions(laws, union, draws, mask, targets, options).items():
                logs[task].append(np.log(loss))
        else:
            for task, law in laws.items():
                N, D, loss, run = _law_points(name, union, draws[task], options)
                problem = methods.CHECKPOINT_LAWS.get(name, Step1Problem)(N, D, law.loss(N, D), options.delta)
                theta = _refit(problem, loss, mask[:, run])
                logs[task].append(np.log(_at_targets(problem.predict, theta, targets, len(grids))))
        if progress is not None:
            progress(f"step 1, {name} law refitted")
    pred_loss = {task: np.exp(np.mean(values, axis=0)) for task, values in logs.items()}
    return {
        task: (pred_loss[task], step2_predictions(law, union, draws[task], grids, pred_loss[task], options))
        for task, law in laws.items()
    }


# ---------------------------------------------------------------- scoring


@dataclass
class DesignResult:
    """Every candidate grid scored: per grid (`grids`) and per grid x task x target (`tasks`)."""

    grids: pd.DataFrame
    """one row per grid: grid, sizes, multipliers, runs, flops, share, expected_abs_err, p90_abs_err,
    width, within_budget, pareto, chosen"""
    tasks: pd.DataFrame
    """one row per grid x task x target: abs errors, bias, width (accuracy points), loss error (%)"""
    options: DesignOptions
    """the options used"""
    targets: list[Target]
    """the targets"""
    chosen: Grid | None = None
    """the recommended grid (None when no grid fits the budget)"""
    candidates: list[Grid] = field(default_factory=list)
    """the grids, in the order of `grids`"""


def _seed(options: DesignOptions, task: str) -> list[int]:
    return [options.seed, zlib.crc32(task.encode("utf-8"))]


def union_grid(grids: list[Grid]) -> Grid:
    """The grid of every size and multiplier of `grids` (every candidate run)."""
    sizes = sorted({size for grid in grids for size in grid.sizes}, key=lambda size: size.N)
    return make_grid(sizes, sorted({m for grid in grids for m in grid.multipliers}))


def score_rows(
    task: str,
    draws: Draws,
    pred_loss: np.ndarray,
    pred_acc: np.ndarray,
    grids: list[Grid],
    targets: list[Target],
    options: DesignOptions,
) -> list[dict]:
    """Rows of `DesignResult.tasks` for one task and every grid, from its predictions [G, S, T]."""
    error = 100.0 * (pred_acc - draws.truth_acc[None])
    loss_error = 100.0 * (pred_loss / draws.truth_loss[None] - 1.0)
    tail = (1.0 - options.level) / 2.0
    rows = []
    for g, grid in enumerate(grids):
        for t, target in enumerate(targets):
            finite = error[g, :, t][np.isfinite(error[g, :, t])]
            low, high = np.quantile(finite, [tail, 1.0 - tail])
            rows.append(
                {
                    "grid": grid.label,
                    "task": task,
                    "target": target.name,
                    "abs_err": float(np.mean(np.abs(finite))),
                    "p90_abs_err": float(np.quantile(np.abs(finite), 0.9)),
                    "bias": float(np.mean(finite)),
                    "width": float(high - low),
                    "loss_abs_rel_err": float(np.nanmean(np.abs(loss_error[g, :, t]))),
                    "failed_fits": int(error.shape[1] - len(finite)),
                }
            )
    return rows


def pareto_front(flops: np.ndarray, error: np.ndarray) -> np.ndarray:
    """True where no other grid is at most as costly and at most as wrong, and better in one."""
    front = np.ones(len(flops), dtype=bool)
    for i in range(len(flops)):
        dominated = (flops <= flops[i]) & (error <= error[i]) & ((flops < flops[i]) | (error < error[i]))
        front[i] = not dominated.any()
    return front


def design(
    laws: dict[str, TaskLaw],
    noises: dict[str, Noise],
    candidates: list[Grid],
    targets: list[Target],
    *,
    options: DesignOptions | None = None,
    budget_flops: float | None = None,
    tolerance: float = 0.1,
    progress=None,
) -> DesignResult:
    """Score every candidate grid; choose the lowest expected error within the budget, or without
    a budget the cheapest grid whose expected error is within `tolerance` (a share) of the lowest."""
    options = options or DesignOptions()
    options.check()
    if not candidates:
        raise LadderError("no candidate grids")
    if not targets:
        raise LadderError("design needs at least one target (--target NAME:N:D)")
    missing = [task for task in laws if task not in noises]
    if missing:
        raise LadderError(f"no noise model for task(s) {', '.join(missing)}")
    union = union_grid(candidates)
    draws = {
        task: draw(
            law,
            noises[task] if options.law_error else noises[task].without_law_error(),
            union,
            targets,
            options.sims,
            options.checkpoints,
            np.random.default_rng(_seed(options, task)),
        )
        for task, law in laws.items()
    }
    fitted = fit_draws(laws, union, draws, candidates, targets, options, progress)
    task_rows = []
    for task, (pred_loss, pred_acc) in fitted.items():
        task_rows += score_rows(task, draws[task], pred_loss, pred_acc, candidates, targets, options)
    tasks = pd.DataFrame(task_rows)
    per_grid = tasks.groupby("grid", sort=False)[["abs_err", "p90_abs_err", "width"]].mean()
    target_flops = sum(t.flops for t in targets)
    grids = pd.DataFrame(
        {
            "grid": [g.label for g in candidates],
            "sizes": [",".join(s.label for s in g.sizes) for g in candidates],
            "multipliers": [",".join(f"{m:g}" for m in g.multipliers) for g in candidates],
            "runs": [len(g.runs) for g in candidates],
            "flops": [g.flops for g in candidates],
        }
    )
    grids["share"] = grids["flops"] / target_flops
    grids["expected_abs_err"] = per_grid["abs_err"].to_numpy()
    grids["p90_abs_err"] = per_grid["p90_abs_err"].to_numpy()
    grids["width"] = per_grid["width"].to_numpy()
    grids["within_budget"] = True if budget_flops is None else grids["flops"] <= budget_flops * (1 + 1e-9)
    grids["pareto"] = pareto_front(grids["flops"].to_numpy(), grids["expected_abs_err"].to_numpy())
    grids["chosen"] = False
    chosen = None
    allowed = grids[grids["within_budget"]]
    if not allowed.empty:
        if budget_flops is None:
            good = allowed[allowed["expected_abs_err"] <= allowed["expected_abs_err"].min() * (1 + tolerance)]
            index = good.sort_values(["flops", "expected_abs_err"]).index[0]
        else:
            index = allowed.sort_values(["expected_abs_err", "flops"]).index[0]
        grids.loc[index, "chosen"] = True
        chosen = candidates[index]
    return DesignResult(grids, tasks, options, targets, chosen, list(candidates))


# ---------------------------------------------------------------- the whole pipeline on simulated tables


def simulated_table(
    laws: dict[str, TaskLaw],
    noises: dict[str, Noise],
    grid: Grid,
    targets: list[Target],
    checkpoints: int,
    rng: np.random.Generator,
) -> tuple[pd.DataFrame, dict[str, np.ndarray]]:
    """One simulated results table of `grid` (every task), and per task the targets' true accuracy [T]."""
    frames, truths = [], {}
    steps = np.arange(1, checkpoints + 1)
    for task, law in laws.items():
        draws = draw(law, noises[task], grid, targets, 1, checkpoints, rng)
        truths[task] = draws.truth_acc[0]
        for r, (size, multiplier, _) in enumerate(grid.runs):
            frames.append(
                pd.DataFrame(
                    {
                        "run": f"{size.label}-{multiplier:g}xC",
                        "role": "ladder",
                        "N": int(size.N),
                        "D": draws.D[r],
                        "step": steps,
                        "task": task,
                        "loss": draws.loss[0, r],
                        "acc": draws.acc[0, r],
                        "size": size.label,
                        "multiplier": multiplier,
                        "chance": law.chance,
                    }
                )
            )
    return pd.concat(frames, ignore_index=True), truths


def interval_coverage(
    laws: dict[str, TaskLaw],
    noises: dict[str, Noise],
    grid: Grid,
    targets: list[Target],
    options: DesignOptions,
    *,
    sims: int = 10,
    bootstrap: int = 200,
    progress=None,
) -> pd.DataFrame:
    """How often `ladder fit`'s bootstrap intervals hold the simulated truth: per task and target,
    over `sims` simulated tables fitted by the pipeline itself. Columns: task, target, sims,
    coverage (share), median_width (points), mean_abs_err (points)."""
    fit_options = options.fit_options(bootstrap=bootstrap)
    rng = np.random.default_rng([options.seed, sims, bootstrap])
    noises = noises if options.law_error else {task: noise.without_law_error() for task, noise in noises.items()}
    rows = []
    for done in range(sims):
        if progress is not None:
            progress(done)
        table, truths = simulated_table(laws, noises, grid, targets, options.checkpoints, rng)
        fit = fit_table(table, fit_options)
        for t, target in enumerate(targets):
            predictions = fit.predict(target.N, target.D, target.name)
            for row in predictions.itertuples(index=False):
                truth = truths[row.task][t]
                rows.append(
                    {
                        "task": row.task,
                        "target": target.name,
                        "inside": row.pred_acc_lo <= truth <= row.pred_acc_hi,
                        "width": 100 * (row.pred_acc_hi - row.pred_acc_lo),
                        "abs_err": 100 * abs(row.pred_acc - truth),
                    }
                )
    frame = pd.DataFrame(rows)
    return (
        frame.groupby(["task", "target"], sort=False)
        .agg(
            sims=("inside", "size"),
            coverage=("inside", "mean"),
            median_width=("width", "median"),
            mean_abs_err=("abs_err", "mean"),
        )
        .reset_index()
    )


def sizes_of(labels: list[str]) -> list[Size]:
    """Candidate sizes from presets (`190M`) or `LABEL=N` (`s1=2e7`)."""
    from ladder.sizes import PRESETS, get_shape, paper_params

    sizes = []
    for text in labels:
        if "=" in text:
            label, _, value = text.partition("=")
            try:
                n = float(value.replace("_", ""))
            except ValueError:
                raise LadderError(f"--sizes: {text!r}: N must be a number (LABEL=N, e.g. s1=2e7)") from None
            if not label or not math.isfinite(n) or n <= 0:
                raise LadderError(f"--sizes: {text!r}: expected LABEL=N with N > 0")
            sizes.append(Size(label, n, False))
        elif text in PRESETS:
            sizes.append(Size(text, float(paper_params(get_shape(text))), True))
        else:
            raise LadderError(f"--sizes: {text!r} is not a preset ({', '.join(PRESETS)}) nor LABEL=N")
    labels_seen = [size.label for size in sizes]
    if len(set(labels_seen)) != len(labels_seen):
        raise LadderError("--sizes: a size is named twice")
    return sizes
