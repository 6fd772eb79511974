#!/usr/bin/env python
"""Speed of distillation relative to its unavoidable parts, measured in one run.

    python tools/benchmark_det.py [--size 128] [--batch 8] [--iters 4] [--rounds 3]
        [--aff-channels 16 32 64] [--methods roi_kd dkd ...] [--device cpu|cuda] [--amp] [--output FILE]

On the built-in Fashion-MNIST mosaics at a fixed image size, with the demo's R18-FPN student and R50-FPN teacher
(random weights: speed does not depend on them), it times the median iteration of
  student      the stock student training step (forward, backward, SGD step)
  teacher      the teacher forward alone as distillation runs it (preprocess, backbone, box head on the
               student's number of sampled ROIs), under no_grad
  roi_kd ...   a DistillRCNN training step with each method of TERM_VARIANTS (ROI KD, DKD, FitNet, FitNet + KD,
               FGFI, ReviewKD, ReviewKD + DKD, MLKD, PKD, CWD, FGD; `--methods` picks a subset)
  unikd@C      a DistillRCNN training step with UniKD, AFF width C
and prints ratio = distill / (student + teacher). The shared harness `unikd.bench.speed` times the variants in
interleaved rounds on the same batch, so machine noise hits all of them alike. Target: <= 1.10 for UniKD.
`--output FILE` also writes the samples, ratios, table and machine as JSON.
"""
from __future__ import annotations

import argparse
import contextlib
import sys
import tempfile
from pathlib import Path
from typing import Callable

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import torch  # noqa: E402
from detectron2.config import CfgNode, get_cfg  # noqa: E402
from detectron2.data import build_detection_train_loader  # noqa: E402
from detectron2.modeling import build_model  # noqa: E402
from detectron2.structures import Boxes  # noqa: E402
from detectron2.utils.events import EventStorage  # noqa: E402

from unikd.bench.speed import (  # noqa: E402
    ratios_to_floors, render_table, speed_record, time_interleaved, write_json,
)
from unikd_det import add_distill_config  # noqa: E402
from unikd_det.config import merge_config_file  # noqa: E402
from unikd_det.data import register_fashion_mosaic  # noqa: E402
from unikd_det.teacher import FrozenTeacher, load_teacher_config  # noqa: E402

TEACHER_CONFIG = "configs/Demo/teacher-R50.yaml"
# Distillation variants besides UniKD: the config options that switch their terms on.
TERM_VARIANTS = {
    "roi_kd": ["DISTILL.KD.ENABLED", True],
    "dkd": ["DISTILL.DKD.ENABLED", True],
    "fitnet": ["DISTILL.FITNET.ENABLED", True],
    "fitnet+kd": ["DISTILL.FITNET.ENABLED", True, "DISTILL.KD.ENABLED", True],
    "fgfi": ["DISTILL.FGFI.ENABLED", True],
    "reviewkd": ["DISTILL.REVIEWKD.ENABLED", True],
    "reviewkd+dkd": ["DISTILL.REVIEWKD.ENABLED", True, "DISTILL.DKD.ENABLED", True],
    "mlkd": ["DISTILL.MLKD.ENABLED", True],
    "pkd": ["DISTILL.PKD.ENABLED", True],
    "cwd": ["DISTILL.CWD.ENABLED", True],
    "fgd": ["DISTILL.FGD.ENABLED", True],
}
STUDENT_CONFIG = "configs/Demo/student-R18.yaml"
# What every distillation step is divided by: one student training step plus one teacher forward.
FLOOR = {"student": 1, "teacher": 1}


def make_cfg(args: argparse.Namespace, teacher_weights: str, *opts) -> CfgNode:
    """The demo student's config at the benchmark's image size, batch and device, with `opts` merged last."""
    cfg = get_cfg()
    add_distill_config(cfg)
    merge_config_file(cfg, str(REPO / STUDENT_CONFIG))
    size = args.size
    cfg.merge_from_list([
        "MODEL.DEVICE", args.device, "SOLVER.IMS_PER_BATCH", args.batch,
        "INPUT.MIN_SIZE_TRAIN", (size,), "INPUT.MAX_SIZE_TRAIN", size,
        "DISTILL.TEACHER.CONFIG", TEACHER_CONFIG, "DISTILL.TEACHER.WEIGHTS", teacher_weights, *opts,
    ])
    return cfg


def autocast_for(args: argparse.Namespace) -> Callable[[], contextlib.AbstractContextManager]:
    """`--amp`: the forward passes under float16 autocast, as Detectron2's AMPTrainer runs them (CUDA only)."""
    if not args.amp:
        return contextlib.nullcontext
    if torch.device(args.device).type != "cuda":
        raise SystemExit("--amp needs --device cuda (Detectron2's AMPTrainer runs on CUDA)")
    return lambda: torch.autocast("cuda", dtype=torch.float16)


