"""Your own detection data: a COCO-format json and image folder registered by config alone (`DATASETS.COCO`), a
teacher trained on it with tools/train_net.py (a config without a DISTILL node), then a student distilled from
that teacher with the same tool."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml

from conftest import BASE_MOSAIC, IMAGE_SIZE, TEACHER_OPTS, TINY_OPTS
from test_det_lazy_teacher import TINY_MASK_HEAD
from test_det_trainer import load_train_net

# Non-contiguous COCO ids, as in real sets: Detectron2 maps them to contiguous 0..K-1.
CATEGORIES = [{"id": 3, "name": "square"}, {"id": 7, "name": "bar"}]
# (category id, XYWH box) per image; each box is painted in its category's colour.
OBJECTS = [
    [(3, (4, 6, 20, 20)), (7, (34, 30, 24, 10))],
    [(7, (10, 40, 30, 12))],
    [(3, (30, 4, 24, 24)), (3, (6, 36, 18, 18))],
    [(7, (8, 8, 12, 40)), (3, (36, 36, 20, 20))],
]
COLOURS = {3: (230, 60, 60), 7: (60, 200, 230)}


def write_coco_set(folder: Path, image_ids: list[int]) -> Path:
    """A COCO instances json of the OBJECTS images `image_ids` (1-based), its PNGs in `folder/images`; each
    object's segmentation is its box."""
    from PIL import Image

    (folder / "images").mkdir(parents=True, exist_ok=True)
    images, annotations = [], []
    for image_id in image_ids:
        canvas = np.full((IMAGE_SIZE, IMAGE_SIZE, 3), 20, dtype=np.uint8)
        for category, (x, y, w, h) in OBJECTS[image_id - 1]:
            canvas[y : y + h, x : x + w] = COLOURS[category]
            outline = [x, y, x + w, y, x + w, y + h, x, y + h]  # the box as a polygon, for a Mask R-CNN student
            annotations.append({"id": len(annotations) + 1, "image_id": image_id, "category_id": category,
                                "bbox": [x, y, w, h], "area": w * h, "iscrowd": 0, "segmentation": [outline]})
        file_name = f"{image_id:03d}.png"
        Image.fromarray(canvas).save(folder / "images" / file_name)
        images.append({"id": image_id, "file_name": file_name, "width": IMAGE_SIZE, "height": IMAGE_SIZE})
    path = folder / f"annotations_{'_'.join(map(str, image_ids))}.json"
    path.write_text(json.dumps({"images": images, "annotations": annotations, "categories": CATEGORIES}))
    return path


@pytest.fixture
def own_data(tmp_path):
    """The DATASETS.COCO node of a 4-image training set and a 2-image validation set, as a YAML mapping."""
    train, val = write_coco_set(tmp_path / "shapes", [1, 2, 3, 4]), write_coco_set(tmp_path / "shapes", [2, 4])
    root = str(tmp_path / "shapes" / "images")
    return {"NAME": ["shapes_train", "shapes_val"], "JSON": [str(train), str(val)], "IMAGE_ROOT": [root, root]}


@pytest.fixture
def coco_cfg(make_stock_cfg, own_data):
    """Factory: a tiny stock config with `own_data` in DATASETS.COCO and `opts` merged."""

    def make(opts=()):
        cfg = make_stock_cfg()
        cfg.DATASETS.COCO.merge_from_other_cfg(type(cfg)(own_data))
        cfg.merge_from_list(list(opts))
        return cfg

    return make


def test_the_config_keys_register_the_sets(coco_cfg):
    from detectron2.data import DatasetCatalog, MetadataCatalog

    from unikd_det.data.register import register_coco_datasets

    cfg = coco_cfg()
    assert register_coco_datasets(cfg) == ["shapes_train", "shapes_val"]
    records = DatasetCatalog.get("shapes_train")
    assert len(records) == 4 and len(DatasetCatalog.get("shapes_val")) == 2
    assert [len(r["annotations"]) for r in records] == [2, 1, 2, 2]
    assert {a["category_id"] for r in records for a in r["annotations"]} == {0, 1}  # contiguous ids
    assert MetadataCatalog.get("shapes_train").thing_classes == ["square", "bar"]
    assert MetadataCatalog.get("shapes_val").json_file == cfg.DATASETS.COCO.JSON[1]  # what COCOEvaluator reads
    assert register_coco_datasets(cfg) == ["shapes_train", "shapes_val"]  # again: a no-op, not "already registered"


