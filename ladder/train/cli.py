"""`ladder train`: one rung as a Hydra app (`ladder train model=tiny multiplier=2 run_dir=...`);
`ladder export`: a sharded checkpoint's model as one file."""

from __future__ import annotations

import argparse
from pathlib import Path

from ladder.hydra_app import run_app
from ladder.ranks import is_rank_zero


def main(argv: list[str]) -> int:
    from ladder.train.loop import check_run, run_training

    outcome = run_app("train", run_training, argv, validate=check_run)
    if outcome is not None and is_rank_zero():  # one summary line, not one per process
        print(f"{outcome.status}: {outcome.run_dir} at step {outcome.step} ({outcome.tokens:,} tokens)")
    return 0


def export_main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="ladder export",
        description="Write the model of a checkpoint (a run directory's newest, or a checkpoint directory) as one "
        "file that `ladder eval` and `ladder.train.checkpoint.load_model` read without torch.distributed.",
    )
    parser.add_argument("checkpoint", help="run directory, its checkpoint/ folder, or a step-<k> checkpoint")
    parser.add_argument("-o", "--out", type=Path, help="output file (default: <checkpoint folder>/model.pt)")
    args = parser.parse_args(argv)
    from ladder.train.checkpoint import export_checkpoint

    print(f"exported {export_checkpoint(args.checkpoint, args.out)}")
    return 0
