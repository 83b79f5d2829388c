"""`ladder fit`, `ladder predict` and `ladder backtest`: argument parsing and printing only.

Each command fits with `ladder.fit` and hands the result to the report layer, which prints it and
writes its files. Imports are made inside each command, so that `predict` and `backtest` never
import matplotlib.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
from pathlib import Path

from ladder.atomic import check_writable_destination
from ladder.errors import ArgumentParser, LadderError


def _names(text: str) -> list[str]:
    names = [part.strip() for part in text.split(",") if part.strip()]
    if not names:
        raise argparse.ArgumentTypeError("expected a comma-separated list")
    return names


def _numbers(text: str) -> list[float]:
    try:
        return [float(part.rstrip("xC")) for part in _names(text)]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected numbers separated by commas, got {text!r}") from None


def _add_selection(parser: argparse.ArgumentParser, methods: tuple[str, ...] | None = None) -> None:
    from ladder.fit.calibration import DEFAULT_KAPPA
    from ladder.fit.methods import DEFAULT_METHOD, METHODS

    group = parser.add_argument_group("selection and fitting")
    group.add_argument(
        "--method",
        choices=methods or METHODS,
        default=DEFAULT_METHOD,
        help=f"step-1 method (default {DEFAULT_METHOD}; paper: the paper's fit, for reproduction)",
    )
    group.add_argument(
        "--kappa",
        type=float,
        default=DEFAULT_KAPPA,
        help=f"accuracy points of error per unit of extrapolation for the kappa intervals (default "
        f"{DEFAULT_KAPPA:g}, measured by `ladder backtest` on the paper's ladder)",
    )
    group.add_argument(
        "--early-target",
        action="store_true",
        help="also predict each target shifted by the offset of its own checkpoints with D <= 10%% "
        "of its budget (extra columns, beside the plain prediction)",
    )
    group.add_argument("--sizes", type=_names, help="ladder sizes to use, e.g. 190M,370M,760M,1B (default: all)")
    group.add_argument("--multipliers", type=_numbers, help="token multipliers to use, e.g. 1,2,5,10 (default: all)")
    group.add_argument("--tasks", type=_names, help="tasks to fit (default: every task in the table)")
    group.add_argument("--reruns", action="store_true", help="also use runs marked as reruns")
    group.add_argument(
        "--chance",
        type=float,
        help="chance accuracy of tasks that have no `chance` column and are not the paper's (default 0.25)",
    )
    group.add_argument("--bootstrap", type=int, default=1000, help="bootstrap replicates for intervals (0: none)")
    group.add_argument("--level", type=float, default=0.9, help="interval coverage (default 0.9)")
    group.add_argument("--seed", type=int, default=0, help="bootstrap seed")
    group.add_argument("--last-n", type=int, default=5, help="checkpoints averaged per run for step 1 (default 5)")
    group.add_argument(
        "--skip", type=float, default=0.1, help="share of each run's first checkpoints left out of step 2"
    )
    group.add_argument("--window", type=int, default=5, help="step 2 trailing moving-average window (default 5)")
    group.add_argument("--delta", type=float, default=1e-3, help="step 1 Huber threshold on log residuals")
    group.add_argument(
        "--workers", type=int, help="processes sharing the bootstrap's refits (default: one per CPU core available)"
    )


def _options(args: argparse.Namespace):
    from ladder.fit.pipeline import FitOptions

    return FitOptions(
        sizes=args.sizes,
        multipliers=args.multipliers,
        tasks=args.tasks,
        include_reruns=args.reruns,
        chance=args.chance,
        last_n=args.last_n,
        skip_fraction=args.skip,
        window=args.window,
        delta=args.delta,
        bootstrap=args.bootstrap,
        level=args.level,
        seed=args.seed,
        method=args.method,
        kappa=args.kappa,
        early_target=args.early_target,
        **({} if args.workers is None else {"workers": args.workers}),
    )


def fit_main(argv: list[str]) -> int:
    parser = ArgumentParser(prog="ladder fit", description="Two-stage fit of a results table; predicts its targets.")
    parser.add_argument("table", help="results table (.csv or .parquet)")
    parser.add_argument(
        "--out", required=True, help="output folder: predictions.csv, params.csv, variance.csv, report.md, PNG plots"
    )
    parser.add_argument("--overwrite", action="store_true", help="replace results already in --out")
    parser.add_argument("--no-plots", action="store_true", help="skip the PNG plots")
    _add_selection(parser)
    args = parser.parse_args(argv)

    from ladder.fit.pipeline import fit_table
    from ladder.report.fit import check_out_dir, write_fit_report
    from ladder.report.tables import format_predictions
    from ladder.results import read_table

    check_out_dir(args.out, args.overwrite)  # fail before fitting, not after
    fit = fit_table(read_table(args.table), _options(args))
    written = write_fit_report(fit, args.out, overwrite=args.overwrite, plots=not args.no_plots)
    print(format_predictions(fit.predictions))
    for row in fit.params.itertuples():
        if row.flags:
            print(f"flag: {row.task}: {row.flags}")
    print(f"wrote {', '.join(path.name for path in written)} to {args.out}")
    return 0


def parse_target(text: str) -> tuple[str, float, float]:
    """NAME:N:D -> (name, N, D); N and D may use exponents or underscores (7B:6.89e9:3.9e12)."""
    parts = text.split(":")
    if len(parts) != 3 or not parts[0]:
        raise LadderError(f"--target {text!r}: expected NAME:N:D, e.g. 7B:6.89e9:3.95e12")
    try:
        n, d = (float(part.replace("_", "")) for part in parts[1:])
    except ValueError:
        raise LadderError(f"--target {text!r}: N and D must be numbers") from None
    if not (math.isfinite(n) and math.isfinite(d) and n > 0 and d > 0):
        raise LadderError(f"--target {text!r}: N and D must be finite and > 0")
    return parts[0], n, d


def _check_csv_out(out: str | None, overwrite: bool) -> None:
    """Before any fitting: refuse an --out that is not a writable .csv file path, or that exists
    without --overwrite. None (no --out) passes."""
    if out is None:
        return
    if out.endswith(("/", os.sep)) or Path(out).is_dir() or Path(out).suffix != ".csv":
        raise LadderError(f"--out {out!r}: give a .csv file to write the predictions to")
    if Path(out).exists() and not overwrite:
        raise LadderError(f"{out} exists; pass --overwrite to replace it")
    check_writable_destination(Path(out))


def _write_csv_out(frame, out: str | None) -> None:
    """Write the rows to --out (atomically) when one was given, and say so."""
    if out is not None:
        from ladder.results import write_csv_atomic

        write_csv_atomic(frame, out)
        print(f"wrote {out}")


def predict_main(argv: list[str]) -> int:
    parser = ArgumentParser(
        prog="ladder predict", description="Fit a results table and predict targets not trained yet."
    )
    parser.add_argument("table", help="results table (.csv or .parquet)")
    parser.add_argument(
        "--target",
        action="append",
        required=True,
        metavar="NAME:N:D",
        help="a model to predict (repeatable), e.g. 7B-4T:6887575552:3945065873408",
    )
    parser.add_argument("--out", help="also write the predictions to this CSV file")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --out file")
    _add_selection(parser)
    args = parser.parse_args(argv)
    targets = [parse_target(text) for text in args.target]

    import pandas as pd

    from ladder.fit.pipeline import fit_table
    from ladder.report.tables import format_predictions
    from ladder.results import read_table

    _check_csv_out(args.out, args.overwrite)
    table = read_table(args.table)
    fit = fit_table(table, _options(args))
    smallest = table.loc[table["run"].isin(fit.ladder_runs), "N"].min()
    for name, n, _ in targets:
        if n < smallest:
            print(
                f"ladder predict: warning: target {name} (N={n:.3g}) is smaller than the ladder's smallest run "
                f"(N={smallest:.3g}): its prediction extrapolates below the fitted data",
                file=sys.stderr,
            )
    predictions = pd.concat([fit.predict(n, d, name) for name, n, d in targets], ignore_index=True)
    print(format_predictions(predictions))
    _write_csv_out(predictions, args.out)
    return 0


def backtest_main(argv: list[str]) -> int:
    parser = ArgumentParser(
        prog="ladder backtest",
        description="Fit the smaller sizes of a ladder, predict its larger ones: how well the "
        "method extrapolates on this ladder and how often its intervals hold.",
    )
    parser.add_argument("table", help="results table (.csv or .parquet)")
    parser.add_argument(
        "--min-sizes",
        type=int,
        default=3,
        help="fewest sizes a backtest fit uses (default 3); every larger count is a cut",
    )
    parser.add_argument("--out", help="also write every prediction to this CSV file")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --out file")
    from ladder.fit.methods import METHODS

    _add_selection(parser, methods=(*METHODS, "all"))
    args = parser.parse_args(argv)

    from ladder.fit.backtest import backtest, compare_methods
    from ladder.report.backtest import format_backtest, format_comparison
    from ladder.results import read_table

    _check_csv_out(args.out, args.overwrite)
    table = read_table(args.table)
    if args.method == "all":
        args.method = METHODS[0]
        options = _options(args)
        rows = compare_methods(table, options, min_sizes=args.min_sizes)
        print(format_comparison(rows, options.level))
    else:
        options = _options(args)
        rows = backtest(table, options, min_sizes=args.min_sizes)
        print(format_backtest(rows, options.level))
    _write_csv_out(rows, args.out)
    return 0
