"""Checkpoint files: atomic writes and loading weights with errors that name the file (RNG states:
`unikd.core.rng`).

Every checkpoint is read with PyTorch's weights-only unpickler (`unikd.core.files.load_torch_file`), so a
planted or hostile file can never run code; what the trainer saves is therefore kept to tensors, numbers,
strings and plain containers (`unikd.core.rng` keeps numpy's RNG state as a tensor). Files written
before that change hold numpy's state as a uint32 ndarray; the four globals that takes are admitted, and
nothing else, so earlier teachers and runs stay readable (object arrays stay refused: their dtype class is
not admitted).
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from unikd.core.files import load_torch_file

FORMAT = "unikd-classification"
# What numpy's RNG state (a uint32 ndarray) needs in the checkpoints written before the state became a tensor.
_LEGACY_NUMPY_RNG_GLOBALS = [np._core.multiarray._reconstruct, np.ndarray, np.dtype, np.dtypes.UInt32DType]


def atomic_save(obj: Any, path: str | Path) -> None:
    """torch.save to a temporary file in the same folder, then rename: a crash never leaves a torn file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def read_checkpoint(path: str | Path, what: str = "a classification checkpoint (a run's last.pth or a state dict)"
                    ) -> dict[str, Any]:
    """The dict saved in `path`, loaded weights-only: a missing, empty, truncated, non-PyTorch or hostile file,
    or one that holds no dict, is an error naming the file and `what` was expected."""
    with torch.serialization.safe_globals(_LEGACY_NUMPY_RNG_GLOBALS):
        checkpoint = load_torch_file(path, what)
    if not isinstance(checkpoint, dict):
        raise ValueError(f"{path} holds a {type(checkpoint).__name__}, not a dict; expected {what}")
    return checkpoint


def network_state(checkpoint: dict[str, Any]) -> dict[str, torch.Tensor]:
    """The network weights in a checkpoint: ours (the student of a run), {"model": sd}, or a plain state dict."""
    if checkpoint.get("format") == FORMAT:
        prefix = "student."
        return {k[len(prefix) :]: v for k, v in checkpoint["model"].items() if k.startswith(prefix)}
    if isinstance(checkpoint.get("model"), dict):
        return checkpoint["model"]
    if isinstance(checkpoint.get("state_dict"), dict):
        return checkpoint["state_dict"]
    return checkpoint


def load_network(model: nn.Module, path: str | Path, arch: str, num_classes: int) -> nn.Module:
    """Load `path` into `model` (an `arch` with `num_classes` outputs), or fail naming the file and the mismatch."""
    checkpoint = read_checkpoint(path, f"{arch} weights (a run's last.pth / best_student.pth or a state dict)")
    if checkpoint.get("format") == FORMAT:
        saved = (checkpoint["arch"], checkpoint["num_classes"])
        if saved != (arch, num_classes):
            raise ValueError(
                f"{path} holds a {saved[0]} with {saved[1]} classes, but {arch} with {num_classes} classes "
                "was expected"
            )
    try:
        model.load_state_dict(network_state(checkpoint))
    except RuntimeError as err:
        raise ValueError(
            f"{path} does not hold a {arch} with {num_classes} classes: {str(err).splitlines()[0]}"
        ) from None
    return model
