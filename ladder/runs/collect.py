"""`ladder collect`: run directories (or a wandb project) -> one results table.

    ladder collect runs/demo -o results/demo.csv
    ladder collect runs/a runs/b/190M-1xC -o results/ab.parquet --overwrite
    ladder collect --wandb ENTITY/PROJECT -o results/team.csv

A root is a run directory itself (it has evaluation rows or a rung record, see
`ladder.runs.directory`) or a folder of run directories (a sweep root). Every evaluation row a run wrote is kept, one per run x step x task;
a step evaluated twice (a rung resumed from a checkpoint older than its last evaluation) keeps
the later row. Extra columns the rows carry (chance, acc_raw, ...) are kept.

From wandb, each run's full history is read through the public API (`scan_history`, not the
sampled `history`): keys `<task>/<metric>` as `ladder train` logs them (or `eval/<task>/<metric>`;
metric: loss, acc, acc_raw, soft, soft_log), with `step` (or wandb's `_step`) and `tokens` (D);
N, role, size and multiplier come from the run's config key `rung_record` (the trainer logs the
rung's record there, `ladder.rungs.Rung.to_record`). Runs logged before that key existed are
sized again from `model.preset`, `multiplier`, `role` and `train.tokens` as `ladder train` would
size the rung, and collect says which.
"""

from __future__ import annotations

import argparse
import math
import re
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pandas as pd

from ladder.errors import LadderError
from ladder.results import OPTIONAL_COLUMNS, REQUIRED_COLUMNS, check_output_table, validate_table, write_table
from ladder.rungs import RUNG_RECORD_KEY, Rung, make_rung
from ladder.runs.directory import EVAL_ROWS, RunDir, read_eval_rows
from ladder.sizes import BYTE_VOCAB, padded_vocab

KEY_COLUMNS = ["run", "step", "task"]
# `<task>/<metric>` or `eval/<task>/<metric>`; `train/...` and `val/...` are training curves, not tasks.
WANDB_EVAL_KEY = re.compile(r"^(?!train/|val/)(?:eval/)?(?P<task>.+)/(?P<metric>loss|acc|acc_raw|soft|soft_log)$")


def run_dirs_under(root: Path) -> list[Path]:
    """`root` itself if it is a run directory, else its run-directory children."""
    if not root.is_dir():
        raise LadderError(f"{root}: no such directory")
    if RunDir(root).has_results():
        return [root]
    found = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".") and RunDir(p).has_results())
    if not found:
        raise LadderError(f"{root}: neither a run directory nor a folder of run directories ({EVAL_ROWS})")
    return found


def rows_of_run_dir(run_dir: Path) -> list[dict[str, Any]]:
    """A run's evaluation rows, with what its rung record knows filled in where a row lacks it."""
    rung = RunDir(run_dir).read_rung()
    rows = read_eval_rows(run_dir)
    facts = rung_facts(rung) if rung is not None else {}
    for row in rows:
        row.setdefault("run", rung.name if rung is not None else run_dir.name)
        for column, value in facts.items():
            if row.get(column) is None and value is not None:
                row[column] = value
    return rows


def rung_facts(rung: Rung) -> dict[str, Any]:
    """The results-table columns a rung fills in: role, N, size, multiplier."""
    return {"role": rung.role, "N": rung.n_params, "size": rung.size, "multiplier": rung.multiplier}


def order_columns(table: pd.DataFrame) -> pd.DataFrame:
    """Schema columns first (required, then optional), then the extra metrics in their order."""
    known = [c for c in (*REQUIRED_COLUMNS, *OPTIONAL_COLUMNS) if c in table.columns]
    return table[known + [c for c in table.columns if c not in known]]


