"""`python -m classification bench --speed`: training-step cost of each distiller against its baseline.

Measured in one process, interleaved over rounds so machine noise hits every variant alike, at batch
`--batch-size` of random 32x32 images (100 classes) for `--teacher` -> `--student`:
  a: a vanilla training step of the student;
  b: a teacher forward under torch.inference_mode;
  d: a vanilla training step of the teacher architecture (SLKD trains NUM_SLT of those);
  c: a full training step of each distiller.
It prints c / (a + b) for every method and, for SLKD, c / (a + b + NUM_SLT * d), plus peak memory on CUDA.
A method is a registered distiller name or a hybrid written as its terms joined by "+" (`kd+fitnet`); by
default every registered method and the papers' hybrids are timed. CRD's memory has CIFAR-100's 50000 rows.
"""
from __future__ import annotations

import argparse
import statistics
import time
from typing import Callable

import torch
from torch import nn

from unikd.terms import term_class

from ..config import get_cfg
from ..distillers import get_distiller_class, registered_distillers
from ..engine.optim import build_optimizers
from ..engine.runtime import autocast_factory, resolve_device, use_channels_last
from ..engine.trainer import check_finite
from ..models import build_model

NUM_CLASSES = 100
NUM_TRAIN = 50_000  # rows of per-sample memories (CRD), as on CIFAR-100
PAPER_HYBRIDS = ("nkd+dkd", "kd+fitnet", "kd+crd", "dkd+reviewkd", "mlkd+reviewkd")


def default_methods() -> list[str]:
    """Every registered method (vanilla and the generic hybrid aside) and the papers' hybrids."""
    return [name for name in registered_distillers() if name not in ("vanilla", "hybrid")] + list(PAPER_HYBRIDS)


def _method_config(cfg, method: str):
    """cfg running `method`: a distiller name, or "a+b" for the hybrid of terms a and b."""
    node = cfg.clone()
    node.defrost()
    if "+" in method:
        node.DISTILLER.NAME = "hybrid"
        node.HYBRID.TERMS = method.split("+")
    else:
        node.DISTILLER.NAME = method
    return node


def check_methods(methods: list[str]) -> None:
    """KeyError naming the first method that is neither a registered distiller nor "+"-joined loss terms."""
    for method in methods:
        if "+" in method:
            for term in method.split("+"):
                term_class(term)
        else:
            get_distiller_class(method)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _train_step_fn(cfg, method: str, teacher: nn.Module, device: torch.device, images, targets) -> Callable[[], None]:
    """A closure running one full training step of `method` (built fresh, random weights)."""
    node = _method_config(cfg, method)
    student = build_model(node.MODEL.STUDENT, NUM_CLASSES)
    train_labels = torch.arange(NUM_TRAIN, device=device) % NUM_CLASSES
    distiller = get_distiller_class(node.DISTILLER.NAME).from_config(
        node, student, teacher, NUM_CLASSES, "cifar", train_labels=train_labels
    ).to(device)
    if use_channels_last(node, device):
        distiller.to(memory_format=torch.channels_last)
    autocast, needs_scaler = autocast_factory(node, device)
    scaler = torch.amp.GradScaler("cuda") if needs_scaler else None
    optimizers, _ = build_optimizers(distiller.optimizer_param_groups(), node.SOLVER, scaler)
    distiller.train()

    indices = torch.randperm(NUM_TRAIN, device=device)[: len(targets)]

    def step() -> None:
        _, losses = distiller.train_step(images, targets, 100.0, optimizers, autocast, indices)
        optimizers.end_iteration()
        check_finite(losses)  # the trainer's per-step check, so its cost is part of every timed step

    return step


def _timed(fn: Callable[[], None], steps: int, device: torch.device) -> list[float]:
    times = []
    for _ in range(steps):
        _sync(device)
        start = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - start)
    return times


def _peak_memory(fn: Callable[[], None], device: torch.device) -> float | None:
    """Peak CUDA memory (MiB) of one call, or None on the CPU."""
    if device.type != "cuda":
        return None
    torch.cuda.reset_peak_memory_stats(device)
    fn()
    _sync(device)
    return torch.cuda.max_memory_allocated(device) / 2**20


def run_speed(args: argparse.Namespace) -> dict[str, float]:
    """Time every method's training step against the baselines; print the table and return the ratios."""
    methods = args.methods or default_methods()
    check_methods(methods)
    device = resolve_device(args.device)
    cfg = get_cfg()
    cfg.MODEL.STUDENT, cfg.MODEL.TEACHER, cfg.TRAIN.DEVICE = args.student, args.teacher, str(device)
    torch.manual_seed(0)
    images = torch.randn(args.batch_size, 3, 32, 32, device=device)
    targets = torch.randint(0, NUM_CLASSES, (args.batch_size,), device=device)
    channels_last = use_channels_last(cfg, device)
    if channels_last:
        images = images.contiguous(memory_format=torch.channels_last)
    teacher = build_model(args.teacher, NUM_CLASSES).to(device).eval()
    if channels_last:
        teacher.to(memory_format=torch.channels_last)
    autocast, _ = autocast_factory(cfg, device)

    def teacher_forward() -> None:
        with torch.inference_mode(), autocast():
            teacher(images)

    fns = {"student (a)": _train_step_fn(cfg, "vanilla", None, device, images, targets),
           "teacher forward (b)": teacher_forward}
    teacher_cfg = cfg.clone()
    teacher_cfg.MODEL.STUDENT = args.teacher
    fns["teacher-arch step (d)"] = _train_step_fn(teacher_cfg, "vanilla", None, device, images, targets)
    for method in methods:
        fns[method] = _train_step_fn(cfg, method, teacher, device, images, targets)

    times: dict[str, list[float]] = {name: [] for name in fns}
    for fn in fns.values():
        _timed(fn, 2, device)  # warm-up: allocator, cudnn autotuning
    for round_index in range(args.rounds):
        for name, fn in fns.items():
            times[name] += _timed(fn, args.steps, device)
        print(f"round {round_index + 1}/{args.rounds} done", flush=True)
    median = {name: statistics.median(values) for name, values in times.items()}
    a, b, d = median["student (a)"], median["teacher forward (b)"], median["teacher-arch step (d)"]
    num_slt = cfg.SLKD.NUM_SLT
    print(f"\n{args.teacher} -> {args.student}, batch {args.batch_size}, {device}, "
          f"{args.rounds} rounds x {args.steps} steps, medians")
    print("| step | ms | ratio | target | peak MiB |\n|---|---|---|---|---|")
    for name in ("student (a)", "teacher forward (b)", "teacher-arch step (d)"):
        print(f"| {name} | {1000 * median[name]:.1f} | | | {_fmt(_peak_memory(fns[name], device))} |")
    ratios = {}
    for method in methods:
        c = median[method]
        if method == "slkd":
            ratio, target = c / (a + b + num_slt * d), "<= 1.05 x (a+b+2d)"
        else:
            ratio, target = c / (a + b), {"kd": "<= 1.05", "unikd": "<= 1.10"}.get(method, "")
        ratios[method] = ratio
        print(f"| {method} (c) | {1000 * c:.1f} | {ratio:.3f} | {target} | {_fmt(_peak_memory(fns[method], device))} |")
    return ratios


def _fmt(value: float | None) -> str:
    return "n/a (CPU)" if value is None else f"{value:.0f}"
