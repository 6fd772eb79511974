"""`python -m classification bench --speed`: training-step cost of each distiller against its baseline.

Measured in one process by the shared harness `unikd.bench.speed`, interleaved over rounds so machine noise hits
every variant alike, at batch `--batch-size` of random 32x32 images (100 classes; `--image-size` S above 64: S x S
images, 1000 classes, the ImageNet zoo) for `--teacher` -> `--student`:
  a: a vanilla training step of the student;
  b: a forward of the teacher as the distillers run it (TRAIN.FOLD_TEACHER_BN) under torch.inference_mode;
  d: a vanilla training step of the teacher architecture (SLKD trains NUM_SLT of those);
  c: a full training step of each distiller.
It prints c / (a + b) for every method and, for SLKD, c / (a + b + NUM_SLT * d), each beside its target where
TARGETS has one (KD <= 1.05, UniKD <= 1.10, SLKD <= 1.05 of its own floor), plus peak memory on CUDA. A method
is a registered distiller name or a hybrid written as its terms joined by "+" (`kd+fitnet`); by default every
registered method and the papers' hybrids are timed. CRD's memory has CIFAR-100's 50000 rows. `--compile` also
times every step with its networks compiled (TRAIN.COMPILE), against the compiled floor.
"""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Callable

import torch
from torch import nn
from yacs.config import CfgNode

from unikd.bench.speed import ratios_to_floors, render_table, speed_record, time_interleaved, write_json
from unikd.terms import registered_terms, term_class

from ..config import get_cfg
from ..distillers import get_distiller_class, registered_distillers
from ..distillers.base import prepare_teacher
from ..distillers.terms import SUPPORTED
from ..data.image_folder import family_for
from ..engine.optim import build_optimizers
from ..engine.runtime import autocast_factory, compile_networks, resolve_device, use_channels_last
from ..engine.trainer import check_finite
from ..models import build_model

NUM_CLASSES = 100  # CIFAR-sized inputs (the default 32x32); ImageNet-sized ones (`--image-size` > 64) get 1000
IMAGENET_CLASSES = 1000
NUM_TRAIN = 50_000  # rows of per-sample memories (CRD), as on CIFAR-100
PAPER_HYBRIDS = ("nkd+dkd", "kd+fitnet", "kd+crd", "dkd+reviewkd", "mlkd+reviewkd")
STUDENT, TEACHER_FORWARD, TEACHER_ARCH = "student (a)", "teacher forward (b)", "teacher-arch step (d)"
TARGETS = {"kd": "<= 1.05", "unikd": "<= 1.10", "slkd": "<= 1.05 x (a+b+2d)"}
WARMUP_CALLS = 2  # untimed calls per step before the rounds: allocator growth, cudnn autotuning


def default_methods() -> list[str]:
    """Every registered method that classification can feed (vanilla and the generic hybrid aside) and the papers'
    hybrids. A shared term that requires what this front end does not compute (FGFI: anchors and ground-truth
    boxes) is a detection method: building it here is refused, so timing it would stop the whole benchmark."""
    terms = registered_terms()
    return [name for name in registered_distillers() if name not in ("vanilla", "hybrid")
            and (name not in terms or terms[name].requires <= SUPPORTED)] + list(PAPER_HYBRIDS)


def _method_config(cfg: CfgNode, method: str) -> CfgNode:
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


def train_step_fn(cfg: CfgNode, method: str, teacher: nn.Module | None, device: torch.device, images: torch.Tensor,
                  targets: torch.Tensor, compiled: bool = False, student: nn.Module | None = None
                  ) -> Callable[[], None]:
    """A closure running one full training step of `method` on `student` (default: MODEL.STUDENT built fresh,
    random weights); `compiled`: its networks through torch.compile, as TRAIN.COMPILE runs them (the shared
    teacher is compiled by the caller). `images` must already be in the memory format the config asks for."""
    node = _method_config(cfg, method)
    family, classes = _family_and_classes(images)
    student = student if student is not None else build_model(node.MODEL.STUDENT, classes, family)
    train_labels = torch.arange(NUM_TRAIN, device=device) % classes
    distiller = get_distiller_class(node.DISTILLER.NAME).from_config(
        node, student, teacher, classes, family, train_labels=train_labels
    ).to(device)
    if use_channels_last(node, device):
        distiller.to(memory_format=torch.channels_last)
    if compiled:
        compile_networks(net for net in distiller.networks() if net is not teacher)
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


def trained_like_batchnorm(model: nn.Module, generator: torch.Generator) -> nn.Module:
    """`model` with its BatchNorms' running statistics and affine values drawn away from their identity
    initialisation, as a trained network's are (a teacher whose BNs are identities would fold into convolutions
    trivially); returned in eval mode."""
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            c = module.num_features
            module.running_mean.copy_(0.1 * torch.randn(c, generator=generator))
            module.running_var.copy_(0.5 + 1.5 * torch.rand(c, generator=generator))
            module.weight.data.copy_(0.5 + torch.rand(c, generator=generator))
            module.bias.data.copy_(0.1 * torch.randn(c, generator=generator))
    return model.eval()


