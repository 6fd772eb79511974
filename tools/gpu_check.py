#!/usr/bin/env python
"""The prepared GPU check (run by tools/gpu_check.sh): every CUDA path of the project once, one table at the end.

    .venv/bin/python tools/gpu_check.py [--output-dir output/gpu_check] [--quick]

On a CUDA machine, in about 8 minutes on one H100 (`--quick`: fewer methods and steps):
  1. `bench --speed`, resnet32x4 -> resnet8x4 at batch 64 (32 px): AMP and channels_last on (the defaults), AMP off,
     channels_last off, and compiled (`--compile`); ratios to the floor and peak memory per method;
  2. `bench --speed`, ResNet34 -> ResNet18 at batch 256 (224 px), AMP on and off;
  3. two epochs of Fashion-MNIST KD on the GPU with AMP and in fp32: top-1 equal within noise (|diff| <= 2 points);
  4. `train --num-gpus 1` against a plain run: the same summary (one GPU starts no process group);
  5. the detection speed bench at 512 px with float16 autocast (SOLVER.AMP.ENABLED) and without;
  6. a 20-iteration DistillRCNN (UniKD) training under Detectron2's AMPTrainer, from a 20-iteration teacher:
     finite losses (Detectron2 raises FloatingPointError otherwise).
Each step's full output is in `<output-dir>/<step>.log` and its JSON records beside it; a step that fails is a
FAILED row, and the check goes on. The data sets must be on the machine: Fashion-MNIST (installing.md) for step
3 and the built-in mosaics (datasets/fashion_mosaic) for steps 5 and 6; a step without its data says so. Nothing
here runs in the tests (they never need a GPU).
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PY = sys.executable
CIFAR_METHODS = ["kd", "dkd", "dist", "fitnet", "at", "ofd", "reviewkd", "crd", "mlkd", "unikd", "slkd"]
IMAGENET_METHODS = ["kd", "dkd", "reviewkd", "unikd"]
QUICK_METHODS = ["kd", "unikd"]
FASHION_TEACHER = ["--config", "classification/configs/fashion_mnist/teacher_resnet56.yaml", "MODEL.STUDENT",
                   "resnet20", "DATASET.TRAIN_SUBSET", 10000, "SOLVER.EPOCHS", 2]
FASHION_KD = "classification/configs/fashion_mnist/res56_res20/kd.yaml"


class Check:
    """Runs the steps, keeps one row per result and prints the table."""

    def __init__(self, output_dir: Path) -> None:
        self.output_dir = output_dir
        self.rows: list[list[str]] = []

    def run(self, step: str, command: list, timeout: int = 300) -> bool:
        """Run `command` (its output to <step>.log); a FAILED row when it fails or times out."""
        log = self.output_dir / f"{step}.log"
        start = time.perf_counter()
        with log.open("w") as out:
            try:
                done = subprocess.run([str(part) for part in command], cwd=REPO, stdout=out, stderr=subprocess.STDOUT,
                                      timeout=timeout)
                ok = done.returncode == 0
                why = f"exit {done.returncode}"
            except subprocess.TimeoutExpired:
                ok, why = False, f"over {timeout} s"
        if not ok:
            self.add(step, "", f"FAILED ({why}; see {log.name})", time.perf_counter() - start)
        return ok

    def add(self, step: str, setting: str, result: str, seconds: float | None = None) -> None:
        self.rows.append([step, setting, result, "" if seconds is None else f"{seconds:.0f}"])
        print(f"{step} | {setting} | {result}", flush=True)

    def table(self) -> str:
        from unikd.bench.speed import render_table

        return render_table(self.rows, ["check", "setting", "result", "s"])


def speed(check: Check, step: str, setting: str, methods: list[str], extra: list) -> None:
    """One `bench --speed` run: a row per method with its ratio, milliseconds and peak MiB."""
    record = check.output_dir / f"{step}.json"
    if not check.run(step, [PY, "-m", "classification", "bench", "--speed", "--device", "cuda", "--methods",
                            *methods, *extra, "--speed-output", record], timeout=600):
        return
    data = json.loads(record.read_text())
    for variant, entry in data["ratios"].items():
        steps = data["steps"][variant]
        check.add(step, f"{setting}, {variant}", f"ratio {entry['ratio']:.3f}, {1000 * steps['median_s']:.1f} ms, "
                  f"peak {steps['peak_mib']:.0f} MiB")


def summary_top1(check: Check, step: str, command: list, run_dir: Path) -> float | None:
    """Test top-1 at the selected epoch of a `train` run into `run_dir` (its summary.json), None when it failed."""
    if not check.run(step, [*command, "OUTPUT_DIR", run_dir, "--overwrite"]):
        return None
    return json.loads((run_dir / "summary.json").read_text())["test_top1_selected"]


def fashion_mnist(check: Check, out: Path) -> None:
    """Steps 3 and 4: KD with AMP against fp32, and --num-gpus 1 against a plain run."""
    train = [PY, "-m", "classification", "train"]
    common = ["TRAIN.DEVICE", "cuda", "TRAIN.PROGRESS", False, "SOLVER.EPOCHS", 2, "SOLVER.MILESTONES", [1]]
    teacher = out / "fashion_teacher"
    if not check.run("fashion_teacher", [*train, *FASHION_TEACHER, *common, "OUTPUT_DIR", teacher, "--overwrite"]):
        return
    kd = ["--config", FASHION_KD, *common, "MODEL.TEACHER", "resnet20", "MODEL.TEACHER_CHECKPOINT",
          teacher / "last.pth"]
    amp = summary_top1(check, "fashion_kd_amp", [*train, *kd], out / "kd_amp")
    fp32 = summary_top1(check, "fashion_kd_fp32", [*train, *kd, "TRAIN.AMP", False], out / "kd_fp32")
    if amp is not None and fp32 is not None:
        verdict = "equal within noise" if abs(amp - fp32) <= 2.0 else "DIFFERENT"
        check.add("fashion_kd", "2 epochs, AMP vs fp32", f"top-1 {amp:.2f} vs {fp32:.2f}: {verdict}")
    one = summary_top1(check, "ddp_one_gpu", [*train, "--num-gpus", 1, *kd], out / "kd_ddp1")
    if one is not None and amp is not None:
        check.add("ddp_one_gpu", "--num-gpus 1 vs plain (AMP)", f"top-1 {one:.2f} vs {amp:.2f}: "
                  + ("equal" if one == amp else "DIFFERENT"))


def detection(check: Check, out: Path, quick: bool) -> None:
    """Steps 5 and 6 on the built-in mosaics."""
    rounds = ["--iters", 2, "--rounds", 2] if quick else ["--iters", 3, "--rounds", 3]
    for amp in (True, False):
        step = f"det_speed_{'amp' if amp else 'fp32'}"
        record = out / f"{step}.json"
        if check.run(step, [PY, "tools/benchmark_det.py", "--device", "cuda", "--size", 512, *rounds,
                            *(["--amp"] if amp else []), "--output", record], timeout=600):
            for variant, entry in json.loads(record.read_text())["ratios"].items():
                check.add(step, f"512 px, {variant}", f"ratio {entry['ratio']:.3f}")
    net = [PY, "tools/train_net.py", "--config-file"]
    iters = ["SOLVER.MAX_ITER", 20, "SOLVER.AMP.ENABLED", True, "MODEL.DEVICE", "cuda"]
    teacher = out / "det_teacher"
    if not check.run("det_teacher", [*net, "configs/Demo/teacher-R18.yaml", *iters, "OUTPUT_DIR", teacher], 600):
        return
    if check.run("det_unikd_amp", [*net, "configs/Demo/UniKD-R18.yaml", *iters, "DISTILL.TEACHER.WEIGHTS",
                                   teacher / "model_final.pth", "OUTPUT_DIR", out / "det_unikd"], 600):
        check.add("det_unikd_amp", "20 iterations, AMPTrainer", "finite losses (training finished)")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output-dir", type=Path, default=REPO / "output" / "gpu_check")
    parser.add_argument("--quick", action="store_true", help="two methods and fewer timed steps per speed run")
    args = parser.parse_args(argv)
    import torch

    if not torch.cuda.is_available():
        raise SystemExit("error: the GPU check needs CUDA (torch.cuda.is_available() is False)")
    out = args.output_dir.resolve()
    out.mkdir(parents=True, exist_ok=True)
    check = Check(out)
    check.add("device", "", f"{torch.cuda.get_device_name()}, torch {torch.__version__}")
    methods = QUICK_METHODS if args.quick else CIFAR_METHODS
    steps = ["--steps", 5, "--rounds", 2] if args.quick else ["--steps", 10, "--rounds", 3]
    cifar = ["--teacher", "resnet32x4", "--student", "resnet8x4", "--batch-size", 64, *steps]
    speed(check, "cls_speed_amp", "res32x4->res8x4 b64, AMP, channels_last", methods, cifar)
    speed(check, "cls_speed_fp32", "res32x4->res8x4 b64, fp32", methods, [*cifar, "--fp32"])
    speed(check, "cls_speed_nchw", "res32x4->res8x4 b64, AMP, NCHW", methods, [*cifar, "--no-channels-last"])
    speed(check, "cls_speed_compiled", "res32x4->res8x4 b64, AMP, compiled", ["kd"], [*cifar, "--compile"])
    imagenet = ["--teacher", "ResNet34", "--student", "ResNet18", "--batch-size", 256, "--image-size", 224,
                "--steps", 3, "--rounds", 2]
    imagenet_methods = QUICK_METHODS if args.quick else IMAGENET_METHODS
    speed(check, "imagenet_speed_amp", "R34->R18 b256 224px, AMP", imagenet_methods, imagenet)
    speed(check, "imagenet_speed_fp32", "R34->R18 b256 224px, fp32", imagenet_methods, [*imagenet, "--fp32"])
    fashion_mnist(check, out)
    detection(check, out, args.quick)
    table = check.table()
    (out / "table.md").write_text(table + "\n")
    print(f"\nGPU check, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}\n{table}")


if __name__ == "__main__":
    main()
