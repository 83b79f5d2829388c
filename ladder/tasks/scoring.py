"""Scoring a language model on multiple-choice tasks, with the metrics of the paper's evaluator.

Per question, with ll_i = sum of ln p over the tokens of continuation i given its context:
- bpb      = -ll_gold x log2(e) / UTF-8 bytes of the gold continuation without its leading space
- acc_raw  = [argmax_i ll_i == gold]
- acc_len_norm = [argmax_i ll_i / characters(continuation_i) == gold]   (leading space counted)
- soft     = softmax_i(s_i)[gold], soft_log = log_softmax_i(s_i)[gold], with s_i the task's primary
             normalisation of ll_i (per character for len_norm tasks, raw for acc tasks)
A task's value is the mean over questions (MMLU: the category-weighted mean), never total bits
over total bytes. This mirrors OLMo's in-loop `ICLMetric` (ai2-olmo-eval), which the paper used.

Speed: contexts and continuations are tokenized separately (as the paper's code does). With
ladder's Decoder the context of a question is run once for all its choices (ladder.tasks.prefix);
with any other model each distinct (context, continuation) pair is run once. Sequences are sorted
by length and batched, so padding is small; only the continuation positions go through the
softmax, so a large vocabulary costs little.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from typing import Any, Protocol

import numpy as np
import torch

from ladder.errors import LadderError
from ladder.tasks.batches import longest_first_batches, with_progress
from ladder.tasks.prefix import shared_context_logprobs, unwrap_decoder
from ladder.tasks.task import Question, Task, answer_text

LOG2_E = 1.0 / math.log(2.0)
log = logging.getLogger(__name__)


class Encoder(Protocol):
    """What scoring needs of a tokenizer (`ladder.data.Tokenizer` is one)."""

    def encode(self, text: str) -> list[int]: ...


@dataclass
class TaskScore:
    """A model's score on one task."""

    loss: float
    """Mean over questions of the gold continuation's bits per byte (the paper's task loss)."""
    acc: float
    """The paper's accuracy for this task: acc_len_norm, or acc_raw for tasks whose primary metric is 'acc'."""
    acc_len_norm: float
    """Accuracy choosing by log-probability per character of the continuation."""
    acc_raw: float
    """Accuracy choosing by summed log-probability."""
    soft: float
    """Mean probability of the gold choice after normalising over the choices."""
    soft_log: float
    """Mean log-probability of the gold choice after normalising over the choices."""
    n_questions: int
    """Questions scored."""
    chance: float
    """Accuracy of uniform guessing (mean of 1 / choices)."""

    def extra(self) -> dict[str, Any]:
        """The metrics that go to the results table as extra columns (loss and acc have their own)."""
        row = asdict(self)
        del row["loss"], row["acc"]
        return row


def continuation_logprobs(
    model: torch.nn.Module,
    requests: Sequence[tuple[Sequence[int], Sequence[int]]],
    *,
    seq_len: int,
    device: str | torch.device = "cpu",
    batch_size: int = 32,
    progress: bool = False,
) -> np.ndarray:
    """Sum of ln p of each request's continuation tokens given its context tokens.

    The input is context + continuation minus its last token, cut from the left to `seq_len`
    tokens (the paper's truncation); the model must be causal, so right padding is harmless.
    """
    if batch_size <= 0:
        raise LadderError(f"batch_size must be positive, got {batch_size}")
    inputs: list[list[int]] = []
    for context, continuation in requests:
        check_request(context, continuation, seq_len)
        inputs.append((list(context) + list(continuation))[:-1][-seq_len:])
    totals = np.zeros(len(requests), dtype=np.float64)
    for members in with_progress(longest_first_batches([len(tokens) for tokens in inputs], batch_size), progress):
        width = len(inputs[members[0]])
        idx = torch.zeros((len(members), width), dtype=torch.long)
        rows, positions, targets, owners = [], [], [], []
        for row, member in enumerate(members):
            tokens = inputs[member]
            idx[row, : len(tokens)] = torch.tensor(tokens, dtype=torch.long)
            continuation = requests[member][1]
            first = len(tokens) - len(continuation)
            rows += [row] * len(continuation)
            positions += range(first, len(tokens))
            targets += continuation
            owners += [member] * len(continuation)
        logits = model(idx.to(device))
        picked = logits[torch.tensor(rows, device=logits.device), torch.tensor(positions, device=logits.device)]
        # float32 at least (bf16 logits would cost precision); a float64 model keeps float64.
        logprobs = torch.log_softmax(picked if picked.dtype == torch.float64 else picked.float(), dim=-1)
        gold = logprobs.gather(1, torch.tensor(targets, device=logits.device).unsqueeze(1)).squeeze(1)
        np.add.at(totals, np.asarray(owners), gold.double().cpu().numpy())
    return totals


