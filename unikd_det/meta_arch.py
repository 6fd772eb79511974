"""`DistillRCNN`: a stock student detector trained with a frozen teacher's knowledge.

Inference (and `--eval-only`) runs the student alone; the teacher is only built for training.
"""
from __future__ import annotations

import logging

import torch
from detectron2.config import CfgNode, configurable
from detectron2.layers import ShapeSpec
from detectron2.modeling import META_ARCH_REGISTRY, GeneralizedRCNN
from detectron2.utils.events import get_event_storage
from torch import nn

from .config import check_distill_values
from .roi_tap import ROIHeadTap
from .teacher import FrozenTeacher, load_teacher_config, teacher_output_shapes, validate_teacher_config
from .terms import DistillContext, build_distill_terms, enabled_term_classes

logger = logging.getLogger(__name__)


def build_student(cfg: CfgNode) -> GeneralizedRCNN:
    """The student is the stock model described by `MODEL.*`, under DISTILL.STUDENT_META_ARCHITECTURE."""
    student_cfg = cfg.clone()
    student_cfg.defrost()
    student_cfg.MODEL.META_ARCHITECTURE = cfg.DISTILL.STUDENT_META_ARCHITECTURE
    student = META_ARCH_REGISTRY.get(student_cfg.MODEL.META_ARCHITECTURE)(student_cfg)
    if not isinstance(student, GeneralizedRCNN):
        raise ValueError(f"DISTILL.STUDENT_META_ARCHITECTURE must build a GeneralizedRCNN, got {type(student)}")
    return student


def warn_if_logit_loss_counted_twice(cfg: CfgNode) -> None:
    """UniKD's own logit term (LOGIT_LOSS kl | dkd, weighted by BETA) already distils the ROI logits; adding
    DISTILL.ROI or DISTILL.MLKD distils them a second time. Allowed (a hybrid may want it), but said once."""
    others = [node for node in ("ROI", "MLKD") if cfg.DISTILL[node].ENABLED]
    if cfg.DISTILL.UNIKD.ENABLED and cfg.DISTILL.UNIKD.LOGIT_LOSS != "none" and others:
        logger.warning(
            "DISTILL.UNIKD.LOGIT_LOSS %s and DISTILL.%s both distil the ROI logits, so the logit KD is counted "
            "twice; set DISTILL.UNIKD.LOGIT_LOSS none to keep only the %s term",
            cfg.DISTILL.UNIKD.LOGIT_LOSS, " and DISTILL.".join(others), "/".join(others),
        )


def add_term_losses(losses: dict[str, torch.Tensor], term: str, term_losses: dict[str, torch.Tensor]) -> None:
    """Add one term's losses to `losses`, in place. Each key must name its term (`term` is one of its
    `_`-separated words, as in `loss_kd_roi`) and be new: a clash with the detector's or another term's key
    would silently drop one loss from the sum, so it is refused."""
    for name, value in term_losses.items():
        if name in losses:
            raise ValueError(f"distillation term {term!r} returned loss {name!r}, which another loss already uses")
        if not name.startswith("loss_") or term not in name.split("_"):
            raise ValueError(f"distillation term {term!r} returned loss {name!r}: its keys must be loss_*_{term}_*")
        losses[name] = value


