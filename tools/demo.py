#!/usr/bin/env python
"""The main job on built-in data: detection (teacher, student, UniKD student; an AP table), then
classification (teacher, then students without KD, with KD and with UniKD; a top-1 table).

    python tools/demo.py [--teacher-config configs/Demo/teacher-R18.yaml] [--output-dir output/demo] [--fresh]
                         [--part all|detection|classification] [--det-methods student unikd ...] [--seeds 0 1 2]
                         [--jobs 2] [--threads 1]

Detection:

1. Generates (once) the Fashion-MNIST mosaic detection set and registers it.
2. Trains the teacher (default: ResNet-18 FPN for 250 iterations on all 2000 training canvases; from
   scratch on the CPU it ends clearly stronger than an R50-FPN could in the same minutes).
3. Trains the ResNet-18 FPN student alone for 125 iterations on the first 500 canvases, two epochs with the
   LR x0.1 after iteration 100 (configs/Demo/student-R18.yaml; the schedule is Base-Mosaic.yaml's).
4. Trains the same student with UniKD from that teacher (configs/Demo/UniKD-R18.yaml).
5. Evaluates the three with COCOEvaluator on the validation mosaics and prints AP/AP50/AP75.
`--det-methods` replaces steps 3-4 by any of the STUDENT_STAGES below (the same schedule, seed and initial
weights for each), e.g. the README's baseline table:
`--teacher-config configs/Demo/teacher-R50.yaml --det-methods student kd dkd fitnet fitnet_kd reviewkd unikd`.

One seed (the configs' SEED, the default) does not rank methods: the difference between seeds is as large
as the effects. `--seeds 0 1 2` trains the teacher once and every student stage once per seed (SEED; folders
`seed<k>/<method>`), and prints each method's mean +- sample std of AP/AP50/AP75 over the seeds and its paired
difference to the plain student (`student` must be among the methods) with a 95% t-interval over the seeds
(`unikd.core.stats`): a method is ranked against the student only where that interval excludes zero.
With --seeds every stage is scored on the validation mosaics (the reported table) and on the holdout mosaics
(training-split items no training canvas shows: the table to choose schedules and defaults on). The per-seed
numbers of both go to results.json. `make bench-det` runs the README's comparison this way.

Classification (classification/configs/bench/fashion_mnist_demo.yaml, run by the bench grid runner):
a resnet20 teacher on 27.5k of the Fashion-MNIST training images outside the validation split for 2 epochs,
then resnet20 students on a 3000-image subset for 5 epochs without KD, with KD and with UniKD; each selects its
epoch (4 or 5) on the 5000 validation images; top-1 on the 10k test images.

Every stage checkpoints and resumes: rerunning after an interruption continues where it stopped, and a
finished stage's numbers are read from its result.json. `--fresh` deletes the output folder first. `--jobs 2`
trains two stages at once in two processes (`unikd_det.stage_queue`: each stage under its folder's lock;
students without a teacher start while the teacher trains, and the classification grid is one more stage,
taken by the process that runs out of detection stages first), and `--threads` pins the torch threads of each
process: the weights are bit-identical only at one thread count, whichever process trains a stage. `make demo`
runs `--jobs 2 --threads 1`.
"""
from __future__ import annotations

import argparse
import json
import logging
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import NamedTuple

import torch

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from detectron2.config import CfgNode, get_cfg  # noqa: E402
from detectron2.utils.env import seed_all_rng  # noqa: E402
from detectron2.utils.logger import setup_logger  # noqa: E402
from tabulate import tabulate  # noqa: E402

from classification.bench import run_grid  # noqa: E402
from unikd_det import add_distill_config  # noqa: E402
from unikd_det.config import merge_config_file  # noqa: E402
from unikd.core.stats import PairedDifference, mean_std, paired_difference  # noqa: E402
from unikd_det.data import register_fashion_mosaic  # noqa: E402
from unikd_det.data.register import HOLDOUT_NAME, VAL_NAME  # noqa: E402
from unikd_det.stage_queue import QueuedStage, run_stages  # noqa: E402
from unikd_det.trainer import DistillTrainer  # noqa: E402


