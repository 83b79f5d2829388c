"""`ladder design` and `ladder compare`: argument parsing, printed tables, files and plots.

The logic lives in `ladder.fit.design` and `ladder.fit.compare`; this module reads the inputs,
prints, and writes outputs only once everything has been computed (`ladder.report.folder`, as
`ladder fit` does). matplotlib is imported inside the plotting functions.
"""

from __future__ import annotations

import math
import re
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pandas as pd

from ladder.errors import ArgumentParser, LadderError
from ladder.fit.methods import DEFAULT_METHOD, METHODS
from ladder.report.cli import _add_selection, _numbers, _options, parse_target

DESIGN_FILES = ("design.csv", "design_tasks.csv", "coverage.csv", "design.png")
COMPARE_FILES = ("compare.csv", "decisions.csv", "compare.png")
GRID_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]*$")


# ---------------------------------------------------------------- shared


def _check_out_dir(out: str, overwrite: bool, names: tuple[str, ...]) -> Path:
    """Before any work: refuse an --out holding results (unless `overwrite`) or that cannot be written."""
    from ladder.atomic import check_writable_destination
    from ladder.report.folder import check_out_dir

    out_dir = check_out_dir(out, names, overwrite)
    check_writable_destination(out_dir / names[0])
    return out_dir


def _write_outputs(out_dir: Path, writers: dict[str, Callable[[Path], None]], replaces: tuple[str, ...]) -> list[Path]:
    """Every writer's file, written all at once into `out_dir` (`ladder.report.folder`)."""
    from ladder.report.folder import write_folder

    def write(folder: Path) -> None:
        for name, writer in writers.items():
            writer(folder / name)

    return write_folder(out_dir, write, replaces=replaces)


def _targets(texts: list[str]):
    from ladder.fit.design import Target

    targets = [Target(*parse_target(text)) for text in texts]
    names = [target.name for target in targets]
    if len(set(names)) != len(names):
        raise LadderError("--target: two targets share a name")
    return targets


def _figure(width: float, height: float):
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), dpi=100, layout="constrained")


# ---------------------------------------------------------------- design


def _budget_flops(args, targets) -> float | None:
    given = [value is not None for value in (args.budget_flops, args.budget_gpu_hours, args.budget_share)]
    if sum(given) > 1:
        raise LadderError("give one budget: --budget-flops, --budget-gpu-hours or --budget-share")
    if args.budget_flops is not None:
        value, what = args.budget_flops, "--budget-flops"
        flops = value
    elif args.budget_gpu_hours is not None:
        from ladder.hardware import peak_flops

        value, what = args.budget_gpu_hours, "--budget-gpu-hours"
        peak = peak_flops(args.gpu)
        if peak is None:
            raise LadderError(f"--gpu {args.gpu!r}: no peak FLOP/s known for it")
        if not 0 < args.mfu <= 1:
            raise LadderError(f"--mfu must lie in (0, 1], got {args.mfu}")
        flops = value * 3600 * peak * args.mfu
    elif args.budget_share is not None:
        value, what = args.budget_share, "--budget-share"
        flops = value * sum(target.flops for target in targets)
    else:
        return None
    if not (math.isfinite(value) and value > 0):
        raise LadderError(f"{what} must be a finite number > 0, got {value}")
    return flops


def _yaml_path(name: str, overwrite: bool) -> Path:
    from ladder.hydra_app import CONF_DIR

    if not GRID_NAME.match(name):
        raise LadderError(f"--name {name!r}: letters, digits, '-' and '_' only (it names conf/ladder/<name>.yaml)")
    path = CONF_DIR / "ladder" / f"{name}.yaml"
    if path.exists() and not overwrite:
        raise LadderError(f"{path} exists; pass --overwrite to replace it")
    return path


def grid_yaml(name: str, grid, targets, gpu: str, mfu: float, note: str) -> str:
    """conf/ladder/<name>.yaml for `grid`: the form of conf/ladder/paper.yaml. Targets are written
    when a preset has their N (within 1%); the others are named in a comment."""
    from ladder.sizes import PRESETS, get_shape, paper_params

    lines = [
        f"# Chosen by `ladder design`: {note}",
        "defaults:",
        "  - grid_schema",
        "",
        f"name: {name}",
        f"sizes: [{', '.join(size.label for size in grid.sizes)}]",
        f"multipliers: [{', '.join(f'{m:g}' for m in grid.multipliers)}]",
    ]
    entries, skipped = [], []
    for target in targets:
        preset = next((p for p in PRESETS if abs(paper_params(get_shape(p)) / target.N - 1) < 0.01), None)
        if preset is None:
            skipped.append(target.name)
        else:
            entries.append(f"  - {{name: {target.name}, size: {preset}, tokens: {round(target.D)}}}")
    lines += ["targets:", *entries] if entries else ["targets: []"]
    if skipped:
        lines.append(f"# not written (no size preset has their N): {', '.join(skipped)}")
    lines += ["train_targets: false", f"gpu: {gpu}", f"mfu: {mfu:g}", ""]
    return "\n".join(lines)


