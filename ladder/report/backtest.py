"""The outputs of a backtest (`ladder.fit.backtest.backtest`): the text `ladder backtest` prints.

`format_backtest(rows, level)` shows the held-out statistics per cut and per task
(`ladder.fit.backtest.summarize` / `coverage_by_task`), shares as percentages, and
`nominal_level_note` compares the coverage with the intervals' level. The rows themselves are
the backtest's table (CSV, `ladder backtest --out`).
"""

from __future__ import annotations

import pandas as pd

from ladder.fit.backtest import coverage_by_task, summarize

SHARE_COLUMNS = ("in_loss_interval", "in_acc_interval")


def nominal_level_note(rows: pd.DataFrame, level: float) -> str:
    """Lines comparing the held-out coverage with the intervals' level, accuracy and loss apart."""
    held = rows[rows["held_out"]]
    lines = []
    for column, what in (("in_acc_interval", "accuracies"), ("in_loss_interval", "losses")):
        covered = held[column].dropna()
        if not covered.empty:
            lines.append(f"{covered.mean():.0%} of {len(covered)} held-out {what} fell inside their "
                         f"{100 * level:g}% intervals")
    if not lines:
        return "no intervals (--bootstrap 0): errors only"
    lines.append("(the predictions of one fit share its errors: read these as rough checks, not as counts of "
                 "independent trials)")
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
        f"== held-out ladder runs, by the sizes fitted (inside the {100 * level:g}% intervals; errors and widths "
        "in accuracy points, loss error in %)",
        _statistics_text(summarize(rows)),
        "",
        "== by task, over every cut",
        _statistics_text(coverage_by_task(rows)),
        "",
        nominal_level_note(rows, level),
    ]
    if len(targets):
        parts.append(f"the table's targets ({', '.join(map(str, targets))}) were predicted by every cut too: "
                     "see --out")
    return "\n".join(parts)
