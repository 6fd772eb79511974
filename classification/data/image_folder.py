"""Image folders: `<base>/{train,val}/<class>/<image>` read with PIL, fed by worker-backed loaders
(folder_loader.py).

The classes are the sub-folders of train/ (hidden ones ignored), labelled 0..K-1 in sorted name order; val/
must hold exactly the same class folders. Images are the files ending in one of IMAGE_EXTENSIONS, at any depth
below their class folder; other files are ignored.

Splits. train/ is the training split. val/ is the split the package reports (its "test" split, as ImageNet's
official validation set is); the selection split ("val", DATASET.VAL_SIZE > 0) is carved from train/ by
build_data, so an epoch is never selected on the images whose accuracy is reported.

Bad images. Before training, every image is opened once (PIL reads its header): a file that cannot be opened
or is no image (empty, truncated header, random bytes) is refused in one ValueError naming it, or, with
DATASET.SKIP_BAD_IMAGES, skipped and counted in the log. Skipping also decodes every image once, so a file whose
pixel data is damaged (a truncated JPEG) is skipped too; without it such a file is found when it is first loaded,
and that error names it as well.

ImageNet is the image folder `<DATASET.ROOT>/imagenet` (see imagenet.py).
"""
from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path

import torch
from PIL import Image
from torch import Tensor

from .folder_loader import EvalCrop, TrainCrop

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")
SPLITS = ("train", "val")
# DATASET.IMAGE_SIZE up to this many pixels selects the CIFAR model family, larger sizes the ImageNet one.
CIFAR_FAMILY_MAX_SIZE = 64
# What PIL raises for a file it cannot open or decode.
READ_ERRORS = (OSError, ValueError, SyntaxError, Image.DecompressionBombError)
# How many names an error message or log line lists before it only counts the rest.
LISTED = 5

logger = logging.getLogger("classification.data")


def family_for(image_size: int) -> str:
    """The model family that fits square inputs of `image_size` pixels: "cifar" up to 64, else "imagenet"."""
    return "cifar" if image_size <= CIFAR_FAMILY_MAX_SIZE else "imagenet"


def _listing(items: Sequence[str], separator: str = ", ") -> str:
    """The first LISTED items joined by `separator`, then how many more there are."""
    shown = separator.join(items[:LISTED])
    return shown if len(items) <= LISTED else f"{shown}{separator}and {len(items) - LISTED} more"


def split_folders(base: Path) -> tuple[Path, Path]:
    """(train, val) folders of the image folder `base`; FileNotFoundError naming those that are missing."""
    folders = tuple(base / split for split in SPLITS)
    missing = [str(folder) for folder in folders if not folder.is_dir()]
    if missing:
        raise FileNotFoundError(
            f"image folder split not found: {' and '.join(missing)}. Expected class folders under {folders[0]} and "
            f"{folders[1]} (the layout <split>/<class>/<image>, both splits with the same classes)."
        )
    return folders


def class_names(split_dir: Path) -> list[str]:
    """Sorted names of the class folders of a split (hidden folders ignored); ValueError when there are none."""
    names = sorted(entry.name for entry in os.scandir(split_dir) if entry.is_dir() and not entry.name.startswith("."))
    if not names:
        raise ValueError(f"{split_dir} holds no class folders: expected {split_dir}/<class>/<image>")
    return names


def check_same_classes(train_dir: Path, train: Sequence[str], val_dir: Path, val: Sequence[str]) -> None:
    """ValueError naming the classes only one split has: labels follow the sorted names, so the sets must match."""
    only_train, only_val = sorted(set(train) - set(val)), sorted(set(val) - set(train))
    if only_train or only_val:
        raise ValueError(
            f"{train_dir} and {val_dir} must hold the same class folders; only in train: "
            f"{_listing(only_train) or 'none'}; only in val: {_listing(only_val) or 'none'}"
        )


def image_files(folder: Path) -> list[str]:
    """Sorted paths of the files below `folder` (at any depth) whose names end in one of IMAGE_EXTENSIONS."""
    found = []
    for parent, _, names in os.walk(folder, followlinks=True):
        found += [os.path.join(parent, name) for name in names if name.lower().endswith(IMAGE_EXTENSIONS)]
    return sorted(found)


def read_problem(path: str, decode: bool) -> str | None:
    """Why PIL cannot read the image at `path`, or None: its header always, its pixel data too when `decode`."""
    try:
        with Image.open(path) as image:
            if decode:
                image.draft("RGB", (1, 1))  # a JPEG decodes at 1/8 scale, which still reads all of its data
                image.load()
    except READ_ERRORS as err:
        return f"{type(err).__name__}: {err}"
    return None


