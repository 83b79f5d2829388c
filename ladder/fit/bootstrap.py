"""Prediction intervals: a bootstrap over ladder runs and checkpoints.

Each replicate (1) resamples the ladder runs with replacement within each model size (so every
size stays represented and the N range is kept), (2) resamples each chosen run's last checkpoints
to form its step-1 point, and its smoothed intermediate checkpoints for step 2, then refits both
steps. All replicates are refitted at once by the vectorised solver, each starting one
Gauss-Newton step from the full-data optimum (step 1 also from the other local optima its grid
found and a generic start, in case a replicate's optimum lies elsewhere; step 2's many points keep
each replicate's optimum next to the full-data one). The
interval is the central `level` quantile range of the replicates' predictions.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ladder.fit import step1 as step1_module
from ladder.fit import step2 as step2_module
from ladder.fit.points import Step1Points, Step2Points
from ladder.fit.step1 import Step1Fit, Step1Problem
from ladder.fit.step2 import Step2Fit, Step2Problem


@dataclass
class BootstrapFits:
    """The refitted parameters of every replicate of one task."""

    step1_problem: Step1Problem
    """the full-data step-1 problem (its reference point decodes the thetas)"""
    step1_theta: np.ndarray
    """conditioned step-1 parameters per replicate [B, 5]"""
    step2_theta: np.ndarray | None
    """step-2 parameters (a, k, L0, b) per replicate [B, 4]; None for a loss-only task"""

    def predict(self, N: float, D: float) -> tuple[np.ndarray, np.ndarray | None]:
        """Per-replicate predicted loss and accuracy at (N, D)."""
        loss = step1_module.predict_theta(self.step1_problem, self.step1_theta, N, D)
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


def bootstrap_task(points1: Step1Points, fit1: Step1Fit, points2: Step2Points | None, fit2: Step2Fit | None,
                   *, replicates: int, delta: float, seed: int | list[int]) -> BootstrapFits:
    """Refit both steps of one task on `replicates` resampled data sets."""
    rng = np.random.default_rng(seed)
    per_run = run_weights(points1.sizes, replicates, rng)
    loss = np.empty((replicates, len(points1.runs)))
    for run, tail in enumerate(points1.tail_loss):
        picks = rng.integers(0, len(tail), size=(replicates, len(tail)))
        loss[:, run] = tail[picks].mean(axis=1)
    problem1 = Step1Problem(points1.N, points1.D, points1.loss, delta)
    generic = problem1.starts()[len(problem1.starts()) // 2]
    others = np.vstack([fit1.alternatives, generic[None, :]])
    theta1 = step1_module.refit_step1(problem1, loss, per_run, fit1.theta, others)
    theta2 = None
    if points2 is not None and fit2 is not None:
        problem2 = Step2Problem(points2.loss, points2.acc, fit2.chance)
        weights = np.ones((replicates, len(problem2.x)))  # the anchor (last) keeps weight 1
        for run in range(len(points1.runs)):
            members = np.flatnonzero(points2.run_index == run)
            if len(members) == 0:
                continue
            counts = rng.multinomial(len(members), np.full(len(members), 1.0 / len(members)), size=replicates)
            weights[:, members] = counts * per_run[:, run : run + 1]
        theta2 = step2_module.refit_step2(problem2, weights, fit2.theta)
    return BootstrapFits(problem1, theta1, theta2)


def interval(values: np.ndarray, level: float) -> tuple[float, float]:
    """Central `level` quantile range of the finite values (NaN, NaN when none)."""
    finite = values[np.isfinite(values)]
    if len(finite) == 0:
        return float("nan"), float("nan")
    tail = (1.0 - level) / 2.0
    low, high = np.quantile(finite, [tail, 1.0 - tail])
    return float(low), float(high)
