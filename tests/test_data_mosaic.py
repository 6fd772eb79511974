"""Tests of the Fashion-MNIST reader, the mosaic generator and the Detectron2 registration."""
from __future__ import annotations

import gzip
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.structures import BoxMode
from PIL import Image
from pycocotools.coco import COCO

from unikd.data import fashion_mnist
from unikd.data.fashion_mnist import FASHION_MNIST_CLASSES, find_fashion_mnist_dir, load_fashion_mnist
from unikd_det.data import generate_mosaic_dataset, mosaic, register_fashion_mosaic

SMALL = dict(num_images=8, canvas_size=64, min_item_size=12, max_item_size=32)


@pytest.fixture(scope="module")
def items() -> tuple[np.ndarray, np.ndarray]:
    """30 synthetic 28x28 items, each a bright rectangle of random size and place on black."""
    rng = np.random.default_rng(123)
    images = np.zeros((30, 28, 28), dtype=np.uint8)
    for image in images:
        top, left = rng.integers(0, 14, size=2)
        height, width = rng.integers(6, 14, size=2)
        image[top : top + height, left : left + width] = rng.integers(120, 256)
    return images, np.arange(30, dtype=np.int64) % 10


def _load(json_path: Path) -> dict:
    return json.loads(json_path.read_text())


def _write_idx(path: Path, magic: int, array: np.ndarray) -> None:
    header = np.array([magic, *array.shape], dtype=">u4").tobytes()
    with gzip.open(path, "wb") as f:
        f.write(header + array.astype(np.uint8).tobytes())


def _write_fake_split(folder: Path, images_magic: int = 0x803) -> None:
    """Write tiny IDX files for both splits, with valid label files and the given images magic."""
    images = np.arange(2 * 28 * 28, dtype=np.uint8).reshape(2, 28, 28)
    for prefix in ("train", "t10k"):
        _write_idx(folder / f"{prefix}-images-idx3-ubyte.gz", images_magic, images)
        _write_idx(folder / f"{prefix}-labels-idx1-ubyte.gz", 0x801, np.array([3, 9]))


def test_same_seed_gives_identical_output_and_other_seed_differs(items, tmp_path):
    a = generate_mosaic_dataset(*items, tmp_path / "a", seed=5, **SMALL)
    b = generate_mosaic_dataset(*items, tmp_path / "b", seed=5, **SMALL)
    c = generate_mosaic_dataset(*items, tmp_path / "c", seed=6, **SMALL)
    assert a.read_bytes() == b.read_bytes()
    assert (a.parent / "images/000001.png").read_bytes() == (b.parent / "images/000001.png").read_bytes()
    assert _load(a)["annotations"] != _load(c)["annotations"]


def test_box_of_a_known_item_is_its_exact_pixel_extent(tmp_path):
    item = np.zeros((1, 28, 28), dtype=np.uint8)
    item[0, 5:15, 8:20] = 200  # rows 5..14, cols 8..19
    # canvas == item size: no resize and the only position is (0, 0)
    json_path = generate_mosaic_dataset(
        item, np.array([4]), tmp_path, num_images=1, canvas_size=28, max_objects=1,
        min_item_size=28, max_item_size=28,
    )
    (annotation,) = _load(json_path)["annotations"]
    assert annotation["bbox"] == [8, 5, 12, 10]
    assert annotation["area"] == 120
    assert annotation["category_id"] == 5


def test_boxes_are_tight_inside_the_canvas_and_cover_every_bright_pixel(items, tmp_path):
    json_path = generate_mosaic_dataset(*items, tmp_path, seed=1, **SMALL)
    coco = _load(json_path)
    size = SMALL["canvas_size"]
    for image in coco["images"]:
        rgb = np.asarray(Image.open(tmp_path / image["file_name"]))
        assert rgb.shape == (size, size, 3) and (rgb == rgb[..., :1]).all()
        pixels = rgb[..., 0]
        covered = np.zeros_like(pixels, dtype=bool)
        for ann in (a for a in coco["annotations"] if a["image_id"] == image["id"]):
            x, y, w, h = ann["bbox"]
            assert x >= 0 and y >= 0 and w > 0 and h > 0 and x + w <= size and y + h <= size
            crop = pixels[y : y + h, x : x + w] > mosaic._BOX_THRESHOLD
            # tight: each of the four box edges touches an object pixel
            assert crop[0].any() and crop[-1].any() and crop[:, 0].any() and crop[:, -1].any()
            covered[y : y + h, x : x + w] = True
        # complete: nothing brighter than the background noise lies outside the boxes
        assert not (pixels[~covered] > mosaic._NOISE_MAX).any()


