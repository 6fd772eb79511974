"""Pinned loss values of every distillation method, on both front ends, for refactors that must not change them.

What is pinned
--------------
* Classification (`classification_losses()`): the named loss dict that `Distiller.compute_losses` returns for
  every registered distiller, the hybrids of the shipped CIFAR-100 configs (kd+fitnet, kd+crd, dkd+reviewkd,
  mlkd+reviewkd, NKD* = nkd+dkd, unikd+kd, unikd+nkd, unikd+mlkd) and the UniKD variants (authors_code,
  LOGIT_LOSS dkd / none, AFF.ENABLED False, TARGET_FIT none), plus the losses of one SLKD sequential-mode
  `train_step`. Keys are "cls/<case>@<progress>": every case at progress 100 (past every warm-up), and the
  cases with a warm-up also at progress 0.5. All cases use one pair, a resnet8 student (stage channels
  16/16/32/64) and a wrn_16_2 teacher (16/32/64/128), so that every adapter maps between different widths,
  5 classes, 32x32 images and a fixed batch of 8 images of a 64-image "training set" (CRD's memory).
* Detection (`detection_losses()`): every loss (the detector's and the distillation terms') of a training
  forward of `DistillRCNN` with each DISTILL term enabled alone (and a few variants), on the tiny R18-FPN of
  tests/conftest.py (student FPN 32 channels, teacher FPN 16), two synthetic 64x64 images, inside an
  EventStorage at iteration 50. Keys are "det/<case>@<iteration>"; the warm-up case runs at iteration 3.

The stored values were written by this script's first version on the code before the term API (commit
b9aaefc), whose keys then were DISTILL.ROI (LOSS kl | dkd; loss `loss_kd_roi`), DISTILL.WARMUP_ITERS,
FGFI.START_ITER, KD_WEIGHT and WARMUP_EPOCHS; the cases and loss names were mapped to today's once, by hand
(`loss_kd_roi` -> `loss_kd` / `loss_dkd`), and the values kept. One value was re-pinned on that code:
`det/fgfi@50`'s loss_fgfi, because the old FGFI term held a private copy of the RPN's anchor generator,
whose anchor buffers the overwrite below had replaced; without that overwrite the old code gives
0.7627468109130859, today's value (today's term reads the student's own anchors).

`python tests/pins/make_pins.py` prints, per case, the largest relative difference to tests/pins/pinned_losses.json
(and missing or new cases and keys); `--write` rewrites that file instead.

Why the values survive a refactor that keeps the math
-----------------------------------------------------
Nothing pinned may depend on the order in which modules are built, or on how many random numbers other modules
drew first:

* Student and teacher weights come from their own fixed seeds, built before and apart from the distiller
  (classification), or loaded from a separately seeded build (the detection student; the detection teacher is a
  weights file this script writes once to a temporary folder). Their classifiers are then scaled up
  (CLS_LOGIT_SCALES, DET_LOGIT_SCALES): a randomly initialised network's logits lie within ~0.05 of each other,
  and every KD term between two near-uniform distributions would be a cancellation of nearly equal numbers,
  whose value float rounding decides.
* Every other parameter, those of the distillation modules (adapters, regressors, connectors, AFF/FDP, ABF
  fusion, CRD embeddings, SLKD's self-learning teachers: in classification `distiller.named_parameters()` minus
  the `student.` and `teacher.` prefixes, in detection `model.named_parameters()` minus `student.`), is
  overwritten after the build by `deterministic_values(shape, name)`:

      amplitude * sin(0.7 * arange(numel) + phase(shape, last two components of the name)).reshape(shape)

  (amplitude 2 / sqrt(fan_in) for weights of 2+ dims, normalisation scales 1 + 0.1 sin, biases 0.1 sin). The
  value depends only on the tensor's shape and on the tail of its name ("mu_head.weight", "0.bias"), never on
  its position among the parameters: a rank in build order would swap the values of same-shaped parameters
  (the student and teacher AFF, the levels of an adapter dict) as soon as a refactor builds them in another
  order, and the tail survives a refactor that moves the modules to other parents. Same-shaped parameters of
  different modules with the same tail therefore hold the same values, which is harmless: they see different
  inputs. The floating-point buffers with two or more dimensions of those modules (CRD's memory banks,
  randomly initialised) are overwritten the same way; the others (BatchNorm statistics, which train-mode
  forwards do not read, index tables, CRD's normalisation constants) are left as built.
* Every case builds its models afresh (CRD's memory and BatchNorm statistics change in a forward). The
  detection teacher is built (`build_teacher()`, as DistillTrainer does before its first iteration) before the
  forward, not lazily inside it, where its random initialisation would consume random numbers. And
  torch.manual_seed(FORWARD_SEED) is set immediately before each compute_losses / forward, so every sampling
  (CRD negatives, UniKD authors_code samples, MLKD's strong view, the RPN and ROI samplers) starts from the
  same RNG state.
* What is not pinned, by design: the initialisation of the distillation modules (overwritten) and anything
  that only changes gradients (SLKD.DETACH_SLT_TARGET, detaching inside UniKD).
* One intra-op thread (float reductions in a fixed order); float32 as in training. The values are bit-identical
  between runs on one machine; other CPUs (another SIMD width) may differ in the last bits, well inside a
  relative tolerance of 1e-6 in practice but not guaranteed bit-for-bit.
"""
from __future__ import annotations

