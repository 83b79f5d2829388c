"""Step-1 methods (the ensemble and its laws), the joint bootstrap, early-target offsets and kappa intervals."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from fit_synthetic import OLMO_DIR, STEP2, make_table, sigmoid_law

from ladder.cli import main
from ladder.errors import LadderError
from ladder.fit import pipeline
from ladder.fit.backtest import backtest, compare_methods, comparison
from ladder.fit.bootstrap import checkpoint_weights, refit_checkpoint_law
from ladder.fit.calibration import estimate_kappa, kappa_interval, leave_one_cut_out
from ladder.fit.chain import fit_single_step
from ladder.fit.laws import ComputeProblem, SharedProblem, TiedProblem
from ladder.fit.methods import METHODS
from ladder.fit.pipeline import EARLY_COLUMNS, PREDICTION_COLUMNS, fit_table
from ladder.fit.step1 import fit_problem
from ladder.report.backtest import format_comparison
from ladder.results import write_table

pytestmark = pytest.mark.slow  # trains models, spawns processes or refits the paper data

# One exponent for N and D and for every task: the tied and shared laws hold exactly.
TIED = {"A": 300.0, "alpha": 0.3, "B": 900.0, "beta": 0.3, "E": 1.5}
TIED_2 = {"A": 120.0, "alpha": 0.3, "B": 1500.0, "beta": 0.3, "E": 0.9}
BIG = (2e9, 2e9 * 20 * 5)
REPLICATES = 12  # bootstrap replicates: enough for an interval, few enough for a quick test


def _grid(sizes=(2e7, 5e7, 1.2e8, 3e8)):
    n, d = np.meshgrid(sizes, [1, 2, 5, 10, 20])
    n = n.ravel()
    return n, d.ravel() * 20 * n


@pytest.mark.parametrize(
    "problem,truth",
    [
        (TiedProblem, {"A": 400.0, "alpha": 0.3, "B": 900.0, "E": 1.7}),
        (TiedProblem, {"A": 2.0, "alpha": 0.15, "B": 4000.0, "E": 0.3}),
        (ComputeProblem, {"A": 300.0, "gamma": 0.15, "E": 1.2}),
    ],
)
def test_each_law_recovers_its_known_parameters(problem, truth):
    def law(n, d):
        if problem is TiedProblem:
            return truth["A"] / n ** truth["alpha"] + truth["B"] / d ** truth["alpha"] + truth["E"]
        return truth["A"] / (6 * n * d) ** truth["gamma"] + truth["E"]

    n, d = _grid()
    fit = fit_problem(problem(n, d, law(n, d)), "test")
    for name, value in truth.items():
        assert fit.params[name] == pytest.approx(value, rel=1e-3), name
    assert fit.converged and not fit.at_bound
    assert float(fit.predict(4e9, 4e12)) == pytest.approx(law(4e9, 4e12), rel=1e-5)  # 13x beyond the largest N
    assert fit.predict(np.array([4e9, 8e9]), 4e12).shape == (2,)


def test_shared_law_recovers_every_tasks_parameters_and_the_common_exponents():
    n, d = _grid()
    laws = [(406.0, 410.0, 1.69), (50.0, 300.0, 0.5), (900.0, 100.0, 2.0)]
    loss = np.concatenate([a / n**0.34 + b / d**0.28 + e for a, b, e in laws])
    problem = SharedProblem(np.tile(n, 3), np.tile(d, 3), loss, np.repeat([0, 1, 2], len(n)), ["x", "y", "z"])
    fit = fit_problem(problem, "test")
    assert fit.params["alpha"] == pytest.approx(0.34, rel=1e-4) and fit.params["beta"] == pytest.approx(0.28, rel=1e-4)
    for task, (a, b, e) in zip("xyz", laws):
        assert [fit.params[f"{name}[{task}]"] for name in "ABE"] == pytest.approx([a, b, e], rel=1e-3)
    view = problem.task_fit(fit, 1)
    assert view.predict(1e10, 1e12) == pytest.approx(50.0 / 1e10**0.34 + 300.0 / 1e12**0.28 + 0.5, rel=1e-6)


def test_ensemble_recovers_a_known_law():
    """Two tasks on one tied law each (alpha = beta, shared by both): the tied and shared laws
    recover it exactly, the compute-only law approximates it, and the ensemble is their geometric mean."""
    tables = [
        make_table(step1=law, checkpoints=12, tasks=(task,), targets={"big": BIG})
        for law, task in ((TIED, "alpha"), (TIED_2, "beta"))
    ]
    fit = fit_table(pd.concat(tables, ignore_index=True), bootstrap=0, last_n=1)
    for task, law in (("alpha", TIED), ("beta", TIED_2)):
        step1 = fit.tasks[task].step1
        truth = law["A"] / BIG[0] ** 0.3 + law["B"] / BIG[1] ** 0.3 + law["E"]
        assert step1.laws["ic-tied"].params["alpha"] == pytest.approx(0.3, rel=1e-4)
        assert step1.laws["shared"].params["beta"] == pytest.approx(0.3, rel=1e-4)
        assert float(step1.laws["ic-tied"].predict(*BIG)) == pytest.approx(truth, rel=1e-5)
        assert float(step1.laws["shared"].predict(*BIG)) == pytest.approx(truth, rel=1e-5)
        parts = [float(law_fit.predict(*BIG)) for law_fit in step1.laws.values()]
        row = fit.predictions.set_index("task").loc[task]
        assert row["pred_loss"] == pytest.approx(math.exp(np.mean(np.log(parts))), rel=1e-12)
        assert row["pred_loss"] == pytest.approx(truth, rel=0.02)
        assert row["pred_acc"] == pytest.approx(
            float(fit.tasks[task].step2.predict(row["pred_loss"]))
        )  # step 2 as ever


@pytest.fixture(scope="module")
def two_tasks() -> pd.DataFrame:
    return make_table(tasks=("alpha", "beta"), targets={"big": BIG}, checkpoints=8, loss_noise=0.01, acc_noise=0.01)


@pytest.fixture(scope="module")
def bootstrapped(two_tasks):
    """The default method with a (small) bootstrap and kappa intervals, fitted once for the tests below."""
    return fit_table(two_tasks, bootstrap=REPLICATES, seed=2, kappa=2.0)


def test_the_bootstrap_draws_runs_jointly_across_tasks(two_tasks, bootstrapped):
    draws = [bootstrapped.tasks[task].boot.run_draws for task in ("alpha", "beta")]
    np.testing.assert_array_equal(draws[0], draws[1])
    assert draws[0].shape == (REPLICATES, 16) and (draws[0].sum(axis=1) == 16).all()
    paper = fit_table(two_tasks, bootstrap=REPLICATES, seed=2, method="paper")  # the paper's: each task its own draws
    assert not np.array_equal(paper.tasks["alpha"].boot.run_draws, paper.tasks["beta"].boot.run_draws)
    row = bootstrapped.predictions.iloc[0]
    assert row["pred_acc_lo"] < row["pred_acc"] < row["pred_acc_hi"]
    assert row["pred_loss_lo"] < row["pred_loss"] < row["pred_loss_hi"]


def test_replicate_weights_multiply_the_huber_terms():
    """A point drawn twice counts as two points (not as one whose residual is scaled by sqrt(2))."""
    n, d = _grid()
    rng = np.random.default_rng(4)
    loss = TIED["A"] / n**0.3 + TIED["B"] / d**0.3 + TIED["E"]
    loss = loss * np.exp(0.02 * rng.standard_normal(len(loss)))  # residuals far beyond the Huber threshold
    fit = fit_problem(TiedProblem(n, d, loss), "test")
    weights = rng.integers(0, 3, size=(3, len(loss))).astype(float)
    refitted = refit_checkpoint_law(fit, weights)
    for replicate in range(3):
        repeat = np.repeat(np.arange(len(loss)), weights[replicate].astype(int))
        duplicated = fit_problem(TiedProblem(n[repeat], d[repeat], loss[repeat]), "test")
        assert float(fit.problem.predict(refitted[replicate : replicate + 1], 1e10, 1e12)[0]) == pytest.approx(
            float(duplicated.predict(1e10, 1e12)), rel=1e-5
        )


def test_checkpoint_weights_resample_within_runs_times_the_run_draws():
    run_index = np.array([0, 0, 0, 1, 1])
    per_run = np.array([[2.0, 0.0], [1.0, 1.0]])
    weights = checkpoint_weights(run_index, per_run, 6, np.random.default_rng(0))
    assert weights[:, 5].tolist() == [1.0, 1.0]  # past the runs' points (step 2's anchor)
    assert weights[0, :3].sum() == 6 and weights[0, 3:5].sum() == 0
    assert weights[1, :3].sum() == 3 and weights[1, 3:5].sum() == 2


def test_shared_exponents_refuse_tasks_without_the_same_runs(two_tasks, tmp_path, capsys):
    uneven = two_tasks[~((two_tasks["task"] == "beta") & (two_tasks["run"] == "s2-5xC"))]
    path = write_table(uneven, tmp_path / "uneven.csv")
    out = tmp_path / "out"
    assert main(["fit", str(path), "--out", str(out), "--bootstrap", "0"]) == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and "shared-exponent fit needs every task on the same ladder runs" in error
    assert "s2-5xC" in error and not out.exists()
    with pytest.raises(LadderError, match="same ladder runs"):
        fit_table(uneven, bootstrap=0, method="shared")
    for method in ("paper", "ic-tied", "ic-compute"):  # the laws fitted task by task take them
        assert len(fit_table(uneven, bootstrap=0, method=method).predictions) == 2


def test_method_option_is_checked(two_tasks, tmp_path, capsys):
    path = write_table(two_tasks, tmp_path / "t.csv")
    assert main(["fit", str(path), "--out", str(tmp_path / "o"), "--method", "best"]) == 2
    assert "invalid choice: 'best'" in capsys.readouterr().err
    with pytest.raises(LadderError, match="--kappa must be a finite number >= 0"):
        fit_table(two_tasks, kappa=-1.0)


def _early_table(shift: float) -> pd.DataFrame:
    """Ladder plus a target whose every checkpoint scores `shift` above the ladder's sigmoid."""
    table = make_table(checkpoints=10, loss_noise=0.002, acc_noise=0.002, multipliers=(1, 2, 5))
    n, budget = BIG
    d = np.linspace(budget / 100, budget, 100)
    loss = 406.4 / n**0.34 + 410.7 / d**0.28 + 1.69  # fit_synthetic.STEP1
    rows = pd.DataFrame(
        {
            "run": "big",
            "role": "target",
            "N": int(n),
            "D": d,
            "step": np.arange(1, 101),
            "task": "synth",
            "loss": loss,
            "acc": sigmoid_law(STEP2, loss) + shift,
            "size": "big",
        }
    )
    return pd.concat([table, rows], ignore_index=True)


