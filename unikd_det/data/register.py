"""Register detection sets in Detectron2's catalogs: the Fashion-MNIST mosaic sets, and a config's own
COCO-format sets (``DATASETS.COCO``).

The mosaic sets are generated on disk when registration is called (not when the catalog is first read), so
the COCO json exists for ``COCOEvaluator`` before any training or evaluation starts.
"""
from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import numpy as np
import torch
from detectron2.config import CfgNode
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data.datasets import register_coco_instances

from unikd.core.splits import holdout_split
from unikd.data.fashion_mnist import FASHION_MNIST_CLASSES, load_fashion_mnist
from .mosaic import generate_mosaic_dataset

TRAIN_NAME = "fashion_mosaic_train"
VAL_NAME = "fashion_mosaic_val"
HOLDOUT_NAME = "fashion_mosaic_holdout"
# The validation and holdout canvases use their own seeds, so that they never replay the training layouts.
_VAL_SEED_OFFSET = 1_000_003
_HOLDOUT_SEED_OFFSET = 2_000_003
# The students' data budget: the first STUDENT_CANVASES training canvases (a random sample: the canvases are drawn
# independently). The teacher trains on all of them, so its edge over a student is data, the situation
# distillation is for, as in the classification bench.
STUDENT_TRAIN_NAME = "fashion_mosaic_train_student"
STUDENT_CANVASES = 500
BUILTIN_NAMES = (TRAIN_NAME, VAL_NAME, HOLDOUT_NAME, STUDENT_TRAIN_NAME)
# The Fashion-MNIST training items that no training canvas uses; the holdout canvases are built from them.
# They are the images the classification configs hold out for validation (Base-FashionMNIST.yaml:
# DATASET.VAL_SIZE 5000, VAL_SEED 0), so both front ends tune on the same unseen items.
HOLDOUT_ITEMS = 5000
HOLDOUT_ITEM_SEED = 0


