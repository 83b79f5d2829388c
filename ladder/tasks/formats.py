"""Task files users bring: ladder's JSONL format and the original releases of ARC, HellaSwag,
PIQA and MMLU, prompted as lm-evaluation-harness and OLMES prompt them (cloze, zero-shot except
MMLU, which takes five shots from its dev folder when present).

ladder JSONL, one question per line:
    {"context": "Question: What is the capital of France?\\nAnswer:", "choices": [" Paris", " Rome"], "gold": 0, "id": "q1"}
Choices are appended to the context exactly as written, so start each with the separating space.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ladder.errors import LadderError
from ladder.jsonl import json_objects
from ladder.tasks.olmes import MMLU_CATEGORIES, MMLU_SHOTS, MMLU_WEIGHTS, mmlu_prompt
from ladder.tasks.task import Question, Task, check_question

FORMATS = ("arc", "hellaswag", "piqa", "mmlu")


def _json_lines(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """(line number, object) for each non-blank line; a bad line is a LadderError naming it."""
    if not path.is_file():
        raise LadderError(f"{path}: no such task file")
    return json_objects(path)


def _text(path: Path) -> str:
    """A task file's text; one that is not UTF-8 (a binary file, another encoding) is refused."""
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as error:
        raise LadderError(f"{path}: not UTF-8 text (byte {error.start}); task files are UTF-8 JSONL or CSV") from None


def _finish(name: str, path: Path, questions: list[Question], **kwargs: Any) -> Task:
    if not questions:
        raise LadderError(f"{path}: no questions")
    return Task(name=name, questions=questions, source=str(path), **kwargs)


def load_jsonl_task(path: str | Path, name: str | None = None) -> Task:
    """ladder's own format: context, choices, gold, optional id (see the module docstring)."""
    path = Path(path)
    questions, seen = [], set()
    for number, record in _json_lines(path):
        where = f"{path}:{number}"
        missing = [key for key in ("context", "choices", "gold") if key not in record]
        if missing:
            raise LadderError(f"{where}: missing field(s) {', '.join(missing)}")
        choices, gold = record["choices"], record["gold"]
        if not isinstance(choices, list) or not all(isinstance(c, str) for c in choices):
            raise LadderError(f"{where}: 'choices' must be a list of strings")
        if not isinstance(gold, int) or isinstance(gold, bool):
            raise LadderError(f"{where}: 'gold' must be an integer index into 'choices'")
        question_id = str(record.get("id", number))
        if question_id in seen:
            raise LadderError(f"{where}: duplicate id {question_id!r}")
        seen.add(question_id)
        question = Question(context=record["context"], choices=tuple(choices), gold=gold, id=question_id)
        check_question(question, where)
        questions.append(question)
    return _finish(name or path.stem, path, questions)


def load_arc(path: str | Path, name: str | None = None) -> Task:
    """ARC release JSONL (ARC-V1-Feb2018: id, question.stem, question.choices[text,label], answerKey)."""
    path = Path(path)
    questions = []
    for number, record in _json_lines(path):
        where = f"{path}:{number}"
        try:
            stem = record["question"]["stem"]
            labels = [choice["label"] for choice in record["question"]["choices"]]
            texts = [choice["text"] for choice in record["question"]["choices"]]
            gold = labels.index(record["answerKey"])
        except (KeyError, TypeError, ValueError):
            raise LadderError(
                f"{where}: not an ARC question (id, question.stem, question.choices, answerKey)"
            ) from None
        question = Question(
            f"Question: {stem}\nAnswer:", tuple(" " + t for t in texts), gold, str(record.get("id", number))
        )
        check_question(question, where)
        questions.append(question)
    return _finish(name or path.stem.lower().replace("-", "_"), path, questions)


def _hellaswag_clean(text: str) -> str:
    # lm-evaluation-harness's preprocessing of WikiHow artefacts.
    text = text.strip().replace(" [title]", ". ")
    text = re.sub(r"\[.*?\]", "", text)
    return text.replace("  ", " ")


