"""`ladder train`: one rung as a Hydra app (`ladder train model=tiny multiplier=2 run_dir=...`)."""

from __future__ import annotations

from ladder.hydra_app import run_app
from ladder.ranks import is_rank_zero


def main(argv: list[str]) -> int:
    from ladder.train.loop import check_run, run_training

    outcome = run_app("train", run_training, argv, validate=check_run)
    if outcome is not None and is_rank_zero():  # one summary line, not one per process
        print(f"{outcome.status}: {outcome.run_dir} at step {outcome.step} ({outcome.tokens:,} tokens)")
    return 0
