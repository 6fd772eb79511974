"""Bench outputs: results.csv (one row per run), methods.csv and results.md (one row per pair and method:
mean +- std over seeds, paired differences with 95% t-intervals), and results.png.

The main number of every run is its test top-1 at the epoch selected on the validation split
(`test_top1_selected`; the best test epoch when the runs hold out no validation data, which the table then
says). Each method is compared with the plain student (`vanilla`) and with `kd` of the same pair, paired by
seed; a difference counts only where its interval excludes zero (`unikd.core.stats`). A grid that names a
`reference` method (an ablation's default) also gets each method's validation top-1 and its paired difference
to the reference on validation: the split a default is chosen on, never the test split.
"""
from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

from unikd.core.stats import PairedDifference, mean_std, paired_to_baseline

from unikd.core.run_dir import atomic_write_text

BASELINES = ("vanilla", "kd")
MAIN = "test_top1_selected"
# results.csv's columns, in order, with the type each is read back as (`combine.read_results`).
CSV_COLUMNS: dict[str, type] = {
    "pair": str, "method": str, "seed": int, "selected_on": str, "selected_epoch": int, "val_top1": float,
    MAIN: float, "best_top1": float, "best_epoch": int, "last_top1": float, "teacher_top1": float, "epochs": int,
    "num_train": int, "train_seconds": float,
}


def aggregate(rows: list[dict[str, Any]], reference: str | None = None) -> list[dict[str, Any]]:
    """One entry per (pair, method), in first-seen order: mean and std of the selected, best (optimistic) and last
    test top-1, and the paired differences of the selected top-1 to each baseline of the same pair; with a
    `reference` method, also the mean and std of validation top-1 and its paired difference to the reference."""
    if reference is not None and any(row.get("val_top1") is None for row in rows):
        raise ValueError(f"the reference method {reference!r} is compared on validation top-1, but some runs hold "
                         "out no validation split (DATASET.VAL_SIZE 0)")
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for row in rows:
        groups.setdefault((row["pair"], row["method"]), []).append(row)
    differences: dict[tuple[str, str, str], PairedDifference] = {}
    on_val: dict[tuple[str, str], PairedDifference] = {}
    for pair in dict.fromkeys(p for p, _ in groups):
        by_seed = {m: {r["seed"]: r[MAIN] for r in members} for (p, m), members in groups.items() if p == pair}
        for baseline in BASELINES:
            for method, diff in paired_to_baseline(by_seed, baseline).items():
                differences[(pair, method, baseline)] = diff
        if reference is not None:
            val_by_seed = {m: {r["seed"]: r["val_top1"] for r in members}
                           for (p, m), members in groups.items() if p == pair}
            on_val.update({(pair, m): d for m, d in paired_to_baseline(val_by_seed, reference).items()})
    table = []
    for (pair, method), members in groups.items():
        teacher = [r["teacher_top1"] for r in members if r.get("teacher_top1") is not None]
        table.append({
            "pair": pair, "method": method, "seeds": len(members),
            "selected_on": "val" if all(r.get("selected_on") == "val" for r in members) else "test",
            "main": mean_std([r[MAIN] for r in members]),
            "best": mean_std([r["best_top1"] for r in members]),
            "last": mean_std([r["last_top1"] for r in members]),
            "teacher": teacher[0] if teacher else None,
            "vs": {b: differences.get((pair, method, b)) for b in BASELINES},
        })
        if reference is not None:
            table[-1].update(val=mean_std([r["val_top1"] for r in members]), val_vs_reference=on_val.get((pair, method)))
    return table


def _pm(value: tuple[float, float]) -> str:
    return f"{value[0]:.2f} +- {value[1]:.2f}"


def _difference(diff: PairedDifference | None) -> str:
    if diff is None:
        return "-"
    return f"**{diff}**" if diff.separated else str(diff)


