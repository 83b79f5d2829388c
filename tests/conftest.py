"""Session-wide. tests/ is on sys.path for the helper modules that tests of several folders share
(child_processes.py).

Collection imports torch, pandas, scipy, Hydra... whose objects live until the end. The garbage
collector does not run while they are imported, and its passes afterwards skip them (gc.freeze)
instead of scanning them all again each time: about 1.5 s of the quick suite's CPU time."""

import gc
import sys
from pathlib import Path

if str(Path(__file__).parent) not in sys.path:
    sys.path.insert(0, str(Path(__file__).parent))


def pytest_configure(config):
    gc.disable()


def pytest_collection_finish(session):
    gc.freeze()
    gc.enable()
