"""ImageNet from the standard folder layout (`<ROOT>/imagenet/{train,val}/<wnid>/*.JPEG`) via torchvision."""
from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, RandomSampler, Subset

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def imagenet_folders(root: str | Path) -> tuple[Path, Path]:
    """(train, val) folders; FileNotFoundError naming both when either is absent."""
    base = Path(root) / "imagenet"
    train, val = base / "train", base / "val"
    if not (train.is_dir() and val.is_dir()):
        raise FileNotFoundError(
            f"ImageNet not found: expected class folders under {train} and {val} "
            "(the standard layout: <split>/<wnid>/<image>.JPEG, val already sorted into class folders). "
            "Set DATASET.ROOT to the folder that holds imagenet/."
        )
    return train, val


def imagenet_datasets(root: str | Path) -> tuple[Dataset, Dataset]:
    """Training set (random-resized crop 224 + flip) and validation set (resize 256, centre crop 224)."""
    from torchvision import datasets, transforms

    train_dir, val_dir = imagenet_folders(root)
    normalize = transforms.Normalize(IMAGENET_MEAN, IMAGENET_STD)
    train = datasets.ImageFolder(
        str(train_dir),
        transforms.Compose(
            [transforms.RandomResizedCrop(224), transforms.RandomHorizontalFlip(), transforms.ToTensor(), normalize]
        ),
    )
    val = datasets.ImageFolder(
        str(val_dir),
        transforms.Compose([transforms.Resize(256), transforms.CenterCrop(224), transforms.ToTensor(), normalize]),
    )
    return train, val


class IndexedDataset(Dataset):
    """(image, label, index) items of a (image, label) dataset."""

    def __init__(self, dataset: Dataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> tuple[Tensor, int, int]:
        image, label = self.dataset[index]
        return image, label, index


class DeviceLoader:
    """A worker-backed DataLoader whose shuffling is reseeded per epoch and whose batches land on `device`."""

    def __init__(
        self, dataset: Dataset, batch_size: int, *, train: bool, workers: int, seed: int, device: torch.device
    ) -> None:
        self.generator = torch.Generator()
        self.seed = seed
        self.device = device
        sampler = RandomSampler(dataset, generator=self.generator) if train else None
        self.loader = DataLoader(
            IndexedDataset(dataset),
            batch_size=batch_size,
            sampler=sampler,
            num_workers=workers,
            pin_memory=device.type == "cuda",
            persistent_workers=workers > 0,
            drop_last=train,
            generator=self.generator,
        )

    def set_epoch(self, epoch: int) -> None:
        self.generator.manual_seed(self.seed * 100_003 + epoch)

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor, Tensor]]:
        """(images, labels, indices into the dataset) on the device."""
        for images, labels, indices in self.loader:
            yield tuple(t.to(self.device, non_blocking=True) for t in (images, labels, indices))


def subset(dataset: Dataset, indices: Tensor) -> Dataset:
    return Subset(dataset, indices.tolist())
