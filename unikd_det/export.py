"""Turn a DistillRCNN checkpoint into a plain GeneralizedRCNN checkpoint that stock Detectron2 loads."""
from __future__ import annotations

from collections import OrderedDict
from pathlib import Path

import torch

from unikd.core.files import load_torch_file

STUDENT_PREFIX = "student."
# Every Detectron2 two-stage detector has these modules; a classification run's `student.*` keys do not.
DETECTOR_PREFIXES = ("student.backbone.", "student.roi_heads.")


def student_state_dict(wrapper_state: dict[str, torch.Tensor]) -> "OrderedDict[str, torch.Tensor]":
    """Keep the `student.*` entries, without the prefix; drop the distillation modules.

    Raises ValueError unless the state holds a detector student (`student.backbone.*` and
    `student.roi_heads.*`), so another model's checkpoint (a classification run's `last.pth`) is refused.
    """
    missing = [prefix for prefix in DETECTOR_PREFIXES if not any(key.startswith(prefix) for key in wrapper_state)]
    if missing:
        found = ", ".join(list(wrapper_state)[:3]) or "none"
        raise ValueError(
            f"not a DistillRCNN checkpoint: no {' / '.join(p + '*' for p in missing)} weights "
            f"(its first keys: {found})"
        )
    return OrderedDict(
        (key[len(STUDENT_PREFIX):], value) for key, value in wrapper_state.items() if key.startswith(STUDENT_PREFIX)
    )


def export_student(checkpoint: str | Path, output: str | Path) -> Path:
    """Read a DistillRCNN checkpoint (`{"model": state_dict, ...}`, weights only) and write `{"model": student}`."""
    checkpoint, output = Path(checkpoint), Path(output)
    state = load_torch_file(checkpoint, "DistillRCNN checkpoint")
    model = state.get("model", state) if isinstance(state, dict) else None
    if not isinstance(model, dict):
        raise ValueError(f"{checkpoint} is not a DistillRCNN checkpoint: it holds no state dict")
    try:
        student = student_state_dict(model)
    except ValueError as err:
        raise ValueError(f"{checkpoint}: {err}") from None
    output.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"model": student}, output)
    return output
