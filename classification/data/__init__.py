"""Data sets of the classification package, built from the DATASET config node.

`cifar100`, `fashion_mnist` and `synthetic` are held in memory and use the CIFAR model family (32x32);
`imagenet` reads the standard folder layout with workers and uses the ImageNet family (224x224).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import torch
from yacs.config import CfgNode

from .imagenet import DeviceLoader, imagenet_datasets, subset
from .memory import InMemoryLoader, random_crop_flip
from .sources import (
    ImageArrays,
    balanced_subset,
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


def check_train_subset(size: int, labels: torch.Tensor, num_classes: int, dataset: str) -> None:
    """DATASET.TRAIN_SUBSET (0: all) must fit in the training split and give every class at least one image."""
    if size > len(labels):
        raise ValueError(f"DATASET.TRAIN_SUBSET = {size} is more than the {len(labels)} training images of {dataset}")
    if 0 < size < num_classes:
        raise ValueError(f"DATASET.TRAIN_SUBSET = {size} is fewer than the {num_classes} classes of {dataset}: a "
                         "class-balanced subset needs at least one image per class")


def build_data(cfg: CfgNode, device: torch.device) -> DataBundle:
    """Training and test loaders for cfg.DATASET, with DATASET.TRAIN_SUBSET applied to the training split.

    A TRAIN_SUBSET larger than the split, or smaller than its class count, is refused before any training."""
    name = cfg.DATASET.NAME
    if name not in DATASETS:
        raise ValueError(f"unknown DATASET.NAME {name!r}; expected one of {DATASETS}")
    solver, seed = cfg.SOLVER, cfg.TRAIN.SEED
    if name == "imagenet":
        train_set, val_set = imagenet_datasets(cfg.DATASET.ROOT)
        labels = torch.tensor(train_set.targets)
        check_train_subset(cfg.DATASET.TRAIN_SUBSET, labels, len(train_set.classes), name)
        keep = balanced_subset(labels, cfg.DATASET.TRAIN_SUBSET, cfg.DATASET.SUBSET_SEED)
        train_set = subset(train_set, keep)
        workers = cfg.DATASET.NUM_WORKERS
        return DataBundle(
            DeviceLoader(train_set, solver.BATCH_SIZE, train=True, workers=workers, seed=seed, device=device),
            DeviceLoader(val_set, solver.TEST_BATCH_SIZE, train=False, workers=workers, seed=seed, device=device),
            len(val_set.classes),
            "imagenet",
            labels[keep],
        )
    data = _arrays(cfg)
    check_train_subset(cfg.DATASET.TRAIN_SUBSET, data.train_labels, data.num_classes, name)
    keep = balanced_subset(data.train_labels, cfg.DATASET.TRAIN_SUBSET, cfg.DATASET.SUBSET_SEED)
    common = dict(mean=data.mean, std=data.std, device=device)
    train = InMemoryLoader(
        data.train_images[keep], data.train_labels[keep], solver.BATCH_SIZE, train=True, seed=seed, **common
    )
    test = InMemoryLoader(data.test_images, data.test_labels, solver.TEST_BATCH_SIZE, train=False, **common)
    return DataBundle(train, test, data.num_classes, "cifar", data.train_labels[keep].long())


__all__ = [
    "DATASETS",
    "DataBundle",
    "InMemoryLoader",
    "balanced_subset",
    "build_data",
    "make_synthetic",
    "random_crop_flip",
]
