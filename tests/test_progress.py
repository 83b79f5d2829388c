"""ladder.progress: steady log lines where output is not a terminal; ladder.hardware.safe_threads."""

from __future__ import annotations

import logging
import time

from ladder.hardware import safe_threads
from ladder.progress import LogProgress, format_duration


def test_log_lines_come_at_the_interval_and_at_the_end(caplog):
    caplog.set_level(logging.INFO, logger="ladder.progress")
    bar = LogProgress(None, total=10, desc="train x", unit="step", interval=0.05)
    bar.update(1)  # within the interval: nothing yet
    time.sleep(0.06)
    bar.set_postfix(loss="3.1416")
    bar.update(4)
    bar.update(5)
    bar.close()
    lines = caplog.messages
    assert len(lines) == 2
    assert (
        lines[0].startswith("train x: 5/10 steps (50.0%), ") and "ETA" in lines[0] and lines[0].endswith("loss=3.1416")
    )
    assert lines[1].startswith("train x: 10/10 steps (100.0%)")


def test_quick_work_prints_nothing_and_disabled_prints_nothing(caplog):
    caplog.set_level(logging.INFO, logger="ladder.progress")
    assert list(LogProgress(range(3), total=3, desc="eval", unit="batch", interval=60)) == [0, 1, 2]
    assert list(LogProgress(range(3), total=3, desc="eval", unit="batch", interval=0, enabled=False)) == [0, 1, 2]
    assert caplog.messages == []


def test_durations():
    assert [format_duration(s) for s in (5, 125, 7300, 200000)] == ["5s", "2m05s", "2h01m", "2d07h"]


def test_threads_follow_the_free_cores():
    assert safe_threads(2, load=0.1, cores=2) == (2, None)
    threads, why = safe_threads(2, load=3.0, cores=2)
    assert threads == 1 and why == "load 3.0 on 2 cores"
    assert safe_threads(8, load=5.2, cores=8) == (3, "load 5.2 on 8 cores")
    assert 1 <= safe_threads(64)[0] <= 64  # this machine, now
