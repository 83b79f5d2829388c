"""Atomic file writes: readers (and a crash) never see half a file.

Everything is written to a temporary file beside its destination, then renamed over it
(`os.replace` is atomic within one filesystem); on an error the temporary file is removed and the
destination is left as it was. SIGTERM during a write unwinds like Ctrl-C (`terminate_as_interrupt`),
so `kill` leaves no temporary file either.
"""

from __future__ import annotations

import json
import os
import signal
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ladder.errors import LadderError, Terminated


@contextmanager
def terminate_as_interrupt() -> Iterator[None]:
    """Within the block, SIGTERM raises `Terminated` (a KeyboardInterrupt) so that `finally` clauses
    clean up, as they do for Ctrl-C. Only where nobody handles SIGTERM already (the trainer checkpoints
    on it instead) and in the main thread (the only one that receives signals)."""
    if threading.current_thread() is not threading.main_thread() or signal.getsignal(signal.SIGTERM) != signal.SIG_DFL:
        yield
        return

    def terminate(signum: int, frame: Any) -> None:
        raise Terminated()

    signal.signal(signal.SIGTERM, terminate)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)


def make_directory(path: Path, purpose: str) -> None:
    """`mkdir -p path`, where a file in the way or a permission is a one-line LadderError about `purpose`."""
    try:
        path.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        raise LadderError(f"cannot write {purpose}: a file stands where the directory {path} should be") from None
    except PermissionError:
        raise LadderError(f"cannot write {purpose}: permission denied for {path}") from None
    if not os.access(path, os.W_OK):
        raise LadderError(f"cannot write {purpose}: {path} is not writable")


def check_writable_destination(path: Path) -> None:
    """Before any work: refuse a file `path` that could not be written later, because a file stands
    where one of its directories should be or the nearest existing directory is not writable.
    Creates nothing."""
    ancestor = path.parent
    while not ancestor.exists() and ancestor != ancestor.parent:
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise LadderError(f"cannot write {path}: a file stands where the directory {ancestor} should be")
    if not os.access(ancestor, os.W_OK):
        raise LadderError(f"cannot write {path}: {ancestor} is not writable")


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """A temporary path beside `path` to write to; it replaces `path` when the block succeeds."""
    path = Path(path)
    if path.is_dir():
        raise LadderError(f"{path} is a directory; give a file name to write")
    make_directory(path.parent, str(path))
    # Same suffix, so writers that choose a format by suffix (pandas, torch) still do.
    temporary = path.with_name(f".{path.stem}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}{path.suffix}")
    with terminate_as_interrupt():
        try:
            yield temporary
            os.replace(temporary, path)
        finally:
            if temporary.exists():
                temporary.unlink()


def write_text_atomic(path: str | os.PathLike, text: str) -> Path:
    """Write `text` (UTF-8) to `path` atomically."""
    with atomic_path(path) as temporary:
        temporary.write_text(text, encoding="utf-8")
    return Path(path)


def read_json(path: str | os.PathLike) -> dict[str, Any] | None:
    """A JSON object from a file, or None when it is absent, torn (a writer killed mid-write) or
    not an object: for markers and records that may legitimately be missing."""
    try:
        value = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return value if isinstance(value, dict) else None