@pytest.mark.parametrize("opts, error, message", [
    (["DATASETS.COCO.IMAGE_ROOT", ["images"]], ValueError, r"one entry per set.*'IMAGE_ROOT': 1"),
    (["DATASETS.COCO.NAME", ["shapes", "shapes"]], ValueError, r"NAME \['shapes'\].*unique"),
    (["DATASETS.COCO.NAME", ["fashion_mosaic_val", "shapes"]], ValueError, "built-in"),
    (["DATASETS.COCO.JSON", ["missing.json", "missing.json"]], FileNotFoundError, r"JSON of 'shapes_train'.*missing"),
    (["DATASETS.COCO.IMAGE_ROOT", ["nowhere", "nowhere"]], FileNotFoundError, r"IMAGE_ROOT of 'shapes_train'"),
])
def test_bad_dataset_keys_are_refused_naming_the_value(coco_cfg, opts, error, message):
    from unikd_det.data.register import register_coco_datasets

    with pytest.raises(error, match=message):
        register_coco_datasets(coco_cfg(opts))


def write_config(path: Path, node: dict) -> Path:
    """A user's config file: the mosaic demo's base settings and `node`."""
    path.write_text(yaml.safe_dump({"_BASE_": str(BASE_MOSAIC), **node}), encoding="utf-8")
    return path


def train_net(config: Path, output_dir: Path, opts=()) -> None:
    """tools/train_net.py's command line, 2 iterations of the tiny model."""
    tiny = [str(value) for value in TINY_OPTS]
    load_train_net().cli(["--config-file", str(config), *tiny, *map(str, opts), "SOLVER.MAX_ITER", "2",
                          "OUTPUT_DIR", str(output_dir)])


def test_train_a_teacher_on_own_data_then_distil_a_student(own_data, tmp_path):
    """The whole user story: register by config, train the teacher (no DISTILL node), distil from its run folder; the
    student is a Mask R-CNN, which reads the json's segmentations and keeps training its masks."""
    data = {"COCO": own_data, "TRAIN": ["shapes_train"], "TEST": []}
    teacher_config = write_config(tmp_path / "teacher.yaml",
                                  {"MODEL": {"ROI_HEADS": {"NUM_CLASSES": 2}}, "DATASETS": data})
    assert "DISTILL" not in yaml.safe_load(teacher_config.read_text())
    teacher_out = tmp_path / "teacher_run"
    train_net(teacher_config, teacher_out, TEACHER_OPTS)
    assert (teacher_out / "model_final.pth").is_file()

    student_config = write_config(tmp_path / "student.yaml", {
        "MODEL": {"META_ARCHITECTURE": "DistillRCNN", "ROI_HEADS": {"NUM_CLASSES": 2}},
        "DATASETS": {**data, "TEST": ["shapes_val"]},
        "DISTILL": {"TEACHER": {"CONFIG": str(teacher_out / "config.yaml"),
                                "WEIGHTS": str(teacher_out / "model_final.pth")},
                    "KD": {"ENABLED": True}},
    })
    student_out = tmp_path / "student_run"
    train_net(student_config, student_out, ["MODEL.MASK_ON", True, *TINY_MASK_HEAD])
    metrics = [json.loads(line) for line in (student_out / "metrics.json").read_text().splitlines()]
    assert any("loss_kd" in m and "loss_mask" in m for m in metrics)
    assert (student_out / "model_final.pth").is_file()
    assert (student_out / "inference" / "shapes_val" / "coco_instances_results.json").is_file()  # evaluated
