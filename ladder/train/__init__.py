"""Training one rung: the loop, optimizer and schedule, checkpoints, distributed set-up,
throughput/MFU metrics, stability monitor and in-loop evaluation (see docs/train.md).

`run_training(cfg) -> RunOutcome` is the entry point of `ladder train` and of the sweep.
"""

from ladder.train.loop import RunOutcome, run_training

__all__ = ["RunOutcome", "run_training"]
