"""`ladder import-olmo` refusals (the import itself, on the paper's files: tests/fit/test_fit_paper.py)."""

from __future__ import annotations

from ladder.cli import main


def test_a_folder_without_ladder_files_fails_with_one_line(tmp_path, capsys):
    assert main(["import-olmo", str(tmp_path), "-o", str(tmp_path / "t.csv")]) == 2
    error = capsys.readouterr().err
    assert "no OLMo ladder files" in error and error.count("\n") == 1
    assert not (tmp_path / "t.csv").exists()


def test_a_mistaken_argument_fails_with_one_line(tmp_path, capsys):
    assert main(["import-olmo", str(tmp_path)]) == 2
    error = capsys.readouterr().err
    assert "the following arguments are required: -o/--output" in error
    assert "(see `ladder import-olmo --help`)" in error and error.count("\n") == 1
