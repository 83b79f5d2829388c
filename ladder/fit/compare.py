"""Comparing two recipes at the target: is A better than B there, and by how much compute?

Each recipe's ladder is fitted by the pipeline (both steps by the chosen step-1 method, by
default `ensemble` as in `ladder fit`; bootstrap intervals) with the same options and seed. Per task and target:

- the predicted difference pred_A - pred_B (accuracy points) and its interval: the central
  `level` range of the replicate-by-replicate differences. The two fits draw their replicates
  from one seed, so when the ladders have the same rungs (sizes, multipliers, run order)
  replicate i resamples the same rungs of both: a paired bootstrap (`paired` says whether it
  was); otherwise the replicates are independent resamplings, which is valid too, only wider;
- P(A beats B): the share of replicates in which A's prediction is the higher (a tie counts
  half: ladders that share runs tie in the replicates that resample only those). A bootstrap
  share, not a posterior probability: it says how stable the sign is under resampling of the
  ladders, and carries none of the law's own error at the target;
- the effective compute multiplier m: B reaches A's predicted accuracy at the target when
  trained with m times the target's compute, N and D both scaled by sqrt(m):
  Acc_B(sqrt(m) N, sqrt(m) D) = Acc_A(N, D). m > 1: A is worth m times its compute in B's
  recipe. Solved on a log grid of m in [1e-3, 1e3] per replicate (beyond: 0 or inf).

Decision accuracy (DataDecide's question, where the ladders share several sizes): per size, the
share of tasks whose ranking of A and B at that size (the mean over the common multipliers of
the runs' final accuracies) agrees with the ranking at the largest common size.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np
import pandas as pd

from ladder.errors import LadderError
from ladder.fit.bootstrap import interval
from ladder.fit.design import Target
from ladder.fit.pipeline import FitOptions, LadderFit, fit_table

MULTIPLIER_RANGE = (1e-3, 1e3)
MULTIPLIER_STEPS = 1201  # log-spaced: neighbours 1.2% apart
COMPARISON_COLUMNS = (
    "task",
    "target",
    "pred_a",
    "pred_b",
    "diff",
    "diff_lo",
    "diff_hi",
    "p_a_beats_b",
    "multiplier",
    "multiplier_lo",
    "multiplier_hi",
    "replicates",
    "paired",
)


@dataclass
class Comparison:
    """The comparison of two fitted recipes."""

    names: tuple[str, str]
    """the recipes' names (A, B)"""
    fits: tuple[LadderFit, LadderFit]
    """the two fits"""
    rows: pd.DataFrame
    """one row per task x target (COMPARISON_COLUMNS; accuracies and differences in points)"""
    decisions: pd.DataFrame
    """per size below the largest common one: size, N, tasks, agreement with the largest size"""
    replicates: dict[tuple[str, str], np.ndarray]
    """per (task, target), the replicates' differences A - B (points), for plots"""


def split_recipes(
    table: pd.DataFrame, column: str = "recipe", order: list[str] | None = None
) -> tuple[tuple[str, str], pd.DataFrame, pd.DataFrame]:
    """One table with a recipe column -> ((name A, name B), table A, table B)."""
    if column not in table:
        raise LadderError(f"the table has no {column!r} column: give two tables, or --recipe-column")
    values = table[column]
    if values.isna().any():
        raise LadderError(f"column {column!r} has empty values")
    names = list(dict.fromkeys(values.astype(str)))
    if order is not None:
        missing = [name for name in order if name not in names]
        if missing or len(order) != 2:
            raise LadderError(f"--recipes: give two of {', '.join(names)}")
        names = list(order)
    if len(names) != 2:
        raise LadderError(
            f"column {column!r} holds {len(names)} recipes ({', '.join(names)}); compare takes two "
            "(choose them with --recipes A,B)"
        )
    parts = [table[values.astype(str) == name].drop(columns=[column]) for name in names]
    return (names[0], names[1]), parts[0], parts[1]


def _paired(fit_a: LadderFit, fit_b: LadderFit, task: str) -> bool:
    """Whether replicate i of both fits resampled the same rungs: the same runs' N and D, in order."""
    a, b = fit_a.tasks[task].points1, fit_b.tasks[task].points1
    return (
        a.sizes == b.sizes
        and len(a.N) == len(b.N)
        and np.allclose(a.N, b.N, rtol=0.01)
        and np.allclose(a.D, b.D, rtol=0.01)
    )


