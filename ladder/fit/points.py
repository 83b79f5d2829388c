"""From the results table to the points each fitting step uses.

Step 1 takes one point per ladder run: the mean of its last `last_n` checkpoints, at the D of its
last checkpoint; the checkpoint laws (methods other than the paper's) take every checkpoint of
every run after dropping the first `skip_fraction` of each (rounded up), unsmoothed, at its own D. Step 2 takes every checkpoint of every ladder run after dropping the first
`skip_fraction` of each run's checkpoints (rounded up), smoothed by a trailing moving average of
`window` checkpoints on loss and accuracy alike; the first points of a run average the fewer
checkpoints there are (the paper's data preparation, which keeps every point). A target's "actual" values
are the mean of its last `last_n` checkpoints (the OLMo 7B export has a single row).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from ladder.errors import LadderError

# Chance accuracy of the paper's tasks (1 / number of choices); other tasks: a `chance` column or a default.
PAPER_CHANCE = {
    "mmlu": 0.25,
    "hellaswag": 0.25,
    "arc_challenge": 0.25,
    "arc_easy": 0.25,
    "piqa": 0.5,
    "csqa": 0.2,
    "socialiqa": 1 / 3,
    "openbookqa": 0.25,
}
DEFAULT_CHANCE = 0.25


@dataclass
class Step1Points:
    """One point per ladder run, for the loss fit L(N, D)."""

    runs: list[str]
    """run names, in point order"""
    sizes: list[str]
    """size label of each run (its `size` column, else its N)"""
    N: np.ndarray
    """parameters of each run"""
    D: np.ndarray
    """tokens at each run's last checkpoint"""
    loss: np.ndarray
    """mean task loss over the last checkpoints"""
    acc: np.ndarray
    """mean accuracy over the last checkpoints (NaN without accuracies)"""
    tail_loss: list[np.ndarray]
    """each run's last losses (what the bootstrap resamples)"""
    tail_acc: list[np.ndarray]
    """each run's last accuracies"""


@dataclass
class Step2Points:
    """Smoothed intermediate checkpoints of the ladder runs, for the sigmoid Acc(L)."""

    loss: np.ndarray
    """task loss after the moving average"""
    acc: np.ndarray
    """accuracy after the moving average"""
    run_index: np.ndarray
    """index into Step1Points.runs of each point's run"""


@dataclass
class CheckpointPoints:
    """Every checkpoint of the ladder runs after the first part of each, for the checkpoint laws."""

    N: np.ndarray
    """parameters of each point's run"""
    D: np.ndarray
    """tokens at the checkpoint"""
    loss: np.ndarray
    """task loss at the checkpoint (not smoothed)"""
    run_index: np.ndarray
    """index into Step1Points.runs of each point's run"""


@dataclass
class TargetPoint:
    """A run to predict: where it is (N, D) and, when trained, what it scored."""

    run: str
    """target name"""
    N: float
    """parameters"""
    D: float
    """tokens"""
    actual_loss: float
    """mean task loss over its last checkpoints (NaN when not trained)"""
    actual_acc: float
    """mean accuracy over its last checkpoints (NaN when not trained or no accuracy)"""
    history: np.ndarray = field(default_factory=lambda: np.empty((0, 3)), repr=False)
    """its checkpoints in step order, rows (D, loss, acc) (the early-target offset reads the first ones)"""


def chance_level(table: pd.DataFrame, task: str, default: float | None = None) -> float:
    """The task's `chance` column if present, else the paper's value, else `default` (0.25 if None)."""
    if "chance" in table:
        values = table.loc[table["task"] == task, "chance"].dropna().unique()
        if len(values) > 1:
            levels = ", ".join(f"{value:g}" for value in sorted(values))
            raise LadderError(f"task {task!r} has more than one chance level: {levels}")
        if len(values) == 1:
            return float(values[0])
    if task in PAPER_CHANCE:
        return PAPER_CHANCE[task]
    return DEFAULT_CHANCE if default is None else float(default)


def size_labels(table: pd.DataFrame) -> pd.Series:
    """Each row's size label: the `size` column, or N written out when there is none."""
    by_n = table["N"].map(lambda n: f"N={n}")
    if "size" not in table:
        return by_n
    return table["size"].where(table["size"].notna(), by_n)


def _rows_by_run(rows: pd.DataFrame) -> list[tuple[str, pd.DataFrame]]:
    # Ordered by N then D so that points, plots and reports read from small to large.
    order = rows.groupby("run").agg(N=("N", "first"), D=("D", "max")).sort_values(["N", "D"]).index
    groups = dict(tuple(rows.sort_values("step").groupby("run")))
    return [(run, groups[run]) for run in order]


