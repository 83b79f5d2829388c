"""Checkpoint-to-checkpoint variance (the paper's noise analysis).

For every run and task, over its last `window` checkpoints: the standard deviation of the task
loss and of the accuracy, each also relative to its mean, and the mean absolute change between
consecutive checkpoints. Noisy tasks (large relative spread at the end of training) are those
whose predictions deserve the least trust; the report lists them per task.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

VARIANCE_COLUMNS = (
    "task",
    "run",
    "role",
    "checkpoints",
    "loss_sd",
    "loss_rel_sd",
    "loss_step_change",
    "acc_sd",
    "acc_rel_sd",
    "acc_step_change",
)


def _spread(values: np.ndarray) -> tuple[float, float, float]:
    finite = values[np.isfinite(values)]
    if len(finite) < 2:
        return float("nan"), float("nan"), float("nan")
    sd = float(np.std(finite, ddof=1))
    mean = float(np.mean(finite))
    return sd, sd / abs(mean) if mean else float("nan"), float(np.mean(np.abs(np.diff(finite))))


def checkpoint_variance(table: pd.DataFrame, window: int = 10) -> pd.DataFrame:
    """One row per run x task: spread of loss and accuracy over the last `window` checkpoints."""
    rows = []
    for (task, run), group in table.sort_values("step").groupby(["task", "run"], sort=True):
        tail = group.tail(window)
        loss = _spread(tail["loss"].to_numpy(dtype=float))
        acc = _spread(tail["acc"].to_numpy(dtype=float)) if "acc" in tail else (float("nan"),) * 3
        rows.append((task, run, group["role"].iloc[0], len(tail), *loss, *acc))
    return pd.DataFrame(rows, columns=list(VARIANCE_COLUMNS))


def variance_summary(variance: pd.DataFrame) -> pd.DataFrame:
    """Per task: the median over ladder runs of each spread measure."""
    ladder = variance[variance["role"] == "ladder"]
    measures = [c for c in VARIANCE_COLUMNS if c.endswith(("_sd", "_change"))]
    return ladder.groupby("task")[measures].median().reset_index()
