"""The report layer's tests fit the synthetic tables of tests/fit (fit_synthetic.py)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "fit"))
