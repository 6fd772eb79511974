"""Top-k accuracy accumulated on the device (no host sync per batch) and the per-epoch metrics files."""
from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from unikd.core.run_dir import atomic_write_text


class AccuracyMeter:
    """Counts top-1 and top-5 hits on the logits' device; read once at the end with `result()`."""

    def __init__(self) -> None:
        self.hits: Tensor | None = None
        self.count = 0

    def update(self, logits: Tensor, targets: Tensor) -> None:
        k = min(5, logits.shape[1])
        top = logits.topk(k, dim=1).indices
        correct = top.eq(targets[:, None])
        hits = torch.stack([correct[:, :1].any(1).sum(), correct.any(1).sum()])
        self.hits = hits if self.hits is None else self.hits + hits
        self.count += len(targets)

    def state_dict(self) -> dict[str, Any]:
        """The counts so far (a mid-epoch checkpoint holds them, so the resumed epoch reports every step)."""
        return {"hits": self.hits, "count": self.count}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.hits, self.count = state["hits"], state["count"]

    def result(self) -> dict[str, float]:
        """{"top1", "top5"} in percent (0 for an empty meter)."""
        if self.hits is None or self.count == 0:
            return {"top1": 0.0, "top5": 0.0}
        top1, top5 = (100.0 * self.hits.double() / self.count).tolist()
        return {"top1": top1, "top5": top5}


def write_metrics_csv(history: list[dict[str, float]], path: str | Path) -> None:
    """Rewrite the whole per-epoch table (the checkpoint holds the history, so resumes never duplicate rows)."""
    columns: list[str] = []
    for row in history:
        columns.extend(k for k in row if k not in columns)
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns)
    writer.writeheader()
    writer.writerows(history)
    atomic_write_text(buffer.getvalue(), path)
