"""Plots of a ladder fit and of training curves (PNG files; no display needed).

Figures are made as `matplotlib.figure.Figure` objects, not through pyplot: they are saved by the
PNG writer without a GUI backend, and a notebook or script importing this module keeps its own
backend (pyplot's state is never touched).

Each function draws one figure into one file and returns its path:
- `plot_loss_curves(df, path, x, y, by)`: one line per group of a tidy frame (training curves);
- `plot_step1(fit, path)`: loss vs D per task, the method's law per size (the ensemble's combined
  law), targets marked (`step1_figure(fit)`: the figure, unsaved);
- `plot_step2(fit, path)`: accuracy vs loss per task, the sigmoid through the points;
- `plot_pred_vs_actual(fit, path)`: predicted vs actual accuracy of every target and task, with the
  headline (kappa) and bootstrap intervals (`pred_vs_actual_figure(fit)`: the figure, unsaved);
- `plot_fit(fit, out_dir)`: those of the three that the fit has data for (`fit_plots(fit)`).
"""

from __future__ import annotations

import math
import os
import textwrap
from pathlib import Path

import matplotlib
import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import NullFormatter

from ladder.fit import methods
from ladder.fit.pipeline import LadderFit
from ladder.report.tables import ACC_INTERVALS, HEADLINE_INTERVAL

COLORS = matplotlib.colormaps["viridis"]
TARGET_COLOR = "crimson"


def _grid(count: int) -> tuple[Figure, list[Axes]]:
    columns = min(4, max(count, 1))
    rows = math.ceil(max(count, 1) / columns)
    figure = Figure(figsize=(3.6 * columns, 3.0 * rows))
    axes = figure.subplots(rows, columns, squeeze=False)
    flat = list(axes.flat)
    for unused in flat[count:]:
        unused.axis("off")
    return figure, flat[:count]


def _log_x(axis: Axes) -> None:
    """Log x axis; minor ticks unlabelled (spans under a decade otherwise print overlapping labels)."""
    axis.set_xscale("log")
    axis.xaxis.set_minor_formatter(NullFormatter())


def _label_task_panel(axis: Axes, task: str, x: str, y: str) -> None:
    """Title, axis labels, grid and legend of one task's panel in a grid of plots."""
    axis.set_title(task, fontsize=9)
    axis.set_xlabel(x)
    axis.set_ylabel(y)
    axis.grid(alpha=0.3)
    axis.legend(fontsize=6)


def _mark_target(axis: Axes, run: str, predicted: tuple[float, float], actual: tuple[float, float]) -> None:
    """A target's predicted point (o) and, where it was trained, its actual one (x)."""
    axis.scatter(
        *([v] for v in predicted),
        color=TARGET_COLOR,
        marker="o",
        facecolors="none",
        s=40,
        label=f"{run} predicted",
        zorder=4,
    )
    if all(math.isfinite(v) for v in actual):
        axis.scatter(*([v] for v in actual), color=TARGET_COLOR, marker="x", s=40, label=f"{run} actual", zorder=4)


def _save(figure: Figure, path: str | os.PathLike) -> Path:
    path = Path(path)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    return path


def plot_loss_curves(
    df: pd.DataFrame,
    path: str | os.PathLike,
    x: str = "tokens",
    y: str = "loss",
    by: str = "run",
    *,
    title: str | None = None,
    logx: bool = True,
) -> Path:
    """One line per `by` group of `y` against `x` (e.g. training loss vs tokens per run)."""
    for column in (x, y, by):
        if column not in df:
            raise ValueError(f"plot_loss_curves: no column {column!r}")
    figure = Figure(figsize=(6.4, 4.4))
    axis = figure.subplots()
    groups = list(df.groupby(by, sort=True))
    for position, (name, group) in enumerate(groups):
        group = group.sort_values(x)
        axis.plot(group[x], group[y], label=str(name), lw=1.2, color=COLORS(position / max(len(groups) - 1, 1)))
    if logx and (df[x] > 0).all():
        _log_x(axis)
    axis.set_xlabel(x)
    axis.set_ylabel(y)
    if title:
        axis.set_title(title)
    axis.legend(fontsize=7, ncols=2 if len(groups) > 8 else 1)
    axis.grid(alpha=0.3)
    return _save(figure, path)


