"""The outputs of a backtest (`ladder.fit.backtest.backtest`): the text `ladder backtest` prints.

`format_backtest(rows, level)` shows the held-out statistics per cut and per task
(`ladder.fit.backtest.summarize` / `coverage_by_task`), shares as percentages, and
`nominal_level_note` compares the coverage with the intervals' level and gives the kappa the
errors imply with its leave-one-cut-out coverage (`ladder.fit.backtest.kappa_check`);
`format_comparison` prints `ladder backtest --method all` (`ladder.fit.backtest.comparison`). The
rows themselves are the backtest's table (CSV, `ladder backtest --out`).
"""

from __future__ import annotations

import pandas as pd

from ladder.fit.backtest import comparison, coverage_by_task, kappa_check, summarize

SHARE_COLUMNS = ("in_loss_interval", "in_acc_interval", "in_acc_interval_kappa")


def nominal_level_note(rows: pd.DataFrame, level: float) -> str:
    """Lines comparing the held-out coverage with the intervals' level, accuracy and loss apart,
    and the kappa these errors give with its leave-one-cut-out coverage."""
    held = rows[rows["held_out"]]
    lines = []
    for column, what in (
        ("in_acc_interval", "accuracies (bootstrap)"),
        ("in_acc_interval_kappa", "accuracies (kappa)"),
        ("in_loss_interval", "losses (bootstrap)"),
    ):
        covered = held[column].dropna()
        if not covered.empty:
            lines.append(
                f"{covered.mean():.0%} of {len(covered)} held-out {what} fell inside their {100 * level:g}% intervals"
            )
    check = kappa_check(rows, level)
    if lines and pd.notna(check["kappa"]):
        loco = check["loco_in_acc_interval_kappa"]
        lines.append(
            f"kappa from these errors: {check['kappa']:.2f} points per unit of extrapolation (--kappa); "
            + (
                f"leave-one-cut-out, {loco:.0%} of {check['loco_predictions']} held-out accuracies fell inside "
                f"their {100 * level:g}% kappa intervals"
                if pd.notna(loco)
                else "one cut: no leave-one-cut-out check"
            )
        )
    if not lines:
        return "no intervals (--bootstrap 0): errors only"
    lines.append(
        "(the predictions of one fit share its errors: read these as rough checks, not as counts of independent trials)"
    )
    return "\n".join(lines)


def _statistics_text(frame: pd.DataFrame) -> str:
    """A statistics frame printed: shares as percentages, other figures to 2 decimals."""
    frame = frame.dropna(axis=1, how="all").copy()  # no intervals, or no accuracies: no column
    for column in frame.columns:
        if column in SHARE_COLUMNS:
            frame[column] = frame[column].map(lambda share: "" if pd.isna(share) else f"{share:.0%}")
        elif column != "predictions":
            frame[column] = frame[column].map("{:.2f}".format)
    return frame.to_string()


def format_backtest(rows: pd.DataFrame, level: float) -> str:
    """The printed backtest: per cut, per task, the coverage lines; shares as percentages."""
    targets = rows.loc[~rows["held_out"], "target"].unique()
    parts = [
        f"== held-out ladder runs, by the sizes fitted (inside the {100 * level:g}% bootstrap and kappa intervals; "
        "errors and widths in accuracy points, loss error in %)",
        _statistics_text(summarize(rows)),
        "",
        "== by task, over every cut",
        _statistics_text(coverage_by_task(rows)),
        "",
        nominal_level_note(rows, level),
    ]
    if len(targets):
        parts.append(f"the table's targets ({', '.join(map(str, targets))}) were predicted by every cut too: see --out")
    return "\n".join(parts)


def format_comparison(rows: pd.DataFrame, level: float) -> str:
    """The printed `ladder backtest --method all`: one line per method."""
    frame = comparison(rows, level).dropna(axis=1, how="all")
    for column in frame.columns:
        if column.startswith(("in_", "loco")):
            frame[column] = frame[column].map(lambda share: "" if pd.isna(share) else f"{share:.0%}")
        elif column != "held-out":
            frame[column] = frame[column].map(lambda value: "" if pd.isna(value) else f"{value:.2f}")
    return "\n".join(
        [
            f"== held-out ladder runs by step-1 method (errors in accuracy points; inside the {100 * level:g}% bootstrap "
            "and kappa intervals; kappa from each method's own errors and its leave-one-cut-out coverage; targets: "
            "the table's targets predicted from the largest cut)",
            frame.to_string(),
        ]
    )
