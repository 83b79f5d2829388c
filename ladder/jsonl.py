"""Reading JSON Lines files (task files, corpus documents) one object per line.

Shared by the task loaders and the corpus sources, so that every JSONL file ladder reads
refuses the same mistakes with the same one-line errors. (A run's evaluation rows are read by
`ladder.runs.directory`, which also has to cut a line torn by a crash.)
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ladder.errors import LadderError


def json_objects(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """(line number, object) for each non-blank line, streamed; a line that is not UTF-8, not
    valid JSON or not a JSON object is a LadderError naming the file and line."""
    with open(path, "rb") as handle:
        for number, raw in enumerate(handle, start=1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as error:
                raise LadderError(f"{path}:{number}: not UTF-8 text (byte {error.start} of the line)") from None
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as error:
                raise LadderError(f"{path}:{number}: not valid JSON ({error.msg})") from None
            if not isinstance(record, dict):
                raise LadderError(f"{path}:{number}: expected a JSON object")
            yield number, record