def table_from_rows(rows: list[dict[str, Any]], source: str) -> pd.DataFrame:
    """Rows -> a validated table; a repeated run x step x task keeps its last row."""
    if not rows:
        raise LadderError(
            f"{source}: no evaluation rows (runs write them when trained with tasks, e.g. "
            "tasks=cpu or tasks.names=[...]; score a checkpoint later with `ladder eval RUN_DIR tasks=cpu -o`)"
        )
    table = pd.DataFrame(rows)
    missing = [column for column in KEY_COLUMNS if column not in table.columns]
    if missing:
        raise LadderError(f"{source}: evaluation rows lack {', '.join(missing)}")
    table = table.drop_duplicates(KEY_COLUMNS, keep="last")
    table = table.sort_values(["run", "step", "task"], kind="stable").reset_index(drop=True)
    return validate_table(order_columns(table), source=source)


def collect_run_dirs(roots: Iterable[Path]) -> pd.DataFrame:
    """Every run directory under `roots` -> one table; a run name found twice is an error."""
    rows: list[dict[str, Any]] = []
    origin: dict[str, Path] = {}
    empty: list[str] = []
    for root in roots:
        for run_dir in run_dirs_under(Path(root)):
            run_rows = rows_of_run_dir(run_dir)
            if not run_rows:
                empty.append(run_dir.name)
                continue
            for name in {row["run"] for row in run_rows}:
                if name in origin and origin[name] != run_dir:
                    raise LadderError(f"run {name!r} is in both {origin[name]} and {run_dir}")
                origin[name] = run_dir
            rows += run_rows
    if empty:
        print(f"ladder collect: no evaluation rows yet in {', '.join(empty)}", file=sys.stderr)
    return table_from_rows(rows, source=", ".join(str(root) for root in roots))


def vocab_of(config: dict[str, Any]) -> int | None:
    """The vocabulary a logged ladder config trained with: model.vocab_size, else the tokenizer's
    ('byte': 256, 'bpe:<size>') padded to model.vocab_multiple; None (the preset's) for a
    tokenizer.json file."""
    vocab = (config.get("model") or {}).get("vocab_size")
    if vocab is not None:
        return int(vocab)
    # Padded as the trainer pads it (configs from before the padding have no vocab_multiple: exact).
    multiple = int((config.get("model") or {}).get("vocab_multiple") or 1)
    tokenizer = str((config.get("data") or {}).get("tokenizer", "byte"))
    if tokenizer == "byte":
        return padded_vocab(BYTE_VOCAB, multiple)
    if tokenizer.startswith("bpe:") and tokenizer[4:].isdigit():
        return padded_vocab(int(tokenizer[4:]), multiple)
    return None


def rung_facts_from_wandb_config(config: dict[str, Any]) -> dict[str, Any]:
    """N, role, size and multiplier of a wandb run, from its logged rung record, else (runs logged
    before the record was) from its ladder config. Raises LadderError for a run that has neither."""
    if RUNG_RECORD_KEY in config:
        return rung_facts(Rung.from_record(config[RUNG_RECORD_KEY], source=f"wandb config {RUNG_RECORD_KEY}"))
    model = config.get("model") or {}
    if not isinstance(model, dict) or "preset" not in model:
        raise LadderError(f"wandb run config has neither `{RUNG_RECORD_KEY}` nor `model.preset`: not a ladder run")
    train = config.get("train") or {}
    tokens = train.get("tokens")
    multiplier = None if tokens is not None else float(config.get("multiplier", 1.0))
    rung = make_rung(
        model["preset"], multiplier, tokens=tokens, vocab_size=vocab_of(config), seq_len=model.get("seq_len")
    )
    return {"role": config.get("role", "ladder"), "N": rung.n_params, "size": rung.size, "multiplier": multiplier}


