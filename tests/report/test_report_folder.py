"""An output folder written all at once: every file or none, earlier results kept on failure."""

from __future__ import annotations

import pytest

from ladder.errors import LadderError
from ladder.report.folder import check_out_dir, write_folder


def _write(names):
    def write(folder):
        for name in names:
            (folder / name).write_text(f"new {name}")

    return write


def test_files_are_moved_in_and_stale_ones_of_the_report_removed(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    for name in ("a.csv", "old.png", "keep.txt"):
        (out / name).write_text("earlier")
    written = write_folder(out, _write(["b.md", "a.csv"]), replaces=["old.png", "a.csv"])
    assert written == [out / "a.csv", out / "b.md"]
    assert sorted(path.name for path in out.iterdir()) == ["a.csv", "b.md", "keep.txt"]
    assert (out / "a.csv").read_text() == "new a.csv" and (out / "keep.txt").read_text() == "earlier"
    assert sorted(path.name for path in tmp_path.iterdir()) == ["out"]


def test_a_failed_write_leaves_the_folder_as_it_was(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "a.csv").write_text("earlier")

    def write(folder):
        (folder / "a.csv").write_text("half")
        raise RuntimeError("plotting failed")

    with pytest.raises(RuntimeError, match="plotting failed"):
        write_folder(out, write, replaces=["a.csv"])
    assert [path.name for path in out.iterdir()] == ["a.csv"] and (out / "a.csv").read_text() == "earlier"
    assert sorted(path.name for path in tmp_path.iterdir()) == ["out"]


def test_a_new_folder_and_its_parents_are_made(tmp_path):
    assert write_folder(tmp_path / "results" / "x", _write(["r.md"])) == [tmp_path / "results" / "x" / "r.md"]


def test_a_file_in_the_way_is_one_line_error(tmp_path):
    (tmp_path / "afile").write_text("x")
    with pytest.raises(LadderError, match="cannot write results here"):
        write_folder(tmp_path / "afile" / "out", _write(["r.md"]))
    with pytest.raises(LadderError, match="exists and is not a directory"):
        check_out_dir(tmp_path / "afile", ["r.md"], overwrite=False)


def test_check_out_dir_names_the_results_found(tmp_path):
    (tmp_path / "r.md").write_text("x")
    (tmp_path / "t.csv").write_text("x")
    with pytest.raises(LadderError, match=r"already holds results \(t.csv, r.md\); pass --overwrite"):
        check_out_dir(tmp_path, ["t.csv", "p.png", "r.md"], overwrite=False)
    assert check_out_dir(tmp_path, ["t.csv"], overwrite=True) == tmp_path
    assert check_out_dir(tmp_path / "new", ["t.csv"], overwrite=False) == tmp_path / "new"
