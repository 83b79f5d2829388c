"""The `ladder` command: parses the sub-command, dispatches, prints user errors. Holds no logic.

Each sub-command lives in its own module as `main(argv) -> int`, imported only when called, so
that `ladder fit` never imports torch.
"""

from __future__ import annotations

import importlib
import sys

from ladder.errors import LadderError
from ladder.ranks import is_rank_zero

# name -> (module, function, one-line help)
COMMANDS: dict[str, tuple[str, str, str]] = {
    "plan": ("ladder.sweep", "plan_main", "show every rung of a grid: N, D, batch, LR, steps, FLOPs, cost"),
    "sweep": ("ladder.sweep", "sweep_main", "train every rung of a grid (Hydra multirun; local or SLURM)"),
    "status": ("ladder.sweep", "status_main", "progress of each rung of a sweep"),
    "collect": ("ladder.runs.collect", "collect_main", "run directories or a wandb project -> one results table"),
    "train": ("ladder.train.cli", "main", "train one rung (Hydra app)"),
    "data": ("ladder.data.cli", "main", "corpus preparation: `ladder data prepare data=<name>`"),
    "export": ("ladder.train.cli", "export_main", "a sharded checkpoint's model as one file (for `ladder eval`)"),
    "eval": ("ladder.tasks.cli", "main", "score a checkpoint on tasks, writing results-table rows"),
    "import-olmo": ("ladder.runs.olmo_import", "import_olmo_main", "OLMo ladder CSV exports -> results table"),
    "fit": ("ladder.report.cli", "fit_main", "two-stage fit on a results table; predict its targets"),
    "predict": ("ladder.report.cli", "predict_main", "predict targets not trained yet (NAME:N:D)"),
    "backtest": (
        "ladder.report.cli",
        "backtest_main",
        "fit the smaller sizes, predict the larger: errors, interval coverage",
    ),
    "design": (
        "ladder.report.decide",
        "design_main",
        "choose the ladder grid worth its compute (simulated ladders, Pareto table)",
    ),
    "compare": ("ladder.report.decide", "compare_main", "does recipe A beat B at the target, and by how much compute?"),
    "demo": ("ladder.demo", "main", "the embedded CPU ladder, end to end"),
}


def usage() -> str:
    width = max(map(len, COMMANDS))
    lines = ["usage: ladder COMMAND [ARGS...]", "", "commands:"]
    lines += [f"  {name:<{width}}  {help_}" for name, (_, _, help_) in COMMANDS.items()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(usage())
        return 0
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        print(f"ladder: error: unknown command {name!r}\n\n{usage()}", file=sys.stderr)
        return 2
    module, function, _ = COMMANDS[name]
    try:
        command = getattr(importlib.import_module(module), function)
        return int(command(rest) or 0)
    except LadderError as error:
        if is_rank_zero():  # under torchrun every rank meets the same mistake: one line, not one per rank
            print(f"ladder {name}: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as interrupt:  # Ctrl-C, or SIGTERM during a write (ladder.atomic)
        if is_rank_zero():
            print(f"ladder {name}: interrupted", file=sys.stderr)
        return 128 + getattr(interrupt, "signum", 2)


if __name__ == "__main__":
    raise SystemExit(main())