def plot_design(result, path: Path) -> None:
    """Compute share vs expected error of every grid; the Pareto front joined, the chosen grid marked."""
    grids = result.grids
    figure = _figure(7.0, 4.5)
    axis = figure.add_subplot()
    inside = grids["within_budget"]
    axis.scatter(
        100 * grids.loc[inside, "share"],
        grids.loc[inside, "expected_abs_err"],
        s=14,
        color="tab:blue",
        alpha=0.6,
        label="candidate grid",
    )
    if (~inside).any():
        axis.scatter(
            100 * grids.loc[~inside, "share"],
            grids.loc[~inside, "expected_abs_err"],
            s=14,
            color="0.7",
            label="over budget",
        )
    front = grids[grids["pareto"]].sort_values("flops")
    axis.plot(100 * front["share"], front["expected_abs_err"], "-o", color="tab:orange", ms=4, label="Pareto front")
    chosen = grids[grids["chosen"]]
    for row in chosen.itertuples():
        axis.scatter(
            [100 * row.share],
            [row.expected_abs_err],
            s=120,
            facecolors="none",
            edgecolors="red",
            lw=2,
            label=f"chosen: {row.grid}",
        )
    axis.set_xscale("log")
    axis.set_xlabel("ladder compute, % of the targets' (6ND)")
    axis.set_ylabel("expected |error| at the target (points)")
    axis.set_title(f"ladder design: {len(grids)} grids, {result.options.sims} simulated ladders each")
    axis.legend(fontsize=8)
    figure.savefig(path)


def format_design(result, top: int = 12) -> str:
    grids = result.grids
    front = grids[grids["pareto"] & grids["within_budget"]].sort_values("flops")
    shown = front.assign(
        share=lambda f: f["share"].map(lambda v: f"{100 * v:.2f}%"),
        flops=lambda f: f["flops"].map("{:.3g}".format),
        expected_abs_err=lambda f: f["expected_abs_err"].map("{:.2f}".format),
        p90_abs_err=lambda f: f["p90_abs_err"].map("{:.2f}".format),
        width=lambda f: f["width"].map("{:.2f}".format),
        chosen=lambda f: f["chosen"].map({True: "<-", False: ""}),
    )[["sizes", "multipliers", "runs", "flops", "share", "expected_abs_err", "p90_abs_err", "width", "chosen"]]
    heading = (
        f"== Pareto front: compute vs expected |error| at the target(s), accuracy points, mean over tasks "
        f"({len(grids)} grids scored, {result.options.sims} simulated ladders each)"
    )
    lines = [heading, shown.head(top).to_string(index=False)]
    if result.chosen is None:
        lines.append("no grid fits the budget")
    else:
        lines.append(f"chosen: {result.chosen.label}")
    return "\n".join(lines)


