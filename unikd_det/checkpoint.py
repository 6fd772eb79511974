"""`SafeDetectionCheckpointer`: Detectron2's checkpointer without code execution, strictness on demand, and
no checkpoint of non-finite weights.

Detectron2 reads `.pkl` weights with plain `pickle` and `.pth` with `torch.load`; a planted file could run
code from either. Here `.pkl` goes through `load_array_pickle` (numpy arrays in plain containers, as the
model zoo's files hold) and `.pth` through `load_torch_file` (weights-only). Everything else is Detectron2's:
URLs, the model-zoo formats, the matching heuristics for converted backbones, DDP.
"""
from __future__ import annotations

import logging
from typing import Any

import torch
from detectron2.checkpoint import DetectionCheckpointer
from fvcore.common.checkpoint import _IncompatibleKeys

from unikd.core.files import load_torch_file, load_array_pickle

logger = logging.getLogger(__name__)

# At most this many keys of each kind are named in an incompatible-weights error.
MAX_KEYS_NAMED = 8


def model_zoo_pkl_checkpoint(data: Any, filename: str) -> dict[str, Any]:
    """Detectron2's reading of a `.pkl` weights object: a Detectron2 model-zoo dict (`model`, `__author__`) is
    kept as is; a Caffe2 / Detectron1 one (optionally under `blobs`) becomes a state dict for the matching
    heuristics, without its `_momentum` entries."""
    if not isinstance(data, dict):
        raise ValueError(f"{filename} holds a {type(data).__name__}, not a dict of weights")
    if "model" in data and "__author__" in data:
        logger.info("Reading a file from '%s'", data["__author__"])
        return data
    data = data.get("blobs", data)
    weights = {k: v for k, v in data.items() if not k.endswith("_momentum")}
    return {"model": weights, "__author__": "Caffe2", "matching_heuristics": True}


def describe_incompatible(incompatible: _IncompatibleKeys) -> list[str]:
    """One line per kind of mismatch (missing, unexpected, wrong shape), each naming the first keys."""

    def named(keys: list[str]) -> str:
        more = f" and {len(keys) - MAX_KEYS_NAMED} more" if len(keys) > MAX_KEYS_NAMED else ""
        return ", ".join(keys[:MAX_KEYS_NAMED]) + more

    lines = []
    reshaped = {key for key, _, _ in incompatible.incorrect_shapes}  # fvcore also lists these as missing
    missing = [key for key in incompatible.missing_keys if key not in reshaped]
    if missing:
        lines.append(f"missing in the file: {named(missing)}")
    if incompatible.unexpected_keys:
        lines.append(f"not in the model: {named(list(incompatible.unexpected_keys))}")
    if incompatible.incorrect_shapes:
        shapes = [f"{key} {tuple(saved)} in the file, {tuple(model)} in the model"
                  for key, saved, model in incompatible.incorrect_shapes]
        lines.append(f"of another shape: {named(shapes)}")
    return lines


def non_finite_entries(state: dict[str, torch.Tensor]) -> list[str]:
    """The names of the floating-point tensors in `state` that hold a NaN or an infinity."""
    names = [k for k, v in state.items() if torch.is_tensor(v) and v.is_floating_point()]
    if not names:
        return []
    finite = torch.stack([torch.isfinite(state[k]).all() for k in names]).tolist()  # one device sync
    return [k for k, ok in zip(names, finite) if not ok]


class SafeDetectionCheckpointer(DetectionCheckpointer):
    """A DetectionCheckpointer that reads weights without running code from them.

    `strict=True` (the teacher) turns Detectron2's warnings about missing, unexpected or shape-mismatched keys
    into a ValueError naming the file and the keys: weights that do not fit the config would otherwise leave
    part of the network at its random initialisation. Weights that are not finite are refused on load, and
    `save` refuses to write them (FloatingPointError), so `last_checkpoint` always names weights from before a
    divergence.
    """

    def __init__(self, model, save_dir: str = "", *, strict: bool = False, **kwargs):
        super().__init__(model, save_dir, **kwargs)
        self.strict = strict
        self._reading = ""

    def load(self, path: str, *args: Any, **kwargs: Any) -> dict[str, Any]:
        """Detectron2's `load`; after a refused file the checkpointer stays usable (Detectron2 leaves its
        URL state set when loading raises, and asserts on it at the next load)."""
        try:
            return super().load(path, *args, **kwargs)
        finally:
            self._parsed_url_during_load = None

    def _load_file(self, filename: str) -> dict[str, Any]:
        self._reading = filename
        if filename.endswith(".pkl"):
            return model_zoo_pkl_checkpoint(load_array_pickle(filename, "Detectron2 weights (.pkl)"), filename)
        if filename.endswith(".pyth"):  # Detectron2 reads these with a bare torch.load, unrestricted before torch 2.6
            raise ValueError(f"{filename}: pycls .pyth checkpoints are not read; save the state dict as a .pth")
        return super()._load_file(filename)  # .pth: Detectron2's handling around `_torch_load` below

    def _torch_load(self, f: str) -> Any:
        return load_torch_file(f, "a Detectron2 checkpoint (.pth)")

    def _load_model(self, checkpoint: Any) -> _IncompatibleKeys:
        incompatible = super()._load_model(checkpoint)
        problems = describe_incompatible(incompatible) if self.strict else []
        if problems:
            wrapped = any(key.startswith("student.") for key in incompatible.unexpected_keys)
            raise ValueError(
                f"the weights in {self._reading} do not fit the model built from its config; "
                + "; ".join(problems)
                + (". It is a DistillRCNN checkpoint: export its student with tools/export_student.py first"
                   if wrapped else ". Use the config these weights were trained with (depth, widths, NUM_CLASSES)")
            )
        bad = non_finite_entries(self.model.state_dict())
        if bad:
            raise ValueError(
                f"{self._reading} holds weights that are not finite ({', '.join(bad[:MAX_KEYS_NAMED])}): it was "
                "written after a divergence; load an earlier checkpoint (for --resume, name it in last_checkpoint)"
            )
        return incompatible

    def save(self, name: str, **kwargs: Any) -> None:
        if self.save_dir and self.save_to_disk:
            bad = non_finite_entries(self.model.state_dict())
            if bad:
                iteration = kwargs.get("iteration")
                raise FloatingPointError(
                    f"the model weights are not finite{'' if iteration is None else f' after iteration {iteration}'}"
                    f" ({', '.join(bad[:MAX_KEYS_NAMED])}): {name}.pth was not written"
                )
        super().save(name, **kwargs)

    def resume_point(self) -> str:
        """What a user can resume from after a divergence: the checkpoint `last_checkpoint` names, if any."""
        if self.has_checkpoint():
            return (
                f"{self.save_dir}/last_checkpoint names {self.get_checkpoint_file()}, written before the divergence: "
                "continue from it with --resume and a smaller SOLVER.BASE_LR"
            )
        return (
            "no checkpoint was written before the divergence: start over with --overwrite and a smaller SOLVER.BASE_LR"
        )