def load_hellaswag(path: str | Path, name: str | None = None) -> Task:
    """HellaSwag release JSONL (ind, activity_label, ctx_a, ctx_b, endings, label)."""
    path = Path(path)
    questions = []
    for number, record in _json_lines(path):
        where = f"{path}:{number}"
        try:
            context = record["ctx_a"] + " " + record["ctx_b"].capitalize()
            query = _hellaswag_clean(record["activity_label"] + ": " + context)
            choices = tuple(" " + _hellaswag_clean(ending) for ending in record["endings"])
            gold = int(record["label"])
        except (KeyError, TypeError, ValueError, AttributeError):
            raise LadderError(f"{where}: not a HellaSwag item (activity_label, ctx_a, ctx_b, endings, label)") from None
        question = Question(query, choices, gold, str(record.get("ind", number)))
        check_question(question, where)
        questions.append(question)
    return _finish(name or "hellaswag", path, questions)


def load_piqa(path: str | Path, name: str | None = None) -> Task:
    """PIQA release: `<split>.jsonl` (goal, sol1, sol2) with labels in `<split>-labels.lst` beside it."""
    path = Path(path)
    labels_path = path.with_name(path.stem + "-labels.lst")
    if not labels_path.is_file():
        raise LadderError(f"{path}: PIQA labels file {labels_path.name} not found beside it")
    labels = _text(labels_path).split()
    questions = []
    for index, (number, record) in enumerate(_json_lines(path)):
        where = f"{path}:{number}"
        if index >= len(labels):
            raise LadderError(f"{where}: no label for this line in {labels_path.name}")
        try:
            question = Question(
                f"Question: {record['goal']}\nAnswer:",
                (" " + record["sol1"], " " + record["sol2"]),
                int(labels[index]),
                str(index),
            )
        except (KeyError, TypeError, ValueError):
            raise LadderError(f"{where}: not a PIQA item (goal, sol1, sol2) or a bad label") from None
        check_question(question, where)
        questions.append(question)
    return _finish(name or "piqa", path, questions)


def _mmlu_rows(path: Path) -> list[tuple[int, list[str]]]:
    lines = io.StringIO(_text(path), newline="")
    rows = [(number, row) for number, row in enumerate(csv.reader(lines), start=1) if row]
    for number, row in rows:
        if len(row) != 6 or row[5].strip() not in ("A", "B", "C", "D"):
            raise LadderError(f"{path}:{number}: expected question,A,B,C,D,answer letter (A-D)")
    return rows


def load_mmlu_csv(path: str | Path, name: str | None = None) -> Task:
    """MMLU release (Hendrycks et al.): a folder `data/` with `test/<subject>_test.csv` and
    `dev/<subject>_dev.csv` (question, A, B, C, D, answer letter; no header), or the test folder."""
    root = Path(path)
    test_dir = root / "test" if (root / "test").is_dir() else root
    dev_dir = test_dir.parent / "dev"
    files = sorted(test_dir.glob("*_test.csv"))
    if not files:
        raise LadderError(f"{root}: no <subject>_test.csv files (give the MMLU data/ or data/test folder)")
    category_of = {subject: category for category, subjects in MMLU_CATEGORIES.items() for subject in subjects}
    questions = []
    for file in files:
        subject = file.name[: -len("_test.csv")]
        dev_file = dev_dir / f"{subject}_dev.csv"
        shots = []
        if dev_file.is_file():
            for _, row in _mmlu_rows(dev_file)[:MMLU_SHOTS]:
                shots.append({"question": row[0], "choices": row[1:5], "answer": "ABCD".index(row[5].strip())})
        for number, row in _mmlu_rows(file):
            question = Question(
                context=mmlu_prompt(subject, shots, row[0]),
                choices=tuple(" " + choice for choice in row[1:5]),
                gold="ABCD".index(row[5].strip()),
                id=f"{subject}/{number}",
                group=category_of.get(subject, "other"),
            )
            check_question(question, f"{file}:{number}")
            questions.append(question)
    return _finish(name or "mmlu", root, questions, group_weights=dict(MMLU_WEIGHTS))


LOADERS = {"arc": load_arc, "hellaswag": load_hellaswag, "piqa": load_piqa, "mmlu": load_mmlu_csv}
