"""`ladder import-olmo`: OLMo ladder-run CSV exports (wandb, one row per checkpoint) -> the results table.

The format is that of allenai/OLMo-ladder `src/scripts/paper/data/ladder-runs/`: ladder files
`<size>-<x>xC[-rerun].csv` and the targets `peteish7_eval_anneal.csv` (7B-4T) and
`peteish13_eval_final.csv` (13B-5T). Task bpb comes from `eval/downstream_bpb/<task>_<split>_rc_5shot_bpb`,
accuracy from `eval/downstream/<task>_<split>_rc_5shot_len_norm`; MMLU is the category-weighted
mean the paper uses. N is the paper's count (all parameters but the input embedding).

This module never imports torch.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from ladder.errors import ArgumentParser, LadderError
from ladder.results import check_output_table, validate_table, write_table
from ladder.sizes import get_shape, paper_params

# N as the paper counts it (every parameter except the input embedding), per size label: from the
# presets' shapes (tests/test_sizes.py pins them to the paper's figures).
PAPER_N = {size: paper_params(get_shape(size)) for size in ("190M", "370M", "760M", "1B", "3B", "7B", "13B")}

# The paper's tasks (RC, 5-shot) and the split each is evaluated on.
PAPER_TASK_SPLITS = {
    "hellaswag": "val",
    "arc_challenge": "test",
    "arc_easy": "test",
    "piqa": "val",
    "csqa": "val",
    "socialiqa": "val",
    "openbookqa": "test",
}
# MMLU = weighted mean of its four categories (weights: share of test questions), bpb and accuracy alike.
MMLU_WEIGHTS = {"stem": 0.215, "humanities": 0.335, "social_sciences": 0.219, "other": 0.231}
PAPER_TASKS = ("mmlu",) + tuple(PAPER_TASK_SPLITS)
# The paper's 7B-4T chained errors (prediction minus actual, accuracy points) from its four-size
# ladder, in PAPER_TASKS order: what a fit of this data is compared with (tests, scripts/bench_fit.py).
PAPER_7B_ERRORS = {
    "mmlu": -0.63,
    "hellaswag": 1.17,
    "arc_challenge": -10.45,
    "arc_easy": -7.97,
    "piqa": -0.83,
    "csqa": 3.07,
    "socialiqa": -1.19,
    "openbookqa": -5.23,
}

LADDER_FILE = re.compile(r"^(?P<size>\d+(?:\.\d+)?[MB])-(?P<mult>\d+(?:\.\d+)?)xC(?P<rerun>-rerun)?\.csv$")


@dataclass(frozen=True)
class TargetFile:
    """A target model's export file and what the paper knows about it."""

    file: str
    """file name inside the export directory"""
    run: str
    """run name in the results table"""
    size: str
    """size label (a key of PAPER_N)"""


TARGET_FILES = (
    TargetFile("peteish7_eval_anneal.csv", "7B-4T", "7B"),
    TargetFile("peteish13_eval_final.csv", "13B-5T", "13B"),
)


def _column(frame: pd.DataFrame, name: str, source: Path) -> np.ndarray:
    if name not in frame.columns:
        raise LadderError(f"{source}: missing column {name!r}")
    return pd.to_numeric(frame[name], errors="coerce").to_numpy(dtype=float)


