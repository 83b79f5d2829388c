"""Progress of long work: a tqdm bar on a terminal, else a log line at a steady interval.

Training, evaluation, fitting and backtests all report through `progress(...)`, so that a command
whose output goes to a file (`nohup ladder sweep ... > sweep.log 2>&1`, a SLURM log) still shows
that it is alive, how far it is and when it will end:

    train 190M-1xC: 1200/14305 steps (8.4%), 2.1 steps/s, ETA 1h44m, loss=3.1416

Lines go to the `ladder.progress` logger where logging is set up (the Hydra apps: the terminal or
file and the job's log), else to stderr: one every `LADDER_PROGRESS_SECONDS` seconds (default 30)
and, if any was written, one at the end (work done within the interval prints nothing).
`enabled=False` shows nothing at all.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import Iterable, Iterator
from typing import Any

log = logging.getLogger("ladder.progress")
DEFAULT_INTERVAL_S = 30.0


def interval_seconds() -> float:
    """Seconds between progress lines when not on a terminal ($LADDER_PROGRESS_SECONDS, default 30)."""
    try:
        return max(0.0, float(os.environ.get("LADDER_PROGRESS_SECONDS", DEFAULT_INTERVAL_S)))
    except ValueError:
        return DEFAULT_INTERVAL_S


def progress(
    iterable: Iterable[Any] | None = None,
    *,
    total: int | None = None,
    desc: str,
    unit: str = "it",
    initial: int = 0,
    enabled: bool = True,
    leave: bool = True,
) -> Any:
    """A progress reporter with tqdm's interface (iterate, `update`, `set_postfix`, `close`)."""
    if total is None and iterable is not None and hasattr(iterable, "__len__"):
        total = len(iterable)  # type: ignore[arg-type]
    if enabled and sys.stderr.isatty():
        from tqdm import tqdm

        return tqdm(iterable, total=total, initial=initial, desc=desc, unit=unit, leave=leave, dynamic_ncols=True)
    return LogProgress(iterable, total=total, desc=desc, unit=unit, initial=initial, enabled=enabled)


class LogProgress:
    """tqdm's interface, reporting by log lines at a steady interval (for logs and pipes)."""

    def __init__(
        self,
        iterable: Iterable[Any] | None,
        *,
        total: int | None,
        desc: str,
        unit: str,
        initial: int = 0,
        enabled: bool = True,
        interval: float | None = None,
    ):
        self.iterable, self.total, self.desc, self.unit = iterable, total, desc, unit
        self.n = self.start_n = initial
        self.enabled = enabled
        self.interval = interval_seconds() if interval is None else interval
        self.postfix: dict[str, Any] = {}
        self.started = self.last_line = time.monotonic()
        self.closed = False
        self.reported_n: int | None = None

    def __iter__(self) -> Iterator[Any]:
        assert self.iterable is not None
        try:
            for item in self.iterable:
                yield item
                self.update(1)
        finally:
            self.close()

    def __enter__(self) -> LogProgress:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def update(self, n: int = 1) -> None:
        self.n += n
        if self.enabled and time.monotonic() - self.last_line >= self.interval:
            self._emit()

    def set_postfix(self, refresh: bool = True, **values: Any) -> None:
        self.postfix = values

    def close(self) -> None:
        if not self.closed and self.enabled and self.reported_n is not None and self.reported_n != self.n:
            self._emit()
        self.closed = True

    def line(self) -> str:
        elapsed = time.monotonic() - self.started
        done = self.n - self.start_n
        rate = done / elapsed if elapsed > 0 and done > 0 else None
        parts = [
            f"{self.desc}: {self.n}/{self.total} {self.unit}s" if self.total else f"{self.desc}: {self.n} {self.unit}s"
        ]
        if self.total:
            parts[0] += f" ({100 * self.n / self.total:.1f}%)"
        if rate is not None:
            parts.append(f"{rate:.3g} {self.unit}s/s")
            if self.total and self.n < self.total:
                parts.append(f"ETA {format_duration((self.total - self.n) / rate)}")
        parts += [f"{key}={value}" for key, value in self.postfix.items()]
        return ", ".join(parts)

    def _emit(self) -> None:
        self.last_line, self.reported_n = time.monotonic(), self.n
        text = self.line()
        if logging.getLogger().handlers or log.handlers:
            log.info(text)
        else:
            print(text, file=sys.stderr, flush=True)


def format_duration(seconds: float) -> str:
    """45s, 12m05s, 3h20m, 2d04h."""
    seconds = max(0, int(seconds))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    if seconds < 86400:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    return f"{seconds // 86400}d{seconds % 86400 // 3600:02d}h"
