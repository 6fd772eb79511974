"""The image-folder loaders: decode and crop on DataLoader workers, flip and normalisation on the training device.

Workers (`DATASET.NUM_WORKERS`, persistent across epochs, pinned memory on CUDA) read each image, crop it and hand
over uint8 pixels, a quarter of the bytes of float ones; the device turns a whole batch into normalised floats and
flips the images drawn for it in one pass. Training crops are random-resized crops (area 8 % to 100 % of the image,
aspect 3/4 to 4/3: the ImageNet recipe), evaluation resizes the short side to RESIZE_RATIO of the crop and takes the
centre.

Each training image's crop and flip come from a generator seeded by (TRAIN.SEED, epoch, image index): they depend
on neither the worker nor the rank that loads the image, nor on what ran before. So the ranks of a distributed run
see exactly the single process's images, and a run resumed at any batch of an epoch (`set_epoch(epoch,
start_batch)`) sees the batches an uninterrupted one does.
"""
from __future__ import annotations

import math
from collections.abc import Iterator

import numpy as np
import torch
from PIL import Image
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, Sampler

from unikd.core.distributed import World, shard_of

# The ImageNet statistics, used to normalise every image folder (natural images; what pretrained weights expect).
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# Evaluation resizes the short side to this multiple of DATASET.IMAGE_SIZE, then centre-crops (256 -> 224).
RESIZE_RATIO = 256 / 224
CROP_SCALE = (0.08, 1.0)  # random-resized crop: the crop's share of the image area
CROP_RATIO = (3 / 4, 4 / 3)  # and its aspect ratio (width / height), drawn log-uniformly
CROP_ATTEMPTS = 10  # draws before falling back to the largest centred crop of an allowed aspect


def sample_generator(seed: int, epoch: int, index: int) -> torch.Generator:
    """The generator of one image's augmentation in one epoch (numpy's SeedSequence mixes the three numbers)."""
    state = np.random.SeedSequence((seed, epoch, index)).generate_state(1, np.uint64)[0]
    return torch.Generator().manual_seed(int(state))


def random_resized_box(width: int, height: int, generator: torch.Generator) -> tuple[int, int, int, int]:
    """(left, top, crop width, crop height) of a random-resized crop of a `width` x `height` image."""
    area = width * height
    log_low, log_high = math.log(CROP_RATIO[0]), math.log(CROP_RATIO[1])
    for _ in range(CROP_ATTEMPTS):
        scale, log_aspect = torch.rand(2, generator=generator, dtype=torch.float64).tolist()
        target = area * (CROP_SCALE[0] + scale * (CROP_SCALE[1] - CROP_SCALE[0]))
        aspect = math.exp(log_low + log_aspect * (log_high - log_low))
        w, h = round(math.sqrt(target * aspect)), round(math.sqrt(target / aspect))
        if 0 < w <= width and 0 < h <= height:
            left = int(torch.randint(0, width - w + 1, (1,), generator=generator))
            top = int(torch.randint(0, height - h + 1, (1,), generator=generator))
            return left, top, w, h
    aspect = width / height
    if aspect < CROP_RATIO[0]:
        w, h = width, round(width / CROP_RATIO[0])
    elif aspect > CROP_RATIO[1]:
        w, h = round(height * CROP_RATIO[1]), height
    else:
        w, h = width, height
    return (width - w) // 2, (height - h) // 2, w, h


def to_uint8_tensor(image: Image.Image) -> Tensor:
    """[3, H, W] uint8 pixels of an RGB image."""
    return torch.from_numpy(np.asarray(image, dtype=np.uint8).copy()).permute(2, 0, 1).contiguous()


class TrainCrop:
    """A random-resized crop to `size` x `size` and a flip draw (applied on the device) per image."""

    def __init__(self, size: int) -> None:
        self.size = size

    def __call__(self, image: Image.Image, generator: torch.Generator) -> tuple[Tensor, bool]:
        left, top, w, h = random_resized_box(*image.size, generator)
        crop = image.resize((self.size, self.size), Image.BILINEAR, box=(left, top, left + w, top + h))
        return to_uint8_tensor(crop), bool(torch.rand(1, generator=generator) < 0.5)