def _task_metrics(frame: pd.DataFrame, source: Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """task -> (bpb, accuracy) arrays, one value per row of the export."""
    metrics = {}
    weights = np.array(list(MMLU_WEIGHTS.values()))
    bpb = np.stack([_column(frame, f"eval/downstream_bpb/mmlu_{c}_test_rc_5shot_bpb", source) for c in MMLU_WEIGHTS])
    acc = np.stack([_column(frame, f"eval/downstream/mmlu_{c}_test_rc_5shot_len_norm", source) for c in MMLU_WEIGHTS])
    metrics["mmlu"] = (weights @ bpb / weights.sum(), weights @ acc / weights.sum())
    for task, split in PAPER_TASK_SPLITS.items():
        metrics[task] = (
            _column(frame, f"eval/downstream_bpb/{task}_{split}_rc_5shot_bpb", source),
            _column(frame, f"eval/downstream/{task}_{split}_rc_5shot_len_norm", source),
        )
    return metrics


def _tidy(
    frame: pd.DataFrame,
    source: Path,
    *,
    run: str,
    role: str,
    size: str,
    multiplier: float | None,
    rerun: bool,
    steps: np.ndarray,
    tokens: np.ndarray,
    flops: np.ndarray | None,
) -> pd.DataFrame:
    parts = []
    for task, (bpb, acc) in _task_metrics(frame, source).items():
        parts.append(
            pd.DataFrame(
                {
                    "run": run,
                    "role": role,
                    "N": PAPER_N[size],
                    "D": tokens,
                    "step": steps,
                    "task": task,
                    "loss": bpb,
                    "acc": acc,
                    "size": size,
                    "multiplier": np.nan if multiplier is None else multiplier,
                    "flops": np.nan if flops is None else flops,
                    "rerun": rerun,
                }
            )
        )
    table = pd.concat(parts, ignore_index=True)
    # Exports contain checkpoints whose evaluation was not logged (no result) and step-0
    # evaluations (D = 0, outside any power law in D): both are left out.
    table = table[np.isfinite(table["loss"]) & (table["D"] > 0)]
    bad_steps = ~np.isfinite(table["step"].to_numpy(dtype=float))
    if bad_steps.any():
        raise LadderError(
            f"{source}: an evaluated checkpoint has no step (empty or non-numeric _step, "
            f"row {int(table.index[bad_steps][0]) % len(frame) + 2})"
        )
    return table.astype({"step": np.int64})


def _read_csv(path: Path) -> pd.DataFrame:
    try:
        frame = pd.read_csv(path)
    except (OSError, ValueError, pd.errors.ParserError) as error:
        raise LadderError(f"{path}: cannot read as CSV: {str(error).splitlines()[0]}") from None
    if frame.empty:
        raise LadderError(f"{path}: no rows")
    return frame


def _ladder_run(path: Path, match: re.Match) -> pd.DataFrame:
    size = match["size"]
    if size not in PAPER_N:
        raise LadderError(f"{path}: unknown size {size!r}; known: {', '.join(PAPER_N)}")
    frame = _read_csv(path)
    multiplier = float(match["mult"])
    rerun = match["rerun"] is not None
    run = f"{size}-{multiplier:g}xC" + ("-rerun" if rerun else "")
    flops = _column(frame, "throughput/total_training_Gflops", path) * 1e9
    return _tidy(
        frame,
        path,
        run=run,
        role="ladder",
        size=size,
        multiplier=multiplier,
        rerun=rerun,
        steps=_column(frame, "_step", path),
        tokens=_column(frame, "throughput/total_tokens", path),
        flops=flops,
    )


def _target_run(path: Path, target: TargetFile) -> pd.DataFrame:
    frame = _read_csv(path)
    batch = _column(frame, "batch_size_in_tokens", path)
    if "throughput/total_tokens" in frame.columns:
        tokens = _column(frame, "throughput/total_tokens", path)
        steps = np.rint(tokens / batch)
    else:
        # The 13B export has no throughput columns: D = step x batch tokens.
        steps = _column(frame, "_step", path)
        tokens = steps * batch
    return _tidy(
        frame,
        path,
        run=target.run,
        role="target",
        size=target.size,
        multiplier=None,
        rerun=False,
        steps=steps,
        tokens=tokens,
        flops=None,
    )


def import_olmo(directory: str | os.PathLike) -> pd.DataFrame:
    """Every ladder file and known target file in `directory` as one validated results table."""
    directory = Path(directory)
    if not directory.is_dir():
        raise LadderError(f"{directory}: not a directory")
    parts = []
    for path in sorted(directory.glob("*.csv")):
        match = LADDER_FILE.match(path.name)
        if match:
            parts.append(_ladder_run(path, match))
    if not parts:
        raise LadderError(f"{directory}: no OLMo ladder files (<size>-<x>xC.csv)")
    for target in TARGET_FILES:
        if (directory / target.file).is_file():
            parts.append(_target_run(directory / target.file, target))
    return validate_table(pd.concat(parts, ignore_index=True), source=str(directory))


def import_olmo_main(argv: list[str]) -> int:
    """`ladder import-olmo DIRECTORY -o TABLE`."""
    parser = ArgumentParser(prog="ladder import-olmo", description="OLMo ladder CSV exports -> a results table.")
    parser.add_argument("directory", help="folder with <size>-<x>xC.csv files (and peteish7/13 target files)")
    parser.add_argument("-o", "--output", required=True, help="results table to write (.csv or .parquet)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing table")
    args = parser.parse_args(argv)

    check_output_table(args.output, args.overwrite)
    table = import_olmo(args.directory)
    path = write_table(table, args.output, overwrite=args.overwrite)
    runs = table.groupby("role")["run"].nunique()
    print(
        f"wrote {len(table)} rows to {path}: {runs.get('ladder', 0)} ladder runs, {runs.get('target', 0)} targets, "
        f"tasks {', '.join(dict.fromkeys(table['task']))}"
    )
    return 0
