"""An output folder (e.g. results/<name>/): refused when it holds results already, written all at once.

A report's files are first written into a temporary folder beside the destination, then moved
into it (each file atomically) only when every one has been written: a failure, Ctrl-C or
SIGTERM leaves the destination as it was, with no partial results and no temporary folder. Files of the folder that a report does not write
(a results table beside the report, say) are left alone.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path

from ladder.atomic import check_writable_destination, terminate_as_interrupt
from ladder.errors import LadderError


def check_out_dir(out_dir: str | os.PathLike, names: Iterable[str], overwrite: bool) -> Path:
    """Refuse an output folder that holds any of the files `names` already, unless asked to overwrite."""
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise LadderError(f"{out_dir} exists and is not a directory")
    existing = [name for name in names if (out_dir / name).exists()]
    if existing and not overwrite:
        raise LadderError(f"{out_dir} already holds results ({', '.join(existing)}); pass --overwrite to replace them")
    check_writable_destination(out_dir / "report.md")  # before the work, not after it
    return out_dir


def write_folder(
    out_dir: str | os.PathLike, write: Callable[[Path], object], *, replaces: Iterable[str] = ()
) -> list[Path]:
    """Have `write(folder)` write the files into a temporary folder, then move them into `out_dir`.

    Of the files named in `replaces`, those `write` did not write this time are removed from
    `out_dir`, as what is left of the results being replaced (a plot this report no longer draws).
    Returns the files' paths in `out_dir`, by name.
    """
    out_dir = Path(out_dir)
    with terminate_as_interrupt():  # SIGTERM, like Ctrl-C, leaves no staging folder
        try:
            out_dir.parent.mkdir(parents=True, exist_ok=True)
            staging = Path(tempfile.mkdtemp(dir=out_dir.parent, prefix=f".{out_dir.name}.tmp-"))
        except OSError as error:
            raise LadderError(f"{out_dir}: cannot write results here: {error.strerror or error}") from None
        try:
            write(staging)
            out_dir.mkdir(exist_ok=True)
            for stale in set(replaces) - {path.name for path in staging.iterdir()}:
                (out_dir / stale).unlink(missing_ok=True)
            written = []
            for path in sorted(staging.iterdir()):
                os.replace(path, out_dir / path.name)
                written.append(out_dir / path.name)
            return written
        finally:
            shutil.rmtree(staging, ignore_errors=True)
