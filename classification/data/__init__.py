"""Data sets of the classification package, built from the DATASET config node.

`cifar100`, `fashion_mnist` and `synthetic` are held in memory and use the CIFAR model family (32x32);
`imagenet` reads the standard folder layout with workers and uses the ImageNet family (224x224).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import torch
from yacs.config import CfgNode

from unikd.core.splits import balanced_subset, holdout_split

from .imagenet import DeviceLoader, imagenet_datasets, subset
from .memory import InMemoryLoader, random_crop_flip
from .sources import (
    ImageArrays,
    load_cifar100,
    load_fashion_mnist_as_cifar,
    make_synthetic,
)

DATASETS = ("cifar100", "imagenet", "fashion_mnist", "synthetic")


class BatchLoader(Protocol):
    def set_epoch(self, epoch: int) -> None: ...

    def __len__(self) -> int: ...

    def __iter__(self): ...


@dataclass
class DataBundle:
    train: BatchLoader
    test: BatchLoader
    num_classes: int
    family: str  # model family the images fit: "cifar" or "imagenet"
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


def build_data(cfg: CfgNode, device: torch.device) -> DataBundle:
    """Training, test and (DATASET.VAL_SIZE > 0) validation loaders for cfg.DATASET.

    The validation images are held out of the training split (`holdout_split`); the student never trains on
    them. Split sizes that do not fit the data set, or leave a class without an image, are refused before any
    training."""
    name = cfg.DATASET.NAME
    if name not in DATASETS:
        raise ValueError(f"unknown DATASET.NAME {name!r}; expected one of {DATASETS}")
    solver, seed, ds = cfg.SOLVER, cfg.TRAIN.SEED, cfg.DATASET
    if name == "imagenet":
        train_set, test_set = imagenet_datasets(ds.ROOT)
        labels = torch.tensor(train_set.targets)
        check_split_sizes(ds, labels, len(train_set.classes), name)
        keep, held = holdout_split(labels, ds.VAL_SIZE, ds.VAL_SEED, ds.TRAIN_SUBSET, ds.SUBSET_SEED)

        def loader(dataset, batch_size: int, train: bool) -> DeviceLoader:
            return DeviceLoader(dataset, batch_size, train=train, workers=ds.NUM_WORKERS, seed=seed, device=device)

        return DataBundle(
            loader(subset(train_set, keep), solver.BATCH_SIZE, True),
            loader(test_set, solver.TEST_BATCH_SIZE, False),
            len(test_set.classes),
            "imagenet",
            labels[keep],
            loader(subset(train_set, held), solver.TEST_BATCH_SIZE, False) if len(held) else None,
        )
    data = _arrays(cfg)
    check_split_sizes(ds, data.train_labels, data.num_classes, name)
    keep, held = holdout_split(data.train_labels, ds.VAL_SIZE, ds.VAL_SEED, ds.TRAIN_SUBSET, ds.SUBSET_SEED)
    common = dict(mean=data.mean, std=data.std, device=device)
    train = InMemoryLoader(
        data.train_images[keep], data.train_labels[keep], solver.BATCH_SIZE, train=True, seed=seed, **common
    )
    test = InMemoryLoader(data.test_images, data.test_labels, solver.TEST_BATCH_SIZE, train=False, **common)
    val = (InMemoryLoader(data.train_images[held], data.train_labels[held], solver.TEST_BATCH_SIZE, train=False,
                          **common) if len(held) else None)
    return DataBundle(train, test, data.num_classes, "cifar", data.train_labels[keep].long(), val)


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
