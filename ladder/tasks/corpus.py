"""Tasks built from held-out corpus documents, for ladders of small CPU models.

The paper's tasks stay at chance for byte-level models of 10k-300k parameters; these do not,
because they ask what such models learn first (spelling, word order, local syntax), in the same
multiple-choice form and with the same metrics. Questions come from validation documents only
(never trained on), four choices (chance 0.25), deterministic from the seed.

- corpus_next_word: the true next word against three words of the same length and capitalisation
  drawn from the same documents by frequency (so unigram knowledge alone does not help).
- corpus_spelling: the true next word (6+ letters) against three misspellings of it, each with
  two neighbouring inner letters swapped, so spelling (learnt first) decides.
- corpus_next_words: the true next three words against three-word runs from elsewhere.
- corpus_next_line: the true next line against lines from elsewhere of similar length.
Contexts are the preceding text cut at a word boundary, at most CONTEXT_CHARS characters, so the
in-loop evaluation stays cheap.
"""

from __future__ import annotations

import bisect
import random
import re
from collections import defaultdict
from collections.abc import Callable, Sequence

from ladder.errors import LadderError
from ladder.tasks.task import Question, Task, check_question

CONTEXT_CHARS = 160
MIN_CONTEXT_CHARS = 40
N_CHOICES = 4
DEFAULT_QUESTIONS = 500
WORD = re.compile(r"[A-Za-z][A-Za-z']*")


def _context_before(document: str, end: int) -> str | None:
    """Up to CONTEXT_CHARS characters of `document` ending at `end`, starting at a word boundary."""
    start = max(0, end - CONTEXT_CHARS)
    if start > 0:
        boundary = re.search(r"\s", document[start:end])
        if boundary is None:
            return None
        start += boundary.end()
    context = document[start:end]
    return context if len(context) >= MIN_CONTEXT_CHARS else None


def _words(documents: Sequence[str]) -> list[tuple[int, int, int]]:
    """(document, start, end) of each word preceded by a single space."""
    spans = []
    for doc_index, document in enumerate(documents):
        for match in WORD.finditer(document):
            if match.start() > 0 and document[match.start() - 1] == " ":
                spans.append((doc_index, match.start(), match.end()))
    return spans


def _sample_questions(
    name: str,
    candidates: int,
    make: Callable[[random.Random, int], Question | None],
    n_questions: int,
    seed: int,
) -> list[Question]:
    """Questions from candidate positions in a seeded random order, skipping unusable ones."""
    rng = random.Random(f"{name}:{seed}")
    order = list(range(candidates))
    rng.shuffle(order)
    questions = []
    for position in order:
        if len(questions) == n_questions:
            break
        question = make(rng, position)
        if question is not None:
            check_question(question, f"{name} question {len(questions) + 1}")
            questions.append(question)
    return questions


def _place_gold(rng: random.Random, gold: str, distractors: list[str]) -> tuple[tuple[str, ...], int]:
    choices = list(distractors)
    index = rng.randrange(N_CHOICES)
    choices.insert(index, gold)
    return tuple(choices), index


def next_word_task(documents: Sequence[str], n_questions: int = DEFAULT_QUESTIONS, seed: int = 0) -> Task:
    """corpus_next_word (see the module docstring)."""
    name = "corpus_next_word"
    spans = [s for s in _words(documents) if s[2] - s[1] >= 2]
    # Distractor pools: word occurrences by (length, capitalised); sampling occurrences, not
    # distinct words, follows the corpus frequencies.
    pools: dict[tuple[int, bool], list[str]] = defaultdict(list)
    for doc_index, start, end in spans:
        word = documents[doc_index][start:end]
        pools[(len(word), word[0].isupper())].append(word)
    distinct = {key: len(set(pool)) for key, pool in pools.items()}

    def make(rng: random.Random, position: int) -> Question | None:
        doc_index, start, end = spans[position]
        document = documents[doc_index]
        word = document[start:end]
        context = _context_before(document, start - 1)
        key = (len(word), word[0].isupper())
        if context is None or distinct[key] < N_CHOICES:
            return None
        pool = pools[key]
        distractors: list[str] = []
        while len(distractors) < N_CHOICES - 1:
            candidate = rng.choice(pool)
            if candidate != word and candidate not in distractors:
                distractors.append(candidate)
        choices, gold = _place_gold(rng, " " + word, [" " + d for d in distractors])
        return Question(context, choices, gold, f"{doc_index}:{start}")

    return Task(name, _sample_questions(name, len(spans), make, n_questions, seed), source="validation documents")


