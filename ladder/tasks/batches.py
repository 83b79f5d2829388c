"""Batches of scoring work: longest first, so that padding stays small, with optional progress
(ladder.progress), and a stop request (`stop_when`) checked before each batch."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextvars import ContextVar
from typing import Any


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


class ScoringStopped(Exception):
    """The stop request of `stop_when` was seen between two batches."""


_stop_requested: ContextVar[Callable[[], bool] | None] = ContextVar("stop_requested", default=None)


@contextlib.contextmanager
def stop_when(requested: Callable[[], bool]) -> Iterator[None]:
    """Within the block, scoring checks `requested()` before each batch and raises
    ScoringStopped when it is true (the trainer's stop flag: a SIGTERM during a long evaluation)."""
    token = _stop_requested.set(requested)
    try:
        yield
    finally:
        _stop_requested.reset(token)


def with_progress(batches: Sequence[Any], enabled: bool) -> Iterable[Any]:
    """`batches`, with progress reported when asked (ladder.progress: a bar on a terminal, else log
    lines); each batch first checks the stop request of `stop_when`, if any."""
    requested = _stop_requested.get()
    shown: Iterable[Any] = batches
    if enabled:
        from ladder.progress import progress

        shown = progress(batches, desc="eval", unit="batch", leave=False)
    if requested is None:
        return shown
    return _stopping(shown, requested)


def _stopping(batches: Iterable[Any], requested: Callable[[], bool]) -> Iterator[Any]:
    for batch in batches:
        if requested():
            raise ScoringStopped
        yield batch
