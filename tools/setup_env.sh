#!/usr/bin/env bash
# Create or refresh the project's virtual environment at <repo>/.venv and fetch Fashion-MNIST.
# Idempotent: every step checks first, so a second run with everything present takes seconds.
# Works from any directory and needs no activated venv.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$REPO/.venv"
PY="$VENV/bin/python"
TORCH_VERSION="2.14.1"
TORCHVISION_VERSION="0.29.1"
DETECTRON2_WHEEL="sal-detectron2==0.7.2"
FASHION_DIR="${FASHION_MNIST_DIR:-/usr/share/datasets/fashion-mnist}"
FASHION_FALLBACK="$REPO/datasets/fashion-mnist"

log() { printf '[setup] %s\n' "$*"; }

if [[ ! -x "$PY" ]]; then
  log "creating $VENV"
  python3 -m venv "$VENV"
fi
# pip's status survives the filter (pipefail); the filter drops this machine's noise about
# configured index locations that do not exist.
pip_install() {
  "$PY" -m pip install --disable-pip-version-check -q "$@" 2>&1 \
    | { grep -v "is ignored: it is neither a file nor a directory" || true; }
}

if ! "$PY" -c "import torch, torchvision, sys; sys.exit(not (torch.__version__.startswith('$TORCH_VERSION') and torchvision.__version__.startswith('$TORCHVISION_VERSION')))" 2>/dev/null; then
  log "installing torch $TORCH_VERSION and torchvision $TORCHVISION_VERSION (about a minute from the local wheel cache)"
  pip_install "torch==$TORCH_VERSION" "torchvision==$TORCHVISION_VERSION"
fi

if ! "$PY" -c "import unikd_det, classification, pytest, pycocotools, fvcore, iopath, omegaconf, hydra, pkg_resources" 2>/dev/null \
   || [[ "$REPO/setup.py" -nt "$VENV/.unikd-installed" ]]; then
  log "installing the project (editable) and its dependencies"
  pip_install -e "$REPO[test]"
  touch "$VENV/.unikd-installed"
fi

if ! "$PY" -c "import detectron2.modeling" 2>/dev/null; then
  # Installed after the project: pip's resolver would otherwise flag this wheel's metadata
  # (black, tensorboard, numpy<2), which the sources do not need at run time.
  # No usable detectron2 wheel exists for Python 3.11 on PyPI; the pure-Python sources of
  # sal-detectron2 run on 3.11 when installed in target mode (see docs/DESIGN.md section 11).
  log "installing detectron2 ($DETECTRON2_WHEEL, pure-Python sources) into the venv"
  PURELIB="$("$PY" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
  pip_install --no-deps --only-binary=:all: --python-version 3.10 --implementation cp \
    --target "$PURELIB" --upgrade "$DETECTRON2_WHEEL"
fi

fashion_present() { [[ -f "$1/train-images-idx3-ubyte.gz" && -f "$1/t10k-labels-idx1-ubyte.gz" ]]; }
if ! fashion_present "$FASHION_DIR" && ! fashion_present "$FASHION_FALLBACK"; then
  log "fetching Fashion-MNIST"
  if command -v apt-get >/dev/null && { apt-get install -y -q dataset-fashion-mnist >/dev/null 2>&1 \
       || { apt-get update -q >/dev/null 2>&1 && apt-get install -y -q dataset-fashion-mnist >/dev/null 2>&1; }; } \
     && fashion_present "$FASHION_DIR"; then
    log "Fashion-MNIST installed from the Debian package into $FASHION_DIR"
  elif "$PY" - "$FASHION_FALLBACK" <<'PYEOF'
import os, shutil, sys
from torchvision.datasets import FashionMNIST
root = sys.argv[1]
for train in (True, False):
    FashionMNIST(os.path.join(root, "tv"), train=train, download=True)
raw = os.path.join(root, "tv", "FashionMNIST", "raw")
for name in os.listdir(raw):
    if name.endswith(".gz"):
        shutil.copy(os.path.join(raw, name), root)
PYEOF
  then
    log "Fashion-MNIST downloaded with torchvision into $FASHION_FALLBACK"
  else
    echo "[setup] ERROR: could not obtain Fashion-MNIST. Install the Debian package dataset-fashion-mnist," >&2
    echo "[setup]        or put the four IDX .gz files in $FASHION_FALLBACK (or set FASHION_MNIST_DIR)." >&2
    exit 1
  fi
fi
log "environment ready: $VENV"
