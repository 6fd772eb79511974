"""Generate a small, deterministic COCO-format detection set by pasting 28x28 items onto canvases.

No detection data set can be fetched on the project's machines, but Fashion-MNIST can. Pasting a few
resized Fashion-MNIST items onto a dark canvas gives a real (if easy) detection task that Detectron2
trains on from scratch in minutes, which the demos and tests use.

Each object's box is the tight box of the item pixels brighter than ``_BOX_THRESHOLD`` after resizing,
and only those pixels are pasted, so the visible object fills its box exactly. The background noise
stays at or below ``_NOISE_MAX`` (< ``_BOX_THRESHOLD``), so it never looks like an object.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path

import numpy as np
from PIL import Image

from unikd.data.fashion_mnist import FASHION_MNIST_CLASSES

logger = logging.getLogger(__name__)

Box = tuple[int, int, int, int]  # absolute XYWH, as COCO stores it

# Bump when the generation algorithm changes, so that sets cached on disk are regenerated.
_GENERATOR_VERSION = 1
_BOX_THRESHOLD = 16
_NOISE_MAX = 12
_MAX_IOU = 0.3
_PLACEMENT_TRIES = 10
_IMAGES_DIR = "images"
_ANNOTATIONS_FILE = "annotations.json"


def _validate_arguments(
    images: np.ndarray,
    labels: np.ndarray,
    num_images: int,
    canvas_size: int,
    min_objects: int,
    max_objects: int,
    min_item_size: int,
    max_item_size: int,
) -> None:
    """Raise ValueError for inputs or settings that cannot produce a valid data set."""
    if images.ndim != 3 or images.dtype != np.uint8:
        raise ValueError(f"images must be a uint8 array [N, H, W], got {images.dtype} {images.shape}")
    if len(images) == 0:
        raise ValueError("images is empty")
    if labels.shape != (len(images),):
        raise ValueError(f"labels must have shape ({len(images)},), got {labels.shape}")
    if labels.min() < 0 or labels.max() >= len(FASHION_MNIST_CLASSES):
        raise ValueError(f"labels must lie in 0..{len(FASHION_MNIST_CLASSES) - 1}")
    if num_images < 1:
        raise ValueError(f"num_images must be >= 1, got {num_images}")
    if not 1 <= min_objects <= max_objects:
        raise ValueError(f"need 1 <= min_objects <= max_objects, got {min_objects}, {max_objects}")
    if not 1 <= min_item_size <= max_item_size:
        raise ValueError(f"need 1 <= min_item_size <= max_item_size, got {min_item_size}, {max_item_size}")
    if max_item_size > canvas_size:
        raise ValueError(f"max_item_size {max_item_size} exceeds canvas_size {canvas_size}")


def _fingerprint(images: np.ndarray, labels: np.ndarray) -> str:
    """Return a SHA-256 digest of the item arrays, so a cached set built from other items is detected."""
    digest = hashlib.sha256()
    for array in (images, labels.astype(np.int64, copy=False)):
        digest.update(str(array.shape).encode())
        digest.update(np.ascontiguousarray(array).data)
    return digest.hexdigest()


def _is_up_to_date(json_path: Path, params: dict) -> bool:
    """Tell whether ``json_path`` was generated with ``params`` and all its images are still on disk."""
    try:
        coco = json.loads(json_path.read_text())
    except (OSError, ValueError):
        return False
    info = coco.get("info") if isinstance(coco, dict) else None
    if not isinstance(info, dict) or info.get("mosaic_params") != params:
        return False
    return all((json_path.parent / image["file_name"]).is_file() for image in coco["images"])


def _tight_box(mask: np.ndarray) -> Box | None:
    """Return the tight XYWH box of the True pixels of a 2-D mask, or None when there are none."""
    rows = np.flatnonzero(mask.any(axis=1))
    cols = np.flatnonzero(mask.any(axis=0))
    if rows.size == 0:
        return None
    return int(cols[0]), int(rows[0]), int(cols[-1] - cols[0] + 1), int(rows[-1] - rows[0] + 1)


def _iou(a: Box, b: Box) -> float:
    """Return the intersection over union of two XYWH boxes."""
    inter_w = max(0, min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0]))
    inter_h = max(0, min(a[1] + a[3], b[1] + b[3]) - max(a[1], b[1]))
    inter = inter_w * inter_h
    return inter / (a[2] * a[3] + b[2] * b[3] - inter)


def _compose_canvas(
    rng: np.random.Generator,
    images: np.ndarray,
    labels: np.ndarray,
    canvas_size: int,
    num_objects: int,
    min_item_size: int,
    max_item_size: int,
) -> tuple[np.ndarray, list[tuple[Box, int]]]:
    """Paste up to ``num_objects`` random items onto a noisy dark canvas.

    Each object gets ``_PLACEMENT_TRIES`` draws of (item, size, position); a draw is rejected when the
    resized item has no visible pixel or its box overlaps a placed box with IoU > ``_MAX_IOU``, and the
    object is dropped when every draw is rejected. Items are composited by per-pixel maximum.

    Returns:
        The uint8 canvas ``[canvas_size, canvas_size]`` and a list of ``(box, label)`` per placed object.
    """
    canvas = rng.integers(0, _NOISE_MAX + 1, size=(canvas_size, canvas_size), dtype=np.uint8)
    objects: list[tuple[Box, int]] = []
    for _ in range(num_objects):
        for _ in range(_PLACEMENT_TRIES):
            index = int(rng.integers(len(images)))
            size = int(rng.integers(min_item_size, max_item_size + 1))
            x0, y0 = (int(v) for v in rng.integers(0, canvas_size - size + 1, size=2))
            item = np.asarray(Image.fromarray(images[index]).resize((size, size), Image.Resampling.BILINEAR))
            visible = item > _BOX_THRESHOLD
            local_box = _tight_box(visible)
            if local_box is None:
                continue
            box = (local_box[0] + x0, local_box[1] + y0, local_box[2], local_box[3])
            if any(_iou(box, placed) > _MAX_IOU for placed, _ in objects):
                continue
            region = canvas[y0 : y0 + size, x0 : x0 + size]
            np.maximum(region, np.where(visible, item, 0).astype(np.uint8), out=region)
            objects.append((box, int(labels[index])))
            break
    return canvas, objects


def _write_atomically(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file, so readers never see a partial file."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def generate_mosaic_dataset(
    images: np.ndarray,
    labels: np.ndarray,
    out_dir: Path,
    num_images: int,
    canvas_size: int = 128,
    min_objects: int = 1,
    max_objects: int = 4,
    min_item_size: int = 24,
    max_item_size: int = 56,
    seed: int = 0,
) -> Path:
    """Build (or reuse) a COCO-format detection set of mosaics of the given items.

    Every canvas holds between 1 and ``max_objects`` items (``min_objects`` to ``max_objects`` are
    attempted; an item that cannot be placed without heavy overlap is dropped), each resized with
    bilinear filtering to a random square size in ``[min_item_size, max_item_size]``. Canvases are
    written as RGB PNGs to ``out_dir/images/`` and the annotations to ``out_dir/annotations.json``, whose
    ``file_name`` entries are relative to ``out_dir``. Category ids are ``label + 1`` (1..10, named by
    :data:`FASHION_MNIST_CLASSES`); boxes are tight, absolute XYWH; ``area`` is the box area.

    The result depends only on the arguments: the same seed and inputs give a byte-identical json.
    The json's ``info.mosaic_params`` records the settings and a digest of the items; when an existing
    json matches them and its images exist, nothing is regenerated.

    Args:
        images: uint8 items ``[N, H, W]`` (Fashion-MNIST: ``[N, 28, 28]``).
        labels: class index in ``0..9`` per item, shape ``[N]``.
        out_dir: folder to write to (created when missing).
        num_images: number of canvases.
        canvas_size: side of the square canvas in pixels.
        min_objects, max_objects: range of the number of items attempted per canvas.
        min_item_size, max_item_size: range of the side of a resized item in pixels.
        seed: seed of the numpy Generator that drives every random choice.

    Returns:
        Path of ``annotations.json``.

    Raises:
        ValueError: invalid arguments, or items so faint that a canvas received no object.
    """
    images, labels = np.asarray(images), np.asarray(labels)
    _validate_arguments(
        images, labels, num_images, canvas_size, min_objects, max_objects, min_item_size, max_item_size
    )
    out_dir = Path(out_dir)
    json_path = out_dir / _ANNOTATIONS_FILE
    params = {
        "generator_version": _GENERATOR_VERSION,
        "num_images": num_images,
        "canvas_size": canvas_size,
        "min_objects": min_objects,
        "max_objects": max_objects,
        "min_item_size": min_item_size,
        "max_item_size": max_item_size,
        "seed": seed,
        "num_items": len(images),
        "items_sha256": _fingerprint(images, labels),
    }
    if _is_up_to_date(json_path, params):
        logger.debug("Reusing mosaic data set %s", json_path)
        return json_path

    logger.info("Generating %d mosaic images in %s", num_images, out_dir)
    (out_dir / _IMAGES_DIR).mkdir(parents=True, exist_ok=True)
    json_path.unlink(missing_ok=True)  # an interrupted run must not leave a json that looks complete
    rng = np.random.default_rng(seed)
    coco_images: list[dict] = []
    annotations: list[dict] = []
    progress_every = max(100, num_images // 10)
    for image_id in range(1, num_images + 1):
        num_objects = int(rng.integers(min_objects, max_objects + 1))
        canvas, objects = _compose_canvas(
            rng, images, labels, canvas_size, num_objects, min_item_size, max_item_size
        )
        if not objects:
            raise ValueError(
                f"no item could be placed on canvas {image_id}: the items seem to have no pixel "
                f"brighter than {_BOX_THRESHOLD} after resizing"
            )
        file_name = f"{_IMAGES_DIR}/{image_id:06d}.png"
        Image.fromarray(canvas).convert("RGB").save(out_dir / file_name)
        coco_images.append(
            {"id": image_id, "file_name": file_name, "width": canvas_size, "height": canvas_size}
        )
        for box, label in objects:
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": image_id,
                    "category_id": label + 1,
                    "bbox": list(box),
                    "area": box[2] * box[3],
                    "iscrowd": 0,
                }
            )
        if image_id % progress_every == 0:
            logger.info("Mosaic generation: %d/%d images", image_id, num_images)

    coco = {
        "info": {"description": "Fashion-MNIST mosaic detection set (unikd_det)", "mosaic_params": params},
        "images": coco_images,
        "annotations": annotations,
        "categories": [{"id": i + 1, "name": name} for i, name in enumerate(FASHION_MNIST_CLASSES)],
    }
    _write_atomically(json_path, json.dumps(coco))
    logger.info("Wrote %d images with %d objects to %s", num_images, len(annotations), json_path)
    return json_path