import argparse
import contextlib
import copy
import json
import math
import sys
import tempfile
import time
import zlib
from pathlib import Path
from typing import Iterator

import torch
from torch import Tensor, nn

REPO_ROOT = Path(__file__).resolve().parents[2]
PINS_FILE = Path(__file__).resolve().with_name("pinned_losses.json")

FORWARD_SEED = 0  # torch.manual_seed right before every compute_losses / forward
BUILD_SEED = 1  # before building a distiller or a DistillRCNN (only the modules overwritten afterwards use it)
STUDENT_SEED = 2
TEACHER_SEED = 3
DATA_SEED = 4


# ---------------------------------------------------------------------------------------------------------
# Order-independent values of the distillation modules' parameters
# ---------------------------------------------------------------------------------------------------------
def deterministic_values(shape: torch.Size, name: str) -> Tensor:
    """amplitude * sin(0.7 * arange(numel) + phase) (+ 1 for normalisation scales), reshaped to `shape`.

    The phase is a function of the shape and of the last two components of the parameter's name (such as
    "mu_head.weight"), never of its position among the parameters (module docstring). Weights of 2+ dims get
    amplitude 2 / sqrt(fan_in) (the root mean square of He initialisation), 1-dimensional "weight"s (BatchNorm
    and GroupNorm scales) 1 + 0.1 sin, everything else (biases) 0.1 sin.
    """
    tail = ".".join(name.split(".")[-2:])
    phase = 0.37 * len(shape) + 0.011 * sum(shape) + (zlib.crc32(tail.encode()) % 1000) / 100.0
    numel = math.prod(shape)
    wave = torch.sin(torch.arange(numel, dtype=torch.float64) * 0.7 + phase)
    if len(shape) >= 2:
        values = wave * (2.0 / math.sqrt(numel // shape[0]))
    elif name.endswith("weight"):
        values = 1.0 + 0.1 * wave
    else:
        values = 0.1 * wave
    return values.float().reshape(shape)


def overwrite_distillation_modules(model: nn.Module, network_prefixes: tuple[str, ...]) -> list[str]:
    """Overwrite every parameter of `model` whose name starts with none of `network_prefixes` (and the
    floating-point buffers of 2+ dims of those modules) with `deterministic_values`; returns their names."""
    written = []
    with torch.no_grad():
        tensors = list(model.named_parameters()) + [
            (name, b) for name, b in model.named_buffers() if b.is_floating_point() and b.dim() >= 2
        ]
        for name, tensor in tensors:
            if name.startswith(network_prefixes):
                continue
            tensor.copy_(deterministic_values(tensor.shape, name))
            written.append(name)
    return written


@contextlib.contextmanager
def one_thread() -> Iterator[None]:
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def as_floats(losses: dict[str, Tensor]) -> dict[str, float]:
    return {name: float(value) for name, value in sorted(losses.items())}


# ---------------------------------------------------------------------------------------------------------
# Classification
# ---------------------------------------------------------------------------------------------------------
CLS_NUM_CLASSES = 5
CLS_STUDENT = "resnet8"
CLS_TEACHER = "wrn_16_2"
CLS_IMAGE_SIZE = 32
CLS_LOGIT_SCALES = (20.0, 50.0)  # student, teacher classifier (`fc`) times these: logit std ~0.9 and ~2
CLS_TRAIN_LABELS = torch.arange(64) % CLS_NUM_CLASSES  # the "training set" CRD's memory and sampler cover
CLS_INDICES = torch.tensor([5, 12, 19, 26, 33, 40, 47, 54])  # the batch's positions in it
CLS_BASE_OPTS = [
    "DATASET.NAME", "synthetic",
    "DATASET.SYNTHETIC.NUM_CLASSES", CLS_NUM_CLASSES,
    "DATASET.SYNTHETIC.IMAGE_SIZE", CLS_IMAGE_SIZE,
    "MODEL.STUDENT", CLS_STUDENT,
    "MODEL.TEACHER", CLS_TEACHER,
    "TRAIN.DEVICE", "cpu",
    "UNIKD.AFF.CHANNELS", 8,
    "CRD.NCE_K", 256,  # the default 16384 only repeats draws from 64 samples, slowly
    # The pins were made with the teacher as built; folding its BNs (a later speed-up) moves its outputs by float
    # rounding, which the angle terms of RKD magnify past RTOL. The pins check the losses, so the teacher stays.
    "TRAIN.FOLD_TEACHER_BN", False,
]
# The settings of the shipped CIFAR-100 configs (classification/configs/cifar100/res32x4_res8x4/*.yaml).
KD = ["KD.TEMPERATURE", 4.0, "KD.CE_WEIGHT", 0.1, "KD.WEIGHT", 0.9]
DKD = ["DKD.ALPHA", 1.0, "DKD.BETA", 8.0, "DKD.TEMPERATURE", 4.0, "DKD.WARMUP", 20.0]
REVIEWKD = ["REVIEWKD.WEIGHT", 5.0, "REVIEWKD.WARMUP", 20.0, "REVIEWKD.STUDENT_PREACT", False]
NKD = ["NKD.TEMPERATURE", 3.0, "NKD.GAMMA", 3.5]
MLKD = ["MLKD.CE_WEIGHT", 0.1, "MLKD.WEIGHT", 0.9, "MLKD.TEMPERATURES", [4.0, 3.0, 5.0, 2.0, 6.0]]
SLKD = ["SLKD.NUM_SLT", 2, "SLKD.FUSION_WEIGHTS", [0.5, 0.5], "SLKD.TEMPERATURE", 4.0, "SLKD.CE_WEIGHT", 0.1,
        "SLKD.KD_WEIGHT", 0.9]
UNIKD_FEATURES_ONLY = ["UNIKD.MODE", "paper", "UNIKD.LOGIT_LOSS", "none", "UNIKD.WARMUP", 20.0]


def hybrid(terms: list[str], ce_weight: float) -> list:
    return ["DISTILLER.NAME", "hybrid", "HYBRID.TERMS", terms, "HYBRID.CE_WEIGHT", ce_weight]


# case -> (config overrides, progresses). Progress 0.5 only where some term has a warm-up.
CLS_CASES: dict[str, tuple[list, tuple[float, ...]]] = {
    "vanilla": (["DISTILLER.NAME", "vanilla"], (100.0,)),
    "kd": (["DISTILLER.NAME", "kd", *KD], (100.0,)),
    "dkd": (["DISTILLER.NAME", "dkd", *DKD], (100.0, 0.5)),
    "fitnet": (["DISTILLER.NAME", "fitnet"], (100.0,)),
    "at": (["DISTILLER.NAME", "at"], (100.0,)),
    "reviewkd": (["DISTILLER.NAME", "reviewkd", *REVIEWKD], (100.0, 0.5)),
    "crd": (["DISTILLER.NAME", "crd", "CRD.REPLACEMENT", "auto"], (100.0,)),
    "nkd": (["DISTILLER.NAME", "nkd", *NKD], (100.0,)),
    "mlkd": (["DISTILLER.NAME", "mlkd", *MLKD], (100.0,)),
    "sp": (["DISTILLER.NAME", "sp"], (100.0,)),
    "rkd": (["DISTILLER.NAME", "rkd"], (100.0,)),
    "ofd": (["DISTILLER.NAME", "ofd", "OFD.WEIGHT", 0.001], (100.0,)),
    "slkd": (["DISTILLER.NAME", "slkd", *SLKD], (100.0,)),
    "unikd": (["DISTILLER.NAME", "unikd"], (100.0,)),
    "unikd_dkd": (["DISTILLER.NAME", "unikd", "UNIKD.LOGIT_LOSS", "dkd", "UNIKD.WARMUP", 20.0],
                  (100.0, 0.5)),
    "unikd_logit_none": (["DISTILLER.NAME", "unikd", "UNIKD.LOGIT_LOSS", "none"], (100.0,)),
    "unikd_no_aff": (["DISTILLER.NAME", "unikd", "UNIKD.AFF.ENABLED", False], (100.0,)),
    "unikd_no_fit": (["DISTILLER.NAME", "unikd", "UNIKD.TARGET_FIT", "none"], (100.0,)),
    "unikd_authors": (["DISTILLER.NAME", "unikd", "UNIKD.MODE", "authors_code", "UNIKD.WARMUP", 20.0],
                      (100.0, 0.5)),
    "kd+fitnet": ([*hybrid(["kd", "fitnet"], 0.1), *KD], (100.0,)),
    "kd+crd": ([*hybrid(["kd", "crd"], 1.0), "KD.TEMPERATURE", 4.0, "KD.CE_WEIGHT", 0.1, "KD.WEIGHT", 1.0,
                "CRD.REPLACEMENT", "auto"], (100.0,)),
    "dkd+reviewkd": ([*hybrid(["dkd", "reviewkd"], 1.0), *DKD, *REVIEWKD], (100.0, 0.5)),
    "mlkd+reviewkd": ([*hybrid(["mlkd", "reviewkd"], 0.1), *MLKD, *REVIEWKD], (100.0, 0.5)),
    "nkd+dkd": ([*hybrid(["nkd", "dkd"], 1.0), *NKD, *DKD], (100.0, 0.5)),
    "unikd+kd": ([*hybrid(["unikd", "kd"], 1.0), *UNIKD_FEATURES_ONLY, "KD.TEMPERATURE", 4.0,
                  "KD.CE_WEIGHT", 0.1, "KD.WEIGHT", 1.0], (100.0, 0.5)),
    "unikd+nkd": ([*hybrid(["unikd", "nkd"], 1.0), *UNIKD_FEATURES_ONLY, *NKD], (100.0, 0.5)),
    "unikd+mlkd": ([*hybrid(["unikd", "mlkd"], 0.1), *UNIKD_FEATURES_ONLY, *MLKD], (100.0, 0.5)),
}


def cls_batch() -> tuple[Tensor, Tensor, Tensor]:
    """(images [8, 3, 32, 32], targets, training-set indices), the same on every call."""
    gen = torch.Generator().manual_seed(DATA_SEED)
    images = torch.randn(len(CLS_INDICES), 3, CLS_IMAGE_SIZE, CLS_IMAGE_SIZE, generator=gen)
    return images, CLS_TRAIN_LABELS[CLS_INDICES], CLS_INDICES.clone()


def cls_networks() -> tuple[nn.Module, nn.Module]:
    """The student and the teacher, each from its own seed (random, not trained), classifiers scaled up."""
    from classification.models import build_model

    torch.manual_seed(STUDENT_SEED)
    student = build_model(CLS_STUDENT, CLS_NUM_CLASSES, "cifar")
    torch.manual_seed(TEACHER_SEED)
    teacher = build_model(CLS_TEACHER, CLS_NUM_CLASSES, "cifar")
    with torch.no_grad():
        for network, scale in zip((student, teacher), CLS_LOGIT_SCALES):
            network.fc.weight.mul_(scale)
    return student, teacher


def build_distiller(opts: list, networks: tuple[nn.Module, nn.Module]):
    """The distiller of CLS_BASE_OPTS + opts as the trainer builds it, on copies of `networks`, its own
    modules overwritten (module docstring), in train mode."""
    from classification.config import load_cfg
    from classification.distillers import get_distiller_class

    cfg = load_cfg(None, [str(v) for v in CLS_BASE_OPTS + opts])
    student, teacher = (copy.deepcopy(network) for network in networks)
    torch.manual_seed(BUILD_SEED)
    distiller = get_distiller_class(cfg.DISTILLER.NAME).from_config(
        cfg, student, teacher, CLS_NUM_CLASSES, "cifar", train_labels=CLS_TRAIN_LABELS.clone()
    )
    overwrite_distillation_modules(distiller, ("student.", "teacher."))
    return cfg, distiller.train()


def progress_label(progress: float) -> str:
    return f"{progress:g}"


def slkd_sequential_step(networks: tuple[nn.Module, nn.Module]) -> dict[str, float]:
    """The losses of one SLKD MODE sequential train_step (SL-Ts step first, the student against the updated
    SL-Ts), with the trainer's SGD optimizers and no autocast."""
    from classification.engine.optim import build_optimizers

    cfg, distiller = build_distiller(["DISTILLER.NAME", "slkd", *SLKD, "SLKD.MODE", "sequential"], networks)
    optimizers, _ = build_optimizers(distiller.optimizer_param_groups(), cfg.SOLVER, None)
    images, targets, indices = cls_batch()
    torch.manual_seed(FORWARD_SEED)
    _, losses = distiller.train_step(images, targets, 100.0, optimizers, contextlib.nullcontext, indices)
    return as_floats(losses)


def classification_losses() -> dict[str, dict[str, float]]:
    """{"cls/<case>@<progress>": {loss name: value}} for every case of CLS_CASES, plus SLKD's sequential step."""
    results = {}
    with one_thread():
        networks = cls_networks()
        images, targets, indices = cls_batch()
        for case, (opts, progresses) in CLS_CASES.items():
            for progress in progresses:
                _, distiller = build_distiller(opts, networks)
                torch.manual_seed(FORWARD_SEED)
                _, losses = distiller.compute_losses(images, targets, progress, indices)
                results[f"cls/{case}@{progress_label(progress)}"] = as_floats(losses)
        results["cls/slkd_sequential_step@100"] = slkd_sequential_step(networks)
    return results


# ---------------------------------------------------------------------------------------------------------
# Detection (the tiny models of tests/conftest.py)
# ---------------------------------------------------------------------------------------------------------
BASE_MOSAIC = REPO_ROOT / "configs" / "Demo" / "Base-Mosaic.yaml"
DET_NUM_CLASSES = 10  # Base-Mosaic.yaml
DET_IMAGE_SIZE = 64
DET_ITERATION = 50
DET_TEACHER_SEED = 1234
DET_LOGIT_SCALES = (15.0, 60.0)  # student, teacher box classifier (`cls_score`) times these: ROI logit std ~1 and ~2
# tests/conftest.py's TINY_OPTS: the smallest Faster R-CNN R18-FPN that runs every code path on a CPU.
TINY_OPTS = [
    "MODEL.DEVICE", "cpu",
    "MODEL.WEIGHTS", "",
    "MODEL.RESNETS.DEPTH", 18,
    "MODEL.RESNETS.RES2_OUT_CHANNELS", 64,
    "MODEL.RESNETS.NORM", "BN",
    "MODEL.FPN.OUT_CHANNELS", 32,
    "MODEL.ANCHOR_GENERATOR.SIZES", [[8], [16], [32], [64], [128]],
    "MODEL.RPN.BATCH_SIZE_PER_IMAGE", 32,
    "MODEL.RPN.PRE_NMS_TOPK_TRAIN", 200,
    "MODEL.RPN.POST_NMS_TOPK_TRAIN", 64,
    "MODEL.RPN.PRE_NMS_TOPK_TEST", 100,
    "MODEL.RPN.POST_NMS_TOPK_TEST", 50,
    "MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE", 32,
    "MODEL.ROI_BOX_HEAD.FC_DIM", 32,
    "INPUT.MIN_SIZE_TRAIN", (DET_IMAGE_SIZE,),
    "INPUT.MAX_SIZE_TRAIN", DET_IMAGE_SIZE,
    "INPUT.MIN_SIZE_TEST", DET_IMAGE_SIZE,
    "INPUT.MAX_SIZE_TEST", DET_IMAGE_SIZE,
    "SOLVER.IMS_PER_BATCH", 2,
    "SOLVER.WARMUP_ITERS", 0,
    "DATALOADER.NUM_WORKERS", 0,
    "TEST.EVAL_PERIOD", 0,
    "DISTILL.UNIKD.AFF.CHANNELS", 8,
]
# The teacher differs from the student in FPN width, so every adapter maps 32 to 16 channels.
TEACHER_OPTS = ["MODEL.FPN.OUT_CHANNELS", 16]

# case -> (DISTILL overrides, EventStorage iteration). Each case enables its terms alone.
DET_CASES: dict[str, tuple[list, int]] = {
    "student_only": ([], DET_ITERATION),
    "kd": (["DISTILL.KD.ENABLED", True], DET_ITERATION),
    "dkd": (["DISTILL.DKD.ENABLED", True], DET_ITERATION),
    "kd_fg": (["DISTILL.KD.ENABLED", True, "DISTILL.KD.BG_MODE", "fg"], DET_ITERATION),
    "mlkd": (["DISTILL.MLKD.ENABLED", True, "DISTILL.MLKD.STRONG_VIEW_KD", True], DET_ITERATION),
    "mlkd_no_strong_view_kd": (["DISTILL.MLKD.ENABLED", True, "DISTILL.MLKD.STRONG_VIEW_KD", False], DET_ITERATION),
    "fitnet": (["DISTILL.FITNET.ENABLED", True], DET_ITERATION),
    "fgfi": (["DISTILL.FGFI.ENABLED", True, "DISTILL.FGFI.START", 0], DET_ITERATION),
    "fgfi_before_start": (["DISTILL.FGFI.ENABLED", True], DET_ITERATION),  # the default START 401
    "reviewkd": (["DISTILL.REVIEWKD.ENABLED", True], DET_ITERATION),
    "unikd": (["DISTILL.UNIKD.ENABLED", True], DET_ITERATION),
    "unikd_dkd": (["DISTILL.UNIKD.ENABLED", True, "DISTILL.UNIKD.LOGIT_LOSS", "dkd"], DET_ITERATION),
    # Without AFF only the coarsest level is read. p6 is 1x1 on 64x64 images, where the expander's GroupNorm (one
    # channel per group) maps every input to its bias and L_FL is identically 0, so this case stops at p5 (2x2).
    "unikd_no_aff": (["DISTILL.UNIKD.ENABLED", True, "DISTILL.UNIKD.AFF.ENABLED", False,
                      "DISTILL.UNIKD.IN_FEATURES", ["p2", "p3", "p4", "p5"]], DET_ITERATION),
    "unikd_authors": (["DISTILL.UNIKD.ENABLED", True, "DISTILL.UNIKD.MODE", "authors_code"], DET_ITERATION),
    # WARMUP 10 at iteration 3 (progress 4): every distillation loss times 4 / 10.
    "warmup_kd_unikd": (["DISTILL.KD.ENABLED", True, "DISTILL.KD.WARMUP", 10, "DISTILL.UNIKD.ENABLED", True,
                         "DISTILL.UNIKD.WARMUP", 10], 3),
}


def det_stock_cfg(extra_opts: list = ()):
    """tests/conftest.py's stock_cfg: get_cfg + DISTILL node + Base-Mosaic.yaml + TINY_OPTS + extra_opts."""
    from detectron2.config import get_cfg

    from unikd_det import add_distill_config

    cfg = get_cfg()
    add_distill_config(cfg)
    cfg.merge_from_file(str(BASE_MOSAIC))
    cfg.merge_from_list(list(TINY_OPTS))
    cfg.merge_from_list(list(extra_opts))
    return cfg


def scale_box_classifier(model: nn.Module, scale: float) -> None:
    with torch.no_grad():
        model.roi_heads.box_predictor.cls_score.weight.mul_(scale)


def write_teacher(folder: Path) -> tuple[Path, Path]:
    """(config, weights) of the tiny randomly initialised stock teacher, as tests/conftest.py's teacher_files."""
    from detectron2.checkpoint import DetectionCheckpointer
    from detectron2.modeling import build_model

    cfg = det_stock_cfg(TEACHER_OPTS)
    cfg.MODEL.META_ARCHITECTURE = "GeneralizedRCNN"
    config_path = folder / "teacher.yaml"
    config_path.write_text(cfg.dump())
    torch.manual_seed(DET_TEACHER_SEED)
    model = build_model(cfg)
    scale_box_classifier(model, DET_LOGIT_SCALES[1])
    DetectionCheckpointer(model, save_dir=str(folder)).save("teacher")
    return config_path, folder / "teacher.pth"


def det_student_state() -> dict[str, Tensor]:
    """The student's weights: a stock GeneralizedRCNN of the tiny config built from STUDENT_SEED alone."""
    from detectron2.modeling import build_model

    cfg = det_stock_cfg()
    torch.manual_seed(STUDENT_SEED)
    model = build_model(cfg)
    scale_box_classifier(model, DET_LOGIT_SCALES[0])
    return model.state_dict()


def synthetic_inputs(num_images: int = 2, size: int = DET_IMAGE_SIZE, seed: int = 0) -> list[dict]:
    """tests/conftest.py's synthetic_inputs: uint8 CHW images with 1-3 bright boxes on a noisy background."""
    from detectron2.structures import Boxes, Instances

    height = width = size
    gen = torch.Generator().manual_seed(seed)
    inputs = []
    for _ in range(num_images):
        image = torch.randint(0, 40, (3, height, width), generator=gen, dtype=torch.uint8)
        count = int(torch.randint(1, 4, (1,), generator=gen))
        boxes, classes = [], []
        for _ in range(count):
            w, h = (int(v) for v in torch.randint(12, min(height, width) // 2, (2,), generator=gen))
            x0 = int(torch.randint(0, width - w, (1,), generator=gen))
            y0 = int(torch.randint(0, height - h, (1,), generator=gen))
            image[:, y0 : y0 + h, x0 : x0 + w] = torch.randint(120, 256, (3, 1, 1), generator=gen, dtype=torch.uint8)
            boxes.append([x0, y0, x0 + w, y0 + h])
            classes.append(int(torch.randint(0, DET_NUM_CLASSES, (1,), generator=gen)))
        instances = Instances((height, width))
        instances.gt_boxes = Boxes(torch.tensor(boxes, dtype=torch.float32))
        instances.gt_classes = torch.tensor(classes, dtype=torch.int64)
        inputs.append({"image": image, "height": height, "width": width, "instances": instances})
    return inputs


def build_distill_rcnn(opts: list, teacher: tuple[Path, Path], student_state: dict[str, Tensor]) -> nn.Module:
    """DistillRCNN of the tiny config with `opts` (every term off unless `opts` enables it), the student
    loaded from `student_state`, the distillation modules overwritten (module docstring), in train mode."""
    from detectron2.modeling import build_model

    cfg = det_stock_cfg()
    cfg.MODEL.META_ARCHITECTURE = "DistillRCNN"
    cfg.DISTILL.TEACHER.CONFIG = str(teacher[0])
    cfg.DISTILL.TEACHER.WEIGHTS = str(teacher[1])
    cfg.DISTILL.KD.ENABLED = False
    cfg.DISTILL.UNIKD.ENABLED = False
    cfg.merge_from_list(list(opts))
    torch.manual_seed(BUILD_SEED)
    model = build_model(cfg)
    model.student.load_state_dict(student_state, strict=True)
    overwrite_distillation_modules(model, ("student.",))
    return model.train()


def detection_losses() -> dict[str, dict[str, float]]:
    """{"det/<case>@<iteration>": {loss name: value}} for every case of DET_CASES."""
    import logging

    from detectron2.utils.events import EventStorage

    import unikd_det  # noqa: F401  (registers DistillRCNN and the terms)

    results = {}
    quiet = logging.getLogger("unikd_det")
    level = quiet.level
    quiet.setLevel(logging.ERROR)  # "No DISTILL term is enabled", teacher loading
    try:
        with one_thread(), tempfile.TemporaryDirectory(prefix="unikd_pins_") as folder:
            teacher = write_teacher(Path(folder))
            student_state = det_student_state()
            inputs = synthetic_inputs(2, DET_IMAGE_SIZE, seed=0)
            for case, (opts, iteration) in DET_CASES.items():
                model = build_distill_rcnn(opts, teacher, student_state)
                model.build_teacher()  # not lazily in the forward, where its build would consume random numbers
                torch.manual_seed(FORWARD_SEED)
                with EventStorage(start_iter=iteration):
                    losses = model(inputs)
                results[f"det/{case}@{iteration}"] = as_floats(losses)
    finally:
        quiet.setLevel(level)
    return results


# ---------------------------------------------------------------------------------------------------------
# Writing and comparing
# ---------------------------------------------------------------------------------------------------------
def all_losses() -> dict[str, dict[str, float]]:
    return {**classification_losses(), **detection_losses()}


def relative_difference(value: float, pinned: float) -> float:
    """|value - pinned| / max(|value|, |pinned|); 0 when both are equal (both 0 included)."""
    if value == pinned:
        return 0.0
    return abs(value - pinned) / max(abs(value), abs(pinned))


def compare(current: dict[str, dict[str, float]], pinned: dict[str, dict[str, float]]) -> dict[str, str | float]:
    """Per case: the largest relative difference over its losses, or a string naming missing or new keys."""
    report: dict[str, str | float] = {}
    for case in sorted(set(current) | set(pinned)):
        if case not in pinned:
            report[case] = "not pinned"
        elif case not in current:
            report[case] = "not computed"
        elif set(current[case]) != set(pinned[case]):
            missing, new = set(pinned[case]) - set(current[case]), set(current[case]) - set(pinned[case])
            report[case] = f"keys differ: missing {sorted(missing)}, new {sorted(new)}"
        else:
            report[case] = max((relative_difference(current[case][k], pinned[case][k]) for k in pinned[case]),
                               default=0.0)
    return report


def dump(losses: dict[str, dict[str, float]]) -> str:
    return json.dumps(losses, indent=2, sort_keys=True) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--write", action="store_true", help=f"write the values to {PINS_FILE}")
    parser.add_argument("--rtol", type=float, default=1e-6, help="tolerance of the comparison (default 1e-6)")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    losses = all_losses()
    seconds = time.perf_counter() - start
    if args.write:
        PINS_FILE.write_text(dump(losses))
        print(f"wrote {len(losses)} cases to {PINS_FILE} ({seconds:.1f} s)")
        return 0
    if not PINS_FILE.is_file():
        print(f"{PINS_FILE} does not exist; run with --write")
        return 1
    report = compare(losses, json.loads(PINS_FILE.read_text()))
    failed = 0
    for case, result in report.items():
        ok = isinstance(result, float) and result <= args.rtol
        failed += not ok
        print(f"{'ok  ' if ok else 'FAIL'} {case:40s} {result if isinstance(result, str) else f'{result:.3g}'}")
    print(f"{len(report) - failed}/{len(report)} cases within rtol {args.rtol:g} ({seconds:.1f} s)")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.path.insert(0, str(REPO_ROOT))  # the code of this checkout, not whatever `unikd` is installed
    sys.exit(main())
