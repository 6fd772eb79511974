"""The one bench report of both tasks: results.csv, results.json, methods.csv, results.md and results.png.

A task describes its table once (`TableSpec`): the reported metric every method is ranked on (`main`), the
metrics shown beside it, the metric of the selection split (`select`: compared with the grid's `reference`
method, the split defaults are chosen on, never the reported one) and the teacher's. Rows are one run each
(pair, method, seed and the spec's columns); the report groups them by pair and method and gives

- with several seeds: mean +- sample std of every metric, and the paired difference of `main` to every baseline
  (same pair and seed: same initialisation and data order) with its 95% t-interval (`unikd.core.stats`),
  marked `*` where the interval excludes zero, which is the only case in which two methods are ranked;
- with one seed: the plain numbers, and the sentence that one seed ranks nothing.
"""
from __future__ import annotations

import csv
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from unikd.core.run_dir import atomic_write_text
from unikd.core.stats import PairedDifference, mean_std, paired_to_baseline

CONFIDENCE = 0.95
KEY_COLUMNS: dict[str, type] = {"pair": str, "method": str, "seed": int}


@dataclass(frozen=True)
class Column:
    """A metric of the rows (`key`) and its table header."""

    key: str
    header: str


@dataclass(frozen=True)
class TableSpec:
    """What a task's bench table shows (see the module docstring). `csv_columns` are results.csv's columns after
    pair, method and seed, with the type each is read back as; `baselines` are the methods every method is
    paired with where a grid names no `compare`; `notes` are printed under the table."""

    title: str
    main: Column
    csv_columns: Mapping[str, type]
    shown: tuple[Column, ...] = ()
    select: Column | None = None
    teacher: Column | None = None
    baselines: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()

    @property
    def columns(self) -> dict[str, type]:
        """Every column of results.csv, in order."""
        return {**KEY_COLUMNS, **self.csv_columns}


@dataclass
class MethodSummary:
    """One pair and method over its seeds: (mean, std) per metric, the teacher's value, and paired differences of
    `main` to each baseline and of `select` to the reference."""

    pair: str
    method: str
    title: str
    seeds: list[int]
    main: tuple[float, float]
    shown: dict[str, tuple[float, float]]
    select: tuple[float, float] | None
    teacher: float | None
    vs: dict[str, PairedDifference | None] = field(default_factory=dict)
    select_vs_reference: PairedDifference | None = None


def _mean_std_of(members: Sequence[Mapping[str, Any]], key: str) -> tuple[float, float] | None:
    values = [row[key] for row in members]
    return None if any(v is None for v in values) else mean_std(values)


def _paired(groups: dict[tuple[str, str], list[dict[str, Any]]], key: str, baseline: str
            ) -> dict[tuple[str, str], PairedDifference]:
    """{(pair, method): paired difference of `key` to `baseline` of the same pair, over the seeds both ran}."""
    result = {}
    for pair in dict.fromkeys(p for p, _ in groups):
        by_seed = {m: {r["seed"]: r[key] for r in members} for (p, m), members in groups.items() if p == pair}
        result.update({(pair, m): d for m, d in paired_to_baseline(by_seed, baseline, CONFIDENCE).items()})
    return result


def aggregate(rows: Sequence[Mapping[str, Any]], spec: TableSpec, baselines: Sequence[str] = (),
              reference: str | None = None, titles: Mapping[str, str] | None = None) -> list[MethodSummary]:
    """One summary per (pair, method), in first-seen order (see `MethodSummary`); `titles` name the methods in
    the table (default: their labels)."""
    if reference is not None and (spec.select is None or any(row.get(spec.select.key) is None for row in rows)):
        raise ValueError(f"the reference method {reference!r} is compared on the selection split, but some runs "
                         "were scored on none (a classification run with DATASET.VAL_SIZE 0, or a grid without "
                         "evaluation.select)")
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for row in rows:
        groups.setdefault((row["pair"], row["method"]), []).append(dict(row))
    vs = {baseline: _paired(groups, spec.main.key, baseline) for baseline in baselines}
    to_reference = _paired(groups, spec.select.key, reference) if reference is not None else {}
    summaries = []
    for (pair, method), members in groups.items():
        teacher = [r[spec.teacher.key] for r in members if r.get(spec.teacher.key) is not None] if spec.teacher else []
        summaries.append(MethodSummary(
            pair=pair, method=method, title=(titles or {}).get(method, method), seeds=[r["seed"] for r in members],
            main=mean_std([r[spec.main.key] for r in members]),
            shown={c.key: _mean_std_of(members, c.key) for c in spec.shown},
            select=_mean_std_of(members, spec.select.key) if spec.select else None,
            teacher=teacher[0] if teacher else None,
            vs={b: vs[b].get((pair, method)) for b in baselines},
            select_vs_reference=to_reference.get((pair, method)),
        ))
    return summaries


