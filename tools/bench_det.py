#!/usr/bin/env python
"""Run detection bench grids (configs/bench/*.yaml): teachers, student methods and seeds, one report per grid.

    tools/bench_det.py --grid configs/bench/det_main.yaml [--jobs 2] [--threads 1] [--verbose] [--dry-run]

The same runner and arguments as `python -m unikd.bench run` and `python -m classification bench --grid`
(`unikd.bench.cli`); docs/bench.md describes the grid format and how to read the tables.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from unikd.bench.cli import add_run_arguments, run_from_args  # noqa: E402
from unikd.core.cli import add_debug_argument, run_main  # noqa: E402


def main(argv: list[str] | None = None) -> list[str]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_run_arguments(parser)
    add_debug_argument(parser)
    return run_from_args(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(run_main(main))
