"""Prediction intervals: a bootstrap over ladder runs and checkpoints.

Each replicate (1) resamples the ladder runs with replacement within each model size (so every
size stays represented and the N range is kept), (2) resamples each chosen run's last checkpoints
to form its step-1 point, and its smoothed intermediate checkpoints for step 2, then refits both
steps. All replicates are refitted at once by the vectorised solver, each starting one
Gauss-Newton step from the full-data optimum (step 1 also from the other local optima its grid
found and a generic start, in case a replicate's optimum lies elsewhere; step 2's many points keep
each replicate's optimum next to the full-data one). The
interval is the central `level` quantile range of the replicates' predictions.

Methods other than the paper's (methods.py) draw the runs once per replicate for every task (the
shared-exponent law couples the tasks, so a replicate is one resampled ladder), resample each run's
intermediate checkpoints for the checkpoint laws, and combine the laws' replicate predictions as
the method combines its fits. The weights of a replicate multiply each point's Huber term (a point
drawn twice counts twice), as they multiply the squares of step 2.
"""

from __future__ import annotations

from concurrent.futures import Executor
from dataclasses import dataclass
from typing import Any

import numpy as np

from ladder.fit import batched
from ladder.fit import step1 as step1_module
from ladder.fit import step2 as step2_module
from ladder.fit.laws import LawFit
from ladder.fit.methods import SharedFit
from ladder.fit.points import CheckpointPoints, Step1Points, Step2Points
from ladder.fit.step1 import Step1Fit, Step1Problem
from ladder.fit.step2 import Step2Fit, Step2Problem


@dataclass
class BootstrapFits:
    """The refitted parameters of every replicate of one task."""

    step1: list[tuple[Any, np.ndarray]]
    """per step-1 law: (what evaluates it, `.predict(theta, N, D)`; its parameters per replicate [B, P]);
    the method's loss is the geometric mean of the laws' (the one law's when there is one)"""
    step2_theta: np.ndarray | None
    """step-2 parameters (a, k, L0, b) per replicate [B, 4]; None for a loss-only task"""
    run_draws: np.ndarray
    """how often each run (in Step1Points.runs order) was drawn in each replicate [B, R]"""

    def predict(self, N: float, D: float) -> tuple[np.ndarray, np.ndarray | None]:
        """Per-replicate predicted loss and accuracy at (N, D)."""
        losses = [law.predict(theta, N, D) for law, theta in self.step1]
        loss = losses[0] if len(losses) == 1 else np.exp(np.mean(np.log(losses), axis=0))
        if self.step2_theta is None:
            return loss, None
        a, k, L0, b = self.step2_theta.T
        return loss, step2_module.sigmoid(loss, a, k, L0, b)


def run_weights(sizes: list[str], replicates: int, rng: np.random.Generator) -> np.ndarray:
    """How often each run is drawn in each replicate [B, R], resampling within each size."""
    sizes_array = np.array(sizes)
    weights = np.zeros((replicates, len(sizes)))
    for size in dict.fromkeys(sizes):
        members = np.flatnonzero(sizes_array == size)
        draws = rng.integers(0, len(members), size=(replicates, len(members)))
        for position, run in enumerate(members):
            weights[:, run] = (draws == position).sum(axis=1)
    return weights


def tail_means(tails: list[np.ndarray], replicates: int, rng: np.random.Generator) -> np.ndarray:
    """Each run's step-1 point from its last checkpoints resampled with replacement [B, R]."""
    loss = np.empty((replicates, len(tails)))
    for run, tail in enumerate(tails):
        picks = rng.integers(0, len(tail), size=(replicates, len(tail)))
        loss[:, run] = tail[picks].mean(axis=1)
    return loss


def checkpoint_weights(run_index: np.ndarray, per_run: np.ndarray, size: int, rng: np.random.Generator) -> np.ndarray:
    """Weights [B, size] of points that belong to runs (`run_index`, the first points of `size`):
    each run's points resampled with replacement, times the run's own draw count `per_run` [B, R];
    points past `run_index` (step 2's anchor) keep weight 1."""
    replicates = len(per_run)
    weights = np.ones((replicates, size))
    for run in range(per_run.shape[1]):
        members = np.flatnonzero(run_index == run)
        if len(members) == 0:
            continue
        counts = rng.multinomial(len(members), np.full(len(members), 1.0 / len(members)), size=replicates)
        weights[:, members] = counts * per_run[:, run : run + 1]
    return weights