def _value(value: tuple[float, float] | None, one_seed: bool) -> str:
    if value is None:
        return "-"
    return f"{value[0]:.2f}" if one_seed else f"{value[0]:.2f} +- {value[1]:.2f}"


def _difference(diff: PairedDifference | None) -> str:
    if diff is None or diff.n < 2:
        return "-"
    return f"{diff} *" if diff.separated else str(diff)


def _row(cells: Sequence[str]) -> str:
    return "| " + " | ".join(cells) + " |"


def _rankings(summaries: Sequence[MethodSummary], spec: TableSpec, reference: str | None) -> list[str]:
    """One sentence per pair of methods whose interval excludes zero."""
    ranked = []
    for s in summaries:
        compared = [(b, spec.main.header, d) for b, d in s.vs.items()]
        if reference is not None and spec.select is not None:
            compared.append((reference, spec.select.header, s.select_vs_reference))
        for baseline, header, diff in compared:
            if diff is not None and diff.n > 1 and diff.separated:
                side = "above" if diff.mean > 0 else "below"
                ranked.append(f"- {s.pair}: {s.title} is {side} {baseline} in {header} ({diff}).")
    return ranked


def markdown_table(summaries: Sequence[MethodSummary], spec: TableSpec, baselines: Sequence[str] = (),
                   reference: str | None = None, heading: str | None = None) -> str:
    """The table of `summaries` under `heading` (default: the spec's title) with how to read it (see the module
    docstring)."""
    one_seed = all(len(s.seeds) == 1 for s in summaries)
    level = f"{CONFIDENCE:.0%}"
    headers = ["pair", "method"] + ([] if one_seed else ["seeds"]) + [spec.main.header]
    headers += [] if one_seed else [f"{spec.main.header} - {b} [{level} CI]" for b in baselines]
    headers += [c.header for c in spec.shown] + ([spec.teacher.header] if spec.teacher else [])
    if spec.select is not None and any(s.select is not None for s in summaries):
        headers.append(spec.select.header)
        if reference is not None and not one_seed:
            headers.append(f"{spec.select.header} - {reference} [{level} CI]")
    lines = [heading or spec.title, "", _row(headers), _row(["---"] * len(headers))]
    for s in summaries:
        cells = [s.pair, s.title] + ([] if one_seed else [str(len(s.seeds))]) + [_value(s.main, one_seed)]
        cells += [] if one_seed else [_difference(s.vs.get(b)) for b in baselines]
        cells += [_value(s.shown[c.key], one_seed) for c in spec.shown]
        cells += [f"{s.teacher:.2f}" if s.teacher is not None else "-"] if spec.teacher else []
        if len(cells) < len(headers):
            cells.append(_value(s.select, one_seed))
        if len(cells) < len(headers):
            cells.append(_difference(s.select_vs_reference))
        lines.append(_row(cells))
    lines.append("")
    if one_seed:
        lines.append("One seed per method: plain numbers, and they rank nothing (between seeds a method moves about "
                     "as much as the methods differ). Run the grid with three or more seeds to compare methods.")
    else:
        lines.append(f"Mean +- sample std over seeds. 'X - Y': the mean paired difference to method Y over the seeds "
                     f"both ran (same initialisation and data order), with its {level} t-interval; `*` marks an "
                     "interval that excludes zero, the only case in which two methods are ranked.")
        ranked = _rankings(summaries, spec, reference)
        lines += ["", "Ranked:", *ranked] if ranked else ["", "No interval excludes zero: this table ranks no methods."]
    lines += ["", *spec.notes] if spec.notes else []
    return "\n".join(lines) + "\n"


