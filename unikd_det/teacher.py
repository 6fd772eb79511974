"""The frozen teacher: its own config, its own checkpointer, kept outside the student's module tree.

The teacher is a plain Python object (not an `nn.Module` attribute of the wrapper), so it never
appears in `state_dict`, the optimizer or DDP, and `model.train()` cannot switch it out of eval.
"""
from __future__ import annotations

import logging
import os
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import torch
from detectron2 import model_zoo
from detectron2.config import CfgNode, get_cfg
from detectron2.layers import ShapeSpec
from detectron2.modeling import META_ARCH_REGISTRY, GeneralizedRCNN, build_backbone
from detectron2.modeling.roi_heads import StandardROIHeads
from detectron2.structures import Boxes, ImageList

from .checkpoint import SafeDetectionCheckpointer
from .config import add_distill_config, merge_config_file
from .roi_tap import ROIRecord

logger = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parent.parent
RGB_BGR = {"RGB", "BGR"}
_random_weights_allowed = False


@contextmanager
def random_teacher_weights_for_tests() -> Iterator[None]:
    """Test-only switch: inside the block, a teacher whose DISTILL.TEACHER.WEIGHTS is not a local file
    (absent, or a URL that would be downloaded) keeps its random initialisation, with a warning, so every
    shipped config can run a CPU step offline. Never use it to train: a random teacher teaches noise."""
    global _random_weights_allowed
    previous, _random_weights_allowed = _random_weights_allowed, True
    try:
        yield
    finally:
        _random_weights_allowed = previous


def resolve_config_path(name: str) -> str:
    """Find a teacher config: an existing path (as given or under the repository root), else a
    Detectron2 model-zoo name. Raises FileNotFoundError naming every place tried."""
    if not name:
        raise ValueError("DISTILL.TEACHER.CONFIG is empty: name the teacher's Detectron2 config file")
    for candidate in (Path(name), REPO_ROOT / name):
        if candidate.is_file():
            return str(candidate)
    try:
        return model_zoo.get_config_file(name)
    except RuntimeError:
        raise FileNotFoundError(
            f"teacher config {name!r} not found: not a file (tried {Path(name).resolve()} and "
            f"{REPO_ROOT / name}) and not a Detectron2 model-zoo config name"
        ) from None


def load_teacher_config(cfg: CfgNode) -> CfgNode:
    """Build the teacher's own config from `cfg.DISTILL.TEACHER` (CONFIG, then OPTS)."""
    teacher_cfg = get_cfg()
    add_distill_config(teacher_cfg)  # lets a teacher YAML that was itself a distillation run merge
    merge_config_file(teacher_cfg, resolve_config_path(cfg.DISTILL.TEACHER.CONFIG))
    teacher_cfg.merge_from_list(list(cfg.DISTILL.TEACHER.OPTS))
    teacher_cfg.MODEL.WEIGHTS = cfg.DISTILL.TEACHER.WEIGHTS
    teacher_cfg.MODEL.DEVICE = cfg.MODEL.DEVICE
    teacher_cfg.MODEL.MASK_ON = False
    teacher_cfg.MODEL.KEYPOINT_ON = False
    teacher_cfg.freeze()
    return teacher_cfg


def validate_teacher_config(cfg: CfgNode, teacher_cfg: CfgNode) -> None:
    """Fail fast on a teacher that cannot be distilled from: wrong architecture, class-count
    mismatch, or an input format that cannot be converted from the student's."""
    arch = META_ARCH_REGISTRY.get(teacher_cfg.MODEL.META_ARCHITECTURE)
    if not (isinstance(arch, type) and issubclass(arch, GeneralizedRCNN)):
        raise ValueError(
            f"teacher META_ARCHITECTURE {teacher_cfg.MODEL.META_ARCHITECTURE!r} is not a "
            "GeneralizedRCNN: the teacher must be a trained two-stage detector"
        )
    student_classes = cfg.MODEL.ROI_HEADS.NUM_CLASSES
    teacher_classes = teacher_cfg.MODEL.ROI_HEADS.NUM_CLASSES
    if student_classes != teacher_classes:
        raise ValueError(
            f"class-count mismatch: student MODEL.ROI_HEADS.NUM_CLASSES = {student_classes}, "
            f"teacher ({cfg.DISTILL.TEACHER.CONFIG}) = {teacher_classes}; the teacher must be "
            "trained on the student's label space"
        )
    check_convertible(cfg.INPUT.FORMAT, teacher_cfg.INPUT.FORMAT)


