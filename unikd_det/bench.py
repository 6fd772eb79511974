"""The detection side of a bench grid (`unikd.bench`): one stage is one `DistillTrainer` run.

A stage is its config file (a teacher, a plain student or a DistillRCNN student) with the grid's and the
method's overrides, SEED = the grid's seed (a teacher keeps its config's), DATASETS.TEST = the grid's
`evaluation.report` set and, where given, its `evaluation.select` set, and for a DistillRCNN student the pair's
teacher (DISTILL.TEACHER.CONFIG and .WEIGHTS). Seeding with SEED before the trainer is built gives every
student of a seed the same initial weights and data order, so the table compares methods, not initialisations;
a resumed stage continues its RNG states and data stream (`DistillTrainer`), so it ends with the weights of an
uninterrupted one. The built-in Fashion-MNIST mosaic sets are generated on first use (datasets/fashion_mosaic).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from detectron2.config import CfgNode, get_cfg
from detectron2.utils.env import seed_all_rng

from unikd.bench.grid import Grid, Stage
from unikd.bench.report import Column, TableSpec
from unikd.bench.task import STAGE_CONFIG, BenchTask

from .config import add_distill_config, merge_config_file
from .data import register_builtin_datasets
from .data.register import register_coco_datasets
from .trainer import DistillTrainer

DATA_ROOT = Path("datasets") / "fashion_mosaic"  # relative to the current directory, as tools/train_net.py's
METRICS = ("AP", "AP50", "AP75")
TABLE = TableSpec(
    title="COCO box AP (%)",
    main=Column("AP", "AP"),
    csv_columns={"AP": float, "AP50": float, "AP75": float, "select_AP": float, "teacher_AP": float},
    shown=(Column("AP50", "AP50"), Column("AP75", "AP75")),
    select=Column("select_AP", "AP on the selection set"),
    teacher=Column("teacher_AP", "teacher AP"),
    baselines=("student",),
)


def box_metrics(cfg: CfgNode, results: dict[str, Any]) -> dict[str, dict[str, float]]:
    """{test set: {AP, AP50, AP75}} from `DistillTrainer.test`'s result, which Detectron2 flattens to the one
    set's metrics when DATASETS.TEST names a single set."""
    names = cfg.DATASETS.TEST
    by_set = {names[0]: results["bbox"]} if len(names) == 1 else {name: results[name]["bbox"] for name in names}
    return {name: {m: float(bbox[m]) for m in METRICS} for name, bbox in by_set.items()}


class DetectionTask(BenchTask):
    """Stages of `tools/bench_det.py --grid FILE` (see the module docstring)."""

    table = TABLE

    def __init__(self, grid: Grid):
        super().__init__(grid)
        if grid.report is None:
            raise ValueError(f"{grid.path}: a detection grid needs evaluation.report, the data set of its table")
        self.test_sets = tuple(name for name in (grid.report, grid.select) if name is not None)

    def prepare(self) -> None:
        register_builtin_datasets(self.test_sets, DATA_ROOT)

    def default_config(self) -> CfgNode:
        cfg = get_cfg()
        add_distill_config(cfg)
        return cfg

    def stage_config(self, stage: Stage, teacher_weights: str) -> CfgNode:
        cfg = self.default_config()
        add_distill_config(cfg)
        merge_config_file(cfg, str(stage.config))
        cfg.merge_from_list(list(stage.overrides))
        register_coco_datasets(cfg)  # the config's own COCO-format sets (DATASETS.COCO), then the built-in ones
        register_builtin_datasets(cfg.DATASETS.TRAIN, DATA_ROOT)
        cfg.OUTPUT_DIR = str(stage.folder)
        cfg.DATASETS.TEST = self.test_sets
        if stage.seed is not None:
            cfg.SEED = stage.seed
        if cfg.MODEL.META_ARCHITECTURE == "DistillRCNN":
            if stage.teacher.config is None:
                raise ValueError(f"{self.grid.path}: teacher {stage.teacher.name} needs `config` (its Detectron2 "
                                 "config) for a DistillRCNN student; `checkpoint` alone does not say how to build it")
            cfg.DISTILL.TEACHER.CONFIG = str(stage.teacher.config)
            cfg.DISTILL.TEACHER.WEIGHTS = teacher_weights
        cfg.freeze()
        return cfg

    def teacher_weights(self, stage: Stage) -> str:
        return str(stage.folder / "model_final.pth")

    def reads_teacher(self, cfg: CfgNode) -> bool:
        return cfg.MODEL.META_ARCHITECTURE == "DistillRCNN"

    def train(self, stage: Stage, cfg: CfgNode, fresh: bool) -> dict[str, Any]:
        """Train (resuming from the folder's last checkpoint unless `fresh`) and evaluate on DATASETS.TEST."""
        stage.folder.mkdir(parents=True, exist_ok=True)
        (stage.folder / STAGE_CONFIG).write_text(cfg.dump(), encoding="utf-8")  # also what tools/analyze_det reads
        seed_all_rng(cfg.SEED)
        trainer = DistillTrainer(cfg)
        trainer.resume_or_load(resume=not fresh)
        if trainer.start_iter < trainer.max_iter:
            return box_metrics(cfg, trainer.train())
        return box_metrics(cfg, DistillTrainer.test(cfg, trainer.model))

    def row(self, stage: Stage, result: dict[str, Any], teacher: dict[str, Any] | None) -> dict[str, Any]:
        select = self.grid.select
        return {"pair": stage.pair.label, "method": stage.method.label, "seed": stage.seed,
                **result[self.grid.report], "select_AP": result[select]["AP"] if select else None,
                "teacher_AP": teacher[self.grid.report]["AP"] if teacher else None}

    def headline(self, result: dict[str, Any]) -> str:
        return ", ".join(f"AP {metrics['AP']:.2f} on {name}" for name, metrics in result.items())