def spelling_task(documents: Sequence[str], n_questions: int = DEFAULT_QUESTIONS, seed: int = 0) -> Task:
    """corpus_spelling (see the module docstring)."""
    name = "corpus_spelling"
    spans = [s for s in _words(documents) if s[2] - s[1] >= 6]

    def make(rng: random.Random, position: int) -> Question | None:
        doc_index, start, end = spans[position]
        document = documents[doc_index]
        word = document[start:end]
        context = _context_before(document, start - 1)
        if context is None:
            return None
        # Swap two neighbouring letters, never the first or last (the word stays readable).
        swaps = {word[:i] + word[i + 1] + word[i] + word[i + 2 :] for i in range(1, len(word) - 2)} - {word}
        if len(swaps) < N_CHOICES - 1:
            return None
        distractors = rng.sample(sorted(swaps), N_CHOICES - 1)
        choices, gold = _place_gold(rng, " " + word, [" " + d for d in distractors])
        return Question(context, choices, gold, f"{doc_index}:{start}")

    return Task(name, _sample_questions(name, len(spans), make, n_questions, seed), source="validation documents")


def next_words_task(
    documents: Sequence[str], n_questions: int = DEFAULT_QUESTIONS, seed: int = 0, n_words: int = 3
) -> Task:
    """corpus_next_words (see the module docstring)."""
    name = "corpus_next_words"
    spans = _words(documents)

    def run_at(index: int) -> str | None:
        """The n_words words starting at spans[index], with the text between them, on one line."""
        if index + n_words > len(spans) or spans[index + n_words - 1][0] != spans[index][0]:
            return None
        document = documents[spans[index][0]]
        text = document[spans[index][1] : spans[index + n_words - 1][2]]
        return text if "\n" not in text else None

    def make(rng: random.Random, position: int) -> Question | None:
        gold = run_at(position)
        context = _context_before(documents[spans[position][0]], spans[position][1] - 1)
        if gold is None or context is None:
            return None
        distractors: list[str] = []
        for _ in range(50):
            candidate = run_at(rng.randrange(len(spans)))
            if candidate is not None and candidate != gold and candidate not in distractors:
                distractors.append(candidate)
                if len(distractors) == N_CHOICES - 1:
                    break
        else:
            return None
        choices, gold_index = _place_gold(rng, " " + gold, [" " + d for d in distractors])
        return Question(context, choices, gold_index, f"{spans[position][0]}:{spans[position][1]}")

    return Task(name, _sample_questions(name, len(spans), make, n_questions, seed), source="validation documents")


def next_line_task(documents: Sequence[str], n_questions: int = DEFAULT_QUESTIONS, seed: int = 0) -> Task:
    """corpus_next_line (see the module docstring)."""
    name = "corpus_next_line"
    lines: list[tuple[int, int, str]] = []  # document, start offset, text
    for doc_index, document in enumerate(documents):
        offset = 0
        for line in document.split("\n"):
            # Trailing spaces (Markdown line breaks) are not part of the answer.
            text = line.rstrip()
            if 8 <= len(text) <= 120 and text == text.lstrip():
                lines.append((doc_index, offset, text))
            offset += len(line) + 1
    by_length = sorted(range(len(lines)), key=lambda i: len(lines[i][2]))
    lengths = [len(lines[i][2]) for i in by_length]

    def make(rng: random.Random, position: int) -> Question | None:
        doc_index, start, gold = lines[position]
        context = _context_before(documents[doc_index], start) if start > 0 else None
        if context is None or not context.endswith("\n"):
            return None
        # Distractors of similar length (within 25%), so length alone does not give the answer.
        low = bisect.bisect_left(lengths, int(len(gold) * 0.75))
        high = bisect.bisect_right(lengths, int(len(gold) * 1.25) + 1)
        distractors: list[str] = []
        for _ in range(50):
            candidate = lines[by_length[rng.randrange(low, high)]][2]
            if candidate != gold and candidate not in distractors:
                distractors.append(candidate)
                if len(distractors) == N_CHOICES - 1:
                    break
        else:
            return None
        choices, gold_index = _place_gold(rng, gold, distractors)
        return Question(context, choices, gold_index, f"{doc_index}:{start}")

    return Task(name, _sample_questions(name, len(lines), make, n_questions, seed), source="validation documents")


CORPUS_TASKS: dict[str, Callable[..., Task]] = {
    "corpus_spelling": spelling_task,
    "corpus_next_word": next_word_task,
    "corpus_next_words": next_words_task,
    "corpus_next_line": next_line_task,
}


def corpus_task(name: str, documents: Sequence[str], n_questions: int = DEFAULT_QUESTIONS, seed: int = 0) -> Task:
    """Build the corpus task `name` from held-out documents."""
    if not documents or not any(doc.strip() for doc in documents):
        raise LadderError(f"task {name}: the corpus has no validation text to build questions from")
    task = CORPUS_TASKS[name](documents, n_questions=n_questions, seed=seed)
    if len(task.questions) < min(n_questions, 20):
        raise LadderError(
            f"task {name}: only {len(task.questions)} questions could be built from the validation "
            "documents; use a larger corpus or val_fraction"
        )
    return task
