"""The classification side of a bench grid (`unikd.bench`): one stage is one `Trainer` run.

A student stage trains the pair's student architecture (MODEL.STUDENT) with the method's config, distilling
from the pair's teacher (MODEL.TEACHER, MODEL.TEACHER_CHECKPOINT) with TRAIN.SEED the grid's seed. Its result
is the run's summary.json; its number in the table is the test top-1 at the epoch selected on the validation
split (`test_top1_selected`; the best test epoch where the run holds out no validation data, which its
`selected_on` says). The two splits are fixed: grids may state `evaluation: {select: val, report: test}`.
"""
from __future__ import annotations

import json
import logging
from typing import Any

from yacs.config import CfgNode

from unikd.bench.grid import Grid, Stage
from unikd.bench.report import Column, TableSpec
from unikd.bench.task import BenchTask

from ..analysis import analyze
from ..config import RUN_ENVIRONMENT_KEYS, get_cfg, load_cfg
from ..distillers import get_distiller_class
from ..engine.trainer import LAST, SUMMARY, Trainer

logger = logging.getLogger(__name__)

MAIN = "test_top1_selected"
TABLE = TableSpec(
    title="Test top-1 (%) at the epoch selected on validation",
    main=Column(MAIN, "top-1"),
    csv_columns={
        "selected_on": str, "selected_epoch": int, "val_top1": float, MAIN: float, "best_top1": float,
        "best_epoch": int, "last_top1": float, "teacher_top1": float, "epochs": int, "num_train": int,
        "train_seconds": float,
    },
    shown=(Column("best_top1", "best test epoch (optimistic)"), Column("last_top1", "last epoch")),
    select=Column("val_top1", "val top-1"),
    teacher=Column("teacher_top1", "teacher"),
    baselines=("vanilla", "kd"),
    notes=("top-1: test top-1 at the epoch chosen on the validation split (the best test epoch for a run without "
           "one: results.csv's selected_on says which); 'best test epoch' is the optimistic number papers often "
           "report. The val columns are on the validation split, the one epochs and defaults are chosen on.",),
)
SPLITS = {"select": "val", "report": "test"}


class ClassificationTask(BenchTask):
    """Stages of `python -m classification bench --grid FILE` (see the module docstring)."""

    table = TABLE
    environment_keys = RUN_ENVIRONMENT_KEYS

    def __init__(self, grid: Grid):
        super().__init__(grid)
        for role, split in SPLITS.items():
            given = getattr(grid, role)
            if given not in (None, split):
                raise ValueError(f"{grid.path}: evaluation.{role} of a classification grid is the {split} split, "
                                 f"got {given!r}")

    def stage_config(self, stage: Stage, teacher_weights: str) -> CfgNode:
        opts = list(stage.overrides)
        if stage.method is not None:
            opts += ["MODEL.STUDENT", stage.pair.student, "MODEL.TEACHER", stage.teacher.arch,
                     "MODEL.TEACHER_CHECKPOINT", teacher_weights, "TRAIN.SEED", str(stage.seed)]
        return load_cfg(stage.config, opts + ["OUTPUT_DIR", str(stage.folder)])

    def default_config(self) -> CfgNode:
        return get_cfg()

    def teacher_weights(self, stage: Stage) -> str:
        return str(stage.folder / LAST)

    def reads_teacher(self, cfg: CfgNode) -> bool:
        """Every grid student names its pair's teacher: a vanilla one evaluates it (teacher top-1, test KD loss)."""
        return bool(cfg.MODEL.TEACHER and cfg.MODEL.TEACHER_CHECKPOINT)

    def learns_from_teacher(self, cfg: CfgNode) -> bool:
        return get_distiller_class(cfg.DISTILLER.NAME).NEEDS_TEACHER

    def train(self, stage: Stage, cfg: CfgNode, fresh: bool) -> dict[str, Any]:
        """Train from scratch when `fresh`; read a finished run's summary.json; else resume the run."""
        if fresh:
            return Trainer(cfg, overwrite=True).train()
        if (stage.folder / SUMMARY).is_file():
            return json.loads((stage.folder / SUMMARY).read_text(encoding="utf-8"))
        return Trainer(cfg, resume=True).train()

    def row(self, stage: Stage, result: dict[str, Any], teacher: dict[str, Any] | None) -> dict[str, Any]:
        return {"pair": stage.pair.label, "method": stage.method.label, "seed": stage.seed,
                **{key: result.get(key) for key in TABLE.csv_columns}}

    def headline(self, result: dict[str, Any]) -> str:
        val = result.get("val_top1")
        return f"test top-1 {result[MAIN]:.2f}" + (f", val top-1 {val:.2f}" if val is not None else "")

    def finish(self, students: list[Stage]) -> None:
        """The UniKD paper's analyses of every pair's methods at the grid's first seed (analysis/<pair>/), unless
        the grid says `analyze: false`."""
        if not self.grid.analyze:
            return
        first = self.grid.seeds[0]
        by_pair: dict[str, list] = {}
        for stage in students:
            if stage.seed == first:
                by_pair.setdefault(stage.pair.folder, []).append(stage.folder)
        for pair, folders in by_pair.items():
            logger.info("analyzing %s (seed %d, %d methods)", pair, first, len(folders))
            analyze(folders, self.grid.output_dir / "analysis" / pair)
