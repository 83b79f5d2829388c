"""`ladder.fit` stays a light library: no torch, no matplotlib, no report layer, in any of its modules."""

from __future__ import annotations

import pkgutil
import subprocess
import sys

import ladder.fit

FORBIDDEN = ("torch", "matplotlib", "ladder.report")


def test_no_module_of_ladder_fit_imports_torch_matplotlib_or_the_report_layer():
    modules = sorted(f"ladder.fit.{info.name}" for info in pkgutil.walk_packages(ladder.fit.__path__))
    assert {"ladder.fit.pipeline", "ladder.fit.backtest", "ladder.fit.step1"} <= set(modules)
    code = (
        f"import importlib, sys\n"
        f"for name in {modules!r}: importlib.import_module(name)\n"
        f"found = sorted(m for m in sys.modules if any(m == f or m.startswith(f + '.') for f in {FORBIDDEN!r}))\n"
        f"print(' '.join(found))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == [], f"ladder.fit imported {result.stdout.strip()}"