def test_object_counts_overlap_and_categories(items, tmp_path):
    # a crowded setting: large items on a small canvas force many rejected placements
    json_path = generate_mosaic_dataset(
        *items, tmp_path, num_images=12, canvas_size=40, min_objects=2, max_objects=4,
        min_item_size=24, max_item_size=40,
    )
    coco = _load(json_path)
    assert [c["id"] for c in coco["categories"]] == list(range(1, 11))
    assert [c["name"] for c in coco["categories"]] == list(FASHION_MNIST_CLASSES)
    for image in coco["images"]:
        anns = [a for a in coco["annotations"] if a["image_id"] == image["id"]]
        assert 1 <= len(anns) <= 4
        boxes = [a["bbox"] for a in anns]
        assert all(mosaic._iou(p, q) <= 0.3 for i, p in enumerate(boxes) for q in boxes[i + 1 :])
    assert all(1 <= a["category_id"] <= 10 and a["iscrowd"] == 0 for a in coco["annotations"])
    assert [a["id"] for a in coco["annotations"]] == list(range(1, len(coco["annotations"]) + 1))


def test_pycocotools_loads_the_json(items, tmp_path):
    json_path = generate_mosaic_dataset(*items, tmp_path, **SMALL)
    coco = COCO(str(json_path))
    assert len(coco.getImgIds()) == SMALL["num_images"]
    assert coco.getCatIds() == list(range(1, 11))
    assert len(coco.getAnnIds()) >= SMALL["num_images"]


def test_second_call_reuses_and_changed_inputs_regenerate(items, tmp_path):
    json_path = generate_mosaic_dataset(*items, tmp_path, **SMALL)
    png = tmp_path / "images/000001.png"
    stamps = json_path.stat().st_mtime_ns, png.stat().st_mtime_ns
    assert generate_mosaic_dataset(*items, tmp_path, **SMALL) == json_path
    assert (json_path.stat().st_mtime_ns, png.stat().st_mtime_ns) == stamps

    generate_mosaic_dataset(*items, tmp_path, **{**SMALL, "num_images": 3})
    assert len(_load(json_path)["images"]) == 3

    images, labels = items
    before = _load(json_path)["info"]["mosaic_params"]["items_sha256"]
    generate_mosaic_dataset(255 - images, labels, tmp_path, **{**SMALL, "num_images": 3})
    assert _load(json_path)["info"]["mosaic_params"]["items_sha256"] != before


@pytest.mark.parametrize(
    "overrides",
    [
        {"num_images": 0},
        {"min_item_size": 30, "max_item_size": 20},
        {"min_item_size": 0},
        {"max_item_size": 80},  # larger than the 64-pixel canvas
        {"min_objects": 0},
        {"min_objects": 3, "max_objects": 2},
    ],
)
def test_invalid_settings_raise(items, tmp_path, overrides):
    with pytest.raises(ValueError):
        generate_mosaic_dataset(*items, tmp_path, **{**SMALL, **overrides})
    assert not (tmp_path / "annotations.json").exists()


@pytest.mark.parametrize(
    "images, labels",
    [
        (np.zeros((3, 28, 28), dtype=np.float32), np.zeros(3, dtype=np.int64)),  # not uint8
        (np.zeros((3, 28), dtype=np.uint8), np.zeros(3, dtype=np.int64)),  # not [N, H, W]
        (np.zeros((3, 28, 28), dtype=np.uint8), np.zeros(2, dtype=np.int64)),  # length mismatch
        (np.zeros((3, 28, 28), dtype=np.uint8), np.array([0, 1, 10])),  # label out of range
    ],
)
def test_invalid_items_raise(tmp_path, images, labels):
    with pytest.raises(ValueError):
        generate_mosaic_dataset(images, labels, tmp_path, num_images=1, canvas_size=64)


