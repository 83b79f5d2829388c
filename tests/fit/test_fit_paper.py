"""Acceptance: the paper's 7B chained errors from its public ladder results (../shared)."""

from __future__ import annotations

import pytest
from fit_synthetic import OLMO_DIR

from ladder.fit.pipeline import fit_table
from ladder.runs.olmo_import import PAPER_7B_ERRORS, import_olmo

pytestmark = [pytest.mark.skipif(not OLMO_DIR.is_dir(), reason=f"paper data not found at {OLMO_DIR}"), pytest.mark.slow]


@pytest.fixture(scope="module")
def paper_table():
    return import_olmo(OLMO_DIR)


def test_import_keeps_sizes_multipliers_reruns_and_the_7b(paper_table):
    ladder = paper_table[paper_table["role"] == "ladder"]
    assert set(ladder["size"]) == {"190M", "370M", "760M", "1B", "3B"}
    assert sorted(ladder["multiplier"].unique()) == [0.5, 1, 2, 5, 10]
    assert set(ladder.loc[ladder["rerun"], "run"]) == {f"{s}-1xC-rerun" for s in ("190M", "370M", "760M", "1B", "3B")}
    target = paper_table[(paper_table["run"] == "7B-4T") & (paper_table["task"] == "mmlu")].iloc[0]
    assert target["N"] == 6_887_575_552 and target["D"] == 3_945_065_873_408
    assert target["loss"] == pytest.approx(0.7770, abs=1e-4)  # category-weighted MMLU bpb
    assert list(dict.fromkeys(paper_table["task"])) == list(PAPER_7B_ERRORS)


def test_paper_grid_reproduces_the_7b_errors(paper_table):
    fit = fit_table(
        paper_table, sizes=["190M", "370M", "760M", "1B"], multipliers=[1, 2, 5, 10], bootstrap=0, method="paper"
    )
    assert len(fit.ladder_runs) == 16
    errors = fit.predictions.set_index("task")["abs_err"]
    for task, paper in PAPER_7B_ERRORS.items():
        assert errors[task] == pytest.approx(paper, abs=0.02), task
    mmlu = fit.predictions.set_index("task").loc["mmlu"]
    assert mmlu["pred_loss"] == pytest.approx(0.7869, abs=1e-3)


def test_a_13b_export_without_throughput_columns_becomes_a_target(tmp_path):
    """The 13B file format (no throughput columns: D = step x batch tokens), here from a 7B export."""
    import shutil

    for name in ("190M-1xC.csv", "370M-2xC.csv"):
        shutil.copy(OLMO_DIR / name, tmp_path / name)
    shutil.copy(OLMO_DIR / "peteish7_eval_full.csv", tmp_path / "peteish13_eval_final.csv")
    table = import_olmo(tmp_path)
    target = table[(table["run"] == "13B-5T") & (table["task"] == "hellaswag")].sort_values("step")
    raw = __import__("pandas").read_csv(OLMO_DIR / "peteish7_eval_full.csv")
    assert (target["role"] == "target").all() and target["N"].iloc[0] == 13_202_396_160
    assert target["D"].iloc[-1] == raw["_step"].iloc[-1] * raw["batch_size_in_tokens"].iloc[-1]
    logged = raw.dropna(subset=["eval/downstream_bpb/hellaswag_val_rc_5shot_bpb"])
    assert len(target) == int((logged["_step"] > 0).sum())  # step 0 (D = 0) left out