def design_main(argv: list[str]) -> int:
    parser = ArgumentParser(
        prog="ladder design",
        description="Choose the ladder grid worth its compute: simulate ladders from a prior law and a "
        "noise model, fit each, score every candidate grid by its expected error at the target.",
    )
    prior = parser.add_argument_group("prior law and noise (one of)")
    prior.add_argument("--table", help="results table to fit for the prior law and measure the noise of")
    prior.add_argument("--params", help="params.csv of an earlier `ladder fit` (with --variance)")
    prior.add_argument("--variance", help="variance.csv of the same fit")
    prior.add_argument(
        "--prior-sizes",
        type=lambda t: [p.strip() for p in t.split(",") if p.strip()],
        help="with --table: the sizes fitted for the prior (default: all)",
    )
    prior.add_argument(
        "--tasks",
        type=lambda t: [p.strip() for p in t.split(",") if p.strip()],
        help="tasks to design for (default: all)",
    )
    parser.add_argument("--target", action="append", required=True, metavar="NAME:N:D", help="a model to predict")
    parser.add_argument("--sizes", required=True, help="candidate sizes: presets (190M,370M,...) or LABEL=N")
    parser.add_argument(
        "--multipliers", required=True, type=_numbers, help="candidate token multipliers, e.g. 0.5,1,2,5,10"
    )
    parser.add_argument("--min-sizes", type=int, default=3, help="fewest sizes in a grid (default 3)")
    parser.add_argument("--min-multipliers", type=int, default=2, help="fewest multipliers in a grid (default 2)")
    parser.add_argument(
        "--exhaustive",
        action="store_true",
        help="every subset of the sizes and of the multipliers (default: consecutive runs of each)",
    )
    budget = parser.add_argument_group("budget (at most one; none: the cheapest grid within --tolerance of the best)")
    budget.add_argument("--budget-flops", type=float, help="ladder compute (6ND summed)")
    budget.add_argument("--budget-gpu-hours", type=float, help="GPU-hours at --mfu on --gpu")
    budget.add_argument("--budget-share", type=float, help="share of the targets' compute, e.g. 0.02")
    budget.add_argument("--gpu", default="H100", help="GPU of the GPU-hours and of the written grid (default H100)")
    budget.add_argument("--mfu", type=float, default=0.4, help="model FLOPs utilisation (default 0.4)")
    budget.add_argument(
        "--tolerance",
        type=float,
        default=0.1,
        help="without a budget: error within this share of the best (default 0.1)",
    )
    sim = parser.add_argument_group("simulation")
    sim.add_argument(
        "--method",
        choices=METHODS,
        default=DEFAULT_METHOD,
        help=f"step-1 method of the prior law and of the simulated ladders' fits, as in `ladder fit` (default "
        f"{DEFAULT_METHOD})",
    )
    sim.add_argument("--sims", type=int, default=32, help="simulated ladders per grid (default 32)")
    sim.add_argument("--checkpoints", type=int, default=40, help="evaluations per simulated run (default 40)")
    sim.add_argument("--no-law-error", action="store_true", help="simulate checkpoint and seed noise only")
    sim.add_argument(
        "--coverage",
        type=int,
        default=0,
        help="also fit this many simulated tables of the chosen grid with the whole pipeline: how often "
        "its bootstrap intervals hold the truth (default 0: skip)",
    )
    sim.add_argument("--coverage-bootstrap", type=int, default=200, help="bootstrap replicates of those fits")
    sim.add_argument("--seed", type=int, default=0)
    sim.add_argument("--level", type=float, default=0.9)
    parser.add_argument("--out", required=True, help="folder: design.csv, design_tasks.csv, design.png")
    parser.add_argument("--name", help="also write conf/ladder/<name>.yaml for the chosen grid")
    parser.add_argument("--overwrite", action="store_true", help="replace results in --out and an existing grid file")
    parser.add_argument("--no-plots", action="store_true")
    args = parser.parse_args(argv)

    from ladder.fit import design as design_module

    targets = _targets(args.target)
    sizes = design_module.sizes_of([p.strip() for p in args.sizes.split(",") if p.strip()])
    options = design_module.DesignOptions(
        method=args.method,
        sims=args.sims,
        checkpoints=args.checkpoints,
        seed=args.seed,
        level=args.level,
        law_error=not args.no_law_error,
    )
    options.check()
    if args.coverage < 0 or args.coverage_bootstrap < 20:
        raise LadderError("--coverage must be >= 0 and --coverage-bootstrap >= 20")
    if not args.tolerance >= 0:
        raise LadderError(f"--tolerance must be >= 0, got {args.tolerance}")
    budget = _budget_flops(args, targets)
    if (args.table is None) == (args.params is None):
        raise LadderError("give the prior as --table TABLE, or as --params params.csv --variance variance.csv")
    if args.params is not None and args.variance is None:
        raise LadderError("--params needs --variance (the noise model)")
    yaml_path = None
    if args.name is not None:
        yaml_path = _yaml_path(args.name, args.overwrite)
        not_presets = [size.label for size in sizes if not size.preset]
        if not_presets:
            raise LadderError(f"--name writes a grid of size presets; {', '.join(not_presets)} is not one")
    out_dir = _check_out_dir(args.out, args.overwrite, DESIGN_FILES)
    candidates = design_module.candidate_grids(
        sizes,
        args.multipliers,
        min_sizes=args.min_sizes,
        min_multipliers=args.min_multipliers,
        exhaustive=args.exhaustive,
    )

    started = time.perf_counter()
    if args.table is not None:
        from ladder.results import read_table

        laws, noises = design_module.laws_and_noise_from_table(
            read_table(args.table), options.fit_options(sizes=args.prior_sizes, tasks=args.tasks)
        )
    else:
        params, variance = _read_csv(args.params), _read_csv(args.variance)
        if args.tasks is not None:
            unknown = [task for task in args.tasks if task not in set(params.get("task", []))]
            if unknown:
                raise LadderError(f"--tasks: {', '.join(unknown)} not in {args.params}")
            params = params[params["task"].isin(args.tasks)]
        laws = design_module.laws_from_params(params, args.params, options.method)
        noises = design_module.noise_from_variance(variance, params, options, args.variance)
    print(f"design: {len(candidates)} grids x {len(laws)} tasks x {options.sims} simulated ladders", file=sys.stderr)

    def progress(what: str) -> None:
        print(f"design: {what} ({time.perf_counter() - started:.0f} s)", file=sys.stderr, flush=True)

    result = design_module.design(
        laws,
        noises,
        candidates,
        targets,
        options=options,
        budget_flops=budget,
        tolerance=args.tolerance,
        progress=progress,
    )
    coverage = None
    if args.coverage and result.chosen is not None:
        coverage = design_module.interval_coverage(
            laws,
            noises,
            result.chosen,
            targets,
            options,
            sims=args.coverage,
            bootstrap=args.coverage_bootstrap,
            progress=lambda done: print(
                f"design: coverage, simulated table {done + 1}/{args.coverage} ({time.perf_counter() - started:.0f} s)",
                file=sys.stderr,
                flush=True,
            ),
        )
    writers: dict[str, Callable[[Path], None]] = {
        "design.csv": lambda path: result.grids.to_csv(path, index=False),
        "design_tasks.csv": lambda path: result.tasks.to_csv(path, index=False),
    }
    if coverage is not None:
        writers["coverage.csv"] = lambda path: coverage.to_csv(path, index=False)
    if not args.no_plots:
        writers["design.png"] = lambda path: plot_design(result, path)
    written = _write_outputs(out_dir, writers, DESIGN_FILES)
    print(format_design(result))
    if coverage is not None:
        print(
            f"bootstrap intervals of the chosen grid ({args.coverage} simulated tables): "
            f"{coverage['coverage'].mean():.0%} held the truth (level {options.level:g}); "
            f"median width {coverage['median_width'].median():.2f} points"
        )
    print(f"wrote {', '.join(path.name for path in written)} to {out_dir} ({time.perf_counter() - started:.0f} s)")
    if yaml_path is not None and result.chosen is not None:
        from ladder.atomic import atomic_path

        row = result.grids[result.grids["chosen"]].iloc[0]
        note = (
            f"expected |error| {row.expected_abs_err:.2f} points at {', '.join(t.name for t in targets)}, "
            f"{100 * row.share:.2f}% of their compute"
        )
        with atomic_path(yaml_path) as temporary:
            temporary.write_text(
                grid_yaml(args.name, result.chosen, targets, args.gpu, args.mfu, note), encoding="utf-8"
            )
        print(f"wrote {yaml_path}: `ladder plan ladder={args.name}` sizes it")
    return 0


