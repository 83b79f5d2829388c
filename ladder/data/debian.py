"""`deb:<name>` sources: text shipped by Debian packages, read where dpkg installed it.

Files come from dpkg's own list (`/var/lib/dpkg/info/<name>.list`), so nothing is guessed.

| package                      | files read                              | one document              |
|------------------------------|-----------------------------------------|---------------------------|
| `dict-gcide`                 | /usr/share/dictd/gcide.dict.dz (+index) | one dictionary entry      |
| `wordnet-base`               | /usr/share/wordnet/data.{noun,verb,...} | one synset: words + gloss |
| `python3.11-doc`, `linux-doc-*` | html/_sources/**/*.rst.txt (Sphinx)  | one documentation page    |
| any other package            | its .txt / .rst / .md files             | as plain text             |
"""

from __future__ import annotations

import gzip
from collections.abc import Callable, Iterator
from pathlib import Path

from ladder.data.documents import SourceFile
from ladder.errors import LadderError

DPKG_INFO = Path("/var/lib/dpkg/info")
DICTD_BASE64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
WORDNET_POS = {"n": "noun", "v": "verb", "a": "adjective", "s": "adjective", "r": "adverb"}


def installed_files(package: str) -> list[Path]:
    """Files dpkg installed for `package` (any architecture); LadderError when not installed."""
    lists = sorted(DPKG_INFO.glob(f"{package}.list")) + sorted(DPKG_INFO.glob(f"{package}:*.list"))
    if not lists:
        raise LadderError(f"source deb:{package}: the Debian package is not installed (apt-get install {package})")
    paths = [Path(line.strip()) for line in lists[0].read_text().splitlines() if line.strip()]
    return sorted(p for p in paths if p.is_file())


def debian_files(package: str) -> tuple[SourceFile, ...]:
    """The files of an installed package that hold its text, each with its reader."""
    files = package_text_files(package, installed_files(package))
    if not files:
        raise LadderError(f"source deb:{package}: the installed package has no text files ladder can read")
    return tuple(files)


def package_text_files(package: str, paths: list[Path]) -> list[SourceFile]:
    """Which of a package's `paths` are read, and how (see the table above)."""
    if package == "dict-gcide":
        return [SourceFile(p, "gcide") for p in paths if p.name.endswith(".dict.dz")]
    if package == "wordnet-base":
        return [SourceFile(p, "wordnet") for p in paths if p.parent.name == "wordnet" and p.name.startswith("data.")]
    pages = [p for p in paths if "_sources" in p.parts and p.name.endswith(".rst.txt")]
    if pages:
        return [SourceFile(p, "page") for p in pages]
    return [SourceFile(p, "text") for p in paths if p.suffix in (".txt", ".rst", ".md")]


def page_documents(path: Path) -> Iterator[str]:
    """A whole documentation page is one document."""
    yield path.read_text(encoding="utf-8", errors="replace")


def gcide_documents(path: Path) -> Iterator[str]:
    """Entries of a dictd dictionary (`x.dict.dz` is gzip; `x.index` gives each entry's bytes)."""
    index = path.with_name(path.name.removesuffix(".dict.dz") + ".index")
    if not index.is_file():
        raise LadderError(f"{path}: its dictd index {index.name} is missing")
    text = gzip.open(path).read()
    spans: set[tuple[int, int]] = set()
    for number, line in enumerate(index.read_text(encoding="utf-8", errors="replace").splitlines(), start=1):
        fields = line.split("\t")
        if len(fields) < 3:
            raise LadderError(f"{index}:{number}: expected 'headword<TAB>offset<TAB>length'")
        if fields[0].startswith("00-database") or fields[0].startswith("00-gcide"):
            continue  # the database's own description, not dictionary text
        spans.add((_dictd_number(fields[1]), _dictd_number(fields[2])))
    for offset, length in sorted(spans):
        yield text[offset : offset + length].decode("utf-8", errors="replace")


def _dictd_number(digits: str) -> int:
    value = 0
    for digit in digits:
        value = value * 64 + DICTD_BASE64.index(digit)
    return value


def wordnet_documents(path: Path) -> Iterator[str]:
    """WordNet synsets as 'word, other word (noun): gloss' (data.* lines; license lines skipped)."""
    with open(path, encoding="utf-8", errors="replace") as handle:
        for line in handle:
            if line.startswith("  ") or "|" not in line:
                continue
            head, gloss = line.split("|", 1)
            fields = head.split()
            pos, n_words = WORDNET_POS.get(fields[2], fields[2]), int(fields[3], 16)
            words = [w.split("(")[0].replace("_", " ") for w in fields[4 : 4 + 2 * n_words : 2]]
            yield f"{', '.join(words)} ({pos}): {gloss.strip()}\n"


READERS: dict[str, Callable[[Path], Iterator[str]]] = {
    "page": page_documents,
    "gcide": gcide_documents,
    "wordnet": wordnet_documents,
}
