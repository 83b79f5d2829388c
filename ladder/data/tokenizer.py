"""Tokenizers: raw UTF-8 bytes (vocabulary 256) or a Hugging Face `tokenizers` model.

Specs (`data.tokenizer`):
- `byte`: one token per UTF-8 byte, vocabulary 256, no special tokens (the embedded default).
- `bpe:<vocab>`: byte-level BPE trained on the corpus's training documents when it is prepared,
  saved as `tokenizer.json` in the prepared directory (with `<|endoftext|>` as id 0).
- a path to any `tokenizer.json` (e.g. one downloaded with a model), copied into the prepared dir.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Protocol

import numpy as np

from ladder.errors import LadderError

TOKENIZER_FILE = "tokenizer.json"
END_OF_TEXT = "<|endoftext|>"
# Names models commonly give the token that ends a document, most common first.
EOS_CANDIDATES = (END_OF_TEXT, "</s>", "<eos>", "<|end_of_text|>", "[SEP]")


class Tokenizer(Protocol):
    """What the rest of ladder uses of a tokenizer."""

    name: str
    vocab_size: int
    eos_id: int | None

    def encode(self, text: str) -> list[int]: ...

    def decode(self, ids: Sequence[int] | np.ndarray) -> str: ...

    def encode_array(self, texts: Sequence[str]) -> list[np.ndarray]: ...


class ByteTokenizer:
    """One token per UTF-8 byte: vocabulary 256, lossless, needs no training."""

    name = "byte"
    vocab_size = 256
    eos_id = None

    def encode(self, text: str) -> list[int]:
        return list(text.encode("utf-8"))

    def decode(self, ids: Sequence[int] | np.ndarray) -> str:
        return bytes(np.asarray(ids, dtype=np.uint8)).decode("utf-8", errors="replace")

    def encode_array(self, texts: Sequence[str]) -> list[np.ndarray]:
        return [np.frombuffer(text.encode("utf-8"), dtype=np.uint8) for text in texts]


class HFTokenizer:
    """A Hugging Face `tokenizers` model loaded from a tokenizer.json."""

    def __init__(self, path: Path, name: str):
        from tokenizers import Tokenizer as _HF

        try:
            self._tokenizer = _HF.from_file(str(path))
        except Exception as error:  # the library raises bare Exceptions for bad files
            what = path if parse_bpe_spec(name) is not None else name  # name the user's file, not our copy
            raise LadderError(f"cannot load tokenizer {what}: {str(error).splitlines()[0]}") from None
        self.path = path
        self.name = name
        self.vocab_size: int = self._tokenizer.get_vocab_size(with_added_tokens=True)
        vocab = self._tokenizer.get_vocab(with_added_tokens=True)
        self.eos_id: int | None = next((vocab[t] for t in EOS_CANDIDATES if t in vocab), None)

    def encode(self, text: str) -> list[int]:
        return self._tokenizer.encode(text, add_special_tokens=False).ids

    def decode(self, ids: Sequence[int] | np.ndarray) -> str:
        return self._tokenizer.decode([int(i) for i in ids], skip_special_tokens=False)

    def encode_array(self, texts: Sequence[str]) -> list[np.ndarray]:
        encodings = self._tokenizer.encode_batch(list(texts), add_special_tokens=False)
        return [np.asarray(e.ids, dtype=np.int64) for e in encodings]


def token_dtype(vocab_size: int) -> np.dtype:
    """The smallest unsigned dtype holding every id: uint16 up to 65,536 ids, else uint32."""
    return np.dtype(np.uint16) if vocab_size <= 2**16 else np.dtype(np.uint32)


def parse_bpe_spec(spec: str) -> int | None:
    """Vocabulary size of a `bpe:<vocab>` spec, None for other specs."""
    if not spec.startswith("bpe:"):
        return None
    try:
        vocab = int(spec.split(":", 1)[1])
    except ValueError:
        raise LadderError(f"bad tokenizer {spec!r}: expected bpe:<vocabulary size>, e.g. bpe:4096") from None
    if not 257 <= vocab <= 2**32:
        raise LadderError(f"bad tokenizer {spec!r}: BPE vocabulary must be between 257 and 2^32")
    return vocab


def load_tokenizer(spec: str, corpus_dir: Path | None = None) -> Tokenizer:
    """The tokenizer named by `spec` ('byte', 'bpe:<vocab>' or a tokenizer.json path).

    A prepared corpus keeps its tokenizer in `corpus_dir/tokenizer.json`; 'bpe:*' needs it.
    """
    if spec == "byte":
        return ByteTokenizer()
    if parse_bpe_spec(spec) is not None:
        if corpus_dir is None or not (Path(corpus_dir) / TOKENIZER_FILE).is_file():
            raise LadderError(
                f"tokenizer {spec!r} is trained when the corpus is prepared; "
                "run `ladder data prepare` first (or pass the prepared corpus directory)"
            )
        return HFTokenizer(Path(corpus_dir) / TOKENIZER_FILE, spec)
    path = Path(spec).expanduser()
    if corpus_dir is not None and (Path(corpus_dir) / TOKENIZER_FILE).is_file():
        path = Path(corpus_dir) / TOKENIZER_FILE
    if not path.is_file():
        raise LadderError(f"unknown tokenizer {spec!r}: use 'byte', 'bpe:<vocab>' or a tokenizer.json path")
    return HFTokenizer(path, spec)


def train_bpe(texts: Iterable[str], vocab_size: int, out_path: Path) -> None:
    """Train a byte-level BPE on `texts` and save it as `out_path` (a tokenizer.json).

    Byte-level pre-tokenization means any text is encodable; `<|endoftext|>` (id 0) separates
    documents in the token files.
    """
    from tokenizers import Tokenizer as _HF
    from tokenizers import decoders, models, pre_tokenizers, trainers

    tokenizer = _HF(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[END_OF_TEXT],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(_batched(texts), trainer=trainer)
    tokenizer.save(str(out_path))


def install_tokenizer(spec: str, train_texts: Iterable[str], out_dir: Path) -> Tokenizer:
    """Put the tokenizer of `spec` into the (temporary) prepared dir `out_dir` and load it."""
    vocab = parse_bpe_spec(spec)
    if spec == "byte":
        return ByteTokenizer()
    if vocab is not None:
        train_bpe(train_texts, vocab, out_dir / TOKENIZER_FILE)
    else:
        source = Path(spec).expanduser()
        if not source.is_file():
            raise LadderError(f"unknown tokenizer {spec!r}: use 'byte', 'bpe:<vocab>' or a tokenizer.json path")
        shutil.copyfile(source, out_dir / TOKENIZER_FILE)
    return HFTokenizer(out_dir / TOKENIZER_FILE, spec)


def _batched(texts: Iterable[str], size: int = 256) -> Iterator[list[str]]:
    batch: list[str] = []
    for text in texts:
        batch.append(text)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch
