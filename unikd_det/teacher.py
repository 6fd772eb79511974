"""The frozen teacher: its own config, its own checkpointer, kept outside the student's module tree.

The teacher is a plain Python object (not an `nn.Module` attribute of the wrapper), so it never
appears in `state_dict`, the optimizer or DDP, and `model.train()` cannot switch it out of eval.

Its config is a yacs YAML file (a `CfgNode`) or a LazyConfig `.py` file (an omegaconf `DictConfig`, whose `model`
is built with `instantiate`). Either way the teacher is built as its config describes it, a mask or keypoint branch
included, so that its weights load strictly; only its backbone and box branch ever run.
"""
from __future__ import annotations

import logging
import os
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import torch
from detectron2 import model_zoo
from detectron2.config import CfgNode, LazyConfig, get_cfg, instantiate
from detectron2.layers import ShapeSpec
from detectron2.modeling import META_ARCH_REGISTRY, GeneralizedRCNN
from detectron2.modeling.roi_heads import ROIHeads, StandardROIHeads
from detectron2.structures import Boxes, ImageList
from omegaconf import DictConfig, OmegaConf

from .checkpoint import SafeDetectionCheckpointer
from .config import add_distill_config, merge_config_file
from .roi_tap import ROIRecord

logger = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parent.parent
RGB_BGR = {"RGB", "BGR"}
# A teacher config with this suffix is a LazyConfig file: Python, run when it is loaded.
LAZY_CONFIG_SUFFIX = ".py"
# The teacher's own config: yacs for a YAML file, omegaconf for a LazyConfig file.
TeacherConfig = CfgNode | DictConfig
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


@dataclass(frozen=True)
class TeacherLayout:
    """What the distillation terms are built against: the teacher backbone's output levels and the levels its
    box branch pools from."""

    levels: dict[str, ShapeSpec]
    box_in_features: list[str]


def resolve_config_path(name: str) -> str:
    """Find a teacher config: an existing path (as given or under the repository root), else a
    Detectron2 model-zoo name, that is a file shipped inside the installed detectron2 package. A URL is
    refused (ValueError): a LazyConfig file runs as code, so no config is ever fetched. Raises
    FileNotFoundError naming every place tried."""
    if not name:
        raise ValueError("DISTILL.TEACHER.CONFIG is empty: name the teacher's Detectron2 config file")
    if "://" in name:
        raise ValueError(
            f"DISTILL.TEACHER.CONFIG {name!r} is a URL: name a local file or a Detectron2 model-zoo config "
            "(a LazyConfig .py file runs as code when it is loaded, so no config is downloaded)"
        )
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


def load_teacher_config(cfg: CfgNode) -> TeacherConfig:
    """Build the teacher's own config from `cfg.DISTILL.TEACHER` (CONFIG, then OPTS), with its WEIGHTS and the
    student's device: a yacs CfgNode for a YAML file, the LazyConfig's DictConfig for a `.py` file."""
    path = resolve_config_path(cfg.DISTILL.TEACHER.CONFIG)
    if path.endswith(LAZY_CONFIG_SUFFIX):
        return load_lazy_teacher_config(cfg, path)
    teacher_cfg = get_cfg()
    add_distill_config(teacher_cfg)  # lets a teacher YAML that was itself a distillation run merge
    merge_config_file(teacher_cfg, path)
    teacher_cfg.merge_from_list(list(cfg.DISTILL.TEACHER.OPTS))
    teacher_cfg.MODEL.WEIGHTS = cfg.DISTILL.TEACHER.WEIGHTS
    teacher_cfg.MODEL.DEVICE = cfg.MODEL.DEVICE
    teacher_cfg.freeze()
    return teacher_cfg


def load_lazy_teacher_config(cfg: CfgNode, path: str) -> DictConfig:
    """The LazyConfig file `path` (Python: loading it runs it) with DISTILL.TEACHER.OPTS applied as Detectron2's
    `key=value` overrides, read-only. The weights and device go where Detectron2's LazyConfig training keeps
    them, `train.init_checkpoint` and `train.device`."""
    overrides = [str(opt) for opt in cfg.DISTILL.TEACHER.OPTS]
    not_overrides = [opt for opt in overrides if "=" not in opt]
    if not_overrides:
        raise ValueError(
            f"DISTILL.TEACHER.OPTS of a LazyConfig teacher ({path}) are key=value overrides such as "
            f"'model.roi_heads.num_classes=10', got {not_overrides}"
        )
    teacher_cfg = LazyConfig.load(path)
    if "model" not in teacher_cfg:
        raise KeyError(f"the LazyConfig teacher {path} defines no `model`, the detector to instantiate")
    LazyConfig.apply_overrides(teacher_cfg, overrides)
    OmegaConf.update(teacher_cfg, "train.init_checkpoint", cfg.DISTILL.TEACHER.WEIGHTS, merge=True)
    OmegaConf.update(teacher_cfg, "train.device", cfg.MODEL.DEVICE, merge=True)
    OmegaConf.set_readonly(teacher_cfg, True)
    return teacher_cfg