def test_early_target_reports_the_offset_beside_the_plain_prediction():
    """The offset is step 2's, the same for every step-1 method: the paper's, the quickest, fits here."""
    table = _early_table(0.03)
    plain = fit_table(table, bootstrap=0, method="paper")
    assert list(plain.predictions.columns) == list(PREDICTION_COLUMNS)
    early = fit_table(table, bootstrap=0, method="paper", early_target=True)
    assert list(early.predictions.columns) == list(PREDICTION_COLUMNS) + list(EARLY_COLUMNS)
    row = early.predictions.iloc[0]
    assert row["pred_acc"] == plain.predictions.iloc[0]["pred_acc"]  # the plain prediction is unchanged
    assert row["early_points"] == 9  # D <= 10% of the budget: 10 checkpoints, the first dropped
    assert row["early_offset"] == pytest.approx(0.03, abs=0.005)
    assert row["early_acc"] == pytest.approx(row["pred_acc"] + row["early_offset"])
    assert row["early_abs_err"] == pytest.approx(100 * (row["early_acc"] - row["actual_acc"]))
    assert abs(row["early_abs_err"]) < abs(row["abs_err"])
    # A run in progress: its first checkpoints in the table, the budget given to predict.
    started = table[~((table["run"] == "big") & (table["D"] > 0.12 * BIG[1]))]
    ongoing = fit_table(started, bootstrap=0, method="paper", early_target=True)
    predicted = ongoing.predict(BIG[0], BIG[1], "big").iloc[0]
    assert predicted["early_points"] == 9 and predicted["early_offset"] == pytest.approx(0.03, abs=0.005)
    assert math.isnan(ongoing.predict(BIG[0], BIG[1], "other").iloc[0]["early_offset"])


