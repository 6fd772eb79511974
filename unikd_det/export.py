"""Turn a DistillRCNN checkpoint into a plain GeneralizedRCNN checkpoint that stock Detectron2 loads."""
from __future__ import annotations

from collections import OrderedDict
from pathlib import Path

import torch

STUDENT_PREFIX = "student."


def student_state_dict(wrapper_state: dict[str, torch.Tensor]) -> "OrderedDict[str, torch.Tensor]":
    """Keep the `student.*` entries, without the prefix; drop the distillation modules."""
    student = OrderedDict(
        (key[len(STUDENT_PREFIX):], value) for key, value in wrapper_state.items() if key.startswith(STUDENT_PREFIX)
    )
    if not student:
        raise ValueError("no 'student.*' weights in this checkpoint: is it a DistillRCNN checkpoint?")
    return student


def export_student(checkpoint: str | Path, output: str | Path) -> Path:
    """Read a DistillRCNN checkpoint (`{"model": state_dict, ...}`) and write `{"model": student}`."""
    checkpoint, output = Path(checkpoint), Path(output)
    if not checkpoint.is_file():
        raise FileNotFoundError(f"checkpoint not found: {checkpoint}")
    state = torch.load(checkpoint, map_location="cpu", weights_only=False)
    output.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"model": student_state_dict(state.get("model", state))}, output)
    return output
