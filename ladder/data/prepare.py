"""`prepare_corpus`: sources -> tokenizer + memory-mapped token files + manifest.

Layout of `<prepared_root>/<name>/`:
- `train.bin`, `val.bin`: every document's token ids back to back, each document followed by the
  separator (the tokenizer's end-of-text id, or the tokens of a blank line for `byte`), stored as
  uint16 (vocabulary <= 65,536) or uint32: the raw format of nanoGPT and OLMo, readable with
  `np.memmap(path, dtype=manifest["dtype"])`.
- `val_index.npy`: [start, stop) of each validation document in `val.bin` (separator excluded).
- `tokenizer.json` for Hugging Face tokenizers (none for `byte`).
- `manifest.json`: the inputs' fingerprint, sources with their SHA-256, tokenizer, dtype, token,
  document and byte counts per split and per source.

The fingerprint covers the format, each source's content hash, the tokenizer, `val_fraction` and
`seed`: when it matches, the prepared corpus is reused; otherwise it is rebuilt in a temporary
folder beside it and swapped in, so a reader never sees a half-written corpus.

Hashing a large corpus takes minutes, so only `ladder data prepare` (`prepare_corpus`) hashes.
The manifest also records each input file's size and modification time (`input_stats`); at train
time rank 0 calls `training_corpus`, which compares those and the prepared files' sizes (no
hashing) and falls back to `prepare_corpus` only when something changed; the other ranks open the
corpus (`open_prepared`) without looking at the sources at all.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from functools import cached_property
from itertools import islice
from pathlib import Path
from typing import Any

import numpy as np

from ladder.atomic import make_directory, write_text_atomic
from ladder.data.documents import Document
from ladder.data.sources import Source, read_documents, resolve_source
from ladder.data.tokenizer import (
    TOKENIZER_FILE,
    Tokenizer,
    install_tokenizer,
    load_tokenizer,
    parse_bpe_spec,
    token_dtype,
)
from ladder.errors import LadderError
from ladder.locks import flock_unsupported
from ladder.progress import progress as progress_bar

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
"""Bumped whenever the layout or the document rules change, so old corpora are rebuilt."""
MANIFEST = "manifest.json"
TRAIN_FILE, VAL_FILE, VAL_INDEX = "train.bin", "val.bin", "val_index.npy"
ENCODE_BATCH = 512
"""Documents encoded per call (lets HF tokenizers use their thread pool)."""


@dataclass
class PreparedCorpus:
    """A prepared corpus on disk (`<prepared_root>/<name>/`)."""

    root: Path
    """The corpus folder."""
    reused: bool = False
    """True when `prepare_corpus` found it up to date and did not rebuild it."""
    _val_documents: list[str] | None = field(default=None, repr=False)

    @property
    def train_path(self) -> Path:
        """Training token ids (raw, dtype `manifest['dtype']`)."""
        return self.root / TRAIN_FILE

    @property
    def val_path(self) -> Path:
        """Validation token ids (whole held-out documents)."""
        return self.root / VAL_FILE

    @cached_property
    def manifest(self) -> dict[str, Any]:
        """The parsed manifest.json."""
        return read_manifest(self.root)

    @cached_property
    def tokenizer(self) -> Tokenizer:
        """The corpus's tokenizer (loaded from the prepared folder when it has a tokenizer.json)."""
        return load_tokenizer(self.manifest["tokenizer"]["spec"], self.root)

    @property
    def dtype(self) -> np.dtype:
        """dtype of the token files."""
        return np.dtype(self.manifest["dtype"])

    @property
    def val_bytes_per_token(self) -> float:
        """UTF-8 bytes per validation token: bits per byte = loss in bits / this."""
        val = self.manifest["val"]
        return val["bytes"] / max(val["tokens"], 1)

    def tokens(self, split: str) -> np.ndarray:
        """Memory-mapped token ids of 'train' or 'val'."""
        path = {"train": self.train_path, "val": self.val_path}[split]
        return np.memmap(path, dtype=self.dtype, mode="r") if path.stat().st_size else np.zeros(0, self.dtype)

    def val_documents(self) -> list[str]:
        """The held-out documents, decoded, in file order (for tasks built from the corpus)."""
        if self._val_documents is None:
            tokens = self.tokens("val")
            index = np.load(self.root / VAL_INDEX)
            self._val_documents = [self.tokenizer.decode(tokens[a:b]) for a, b in index]
        return self._val_documents


