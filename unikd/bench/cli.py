"""The bench's command line, shared by every entry point that runs grids or renders their reports.

    python -m unikd.bench run --grid FILE [FILE ...] [--output-dir DIR ...] [--jobs N] [--threads T] [--verbose]
    python -m unikd.bench report --task {classification,detection} --results CSV [CSV ...] --output DIR
    python -m classification bench --grid FILE ...        # the same `run` arguments
    tools/bench_det.py --grid FILE ...                    # the same `run` arguments

`python -m unikd.bench` serves both tasks (the grid's `task` picks the front end); the two task entry points
are the same runner under the names each task's users know, and `tools/demo.py` calls it with the demo grids.
"""
from __future__ import annotations

import argparse
import dataclasses
import logging
from pathlib import Path

from unikd.core.cli import add_debug_argument, run_main

from .combine import report_results
from .grid import Grid, load_grid
from .runner import run_grids
from .task import TASKS, task_class


def positive_int(text: str) -> int:
    """argparse type of counts (--jobs, --threads, batch sizes, steps): an integer >= 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def add_run_arguments(parser: argparse.ArgumentParser, grid_required: bool = True) -> None:
    """The arguments of a grid run (see the module docstring)."""
    parser.add_argument("--grid", nargs="+", required=grid_required, help="bench grid YAML file(s) (docs/bench.md)")
    parser.add_argument("--output-dir", nargs="+", help="override each grid's output_dir (one folder per grid)")
    parser.add_argument("--jobs", type=positive_int,
                        help="stages trained at once, each in its own process (default: the grid's, else 1); a "
                             "student waits for its teacher")
    parser.add_argument("--threads", type=positive_int,
                        help="torch threads per process (default: the grid's, else torch's default / --jobs); a "
                             "stage repeats bit for bit only at the same thread count")
    parser.add_argument("--verbose", action="store_true",
                        help="stream every stage's full log to the terminal (it always goes to the stage's log.txt)")
    parser.add_argument("--dry-run", action="store_true", help="list the stages without training")
    parser.add_argument("--stages-only", action="store_true", help=argparse.SUPPRESS)  # a helper process of --jobs


def grids_from_args(args: argparse.Namespace) -> list[Grid]:
    """The checked grids of --grid, each with its --output-dir where given."""
    grids = [load_grid(path) for path in args.grid]
    if args.output_dir is not None:
        if len(args.output_dir) != len(grids):
            raise ValueError(f"--output-dir names {len(args.output_dir)} folder(s) for {len(grids)} grid(s): give "
                             "one per grid, in the same order")
        grids = [dataclasses.replace(g, output_dir=Path(d)) for g, d in zip(grids, args.output_dir)]
    return grids


def run_from_args(args: argparse.Namespace) -> list[str]:
    """Run the grids of a `run` command line and print each report; returns them."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    grids = grids_from_args(args)
    reports = run_grids(grids, jobs=args.jobs, threads=args.threads, verbose=args.verbose,
                        stages_only=args.stages_only, dry_run=args.dry_run)
    for grid, report in zip(grids, reports):
        print(f"\n{report}\n(written to {grid.report_folder}/results.md, with results.csv, results.json, "
              "methods.csv and results.png)")
    return reports


def add_report_arguments(parser: argparse.ArgumentParser) -> None:
    """The arguments of a report from results.csv files (the task is given by the entry point or --task)."""
    parser.add_argument("--results", nargs="+", required=True,
                        help="results.csv files written by bench runs; a cell in several must agree in each")
    parser.add_argument("--output", required=True,
                        help="folder for results.csv, results.json, methods.csv, results.md, results.png")
    parser.add_argument("--reference", help="a method compared with every method on the selection split (a grid's "
                                            "`reference`)")
    parser.add_argument("--compare", nargs="+", help="the baselines every method is paired with (a grid's `compare`; "
                                                     "default: the task's)")


def report_from_args(args: argparse.Namespace, task: str) -> None:
    """Render one report of `task` from the results.csv files of a `report` command line."""
    rows = report_results(args.results, args.output, task_class(task).table, args.reference, args.compare)
    print(f"{len(rows)} runs from {len(args.results)} results.csv files -> {args.output}/results.md")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m unikd.bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run bench grids (either task) and write their reports")
    add_run_arguments(run)
    add_debug_argument(run)
    report = sub.add_parser("report", help="one report from the results.csv files of a grid's parts")
    report.add_argument("--task", required=True, choices=sorted(TASKS))
    add_report_arguments(report)
    add_debug_argument(report)
    return parser


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    if args.command == "run":
        run_from_args(args)
    else:
        report_from_args(args, args.task)


def console_main(argv: list[str] | None = None) -> int:
    """`main` with the command-line error contract (`unikd.core.cli.run_main`)."""
    return run_main(main, argv)
