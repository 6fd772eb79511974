"""DATASET.NAME image_folder: a tiny folder of PNGs trains; the class sets, bad images, empty or missing folders
are checked before training; ImageNet is the same reader under DATASET.ROOT/imagenet."""
from __future__ import annotations

import logging
import re

import numpy as np
import pytest
import torch
from PIL import Image

from classification.data import build_data
from classification.data.image_folder import family_for, image_folder_datasets
from classification.engine import Trainer

CLASSES = ("cat", "dog", "fish")
SIZE = 16
# A tiny folder: 4 training and 2 val images per class, loaded in the main process, one epoch of 3 batches.
FOLDER_OPTS = ("DATASET.NAME", "image_folder", "DATASET.IMAGE_SIZE", SIZE, "DATASET.NUM_WORKERS", 0,
               "SOLVER.BATCH_SIZE", 4, "SOLVER.EPOCHS", 1, "SOLVER.MILESTONES", [1])


def write_folder(base, counts=None, classes=CLASSES):
    """`base/{train,val}/<class>/<i>.png`: 16x16 RGB PNGs, each class a different colour plus noise.

    counts: {split: images per class}, default {"train": 4, "val": 2}; classes: one tuple for both splits or
    {split: tuple}."""
    rng = np.random.default_rng(0)
    for split, count in (counts or {"train": 4, "val": 2}).items():
        names = classes[split] if isinstance(classes, dict) else classes
        for label, name in enumerate(names):
            folder = base / split / name
            folder.mkdir(parents=True)
            for i in range(count):
                pixels = np.full((SIZE, SIZE, 3), 60 * label, dtype=np.int16) + rng.integers(0, 60, (SIZE, SIZE, 3))
                Image.fromarray(pixels.astype(np.uint8)).save(folder / f"{i}.png")
    return base


def data_of(cls_cfg, root, *opts):
    return build_data(cls_cfg(*FOLDER_OPTS, "DATASET.ROOT", root, *opts), torch.device("cpu"))


def test_a_tiny_image_folder_trains_one_epoch(cls_cfg, tmp_path):
    root = write_folder(tmp_path / "pets")
    (root / "train" / "cat" / "notes.txt").write_text("not an image: ignored")
    cfg = cls_cfg(*FOLDER_OPTS, "DATASET.ROOT", root)
    trainer = Trainer(cfg)
    assert (trainer.data.num_classes, trainer.data.family, trainer.data.num_train) == (3, "cifar", 12)
    summary = trainer.train()
    assert summary["epochs"] == 1 and summary["num_train"] == 12 and 0 <= summary["last_top1"] <= 100


def test_classes_come_from_the_folders_and_crops_have_the_image_size(cls_cfg, tmp_path):
    write_folder(tmp_path)
    train, val = image_folder_datasets(tmp_path, SIZE)
    assert train.classes == val.classes == list(CLASSES)
    assert train.targets == [0] * 4 + [1] * 4 + [2] * 4 and val.targets == [0] * 2 + [1] * 2 + [2] * 2
    data = data_of(cls_cfg, tmp_path, "DATASET.IMAGE_SIZE", 12)
    images, labels, indices = next(iter(data.train))
    assert images.shape == (4, 3, 12, 12) and torch.equal(labels, data.train_labels[indices])
    test_images, test_labels, _ = next(iter(data.test))
    assert test_images.shape == (6, 3, 12, 12) and test_labels.tolist() == val.targets


def test_the_selection_split_is_carved_from_train_and_evaluated_without_augmentation(cls_cfg, tmp_path):
    write_folder(tmp_path)
    data = data_of(cls_cfg, tmp_path, "DATASET.VAL_SIZE", 3)
    assert data.num_train == 9 and len(data.test.loader.dataset) == 6
    first, second = ([t.clone() for t in next(iter(data.val))] for _ in range(2))
    assert all(torch.equal(a, b) for a, b in zip(first, second))  # the evaluation transform: no random crop
    assert sorted(first[1].tolist()) == [0, 1, 2]


def test_the_image_size_picks_the_model_family():
    assert [family_for(size) for size in (16, 32, 64, 65, 224)] == ["cifar"] * 3 + ["imagenet"] * 2


