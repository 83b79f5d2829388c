"""From a grid (sizes x token multiples) to rungs: the paper's batch, LR, warmup and budget rules.

A Rung is plain data: everything `ladder plan` prints and `ladder train` needs to size a run.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from ladder.errors import LadderError
from ladder.sizes import ModelShape, flops_per_token, get_shape, paper_params

CHINCHILLA_TOKENS_PER_PARAM = 20  # D = multiplier x 20 x N
REFERENCE_N = 108e6  # the N at which OLMo's batch and LR rules were tuned
PAPER_SEQ_LEN = 4096


def format_multiplier(multiplier: float) -> str:
    """2.0 -> '2', 0.5 -> '0.5'."""
    return f"{multiplier:g}"


def rung_name(size: str, multiplier: float | None, tokens: int | None = None) -> str:
    """<size>-<x>xC for a Chinchilla multiple, <size>-<tokens>tok for a token count."""
    if tokens is not None:
        return f"{size}-{int(tokens)}tok"
    return f"{size}-{format_multiplier(multiplier)}xC"


def chinchilla_tokens(n_params: int, multiplier: float) -> int:
    """D = multiplier x 20 x N."""
    if not 0 < multiplier < math.inf:
        raise LadderError(f"token multiplier must be > 0 and finite, got {multiplier}")
    return int(round(multiplier * CHINCHILLA_TOKENS_PER_PARAM * n_params))


def batch_sequences(n_params: int, seq_len: int) -> int:
    """Global batch in sequences.

    Paper (OLMo ladder): 160 x (N / 108e6)^(2/3) / 2 sequences of 4096 tokens, rounded to a
    multiple of 64. Shorter-context (CPU) presets keep the same batch in *tokens*, expressed at
    their sequence length and rounded to a multiple of 8 sequences (at least 8): at N ~ 1e5 the
    paper's rounding to 64 would give zero.
    """
    paper_sequences = 160 * (n_params / REFERENCE_N) ** (2 / 3) / 2
    if seq_len >= PAPER_SEQ_LEN:
        return max(64, 64 * round(paper_sequences / 64))
    sequences = paper_sequences * PAPER_SEQ_LEN / seq_len
    return max(8, 8 * round(sequences / 8))


def peak_lr(n_params: int, rule: str = "olmo") -> float:
    """Peak learning rate.

    olmo:   0.0047 x (N / 108e6)^(-1/3) / 4   (the paper's ladder)
    kaplan: 0.003239 - 0.0001395 ln N          (Kaplan et al. 2020, eq. D.1)
    """
    if rule == "olmo":
        return 0.0047 * (n_params / REFERENCE_N) ** (-1 / 3) / 4
    if rule == "kaplan":
        lr = 0.003239 - 0.0001395 * math.log(n_params)
        if lr <= 0:  # the fit's line crosses zero near N = 1.2e10
            raise LadderError(
                f"lr_rule=kaplan gives a peak LR of {lr:.3g} <= 0 at N={n_params:.3g} (the rule holds below ~1.2e10 "
                "parameters); use optim.lr_rule=olmo or set optim.lr"
            )
        return lr
    raise LadderError(f"unknown LR rule {rule!r}; choose 'olmo' or 'kaplan'")


@dataclass(frozen=True)
class Rung:
    """One run of the ladder (or a target), fully sized."""

    name: str
    size: str
    multiplier: float | None  # None for targets given by tokens
    role: str  # "ladder" or "target"
    shape: ModelShape
    n_params: int  # paper N: all but the input embedding
    tokens: int  # D actually trained: steps x batch_tokens
    batch_sequences: int
    seq_len: int
    steps: int
    peak_lr: float
    warmup_steps: int

    @property
    def batch_tokens(self) -> int:
        return self.batch_sequences * self.seq_len

    @property
    def flops(self) -> float:
        """Training compute, 6 N D (the attention term is in `flops_per_token`)."""
        return flops_per_token(self.shape)[0] * self.tokens


def make_rung(
    size: str,
    multiplier: float | None = None,
    *,
    tokens: int | None = None,
    name: str | None = None,
    role: str = "ladder",
    vocab_size: int | None = None,
    seq_len: int | None = None,
    batch: int | None = None,
    lr: float | None = None,
    lr_rule: str = "olmo",
    warmup_tokens: int | None = None,
) -> Rung:
    """Size one rung. Give `multiplier` (D = x 20 N) or `tokens`; overrides win over the rules."""
    shape = get_shape(size, vocab_size=vocab_size, seq_len=seq_len)
    n_params = paper_params(shape)
    if (multiplier is None) == (tokens is None):
        raise LadderError(f"rung {name or size}: give exactly one of a token multiplier or a token count")
    budget = chinchilla_tokens(n_params, multiplier) if multiplier is not None else int(tokens)
    if budget <= 0:
        raise LadderError(f"rung {name or size}: token budget must be > 0, got {budget}")
    sequences = batch_sequences(n_params, shape.seq_len) if batch is None else int(batch)
    if sequences <= 0:
        raise LadderError(f"rung {name or size}: batch must be > 0 sequences, got {sequences}")
    batch_tokens = sequences * shape.seq_len
    steps = max(1, math.ceil(budget / batch_tokens))
    warmup = n_params if warmup_tokens is None else warmup_tokens  # paper: warm up over N tokens
    return Rung(
        name=name or rung_name(size, multiplier, None if multiplier is not None else budget),
        size=size,
        multiplier=multiplier,
        role=role,
        shape=shape,
        n_params=n_params,
        tokens=steps * batch_tokens,
        batch_sequences=sequences,
        seq_len=shape.seq_len,
        steps=steps,
        peak_lr=peak_lr(n_params, lr_rule) if lr is None else float(lr),
        warmup_steps=min(steps, max(1, round(warmup / batch_tokens))),
    )
