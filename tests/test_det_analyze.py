"""tools/analyze_det.py: teacher and student ROI logits on the same boxes, the CDF figure and its numbers."""
from __future__ import annotations

import importlib.util
import json
import shlex
import subprocess

import pytest
import torch
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.modeling import build_model

from conftest import REPO_ROOT


def _tool():
    spec = importlib.util.spec_from_file_location("analyze_det_tool", REPO_ROOT / "tools" / "analyze_det.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _saved(cfg, path, seed):
    torch.manual_seed(seed)
    model = build_model(cfg)
    DetectionCheckpointer(model, save_dir=str(path.parent)).save(path.stem)
    config = path.with_suffix(".yaml")
    config.write_text(cfg.dump())
    return config, path


def test_the_teacher_as_its_own_student_differs_nowhere(tmp_path, trainer_cfg, teacher_files, mosaic_data):
    teacher_config, teacher_weights = teacher_files
    opts = ["DISTILL.TEACHER.CONFIG", str(teacher_config), "DISTILL.TEACHER.WEIGHTS", str(teacher_weights),
            "DATASETS.TEST", f"('{mosaic_data[1]}',)"]
    result = _tool().main(["--config-file", str(teacher_config), "--weights", str(teacher_weights),
                           "--labels", "self", "--output", str(tmp_path / "out"), *opts])["self"]
    assert result["rois"] > 0 and result["mean_abs_logit_diff"] == 0.0 and result["mean_abs_corr_diff"] == 0.0
    assert all(value == 1.0 for value in result["logit_diff_cdf"].values())


def test_two_students_give_one_curve_each_with_their_roi_counts(tmp_path, trainer_cfg, mosaic_data):
    cfg = trainer_cfg(unikd=True)
    cfg.DATASETS.TEST = (mosaic_data[1],)
    configs, weights = zip(*[_saved(cfg, tmp_path / f"student{seed}.pth", seed) for seed in (0, 1)])
    out = tmp_path / "out"
    results = _tool().main(["--config-file", *map(str, configs), "--weights", *map(str, weights),
                            "--labels", "a", "b", "--output", str(out)])
    assert json.loads((out / "roi_logit_diff.json").read_text()) == results
    assert (out / "roi_logit_diff_cdf.png").stat().st_size > 1000
    # Each image contributes at most POST_NMS_TOPK_TEST boxes, scored over NUM_CLASSES + 1 logits.
    for entry in results.values():
        assert 0 < entry["rois"] <= 8 * cfg.MODEL.RPN.POST_NMS_TOPK_TEST and entry["mean_abs_logit_diff"] > 0
        assert list(entry["logit_diff_cdf"]) == ["0.25", "0.5", "1", "2"]
    assert results["a"]["mean_abs_logit_diff"] != results["b"]["mean_abs_logit_diff"]


def test_mismatched_argument_counts_are_refused(tmp_path):
    with pytest.raises(SystemExit, match="same number"):
        _tool().main(["--config-file", "a.yaml", "b.yaml", "--weights", "a.pth"])


def test_make_bench_det_passes_the_teacher_as_overrides_not_as_labels():
    """The Makefile's analyze_det command line, as `make -n` prints it, parses into one label per student and the
    teacher overrides (a KEY VALUE list after `--labels` would be read as more labels)."""
    printed = subprocess.run(["make", "-n", "--no-print-directory", "bench-det"], cwd=REPO_ROOT, capture_output=True,
                             text=True, check=True).stdout
    lines = printed[printed.index("tools/analyze_det.py"):].splitlines()
    end = next(i for i, line in enumerate(lines) if not line.endswith("\\"))  # the command's last line
    command = shlex.split(" ".join(line.rstrip("\\") for line in lines[:end + 1]))
    args = _tool().build_parser().parse_args(command[1:])
    assert len(args.config_file) == len(args.weights) == len(args.labels) == 6
    assert args.opts[::2] == ["DISTILL.TEACHER.CONFIG", "DISTILL.TEACHER.WEIGHTS"]
