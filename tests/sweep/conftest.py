"""The sweep's tests wait on training subprocesses with tests/train's helpers (spawn.py)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "train"))