def teacher_output_shapes(teacher_cfg: CfgNode) -> dict[str, ShapeSpec]:
    """Output shapes of the teacher backbone, read off a parameter-free (meta-device) build."""
    with torch.device("meta"):
        return build_backbone(teacher_cfg).output_shape()


def check_weights_file(weights: str) -> None:
    """Raise a clear error for a missing local teacher checkpoint (URLs are left to the loader)."""
    if not weights:
        raise ValueError("DISTILL.TEACHER.WEIGHTS is empty: distillation needs a trained teacher")
    if "://" not in weights and not os.path.isfile(weights):
        raise FileNotFoundError(f"teacher weights file not found: {weights!r} (DISTILL.TEACHER.WEIGHTS)")


def check_convertible(source: str, target: str) -> None:
    """Raise unless images in `source` format can be converted to `target` (equal, or RGB <-> BGR)."""
    if source != target and not {source, target} <= RGB_BGR:
        raise ValueError(f"cannot convert image format {source} (student INPUT.FORMAT) to {target} (teacher's)")


def convert_format(image: torch.Tensor, source: str, target: str) -> torch.Tensor:
    """Convert a CHW image between RGB and BGR channel orders (identity for equal formats)."""
    check_convertible(source, target)
    return image if source == target else image.flip(0)


class FrozenTeacher:
    """A trained GeneralizedRCNN run frozen: eval mode, no gradients, under `torch.no_grad`."""

    def __init__(self, model: GeneralizedRCNN, input_format: str):
        if not isinstance(model.roi_heads, StandardROIHeads) or isinstance(
            model.roi_heads.box_predictor, torch.nn.ModuleList
        ):
            raise ValueError("the teacher needs a single-stage StandardROIHeads box branch")
        self.model = model.eval().requires_grad_(False)
        self.input_format = input_format

    @classmethod
    def from_config(cls, teacher_cfg: CfgNode) -> "FrozenTeacher":
        """Build the teacher from its config and load `MODEL.WEIGHTS` with its own checkpointer, strictly:
        weights that leave a key missing, unexpected or of another shape are refused (ValueError naming them)."""
        weights = teacher_cfg.MODEL.WEIGHTS
        random_weights = _random_weights_allowed and not os.path.isfile(weights)
        if not random_weights:
            check_weights_file(weights)
        model = META_ARCH_REGISTRY.get(teacher_cfg.MODEL.META_ARCHITECTURE)(teacher_cfg)
        model.to(torch.device(teacher_cfg.MODEL.DEVICE))
        if random_weights:
            logger.warning("TEST ONLY: teacher weights %r not loaded, the teacher is random", weights)
        else:
            SafeDetectionCheckpointer(model, strict=True).load(weights)
            logger.info("Loaded distillation teacher from %s", weights)
        return cls(model, teacher_cfg.INPUT.FORMAT)

    @property
    def device(self) -> torch.device:
        return self.model.device

    def to(self, device: torch.device) -> "FrozenTeacher":
        self.model.to(device)
        return self

    def preprocess(self, batched_inputs: list[dict], student_format: str, like: ImageList) -> ImageList:
        """Teacher input: the raw image converted to the teacher's format first, then normalised with
        the teacher's mean/std, padded exactly like the student's batch so FPN levels align."""
        images = [
            convert_format(x["image"].to(self.device), student_format, self.input_format) for x in batched_inputs
        ]
        images = [(x - self.model.pixel_mean) / self.model.pixel_std for x in images]
        batch = images[0].new_zeros((len(images), images[0].shape[0], *like.tensor.shape[-2:]))
        for padded, image in zip(batch, images):
            padded[:, : image.shape[-2], : image.shape[-1]].copy_(image)
        return ImageList(batch, list(like.image_sizes))

    @torch.no_grad()
    def features(self, images: ImageList) -> dict[str, torch.Tensor]:
        return self.model.backbone(images.tensor)

    @torch.no_grad()
    def roi_outputs(self, features: dict[str, torch.Tensor], boxes: list[Boxes]) -> ROIRecord:
        """The teacher's box pooler, head and predictor on the given (student-sampled) boxes: its pooled
        box features, class logits [R, K+1] and box deltas, in the boxes' order."""
        heads = self.model.roi_heads
        pooled = heads.box_pooler([features[f] for f in heads.box_in_features], boxes)
        scores, deltas = heads.box_predictor(heads.box_head(pooled))
        return ROIRecord(boxes=list(boxes), box_features=pooled, scores=scores, deltas=deltas)

    def roi_logits(self, features: dict[str, torch.Tensor], boxes: list[Boxes]) -> torch.Tensor:
        """Class logits [R, K+1] of the teacher's box head on the given (student-sampled) boxes."""
        return self.roi_outputs(features, boxes).scores
