"""`ladder train`: one rung as a Hydra app (`ladder train model=tiny multiplier=2 run_dir=...`)."""

from __future__ import annotations

from ladder.hydra_app import run_app


def main(argv: list[str]) -> int:
    from ladder.train.loop import rung_for, run_training

    outcome = run_app("train", run_training, argv, validate=rung_for)
    if outcome is not None:
        print(f"{outcome.status}: {outcome.run_dir} at step {outcome.step} ({outcome.tokens:,} tokens)")
    return 0