def step1_title(method: str) -> str:
    """What step1.png's lines are: the law the method predicts with (for the ensemble, the combination)."""
    laws = methods.LAWS[method]
    if len(laws) == 1:
        return f"step 1, --method {method}: dashed lines, its law at each size's N"
    return (
        f"step 1, --method {method}: dashed lines, the geometric mean of {', '.join(laws[:-1])} and {laws[-1]} "
        "at each size's N (the law that predicts)"
    )


def plot_step1(fit: LadderFit, path: str | os.PathLike) -> Path:
    """step1.png: `step1_figure` saved."""
    return _save(step1_figure(fit), path)


def step1_figure(fit: LadderFit) -> Figure:
    """Per task: step-1 points (loss vs D; the checkpoints too where the method fits them), the
    method's L(N, D) per size (for the ensemble the combined law, the one that predicts), targets
    actual (x) and predicted (o)."""
    figure, axes = _grid(len(fit.tasks))
    for axis, task_fit in zip(axes, fit.tasks.values()):
        points, checkpoints = task_fit.points1, task_fit.checkpoints
        targets = fit.targets.get(task_fit.task, [])
        d_max = max([points.D.max()] + [t.D for t in targets])
        d_min = points.D.min() if checkpoints is None else min(points.D.min(), checkpoints.D.min())
        d_grid = np.geomspace(d_min * 0.8, d_max * 1.2, 100)
        sizes = list(dict.fromkeys(points.sizes))
        for position, size in enumerate(sizes):
            color = COLORS(position / max(len(sizes) - 1 + bool(targets), 1))
            members = [i for i, s in enumerate(points.sizes) if s == size]
            axis.scatter(points.D[members], points.loss[members], color=color, s=18, label=size, zorder=3)
            axis.plot(d_grid, task_fit.step1.predict(points.N[members[0]], d_grid), color=color, lw=1, ls="--")
            if checkpoints is not None:
                mine = np.isin(checkpoints.run_index, members)
                axis.scatter(
                    checkpoints.D[mine],
                    checkpoints.loss[mine],
                    color=color,
                    s=2,
                    alpha=0.3,
                    label="checkpoints fitted" if position == 0 else "_nolegend_",
                    zorder=2,
                )
        for target in targets:
            axis.plot(d_grid, task_fit.step1.predict(target.N, d_grid), color=TARGET_COLOR, lw=1, ls=":")
            _mark_target(
                axis,
                target.run,
                (target.D, float(task_fit.step1.predict(target.N, target.D))),
                (target.D, target.actual_loss),
            )
        _log_x(axis)
        _label_task_panel(axis, task_fit.task, "tokens D", "task loss (bpb)")
    # About 12 characters of 9-point text to the inch: the title wraps inside a narrow grid.
    figure.suptitle(textwrap.fill(step1_title(fit.options.method), int(12 * figure.get_figwidth())), fontsize=9)
    return figure


def plot_step2(fit: LadderFit, path: str | os.PathLike) -> Path:
    """Per task with accuracies: the step-2 points, the fitted sigmoid, targets actual (x) and predicted (o)."""
    with_acc = [f for f in fit.tasks.values() if f.step2 is not None]
    figure, axes = _grid(len(with_acc))
    for axis, task_fit in zip(axes, with_acc):
        points = task_fit.points2
        sizes = task_fit.points1.sizes
        size_of_point = np.array(sizes)[points.run_index]
        unique_sizes = list(dict.fromkeys(sizes))
        for position, size in enumerate(unique_sizes):
            chosen = size_of_point == size
            axis.scatter(
                points.loss[chosen],
                points.acc[chosen],
                s=4,
                alpha=0.5,
                label=size,
                color=COLORS(position / max(len(unique_sizes), 1)),
            )
        targets = fit.targets.get(task_fit.task, [])
        losses = [points.loss.min(), points.loss.max()] + [
            t.actual_loss for t in targets if math.isfinite(t.actual_loss)
        ]
        losses += [float(task_fit.step1.predict(t.N, t.D)) for t in targets]
        low, high = min(losses), max(losses)
        grid = np.linspace(low - 0.2 * (high - low), high + 0.05 * (high - low), 200)
        axis.plot(grid, task_fit.step2.predict(grid), color="black", lw=1)
        axis.axhline(task_fit.chance, color="grey", lw=0.8, ls=":")
        for target in targets:
            pred_loss = float(task_fit.step1.predict(target.N, target.D))
            _mark_target(
                axis,
                target.run,
                (pred_loss, float(task_fit.step2.predict(pred_loss))),
                (target.actual_loss, target.actual_acc),
            )
        _label_task_panel(axis, task_fit.task, "task loss (bpb)", "accuracy")
    return _save(figure, path)


