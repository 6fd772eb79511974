"""Small image sets held as one uint8 tensor (CIFAR-100, Fashion-MNIST, synthetic), batched without workers.

Augmentation (random crop with zero padding, horizontal flip) runs on whole batches on the training device,
so a GPU run needs no CPU data workers and a CPU run avoids per-image PIL work. The batch order and the
augmentation draws come from a generator seeded by (seed, epoch): an epoch's batches do not depend on what
ran before, which is what makes a resumed run match an uninterrupted one, also one resumed in the middle of an
epoch (`set_epoch(epoch, start_batch)` replays the skipped batches' draws without loading their images).
"""
from __future__ import annotations

from collections.abc import Iterator

import torch
from torch import Tensor

from unikd.core.distributed import World, shard_of

MIN_SHARE = 2  # images per rank below which a final training batch is dropped (BatchNorm needs two)


def crop_flip_draws(count: int, pad: int, generator: torch.Generator) -> tuple[Tensor, Tensor]:
    """The random draws of `random_crop_flip` for `count` images: offsets [2, count] in [0, 2 pad] and flips
    [count], drawn on the CPU with `generator` (a distributed run draws them for the whole global batch, so each
    image's augmentation depends on its place in the batch, not on the rank that trains on it)."""
    offsets = torch.randint(0, 2 * pad + 1, (2, count), generator=generator)
    flips = torch.rand(count, generator=generator) < 0.5
    return offsets, flips


def apply_crop_flip(images: Tensor, pad: int, offsets: Tensor, flips: Tensor) -> Tensor:
    """Per image: zero-pad by `pad`, crop back to the input size at `offsets`, flip where `flips`."""
    b, _, h, w = images.shape
    offsets, flips = offsets.to(images.device), flips.to(images.device)
    padded = torch.nn.functional.pad(images, (pad, pad, pad, pad))
    rows = (offsets[0, :, None] + torch.arange(h, device=images.device))[:, None, :, None]
    cols = offsets[1, :, None] + torch.arange(w, device=images.device)
    cols = torch.where(flips[:, None], cols.flip(1), cols)[:, None, None, :]
    batch = torch.arange(b, device=images.device)[:, None, None, None]
    channels = torch.arange(images.shape[1], device=images.device)[None, :, None, None]
    return padded[batch, channels, rows, cols]


def random_crop_flip(images: Tensor, pad: int, generator: torch.Generator) -> Tensor:
    """Per image: zero-pad by `pad`, crop back to the input size at a random offset, flip with p = 0.5.

    images: [B, C, H, W]; the random draws are made on the CPU with `generator`.
    """
    return apply_crop_flip(images, pad, *crop_flip_draws(len(images), pad, generator))


class InMemoryLoader:
    """Batches of (normalised float images, labels, indices) on `device` from uint8 images [N, C, H, W].

    indices are the batch's positions in `images` (what per-sample memories such as CRD's are keyed by).

    train: shuffle each epoch and apply random_crop_flip; otherwise the fixed order, no augmentation.
    A final training batch of fewer than 2 images per rank is dropped (BatchNorm cannot train on one).

    world: in a distributed run each rank yields its share (`shard_of`) of every batch of `batch_size`, the global
    batch; the order and the augmentation draws are the single process's, so the ranks' shares joined are its
    epoch. Evaluation loaders are sharded the same way (joined again by index, `gather_by_index`).
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
        world: World = World(),
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
        self.epoch = self.start_batch = 0
        self.world = world

    def set_epoch(self, epoch: int, start_batch: int = 0) -> None:
        """The epoch the next pass draws its order and augmentation for, starting at batch `start_batch`."""
        self.epoch, self.start_batch = epoch, start_batch

    def _num_items(self) -> int:
        n, last = len(self.images), len(self.images) % self.batch_size
        return n - last if self.train and 0 < last < MIN_SHARE * self.world.size and n > last else n

    def __len__(self) -> int:
        return -(-self._num_items() // self.batch_size)

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor, Tensor]]:
        generator = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
        n = self._num_items()
        order = torch.randperm(len(self.images), generator=generator)[:n] if self.train else torch.arange(n)
        order = order.to(self.device)
        for number, start in enumerate(range(0, n, self.batch_size)):
            batch = order[start : start + self.batch_size]
            draws = crop_flip_draws(len(batch), self.pad, generator) if self.train else None
            if number < self.start_batch:
                continue
            share = shard_of(len(batch), self.world)
            index = batch[share]
            images = self.images[index].float()
            if draws is not None:
                images = apply_crop_flip(images, self.pad, draws[0][:, share], draws[1][share])
            yield (images - self.mean) / self.std, self.labels[index], index
