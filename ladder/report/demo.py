"""The outputs of `ladder demo`: its report.md, the training curves and the tables it prints.

The demo writes the fit's outputs first (`ladder.report.fit.write_fit_report`); then
`write_demo_report` adds loss_curves.png and replaces report.md with the demo's: whether accuracy
rises across the ladder, the training curves, and the fit's own report one heading level down.
"""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd

from ladder.fit.pipeline import LadderFit
from ladder.report import folder
from ladder.report.fit import REPORT_FILE, fit_markdown
from ladder.report.plots import fit_plots, plot_loss_curves
from ladder.report.tables import markdown_table

LOSS_CURVES = "loss_curves.png"


def demo_markdown(fit: LadderFit, rise: pd.DataFrame, timings: dict[str, float], cfg) -> str:
    """The demo's report: the ladder (`cfg`, the composed demo config), wall time per phase, the
    accuracy rise across the rungs (`ladder.demo.accuracy_rise`), then the fit's report."""
    targets = ", ".join(f"{t.name} ({t.size})" for t in cfg.ladder.targets)
    lines = [
        "# ladder demo: a CPU ladder predicts a held-out bigger model",
        "",
        f"Ladder: sizes {', '.join(cfg.ladder.sizes)} x token multiples "
        f"{', '.join(f'{m:g}' for m in cfg.ladder.multipliers)} (D = x 20 N); target: {targets}.",
        f"Tasks: {', '.join(cfg.tasks.names)} (in-loop, {cfg.tasks.max_questions or 'all'} questions each).",
        "Wall time: " + ", ".join(f"{phase} {seconds:.0f} s" for phase, seconds in timings.items()) + ".",
        "",
        "## Does accuracy rise across the ladder?",
        "",
        "Final-checkpoint accuracy of the cheapest and the costliest rung, and Spearman's rank",
        "correlation of accuracy with training compute over all rungs.",
        "",
        markdown_table(rise),
        "",
        f"![{Path(LOSS_CURVES).stem}]({LOSS_CURVES})",
        "",
    ]
    fit_report = fit_markdown(fit, [Path(name) for name in fit_plots(fit)])
    return "\n".join(lines) + "\n#" + fit_report.replace("\n## ", "\n### ")


def write_demo_report(
    fit: LadderFit,
    out_dir: str | os.PathLike,
    *,
    curves: pd.DataFrame,
    rise: pd.DataFrame,
    timings: dict[str, float],
    cfg,
) -> list[Path]:
    """Draw loss_curves.png (training loss against tokens, one line per run of `curves`) and write
    the demo's report.md into `out_dir`, beside the fit's outputs. Returns the files written."""

    def write(staging: Path) -> None:
        plot_loss_curves(
            curves, staging / LOSS_CURVES, x="tokens", y="loss", by="run", title="training loss (nats/byte)"
        )
        (staging / REPORT_FILE).write_text(demo_markdown(fit, rise, timings, cfg), encoding="utf-8")

    return folder.write_folder(out_dir, write)


def format_accuracy_rise(rise: pd.DataFrame) -> str:
    """The accuracy-rise table as the demo prints it."""
    return rise.to_string(index=False, float_format=lambda v: f"{v:.3f}")
