#!/usr/bin/env python
"""Train or evaluate a detector with distillation, in Detectron2's conventions.

    python tools/train_net.py --config-file configs/COCO/UniKD-R18-R101.yaml [--eval-only] [--resume]
        [--num-gpus N] [KEY VALUE ...]

`--eval-only` evaluates the student alone (the teacher is not built) with COCOEvaluator.
"""
from __future__ import annotations

import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from detectron2.checkpoint import DetectionCheckpointer  # noqa: E402
from detectron2.config import get_cfg  # noqa: E402
from detectron2.engine import default_argument_parser, default_setup, launch  # noqa: E402

from unikd_det import add_distill_config  # noqa: E402
from unikd_det.data import register_fashion_mosaic  # noqa: E402
from unikd_det.trainer import DistillTrainer  # noqa: E402

BUILTIN_DATASETS = {"fashion_mosaic_train", "fashion_mosaic_val"}


def setup(args):
    cfg = get_cfg()
    add_distill_config(cfg)
    cfg.merge_from_file(args.config_file)
    cfg.merge_from_list(args.opts)
    cfg.freeze()
    default_setup(cfg, args)
    if BUILTIN_DATASETS & set(cfg.DATASETS.TRAIN + cfg.DATASETS.TEST):
        register_fashion_mosaic(REPO / "datasets" / "fashion_mosaic")
    return cfg


def main(args):
    cfg = setup(args)
    if args.eval_only:
        model = DistillTrainer.build_model(cfg)
        DetectionCheckpointer(model, save_dir=cfg.OUTPUT_DIR).resume_or_load(cfg.MODEL.WEIGHTS, resume=args.resume)
        return DistillTrainer.test(cfg, model)
    trainer = DistillTrainer(cfg)
    trainer.resume_or_load(resume=args.resume)
    return trainer.train()


if __name__ == "__main__":
    args = default_argument_parser().parse_args()
    launch(
        main,
        args.num_gpus,
        num_machines=args.num_machines,
        machine_rank=args.machine_rank,
        dist_url=args.dist_url,
        args=(args,),
    )
