"""Locate and read the Fashion-MNIST IDX files with numpy alone.

Fashion-MNIST is the only real image data set that installs offline on the project's machines (Debian
package ``dataset-fashion-mnist``), so the demo detection set is built from it. Reading the four IDX
``.gz`` files directly keeps this module free of torchvision and of any download logic.
"""
from __future__ import annotations

import gzip
import os
from pathlib import Path

import numpy as np

FASHION_MNIST_CLASSES: tuple[str, ...] = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)

# split -> (images file, labels file)
_SPLIT_FILES: dict[str, tuple[str, str]] = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}
_ALL_FILES: tuple[str, ...] = tuple(name for pair in _SPLIT_FILES.values() for name in pair)

# IDX magic numbers: two zero bytes, type code 0x08 (unsigned byte), number of dimensions.
_IMAGES_MAGIC = 0x00000803
_LABELS_MAGIC = 0x00000801

_SYSTEM_DIR = Path("/usr/share/datasets/fashion-mnist")
_REPO_DIR = Path(__file__).resolve().parents[2] / "datasets" / "fashion-mnist"


def _candidate_dirs() -> list[Path]:
    """Return the folders searched for the IDX files, in order of preference."""
    env = os.environ.get("FASHION_MNIST_DIR")
    return ([Path(env)] if env else []) + [_SYSTEM_DIR, _REPO_DIR]


def find_fashion_mnist_dir() -> Path:
    """Return the first folder that holds all four Fashion-MNIST IDX ``.gz`` files.

    Searched in order: ``$FASHION_MNIST_DIR`` (when set), ``/usr/share/datasets/fashion-mnist`` (where the
    Debian package installs them) and ``<repo>/datasets/fashion-mnist`` (where ``tools/setup_env.sh``
    downloads them when the package is unavailable).

    Raises:
        FileNotFoundError: no candidate holds the four files; the message lists every folder tried and
            how to obtain the files.
    """
    tried = _candidate_dirs()
    for folder in tried:
        if all((folder / name).is_file() for name in _ALL_FILES):
            return folder
    raise FileNotFoundError(
        "Fashion-MNIST not found: none of these folders holds all of "
        f"{', '.join(_ALL_FILES)}: {', '.join(str(p) for p in tried)}. "
        "Install the Debian package dataset-fashion-mnist (apt-get install dataset-fashion-mnist), run "
        "`make demo` or `make test` (they run tools/setup_env.sh, which fetches the files), or put the "
        "four files in a folder and set FASHION_MNIST_DIR to it."
    )


def _read_idx(path: Path, magic: int, ndim: int) -> np.ndarray:
    """Read one gzipped IDX file of unsigned bytes and check its magic number and declared size.

    The result is a writable copy, so callers may hand it to ``torch.from_numpy`` without a warning.
    """
    with gzip.open(path, "rb") as f:
        data = f.read()
    header_len = 4 * (1 + ndim)
    if len(data) < header_len:
        raise ValueError(f"{path}: truncated IDX file ({len(data)} bytes, header needs {header_len})")
    header = np.frombuffer(data, dtype=">u4", count=1 + ndim)
    if int(header[0]) != magic:
        raise ValueError(f"{path}: bad IDX magic number 0x{int(header[0]):08x}, expected 0x{magic:08x}")
    shape = tuple(int(d) for d in header[1:])
    expected = int(np.prod(shape))
    if len(data) - header_len != expected:
        raise ValueError(
            f"{path}: IDX header declares shape {shape} ({expected} bytes) but the file holds "
            f"{len(data) - header_len} data bytes"
        )
    return np.frombuffer(data, dtype=np.uint8, offset=header_len).reshape(shape).copy()


def load_fashion_mnist(split: str, root: Path | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Load one Fashion-MNIST split as numpy arrays.

    Args:
        split: ``"train"`` (60,000 items) or ``"test"`` (10,000 items).
        root: folder holding the IDX files; found with :func:`find_fashion_mnist_dir` when ``None``.

    Returns:
        ``(images, labels)``: uint8 images of shape ``[N, 28, 28]`` and int64 labels of shape ``[N]``
        with values in ``0..9`` (indices into :data:`FASHION_MNIST_CLASSES`).

    Raises:
        ValueError: unknown split, or a file that is not a valid IDX file of the expected kind.
        FileNotFoundError: the files cannot be found.
    """
    if split not in _SPLIT_FILES:
        raise ValueError(f"split must be one of {sorted(_SPLIT_FILES)}, got {split!r}")
    folder = Path(root) if root is not None else find_fashion_mnist_dir()
    images_name, labels_name = _SPLIT_FILES[split]
    images = _read_idx(folder / images_name, _IMAGES_MAGIC, ndim=3)
    labels = _read_idx(folder / labels_name, _LABELS_MAGIC, ndim=1).astype(np.int64, copy=False)
    if len(images) != len(labels):
        raise ValueError(f"{folder}: {len(images)} images but {len(labels)} labels in split {split!r}")
    return images, labels
