"""Classification data: batch augmentation, per-epoch determinism, subsets, data set errors, Fashion-MNIST."""
from __future__ import annotations

import pytest
import torch

from classification.data import InMemoryLoader, balanced_subset, build_data, make_synthetic, random_crop_flip
from classification.engine.metrics import AccuracyMeter


def test_random_crop_flip_matches_per_image_crop_and_flip():
    images = torch.arange(2 * 3 * 6 * 5, dtype=torch.float32).reshape(2, 3, 6, 5)
    pad = 2
    out = random_crop_flip(images, pad, torch.Generator().manual_seed(3))
    # Replay the same draws and build each crop by slicing.
    generator = torch.Generator().manual_seed(3)
    offsets = torch.randint(0, 2 * pad + 1, (2, 2), generator=generator)
    flips = torch.rand(2, generator=generator) < 0.5
    padded = torch.nn.functional.pad(images, (pad, pad, pad, pad))
    for i in range(2):
        top, left = int(offsets[0, i]), int(offsets[1, i])
        expected = padded[i, :, top : top + 6, left : left + 5]
        if flips[i]:
            expected = expected.flip(-1)
        assert torch.equal(out[i], expected)


def _batches(loader, epoch):
    loader.set_epoch(epoch)
    return [(x.clone(), y.clone()) for x, y, _ in loader]


def test_training_batches_depend_only_on_seed_and_epoch():
    data = make_synthetic(4, 50, 10, 8)
    make = lambda: InMemoryLoader(data.train_images, data.train_labels, 16, data.mean, data.std, train=True, seed=1)
    first, second = make(), make()
    _batches(first, 0)  # consuming another epoch first changes nothing for epoch 1
    a, b = _batches(first, 1), _batches(second, 1)
    assert all(torch.equal(x1, x2) and torch.equal(y1, y2) for (x1, y1), (x2, y2) in zip(a, b))
    c = _batches(second, 2)
    assert not torch.equal(a[0][1], c[0][1])
    # 50 items in batches of 16: 16, 16, 16, 2; every item once per epoch
    assert [len(y) for _, y in a] == [16, 16, 16, 2]
    assert sorted(torch.cat([y for _, y in a]).tolist()) == sorted(data.train_labels.tolist())


def test_lone_last_training_item_is_dropped_but_not_at_test_time():
    data = make_synthetic(3, 33, 33, 8)
    train = InMemoryLoader(data.train_images, data.train_labels, 16, data.mean, data.std, train=True)
    test = InMemoryLoader(data.test_images, data.test_labels, 16, data.mean, data.std, train=False)
    assert [len(y) for _, y, _ in train] == [16, 16] and len(train) == 2
    assert [len(y) for _, y, _ in test] == [16, 16, 1]


def test_test_loader_normalises_without_augmentation():
    data = make_synthetic(3, 8, 8, 8)
    loader = InMemoryLoader(data.test_images, data.test_labels, 8, data.mean, data.std, train=False)
    images, labels, _ = next(iter(loader))
    mean = torch.tensor(data.mean).reshape(1, 3, 1, 1)
    std = torch.tensor(data.std).reshape(1, 3, 1, 1)
    assert torch.allclose(images, (data.test_images.float() / 255 - mean) / std, atol=1e-5)
    assert torch.equal(labels, data.test_labels)


def test_balanced_subset_is_class_balanced_and_seeded():
    labels = torch.tensor([0] * 50 + [1] * 30 + [2] * 20)
    chosen = balanced_subset(labels, 30, seed=0)
    assert len(chosen) == 30 and len(set(chosen.tolist())) == 30
    assert torch.bincount(labels[chosen]).tolist() == [10, 10, 10]
    assert torch.equal(chosen, balanced_subset(labels, 30, seed=0))
    assert not torch.equal(chosen, balanced_subset(labels, 30, seed=1))
    assert torch.equal(balanced_subset(labels, 0, seed=0), torch.arange(100))


def test_missing_cifar100_names_the_expected_path(cls_cfg, tmp_path):
    cfg = cls_cfg("DATASET.NAME", "cifar100", "DATASET.ROOT", tmp_path)
    with pytest.raises(FileNotFoundError, match=str(tmp_path / "cifar-100-python")):
        build_data(cfg, torch.device("cpu"))


