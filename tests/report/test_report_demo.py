"""The demo's report.md and loss curves, written beside the fit's outputs (the demo itself: tests/test_demo.py)."""

from __future__ import annotations

import pandas as pd
import pytest
from fit_synthetic import demo_shaped_table
from omegaconf import OmegaConf

from ladder.demo import accuracy_rise
from ladder.fit.pipeline import fit_table
from ladder.report.demo import format_accuracy_rise, write_demo_report
from ladder.report.fit import fit_markdown, write_fit_report

CFG = OmegaConf.create(
    {
        "ladder": {
            "sizes": ["femto", "pico", "nano"],
            "multipliers": [1, 2, 4],
            "targets": [{"name": "target", "size": "micro"}],
        },
        "tasks": {"names": ["copycolors", "corpus_cloze"], "max_questions": None},
    }
)


@pytest.mark.slow
def test_the_demo_report_embeds_the_fits_one_level_down(tmp_path):
    table = demo_shaped_table()
    fit = fit_table(table, bootstrap=0)
    out = tmp_path / "demo"
    out.mkdir()
    (out / "results.csv").write_text("the collected table")
    write_fit_report(fit, out)
    curves = pd.DataFrame({"run": ["a", "a", "b", "b"], "tokens": [1e3, 2e3, 1e3, 2e3], "loss": [3.0, 2.5, 2.9, 2.2]})
    rise = accuracy_rise(table)
    written = write_demo_report(fit, out, curves=curves, rise=rise, timings={"sweep": 61.4, "fit": 2.2}, cfg=CFG)
    assert written == [out / "loss_curves.png", out / "report.md"]
    text = (out / "report.md").read_text(encoding="utf-8")
    header, fit_part = text.split("\n## Ladder fit\n")
    assert header.startswith("# ladder demo: a CPU ladder predicts a held-out bigger model\n")
    assert "sizes femto, pico, nano x token multiples 1, 2, 4 (D = x 20 N); target: target (micro)." in header
    assert "(in-loop, all questions each)" in header and "Wall time: sweep 61 s, fit 2 s." in header
    assert "| copycolors | 0.25" in header and "![loss_curves](loss_curves.png)" in header
    nested = fit_markdown(fit, [out / "step1.png", out / "step2.png", out / "pred_vs_actual.png"])
    assert "\n## Ladder fit\n" + fit_part == "\n#" + nested.replace("\n## ", "\n### ")
    assert (out / "loss_curves.png").read_bytes().startswith(b"\x89PNG")
    assert (out / "results.csv").read_text() == "the collected table"
    assert format_accuracy_rise(rise).splitlines()[0].split()[0] == "task"
