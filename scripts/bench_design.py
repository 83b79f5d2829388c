"""Time `ladder design`'s default search on the paper's data: the prior law and noise fitted from
the table (8 tasks), then 5 candidate sizes (190M-3B) x 5 multipliers (0.5-10): 60 grids (runs of
>= 3 consecutive sizes x runs of >= 2 consecutive multipliers), 32 simulated ladders each, target
7B-4T, by the step-1 method `--method` (default: design's, `ensemble`).

    .venv/bin/python scripts/bench_design.py [--repeats 3] [--sims 32] [--exhaustive] [--method paper]

Prints each repeat's wall and CPU time (prior fit and search apart), the medians and the load
average (the 2-core machine is shared: load slows the wall time, not a process's CPU time).
"""

from __future__ import annotations

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import argparse
import statistics
import time
from pathlib import Path

from ladder.fit import design
from ladder.fit.methods import DEFAULT_METHOD, METHODS
from ladder.runs.olmo_import import import_olmo

DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "olmo-ladder"
SEVEN = design.Target("7B-4T", 6_887_575_552, 3_945_065_873_408)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DATA, help="OLMo ladder-runs folder")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--sims", type=int, default=32)
    parser.add_argument("--exhaustive", action="store_true", help="every subset of sizes and multipliers")
    parser.add_argument("--method", choices=METHODS, default=DEFAULT_METHOD, help="step-1 method")
    args = parser.parse_args()
    options = design.DesignOptions(sims=args.sims, method=args.method)

    table = import_olmo(args.data)
    sizes = design.sizes_of(["190M", "370M", "760M", "1B", "3B"])
    candidates = design.candidate_grids(sizes, [0.5, 1, 2, 5, 10], exhaustive=args.exhaustive)
    print(
        f"{len(candidates)} grids x 8 tasks x {args.sims} simulated ladders, --method {args.method}; load average before: "
        f"{os.getloadavg()[0]:.2f} (cores: {os.cpu_count()})"
    )
    walls, cpus = [], []
    for repeat in range(args.repeats):
        start, cpu_start = time.perf_counter(), time.process_time()
        laws, noises = design.laws_and_noise_from_table(table, options.fit_options())
        prior_wall, prior_cpu = time.perf_counter() - start, time.process_time() - cpu_start
        result = design.design(laws, noises, candidates, [SEVEN], options=options)
        walls.append(time.perf_counter() - start)
        cpus.append(time.process_time() - cpu_start)
        print(
            f"repeat {repeat + 1}: {walls[-1]:.1f} s wall ({prior_wall:.1f} s the prior), {cpus[-1]:.1f} s CPU "
            f"({prior_cpu:.1f} s the prior); load average {os.getloadavg()[0]:.2f}"
        )
    print(
        f"median: {statistics.median(walls):.1f} s wall, {statistics.median(cpus):.1f} s CPU over {args.repeats} "
        f"repeats; load average after: {os.getloadavg()[0]:.2f}"
    )
    chosen = result.grids[result.grids["chosen"]].iloc[0]
    print(f"chosen (no budget): {chosen['grid']}, expected |error| {chosen['expected_abs_err']:.2f} points")


if __name__ == "__main__":
    main()
