"""Records what the student's box branch saw and predicted during its normal training forward.

Detectron2's `StandardROIHeads` samples proposals, pools them and predicts class logits and box deltas
inside one call. Two hooks keep that call stock while exposing, for the distillation terms, the exact boxes
the box pooler received, its pooled features, and the class logits and box deltas the box predictor
produced for them (same order), so the student branch runs once per iteration.
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
    """One box-branch pass over R boxes: `boxes` per image, the box pooler's output `box_features`
    [R, C, P, P], the predictor's class logits `scores` [R, K+1] and box deltas `deltas` [R, 4K] (or [R, 4]
    when class-agnostic). The teacher returns the same record for the student's boxes."""

    boxes: list[Boxes] | None = None
    box_features: torch.Tensor | None = None
    scores: torch.Tensor | None = None
    deltas: torch.Tensor | None = None


class ROIHeadTap:
    """Hooks on `roi_heads.box_pooler` (input boxes, pooled features) and `roi_heads.box_predictor` (outputs)."""

    def __init__(self, roi_heads: torch.nn.Module):
        if not isinstance(roi_heads, StandardROIHeads) or isinstance(roi_heads, CascadeROIHeads):
            raise ValueError(
                f"distillation supports StandardROIHeads students, got {type(roi_heads).__name__}"
            )
        self._record: ROIRecord | None = None
        roi_heads.box_pooler.register_forward_hook(self._on_pool)
        roi_heads.box_predictor.register_forward_hook(self._on_predict)

    def _on_pool(self, module: torch.nn.Module, args: tuple, output: torch.Tensor) -> None:
        if self._record is not None:
            self._record.boxes = list(args[1])
            self._record.box_features = output

    def _on_predict(self, module: torch.nn.Module, args: tuple, output: tuple) -> None:
        if self._record is not None:
            self._record.scores, self._record.deltas = output[0], output[1]

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