def _read_csv(path: str) -> pd.DataFrame:
    if not Path(path).is_file():
        raise LadderError(f"{path}: no such file")
    try:
        return pd.read_csv(path)
    except (ValueError, OSError, pd.errors.ParserError) as error:
        raise LadderError(f"{path}: cannot read as CSV: {str(error).splitlines()[0]}") from None


# ---------------------------------------------------------------- compare


def _range(low: float, high: float, digits: int = 2) -> str:
    return f"[{low:.{digits}f}, {high:.{digits}f}]"


def _times(value: float) -> str:
    if math.isnan(value):
        return "n/a"
    if math.isinf(value):
        return ">1000x"
    if value == 0:
        return "<0.001x"
    return f"{value:.3g}x"


def format_comparison(comparison) -> str:
    a, b = comparison.names
    rows = comparison.rows
    table = pd.DataFrame(
        {
            "task": rows["task"],
            "target": rows["target"],
            f"{a}": rows["pred_a"].map("{:.2f}".format),
            f"{b}": rows["pred_b"].map("{:.2f}".format),
            f"{a}-{b}": rows["diff"].map("{:+.2f}".format),
            "interval": [_range(lo, hi) for lo, hi in zip(rows["diff_lo"], rows["diff_hi"])],
            f"P({a}>{b})": rows["p_a_beats_b"].map("{:.2f}".format),
            "compute x": rows["multiplier"].map(_times),
            "interval ": [
                f"[{_times(lo)}, {_times(hi)}]" for lo, hi in zip(rows["multiplier_lo"], rows["multiplier_hi"])
            ],
            "paired": rows["paired"].map({True: "yes", False: "no"}),
        }
    )
    level = comparison.fits[0].options.level
    heading = (
        f"== {a} vs {b} at the target (accuracy points; {100 * level:g}% bootstrap intervals; compute x: how "
        f"much more compute {b} needs to match {a}'s predicted accuracy)"
    )
    lines = [heading, table.to_string(index=False)]
    if not comparison.decisions.empty:
        decisions = comparison.decisions.assign(agreement=lambda f: f["agreement"].map("{:.0%}".format))
        lines += [
            "",
            "== decision accuracy: ranking at each size vs at the largest common size, share of tasks",
            decisions[["size", "tasks", "agreement"]].to_string(index=False),
        ]
    return "\n".join(lines)


