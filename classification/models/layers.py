"""Building blocks shared by the zoo's model files: conv-BN-activation, the stage runner that taps
pre-activation maps, global pooling and weight initialisation.

Every stage-ending block in the zoo exposes `forward_preact(x) -> (out, preact)`, so one helper
(`run_stage`, `run_stages`) collects both the post- and the pre-activation map of any stage.
"""
from __future__ import annotations

from typing import Iterable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .registry import ModelOutput


class ConvNormAct(nn.Sequential):
    """Conv (no bias, 'same' padding) -> BatchNorm -> activation.

    A Sequential, so its parameters are named `0.*` (conv) and `1.*` (BN) like torchvision's
    Conv2dNormActivation; pass `act=nn.Identity` for a linear conv-BN.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 3,
        stride: int = 1,
        groups: int = 1,
        act: type[nn.Module] = nn.ReLU,
    ) -> None:
        super().__init__(
            nn.Conv2d(in_channels, out_channels, kernel_size, stride, kernel_size // 2, groups=groups, bias=False),
            nn.BatchNorm2d(out_channels),
            act(),
        )

    def forward_preact(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """(activated output, BN output before the activation)."""
        preact = self[1](self[0](x))
        return self[2](preact), preact


class PreactBlock(nn.Module):
    """Base of blocks that end in an activation: subclasses implement `forward_preact`."""

    def forward_preact(self, x: Tensor) -> tuple[Tensor, Tensor]:
        raise NotImplementedError

    def forward(self, x: Tensor) -> Tensor:
        return self.forward_preact(x)[0]


def run_stage(stage: nn.Sequential, x: Tensor) -> tuple[Tensor, Tensor]:
    """Run every block of `stage`, the last through its `forward_preact`; returns (out, preact)."""
    *head, last = stage
    for block in head:
        x = block(x)
    return last.forward_preact(x)


def run_stages(stages: Iterable[nn.Sequential], x: Tensor) -> tuple[list[Tensor], list[Tensor]]:
    """Run `stages` in sequence from `x`; returns (each stage's output, each stage's preact)."""
    outs, preacts = [], []
    for stage in stages:
        x, preact = run_stage(stage, x)
        outs.append(x)
        preacts.append(preact)
    return outs, preacts


def classify_stages(
    stem: tuple[Tensor, Tensor], stages: Iterable[nn.Sequential], classifier: nn.Module, head: nn.Module | None = None
) -> ModelOutput:
    """The shared tail of a stem-then-stages network.

    From the stem's (output, preact), run the stages, pool the last map (after `head` where the pooled
    vector has its own conv, as in ShuffleNetV2) and classify. The stem leads `feats` and `preact_feats`.
    """
    out, preact = stem
    outs, preacts = run_stages(stages, out)
    pooled = global_pool(outs[-1] if head is None else head(outs[-1]))
    return ModelOutput(classifier(pooled), [out, *outs], pooled, [preact, *preacts])


def global_pool(x: Tensor) -> Tensor:
    """[B, C, H, W] -> [B, C] spatial mean (flatten, not view: the input may be channels_last)."""
    return torch.flatten(F.adaptive_avg_pool2d(x, 1), 1)


def init_weights(model: nn.Module) -> None:
    """Standard init: Kaiming-normal (fan_out, ReLU gain) convs (all bias-free), BN weight 1 / bias 0,
    N(0, 0.01) linear weights with zero bias."""
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(module, nn.BatchNorm2d):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, 0.0, 0.01)
            nn.init.zeros_(module.bias)
