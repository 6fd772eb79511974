#!/usr/bin/env python
"""Speed of distillation relative to its unavoidable parts, measured in one run.

    python tools/benchmark_det.py [--size 128] [--batch 8] [--iters 8] [--rounds 3]
        [--aff-channels 16 32 64] [--methods roi_kd dkd ...] [--device cpu|cuda]

On the built-in Fashion-MNIST mosaics at a fixed image size, with the demo's R18-FPN student and
R50-FPN teacher (random weights: speed does not depend on them), it times the median iteration of
  student      the stock student training step (forward, backward, SGD step)
  teacher      the teacher forward alone as distillation runs it (preprocess, backbone, box head on
               the student's number of sampled ROIs), under no_grad
  roi_kd ...   a DistillRCNN training step with each method of TERM_VARIANTS (ROI KD, DKD, FitNet,
               FitNet + KD, FGFI, ReviewKD, ReviewKD + DKD, MLKD; `--methods` picks a subset)
  unikd@C      a DistillRCNN training step with UniKD, AFF width C
and prints ratio = distill / (student + teacher). The variants are timed in interleaved rounds on the
same batch, so machine noise hits all of them alike. Target: <= 1.10 for UniKD.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
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
from tabulate import tabulate  # noqa: E402

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
}
STUDENT_CONFIG = "configs/Demo/student-R18.yaml"


def make_cfg(args: argparse.Namespace, teacher_weights: str, *opts) -> CfgNode:
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


def synchronize(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def training_step(model: torch.nn.Module, batch: list[dict]) -> Callable[[], None]:
    # LR 0: the update still runs (same cost), but the weights stay put, so repeating the step on one
    # batch cannot diverge (at LR 1e-4 a random-weight variant hit NaN in the second round).
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.0, momentum=0.9)
    model.train()

    def step() -> None:
        losses = model(batch)
        optimizer.zero_grad(set_to_none=True)
        sum(losses.values()).backward()
        optimizer.step()

    return step


def teacher_step(teacher: FrozenTeacher, student_model, batch: list[dict], rois_per_image: int) -> Callable[[], None]:
    images = student_model.preprocess_image(batch)
    generator = torch.Generator().manual_seed(0)
    boxes = []
    for height, width in images.image_sizes:
        xy = torch.rand(rois_per_image, 2, generator=generator) * torch.tensor([width / 2, height / 2])
        wh = 8 + torch.rand(rois_per_image, 2, generator=generator) * torch.tensor([width / 2, height / 2])
        boxes.append(Boxes(torch.cat([xy, xy + wh], dim=1).to(teacher.device)))

    def step() -> None:
        teacher_images = teacher.preprocess(batch, student_model.input_format, like=images)
        teacher.roi_logits(teacher.features(teacher_images), boxes)

    return step


def time_interleaved(steps: dict[str, Callable[[], None]], iters: int, rounds: int, device: str) -> dict[str, float]:
    """Median seconds per call of each step, alternating the steps round by round."""
    samples: dict[str, list[float]] = {name: [] for name in steps}
    with EventStorage(0):
        for step in steps.values():  # warm-up (allocator, lazy init)
            step()
        for round_index in range(rounds):
            for name, step in steps.items():
                for _ in range(iters):
                    synchronize(device)
                    start = time.perf_counter()
                    step()
                    synchronize(device)
                    samples[name].append(time.perf_counter() - start)
            print(f"round {round_index + 1}/{rounds}: " + ", ".join(
                f"{n} {statistics.median(s):.3f}s" for n, s in samples.items()), flush=True)
    return {name: statistics.median(values) for name, values in samples.items()}


def main(argv: list[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--iters", type=int, default=4, help="timed iterations per variant and round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--aff-channels", type=int, nargs="+", default=[32])
    parser.add_argument("--methods", nargs="+", choices=sorted(TERM_VARIANTS), default=list(TERM_VARIANTS))
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args(argv)

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
            "student": training_step(student, batch),
            "teacher": teacher_step(teacher, student, batch, base.MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE),
        }
        variants = {name: TERM_VARIANTS[name] for name in args.methods}
        for channels in args.aff_channels:
            variants[f"unikd@{channels}"] = ["DISTILL.UNIKD.ENABLED", True, "DISTILL.UNIKD.AFF.CHANNELS", channels]
        for name, opts in variants.items():
            model = build_model(make_cfg(args, teacher_weights, "MODEL.META_ARCHITECTURE", "DistillRCNN", *opts))
            model.build_teacher()
            steps[name] = training_step(model, batch)
        medians = time_interleaved(steps, args.iters, args.rounds, args.device)

    baseline = medians["student"] + medians["teacher"]
    rows = [[name, f"{seconds:.3f}", f"{seconds / baseline:.3f}" if name in variants else ""]
            for name, seconds in medians.items()]
    print(f"\nimage {args.size}x{args.size}, batch {args.batch}, device {args.device}, "
          f"torch threads {torch.get_num_threads()}")
    print(tabulate(rows, headers=["step", "median s/iter", "distill / (student + teacher)"], tablefmt="github"))
    return medians


if __name__ == "__main__":
    main()
