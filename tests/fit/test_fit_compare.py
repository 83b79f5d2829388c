"""`ladder compare`: paired bootstrap difference, P(A beats B), compute multiplier, decision accuracy."""

from __future__ import annotations

import os

import numpy as np
import pandas as pd
import pytest
from fit_synthetic import OLMO_DIR, STEP1, STEP2, loss_law, make_table, sigmoid_law

from ladder.fit.compare import compare, decision_accuracy, split_recipes
from ladder.fit.design import Target
from ladder.fit.methods import DEFAULT_METHOD, CombinedStep1

pytestmark = pytest.mark.slow  # trains models, spawns processes or refits the paper data

TARGET = Target("big", 2e9, 2e9 * 20 * 5)
# Through the anchor (L = 0, Acc = 1) that step 2 adds, so that the fitted family holds the truth.
ANCHORED = {**STEP2, "a": -0.75, "b": 1.0}


def _recipe_b(factor: float) -> dict:
    """B's law: A's with both terms slower by `factor` in compute, L_B(N, D) = L_A(N / sqrt(c), D / sqrt(c))."""
    root = np.sqrt(factor)
    return {**STEP1, "A": STEP1["A"] * root ** STEP1["alpha"], "B": STEP1["B"] * root ** STEP1["beta"]}


def _truth(factor: float) -> float:
    acc_a = sigmoid_law(ANCHORED, loss_law(STEP1, TARGET.N, TARGET.D))
    acc_b = sigmoid_law(ANCHORED, loss_law(_recipe_b(factor), TARGET.N, TARGET.D))
    return float(100 * (acc_a - acc_b))


def test_the_multiplier_solves_the_definition_exactly_on_noiseless_ladders():
    table_a = make_table(step2=ANCHORED, seed=0)
    table_b = make_table(step2=ANCHORED, step1=_recipe_b(2.0), seed=1)
    # last_n=1, window=1: the points are the law itself (no averaging over a curve).
    comparison = compare(table_a, table_b, [TARGET], bootstrap=40, last_n=1, window=1)
    row = comparison.rows.iloc[0]
    assert row["multiplier"] == pytest.approx(2.0, rel=0.03)
    assert row["diff"] == pytest.approx(_truth(2.0), abs=0.05)
    assert row["paired"] and row["p_a_beats_b"] == 1.0


def test_known_offset_inside_the_90_percent_intervals():
    """Synthetic ladders whose B needs 1.5x A's compute: the true difference and multiplier fall in
    their 90% intervals in about 90% of draws (LADDER_COMPARE_DRAWS=200 for the docs' figure). The
    ladders follow the paper's five-parameter law, so the paper's method fits them (and quickly)."""
    draws = int(os.environ.get("LADDER_COMPARE_DRAWS", "10"))
    factor = 1.5
    inside_diff, inside_multiplier, p_values = [], [], []
    for draw in range(draws):
        table_a = make_table(step2=ANCHORED, loss_noise=0.004, acc_noise=0.006, checkpoints=12, seed=2 * draw)
        table_b = make_table(
            step2=ANCHORED,
            step1=_recipe_b(factor),
            loss_noise=0.004,
            acc_noise=0.006,
            checkpoints=12,
            seed=2 * draw + 1,
        )
        row = compare(table_a, table_b, [TARGET], bootstrap=100, seed=draw, method="paper").rows.iloc[0]
        inside_diff.append(row["diff_lo"] <= _truth(factor) <= row["diff_hi"])
        inside_multiplier.append(row["multiplier_lo"] <= factor <= row["multiplier_hi"])
        p_values.append(row["p_a_beats_b"])
    print(
        f"\n{draws} draws: difference inside {np.mean(inside_diff):.0%}, multiplier inside "
        f"{np.mean(inside_multiplier):.0%}, median P(A beats B) {np.median(p_values):.2f}"
    )
    assert np.mean(inside_diff) >= 0.7 and np.mean(inside_multiplier) >= 0.7
    assert np.median(p_values) > 0.5  # A is the better recipe


