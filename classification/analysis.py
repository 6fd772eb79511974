"""`python -m classification analyze`: the UniKD paper's analyses (Figures 3, 4 and 5) of finished runs.

For each run folder (its `config.yaml`, `best_student.pth` or `last.pth`, and `metrics.csv`) this computes
the student's and the teacher's logits over the test split, and writes into the output folder:

- `loss_curves.png` (Fig. 3): test cross-entropy and test KD loss (teacher-student KL at T = 4) per epoch,
  read from the `test_ce` / `test_kd` columns of each run's metrics.csv;
- `logit_diff_cdf.png` (Fig. 4): the CDF of |z_s - z_t| over the test set, one curve per run;
- `corr_diff.png` (Fig. 5): |corr(z_s) - corr(z_t)| per run, class by class;
- `analysis.json`: the numbers behind them.
"""
from __future__ import annotations

import csv
import json
import logging
from contextlib import nullcontext
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from unikd.core.logit_analysis import (
    abs_logit_differences,
    correlation_difference,
    logit_agreement,
    plot_difference_cdfs,
    plot_heatmaps,
)
from unikd.core.run_dir import atomic_write_text

from .config import load_cfg
from .data import build_data
from .engine.checkpoint import load_network
from .engine.trainer import load_named_teacher, predict
from .models import build_model

logger = logging.getLogger("classification.analyze")

STUDENT_FILES = ("best_student.pth", "last.pth")


def _student_checkpoint(run_dir: Path) -> Path:
    for name in STUDENT_FILES:
        if (run_dir / name).is_file():
            return run_dir / name
    raise FileNotFoundError(f"{run_dir} holds neither {' nor '.join(STUDENT_FILES)}: is it a finished run?")


def run_logits(run_dir: str | Path, device: str = "cpu",
               teacher_cache: dict[tuple, Tensor] | None = None) -> tuple[Tensor, Tensor]:
    """(student logits, teacher logits), each [N_test, K], of a finished run on its config's test split; the
    student is the run's selected epoch (best_student.pth), or its last one. `teacher_cache` (shared by the
    runs of one call) keeps the teacher's logits per teacher and test set, so a grid's runs score it once."""
    run_dir = Path(run_dir)
    config = run_dir / "config.yaml"
    if not config.is_file():
        raise FileNotFoundError(f"{config} not found: analyze needs a run folder written by `train`")
    cfg = load_cfg(config, ["TRAIN.DEVICE", device, "TRAIN.PROGRESS", False])
    data = build_data(cfg, torch.device(device))
    teacher_cache = {} if teacher_cache is None else teacher_cache
    key = (cfg.MODEL.TEACHER, cfg.MODEL.TEACHER_CHECKPOINT, cfg.DATASET.NAME, cfg.DATASET.ROOT, device)
    if key not in teacher_cache:
        teacher = load_named_teacher(cfg, data.num_classes, data.family)
        if teacher is None:
            raise ValueError(f"{config} names no teacher (MODEL.TEACHER, MODEL.TEACHER_CHECKPOINT): nothing to compare")
        teacher_cache[key] = predict(teacher.to(device), data.test, False, nullcontext)[0].cpu()
    student = build_model(cfg.MODEL.STUDENT, data.num_classes, data.family)
    load_network(student, _student_checkpoint(run_dir), cfg.MODEL.STUDENT, data.num_classes)
    return predict(student.to(device), data.test, False, nullcontext)[0].cpu(), teacher_cache[key]


def read_loss_curves(run_dir: str | Path) -> dict[str, list[float]]:
    """{"epoch", "test_ce", "test_kd"} from a run's metrics.csv (evaluated epochs only)."""
    path = Path(run_dir) / "metrics.csv"
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found")
    with open(path, encoding="utf-8") as f:
        rows = [row for row in csv.DictReader(f) if row.get("test_ce")]
    if not rows or "test_kd" not in rows[0]:
        raise ValueError(f"{path} has no test_ce / test_kd columns: the run predates their logging")
    return {key: [float(row[key]) for row in rows] for key in ("epoch", "test_ce", "test_kd")}


def _plot_loss_curves(curves: dict[str, dict[str, list[float]]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(8.0, 3.4))
    for name, curve in curves.items():
        for ax, key in zip(axes, ("test_ce", "test_kd")):
            ax.plot(curve["epoch"], curve[key], marker="o", markersize=3, label=name)
    for ax, label in zip(axes, ("test cross-entropy", "test KD loss (KL, T = 4)")):
        ax.set_xlabel("epoch")
        ax.set_ylabel(label)
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def run_label(run_dir: Path) -> str:
    """A short name for a run: its method and seed folders when it lives in a bench grid, else its name."""
    parts = run_dir.resolve().parts
    return "/".join(parts[-2:]) if parts[-1].startswith("seed") else parts[-1]


def analyze(runs: Sequence[str | Path], output_dir: str | Path, device: str = "cpu") -> dict[str, Any]:
    """Write the three figures and analysis.json for `runs` into `output_dir`; return the JSON content."""
    if not runs:
        raise ValueError("analyze needs at least one --run folder")
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    results, diffs, corr, curves, teacher_cache = {}, {}, {}, {}, {}
    for run in map(Path, runs):
        name = run_label(run)
        if name in results:
            raise ValueError(f"two runs share the label {name!r}; analyze them separately")
        logger.info("analyzing %s", run)
        student, teacher = run_logits(run, device, teacher_cache)
        loss_curves = read_loss_curves(run)
        diffs[name] = abs_logit_differences(student, teacher)
        corr[name] = correlation_difference(student, teacher)
        curves[name] = loss_curves
        results[name] = {
            "run": str(run),
            **logit_agreement(student, teacher),
            "final_test_ce": loss_curves["test_ce"][-1],
            "final_test_kd": loss_curves["test_kd"][-1],
        }
    _plot_loss_curves(curves, output_dir / "loss_curves.png")
    plot_difference_cdfs(diffs, output_dir / "logit_diff_cdf.png", "teacher-student logit differences (test set)")
    plot_heatmaps(corr, output_dir / "corr_diff.png", "|corr(student logits) - corr(teacher logits)|")
    atomic_write_text(json.dumps(results, indent=2), output_dir / "analysis.json")
    return results
