"""`ladder design`: simulated ladders, vectorised fits of every grid, scores, the generated grid file."""

from __future__ import annotations

import uuid

import numpy as np
import pandas as pd
import pytest
from fit_synthetic import OLMO_DIR, STEP1, STEP2, make_table

from ladder.errors import LadderError
from ladder.fit import design as d
from ladder.fit.pipeline import fit_table

LAW = d.TaskLaw("synth", dict(STEP1), dict(STEP2), 0.25)
SIZES = [d.Size("s1", 2e7, False), d.Size("s2", 5e7, False), d.Size("s3", 1.2e8, False), d.Size("s4", 3e8, False)]
TARGET = d.Target("big", 2e9, 2e9 * 20 * 5)
NOISE = d.Noise(loss_ckpt=0.003, acc_ckpt=0.004, loss_run=0.003, acc_run=0.003, loss_size=0.002, acc_size=0.002)


@pytest.mark.parametrize("method, tolerance", [("paper", 0.01), ("ensemble", 0.015)])
def test_noiseless_ladders_predict_the_law(method, tolerance):
    grid = d.make_grid(SIZES, [1, 2, 5, 10])
    options = d.DesignOptions(sims=8, checkpoints=20, method=method)
    draws = d.draw(LAW, d.Noise(), grid, [TARGET], 8, 20, np.random.default_rng(0))
    pred_loss, pred_acc = d.fit_draws({"synth": LAW}, grid, {"synth": draws}, [grid], [TARGET], options)["synth"]
    # The step-1 point is the mean of the last checkpoints (at up to 20% fewer tokens than the
    # final one), as in the pipeline: a small bias in loss, no noise. The ensemble's laws are not
    # the simulated paper law: a bias of their own.
    assert pred_loss.shape == (1, 8, 1) and np.ptp(pred_loss) < 1e-9
    assert abs(pred_loss[0, 0, 0] / draws.truth_loss[0, 0] - 1) < tolerance
    assert abs(pred_acc[0, 0, 0] - draws.truth_acc[0, 0]) < tolerance


@pytest.mark.parametrize("method", ["paper", "ensemble"])
def test_a_grid_fitted_inside_the_union_equals_its_own_fit(method):
    union = d.make_grid(SIZES, [1, 2, 5, 10])
    grid = d.make_grid(SIZES[1:], [2, 5, 10])
    options = d.DesignOptions(sims=8, checkpoints=20, method=method)
    draws = d.draw(LAW, NOISE, union, [TARGET], 8, 20, np.random.default_rng(1))
    where = d.run_positions(union, grid)
    own = d.Draws(draws.loss[:, where], draws.acc[:, where], draws.D[where], draws.truth_loss, draws.truth_acc)
    in_union = d.fit_draws({"synth": LAW}, union, {"synth": draws}, [union, grid], [TARGET], options)["synth"][1][1]
    alone = d.fit_draws({"synth": LAW}, grid, {"synth": own}, [grid], [TARGET], options)["synth"][1][0]
    np.testing.assert_allclose(in_union, alone, atol=2e-4)


def test_more_sizes_and_tokens_lower_the_expected_error():
    grids = d.candidate_grids(SIZES, [1, 2, 5, 10], min_sizes=3, min_multipliers=2)
    assert len(grids) == 3 * 6  # runs of >= 3 consecutive sizes x runs of >= 2 consecutive multipliers
    result = d.design({"synth": LAW}, {"synth": NOISE}, grids, [TARGET], options=d.DesignOptions(sims=32))
    by_label = result.grids.set_index("grid")
    small, full = "s1,s2,s3 x 1,2", "s1,s2,s3,s4 x 1,2,5,10"
    assert by_label.loc[full, "expected_abs_err"] < by_label.loc[small, "expected_abs_err"]
    assert by_label.loc[full, "flops"] > by_label.loc[small, "flops"]
    best, cheapest = result.grids["expected_abs_err"].idxmin(), result.grids["flops"].idxmin()
    assert result.grids.loc[best, "pareto"] and result.grids.loc[cheapest, "pareto"]
    assert result.grids["chosen"].sum() == 1
    # Within a budget, the chosen grid is the best of those that fit it.
    budget = float(by_label["flops"].median())
    limited = d.design(
        {"synth": LAW}, {"synth": NOISE}, grids, [TARGET], options=d.DesignOptions(sims=32), budget_flops=budget
    )
    chosen = limited.grids[limited.grids["chosen"]].iloc[0]
    inside = limited.grids[limited.grids["flops"] <= budget]
    assert chosen["flops"] <= budget and chosen["expected_abs_err"] == inside["expected_abs_err"].min()
    assert set(result.tasks.columns) >= {"grid", "task", "target", "abs_err", "p90_abs_err", "bias", "width"}