def markdown_table(table: list[dict[str, Any]], reference: str | None = None) -> str:
    """The README-style table; a bold difference is one whose 95 % interval excludes zero. With a `reference`
    method it ends with two validation columns: top-1 and the paired difference to the reference."""
    on_val = all(entry["selected_on"] == "val" for entry in table)
    main = "test top-1 at the val-selected epoch" if on_val else "test top-1 (best test epoch, no validation split)"
    extra = f" val top-1 | val - {reference} [95% CI] |" if reference is not None else ""
    lines = [
        f"| pair | method | seeds | {main} | - vanilla [95% CI] | - KD [95% CI] | best test epoch (optimistic) "
        f"| last epoch | teacher |{extra}",
        "|---|---|---|---|---|---|---|---|---|" + "---|" * extra.count("|"),
    ]
    for e in table:
        teacher = f"{e['teacher']:.2f}" if e["teacher"] is not None else "-"
        validation = f" {_pm(e['val'])} | {_difference(e['val_vs_reference'])} |" if reference is not None else ""
        lines.append(
            f"| {e['pair']} | {e['method']} | {e['seeds']} | {_pm(e['main'])} | {_difference(e['vs']['vanilla'])} "
            f"| {_difference(e['vs']['kd'])} | {_pm(e['best'])} | {_pm(e['last'])} | {teacher} |{validation}"
        )
    notes = [
        "",
        "Mean +- sample std over seeds. Differences are paired by seed (same data order and initialisation), with "
        "95% t-intervals; **bold** ones exclude zero, and only those rank two methods.",
    ]
    return "\n".join(lines + notes) + "\n"


def _methods_rows(table: list[dict[str, Any]]) -> list[dict[str, Any]]:
    rows = []
    for e in table:
        row = {"pair": e["pair"], "method": e["method"], "seeds": e["seeds"], "selected_on": e["selected_on"],
               "mean": e["main"][0], "std": e["main"][1], "best_mean": e["best"][0], "last_mean": e["last"][0]}
        for baseline, diff in e["vs"].items():
            low, mean, high = (diff.low, diff.mean, diff.high) if diff else ("", "", "")
            row.update({f"minus_{baseline}": mean, f"minus_{baseline}_low": low, f"minus_{baseline}_high": high})
        if "val" in e:
            diff = e["val_vs_reference"]
            row.update({"val_mean": e["val"][0], "val_std": e["val"][1], "val_minus_reference": diff.mean if diff else "",
                        "val_minus_reference_low": diff.low if diff else "",
                        "val_minus_reference_high": diff.high if diff else ""})
        rows.append(row)
    return rows


def _write_csv(rows: list[dict[str, Any]], columns: list[str], path: Path) -> None:
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)


def _plot(table: list[dict[str, Any]], path: Path) -> None:
    """Left: the main top-1 per method with its std; right: each method minus vanilla with its 95 % interval."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = [f"{e['pair']}\n{e['method']}" for e in table]
    fig, (left, right) = plt.subplots(1, 2, figsize=(max(8.0, 1.4 * len(table)), 4.2))
    left.bar(range(len(table)), [e["main"][0] for e in table], yerr=[e["main"][1] for e in table], capsize=4)
    low = min(e["main"][0] - e["main"][1] for e in table)
    left.set_ylim(max(0.0, low - 2.0), None)
    left.set_ylabel("test top-1 (%), mean +- std over seeds")
    diffs = [(i, e["vs"]["vanilla"]) for i, e in enumerate(table) if e["vs"]["vanilla"] is not None]
    for i, diff in diffs:
        finite = diff.n > 1
        right.errorbar([i], [diff.mean], yerr=[[diff.mean - diff.low], [diff.high - diff.mean]] if finite else None,
                       fmt="o", color="C1" if diff.separated else "C7", capsize=4)
    right.axhline(0.0, color="k", linewidth=0.8)
    right.set_ylabel("minus vanilla (points), 95% interval")
    for ax in (left, right):
        ax.set_xticks(range(len(table)), labels, fontsize=6, rotation=90)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_reports(rows: list[dict[str, Any]], output_dir: Path, reference: str | None = None) -> None:
    """Rewrite results.csv, methods.csv, results.md and results.png in output_dir from all runs so far (with the
    validation columns of `reference` when the grid names one)."""
    output_dir.mkdir(parents=True, exist_ok=True)
    _write_csv(rows, list(CSV_COLUMNS), output_dir / "results.csv")
    table = aggregate(rows, reference)
    methods = _methods_rows(table)
    _write_csv(methods, list(methods[0]), output_dir / "methods.csv")
    atomic_write_text(markdown_table(table, reference), output_dir / "results.md")
    _plot(table, output_dir / "results.png")
