"""Command line: `python -m classification {train,eval,bench,report,analyze} ...`."""
from __future__ import annotations

import argparse
import json
import logging
import sys

from .config import load_cfg

TRAIN_FLAGS = ("--resume", "--overwrite")


def _flags_out_of_overrides(args: argparse.Namespace, flags: tuple[str, ...]) -> None:
    """Take `flags` given after the KEY VALUE overrides (which argparse.REMAINDER swallows) as the flags.

    Any other `--option` among the overrides is an error rather than a config key.
    """
    for flag in flags:
        if flag in args.opts:
            setattr(args, flag[2:], True)
    args.opts = [item for item in args.opts if item not in flags]
    stray = [item for item in args.opts if item.startswith("--")]
    if stray:
        raise SystemExit(f"unknown option {stray[0]} among the KEY VALUE overrides")


def _train(args: argparse.Namespace) -> None:
    from .engine import Trainer

    _flags_out_of_overrides(args, TRAIN_FLAGS)
    cfg = load_cfg(args.config, args.opts)
    summary = Trainer(cfg, resume=args.resume, overwrite=args.overwrite).train()
    print(json.dumps(summary, indent=2))


def _eval(args: argparse.Namespace) -> None:
    from .engine.evaluate import evaluate_checkpoint

    _flags_out_of_overrides(args, ())
    cfg = load_cfg(args.config, args.opts)
    result = evaluate_checkpoint(cfg, args.checkpoint)
    print(json.dumps(result, indent=2))


def _bench(args: argparse.Namespace) -> None:
    from .bench import run_grid, run_speed

    if args.speed:
        run_speed(args)
    else:
        if not args.grid:
            raise SystemExit("bench needs --grid FILE or --speed")
        run_grid(args.grid, output_dir=args.output_dir, dry_run=args.dry_run)


def _report(args: argparse.Namespace) -> None:
    from .bench import report_results

    rows = report_results(args.results, args.output, reference=args.reference)
    print(f"{len(rows)} runs from {len(args.results)} results.csv files -> {args.output}/results.md")


def _analyze(args: argparse.Namespace) -> None:
    from .analysis import analyze

    result = analyze(args.run, args.output, device=args.device)
    print(json.dumps(result, indent=2))


def _positive_int(text: str) -> int:
    """argparse type of counts (batch size, steps, rounds): an integer >= 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m classification", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    train = sub.add_parser("train", help="train one run (teacher, baseline or distilled student)")
    train.add_argument("--config", required=True, help="YAML config file")
    train.add_argument("--resume", action="store_true",
                       help="continue from OUTPUT_DIR/last.pth (may change only SOLVER.EPOCHS, SOLVER.LR and the "
                            "run-environment keys)")
    train.add_argument("--overwrite", action="store_true",
                       help="delete the run already in OUTPUT_DIR (each file is named in the log) and start over")
    train.add_argument("opts", nargs=argparse.REMAINDER, help="KEY VALUE overrides, e.g. SOLVER.EPOCHS 10")
    train.set_defaults(func=_train)

    evaluate = sub.add_parser("eval", help="top-1/top-5 of a checkpoint's network on the config's test split")
    evaluate.add_argument("--config", required=True)
    evaluate.add_argument("--checkpoint", required=True, help="a run's last.pth / best_student.pth or a state dict")
    evaluate.add_argument("opts", nargs=argparse.REMAINDER)
    evaluate.set_defaults(func=_eval)

    bench = sub.add_parser("bench", help="run a grid of pairs x methods x seeds, or the speed benchmark")
    bench.add_argument("--grid", help="bench grid YAML (see classification/configs/bench/)")
    bench.add_argument("--output-dir", help="override the grid's output folder")
    bench.add_argument("--dry-run", action="store_true", help="print the runs without training")
    bench.add_argument("--speed", action="store_true", help="time the distillers' training steps")
    bench.add_argument("--student", default="resnet8x4")
    bench.add_argument("--teacher", default="resnet32x4")
    bench.add_argument("--methods", nargs="+", help='methods to time (default: all, and hybrids such as "kd+fitnet")')
    bench.add_argument("--batch-size", type=_positive_int, default=64)
    bench.add_argument("--steps", type=_positive_int, default=10, help="timed steps per round")
    bench.add_argument("--rounds", type=_positive_int, default=3,
                       help="interleaved rounds; the median step is reported")
    bench.add_argument("--device", default="auto")
    bench.set_defaults(func=_bench)

    report = sub.add_parser("report", help="one bench report from the results.csv files of a grid's parts")
    report.add_argument("--results", nargs="+", required=True,
                        help="results.csv files written by bench; a cell in several must agree in each")
    report.add_argument("--output", required=True, help="folder for results.csv, methods.csv, results.md, results.png")
    report.add_argument("--reference", help="a method to compare every method with on validation top-1 (a grid's "
                                            "`reference`)")
    report.set_defaults(func=_report)

    analyze = sub.add_parser("analyze", help="the UniKD paper's analyses (Figs. 3-5) of finished runs")
    analyze.add_argument("--run", action="append", required=True,
                         help="a finished run folder (config.yaml, best_student.pth, metrics.csv); repeat for more")
    analyze.add_argument("--output", required=True,
                         help="folder for loss_curves.png, logit_diff_cdf.png, corr_diff.png and analysis.json")
    analyze.add_argument("--device", default="cpu")
    analyze.set_defaults(func=_analyze)
    return parser


def main(argv: list[str] | None = None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    args = build_parser().parse_args(argv)
    args.func(args)


if __name__ == "__main__":
    main(sys.argv[1:])
