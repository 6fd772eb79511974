"""ImageNet: the image folder `<DATASET.ROOT>/imagenet/{train,val}/<wnid>/*.JPEG` (read by image_folder.py).

val/ must already be sorted into the 1000 wnid class folders, as train/ is. It is the reported ("test") split,
like any image folder's val/; the selection split is carved from train/ (DATASET.VAL_SIZE).
"""
from __future__ import annotations

from pathlib import Path

IMAGENET_FOLDER = "imagenet"


def imagenet_base(root: str | Path) -> Path:
    """The image folder ImageNet is read from: `imagenet/` under DATASET.ROOT."""
    return Path(root) / IMAGENET_FOLDER
