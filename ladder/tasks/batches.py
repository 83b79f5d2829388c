"""Batches of scoring work: longest first, so that padding stays small, with optional progress (ladder.progress)."""

from __future__ import annotations

from typing import Any, Iterable, Sequence


def longest_first_batches(lengths: Sequence[int], budget: int, sizes: Sequence[int] | None = None) -> list[list[int]]:
    """Indices of the items sorted by length, longest first (ties in input order), cut into
    consecutive batches that each close once they hold `budget` (the sum of the items' `sizes`,
    1 each by default)."""
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    batches: list[list[int]] = []
    current: list[int] = []
    count = 0
    for index in order:
        current.append(index)
        count += 1 if sizes is None else sizes[index]
        if count >= budget:
            batches.append(current)
            current, count = [], 0
    if current:
        batches.append(current)
    return batches


def with_progress(batches: Sequence[Any], enabled: bool) -> Iterable[Any]:
    """`batches`, with progress reported when asked (ladder.progress: a bar on a terminal, else log lines)."""
    if not enabled:
        return batches
    from ladder.progress import progress

    return progress(batches, desc="eval", unit="batch", leave=False)