def test_kappa_interval_half_width():
    low, high = kappa_interval(0.6, 0.01, 2.0, kappa=1.5, level=0.9)
    half = 1.6448536 * math.sqrt(0.01**2 + 0.03**2)
    assert (low, high) == pytest.approx((0.6 - half, 0.6 + half), abs=1e-6)
    assert kappa_interval(0.6, 0.01, 2.0, kappa=0.0, level=0.9) == pytest.approx(
        (0.6 - 0.016449, 0.6 + 0.016449), abs=1e-5
    )
    assert kappa_interval(0.99, 0.05, 0.0, kappa=1.0, level=0.9)[1] == 1.0


def test_fit_intervals_widen_with_extrapolation(bootstrapped):
    row = bootstrapped.predictions.iloc[0]
    n_max, d_max = 3e8, 3e8 * 20 * 10
    assert row["extrapolation"] == pytest.approx(math.log(BIG[0] / n_max) + max(0.0, math.log(BIG[1] / d_max)))
    half = 1.6448536 * math.sqrt(row["acc_sd"] ** 2 + (0.02 * row["extrapolation"]) ** 2)
    assert row["pred_acc_hi_kappa"] - row["pred_acc"] == pytest.approx(half, rel=1e-5)
    assert row["pred_acc_hi_kappa"] - row["pred_acc_lo_kappa"] > row["pred_acc_hi"] - row["pred_acc_lo"]


