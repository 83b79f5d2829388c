"""Backtesting the method on a ladder: fit the smaller sizes, predict the larger ones.

For each cut c (min_sizes <= c < number of sizes), the ladder's c smallest sizes are fitted with
the given options and every selected run of a larger size is predicted as if it were a target,
beside the table's own targets. The rows say how well the two-stage fit extrapolates on this
ladder, and whether the intervals hold the actual values as often as their level says: the
bootstrap intervals are a resampling spread, not a calibrated probability (docs/fit.md), so this is
the check of what they are worth on real runs. The backtest also estimates kappa, the error per
unit of extrapolation that the kappa intervals add (calibration.py), from its own held-out errors,
and checks it leave-one-cut-out. `compare_methods` runs the backtest once per step-1 method.
"""

from __future__ import annotations

from dataclasses import replace

import pandas as pd

from ladder.errors import LadderError
from ladder.fit.calibration import kappa_from_rows, leave_one_cut_out
from ladder.fit.chain import SingleStepFit
from ladder.fit.methods import METHODS
from ladder.fit.pipeline import FitOptions, fit_table, select_ladder
from ladder.fit.points import size_labels
from ladder.progress import progress
from ladder.results import validate_table

MIN_FITTED_SIZES = 2  # step 1 separates the N and D terms only with two sizes or more


def backtest(
    table: pd.DataFrame,
    options: FitOptions | None = None,
    *,
    min_sizes: int = 3,
    baselines: dict[str, dict[str, SingleStepFit | None]] | None = None,
    **overrides,
) -> pd.DataFrame:
    """Predictions of held-out ladder runs (and the table's targets) from fits on smaller sizes.

    One row per cut x task x predicted run: the prediction columns of `LadderFit.predictions`, plus
    `fit_sizes` (the sizes fitted, comma-separated), `held_out` (True for a ladder run of a larger
    size, False for a table target) and `in_loss_interval` / `in_acc_interval` /
    `in_acc_interval_kappa` (NaN where the fit has no interval or the actual value is missing).
    Options as for `fit_table`. `baselines`, by cut (its `fit_sizes`): the single-step baselines of
    an earlier backtest of the same table and options but another method, reused (they do not
    depend on the method); the cuts it lacks are added to it.
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
        raise LadderError(
            f"a backtest fits at least {min_sizes} sizes (--min-sizes) and predicts larger ones; "
            f"the selected ladder has {len(sizes)}: {', '.join(sizes)}"
        )
    own_targets = table[table["role"] == "target"]
    # The ladder is selected already; the fits below take it as it is.
    per_cut = replace(options, sizes=None, multipliers=None, include_reruns=True)
    frames = []
    for cut in progress(range(min_sizes, len(sizes)), desc="backtest", unit="cut"):
        fitted, held = sizes[:cut], sizes[cut:]
        held_rows = ladder[labels.isin(held)].assign(role="target")
        cut_table = pd.concat([ladder[labels.isin(fitted)], held_rows, own_targets], ignore_index=True)
        fit_sizes = ",".join(fitted)
        fit = fit_table(cut_table, per_cut, baselines=None if baselines is None else baselines.get(fit_sizes))
        if baselines is not None:
            baselines.setdefault(fit_sizes, {task: task_fit.single for task, task_fit in fit.tasks.items()})
        predictions = fit.predictions
        predictions.insert(0, "fit_sizes", fit_sizes)
        after_target = predictions.columns.get_loc("target") + 1
        predictions.insert(after_target, "held_out", predictions["target"].isin(set(held_rows["run"])))
        frames.append(predictions)
    rows = pd.concat(frames, ignore_index=True)
    rows["in_loss_interval"] = _inside(rows["actual_loss"], rows["pred_loss_lo"], rows["pred_loss_hi"])
    rows["in_acc_interval"] = _inside(rows["actual_acc"], rows["pred_acc_lo"], rows["pred_acc_hi"])
    rows["in_acc_interval_kappa"] = _inside(rows["actual_acc"], rows["pred_acc_lo_kappa"], rows["pred_acc_hi_kappa"])
    return rows


def compare_methods(
    table: pd.DataFrame, options: FitOptions | None = None, *, min_sizes: int = 3, **overrides
) -> pd.DataFrame:
    """`backtest` once per step-1 method (methods.METHODS), its rows under a leading `method` column;
    the single-step baselines, the same for every method, are fitted once."""
    options = replace(options or FitOptions(), **overrides)
    frames = []
    baselines: dict[str, dict] = {}
    for method in METHODS:
        rows = backtest(table, replace(options, method=method), min_sizes=min_sizes, baselines=baselines)
        rows.insert(0, "method", method)
        frames.append(rows)
    return pd.concat(frames, ignore_index=True)


def sizes_by_n(ladder: pd.DataFrame, labels: pd.Series) -> list[str]:
    """The ladder's size labels from the smallest N up; a cut between two sizes must be a cut in N,
    so a label with several N, or two labels with one N, is refused."""
    n_per_label = ladder.groupby(labels, sort=False)["N"].unique()
    for label, values in n_per_label.items():
        if len(values) > 1:
            raise LadderError(
                f"size {label!r} has runs of {len(values)} different N ({', '.join(f'{n:g}' for n in values)}); "
                "a backtest cuts the ladder between sizes by N"
            )
    n_of_label = n_per_label.map(lambda values: float(values[0]))
    shared = n_of_label[n_of_label.duplicated(keep=False)]
    if not shared.empty:
        raise LadderError(
            f"sizes {', '.join(map(repr, shared.index))} share N = {shared.iloc[0]:g}; "
            "a backtest cuts the ladder between sizes by N"
        )
    return [str(label) for label in n_of_label.sort_values(kind="stable").index]


def _inside(actual: pd.Series, low: pd.Series, high: pd.Series) -> pd.Series:
    """1.0 / 0.0 where the actual value lies in [low, high]; NaN where any of them is missing."""
    known = actual.notna() & low.notna() & high.notna()
    return ((actual >= low) & (actual <= high)).astype(float).where(known)


def _statistics(group: pd.DataFrame) -> pd.Series:
    """Predictions, shares inside the loss and accuracy intervals, median absolute accuracy error
    (points), median interval width (points), median |relative loss error| (%)."""
    return pd.Series(
        {
            "predictions": len(group),
            "in_loss_interval": group["in_loss_interval"].mean(),
            "in_acc_interval": group["in_acc_interval"].mean(),
            "in_acc_interval_kappa": group["in_acc_interval_kappa"].mean(),
            "mean_abs_err": group["abs_err"].abs().mean(),
            "median_abs_err": group["abs_err"].abs().median(),
            "median_acc_width": (100 * (group["pred_acc_hi"] - group["pred_acc_lo"])).median(),
            "median_loss_rel_err": group["loss_rel_err"].abs().median(),
        }
    )


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
    """Per task, over every cut: held-out predictions, shares inside the loss interval and the
    accuracy's bootstrap and kappa intervals, median absolute accuracy error (points)."""
    frame = _statistics_by(rows, "task", "task")
    return frame[["predictions", "in_loss_interval", "in_acc_interval", "in_acc_interval_kappa", "median_abs_err"]]