def scan_class(folder: Path, decode: bool) -> tuple[list[str], dict[str, str]]:
    """(readable image paths, {unreadable path: why}) of one class folder."""
    readable, bad = [], {}
    for path in image_files(folder):
        problem = read_problem(path, decode)
        if problem is None:
            readable.append(path)
        else:
            bad[path] = problem
    return readable, bad


def read_image(path: str) -> Image.Image:
    """The image at `path` in RGB; ValueError naming the file when PIL cannot open or decode it."""
    try:
        with Image.open(path) as image:
            return image.convert("RGB")
    except READ_ERRORS as err:
        raise ValueError(
            f"cannot read image {path} ({type(err).__name__}: {err}); remove it, or set DATASET.SKIP_BAD_IMAGES "
            "True to skip such files"
        ) from err


class ImageFolderSplit:
    """The images of one split: samples, (path, label) per image; classes, the class names in label order;
    transform, the crop (TrainCrop or EvalCrop); skipped, the unreadable files left out (DATASET.SKIP_BAD_IMAGES).
    """

    def __init__(
        self, samples: list[tuple[str, int]], classes: list[str], transform: Callable, skipped: Sequence[str] = ()
    ) -> None:
        self.samples = samples
        self.classes = classes
        self.transform = transform
        self.skipped = list(skipped)

    @property
    def targets(self) -> list[int]:
        """The label of every image, in sample order."""
        return [label for _, label in self.samples]

    def subset(self, indices: Tensor, transform: Callable | None = None) -> ImageFolderSplit:
        """The images at `indices`, with `transform` when given (a held-out part gets the evaluation one)."""
        samples = [self.samples[i] for i in indices.tolist()]
        return ImageFolderSplit(samples, self.classes, transform or self.transform)

    def __len__(self) -> int:
        return len(self.samples)

    def load(self, index: int, generator: torch.Generator) -> tuple[tuple[Tensor, bool], int]:
        """((uint8 crop, flip), label) of image `index`, its random draws taken from `generator`."""
        path, label = self.samples[index]
        return self.transform(read_image(path), generator), label


def report_bad_images(split_dir: Path, bad: dict[str, str], skip_bad_images: bool) -> None:
    """Refuse the unreadable images `bad` ({path: why}) in one ValueError naming them, or log how many are
    skipped (`skip_bad_images`)."""
    if not bad:
        return
    if not skip_bad_images:
        named = _listing([f"{path} ({why})" for path, why in bad.items()], "; ")
        raise ValueError(f"{len(bad)} unreadable image(s) under {split_dir}: {named}. Remove or replace them, "
                         "or set DATASET.SKIP_BAD_IMAGES True to skip them.")
    logger.warning("DATASET.SKIP_BAD_IMAGES: skipped %d unreadable image(s) under %s: %s",
                   len(bad), split_dir, _listing(list(bad)))


def read_split(
    split_dir: Path, classes: Sequence[str], transform: Callable, skip_bad_images: bool, workers: int
) -> ImageFolderSplit:
    """Scan every class folder of a split (in `workers` threads) and keep its readable images.

    Unreadable images are refused or skipped (report_bad_images); a class folder left without a readable image
    raises ValueError naming it.
    """
    with ThreadPoolExecutor(max(1, workers)) as pool:
        scans = list(pool.map(partial(scan_class, decode=skip_bad_images), [split_dir / name for name in classes]))
    bad = {path: why for _, problems in scans for path, why in problems.items()}
    report_bad_images(split_dir, bad, skip_bad_images)
    for name, (readable, problems) in zip(classes, scans):
        if not readable:
            raise ValueError(
                f"class folder {split_dir / name} holds no readable image ({len(problems)} unreadable skipped); "
                f"images are files ending in {', '.join(IMAGE_EXTENSIONS)}"
            )
    samples = [(path, label) for label, (readable, _) in enumerate(scans) for path in readable]
    return ImageFolderSplit(samples, list(classes), transform, sorted(bad))


def image_folder_datasets(
    base: Path, image_size: int, skip_bad_images: bool = False, workers: int = 0
) -> tuple[ImageFolderSplit, ImageFolderSplit]:
    """(train, val) splits of the image folder `base`, checked: both present, the same classes, no class empty,
    bad images refused or (skip_bad_images) skipped. `workers` threads scan the class folders."""
    train_dir, val_dir = split_folders(base)
    classes, val_classes = class_names(train_dir), class_names(val_dir)
    check_same_classes(train_dir, classes, val_dir, val_classes)
    return (
        read_split(train_dir, classes, TrainCrop(image_size), skip_bad_images, workers),
        read_split(val_dir, classes, EvalCrop(image_size), skip_bad_images, workers),
    )
