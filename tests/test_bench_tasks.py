"""Real grids of both tasks through the one runner and report (unikd.bench): a 2-stage detection grid (a teacher
trained, then a ROI-KD student that waits for it) and a 2-cell classification grid on tiny synthetic data. Each
table is checked against the stages' own stored results, the terminal shows progress lines only, and each stage's
full log is in its log.txt."""
from __future__ import annotations

import csv
import json

import pytest

from unikd.bench.grid import load_grid
from unikd.bench.runner import run_grids

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


def _cells(report: str, *first: str) -> list[str]:
    """The cells of the table row of `report` that begins with the cells `first`."""
    row = next(line for line in report.splitlines() if line.startswith("| " + " | ".join(first) + " |"))
    return [cell.strip() for cell in row.strip("|").split("|")]


def _csv_rows(path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_a_two_stage_detection_grid_reports_its_stages_results(tmp_path, make_stock_cfg, write_teacher_config,
                                                               make_cfg, mosaic_data, capsys):
    train, val, holdout = mosaic_data
    short = ["DATASETS.TRAIN", f"('{train}',)", "SOLVER.MAX_ITER", 2, "SOLVER.CHECKPOINT_PERIOD", 1]
    write_teacher_config(make_stock_cfg(["MODEL.FPN.OUT_CHANNELS", 16, *short]), tmp_path / "teacher.yaml")
    student = make_cfg(kd=True, opts=short)
    (tmp_path / "kd.yaml").write_text(student.dump())
    grid = tmp_path / "grid.yaml"
    grid.write_text(f"task: detection\noutput_dir: {tmp_path / 'out'}\nteachers: {{t: {{config: teacher.yaml}}}}\n"
                    "pairs: [{teacher: t}]\nmethods: {kd: {config: kd.yaml, title: ROI-KD}}\nseeds: [3]\n"
                    f"evaluation: {{report: {val}, select: {holdout}}}\n")
    report = run_grids([load_grid(grid)], live=False)[0]
    out = tmp_path / "out"
    teacher = json.loads((out / "teachers" / "t" / "result.json").read_text())
    result = json.loads((out / "t" / "kd" / "seed3" / "result.json").read_text())
    assert set(result) == {val, holdout} and set(result[val]) == {"AP", "AP50", "AP75"}
    expected = [f"{result[val][m]:.2f}" for m in ("AP", "AP50", "AP75")]
    expected += [f"{teacher[val]['AP']:.2f}", f"{result[holdout]['AP']:.2f}"]  # the teacher, the selection set
    assert _cells(report, "t") == ["t", "ROI-KD", *expected]
    assert "they rank nothing" in report
    from unikd_det.config import merge_config_file  # the student distilled from the weights the teacher stage wrote
    from detectron2.config import get_cfg
    from unikd_det import add_distill_config

    cfg = get_cfg()
    add_distill_config(cfg)
    merge_config_file(cfg, str(out / "t" / "kd" / "seed3" / "config.yaml"))
    assert cfg.DISTILL.TEACHER.WEIGHTS == str(out / "teachers" / "t" / "model_final.pth") and cfg.SEED == 3
    printed = capsys.readouterr().out.splitlines()
    assert [line.split(":")[0] for line in printed if line.startswith("[")] == [
        "[1/2] teacher t ...", "[1/2] teacher t", "[2/2] t kd seed 3 ...", "[2/2] t kd seed 3"]
    assert not any("iter:" in line or "Average Precision" in line for line in printed)
    log = (out / "t" / "kd" / "seed3" / "log.txt").read_text()
    assert "Average Precision" in log and "Starting training from iteration 0" in log
    [row] = _csv_rows(out / "results.csv")
    assert float(row["teacher_AP"]) == pytest.approx(teacher[val]["AP"], nan_ok=True)


def test_a_two_cell_classification_grid_reports_its_runs_summaries(tmp_path, cls_cfg, cls_teacher, capsys):
    for method in ("vanilla", "kd"):
        (tmp_path / f"{method}.yaml").write_text(cls_cfg("DISTILLER.NAME", method, "SOLVER.EPOCHS", 2,
                                                         "DATASET.VAL_SIZE", 8).dump())
    grid = tmp_path / "grid.yaml"
    grid.write_text(f"output_dir: {tmp_path / 'out'}\nteachers: {{resnet14: {{checkpoint: {cls_teacher}}}}}\n"
                    "pairs: [{teacher: resnet14, student: resnet8}]\nmethods: {vanilla: vanilla.yaml, kd: kd.yaml}\n"
                    "seeds: [0]\nevaluation: {select: val, report: test}\nanalyze: false\n")
    report = run_grids([load_grid(grid)], live=False)[0]
    for method in ("vanilla", "kd"):
        summary = json.loads((tmp_path / "out" / "resnet14-resnet8" / method / "seed0" / "summary.json").read_text())
        numbers = [summary[k] for k in ("test_top1_selected", "best_top1", "last_top1", "teacher_top1", "val_top1")]
        assert _cells(report, "resnet14->resnet8", method)[2:] == [f"{v:.2f}" for v in numbers]
    rows = _csv_rows(tmp_path / "out" / "results.csv")
    assert [(r["method"], r["seed"], r["selected_on"]) for r in rows] == [("vanilla", "0", "val"), ("kd", "0", "val")]
    assert "they rank nothing" in report and "+-" not in report
    printed = capsys.readouterr().out
    assert "epoch 1/2" not in printed and "[2/2] resnet14->resnet8 kd seed 0: test top-1" in printed
