"""The run directory: its rung record, markers, checkpoint location and evaluation rows."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from ladder.errors import LadderError
from ladder.results import EvalRow, validate_table
from ladder.rungs import make_rung
from ladder.runs.directory import (
    CHECKPOINT_MARKERS,
    RunDir,
    append_eval_rows,
    find_checkpoint,
    read_eval_rows,
    run_dir_of_checkpoint,
)


def test_the_rung_record_round_trips_through_rung_json(tmp_path):
    rung = make_rung("femto", 2.0)
    run = RunDir(tmp_path / "femto-2xC")
    assert run.read_rung() is None and not run.was_started() and not run.has_results()
    run.start({"seed": 0}, rung)
    assert run.read_rung() == rung and run.was_started() and run.has_results()
    assert json.loads((run.path / "rung.json").read_text())["N"] == 12_432


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("{not json", "unreadable"),
        ("[1]", "not a rung record"),
        ('{"name": "x"}', "'size' missing"),
    ],
)
def test_a_bad_rung_json_is_one_line(tmp_path, content, message):
    (tmp_path / "rung.json").write_text(content)
    with pytest.raises(LadderError, match=message):
        RunDir(tmp_path).read_rung()


def test_markers_and_checkpoint_location(tmp_path):
    run = RunDir(tmp_path / "run")
    run.write_failed_unless_recorded({"error": "sweep's"})
    run.write_failed_unless_recorded({"error": "later"})
    assert run.is_failed() and run.read_failed() == {"error": "sweep's"}
    run.clear_failed()
    assert not run.is_failed() and not run.is_done()
    with run.session():
        assert run.read_running()["pid"] > 0
    assert run.read_running() is None
    with pytest.raises(LadderError, match="no checkpoint"):
        find_checkpoint(run.path)
    assert run.latest_checkpoint is None
    for step in (3, 12):
        run.step_checkpoint(step).mkdir(parents=True)
        for marker in CHECKPOINT_MARKERS:
            (run.step_checkpoint(step) / marker).write_bytes(b"")
    (run.checkpoint_dir / ".tmp-step-00000020").mkdir()  # being written: not a checkpoint yet
    assert run.latest_checkpoint == run.step_checkpoint(12) == run.checkpoint_dir / "step-00000012"
    assert find_checkpoint(run.path) == run.latest_checkpoint
    assert run_dir_of_checkpoint(run.latest_checkpoint) == run.path
    assert run_dir_of_checkpoint(run.diagnostic_checkpoint(3)) == run.path


def test_eval_rows_append_and_survive_a_torn_line(tmp_path):
    rows = [
        EvalRow("r", "ladder", 10, 100.0, 1, "t", 1.5, acc=0.3, extra={"soft": 0.2}),
        EvalRow("r", "ladder", 10, 200.0, 2, "t", 1.4),
    ]
    append_eval_rows(tmp_path, rows)
    with open(tmp_path / "eval.jsonl", "a") as handle:
        handle.write('{"run": "r", "ro')  # killed mid-write
    read = read_eval_rows(tmp_path)
    assert [row["step"] for row in read] == [1, 2] and read[0]["soft"] == 0.2
    assert validate_table(pd.DataFrame(read))["loss"].tolist() == [1.5, 1.4]


def test_a_torn_last_row_is_cut_before_the_next_append(tmp_path):
    row = EvalRow("r", "ladder", 10, 100.0, 1, "t", 1.5)
    append_eval_rows(tmp_path, [row])
    with open(tmp_path / "eval.jsonl", "a") as handle:
        handle.write('{"run": "r", "ro')  # killed mid-write; the resumed run appends after it
    append_eval_rows(tmp_path, [EvalRow("r", "ladder", 10, 200.0, 2, "t", 1.4)])
    assert [row["step"] for row in read_eval_rows(tmp_path)] == [1, 2]
    assert (tmp_path / "eval.jsonl").read_text().count("\n") == 2


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b'[1, 2]\n{"run": "r"}\n', "eval.jsonl:1: not a JSON object"),
        (b"42\n", "eval.jsonl:1: not a JSON object"),
        (b'{"run": "r\xff"}\n', "eval.jsonl: not UTF-8 text"),
    ],
)
def test_eval_rows_that_are_not_objects_are_refused(tmp_path, content, message):
    (tmp_path / "eval.jsonl").write_bytes(content)
    with pytest.raises(LadderError, match=message):
        read_eval_rows(tmp_path)


def test_a_torn_last_eval_row_is_left_out_with_a_warning(tmp_path, caplog):
    append_eval_rows(tmp_path, [EvalRow(run="a", role="ladder", N=10, D=1.0, step=1, task="t", loss=1.0)])
    with open(tmp_path / "eval.jsonl", "a") as handle:
        handle.write('{"run": "a", "ro')
    assert len(read_eval_rows(tmp_path)) == 1
    assert "last line is torn" in caplog.text
