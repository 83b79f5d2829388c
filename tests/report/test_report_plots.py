"""Plots: PNG files drawn without touching the caller's matplotlib backend; a fit draws what it has data for."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from fit_synthetic import BIG, make_table

from ladder.fit.pipeline import fit_table
from ladder.report.plots import fit_plots, plot_fit, plot_loss_curves, pred_vs_actual_figure, step1_figure
from ladder.report.tables import ACC_INTERVALS, HEADLINE_INTERVAL


def test_writing_plots_leaves_the_callers_matplotlib_backend_alone(tmp_path):
    code = (
        "import matplotlib; matplotlib.use('svg'); import pandas as pd, ladder.report.plots as plots; "
        f"plots.plot_loss_curves(pd.DataFrame({{'tokens': [1, 2], 'loss': [3, 2], 'run': 'a'}}), "
        f"r'{tmp_path / 'curves.png'}'); assert matplotlib.get_backend() == 'svg', matplotlib.get_backend()"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
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


@pytest.fixture(scope="module")
def ensemble_fit():
    table = make_table(targets={"big": BIG}, checkpoints=8, loss_noise=0.005, acc_noise=0.01, tasks=("t1", "t2"))
    return fit_table(table, bootstrap=20, workers=1)


def test_pred_vs_actual_draws_the_headline_interval_on_the_point_and_the_bootstrap_one_beside_it(ensemble_fit):
    axis = pred_vs_actual_figure(ensemble_fit).axes[0]
    bars = {collection.get_gid(): collection for collection in axis.collections if collection.get_gid()}
    assert HEADLINE_INTERVAL == "kappa" and set(bars) == set(ACC_INTERVALS) == {"kappa", "bootstrap"}
    rows = ensemble_fit.predictions
    for kind, (lo, hi) in ACC_INTERVALS.items():
        segments = bars[kind].get_segments()
        np.testing.assert_allclose([segment[:, 1] for segment in segments], rows[[lo, hi]].to_numpy())
        x = [segment[0, 0] for segment in segments]
        if kind == HEADLINE_INTERVAL:  # on the point
            assert x == pytest.approx(rows["actual_acc"].tolist())
        else:  # beside it
            assert all(a > b for a, b in zip(x, rows["actual_acc"]))
    assert bars["kappa"].get_linewidth()[0] > bars["bootstrap"].get_linewidth()[0]
    legend = [text.get_text() for text in axis.get_legend().get_texts()]
    assert legend == ["big", "90% kappa interval (headline)", "90% bootstrap interval"]


def test_pred_vs_actual_without_bootstrap_draws_no_intervals():
    fit = fit_table(make_table(targets={"big": BIG}, checkpoints=6), bootstrap=0, method="paper")
    axis = pred_vs_actual_figure(fit).axes[0]
    assert not [collection for collection in axis.collections if collection.get_gid()]
    assert [text.get_text() for text in axis.get_legend().get_texts()] == ["big"]


def test_step1_draws_the_ensembles_combined_law_its_checkpoints_and_the_prediction_it_made(ensemble_fit):
    figure = step1_figure(ensemble_fit)
    assert "geometric mean of ic-tied, ic-compute and shared" in " ".join(figure.get_suptitle().split())
    for axis, (task, task_fit) in zip(figure.axes, ensemble_fit.tasks.items()):
        smallest = axis.get_lines()[0]  # the first size's law
        d = smallest.get_xdata()
        n = task_fit.points1.N[0]
        logs = [np.log(law.predict(n, d)) for law in task_fit.step1.laws.values()]
        assert smallest.get_ydata() == pytest.approx(np.exp(np.mean(logs, axis=0)))
        by_label = {collection.get_label(): collection for collection in axis.collections}
        checkpoints = task_fit.checkpoints
        first_size = np.isin(checkpoints.run_index, [i for i, s in enumerate(task_fit.points1.sizes) if s == "s1"])
        assert len(by_label["checkpoints fitted"].get_offsets()) == first_size.sum()
        predicted = by_label["big predicted"].get_offsets()[0]
        row = ensemble_fit.predictions.set_index("task").loc[task]
        assert predicted.tolist() == pytest.approx([row["D"], row["pred_loss"]])  # the prediction reported
