"""Scoring the choices of a question with its shared context computed once (ladder's Decoder).

A multiple-choice question runs its context through the model once; the keys and values of
every layer are kept, and all choices continue from them. With 5-shot contexts of hundreds of
tokens and answers of a few, this removes most of the work (about 3x on ARC with four choices).

It runs the Decoder's own blocks, with an attention that keeps or reads the cached keys and
values (`Block.forward`'s `attend`, `Attention.heads` and `merge`);
`tests/tasks/test_prefix.py` checks that it gives the log-probabilities of a full forward. Rows of a batch
have different context lengths: each row's tokens take positions 0, 1, ... (RoPE depends only
on position differences) and attention masks hide the padding.

Truncation: the context is cut once per question, to leave room for its longest answer, so when
a context is longer than the model (as 5-shot prompts are for 256-byte CPU models) the shorter
answers see up to (longest - own length) fewer context tokens than the per-answer truncation of
the paper's code. When everything fits, which is the case at the paper's 4096 tokens, the
result is the same.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from ladder.model import Decoder


def unwrap_decoder(model: torch.nn.Module) -> Decoder | None:
    """The Decoder inside a DDP or torch.compile wrapper, or None for any other model."""
    inner = getattr(model, "module", model)  # DistributedDataParallel
    inner = getattr(inner, "_orig_mod", inner)  # torch.compile
    return inner if isinstance(inner, Decoder) else None


def _batch_logprobs(
    model: Decoder, contexts: list[list[int]], choices: list[list[list[int]]], device
) -> list[np.ndarray]:
    """Summed ln p of every choice of a batch of questions (contexts already cut to fit)."""
    n_questions = len(contexts)
    context_len = max(len(c) for c in contexts)
    # Left-pad contexts so that every context ends at the same column.
    ctx_idx = torch.zeros(n_questions, context_len, dtype=torch.long)
    ctx_real = torch.zeros(n_questions, context_len, dtype=torch.bool)
    ctx_pos = torch.zeros(n_questions, context_len, dtype=torch.long)
    for row, context in enumerate(contexts):
        pad = context_len - len(context)
        ctx_idx[row, pad:] = torch.tensor(context)
        ctx_real[row, pad:] = True
        ctx_pos[row, pad:] = torch.arange(len(context))
    # Choice rows: input = choice[:-1] (its first token is predicted from the context's last position).
    owner = [q for q, question_choices in enumerate(choices) for _ in question_choices]
    flat = [choice for question_choices in choices for choice in question_choices]
    tail_len = max(1, max(len(c) for c in flat) - 1)
    tail_idx = torch.zeros(len(flat), tail_len, dtype=torch.long)
    tail_pos = torch.zeros(len(flat), tail_len, dtype=torch.long)
    for row, (q, choice) in enumerate(zip(owner, flat)):
        if len(choice) > 1:
            tail_idx[row, : len(choice) - 1] = torch.tensor(choice[:-1])
        # Padding positions repeat the last real one (they are masked; they only need a valid index).
        tail_pos[row] = len(contexts[q]) + torch.arange(tail_len).clamp(max=max(len(choice) - 2, 0))
    tail_pos = tail_pos.clamp(max=model.rope.shape[0] - 1)

    ctx_idx, ctx_real, tail_idx = ctx_idx.to(device), ctx_real.to(device), tail_idx.to(device)
    rope = model.rope.to(device)
    ctx_freqs, tail_freqs = rope[ctx_pos.to(device)], rope[tail_pos.to(device)]  # [rows, T, 1, head_dim/2]
    owner_t = torch.tensor(owner, device=device)

    causal = torch.ones(context_len, context_len, dtype=torch.bool, device=device).tril()
    # A padding query may see itself only (no row of the mask is empty, so no NaN).
    ctx_mask = (causal & ctx_real[:, None, :]) | torch.eye(context_len, dtype=torch.bool, device=device)
    tail_mask = torch.cat(
        [
            ctx_real[owner_t][:, None, :].expand(-1, tail_len, -1),
            torch.ones(tail_len, tail_len, dtype=torch.bool, device=device).tril().expand(len(flat), -1, -1),
        ],
        dim=2,
    )

    x_ctx, x_tail = model.embed(ctx_idx), model.embed(tail_idx)
    for block in model.blocks:
        cache = {}

        def attend_context(h: torch.Tensor) -> torch.Tensor:
            q, k, v = block.attention.heads(h, ctx_freqs)
            cache["k"], cache["v"] = k, v
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=ctx_mask[:, None])
            return block.attention.merge(y)

        def attend_tail(h: torch.Tensor) -> torch.Tensor:
            q, k, v = block.attention.heads(h, tail_freqs)
            k = torch.cat([cache["k"][owner_t], k], dim=2)
            v = torch.cat([cache["v"][owner_t], v], dim=2)
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=tail_mask[:, None])
            return block.attention.merge(y)

        x_ctx = block(x_ctx, ctx_freqs, attend_context)
        x_tail = block(x_tail, tail_freqs, attend_tail)

    def logprobs(hidden: torch.Tensor) -> torch.Tensor:
        logits = model.lm_head(model.final_norm(hidden))
        return torch.log_softmax(logits if logits.dtype == torch.float64 else logits.float(), dim=-1)

    first = logprobs(x_ctx[:, -1])  # [Q, V]: the next token after each context
    rows, cols, targets = [], [], []
    for row, choice in enumerate(flat):
        rows += [row] * (len(choice) - 1)
        cols += range(len(choice) - 1)
        targets += choice[1:]
    totals = first[owner_t, torch.tensor([c[0] for c in flat], device=device)].double()
    if rows:
        rest = logprobs(x_tail[torch.tensor(rows, device=device), torch.tensor(cols, device=device)])
        gathered = rest.gather(1, torch.tensor(targets, device=device)[:, None]).squeeze(1).double()
        totals = totals.index_add(0, torch.tensor(rows, device=device), gathered)
    totals = totals.cpu().numpy()
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
    order = sorted(range(len(prepared)), key=lambda i: -(len(prepared[i][0]) + max(map(len, prepared[i][1]))))
    results: list[np.ndarray | None] = [None] * len(prepared)
    batches, current, count = [], [], 0
    for index in order:
        current.append(index)
        count += len(prepared[index][1])
        if count >= batch_size:
            batches.append(current)
            current, count = [], 0
    if current:
        batches.append(current)
    from ladder.tasks.scoring import with_progress

    for batch in with_progress(batches, progress):
        scored = _batch_logprobs(model, [prepared[i][0] for i in batch], [prepared[i][1] for i in batch], device)
        for index, values in zip(batch, scored):
            results[index] = values
    return results  # type: ignore[return-value]