class Stage(NamedTuple):
    """A student stage: its table title, its config and `KEY VALUE` overrides on top of that config."""

    title: str
    config: str
    opts: tuple[str, ...] = ()


UNIKD_CONFIG = "configs/Demo/UniKD-R18.yaml"
# Student stages by method name. `--det-methods` picks and orders them.
STUDENT_STAGES = {
    "student": Stage("Student R18-FPN (no KD)", "configs/Demo/student-R18.yaml"),
    "kd": Stage("Student R18-FPN + ROI-KD", "configs/Demo/KD-R18.yaml"),
    "dkd": Stage("Student R18-FPN + DKD", "configs/Demo/DKD-R18.yaml"),
    "fitnet": Stage("Student R18-FPN + FitNet", "configs/Demo/FitNet-R18.yaml"),
    "fitnet_kd": Stage("Student R18-FPN + FitNet + KD", "configs/Demo/FitNet-KD-R18.yaml"),
    "reviewkd": Stage("Student R18-FPN + ReviewKD (KR)", "configs/Demo/ReviewKD-R18.yaml"),
    "unikd": Stage("Student R18-FPN + UniKD", UNIKD_CONFIG),
}
# The detection UniKD ablation: the UniKD stage with one switch away from its default (p2..p6 fused by AFF of
# width 32, POOLER_RESOLUTION 4, ALPHA 1, LOGIT_LOSS kd, TARGET_FIT gaussian_nll, MODE paper).
ABLATION_STAGES = {
    "unikd_p5_only": Stage("UniKD, FDP on p5 alone (no AFF)", UNIKD_CONFIG,
                           ("DISTILL.UNIKD.IN_FEATURES", "['p5']", "DISTILL.UNIKD.AFF.ENABLED", "False")),
    "unikd_aff16": Stage("UniKD, AFF width 16", UNIKD_CONFIG, ("DISTILL.UNIKD.AFF.CHANNELS", "16")),
    "unikd_aff64": Stage("UniKD, AFF width 64", UNIKD_CONFIG, ("DISTILL.UNIKD.AFF.CHANNELS", "64")),
    "unikd_pool7": Stage("UniKD, POOLER_RESOLUTION 7", UNIKD_CONFIG, ("DISTILL.UNIKD.POOLER_RESOLUTION", "7")),
    "unikd_alpha0.5": Stage("UniKD, ALPHA 0.5", UNIKD_CONFIG, ("DISTILL.UNIKD.ALPHA", "0.5")),
    "unikd_alpha2": Stage("UniKD, ALPHA 2", UNIKD_CONFIG, ("DISTILL.UNIKD.ALPHA", "2.0")),
    "unikd_logit_dkd": Stage("UniKD, LOGIT_LOSS dkd", UNIKD_CONFIG, ("DISTILL.UNIKD.LOGIT_LOSS", "dkd")),
    "unikd_logit_none": Stage("UniKD, LOGIT_LOSS none", UNIKD_CONFIG, ("DISTILL.UNIKD.LOGIT_LOSS", "none")),
    "unikd_no_target_fit": Stage("UniKD, TARGET_FIT none", UNIKD_CONFIG, ("DISTILL.UNIKD.TARGET_FIT", "none")),
    "unikd_authors_code": Stage("UniKD, MODE authors_code", UNIKD_CONFIG, ("DISTILL.UNIKD.MODE", "authors_code")),
}
STUDENT_STAGES.update(ABLATION_STAGES)
DEFAULT_DET_METHODS = ("student", "unikd")
TITLE = "COCO box AP on the Fashion-MNIST mosaic validation set (200 images, 128x128)"
HOLDOUT_TITLE = ("COCO box AP on the holdout mosaics (200 images from training-split items no training canvas "
                 "shows; the split for choosing schedules and defaults, not the reported one)")