def test_blank_items_raise(tmp_path):
    with pytest.raises(ValueError, match="no item could be placed"):
        generate_mosaic_dataset(
            np.zeros((2, 28, 28), dtype=np.uint8), np.zeros(2, dtype=np.int64), tmp_path, num_images=1
        )


def test_idx_reader_validates_files_and_split(tmp_path):
    _write_fake_split(tmp_path)
    images, labels = load_fashion_mnist("train", root=tmp_path)
    assert images.shape == (2, 28, 28) and images.dtype == np.uint8 and images[1, 0, 0] == 16
    assert labels.dtype == np.int64 and labels.tolist() == [3, 9]
    with pytest.raises(ValueError, match="split"):
        load_fashion_mnist("val", root=tmp_path)

    _write_fake_split(tmp_path, images_magic=0x801)  # a labels magic on an images file
    with pytest.raises(ValueError, match="magic"):
        load_fashion_mnist("test", root=tmp_path)

    _write_fake_split(tmp_path)
    (tmp_path / "t10k-labels-idx1-ubyte.gz").write_bytes(  # header says 2 labels, file holds 1
        gzip.compress(np.array([0x801, 2], dtype=">u4").tobytes() + b"\x01")
    )
    with pytest.raises(ValueError, match="declares shape"):
        load_fashion_mnist("test", root=tmp_path)


def test_find_dir_prefers_env_and_names_every_path_tried(tmp_path, monkeypatch):
    _write_fake_split(tmp_path)
    monkeypatch.setenv("FASHION_MNIST_DIR", str(tmp_path))
    assert find_fashion_mnist_dir() == tmp_path

    missing = [tmp_path / "env", tmp_path / "system", tmp_path / "repo"]
    monkeypatch.setenv("FASHION_MNIST_DIR", str(missing[0]))
    monkeypatch.setattr(fashion_mnist, "_SYSTEM_DIR", missing[1])
    monkeypatch.setattr(fashion_mnist, "_REPO_DIR", missing[2])
    with pytest.raises(FileNotFoundError) as error:
        find_fashion_mnist_dir()
    message = str(error.value)
    assert all(str(path) in message for path in missing)
    assert "dataset-fashion-mnist" in message and "make test" in message


def test_real_fashion_mnist_test_split():
    """Needs the installed Fashion-MNIST files (tools/setup_env.sh installs them); fails without them."""
    images, labels = load_fashion_mnist("test")
    assert images.shape == (10000, 28, 28) and images.dtype == np.uint8
    assert labels.shape == (10000,) and labels.dtype == np.int64
    assert sorted(np.unique(labels).tolist()) == list(range(10))
    assert images.max() == 255


@pytest.fixture
def clean_catalog():
    """Remove the mosaic registrations afterwards, so they do not point into a deleted tmp folder."""
    yield
    for name in ("fashion_mosaic_train", "fashion_mosaic_val", "fashion_mosaic_holdout",
                 "fashion_mosaic_train_student"):
        if name in DatasetCatalog.list():
            DatasetCatalog.remove(name)
        if name in MetadataCatalog.list():
            MetadataCatalog.remove(name)


