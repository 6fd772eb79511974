#!/usr/bin/env python
"""Training-step time of UniKD's classification distillers against megvii mdistiller's, side by side in one run.

    python tools/speed_vs_mdistiller.py --mdistiller PATH [--methods kd dkd ...] [--batch 64] [--steps 3]
        [--rounds 3] [--device cpu|cuda] [--output FILE]

PATH is a checkout of github.com/megvii-research/mdistiller (its `mdistiller` package is imported from there;
nothing of it is part of this repository). Its package imports need scipy (OFD) and tensorboardX (its trainer):
`pip install scipy tensorboardX` in the environment that runs this. For every method both implementations train
resnet32x4 -> resnet8x4 from the same weights (mdistiller's networks, copied into the zoo's, whose parameter names
are the same) on the same random batch of 32x32 images with 100 classes: mdistiller's step is its trainer's
(zero_grad, `forward_train`, the sum of the losses' means, backward, SGD), UniKD's is `train_step` as
`bench --speed` times it. The teacher's BatchNorms carry random statistics and affine values, as a trained
network's would, so that folding them is not folding identities. The harness `unikd.bench.speed` interleaves the
steps over rounds; the ratio is UniKD's median step over mdistiller's (the goal: at most 0.9).
"""
from __future__ import annotations

import argparse
import copy
import sys
from pathlib import Path
from typing import Callable

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import torch  # noqa: E402
from torch import nn  # noqa: E402

from classification.bench.speed import train_step_fn, trained_like_batchnorm  # noqa: E402
from classification.config import get_cfg  # noqa: E402
from classification.distillers.base import prepare_teacher  # noqa: E402
from classification.engine.runtime import resolve_device, use_channels_last  # noqa: E402
from classification.models import build_model  # noqa: E402
from unikd.bench.speed import (  # noqa: E402
    ratios_to_floors, render_table, speed_record, time_interleaved, write_json,
)

# UniKD method -> mdistiller's distiller_dict key (mdistiller/distillers/__init__.py).
MDISTILLER_NAMES = {"kd": "KD", "dkd": "DKD", "fitnet": "FITNET", "at": "AT", "ofd": "OFD", "reviewkd": "REVIEWKD",
                    "sp": "SP", "rkd": "RKD"}
TEACHER, STUDENT, NUM_CLASSES = "resnet32x4", "resnet8x4", 100
PROGRESS_EPOCHS = 100  # past every warm-up of both implementations
WARMUP_CALLS = 2


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mdistiller", type=Path, required=True, help="a checkout of megvii-research/mdistiller")
    parser.add_argument("--methods", nargs="+", default=list(MDISTILLER_NAMES), choices=list(MDISTILLER_NAMES))
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--steps", type=int, default=3, help="timed calls of each step per round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--output", type=Path, help="also write samples, ratios, table and machine as JSON")
    return parser.parse_args(argv)


def import_mdistiller(root: Path):
    """mdistiller's distiller_dict, its default config and its CIFAR resnet builders, imported from `root`."""
    if not (root / "mdistiller" / "distillers").is_dir():
        raise FileNotFoundError(f"{root} is not an mdistiller checkout (no mdistiller/distillers in it)")
    sys.path.insert(0, str(root))
    from mdistiller.distillers import distiller_dict
    from mdistiller.engine.cfg import CFG
    from mdistiller.models.cifar import resnet8x4, resnet32x4
    return distiller_dict, CFG, {TEACHER: resnet32x4, STUDENT: resnet8x4}


def zoo_copy(name: str, source: nn.Module) -> nn.Module:
    """The zoo's `name` holding `source`'s weights (a strict load: the two share every parameter name)."""
    model = build_model(name, NUM_CLASSES, "cifar")
    model.load_state_dict(source.state_dict(), strict=True)
    return model


def mdistiller_step(distiller_cls, cfg, student: nn.Module, teacher: nn.Module, images: torch.Tensor,
                    targets: torch.Tensor, device: torch.device) -> Callable[[], None]:
    """One step as mdistiller's trainer runs it (mdistiller/engine/trainer.py, BaseTrainer.train_iter)."""
    distiller = distiller_cls(student, teacher, cfg).to(device)
    distiller.train()
    optimizer = torch.optim.SGD(distiller.get_learnable_parameters(), lr=cfg.SOLVER.LR,
                                momentum=cfg.SOLVER.MOMENTUM, weight_decay=cfg.SOLVER.WEIGHT_DECAY)

    def step() -> None:
        optimizer.zero_grad()
        _, losses = distiller(image=images, target=targets, epoch=PROGRESS_EPOCHS)
        sum(loss.mean() for loss in losses.values()).backward()
        optimizer.step()

    return step


def main(argv: list[str] | None = None) -> dict[str, float]:
    args = parse_args(argv)
    distiller_dict, md_cfg, md_models = import_mdistiller(args.mdistiller)
    device = resolve_device(args.device)
    generator = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    md_teacher = trained_like_batchnorm(md_models[TEACHER](num_classes=NUM_CLASSES), generator).to(device)
    md_student = md_models[STUDENT](num_classes=NUM_CLASSES)
    images = torch.randn(args.batch, 3, 32, 32, generator=generator).to(device)
    targets = torch.randint(0, NUM_CLASSES, (args.batch,), generator=generator).to(device)

    cfg = get_cfg()
    cfg.MODEL.STUDENT, cfg.MODEL.TEACHER, cfg.TRAIN.DEVICE = STUDENT, TEACHER, str(device)
    teacher = prepare_teacher(zoo_copy(TEACHER, md_teacher).eval(), cfg).to(device)
    ours_images = images.contiguous(memory_format=torch.channels_last) if use_channels_last(cfg, device) else images

    steps, floors = {}, {}
    for method in args.methods:
        steps[f"mdistiller {method}"] = mdistiller_step(
            distiller_dict[MDISTILLER_NAMES[method]], md_cfg.clone(), copy.deepcopy(md_student), md_teacher, images,
            targets, device)
        steps[f"unikd {method}"] = train_step_fn(cfg, method, teacher, device, ours_images, targets,
                                                 student=zoo_copy(STUDENT, md_student).to(device))
        floors[f"unikd {method}"] = {f"mdistiller {method}": 1}
    timings = time_interleaved(steps, rounds=args.rounds, calls_per_round=args.steps, device=device,
                               warmup=WARMUP_CALLS)
    medians = timings.medians
    ratios = {variant.removeprefix("unikd "): ratio for variant, ratio in ratios_to_floors(medians, floors).items()}
    rows = [[method, f"{1000 * medians[f'mdistiller {method}']:.1f}", f"{1000 * medians[f'unikd {method}']:.1f}",
             f"{ratios[method]:.3f}"] for method in args.methods]
    table = render_table(rows, ["method", "mdistiller ms", "UniKD ms", "UniKD / mdistiller"])
    print(f"\n{TEACHER} -> {STUDENT}, batch {args.batch}, {device}, {args.rounds} rounds x {args.steps} steps, medians")
    print(table)
    if args.output is not None:
        write_json(speed_record(timings, floors, table, vars(args), device), args.output)
    return ratios


if __name__ == "__main__":
    main()