def mosaic_item_split(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(indices of the training canvases' items, indices of the holdout canvases' items) into the Fashion-MNIST
    training split: `HOLDOUT_ITEMS` class-balanced items fixed by `HOLDOUT_ITEM_SEED` are held out
    (`unikd.core.splits.holdout_split`), disjoint from the rest."""
    train, held = holdout_split(torch.from_numpy(np.asarray(labels)), HOLDOUT_ITEMS, HOLDOUT_ITEM_SEED)
    return train.numpy(), held.numpy()


def _unregister(name: str) -> None:
    """Remove `name` from Detectron2's dataset and metadata catalogs, where present."""
    for catalog in (DatasetCatalog, MetadataCatalog):
        if name in catalog.list():
            catalog.remove(name)


def register_coco_json(name: str, json_file: str | Path, image_root: str | Path, metadata: dict | None = None) -> None:
    """Register the COCO instances file ``json_file`` (``file_name`` entries relative to ``image_root``) under
    ``name`` with Detectron2's ``register_coco_instances``, which reads the class names from the json.

    A no-op when ``name`` is already registered with the same files; an entry that points elsewhere is
    removed first, so that calling again with other settings never fails with "already registered".
    """
    json_str, root_str = str(json_file), str(image_root)
    if name in DatasetCatalog.list():
        registered = MetadataCatalog.get(name)
        if registered.get("json_file") == json_str and registered.get("image_root") == root_str:
            return
    _unregister(name)
    register_coco_instances(name, dict(metadata or {}), json_str, root_str)


def _register_student_subset(num_canvases: int) -> None:
    """Register STUDENT_TRAIN_NAME as the first `num_canvases` records of the training set (replacing an earlier
    registration, whose size may differ)."""
    _unregister(STUDENT_TRAIN_NAME)
    DatasetCatalog.register(STUDENT_TRAIN_NAME, lambda: DatasetCatalog.get(TRAIN_NAME)[:num_canvases])
    MetadataCatalog.get(STUDENT_TRAIN_NAME).set(thing_classes=list(FASHION_MNIST_CLASSES))


def register_fashion_mosaic(
    root: str | Path = "datasets/fashion_mosaic",
    num_train: int = 2000,
    num_val: int = 200,
    canvas_size: int = 128,
    seed: int = 0,
    num_holdout: int = 200,
    student_canvases: int | None = None,
) -> tuple[str, str, str]:
    """Generate (when missing or stale) and register the Fashion-MNIST mosaic train, val and holdout sets, and
    the students' training subset.

    The training canvases are built with ``seed`` into ``root/train`` from the Fashion-MNIST train split
    less the items of :func:`mosaic_item_split`'s holdout; the holdout canvases from those held-out items
    into ``root/holdout``, and the validation canvases from the test split into ``root/val``, each with a
    seed derived from ``seed``. Choices (schedules, defaults, epochs) are made on the holdout set, whose
    items no training canvas shows; results are reported on the validation set. All three are registered
    as COCO instance sets (category ids 1..10 become contiguous ids 0..9; ``thing_classes`` holds the 10
    Fashion-MNIST names). ``fashion_mosaic_train_student`` is the first ``student_canvases`` training canvases
    (the demo students' data budget; the teacher trains on all). Calling again is cheap and safe: existing data
    matching the settings is reused and an identical registration is left as it is.

    Args:
        root: folder of the generated sets; a relative path is resolved against the working directory.
        num_train: number of training canvases.
        num_val: number of validation canvases.
        canvas_size: side of the square canvases in pixels.
        seed: seed of the training canvases.
        num_holdout: number of holdout canvases.
        student_canvases: number of training canvases in the students' subset, at most ``num_train`` (default:
            STUDENT_CANVASES, or all of a smaller training set).

    Returns:
        The registered names ``("fashion_mosaic_train", "fashion_mosaic_val", "fashion_mosaic_holdout")``.

    Raises:
        FileNotFoundError: the Fashion-MNIST files are not installed.
        ValueError: invalid sizes (see :func:`~unikd_det.data.mosaic.generate_mosaic_dataset`), or a students'
            subset larger than the training set.
    """
    if student_canvases is None:
        student_canvases = min(STUDENT_CANVASES, num_train)
    if not 0 < student_canvases <= num_train:
        raise ValueError(f"student_canvases must be in 1..num_train ({num_train}), got {student_canvases}")
    root = Path(root).resolve()
    train_images, train_labels = load_fashion_mnist("train")
    train_items, holdout_items = mosaic_item_split(train_labels)
    for name, (images, labels), subdir, num_images, split_seed in (
        (TRAIN_NAME, (train_images[train_items], train_labels[train_items]), "train", num_train, seed),
        (VAL_NAME, load_fashion_mnist("test"), "val", num_val, seed + _VAL_SEED_OFFSET),
        (HOLDOUT_NAME, (train_images[holdout_items], train_labels[holdout_items]), "holdout", num_holdout,
         seed + _HOLDOUT_SEED_OFFSET),
    ):
        json_file = generate_mosaic_dataset(
            images, labels, root / subdir, num_images, canvas_size=canvas_size, seed=split_seed
        )
        register_coco_json(name, json_file, json_file.parent, {"thing_classes": list(FASHION_MNIST_CLASSES)})
    _register_student_subset(student_canvases)
    return TRAIN_NAME, VAL_NAME, HOLDOUT_NAME


def register_builtin_datasets(dataset_names: Iterable[str], root: str | Path) -> None:
    """Generate and register the built-in mosaic sets under `root` when `dataset_names` names one of them that
    is not registered yet, so a config that names them runs without a separate data step (tools/train_net.py,
    tools/analyze_det.py); a registration made by the caller (another root or size) is kept."""
    if any(name in BUILTIN_NAMES and name not in DatasetCatalog.list() for name in dataset_names):
        register_fashion_mosaic(root)


def coco_dataset_entries(cfg: CfgNode) -> list[tuple[str, Path, Path]]:
    """(name, absolute json path, absolute image folder) of each set in ``cfg.DATASETS.COCO``, checked.

    Raises:
        ValueError: the NAME, JSON and IMAGE_ROOT lists differ in length, a name repeats, is empty or is a
            built-in mosaic set's.
        FileNotFoundError: a json file or an image folder does not exist (the key and value are named).
    """
    node = cfg.DATASETS.COCO
    lengths = {key: len(node[key]) for key in ("NAME", "JSON", "IMAGE_ROOT")}
    if len(set(lengths.values())) != 1:
        raise ValueError(f"DATASETS.COCO.NAME, .JSON and .IMAGE_ROOT need one entry per set, got lengths {lengths}")
    bad_names = [name for name in node.NAME if not name or name in BUILTIN_NAMES or list(node.NAME).count(name) > 1]
    if bad_names:
        raise ValueError(f"DATASETS.COCO.NAME {sorted(set(bad_names))}: names must be non-empty, unique and not "
                         f"a built-in set's ({', '.join(BUILTIN_NAMES)})")
    entries = []
    for name, json_file, image_root in zip(node.NAME, node.JSON, node.IMAGE_ROOT):
        json_path, root_path = Path(json_file).resolve(), Path(image_root).resolve()
        if not json_path.is_file():
            raise FileNotFoundError(f"DATASETS.COCO.JSON of {name!r}: no such file {json_file!r} ({json_path})")
        if not root_path.is_dir():
            raise FileNotFoundError(
                f"DATASETS.COCO.IMAGE_ROOT of {name!r}: no such folder {image_root!r} ({root_path})"
            )
        entries.append((name, json_path, root_path))
    return entries


def register_coco_datasets(cfg: CfgNode) -> list[str]:
    """Register every set ``cfg.DATASETS.COCO`` describes (see :func:`coco_dataset_entries`) as a COCO instances
    set, so DATASETS.TRAIN and .TEST can name it; returns the names. Called by tools/train_net.py before
    training or evaluation, in every process."""
    entries = coco_dataset_entries(cfg)
    for name, json_path, root_path in entries:
        register_coco_json(name, json_path, root_path)
    return [name for name, _, _ in entries]
