"""Intervals that hold at the target: the bootstrap spread widened by how far the target lies beyond the ladder.

The bootstrap interval (bootstrap.py) is the spread of the prediction over resamplings of the
ladder; it does not grow with the distance over which the law is extrapolated, and the error does.
The kappa interval of a predicted accuracy is

    pred_acc +- z sqrt(sd_boot^2 + (kappa d)^2),    d = max(0, ln N / N_max) + max(0, ln D / D_max)

with z the normal quantile of the level (1.645 at 90%), sd_boot the standard deviation of the
bootstrap replicates' accuracy, N_max and D_max the largest N and D of the fitted runs (D at their
last checkpoint), and kappa the accuracy points of error per unit of d that the bootstrap does not
explain. `ladder backtest` estimates kappa from its held-out errors e (points) by the moment
equation E[e^2] = sd_boot^2 + kappa^2 d^2 summed over its predictions:

    kappa^2 = max(0, sum(e^2 - sd_boot^2)) / sum(d^2),

and checks it leave-one-cut-out: each cut's intervals use the kappa estimated from the other
cuts' errors, and the share of held-out accuracies inside them is its coverage.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
from scipy.stats import norm

# Accuracy points per unit of d: `ladder backtest olmo.parquet --multipliers 1,2,5,10` on the
# paper's ladder with the default method (docs/fit.md).
DEFAULT_KAPPA = 0.43


def extrapolation(N: float, D: float, n_max: float, d_max: float) -> float:
    """d: how far (in log units of N plus log units of D) a target lies beyond the fitted runs."""
    return max(0.0, math.log(N / n_max)) + max(0.0, math.log(D / d_max))


def kappa_interval(pred_acc: float, sd_boot: float, distance: float, kappa: float, level: float) -> tuple[float, float]:
    """The kappa interval of a predicted accuracy (fractions; kappa in points), clipped to [0, 1]."""
    half = norm.ppf(0.5 + level / 2.0) * math.sqrt(sd_boot**2 + (kappa / 100.0 * distance) ** 2)
    return max(0.0, pred_acc - half), min(1.0, pred_acc + half)


def estimate_kappa(errors: np.ndarray, sd_boot: np.ndarray, distance: np.ndarray) -> float:
    """kappa (points per unit of d) from errors and bootstrap SDs in points; NaN without extrapolation."""
    errors, sd_boot, distance = (np.asarray(v, dtype=float) for v in (errors, sd_boot, distance))
    known = np.isfinite(errors) & np.isfinite(sd_boot) & np.isfinite(distance)
    spread = float(np.sum(distance[known] ** 2))
    if spread == 0.0:
        return math.nan
    return math.sqrt(max(0.0, float(np.sum(errors[known] ** 2 - sd_boot[known] ** 2))) / spread)


def kappa_from_rows(rows: pd.DataFrame) -> float:
    """kappa estimated from prediction rows (abs_err in points, acc_sd as a fraction, extrapolation)."""
    return estimate_kappa(rows["abs_err"], 100.0 * rows["acc_sd"], rows["extrapolation"])


def inside_kappa_intervals(rows: pd.DataFrame, kappa: float, level: float) -> pd.Series:
    """1.0 / 0.0 where the actual accuracy lies in the kappa interval of that `kappa`; NaN where unknown."""
    values = []
    for row in rows.itertuples():
        if not all(math.isfinite(v) for v in (row.pred_acc, row.acc_sd, row.extrapolation, row.actual_acc, kappa)):
            values.append(math.nan)
            continue
        low, high = kappa_interval(row.pred_acc, row.acc_sd, row.extrapolation, kappa, level)
        values.append(float(low <= row.actual_acc <= high))
    return pd.Series(values, index=rows.index, dtype=float)


def leave_one_cut_out(
    held: pd.DataFrame, level: float, cut_column: str = "fit_sizes"
) -> tuple[pd.Series, dict[str, float]]:
    """Per held-out row, inside its kappa interval with kappa estimated from the other cuts' rows;
    and the kappa each cut used. NaN rows when there is a single cut."""
    inside = pd.Series(math.nan, index=held.index, dtype=float)
    kappas = {}
    for cut, rows in held.groupby(cut_column, sort=False):
        others = held[held[cut_column] != cut]
        if others.empty:
            continue
        kappas[cut] = kappa_from_rows(others)
        inside[rows.index] = inside_kappa_intervals(rows, kappas[cut], level)
    return inside, kappas