def test_different_class_sets_are_refused_naming_the_classes(cls_cfg, tmp_path):
    write_folder(tmp_path, classes={"train": ("cat", "dog", "fish"), "val": ("cat", "dog", "owl")})
    with pytest.raises(ValueError, match=r"same class folders; only in train: fish; only in val: owl"):
        data_of(cls_cfg, tmp_path)


def test_a_corrupt_image_is_refused_naming_the_file(cls_cfg, tmp_path):
    write_folder(tmp_path)
    bad = tmp_path / "train" / "dog" / "x.png"
    bad.write_bytes(np.random.default_rng(1).bytes(300))
    with pytest.raises(ValueError, match=rf"1 unreadable image\(s\) under .*{re.escape(str(bad))}.*SKIP_BAD_IMAGES"):
        data_of(cls_cfg, tmp_path)


def test_skip_bad_images_skips_and_counts_them(cls_cfg, tmp_path, caplog):
    write_folder(tmp_path)
    bad = tmp_path / "train" / "dog" / "x.png"
    bad.write_bytes(np.random.default_rng(1).bytes(300))
    with caplog.at_level(logging.WARNING, logger="classification.data"):
        data = data_of(cls_cfg, tmp_path, "DATASET.SKIP_BAD_IMAGES", True)
    assert data.num_train == 12 and str(bad) not in [p for p, _ in data.train.loader.dataset.dataset.samples]
    assert "skipped 1 unreadable image(s)" in caplog.text and str(bad) in caplog.text


def test_damaged_pixel_data_is_named_when_loaded_and_skipped_by_the_decoding_scan(cls_cfg, tmp_path):
    write_folder(tmp_path)
    truncated = tmp_path / "val" / "fish" / "1.png"
    truncated.write_bytes(truncated.read_bytes()[:60])  # the header still reads; the pixel data is cut off
    data = data_of(cls_cfg, tmp_path)
    with pytest.raises(ValueError, match=rf"cannot read image {re.escape(str(truncated))}"):
        list(data.test)
    skipped = data_of(cls_cfg, tmp_path, "DATASET.SKIP_BAD_IMAGES", True)
    assert len(skipped.test.loader.dataset) == 5 and skipped.test.loader.dataset.dataset.skipped == [str(truncated)]


def test_an_empty_class_folder_is_refused_naming_it(cls_cfg, tmp_path):
    write_folder(tmp_path)
    (tmp_path / "val" / "dog").joinpath("0.png").unlink()
    (tmp_path / "val" / "dog").joinpath("1.png").unlink()
    with pytest.raises(ValueError, match=rf"class folder {re.escape(str(tmp_path / 'val' / 'dog'))} holds no readable"):
        data_of(cls_cfg, tmp_path)


def test_a_missing_split_folder_is_refused_naming_it(cls_cfg, tmp_path):
    write_folder(tmp_path, counts={"train": 4})
    with pytest.raises(FileNotFoundError, match=rf"split not found: {re.escape(str(tmp_path / 'val'))}\."):
        data_of(cls_cfg, tmp_path)


def test_a_split_without_class_folders_is_refused(cls_cfg, tmp_path):
    write_folder(tmp_path, counts={"train": 4})
    (tmp_path / "val").mkdir()
    with pytest.raises(ValueError, match=rf"{re.escape(str(tmp_path / 'val'))} holds no class folders"):
        data_of(cls_cfg, tmp_path)


def test_imagenet_is_the_image_folder_under_root_imagenet(cls_cfg, tmp_path):
    write_folder(tmp_path / "imagenet", classes=("n01440764", "n01443537", "n01484850"))
    data = data_of(cls_cfg, tmp_path, "DATASET.NAME", "imagenet")
    assert (data.num_classes, data.family, data.num_train) == (3, "cifar", 12)
    assert next(iter(data.test))[0].shape == (6, 3, SIZE, SIZE)


