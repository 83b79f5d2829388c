"""Sweeps of a grid: plan its rungs, launch them (Hydra multirun), follow their status.

`ladder.cli` dispatches `plan`, `sweep` and `status` here. Importing this package does not
import torch; only a sweep job does, when it trains.
"""

from ladder.sweep.launch import sweep_main
from ladder.sweep.plan import plan_main
from ladder.sweep.status import status_main

__all__ = ["plan_main", "sweep_main", "status_main"]
