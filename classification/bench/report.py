"""Bench outputs: results.csv (one row per run), results.md (mean +- std over seeds) and results.png."""
from __future__ import annotations

import csv
import statistics
from pathlib import Path
from typing import Any

from ..engine.checkpoint import atomic_write_text

_CSV_COLUMNS = [
    "pair", "method", "seed", "best_top1", "best_top5", "best_epoch", "last_top1", "last_top5",
    "teacher_top1", "epochs", "num_train", "train_seconds",
]


def _mean_std(values: list[float]) -> tuple[float, float]:
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def aggregate(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One entry per (pair, method), in first-seen order, with mean and std of best and last top-1."""
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for row in rows:
        groups.setdefault((row["pair"], row["method"]), []).append(row)
    table = []
    for (pair, method), members in groups.items():
        best = _mean_std([r["best_top1"] for r in members])
        last = _mean_std([r["last_top1"] for r in members])
        teacher = [r["teacher_top1"] for r in members if r.get("teacher_top1") is not None]
        table.append({
            "pair": pair, "method": method, "seeds": len(members), "best": best, "last": last,
            "teacher": teacher[0] if teacher else None,
        })
    return table


def markdown_table(table: list[dict[str, Any]]) -> str:
    lines = [
        "| pair | method | seeds | best top-1 | last top-1 | teacher top-1 |",
        "|---|---|---|---|---|---|",
    ]
    for entry in table:
        teacher = f"{entry['teacher']:.2f}" if entry["teacher"] is not None else "-"
        lines.append(
            f"| {entry['pair']} | {entry['method']} | {entry['seeds']} | {entry['best'][0]:.2f} +- "
            f"{entry['best'][1]:.2f} | {entry['last'][0]:.2f} +- {entry['last'][1]:.2f} | {teacher} |"
        )
    return "\n".join(lines) + "\n"


def _bar_chart(table: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = [f"{e['pair']}\n{e['method']}" for e in table]
    fig, ax = plt.subplots(figsize=(max(4.0, 1.1 * len(table)), 4.0))
    ax.bar(range(len(table)), [e["best"][0] for e in table], yerr=[e["best"][1] for e in table], capsize=4)
    ax.set_xticks(range(len(table)), labels, fontsize=7)
    low = min(e["best"][0] - e["best"][1] for e in table)
    ax.set_ylim(max(0.0, low - 2.0), None)
    ax.set_ylabel("best top-1 (%), mean +- std over seeds")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write_reports(rows: list[dict[str, Any]], output_dir: Path) -> None:
    """Rewrite results.csv, results.md and results.png in output_dir from all runs so far."""
    output_dir.mkdir(parents=True, exist_ok=True)
    with open(output_dir / "results.csv", "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=_CSV_COLUMNS, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    table = aggregate(rows)
    atomic_write_text(markdown_table(table), output_dir / "results.md")
    _bar_chart(table, output_dir / "results.png")
