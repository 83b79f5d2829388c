"""Backtests: fits on the smaller sizes predicting the larger ones, on known laws and on the paper's ladder."""

from __future__ import annotations

import re

import pandas as pd
import pytest
from fit_synthetic import FIVE_SIZES, OLMO_DIR, STEP1, five_size_table, loss_law

from ladder.errors import LadderError
from ladder.fit.backtest import backtest, coverage_by_task, summarize

pytestmark = pytest.mark.slow  # trains models, spawns processes or refits the paper data


@pytest.fixture(scope="module")
def exact_table() -> pd.DataFrame:
    return five_size_table()


def test_every_cut_predicts_every_larger_run_and_the_targets(exact_table):
    rows = backtest(exact_table, min_sizes=3, bootstrap=30, last_n=1)
    cuts = rows.groupby("fit_sizes", sort=False)
    assert list(cuts.groups) == ["s1,s2,s3", "s1,s2,s3,s4"]
    first = rows[(rows["fit_sizes"] == "s1,s2,s3") & (rows["task"] == "alpha")]
    assert sorted(first.loc[first["held_out"], "target"]) == sorted(
        f"{s}-{m}xC" for s in ("s4", "s5") for m in (1, 2, 5, 10)
    )
    assert first.loc[~first["held_out"], "target"].tolist() == ["big"]
    assert len(rows[rows["fit_sizes"] == "s1,s2,s3,s4"]) == 2 * (4 + 1)
    # On the law exactly, the held-out runs' actual losses are the law's and the fits extrapolate to them.
    held = rows[rows["held_out"]]
    assert held["actual_loss"].to_numpy() == pytest.approx(loss_law(STEP1, held["N"], held["D"]))
    assert held["loss_rel_err"].abs().max() < 0.5
    assert held["abs_err"].abs().max() < 1.0
    inside = (held["actual_acc"] >= held["pred_acc_lo"]) & (held["actual_acc"] <= held["pred_acc_hi"])
    assert held["in_acc_interval"].tolist() == inside.astype(float).tolist()


def test_summaries_count_held_out_runs_only(exact_table):
    rows = backtest(exact_table, min_sizes=3, bootstrap=30, tasks=["alpha"])
    summary = summarize(rows)
    assert summary.index.tolist() == ["s1,s2,s3", "s1,s2,s3,s4", "all held-out runs"]
    assert summary["predictions"].tolist() == [8, 4, 12]
    held = rows[rows["held_out"]]
    assert summary.loc["all held-out runs", "in_acc_interval"] == pytest.approx(held["in_acc_interval"].mean())
    assert summary.loc["all held-out runs", "median_abs_err"] == pytest.approx(held["abs_err"].abs().median())
    assert coverage_by_task(rows).loc["alpha", "predictions"] == 12


def test_without_bootstrap_there_are_errors_and_no_coverage(exact_table):
    rows = backtest(exact_table, min_sizes=4, bootstrap=0, tasks=["beta"])
    assert rows["fit_sizes"].unique().tolist() == ["s1,s2,s3,s4"]
    assert rows["in_acc_interval"].isna().all() and rows["abs_err"].notna().all()


@pytest.mark.parametrize(
    "min_sizes, message",
    [
        (5, "the selected ladder has 5"),
        (1, "--min-sizes must be a whole number >= 2"),
        (2.5, "--min-sizes must be a whole number"),
    ],
)
def test_too_few_sizes_to_hold_out_is_refused(exact_table, min_sizes, message):
    with pytest.raises(LadderError, match=message):
        backtest(exact_table, min_sizes=min_sizes, bootstrap=0)


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda t: t.assign(N=t["N"].where(t["size"] != "s5", FIVE_SIZES["s4"])), "sizes 's4', 's5' share N = 3e+08"),
        (lambda t: t.assign(size=t["size"].where(t["size"] != "s5", "s4")), "size 's4' has runs of 2 different N"),
    ],
)
def test_cuts_must_be_cuts_in_n(exact_table, change, message):
    with pytest.raises(LadderError, match=re.escape(message)):
        backtest(change(exact_table), bootstrap=0)


@pytest.mark.skipif(not OLMO_DIR.is_dir(), reason=f"paper data not found at {OLMO_DIR}")
def test_paper_ladder_intervals_hold_about_as_often_as_their_level():
    """190M-760M predicting 1B and 3B, then 190M-1B predicting 3B (docs/fit.md, the paper's method): 96 held-out
    accuracies."""
    from ladder.runs.olmo_import import import_olmo

    rows = backtest(import_olmo(OLMO_DIR), multipliers=[1, 2, 5, 10], method="paper")
    summary = summarize(rows)
    assert summary["predictions"].tolist() == [64, 32, 96]
    assert 0.85 <= summary.loc["all held-out runs", "in_acc_interval"] <= 0.95
    assert 0.85 <= summary.loc["all held-out runs", "in_loss_interval"] <= 1.0
    assert summary.loc["all held-out runs", "median_abs_err"] < 2.0
