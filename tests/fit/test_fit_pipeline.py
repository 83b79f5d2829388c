"""The whole-table fit, its outputs and the commands, on synthetic tables with known answers."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from fit_synthetic import STEP1, STEP2, loss_law, make_table, sigmoid_law

from ladder.cli import main
from ladder.errors import LadderError
from ladder.fit.pipeline import PREDICTION_COLUMNS, fit_table, write_outputs
from ladder.fit.step1 import fit_step1
from ladder.results import write_table

BIG = (2e9, 2e9 * 20 * 5)


@pytest.fixture
def table_path(tmp_path):
    table = make_table(targets={"big": BIG}, loss_noise=0.002, acc_noise=0.005, tasks=("alpha", "beta"))
    return write_table(table, tmp_path / "table.csv")


def test_fit_predicts_the_target_of_a_known_law(tmp_path):
    table = make_table(targets={"big": BIG}, checkpoints=12)
    fit = fit_table(table, bootstrap=40, last_n=1)  # step-1 points exactly on the law
    row = fit.predictions.iloc[0]
    truth_loss = float(loss_law(STEP1, *BIG))
    assert row["pred_loss"] == pytest.approx(truth_loss, rel=2e-3)
    assert row["actual_loss"] == pytest.approx(truth_loss)
    assert row["pred_acc"] == pytest.approx(float(sigmoid_law(STEP2, truth_loss)), abs=0.01)
    assert abs(row["abs_err"]) < 1.0
    assert row["pred_acc_lo"] <= row["pred_acc"] <= row["pred_acc_hi"]
    assert list(fit.predictions.columns) == list(PREDICTION_COLUMNS)
    params = fit.params.iloc[0]
    assert params["alpha"] == pytest.approx(STEP1["alpha"], rel=0.02)
    assert params["k"] == pytest.approx(STEP2["k"], rel=0.05)
    written = {path.name for path in write_outputs(fit, tmp_path / "out")}
    assert {"predictions.csv", "params.csv", "variance.csv", "report.md", "step1.png", "step2.png",
            "pred_vs_actual.png"} <= written
    assert pd.read_csv(tmp_path / "out" / "predictions.csv")["pred_loss"].iloc[0] == pytest.approx(row["pred_loss"])
    assert not list(tmp_path.glob(".out.tmp-*"))


def test_bootstrap_runs_when_step_1_has_a_single_optimum():
    # This law with 0.5% noise leaves the grid of starts no second optimum to offer the refits.
    law = {"A": 400.0, "alpha": 0.35, "B": 900.0, "beta": 0.32, "E": 0.55}
    sizes = {"s1": 2e7, "s2": 5e7, "s3": 1e8, "s4": 2e8}
    table = make_table(step1=law, sizes=sizes, loss_noise=0.005, checkpoints=10, targets={"big": (1e9, 4e10)})
    last = table.groupby("run").tail(1)
    assert fit_step1(last.N.to_numpy(float), last.D.to_numpy(float), last.loss.to_numpy(float)).alternatives.shape == (0, 5)
    row = fit_table(table, bootstrap=30).predictions.iloc[0]
    assert row["pred_loss_lo"] < row["pred_loss"] < row["pred_loss_hi"]


def test_fit_command_writes_outputs_and_refuses_to_overwrite(table_path, tmp_path, capsys):
    out = tmp_path / "fit"
    assert main(["fit", str(table_path), "--out", str(out), "--bootstrap", "20", "--tasks", "beta"]) == 0
    printed = capsys.readouterr().out
    assert "big" in printed and "beta" in printed
    predictions = pd.read_csv(out / "predictions.csv")
    assert predictions["task"].tolist() == ["beta"]
    assert main(["fit", str(table_path), "--out", str(out), "--bootstrap", "0"]) == 2
    assert "pass --overwrite" in capsys.readouterr().err
    assert main(["fit", str(table_path), "--out", str(out), "--bootstrap", "0", "--overwrite", "--no-plots"]) == 0
    assert sorted(pd.read_csv(out / "predictions.csv")["task"]) == ["alpha", "beta"]
    assert not list(out.glob("*.png"))  # the replaced fit's plots went with it


def test_plots_alone_count_as_results(table_path, tmp_path, capsys):
    out = tmp_path / "fit"
    out.mkdir()
    (out / "step1.png").write_bytes(b"an earlier fit's plot")
    assert main(["fit", str(table_path), "--out", str(out), "--bootstrap", "0"]) == 2
    assert "already holds results (step1.png)" in capsys.readouterr().err


def test_sizes_and_multipliers_select_ladder_runs_only(table_path, tmp_path):
    table = pd.read_csv(table_path)
    fit = fit_table(table, sizes=["s2", "s3", "s4"], multipliers=[2, 5, 10], bootstrap=0, tasks=["alpha"])
    assert len(fit.ladder_runs) == 9 and "big" in fit.predictions["target"].tolist()


def test_step1_only_table(tmp_path, capsys):
    table = make_table(step2=None, targets={"big": BIG}).drop(columns=["acc"])
    path = write_table(table, tmp_path / "loss_only.parquet")
    assert main(["fit", str(path), "--out", str(tmp_path / "out"), "--bootstrap", "20", "--last-n", "1"]) == 0
    predictions = pd.read_csv(tmp_path / "out" / "predictions.csv")
    assert predictions["pred_loss"].iloc[0] == pytest.approx(float(loss_law(STEP1, *BIG)), rel=2e-3)
    assert predictions[["pred_acc", "pred_acc_lo", "pred_acc_hi", "actual_acc"]].isna().all().all()
    assert np.isfinite(predictions[["pred_loss_lo", "pred_loss_hi"]].to_numpy()).all()
    assert pd.read_csv(tmp_path / "out" / "params.csv")[["a", "k", "L0", "b"]].isna().all().all()
    assert not (tmp_path / "out" / "step2.png").exists()


def test_task_without_accuracies_beside_one_with(tmp_path):
    with_acc = make_table(tasks=("scored",))
    loss_only = make_table(step2=None, tasks=("bpb_only",))
    fit = fit_table(pd.concat([with_acc, loss_only]), bootstrap=0)
    assert fit.tasks["scored"].step2 is not None and fit.tasks["bpb_only"].step2 is None


def test_unknown_task_uses_chance_column_then_default():
    table = make_table(tasks=("t1", "t2"))
    table["chance"] = np.where(table["task"] == "t1", 0.5, np.nan)
    fit = fit_table(table, bootstrap=0, chance=0.1)
    assert fit.tasks["t1"].chance == 0.5 and fit.tasks["t2"].chance == 0.1
    assert fit_table(make_table(), bootstrap=0).tasks["synth"].chance == 0.25


def test_near_chance_noisy_accuracies_are_flagged_not_fatal():
    table = make_table(step2={"a": -0.01, "k": 1.0, "L0": 1.0, "b": 0.26}, acc_noise=0.02)
    fit = fit_table(table, bootstrap=20)
    assert "near chance" in fit.params["flags"].iloc[0]
    assert np.isfinite(fit.params[["a", "k", "L0", "b"]].to_numpy(dtype=float)).all()


def test_predict_command(table_path, tmp_path, capsys):
    out = tmp_path / "pred.csv"
    assert main(["predict", str(table_path), "--target", f"huge:{4e9:g}:{4e9 * 400:g}", "--bootstrap", "20",
                 "--last-n", "1", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "huge" in printed
    predictions = pd.read_csv(out)
    assert set(predictions["task"]) == {"alpha", "beta"}
    assert predictions["pred_loss"].iloc[0] == pytest.approx(float(loss_law(STEP1, 4e9, 4e9 * 400)), rel=0.03)
    assert predictions["actual_acc"].isna().all()
    assert main(["predict", str(table_path), "--target", "x:1e9"]) == 2
    assert "NAME:N:D" in capsys.readouterr().err
    for wrong in ("pred.parquet", "predictions/"):
        assert main(["predict", str(table_path), "--target", "x:1e9:2e10", "--out", str(tmp_path / wrong)]) == 2
        assert "give a .csv file" in capsys.readouterr().err


def _bad_table(tmp_path, change) -> str:
    table = make_table(targets={"big": BIG})
    table = change(table)
    path = tmp_path / "bad.csv"
    table.to_csv(path, index=False)
    return str(path)


@pytest.mark.parametrize("change,message", [
    (lambda t: t.drop(columns=["loss"]), "missing required column(s) loss"),
    (lambda t: t.assign(loss=t["loss"].where(t.index != 3, np.nan)), "'loss' has a missing"),
    (lambda t: t.assign(loss=t["loss"].where(t.index != 3, np.inf)), "'loss' has an infinite"),
    (lambda t: t.assign(N=t["N"].where(t.index != 3, 0)), "'N' must be > 0"),
    (lambda t: t.assign(D=t["D"].where(t.index != 3, -5.0)), "'D' must be > 0"),
    (lambda t: t[t["run"].isin(["s1-1xC", "s2-1xC", "s3-1xC", "s4-1xC", "big"])], "fewer than its 5 parameters"),
    (lambda t: t[t["size"].isin(["s1", "big"])], "at least 2 model sizes"),
])
def test_bad_tables_fail_with_one_line_and_write_nothing(tmp_path, capsys, change, message):
    out = tmp_path / "out"
    assert main(["fit", _bad_table(tmp_path, change), "--out", str(out), "--bootstrap", "0"]) == 2
    error = capsys.readouterr().err
    assert message in error and error.count("\n") == 1
    assert not out.exists() and not list(tmp_path.glob(".out*"))


@pytest.mark.parametrize("option,message", [
    (["--tasks", "synth,nope"], "--tasks: nope not in the table"),
    (["--sizes", "s1,s9"], "--sizes: s9 not in the table"),
    (["--multipliers", "1,3"], "--multipliers: 3.0 not in the table"),
    (["--level", "1.5"], "--level must lie in (0, 1)"),
    (["--bootstrap", "many"], "invalid int value"),
    (["--bootstrap", "10", "--seed", "-1"], "--seed must be >= 0, got -1"),
    (["--window", "0"], "--last-n and --window must be >= 1, got 5 and 0"),
])
def test_bad_options_fail_with_one_line(tmp_path, capsys, option, message):
    assert main(["fit", _bad_table(tmp_path, lambda t: t), "--out", str(tmp_path / "out"), *option]) == 2
    error = capsys.readouterr().err
    assert message in error and error.count("\n") == 1
    assert not (tmp_path / "out").exists()


def test_missing_table_and_import_errors(tmp_path, capsys):
    assert main(["fit", str(tmp_path / "none.csv"), "--out", str(tmp_path / "o")]) == 2
    assert "no such results table" in capsys.readouterr().err
    assert main(["import-olmo", str(tmp_path), "-o", str(tmp_path / "t.csv")]) == 2
    assert "no OLMo ladder files" in capsys.readouterr().err


def test_demo_shaped_ladder_with_noisy_near_chance_tasks(tmp_path):
    """3 tiny sizes x 3 multipliers, a target 7x bigger, non-paper task names with a chance column."""
    sizes = {"femto": 1.2e4, "pico": 2.5e4, "nano": 4.1e4}
    step1 = {"A": 8.0, "alpha": 0.45, "B": 60.0, "beta": 0.3, "E": 0.9}
    rising = make_table(step1=step1, sizes=sizes, multipliers=(1, 2, 4), checkpoints=10, loss_noise=0.01,
                        acc_noise=0.03, step2={"a": -0.6, "k": 3.0, "L0": 2.0, "b": 0.9}, tasks=("copycolors",),
                        targets={"target": (2.9e5, 2.9e5 * 80)})
    flat = make_table(step1=step1, sizes=sizes, multipliers=(1, 2, 4), checkpoints=10, loss_noise=0.01,
                      acc_noise=0.03, step2={"a": -0.02, "k": 1.0, "L0": 1.0, "b": 0.52}, tasks=("corpus_cloze",),
                      targets={"target": (2.9e5, 2.9e5 * 80)}, seed=1)
    table = pd.concat([rising.assign(chance=0.25), flat.assign(chance=0.5)], ignore_index=True)
    fit = fit_table(table, bootstrap=100)
    assert fit.tasks["corpus_cloze"].chance == 0.5
    assert "near chance" in fit.params.set_index("task").loc["corpus_cloze", "flags"]
    assert fit.predictions[["pred_loss", "pred_acc", "pred_acc_lo", "pred_acc_hi"]].notna().all().all()
    assert {path.name for path in write_outputs(fit, tmp_path / "out")} >= {"step1.png", "step2.png", "report.md"}


def test_parallel_workers_give_the_same_fit():
    table = make_table(tasks=("alpha", "beta"), targets={"big": BIG}, loss_noise=0.002, acc_noise=0.005,
                       multipliers=(1, 2, 5), checkpoints=6)
    one = fit_table(table, bootstrap=200, workers=1)
    two = fit_table(table, bootstrap=200, workers=2)
    pd.testing.assert_frame_equal(one.predictions, two.predictions)


def test_fitting_never_imports_torch():
    import subprocess
    import sys

    code = ("import sys, ladder.cli, ladder.fit.cli, ladder.fit.pipeline, ladder.report, ladder.results, "
            "ladder.runs.olmo_import, ladder.fit.backtest; assert 'torch' not in sys.modules, 'torch imported'")
    assert subprocess.run([sys.executable, "-c", code], capture_output=True).returncode == 0


def test_writing_plots_leaves_the_callers_matplotlib_backend_alone(tmp_path):
    import subprocess
    import sys

    code = ("import matplotlib; matplotlib.use('svg'); import pandas as pd, ladder.report; "
            f"ladder.report.plot_loss_curves(pd.DataFrame({{'tokens': [1, 2], 'loss': [3, 2], 'run': 'a'}}), "
            f"r'{tmp_path / 'curves.png'}'); assert matplotlib.get_backend() == 'svg', matplotlib.get_backend()")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "curves.png").read_bytes().startswith(b"\x89PNG")


def test_plot_loss_curves_draws_one_line_per_run(tmp_path):
    from ladder.report import plot_loss_curves

    metrics = pd.DataFrame({"run": ["a"] * 3 + ["b"] * 3, "tokens": [1e3, 1e4, 1e5] * 2, "loss": [3, 2, 1.5, 2.8, 1.9, 1.4]})
    path = plot_loss_curves(metrics, tmp_path / "loss.png", x="tokens", y="loss", by="run", title="training")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_repeated_row_index_does_not_change_the_fit():
    table = make_table(targets={"big": BIG}, checkpoints=8, loss_noise=0.01, acc_noise=0.01, seed=3)
    stacked = pd.concat([rows.reset_index(drop=True) for _, rows in table.groupby("run")])  # index 0..7 per run
    assert stacked.index.duplicated().any()
    expected, got = (fit_table(t, bootstrap=20).predictions for t in (table, stacked))
    pd.testing.assert_frame_equal(got, expected)


def test_a_tasks_intervals_do_not_depend_on_the_other_tasks_selected():
    table = make_table(tasks=("alpha", "beta"), targets={"big": BIG}, checkpoints=8, loss_noise=0.01, acc_noise=0.01)
    both = fit_table(table, bootstrap=30, seed=3).predictions.set_index("task")
    alone = fit_table(table, bootstrap=30, seed=3, tasks=["beta"]).predictions.set_index("task")
    columns = ["pred_loss_lo", "pred_loss_hi", "pred_acc_lo", "pred_acc_hi"]
    pd.testing.assert_series_equal(alone.loc["beta", columns], both.loc["beta", columns])


def test_predict_takes_one_target_and_says_so_for_arrays():
    fit = fit_table(make_table(targets={"big": BIG}, checkpoints=8), bootstrap=0)
    assert len(fit.predict(4e9, 1.6e12, "huge")) == 1
    with pytest.raises(LadderError, match="predict takes one model"):
        fit.predict(np.array([4e9, 8e9]), 1.6e12)
