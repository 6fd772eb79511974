#!/usr/bin/env python
"""How closely trained detection students follow their teacher: the CDF of |student - teacher| ROI class
logits on the same boxes (the detection counterpart of the UniKD paper's Figure 4).

    python tools/analyze_det.py --config-file CONFIG [CONFIG ...] --weights WEIGHTS [WEIGHTS ...] \
        [--labels LABEL ...] [--dataset fashion_mosaic_val] [--output output/analyze_det] [KEY VALUE ...]

Each config is paired with the weights at the same position. The KEY VALUE overrides come last, after an option
that takes one value (`--output` or `--dataset`): after a list option they would be read as more list items. A
config without distillation (a plain student) needs the teacher named by overrides: `DISTILL.TEACHER.CONFIG ...
DISTILL.TEACHER.WEIGHTS ...` (the overrides apply to every config). Writes `roi_logit_diff_cdf.png` (one curve
per student) and `roi_logit_diff.json` (per student: ROI count, mean |difference|, the CDF at a few thresholds,
and the mean |corr_s - corr_t| of the class-logit correlation matrices).
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from detectron2.config import get_cfg  # noqa: E402
from detectron2.utils.logger import setup_logger  # noqa: E402

from unikd_det import add_distill_config  # noqa: E402
from unikd_det.analysis import load_student, load_teacher, roi_logit_pairs  # noqa: E402
from unikd.core.cli import DEBUG_FLAG, add_debug_argument, run_main  # noqa: E402
from unikd.core.logit_analysis import abs_logit_differences, logit_agreement, plot_difference_cdfs  # noqa: E402
from unikd_det.config import merge_config_file  # noqa: E402
from unikd_det.data import register_builtin_datasets  # noqa: E402
from unikd_det.data.register import register_coco_datasets  # noqa: E402


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config-file", nargs="+", required=True, help="the students' training configs")
    parser.add_argument("--weights", nargs="+", required=True, help="the students' checkpoints, in the same order")
    parser.add_argument("--labels", nargs="+", help="curve names (default: each config's file name)")
    parser.add_argument("--dataset", help="registered dataset to score (default: the config's first DATASETS.TEST)")
    parser.add_argument("--output", default=str(REPO / "output" / "analyze_det"))
    parser.add_argument("--data-dir", default=str(REPO / "datasets" / "fashion_mosaic"),
                        help="where the built-in mosaic sets live (generated on first use)")
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="KEY VALUE overrides for every config")
    add_debug_argument(parser)
    return parser


def main(argv: list[str] | None = None) -> dict:
    args = build_parser().parse_args(argv)
    args.opts = [opt for opt in args.opts if opt != DEBUG_FLAG]  # given after the overrides, REMAINDER took it
    labels = args.labels or [Path(c).stem for c in args.config_file]
    if not len(args.config_file) == len(args.weights) == len(labels):
        raise SystemExit("--config-file, --weights and --labels must list the same number of entries")
    if len(set(labels)) != len(labels):
        raise SystemExit(f"labels must be distinct, got {labels}; name them with --labels")
    setup_logger(name="unikd_det")
    logger = logging.getLogger("unikd_det.analyze")
    results, curves = {}, {}
    for label, config_file, weights in zip(labels, args.config_file, args.weights):
        cfg = get_cfg()
        add_distill_config(cfg)
        merge_config_file(cfg, config_file)
        cfg.merge_from_list(args.opts)
        cfg.freeze()
        dataset = args.dataset or cfg.DATASETS.TEST[0]
        register_coco_datasets(cfg)
        register_builtin_datasets([dataset], args.data_dir)
        logger.info("%s: scoring %s with %s", label, dataset, weights)
        student_logits, teacher_logits = roi_logit_pairs(load_student(cfg, weights), load_teacher(cfg), cfg, dataset)
        curves[label] = abs_logit_differences(student_logits, teacher_logits)
        results[label] = {"config": config_file, "weights": weights, "dataset": dataset,
                          "rois": len(student_logits), **logit_agreement(student_logits, teacher_logits)}
    output = Path(args.output)
    output.mkdir(parents=True, exist_ok=True)
    plot_difference_cdfs(curves, output / "roi_logit_diff_cdf.png", "teacher-student ROI class-logit differences")
    (output / "roi_logit_diff.json").write_text(json.dumps(results, indent=2))
    print(json.dumps(results, indent=2))
    return results


if __name__ == "__main__":
    sys.exit(run_main(main))
