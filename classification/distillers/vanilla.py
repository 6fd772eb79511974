"""Plain cross-entropy training: teachers and the no-KD student baseline."""
from __future__ import annotations

from torch import Tensor

from .base import Distiller, cross_entropy, register_distiller


@register_distiller("vanilla")
class Vanilla(Distiller):
    """L = CE(student logits, labels); no teacher."""

    NEEDS_TEACHER = False

    def compute_losses(
        self, images: Tensor, targets: Tensor, progress: float, indices: Tensor | None = None
    ) -> tuple[Tensor, dict[str, Tensor]]:
        logits = self.student(images).logits
        return logits, {"loss_ce": cross_entropy(logits, targets)}
