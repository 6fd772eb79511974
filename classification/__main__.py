"""Command line: `python -m classification {train,eval,bench,report,analyze} ...`."""
from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from unikd.bench.cli import add_report_arguments, add_run_arguments, positive_int
from unikd.core.cli import DEBUG_FLAG, add_debug_argument, run_main

from .config import load_cfg

# Flags that may also come after the KEY VALUE overrides of train and eval.
TRAIN_FLAGS = ("--resume", "--overwrite", DEBUG_FLAG)
EVAL_FLAGS = (DEBUG_FLAG,)


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
    from unikd.core.distributed import launch

    from .engine.trainer import train_run

    _flags_out_of_overrides(args, TRAIN_FLAGS)
    load_cfg(args.config, args.opts)  # a bad config fails here, once, before any worker starts
    launch(train_run, args.num_gpus, (args.config, args.opts, args.resume, args.overwrite), args.num_machines,
           args.machine_rank, args.dist_url)


def _eval(args: argparse.Namespace) -> None:
    from .engine.evaluate import evaluate_checkpoint

    _flags_out_of_overrides(args, EVAL_FLAGS)
    cfg = load_cfg(args.config, args.opts)
    result = evaluate_checkpoint(cfg, args.checkpoint)
    print(json.dumps(result, indent=2))


def _bench(args: argparse.Namespace) -> None:
    from unikd.bench.cli import run_from_args

    from .bench import run_data_speed, run_speed

    if args.speed:
        run_speed(args, output=args.speed_output)
    elif args.data_speed:
        run_data_speed(args, output=args.speed_output)
    elif not args.grid:
        raise ValueError("bench needs --grid FILE, --speed or --data-speed")
    else:
        run_from_args(args)


def _report(args: argparse.Namespace) -> None:
    from unikd.bench.cli import report_from_args

    report_from_args(args, "classification")


def _analyze(args: argparse.Namespace) -> None:
    from .analysis import analyze

    result = analyze(args.run, args.output, device=args.device)
    print(json.dumps(result, indent=2))


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
    train.add_argument("--num-gpus", type=positive_int, default=1,
                       help="processes per machine (DDP; on a machine without CUDA, CPU processes over gloo)")
    train.add_argument("--num-machines", type=positive_int, default=1)
    train.add_argument("--machine-rank", type=int, default=0, help="this machine's rank, 0 .. num-machines - 1")
    train.add_argument("--dist-url", default="auto",
                       help="rendezvous tcp://HOST:PORT of machine 0 (auto: a free local port, one machine)")
    train.add_argument("opts", nargs=argparse.REMAINDER, help="KEY VALUE overrides, e.g. SOLVER.EPOCHS 10")
    train.set_defaults(func=_train)

    evaluate = sub.add_parser("eval", help="top-1/top-5 of a checkpoint's network on the config's test split")
    evaluate.add_argument("--config", required=True)
    evaluate.add_argument("--checkpoint", required=True, help="a run's last.pth / best_student.pth or a state dict")
    evaluate.add_argument("opts", nargs=argparse.REMAINDER)
    evaluate.set_defaults(func=_eval)

    bench = sub.add_parser("bench", help="run bench grids of pairs x methods x seeds (unikd.bench), or the speed "
                                          "benchmark")
    add_run_arguments(bench, grid_required=False)
    bench.add_argument("--speed", action="store_true", help="time the distillers' training steps")
    bench.add_argument("--student", default="resnet8x4")
    bench.add_argument("--teacher", default="resnet32x4")
    bench.add_argument("--methods", nargs="+", help='methods to time (default: all, and hybrids such as "kd+fitnet")')
    bench.add_argument("--batch-size", type=positive_int, default=64)
    bench.add_argument("--steps", type=positive_int, default=10, help="timed steps per round")
    bench.add_argument("--rounds", type=positive_int, default=3,
                       help="interleaved rounds; the median step is reported")
    bench.add_argument("--device", default="auto")
    bench.add_argument("--compile", action="store_true",
                       help="with --speed: also time every step with its networks compiled (TRAIN.COMPILE)")
    bench.add_argument("--speed-output", type=Path,
                       help="with --speed or --data-speed: also write the measurement, table and machine as JSON")
    bench.add_argument("--data-speed", action="store_true",
                       help="images/s of the image-folder training loader (classification/bench/data_speed.py)")
    bench.add_argument("--data-root", type=Path,
                       help="with --data-speed: an image folder to read (default: synthetic JPEGs in a temp dir)")
    bench.add_argument("--images", type=positive_int, default=256, help="with --data-speed: synthetic JPEGs")
    bench.add_argument("--workers", type=int, nargs="+", default=[0, 2],
                       help="with --data-speed: DataLoader worker counts to time")
    bench.add_argument("--image-size", type=positive_int,
                       help="input side: --speed 32 by default (above 64 the ImageNet zoo, 1000 classes), "
                            "--data-speed's crops 224")
    bench.add_argument("--fp32", action="store_true", help="with --speed on CUDA: AMP off (TRAIN.AMP False)")
    bench.add_argument("--no-channels-last", action="store_true",
                       help="with --speed: TRAIN.CHANNELS_LAST False")
    bench.add_argument("--batches", type=positive_int, default=20, help="with --data-speed: timed batches")
    bench.set_defaults(func=_bench)

    report = sub.add_parser("report", help="one bench report from the results.csv files of a grid's parts")
    add_report_arguments(report)
    report.set_defaults(func=_report)

    analyze = sub.add_parser("analyze", help="the UniKD paper's analyses (Figs. 3-5) of finished runs")
    analyze.add_argument("--run", action="append", required=True,
                         help="a finished run folder (config.yaml, best_student.pth, metrics.csv); repeat for more")
    analyze.add_argument("--output", required=True,
                         help="folder for loss_curves.png, logit_diff_cdf.png, corr_diff.png and analysis.json")
    analyze.add_argument("--device", default="cpu")
    analyze.set_defaults(func=_analyze)
    for command in sub.choices.values():
        add_debug_argument(command)
    return parser


def main(argv: list[str] | None = None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    args = build_parser().parse_args(argv)
    args.func(args)


if __name__ == "__main__":
    sys.exit(run_main(main))
