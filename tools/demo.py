#!/usr/bin/env python
"""The main job on built-in data: detection (teacher, student, UniKD student; an AP table), then
classification (teacher, then students without KD, with KD and with UniKD; a top-1 table).

    python tools/demo.py [--teacher-config configs/Demo/teacher-R18.yaml] [--output-dir output/demo] [--fresh]
                         [--part all|detection|classification] [--det-methods student unikd ...]

Detection:

1. Generates (once) the Fashion-MNIST mosaic detection set and registers it.
2. Trains the teacher (default: ResNet-18 FPN for 250 iterations, 2.8x the students' budget; from
   scratch on the CPU it ends clearly stronger than an R50-FPN could in the same minutes).
3. Trains the ResNet-18 FPN student alone for 90 iterations (configs/Demo/student-R18.yaml).
4. Trains the same student with UniKD from that teacher (configs/Demo/UniKD-R18.yaml).
5. Evaluates the three with COCOEvaluator on the validation mosaics and prints AP/AP50/AP75.
`--det-methods` replaces steps 3-4 by any of the STUDENT_STAGES below (the same 90-iteration schedule,
seed and initial weights for each), e.g. the README's baseline table:
`--teacher-config configs/Demo/teacher-R50.yaml --det-methods student kd dkd fitnet fitnet_kd reviewkd unikd`.

Classification (classification/configs/bench/fashion_mnist_demo.yaml, run by the bench grid runner):
a resnet56 teacher on 12k Fashion-MNIST images for 2 epochs, then resnet20 students on a 3000-image
subset for 5 epochs without KD, with KD and with UniKD; top-1 on the 10k test images.

Every stage checkpoints and resumes: rerunning after an interruption continues where it stopped,
and a finished stage is only evaluated again. `--fresh` deletes the output folder first.
"""
from __future__ import annotations

import argparse
import logging
import shutil
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from detectron2.config import CfgNode, get_cfg  # noqa: E402
from detectron2.utils.env import seed_all_rng  # noqa: E402
from detectron2.utils.logger import setup_logger  # noqa: E402
from tabulate import tabulate  # noqa: E402

from classification.bench import run_grid  # noqa: E402
from unikd_det import add_distill_config  # noqa: E402
from unikd_det.config import merge_config_file  # noqa: E402
from unikd_det.data import register_fashion_mosaic  # noqa: E402
from unikd_det.trainer import DistillTrainer  # noqa: E402

# Student stages by method name: (table title, config). `--det-methods` picks and orders them.
STUDENT_STAGES = {
    "student": ("Student R18-FPN (no KD)", "configs/Demo/student-R18.yaml"),
    "kd": ("Student R18-FPN + ROI-KD", "configs/Demo/KD-R18.yaml"),
    "dkd": ("Student R18-FPN + DKD", "configs/Demo/DKD-R18.yaml"),
    "fitnet": ("Student R18-FPN + FitNet", "configs/Demo/FitNet-R18.yaml"),
    "fitnet_kd": ("Student R18-FPN + FitNet + KD", "configs/Demo/FitNet-KD-R18.yaml"),
    "reviewkd": ("Student R18-FPN + ReviewKD (KR)", "configs/Demo/ReviewKD-R18.yaml"),
    "unikd": ("Student R18-FPN + UniKD", "configs/Demo/UniKD-R18.yaml"),
}
DEFAULT_DET_METHODS = ("student", "unikd")
METRICS = ("AP", "AP50", "AP75")
CLASSIFICATION_GRID = REPO / "classification" / "configs" / "bench" / "fashion_mnist_demo.yaml"


def stage_config(config_file: str, output_dir: Path, teacher_config: str, teacher_weights: Path) -> CfgNode:
    cfg = get_cfg()
    add_distill_config(cfg)
    merge_config_file(cfg, str(REPO / config_file))
    cfg.OUTPUT_DIR = str(output_dir)
    if cfg.MODEL.META_ARCHITECTURE == "DistillRCNN":
        cfg.DISTILL.TEACHER.CONFIG = teacher_config
        cfg.DISTILL.TEACHER.WEIGHTS = str(teacher_weights)
    cfg.freeze()
    return cfg


