"""A strongly augmented second view of a normalised training batch (MLKD's "strong" view).

MLKD (Jin et al., CVPR 2023) trains on a weakly augmented view (crop + flip) and a strongly augmented one.
The in-memory loaders hand the distiller normalised batches on the training device, so the strong view is
made there, from the weak one, for the whole batch at once: each image independently gets, with probability
1/2 each, a random affine warp (rotation, shear, translation), a brightness shift, a contrast change and a
cutout square, in the spirit of RandAugment's geometric and photometric operations plus Cutout. Draws come
from torch's global generator (its state is part of every checkpoint, so resumed runs repeat them).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

MAX_ROTATION_DEGREES = 30.0
MAX_SHEAR = 0.3
MAX_TRANSLATION = 0.3  # fraction of the half-size (affine_grid's [-1, 1] coordinates)
MAX_BRIGHTNESS = 0.5  # shift in units of the normalised data's standard deviation
CONTRAST_RANGE = (0.5, 1.5)
CUTOUT_FRACTION = 0.5  # cutout side as a fraction of the image side


def _uniform(n: int, low: float, high: float) -> Tensor:
    return torch.rand(n) * (high - low) + low


def _applied(n: int) -> Tensor:
    """Per image: whether an operation applies (probability 1/2)."""
    return torch.rand(n) < 0.5


def random_affine(images: Tensor) -> Tensor:
    """Each image warped by its own rotation, shear and translation (the identity for about half of them)."""
    n = images.shape[0]
    angle = _uniform(n, -1.0, 1.0) * math.radians(MAX_ROTATION_DEGREES)
    shear = _uniform(n, -MAX_SHEAR, MAX_SHEAR)
    shift = _uniform(2 * n, -MAX_TRANSLATION, MAX_TRANSLATION).view(n, 2)
    cos, sin = torch.cos(angle), torch.sin(angle)
    theta = torch.stack([torch.stack([cos, -sin + shear, shift[:, 0]], 1),
                         torch.stack([sin, cos, shift[:, 1]], 1)], 1)
    identity = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    theta = torch.where(_applied(n)[:, None, None], theta, identity)
    grid = F.affine_grid(theta.to(images), list(images.shape), align_corners=False)
    return F.grid_sample(images, grid, padding_mode="zeros", align_corners=False)


def random_photometric(images: Tensor) -> Tensor:
    """Brightness shift and contrast scaling about each image's mean, each applied to about half the images."""
    n = images.shape[0]
    shift = torch.where(_applied(n), _uniform(n, -MAX_BRIGHTNESS, MAX_BRIGHTNESS), torch.zeros(n))
    scale = torch.where(_applied(n), _uniform(n, *CONTRAST_RANGE), torch.ones(n))
    shift, scale = (v.to(images).view(n, 1, 1, 1) for v in (shift, scale))
    mean = images.mean(dim=(1, 2, 3), keepdim=True)
    return (images - mean) * scale + mean + shift


def random_cutout(images: Tensor) -> Tensor:
    """A square of side CUTOUT_FRACTION * size set to 0 (the data mean) at a random centre, in about half."""
    n, _, h, w = images.shape
    side = max(1, int(round(CUTOUT_FRACTION * min(h, w))))
    centre_y = (torch.rand(n) * h).long()
    centre_x = (torch.rand(n) * w).long()
    on = _applied(n)
    rows = torch.arange(h)[None, :, None]
    cols = torch.arange(w)[None, None, :]
    inside = ((rows - centre_y[:, None, None]).abs() <= side // 2) & ((cols - centre_x[:, None, None]).abs() <= side // 2)
    keep = ~(inside & on[:, None, None])
    return images * keep[:, None].to(images)


def strong_view(images: Tensor) -> Tensor:
    """The strong view of a normalised batch [N, C, H, W]: affine, then photometric, then cutout."""
    if images.dim() != 4:
        raise ValueError(f"strong_view expects a batch [N, C, H, W], got shape {tuple(images.shape)}")
    return random_cutout(random_photometric(random_affine(images)))
