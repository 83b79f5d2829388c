"""Small causal models with known output distributions, for checking the metrics exactly."""

from __future__ import annotations

import torch
from torch import nn


class FixedDistributionModel(nn.Module):
    """Predicts the same next-token distribution at every position, whatever the input."""

    def __init__(self, probabilities: torch.Tensor, seq_len: int = 64):
        super().__init__()
        self.register_buffer("logits", probabilities.log())
        self.seq_len = seq_len
        self.calls = 0

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        return self.logits.expand(idx.shape[0], idx.shape[1], -1).clone()


class UniformModel(FixedDistributionModel):
    """Logits all zero: every token has probability 1 / vocab_size."""

    def __init__(self, vocab_size: int, seq_len: int = 64):
        super().__init__(torch.full((vocab_size,), 1.0 / vocab_size, dtype=torch.float64), seq_len)


class OracleModel(nn.Module):
    """Knows a set of token sequences: after any prefix of one, it puts its weight on the next token."""

    def __init__(self, sequences: list[list[int]], vocab_size: int, seq_len: int):
        super().__init__()
        self.vocab_size = vocab_size
        self.seq_len = seq_len
        self.next_token: dict[tuple[int, ...], int] = {}
        for sequence in sequences:
            for end in range(1, len(sequence)):
                self.next_token[tuple(sequence[:end])] = sequence[end]

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        logits = torch.zeros(idx.shape[0], idx.shape[1], self.vocab_size)
        for row in range(idx.shape[0]):
            tokens = idx[row].tolist()
            for position in range(len(tokens)):
                token = self.next_token.get(tuple(tokens[: position + 1]))
                if token is not None:
                    logits[row, position, token] = 20.0
        return logits