def test_kappa_is_estimated_from_excess_squared_errors_and_holds_leave_one_cut_out():
    rng = np.random.default_rng(0)
    count = 4000
    sd = rng.uniform(0.5, 2.0, count)  # points
    distance = rng.uniform(0.0, 3.0, count)
    errors = rng.standard_normal(count) * np.sqrt(sd**2 + (0.8 * distance) ** 2)
    assert estimate_kappa(errors, sd, distance) == pytest.approx(0.8, rel=0.05)
    assert math.isnan(estimate_kappa(errors, sd, np.zeros(count)))
    pred = np.full(count, 0.5)
    rows = pd.DataFrame(
        {
            "fit_sizes": np.where(np.arange(count) % 2, "a,b", "a,b,c"),
            "abs_err": errors,
            "acc_sd": sd / 100,
            "extrapolation": distance,
            "pred_acc": pred,
            "actual_acc": pred - errors / 100,
        }
    )
    inside, kappas = leave_one_cut_out(rows, 0.9)
    assert set(kappas) == {"a,b", "a,b,c"} and inside.mean() == pytest.approx(0.9, abs=0.02)


def test_backtest_compares_every_method(tmp_path, capsys, monkeypatch):
    baseline_fits = []
    monkeypatch.setattr(pipeline, "fit_single_step", lambda *args: baseline_fits.append(args) or fit_single_step(*args))
    table = make_table(
        sizes={"s1": 2e7, "s2": 5e7, "s3": 1.2e8, "s4": 3e8, "s5": 7e8},
        checkpoints=6,
        tasks=("alpha", "beta"),
        loss_noise=0.003,
        acc_noise=0.005,
        targets={"big": BIG},
    )
    rows = compare_methods(table, min_sizes=3, bootstrap=3)
    assert list(dict.fromkeys(rows["method"])) == list(METHODS)
    # The single-step baseline does not depend on the method: fitted once per cut and task, the same in every row.
    assert len(baseline_fits) == 2 * 2
    for method in METHODS:
        own = rows[rows["method"] == method]["single_step_acc"].to_numpy()
        np.testing.assert_array_equal(own, rows[rows["method"] == "paper"]["single_step_acc"].to_numpy())
    alone = backtest(table, min_sizes=3, bootstrap=0, method="paper")["single_step_acc"].to_numpy()
    np.testing.assert_allclose(rows[rows["method"] == "paper"]["single_step_acc"].to_numpy(), alone, rtol=1e-12)
    frame = comparison(rows, 0.9)
    assert frame.index.tolist() == list(METHODS) and (frame["held-out"] == 24).all()
    assert frame["targets_mean_abs_err"].notna().all()
    assert frame.loc["paper", "mean_abs_err"] == pytest.approx(
        rows[(rows["method"] == "paper") & rows["held_out"]]["abs_err"].abs().mean()
    )
    assert all(method in format_comparison(rows, 0.9) for method in METHODS)
    path = write_table(table, tmp_path / "t.csv")
    assert (
        main(["backtest", str(path), "--method", "all", "--bootstrap", "0", "--tasks", "alpha", "--min-sizes", "4"])
        == 0
    )
    printed = capsys.readouterr().out
    assert "by step-1 method" in printed and all(method in printed for method in METHODS)


@pytest.mark.skipif(not OLMO_DIR.is_dir(), reason=f"paper data not found at {OLMO_DIR}")
def test_the_default_method_beats_the_paper_on_the_paper_ladder():
    from ladder.runs.olmo_import import import_olmo

    table = import_olmo(OLMO_DIR)
    errors = {}
    for method in ("paper", "ensemble"):
        fit = fit_table(
            table, sizes=["190M", "370M", "760M", "1B"], multipliers=[1, 2, 5, 10], bootstrap=0, method=method
        )
        errors[method] = fit.predictions["abs_err"].abs().mean()
    assert errors["paper"] == pytest.approx(3.82, abs=0.01)
    assert errors["ensemble"] <= 2.16 and errors["ensemble"] < errors["paper"] - 1.5
