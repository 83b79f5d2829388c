"""The outputs of a ladder fit: its tables (CSV), its plots (PNG) and report.md, in one folder.

    write_fit_report(fit, "results/paper")   # predictions.csv, params.csv, variance.csv,
                                             # report.md, step1.png, step2.png, pred_vs_actual.png

The tables are `LadderFit.predictions`, `.params` and `.variance` as they are (unrounded,
accuracies as fractions); report.md says what step 1 is under the fit's method (each law, and how
the ensemble combines them) and which accuracy interval is the headline and why, then shows the
readable predictions, a table of parameters per law (the shared law's common exponents above its
per-task terms) and step 2's, the flags, the variance summary and the plots. `fit_markdown(fit, images)` is the report's text, for a
report that embeds it (the demo's).
"""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd

from ladder.fit import methods
from ladder.fit.calibration import DEFAULT_KAPPA
from ladder.fit.pipeline import LadderFit, TaskFit
from ladder.fit.variance import variance_summary
from ladder.report import folder
from ladder.report.plots import FIT_PLOTS, plot_fit
from ladder.report.tables import markdown_table, predictions_table

FIT_TABLES = ("predictions.csv", "params.csv", "variance.csv")
REPORT_FILE = "report.md"
OUTPUT_FILES = (*FIT_TABLES, REPORT_FILE, *FIT_PLOTS)
"""every file a fit report may write"""
RUN_POINTS = "one point per run (the mean of its last {last_n} checkpoints)"
CHECKPOINTS = "every checkpoint after the first {skip} of each run"
LAWS = {
    "paper": ("L = A / N^alpha + B / D^beta + E", RUN_POINTS, ()),
    "ic-tied": ("L = A / N^alpha + B / D^alpha + E", CHECKPOINTS, ()),
    "ic-compute": ("L = A / C^gamma + E, C = 6 N D", CHECKPOINTS, ()),
    "shared": ("L_t = A_t / N^alpha + B_t / D^beta + E_t", RUN_POINTS + ", every task in one fit", ("alpha", "beta")),
}
"""per step-1 law (ladder.fit.methods.LAWS): its equation, the points it fits, the parameters
common to every task"""
STEP2_COLUMNS = ["task", "chance", "a", "k", "L0", "b", "step2_points", "step2_rmse"]
"""the columns of params.csv that report.md shows for step 2"""


def _law_parts(task_fit: TaskFit) -> dict:
    """A task's step-1 laws by name: the paper's fit, or each law of another method."""
    if isinstance(task_fit.step1, methods.CombinedStep1):
        return task_fit.step1.laws
    return {"paper": task_fit.step1}


def _step1_lines(fit: LadderFit) -> list[str]:
    """What step 1 is under the fit's method: each law's equation and points, and how they combine."""
    options = fit.options
    names = methods.LAWS[options.method]
    described = []
    for name in names:
        equation, points, _ = LAWS[name]
        described.append(f"{equation}, on {points.format(skip=f'{options.skip_fraction:.0%}', last_n=options.last_n)}")
    huber = f"Huber(delta={options.delta:g}) on log residuals"
    if len(names) == 1:
        return [f"Step 1, --method {options.method}: {described[0]}; {huber}."]
    return [
        f"Step 1, --method {options.method}: the geometric mean of {len(names)} laws' predictions, "
        f"L = exp(mean of their log L), each fitted by {huber}:",
        *(f"- {name}: {text}" for name, text in zip(names, described)),
    ]


def _interval_lines(options) -> list[str]:
    """Which accuracy interval is the headline, and why."""
    if options.bootstrap == 0:
        return ["Intervals: none (--bootstrap 0)."]
    kappa = f"kappa = {options.kappa:g} points per unit of d" + (
        " (the default, measured by `ladder backtest` on the paper's ladder; it measures this ladder's too)"
        if options.kappa == DEFAULT_KAPPA
        else ""
    )
    return [
        f"Accuracy intervals ({options.level:.0%}): the headline is the kappa interval (`acc interval %`; "
        "`pred_acc_lo_kappa`, `pred_acc_hi_kappa` in predictions.csv): the bootstrap's spread widened by how far "
        f"the target lies beyond the ladder (the `extrapolation` d), {kappa}. It is the headline because the "
        "error grows with d and the bootstrap's spread does not: `ladder backtest` measures kappa and the kappa "
        "intervals' coverage on held-out runs, out of sample. The bootstrap interval (`bootstrap interval %`; "
        f"`pred_acc_lo`, `pred_acc_hi`; {options.bootstrap} replicates over runs and checkpoints) is shown beside "
        "it: how much the prediction depends on which runs the ladder had; it falls short of its level at a "
        'distance (docs/fit.md, "Intervals that hold at the target").',
    ]


def _assignments(values: dict, names) -> str:
    return ", ".join(f"{name} = {values[name]:.4g}" for name in names)


def _parameter_lines(fit: LadderFit) -> list[str]:
    """Per step-1 law, a table of each task's parameters (common ones above it); then step 2's."""
    options = fit.options
    lines = [
        "Step 1"
        + (" (params.csv: `A` ... `E`)" if options.method == "paper" else ", law by law (params.csv: `<law>.<name>`)")
        + "; rmse_log: root mean square of the law's log residuals over its points.",
        "",
    ]
    for name in methods.LAWS[options.method]:
        equation, _, common = LAWS[name]
        laws = {task: _law_parts(task_fit)[name] for task, task_fit in fit.tasks.items()}
        first = next(iter(laws.values()))
        own = [param for param in first.as_dict() if param not in common]
        heading = f"**{name}**: {equation}"
        if common:
            heading += f"; common to every task: {_assignments(first.as_dict(), common)}"
        rows = pd.DataFrame(
            [
                {
                    "task": task,
                    **{param + ("_t" if common else ""): law.as_dict()[param] for param in own},
                    "points": law.n_points,
                    "rmse_log": law.rmse_log,
                    "at bound": " ".join(law.at_bound),
                }
                for task, law in laws.items()
            ]
        )
        lines += [heading, "", markdown_table(rows), ""]
    step2 = fit.params[fit.params["step2_points"] > 0]
    if len(step2):
        lines += [
            "**step 2**: Acc = a / (1 + exp(-k (L - L0))) + b (per task, on the runs' smoothed checkpoints)",
            "",
            markdown_table(step2[STEP2_COLUMNS].rename(columns={"step2_points": "points", "step2_rmse": "rmse"})),
            "",
        ]
    return lines


def fit_markdown(fit: LadderFit, images: list[Path] | None = None) -> str:
    """A self-contained markdown report: predictions, parameters, flags, variance, plots."""
    options = fit.options
    lines = [
        "# Ladder fit",
        "",
        f"Ladder runs ({len(fit.ladder_runs)}): {', '.join(fit.ladder_runs)}.",
        "",
        *_step1_lines(fit),
        "",
        f"Step 2: first {options.skip_fraction:.0%} of each run dropped, trailing mean of {options.window}, anchor (0, 1).",
        "",
        *_interval_lines(options),
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
    lines += ["## Parameters", "", *_parameter_lines(fit)]
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
