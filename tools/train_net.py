#!/usr/bin/env python
"""Train or evaluate a detector with distillation, in Detectron2's conventions.

    python tools/train_net.py --config-file configs/COCO/UniKD-R18-R101.yaml [--eval-only] [--resume | --overwrite]
        [--num-gpus N] [KEY VALUE ...]

`--eval-only` evaluates the student alone (the teacher is not built) with COCOEvaluator. A training run owns
its OUTPUT_DIR: one that already holds a run is refused unless `--resume` continues it or `--overwrite`
deletes it, and a second run into a folder in use is refused. Config files are read without YAML's Python
tags and weights without running code from them; every numeric value is checked before any work.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from detectron2.config import CfgNode, get_cfg  # noqa: E402
from detectron2.engine import default_argument_parser, default_setup, launch  # noqa: E402
from detectron2.utils import comm  # noqa: E402

from unikd_det import add_distill_config  # noqa: E402
from unikd_det.checkpoint import SafeDetectionCheckpointer  # noqa: E402
from unikd_det.config import merge_config_file, validate_config  # noqa: E402
from unikd.core.checks import check_resume_changes, resume_note, resume_notes  # noqa: E402
from unikd.core.cli import DEBUG_FLAG, add_debug_argument, run_main  # noqa: E402
from unikd.core.run_dir import OutputDirLock, claim_output_dir  # noqa: E402
from unikd_det.data import register_builtin_datasets  # noqa: E402
from unikd_det.data.register import register_coco_datasets  # noqa: E402
from unikd_det.trainer import DistillTrainer  # noqa: E402

# What a Detectron2 training run leaves in OUTPUT_DIR (what --overwrite deletes).
RUN_FILES = ("last_checkpoint", "model_*.pth", "metrics.json", "events.out.tfevents.*")
# What `--resume` may change; every other value must be the run's own (OUTPUT_DIR/config.yaml): more iterations
# extend a run, a smaller LR rescues a diverged one (DistillTrainer.resume_or_load applies it), and where and how
# often it checkpoints, evaluates and runs change no number of the run.
RESUME_MAY_CHANGE = frozenset({
    "SOLVER.MAX_ITER", "SOLVER.BASE_LR", "SOLVER.CHECKPOINT_PERIOD", "TEST.EVAL_PERIOD", "OUTPUT_DIR",
    "MODEL.DEVICE", "DATALOADER.NUM_WORKERS",
})
# Switches that may also come after the KEY VALUE overrides.
FLAGS = ("--resume", "--overwrite", "--eval-only", DEBUG_FLAG)


def argument_parser() -> argparse.ArgumentParser:
    """Detectron2's parser plus `--overwrite` and `--debug`."""
    parser = default_argument_parser()
    parser.add_argument(
        "--overwrite", action="store_true",
        help=f"delete the run already in OUTPUT_DIR ({', '.join(RUN_FILES)}; each file is named) and start over",
    )
    add_debug_argument(parser)
    return parser


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Parse the command line. Detectron2 collects everything after the first override into `opts`
    (argparse.REMAINDER), so `... SOLVER.MAX_ITER 10 --resume` would merge "--resume" as a key; the switches
    in FLAGS are taken out of `opts` and set wherever they appear."""
    args = argument_parser().parse_args(argv)
    for flag in FLAGS:
        if flag in args.opts:
            args.opts = [opt for opt in args.opts if opt != flag]
            setattr(args, flag[2:].replace("-", "_"), True)
    return args


def load_config(args: argparse.Namespace) -> CfgNode:
    """The frozen config of `--config-file` and the overrides, read safely and value-checked."""
    cfg = get_cfg()
    add_distill_config(cfg)
    merge_config_file(cfg, args.config_file)
    cfg.merge_from_list(args.opts)
    validate_config(cfg)
    cfg.freeze()
    return cfg


def setup(args: argparse.Namespace) -> CfgNode:
    """The checked config, Detectron2's setup, and the data sets it names registered: its own COCO-format sets
    (DATASETS.COCO) first, then any built-in mosaic set not registered yet."""
    cfg = load_config(args)
    default_setup(cfg, args)
    register_coco_datasets(cfg)
    register_builtin_datasets(cfg.DATASETS.TRAIN + cfg.DATASETS.TEST, REPO / "datasets" / "fashion_mosaic")
    return cfg


def claim_run(args: argparse.Namespace) -> OutputDirLock | None:
    """Lock OUTPUT_DIR for a training run and refuse one that would mix with a run already there.

    Called once, in the launching process before `launch` starts the workers (and only on machine rank 0),
    so the lock lives as long as the whole run. Evaluation only reads checkpoints and takes no lock.
    """
    if args.eval_only or args.machine_rank != 0:
        return None
    cfg = load_config(args)
    lock = claim_output_dir(cfg.OUTPUT_DIR, RUN_FILES, resume=args.resume, overwrite=args.overwrite)
    try:
        args.resume_notes = resume_notes_of(cfg) if args.resume else []
    except BaseException:
        lock.release()
        raise
    return lock


def resume_notes_of(cfg: CfgNode) -> list[str]:
    """The notes config.yaml must carry after this resume: the run's earlier ones, plus one for the values this
    resume changes. Raises ValueError listing every changed value outside RESUME_MAY_CHANGE."""
    saved, last = Path(cfg.OUTPUT_DIR) / "config.yaml", Path(cfg.OUTPUT_DIR) / "last_checkpoint"
    if not saved.is_file() or not last.is_file():
        return []
    text = saved.read_text(encoding="utf-8")
    changes = check_resume_changes(text, cfg, RESUME_MAY_CHANGE, str(saved), str(saved))
    notes = resume_notes(text)
    if changes:
        notes.append(resume_note(f"from {last.read_text(encoding='utf-8').strip()}", changes))
    return notes


def record_resume_notes(cfg: CfgNode, notes: list[str]) -> None:
    """Head OUTPUT_DIR/config.yaml (just written by default_setup) with the resume notes, so the file says which
    values ran before each resume."""
    if notes and comm.is_main_process():
        path = Path(cfg.OUTPUT_DIR) / "config.yaml"
        path.write_text("".join(f"{note}\n" for note in notes) + path.read_text(encoding="utf-8"), encoding="utf-8")


def main(args: argparse.Namespace):
    cfg = setup(args)
    record_resume_notes(cfg, getattr(args, "resume_notes", []))
    if args.eval_only:
        model = DistillTrainer.build_model(cfg)
        SafeDetectionCheckpointer(model, save_dir=cfg.OUTPUT_DIR).resume_or_load(cfg.MODEL.WEIGHTS, resume=args.resume)
        return DistillTrainer.test(cfg, model)
    trainer = DistillTrainer(cfg)
    trainer.resume_or_load(resume=args.resume)
    return trainer.train()


def run(args: argparse.Namespace) -> None:
    """Claim OUTPUT_DIR, then run `main` on every GPU with Detectron2's `launch`."""
    lock = claim_run(args)
    try:
        launch(
            main,
            args.num_gpus,
            num_machines=args.num_machines,
            machine_rank=args.machine_rank,
            dist_url=args.dist_url,
            args=(args,),
        )
    finally:
        if lock is not None:
            lock.release()


def cli(argv: list[str] | None = None) -> None:
    """The command line (sys.argv[1:] when `argv` is None): parse it, then `run`."""
    run(parse_args(argv))


if __name__ == "__main__":
    sys.exit(run_main(cli))