def rows_from_wandb_history(
    name: str, config: dict[str, Any], history: Iterable[dict[str, Any]]
) -> list[dict[str, Any]]:
    """One wandb run's full history -> results-table rows (one per logged step x task)."""
    facts = rung_facts_from_wandb_config(config)
    rows = []
    for record in history:
        by_task: dict[str, dict[str, Any]] = {}
        for key, value in record.items():
            match = WANDB_EVAL_KEY.match(key)
            if match and value is not None:
                by_task.setdefault(match["task"], {})[match["metric"]] = value
        if not by_task:
            continue
        step = record.get("step", record.get("_step"))
        tokens = record.get("tokens", record.get("train/tokens"))
        if step is None or tokens is None:
            raise LadderError(f"wandb run {name!r}: an eval record lacks step or tokens")
        if not isinstance(step, (int, float)) or not math.isfinite(step) or step < 0 or step % 1:
            raise LadderError(f"wandb run {name!r}: an eval record's step is {step!r}, not a whole number >= 0")
        for task, metrics in by_task.items():
            if "loss" not in metrics:
                continue
            rows.append({"run": name, **facts, "D": float(tokens), "step": int(step), "task": task, **metrics})
    return rows


def collect_wandb(path: str) -> pd.DataFrame:
    """Every run of the wandb project ENTITY/PROJECT -> one table (public API, full history)."""
    if path.count("/") != 1 or not all(path.split("/")):
        raise LadderError(f"--wandb takes ENTITY/PROJECT, got {path!r}")
    import wandb

    try:
        runs = list(wandb.Api().runs(path))
    except Exception as error:  # wandb raises its own types for auth, network and missing projects
        raise LadderError(
            f"wandb project {path}: {str(error).splitlines()[0] if str(error) else type(error).__name__}"
        ) from None
    rows: list[dict[str, Any]] = []
    skipped: list[str] = []
    resized: list[str] = []
    for run in runs:
        config = {key: value for key, value in dict(run.config).items() if not key.startswith("_")}
        try:
            rows += rows_from_wandb_history(run.name, config, run.scan_history())
        except LadderError as error:  # a project may hold other runs too
            skipped.append(f"{run.name} ({error})")
            continue
        if RUNG_RECORD_KEY not in config:
            resized.append(run.name)
    if skipped:
        print(f"ladder collect: skipped wandb runs: {'; '.join(skipped)}", file=sys.stderr)
    if resized:
        print(
            f"ladder collect: wandb runs without `{RUNG_RECORD_KEY}` (logged by an older ladder), N sized again "
            f"from their config: {', '.join(resized)}",
            file=sys.stderr,
        )
    return table_from_rows(rows, source=f"wandb project {path}")


def collect_main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="ladder collect", description="Run directories or a wandb project -> one results table."
    )
    parser.add_argument("roots", nargs="*", type=Path, help="sweep roots or run directories")
    parser.add_argument("-o", "--output", required=True, type=Path, help="table to write (.csv or .parquet)")
    parser.add_argument(
        "--wandb", metavar="ENTITY/PROJECT", action="append", default=[], help="also read this wandb project"
    )
    parser.add_argument("--overwrite", action="store_true", help="replace an existing table")
    args = parser.parse_args(argv)
    if not args.roots and not args.wandb:
        raise LadderError("give run directories or --wandb ENTITY/PROJECT")
    check_output_table(args.output, args.overwrite)  # before reading anything
    tables = ([collect_run_dirs(args.roots)] if args.roots else []) + [collect_wandb(p) for p in args.wandb]
    seen: set[str] = set()
    for source in tables:
        repeated = seen & set(source["run"])
        if repeated:
            raise LadderError(f"run {sorted(repeated)[0]!r} comes from two sources; collect them separately")
        seen |= set(source["run"])
    table = tables[0] if len(tables) == 1 else validate_table(order_columns(pd.concat(tables, ignore_index=True)))
    write_table(table, args.output, overwrite=args.overwrite)
    runs = table["run"].nunique()
    print(
        f"{args.output}: {len(table)} rows, {runs} runs, {table['task'].nunique()} tasks, {table['step'].nunique()} steps"
    )
    return 0
