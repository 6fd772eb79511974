"""Device, seeding and mixed-precision choices of a run."""
from __future__ import annotations

import contextlib
import random
from typing import Callable, Iterable

import numpy as np
import torch
from torch import nn
from yacs.config import CfgNode


def resolve_device(name: str) -> torch.device:
    """TRAIN.DEVICE: "auto" picks CUDA when available; a named CUDA device must exist."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"TRAIN.DEVICE is {name!r} but CUDA is not available; use auto or cpu")
    return device


def seed_everything(seed: int, deterministic: bool) -> None:
    """Seed python, numpy and torch; in deterministic mode also force deterministic kernels."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.backends.cudnn.benchmark = not deterministic
    torch.use_deterministic_algorithms(deterministic, warn_only=True)


def autocast_factory(cfg: CfgNode, device: torch.device) -> tuple[Callable[[], contextlib.AbstractContextManager], bool]:
    """(context factory for the forward passes, whether float16 gradients need a GradScaler).

    AMP applies on CUDA only: bfloat16 where the GPU supports it (no loss scaling needed), else float16.
    """
    if device.type != "cuda" or not cfg.TRAIN.AMP:
        return contextlib.nullcontext, False
    dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return (lambda: torch.autocast("cuda", dtype=dtype)), dtype == torch.float16


def use_channels_last(cfg: CfgNode, device: torch.device) -> bool:
    """TRAIN.CHANNELS_LAST: networks and batches in channels_last (NHWC) memory, on CUDA (tensor-core convolutions)
    and on the CPU alike (oneDNN's convolutions take NHWC without reordering: on an idle 2-core AMD EPYC, with the
    teacher BN-folded as well, resnet32x4's forward at batch 64 went from 836 to 722 ms and resnet8x4's training
    step from 525 to 448 ms; docs/results/speed.md)."""
    return bool(cfg.TRAIN.CHANNELS_LAST)


def compile_networks(networks: Iterable[nn.Module]) -> None:
    """TRAIN.COMPILE: each network's forward through torch.compile, in place (`nn.Module.compile`: the module
    keeps its parameters and state-dict keys, so checkpoints, resumes and exports are those of an eager run).
    The first steps pay the compilation; later ones run the compiled graphs (fused kernels, fewer launches)."""
    for network in networks:
        network.compile()
