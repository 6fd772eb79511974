"""Held-out validation: a disjoint, class-balanced, deterministic split, and epoch selection on it."""
from __future__ import annotations

import json

import pytest
import torch

from classification.data import build_data, holdout_split
from classification.engine import Trainer


def _labels(per_class: int = 30, classes: int = 5) -> torch.Tensor:
    order = torch.randperm(per_class * classes, generator=torch.Generator().manual_seed(3))
    return torch.arange(classes).repeat_interleave(per_class)[order]


def test_split_is_disjoint_balanced_and_fixed_by_its_own_seed():
    labels = _labels()
    train, val = holdout_split(labels, 20, val_seed=1, train_subset=50, subset_seed=2)
    assert len(val) == 20 and len(train) == 50 and not set(train.tolist()) & set(val.tolist())
    assert torch.bincount(labels[val], minlength=5).tolist() == [4] * 5
    assert torch.bincount(labels[train], minlength=5).tolist() == [10] * 5
    again_train, again_val = holdout_split(labels, 20, val_seed=1, train_subset=50, subset_seed=2)
    assert torch.equal(train, again_train) and torch.equal(val, again_val)
    # A teacher on all the rest and a student on a subset hold out the same images.
    teacher_train, teacher_val = holdout_split(labels, 20, val_seed=1, train_subset=0, subset_seed=9)
    assert torch.equal(teacher_val, val) and len(teacher_train) == 130
    assert not torch.equal(holdout_split(labels, 20, 2, 50, 2)[1], val)


def test_no_validation_keeps_the_plain_subset():
    labels = _labels()
    train, val = holdout_split(labels, 0, 0, 40, 5)
    assert len(val) == 0 and len(train) == 40


@pytest.mark.parametrize("opts, match", [
    (("DATASET.VAL_SIZE", 40), "leaves none"),
    (("DATASET.VAL_SIZE", 20, "DATASET.TRAIN_SUBSET", 30), "together exceed"),
    (("DATASET.VAL_SIZE", 3), "fewer than the 5 classes"),
])
def test_split_sizes_that_do_not_fit_are_refused(cls_cfg, opts, match):
    with pytest.raises(ValueError, match=match):
        build_data(cls_cfg(*opts), torch.device("cpu"))


def test_loaders_hold_the_split_images(cls_cfg):
    data = build_data(cls_cfg("DATASET.VAL_SIZE", 10), torch.device("cpu"))
    val_labels = torch.cat([y for _, y, _ in data.val])
    assert data.num_train == 30 and len(val_labels) == 10 and torch.bincount(val_labels).tolist() == [2] * 5


def test_the_run_selects_its_epoch_on_validation(cls_cfg, tmp_path):
    cfg = cls_cfg("DATASET.VAL_SIZE", 10, "SOLVER.EPOCHS", 3)
    summary = Trainer(cfg).train()
    rows = (tmp_path / "run" / "metrics.csv").read_text().splitlines()
    header = rows[0].split(",")
    records = [dict(zip(header, line.split(","))) for line in rows[1:]]
    val = [float(r["val_top1"]) for r in records]
    chosen = val.index(max(val))  # the first epoch reaching the best validation top-1
    assert summary["selected_on"] == "val" and summary["selected_epoch"] == chosen + 1
    assert summary["val_top1"] == pytest.approx(val[chosen])
    assert summary["test_top1_selected"] == pytest.approx(float(records[chosen]["test_top1"]))
    assert summary["best_top1"] == pytest.approx(max(float(r["test_top1"]) for r in records))
    best = torch.load(tmp_path / "run" / "best_student.pth", weights_only=True)
    assert best["epoch"] == summary["selected_epoch"]
    assert json.loads((tmp_path / "run" / "summary.json").read_text()) == summary


def test_without_validation_the_selection_is_the_best_test_epoch(cls_cfg):
    summary = Trainer(cls_cfg("SOLVER.EPOCHS", 2)).train()
    assert summary["selected_on"] == "test" and summary["val_top1"] is None
    assert (summary["selected_epoch"], summary["test_top1_selected"]) == (summary["best_epoch"], summary["best_top1"])
