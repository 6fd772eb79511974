"""Small image sets held as one uint8 tensor (CIFAR-100, Fashion-MNIST, synthetic), batched without workers.

Augmentation (random crop with zero padding, horizontal flip) runs on whole batches on the training device,
so a GPU run needs no CPU data workers and a CPU run avoids per-image PIL work. The batch order and the
augmentation draws come from a generator seeded by (seed, epoch): an epoch's batches do not depend on what
ran before, which is what makes a resumed run match an uninterrupted one.
"""
from __future__ import annotations

from collections.abc import Iterator

import torch
from torch import Tensor


def random_crop_flip(images: Tensor, pad: int, generator: torch.Generator) -> Tensor:
    """Per image: zero-pad by `pad`, crop back to the input size at a random offset, flip with p = 0.5.

    images: [B, C, H, W]; the random draws are made on the CPU with `generator`.
    """
    b, _, h, w = images.shape
    offsets = torch.randint(0, 2 * pad + 1, (2, b), generator=generator).to(images.device)
    flips = (torch.rand(b, generator=generator) < 0.5).to(images.device)
    padded = torch.nn.functional.pad(images, (pad, pad, pad, pad))
    rows = (offsets[0, :, None] + torch.arange(h, device=images.device))[:, None, :, None]
    cols = offsets[1, :, None] + torch.arange(w, device=images.device)
    cols = torch.where(flips[:, None], cols.flip(1), cols)[:, None, None, :]
    batch = torch.arange(b, device=images.device)[:, None, None, None]
    channels = torch.arange(images.shape[1], device=images.device)[None, :, None, None]
    return padded[batch, channels, rows, cols]


class InMemoryLoader:
    """Batches of (normalised float images, labels, indices) on `device` from uint8 images [N, C, H, W].

    indices are the batch's positions in `images` (what per-sample memories such as CRD's are keyed by).

    train: shuffle each epoch and apply random_crop_flip; otherwise the fixed order, no augmentation.
    A final training batch of a single image is dropped (BatchNorm cannot train on it).
    """

    def __init__(
        self,
        images: Tensor,
        labels: Tensor,
        batch_size: int,
        mean: tuple[float, ...],
        std: tuple[float, ...],
        *,
        train: bool,
        seed: int = 0,
        pad: int = 4,
        device: torch.device | str = "cpu",
    ) -> None:
        if images.dtype != torch.uint8 or images.dim() != 4:
            raise ValueError(f"images must be uint8 [N, C, H, W], got {images.dtype} {tuple(images.shape)}")
        if len(images) != len(labels):
            raise ValueError(f"{len(images)} images but {len(labels)} labels")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.device = torch.device(device)
        self.images = images.to(self.device)
        self.labels = labels.long().to(self.device)
        self.batch_size = batch_size
        shape = (1, -1, 1, 1)
        self.mean = torch.tensor(mean, device=self.device).reshape(shape) * 255
        self.std = torch.tensor(std, device=self.device).reshape(shape) * 255
        self.train = train
        self.seed = seed
        self.pad = pad
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _num_items(self) -> int:
        n = len(self.images)
        return n - 1 if self.train and n % self.batch_size == 1 and n > 1 else n

    def __len__(self) -> int:
        return -(-self._num_items() // self.batch_size)

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor, Tensor]]:
        generator = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
        n = self._num_items()
        order = torch.randperm(len(self.images), generator=generator)[:n] if self.train else torch.arange(n)
        order = order.to(self.device)
        for start in range(0, n, self.batch_size):
            index = order[start : start + self.batch_size]
            images = self.images[index].float()
            if self.train:
                images = random_crop_flip(images, self.pad, generator)
            yield (images - self.mean) / self.std, self.labels[index], index
