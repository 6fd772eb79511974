"""`python -m classification bench --grid FILE`: pairs x methods x seeds, resumable, with a results table.

Grid file (YAML; paths relative to it):

    output_dir: output/bench/fashion_mnist     # relative to the current directory
    overrides: [SOLVER.EPOCHS, 8, ...]          # KEY VALUE pairs applied to every student run
    teachers:                                   # trained first (once), unless `checkpoint` is given;
      resnet56: {config: ../fashion_mnist/teacher_resnet56.yaml, overrides: [...]}  # the name is the
                                                # architecture unless `arch` names another
    pairs: [{teacher: resnet56, student: resnet20}]
    methods: {vanilla: ../fashion_mnist/vanilla.yaml, kd: ../fashion_mnist/kd.yaml, ...}
    seeds: [0, 1]

Every run lives in its own folder; a finished run (summary.json present) is skipped and an interrupted one
resumes from its last.pth, so rerunning the same command continues the grid.
"""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from ..config import load_cfg
from ..engine.trainer import LAST, SUMMARY, Trainer
from .report import write_reports

logger = logging.getLogger("classification.bench")

_GRID_KEYS = {"output_dir", "overrides", "teachers", "pairs", "methods", "seeds"}


@dataclass
class Run:
    """One cell of the grid (or a teacher): where it lives and how to configure it."""

    name: str
    config: Path
    opts: list[str]
    output_dir: Path

    @property
    def finished(self) -> bool:
        return (self.output_dir / SUMMARY).is_file()

    def summary(self) -> dict[str, Any]:
        return json.loads((self.output_dir / SUMMARY).read_text())


def _str_opts(values: list[Any]) -> list[str]:
    return [str(v) for v in values]


def load_grid(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"bench grid not found: {path}")
    grid = yaml.safe_load(path.read_text()) or {}
    unknown = set(grid) - _GRID_KEYS
    missing = {"pairs", "methods", "seeds"} - set(grid)
    if unknown or missing:
        raise KeyError(f"{path}: unknown keys {sorted(unknown)}, missing keys {sorted(missing)}")
    grid["_dir"] = path.parent
    return grid


def plan_runs(grid: dict[str, Any], output_dir: Path) -> tuple[dict[str, Run], list[tuple[dict[str, Any], Run]]]:
    """(teacher runs by name, [(cell labels, student run)]) for the whole grid."""
    base_dir = grid["_dir"]
    teacher_specs = grid.get("teachers") or {}
    teachers = {}
    for name, spec in teacher_specs.items():
        if "checkpoint" in spec:
            continue
        teachers[name] = Run(
            f"teacher {name}", base_dir / spec["config"], _str_opts(spec.get("overrides", [])),
            output_dir / "teachers" / name,
        )
    cells = []
    common = _str_opts(grid.get("overrides", []))
    for pair in grid["pairs"]:
        teacher, student = pair["teacher"], pair["student"]
        spec = teacher_specs.get(teacher, {})
        teacher_ckpt = spec.get("checkpoint") or str(output_dir / "teachers" / teacher / LAST)
        arch = spec.get("arch", teacher)
        for method, config in grid["methods"].items():
            for seed in grid["seeds"]:
                label = {"pair": f"{teacher}->{student}", "method": method, "seed": seed}
                opts = common + _str_opts([
                    "MODEL.STUDENT", student, "MODEL.TEACHER", arch, "MODEL.TEACHER_CHECKPOINT", teacher_ckpt,
                    "TRAIN.SEED", seed,
                ])
                folder = output_dir / f"{teacher}-{student}" / method / f"seed{seed}"
                cells.append((label, Run(f"{label['pair']} {method} seed {seed}", base_dir / config, opts, folder)))
    return teachers, cells


def _execute(run: Run) -> dict[str, Any]:
    if run.finished:
        logger.info("skip %s (finished: %s)", run.name, run.output_dir)
        return run.summary()
    logger.info("run %s -> %s", run.name, run.output_dir)
    cfg = load_cfg(run.config, run.opts + ["OUTPUT_DIR", str(run.output_dir)])
    return Trainer(cfg, resume=True).train()


def run_grid(path: str | Path, output_dir: str | Path | None = None, dry_run: bool = False) -> list[dict[str, Any]]:
    """Train every teacher, then every cell (skipping finished ones); write results.csv/.md/.png."""
    grid = load_grid(path)
    out = Path(output_dir or grid.get("output_dir") or "output/bench")
    teachers, cells = plan_runs(grid, out)
    if dry_run:
        for run in [*teachers.values(), *(run for _, run in cells)]:
            print(f"{run.name}: {run.config} {' '.join(run.opts)} -> {run.output_dir}")
        return []
    for run in teachers.values():
        _execute(run)
    rows = []
    for index, (label, run) in enumerate(cells, start=1):
        logger.info("cell %d/%d", index, len(cells))
        rows.append({**label, **_execute(run)})
        write_reports(rows, out)
    return rows
