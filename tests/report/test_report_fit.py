"""A fit's folder: its tables as fitted, report.md, its plots; refused over earlier results unless asked."""

from __future__ import annotations

import pandas as pd
import pytest
from fit_synthetic import BIG, demo_shaped_table, make_table

from ladder.errors import LadderError
from ladder.fit.pipeline import fit_table
from ladder.report.fit import check_out_dir, fit_markdown, write_fit_report
from ladder.report.tables import HEADLINE_NOTE, format_predictions


@pytest.fixture(scope="module")
def fit():
    return fit_table(make_table(targets={"big": BIG}, checkpoints=8, loss_noise=0.005, acc_noise=0.01), bootstrap=20)


def test_the_folder_holds_the_fits_tables_report_and_plots(fit, tmp_path):
    out = tmp_path / "out"
    written = write_fit_report(fit, out)
    assert [path.name for path in written] == [
        "params.csv",
        "pred_vs_actual.png",
        "predictions.csv",
        "report.md",
        "step1.png",
        "step2.png",
        "variance.csv",
    ]
    pd.testing.assert_frame_equal(pd.read_csv(out / "predictions.csv"), fit.predictions, check_dtype=False)
    assert pd.read_csv(out / "params.csv")["shared.alpha"].tolist() == pytest.approx(
        fit.params["shared.alpha"].tolist()
    )
    assert len(pd.read_csv(out / "variance.csv")) == len(fit.variance)
    assert (out / "report.md").read_text(encoding="utf-8") == fit_markdown(
        fit, [out / "step1.png", out / "step2.png", out / "pred_vs_actual.png"]
    )
    assert all(path.read_bytes().startswith(b"\x89PNG") for path in written if path.suffix == ".png")
    assert not list(tmp_path.glob(".out.tmp-*"))


def test_report_md_shows_predictions_parameters_and_plots(fit):
    text = fit_markdown(fit, [])
    row = fit.predictions.iloc[0]
    assert text.startswith("# Ladder fit\n") and "## Plots" not in text
    assert f"| synth | big | {row['pred_loss']:.4f} |" in text
    assert f"{100 * row['pred_acc']:.2f}" in text and f"{row['abs_err']:+.2f}" in text
    assert "## Parameters" in text and "## Checkpoint-to-checkpoint variance" in text


@pytest.mark.slow
def test_flagged_tasks_are_listed_and_near_chance_plots_are_drawn(tmp_path):
    fit = fit_table(demo_shaped_table(), bootstrap=20)
    text = fit_markdown(fit)
    flags = fit.params.set_index("task")["flags"]
    assert "## Flags" in text and f"- corpus_cloze: {flags['corpus_cloze']}\n" in text
    assert "near chance" in flags["corpus_cloze"]
    assert {path.name for path in write_fit_report(fit, tmp_path / "out")} >= {"step1.png", "step2.png", "report.md"}


def test_without_plots_report_md_shows_none(fit, tmp_path):
    written = write_fit_report(fit, tmp_path / "out", plots=False)
    assert [path.suffix for path in written].count(".png") == 0
    assert "## Plots" not in (tmp_path / "out" / "report.md").read_text(encoding="utf-8")


def test_an_out_dir_holding_results_is_refused_unless_overwriting(fit, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "variance.csv").write_text("earlier")
    (out / "notes.txt").write_text("mine")
    with pytest.raises(LadderError, match=r"already holds results \(variance.csv\); pass --overwrite"):
        write_fit_report(fit, out)
    assert (out / "variance.csv").read_text() == "earlier"
    write_fit_report(fit, out, overwrite=True)
    assert (out / "variance.csv").read_text() != "earlier" and (out / "notes.txt").read_text() == "mine"
    (tmp_path / "afile").write_text("x")
    with pytest.raises(LadderError, match="exists and is not a directory"):
        check_out_dir(tmp_path / "afile", overwrite=True)


def _table_under(text: str, line_start: str) -> list[dict[str, str]]:
    """The rows of the first pipe table after the line of report.md that starts with `line_start`."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(line_start))
    table = []
    for line in lines[start + 1 :]:
        if line.startswith("|"):
            table.append([cell.strip() for cell in line.strip("|").split("|")])
        elif table:
            break
    header, _, *body = table
    return [dict(zip(header, row)) for row in body]


def test_report_md_of_the_ensemble_shows_each_laws_parameters_and_names_the_headline_interval(fit):
    text = fit_markdown(fit, [])
    laws = fit.tasks["synth"].step1.laws
    assert list(laws) == ["ic-tied", "ic-compute", "shared"]
    assert "Step 1, --method ensemble: the geometric mean of 3 laws' predictions" in text
    expected = {
        "ic-tied": ["A", "alpha", "B", "E"],
        "ic-compute": ["A", "gamma", "E"],
        "shared": ["A_t", "B_t", "E_t"],  # per task; alpha and beta, common to every task, above the table
    }
    for name, columns in expected.items():
        (row,) = _table_under(text, f"**{name}**")
        assert list(row)[1 : 1 + len(columns)] == columns
        for column in columns:
            assert float(row[column]) == pytest.approx(laws[name].params[column.removesuffix("_t")], rel=1e-3)
        assert int(row["points"]) == laws[name].n_points
        assert float(row["rmse_log"]) == pytest.approx(laws[name].rmse_log, rel=1e-3, abs=1e-4)
    shared = laws["shared"].params
    assert f"common to every task: alpha = {shared['alpha']:.4g}, beta = {shared['beta']:.4g}" in text
    (step2,) = _table_under(text, "**step 2**")
    assert float(step2["k"]) == pytest.approx(fit.tasks["synth"].step2.k, rel=1e-3)
    assert "the headline is the kappa interval (`acc interval %`; `pred_acc_lo_kappa`, `pred_acc_hi_kappa`" in text
    (prediction,) = _table_under(text, "## Predictions")
    row = fit.predictions.iloc[0]
    assert (
        prediction["acc interval %"] == f"[{100 * row['pred_acc_lo_kappa']:.1f}, {100 * row['pred_acc_hi_kappa']:.1f}]"
    )


def test_report_md_of_the_paper_method_shows_its_five_parameters_and_no_intervals_without_bootstrap():
    fit = fit_table(make_table(targets={"big": BIG}, checkpoints=8), bootstrap=0, method="paper")
    text = fit_markdown(fit, [])
    assert "Step 1, --method paper: L = A / N^alpha + B / D^beta + E, on one point per run" in text
    (row,) = _table_under(text, "**paper**")
    for column in ("A", "alpha", "B", "beta", "E"):
        assert float(row[column]) == pytest.approx(fit.params[column].iloc[0], rel=1e-3)
    assert "Intervals: none (--bootstrap 0)." in text and "headline" not in text


def test_the_printed_predictions_name_the_headline_interval_when_there_is_one(fit):
    lines = format_predictions(fit.predictions).splitlines()
    assert "acc interval %" in lines[0] and lines[-1] == HEADLINE_NOTE
    without = fit.predictions.assign(pred_acc_lo_kappa=float("nan"), pred_acc_hi_kappa=float("nan"))
    assert HEADLINE_NOTE not in format_predictions(without)
