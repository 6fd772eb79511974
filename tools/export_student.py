#!/usr/bin/env python
"""Write the student of a DistillRCNN checkpoint as a stock GeneralizedRCNN checkpoint.

    python tools/export_student.py CHECKPOINT.pth OUTPUT.pth

Load the result with plain Detectron2: the student's config with
MODEL.META_ARCHITECTURE GeneralizedRCNN and MODEL.WEIGHTS OUTPUT.pth.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from unikd.core.cli import add_debug_argument, run_main  # noqa: E402
from unikd_det.export import export_student  # noqa: E402


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint", help="DistillRCNN checkpoint (e.g. output/model_final.pth)")
    parser.add_argument("output", help="path of the plain GeneralizedRCNN checkpoint to write")
    add_debug_argument(parser)
    args = parser.parse_args(argv)
    print(f"wrote {export_student(args.checkpoint, args.output)}")


if __name__ == "__main__":
    sys.exit(run_main(main))