def training_step(model: torch.nn.Module, batch: list[dict], autocast: Callable = contextlib.nullcontext
                  ) -> Callable[[], None]:
    """One full training step of `model` on `batch` (forward under `autocast`, backward, SGD update) as a closure.

    At LR 0: the update still runs (same cost), but the weights stay put, so repeating the step on one batch
    cannot diverge (at LR 1e-4 a random-weight variant hit NaN in the second round)."""
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.0, momentum=0.9)
    model.train()

    def step() -> None:
        with autocast():
            losses = model(batch)
        optimizer.zero_grad(set_to_none=True)
        sum(losses.values()).backward()
        optimizer.step()

    return step


def teacher_step(teacher: FrozenTeacher, student_model, batch: list[dict], rois_per_image: int,
                 autocast: Callable = contextlib.nullcontext) -> Callable[[], None]:
    """The teacher's share of a distillation step as a closure: its preprocessing, backbone and box head on
    `rois_per_image` fixed random boxes per image (the student's number of sampled ROIs)."""
    images = student_model.preprocess_image(batch)
    generator = torch.Generator().manual_seed(0)
    boxes = []
    for height, width in images.image_sizes:
        xy = torch.rand(rois_per_image, 2, generator=generator) * torch.tensor([width / 2, height / 2])
        wh = 8 + torch.rand(rois_per_image, 2, generator=generator) * torch.tensor([width / 2, height / 2])
        boxes.append(Boxes(torch.cat([xy, xy + wh], dim=1).to(teacher.device)))

    def step() -> None:
        with autocast():
            teacher_images = teacher.preprocess(batch, student_model.input_format, like=images)
            teacher.roi_logits(teacher.features(teacher_images), boxes)

    return step


def main(argv: list[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--iters", type=int, default=4, help="timed iterations per variant and round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--aff-channels", type=int, nargs="+", default=[32])
    parser.add_argument("--methods", nargs="+", choices=sorted(TERM_VARIANTS), default=list(TERM_VARIANTS))
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--amp", action="store_true", help="float16 autocast, as SOLVER.AMP.ENABLED (CUDA only)")
    parser.add_argument("--output", type=Path, help="also write the measurement (samples, ratios, table) as JSON")
    args = parser.parse_args(argv)
    autocast = autocast_for(args)

    torch.manual_seed(0)
    register_fashion_mosaic(REPO / "datasets" / "fashion_mosaic")
    with tempfile.TemporaryDirectory() as tmp:
        teacher_weights = str(Path(tmp) / "teacher.pth")
        base = make_cfg(args, teacher_weights)
        teacher_cfg = load_teacher_config(base)
        torch.save({"model": build_model(teacher_cfg).state_dict()}, teacher_weights)
        batch = next(iter(build_detection_train_loader(base)))

        student = build_model(base)
        teacher = FrozenTeacher.from_config(teacher_cfg)
        steps = {
            "student": training_step(student, batch, autocast),
            "teacher": teacher_step(teacher, student, batch, base.MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE, autocast),
        }
        variants = {name: TERM_VARIANTS[name] for name in args.methods}
        for channels in args.aff_channels:
            variants[f"unikd@{channels}"] = ["DISTILL.UNIKD.ENABLED", True, "DISTILL.UNIKD.AFF.CHANNELS", channels]
        for name, opts in variants.items():
            model = build_model(make_cfg(args, teacher_weights, "MODEL.META_ARCHITECTURE", "DistillRCNN", *opts))
            model.build_teacher()
            steps[name] = training_step(model, batch, autocast)
        with EventStorage(0):  # DistillRCNN's training step logs to the current event storage
            timings = time_interleaved(steps, rounds=args.rounds, calls_per_round=args.iters, device=args.device)

    medians = timings.medians
    floors = {name: FLOOR for name in variants}
    ratios = ratios_to_floors(medians, floors)
    rows = [[name, f"{seconds:.3f}", f"{ratios[name]:.3f}" if name in ratios else ""]
            for name, seconds in medians.items()]
    table = render_table(rows, ["step", "median s/iter", "distill / (student + teacher)"])
    print(f"\nimage {args.size}x{args.size}, batch {args.batch}, device {args.device}, amp {args.amp}, "
          f"torch threads {torch.get_num_threads()}")
    print(table)
    if args.output:
        settings = {key: value for key, value in vars(args).items() if key != "output"}
        write_json(speed_record(timings, floors, table, settings, args.device), args.output)
    return medians


if __name__ == "__main__":
    main()