def train_and_evaluate(cfg: CfgNode) -> dict[str, float]:
    """Train (resuming from the stage's last checkpoint, if any) and evaluate with COCOEvaluator.

    Seeding with cfg.SEED first gives both students the same initial weights and data order, so the
    table compares the methods rather than two random initialisations."""
    seed_all_rng(cfg.SEED)
    trainer = DistillTrainer(cfg)
    trainer.resume_or_load(resume=True)
    if trainer.start_iter < trainer.max_iter:
        trainer.train()  # DefaultTrainer's EvalHook evaluates once after the last iteration
        return trainer._last_eval_results["bbox"]
    return DistillTrainer.test(cfg, trainer.model)["bbox"]


def run_detection(args: argparse.Namespace, output: Path, logger: logging.Logger) -> str:
    """Train and evaluate the three detection stages; returns the AP table (also saved to results.md)."""
    logger.info("Preparing the Fashion-MNIST mosaic data in %s", args.data_dir)
    register_fashion_mosaic(args.data_dir)
    teacher_weights = output / "teacher" / "model_final.pth"
    stages = [(None, "teacher", args.teacher_config)]
    stages += [(STUDENT_STAGES[m][0], m, STUDENT_STAGES[m][1]) for m in args.det_methods]
    rows, start = [], time.perf_counter()
    for index, (title, name, config_file) in enumerate(stages, 1):
        cfg = stage_config(config_file, output / name, args.teacher_config, teacher_weights)
        title = title or f"Teacher R{cfg.MODEL.RESNETS.DEPTH}-FPN"
        logger.info("[%d/%d] %s: %d iterations (%s)", index, len(stages), title, cfg.SOLVER.MAX_ITER, config_file)
        results = train_and_evaluate(cfg)
        rows.append([title, cfg.SOLVER.MAX_ITER] + [round(results[m], 2) for m in METRICS])
        logger.info("[%d/%d] %s done: AP %.2f (%.0f s elapsed)", index, len(stages), title, results["AP"],
                    time.perf_counter() - start)
    table = tabulate(rows, headers=["Model", "Iterations", *METRICS], tablefmt="github")
    (output / "results.md").write_text(table + "\n")
    return "COCO box AP on the Fashion-MNIST mosaic validation set (200 images, 128x128):\n" + table


def run_classification(output: Path) -> str:
    """Run the classification demo grid (resumable); returns its top-1 table."""
    setup_logger(name="classification")
    folder = output / "classification"
    run_grid(CLASSIFICATION_GRID, output_dir=folder)
    return (
        "Fashion-MNIST top-1 (%), resnet56 -> resnet20, 10k test images "
        f"({CLASSIFICATION_GRID.relative_to(REPO)}):\n" + (folder / "results.md").read_text()
    )


def main(argv: list[str] | None = None) -> list[str]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--teacher-config", default="configs/Demo/teacher-R18.yaml")
    parser.add_argument("--output-dir", default=str(REPO / "output" / "demo"))
    parser.add_argument("--data-dir", default=str(REPO / "datasets" / "fashion_mosaic"))
    parser.add_argument("--fresh", action="store_true", help="delete the output folder and train from scratch")
    parser.add_argument("--part", choices=("all", "detection", "classification"), default="all")
    parser.add_argument("--det-methods", nargs="+", choices=sorted(STUDENT_STAGES), default=list(DEFAULT_DET_METHODS),
                        help="detection student stages after the teacher (default: %(default)s)")
    args = parser.parse_args(argv)

    setup_logger(name="detectron2")
    logger = setup_logger(name="unikd_demo", abbrev_name="demo")
    logger.setLevel(logging.INFO)
    output = Path(args.output_dir)
    if args.fresh and output.exists():
        shutil.rmtree(output)
    output.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    tables = []
    if args.part in ("all", "detection"):
        tables.append(run_detection(args, output, logger))
    if args.part in ("all", "classification"):
        tables.append(run_classification(output))
    print("\n" + "\n\n".join(tables))
    print(f"\nTotal time: {time.perf_counter() - start:.0f} s; tables saved under {output}")
    return tables


if __name__ == "__main__":
    main()
