#!/usr/bin/env python
"""Convert a torchvision ImageNet ResNet-18/34/50 or MobileNetV2 checkpoint for a Detectron2 backbone.

    python tools/convert_torchvision_to_d2.py resnet18-f37072fd.pth pretrained/R-18-torchvision.pkl
    python tools/convert_torchvision_to_d2.py mobilenet_v2-b0353104.pth pretrained/MV2-torchvision.pkl

ResNet keys are renamed to Detectron2's ResNet names and load as MODEL.WEIGHTS of a
`build_resnet_fpn_backbone` student. MobileNetV2 keys keep torchvision's names, which
`build_mobilenetv2_fpn_backbone` (unikd_det/mobilenet_fpn.py) uses; the classifier and the final
1280-channel conv are dropped. torchvision models expect RGB input normalised with the ImageNet
mean/std in 0-255 units, so the student config needs INPUT.FORMAT RGB, MODEL.PIXEL_MEAN [123.675,
116.28, 103.53] and MODEL.PIXEL_STD [58.395, 57.12, 57.375]; torchvision ResNets put the stride in the
3x3 conv, so they also need MODEL.RESNETS.STRIDE_IN_1X1 False (configs/COCO/Base-R18-R101.yaml and
Base-MV2-R50.yaml do this).
"""
from __future__ import annotations

import argparse
import pickle
import re
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from unikd.core.cli import add_debug_argument, run_main  # noqa: E402

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


def convert_mobilenet_v2_key(key: str) -> str | None:
    """The backbone name of a torchvision MobileNetV2 key (unchanged); None for the classifier parts."""
    if key.startswith(("classifier.", "features.18.")) or key.endswith("num_batches_tracked"):
        return None
    if not key.startswith("features."):
        raise KeyError(f"unexpected torchvision MobileNetV2 key {key!r}")
    return key


def convert(state: dict[str, torch.Tensor]) -> dict[str, "numpy.ndarray"]:  # noqa: F821
    """Detectron2 weights of a ResNet or (keys under `features.`) MobileNetV2 state dict."""
    rename = convert_mobilenet_v2_key if any(k.startswith("features.") for k in state) else convert_key
    converted = {}
    for key, value in state.items():
        new_key = rename(key)
        if new_key is not None:
            converted[new_key] = value.detach().cpu().numpy()
    return converted


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("source", help="torchvision ResNet or MobileNetV2 state_dict (.pth)")
    parser.add_argument("output", help="Detectron2 weights to write (.pkl)")
    add_debug_argument(parser)
    args = parser.parse_args(argv)
    source = Path(args.source)
    if not source.is_file():
        raise FileNotFoundError(f"torchvision checkpoint not found: {source}")
    state = torch.load(source, map_location="cpu", weights_only=True)
    model = convert(state.get("state_dict", state))
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    with open(args.output, "wb") as f:
        pickle.dump({"model": model, "__author__": "torchvision", "matching_heuristics": True}, f)
    print(f"wrote {len(model)} tensors to {args.output}")


if __name__ == "__main__":
    sys.exit(run_main(main))
