"""The task model: a multiple-choice question scored by the log-likelihood of each continuation.

A question is scored the way OLMES and the paper's in-loop evaluator score it: each choice is a
continuation appended verbatim to the context (so choices begin with the separating space, as in
" Paris"), and the model's log-probability of the continuation's tokens given the context decides.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, replace

from ladder.errors import LadderError

PRIMARY_METRICS = ("len_norm", "acc")


@dataclass(frozen=True)
class Question:
    """One multiple-choice question."""

    context: str
    """The prompt, e.g. five solved examples then "Question: ...\\nAnswer:"."""
    choices: tuple[str, ...]
    """Continuations exactly as appended to the context, normally with a leading space."""
    gold: int
    """Index of the correct choice."""
    id: str
    """Identifier, unique within the task."""
    contexts: tuple[str, ...] | None = None
    """Per-choice contexts for partial scoring (WinoGrande: the option fills the blank in the
    context, the continuation is shared); None = every choice follows `context`."""
    group: str | None = None
    """Category for a weighted task mean (MMLU: stem, humanities, social_sciences, other)."""

    def pairs(self) -> list[tuple[str, str]]:
        """(context, continuation) of each choice, in choice order."""
        contexts = self.contexts if self.contexts is not None else (self.context,) * len(self.choices)
        return list(zip(contexts, self.choices))


@dataclass
class Task:
    """A named list of questions and how its score is aggregated."""

    name: str
    """Task name as written in the results table (e.g. arc_easy, corpus_next_word)."""
    questions: list[Question]
    """The questions, in a fixed order."""
    primary_metric: str = "len_norm"
    """Which accuracy the paper reports for this task: 'len_norm' (log-probability per character,
    the paper's 8 tasks) or 'acc' (summed log-probability; BoolQ, WinoGrande, SciQ, basic_skills,
    copycolors in OLMo's evaluator). Soft metrics use the same normalisation."""
    group_weights: dict[str, float] | None = None
    """Weight of each question group in the task mean (MMLU categories); None = plain mean."""
    source: str = ""
    """Where the questions came from (file or package path), for messages."""

    @property
    def chance(self) -> float:
        """Expected accuracy of uniform guessing: the mean over questions of 1 / choices."""
        if not self.questions:
            return float("nan")
        return sum(1.0 / len(q.choices) for q in self.questions) / len(self.questions)

    def subsample(self, max_questions: int | None, seed: int = 0) -> Task:
        """At most `max_questions` questions, drawn without replacement with a fixed seed (order kept)."""
        if max_questions is None or max_questions >= len(self.questions):
            return self
        if max_questions <= 0:
            raise LadderError(f"max_questions must be positive, got {max_questions}")
        rng = random.Random(f"{self.name}:{seed}")
        keep = sorted(rng.sample(range(len(self.questions)), max_questions))
        return replace(self, questions=[self.questions[i] for i in keep])


def check_question(question: Question, where: str) -> None:
    """Raise a LadderError naming `where` (file:line) when a question cannot be scored."""
    if len(question.choices) < 2:
        raise LadderError(f"{where}: a question needs at least 2 choices, got {len(question.choices)}")
    if not 0 <= question.gold < len(question.choices):
        raise LadderError(f"{where}: gold {question.gold} is not a choice index (0..{len(question.choices) - 1})")
    if question.contexts is not None and len(question.contexts) != len(question.choices):
        raise LadderError(f"{where}: {len(question.contexts)} contexts for {len(question.choices)} choices")
    if any(not isinstance(c, str) or not c for c in question.choices):
        raise LadderError(f"{where}: every choice must be a non-empty string")
    if not answer_text(question.choices[question.gold]):
        raise LadderError(f"{where}: the gold choice has no text besides its leading space")
    contexts = question.contexts if question.contexts is not None else (question.context,)
    if any(not isinstance(c, str) or not c for c in contexts):
        raise LadderError(f"{where}: the context must be a non-empty string")


def answer_text(continuation: str) -> str:
    """The continuation without the one space that separates it from the context.

    Its UTF-8 length is the denominator of bits per byte (the paper's `cont_byte_len_no_leading_space`;
    OLMES continuations always start with a space, which the paper's code drops).
    """
    return continuation[1:] if continuation.startswith(" ") else continuation
