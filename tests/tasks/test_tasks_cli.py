"""`ladder eval CHECKPOINT tasks.names=[...]`: rows in the results-table schema."""

from __future__ import annotations

import json

import pytest
import torch
from omegaconf import OmegaConf

from ladder.cli import main as ladder_main
from ladder.errors import LadderError
from ladder.hydra_app import compose_config
from ladder.model import Decoder
from ladder.results import read_table
from ladder.sizes import get_shape, paper_params
from ladder.tasks.cli import main as eval_main
from ladder.train.checkpoint import save_checkpoint, shape_to_dict


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """A femto run directory holding an exported checkpoint (read only: the tests write elsewhere)."""
    run = tmp_path_factory.mktemp("runs") / "femto-1xC"
    cfg = compose_config(["model=femto", f"run_dir={run}"])
    torch.manual_seed(0)
    model = Decoder(get_shape("femto"))
    state = {
        "model": model.state_dict(),
        "shape": shape_to_dict(model.shape),
        "config": OmegaConf.to_container(cfg, resolve=True),
        "step": 7,
        "tokens": 14336,
    }
    save_checkpoint(run / "checkpoint" / "model.pt", state)  # as `ladder export` writes it
    return run


def test_eval_scores_a_checkpoint_and_writes_a_results_table(run_dir, tmp_path, capsys):
    task_file = tmp_path / "quiz.jsonl"
    task_file.write_text(
        "".join(
            json.dumps({"context": f"Question {i}:\nAnswer:", "choices": [" yes", " no"], "gold": i % 2}) + "\n"
            for i in range(6)
        )
    )
    out = tmp_path / "table.csv"
    assert eval_main([str(run_dir), f"tasks.names=[{task_file}]", "-o", str(out)]) == 0
    assert "quiz" in capsys.readouterr().out
    table = read_table(out)
    row = table.iloc[0]
    assert (row["run"], row["role"], row["step"], row["D"], row["task"]) == ("femto-1xC", "ladder", 7, 14336.0, "quiz")
    assert row["N"] == paper_params(get_shape("femto")) and row["size"] == "femto"
    assert row["n_questions"] == 6 and row["chance"] == 0.5 and 0 < row["loss"] < 20
    with pytest.raises(LadderError, match="--overwrite"):
        eval_main([str(run_dir), f"tasks.names=[{task_file}]", "-o", str(out)])


def test_eval_without_tasks_or_with_a_bad_task_is_a_one_line_error(run_dir, capsys):
    assert ladder_main(["eval", str(run_dir)]) == 2
    assert "no tasks to score" in capsys.readouterr().err
    assert ladder_main(["eval", str(run_dir), "tasks.names=[nope]"]) == 2
    assert "unknown task 'nope'" in capsys.readouterr().err


def test_eval_input_mistakes_are_one_line(run_dir, tmp_path, capsys):
    binary = tmp_path / "binary.jsonl"
    binary.write_bytes(b'{"context": "\xd0\xff\x00"}\n')
    assert ladder_main(["eval", str(run_dir), f"tasks.names=[{binary}]"]) == 2
    assert "binary.jsonl:1: not UTF-8 text" in capsys.readouterr().err
    (tmp_path / "notes.pt").write_text("model: femto\n")  # not a checkpoint
    assert ladder_main(["eval", str(tmp_path / "notes.pt"), "tasks=cpu"]) == 2
    error = capsys.readouterr().err
    assert "not a readable ladder checkpoint" in error and len(error.strip().splitlines()) == 1
    if not torch.cuda.is_available():
        assert ladder_main(["eval", str(run_dir), "tasks=cpu", "device=cuda"]) == 2
        assert "no CUDA device is available" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("output", "message"),
    [
        ("taken.csv", "exists; pass --overwrite"),
        ("table.txt", "results tables are .csv, .tsv (optionally .gz) or .parquet"),
    ],
)
def test_eval_output_is_checked_before_scoring(run_dir, tmp_path, capsys, monkeypatch, output, message):
    (tmp_path / "taken.csv").write_text("run\n")
    monkeypatch.setattr("ladder.tasks.cli.score_checkpoint", lambda *args: pytest.fail("scored before the check"))
    assert ladder_main(["eval", str(run_dir), "tasks=cpu", "-o", str(tmp_path / output)]) == 2
    assert message in capsys.readouterr().err


def test_eval_shows_its_resolved_config(run_dir, capsys):
    assert ladder_main(["eval", str(run_dir), "tasks=cpu", "--cfg", "job"]) == 0
    assert "- corpus_next_word" in capsys.readouterr().out
