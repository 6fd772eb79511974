"""Records what the student's ROI heads saw and predicted during the stock training forward.

`GeneralizedRCNN.forward` (or a subclass's) stays untouched: hooks on the student's `roi_heads` record its
inputs (the padded ImageList, the backbone's features, the ground-truth instances) and its sampled proposals,
and hooks on `box_pooler` / `box_predictor` the exact boxes the box pooler received, its pooled features and
the class logits and box deltas the predictor produced for them (same order). So the student runs once per
iteration and the distillation terms read the same tensors the detector's own losses were computed from.
"""
from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Iterator

import torch
from detectron2.modeling.roi_heads import CascadeROIHeads, StandardROIHeads
from detectron2.structures import Boxes, ImageList, Instances


@dataclass
class ROIRecord:
    """One box-branch pass over R boxes: `boxes` per image, the box pooler's output `box_features`
    [R, C, P, P], the predictor's class logits `scores` [R, K+1] and box deltas `deltas` [R, 4K] (or [R, 4]
    when class-agnostic). The teacher returns the same record for the student's boxes."""

    boxes: list[Boxes] | None = None
    box_features: torch.Tensor | None = None
    scores: torch.Tensor | None = None
    deltas: torch.Tensor | None = None


@dataclass
class StudentRecord(ROIRecord):
    """The student's ROI-heads call: its inputs and its sampled proposals, besides the box branch."""

    images: ImageList | None = None
    features: dict[str, torch.Tensor] = field(default_factory=dict)
    sampled: list[Instances] | None = None


class ROIHeadTap:
    """Hooks on `roi_heads` (inputs, sampled proposals), `roi_heads.box_pooler` (input boxes, pooled features)
    and `roi_heads.box_predictor` (outputs)."""

    def __init__(self, roi_heads: torch.nn.Module):
        if not isinstance(roi_heads, StandardROIHeads) or isinstance(roi_heads, CascadeROIHeads):
            raise ValueError(
                f"distillation supports StandardROIHeads students, got {type(roi_heads).__name__}"
            )
        self._record: StudentRecord | None = None
        roi_heads.register_forward_pre_hook(self._on_heads_input)
        roi_heads.register_forward_hook(self._on_heads_output)
        roi_heads.box_pooler.register_forward_hook(self._on_pool)
        roi_heads.box_predictor.register_forward_hook(self._on_predict)

    def _on_heads_input(self, module: torch.nn.Module, args: tuple) -> None:
        if self._record is not None:
            self._record.images, self._record.features = args[0], args[1]

    def _on_heads_output(self, module: torch.nn.Module, args: tuple, output: tuple) -> None:
        if self._record is not None:
            self._record.sampled = output[0]

    def _on_pool(self, module: torch.nn.Module, args: tuple, output: torch.Tensor) -> None:
        if self._record is not None:
            self._record.boxes = list(args[1])
            self._record.box_features = output

    def _on_predict(self, module: torch.nn.Module, args: tuple, output: tuple) -> None:
        if self._record is not None:
            self._record.scores, self._record.deltas = output[0], output[1]

    @contextmanager
    def recording(self) -> Iterator[StudentRecord]:
        """Capture the ROI-heads call made inside the `with` block."""
        self._record = record = StudentRecord()
        try:
            yield record
        finally:
            self._record = None
        if record.boxes is None or record.scores is None or record.sampled is None:
            raise RuntimeError("the student's ROI heads did not run their box branch")
