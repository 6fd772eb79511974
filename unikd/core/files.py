"""Reading weight files without running code from them, with errors that name the file.

`torch.load(weights_only=False)` and plain `pickle.load` execute whatever a file's pickle stream asks for,
so a planted checkpoint or data file could run arbitrary code. Both front ends therefore read every
checkpoint through `load_torch_file` (PyTorch's weights-only unpickler: tensors, numbers, strings and plain
containers) and every other pickle (Detectron2-style `.pkl` weights, the CIFAR-100 python files) through
`load_array_pickle` (numpy arrays, numbers, strings and plain containers only). Anything else is refused
with a ValueError naming the file.
"""
from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import torch
import yaml

# (module, name) pairs a weights pickle may reference: numpy arrays (protocol 2 and 5 forms), dtypes and scalars
# (under numpy 1's and numpy 2's module names), OrderedDict, and the latin-1 codec of protocol-2 array bytes.
_PICKLE_ALLOWED = frozenset(
    [(module, name) for module in ("numpy.core.multiarray", "numpy._core.multiarray")
     for name in ("_reconstruct", "scalar")]
    + [(module, "_frombuffer") for module in ("numpy.core.numeric", "numpy._core.numeric")]
    + [("numpy", "ndarray"), ("numpy", "dtype"), ("collections", "OrderedDict"), ("_codecs", "encode")]
)


def _check_readable(path: str | Path, what: str) -> Path:
    """`path` as a Path; FileNotFoundError when it is missing, ValueError when it is empty."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{what} not found: {path}")
    if path.stat().st_size == 0:
        raise ValueError(f"{path} is empty; expected {what}")
    return path


def load_torch_file(path: str | Path, what: str = "a PyTorch checkpoint") -> Any:
    """The object saved in `path`, read with `torch.load(weights_only=True)` onto the CPU.

    Raises FileNotFoundError for a missing file, and ValueError naming the file and `what` was expected when
    it is empty, truncated, not a PyTorch file, or holds objects the weights-only unpickler refuses (which
    is where a hostile file's code would have run).
    """
    path = _check_readable(path, what)
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        raise ValueError(
            f"refused to load {path}: it holds objects other than tensors, numbers, strings and plain "
            f"containers ({_refusal_reason(err)}); expected {what}"
        ) from None
    except (RuntimeError, EOFError, OSError, ValueError) as err:
        raise ValueError(
            f"{path} is not a readable PyTorch file (truncated or of another format: "
            f"{str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__}); expected {what}"
        ) from None


def _refusal_reason(err: pickle.UnpicklingError) -> str:
    """The line of PyTorch's weights-only refusal that names what was refused (its advice to load the file
    with weights_only=False, which would run the code, is left out)."""
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    specific = [line for line in lines if "GLOBAL" in line or "Unsupported" in line]
    return (specific or lines or [type(err).__name__])[0]


class _WeightsUnpickler(pickle.Unpickler):
    """An unpickler that resolves only the globals in `_PICKLE_ALLOWED`."""

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in _PICKLE_ALLOWED:
            raise pickle.UnpicklingError(f"global {module}.{name} is not allowed in a weights file")
        return super().find_class(module, name)


def load_array_pickle(path: str | Path, what: str = "a weights .pkl file") -> Any:
    """The object in a pickle of numpy arrays in plain containers (Detectron2 `.pkl` weights, CIFAR-100 files).

    Decodes Python 2 strings as latin-1, as Detectron2's model-zoo files need. Raises FileNotFoundError for a
    missing file and ValueError naming the file for an empty, truncated or non-pickle file, or for one that
    references any global other than numpy arrays, dtypes, scalars and OrderedDict.
    """
    path = _check_readable(path, what)
    with open(path, "rb") as f:
        try:
            return _WeightsUnpickler(f, encoding="latin1").load()
        except pickle.UnpicklingError as err:
            if "is not allowed" in str(err):
                raise ValueError(f"refused to load {path}: {err}; expected {what}") from None
            raise ValueError(f"{path} is not a readable pickle ({err}); expected {what}") from None
        except (EOFError, ValueError, TypeError, AttributeError, ImportError, IndexError) as err:
            raise ValueError(
                f"{path} is not a readable pickle (truncated or of another format: {err}); expected {what}"
            ) from None


def read_yaml(path: Path, what: str) -> dict:
    """A YAML mapping read with yaml.safe_load (no `!!python/...` tag can run code): ValueError naming the file
    for a refused tag, a syntax error or content that is not a mapping."""
    try:
        content = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as err:
        raise ValueError(f"{path} is not a valid YAML file ({' '.join(str(err).split())}); expected {what}") from None
    if content is None:
        return {}
    if not isinstance(content, dict):
        raise ValueError(f"{path} holds a YAML {type(content).__name__}, not a mapping; expected {what}")
    return content
