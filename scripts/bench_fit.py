"""Time the full paper fit: 8 tasks, both steps, the single-step baseline, 1000 bootstrap replicates,
predictions for 2 targets (the 7B-4T in the table and the 13B-5T by its N and D).

    .venv/bin/python scripts/bench_fit.py [--repeats 5] [--bootstrap 1000] [--workers N] [--method ensemble]
                                          [--threads 1] [--baseline DIR]

Each repeat is one fit in a fresh process (the table read and the imports not timed); it reports
the fit's wall time and CPU time (its own and its worker processes'), then the medians and the
machine's load average (the 2-core machine is shared: a loaded machine slows the wall time more
than the CPU time), and the 7B errors beside the paper's. `--threads` sets the BLAS / OpenMP
threads of each process. `--baseline DIR`: another checkout of the project (e.g. `git worktree add
/tmp/base main`) fitted the same way, its repeats alternating with this checkout's so that both
see the same load; prints the ratio of the medians and how far this checkout's predictions and
interval ends lie from the baseline's.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / ".." / "shared" / "data" / "olmo-ladder"
TARGET_13B = ("13B-5T", 13_202_396_160, 5_000_088_518_656)
THREAD_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")
COMPARED = ("pred_loss", "pred_acc", "pred_acc_lo", "pred_acc_hi", "pred_13b")


def _cpu_seconds() -> float:
    """CPU time of this process and of its finished worker processes."""
    times = os.times()
    return times.user + times.system + times.children_user + times.children_system


def fit_once(args: argparse.Namespace) -> dict:
    """One timed fit in this process (the child's part); its times and per-task predictions."""
    import time

    from ladder.fit.pipeline import fit_table
    from ladder.runs.olmo_import import import_olmo

    table = import_olmo(args.data)
    start, cpu_start = time.perf_counter(), _cpu_seconds()
    fit = fit_table(
        table,
        sizes=["190M", "370M", "760M", "1B"],
        multipliers=[1, 2, 5, 10],
        bootstrap=args.bootstrap,
        workers=args.workers,
        method=args.method,
    )
    thirteen = fit.predict(TARGET_13B[1], TARGET_13B[2], TARGET_13B[0]).set_index("task")
    wall, cpu = time.perf_counter() - start, _cpu_seconds() - cpu_start
    rows = fit.predictions.set_index("task")
    tasks = {
        task: {
            "pred_loss": float(rows.loc[task, "pred_loss"]),
            "pred_acc": float(rows.loc[task, "pred_acc"]),
            "pred_acc_lo": float(rows.loc[task, "pred_acc_lo"]),
            "pred_acc_hi": float(rows.loc[task, "pred_acc_hi"]),
            "abs_err": float(rows.loc[task, "abs_err"]),
            "pred_13b": float(thirteen.loc[task, "pred_acc"]),
        }
        for task in rows.index
    }
    return {"wall": wall, "cpu": cpu, "load": os.getloadavg()[0], "tasks": tasks}


def _child(args: argparse.Namespace, checkout: Path | None) -> dict:
    """One repeat in a fresh process importing `checkout`'s ladder package (None: this one's)."""
    env = dict(os.environ, **{name: str(args.threads) for name in THREAD_VARIABLES})
    if checkout is not None:
        env["PYTHONPATH"] = str(checkout.resolve())
    command = [sys.executable, str(Path(__file__).resolve()), "--child", "--data", str(args.data)]
    command += ["--bootstrap", str(args.bootstrap), "--workers", str(args.workers), "--method", args.method]
    # Run from outside any checkout, so that PYTHONPATH (not the working directory) picks the package.
    done = subprocess.run(command, env=env, cwd="/", capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"bench_fit: a fit failed ({checkout or 'this checkout'}):\n{done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def _summary(label: str, runs: list[dict]) -> tuple[float, float]:
    wall, cpu = statistics.median(r["wall"] for r in runs), statistics.median(r["cpu"] for r in runs)
    print(f"{label}: median {wall:.2f} s wall, {cpu:.2f} s CPU over {len(runs)} repeats")
    return wall, cpu


def main() -> None:
    default_workers = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DATA, help="OLMo ladder-runs folder")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--bootstrap", type=int, default=1000)
    parser.add_argument("--workers", type=int, default=default_workers, help="default: one per CPU core available")
    parser.add_argument("--method", default="ensemble", help="step-1 method (ladder fit --method)")
    parser.add_argument("--threads", type=int, default=1, help="BLAS / OpenMP threads per process")
    parser.add_argument("--baseline", type=Path, help="another checkout to time alongside, alternating repeats")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(fit_once(args)))
        return
    if args.baseline is not None and not (args.baseline / "ladder" / "fit").is_dir():
        raise SystemExit(f"bench_fit: --baseline {args.baseline} is not a checkout of the project (no ladder/fit)")

    print(
        f"method {args.method}, bootstrap {args.bootstrap}, workers {args.workers}, threads {args.threads}; "
        f"load average before: {os.getloadavg()[0]:.2f} (cores: {os.cpu_count()})"
    )
    checkouts = {"this": None} if args.baseline is None else {"baseline": args.baseline, "this": None}
    runs: dict[str, list[dict]] = {label: [] for label in checkouts}
    for repeat in range(args.repeats):
        for label, checkout in checkouts.items():
            run = _child(args, checkout)
            runs[label].append(run)
            print(
                f"repeat {repeat + 1} {label}: {run['wall']:.2f} s wall, {run['cpu']:.2f} s CPU (load {run['load']:.2f})"
            )
    medians = {label: _summary(label, label_runs) for label, label_runs in runs.items()}
    print(f"load average after: {os.getloadavg()[0]:.2f}")
    latest = runs["this"][-1]["tasks"]
    if args.baseline is not None:
        (base_wall, base_cpu), (wall, cpu) = medians["baseline"], medians["this"]
        print(f"this / baseline: {wall / base_wall:.2f}x wall, {cpu / base_cpu:.2f}x CPU")
        base = runs["baseline"][-1]["tasks"]
        for column in COMPARED:
            scale = 1.0 if column == "pred_loss" else 100.0  # accuracies in points
            change = max(abs(latest[task][column] - base[task][column]) for task in latest) * scale
            unit = "" if column == "pred_loss" else " points"
            print(f"  max |this - baseline| of {column}: {change:.2g}{unit}")
    from ladder.runs.olmo_import import PAPER_7B_ERRORS  # the children time the fit; this one only reports

    for task, paper in PAPER_7B_ERRORS.items():
        row = latest[task]
        print(
            f"  {task:<14} 7B error {row['abs_err']:+6.2f} (paper {paper:+6.2f})  "
            f"interval [{100 * row['pred_acc_lo']:.1f}, {100 * row['pred_acc_hi']:.1f}]  "
            f"13B predicted {100 * row['pred_13b']:.1f}"
        )
    print(f"  step-1 7B MMLU bpb {latest['mmlu']['pred_loss']:.4f} (paper 0.7869)")


if __name__ == "__main__":
    main()