# --seeds evaluates every stage on both, one table each: the reported split, and the holdout choices are made on.
SEEDS_TEST_SETS = {VAL_NAME: TITLE, HOLDOUT_NAME: HOLDOUT_TITLE}
BASELINE = "student"  # the method every other one is compared with over seeds
# Also compared with, in AP, when among the methods: ROI-KD (the reference for the UniKD ablation) and
# UniKD at its defaults (what each ablation stage changes one switch of), by method name and table name.
AP_REFERENCES = {"kd": "ROI-KD", "unikd": "UniKD"}
CONFIDENCE = 0.95
METRICS = ("AP", "AP50", "AP75")
CLASSIFICATION_GRID = REPO / "classification" / "configs" / "bench" / "fashion_mnist_demo.yaml"
CLASSIFICATION_KEY = "classification"  # the classification part's stage (and folder) among the detection stages
CLASSIFICATION_TEST_SET = "fashion_mnist_test"


def stage_config(config_file: str, output_dir: Path, teacher_config: str, teacher_weights: Path,
                 seed: int | None = None, test_sets: tuple[str, ...] | None = None,
                 opts: tuple[str, ...] = ()) -> CfgNode:
    """The stage's config (`config_file`, then the `KEY VALUE` overrides `opts`), writing to `output_dir`,
    distilling from the demo's teacher; SEED = `seed` and DATASETS.TEST = `test_sets` where given."""
    cfg = get_cfg()
    add_distill_config(cfg)
    merge_config_file(cfg, str(REPO / config_file))
    cfg.merge_from_list(list(opts))
    cfg.OUTPUT_DIR = str(output_dir)
    if seed is not None:
        cfg.SEED = seed
    if test_sets is not None:
        cfg.DATASETS.TEST = test_sets
    if cfg.MODEL.META_ARCHITECTURE == "DistillRCNN":
        cfg.DISTILL.TEACHER.CONFIG = teacher_config
        cfg.DISTILL.TEACHER.WEIGHTS = str(teacher_weights)
    cfg.freeze()
    return cfg


def bbox_by_dataset(cfg: CfgNode, results: dict) -> dict[str, dict[str, float]]:
    """{test set name: its COCO box metrics} from `DefaultTrainer.test`'s result, which Detectron2 flattens to
    the one set's metrics when DATASETS.TEST names a single set."""
    names = cfg.DATASETS.TEST
    if len(names) == 1:
        return {names[0]: results["bbox"]}
    return {name: results[name]["bbox"] for name in names}


def train_and_evaluate(cfg: CfgNode) -> dict[str, dict[str, float]]:
    """Train (resuming from the stage's last checkpoint, if any) and evaluate with COCOEvaluator on every set of
    DATASETS.TEST; returns {set name: box metrics}.

    Seeding with cfg.SEED first gives both students the same initial weights and data order, so the
    table compares the methods rather than two random initialisations. On a resume the checkpoint's RNG states
    and data position take over (`DistillTrainer.load_state_dict`), so an interrupted stage ends with the weights
    of an uninterrupted one."""
    seed_all_rng(cfg.SEED)
    trainer = DistillTrainer(cfg)
    trainer.resume_or_load(resume=True)
    if trainer.start_iter < trainer.max_iter:
        trainer.train()  # DefaultTrainer's EvalHook evaluates once after the last iteration
        return bbox_by_dataset(cfg, trainer._last_eval_results)
    return bbox_by_dataset(cfg, DistillTrainer.test(cfg, trainer.model))


def student_folder(output: Path, method: str, seed: int | None) -> Path:
    """Where a student stage trains: `<method>` for the configs' own SEED, `seed<k>/<method>` with --seeds."""
    return output / method if seed is None else output / f"seed{seed}" / method


