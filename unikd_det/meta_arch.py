"""`DistillRCNN`: a stock student detector trained with a frozen teacher's knowledge.

The student runs its own `forward` (GeneralizedRCNN's, or the subclass's that DISTILL.STUDENT_META_ARCHITECTURE
names); hooks record its backbone features, ROI sampling and box branch (`roi_tap`). The distillation terms
are `unikd.terms` terms, configured by `cfg.DISTILL.<NAME>`; this module only builds their `Batch` from the
recorded tensors and the teacher, computing for the teacher only what the enabled terms require (no box head
for FitNet, ReviewKD or FGFI alone). Inference (and `--eval-only`) runs the student alone; the teacher is only
built for training.
"""
from __future__ import annotations

import logging

import torch
from detectron2.config import CfgNode, configurable
from detectron2.layers import ShapeSpec
from detectron2.modeling import META_ARCH_REGISTRY, GeneralizedRCNN
from detectron2.modeling.poolers import convert_boxes_to_pooler_format
from detectron2.utils.events import get_event_storage
from torch import nn
from torchvision.ops import roi_align

from unikd.terms import Batch, FeatureSpec, RegionOutputs, TermContext, TermSet, options_from_node, registered_terms
from unikd.terms.base import (
    NEEDS_ANCHORS, NEEDS_FEATURES, NEEDS_GT_BOXES, NEEDS_LOGITS, NEEDS_REGION_OUTPUTS, NEEDS_TARGETS,
)

from .config import TASK, check_distill_values
from .roi_tap import ROIHeadTap, StudentRecord
from .teacher import FrozenTeacher, TeacherConfig, TeacherLayout, load_teacher_config, validate_teacher_config

logger = logging.getLogger(__name__)

# What this front end computes for a term (unikd.terms.base NEEDS_*).
SUPPORTED = frozenset({NEEDS_LOGITS, NEEDS_TARGETS, NEEDS_FEATURES, NEEDS_GT_BOXES, NEEDS_ANCHORS,
                       NEEDS_REGION_OUTPUTS})
# The teacher's box branch on the student's boxes is run only for these.
NEEDS_TEACHER_ROI = frozenset({NEEDS_LOGITS, NEEDS_REGION_OUTPUTS})


def build_student(cfg: CfgNode) -> GeneralizedRCNN:
    """The student is the stock model described by `MODEL.*`, under DISTILL.STUDENT_META_ARCHITECTURE."""
    student_cfg = cfg.clone()
    student_cfg.defrost()
    student_cfg.MODEL.META_ARCHITECTURE = cfg.DISTILL.STUDENT_META_ARCHITECTURE
    student = META_ARCH_REGISTRY.get(student_cfg.MODEL.META_ARCHITECTURE)(student_cfg)
    if not isinstance(student, GeneralizedRCNN):
        raise ValueError(f"DISTILL.STUDENT_META_ARCHITECTURE must build a GeneralizedRCNN, got {type(student)}")
    return student


def enabled_terms(cfg: CfgNode) -> list[str]:
    """Names of the registered terms whose `cfg.DISTILL.<NAME>.ENABLED` is true."""
    return [name for name in registered_terms() if cfg.DISTILL[name.upper()].ENABLED]


def feature_specs(shapes: dict[str, ShapeSpec]) -> list[FeatureSpec]:
    """A backbone's output levels as term feature specs, finest first (FPN outputs have no pre-activation)."""
    ordered = sorted(shapes.items(), key=lambda item: item[1].stride)
    return [FeatureSpec(name, shape.channels, shape.stride) for name, shape in ordered]


def box_feature_channels(key: str, in_features: list[str], shapes: dict[str, ShapeSpec], network: str) -> int:
    """The single channel count of the box pooler's input levels (StandardROIHeads requires one)."""
    missing = [f for f in in_features if f not in shapes]
    if missing:
        raise ValueError(f"{key} {missing} not produced by the {network} backbone (it has {sorted(shapes)})")
    channels = {shapes[f].channels for f in in_features}
    if len(channels) != 1:
        raise ValueError(f"{key} levels of the {network} have different channel counts {sorted(channels)}")
    return channels.pop()


def term_context(cfg: CfgNode, student_shapes: dict[str, ShapeSpec], teacher: TeacherLayout) -> TermContext:
    """What the terms are built from: both backbones' levels, the ROI logit width K + 1 (background = K), the
    box branch's feature channels and delta columns, and the RPN's anchor levels."""
    num_classes = cfg.MODEL.ROI_HEADS.NUM_CLASSES
    key = "MODEL.ROI_HEADS.IN_FEATURES"
    return TermContext(
        task=TASK,
        student_features=feature_specs(student_shapes),
        teacher_features=feature_specs(teacher.levels),
        num_outputs=num_classes + 1,
        background_class=num_classes,
        region_feature_channels=(
            box_feature_channels(key, cfg.MODEL.ROI_HEADS.IN_FEATURES, student_shapes, "student"),
            box_feature_channels(key, teacher.box_in_features, teacher.levels, "teacher"),
        ),
        box_delta_outputs=4 if cfg.MODEL.ROI_BOX_HEAD.CLS_AGNOSTIC_BBOX_REG else 4 * num_classes,
        anchor_features=list(cfg.MODEL.RPN.IN_FEATURES),
    )