def read_manifest(root: Path) -> dict[str, Any]:
    path = Path(root) / MANIFEST
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise LadderError(f"{root} is not a prepared corpus (no {MANIFEST}); run `ladder data prepare`") from None
    except json.JSONDecodeError as error:
        raise LadderError(f"{path}: corrupt manifest ({error.msg}); delete the folder and prepare again") from None


def open_corpus(root: str | Path) -> PreparedCorpus:
    """A corpus prepared earlier, by its folder."""
    corpus = PreparedCorpus(Path(root))
    _ = corpus.manifest
    return corpus


def prepared_root(data_cfg: Any) -> Path:
    """`<data.prepared_root>/<data.name>`: where the corpus of `data_cfg` is prepared."""
    return Path(str(data_cfg.prepared_root)).expanduser() / str(data_cfg.name)


def open_prepared(data_cfg: Any) -> PreparedCorpus:
    """The corpus of `data_cfg`, as prepared: opened without reading or hashing its sources (the
    non-zero ranks of a run, once rank 0 has checked it)."""
    return open_corpus(prepared_root(data_cfg))


def training_corpus(data_cfg: Any) -> PreparedCorpus:
    """The corpus of `data_cfg` for a training run: reused after a cheap check (the recorded
    sizes and modification times of its inputs, the sizes of its token files), else
    `prepare_corpus` (hash, rebuild if needed)."""
    root = prepared_root(data_cfg)
    try:
        manifest = json.loads((root / MANIFEST).read_text())
        sources = [resolve_source(str(spec)) for spec in data_cfg.sources]
    except (OSError, json.JSONDecodeError, LadderError):
        return prepare_corpus(data_cfg)
    recorded = (
        manifest.get("format"),
        [s.get("spec") for s in manifest.get("sources", [])],
        manifest.get("tokenizer", {}).get("spec"),
        manifest.get("val_fraction"),
        manifest.get("seed"),
    )
    wanted = (
        FORMAT_VERSION,
        [str(spec) for spec in data_cfg.sources],
        str(data_cfg.tokenizer),
        float(data_cfg.val_fraction),
        int(data_cfg.seed),
    )
    if (
        recorded == wanted
        and manifest.get("input_stats") == _input_stats(sources, str(data_cfg.tokenizer))
        and _files_complete(root, manifest)
    ):
        log.info("corpus %s: inputs unchanged since it was prepared (sizes and times): reusing it", root)
        return PreparedCorpus(root, reused=True)
    return prepare_corpus(data_cfg)


def _input_stats(sources: list[Source], tokenizer_spec: str) -> list[list[Any]]:
    """[path, size, mtime_ns] of every input file (sources, then a tokenizer.json given by path)."""
    paths = [item.path for source in sources for item in source.files]
    tokenizer_path = Path(tokenizer_spec).expanduser()
    if tokenizer_spec != "byte" and parse_bpe_spec(tokenizer_spec) is None and tokenizer_path.is_file():
        paths.append(tokenizer_path)
    stats = []
    for path in paths:
        stat = path.stat()
        stats.append([str(path.absolute()), stat.st_size, stat.st_mtime_ns])
    return stats


