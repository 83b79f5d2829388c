"""`ladder.fit` stays a light library: no torch, no matplotlib, no report layer, in any of its modules;
the report layer's `ladder decide` (which fits designs) imports neither torch nor matplotlib either."""

from __future__ import annotations

import json
import pkgutil
import subprocess
import sys

import ladder.fit

FORBIDDEN = ("torch", "matplotlib", "ladder.report")


def test_no_module_of_ladder_fit_imports_torch_matplotlib_or_the_report_layer():
    modules = sorted(f"ladder.fit.{info.name}" for info in pkgutil.walk_packages(ladder.fit.__path__))
    assert {"ladder.fit.pipeline", "ladder.fit.backtest", "ladder.fit.step1", "ladder.fit.design"} <= set(modules)
    # One interpreter for both checks (each costs an import of pandas and scipy): ladder.fit first,
    # then ladder.report.decide on top of it.
    code = (
        f"import importlib, json, sys\n"
        f"def found(prefixes):\n"
        f"    return sorted(m for m in sys.modules if any(m == p or m.startswith(p + '.') for p in prefixes))\n"
        f"for name in {modules!r}: importlib.import_module(name)\n"
        f"fit = found({FORBIDDEN!r})\n"
        f"import ladder.report.decide\n"
        f"print(json.dumps({{'fit': fit, 'decide': found(('torch', 'matplotlib'))}}))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    found = json.loads(result.stdout)
    assert found["fit"] == [], f"ladder.fit imported {' '.join(found['fit'])}"
    assert found["decide"] == [], f"ladder.report.decide imported {' '.join(found['decide'])}"
