"""`ladder demo`: the embedded CPU ladder, end to end, in under fifteen minutes on two cores.

    ladder demo [OVERRIDES...]      (what `make demo` runs)

1. prepares the default corpus (Shakespeare and the KJV Bible, byte-level tokens);
2. sweeps the `demo` grid (conf/ladder/demo.yaml: 3 sizes x 4 token multiples) and its held-out
   target, a model several times bigger than the largest rung, trained to its own budget;
3. collects the run directories into `results/demo/results.csv`;
4. fits both steps on the ladder rungs only and predicts the target;
5. writes predictions, parameters, plots and `report.md` to `results/demo/`, and prints the
   predicted-vs-actual table.

Rungs live in `runs/demo/<rung>/`: a second run skips the finished ones (delete that folder to
train again). `results/demo/` is the demo's own output and is rewritten on every run. Any Hydra
override is passed on, e.g. `ladder demo wandb.mode=offline` or `ladder demo train.threads=2`. (A grid
needs at least 5 ladder rungs per task: step 1 has 5 parameters; `ladder=cpu` has 4 and is refused.)
`ladder demo seed=1` repeats the experiment with another initialisation, data order and question
sample, in `runs/demo-seed1/` and `results/demo-seed1/`.
"""

from __future__ import annotations

import time
from pathlib import Path

import pandas as pd
from omegaconf import DictConfig
from scipy.stats import spearmanr

from ladder.errors import LadderError
from ladder.hydra_app import compose_config

# One thread: small models barely gain from two, and lose badly when anything else wants the CPU.
# 1,000 questions per task keep the sampling error of an accuracy near 1 point (1.6 at 0.5, 0.9 at
# 0.9); scoring them is most of the demo's time, so each rung is evaluated 10 times, evenly spaced
# (step 1 averages the last 5, step 2 smooths the 9 after the first), and validation bpb, which no
# fit uses, on 16k tokens. The question sample follows the seed (`ladder demo seed=1`).
DEMO_OVERRIDES = [
    "ladder=demo",
    "tasks=cpu",
    "wandb.mode=disabled",
    "train.threads=1",
    "train.evals=10",
    "tasks.max_questions=1000",
    "tasks.seed=${seed}",
    "train.val_tokens=16384",
]
RESULTS_ROOT = Path("results")


def _banner(text: str) -> None:
    print(f"\n== {text}", flush=True)


def accuracy_rise(table: pd.DataFrame) -> pd.DataFrame:
    """Per task: does accuracy rise with compute across the ladder rungs? (final checkpoints)

    Spearman's rank correlation between a rung's training FLOPs (6ND) and its final accuracy,
    and the accuracy of the cheapest and the most expensive rung beside the chance level.
    """
    ladder = table[(table["role"] == "ladder") & table["acc"].notna()]
    final = ladder.loc[ladder.groupby(["run", "task"])["step"].idxmax()].copy()
    final["compute"] = 6.0 * final["N"] * final["D"]
    rows = []
    for task, rungs in final.groupby("task", sort=False):
        rungs = rungs.sort_values("compute")
        rho = spearmanr(rungs["compute"], rungs["acc"]).statistic if len(rungs) > 2 else float("nan")
        rows.append(
            {
                "task": task,
                "chance": rungs["chance"].iloc[0] if "chance" in rungs else float("nan"),
                "acc_cheapest_rung": rungs["acc"].iloc[0],
                "acc_costliest_rung": rungs["acc"].iloc[-1],
                "spearman_acc_vs_compute": rho,
            }
        )
    return pd.DataFrame(rows)


def training_curves(sweep_root: Path, runs: list[str]) -> pd.DataFrame:
    """Training loss against tokens of every run, from each run directory's metrics records."""
    from ladder.runs.directory import RunDir

    frames = []
    for run in runs:
        records = RunDir(sweep_root / run).read_metrics()
        if records:
            frames.append(pd.DataFrame(records).assign(run=run)[["run", "tokens", "loss"]])
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=["run", "tokens", "loss"])


