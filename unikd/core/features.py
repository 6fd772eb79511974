"""What a network declares about a feature map it exposes, so that terms can tap it by name."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class FeatureSpec:
    """A tapped feature map: its name, channel count, reduction (stride against the input; 0 for a globally
    pooled map, 1x1 whatever the input) and whether the network also exposes it before its last activation
    (`preact`)."""

    name: str
    channels: int
    reduction: int
    preact: bool = False
