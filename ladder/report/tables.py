"""Tables as people read them: the readable predictions (printed and in report.md) and pipe tables.

- `predictions_table(predictions)`: prediction rows (`LadderFit.predictions`, `LadderFit.predict`)
  as shown: loss in bits per byte with its interval, accuracies and errors in percentage points,
  the kappa interval (the headline) and the bootstrap interval, early-target columns when present;
- `format_predictions(predictions)`: that table as `ladder fit`, `predict` and the demo print it,
  with a line naming the headline interval;
- `markdown_table(frame)`: a pipe table of any frame, numbers to 4 significant places.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

ACC_INTERVALS = {"kappa": ("pred_acc_lo_kappa", "pred_acc_hi_kappa"), "bootstrap": ("pred_acc_lo", "pred_acc_hi")}
"""the two kinds of accuracy interval of a prediction row, by kind: its (low, high) columns"""
HEADLINE_INTERVAL = "kappa"
"""the interval kind shown first (`acc interval %`) and drawn on the point: the one widened by the
target's extrapolation, whose coverage `ladder backtest` checks out of sample (docs/fit.md)"""
HEADLINE_NOTE = (
    "acc interval: the kappa interval, the headline (the bootstrap's spread widened by how far the target lies "
    "beyond the ladder); bootstrap interval: the bootstrap's alone, for comparison (docs/fit.md)"
)
"""the line under a printed predictions table that says which interval is the headline"""


def _number(value, digits: int = 4) -> str:
    if isinstance(value, (float, np.floating)):
        if not math.isfinite(value):
            return ""
        return (
            f"{value:.{digits}g}" if abs(value) >= 1e4 or (value != 0 and abs(value) < 1e-3) else f"{value:.{digits}f}"
        )
    return str(value)


def _interval(lows: pd.Series, highs: pd.Series, scale: float, digits: int) -> list[str]:
    return [
        f"[{scale * lo:.{digits}f}, {scale * hi:.{digits}f}]" if math.isfinite(lo) and math.isfinite(hi) else ""
        for lo, hi in zip(lows, highs)
    ]


def predictions_table(predictions: pd.DataFrame) -> pd.DataFrame:
    """The predictions as people read them (printed by `ladder fit` / `predict`, and in report.md):
    task loss in bits per byte with its interval, accuracies and errors in percentage points."""
    signed = lambda v: f"{v:+.2f}" if math.isfinite(v) else ""  # noqa: E731
    table = pd.DataFrame(
        {
            "task": predictions["task"],
            "target": predictions["target"],
            "pred loss": predictions["pred_loss"].map(lambda v: _number(v, 4)),
            "loss interval": _interval(predictions["pred_loss_lo"], predictions["pred_loss_hi"], 1.0, 3),
            "actual loss": predictions["actual_loss"].map(lambda v: _number(v, 4)),
            "pred acc %": predictions["pred_acc"].map(lambda v: _number(100 * v, 2)),
            "acc interval %": _interval(*(predictions[c] for c in ACC_INTERVALS[HEADLINE_INTERVAL]), 100.0, 1),
            "bootstrap interval %": _interval(*(predictions[c] for c in ACC_INTERVALS["bootstrap"]), 100.0, 1),
            "actual acc %": predictions["actual_acc"].map(lambda v: _number(100 * v, 2)),
            "abs err": predictions["abs_err"].map(signed),
            "single-step err": predictions["single_step_abs_err"].map(signed),
        }
    )
    if "early_acc" in predictions:  # --early-target: beside the plain prediction, never instead of it
        table["early-target acc %"] = predictions["early_acc"].map(lambda v: _number(100 * v, 2))
        table["early-target err"] = predictions["early_abs_err"].map(signed)
    return table


def format_predictions(predictions: pd.DataFrame) -> str:
    """The readable table `ladder fit` and `ladder predict` print."""
    if predictions.empty:
        return "(no targets to predict)"
    table = predictions_table(predictions)
    empty = [column for column in table.columns if (table[column] == "").all()]  # no actuals: targets not trained
    text = table.drop(columns=empty).to_string(index=False)
    if "acc interval %" not in empty:
        text += "\n" + HEADLINE_NOTE
    return text


def markdown_table(frame: pd.DataFrame) -> str:
    """A pipe table of a frame (numbers to 4 significant places; NaN as empty)."""
    header = "| " + " | ".join(map(str, frame.columns)) + " |"
    rule = "|" + "|".join("---" for _ in frame.columns) + "|"
    body = ["| " + " | ".join(_number(v) for v in row) + " |" for row in frame.itertuples(index=False)]
    return "\n".join([header, rule] + body)