def check_request(context: Sequence[int], continuation: Sequence[int], seq_len: int) -> None:
    """A (context, continuation) pair the model can score, or a LadderError saying why not."""
    if not context:
        raise LadderError("a task context tokenizes to nothing; the first answer token would have no prediction")
    if len(continuation) > seq_len:
        raise LadderError(
            f"an answer of {len(continuation)} tokens is longer than the model's context ({seq_len} tokens)"
        )
    if not continuation:
        raise LadderError("a task answer tokenizes to nothing")


def question_metrics(question: Question, logliks: np.ndarray, primary_metric: str) -> dict[str, float]:
    """The per-question metrics from the summed log-probabilities of its choices."""
    lengths = np.array([len(choice) for choice in question.choices], dtype=np.float64)
    per_char = logliks / lengths
    normalised = per_char if primary_metric == "len_norm" else logliks
    log_soft = normalised - np.logaddexp.reduce(normalised)
    gold_bytes = len(answer_text(question.choices[question.gold]).encode("utf-8"))
    return {
        "loss": float(-logliks[question.gold] * LOG2_E / gold_bytes),
        "acc_len_norm": float(np.argmax(per_char) == question.gold),
        "acc_raw": float(np.argmax(logliks) == question.gold),
        "soft": float(np.exp(log_soft[question.gold])),
        "soft_log": float(log_soft[question.gold]),
    }


def aggregate(task: Task, per_question: list[dict[str, float]]) -> TaskScore:
    """Task means of the per-question metrics (weighted by group when the task says so)."""
    names = ("loss", "acc_len_norm", "acc_raw", "soft", "soft_log")
    if task.group_weights:
        groups: dict[str, list[dict[str, float]]] = {}
        for question, metrics in zip(task.questions, per_question):
            groups.setdefault(question.group or "", []).append(metrics)
        present = {g: w for g, w in task.group_weights.items() if g in groups}
        if not present:
            raise LadderError(f"task {task.name}: no question belongs to a weighted group")
        total = sum(present.values())
        means = {
            name: sum(w * float(np.mean([m[name] for m in groups[g]])) for g, w in present.items()) / total
            for name in names
        }
    else:
        means = {name: float(np.mean([m[name] for m in per_question])) for name in names}
    primary = means["acc_len_norm"] if task.primary_metric == "len_norm" else means["acc_raw"]
    return TaskScore(
        loss=means["loss"],
        acc=primary,
        acc_len_norm=means["acc_len_norm"],
        acc_raw=means["acc_raw"],
        soft=means["soft"],
        soft_log=means["soft_log"],
        n_questions=len(per_question),
        chance=task.chance,
    )


def model_seq_len(model: torch.nn.Module, seq_len: int | None) -> int:
    """The context length to score with: the argument, else `model.seq_len`."""
    value = seq_len if seq_len is not None else getattr(model, "seq_len", None)
    if value is None:
        raise LadderError("the model has no seq_len attribute; pass seq_len= to evaluate()")
    return int(value)


def evaluate(
    model: torch.nn.Module,
    tokenizer: Encoder,
    tasks: Sequence[Task],
    *,
    device: str | torch.device = "cpu",
    batch_size: int = 32,
    seq_len: int | None = None,
    progress: bool = False,
) -> dict[str, TaskScore]:
    """Score `model` (idx LongTensor[B,T] -> logits [B,T,V]) on every task; returns name -> score.

    Puts the model in eval mode under torch.no_grad() and restores its training mode afterwards,
    so the trainer can call it in-loop.
    """
    for task in tasks:
        if not task.questions:
            raise LadderError(f"task {task.name} has no questions")
    seq_len = model_seq_len(model, seq_len)
    per_question = score_questions(
        model, tokenizer, tasks, device=device, batch_size=batch_size, seq_len=seq_len, progress=progress
    )
    return summarize(tasks, per_question, seq_len)