def build_term_set(cfg: CfgNode, names: list[str], context: TermContext) -> TermSet:
    """The enabled terms with their `cfg.DISTILL.<NAME>` options, refusing one this front end cannot feed."""
    terms = registered_terms()
    options = {name: options_from_node(terms[name].Options, cfg.DISTILL[name.upper()], ignore={"ENABLED"})
               for name in names}
    term_set = TermSet.build(options, context)
    term_set.check_supported(TASK, SUPPORTED)
    return term_set


@META_ARCH_REGISTRY.register()
class DistillRCNN(nn.Module):
    """Student `GeneralizedRCNN` + distillation terms; the frozen teacher lives outside the module tree.

    Only `student.*` and the terms' own modules (UniKD's AFF/FDP, adapters) are parameters, so checkpoints, the
    optimizer and DDP never see the teacher. The teacher is built on first use in training (or by
    `build_teacher()`, which `DistillTrainer` calls before its first iteration), never in inference.
    """

    @configurable
    def __init__(self, *, student: GeneralizedRCNN, terms: TermSet, teacher_cfg: TeacherConfig | None):
        super().__init__()
        self.student = student
        self.distill_terms = terms
        self.needs = terms.requirements()
        self._teacher_cfg = teacher_cfg
        self._teacher: FrozenTeacher | None = None
        self._roi_tap = ROIHeadTap(student.roi_heads) if len(terms) else None

    @classmethod
    def from_config(cls, cfg: CfgNode) -> dict:
        check_distill_values(cfg)
        student = build_student(cfg)
        names = enabled_terms(cfg)
        if not names:
            logger.warning("No DISTILL term is enabled: DistillRCNN trains the student alone")
            return {"student": student, "terms": TermSet({}), "teacher_cfg": None}
        teacher_cfg = load_teacher_config(cfg)
        layout = validate_teacher_config(cfg, teacher_cfg)
        context = term_context(cfg, student.backbone.output_shape(), layout)
        terms = build_term_set(cfg, names, context)
        if NEEDS_ANCHORS in terms.requirements() and student.proposal_generator is None:
            raise ValueError("a DISTILL term needs the RPN's anchors, but this student has no proposal generator "
                             "(precomputed proposals)")
        return {"student": student, "terms": terms, "teacher_cfg": teacher_cfg}

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

    def forward(self, batched_inputs: list[dict]):
        if not self.training or not len(self.distill_terms):
            return self.student(batched_inputs)
        if any("instances" not in x for x in batched_inputs):
            raise ValueError("DistillRCNN trains on inputs with ground-truth 'instances' (the ROI sampling labels "
                             "the distillation terms read); an input without them has nothing to distil")
        teacher = self.build_teacher()
        with self._roi_tap.recording() as record:
            losses = self.student(batched_inputs)
        batch = self.batch(teacher, batched_inputs, record)
        # Progress in iterations counted from 1: a term's START 401 first counts at EventStorage.iter 400.
        progress = get_event_storage().iter + 1
        losses.update(self.distill_terms(batch, progress, taken=losses))
        return losses

    def batch(self, teacher: FrozenTeacher, batched_inputs: list[dict], record: StudentRecord) -> Batch:
        """The terms' view of the iteration: the recorded student tensors and what the terms need of the teacher."""
        images = record.images
        teacher_images = teacher.preprocess(batched_inputs, self.student.input_format, like=images)
        teacher_features = teacher.features(teacher_images)
        rois = convert_boxes_to_pooler_format(record.boxes)
        image_width = images.tensor.shape[-1]

        def region_pool(fused: torch.Tensor, size: int) -> torch.Tensor:
            """ROIAlign of a map aligned with the padded image; its stride is read off its width."""
            stride = round(image_width / fused.shape[-1])
            return roi_align(fused, rois.to(fused.dtype), size, 1.0 / stride, 0, aligned=True)

        batch = Batch(
            student_logits=record.scores,
            targets=torch.cat([p.gt_classes for p in record.sampled]),
            student_features=record.features,
            teacher_features=teacher_features,
            region_pool=region_pool,
            gt_boxes=[x["instances"].gt_boxes.tensor.to(self.device) for x in batched_inputs],
        )
        if self.needs & NEEDS_TEACHER_ROI:
            teacher_roi = teacher.roi_outputs(teacher_features, record.boxes)
            batch.teacher_logits = teacher_roi.scores
            batch.student_regions = RegionOutputs(record.box_features, record.scores, record.deltas)
            batch.teacher_regions = RegionOutputs(teacher_roi.box_features, teacher_roi.scores, teacher_roi.deltas)
        if NEEDS_ANCHORS in self.needs:
            generator = self.student.proposal_generator
            levels = generator.in_features
            anchors = generator.anchor_generator([record.features[f] for f in levels])
            batch.anchors = {f: boxes.tensor for f, boxes in zip(levels, anchors)}
        return batch