def test_law_error_makes_the_target_less_predictable():
    grid = [d.make_grid(SIZES, [1, 2, 5, 10])]
    noise = d.Noise(loss_ckpt=0.003, acc_ckpt=0.004, loss_size=0.01, acc_size=0.01)
    with_error = d.design({"synth": LAW}, {"synth": noise}, grid, [TARGET], options=d.DesignOptions(sims=32))
    without = d.design(
        {"synth": LAW}, {"synth": noise}, grid, [TARGET], options=d.DesignOptions(sims=32, law_error=False)
    )
    assert with_error.grids["expected_abs_err"][0] > 2 * without.grids["expected_abs_err"][0]


@pytest.mark.parametrize("method, alpha", [("paper", "alpha"), ("ensemble", "ic-tied.alpha")])
def test_laws_and_noise_from_a_table_and_from_its_params(method, alpha):
    table = make_table(loss_noise=0.003, acc_noise=0.004, checkpoints=80, seed=3)
    rerun = table[table["run"] == "s2-1xC"].copy()
    rng = np.random.default_rng(0)
    rerun["run"], rerun["rerun"] = "s2-1xC-rerun", True
    rerun["loss"] *= 1 + 0.003 * rng.standard_normal(len(rerun))
    table = pd.concat([table.assign(rerun=False), rerun], ignore_index=True)
    laws, noises = d.laws_and_noise_from_table(table, d.DesignOptions(method=method).fit_options())
    assert laws["synth"].method == method
    assert laws["synth"].step1[alpha] == pytest.approx(STEP1["alpha"], rel=0.3)
    assert noises["synth"].loss_ckpt == pytest.approx(0.003, rel=0.3)
    assert noises["synth"].acc_ckpt == pytest.approx(0.004, rel=0.3)
    # The prior's loss is the fit's own prediction (for the ensemble, its laws' geometric mean).
    fit = fit_table(table, bootstrap=0, method=method)
    n, dd = np.array([1e8, 2e9]), np.array([2e9, 4e10])
    np.testing.assert_allclose(laws["synth"].loss(n, dd), fit.tasks["synth"].step1.predict(n, dd), rtol=1e-12)
    from_params = d.laws_from_params(fit.params, method=method)
    assert from_params["synth"].step1 == pytest.approx(laws["synth"].step1)
    noise = d.noise_from_variance(fit.variance, fit.params, d.DesignOptions(method=method))["synth"]
    assert noise.loss_ckpt == pytest.approx(noises["synth"].loss_ckpt)
    other = "ensemble" if method == "paper" else "paper"
    with pytest.raises(LadderError, match=f"no step-1 law of --method {other}"):
        d.laws_from_params(fit.params, method=other)


@pytest.mark.slow
def test_interval_coverage_runs_the_pipeline_on_simulated_tables():
    grid = d.make_grid(SIZES, [1, 2, 5])
    coverage = d.interval_coverage(
        {"synth": LAW}, {"synth": NOISE}, grid, [TARGET], d.DesignOptions(checkpoints=20), sims=3, bootstrap=40
    )
    row = coverage.iloc[0]
    assert row["sims"] == 3 and 0.0 <= row["coverage"] <= 1.0 and row["median_width"] > 0


def test_bad_design_inputs_are_one_line_errors():
    with pytest.raises(LadderError, match="not a preset"):
        d.sizes_of(["190M", "huge"])
    with pytest.raises(LadderError, match="fewer than --min-sizes"):
        d.candidate_grids(SIZES[:2], [1, 2])
    with pytest.raises(LadderError, match="missing column"):
        d.laws_from_params(pd.DataFrame({"task": ["x"]}))
    with pytest.raises(LadderError, match="--sims"):
        d.DesignOptions(sims=2).check()


def _cli(capsys, *argv: str) -> tuple[int, str, str]:
    from ladder.cli import main

    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.fixture
def prior_files(tmp_path):
    fit = fit_table(make_table(loss_noise=0.003, acc_noise=0.004, seed=5), bootstrap=0)  # the default method, as design
    fit.params.to_csv(tmp_path / "params.csv", index=False)
    fit.variance.to_csv(tmp_path / "variance.csv", index=False)
    return tmp_path / "params.csv", tmp_path / "variance.csv"