def prepare_corpus(data_cfg: Any, *, progress: bool | None = None) -> PreparedCorpus:
    """Prepare the corpus described by `data_cfg` (a DataConfig or the `data` node), or reuse it
    after hashing its inputs.

    `progress`: report progress (default: yes; tqdm bars on a terminal, else log lines, ladder.progress).
    """
    name, specs = str(data_cfg.name), [str(s) for s in data_cfg.sources]
    tokenizer_spec, val_fraction, seed = str(data_cfg.tokenizer), float(data_cfg.val_fraction), int(data_cfg.seed)
    if not name or "/" in name or name.startswith("."):
        raise LadderError(f"bad data.name {name!r}: use a plain folder name")
    specs, tokenizer_spec, val_fraction, seed = _named_corpus_inputs(
        Path(str(data_cfg.prepared_root)).expanduser(), name, specs, tokenizer_spec, val_fraction, seed
    )
    if not specs:
        raise LadderError("data.sources is empty: give at least one file, folder, pkg:<name> or deb:<name>")
    if not 0.0 <= val_fraction < 1.0:
        raise LadderError(f"data.val_fraction must be in [0, 1), got {val_fraction}")
    parse_bpe_spec(tokenizer_spec)
    show = True if progress is None else progress

    sources = [resolve_source(spec) for spec in specs]
    stats = _input_stats(sources, tokenizer_spec)  # before hashing: a file changed meanwhile is hashed again next time
    hashes = [source.content_hash() for source in sources]
    fingerprint = _fingerprint(specs, hashes, tokenizer_spec, val_fraction, seed)
    root = prepared_root(data_cfg)
    make_directory(root.parent, f"the corpus into data.prepared_root={data_cfg.prepared_root}")

    with _lock(root.parent / f".{name}.lock"):
        if _up_to_date(root, fingerprint):
            log.info("corpus %s is up to date (same sources, tokenizer and split): reusing it", root)
            manifest = read_manifest(root)
            if manifest.get("input_stats") != stats:  # same content, new times (a copy, a touch)
                _write_json(root / MANIFEST, manifest | {"input_stats": stats})
            return PreparedCorpus(root, reused=True)
        if root.exists() and not (root / MANIFEST).exists():
            raise LadderError(f"{root} exists and is not a prepared corpus; move it or choose another data.name")
        log.info("preparing corpus %s in %s", name, root.absolute())
        temporary = root.parent / f".{name}.tmp-{os.getpid()}"
        shutil.rmtree(temporary, ignore_errors=True)
        temporary.mkdir()
        try:
            started = time.perf_counter()
            manifest = _build(temporary, sources, hashes, tokenizer_spec, val_fraction, seed, show)
            manifest.update(
                name=name, fingerprint=fingerprint, input_stats=stats, seconds=round(time.perf_counter() - started, 3)
            )
            _write_json(temporary / MANIFEST, manifest)
            _swap_in(temporary, root)
        finally:
            shutil.rmtree(temporary, ignore_errors=True)
    log.info(
        "prepared corpus %s: %d train / %d val tokens, %d / %d documents in %.1f s",
        root,
        manifest["train"]["tokens"],
        manifest["val"]["tokens"],
        manifest["train"]["documents"],
        manifest["val"]["documents"],
        manifest["seconds"],
    )
    return PreparedCorpus(root)


def _named_corpus_inputs(
    prepared_root: Path, name: str, specs: list[str], tokenizer_spec: str, val_fraction: float, seed: int
) -> tuple[list[str], str, float, int]:
    """`data.name=mine` alone names the corpus prepared as `mine`: where the sources are left at
    the default, a prepared corpus of that name built from other sources supplies them (and its
    tokenizer, split fraction and seed, where those are left at their defaults too), instead of
    being rebuilt from the default texts. A name with every input at its default, and no such
    corpus, is refused: it would only copy the default corpus (often a relative prepared_root
    looked up from another folder)."""
    from ladder.config import DataConfig

    default = DataConfig()
    if specs != default.sources or name == default.name:
        return specs, tokenizer_spec, val_fraction, seed
    root = prepared_root / name
    if (root / MANIFEST).is_file():
        manifest = read_manifest(root)
        recorded = [source["spec"] for source in manifest.get("sources", [])]
        if recorded and recorded != specs:
            log.info("data.name=%s: the corpus prepared at %s from %s", name, root, ", ".join(recorded))
            return (
                recorded,
                manifest["tokenizer"]["spec"] if tokenizer_spec == default.tokenizer else tokenizer_spec,
                float(manifest["val_fraction"]) if val_fraction == default.val_fraction else val_fraction,
                int(manifest["seed"]) if seed == default.seed else seed,
            )
        return specs, tokenizer_spec, val_fraction, seed
    if (tokenizer_spec, val_fraction, seed) == (default.tokenizer, default.val_fraction, default.seed):
        raise LadderError(
            f"data.name={name}: no corpus of that name in {prepared_root.absolute()} (data.prepared_root is relative "
            "to the working directory unless absolute); give data.sources=[...] to prepare it"
        )
    return specs, tokenizer_spec, val_fraction, seed


