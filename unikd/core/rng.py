"""The python, numpy, torch (and CUDA) RNG states as one checkpoint entry, for exact resumes in both front ends.

Checkpoints are read weights-only (`unikd.core.files`), which refuses numpy arrays, so numpy's state is kept
with its key array as a tensor.
"""
from __future__ import annotations

import random
from typing import Any

import numpy as np
import torch


def _numpy_rng_state() -> dict[str, Any]:
    """numpy's global RNG state with its key array as an int64 tensor (weights-only loading refuses ndarrays)."""
    kind, keys, pos, has_gauss, cached_gaussian = np.random.get_state()
    return {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
            "has_gauss": int(has_gauss), "cached_gaussian": float(cached_gaussian)}


def _set_numpy_rng_state(state: dict[str, Any] | tuple) -> None:
    """Restore what _numpy_rng_state saved, or the tuple np.random.get_state() gave in earlier checkpoints."""
    if isinstance(state, tuple):
        np.random.set_state(state)
        return
    keys = state["keys"].numpy().astype(np.uint32)
    np.random.set_state((state["kind"], keys, state["pos"], state["has_gauss"], state["cached_gaussian"]))


def rng_state() -> dict[str, Any]:
    """The python, numpy, torch (and CUDA) RNG states, in types a weights-only load accepts."""
    state = {"python": random.getstate(), "numpy": _numpy_rng_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what `rng_state` returned (CUDA states only where CUDA is available)."""
    random.setstate(state["python"])
    _set_numpy_rng_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
