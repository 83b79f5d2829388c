"""Backtesting the method on a ladder: fit the smaller sizes, predict the larger ones.

For each cut c (min_sizes <= c < number of sizes), the ladder's c smallest sizes are fitted with
the given options and every selected run of a larger size is predicted as if it were a target,
beside the table's own targets. The rows say how well the two-stage fit extrapolates on this
ladder, and whether the bootstrap intervals hold the actual values as often as their level says:
the intervals are a resampling spread, not a calibrated probability (docs/fit.md), so this is
the check of what they are worth on real runs.
"""

from __future__ import annotations

from dataclasses import replace

import pandas as pd

from ladder.errors import LadderError
from ladder.fit.pipeline import FitOptions, fit_table, select_ladder
from ladder.fit.points import size_labels
from ladder.results import validate_table

MIN_FITTED_SIZES = 2  # step 1 separates the N and D terms only with two sizes or more


def backtest(table: pd.DataFrame, options: FitOptions | None = None, *, min_sizes: int = 3, **overrides) -> pd.DataFrame:
    """Predictions of held-out ladder runs (and the table's targets) from fits on smaller sizes.

    One row per cut x task x predicted run: the prediction columns of `LadderFit.predictions`, plus
    `fit_sizes` (the sizes fitted, comma-separated), `held_out` (True for a ladder run of a larger
    size, False for a table target) and `in_loss_interval` / `in_acc_interval` (NaN where the
    fit has no interval or the actual value is missing). Options as for `fit_table`.
    """
    options = replace(options or FitOptions(), **overrides)
    options.check()
    if isinstance(min_sizes, bool) or not isinstance(min_sizes, int) or min_sizes < MIN_FITTED_SIZES:
        raise LadderError(f"--min-sizes must be a whole number >= {MIN_FITTED_SIZES}, got {min_sizes!r}")
    table = validate_table(table)
    ladder = select_ladder(table, options)
    labels = size_labels(ladder)
    sizes = sizes_by_n(ladder, labels)
    if len(sizes) <= min_sizes:
        raise LadderError(f"a backtest fits at least {min_sizes} sizes (--min-sizes) and predicts larger ones; "
                          f"the selected ladder has {len(sizes)}: {', '.join(sizes)}")
    own_targets = table[table["role"] == "target"]
    # The ladder is selected already; the fits below take it as it is.
    per_cut = replace(options, sizes=None, multipliers=None, include_reruns=True)
    frames = []
    for cut in range(min_sizes, len(sizes)):
        fitted, held = sizes[:cut], sizes[cut:]
        held_rows = ladder[labels.isin(held)].assign(role="target")
        cut_table = pd.concat([ladder[labels.isin(fitted)], held_rows, own_targets], ignore_index=True)
        predictions = fit_table(cut_table, per_cut).predictions
        predictions.insert(0, "fit_sizes", ",".join(fitted))
        after_target = predictions.columns.get_loc("target") + 1
        predictions.insert(after_target, "held_out", predictions["target"].isin(set(held_rows["run"])))
        frames.append(predictions)
    rows = pd.concat(frames, ignore_index=True)
    rows["in_loss_interval"] = _inside(rows["actual_loss"], rows["pred_loss_lo"], rows["pred_loss_hi"])
    rows["in_acc_interval"] = _inside(rows["actual_acc"], rows["pred_acc_lo"], rows["pred_acc_hi"])
    return rows


def sizes_by_n(ladder: pd.DataFrame, labels: pd.Series) -> list[str]:
    """The ladder's size labels from the smallest N up; a cut between two sizes must be a cut in N,
    so a label with several N, or two labels with one N, is refused."""
    n_per_label = ladder.groupby(labels, sort=False)["N"].unique()
    for label, values in n_per_label.items():
        if len(values) > 1:
            raise LadderError(f"size {label!r} has runs of {len(values)} different N ({', '.join(f'{n:g}' for n in values)}); "
                              "a backtest cuts the ladder between sizes by N")
    n_of_label = n_per_label.map(lambda values: float(values[0]))
    shared = n_of_label[n_of_label.duplicated(keep=False)]
    if not shared.empty:
        raise LadderError(f"sizes {', '.join(map(repr, shared.index))} share N = {shared.iloc[0]:g}; "
                          "a backtest cuts the ladder between sizes by N")
    return [str(label) for label in n_of_label.sort_values(kind="stable").index]


def _inside(actual: pd.Series, low: pd.Series, high: pd.Series) -> pd.Series:
    """1.0 / 0.0 where the actual value lies in [low, high]; NaN where any of them is missing."""
    known = actual.notna() & low.notna() & high.notna()
    return ((actual >= low) & (actual <= high)).astype(float).where(known)


def _statistics(group: pd.DataFrame) -> pd.Series:
    """Predictions, shares inside the loss and accuracy intervals, median absolute accuracy error
    (points), median interval width (points), median |relative loss error| (%)."""
    return pd.Series({
        "predictions": len(group),
        "in_loss_interval": group["in_loss_interval"].mean(),
        "in_acc_interval": group["in_acc_interval"].mean(),
        "median_abs_err": group["abs_err"].abs().median(),
        "median_acc_width": (100 * (group["pred_acc_hi"] - group["pred_acc_lo"])).median(),
        "median_loss_rel_err": group["loss_rel_err"].abs().median(),
    })


def _statistics_by(rows: pd.DataFrame, column: str, index_name: str, overall: str | None = None) -> pd.DataFrame:
    """`_statistics` of the held-out rows per value of `column` (and over all of them as `overall`)."""
    held = rows[rows["held_out"]]
    parts = [_statistics(group).rename(key) for key, group in held.groupby(column, sort=False)]
    if overall is not None:
        parts.append(_statistics(held).rename(overall))
    frame = pd.DataFrame(parts)
    frame.index.name = index_name
    frame["predictions"] = frame["predictions"].astype(int)
    return frame


def summarize(rows: pd.DataFrame) -> pd.DataFrame:
    """Per cut and over all held-out runs: the statistics of `_statistics`."""
    return _statistics_by(rows, "fit_sizes", "fitted on", overall="all held-out runs")


def coverage_by_task(rows: pd.DataFrame) -> pd.DataFrame:
    """Per task, over every cut: held-out predictions, shares inside the loss and accuracy intervals,
    median absolute accuracy error (points)."""
    frame = _statistics_by(rows, "task", "task")
    return frame[["predictions", "in_loss_interval", "in_acc_interval", "median_abs_err"]]