def refit_law(problem, fit, loss: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Refit a step-1 law on resampled data sets [B, P]: from its optimum, its alternatives and a generic start."""
    generic = problem.starts()[len(problem.starts()) // 2]
    others = np.vstack([fit.alternatives.reshape(-1, len(generic)), generic[None, :]])
    return step1_module.refit_step1(problem, loss, weights, fit.theta, others)


def refit_checkpoint_law(law: LawFit, weights: np.ndarray) -> np.ndarray:
    """A checkpoint law refitted on every replicate [B, P] (weights [B, M]), from one Gauss-Newton
    step off the full-data optimum: a thousand points or more leave each replicate's optimum next
    to it. Each replicate is solved on its points of non-zero weight only (about half: a run not
    drawn, a checkpoint not drawn), padded with weight 0 to the longest, by Newton steps on the
    Huber objective (batched.solve's `newton`: with so many points, enough lie inside the Huber
    threshold to give every parameter curvature; 3x fewer evaluations than IRLS to the same optimum),
    damped by the gain ratio (batched.solve's `gain_damping`: a third fewer steps where a floor
    slides to its bound, the replicates' 5% and 95% quantiles unchanged to 1e-8)."""
    problem = law.problem
    log_loss = np.log(problem.loss)
    residual, jacobian = problem.residuals(law.theta[None, :], log_loss[None, :])
    starts = batched.newton_starts(residual, jacobian[0], weights, law.theta, problem.lower, problem.upper, huber=True)
    width = int((weights > 0).sum(axis=1).max())
    points = np.argsort(weights <= 0, axis=1, kind="stable")[:, :width]  # drawn points first
    drawn = np.take_along_axis(weights, points, axis=1)
    drawn_log_loss = log_loss[points]
    refitted, _ = batched.solve(
        lambda theta, rows: problem.residuals(theta, drawn_log_loss[rows], points[rows]),
        starts,
        drawn,
        problem.lower,
        problem.upper,
        huber=True,
        max_iter=step1_module.REFIT_ITERATIONS,
        rtol=1e-12,
        newton=True,
        gain_damping=True,
    )
    return refitted


def refit_step2_replicates(
    points1: Step1Points, points2: Step2Points, fit2: Step2Fit, per_run: np.ndarray, rng: np.random.Generator
) -> np.ndarray:
    """Step 2 refitted on every replicate's runs and resampled checkpoints [B, 4]."""
    problem2 = Step2Problem(points2.loss, points2.acc, fit2.chance)
    weights = checkpoint_weights(points2.run_index, per_run[:, : len(points1.runs)], len(problem2.x), rng)
    return step2_module.refit_step2(problem2, weights, fit2.theta)


def bootstrap_task(
    points1: Step1Points,
    fit1: Step1Fit,
    points2: Step2Points | None,
    fit2: Step2Fit | None,
    *,
    replicates: int,
    delta: float,
    seed: int | list[int],
) -> BootstrapFits:
    """Refit both steps of one task (the paper's method) on `replicates` resampled data sets."""
    rng = np.random.default_rng(seed)
    per_run = run_weights(points1.sizes, replicates, rng)
    loss = tail_means(points1.tail_loss, replicates, rng)
    problem1 = Step1Problem(points1.N, points1.D, points1.loss, delta)
    theta1 = refit_law(problem1, fit1, loss, per_run)
    theta2 = None
    if points2 is not None and fit2 is not None:
        theta2 = refit_step2_replicates(points1, points2, fit2, per_run, rng)
    return BootstrapFits([(problem1, theta1)], theta2, per_run)


def refit_shared_replicates(
    shared: SharedFit,
    points: dict[str, Step1Points],
    per_run: np.ndarray,
    seeds: dict[str, list[int]],
    *,
    pool: Executor | None = None,
    parts: int = 1,
) -> np.ndarray:
    """The shared-exponent law refitted on every replicate, all tasks at once [B, P]: every task's
    runs weighted by the same draws `per_run` [B, R] (the replicate's ladder), each run's step-1
    point from its own resampled last checkpoints (drawn per task from `seeds`). With a `pool`, the
    replicates are split into `parts` shares refitted in its processes (each replicate's refit is
    its own: the same result)."""
    loss = np.concatenate(
        [
            tail_means(points[task].tail_loss, len(per_run), np.random.default_rng(seeds[task]))
            for task in shared.problem.tasks
        ],
        axis=1,
    )
    weights = np.tile(per_run, (1, len(shared.problem.tasks)))
    # From the full-data optimum alone: on the paper's ladder, adding its other optima and a generic
    # start changed no replicate's 7B prediction by 1e-5 and cost 2.5x; Newton steps as for
    # refit_checkpoint_law (a quarter faster than IRLS there, to the same predictions).
    shares = [
        (shared.problem, loss[rows], weights[rows], shared.fit.theta)
        for rows in np.array_split(np.arange(len(per_run)), parts if pool is not None else 1)
    ]
    refits = map(_refit_shared_share, shares) if pool is None else pool.map(_refit_shared_share, shares)
    return np.concatenate(list(refits))


def _refit_shared_share(share: tuple) -> np.ndarray:
    problem, loss, weights, theta = share
    no_others = np.zeros((0, len(theta)))
    return step1_module.refit_step1(problem, loss, weights, theta, no_others, newton=True)


def bootstrap_laws(
    points1: Step1Points,
    laws: dict[str, LawFit],
    checkpoints: CheckpointPoints | None,
    shared_theta: np.ndarray | None,
    points2: Step2Points | None,
    fit2: Step2Fit | None,
    *,
    per_run: np.ndarray,
    seed: list[int],
) -> BootstrapFits:
    """Refit one task's laws (a method other than the paper's) and step 2 on every replicate.

    `per_run` [B, R] (aligned with points1.runs) is the replicate's draw of the ladder, the same for
    every task; the checkpoint laws see one resampling of the task's checkpoints within each run
    (times the run's draws), the shared law's replicates come refitted already (`shared_theta`,
    from refit_shared_replicates), step 2 is resampled as in the paper's bootstrap.
    """
    rng = np.random.default_rng(seed)
    step1 = []
    weights = None
    for name, law in laws.items():
        if name == "shared":
            step1.append((law.problem, shared_theta))
            continue
        if weights is None:
            weights = checkpoint_weights(checkpoints.run_index, per_run, len(checkpoints.loss), rng)
        step1.append((law.problem, refit_checkpoint_law(law, weights)))
    theta2 = None
    if points2 is not None and fit2 is not None:
        theta2 = refit_step2_replicates(points1, points2, fit2, per_run, rng)
    return BootstrapFits(step1, theta2, per_run)


def interval(values: np.ndarray, level: float) -> tuple[float, float]:
    """Central `level` quantile range of the finite values (NaN, NaN when none)."""
    finite = values[np.isfinite(values)]
    if len(finite) == 0:
        return float("nan"), float("nan")
    tail = (1.0 - level) / 2.0
    low, high = np.quantile(finite, [tail, 1.0 - tail])
    return float(low), float(high)
