"""Which process of a launch this is, from the environment torchrun (or submitit's export) sets.

Read without torch, so that the `ladder` command can decide who prints before anything heavy is
imported: under torchrun every rank runs the same command, and rank 0 speaks for them.
"""

from __future__ import annotations

import os


def launch_rank() -> int:
    """This process's global rank (RANK), 0 when not launched as one of several."""
    return int(os.environ.get("RANK", "0"))


def is_rank_zero() -> bool:
    return launch_rank() == 0
