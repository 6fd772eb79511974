#!/usr/bin/env python
"""Convert a torchvision ImageNet ResNet checkpoint to Detectron2's ResNet key names.

    python tools/convert_torchvision_to_d2.py resnet18-f37072fd.pth pretrained/R-18-torchvision.pkl

The result loads as MODEL.WEIGHTS of a `build_resnet_fpn_backbone` student. torchvision models
expect RGB input normalised with the ImageNet mean/std in 0-255 units and put the stride in the
3x3 conv, so the student config needs: INPUT.FORMAT RGB, MODEL.PIXEL_MEAN [123.675, 116.28,
103.53], MODEL.PIXEL_STD [58.395, 57.12, 57.375], MODEL.RESNETS.STRIDE_IN_1X1 False
(configs/COCO/Base-R18-R101.yaml does this).
"""
from __future__ import annotations

import argparse
import pickle
import re
from pathlib import Path

import torch

# torchvision name pattern -> Detectron2 name; applied in order, first match wins per key.
RENAMES = (
    (r"^conv1\.", "stem.conv1."),
    (r"^bn1\.", "stem.conv1.norm."),
    (r"^layer(\d)\.(\d+)\.downsample\.0\.", lambda m: f"res{int(m[1]) + 1}.{m[2]}.shortcut."),
    (r"^layer(\d)\.(\d+)\.downsample\.1\.", lambda m: f"res{int(m[1]) + 1}.{m[2]}.shortcut.norm."),
    (r"^layer(\d)\.(\d+)\.conv(\d)\.", lambda m: f"res{int(m[1]) + 1}.{m[2]}.conv{m[3]}."),
    (r"^layer(\d)\.(\d+)\.bn(\d)\.", lambda m: f"res{int(m[1]) + 1}.{m[2]}.conv{m[3]}.norm."),
)


def convert_key(key: str) -> str | None:
    """Detectron2 name of a torchvision ResNet key; None for keys the detector does not use (fc)."""
    if key.startswith("fc.") or key.endswith("num_batches_tracked"):
        return None
    for pattern, replacement in RENAMES:
        new_key, count = re.subn(pattern, replacement, key)
        if count:
            return new_key
    raise KeyError(f"unexpected torchvision ResNet key {key!r}")


def convert(state: dict[str, torch.Tensor]) -> dict[str, "numpy.ndarray"]:  # noqa: F821
    converted = {}
    for key, value in state.items():
        new_key = convert_key(key)
        if new_key is not None:
            converted[new_key] = value.detach().cpu().numpy()
    return converted


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("source", help="torchvision ResNet state_dict (.pth)")
    parser.add_argument("output", help="Detectron2 weights to write (.pkl)")
    args = parser.parse_args(argv)
    source = Path(args.source)
    if not source.is_file():
        raise SystemExit(f"not found: {source}")
    state = torch.load(source, map_location="cpu", weights_only=True)
    model = convert(state.get("state_dict", state))
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    with open(args.output, "wb") as f:
        pickle.dump({"model": model, "__author__": "torchvision", "matching_heuristics": True}, f)
    print(f"wrote {len(model)} tensors to {args.output}")


if __name__ == "__main__":
    main()