def _accuracy_along_compute(
    fit: LadderFit, task: str, N: float, D: float, scale: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Accuracy at (sqrt(m) N, sqrt(m) D) for every m in `scale`: full fit [M], replicates [B, M]."""
    task_fit = fit.tasks[task]
    root = np.sqrt(scale)
    point = task_fit.step2.predict(task_fit.step1.predict(N * root, D * root))
    columns = [task_fit.boot.predict(N * r, D * r)[1] for r in root]
    return point, np.stack(columns, axis=1)


def _solve_multiplier(curve: np.ndarray, level: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """Per row, the m where the increasing `curve` [B, M] reaches `level` [B] (log-interpolated);
    0 below the range, inf above it, NaN where undefined."""
    log_scale = np.log(scale)
    result = np.full(len(curve), np.nan)
    for i, (row, target) in enumerate(zip(curve, level)):
        if not (np.isfinite(target) and np.isfinite(row).all()):
            continue
        row = np.maximum.accumulate(row)  # rounding can make a flat curve dip
        if target <= row[0]:
            result[i] = 0.0
        elif target > row[-1]:
            result[i] = math.inf
        else:
            j = int(np.searchsorted(row, target))
            span = row[j] - row[j - 1]
            share = (target - row[j - 1]) / span if span > 0 else 0.0
            result[i] = math.exp(log_scale[j - 1] + share * (log_scale[j] - log_scale[j - 1]))
    return result


def decision_accuracy(fit_a: LadderFit, fit_b: LadderFit) -> pd.DataFrame:
    """Per common size below the largest: the share of tasks whose A-vs-B ranking there (mean over
    the common multipliers of the runs' final accuracy) matches the ranking at the largest size."""
    signs: dict[str, dict[str, float]] = {}
    n_of: dict[str, float] = {}
    for task in fit_a.tasks.keys() & fit_b.tasks.keys():
        a, b = fit_a.tasks[task].points1, fit_b.tasks[task].points1
        rungs_a = {(size, round(d / n, 1)): acc for size, n, d, acc in zip(a.sizes, a.N, a.D, a.acc)}
        rungs_b = {(size, round(d / n, 1)): acc for size, n, d, acc in zip(b.sizes, b.N, b.D, b.acc)}
        common = rungs_a.keys() & rungs_b.keys()
        n_of.update({size: n for size, n in zip(a.sizes, a.N)})
        for size in {size for size, _ in common}:
            gaps = [rungs_a[key] - rungs_b[key] for key in common if key[0] == size]
            if np.isfinite(gaps).all():
                signs.setdefault(size, {})[task] = float(np.sign(np.mean(gaps)))
    columns = ["size", "N", "tasks", "agreement"]
    if len(signs) < 2:
        return pd.DataFrame(columns=columns)
    order = sorted(signs, key=lambda size: n_of[size])
    largest = signs[order[-1]]
    rows = []
    for size in order[:-1]:
        tasks = [task for task in signs[size] if task in largest]
        agree = [signs[size][task] == largest[task] for task in tasks]
        rows.append(
            {
                "size": size,
                "N": n_of[size],
                "tasks": len(tasks),
                "agreement": float(np.mean(agree)) if agree else math.nan,
            }
        )
    return pd.DataFrame(rows, columns=columns)


def compare(
    table_a: pd.DataFrame,
    table_b: pd.DataFrame,
    targets: list[Target],
    options: FitOptions | None = None,
    names: tuple[str, str] = ("A", "B"),
    **overrides,
) -> Comparison:
    """Fit both recipes' ladders and compare their predictions at every target (module docstring)."""
    options = replace(options or FitOptions(), **overrides)
    if options.bootstrap < 20:
        raise LadderError(f"compare needs bootstrap intervals: --bootstrap must be >= 20, got {options.bootstrap}")
    if not targets:
        raise LadderError("compare needs at least one target (--target NAME:N:D)")
    fit_a, fit_b = fit_table(table_a, options), fit_table(table_b, options)
    tasks = [task for task in fit_a.tasks if task in fit_b.tasks]
    if not tasks:
        raise LadderError(f"recipes {names[0]!r} and {names[1]!r} share no task")
    without = [task for task in tasks if fit_a.tasks[task].step2 is None or fit_b.tasks[task].step2 is None]
    if without:
        raise LadderError(f"task(s) {', '.join(without)} have no accuracies in one recipe; compare scores accuracy")
    scale = np.geomspace(*MULTIPLIER_RANGE, MULTIPLIER_STEPS)
    rows, replicates = [], {}
    for target in targets:
        for task in tasks:
            fa, fb = fit_a.tasks[task], fit_b.tasks[task]
            pred_a = float(fa.step2.predict(fa.step1.predict(target.N, target.D)))
            pred_b = float(fb.step2.predict(fb.step1.predict(target.N, target.D)))
            boot_a = fa.boot.predict(target.N, target.D)[1]
            boot_b = fb.boot.predict(target.N, target.D)[1]
            diff = 100.0 * (boot_a - boot_b)
            finite = diff[np.isfinite(diff)]
            point_curve, curves = _accuracy_along_compute(fit_b, task, target.N, target.D, scale)
            multiplier = _solve_multiplier(point_curve[None, :], np.array([pred_a]), scale)[0]
            multipliers = _solve_multiplier(curves, boot_a, scale)
            low, high = _quantile_range(multipliers, options.level)
            diff_lo, diff_hi = interval(diff, options.level)
            replicates[(task, target.name)] = finite
            rows.append(
                {
                    "task": task,
                    "target": target.name,
                    "pred_a": 100 * pred_a,
                    "pred_b": 100 * pred_b,
                    "diff": 100 * (pred_a - pred_b),
                    "diff_lo": diff_lo,
                    "diff_hi": diff_hi,
                    "p_a_beats_b": float(np.mean(finite > 0) + 0.5 * np.mean(finite == 0)) if len(finite) else math.nan,
                    "multiplier": multiplier,
                    "multiplier_lo": low,
                    "multiplier_hi": high,
                    "replicates": len(finite),
                    "paired": _paired(fit_a, fit_b, task),
                }
            )
    return Comparison(
        names,
        (fit_a, fit_b),
        pd.DataFrame(rows, columns=list(COMPARISON_COLUMNS)),
        decision_accuracy(fit_a, fit_b),
        replicates,
    )


def _quantile_range(values: np.ndarray, level: float) -> tuple[float, float]:
    """Central `level` range of the defined values, 0 and inf included (no interpolation across them)."""
    defined = values[~np.isnan(values)]
    if len(defined) == 0:
        return math.nan, math.nan
    tail = (1.0 - level) / 2.0
    low, high = np.quantile(defined, [tail, 1.0 - tail], method="inverted_cdf")
    return float(low), float(high)