def step1_points(ladder_rows: pd.DataFrame, last_n: int = 5) -> Step1Points:
    """One point per run from one task's ladder rows."""
    runs, sizes, n, d, loss, acc, tail_loss, tail_acc = [], [], [], [], [], [], [], []
    labels = size_labels(ladder_rows)
    for run, rows in _rows_by_run(ladder_rows):
        tail = rows.tail(last_n)
        runs.append(run)
        sizes.append(str(labels[rows.index[0]]))
        n.append(float(rows["N"].iloc[0]))
        d.append(float(tail["D"].iloc[-1]))
        tail_loss.append(tail["loss"].to_numpy(dtype=float))
        tail_acc.append(tail["acc"].to_numpy(dtype=float) if "acc" in tail else np.full(len(tail), np.nan))
        loss.append(tail_loss[-1].mean())
        acc.append(tail_acc[-1].mean())
    return Step1Points(runs, sizes, np.array(n), np.array(d), np.array(loss), np.array(acc), tail_loss, tail_acc)


def trailing_mean(values: np.ndarray, window: int) -> np.ndarray:
    """Mean of each value and the `window - 1` before it (fewer at the start), along the last axis:
    same shape as `values`."""
    values = np.asarray(values, dtype=float)
    sums = np.cumsum(np.concatenate([np.zeros(values.shape[:-1] + (1,)), values], axis=-1), axis=-1)
    ends = np.arange(1, values.shape[-1] + 1)
    starts = np.maximum(ends - max(window, 1), 0)
    return (sums[..., ends] - sums[..., starts]) / (ends - starts)


def step2_points(
    ladder_rows: pd.DataFrame, runs: list[str], skip_fraction: float = 0.1, window: int = 5
) -> Step2Points:
    """Intermediate checkpoints of each run (in `runs` order): drop the first part, smooth."""
    losses, accs, index = [], [], []
    by_run = dict(tuple(ladder_rows.sort_values("step").groupby("run")))
    for position, run in enumerate(runs):
        rows = by_run[run]
        rows = rows[np.isfinite(rows["acc"].to_numpy(dtype=float))]
        rows = rows.iloc[math.ceil(skip_fraction * len(rows)) :]
        if rows.empty:
            continue
        smoothed_loss = trailing_mean(rows["loss"].to_numpy(), window)
        losses.append(smoothed_loss)
        accs.append(trailing_mean(rows["acc"].to_numpy(), window))
        index.append(np.full(len(smoothed_loss), position))
    if not losses:
        return Step2Points(np.empty(0), np.empty(0), np.empty(0, dtype=int))
    return Step2Points(np.concatenate(losses), np.concatenate(accs), np.concatenate(index))


def checkpoint_points(ladder_rows: pd.DataFrame, runs: list[str], skip_fraction: float = 0.1) -> CheckpointPoints:
    """Every checkpoint of each run (in `runs` order) after dropping its first `skip_fraction` (rounded up)."""
    n, d, loss, index = [], [], [], []
    by_run = dict(tuple(ladder_rows.sort_values("step").groupby("run")))
    for position, run in enumerate(runs):
        rows = by_run[run]
        rows = rows.iloc[math.ceil(skip_fraction * len(rows)) :]
        n.append(rows["N"].to_numpy(dtype=float))
        d.append(rows["D"].to_numpy(dtype=float))
        loss.append(rows["loss"].to_numpy(dtype=float))
        index.append(np.full(len(rows), position))
    return CheckpointPoints(np.concatenate(n), np.concatenate(d), np.concatenate(loss), np.concatenate(index))


def target_points(target_rows: pd.DataFrame, last_n: int = 5) -> list[TargetPoint]:
    """One point per target run in one task's target rows."""
    points = []
    for run, rows in _rows_by_run(target_rows):
        tail = rows.tail(last_n)
        acc = tail["acc"].to_numpy(dtype=float) if "acc" in tail else np.array([math.nan])
        history = np.column_stack(
            [
                rows["D"].to_numpy(dtype=float),
                rows["loss"].to_numpy(dtype=float),
                rows["acc"].to_numpy(dtype=float) if "acc" in rows else np.full(len(rows), math.nan),
            ]
        )
        points.append(
            TargetPoint(
                run,
                float(rows["N"].iloc[0]),
                float(tail["D"].iloc[-1]),
                float(tail["loss"].mean()),
                float(acc.mean()) if np.isfinite(acc).all() else math.nan,
                history,
            )
        )
    return points