def test_missing_imagenet_names_the_expected_path(cls_cfg, tmp_path):
    pytest.importorskip("torchvision")
    cfg = cls_cfg("DATASET.NAME", "imagenet", "DATASET.ROOT", tmp_path)
    with pytest.raises(FileNotFoundError, match=str(tmp_path / "imagenet" / "train")):
        build_data(cfg, torch.device("cpu"))


def test_unknown_dataset_is_refused(cls_cfg):
    with pytest.raises(ValueError, match="unknown DATASET.NAME 'mnist'"):
        build_data(cls_cfg("DATASET.NAME", "mnist"), torch.device("cpu"))


def test_fashion_mnist_is_fed_as_cifar_sized_rgb(cls_cfg, tmp_path):
    cfg = cls_cfg("DATASET.NAME", "fashion_mnist", "DATASET.ROOT", tmp_path, "DATASET.TRAIN_SUBSET", 100,
                  "SOLVER.TEST_BATCH_SIZE", 500)
    data = build_data(cfg, torch.device("cpu"))
    assert (data.num_classes, data.family, data.num_train) == (10, "cifar", 100)
    images, labels, _ = next(iter(data.test))
    assert images.shape == (500, 3, 32, 32)
    assert torch.equal(images[:, 0], images[:, 1]) and torch.equal(images[:, 0], images[:, 2])
    assert labels.max() <= 9
    assert torch.bincount(data.train.labels).tolist() == [10] * 10


def test_accuracy_meter_counts_top1_and_top5():
    logits = torch.tensor([[0.0, 1, 2, 3, 4, 5], [5.0, 4, 3, 2, 1, 0], [0.0, 8, 9, 1, 2, 3]])
    targets = torch.tensor([5, 5, 1])  # hit top-1; miss top-5 (rank 6); rank 2 (top-5 only)
    meter = AccuracyMeter()
    meter.update(logits[:2], targets[:2])
    meter.update(logits[2:], targets[2:])
    result = meter.result()
    assert result["top1"] == pytest.approx(100 / 3)
    assert result["top5"] == pytest.approx(200 / 3)


def test_batches_carry_their_training_set_indices():
    data = make_synthetic(4, 50, 10, 8)
    loader = InMemoryLoader(data.train_images, data.train_labels, 16, data.mean, data.std, train=True, seed=1)
    seen = []
    for images, labels, indices in loader:
        assert torch.equal(labels, data.train_labels[indices]) and len(images) == len(indices)
        seen += indices.tolist()
    assert sorted(seen) == list(range(50))


def _write_cifar100(root, payload=None):
    import pickle

    import numpy as np

    folder = root / "cifar-100-python"
    folder.mkdir(parents=True)
    for split, count in (("train", 200), ("test", 100)):
        entry = {"data": np.random.default_rng(0).integers(0, 256, (count, 3072), dtype=np.uint8),
                 "fine_labels": [i % 100 for i in range(count)], "filenames": [f"{i}.png" for i in range(count)]}
        if payload is not None:
            entry["extra"] = payload
        with open(folder / split, "wb") as f:
            pickle.dump(entry, f, protocol=2)


def test_cifar100_pickles_load_through_the_restricted_unpickler(cls_cfg, tmp_path):
    _write_cifar100(tmp_path)
    data = build_data(cls_cfg("DATASET.NAME", "cifar100", "DATASET.ROOT", tmp_path, "DATASET.TRAIN_SUBSET", 0),
                      torch.device("cpu"))
    assert (data.num_classes, data.num_train) == (100, 200)


def test_a_cifar100_pickle_that_would_run_code_is_refused(cls_cfg, tmp_path):
    import os

    class Planted:
        def __reduce__(self):
            return os.mkdir, (str(tmp_path / "pwned"),)

    _write_cifar100(tmp_path, Planted())
    with pytest.raises(ValueError, match=r"refused to load .*cifar-100-python.*mkdir is not allowed"):
        build_data(cls_cfg("DATASET.NAME", "cifar100", "DATASET.ROOT", tmp_path, "DATASET.TRAIN_SUBSET", 0),
                   torch.device("cpu"))
    assert not (tmp_path / "pwned").exists()
