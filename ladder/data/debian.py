"""`deb:<name>` sources: text shipped by Debian packages, read where dpkg installed it."""

from __future__ import annotations

from pathlib import Path

from ladder.data.sources import SourceFile
from ladder.errors import LadderError

DPKG_INFO = Path("/var/lib/dpkg/info")


def installed_files(package: str) -> list[Path]:
    """Files dpkg installed for `package` (any architecture); LadderError when not installed."""
    lists = sorted(DPKG_INFO.glob(f"{package}.list")) + sorted(DPKG_INFO.glob(f"{package}:*.list"))
    if not lists:
        raise LadderError(f"source deb:{package}: the Debian package is not installed (apt-get install {package})")
    paths = [Path(line.strip()) for line in lists[0].read_text().splitlines() if line.strip()]
    return [p for p in paths if p.is_file()]


def debian_files(package: str) -> tuple[SourceFile, ...]:
    files = [SourceFile(p, "text") for p in installed_files(package) if p.suffix in (".txt", ".rst")]
    if not files:
        raise LadderError(f"source deb:{package}: no text files found in the installed package")
    return tuple(files)
