"""`ladder train`: one rung as a Hydra app (`ladder train model=tiny multiplier=2 run_dir=...`);
`ladder export`: a sharded checkpoint's model as one file.

`ladder train` exits 0 when the run trained to its budget or to `train.max_steps`, 2 for a refused
config, 128 + the signal's number when SIGINT (130), SIGTERM (143) or SIGUSR1 stopped it
(checkpointed)."""

from __future__ import annotations

import argparse
import signal
import sys
from pathlib import Path

from ladder.hydra_app import run_app
from ladder.ranks import is_rank_zero


def main(argv: list[str]) -> int:
    from ladder.train.loop import check_run, run_training

    outcome = run_app("train", run_training, argv, validate=check_run)
    if outcome is None:
        return 0
    if is_rank_zero():  # one summary line, not one per process
        print(f"{outcome.status}: {outcome.run_dir} at step {outcome.step} ({outcome.tokens:,} tokens)")
    if outcome.signal is not None:
        # A script tells an interrupted run from a finished one by the exit code, as for any command.
        if is_rank_zero():
            print(
                f"ladder train: stopped by {signal.Signals(outcome.signal).name} after checkpointing; "
                "the same command resumes",
                file=sys.stderr,
            )
        return 128 + outcome.signal
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
