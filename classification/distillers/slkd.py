"""SLKD: knowledge distillation with self-learning teachers (docs/DESIGN.md section 7).

NUM_SLT self-learning teachers (SL-Ts) with the teacher's architecture start from random weights and train
next to the student, each with its own SGD optimizer. With T the temperature and KD(a <- b) =
T^2 KL(softmax(b/T) || softmax(a/T)):

    SL-T k:  CE_WEIGHT * CE(z_k) + KD_WEIGHT * KD(z_k <- z_teacher)
    student: CE_WEIGHT * CE(z_s) + KD_WEIGHT * KD(z_s <- z_teacher)
             + PROCESS_WEIGHT * [CE_WEIGHT_CS * CE(z_s) + KD_WEIGHT_CS * KD(z_s <- sum_k w_k z_k)]

MODE parallel sums everything into one backward pass and steps every optimizer, as the public code does.
Unless DETACH_SLT_TARGET, the fused SL-T logits keep their graph in the student's term, so that term also
pulls the SL-Ts towards the student (the public code's behaviour). MODE sequential first updates each SL-T
on its own loss, then recomputes the fused logits without autograd (the SL-Ts stay in train mode, so their
BatchNorm statistics see the batch twice) and updates the student against them.

On several processes (DDP) MODE parallel runs its one backward pass through one DDP over the distiller;
MODE sequential puts the student and each SL-T in a DDP of its own, so that each phase's backward averages the
gradients of the networks it updates, each with its own optimizer.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Callable

import torch
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel
from yacs.config import CfgNode

from unikd.core import kd_loss
from unikd.core.checks import check_choice

from ..models import build_model
from .base import Distiller, cross_entropy, detached, register_distiller

if TYPE_CHECKING:
    from ..engine.optim import OptimizerSet

SLKD_MODES = ("parallel", "sequential")
SLTFactory = Callable[[], nn.Module]


@register_distiller("slkd")
class SLKD(Distiller):
    """Student + frozen teacher + NUM_SLT jointly trained self-learning teachers."""

    CONFIG_NODE = "SLKD"

    @classmethod
    def default_config(cls) -> CfgNode:
        node = CfgNode()
        node.MODE = "parallel"  # parallel | sequential
        node.NUM_SLT = 2
        node.SLT_ARCH = ""  # "": the teacher's architecture
        node.FUSION_WEIGHTS = []  # []: uniform 1 / NUM_SLT
        node.TEMPERATURE = 4.0
        node.CE_WEIGHT = 0.1
        node.KD_WEIGHT = 0.9
        node.PROCESS_WEIGHT = 1.0
        node.CE_WEIGHT_CS = 1.0
        node.KD_WEIGHT_CS = 1.0
        node.DETACH_SLT_TARGET = False
        return node

    @classmethod
    def from_config(
        cls,
        cfg: CfgNode,
        student: nn.Module,
        teacher: nn.Module | None,
        num_classes: int,
        family: str,
        train_labels: Tensor | None = None,
    ) -> "SLKD":
        arch = cfg.SLKD.SLT_ARCH or cfg.MODEL.TEACHER
        return cls(student, teacher, cfg, num_classes, lambda: build_model(arch, num_classes, family))

    def __init__(
        self,
        student: nn.Module,
        teacher: nn.Module | None,
        cfg: CfgNode,
        num_classes: int,
        slt_factory: SLTFactory | None = None,
    ) -> None:
        super().__init__(student, teacher, cfg, num_classes)
        node = self.node
        check_choice("SLKD.MODE", node.MODE, SLKD_MODES)
        if node.NUM_SLT < 1:
            raise ValueError(f"SLKD.NUM_SLT must be >= 1, got {node.NUM_SLT}")
        if slt_factory is None:
            raise ValueError("SLKD needs slt_factory, a builder of one self-learning teacher")
        self.slts = nn.ModuleList(slt_factory() for _ in range(node.NUM_SLT))
        self.register_buffer("fusion_weights", self._fusion_weights(node), persistent=False)
        # MODE sequential on several processes: the student and the SL-Ts each in its own DDP (parallelize)
        self._parallel_student: nn.Module | None = None
        self._parallel_slts: list[nn.Module] | None = None

    def parallelize(self, device_ids: list[int] | None) -> None:
        """MODE parallel: the base's one DDP over `compute_losses`. Sequential: a DDP per network (module
        docstring); the wrappers are kept outside the module tree, so the checkpoint's keys do not change."""
        if self.node.MODE == "parallel":
            self._parallelize_losses(device_ids)
            return
        object.__setattr__(self, "_parallel_student", DistributedDataParallel(self.student, device_ids=device_ids))
        self._parallel_slts = [DistributedDataParallel(slt, device_ids=device_ids) for slt in self.slts]

    @staticmethod
    def _fusion_weights(node: CfgNode) -> Tensor:
        weights = list(node.FUSION_WEIGHTS) or [1.0 / node.NUM_SLT] * node.NUM_SLT
        if len(weights) != node.NUM_SLT:
            raise ValueError(f"SLKD.FUSION_WEIGHTS has {len(weights)} values for NUM_SLT {node.NUM_SLT}")
        if abs(sum(weights) - 1.0) > 1e-6:
            raise ValueError(f"SLKD.FUSION_WEIGHTS must sum to 1, got {weights}")
        return torch.tensor(weights, dtype=torch.float32)

    def networks(self) -> list[nn.Module]:
        return super().networks() + list(self.slts)

    def optimizer_param_groups(self) -> dict[str, list[nn.Parameter]]:
        groups = {"student": list(self.student.parameters())}
        for k, slt in enumerate(self.slts, start=1):
            groups[f"slt{k}"] = list(slt.parameters())
        return groups

    def fuse(self, slt_logits: list[Tensor]) -> Tensor:
        """sum_k w_k z_k, the fused SL-T logits."""
        return sum(w * z for w, z in zip(self.fusion_weights, slt_logits))

    def _teacher_terms(self, logits: Tensor, logits_t: Tensor, targets: Tensor) -> Tensor:
        node = self.node
        return node.CE_WEIGHT * cross_entropy(logits, targets) + node.KD_WEIGHT * kd_loss(
            logits, logits_t, node.TEMPERATURE
        )

    def _slt_losses(self, images: Tensor, logits_t: Tensor, targets: Tensor, slts: list[nn.Module] | None = None
                    ) -> tuple[list[Tensor], Tensor]:
        """Each SL-T's logits and the summed SL-T loss (CE + KD from the teacher); `slts`: the SL-Ts to run (by
        default the modules themselves)."""
        slt_logits = [slt(images).logits for slt in (self.slts if slts is None else slts)]
        return slt_logits, sum(self._teacher_terms(z, logits_t, targets) for z in slt_logits)

    def _student_losses(
        self, images: Tensor, logits_t: Tensor, fused: Tensor, targets: Tensor, student: nn.Module | None = None
    ) -> tuple[Tensor, dict[str, Tensor]]:
        node = self.node
        logits = (self.student if student is None else student)(images).logits
        ce = cross_entropy(logits, targets)
        from_slts = node.CE_WEIGHT_CS * ce + node.KD_WEIGHT_CS * kd_loss(logits, fused, node.TEMPERATURE)
        return logits, {
            "loss_ce": node.CE_WEIGHT * ce,
            "loss_kd": node.KD_WEIGHT * kd_loss(logits, logits_t, node.TEMPERATURE),
            "loss_slt_student": node.PROCESS_WEIGHT * from_slts,
        }

    def compute_losses(
        self, images: Tensor, targets: Tensor, progress: float, indices: Tensor | None = None
    ) -> tuple[Tensor, dict[str, Tensor]]:
        """Parallel mode: every term of the student and the SL-Ts in one dict."""
        logits_t = self.teacher_outputs(images).logits
        slt_logits, slt_loss = self._slt_losses(images, logits_t, targets)
        fused = self.fuse(slt_logits)
        if self.node.DETACH_SLT_TARGET:
            fused = fused.detach()
        logits, losses = self._student_losses(images, logits_t, fused, targets)
        losses["loss_slt"] = slt_loss
        return logits, losses

    def train_step(
        self,
        images: Tensor,
        targets: Tensor,
        progress: float,
        optimizers: "OptimizerSet",
        autocast: Callable[[], torch.autocast],
        indices: Tensor | None = None,
    ) -> tuple[Tensor, dict[str, Tensor]]:
        if self.node.MODE == "parallel":
            return super().train_step(images, targets, progress, optimizers, autocast, indices)
        with autocast():
            logits_t = self.teacher_outputs(images).logits
            _, slt_loss = self._slt_losses(images, logits_t, targets, self._parallel_slts)
        optimizers.step(slt_loss, [f"slt{k}" for k in range(1, len(self.slts) + 1)])
        with autocast():
            with torch.no_grad():
                fused = self.fuse([slt(images).logits for slt in self.slts])
            logits, losses = self._student_losses(images, logits_t, fused, targets, self._parallel_student)
        optimizers.step(sum(losses.values()), ["student"])
        losses["loss_slt"] = slt_loss
        return detached(logits, losses)
