"""The printed backtest: statistics per cut and per task, shares as percentages, the coverage lines."""

from __future__ import annotations

import pytest
from fit_synthetic import five_size_table

from ladder.fit.backtest import backtest
from ladder.report.backtest import format_backtest


@pytest.fixture(scope="module")
def table():
    return five_size_table()


def test_with_intervals(table):
    rows = backtest(table, min_sizes=3, bootstrap=20, tasks=["alpha"])
    text = format_backtest(rows, 0.9)
    lines = text.splitlines()
    assert lines[0].startswith(
        "== held-out ladder runs, by the sizes fitted (inside the 90% bootstrap and kappa intervals"
    )
    held = rows[rows["held_out"]]
    share = held["in_acc_interval"].mean()
    overall = next(line for line in lines if line.startswith("all held-out runs"))
    assert overall.split()[3:5] == ["12", f"{held['in_loss_interval'].mean():.0%}"]
    assert f"{share:.0%} of 12 held-out accuracies (bootstrap) fell inside their 90% intervals" in text
    kappa_share = held["in_acc_interval_kappa"].mean()
    assert f"{kappa_share:.0%} of 12 held-out accuracies (kappa) fell inside their 90% intervals" in text
    assert "kappa from these errors:" in text and "leave-one-cut-out" in text
    assert "== by task, over every cut" in text and lines[-1].startswith("the table's targets (big) were predicted")
    by_task = lines[lines.index("== by task, over every cut") + 1 :]
    assert by_task[0].split() == [
        "predictions",
        "in_loss_interval",
        "in_acc_interval",
        "in_acc_interval_kappa",  # the headline interval's coverage, task by task
        "median_abs_err",
    ]
    alpha = next(line for line in by_task if line.startswith("alpha"))
    assert alpha.split()[4] == f"{kappa_share:.0%}"


def test_without_intervals_there_are_no_share_columns(table):
    rows = backtest(table, min_sizes=4, bootstrap=0, tasks=["beta"])
    text = format_backtest(rows, 0.8)
    assert "in_acc_interval" not in text and "median_abs_err" in text
    assert "no intervals (--bootstrap 0): errors only" in text
