"""`python -m classification eval`: the test accuracy of a saved network."""
from __future__ import annotations

from pathlib import Path

import torch
from yacs.config import CfgNode

from ..data import build_data
from ..models import build_model
from .checkpoint import load_network
from .runtime import autocast_factory, resolve_device, use_channels_last
from .trainer import evaluate


def evaluate_checkpoint(cfg: CfgNode, checkpoint: str | Path) -> dict[str, float | str]:
    """Build MODEL.STUDENT, load `checkpoint` into it and evaluate it on the test split of cfg.DATASET."""
    device = resolve_device(cfg.TRAIN.DEVICE)
    data = build_data(cfg, device)
    model = load_network(
        build_model(cfg.MODEL.STUDENT, data.num_classes, data.family), checkpoint, cfg.MODEL.STUDENT, data.num_classes
    ).to(device)
    channels_last = use_channels_last(cfg, device)
    if channels_last:
        model.to(memory_format=torch.channels_last)
    autocast, _ = autocast_factory(cfg, device)
    result = evaluate(model, data.test, channels_last, autocast)
    return {"checkpoint": str(checkpoint), "arch": cfg.MODEL.STUDENT, **result}