def test_register_fashion_mosaic(tmp_path, clean_catalog):
    settings = dict(num_train=4, num_val=3, canvas_size=64, num_holdout=2)
    names = register_fashion_mosaic(tmp_path / "a", **settings)
    assert names == ("fashion_mosaic_train", "fashion_mosaic_val", "fashion_mosaic_holdout")
    assert register_fashion_mosaic(tmp_path / "a", **settings) == names  # identical: a no-op

    for name, count in zip(names, (4, 3, 2)):
        metadata = MetadataCatalog.get(name)
        assert metadata.thing_classes == list(FASHION_MNIST_CLASSES)
        assert Path(metadata.json_file).is_file()
        dicts = DatasetCatalog.get(name)
        assert len(dicts) == count
        for record in dicts:
            assert Path(record["file_name"]).is_file() and record["annotations"]
            for ann in record["annotations"]:
                assert ann["bbox_mode"] == BoxMode.XYWH_ABS
                assert 0 <= ann["category_id"] <= 9

    register_fashion_mosaic(tmp_path / "b", **{**settings, "num_train": 2})  # other settings: replaced
    assert MetadataCatalog.get(names[0]).json_file == str((tmp_path / "b/train/annotations.json").resolve())
    assert len(DatasetCatalog.get(names[0])) == 2
    assert len(DatasetCatalog.get("fashion_mosaic_train_student")) == 2  # all of a training set below 500


def test_the_students_subset_is_the_first_training_canvases(tmp_path, clean_catalog):
    register_fashion_mosaic(tmp_path, num_train=5, num_val=2, canvas_size=64, num_holdout=2, student_canvases=3)
    train, subset = DatasetCatalog.get("fashion_mosaic_train"), DatasetCatalog.get("fashion_mosaic_train_student")
    assert [r["file_name"] for r in subset] == [r["file_name"] for r in train[:3]]
    assert subset[2]["annotations"] == train[2]["annotations"]
    assert MetadataCatalog.get("fashion_mosaic_train_student").thing_classes == list(FASHION_MNIST_CLASSES)
    for wrong in (0, 6):
        with pytest.raises(ValueError, match="student_canvases"):
            register_fashion_mosaic(tmp_path, num_train=5, num_val=2, canvas_size=64, num_holdout=2,
                                    student_canvases=wrong)


def test_holdout_items_are_the_classification_validation_images_and_never_train():
    """The holdout canvases' items are the 5000 class-balanced training images that the classification configs
    hold out (Base-FashionMNIST.yaml's VAL_SIZE / VAL_SEED), disjoint from the training canvases' items."""
    from classification.config import load_cfg
    from classification.data import holdout_split
    from unikd_det.data.register import mosaic_item_split

    _, labels = load_fashion_mnist("train")
    train_items, holdout_items = mosaic_item_split(labels)
    assert len(train_items) + len(holdout_items) == len(labels)
    assert not np.intersect1d(train_items, holdout_items).size
    assert np.bincount(labels[holdout_items], minlength=10).tolist() == [500] * 10
    base = load_cfg(Path(__file__).parents[1] / "classification/configs/fashion_mnist/Base-FashionMNIST.yaml")
    _, classification_val = holdout_split(
        torch.from_numpy(labels), base.DATASET.VAL_SIZE, base.DATASET.VAL_SEED, base.DATASET.TRAIN_SUBSET,
        base.DATASET.SUBSET_SEED,
    )
    assert np.array_equal(holdout_items, classification_val.numpy())


def test_training_canvases_draw_only_on_items_outside_the_holdout(tmp_path, clean_catalog, monkeypatch):
    """register_fashion_mosaic hands the generator the training items less the holdout, and the holdout alone
    for the holdout canvases (checked through the arrays each set is built from)."""
    from unikd_det.data import register as register_module

    seen = {}
    real = register_module.generate_mosaic_dataset

    def spy(images, labels, out_dir, num_images, **kwargs):
        seen[Path(out_dir).name] = images
        return real(images, labels, out_dir, num_images, **kwargs)

    monkeypatch.setattr(register_module, "generate_mosaic_dataset", spy)
    register_fashion_mosaic(tmp_path, num_train=2, num_val=2, canvas_size=64, num_holdout=2)
    images, labels = load_fashion_mnist("train")
    train_items, holdout_items = register_module.mosaic_item_split(labels)
    assert np.array_equal(seen["train"], images[train_items])
    assert np.array_equal(seen["holdout"], images[holdout_items])
    assert np.array_equal(seen["val"], load_fashion_mnist("test")[0])
