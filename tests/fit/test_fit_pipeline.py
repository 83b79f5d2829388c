"""The whole-table fit on synthetic tables with known answers (its outputs and commands: tests/report)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from fit_synthetic import BIG, STEP1, STEP2, demo_shaped_table, loss_law, make_table, sigmoid_law

from ladder.errors import LadderError
from ladder.fit.pipeline import PREDICTION_COLUMNS, fit_table
from ladder.fit.step1 import fit_step1


def test_fit_predicts_the_target_of_a_known_law():
    table = make_table(targets={"big": BIG}, checkpoints=12)
    fit = fit_table(table, bootstrap=40, last_n=1, method="paper")  # step-1 points exactly on the law
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


def test_bootstrap_runs_when_step_1_has_a_single_optimum():
    # This law with 0.5% noise leaves the grid of starts no second optimum to offer the refits.
    law = {"A": 400.0, "alpha": 0.35, "B": 900.0, "beta": 0.32, "E": 0.55}
    sizes = {"s1": 2e7, "s2": 5e7, "s3": 1e8, "s4": 2e8}
    table = make_table(step1=law, sizes=sizes, loss_noise=0.005, checkpoints=10, targets={"big": (1e9, 4e10)})
    last = table.groupby("run").tail(1)
    assert fit_step1(last.N.to_numpy(float), last.D.to_numpy(float), last.loss.to_numpy(float)).alternatives.shape == (
        0,
        5,
    )
    row = fit_table(table, bootstrap=30, method="paper").predictions.iloc[0]
    assert row["pred_loss_lo"] < row["pred_loss"] < row["pred_loss_hi"]


def test_sizes_and_multipliers_select_ladder_runs_only():
    table = make_table(targets={"big": BIG}, loss_noise=0.002, acc_noise=0.005, tasks=("alpha", "beta"))
    fit = fit_table(table, sizes=["s2", "s3", "s4"], multipliers=[2, 5, 10], bootstrap=0, tasks=["alpha"])
    assert len(fit.ladder_runs) == 9 and "big" in fit.predictions["target"].tolist()


def test_task_without_accuracies_beside_one_with(tmp_path):
    with_acc = make_table(tasks=("scored",))
    loss_only = make_table(step2=None, tasks=("bpb_only",))
    fit = fit_table(pd.concat([with_acc, loss_only]), bootstrap=0)
    assert fit.tasks["scored"].step2 is not None and fit.tasks["bpb_only"].step2 is None
    assert fit.tasks["scored"].chance == 0.25  # an unknown task without a chance column or argument


def test_unknown_task_uses_chance_column_then_default():
    table = make_table(tasks=("t1", "t2"))
    table["chance"] = np.where(table["task"] == "t1", 0.5, np.nan)
    fit = fit_table(table, bootstrap=0, chance=0.1)
    assert fit.tasks["t1"].chance == 0.5 and fit.tasks["t2"].chance == 0.1
    # Without either: 0.25 (test_task_without_accuracies_beside_one_with).


def test_near_chance_noisy_accuracies_are_flagged_not_fatal():
    table = make_table(step2={"a": -0.01, "k": 1.0, "L0": 1.0, "b": 0.26}, acc_noise=0.02)
    fit = fit_table(table, bootstrap=20)
    assert "near chance" in fit.params["flags"].iloc[0]
    assert np.isfinite(fit.params[["a", "k", "L0", "b"]].to_numpy(dtype=float)).all()


@pytest.mark.slow
def test_demo_shaped_ladder_with_noisy_near_chance_tasks():
    fit = fit_table(demo_shaped_table(), bootstrap=100)
    assert fit.tasks["corpus_cloze"].chance == 0.5
    assert "near chance" in fit.params.set_index("task").loc["corpus_cloze", "flags"]
    assert fit.predictions[["pred_loss", "pred_acc", "pred_acc_lo", "pred_acc_hi"]].notna().all().all()


@pytest.mark.slow
def test_parallel_workers_give_the_same_fit():
    table = make_table(
        tasks=("alpha", "beta"),
        targets={"big": BIG},
        loss_noise=0.002,
        acc_noise=0.005,
        multipliers=(1, 2, 5),
        checkpoints=6,
    )
    one = fit_table(table, bootstrap=200, workers=1)
    two = fit_table(table, bootstrap=200, workers=2)
    pd.testing.assert_frame_equal(one.predictions, two.predictions)


def test_a_repeated_row_index_does_not_change_the_fit():
    table = make_table(targets={"big": BIG}, checkpoints=8, loss_noise=0.01, acc_noise=0.01, seed=3)
    stacked = pd.concat([rows.reset_index(drop=True) for _, rows in table.groupby("run")])  # index 0..7 per run
    assert stacked.index.duplicated().any()
    expected, got = (fit_table(t, bootstrap=20).predictions for t in (table, stacked))
    pd.testing.assert_frame_equal(got, expected)


@pytest.mark.slow
def test_a_tasks_intervals_do_not_depend_on_the_other_tasks_selected():
    """With the paper's method (the shared-exponent law of the default couples the tasks by design)."""
    table = make_table(tasks=("alpha", "beta"), targets={"big": BIG}, checkpoints=8, loss_noise=0.01, acc_noise=0.01)
    both = fit_table(table, bootstrap=30, seed=3, method="paper").predictions.set_index("task")
    alone = fit_table(table, bootstrap=30, seed=3, tasks=["beta"], method="paper").predictions.set_index("task")
    columns = ["pred_loss_lo", "pred_loss_hi", "pred_acc_lo", "pred_acc_hi"]
    pd.testing.assert_series_equal(alone.loc["beta", columns], both.loc["beta", columns])


def test_predict_takes_one_target_and_says_so_for_arrays():
    fit = fit_table(make_table(targets={"big": BIG}, checkpoints=8), bootstrap=0)
    assert len(fit.predict(4e9, 1.6e12, "huge")) == 1
    with pytest.raises(LadderError, match="predict takes one model"):
        fit.predict(np.array([4e9, 8e9]), 1.6e12)
