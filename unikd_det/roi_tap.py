"""Records what the student's box branch saw and predicted during its normal training forward.

Detectron2's `StandardROIHeads` samples proposals, pools them and predicts class logits inside one
call. Two hooks keep that call stock while exposing, for the distillation terms, the exact boxes the
box pooler received and the class logits the box predictor produced for them (same order), so the
student branch runs once per iteration.
"""
from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterator

import torch
from detectron2.modeling.roi_heads import CascadeROIHeads, StandardROIHeads
from detectron2.structures import Boxes


@dataclass
class ROIRecord:
    boxes: list[Boxes] | None = None
    scores: torch.Tensor | None = None


class ROIHeadTap:
    """Hooks on `roi_heads.box_pooler` (input boxes) and `roi_heads.box_predictor` (class logits)."""

    def __init__(self, roi_heads: torch.nn.Module):
        if not isinstance(roi_heads, StandardROIHeads) or isinstance(roi_heads, CascadeROIHeads):
            raise ValueError(
                f"distillation supports StandardROIHeads students, got {type(roi_heads).__name__}"
            )
        self._record: ROIRecord | None = None
        roi_heads.box_pooler.register_forward_pre_hook(self._on_pool)
        roi_heads.box_predictor.register_forward_hook(self._on_predict)

    def _on_pool(self, module: torch.nn.Module, args: tuple) -> None:
        if self._record is not None:
            self._record.boxes = list(args[1])

    def _on_predict(self, module: torch.nn.Module, args: tuple, output: tuple) -> None:
        if self._record is not None:
            self._record.scores = output[0]

    @contextmanager
    def recording(self) -> Iterator[ROIRecord]:
        """Capture the box branch of the ROI-head call made inside the `with` block."""
        self._record = record = ROIRecord()
        try:
            yield record
        finally:
            self._record = None
        if record.boxes is None or record.scores is None:
            raise RuntimeError("the student's ROI heads did not run their box branch")