def summarize_seeds(results: dict[str, list[dict[str, float]]]) -> dict[str, dict]:
    """Per method: mean and sample std of each metric over the seeds; other than the BASELINE, the paired
    difference of each metric to the BASELINE over the same seeds with its CONFIDENCE t-interval; and the paired
    AP difference to each of the AP_REFERENCES among the methods other than itself ("reference_differences", by
    reference method). `results[method][i]` is the method's result with the i-th seed."""
    summary = {}
    for method, runs in results.items():
        entry = {"mean_std": {m: mean_std([run[m] for run in runs]) for m in METRICS}}
        if method != BASELINE:
            entry["difference"] = {
                m: paired_difference([run[m] for run in runs], [run[m] for run in results[BASELINE]], CONFIDENCE)
                for m in METRICS
            }
            entry["reference_differences"] = {
                reference: paired_difference([run["AP"] for run in runs],
                                             [run["AP"] for run in results[reference]], CONFIDENCE)
                for reference in AP_REFERENCES if reference in results and reference != method
            }
        summary[method] = entry
    return summary


def seeds_report(teacher_row: list, summary: dict[str, dict], iterations: dict[str, int], seeds: list[int],
                 title: str = TITLE) -> str:
    """The over-seeds table of one test set (mean +- std, paired differences to the plain student and, for each
    of the AP_REFERENCES that ran, the AP difference to it) and how to read it."""
    level = f"{CONFIDENCE:.0%}"
    references = [r for r in AP_REFERENCES if r in summary]
    headers = ["Model", "Iterations", *METRICS, *[f"{m} - student [{level} CI]" for m in METRICS]]
    headers += [f"AP - {AP_REFERENCES[r]} [{level} CI]" for r in references]
    blank = [""] * (len(headers) - 2 - len(METRICS))
    rows = [[*teacher_row[:2], *(f"{value:.2f}" for value in teacher_row[2:]), *blank]]

    def marked(diff: PairedDifference | None) -> str:
        return "" if diff is None else f"{diff}{' *' if diff.separated else ''}"

    ranked = []
    for method, entry in summary.items():
        cells = [f"{mean:.2f} +- {std:.2f}" for mean, std in entry["mean_std"].values()]
        differences = entry.get("difference", {})
        to_references = entry.get("reference_differences", {})
        cells += [marked(differences.get(m)) for m in METRICS]
        cells += [marked(to_references.get(r)) for r in references]
        rows.append([STUDENT_STAGES[method].title, iterations[method], *cells])
        compared = [("the plain student", differences.get("AP"))]
        compared += [(AP_REFERENCES[r], diff) for r, diff in to_references.items()]
        for reference, diff in compared:
            if diff is not None and diff.separated:
                ranked.append(f"{method} is {'above' if diff.mean > 0 else 'below'} {reference} in AP ({diff})")
    table = tabulate(rows, headers=headers, tablefmt="github")
    names = " or ".join(["the plain student", *(AP_REFERENCES[r] for r in references)])
    return "\n".join([
        f"{title}, {len(seeds)} seeds ({', '.join(map(str, seeds))}):",
        table,
        f"Mean +- sample std over the seeds (the teacher is trained once). 'X - Y': the mean paired difference of "
        f"metric X to method Y with the same seed (same initial weights and data order), with its {level} "
        f"t-interval over the seeds. Methods are ranked only where that interval excludes zero (*).",
        ("Ranked: " + "; ".join(ranked) + ".") if ranked
        else f"No method's AP differs from {names} at {level} confidence: this table ranks none.",
    ])


def one_seed_report(rows: list[list]) -> str:
    """The single-seed table, with the reason it ranks nothing."""
    table = tabulate(rows, headers=["Model", "Iterations", *METRICS], tablefmt="github")
    return (
        f"{TITLE}, one seed:\n" + table
        + "\nOne seed does not rank methods: between seeds the AP moves as much as the methods differ. "
        "`make bench-det` (tools/demo.py --seeds 0 1 2) compares them with paired 95% intervals over seeds."
    )


def queued_stages(args: argparse.Namespace, output: Path) -> list[tuple[Stage, str, Path, int | None]]:
    """The teacher, then every student stage of every seed: (stage, method name, folder, seed)."""
    stages = [(Stage("", args.teacher_config), "teacher", output / "teacher", None)]
    return stages + [(STUDENT_STAGES[m], m, student_folder(output, m, seed), seed)
                     for seed in args.seeds or [None] for m in args.det_methods]


