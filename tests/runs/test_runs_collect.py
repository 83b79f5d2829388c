"""`ladder collect`: run directories (and wandb histories) -> one validated results table."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from ladder.cli import main
from ladder.errors import LadderError
from ladder.results import EvalRow, read_table
from ladder.rungs import make_rung
from ladder.runs.collect import collect_run_dirs, rows_from_wandb_history
from ladder.runs.directory import append_eval_rows


def write_run(root: Path, name: str, n: int, role: str = "ladder", steps=(10, 20), tasks=("arc_easy", "piqa")) -> Path:
    run_dir = root / name
    run_dir.mkdir(parents=True)
    size, _, rest = name.partition("-")
    multiplier = float(rest[:-2]) if rest.endswith("xC") else None
    rung = make_rung(size, multiplier, name=name, role=role)
    assert rung.n_params == n
    (run_dir / "rung.json").write_text(json.dumps(rung.to_record()))
    for step in steps:
        append_eval_rows(
            run_dir,
            [
                EvalRow(
                    run=name,
                    role=role,
                    N=n,
                    D=step * 2048.0,
                    step=step,
                    task=task,
                    loss=2.0 - step / 100 - i / 10,
                    acc=0.3 + step / 1000,
                    size=size,
                    multiplier=multiplier,
                    flops=6.0 * n * step * 2048,
                    extra={"chance": 0.25 if task == "arc_easy" else 0.5, "acc_raw": 0.3},
                )
                for i, task in enumerate(tasks)
            ],
        )
    return run_dir


def test_collect_sweep_root_to_csv(tmp_path, capsys):
    root = tmp_path / "runs"
    write_run(root, "femto-1xC", 12_432)
    write_run(root, "pico-1xC", 24_792, steps=(10, 20, 30))
    write_run(root, "nano-1xC", 41_248, role="target", steps=(40,))
    (root / ".submitit").mkdir()  # launcher folders are not run directories
    out = tmp_path / "results" / "demo.csv"
    assert main(["collect", str(root), "-o", str(out)]) == 0
    assert f"{out}: 12 rows, 3 runs, 2 tasks" in capsys.readouterr().out
    table = read_table(out)
    assert list(table.columns[:7]) == ["run", "role", "N", "D", "step", "task", "loss"]
    assert {"acc", "size", "multiplier", "flops", "chance", "acc_raw"} <= set(table.columns)
    assert sorted(table["run"].unique()) == ["femto-1xC", "nano-1xC", "pico-1xC"]
    pico = table[(table.run == "pico-1xC") & (table.task == "piqa")]
    assert pico["step"].tolist() == [10, 20, 30]
    assert pico["loss"].tolist() == pytest.approx([1.8, 1.7, 1.6])
    assert table.loc[table.run == "nano-1xC", "role"].unique().tolist() == ["target"]
    assert table.loc[table.task == "arc_easy", "chance"].unique().tolist() == [0.25]


def test_collect_refuses_overwrite_unless_asked(tmp_path, capsys):
    root = tmp_path / "runs"
    write_run(root, "femto-1xC", 12_432)
    out = tmp_path / "t.parquet"
    assert main(["collect", str(root), "-o", str(out)]) == 0
    write_run(root, "pico-1xC", 24_792)
    assert main(["collect", str(root), "-o", str(out)]) == 2
    assert "exists; pass --overwrite" in capsys.readouterr().err
    assert read_table(out)["run"].nunique() == 1
    assert main(["collect", str(root), "-o", str(out), "--overwrite"]) == 0
    assert read_table(out)["run"].nunique() == 2


def test_resumed_run_keeps_the_last_evaluation_of_a_step(tmp_path):
    run_dir = write_run(tmp_path, "femto-1xC", 12_432, steps=(10, 20))
    # Resumed from a step-10 checkpoint: step 20 is evaluated again (a torn line from the kill too).
    with open(run_dir / "eval.jsonl", "a") as stream:
        stream.write('{"run": "femto-1xC", "ro\n')
    text = (run_dir / "eval.jsonl").read_text().splitlines()
    (run_dir / "eval.jsonl").write_text("\n".join(text[:-1]) + "\n")
    append_eval_rows(run_dir, [EvalRow("femto-1xC", "ladder", 12_432, 40960.0, 20, "piqa", 1.5)])
    table = collect_run_dirs([tmp_path])
    piqa = table[table.task == "piqa"]
    assert piqa["step"].tolist() == [10, 20]
    assert piqa["loss"].tolist() == pytest.approx([1.8, 1.5])


def test_single_run_dir_and_several_roots(tmp_path):
    a = write_run(tmp_path / "a", "femto-1xC", 12_432)
    write_run(tmp_path / "b", "pico-1xC", 24_792)
    table = collect_run_dirs([a, tmp_path / "b"])
    assert sorted(table["run"].unique()) == ["femto-1xC", "pico-1xC"]
    write_run(tmp_path / "c", "femto-1xC", 12_432)
    with pytest.raises(LadderError, match="run 'femto-1xC' is in both"):
        collect_run_dirs([tmp_path / "a", tmp_path / "c"])


def test_collect_errors_are_one_line(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert main(["collect", str(tmp_path / "empty"), "-o", str(tmp_path / "x.csv")]) == 2
    assert "neither a run directory nor a folder of run directories" in capsys.readouterr().err
    assert main(["collect", str(tmp_path / "missing"), "-o", str(tmp_path / "x.csv")]) == 2
    assert main(["collect", "--wandb", "no-slash", "-o", str(tmp_path / "x.csv")]) == 2
    assert "ENTITY/PROJECT" in capsys.readouterr().err


def test_wandb_history_rows_from_logged_rung_record():
    # `rung` is the sweep's rung name in the logged config; the record has a key of its own.
    config = {"rung": "190M-1xC", "rung_record": make_rung("190M", 1.0).to_record(), "model": {"preset": "7B"}}
    history = [
        {"_step": 100, "step": 100, "tokens": 5.2e7, "train/loss": 4.0},  # a training record: no rows
        {
            "_step": 200,
            "step": 200,
            "tokens": 1.05e8,
            "hellaswag/loss": 1.1,
            "hellaswag/acc": 0.31,
            "eval/hellaswag/acc_raw": 0.29,
            "mmlu/loss": 1.6,
            "mmlu/acc": None,
            "val_bpb": 1.2,
        },
    ]
    rows = rows_from_wandb_history("190M-1xC", config, history)
    table = pd.DataFrame(rows).set_index("task")
    assert table.loc["hellaswag", "acc"] == 0.31 and table.loc["hellaswag", "acc_raw"] == 0.29
    assert table.loc["mmlu", "loss"] == 1.6 and pd.isna(table.loc["mmlu", "acc"])
    assert set(table["N"]) == {190_354_176} and set(table["step"]) == {200} and set(table["D"]) == {1.05e8}


def test_wandb_history_sizes_the_rung_from_the_ladder_config():
    config = {
        "model": {"preset": "femto", "vocab_size": None, "seq_len": None},
        "train": {"tokens": None},
        "multiplier": 2.0,
        "role": "ladder",
    }
    rows = rows_from_wandb_history("femto-2xC", config, [{"_step": 5, "tokens": 10240, "eval/piqa/loss": 2.5}])
    assert rows == [
        {
            "run": "femto-2xC",
            "role": "ladder",
            "N": 12_432,
            "size": "femto",
            "multiplier": 2.0,
            "D": 10240.0,
            "step": 5,
            "task": "piqa",
            "loss": 2.5,
        }
    ]
    with pytest.raises(LadderError, match="not a ladder run"):
        rows_from_wandb_history("x", {"lr": 1}, [])


def test_wandb_rung_uses_the_logged_tokenizer_vocabulary():
    config = {"model": {"preset": "femto", "vocab_size": None}, "data": {"tokenizer": "bpe:1024"}, "multiplier": 1.0}
    (row,) = rows_from_wandb_history("femto-1xC", config, [{"_step": 1, "tokens": 2048, "eval/piqa/loss": 2.0}])
    byte = rows_from_wandb_history(
        "femto-1xC", {**config, "data": {"tokenizer": "byte"}}, [{"_step": 1, "tokens": 2048, "piqa/loss": 2.0}]
    )
    assert byte[0]["N"] == 12_432 and row["N"] == 12_432 + (1024 - 256) * 16  # output layer grows with the vocabulary


def test_wandb_and_olmo_steps_that_are_not_whole_numbers_are_refused(tmp_path):
    config = {"rung": "femto-1xC", "rung_record": make_rung("femto", 1.0).to_record()}
    with pytest.raises(LadderError, match="step is nan"):
        rows_from_wandb_history("femto-1xC", config, [{"_step": float("nan"), "tokens": 2048, "piqa/loss": 2.0}])
    source = Path(__file__).resolve().parents[3] / "shared" / "data" / "olmo-ladder" / "190M-1xC.csv"
    if not source.is_file():
        pytest.skip(f"the OLMo ladder data is not in {source.parent}")
    from ladder.runs.olmo_import import import_olmo

    frame = pd.read_csv(source)
    evaluated = frame["eval/downstream_bpb/mmlu_stem_test_rc_5shot_bpb"].notna().to_numpy().nonzero()[0]
    frame.loc[evaluated[1], "_step"] = None  # an empty cell in an evaluated row
    frame.to_csv(tmp_path / "190M-1xC.csv", index=False)
    with pytest.raises(LadderError, match=r"190M-1xC.csv: an evaluated checkpoint has no step"):
        import_olmo(tmp_path)
