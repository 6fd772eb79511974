"""Feature Distribution Prediction (FDP): maps a fused feature to a diagonal Gaussian over the K labels."""
from __future__ import annotations

import torch
from torch import Tensor, nn


class FeatureDistributionPredictor(nn.Module):
    """Predicts (mu, logvar), each [N, K], from a fused map [N, C, H, W] or a pooled vector [N, C].

    A 4-D input is global-average-pooled first (image-level FDP); ROI-level callers pass already pooled
    [N_roi, C] or [N_roi, C, h, w] regions. Two linear heads read the pooled vector. The log-variance is
    bounded smoothly, logvar = s * tanh(raw / s) with s = logvar_bound: unlike a hard clamp it keeps a
    gradient everywhere, and it keeps exp(logvar) within [e^-s, e^s] so the Gaussian KL (Eq. 6) and the
    fit NLL cannot explode (docs/DESIGN.md section 8). `logvar_bound=None` leaves the log-variance
    unbounded, as the authors' detection code does (FabienCode/mdistiller detection/model/rcnn.py, featPro).
    """

    def __init__(self, channels: int, num_outputs: int, *, logvar_bound: float | None = 4.0) -> None:
        super().__init__()
        if channels <= 0 or num_outputs <= 0:
            raise ValueError(f"channels and num_outputs must be > 0, got {channels} and {num_outputs}")
        if logvar_bound is not None and logvar_bound <= 0:
            raise ValueError(f"logvar_bound must be > 0 (or None: unbounded), got {logvar_bound}")
        self.channels = channels
        self.logvar_bound = logvar_bound
        self.mu_head = nn.Linear(channels, num_outputs)
        self.logvar_head = nn.Linear(channels, num_outputs)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Returns (mu, logvar), each [N, num_outputs], with |logvar| < logvar_bound when bounded."""
        if x.dim() not in (2, 4):
            raise ValueError(f"FDP input must be [N, C, H, W] or [N, C], got rank {x.dim()}")
        if x.shape[1] != self.channels:
            raise ValueError(f"FDP expects {self.channels} channels, got {x.shape[1]}")
        pooled = x.mean(dim=(2, 3)) if x.dim() == 4 else x
        logvar, s = self.logvar_head(pooled), self.logvar_bound
        return self.mu_head(pooled), logvar if s is None else s * torch.tanh(logvar / s)
