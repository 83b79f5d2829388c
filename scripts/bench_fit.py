"""Time the full paper fit: 8 tasks, both steps, the single-step baseline, 1000 bootstrap replicates,
predictions for 2 targets (the 7B-4T in the table and the 13B-5T by its N and D).

    .venv/bin/python scripts/bench_fit.py [--repeats 5] [--bootstrap 1000] [--workers N] [--method ensemble]

Prints every repeat's wall and CPU time (this process's and its worker processes'), the medians, the machine's load average (the 2-core
machine is shared: a loaded machine slows the wall time, not the CPU time of a single process),
and the 7B errors beside the paper's.
"""

from __future__ import annotations

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import argparse  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

from ladder.fit.pipeline import DEFAULT_WORKERS, fit_table  # noqa: E402
from ladder.runs.olmo_import import PAPER_7B_ERRORS, import_olmo  # noqa: E402

DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "olmo-ladder"
TARGET_13B = ("13B-5T", 13_202_396_160, 5_000_088_518_656)


def _cpu_seconds() -> float:
    """CPU time of this process and of its finished worker processes."""
    times = os.times()
    return times.user + times.system + times.children_user + times.children_system


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DATA, help="OLMo ladder-runs folder")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--bootstrap", type=int, default=1000)
    parser.add_argument("--workers", type=int, default=DEFAULT_WORKERS, help="default: one per CPU core available")
    parser.add_argument("--method", default="ensemble", help="step-1 method (ladder fit --method)")
    args = parser.parse_args()

    start = time.perf_counter()
    table = import_olmo(args.data)
    print(f"import: {time.perf_counter() - start:.2f} s ({len(table)} rows)")
    print(f"load average before: {os.getloadavg()[0]:.2f} (cores: {os.cpu_count()})")
    times, cpu_times = [], []
    for repeat in range(args.repeats):
        start, cpu_start = time.perf_counter(), _cpu_seconds()
        fit = fit_table(
            table,
            sizes=["190M", "370M", "760M", "1B"],
            multipliers=[1, 2, 5, 10],
            bootstrap=args.bootstrap,
            workers=args.workers,
            method=args.method,
        )
        thirteen = fit.predict(TARGET_13B[1], TARGET_13B[2], TARGET_13B[0])
        times.append(time.perf_counter() - start)
        cpu_times.append(_cpu_seconds() - cpu_start)
        print(f"repeat {repeat + 1}: {times[-1]:.2f} s wall, {cpu_times[-1]:.2f} s CPU (with its workers')")
    print(
        f"median: {statistics.median(times):.2f} s wall, {statistics.median(cpu_times):.2f} s CPU over "
        f"{args.repeats} repeats (method {args.method}, bootstrap {args.bootstrap}, workers {args.workers}); "
        f"load average after: {os.getloadavg()[0]:.2f}"
    )
    errors = fit.predictions.set_index("task")
    for task, paper in PAPER_7B_ERRORS.items():
        row = errors.loc[task]
        print(
            f"  {task:<14} 7B error {row['abs_err']:+6.2f} (paper {paper:+6.2f})  "
            f"interval [{100 * row['pred_acc_lo']:.1f}, {100 * row['pred_acc_hi']:.1f}]  "
            f"13B predicted {100 * thirteen.set_index('task').loc[task, 'pred_acc']:.1f}"
        )
    print(f"  step-1 7B MMLU bpb {errors.loc['mmlu', 'pred_loss']:.4f} (paper 0.7869)")


if __name__ == "__main__":
    main()
