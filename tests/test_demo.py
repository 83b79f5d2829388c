"""The demo end to end on a miniature grid: corpus, sweep, collect, fit, report (real training)."""

from __future__ import annotations

import pandas as pd
import pytest

from ladder.cli import main
from ladder.demo import demo_config
from ladder.sizes import get_shape, paper_params

pytestmark = pytest.mark.slow  # trains models, spawns processes or refits the paper data

# The demo's own sizes (atto, femto, nano3; target mini) on a few steps each.
MINIATURE = [
    "ladder.multipliers=[0.02,0.04]",
    "ladder.targets=[{name:mini-0.02xC,size:mini,multiplier:0.02}]",
    "tasks.max_questions=24",
    "train.threads=1",
    "train.evals=4",
]


def test_demo_runs_end_to_end_and_reuses_finished_rungs(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["demo", *MINIATURE]) == 0
    out = tmp_path / "results" / "demo"
    for name in (
        "results.csv",
        "predictions.csv",
        "params.csv",
        "report.md",
        "loss_curves.png",
        "step1.png",
        "step2.png",
        "pred_vs_actual.png",
    ):
        assert (out / name).stat().st_size > 0, name
    predictions = pd.read_csv(out / "predictions.csv")
    assert set(predictions["target"]) == {"mini-0.02xC"}
    assert set(predictions["task"]) == {"corpus_spelling", "corpus_next_word"}
    assert predictions[["pred_acc", "actual_acc", "pred_acc_lo", "pred_acc_hi"]].notna().all().all()
    report = (out / "report.md").read_text()
    assert "Does accuracy rise across the ladder?" in report and "mini-0.02xC" in report
    printed = capsys.readouterr().out
    assert "predicted vs actual" in printed

    # A second run trains nothing: every rung is DONE.
    assert main(["demo", *MINIATURE]) == 0
    assert "all 7 rungs are DONE" in capsys.readouterr().out


def test_demo_refuses_a_non_override_argument(capsys):
    assert main(["demo", "--fast"]) == 2
    assert "key=value" in capsys.readouterr().err


def test_the_demo_grid_spans_10x_and_its_target_is_4_to_8x_beyond_it():
    cfg, _, results_dir = demo_config([])
    ladder_n = [paper_params(get_shape(size)) for size in cfg.ladder.sizes]
    layers = [get_shape(size).n_layers for size in cfg.ladder.sizes]
    (target,) = cfg.ladder.targets
    assert max(ladder_n) / min(ladder_n) >= 10 and layers == sorted(layers) and layers[0] < layers[-1]
    assert 4 <= paper_params(get_shape(target.size)) / max(ladder_n) <= 8
    assert get_shape(target.size).n_layers > layers[-1]
    assert min(cfg.ladder.multipliers) <= target.multiplier <= max(cfg.ladder.multipliers)
    assert (cfg.seed, cfg.tasks.seed, cfg.tasks.max_questions) == (0, 0, 1000)
    assert (cfg.ladder.sweep_root, str(results_dir)) == ("runs/demo", "results/demo")


def test_a_demo_seed_seeds_the_questions_and_trains_its_own_rungs():
    cfg, overrides, results_dir = demo_config(["seed=2"])
    assert (cfg.seed, cfg.tasks.seed) == (2, 2)
    assert (cfg.ladder.sweep_root, str(results_dir)) == ("runs/demo-seed2", "results/demo-seed2")
    assert "ladder.sweep_root=runs/demo-seed2" in overrides  # what the sweep gets
    cfg, _, results_dir = demo_config(["seed=2", "tasks.seed=7", "ladder.sweep_root=runs/mine"])
    assert (cfg.tasks.seed, cfg.ladder.sweep_root, str(results_dir)) == (7, "runs/mine", "results/mine")