def teacher_weights_and_device(teacher_cfg: TeacherConfig) -> tuple[str, str]:
    """The teacher's weights file and device, as `load_teacher_config` set them."""
    if isinstance(teacher_cfg, CfgNode):
        return teacher_cfg.MODEL.WEIGHTS, teacher_cfg.MODEL.DEVICE
    return teacher_cfg.train.init_checkpoint, teacher_cfg.train.device


def require_rcnn(kind: object, what: str) -> None:
    """Raise unless `kind` is GeneralizedRCNN or a subclass (`what` names it in the error)."""
    if not (isinstance(kind, type) and issubclass(kind, GeneralizedRCNN)):
        raise ValueError(f"teacher {what} is not a GeneralizedRCNN: the teacher must be a trained two-stage detector")


def build_teacher_model(teacher_cfg: TeacherConfig) -> GeneralizedRCNN:
    """The teacher network its config describes, randomly initialised, on the current default device. A yacs
    META_ARCHITECTURE is checked before it is built (so no other wrapper, such as a DistillRCNN, is built)."""
    if isinstance(teacher_cfg, CfgNode):
        arch = META_ARCH_REGISTRY.get(teacher_cfg.MODEL.META_ARCHITECTURE)
        require_rcnn(arch, f"META_ARCHITECTURE {teacher_cfg.MODEL.META_ARCHITECTURE!r}")
        return arch(teacher_cfg)
    model = instantiate(teacher_cfg.model)
    require_rcnn(type(model), f"model (a {type(model).__name__})")
    return model


def meta_teacher(teacher_cfg: TeacherConfig) -> GeneralizedRCNN:
    """The teacher built on the meta device: its structure and shapes, without memory or weights."""
    with torch.device("meta"):
        return build_teacher_model(teacher_cfg)


def check_box_branch(roi_heads: ROIHeads) -> None:
    """Raise unless the ROI heads are StandardROIHeads with one box predictor (not a cascade)."""
    if not isinstance(roi_heads, StandardROIHeads) or isinstance(roi_heads.box_predictor, torch.nn.ModuleList):
        raise ValueError(
            f"the teacher needs a single-stage StandardROIHeads box branch, got {type(roi_heads).__name__}"
        )


def check_teacher_model(cfg: CfgNode, model: GeneralizedRCNN) -> None:
    """Raise ValueError for a teacher model the student `cfg` cannot distil from: no single-stage box branch, another
    class count, an input format that cannot be converted from the student's, or a normalisation of another
    number of channels than the student's images."""
    check_box_branch(model.roi_heads)
    student_classes, teacher_classes = cfg.MODEL.ROI_HEADS.NUM_CLASSES, model.roi_heads.num_classes
    if student_classes != teacher_classes:
        raise ValueError(
            f"class-count mismatch: student MODEL.ROI_HEADS.NUM_CLASSES = {student_classes}, "
            f"teacher ({cfg.DISTILL.TEACHER.CONFIG}) = {teacher_classes}; the teacher must be "
            "trained on the student's label space"
        )
    check_convertible(cfg.INPUT.FORMAT, model.input_format)
    channels = len(cfg.MODEL.PIXEL_MEAN)
    if model.pixel_mean.numel() != channels or model.pixel_std.numel() != channels:
        raise ValueError(
            f"the teacher ({cfg.DISTILL.TEACHER.CONFIG}) normalises {model.pixel_mean.numel()} mean and "
            f"{model.pixel_std.numel()} std channel(s), the student's images have {channels} (MODEL.PIXEL_MEAN)"
        )


def validate_teacher_config(cfg: CfgNode, teacher_cfg: TeacherConfig) -> TeacherLayout:
    """Fail fast on a teacher that cannot be distilled from (`check_teacher_model` on a meta-device build, after
    the architecture check of `build_teacher_model`); return its layout."""
    model = meta_teacher(teacher_cfg)
    check_teacher_model(cfg, model)
    return TeacherLayout(model.backbone.output_shape(), list(model.roi_heads.box_in_features))


def teacher_output_shapes(teacher_cfg: TeacherConfig) -> dict[str, ShapeSpec]:
    """Output shapes of the teacher backbone, read off a parameter-free (meta-device) build."""
    return meta_teacher(teacher_cfg).backbone.output_shape()


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
        check_box_branch(model.roi_heads)
        self.model = model.eval().requires_grad_(False)
        self.input_format = input_format

    @classmethod
    def from_config(cls, teacher_cfg: TeacherConfig) -> "FrozenTeacher":
        """Build the teacher from its config (yacs or LazyConfig) and load its weights with its own checkpointer,
        weights-only and strictly: weights that leave a key missing, unexpected or of another shape are refused
        (ValueError naming them)."""
        weights, device = teacher_weights_and_device(teacher_cfg)
        random_weights = _random_weights_allowed and not os.path.isfile(weights)
        if not random_weights:
            check_weights_file(weights)
        model = build_teacher_model(teacher_cfg).to(torch.device(device))
        if random_weights:
            logger.warning("TEST ONLY: teacher weights %r not loaded, the teacher is random", weights)
        else:
            SafeDetectionCheckpointer(model, strict=True).load(weights)
            logger.info("Loaded distillation teacher from %s", weights)
        return cls(model, model.input_format)

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
