"""One report from the results.csv files of several parts of a grid (`python -m classification report`,
`python -m unikd.bench report`).

A grid too long for one sitting can be run in parts, each part writing its own results.csv; this module reads
them back and checks that they may be paired before `write_report` ranks anything:
- a cell (pair, method, seed) found in more than one part must have the same selection-split and reported
  value in each: on one machine and thread count a run repeats bit for bit, so a cell run again in every part
  checks that the parts trained with the same teacher, data and code;
- every row of a pair must name the same teacher value (one teacher per pair).
"""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .report import TableSpec, read_results, write_report


def combine_results(paths: Sequence[str | Path], spec: TableSpec) -> list[dict[str, Any]]:
    """The rows of all `paths`, each cell once (first-seen order); ValueError where two parts disagree on a cell
    they both ran (in the spec's selection or main metric) or on a pair's teacher value, naming both files."""
    repeated = [c.key for c in (spec.select, spec.main) if c is not None]
    teacher_key = spec.teacher.key if spec.teacher is not None else None
    cells: dict[tuple[str, str, int], tuple[dict[str, Any], Path]] = {}
    teachers: dict[str, tuple[float | None, Path]] = {}
    for path in map(Path, paths):
        for row in read_results(path, spec):
            key = (row["pair"], row["method"], row["seed"])
            if key in cells:
                first, first_path = cells[key]
                differ = [c for c in repeated if first[c] != row[c]]
                if differ:
                    raise ValueError(
                        f"{key[0]} {key[1]} seed {key[2]} differs between {first_path} and {path} in {differ} "
                        f"({[first[c] for c in differ]} vs {[row[c] for c in differ]}): the parts did not train "
                        "alike (another machine, thread count, teacher or code), so they cannot be paired"
                    )
                continue
            if teacher_key is not None:
                teacher, teacher_path = teachers.setdefault(row["pair"], (row[teacher_key], path))
                if teacher != row[teacher_key]:
                    raise ValueError(f"pair {row['pair']} has teacher {teacher} in {teacher_path} but "
                                     f"{row[teacher_key]} in {path}: one table pairs runs of one teacher only")
            cells[key] = (row, path)
    return [row for row, _ in cells.values()]


def report_results(paths: Sequence[str | Path], output_dir: str | Path, spec: TableSpec,
                   reference: str | None = None, baselines: Sequence[str] | None = None) -> list[dict[str, Any]]:
    """Write the report (`write_report`) into `output_dir` from the parts' results.csv files (with the
    selection-split columns of `reference`, as a grid naming it would); returns the combined rows."""
    rows = combine_results(paths, spec)
    if reference is not None and reference not in {row["method"] for row in rows}:
        raise ValueError(f"reference method {reference!r} is in none of {[str(p) for p in paths]}")
    write_report(rows, spec, output_dir, baselines, reference)
    return rows