def plot_comparison(comparison, path: Path) -> None:
    """Per task and target: the predicted difference with its interval, P(A beats B) beside it."""
    rows = comparison.rows.reset_index(drop=True)
    a, b = comparison.names
    figure = _figure(7.0, 0.45 * len(rows) + 1.2)
    axis = figure.add_subplot()
    y = range(len(rows))
    # Intervals as lines: a bootstrap's percentile interval need not hold the full-data estimate.
    axis.hlines(list(y), rows["diff_lo"], rows["diff_hi"], color="tab:blue", lw=2)
    axis.plot(rows["diff"], list(y), "o", color="tab:blue")
    axis.axvline(0.0, color="0.5", lw=1)
    axis.set_yticks(list(y), [f"{task} @ {target}" for task, target in zip(rows["task"], rows["target"])])
    for i, p in enumerate(rows["p_a_beats_b"]):
        axis.annotate(
            f"P={p:.2f}",
            (1.0, i),
            xycoords=("axes fraction", "data"),
            xytext=(4, 0),
            textcoords="offset points",
            va="center",
            fontsize=8,
        )
    axis.invert_yaxis()
    axis.set_xlabel(f"predicted accuracy {a} - {b} at the target (points)")
    axis.set_title(f"ladder compare: {a} vs {b}")
    figure.savefig(path)


def compare_main(argv: list[str]) -> int:
    parser = ArgumentParser(
        prog="ladder compare",
        description="Does recipe A beat recipe B at the target, and by how much compute? Fits both "
        "ladders; per task the predicted difference, P(A beats B) and the compute multiplier.",
    )
    parser.add_argument(
        "tables", nargs="+", metavar="TABLE", help="two results tables (A, B), or one with a recipe column"
    )
    parser.add_argument("--target", action="append", required=True, metavar="NAME:N:D", help="a model to predict")
    parser.add_argument("--recipe-column", default="recipe", help="with one table: the column naming the recipe")
    parser.add_argument("--recipes", help="with one table: the two recipes, A first (default: in table order)")
    parser.add_argument("--names", help="with two tables: their names (default A,B)")
    parser.add_argument("--out", help="folder: compare.csv, decisions.csv, compare.png")
    parser.add_argument("--overwrite", action="store_true", help="replace results in --out")
    parser.add_argument("--no-plots", action="store_true")
    _add_selection(parser)
    args = parser.parse_args(argv)
    if len(args.tables) > 2:
        raise LadderError(f"give two tables, or one with a recipe column; got {len(args.tables)}")
    targets = _targets(args.target)
    options = _options(args)
    options.check()
    if args.out is not None:
        out_dir = _check_out_dir(args.out, args.overwrite, COMPARE_FILES)

    from ladder.fit.compare import compare, split_recipes
    from ladder.results import read_table

    if len(args.tables) == 2:
        if args.recipes is not None:
            raise LadderError("--recipes picks recipes from one table; with two tables name them with --names")
        names = tuple(p.strip() for p in (args.names or "A,B").split(","))
        if len(names) != 2 or not all(names) or names[0] == names[1]:
            raise LadderError(f"--names: two different names, e.g. A,B; got {args.names!r}")
        table_a, table_b = read_table(args.tables[0]), read_table(args.tables[1])
    else:
        if args.names is not None:
            raise LadderError("--names names two tables; with one table the recipe column names them")
        order = [p.strip() for p in args.recipes.split(",")] if args.recipes else None
        names, table_a, table_b = split_recipes(read_table(args.tables[0]), args.recipe_column, order)
    comparison = compare(table_a, table_b, targets, options, names=names)
    print(format_comparison(comparison))
    if args.out is not None:
        writers: dict[str, Callable[[Path], None]] = {
            "compare.csv": lambda path: comparison.rows.to_csv(path, index=False),
            "decisions.csv": lambda path: comparison.decisions.to_csv(path, index=False),
        }
        if not args.no_plots:
            writers["compare.png"] = lambda path: plot_comparison(comparison, path)
        written = _write_outputs(out_dir, writers, COMPARE_FILES)
        print(f"wrote {', '.join(path.name for path in written)} to {out_dir}")
    return 0