def methods_rows(summaries: Sequence[MethodSummary], spec: TableSpec) -> list[dict[str, Any]]:
    """methods.csv: one row per pair and method, every mean, std and paired difference as numbers."""
    rows = []
    for s in summaries:
        row: dict[str, Any] = {"pair": s.pair, "method": s.method, "seeds": len(s.seeds),
                               f"{spec.main.key}_mean": s.main[0], f"{spec.main.key}_std": s.main[1]}
        for column in spec.shown:
            value = s.shown[column.key]
            row[f"{column.key}_mean"], row[f"{column.key}_std"] = value if value is not None else ("", "")
        if spec.teacher is not None:
            row[spec.teacher.key] = "" if s.teacher is None else s.teacher
        differences = {f"minus_{b}": d for b, d in s.vs.items()}
        if spec.select is not None:
            row[f"{spec.select.key}_mean"], row[f"{spec.select.key}_std"] = s.select if s.select else ("", "")
            differences["select_minus_reference"] = s.select_vs_reference
        for name, diff in differences.items():
            finite = diff is not None and diff.n > 1
            row[name] = diff.mean if diff is not None else ""
            row[f"{name}_low"], row[f"{name}_high"] = (diff.low, diff.high) if finite else ("", "")
        rows.append(row)
    return rows


def _write_csv(rows: Sequence[Mapping[str, Any]], columns: Sequence[str], path: Path) -> None:
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=list(columns), extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)


def _plot(summaries: Sequence[MethodSummary], spec: TableSpec, baseline: str | None, path: Path) -> None:
    """Left: `main` per method with its std; right: each method minus `baseline` with its 95% interval."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = [f"{s.pair}\n{s.title}" for s in summaries]
    fig, (left, right) = plt.subplots(1, 2, figsize=(max(8.0, 1.4 * len(summaries)), 4.2))
    left.bar(range(len(summaries)), [s.main[0] for s in summaries], yerr=[s.main[1] for s in summaries], capsize=4)
    left.set_ylim(max(0.0, min(s.main[0] - s.main[1] for s in summaries) - 2.0), None)
    left.set_ylabel(f"{spec.main.header}, mean +- std over seeds")
    for i, s in enumerate(summaries):
        diff = s.vs.get(baseline) if baseline else None
        if diff is not None and diff.n > 1:
            right.errorbar([i], [diff.mean], yerr=[[diff.mean - diff.low], [diff.high - diff.mean]], fmt="o",
                           color="C1" if diff.separated else "C7", capsize=4)
    right.axhline(0.0, color="k", linewidth=0.8)
    right.set_ylabel(f"minus {baseline} (points), {CONFIDENCE:.0%} interval" if baseline else "no baseline")
    for ax in (left, right):
        ax.set_xticks(range(len(summaries)), labels, fontsize=6, rotation=90)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_report(rows: Sequence[Mapping[str, Any]], spec: TableSpec, output_dir: str | Path,
                 baselines: Sequence[str] | None = None, reference: str | None = None,
                 titles: Mapping[str, str] | None = None, heading: str | None = None) -> str:
    """Write results.csv and results.json (every row), methods.csv, results.md and results.png into `output_dir`
    and return the markdown. `baselines` default to the spec's; those that ran none of the rows are left out."""
    output = Path(output_dir)
    output.mkdir(parents=True, exist_ok=True)
    present = {row["method"] for row in rows}
    baselines = [b for b in (spec.baselines if baselines is None else baselines) if b in present]
    summaries = aggregate(rows, spec, baselines, reference, titles)
    _write_csv(rows, list(spec.columns), output / "results.csv")
    methods = methods_rows(summaries, spec)
    _write_csv(methods, list(methods[0]), output / "methods.csv")
    atomic_write_text(json.dumps({"rows": list(rows), "methods": methods}, indent=2), output / "results.json")
    markdown = markdown_table(summaries, spec, baselines, reference, heading)
    atomic_write_text(markdown, output / "results.md")
    _plot(summaries, spec, baselines[0] if baselines else None, output / "results.png")
    return markdown


def read_results(path: str | Path, spec: TableSpec) -> list[dict[str, Any]]:
    """The typed rows of a results.csv written by `write_report`; FileNotFoundError, or ValueError naming the file,
    line and column. An empty cell is None (a run scored on no selection split, a teacher not evaluated)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"bench results not found: {path} (a results.csv written by a bench run)")
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        missing = [c for c in spec.columns if c not in (reader.fieldnames or [])]
        if missing:
            raise ValueError(f"{path}: not a bench results.csv, it lacks the columns {missing}")
        rows = []
        for line, raw in enumerate(reader, start=2):
            row = {}
            for column, kind in spec.columns.items():
                text = raw[column]
                try:
                    row[column] = None if text == "" else kind(text)
                except ValueError:
                    raise ValueError(f"{path}, line {line}: {column} {text!r} is not a valid {kind.__name__}") from None
            rows.append(row)
    return rows