def kappa_check(rows: pd.DataFrame, level: float) -> dict[str, float]:
    """kappa estimated from the held-out rows, and the leave-one-cut-out coverage of the kappa intervals."""
    held = rows[rows["held_out"]]
    inside, _ = leave_one_cut_out(held, level)
    return {
        "kappa": kappa_from_rows(held),
        "loco_in_acc_interval_kappa": inside.mean(),
        "loco_predictions": int(inside.notna().sum()),
    }


def comparison(rows: pd.DataFrame, level: float) -> pd.DataFrame:
    """One row per method of `compare_methods` rows: held-out predictions, mean and median absolute
    accuracy error (points), shares inside the bootstrap and kappa intervals, the kappa its errors
    give and its leave-one-cut-out coverage, and the mean absolute error on the table's targets
    from the largest cut."""
    table = {}
    for method, group in rows.groupby("method", sort=False):
        held = group[group["held_out"]]
        largest = group[group["fit_sizes"].str.count(",") == group["fit_sizes"].str.count(",").max()]
        targets = largest[~largest["held_out"]]
        check = kappa_check(group, level)
        table[method] = {
            "held-out": len(held),
            "mean_abs_err": held["abs_err"].abs().mean(),
            "median_abs_err": held["abs_err"].abs().median(),
            "in_acc_interval": held["in_acc_interval"].mean(),
            "in_acc_interval_kappa": held["in_acc_interval_kappa"].mean(),
            "kappa": check["kappa"],
            "loco_kappa_coverage": check["loco_in_acc_interval_kappa"],
            "targets_mean_abs_err": targets["abs_err"].abs().mean() if len(targets) else float("nan"),
        }
    frame = pd.DataFrame(table).T
    frame.index.name = "method"
    frame["held-out"] = frame["held-out"].astype(int)
    return frame
