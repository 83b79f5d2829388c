"""`ladder fit`, `predict` and `backtest` end to end on synthetic tables: outputs, refusals, one-line errors."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from fit_synthetic import BIG, STEP1, five_size_table, loss_law, make_table

from ladder.cli import main
from ladder.results import write_table


@pytest.fixture
def table_path(tmp_path):
    table = make_table(targets={"big": BIG}, loss_noise=0.002, acc_noise=0.005, tasks=("alpha", "beta"))
    return write_table(table, tmp_path / "table.csv")


@pytest.mark.slow
def test_fit_command_writes_outputs_and_refuses_to_overwrite(table_path, tmp_path, capsys):
    out = tmp_path / "fit"
    assert main(["fit", str(table_path), "--out", str(out), "--bootstrap", "20", "--tasks", "beta"]) == 0
    printed = capsys.readouterr().out
    assert "big" in printed and "beta" in printed
    assert printed.strip().endswith(
        f"wrote params.csv, pred_vs_actual.png, predictions.csv, report.md, step1.png, step2.png, variance.csv to {out}"
    )
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


def test_step1_only_table(tmp_path, capsys):
    table = make_table(step2=None, targets={"big": BIG}).drop(columns=["acc"])
    path = write_table(table, tmp_path / "loss_only.parquet")
    assert (
        main(
            [
                "fit",
                str(path),
                "--out",
                str(tmp_path / "out"),
                "--bootstrap",
                "20",
                "--last-n",
                "1",
                "--method",
                "paper",
            ]
        )
        == 0
    )
    predictions = pd.read_csv(tmp_path / "out" / "predictions.csv")
    assert predictions["pred_loss"].iloc[0] == pytest.approx(float(loss_law(STEP1, *BIG)), rel=2e-3)
    assert predictions[["pred_acc", "pred_acc_lo", "pred_acc_hi", "actual_acc"]].isna().all().all()
    assert np.isfinite(predictions[["pred_loss_lo", "pred_loss_hi"]].to_numpy()).all()
    assert pd.read_csv(tmp_path / "out" / "params.csv")[["a", "k", "L0", "b"]].isna().all().all()
    assert not (tmp_path / "out" / "step2.png").exists()


@pytest.mark.slow
def test_predict_command(table_path, tmp_path, capsys):
    out = tmp_path / "pred.csv"
    assert (
        main(
            [
                "predict",
                str(table_path),
                "--target",
                f"huge:{4e9:g}:{4e9 * 400:g}",
                "--bootstrap",
                "20",
                "--last-n",
                "1",
                "--out",
                str(out),
            ]
        )
        == 0
    )
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


def test_backtest_command(tmp_path, capsys):
    table = write_table(five_size_table(), tmp_path / "table.csv")
    out = tmp_path / "backtest.csv"
    assert main(["backtest", str(table), "--bootstrap", "20", "--tasks", "alpha", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert (
        "all held-out runs" in printed and "held-out accuracies (bootstrap) fell inside their 90% intervals" in printed
    )
    assert printed.strip().endswith(f"wrote {out}")
    written = pd.read_csv(out)
    assert len(written) == 2 * 4 + 4 + 2 and written["held_out"].sum() == 12
    assert main(["backtest", str(table), "--bootstrap", "0", "--out", str(out)]) == 2
    assert capsys.readouterr().err.strip().endswith("exists; pass --overwrite to replace it")
    assert main(["backtest", str(table), "--out", str(tmp_path / "b.parquet")]) == 2
    assert "give a .csv file" in capsys.readouterr().err
    assert main(["backtest", str(table), "--sizes", "s1,s2,s3", "--bootstrap", "0"]) == 2
    assert "the selected ladder has 3" in capsys.readouterr().err


def test_an_unwritable_backtest_out_is_refused_before_fitting(tmp_path, capsys):
    table = write_table(five_size_table(), tmp_path / "table.csv")
    (tmp_path / "afile.csv").write_text("x")
    assert main(["backtest", str(table), "--out", str(tmp_path / "afile.csv" / "rows.csv")]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and "a file stands where the directory" in captured.err


def _bad_table(tmp_path, change) -> str:
    table = make_table(targets={"big": BIG})
    table = change(table)
    path = tmp_path / "bad.csv"
    table.to_csv(path, index=False)
    return str(path)


@pytest.mark.parametrize(
    "change,message",
    [
        (lambda t: t.drop(columns=["loss"]), "missing required column(s) loss"),
        (lambda t: t.assign(loss=t["loss"].where(t.index != 3, np.nan)), "'loss' has a missing"),
        (lambda t: t.assign(loss=t["loss"].where(t.index != 3, np.inf)), "'loss' has an infinite"),
        (lambda t: t.assign(N=t["N"].where(t.index != 3, 0)), "'N' must be > 0"),
        (lambda t: t.assign(D=t["D"].where(t.index != 3, -5.0)), "'D' must be > 0"),
        (lambda t: t[t["run"].isin(["s1-1xC", "s2-1xC", "s3-1xC", "s4-1xC", "big"])], "fewer than its 5 parameters"),
        (lambda t: t[t["size"].isin(["s1", "big"])], "at least 2 model sizes"),
    ],
)
def test_bad_tables_fail_with_one_line_and_write_nothing(tmp_path, capsys, change, message):
    out = tmp_path / "out"
    assert main(["fit", _bad_table(tmp_path, change), "--out", str(out), "--bootstrap", "0"]) == 2
    error = capsys.readouterr().err
    assert message in error and error.count("\n") == 1
    assert not out.exists() and not list(tmp_path.glob(".out*"))


@pytest.mark.parametrize(
    "option,message",
    [
        (["--tasks", "synth,nope"], "--tasks: nope not in the table"),
        (["--sizes", "s1,s9"], "--sizes: s9 not in the table"),
        (["--multipliers", "1,3"], "--multipliers: 3.0 not in the table"),
        (["--level", "1.5"], "--level must lie in (0, 1)"),
        (["--bootstrap", "many"], "invalid int value"),
        (["--bootstrap", "10", "--seed", "-1"], "--seed must be >= 0, got -1"),
        (["--window", "0"], "--last-n and --window must be >= 1, got 5 and 0"),
    ],
)
def test_bad_options_fail_with_one_line(tmp_path, capsys, option, message):
    assert main(["fit", _bad_table(tmp_path, lambda t: t), "--out", str(tmp_path / "out"), *option]) == 2
    error = capsys.readouterr().err
    assert message in error and error.count("\n") == 1
    assert not (tmp_path / "out").exists()


def test_a_missing_table_fails_with_one_line(tmp_path, capsys):
    assert main(["fit", str(tmp_path / "none.csv"), "--out", str(tmp_path / "o")]) == 2
    assert "no such results table" in capsys.readouterr().err


@pytest.mark.slow
def test_commands_never_import_torch_and_predict_backtest_not_matplotlib(table_path, tmp_path):
    """fit, predict and backtest each in a fresh process: which heavy packages did it load?"""
    runs = {
        "fit": ["fit", str(table_path), "--out", str(tmp_path / "out"), "--bootstrap", "0", "--tasks", "alpha"],
        "predict": ["predict", str(table_path), "--target", "x:1e9:2e10", "--bootstrap", "0", "--tasks", "alpha"],
        "backtest": ["backtest", str(table_path), "--min-sizes", "3", "--bootstrap", "0", "--tasks", "alpha"],
    }
    loaded = {}
    for name, argv in runs.items():
        code = (
            f"import sys, ladder.cli; assert ladder.cli.main({argv!r}) == 0; "
            "print('LOADED', *sorted({m.split('.')[0] for m in sys.modules} & {'torch', 'matplotlib'}))"
        )
        result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
        assert result.returncode == 0, result.stderr
        loaded[name] = result.stdout.rsplit("LOADED", 1)[1].split()
    assert loaded == {"fit": ["matplotlib"], "predict": [], "backtest": []}
