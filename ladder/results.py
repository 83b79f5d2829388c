"""The results table: the one interface between training and fitting.

Tidy: one row per run x checkpoint x task.

| column     | type  | required | meaning                                                    |
|------------|-------|----------|------------------------------------------------------------|
| run        | str   | yes      | run name, e.g. `190M-2xC` or `7B-4T`                       |
| role       | str   | yes      | `ladder` (fitted) or `target` (predicted)                  |
| N          | int   | yes      | parameters as the paper counts them (all but input embedding) |
| D          | float | yes      | tokens trained at this checkpoint                          |
| step       | int   | yes      | optimizer step of the checkpoint                           |
| task       | str   | yes      | task name (`mmlu`, `hellaswag`, ... or any)                 |
| loss       | float | yes      | task loss: bits per byte of the correct answer             |
| acc        | float | no       | accuracy in [0, 1] (the paper's: length-normalised)        |
| size       | str   | no       | size preset, e.g. `190M`                                   |
| multiplier | float | no       | Chinchilla multiple (D = x 20 N)                           |
| flops      | float | no       | training FLOPs up to this checkpoint                       |
| rerun      | bool  | no       | a repeat of another run of the same rung (fits skip it unless asked) |
| chance     | float | no       | the task's chance accuracy (else known for the paper's tasks or `--chance`) |

Any further column is kept as an extra metric. Only this module knows the table's files: CSV or
Parquet by suffix (any case; `.tsv` tab-separated; `.csv.gz`/`.tsv.gz` compressed), validated on
read, written atomically, never overwritten unless asked.
Trainers write `EvalRow`s into their run directory (`ladder.runs.directory.append_eval_rows`);
`ladder collect` reads them back (`ladder.runs.collect`).

This module never imports torch.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ladder.atomic import atomic_path, check_writable_destination
from ladder.errors import LadderError

REQUIRED_COLUMNS = ("run", "role", "N", "D", "step", "task", "loss")
OPTIONAL_COLUMNS = ("acc", "size", "multiplier", "flops", "rerun", "chance")
ROLES = ("ladder", "target")
TABLE_SUFFIXES = (".csv", ".tsv", ".parquet")  # any case; .csv and .tsv may end in .gz


@dataclass
class EvalRow:
    """One evaluation of one checkpoint on one task: a row of the results table."""

    run: str
    role: str
    N: int
    D: float
    step: int
    task: str
    loss: float
    acc: float | None = None
    size: str | None = None
    multiplier: float | None = None
    flops: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    """Further metrics (acc_raw, soft, soft_log, n_questions, ...), flattened into columns."""

    def to_dict(self) -> dict[str, Any]:
        row = asdict(self)
        row.update(row.pop("extra"))
        return row


def validate_table(table: pd.DataFrame, source: str = "results table") -> pd.DataFrame:
    """Check the schema and values; return the table with canonical dtypes."""
    missing = [column for column in REQUIRED_COLUMNS if column not in table.columns]
    if missing:
        raise LadderError(f"{source}: missing required column(s) {', '.join(missing)}")
    if table.empty:
        raise LadderError(f"{source}: no rows")
    table = table.reset_index(drop=True)  # a repeated index (pd.concat of per-run frames) would mislabel rows
    for column in ("run", "role", "task"):
        if table[column].isna().any():
            raise LadderError(f"{source}: empty values in column {column!r}")
        table[column] = table[column].astype(str)
    bad_roles = sorted(set(table["role"]) - set(ROLES))
    if bad_roles:
        raise LadderError(f"{source}: role must be 'ladder' or 'target', found {bad_roles}")
    numeric = ["N", "D", "step", "loss"] + [c for c in ("acc", "multiplier", "flops", "chance") if c in table]
    for column in numeric:
        values = pd.to_numeric(table[column], errors="coerce")
        # Required columns need a number in every row; optional ones may be empty, but not text.
        bad = values.isna() if column in REQUIRED_COLUMNS else values.isna() & table[column].notna()
        if bad.any():
            row = int(np.flatnonzero(bad.to_numpy())[0])
            what = "a missing or non-numeric" if column in REQUIRED_COLUMNS else "a non-numeric"
            raise LadderError(f"{source}: column {column!r} has {what} value (row {row + 1})")
        finite = values.dropna()
        if not np.isfinite(finite.to_numpy(dtype=float)).all():
            raise LadderError(f"{source}: column {column!r} has an infinite value")
        table[column] = values
    for column in ("N", "D"):
        if (table[column] <= 0).any():
            raise LadderError(f"{source}: column {column!r} must be > 0")
    if (table["step"] < 0).any():
        row = int(np.flatnonzero((table["step"] < 0).to_numpy())[0])
        raise LadderError(f"{source}: column 'step' must be >= 0 (row {row + 1}: {table['step'].iloc[row]:g})")
    if (table["loss"] <= 0).any():
        raise LadderError(f"{source}: column 'loss' (bits per byte) must be > 0")
    if "acc" in table and ((table["acc"] < 0) | (table["acc"] > 1)).any():
        raise LadderError(f"{source}: column 'acc' must lie in [0, 1]")
    if "chance" in table and ((table["chance"] < 0) | (table["chance"] >= 1)).any():
        raise LadderError(f"{source}: column 'chance' must lie in [0, 1)")
    if "size" in table:
        table["size"] = table["size"].map(lambda value: None if pd.isna(value) else str(value))
    if "rerun" in table:
        table["rerun"] = _as_bool(table["rerun"], source)
    for column in ("N", "step"):
        values = table[column].to_numpy(dtype=float)
        wrong = (values % 1 != 0) | (np.abs(values) >= 2.0**62)
        if wrong.any():
            row = int(np.flatnonzero(wrong)[0])
            raise LadderError(
                f"{source}: column {column!r} must hold whole numbers below 2^62 (row {row + 1}: {values[row]:g})"
            )
        table[column] = table[column].astype("int64")
    per_run = table.groupby("run")[["role", "N"]].nunique()
    inconsistent = per_run[(per_run["role"] > 1) | (per_run["N"] > 1)].index.tolist()
    if inconsistent:
        raise LadderError(f"{source}: run {inconsistent[0]!r} has more than one role or N")
    duplicated = table.duplicated(["run", "step", "task"])
    if duplicated.any():
        run, step, task = table.loc[duplicated.idxmax(), ["run", "step", "task"]]
        raise LadderError(f"{source}: duplicate row for run {run!r}, step {step}, task {task!r}")
    return table


def _as_bool(column: pd.Series, source: str) -> pd.Series:
    """True/False, 1/0 or their strings (CSV round trip); missing means False."""
    words = {"true": True, "false": False, "1": True, "0": False, "1.0": True, "0.0": False, "": False, "nan": False}
    values = column.map(lambda value: words.get(str(value).strip().lower()) if not isinstance(value, bool) else value)
    if values.isna().any():
        raise LadderError(f"{source}: column 'rerun' must be true or false")
    return values.astype(bool)


def _table_format(path: Path) -> tuple[str, str | None]:
    """('csv' | 'tsv' | 'parquet', 'gzip' or None) from the file name, case-insensitively."""
    suffixes = [suffix.lower() for suffix in path.suffixes[-2:]]
    compression = "gzip" if suffixes[-1:] == [".gz"] else None
    suffix = suffixes[-2] if compression and len(suffixes) == 2 else (None if compression else path.suffix.lower())
    if suffix not in TABLE_SUFFIXES or (compression and suffix == ".parquet"):
        shown = "".join(path.suffixes[-2:]) if compression else path.suffix
        raise LadderError(
            f"{path}: results tables are .csv, .tsv (optionally .gz) or .parquet, not {shown or 'no suffix'!r}"
        )
    return suffix[1:], compression


def _check_suffix(path: Path) -> None:
    _table_format(path)


def read_table(path: str | os.PathLike) -> pd.DataFrame:
    """Read and validate a results table (CSV, TSV or Parquet)."""
    path = Path(path)
    kind, compression = _table_format(path)
    if not path.is_file():
        raise LadderError(f"{path}: no such results table")
    try:
        if kind == "parquet":
            table = pd.read_parquet(path)
        else:
            table = pd.read_csv(path, sep="\t" if kind == "tsv" else ",", compression=compression)
    except (ValueError, OSError, EOFError, pd.errors.ParserError) as error:
        raise LadderError(f"{path}: cannot read as {kind}: {str(error).splitlines()[0]}") from None
    if kind != "parquet" and len(table.columns) == 1:
        header = str(table.columns[0])
        other = next((sep for sep in (";", "\t", ",", "|") if sep in header), None)
        if other is not None:
            raise LadderError(
                f"{path}: one column only, its header split by {other!r}: "
                f"a {kind} table is {'tab' if kind == 'tsv' else 'comma'}-separated"
            )
    return validate_table(table, source=str(path))


def check_output_table(path: str | os.PathLike, overwrite: bool) -> Path:
    """Refuse an output table path before any work: not .csv/.parquet, or existing unless `overwrite`."""
    path = Path(path)
    _check_suffix(path)
    if path.is_dir():
        raise LadderError(f"{path} is a directory; give a .csv, .tsv or .parquet file name")
    if path.exists() and not overwrite:
        raise LadderError(f"{path} exists; pass --overwrite to replace it")
    check_writable_destination(path)
    return path


def write_table(table: pd.DataFrame, path: str | os.PathLike, overwrite: bool = False) -> Path:
    """Validate and write atomically (temporary file, then rename); refuse to overwrite unless asked."""
    path = check_output_table(path, overwrite)
    table = validate_table(table, source=f"table for {path}")
    kind, compression = _table_format(path)
    with atomic_path(path) as temporary:
        if kind == "parquet":
            table.to_parquet(temporary, index=False)
        else:
            table.to_csv(temporary, index=False, sep="\t" if kind == "tsv" else ",", compression=compression)
    return path


def write_csv_atomic(frame: pd.DataFrame, path: str | os.PathLike) -> Path:
    """Write any frame (predictions, parameters) as CSV via a temporary file and a rename."""
    with atomic_path(path) as temporary:
        frame.to_csv(temporary, index=False)
    return Path(path)