class DetectionStage(NamedTuple):
    """A detection stage ready to queue: its position among the stages, table title, config file and config."""

    index: int
    title: str
    config_file: str
    cfg: CfgNode
    queued: QueuedStage


def detection_stages(args: argparse.Namespace, output: Path) -> dict[str, DetectionStage]:
    """The teacher and every student stage of every seed, by stage key (the folder relative to `output`)."""
    teacher_weights = output / "teacher" / "model_final.pth"
    test_sets = tuple(SEEDS_TEST_SETS) if args.seeds else None
    entries = {}
    for index, ((title, config_file, opts), name, folder, seed) in enumerate(queued_stages(args, output), 1):
        cfg = stage_config(config_file, folder, args.teacher_config, teacher_weights, seed, test_sets, opts)
        needs = ("teacher",) if cfg.MODEL.META_ARCHITECTURE == "DistillRCNN" else ()
        key = str(folder.relative_to(output))
        entries[key] = DetectionStage(index, title or f"Teacher R{cfg.MODEL.RESNETS.DEPTH}-FPN", config_file, cfg,
                                      QueuedStage(key, folder, tuple(cfg.DATASETS.TEST), needs))
    return entries


def train_stages(args: argparse.Namespace, detection: dict[str, DetectionStage], output: Path,
                 logger: logging.Logger) -> dict[str, dict]:
    """Bring the `detection` stages (`detection_stages`) and, when `args.part` has it, the classification part
    to a stored result (`unikd_det.stage_queue`: a stage another process holds is left to it, a finished one is
    read): the detection stages, then the classification grid as one stage, so with --jobs 2 the process that
    is done with its detection stages runs the classification part while the other trains the teacher and the
    students that need it. Returns {stage key: result}."""
    queue = [entry.queued for entry in detection.values()]
    if args.part in ("all", "classification"):
        queue.append(QueuedStage(CLASSIFICATION_KEY, output / CLASSIFICATION_KEY, (CLASSIFICATION_TEST_SET,)))
    start = time.perf_counter()

    def train(stage: QueuedStage) -> dict[str, dict[str, float]]:
        if stage.key == CLASSIFICATION_KEY:
            logger.info("[%d/%d] classification grid %s", len(queue), len(queue),
                        CLASSIFICATION_GRID.relative_to(REPO))
            return train_classification(stage.folder)
        index, title, config_file, cfg, _ = detection[stage.key]
        (stage.folder / "config.yaml").write_text(cfg.dump())  # what the stage ran with (tools/analyze_det.py)
        logger.info("[%d/%d] %s, seed %d: %d iterations (%s)", index, len(queue), title, cfg.SEED,
                    cfg.SOLVER.MAX_ITER, config_file)
        result = {test_set: {m: metrics[m] for m in METRICS} for test_set, metrics in train_and_evaluate(cfg).items()}
        logger.info("[%d/%d] %s done: AP %s (%.0f s elapsed)", index, len(queue), title,
                    ", ".join(f"{metrics['AP']:.2f} on {test_set}" for test_set, metrics in result.items()),
                    time.perf_counter() - start)
        return result

    return run_stages(queue, train)


def helper_command(args: argparse.Namespace, threads: int) -> list[str]:
    """The command line of one of the extra processes `--jobs` starts: the same stages, `threads` torch threads,
    training only (the first process writes the report)."""
    command = [sys.executable, str(Path(__file__).resolve()), "--part", args.part, "--stages-only",
               "--teacher-config", args.teacher_config, "--output-dir", str(Path(args.output_dir).resolve()),
               "--data-dir", str(Path(args.data_dir).resolve()),
               "--threads", str(threads), "--det-methods", *args.det_methods]
    return command + (["--seeds", *map(str, args.seeds)] if args.seeds else [])


