"""Data sets of the classification package, built from the DATASET config node.

`cifar100`, `fashion_mnist` and `synthetic` are held in memory and use the CIFAR model family (32x32);
`image_folder` reads `DATASET.ROOT/{train,val}/<class>/<image>` with workers, and `imagenet` is the image folder
`DATASET.ROOT/imagenet` (image_folder.py): crops of DATASET.IMAGE_SIZE, the ImageNet family above 64 pixels.
An image folder's val/ is the reported ("test") split; the selection split is carved from train/.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import torch
from yacs.config import CfgNode

from unikd.core.distributed import World
from unikd.core.splits import balanced_subset, holdout_split

from .folder_loader import DeviceLoader
from .image_folder import family_for, image_folder_datasets
from .imagenet import imagenet_base
from .memory import InMemoryLoader, random_crop_flip
from .sources import (
    ImageArrays,
    load_cifar100,
    load_fashion_mnist_as_cifar,
    make_synthetic,
)

FOLDER_DATASETS = ("imagenet", "image_folder")
DATASETS = ("cifar100", "imagenet", "image_folder", "fashion_mnist", "synthetic")


class BatchLoader(Protocol):
    def set_epoch(self, epoch: int, start_batch: int = 0) -> None: ...

    def __len__(self) -> int: ...

    def __iter__(self): ...


@dataclass
class DataBundle:
    train: BatchLoader
    test: BatchLoader
    num_classes: int
    family: str  # model family the images fit: "cifar" or "imagenet" (image folders: by DATASET.IMAGE_SIZE)
    train_labels: torch.Tensor  # label of every training image, in the order the loader's indices refer to
    val: BatchLoader | None = None  # the held-out part of the training split (DATASET.VAL_SIZE > 0)

    @property
    def num_train(self) -> int:
        return len(self.train_labels)


def _arrays(cfg: CfgNode) -> ImageArrays:
    name = cfg.DATASET.NAME
    if name == "cifar100":
        return load_cifar100(cfg.DATASET.ROOT)
    if name == "fashion_mnist":
        return load_fashion_mnist_as_cifar(cfg.DATASET.ROOT)
    syn = cfg.DATASET.SYNTHETIC
    return make_synthetic(syn.NUM_CLASSES, syn.NUM_TRAIN, syn.NUM_TEST, syn.IMAGE_SIZE, cfg.DATASET.SUBSET_SEED)


def check_split_sizes(cfg_dataset: CfgNode, labels: torch.Tensor, num_classes: int, dataset: str) -> None:
    """DATASET.VAL_SIZE and TRAIN_SUBSET (0: none held out / all the rest) must fit in the training split
    together, and each must give every class at least one image."""
    val, subset = cfg_dataset.VAL_SIZE, cfg_dataset.TRAIN_SUBSET
    if val >= len(labels):
        raise ValueError(f"DATASET.VAL_SIZE = {val} leaves none of the {len(labels)} training images of {dataset}")
    if val + subset > len(labels):
        held_out = f" and DATASET.VAL_SIZE = {val} together exceed" if val else " is more than"
        raise ValueError(f"DATASET.TRAIN_SUBSET = {subset}{held_out} the {len(labels)} training images of {dataset}")
    for key, size in (("TRAIN_SUBSET", subset), ("VAL_SIZE", val)):
        if 0 < size < num_classes:
            raise ValueError(f"DATASET.{key} = {size} is fewer than the {num_classes} classes of {dataset}: a "
                             "class-balanced split needs at least one image per class")


def _folder_data(cfg: CfgNode, device: torch.device, world: World) -> DataBundle:
    """Worker-backed loaders of an image folder (`imagenet` is the one under DATASET.ROOT/imagenet).

    The held-out validation part of train/ is evaluated with the evaluation transform, like val/ (the test
    split)."""
    solver, seed, ds = cfg.SOLVER, cfg.TRAIN.SEED, cfg.DATASET
    base = imagenet_base(ds.ROOT) if ds.NAME == "imagenet" else Path(ds.ROOT)
    train_set, test_set = image_folder_datasets(base, ds.IMAGE_SIZE, ds.SKIP_BAD_IMAGES, ds.NUM_WORKERS)
    labels = torch.tensor(train_set.targets)
    check_split_sizes(ds, labels, len(train_set.classes), ds.NAME)
    keep, held = holdout_split(labels, ds.VAL_SIZE, ds.VAL_SEED, ds.TRAIN_SUBSET, ds.SUBSET_SEED)

    def loader(dataset, batch_size: int, train: bool) -> DeviceLoader:
        return DeviceLoader(dataset, batch_size, train=train, workers=ds.NUM_WORKERS, seed=seed, device=device,
                            world=world)

    val = loader(train_set.subset(held, test_set.transform), solver.TEST_BATCH_SIZE, False) if len(held) else None
    return DataBundle(
        loader(train_set.subset(keep), solver.BATCH_SIZE, True),
        loader(test_set, solver.TEST_BATCH_SIZE, False),
        len(train_set.classes),
        family_for(ds.IMAGE_SIZE),
        labels[keep],
        val,
    )


def _memory_data(cfg: CfgNode, device: torch.device, world: World) -> DataBundle:
    """In-memory loaders of cifar100, fashion_mnist or synthetic."""
    solver, seed, ds = cfg.SOLVER, cfg.TRAIN.SEED, cfg.DATASET
    data = _arrays(cfg)
    check_split_sizes(ds, data.train_labels, data.num_classes, ds.NAME)
    keep, held = holdout_split(data.train_labels, ds.VAL_SIZE, ds.VAL_SEED, ds.TRAIN_SUBSET, ds.SUBSET_SEED)
    common = dict(mean=data.mean, std=data.std, device=device, world=world)
    train = InMemoryLoader(
        data.train_images[keep], data.train_labels[keep], solver.BATCH_SIZE, train=True, seed=seed, **common
    )
    test = InMemoryLoader(data.test_images, data.test_labels, solver.TEST_BATCH_SIZE, train=False, **common)
    val = (InMemoryLoader(data.train_images[held], data.train_labels[held], solver.TEST_BATCH_SIZE, train=False,
                          **common) if len(held) else None)
    return DataBundle(train, test, data.num_classes, "cifar", data.train_labels[keep].long(), val)


def build_data(cfg: CfgNode, device: torch.device, world: World = World()) -> DataBundle:
    """Training, test and (DATASET.VAL_SIZE > 0) validation loaders for cfg.DATASET.

    The validation images are held out of the training split (`holdout_split`); the student never trains on
    them. Split sizes that do not fit the data set, or leave a class without an image, are refused before any
    training. In a distributed run (`world`) every loader yields this rank's share of each batch."""
    name = cfg.DATASET.NAME
    if name not in DATASETS:
        raise ValueError(f"unknown DATASET.NAME {name!r}; expected one of {DATASETS}")
    return (_folder_data if name in FOLDER_DATASETS else _memory_data)(cfg, device, world)


__all__ = [
    "DATASETS",
    "DataBundle",
    "InMemoryLoader",
    "balanced_subset",
    "build_data",
    "holdout_split",
    "make_synthetic",
    "random_crop_flip",
]
