"""`ladder plan` and grid validation: the paper's numbers pinned, bad grids refused before work."""

from __future__ import annotations

import pytest

from ladder.cli import main
from ladder.errors import LadderError
from ladder.hydra_app import compose_config
from ladder.sweep.plan import kaplan_loss, make_plan
from ladder.sweep.rungs import grid_rungs, rungs_to_train


def test_paper_plan_pins_n_steps_and_compute_share():
    plan = make_plan(compose_config(["ladder=paper"]))
    rows = {row.rung.name: row for row in plan.rows}
    assert len(rows) == 18
    assert [rows[f"{size}-1xC"].rung.n_params for size in ("190M", "370M", "760M", "1B")] == [
        190_354_176, 371_262_464, 758_220_288, 1_279_395_840,
    ]
    assert rows["190M-1xC"].rung.batch_sequences == 128 and rows["190M-1xC"].rung.steps == 7_262
    assert rows["1B-10xC"].rung.steps == 162_684
    assert rows["7B-4T"].rung.role == "target" and rows["7B-4T"].rung.n_params == 6_887_575_552
    # The paper reports 1.06%; 6ND with the paper's N gives 0.92%, with the attention term 1.00%.
    assert plan.share("flops_6nd") == pytest.approx(0.009217, abs=2e-6)
    assert plan.share("flops_attention") == pytest.approx(0.010024, abs=2e-6)
    assert plan.total("ladder", "gpu_hours") == pytest.approx(4468.3, abs=0.1)


def test_plan_prints_table_share_and_kaplan_guide(capsys):
    assert main(["plan", "ladder=paper"]) == 0
    out = capsys.readouterr().out
    assert "190M-1xC" in out and "13B-5T" in out
    assert "0.92% (6ND), 1.00% (with attention)" in out and "1.06%" in out
    assert "Kaplan et al. (2020) converged-loss guide" in out
    assert f"{kaplan_loss(113_264_640):.3f}" in out  # 190M: non-embedding N


def test_kaplan_guide_formula():
    assert kaplan_loss(8.8e13) == pytest.approx(1.0)
    assert kaplan_loss(1e9) == pytest.approx((8.8e13 / 1e9) ** 0.076)


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["ladder.sizes=[femto,huge]"], "unknown model size 'huge'"),
        (["ladder.multipliers=[1,0]"], "multiplier must be > 0"),
        (["ladder.multipliers=[1,-2]"], "multiplier must be > 0"),
        (["ladder.multipliers=[1,1]"], "two rungs are named 'femto-1xC'"),
        (["ladder.targets=[{name: femto-0.5xC, size: femto, multiplier: 3}]"], "two rungs are named"),
        (["ladder.targets=[{name: t, size: nano}]"], "exactly one of tokens or multiplier"),
        (["ladder.targets=[{name: t, size: nope, tokens: 100}]"], "unknown model size 'nope'"),
        (["ladder.only=[femto-9xC]"], "not in grid"),
    ],
)
def test_bad_grid_is_refused(overrides, message):
    with pytest.raises(LadderError, match=message):
        rungs_to_train(compose_config(["ladder=cpu", *overrides]))


def test_bad_grid_is_refused_by_sweep_before_any_job(tmp_path, capsys):
    root = tmp_path / "sweep"
    code = main(["sweep", "ladder=cpu", "ladder.sizes=[femto,huge]", f"ladder.sweep_root={root}"])
    assert code == 2
    assert "unknown model size 'huge'" in capsys.readouterr().err
    assert not root.exists()


def test_grid_rungs_and_train_selection():
    cfg = compose_config(["ladder=demo"])
    names = [rung.name for rung in grid_rungs(cfg)]
    assert names[:3] == ["femto-1xC", "femto-2xC", "femto-4xC"] and names[-1] == "mini-1xC"
    assert len(names) == 10
    paper = compose_config(["ladder=paper"])
    assert len(rungs_to_train(paper)) == 16  # the paper's targets are not trained by default
    only = compose_config(["ladder=demo", "ladder.only=[mini-1xC,femto-2xC]"])
    assert [rung.name for rung in rungs_to_train(only)] == ["mini-1xC", "femto-2xC"]


def test_sweep_root_with_hydra_interpolation_is_refused(capsys):
    assert main(["sweep", "ladder=cpu", "ladder.sweep_root=runs/${hydra:job.num}"]) == 2
    assert "use a fixed path" in capsys.readouterr().err