def start_helpers(args: argparse.Namespace, output: Path, threads: int) -> list[tuple[subprocess.Popen, Path]]:
    """Start `args.jobs - 1` helper processes, each logging to output/helper<k>.log."""
    helpers = []
    for k in range(1, args.jobs):
        log = output / f"helper{k}.log"
        with open(log, "a", encoding="utf-8") as handle:
            helpers.append((subprocess.Popen(helper_command(args, threads), stdout=handle,
                                             stderr=subprocess.STDOUT, cwd=REPO), log))
    return helpers


def run_all_stages(args: argparse.Namespace, detection: dict[str, DetectionStage], output: Path,
                   logger: logging.Logger, threads: int) -> dict[str, dict]:
    """Train the `detection` stages and the classification part when `args.part` has it, with `args.jobs`
    processes of `threads` torch threads each (this one and `args.jobs - 1` helpers); returns {stage key:
    result}."""
    if detection:
        logger.info("Preparing the Fashion-MNIST mosaic data in %s", args.data_dir)
        register_fashion_mosaic(args.data_dir)
    helpers = start_helpers(args, output, threads)
    try:
        results = train_stages(args, detection, output, logger)
    except BaseException:
        for process, _ in helpers:
            process.terminate()
        raise
    failed = [str(log) for process, log in helpers if process.wait() != 0]
    if failed:
        raise RuntimeError(f"a helper process of --jobs failed; see {', '.join(failed)}")
    return results


def detection_report(args: argparse.Namespace, detection: dict[str, DetectionStage], output: Path,
                     results: dict[str, dict], threads: int) -> str:
    """The detection table(s) from the `detection` stages' results (also to results.md; the per-seed numbers of
    every test set to results.json). With --seeds every stage is scored on the validation mosaics (the reported
    table) and on the holdout mosaics (a second table, the one to choose schedules and defaults on)."""
    iterations = {key: entry.cfg.SOLVER.MAX_ITER for key, entry in detection.items()}
    seeds = args.seeds or [None]
    teacher_result = results["teacher"]
    teacher_title = detection["teacher"].title

    def key(method: str, seed: int | None) -> str:
        return str(student_folder(output, method, seed).relative_to(output))

    students = {m: [results[key(m, seed)] for seed in seeds] for m in args.det_methods}
    student_iterations = {m: iterations[key(m, seeds[0])] for m in args.det_methods}
    (output / "results.json").write_text(json.dumps({"seeds": seeds, "threads": threads, "teacher": teacher_result,
                                                     "students": students}, indent=2))
    reported = next(iter(teacher_result))  # the first test set: the configs' validation set

    def on(test_set: str) -> tuple[list, dict[str, list[dict[str, float]]]]:
        teacher = teacher_result[test_set]
        teacher_row = [teacher_title, iterations["teacher"]] + [round(teacher[m], 2) for m in METRICS]
        return teacher_row, {m: [run[test_set] for run in runs] for m, runs in students.items()}

    if len(seeds) == 1:
        teacher_row, by_method = on(reported)
        rows = [teacher_row] + [[STUDENT_STAGES[m].title, student_iterations[m],
                                 *(round(runs[0][k], 2) for k in METRICS)] for m, runs in by_method.items()]
        report = one_seed_report(rows)
    else:
        sections = []
        for test_set, title in SEEDS_TEST_SETS.items():
            teacher_row, by_method = on(test_set)
            sections.append(seeds_report(teacher_row, summarize_seeds(by_method), student_iterations, seeds, title))
        report = "\n\n".join(sections)
    (output / "results.md").write_text(report + "\n")
    return report


def train_classification(folder: Path) -> dict[str, dict[str, float]]:
    """Run the classification demo grid (resumable) into `folder`; returns {CLASSIFICATION_TEST_SET: {"teacher"
    and each method: test top-1}}, the stage's stored result."""
    setup_logger(name="classification")
    rows = run_grid(CLASSIFICATION_GRID, output_dir=folder, analyze_pairs=False)
    top1 = {row["method"]: row["test_top1_selected"] for row in rows}
    return {CLASSIFICATION_TEST_SET: {"teacher": rows[0]["teacher_top1"], **top1}}


