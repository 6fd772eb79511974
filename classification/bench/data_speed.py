"""`python -m classification bench --data-speed`: images per second of the image-folder training loader.

The loader of `DATASET.NAME image_folder` / `imagenet` (classification/data/folder_loader.py: decode and
random-resized crop on the workers, flip and normalisation on the device) is timed over `--batches` training
batches for each worker count of `--workers`, after one untimed batch (the workers' start). It reads
`--data-root` (an image folder, `<root>/train/<class>/<image>`), or, by default, a folder of `--images` synthetic
JPEGs of ImageNet's typical size (500 x 375) written to a temporary directory and removed afterwards. On a GPU
machine the number to compare it with is the model's training images/s (`bench --speed`): a loader slower than the
step leaves the GPU waiting.
"""
from __future__ import annotations

import argparse
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from unikd.bench.speed import machine_description, render_table, synchronize, write_json

from ..data.folder_loader import DeviceLoader
from ..data.image_folder import image_folder_datasets
from ..engine.runtime import resolve_device

SYNTHETIC_SIZE = (500, 375)  # width, height: the most common ImageNet training image size
SYNTHETIC_CLASSES = 8
JPEG_QUALITY = 90
DEFAULT_CROP = 224  # --image-size when not given: the ImageNet recipe's crops


def write_synthetic_jpegs(root: Path, count: int, seed: int = 0) -> Path:
    """`root/{train,val}/<class>/<i>.jpg`: `count` training JPEGs (and one val image per class) of smooth colour
    gradients with noise, which compress about as natural photos do. Returns `root`."""
    rng = np.random.default_rng(seed)
    width, height = SYNTHETIC_SIZE
    ramp = np.linspace(0, 1, width)[None, :, None] * np.linspace(0, 1, height)[:, None, None]
    for split, per_class in (("train", -(-count // SYNTHETIC_CLASSES)), ("val", 1)):
        for label in range(SYNTHETIC_CLASSES):
            folder = root / split / f"class{label}"
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(per_class):
                colour = rng.uniform(0, 255, 3)
                pixels = ramp * colour + rng.normal(0, 12, (height, width, 3))
                Image.fromarray(pixels.clip(0, 255).astype(np.uint8)).save(folder / f"{i}.jpg", quality=JPEG_QUALITY)
    return root


def images_per_second(loader: DeviceLoader, batches: int, device: torch.device) -> float:
    """Training images the loader delivers per second on `device`, over `batches` batches after one untimed one
    (epochs are repeated when one is shorter)."""
    if len(loader) == 0:
        raise ValueError("the training split has fewer images than one batch; use a smaller --batch-size")
    epoch, seen, timed, start = 0, 0, -1, 0.0
    while timed < batches:
        loader.set_epoch(epoch)
        for images, _, _ in loader:
            timed += 1
            if timed == 0:  # the first batch waits for the workers to start: not timed
                synchronize(device)
                start = time.perf_counter()
                continue
            seen += len(images)
            if timed == batches:
                break
        epoch += 1
    synchronize(device)
    return seen / (time.perf_counter() - start)


def run_data_speed(args: argparse.Namespace, output: str | Path | None = None) -> dict[int, float]:
    """Time the training loader at each worker count; print the table and return {workers: images/s}."""
    if min(args.workers) < 0:
        raise ValueError(f"--workers takes counts >= 0, got {args.workers}")
    device = resolve_device(args.device)
    with tempfile.TemporaryDirectory(prefix="unikd-data-speed-") as scratch:
        root = Path(args.data_root) if args.data_root else write_synthetic_jpegs(Path(scratch), args.images)
        size = args.image_size or DEFAULT_CROP
        train, _ = image_folder_datasets(root, size, workers=max(args.workers))
        speeds = {}
        for workers in args.workers:
            loader = DeviceLoader(train, args.batch_size, train=True, workers=workers, seed=0, device=device)
            speeds[workers] = images_per_second(loader, args.batches, device)
            del loader  # stops its persistent workers before the next count starts its own
    rows = [[str(w), f"{s:.0f}", f"{1000 * args.batch_size / s:.0f}"] for w, s in speeds.items()]
    table = render_table(rows, ["workers", "images/s", "ms per batch"])
    source = args.data_root or f"{args.images} synthetic {SYNTHETIC_SIZE[0]}x{SYNTHETIC_SIZE[1]} JPEGs"
    print(f"\ntraining loader: {source}, crops of {size}, batch {args.batch_size}, {device}, "
          f"{args.batches} timed batches")
    print(table)
    if output is not None:
        settings = {key: value for key, value in vars(args).items() if key != "func"}
        write_json({"date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                    "machine": machine_description(device), "settings": settings,
                    "images_per_second": {str(w): s for w, s in speeds.items()}, "table": table}, output)
    return speeds
