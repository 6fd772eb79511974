"""Reading the in-memory data sets: CIFAR-100, Fashion-MNIST and synthetic, as uint8 [N, C, H, W] tensors."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from unikd.core.files import load_array_pickle
from unikd.data.fashion_mnist import find_fashion_mnist_dir, load_fashion_mnist

CIFAR100_MEAN = (0.5071, 0.4865, 0.4409)
CIFAR100_STD = (0.2673, 0.2564, 0.2762)


@dataclass
class ImageArrays:
    """Both splits of an in-memory set plus its normalisation statistics (per channel, in [0, 1] units)."""

    train_images: Tensor
    train_labels: Tensor
    test_images: Tensor
    test_labels: Tensor
    num_classes: int
    mean: tuple[float, ...]
    std: tuple[float, ...]


def _channel_stats(images: Tensor) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and (unbiased) std of uint8 images, in [0, 1] units.

    Computed from a 256-bin histogram per channel in float64: exact, and without a float copy of the
    whole set (for the 60k padded Fashion-MNIST images that copy took 1.5 GB at start-up).
    """
    values = torch.arange(256, dtype=torch.float64) / 255
    means, stds = [], []
    for channel in images.unbind(1):
        counts = torch.bincount(channel.flatten(), minlength=256).double()
        total = counts.sum()
        mean = (counts * values).sum() / total
        means.append(float(mean))
        stds.append(float(((counts * (values - mean) ** 2).sum() / (total - 1)).sqrt()))
    return tuple(means), tuple(stds)


def load_cifar100(root: str | Path) -> ImageArrays:
    """CIFAR-100 from the python pickles in `<root>/cifar-100-python` (the layout torchvision writes)."""
    folder = Path(root) / "cifar-100-python"
    files = {split: folder / split for split in ("train", "test")}
    missing = [str(p) for p in files.values() if not p.is_file()]
    if missing:
        raise FileNotFoundError(
            f"CIFAR-100 not found: expected {', '.join(missing)}. Set DATASET.ROOT to the folder that holds "
            "cifar-100-python/ (for example, download it once with "
            "torchvision.datasets.CIFAR100(ROOT, download=True))."
        )
    arrays = {}
    for split, path in files.items():
        entry = load_array_pickle(path, "a CIFAR-100 python pickle (a dict of numpy arrays and label lists)")
        images = torch.from_numpy(np.asarray(entry["data"], dtype=np.uint8).reshape(-1, 3, 32, 32).copy())
        arrays[split] = (images, torch.tensor(entry["fine_labels"], dtype=torch.int64))
    return ImageArrays(*arrays["train"], *arrays["test"], 100, CIFAR100_MEAN, CIFAR100_STD)


def _fashion_dir(root: str | Path) -> Path | None:
    """The folder holding the IDX files under `root` (flat, or torchvision's FashionMNIST/raw), or None."""
    for folder in (Path(root) / "fashion-mnist", Path(root) / "FashionMNIST" / "raw", Path(root)):
        if (folder / "train-images-idx3-ubyte.gz").is_file():
            return folder
    return None


def _as_cifar_shape(images: np.ndarray) -> Tensor:
    """[N, 28, 28] grey -> [N, 3, 32, 32]: zero-pad by 2 and repeat the channel, so CIFAR models apply."""
    x = torch.from_numpy(images)[:, None]
    x = torch.nn.functional.pad(x, (2, 2, 2, 2))
    return x.expand(-1, 3, -1, -1).contiguous()


def load_fashion_mnist_as_cifar(root: str | Path) -> ImageArrays:
    """Fashion-MNIST as 32x32 3-channel images; statistics measured on the padded training split.

    The IDX files are looked up under `root` first, then where the Debian package dataset-fashion-mnist
    installs them (see unikd.data.fashion_mnist.find_fashion_mnist_dir).
    """
    folder = _fashion_dir(root) or find_fashion_mnist_dir()
    train_x, train_y = load_fashion_mnist("train", folder)
    test_x, test_y = load_fashion_mnist("test", folder)
    train_images = _as_cifar_shape(train_x)
    mean, std = _channel_stats(train_images)
    return ImageArrays(
        train_images, torch.from_numpy(train_y), _as_cifar_shape(test_x), torch.from_numpy(test_y), 10, mean, std
    )


def make_synthetic(num_classes: int, num_train: int, num_test: int, image_size: int, seed: int = 0) -> ImageArrays:
    """A learnable toy set: each class is a fixed random low-frequency pattern; samples add pixel noise."""
    generator = torch.Generator().manual_seed(seed)
    coarse = torch.rand(num_classes, 3, 4, 4, generator=generator)
    prototypes = torch.nn.functional.interpolate(coarse, size=image_size, mode="bilinear", align_corners=False)

    def draw(count: int) -> tuple[Tensor, Tensor]:
        labels = torch.arange(count) % num_classes
        noise = 0.25 * torch.randn(count, 3, image_size, image_size, generator=generator)
        images = ((prototypes[labels] + noise).clamp(0, 1) * 255).round().to(torch.uint8)
        return images, labels

    train, test = draw(num_train), draw(num_test)
    return ImageArrays(*train, *test, num_classes, *_channel_stats(train[0]))
