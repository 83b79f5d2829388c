"""The demo end to end on a miniature grid: corpus, sweep, collect, fit, report (real training)."""

from __future__ import annotations

import pandas as pd

from ladder.cli import main

MINIATURE = [
    "ladder.sizes=[femto,pico,nano]",
    "ladder.multipliers=[0.02,0.04]",
    "ladder.targets=[{name:mini-0.02xC,size:mini,multiplier:0.02}]",
    "tasks.max_questions=24",
    "train.threads=1",
    "train.eval_interval=4",
]


def test_demo_runs_end_to_end_and_reuses_finished_rungs(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["demo", *MINIATURE]) == 0
    out = tmp_path / "results" / "demo"
    for name in ("results.csv", "predictions.csv", "params.csv", "report.md",
                 "loss_curves.png", "step1.png", "step2.png", "pred_vs_actual.png"):
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
