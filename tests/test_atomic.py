"""Atomic writes: the destination is replaced whole, or left as it was."""

import pytest

from ladder.atomic import atomic_path, write_text_atomic
from ladder.errors import LadderError


def test_write_replaces_the_file_and_leaves_no_temporary(tmp_path):
    path = tmp_path / "sub" / "report.md"
    write_text_atomic(path, "first")
    write_text_atomic(path, "second")
    assert path.read_text() == "second"
    assert [p.name for p in path.parent.iterdir()] == ["report.md"]


def test_a_failed_write_keeps_the_old_file(tmp_path):
    path = tmp_path / "table.csv"
    path.write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_path(path) as temporary:
            assert temporary.suffix == ".csv" and temporary.parent == tmp_path
            temporary.write_text("half")
            raise RuntimeError("writer crashed")
    assert path.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["table.csv"]


def test_paths_that_cannot_be_written_are_one_line_errors(tmp_path):
    (tmp_path / "a-directory").mkdir()
    with pytest.raises(LadderError, match="is a directory"):
        write_text_atomic(tmp_path / "a-directory", "x")
    (tmp_path / "a-file").write_text("keep")
    with pytest.raises(LadderError, match="a file stands where the directory"):
        write_text_atomic(tmp_path / "a-file" / "table.csv", "x")
    assert (tmp_path / "a-file").read_text() == "keep"