QuestionMetrics = dict[str, float] | None
"""One question's metrics (`question_metrics`), or None when it cannot be scored (an answer
longer than the model's context)."""


def score_questions(
    model: torch.nn.Module,
    tokenizer: Encoder,
    tasks: Sequence[Task],
    *,
    device: str | torch.device = "cpu",
    batch_size: int = 32,
    seq_len: int | None = None,
    progress: bool = False,
) -> list[list[QuestionMetrics]]:
    """Per task, per question (in order), its metrics: what `evaluate` aggregates. A task may have
    no questions (a process's share of a small task in a distributed evaluation)."""
    seq_len = model_seq_len(model, seq_len)
    encoded: dict[str, tuple[int, ...]] = {}

    def encode(text: str) -> tuple[int, ...]:
        if text not in encoded:
            encoded[text] = tuple(tokenizer.encode(text))
        return encoded[text]

    # With ladder's Decoder, a question whose choices share one context runs that context once
    # (ladder.tasks.prefix); other questions and models score each distinct (context,
    # continuation) pair once, however many questions share it.
    decoder = unwrap_decoder(model)
    shared: list[tuple[tuple[int, ...], list[tuple[int, ...]]]] = []
    request_index: dict[tuple[str, str], int] = {}
    requests: list[tuple[tuple[int, ...], tuple[int, ...]]] = []
    layout: list[list[tuple[str, Any]]] = []
    for task in tasks:
        task_layout: list[tuple[str, Any]] = []
        for question in task.questions:
            if any(len(encode(choice)) > seq_len for choice in question.choices):
                # No prediction for the answer's first tokens: the question cannot be scored.
                task_layout.append(("skip", None))
                continue
            if decoder is not None and question.contexts is None:
                context = encode(question.context)
                choices = [encode(choice) for choice in question.choices]
                for choice in choices:
                    check_request(context, choice, seq_len)
                task_layout.append(("shared", len(shared)))
                shared.append((context, choices))
                continue
            indices = []
            for pair in question.pairs():
                if pair not in request_index:
                    request_index[pair] = len(requests)
                    requests.append((encode(pair[0]), encode(pair[1])))
                indices.append(request_index[pair])
            task_layout.append(("pairs", indices))
        layout.append(task_layout)

    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            pair_logliks = continuation_logprobs(
                model, requests, seq_len=seq_len, device=device, batch_size=batch_size, progress=progress
            )
            shared_logliks = (
                shared_context_logprobs(
                    decoder, shared, seq_len=seq_len, device=device, batch_size=batch_size, progress=progress
                )
                if shared
                else []
            )
    finally:
        model.train(was_training)

    return [
        [
            None
            if kind == "skip"
            else question_metrics(
                q, shared_logliks[where] if kind == "shared" else pair_logliks[where], task.primary_metric
            )
            for q, (kind, where) in zip(task.questions, task_layout)
        ]
        for task, task_layout in zip(tasks, layout)
    ]


def summarize(
    tasks: Sequence[Task], per_question: Sequence[Sequence[QuestionMetrics]], seq_len: int
) -> dict[str, TaskScore]:
    """name -> TaskScore from `score_questions`'s output (questions that could not be scored are
    left out, with a warning; a task none of whose questions could be scored is an error)."""
    scores: dict[str, TaskScore] = {}
    for task, metrics in zip(tasks, per_question):
        kept = [(q, m) for q, m in zip(task.questions, metrics) if m is not None]
        too_long = len(task.questions) - len(kept)
        if not kept:
            raise LadderError(
                f"task {task.name}: every question has an answer longer than the model's context ({seq_len} tokens)"
            )
        if too_long:
            log.warning(
                "task %s: %d of %d questions skipped (an answer longer than the model's %d tokens)",
                task.name,
                too_long,
                len(task.questions),
                seq_len,
            )
        scores[task.name] = aggregate(replace(task, questions=[q for q, _ in kept]), [m for _, m in kept])
    return scores
