"""Byte and BPE tokenizers, and tokenizer.json files brought by the user."""

from __future__ import annotations

import numpy as np
import pytest

from ladder.config import DataConfig
from ladder.data import load_tokenizer, prepare_corpus
from ladder.data.tokenizer import token_dtype
from ladder.errors import LadderError

TEXT = "The quality of mercy is not strained; it droppeth as the gentle rain from heaven. "


def test_byte_tokenizer_round_trip():
    tokenizer = load_tokenizer("byte")
    assert tokenizer.vocab_size == 256 and tokenizer.eos_id is None
    assert tokenizer.encode("aé") == [97, 195, 169]
    assert tokenizer.decode([97, 195, 169]) == "aé"


def test_dtype_by_vocabulary():
    assert token_dtype(256) == np.uint16 and token_dtype(65_536) == np.uint16
    assert token_dtype(65_537) == np.uint32


@pytest.fixture(scope="module")
def bpe_corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("bpe")
    folder = root / "texts"
    folder.mkdir()
    for i in range(20):
        (folder / f"{i}.txt").write_text(f"{i}: {TEXT * (i % 5 + 1)}\n")
    cfg = DataConfig(
        name="b", sources=[str(folder)], tokenizer="bpe:300", prepared_root=str(root / "p"), val_fraction=0.1
    )
    return prepare_corpus(cfg)


def test_bpe_trained_saved_and_used(bpe_corpus):
    manifest = bpe_corpus.manifest
    assert manifest["tokenizer"] == {"spec": "bpe:300", "vocab_size": 300, "eos_id": 0, "file": "tokenizer.json"}
    assert (bpe_corpus.root / "tokenizer.json").is_file()
    tokenizer = bpe_corpus.tokenizer
    assert tokenizer.decode(tokenizer.encode(TEXT + "ünïcode")) == TEXT + "ünïcode"
    assert len(tokenizer.encode(TEXT)) < len(TEXT.encode()) / 2  # merges learned from the corpus
    val = bpe_corpus.tokens("val")
    assert (val == 0).sum() == manifest["val"]["documents"] == 2  # one end-of-text per document
    assert manifest["val"]["bytes"] == sum(len(d.encode()) for d in bpe_corpus.val_documents())
    assert bpe_corpus.val_bytes_per_token > 2


def test_tokenizer_json_path_is_copied(bpe_corpus, tmp_path):
    (tmp_path / "a.txt").write_text(TEXT * 3)
    path = str(bpe_corpus.root / "tokenizer.json")
    cfg = DataConfig(
        name="j", sources=[str(tmp_path / "a.txt")], tokenizer=path, prepared_root=str(tmp_path / "p"), val_fraction=0
    )
    corpus = prepare_corpus(cfg)
    assert (corpus.root / "tokenizer.json").read_bytes() == (bpe_corpus.root / "tokenizer.json").read_bytes()
    assert corpus.tokens("train").tolist() == corpus.tokenizer.encode(TEXT * 3 + "\n") + [0]
    assert load_tokenizer(path).vocab_size == 300


def test_bpe_needs_a_prepared_corpus_and_refuses_token_files(tmp_path):
    with pytest.raises(LadderError, match="run `ladder data prepare` first"):
        load_tokenizer("bpe:300")
    with pytest.raises(LadderError, match="bpe:<vocabulary size>"):
        load_tokenizer("bpe:lots")
    np.save(tmp_path / "t.npy", np.arange(10))
    cfg = DataConfig(name="x", sources=[str(tmp_path / "t.npy")], tokenizer="bpe:300", prepared_root=str(tmp_path))
    with pytest.raises(LadderError, match="token files"):
        prepare_corpus(cfg)


def test_corrupt_tokenizer_json(tmp_path):
    (tmp_path / "tokenizer.json").write_text("{not json")
    with pytest.raises(LadderError, match="cannot load tokenizer"):
        load_tokenizer(str(tmp_path / "tokenizer.json"))