def _fingerprint(specs: list[str], hashes: list[str], tokenizer_spec: str, val_fraction: float, seed: int) -> str:
    tokenizer_path = Path(tokenizer_spec).expanduser()
    tokenizer_hash = (
        hashlib.sha256(tokenizer_path.read_bytes()).hexdigest()
        if tokenizer_spec != "byte" and parse_bpe_spec(tokenizer_spec) is None and tokenizer_path.is_file()
        else None
    )
    inputs = {
        "format": FORMAT_VERSION,
        "sources": [[spec, digest] for spec, digest in zip(specs, hashes)],
        "tokenizer": [tokenizer_spec, tokenizer_hash],
        "val_fraction": val_fraction,
        "seed": seed,
    }
    return hashlib.sha256(json.dumps(inputs, sort_keys=True).encode()).hexdigest()


def _up_to_date(root: Path, fingerprint: str) -> bool:
    try:
        manifest = json.loads((root / MANIFEST).read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return False
    return manifest.get("fingerprint") == fingerprint and _files_complete(root, manifest)


def _files_complete(root: Path, manifest: dict[str, Any]) -> bool:
    """The token files are there with the sizes the manifest gives."""
    itemsize = np.dtype(manifest["dtype"]).itemsize
    return all(
        (root / manifest[split]["file"]).is_file()
        and (root / manifest[split]["file"]).stat().st_size == manifest[split]["tokens"] * itemsize
        for split in ("train", "val")
    )


@contextmanager
def _lock(path: Path) -> Iterator[None]:
    """An exclusive lock, so that parallel rungs preparing the same corpus build it once. Where
    flock is not supported (some network filesystems) the build goes on unlocked: two builders
    then do the work twice, and each swaps in a complete corpus."""
    with open(path, "w") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX)
        except OSError as error:
            log.warning("%s; preparing without a lock", flock_unsupported(path, error))
            yield
            return
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _swap_in(temporary: Path, root: Path) -> None:
    """Replace `root` by `temporary` with renames (readers holding old files keep them)."""
    if root.exists():
        old = root.parent / f".{root.name}.old-{os.getpid()}"
        os.rename(root, old)
        os.rename(temporary, root)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.rename(temporary, root)


def _write_json(path: Path, payload: dict[str, Any]) -> None:
    write_text_atomic(path, json.dumps(payload, indent=2) + "\n")


