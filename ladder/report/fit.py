"""The outputs of a ladder fit: its tables (CSV), its plots (PNG) and report.md, in one folder.

    write_fit_report(fit, "results/paper")   # predictions.csv, params.csv, variance.csv,
                                             # report.md, step1.png, step2.png, pred_vs_actual.png

The tables are `LadderFit.predictions`, `.params` and `.variance` as they are (unrounded,
accuracies as fractions); report.md shows the readable predictions, the parameters, the flags,
the variance summary and the plots. `fit_markdown(fit, images)` is the report's text, for a
report that embeds it (the demo's).
"""

from __future__ import annotations

import os
from pathlib import Path

from ladder.fit.pipeline import LadderFit
from ladder.fit.variance import variance_summary
from ladder.report import folder
from ladder.report.plots import FIT_PLOTS, plot_fit
from ladder.report.tables import markdown_table, predictions_table

FIT_TABLES = ("predictions.csv", "params.csv", "variance.csv")
REPORT_FILE = "report.md"
OUTPUT_FILES = (*FIT_TABLES, REPORT_FILE, *FIT_PLOTS)
"""every file a fit report may write"""
PARAM_COLUMNS = ["task", "chance", "A", "alpha", "B", "beta", "E", "a", "k", "L0", "b", "step1_rmse_log", "step2_rmse"]
"""the columns of params.csv that report.md shows"""


def fit_markdown(fit: LadderFit, images: list[Path] | None = None) -> str:
    """A self-contained markdown report: predictions, parameters, flags, variance, plots."""
    options = fit.options
    lines = [
        "# Ladder fit",
        "",
        f"Ladder runs ({len(fit.ladder_runs)}): {', '.join(fit.ladder_runs)}.",
        f"Step 1: mean of the last {options.last_n} checkpoints per run, Huber(delta={options.delta:g}) on log residuals.",
        f"Step 2: first {options.skip_fraction:.0%} of each run dropped, trailing mean of {options.window}, anchor (0, 1).",
        f"Step-1 method: {options.method} (docs/fit.md; its laws' parameters are in params.csv).",
        f"Intervals: {options.level:.0%}; acc interval: the bootstrap's spread widened by the extrapolation, "
        f"kappa = {options.kappa:g} points per unit (the headline); bootstrap interval: over runs and checkpoints, "
        f"{options.bootstrap} replicates.",
        "",
        "## Predictions",
        "",
        f"Task loss in bits per byte, accuracy in percent; {options.level:.0%} intervals.",
        "Errors are predicted minus actual accuracy, in percentage points (abs err: the chained two-step",
        "prediction; single-step err: accuracy fitted directly against (N, D), for comparison).",
        "predictions.csv holds the same values unrounded (accuracies as fractions there).",
        "",
    ]
    lines += [markdown_table(predictions_table(fit.predictions)) if not fit.predictions.empty else "(no targets)", ""]
    lines += ["## Parameters", "", markdown_table(fit.params[PARAM_COLUMNS]), ""]
    flagged = fit.params[fit.params["flags"] != ""]
    if len(flagged):
        lines += ["## Flags", ""] + [f"- {row.task}: {row.flags}" for row in flagged.itertuples()] + [""]
    summary = variance_summary(fit.variance)
    lines += [
        "## Checkpoint-to-checkpoint variance",
        "",
        f"Median over ladder runs of the spread over each run's last {options.variance_window} checkpoints.",
        "",
        markdown_table(summary) if not summary.empty else "(none)",
        "",
    ]
    if images:
        lines += ["## Plots", ""] + [f"![{image.stem}]({image.name})" for image in images] + [""]
    return "\n".join(lines)


def check_out_dir(out_dir: str | os.PathLike, overwrite: bool) -> Path:
    """Refuse an output folder that already holds a fit's results, unless asked to overwrite
    (called before fitting too, so that a long fit does not end in this refusal)."""
    return folder.check_out_dir(out_dir, OUTPUT_FILES, overwrite)


def write_fit_report(
    fit: LadderFit, out_dir: str | os.PathLike, *, overwrite: bool = False, plots: bool = True
) -> list[Path]:
    """Write predictions.csv, params.csv, variance.csv, report.md and the plots (PNG) into `out_dir`,
    all at once (`folder.write_folder`); a plot of earlier results that this fit does not draw is
    removed. Returns the files written."""
    out_dir = check_out_dir(out_dir, overwrite)

    def write(staging: Path) -> None:
        fit.predictions.to_csv(staging / "predictions.csv", index=False)
        fit.params.to_csv(staging / "params.csv", index=False)
        fit.variance.to_csv(staging / "variance.csv", index=False)
        images = plot_fit(fit, staging) if plots else []
        (staging / REPORT_FILE).write_text(fit_markdown(fit, images), encoding="utf-8")

    return folder.write_folder(out_dir, write, replaces=FIT_PLOTS)
