"""One report from the results.csv files of several parts of a grid (`python -m classification report`).

A grid too long for one sitting can be run in parts, each part writing its own results.csv; this module reads
them back and checks that they may be paired before `write_reports` ranks anything:
- a cell (pair, method, seed) found in more than one part must have the same validation and selected test
  top-1 in each: on one machine and thread count a run repeats bit for bit, so a cell run again in every part
  checks that the parts trained with the same teacher, data and code;
- every row of a pair must name the same teacher top-1 (one teacher per pair).
"""
from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

from .report import CSV_COLUMNS, MAIN, write_reports

# The values a cell run again in another part must repeat exactly.
_REPEATED = ("val_top1", MAIN)


def read_results(path: str | Path) -> list[dict[str, Any]]:
    """The typed rows of a bench results.csv; FileNotFoundError, or ValueError naming the file, line and column."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"bench results not found: {path} (a results.csv written by `bench`)")
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        missing = [c for c in CSV_COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise ValueError(f"{path}: not a bench results.csv, it lacks the columns {missing}")
        rows = []
        for line, raw in enumerate(reader, start=2):
            row = {}
            for column, kind in CSV_COLUMNS.items():  # an empty cell is None (no validation split, no teacher)
                text = raw[column]
                try:
                    row[column] = None if text == "" else kind(text)
                except ValueError:
                    raise ValueError(f"{path}, line {line}: {column} {text!r} is not a valid {kind.__name__}") from None
            rows.append(row)
    return rows


def combine_results(paths: list[str | Path]) -> list[dict[str, Any]]:
    """The rows of all `paths`, each cell once (first-seen order); ValueError where two parts disagree on a cell
    they both ran or on a pair's teacher top-1, naming both files."""
    cells: dict[tuple[str, str, int], tuple[dict[str, Any], Path]] = {}
    teachers: dict[str, tuple[float | None, Path]] = {}
    for path in map(Path, paths):
        for row in read_results(path):
            key = (row["pair"], row["method"], row["seed"])
            if key in cells:
                first, first_path = cells[key]
                differ = [c for c in _REPEATED if first[c] != row[c]]
                if differ:
                    raise ValueError(
                        f"{key[0]} {key[1]} seed {key[2]} differs between {first_path} and {path} in {differ} "
                        f"({[first[c] for c in differ]} vs {[row[c] for c in differ]}): the parts did not train "
                        "alike (another machine, thread count, teacher or code), so they cannot be paired"
                    )
                continue
            teacher, teacher_path = teachers.setdefault(row["pair"], (row["teacher_top1"], path))
            if teacher != row["teacher_top1"]:
                raise ValueError(f"pair {row['pair']} has teacher top-1 {teacher} in {teacher_path} but "
                                 f"{row['teacher_top1']} in {path}: one table pairs runs of one teacher only")
            cells[key] = (row, path)
    return [row for row, _ in cells.values()]


def report_results(paths: list[str | Path], output_dir: str | Path, reference: str | None = None) -> list[dict[str, Any]]:
    """Write results.csv, methods.csv, results.md and results.png into `output_dir` from the parts' results.csv
    files (with the validation columns of `reference`, as a grid naming it would); returns the combined rows."""
    rows = combine_results(paths)
    if reference is not None and reference not in {row["method"] for row in rows}:
        raise ValueError(f"reference method {reference!r} is in none of {[str(p) for p in paths]}")
    write_reports(rows, Path(output_dir), reference)
    return rows
