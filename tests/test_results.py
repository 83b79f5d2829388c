"""The results table: schema validation, CSV/Parquet round trips."""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pytest

from ladder.errors import LadderError
from ladder.results import read_table, validate_table, write_table


def _table() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "run": ["a-1xC", "a-1xC", "b-1xC", "big"],
            "role": ["ladder", "ladder", "ladder", "target"],
            "N": [100, 100, 200, 1000],
            "D": [1e4, 2e4, 4e4, 1e6],
            "step": [1, 2, 2, 10],
            "task": ["t", "t", "t", "t"],
            "loss": [2.0, 1.8, 1.6, 1.2],
            "acc": [0.3, np.nan, 0.4, 0.6],
            "size": ["a", "a", "b", "big"],
            "rerun": [False, False, True, False],
            "chance": [0.25] * 4,
            "soft": [0.1, 0.2, 0.3, 0.4],
        }
    )


@pytest.mark.parametrize("suffix", [".csv", ".parquet", ".CSV", ".csv.gz", ".tsv", ".TSV.GZ"])
def test_round_trip_keeps_values_and_types(tmp_path, suffix):
    path = write_table(_table(), tmp_path / f"results{suffix}")
    table = read_table(path)
    assert table["N"].dtype == np.int64 and table["rerun"].dtype == bool
    assert table["rerun"].tolist() == [False, False, True, False]
    assert table["soft"].tolist() == [0.1, 0.2, 0.3, 0.4]  # extra metrics kept
    assert np.isnan(table["acc"].iloc[1])  # optional columns may be empty
    with pytest.raises(LadderError, match="pass --overwrite"):
        write_table(_table(), path)
    write_table(_table().assign(loss=1.0), path, overwrite=True)
    assert read_table(path)["loss"].tolist() == [1.0] * 4


@pytest.mark.parametrize(
    "change,message",
    [
        (lambda t: t.drop(columns=["task"]), "missing required column(s) task"),
        (lambda t: t.assign(role=["ladder", "ladder", "ladder", "other"]), "role must be"),
        (lambda t: t.assign(loss=[2.0, np.nan, 1.6, 1.2]), "'loss' has a missing"),
        (lambda t: t.assign(D=[1e4, np.inf, 4e4, 1e6]), "'D' has an infinite"),
        (lambda t: t.assign(N=[100, 100, 0, 1000]), "'N' must be > 0"),
        (lambda t: t.assign(acc=[0.3, 1.5, 0.4, 0.6]), "'acc' must lie in"),
        (lambda t: t.assign(step=[1, 1, 2, 10]), "duplicate row for run 'a-1xC'"),
        (lambda t: t.assign(N=[100, 101, 200, 1000]), "more than one role or N"),
        (lambda t: t.assign(rerun=["no", "x", "y", "z"]), "'rerun' must be true or false"),
        (lambda t: t.iloc[:0], "no rows"),
        (lambda t: t.assign(acc=[0.3, "abc", 0.4, 0.6]), "'acc' has a non-numeric value (row 2)"),
        (lambda t: t.assign(N=[100, 100, 200.5, 1000]), "'N' must hold whole numbers below 2^62 (row 3: 200.5)"),
        (lambda t: t.assign(N=[100, 100, 1e20, 1000]), "'N' must hold whole numbers below 2^62 (row 3: 1e+20)"),
        (lambda t: t.assign(step=[1, 2, -2, 10]), "column 'step' must be >= 0 (row 3: -2)"),
        (lambda t: t.assign(step=[1, 2, np.nan, 10]), "'step' has a missing or non-numeric value (row 3)"),
    ],
)
def test_validation_names_the_problem(change, message):
    with pytest.raises(LadderError, match=re.escape(message)):
        validate_table(change(_table()))


def test_read_errors(tmp_path):
    with pytest.raises(LadderError, match="no such results table"):
        read_table(tmp_path / "missing.csv")
    with pytest.raises(LadderError, match="are .csv, .tsv"):
        read_table(tmp_path / "table.json")
    semicolons = tmp_path / "semicolons.csv"
    _table().to_csv(semicolons, sep=";", index=False)
    with pytest.raises(LadderError, match="header split by ';': a csv table is comma-separated"):
        read_table(semicolons)


def test_optional_columns_may_be_empty(tmp_path):
    table = validate_table(_table().assign(acc=[0.3, None, 0.4, 0.6]))
    assert table["acc"].isna().tolist() == [False, True, False, False]
