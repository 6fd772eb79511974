"""The repository stands alone: no file tracked by git points at a file outside it.

Users receive the repository and nothing else, so a comment, docstring, config or document may cite files
inside it (the design document is docs/DESIGN.md, cited by section) or public sources by name (repository
and file), but never the project's private planning folder next to the checkout. The patterns are built
from pieces below, so this file does not match itself.
"""
from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
_FOLDER = "shared"
OUTSIDE_PATTERNS = ("../" + _FOLDER, _FOLDER + "/notes", _FOLDER + "/DESIGN")
OUTSIDE_REFERENCE = re.compile("|".join(re.escape(pattern) for pattern in OUTSIDE_PATTERNS))
BINARY_PROBE = 8192  # bytes read to decide whether a file is binary
DESIGN_DOC = REPO / "docs" / "DESIGN.md"
# A design-section citation: the document's name (bare, with ".md", or as a path) followed by "section N" or
# "sections N and M"; group 1 is the token before the name (it must end in "docs/"), group 2 the extension,
# group 3 the section numbers. The examples in the tests below are built from pieces, so this file passes.
SECTION_REFERENCE = re.compile(r"(\S*?)DESIGN(\.md)? sections? (\d+(?:(?:,\s*|\s+and\s+|\s+or\s+)\d+)*)")


def tracked_files(root: Path = REPO) -> list[Path]:
    """Every file `git ls-files` lists under `root` that exists in the work tree (a deletion not yet
    committed leaves a listed path without a file)."""
    result = subprocess.run(["git", "ls-files", "-z"], cwd=root, capture_output=True, timeout=60)
    if result.returncode != 0:
        pytest.fail(f"git ls-files failed in {root} (run the tests from a git checkout): {result.stderr.decode()}")
    listing = result.stdout.decode("utf-8", errors="surrogateescape")
    paths = (root / name for name in listing.split("\0") if name)
    return [path for path in paths if path.is_file()]


def _text(path: Path) -> str | None:
    """The file's text, or None for a binary file (a NUL byte near the start, or not UTF-8)."""
    data = path.read_bytes()
    if b"\0" in data[:BINARY_PROBE]:
        return None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return None


def outside_references(paths: list[Path], root: Path = REPO) -> list[str]:
    """'file:line: text' for every line of the text files in `paths` that references a file outside the
    repository (OUTSIDE_PATTERNS); file names are relative to `root`."""
    hits = []
    for path in paths:
        text = _text(path)
        if text is None:
            continue
        name = path.relative_to(root).as_posix() if path.is_relative_to(root) else str(path)
        for number, line in enumerate(text.splitlines(), start=1):
            if OUTSIDE_REFERENCE.search(line):
                hits.append(f"{name}:{number}: {line.strip()}")
    return hits


def design_sections(design: Path = DESIGN_DOC) -> set[int]:
    """The numbers of the numbered sections ("## N. Title") of the design document."""
    return {int(m.group(1)) for m in re.finditer(r"^## (\d+)\. ", design.read_text(encoding="utf-8"), re.M)}


def stale_section_references(paths: list[Path], sections: set[int], root: Path = REPO) -> list[str]:
    """'file:line: text' for every design-section reference that does not read "docs/DESIGN.md section N"
    with N one of `sections` (a bare "DESIGN section N" cites the numbering of a document users do not have)."""
    hits = []
    for path in paths:
        text = _text(path)
        if text is None:
            continue
        name = path.relative_to(root).as_posix() if path.is_relative_to(root) else str(path)
        for number, line in enumerate(text.splitlines(), start=1):
            for match in SECTION_REFERENCE.finditer(line):
                prefix, extension, numbers = match.groups()
                cited = {int(n) for n in re.findall(r"\d+", numbers)}
                if not prefix.endswith("docs/") or not extension or not cited <= sections:
                    hits.append(f"{name}:{number}: {line.strip()}")
                    break
    return hits


def test_no_tracked_file_references_files_outside_the_repository():
    files = tracked_files()
    assert files, "git ls-files listed no files: run the tests from a git checkout"
    hits = outside_references(files)
    assert not hits, (
        "these lines point at files outside the repository; cite docs/DESIGN.md (by section) or the public "
        "source (repository and file) instead:\n" + "\n".join(hits)
    )


def test_the_checker_reports_a_reference_with_its_file_and_line(tmp_path):
    bad = tmp_path / "notes.py"
    bad.write_text(
        "# a clean line\n"
        f"# see {OUTSIDE_PATTERNS[0]}/DESIGN.md for the contract\n"
        "x = 1\n"
        f"y = '{OUTSIDE_PATTERNS[1]}/research/a.md'\n",
        encoding="utf-8",
    )
    clean = tmp_path / "clean.md"
    clean.write_text("Design: docs/DESIGN.md section 5.\n", encoding="utf-8")
    binary = tmp_path / "image.png"
    binary.write_bytes(b"\x89PNG\r\n\x1a\n\0\0" + OUTSIDE_PATTERNS[2].encode())

    hits = outside_references([bad, clean, binary], root=tmp_path)

    assert [hit.split(": ", 1)[0] for hit in hits] == ["notes.py:2", "notes.py:4"]
    assert OUTSIDE_PATTERNS[0] in hits[0] and OUTSIDE_PATTERNS[1] in hits[1]
    assert all(OUTSIDE_REFERENCE.search(pattern) for pattern in OUTSIDE_PATTERNS)


def test_every_design_section_reference_names_an_existing_section_of_docs_design():
    sections = design_sections()
    assert sections == set(range(1, max(sections) + 1)), f"docs/DESIGN.md sections are not numbered 1..N: {sections}"
    hits = stale_section_references(tracked_files(), sections)
    assert not hits, (
        "these lines cite a design section that is not 'docs/DESIGN.md section N' with N one of "
        f"{sorted(sections)}:\n" + "\n".join(hits)
    )


def test_the_section_checker_reports_stale_and_unknown_sections(tmp_path):
    design = tmp_path / "DESIGN.md"
    design.write_text("# Design\n\n## 1. One\n\n## 2. Two\n", encoding="utf-8")
    assert design_sections(design) == {1, 2}
    name = "DESIGN"
    source = tmp_path / "module.py"
    source.write_text(
        f'"""Loss ({name} section 2)."""\n'  # bare: the numbering of a document users do not have
        f"# docs/{name}.md section 2 and docs/{name}.md sections 1 and 2\n"  # fine
        f"# ({name}.md section 1)\n"  # no docs/ prefix
        f"# docs/{name}.md section 7\n"  # no such section
        f"# `docs/{name}.md` for the overview\n",  # no section cited: fine
        encoding="utf-8",
    )
    hits = stale_section_references([source], {1, 2}, root=tmp_path)
    assert [hit.split(": ", 1)[0] for hit in hits] == ["module.py:1", "module.py:3", "module.py:4"]