def run_speed(args: argparse.Namespace, output: str | Path | None = None) -> dict[str, float]:
    """Time every method's training step against the baselines; print the table and return the ratios.

    With `args.compile`, every step is timed eagerly and compiled (TRAIN.COMPILE; a compiled method's floor is
    the compiled student step and teacher forward), after the untimed warm-up calls that compile it. With
    `output`, the measurement (samples, ratios, table, machine) is also written there as JSON."""
    methods = args.methods or default_methods()
    check_methods(methods)
    device = resolve_device(args.device)
    cfg = get_cfg()
    cfg.MODEL.STUDENT, cfg.MODEL.TEACHER, cfg.TRAIN.DEVICE = args.student, args.teacher, str(device)
    torch.manual_seed(0)
    cfg.TRAIN.AMP, cfg.TRAIN.CHANNELS_LAST = not args.fp32, not args.no_channels_last  # AMP applies on CUDA only
    size = args.image_size or 32
    images = torch.randn(args.batch_size, 3, size, size, device=device)
    family, classes = _family_and_classes(images)
    targets = torch.randint(0, classes, (args.batch_size,), device=device)
    channels_last = use_channels_last(cfg, device)
    if channels_last:
        images = images.contiguous(memory_format=torch.channels_last)
    autocast, _ = autocast_factory(cfg, device)
    teacher_cfg = cfg.clone()
    teacher_cfg.MODEL.STUDENT = args.teacher
    fns, floors = {}, {}
    for compiled in (False, True) if args.compile else (False,):
        # the teacher as the distillers run it (frozen, BNs folded with TRAIN.FOLD_TEACHER_BN), so that (b) is the
        # forward every method pays; each distiller keeps this one (a folded network is not folded again)
        teacher = prepare_teacher(build_model(args.teacher, classes, family).eval(), cfg).to(device)
        if channels_last:
            teacher.to(memory_format=torch.channels_last)
        if compiled:
            compile_networks([teacher])
        name = (lambda step: f"{step} compiled") if compiled else (lambda step: step)
        fns[name(STUDENT)] = train_step_fn(cfg, "vanilla", None, device, images, targets, compiled)
        fns[name(TEACHER_FORWARD)] = _teacher_forward_fn(teacher, images, autocast)
        fns[name(TEACHER_ARCH)] = train_step_fn(teacher_cfg, "vanilla", None, device, images, targets, compiled)
        floor = {name(STUDENT): 1, name(TEACHER_FORWARD): 1}
        slkd_floor = {**floor, name(TEACHER_ARCH): cfg.SLKD.NUM_SLT}  # SLKD also trains NUM_SLT teacher-sized peers
        for method in methods:
            fns[name(method)] = train_step_fn(cfg, method, teacher, device, images, targets, compiled)
            floors[name(method)] = slkd_floor if method == "slkd" else floor

    timings = time_interleaved(fns, rounds=args.rounds, calls_per_round=args.steps, device=device,
                               warmup=WARMUP_CALLS, peak_memory=True)
    ratios = ratios_to_floors(timings.medians, floors)
    table = _table(timings.medians, timings.peak_mib, ratios)
    print(f"\n{args.teacher} -> {args.student}, batch {args.batch_size}, {size}x{size}, {device}, "
          f"{args.rounds} rounds x {args.steps} steps, medians")
    print(table)
    if output is not None:
        settings = {key: value for key, value in vars(args).items() if key != "func"}
        write_json(speed_record(timings, floors, table, settings, device), output)
    return ratios


def _family_and_classes(images: torch.Tensor) -> tuple[str, int]:
    """The model family of the images' size (as an image folder picks it) and the class count timed with it."""
    family = family_for(images.shape[-1])
    return family, NUM_CLASSES if family == "cifar" else IMAGENET_CLASSES


def _teacher_forward_fn(teacher: nn.Module, images: torch.Tensor, autocast: Callable) -> Callable[[], None]:
    def teacher_forward() -> None:
        with torch.inference_mode(), autocast():
            teacher(images)

    return teacher_forward


def _table(median: dict[str, float], peak_mib: dict[str, float | None], ratios: dict[str, float]) -> str:
    """The printed table: the three baselines (a, b, d), then each method (c) with its ratio and target (and the
    same for the compiled steps, when timed)."""
    rows = [[name, f"{1000 * median[name]:.1f}", "", "", _fmt(peak_mib[name])]
            for name in median if name not in ratios]
    rows += [[f"{method} (c)", f"{1000 * median[method]:.1f}", f"{ratio:.3f}",
              TARGETS.get(method.removesuffix(" compiled"), ""), _fmt(peak_mib[method])]
             for method, ratio in ratios.items()]
    return render_table(rows, ["step", "ms", "ratio", "target", "peak MiB"])


def _fmt(value: float | None) -> str:
    """A peak-memory cell: whole MiB, or "n/a (CPU)" where torch keeps no peak."""
    return "n/a (CPU)" if value is None else f"{value:.0f}"