class EvalCrop:
    """The short side resized to RESIZE_RATIO x `size`, then the centred `size` x `size` crop; never flipped."""

    def __init__(self, size: int) -> None:
        self.size = size

    def __call__(self, image: Image.Image, generator: torch.Generator | None = None) -> tuple[Tensor, bool]:
        short, (width, height) = round(self.size * RESIZE_RATIO), image.size
        size = (short, int(short * height / width)) if width <= height else (int(short * width / height), short)
        resized = image.resize(size, Image.BILINEAR)
        left = round((resized.width - self.size) / 2)
        top = round((resized.height - self.size) / 2)
        return to_uint8_tensor(resized.crop((left, top, left + self.size, top + self.size))), False


class EpochBatches(Sampler):
    """The batches of one epoch over `num_items` images (shuffled by a generator seeded with (seed, epoch) when
    `shuffle`, which also drops an incomplete final batch), of which this rank yields its share of each
    (`shard_of`) as (index, epoch) items; every rank walks the same order, so the shares joined are the single
    process's batches. `set_epoch(epoch, start_batch)` starts the next pass at that batch (a mid-epoch resume)."""

    def __init__(self, num_items: int, batch_size: int, shuffle: bool, seed: int, world: World = World()) -> None:
        self.num_items, self.batch_size, self.shuffle, self.seed = num_items, batch_size, shuffle, seed
        self.world = world
        self.epoch = self.start_batch = 0

    def set_epoch(self, epoch: int, start_batch: int = 0) -> None:
        self.epoch, self.start_batch = epoch, start_batch

    def __len__(self) -> int:
        whole, rest = divmod(self.num_items, self.batch_size)
        return whole + (0 if self.shuffle or rest == 0 else 1)

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        if self.shuffle:
            generator = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
            order = torch.randperm(self.num_items, generator=generator).tolist()
        else:
            order = list(range(self.num_items))
        for b in range(self.start_batch, len(self)):
            batch = order[b * self.batch_size : (b + 1) * self.batch_size]
            yield [(index, self.epoch) for index in batch[shard_of(len(batch), self.world)]]


class FolderItems(Dataset):
    """(uint8 crop, label, index, flip) of the image `index` of an ImageFolderSplit (`dataset`), keyed by
    (index, epoch); training crops are drawn from `sample_generator(seed, epoch, index)`."""

    def __init__(self, dataset, seed: int) -> None:
        self.dataset = dataset
        self.seed = seed

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: tuple[int, int]) -> tuple[Tensor, int, int, bool]:
        index, epoch = key
        pixels, label = self.dataset.load(index, sample_generator(self.seed, epoch, index))
        return pixels[0], label, index, pixels[1]


class DeviceLoader:
    """Worker-backed batches of (normalised float images, labels, indices) on `device`, in EpochBatches' order;
    in a distributed run each rank loads its share of every global batch."""

    def __init__(
        self, dataset, batch_size: int, *, train: bool, workers: int, seed: int, device: torch.device,
        world: World = World(),
    ) -> None:
        self.device = device
        self.batches = EpochBatches(len(dataset), batch_size, shuffle=train, seed=seed, world=world)
        self.loader = DataLoader(
            FolderItems(dataset, seed),
            batch_sampler=self.batches,
            num_workers=workers,
            pin_memory=device.type == "cuda",
            persistent_workers=workers > 0,
            generator=torch.Generator(),  # its worker seeds are unused: leave the global RNG stream alone
        )
        shape = (1, 3, 1, 1)
        self.mean = torch.tensor(IMAGENET_MEAN, device=device).reshape(shape) * 255
        self.std = torch.tensor(IMAGENET_STD, device=device).reshape(shape) * 255

    def set_epoch(self, epoch: int, start_batch: int = 0) -> None:
        self.batches.set_epoch(epoch, start_batch)

    def __len__(self) -> int:
        return len(self.batches)

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor, Tensor]]:
        for pixels, labels, indices, flips in self.loader:
            pixels, labels, indices, flips = (t.to(self.device, non_blocking=True)
                                              for t in (pixels, labels, indices, flips))
            images = torch.where(flips[:, None, None, None], pixels.flip(3), pixels)
            yield (images.float() - self.mean) / self.std, labels, indices
