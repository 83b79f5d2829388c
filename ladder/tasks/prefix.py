"""Scoring the choices of a question with its shared context computed once (ladder's Decoder).

A multiple-choice question runs its context through the model once; the keys and values of
every layer are kept, and all choices continue from them. With 5-shot contexts of hundreds of
tokens and answers of a few, this removes most of the work (about 3x on ARC with four choices).

The model does the work (`Decoder.forward_context` and `Decoder.forward_continuation`, see
`ladder.model.context_cache` for the layout); this module packs questions into those batches and
sums the log-probabilities of each choice's tokens. `tests/tasks/test_tasks_prefix.py` checks that it
gives the log-probabilities of a full forward.

Truncation: the context is cut once per question, to leave room for its longest answer, so when
a context is longer than the model (as 5-shot prompts are for 256-byte CPU models) the shorter
answers see up to (longest - own length) fewer context tokens than the per-answer truncation of
the paper's code. When everything fits, which is the case at the paper's 4096 tokens, the
result is the same.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from ladder.model import Decoder
from ladder.tasks.batches import longest_first_batches, with_progress


def unwrap_decoder(model: torch.nn.Module) -> Decoder | None:
    """The Decoder inside a DDP or torch.compile wrapper (an FSDP2-sharded Decoder is one itself),
    or None for any other model."""
    inner = getattr(model, "module", model)  # DistributedDataParallel
    inner = getattr(inner, "_orig_mod", inner)  # torch.compile
    return inner if isinstance(inner, Decoder) else None


def _batch_logprobs(
    model: Decoder, contexts: list[list[int]], choices: list[list[list[int]]], device
) -> list[np.ndarray]:
    """Summed ln p of every choice of a batch of questions (contexts already cut to fit)."""
    # Contexts left-padded, so that every context ends at the same column.
    context_len = max(len(c) for c in contexts)
    ctx_idx = torch.zeros(len(contexts), context_len, dtype=torch.long)
    for row, context in enumerate(contexts):
        ctx_idx[row, context_len - len(context) :] = torch.tensor(context)
    # Choice rows, right-padded: input = choice[:-1] (its first token is predicted from the context's last position).
    owner = [q for q, question_choices in enumerate(choices) for _ in question_choices]
    flat = [choice for question_choices in choices for choice in question_choices]
    tail_len = max(1, max(len(c) for c in flat) - 1)
    tail_idx = torch.zeros(len(flat), tail_len, dtype=torch.long)
    rows, cols, targets = [], [], []  # where the logits predict a choice's later tokens, and those tokens
    for row, choice in enumerate(flat):
        if len(choice) > 1:
            tail_idx[row, : len(choice) - 1] = torch.tensor(choice[:-1])
        rows += [row] * (len(choice) - 1)
        cols += range(len(choice) - 1)
        targets += choice[1:]

    def on_device(values: list[int]) -> torch.Tensor:
        return torch.tensor(values, dtype=torch.long, device=device)

    owner_t, rows_t = on_device(owner), on_device(rows)
    next_logits, cache = model.forward_context(ctx_idx.to(device), on_device([len(c) for c in contexts]))
    tail_logits = model.forward_continuation(
        cache, owner_t, tail_idx.to(device), on_device([len(c) - 1 for c in flat]), logits_at=(rows_t, on_device(cols))
    )

    def log_softmax(logits: torch.Tensor) -> torch.Tensor:
        return torch.log_softmax(logits if logits.dtype == torch.float64 else logits.float(), dim=-1)

    totals = log_softmax(next_logits)[owner_t, on_device([c[0] for c in flat])].double()
    gathered = log_softmax(tail_logits).gather(1, on_device(targets)[:, None]).squeeze(1).double()
    totals = totals.index_add(0, rows_t, gathered).cpu().numpy()
    out, start = [], 0
    for question_choices in choices:
        out.append(totals[start : start + len(question_choices)])
        start += len(question_choices)
    return out


def shared_context_logprobs(
    model: Decoder,
    questions: Sequence[tuple[Sequence[int], Sequence[Sequence[int]]]],
    *,
    seq_len: int,
    device,
    batch_size: int,
    progress: bool = False,
) -> list[np.ndarray]:
    """Summed ln p of each choice of each (context tokens, [choice tokens]) question.

    Questions are sorted by length and batched so that a batch holds about `batch_size` choices.
    """
    prepared = []
    for context, question_choices in questions:
        room = seq_len - (max(len(c) for c in question_choices) - 1)
        prepared.append((list(context)[-room:], [list(c) for c in question_choices]))
    lengths = [len(context) + max(map(len, question_choices)) for context, question_choices in prepared]
    batches = longest_first_batches(lengths, batch_size, [len(question_choices) for _, question_choices in prepared])
    results: list[np.ndarray | None] = [None] * len(prepared)
    for batch in with_progress(batches, progress):
        scored = _batch_logprobs(model, [prepared[i][0] for i in batch], [prepared[i][1] for i in batch], device)
        for index, values in zip(batch, scored):
            results[index] = values
    return results  # type: ignore[return-value]
