"""Distiller base class and registry.

A distiller is an nn.Module that holds the student, the frozen teacher (when it needs one) and its own
trainable modules, and turns a batch into named losses. Distillation methods are terms of the shared layer
(`unikd.terms`), each one a distiller by itself (distillers/terms.py); a subclass decorated with
`register_distiller` is only needed for a method that is more than a sum of losses on one student update
(SLKD's jointly trained teachers). The class carries its config defaults (`CONFIG_NODE`, `default_config`).
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel
from yacs.config import CfgNode

from ..models import ModelOutput
from ..models.folding import fold_batchnorm

if TYPE_CHECKING:
    from ..engine.optim import OptimizerSet

_REGISTRY: dict[str, type["Distiller"]] = {}


def register_distiller(name: str) -> Callable[[type["Distiller"]], type["Distiller"]]:
    """Class decorator: make a Distiller subclass available as DISTILLER.NAME `name`."""

    def decorate(cls: type[Distiller]) -> type[Distiller]:
        if name in _REGISTRY:
            raise KeyError(f"distiller {name!r} is already registered")
        _REGISTRY[name] = cls
        return cls

    return decorate


def named_distillers() -> dict[str, type["Distiller"]]:
    """The distillers registered by class (vanilla, hybrid, slkd); `distillers.registered_distillers` adds one
    per registered term."""
    return dict(_REGISTRY)


def freeze(module: nn.Module) -> nn.Module:
    """Put a network in eval mode with no trainable parameters (a fixed teacher)."""
    module.eval()
    for p in module.parameters():
        p.requires_grad_(False)
    return module


def prepare_teacher(teacher: nn.Module, cfg: CfgNode) -> nn.Module:
    """The frozen teacher a distiller runs: `freeze`d and, with TRAIN.FOLD_TEACHER_BN, its BatchNorms folded into
    the convolutions before them (models/folding.py: the same outputs up to float rounding, a faster forward)."""
    teacher = freeze(teacher)
    return fold_batchnorm(teacher) if cfg.TRAIN.FOLD_TEACHER_BN else teacher


class Distiller(nn.Module):
    """Student (+ frozen teacher) training logic.

    Subclasses implement `compute_losses`; those with extra networks or update phases override
    `optimizer_param_groups` and `train_step`. The teacher is a registered submodule (so `.to()` moves it)
    but it never trains, is never in an optimizer and is left out of checkpoints.
    """

    CONFIG_NODE: str | None = None
    NEEDS_TEACHER = True
    NEEDS_INDICES = False  # whether compute_losses needs the batch's training-set indices (CRD's memory)

    def __init__(self, student: nn.Module, teacher: nn.Module | None, cfg: CfgNode, num_classes: int) -> None:
        super().__init__()
        if self.NEEDS_TEACHER and teacher is None:
            raise ValueError(f"{type(self).__name__} needs a teacher: set MODEL.TEACHER and MODEL.TEACHER_CHECKPOINT")
        self.student = student
        self.teacher = prepare_teacher(teacher, cfg) if teacher is not None and self.NEEDS_TEACHER else None
        self.cfg = cfg
        self.num_classes = num_classes
        self._parallel_losses: nn.Module | None = None  # set by `parallelize` in a distributed run

    @classmethod
    def default_config(cls) -> CfgNode:
        """Defaults of this distiller's config node (CONFIG_NODE)."""
        return CfgNode()

    @classmethod
    def from_config(
        cls,
        cfg: CfgNode,
        student: nn.Module,
        teacher: nn.Module | None,
        num_classes: int,
        family: str,
        train_labels: Tensor | None = None,
    ) -> "Distiller":
        """Build from the experiment config; `family` is the model family of the data ("cifar"/"imagenet").

        train_labels: the labels of the whole training set, for methods with a per-sample memory (CRD).
        """
        return cls(student, teacher, cfg, num_classes)

    @property
    def node(self) -> CfgNode:
        return self.cfg[self.CONFIG_NODE]

    def train(self, mode: bool = True) -> "Distiller":
        super().train(mode)
        if self.teacher is not None:
            self.teacher.eval()
        return self

    def forward(self, images: Tensor) -> Tensor:
        """Student logits (what evaluation and export use)."""
        return self.student(images).logits

    def teacher_outputs(self, images: Tensor) -> ModelOutput:
        """The frozen teacher's outputs, computed without autograd."""
        return no_grad_forward(self.teacher, images)

    def compute_losses(
        self, images: Tensor, targets: Tensor, progress: float, indices: Tensor | None = None
    ) -> tuple[Tensor, dict[str, Tensor]]:
        """(student logits, {loss name: weighted scalar}); the training loss is the sum of the values.

        progress: fractional epochs done so far, for KD warm-ups; indices: the batch's training-set positions.
        """
        raise NotImplementedError

    def parallelize(self, device_ids: list[int] | None) -> None:
        """Run `compute_losses` through one DistributedDataParallel over this distiller (the student and every
        trainable module: their gradients are averaged over the ranks in the backward pass; the frozen teacher
        has no trainable parameter, so DDP leaves it alone and each rank keeps its copy). Distillers whose update
        is more than one backward pass of `compute_losses` (their own `train_step`) must override this."""
        if type(self).train_step is not Distiller.train_step:
            raise ValueError(f"{type(self).__name__} has its own update phases and no parallelize of its own; "
                             "train it in one process")
        self._parallelize_losses(device_ids)

    def _parallelize_losses(self, device_ids: list[int] | None) -> None:
        """`compute_losses` through one DistributedDataParallel over the whole distiller."""
        # object.__setattr__: a registered submodule would make the distiller its own descendant
        object.__setattr__(self, "_parallel_losses", DistributedDataParallel(_LossesOf(self), device_ids=device_ids))

    def networks(self) -> list[nn.Module]:
        """The networks a step runs (what TRAIN.COMPILE compiles): the student and the teacher; the loss terms'
        own modules stay eager."""
        return [self.student] + ([self.teacher] if self.teacher is not None else [])

    def optimizer_param_groups(self) -> dict[str, list[nn.Parameter]]:
        """Parameters per optimizer: by default one "student" optimizer over everything trainable."""
        return {"student": [p for p in self.parameters() if p.requires_grad]}

    def train_step(
        self,
        images: Tensor,
        targets: Tensor,
        progress: float,
        optimizers: "OptimizerSet",
        autocast: Callable[[], torch.autocast],
        indices: Tensor | None = None,
    ) -> tuple[Tensor, dict[str, Tensor]]:
        """One update: losses under autocast, one backward pass, every optimizer steps. Returns detached values."""
        compute = self.compute_losses if self._parallel_losses is None else self._parallel_losses
        with autocast():
            logits, losses = compute(images, targets, progress, indices)
        optimizers.step(sum(losses.values()))
        return detached(logits, losses)

    def trainable_state_dict(self) -> dict[str, Tensor]:
        """state_dict without the teacher (it is loaded from its own checkpoint)."""
        return {k: v for k, v in self.state_dict().items() if not k.startswith("teacher.")}

    def load_trainable_state_dict(self, state: dict[str, Tensor]) -> None:
        expected = set(self.trainable_state_dict())
        missing, unexpected = expected - set(state), set(state) - expected
        if missing or unexpected:
            raise KeyError(
                f"checkpoint does not fit this distiller: missing {sorted(missing)[:5]}, "
                f"unexpected {sorted(unexpected)[:5]}"
            )
        self.load_state_dict(state, strict=False)


class _LossesOf(nn.Module):
    """A distiller's `compute_losses` as a module's forward: the call DistributedDataParallel wraps (DDP prepares
    the gradient reduction in its forward, so the losses must be computed through it)."""

    def __init__(self, distiller: Distiller) -> None:
        super().__init__()
        self.distiller = distiller

    def forward(self, images: Tensor, targets: Tensor, progress: float, indices: Tensor | None = None
                ) -> tuple[Tensor, dict[str, Tensor]]:
        return self.distiller.compute_losses(images, targets, progress, indices)


def detached(logits: Tensor, losses: dict[str, Tensor]) -> tuple[Tensor, dict[str, Tensor]]:
    """What train_step returns: values for logging, cut from the graph."""
    return logits.detach(), {k: v.detach() for k, v in losses.items()}


def cross_entropy(logits: Tensor, targets: Tensor) -> Tensor:
    """Task loss in float32 (autocast may hand over half-precision logits)."""
    return F.cross_entropy(logits.float(), targets)


def no_grad_forward(model: nn.Module, images: Tensor) -> ModelOutput:
    """A network's outputs without autograd (the frozen teacher's, or extra views of it)."""
    with torch.no_grad():
        return model(images)