def plot_pred_vs_actual(fit: LadderFit, path: str | os.PathLike) -> Path:
    """pred_vs_actual.png: `pred_vs_actual_figure` saved."""
    return _save(pred_vs_actual_figure(fit), path)


def pred_vs_actual_figure(fit: LadderFit) -> Figure:
    """Predicted against actual accuracy, one point per task x target, with both accuracy
    intervals: the headline (kappa) interval as a solid bar on the point, the bootstrap interval
    as a thin dotted bar just right of it; the legend names each (`interval_label`)."""
    rows = fit.predictions.dropna(subset=["pred_acc", "actual_acc"]).reset_index(drop=True)
    figure = Figure(figsize=(5.2, 5.0))
    axis = figure.subplots()
    markers = "osD^v<>P*X"
    targets = list(dict.fromkeys(rows["target"]))
    colors = [f"C{targets.index(target) % 10}" for target in rows["target"]]
    for position, target in enumerate(targets):
        group = rows[rows["target"] == target]
        axis.plot(
            group["actual_acc"],
            group["pred_acc"],
            markers[position % len(markers)],
            color=f"C{position % 10}",
            ms=5,
            label=str(target),
            zorder=3,
        )
        for _, row in group.iterrows():
            axis.annotate(
                row["task"], (row["actual_acc"], row["pred_acc"]), fontsize=6, xytext=(3, 3), textcoords="offset points"
            )
    bounds = [rows[column] for columns in ACC_INTERVALS.values() for column in columns]
    values = pd.concat([rows["actual_acc"], rows["pred_acc"], *bounds]).dropna() if len(rows) else pd.Series([0.0, 1.0])
    low, high = float(values.min()) - 0.05, float(values.max()) + 0.05
    for kind, (lo, hi) in ACC_INTERVALS.items():
        known = (rows[lo].notna() & rows[hi].notna()).to_numpy()
        if not known.any():
            continue  # no bootstrap: no intervals
        headline = kind == HEADLINE_INTERVAL
        bars = axis.vlines(
            rows["actual_acc"][known] + (0.0 if headline else 0.008 * (high - low)),
            rows[lo][known],
            rows[hi][known],
            colors=[color for color, keep in zip(colors, known) if keep],
            lw=1.6 if headline else 0.9,
            linestyles="solid" if headline else "dotted",
            label=interval_label(kind, fit.options.level),
            zorder=2,
        )
        bars.set_gid(kind)  # which interval the bars are, for a reader of the figure (the tests)
    axis.plot([low, high], [low, high], color="grey", lw=0.8, ls="--")
    axis.set_xlim(low, high)
    axis.set_ylim(low, high)
    axis.set_xlabel("actual accuracy")
    axis.set_ylabel("predicted accuracy (chained)")
    axis.grid(alpha=0.3)
    if len(rows):
        axis.legend(fontsize=7)
    return figure


def interval_label(kind: str, level: float) -> str:
    """The legend's name of an accuracy interval kind (ACC_INTERVALS), the headline marked."""
    return f"{level:.0%} {kind} interval" + (" (headline)" if kind == HEADLINE_INTERVAL else "")


def fit_plots(fit: LadderFit) -> list[str]:
    """The plots `plot_fit` draws for this fit, by file name: step1.png; step2.png when any task has
    accuracies; pred_vs_actual.png when any target has both a predicted and an actual accuracy."""
    names = ["step1.png"]
    if any(f.step2 is not None for f in fit.tasks.values()):
        names.append("step2.png")
    if fit.predictions[["pred_acc", "actual_acc"]].notna().all(axis=1).any():
        names.append("pred_vs_actual.png")
    return names


FIT_PLOTS = {"step1.png": plot_step1, "step2.png": plot_step2, "pred_vs_actual.png": plot_pred_vs_actual}
"""every plot a fit may have, by file name"""


def plot_fit(fit: LadderFit, out_dir: str | os.PathLike) -> list[Path]:
    """Draw the fit's plots (`fit_plots`) into `out_dir`."""
    return [FIT_PLOTS[name](fit, Path(out_dir) / name) for name in fit_plots(fit)]
