"""Teacher and student ROI class logits on the same boxes, for the detection counterpart of the UniKD
paper's Figure 4 (`tools/analyze_det.py`).

The boxes are the student's own test-time proposals (RPN output after NMS, `MODEL.RPN.POST_NMS_TOPK_TEST`
per image); the student's box head and the frozen teacher's box head score exactly those boxes, each on its
own features, as in training (`FrozenTeacher.roi_logits`).
"""
from __future__ import annotations

import logging

import torch
from detectron2.config import CfgNode
from detectron2.data import build_detection_test_loader
from detectron2.modeling import GeneralizedRCNN, build_model
from torch import Tensor

from .checkpoint import SafeDetectionCheckpointer
from .meta_arch import DistillRCNN
from .teacher import FrozenTeacher, load_teacher_config, validate_teacher_config

logger = logging.getLogger(__name__)


def load_student(cfg: CfgNode, weights: str) -> GeneralizedRCNN:
    """The trained student of `weights`: a DistillRCNN checkpoint's student, or a stock detector."""
    model = build_model(cfg)
    SafeDetectionCheckpointer(model).load(weights)
    student = model.student if isinstance(model, DistillRCNN) else model
    if not isinstance(student, GeneralizedRCNN):
        raise ValueError(f"{cfg.MODEL.META_ARCHITECTURE} is neither DistillRCNN nor a GeneralizedRCNN")
    return student.eval()


def load_teacher(cfg: CfgNode) -> FrozenTeacher:
    """The teacher named by cfg.DISTILL.TEACHER (CONFIG, WEIGHTS), checked against the student's config."""
    teacher_cfg = load_teacher_config(cfg)
    validate_teacher_config(cfg, teacher_cfg)
    return FrozenTeacher.from_config(teacher_cfg)


@torch.no_grad()
def roi_logit_pairs(
    student: GeneralizedRCNN, teacher: FrozenTeacher, cfg: CfgNode, dataset: str
) -> tuple[Tensor, Tensor]:
    """(student, teacher) ROI class logits, each [R, K + 1], over every image of `dataset`."""
    heads = student.roi_heads
    student_logits, teacher_logits = [], []
    for inputs in build_detection_test_loader(cfg, dataset):
        images = student.preprocess_image(inputs)
        features = student.backbone(images.tensor)
        proposals, _ = student.proposal_generator(images, features, None)
        boxes = [p.proposal_boxes for p in proposals]
        pooled = heads.box_pooler([features[f] for f in heads.box_in_features], boxes)
        student_logits.append(heads.box_predictor(heads.box_head(pooled))[0].cpu())
        teacher_images = teacher.preprocess(inputs, student.input_format, like=images)
        teacher_logits.append(teacher.roi_logits(teacher.features(teacher_images), boxes).cpu())
    if not student_logits:
        raise ValueError(f"dataset {dataset!r} has no images")
    return torch.cat(student_logits), torch.cat(teacher_logits)