def demo_config(argv: list[str]) -> tuple[DictConfig, list[str], Path]:
    """The demo's config, its whole override list (what the sweep gets) and its results folder.

    `seed=S` (S > 0) seeds initialisation, data order and the question sample, and trains into
    runs/demo-seed<S>/ with results in results/demo-seed<S>/ (unless ladder.sweep_root is given):
    finished rungs are skipped by name, so another seed must not find seed 0's.
    """
    overrides = DEMO_OVERRIDES + list(argv)
    cfg = compose_config(overrides)
    if cfg.seed != 0 and not any(arg.startswith("ladder.sweep_root=") for arg in argv):
        overrides.append(f"ladder.sweep_root=runs/{cfg.ladder.name}-seed{cfg.seed}")
        cfg = compose_config(overrides)
    return cfg, overrides, RESULTS_ROOT / Path(cfg.ladder.sweep_root).name


def main(argv: list[str]) -> int:
    if any(arg in ("-h", "--help") for arg in argv):
        print(__doc__)
        return 0
    unknown = [arg for arg in argv if "=" not in arg]
    if unknown:
        raise LadderError(f"ladder demo takes Hydra overrides (key=value) only, not {unknown[0]!r}")
    cfg, overrides, results_dir = demo_config(argv)
    timings: dict[str, float] = {}
    started = time.perf_counter()

    from ladder.sweep.plan import format_plan, make_plan

    _banner("the plan")
    print(format_plan(make_plan(cfg)), flush=True)

    _banner("1/4 corpus")
    from ladder.data import prepare_corpus

    clock = time.perf_counter()
    corpus = prepare_corpus(cfg.data)
    state = "reused" if corpus.reused else "prepared"
    print(f"corpus {corpus.root} ({state}): {corpus.manifest['train']['tokens']:,} training tokens", flush=True)
    timings["corpus"] = time.perf_counter() - clock

    _banner("2/4 sweep (finished rungs are skipped)")
    from ladder.sweep import sweep_main

    clock = time.perf_counter()
    if sweep_main(overrides) != 0:
        raise LadderError(
            f"some rungs failed (see above and `ladder status {cfg.ladder.sweep_root}`); rerun to retry them"
        )
    timings["sweep"] = time.perf_counter() - clock

    _banner("3/4 collect")
    from ladder.results import write_table
    from ladder.runs.collect import collect_run_dirs

    sweep_root = Path(cfg.ladder.sweep_root)
    table = collect_run_dirs([sweep_root])
    results_dir.mkdir(parents=True, exist_ok=True)
    write_table(table, results_dir / "results.csv", overwrite=True)
    print(f"{results_dir / 'results.csv'}: {len(table)} rows, {table['run'].nunique()} runs", flush=True)

    _banner("4/4 two-stage fit on the ladder rungs; the target is held out")
    from ladder.fit.pipeline import fit_table
    from ladder.report.demo import format_accuracy_rise, write_demo_report
    from ladder.report.fit import write_fit_report
    from ladder.report.tables import format_predictions

    clock = time.perf_counter()
    fit = fit_table(table)
    write_fit_report(fit, results_dir, overwrite=True)
    timings["fit"] = time.perf_counter() - clock
    timings["total"] = time.perf_counter() - started

    curves = training_curves(sweep_root, sorted(table["run"].unique()))
    rise = accuracy_rise(table)
    write_demo_report(fit, results_dir, curves=curves, rise=rise, timings=timings, cfg=cfg)

    _banner("does accuracy rise with compute? (final checkpoints of the ladder rungs)")
    print(format_accuracy_rise(rise))
    _banner("predicted vs actual (target held out of the fit)")
    print(format_predictions(fit.predictions))
    print(f"\nreport: {results_dir / 'report.md'} (plots beside it); total {timings['total']:.0f} s")
    return 0
