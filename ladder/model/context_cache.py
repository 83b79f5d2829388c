"""The cached context: keys and values of a batch of contexts, kept for the continuations that follow them.

A multiple-choice question has one context and several continuations (its choices). Running the
context once and letting every continuation attend to its cached keys and values gives the same
logits as running each context + continuation pair in full, for a fraction of the work when
contexts are long and continuations short. `Decoder.forward_context` fills a `ContextCache`,
`Decoder.forward_continuation` reads it; this module holds the cache and the two layouts.

Contexts are left-padded to a common width, so every context ends in the last column (whose
logits predict the first token after it). A context of n tokens has positions 0..n-1 (RoPE
depends only on position differences, so padding on the left does not shift anything); its
padding columns are hidden as keys, and a padding query attends to itself only, so that no row
of the mask is empty (an empty row would make softmax NaN).

Continuations are right-padded. Row j continues context `rows[j]`: its tokens take the positions
after that context's last, each attends to the context's real tokens and causally to the
continuation's own; a padding position repeats the last real one (it is never read, it only needs
a row of the RoPE table), and positions are clamped to the table.

A forward given an empty cache stores every layer's keys and values; a forward given a filled
cache attends to them and leaves the cache as it was, so one context batch serves any number of
continuation batches.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import torch


@dataclass
class CachedLayer:
    """One layer's keys and values of the cached contexts, [contexts, heads, T, head_dim]."""

    keys: torch.Tensor | None = None
    values: torch.Tensor | None = None
    rows: torch.Tensor | None = None
    """Which context each row of a continuation batch continues (None while filling)."""

    def attend(self, keys: torch.Tensor, values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The keys and values that a forward's queries attend to, given the forward's own: those
        alone, which are kept, when the cache is empty; else the cached ones of each row's
        context followed by them."""
        if self.keys is None:
            self.keys, self.values = keys, values
            return keys, values
        return torch.cat([self.keys[self.rows], keys], dim=2), torch.cat([self.values[self.rows], values], dim=2)


@dataclass
class ContextCache:
    """Every layer's keys and values of a batch of left-padded contexts (see the module docstring)."""

    lengths: torch.Tensor
    """Real tokens of each context [contexts]."""
    real: torch.Tensor
    """Which columns of each context are tokens, not padding [contexts, width]."""
    layers: list[CachedLayer] = field(default_factory=list)

    @classmethod
    def empty(cls, lengths: torch.Tensor, width: int, n_layers: int) -> ContextCache:
        """A cache for contexts of `lengths` tokens left-padded to `width`, to be filled by a forward."""
        real = torch.arange(width, device=lengths.device) >= (width - lengths)[:, None]
        return cls(lengths, real, [CachedLayer() for _ in range(n_layers)])

    def context_layout(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The contexts' positions [contexts, width] and attention mask [contexts, 1, width, width]
        (True where a query may attend)."""
        width = self.real.shape[1]
        device = self.real.device
        positions = (torch.arange(width, device=device) - (width - self.lengths)[:, None]).clamp(min=0)
        causal = torch.ones(width, width, dtype=torch.bool, device=device).tril()
        mask = (causal & self.real[:, None, :]) | torch.eye(width, dtype=torch.bool, device=device)
        return positions, mask[:, None]

    def continuation_layout(
        self, rows: torch.Tensor, lengths: torch.Tensor, width: int, max_position: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Positions [N, width] and attention mask [N, 1, width, contexts' width + width] of
        continuations of `lengths` tokens right-padded to `width`, row j following context rows[j]."""
        columns = torch.arange(width, device=rows.device)
        last = (lengths - 1).clamp(min=0)[:, None]  # the last real column (0 for an empty continuation)
        positions = (self.lengths[rows][:, None] + torch.minimum(columns, last)).clamp(max=max_position)
        causal = torch.ones(width, width, dtype=torch.bool, device=rows.device).tril()
        mask = torch.cat([self.real[rows][:, None, :].expand(-1, width, -1), causal.expand(len(rows), -1, -1)], dim=2)
        return positions, mask[:, None]

    def for_rows(self, rows: torch.Tensor) -> ContextCache:
        """The same cache, read by a continuation batch whose row j continues context rows[j]."""
        return replace(self, layers=[CachedLayer(layer.keys, layer.values, rows) for layer in self.layers])