def test_design_writes_a_grid_that_plan_takes_as_is(tmp_path, capsys, prior_files):
    from ladder.hydra_app import CONF_DIR, compose_config
    from ladder.sizes import get_shape, paper_params
    from ladder.sweep.plan import make_plan

    params, variance = prior_files
    name = f"test-design-{uuid.uuid4().hex[:8]}"
    path = CONF_DIR / "ladder" / f"{name}.yaml"
    n_target = paper_params(get_shape("mini"))
    try:
        code, _, err = _cli(
            capsys,
            "design",
            "--params",
            str(params),
            "--variance",
            str(variance),
            "--target",
            f"mini-1xC:{n_target}:{20 * n_target}",
            "--sizes",
            "femto,pico,nano,micro",
            "--multipliers",
            "1,2,4",
            "--sims",
            "8",
            "--checkpoints",
            "12",
            "--out",
            str(tmp_path / "out"),
            "--name",
            name,
        )
        assert code == 0, err
        assert {"design.csv", "design_tasks.csv", "design.png"} <= {p.name for p in (tmp_path / "out").iterdir()}
        grids = pd.read_csv(tmp_path / "out" / "design.csv")
        chosen = grids[grids["chosen"]].iloc[0]
        plan = make_plan(compose_config([f"ladder={name}"]))
        ladder_rungs = [row.rung for row in plan.rows if row.rung.role == "ladder"]
        assert [r.size for r in ladder_rungs][:: len(chosen["multipliers"].split(","))] == chosen["sizes"].split(",")
        assert sorted({r.multiplier for r in ladder_rungs}) == [float(m) for m in chosen["multipliers"].split(",")]
        assert [row.rung.name for row in plan.rows if row.rung.role == "target"] == ["mini-1xC"]
        assert plan.total("ladder", "flops_6nd") == pytest.approx(chosen["flops"], rel=1e-6)
    finally:
        path.unlink(missing_ok=True)


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--target", "big:2e9"], "expected NAME:N:D"),
        (["--sizes", "femto,giant"], "not a preset"),
        (["--budget-share", "-1"], "--budget-share must be"),
        (["--budget-flops", "1e20", "--budget-share", "0.1"], "give one budget"),
        (["--name", "../escape"], "--name"),
        (["--sims", "2"], "--sims must be"),
        (["--sizes", "femto,s=2e7,pico", "--name", "ok"], "size presets"),
        (["--method", "paper"], "no step-1 law of --method paper"),  # the prior files are the default method's
    ],
)
def test_design_bad_input_one_line_exit_2_nothing_written(tmp_path, capsys, prior_files, extra, message):
    params, variance = prior_files
    base = {"--target": "t:1e9:2e10", "--sizes": "femto,pico,nano", "--multipliers": "1,2"}
    for flag, value in zip(extra[::2], extra[1::2]):
        base[flag] = value
    argv = ["design", "--params", str(params), "--variance", str(variance), "--out", str(tmp_path / "out")]
    for flag, value in base.items():
        argv += [flag, value]
    code, _, err = _cli(capsys, *argv)
    assert code == 2 and err.count("\n") == 1 and message in err and "Traceback" not in err
    assert not (tmp_path / "out").exists()


def test_design_refuses_a_missing_prior_and_existing_results(tmp_path, capsys, prior_files):
    params, _ = prior_files
    argv = ["design", "--target", "t:1e9:2e10", "--sizes", "femto,pico,nano", "--multipliers", "1,2"]
    code, _, err = _cli(capsys, *argv, "--out", str(tmp_path / "a"))
    assert code == 2 and "--table TABLE, or as --params" in err
    code, _, err = _cli(capsys, *argv, "--params", str(params), "--out", str(tmp_path / "a"))
    assert code == 2 and "--params needs --variance" in err
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "design.csv").write_text("keep")
    code, _, err = _cli(capsys, *argv, "--table", str(tmp_path / "none.csv"), "--out", str(tmp_path / "b"))
    assert code == 2 and "--overwrite" in err and (tmp_path / "b" / "design.csv").read_text() == "keep"
    assert not (tmp_path / "a").exists()


@pytest.mark.slow
@pytest.mark.skipif(not OLMO_DIR.is_dir(), reason=f"the paper's ladder data is not in {OLMO_DIR}")
def test_paper_a_3b_rung_is_predicted_to_help_at_7b(tmp_path):
    from ladder.runs.olmo_import import import_olmo

    table = import_olmo(OLMO_DIR)
    laws, noises = d.laws_and_noise_from_table(table, fit_options=None)
    sizes = d.sizes_of(["190M", "370M", "760M", "1B", "3B"])
    paper, with_3b = d.make_grid(sizes[:4], [1, 2, 5, 10]), d.make_grid(sizes, [1, 2, 5, 10])
    seven = d.Target("7B-4T", 6887575552, 3945065873408)
    result = d.design(laws, noises, [paper, with_3b], [seven], options=d.DesignOptions(sims=16))
    errors = result.grids["expected_abs_err"].to_numpy()
    assert errors[1] < 0.8 * errors[0]
    assert 0.5 < errors[0] < 10


def test_design_and_compare_import_neither_torch_nor_matplotlib():
    import subprocess
    import sys

    code = (
        "import sys, ladder.fit.design, ladder.fit.compare, ladder.report.decide; "
        "assert 'torch' not in sys.modules and 'matplotlib' not in sys.modules, sorted(sys.modules)"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
