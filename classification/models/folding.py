"""BatchNorm folding for a frozen network (the teacher): each eval-mode BatchNorm that directly follows a
convolution becomes that convolution's scale and bias.

In evaluation mode BN is a per-channel affine map, y = gamma * (x - mu) / sqrt(var + eps) + beta, so after a
convolution W * x it can be written into the convolution itself: W' = W * gamma / sqrt(var + eps) and
b' = beta - mu * gamma / sqrt(var + eps) (+ the old bias so scaled). The network computes the same function up to
float rounding, with one pass over each map less: on the CPU the teacher's forward, most of a KD step, gets about a
tenth faster. Folding needs the network's graph, taken with torch.fx; a BN whose input something else also reads
(a tapped map before its BN) stays as it is, and so does a network that fx cannot trace.
"""
from __future__ import annotations

import logging

from torch import nn
from torch.fx.experimental.optimization import fuse

logger = logging.getLogger(__name__)

# What the distillers and the trainer read from a zoo network besides its forward (registry.py's contract);
# the traced copy is a new module, so they are carried over.
CONTRACT_ATTRIBUTES = ("feature_info", "pooled_channels")


def fold_batchnorm(model: nn.Module) -> nn.Module:
    """A copy of the eval-mode `model` with its conv -> BatchNorm pairs folded (module docstring); its forward
    returns what `model`'s does, up to float rounding. `model` itself is left unchanged. A network in training mode
    is a ValueError (its BN normalises with batch statistics, which no fixed convolution reproduces); one that
    torch.fx cannot trace is returned as it is, with a log line saying why, and so is one with no BatchNorm left
    (an already folded teacher, shared by several distillers, is not copied again)."""
    if model.training:
        raise ValueError("fold_batchnorm folds a network in eval mode; call .eval() first")
    if not any(isinstance(module, nn.modules.batchnorm._BatchNorm) for module in model.modules()):
        return model
    try:
        folded = fuse(model)  # a deep copy, traced; conv -> BN pairs whose conv output has one reader are folded
    except Exception as error:  # tracing runs arbitrary user code: any failure means "run it unfolded"
        logger.info("teacher BatchNorm not folded: %s cannot be traced by torch.fx (%s: %s)",
                    type(model).__name__, type(error).__name__, error)
        return model
    for name in CONTRACT_ATTRIBUTES:
        if hasattr(model, name):
            setattr(folded, name, getattr(model, name))
    return folded.eval()  # the traced wrapper is a new module, built in training mode