def test_one_table_with_a_recipe_column_and_decision_accuracy():
    table = pd.concat(
        [
            make_table(step2=ANCHORED, seed=0).assign(recipe="good"),
            make_table(step2=ANCHORED, step1=_recipe_b(3.0), seed=1).assign(recipe="bad"),
        ],
        ignore_index=True,
    )
    names, table_a, table_b = split_recipes(table)
    assert names == ("good", "bad") and "recipe" not in table_a
    comparison = compare(table_a, table_b, [TARGET], bootstrap=40, names=names)
    # Both ladders are fitted by the default method, as `ladder fit` fits them.
    for fit in comparison.fits:
        assert fit.options.method == DEFAULT_METHOD == "ensemble"
        assert all(isinstance(task.step1, CombinedStep1) for task in fit.tasks.values())
    decisions = comparison.decisions
    assert list(decisions["size"]) == ["s1", "s2", "s3"] and (decisions["agreement"] == 1.0).all()
    assert decision_accuracy(*comparison.fits).equals(decisions)
    with pytest.raises(Exception, match="compare takes two"):
        split_recipes(pd.concat([table, table.assign(recipe="third")]))


@pytest.mark.skipif(not OLMO_DIR.is_dir(), reason=f"the paper's ladder data is not in {OLMO_DIR}")
def test_paper_reruns_against_originals_are_no_different():
    """Two identical recipes: the paper's ladder with its 1xC originals against the same ladder
    with the 1xC reruns in their place."""
    from ladder.runs.olmo_import import import_olmo

    table = import_olmo(OLMO_DIR)
    ladder = table[(table["role"] == "ladder") & table["multiplier"].isin([1, 2, 5, 10])]
    originals = ladder[~ladder["rerun"]]
    reruns = pd.concat(
        [ladder[ladder["multiplier"] != 1].loc[lambda t: ~t["rerun"]], ladder[ladder["rerun"]].assign(rerun=False)],
        ignore_index=True,
    )
    seven = Target("7B-4T", 6887575552, 3945065873408)
    rows = compare(originals, reruns, [seven], bootstrap=100, tasks=["mmlu", "hellaswag", "arc_easy", "piqa"]).rows
    assert rows["paired"].all()
    assert ((rows["multiplier_lo"] <= 1) & (rows["multiplier_hi"] >= 1)).mean() >= 0.75
    assert ((rows["p_a_beats_b"] > 0.1) & (rows["p_a_beats_b"] < 0.9)).mean() >= 0.5


def _cli(capsys, *argv: str) -> tuple[int, str, str]:
    from ladder.cli import main

    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_compare_cli_writes_its_outputs(tmp_path, capsys):
    make_table(step2=ANCHORED, seed=0).to_csv(tmp_path / "a.csv", index=False)
    make_table(step2=ANCHORED, step1=_recipe_b(2.0), seed=1).to_csv(tmp_path / "b.csv", index=False)
    code, out, err = _cli(
        capsys,
        "compare",
        str(tmp_path / "a.csv"),
        str(tmp_path / "b.csv"),
        "--target",
        "big:2e9:2e11",
        "--bootstrap",
        "40",
        "--names",
        "new,old",
        "--out",
        str(tmp_path / "out"),
    )
    assert code == 0, err
    assert "P(new>old)" in out and "decision accuracy" in out
    assert {p.name for p in (tmp_path / "out").iterdir()} == {"compare.csv", "decisions.csv", "compare.png"}


@pytest.mark.parametrize(
    "argv, message",
    [
        (["a.csv", "b.csv", "c.csv"], "give two tables"),
        (["a.csv"], "no 'recipe' column"),
        (["a.csv", "b.csv", "--bootstrap", "0"], "--bootstrap must be >= 20"),
        (["a.csv", "b.csv", "--names", "x"], "--names"),
        (["a.csv", "missing.csv"], "no such results table"),
    ],
)
def test_compare_bad_input_one_line_exit_2_nothing_written(tmp_path, capsys, argv, message):
    make_table(step2=ANCHORED, seed=0).to_csv(tmp_path / "a.csv", index=False)
    make_table(step2=ANCHORED, seed=1).to_csv(tmp_path / "b.csv", index=False)
    paths = [str(tmp_path / arg) if arg.endswith(".csv") else arg for arg in argv]
    code, _, err = _cli(capsys, "compare", *paths, "--target", "big:2e9:2e11", "--out", str(tmp_path / "out"))
    assert code == 2 and err.count("\n") == 1 and message in err and "Traceback" not in err
    assert not (tmp_path / "out").exists()