@META_ARCH_REGISTRY.register()
class DistillRCNN(nn.Module):
    """Student `GeneralizedRCNN` + distillation terms; the frozen teacher lives outside the module tree.

    Only `student.*` and the terms' own modules (UniKD's AFF/FDP) are parameters, so checkpoints, the
    optimizer and DDP never see the teacher. The teacher is built on first use in training (or by
    `build_teacher()`, which `DistillTrainer` calls before its first iteration), never in inference.
    """

    @configurable
    def __init__(
        self,
        *,
        student: GeneralizedRCNN,
        terms: nn.ModuleDict,
        teacher_cfg: CfgNode | None,
        warmup_iters: int = 0,
    ):
        super().__init__()
        self.student = student
        self.distill_terms = terms
        self.warmup_iters = warmup_iters
        self._teacher_cfg = teacher_cfg
        self._teacher: FrozenTeacher | None = None
        self._roi_tap = ROIHeadTap(student.roi_heads) if len(terms) else None

    @classmethod
    def from_config(cls, cfg: CfgNode) -> dict:
        check_distill_values(cfg)
        student = build_student(cfg)
        if not enabled_term_classes(cfg):
            logger.warning("No DISTILL term is enabled: DistillRCNN trains the student alone")
            return {"student": student, "terms": nn.ModuleDict(), "teacher_cfg": None}
        warn_if_logit_loss_counted_twice(cfg)
        teacher_cfg = load_teacher_config(cfg)
        validate_teacher_config(cfg, teacher_cfg)
        student_shapes: dict[str, ShapeSpec] = student.backbone.output_shape()
        terms = build_distill_terms(cfg, student_shapes, teacher_output_shapes(teacher_cfg))
        return {
            "student": student,
            "terms": terms,
            "teacher_cfg": teacher_cfg,
            "warmup_iters": cfg.DISTILL.WARMUP_ITERS,
        }

    @property
    def device(self) -> torch.device:
        return self.student.device

    @property
    def teacher(self) -> FrozenTeacher | None:
        """The frozen teacher if it has been built (None in inference-only use)."""
        return self._teacher

    def build_teacher(self) -> FrozenTeacher | None:
        """Build and load the teacher now (idempotent); raises for a missing weights file."""
        if self._teacher is None and self._teacher_cfg is not None:
            self._teacher = FrozenTeacher.from_config(self._teacher_cfg).to(self.device)
        elif self._teacher is not None and self._teacher.device != self.device:
            self._teacher.to(self.device)
        return self._teacher

    def warmup_factor(self) -> float:
        """Linear ramp of the distillation weights over DISTILL.WARMUP_ITERS iterations."""
        if self.warmup_iters <= 0:
            return 1.0
        return min(1.0, (get_event_storage().iter + 1) / self.warmup_iters)

    def forward(self, batched_inputs: list[dict]):
        if not self.training or not len(self.distill_terms):
            return self.student(batched_inputs)
        teacher = self.build_teacher()
        student = self.student

        images = student.preprocess_image(batched_inputs)
        gt_instances = [x["instances"].to(self.device) for x in batched_inputs]
        features = student.backbone(images.tensor)
        proposals, proposal_losses = student.proposal_generator(images, features, gt_instances)
        with self._roi_tap.recording() as roi:
            sampled, detector_losses = student.roi_heads(images, features, proposals, gt_instances)

        teacher_images = teacher.preprocess(batched_inputs, student.input_format, like=images)
        teacher_features = teacher.features(teacher_images)
        teacher_roi = teacher.roi_outputs(teacher_features, roi.boxes)
        ctx = DistillContext(
            student_features=features,
            teacher_features=teacher_features,
            boxes=roi.boxes,
            student_logits=roi.scores,
            teacher_logits=teacher_roi.scores,
            gt_classes=torch.cat([p.gt_classes for p in sampled]),
            image_shape=tuple(images.tensor.shape[-2:]),
            gt_boxes=[x.gt_boxes for x in gt_instances],
            student_roi=roi,
            teacher_roi=teacher_roi,
        )
        factor = self.warmup_factor()
        iteration = get_event_storage().iter
        losses = {**detector_losses, **proposal_losses}
        for name, term in self.distill_terms.items():
            # Before its start iteration a term is still computed, times 0, so every parameter keeps a gradient.
            term_factor = factor if iteration >= term.start_iter else 0.0
            add_term_losses(losses, name, {key: term_factor * value for key, value in term(ctx).items()})

        if student.vis_period > 0 and get_event_storage().iter % student.vis_period == 0:
            student.visualize_training(batched_inputs, proposals)
        return losses
