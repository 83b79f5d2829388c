"""deb:<name> sources: the readers on files in the packages' formats, and the installed packages."""

from __future__ import annotations

import gzip
from pathlib import Path

import pytest

from ladder.config import DataConfig
from ladder.data import prepare_corpus
from ladder.data.debian import (
    DPKG_INFO,
    _dictd_number,
    gcide_documents,
    package_text_files,
    wordnet_documents,
)
from ladder.errors import LadderError


def dictd_digits(value: int) -> str:
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
    digits = ""
    while True:
        value, digit = divmod(value, 64)
        digits = alphabet[digit] + digits
        if not value:
            return digits


def test_dictd_numbers():
    assert _dictd_number("A") == 0 and _dictd_number("BA") == 64 and _dictd_number("Kj") == 10 * 64 + 35
    assert all(_dictd_number(dictd_digits(v)) == v for v in (0, 63, 64, 123_456_789))


def test_gcide_entries(tmp_path):
    entries = [
        "00-database-info\n   about\n",
        'Apple \\Ap"ple\\, n.\n   A fruit.\n',
        'Zebra \\Ze"bra\\, n.\n   A horse.\n',
    ]
    data = "".join(entries).encode()
    with gzip.open(tmp_path / "gcide.dict.dz", "wb") as handle:
        handle.write(data)
    offsets = [0, len(entries[0].encode()), len((entries[0] + entries[1]).encode())]
    index = [
        f"{word}\t{dictd_digits(o)}\t{dictd_digits(len(e.encode()))}"
        for word, o, e in zip(["00-database-info", "apple", "zebra"], offsets, entries)
    ]
    index.append(f"pomme\t{dictd_digits(offsets[1])}\t{dictd_digits(len(entries[1].encode()))}")  # same entry
    (tmp_path / "gcide.index").write_text("\n".join(index) + "\n")
    assert list(gcide_documents(tmp_path / "gcide.dict.dz")) == entries[1:]
    (tmp_path / "gcide.index").write_text("broken line\n")
    with pytest.raises(LadderError, match=r"gcide.index:1: expected"):
        list(gcide_documents(tmp_path / "gcide.dict.dz"))


def test_wordnet_synsets(tmp_path):
    (tmp_path / "data.adj").write_text(
        "  1 This software and database is being provided to you, the LICENSEE, by  \n"
        "00002312 00 a 02 abaxial 0 dorsal(p) 4 002 ;c 06037666 n 0000 ! 00002527 a 0101 | facing away from the axis  \n"
        "00001740 03 n 01 physical_entity 0 003 ~ 00001930 n 0000 | an entity that has physical existence  \n"
    )
    assert list(wordnet_documents(tmp_path / "data.adj")) == [
        "abaxial, dorsal (adjective): facing away from the axis\n",
        "physical entity (noun): an entity that has physical existence\n",
    ]


def test_which_files_of_a_package_are_read():
    paths = [
        Path(p)
        for p in (
            "/usr/share/doc/python3.11/html/_sources/library/json.rst.txt",
            "/usr/share/doc/python3.11/html/library/json.html",
            "/usr/share/wordnet/data.noun",
            "/usr/share/wordnet/index.noun",
            "/usr/share/dictd/gcide.dict.dz",
            "/usr/share/dictd/gcide.index",
            "/usr/share/doc/foo/README.txt",
        )
    ]
    assert [(f.path.name, f.kind) for f in package_text_files("python3.11-doc", paths)] == [("json.rst.txt", "page")]
    assert [(f.path.name, f.kind) for f in package_text_files("wordnet-base", paths)] == [("data.noun", "wordnet")]
    assert [(f.path.name, f.kind) for f in package_text_files("dict-gcide", paths)] == [("gcide.dict.dz", "gcide")]
    assert [f.path.name for f in package_text_files("foo", paths[-1:])] == ["README.txt"]


@pytest.mark.parametrize("package", ["dict-gcide", "wordnet-base", "python3.11-doc", "linux-doc-6.1"])
def test_installed_package_prepares(package, tmp_path):
    if not list(DPKG_INFO.glob(f"{package}.list")) + list(DPKG_INFO.glob(f"{package}:*.list")):
        pytest.skip(f"Debian package {package} is not installed")
    corpus = prepare_corpus(DataConfig(name=package, sources=[f"deb:{package}"], prepared_root=str(tmp_path)))
    assert corpus.manifest["train"]["documents"] > 100 and corpus.val_documents()
