#!/usr/bin/env python
"""The main job on built-in data (`make demo`): a detection and a classification distillation, one table each.

    python tools/demo.py [--jobs 2] [--threads 1] [--output-dir output/demo] [--fresh] [--verbose]

It runs two bench grids through the one bench runner (`unikd.bench`, docs/bench.md):
- configs/bench/det_demo.yaml: on the Fashion-MNIST mosaics (generated on first use), an R18-FPN teacher,
  then the R18-FPN student alone and with UniKD; COCO box AP on the validation mosaics.
- classification/configs/bench/fashion_mnist_demo.yaml: a resnet20 teacher on Fashion-MNIST, then resnet20
  students without KD, with KD and with UniKD on 3000 images; test top-1 at the validation-selected epoch.

Every stage prints one progress line (its full log goes to its folder's log.txt; --verbose streams it) and
checkpoints, so a rerun continues where an interrupted one stopped and reads finished stages back. `--jobs 2
--threads 1` trains two stages at once, one torch thread each: a stage's numbers repeat bit for bit at one
thread count, whichever process trains it. One seed ranks no methods; the grids under configs/bench/ and
classification/configs/bench/ compare them over three seeds with paired intervals.
"""
from __future__ import annotations

import argparse
import dataclasses
import shutil
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from unikd.bench.cli import positive_int  # noqa: E402
from unikd.bench.grid import Grid, load_grid  # noqa: E402
from unikd.bench.runner import run_grids  # noqa: E402
from unikd.core.cli import add_debug_argument, run_main  # noqa: E402

GRIDS = (REPO / "configs" / "bench" / "det_demo.yaml",
         REPO / "classification" / "configs" / "bench" / "fashion_mnist_demo.yaml")


def demo_grids(output_dir: Path) -> list[Grid]:
    """The demo grids, each writing to `output_dir`/<the last part of its own output_dir>."""
    grids = [load_grid(path) for path in GRIDS]
    return [dataclasses.replace(grid, output_dir=output_dir / grid.output_dir.name) for grid in grids]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output-dir", type=Path, default=REPO / "output" / "demo")
    parser.add_argument("--fresh", action="store_true", help="delete the output folder and train from scratch")
    parser.add_argument("--jobs", type=positive_int, default=1, help="stages trained at once, one process each")
    parser.add_argument("--threads", type=positive_int, help="torch threads per process (default: torch's / --jobs)")
    parser.add_argument("--verbose", action="store_true", help="stream every stage's full log to the terminal")
    add_debug_argument(parser)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> list[str]:
    args = parse_args(argv)
    if args.fresh and args.output_dir.exists():
        shutil.rmtree(args.output_dir)
    start = time.perf_counter()
    grids = demo_grids(args.output_dir)
    reports = run_grids(grids, jobs=args.jobs, threads=args.threads, verbose=args.verbose)
    for grid, report in zip(grids, reports):
        print(f"\n{report}(rendered from {grid.report_folder / 'results.csv'})")
    print(f"Total time: {time.perf_counter() - start:.0f} s")
    return reports


if __name__ == "__main__":
    sys.exit(run_main(main))
