"""Adaptive Feature Fusion (AFF), UniKD paper Eq. 4: a gated top-down fusion of multi-level features.

Each level i is first mapped to C channels by an expander E_i = 1x1 conv + normalisation. The
normalisation is not in the paper; it is required for stability (docs/DESIGN.md section 8: without it the fused
maps grew without bound and training diverged within 20 iterations at LR 0.05). Fusion runs from the
coarsest level down: R_L = E_L(F_L) and, for i = L..2,

    U = Up(R_i) to the size of F_{i-1},  X = E_{i-1}(F_{i-1}),  R_{i-1} = gate(X, U).

Up is nearest-neighbour interpolation to the exact target size, as in the FPN top-down path: it is the
cheapest choice, has no parameters and handles odd sizes.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .checks import check_choice

NORMS = ("bn", "gn")
GATES = ("complementary", "independent")


def _expander(in_channels: int, channels: int, norm: str) -> nn.Sequential:
    """E_i: 1x1 conv to C channels followed by BatchNorm ("bn") or GroupNorm ("gn").

    GroupNorm uses gcd(32, C) groups so the group count always divides C; it is the batch-independent
    choice for detection, where a GPU sees only 1-8 images.
    """
    norm_layer = nn.BatchNorm2d(channels) if norm == "bn" else nn.GroupNorm(math.gcd(32, channels), channels)
    return nn.Sequential(nn.Conv2d(in_channels, channels, kernel_size=1, bias=False), norm_layer)


class ComplementaryGate(nn.Module):
    """Paper gate: g = sigmoid(Conv3x3([X; U])) with C channels, R = g * X + (1 - g) * U."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(2 * channels, channels, kernel_size=3, padding=1)

    def forward(self, x: Tensor, u: Tensor) -> tuple[Tensor, Tensor]:
        """Returns the fused map and the gate map g, [N, C, H, W]."""
        g = torch.sigmoid(self.conv(torch.cat([x, u], dim=1)))
        return g * x + (1 - g) * u, g


class IndependentGate(nn.Module):
    """Authors'-code gate: a 1x1 conv on [X; U] to two maps with independent sigmoids, R = g1 * X + g2 * U."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(2 * channels, 2, kernel_size=1)

    def forward(self, x: Tensor, u: Tensor) -> tuple[Tensor, Tensor]:
        """Returns the fused map and the gates stacked as [N, 2, H, W] (channel 0 = g1 on X, 1 = g2 on U)."""
        g = torch.sigmoid(self.conv(torch.cat([x, u], dim=1)))
        return g[:, :1] * x + g[:, 1:] * u, g


class AdaptiveFeatureFusion(nn.Module):
    """Fuses feature maps ordered finest to coarsest into one C-channel map at the finest resolution.

    gate="complementary" is the paper's Eq. 4. gate="independent" is the authors' public-code variant
    (IndependentGate plus a final 3x3 conv + ReLU on the fused finest map, also applied when there is a
    single level). With one input level and the complementary gate the module is just the normalised
    expander, which is the paper's "FDP on the last stage" ablation.
    """

    def __init__(
        self, in_channels: list[int], channels: int, *, norm: str = "bn", gate: str = "complementary"
    ) -> None:
        super().__init__()
        if not in_channels or any(c <= 0 for c in in_channels):
            raise ValueError(f"in_channels must be a non-empty list of positive ints, got {in_channels}")
        if channels <= 0:
            raise ValueError(f"channels must be > 0, got {channels}")
        check_choice("norm", norm, NORMS)
        check_choice("gate", gate, GATES)
        self.in_channels = list(in_channels)
        self.channels = channels
        self.expanders = nn.ModuleList(_expander(c, channels, norm) for c in in_channels)
        gate_cls = ComplementaryGate if gate == "complementary" else IndependentGate
        # gates[i] produces R_i from level i and the upsampled R_{i+1} (0-based, finest first).
        self.gates = nn.ModuleList(gate_cls(channels) for _ in in_channels[:-1])
        self.output = (
            nn.Sequential(nn.Conv2d(channels, channels, kernel_size=3, padding=1), nn.ReLU(inplace=True))
            if gate == "independent"
            else nn.Identity()
        )

    def _check_inputs(self, feats: list[Tensor]) -> None:
        if len(feats) != len(self.in_channels):
            raise ValueError(f"expected {len(self.in_channels)} feature maps, got {len(feats)}")
        for level, (f, c) in enumerate(zip(feats, self.in_channels)):
            if f.dim() != 4 or f.shape[1] != c:
                raise ValueError(f"feature map {level} must be [N, {c}, H, W], got {tuple(f.shape)}")

    def forward(self, feats: list[Tensor], return_gates: bool = False) -> Tensor | tuple[Tensor, list[Tensor]]:
        """Returns R_1, [N, C, H_1, W_1]; with return_gates also the gate maps, finest level first.

        The gate list has one entry per fusion step (L - 1 entries); see ComplementaryGate and
        IndependentGate for the shapes. It exists so tests can check that every gate lies in [0, 1].
        """
        self._check_inputs(feats)
        fused = self.expanders[-1](feats[-1])
        gates: list[Tensor] = []
        for level in range(len(feats) - 2, -1, -1):
            x = self.expanders[level](feats[level])
            u = F.interpolate(fused, size=x.shape[-2:], mode="nearest")
            fused, g = self.gates[level](x, u)
            gates.append(g)
        fused = self.output(fused)
        if return_gates:
            return fused, gates[::-1]
        return fused