def classification_report(output: Path) -> str:
    """The classification grid's top-1 table (its results.md), with the reason one seed ranks nothing."""
    folder = output / CLASSIFICATION_KEY
    return (
        "Fashion-MNIST top-1 (%), resnet20 teacher (27.5k images) -> resnet20 students (3000 images), "
        f"10k test images ({CLASSIFICATION_GRID.relative_to(REPO)}):\n" + (folder / "results.md").read_text()
        + "\nOne seed does not rank methods: on the bench, one method's top-1 moves by up to 3 points between seeds. "
        "The 3-seed bench with paired 95% intervals does (python -m classification bench --grid "
        "classification/configs/bench/fashion_mnist.yaml; its table is in the README).\n"
    )


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line, checked (distinct seeds, the plain student among the methods with --seeds, positive
    --jobs and --threads)."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--teacher-config", default="configs/Demo/teacher-R18.yaml")
    parser.add_argument("--output-dir", default=str(REPO / "output" / "demo"))
    parser.add_argument("--data-dir", default=str(REPO / "datasets" / "fashion_mosaic"))
    parser.add_argument("--fresh", action="store_true", help="delete the output folder and train from scratch")
    parser.add_argument("--part", choices=("all", "detection", "classification"), default="all")
    parser.add_argument("--det-methods", nargs="+", choices=sorted(STUDENT_STAGES), default=list(DEFAULT_DET_METHODS),
                        help="detection student stages after the teacher (default: %(default)s)")
    parser.add_argument("--seeds", nargs="+", type=int,
                        help="train every student stage once per seed (SEED; the teacher once) and compare the methods "
                             f"with the plain student over the seeds ('{BASELINE}' must be among --det-methods); "
                             "default: one run with the configs' SEED")
    parser.add_argument("--jobs", type=int, default=1,
                        help="detection stages trained at once, each in its own process (the extra ones log to "
                             "<output-dir>/helper<k>.log); a stage that needs the teacher waits for it")
    parser.add_argument("--threads", type=int,
                        help="torch threads per process (default: torch's default divided by --jobs). Results are "
                             "bit-identical only at the same thread count, so pin it to compare runs")
    parser.add_argument("--stages-only", action="store_true", help=argparse.SUPPRESS)  # a --jobs helper process
    args = parser.parse_args(argv)
    if args.jobs < 1 or (args.threads is not None and args.threads < 1):
        parser.error(f"--jobs and --threads must be >= 1, got {args.jobs} and {args.threads}")
    if args.seeds is not None and len(set(args.seeds)) != len(args.seeds):
        parser.error(f"--seeds must be distinct, got {args.seeds}")
    if args.seeds is not None and len(args.seeds) > 1 and BASELINE not in args.det_methods:
        parser.error(f"--seeds compares every method with '{BASELINE}': add it to --det-methods")
    return args


def main(argv: list[str] | None = None) -> list[str]:
    args = parse_args(argv)
    setup_logger(name="detectron2")
    logger = setup_logger(name="unikd_demo", abbrev_name="demo")
    logger.setLevel(logging.INFO)
    output = Path(args.output_dir)
    if args.fresh and output.exists():
        shutil.rmtree(output)
    output.mkdir(parents=True, exist_ok=True)
    threads = args.threads or max(1, torch.get_num_threads() // args.jobs)
    torch.set_num_threads(threads)
    logger.info("%d torch thread(s) per process, %d process(es)", threads, args.jobs)
    start = time.perf_counter()
    detection = detection_stages(args, output) if args.part in ("all", "detection") else {}
    results = run_all_stages(args, detection, output, logger, threads)
    if args.stages_only:
        return []
    tables = []
    if detection:
        tables.append(detection_report(args, detection, output, results, threads))
    if args.part in ("all", "classification"):
        tables.append(classification_report(output))
    print("\n" + "\n\n".join(tables))
    print(f"\nTotal time: {time.perf_counter() - start:.0f} s; tables saved under {output}")
    return tables


if __name__ == "__main__":
    main()