@dataclass
class _SplitWriter:
    """Appends documents to one split's token file, keeping counts and document bounds."""

    path: Path
    dtype: np.dtype
    separator: np.ndarray
    separator_bytes: int
    keep_bounds: bool
    """Record each document's [start, stop) (validation only: train may have millions)."""
    tokens: int = 0
    documents: int = 0
    bytes: int = 0
    bounds: list[tuple[int, int]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._handle = open(self.path, "wb")

    def add(self, ids: np.ndarray, n_bytes: int) -> None:
        self._handle.write(ids.astype(self.dtype, copy=False).tobytes())
        self._handle.write(self.separator.tobytes())
        if self.keep_bounds:
            self.bounds.append((self.tokens, self.tokens + len(ids)))
        self.tokens += len(ids) + len(self.separator)
        self.bytes += n_bytes + self.separator_bytes
        self.documents += 1

    def close(self) -> dict[str, Any]:
        self._handle.close()
        return {"file": self.path.name, "tokens": self.tokens, "documents": self.documents, "bytes": self.bytes}


def _build(
    out: Path,
    sources: list[Source],
    hashes: list[str],
    tokenizer_spec: str,
    val_fraction: float,
    seed: int,
    show: bool,
) -> dict[str, Any]:
    bpe = parse_bpe_spec(tokenizer_spec) is not None
    has_tokens = any(item.kind == "tokens" for source in sources for item in source.files)
    if bpe and has_tokens:
        raise LadderError(
            "token files (.npy/.bin) need the tokenizer they were made with ('byte' or its tokenizer.json), "
            f"not {tokenizer_spec!r} trained here"
        )
    # Token files are checked against the final vocabulary, known up front unless BPE is trained here.
    fixed = None if bpe else install_tokenizer(tokenizer_spec, [], out)
    vocab, eos = (fixed.vocab_size, fixed.eos_id) if fixed else (0, None)
    dtype = token_dtype(vocab) if fixed else np.dtype(np.uint16)

    def documents() -> Iterator[tuple[int, Document]]:
        """(source index, document) of every source, read afresh on each call."""
        for index, source in enumerate(sources):
            for doc in read_documents(source, eos, vocab, dtype):
                yield index, doc

    # Documents are streamed (memory does not grow with the corpus): a first pass counts them,
    # so that the split holds out exactly round(val_fraction x documents).
    counts = np.zeros(len(sources), dtype=np.int64)
    for index, _ in progress_bar(documents(), desc="counting documents", unit="doc", enabled=show):
        counts[index] += 1
    for source, count in zip(sources, counts):
        if count == 0:
            raise LadderError(f"source {source.spec} has no documents (only empty text?)")
    n_documents = int(counts.sum())
    in_val = np.zeros(n_documents, dtype=bool)
    in_val[np.random.default_rng(seed).permutation(n_documents)[: _validation_count(n_documents, val_fraction)]] = True

    tokenizer = fixed or install_tokenizer(
        tokenizer_spec, (doc.text for (_, doc), val in zip(documents(), in_val) if not val and doc.text), out
    )
    dtype = token_dtype(tokenizer.vocab_size)
    separator = np.asarray(
        [tokenizer.eos_id] if tokenizer.eos_id is not None else tokenizer.encode("\n\n"), dtype=dtype
    )
    # An end-of-text id is not text (0 bytes); the byte tokenizer's blank line is.
    separator_bytes = 0 if tokenizer.eos_id is not None else len(separator)
    writers = {
        "train": _SplitWriter(out / TRAIN_FILE, dtype, separator, separator_bytes, keep_bounds=False),
        "val": _SplitWriter(out / VAL_FILE, dtype, separator, separator_bytes, keep_bounds=True),
    }
    per_source = [{"train_documents": 0, "val_documents": 0, "train_tokens": 0, "val_tokens": 0} for _ in sources]
    progress = progress_bar(total=n_documents, desc="tokenizing", unit="doc", enabled=show)
    stream, position = documents(), 0
    while batch := list(islice(stream, ENCODE_BATCH)):
        encoded = iter(tokenizer.encode_array([doc.text for _, doc in batch if doc.text is not None]))
        for source_index, doc in batch:
            if doc.text is not None:
                ids, n_bytes = next(encoded), len(doc.text.encode("utf-8"))
            else:
                ids, n_bytes = doc.tokens, len(tokenizer.decode(doc.tokens).encode("utf-8"))
            split = "val" if in_val[position] else "train"
            writers[split].add(ids, n_bytes)
            per_source[source_index][f"{split}_documents"] += 1
            per_source[source_index][f"{split}_tokens"] += len(ids) + len(separator)
            position += 1
        progress.update(len(batch))
    progress.close()
    np.save(out / VAL_INDEX, np.asarray(writers["val"].bounds, dtype=np.int64).reshape(-1, 2))
    splits = {split: writer.close() for split, writer in writers.items()}

    return {
        "format": FORMAT_VERSION,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "tokenizer": {
            "spec": tokenizer_spec,
            "vocab_size": tokenizer.vocab_size,
            "eos_id": tokenizer.eos_id,
            "file": TOKENIZER_FILE if (out / TOKENIZER_FILE).exists() else None,
        },
        "dtype": dtype.name,
        "separator": separator.tolist(),
        "val_fraction": val_fraction,
        "seed": seed,
        "train": splits["train"],
        "val": splits["val"],
        "sources": [
            {
                "spec": source.spec,
                "files": len(source.files),
                "bytes": source.byte_count(),
                "sha256": digest,
                **counts,
            }
            for source, digest, counts in zip(sources, hashes, per_source)
        ],
    }


def _validation_count(n_documents: int, val_fraction: float) -> int:
    """round(val_fraction x documents), at least one when val_fraction > 0, leaving training ones."""
    if val_fraction == 0:
        return 0
    n_val = max(1, round(val_fraction * n_documents))
    if n_val >= n_documents:
        raise LadderError(
            f"the corpus has {n_documents} document(s): too few to hold out {val_fraction:.0%} for validation "
            "and keep some for training (add documents or set data.val_fraction=0)"
        )
    return n_val
