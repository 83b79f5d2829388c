"""The JSONL reader shared by task files and corpus sources."""

from __future__ import annotations

import pytest

from ladder.errors import LadderError
from ladder.jsonl import json_objects


def test_objects_come_with_their_line_numbers_and_blank_lines_are_skipped(tmp_path):
    path = tmp_path / "a.jsonl"
    path.write_text('{"a": 1}\n\n   \n{"b": "é"}\n', encoding="utf-8")
    assert list(json_objects(path)) == [(1, {"a": 1}), (4, {"b": "é"})]


@pytest.mark.parametrize(
    "content, message",
    [
        (b'{"a": 1}\n{"a": \n', "a.jsonl:2: not valid JSON"),
        (b'{"a": 1}\n[1, 2]\n', "a.jsonl:2: expected a JSON object"),
        (b'\n\n{"a": "\xff"}\n', "a.jsonl:3: not UTF-8 text"),
    ],
)
def test_a_bad_line_is_named(tmp_path, content, message):
    path = tmp_path / "a.jsonl"
    path.write_bytes(content)
    with pytest.raises(LadderError, match=message):
        list(json_objects(path))
