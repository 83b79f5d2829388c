"""Plots: PNG files drawn without touching the caller's matplotlib backend; a fit draws what it has data for."""

from __future__ import annotations

import importlib

import matplotlib
import pandas as pd
import pytest
from fit_synthetic import BIG, make_table

from ladder.fit.pipeline import fit_table
from ladder.report import plots
from ladder.report.plots import fit_plots, plot_fit, plot_loss_curves


def test_writing_plots_leaves_the_callers_matplotlib_backend_alone(tmp_path):
    callers = matplotlib.get_backend()
    matplotlib.use("svg")
    try:
        importlib.reload(plots)  # what a caller's `import ladder.report.plots` runs, after choosing a backend
        plots.plot_loss_curves(pd.DataFrame({"tokens": [1, 2], "loss": [3, 2], "run": "a"}), tmp_path / "curves.png")
        assert matplotlib.get_backend() == "svg"
    finally:
        matplotlib.use(callers)
    assert (tmp_path / "curves.png").read_bytes().startswith(b"\x89PNG")


def test_plot_loss_curves_draws_one_line_per_run(tmp_path):
    metrics = pd.DataFrame(
        {"run": ["a"] * 3 + ["b"] * 3, "tokens": [1e3, 1e4, 1e5] * 2, "loss": [3, 2, 1.5, 2.8, 1.9, 1.4]}
    )
    path = plot_loss_curves(metrics, tmp_path / "loss.png", x="tokens", y="loss", by="run", title="training")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(ValueError, match="no column 'step'"):
        plot_loss_curves(metrics, tmp_path / "x.png", x="step")


def test_a_fit_draws_the_plots_it_has_data_for(tmp_path):
    loss_only = fit_table(
        make_table(step2=None, targets={"big": BIG}, checkpoints=6).drop(columns=["acc"]), bootstrap=0
    )
    assert fit_plots(loss_only) == ["step1.png"]
    untrained_target = fit_table(make_table(checkpoints=6), bootstrap=0)  # no targets: nothing to compare
    assert fit_plots(untrained_target) == ["step1.png", "step2.png"]
    drawn = plot_fit(untrained_target, tmp_path)
    assert drawn == [tmp_path / "step1.png", tmp_path / "step2.png"]
    assert all(path.read_bytes().startswith(b"\x89PNG") for path in drawn)