def test_the_evaluation_crop_is_torchvisions_resize_and_centre_crop():
    from torchvision import transforms

    from classification.data.folder_loader import RESIZE_RATIO, EvalCrop

    rng = np.random.default_rng(2)
    for width, height in ((40, 23), (23, 40), (31, 31)):
        image = Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))
        reference = transforms.Compose([transforms.Resize(round(14 * RESIZE_RATIO)), transforms.CenterCrop(14),
                                        transforms.PILToTensor()])(image)
        pixels, flip = EvalCrop(14)(image)
        assert torch.equal(pixels, reference) and not flip


def test_random_resized_boxes_stay_inside_the_image_with_the_recipes_area_and_aspect():
    from classification.data.folder_loader import random_resized_box, sample_generator

    for index in range(300):
        left, top, w, h = random_resized_box(60, 45, sample_generator(0, 0, index))
        assert 0 <= left and left + w <= 60 and 0 <= top and top + h <= 45
        assert 0.08 * 60 * 45 * 0.9 <= w * h <= 60 * 45 and 3 / 4 * 0.9 <= w / h <= 4 / 3 * 1.1
    # a strip too narrow for any allowed aspect: the largest centred crop of aspect 3/4
    assert random_resized_box(4, 100, sample_generator(0, 0, 0)) == (0, 47, 4, 5)


def test_folder_batches_depend_on_neither_the_workers_nor_where_a_pass_starts(tmp_path):
    from classification.data.folder_loader import IMAGENET_MEAN, IMAGENET_STD, DeviceLoader, TrainCrop, sample_generator

    write_folder(tmp_path, counts={"train": 6, "val": 2})
    train, _ = image_folder_datasets(tmp_path, 12)

    def batches(workers, epoch=1, start=0):
        loader = DeviceLoader(train, 4, train=True, workers=workers, seed=3, device=torch.device("cpu"))
        loader.set_epoch(epoch, start)
        return list(loader)

    full = batches(0)
    seen = torch.cat([b[2] for b in full]).tolist()
    assert len(full) == 4 and len(set(seen)) == 16 and seen != sorted(seen)  # 18 shuffled, the last 2 dropped
    for a, b in zip(full, batches(2), strict=True):  # two worker processes: the same images
        assert all(torch.equal(x, y) for x, y in zip(a, b))
    for a, b in zip(full[2:], batches(0, start=2), strict=True):  # a pass resumed at batch 2: the same tail
        assert all(torch.equal(x, y) for x, y in zip(a, b))
    assert not torch.equal(full[0][0], batches(0, epoch=2)[0][0])  # another epoch, other crops
    # each image: its (seed, epoch, index) crop, flipped where drawn, normalised with the ImageNet statistics
    images, labels, indices = full[0]
    for image, label, index in zip(images, labels, indices.tolist()):
        path, expected_label = train.samples[index]
        pixels, flip = TrainCrop(12)(Image.open(path).convert("RGB"), sample_generator(3, 1, index))
        pixels = pixels.flip(2) if flip else pixels
        mean, std = (torch.tensor(v)[:, None, None] for v in (IMAGENET_MEAN, IMAGENET_STD))
        torch.testing.assert_close(image, (pixels / 255 - mean) / std)
        assert label == expected_label


def test_bench_data_speed_times_the_loader_at_each_worker_count(tmp_path, capsys):
    import json

    from classification.__main__ import main

    record = tmp_path / "data_speed.json"
    main(["bench", "--data-speed", "--images", "16", "--batches", "3", "--batch-size", "4", "--workers", "0", "1",
          "--image-size", "32", "--device", "cpu", "--speed-output", str(record)])
    printed = capsys.readouterr().out
    speeds = json.loads(record.read_text())["images_per_second"]
    assert set(speeds) == {"0", "1"} and all(value > 0 for value in speeds.values())
    assert "16 synthetic 500x375 JPEGs" in printed and f"| 1         | {speeds['1']:.0f}" in printed
    write_folder(tmp_path / "pets")  # an image folder of one's own; 12 training images, not one batch of 16
    with pytest.raises(ValueError, match="fewer images than one batch"):
        main(["bench", "--data-speed", "--data-root", str(tmp_path / "pets"), "--batch-size", "16", "--workers",
              "0", "--image-size", "16", "--device", "cpu"])
