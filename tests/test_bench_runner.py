"""The one bench runner (unikd.bench.runner) with a fake task: the teacher trains first and once, every student
stage once per seed, a rerun reads the stored results, stale stages train again, two processes share the stages,
and the printed table equals a hand computation. Training is faked (FakeTask): these tests check the plumbing and
the arithmetic; tests/test_bench_tasks.py runs real grids of both tasks."""
from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import statistics
import sys
import time
from pathlib import Path

import pytest
from yacs.config import CfgNode

from unikd.bench import runner
from unikd.bench.grid import load_grid
from unikd.bench.progress import LOG_NAME, StageLog
from unikd.bench.report import Column, TableSpec
from unikd.bench.task import STAGE_CONFIG, BenchTask

T_975_DF2 = 4.302652729749464  # Student's t, 97.5% quantile, 2 degrees of freedom (3 seeds)
# Test top-1 per (method, seed); the validation value is top-1 + VAL_SHIFT[method], so the two columns differ.
FAKE = {
    "vanilla": {0: 70.0, 1: 72.0, 2: 71.0},
    "kd": {0: 72.0, 1: 74.5, 2: 72.5},  # - vanilla: 2, 2.5, 1.5
    "unikd": {0: 71.0, 1: 71.0, 2: 73.0},  # - vanilla: 1, -1, 2
}
VAL_SHIFT = {"vanilla": 1.0, "kd": 0.5, "unikd": 2.0}
TEACHER = 90.0
GRID = """task: classification
teachers: {{big: {{config: teacher.yaml}}}}
pairs: [{{teacher: big, student: small}}]
methods: {{vanilla: vanilla.yaml, kd: kd.yaml, unikd: {{config: unikd.yaml, title: UniKD}}}}
seeds: {seeds}
overrides: [LR, {lr}]
evaluation: {{select: val, report: test}}
reference: unikd
"""


class FakeTask(BenchTask):
    """Stages whose `train` writes the config, appends the stage's folder to `calls.txt` in the grid's output
    folder (so that processes can be told apart) and returns FAKE's numbers."""

    table = TableSpec(title="Fake top-1", main=Column("top1", "top-1"),
                      csv_columns={"val": float, "teacher": float, "top1": float},
                      select=Column("val", "val top-1"), teacher=Column("teacher", "teacher"), baselines=("vanilla",))

    def stage_config(self, stage, teacher_weights):
        return CfgNode({"CONFIG": stage.config.name, "OPTS": list(stage.overrides), "SEED": stage.seed,
                        "TEACHER": teacher_weights})

    def teacher_weights(self, stage):
        return str(stage.folder / "weights.pth")

    def reads_teacher(self, cfg):
        return cfg.CONFIG != "vanilla.yaml"

    def train(self, stage, cfg, fresh):
        stage.folder.mkdir(parents=True, exist_ok=True)
        (stage.folder / STAGE_CONFIG).write_text(cfg.dump())
        with open(self.grid.output_dir / "calls.txt", "a") as calls:
            calls.write(f"{stage.key} {os.getpid()} {'fresh' if fresh else 'resume'}\n")
        logging.getLogger("fake.trainer").info("iter 1/1 loss 0.5")
        print("noise a trainer prints")
        if stage.method is None:
            (stage.folder / "weights.pth").write_text("teacher")
            return {"top1": TEACHER}
        top1 = FAKE[stage.method.label][stage.seed]
        return {"top1": top1, "val": top1 + VAL_SHIFT[stage.method.label]}

    def row(self, stage, result, teacher):
        return {"pair": stage.pair.label, "method": stage.method.label, "seed": stage.seed, **result,
                "teacher": teacher["top1"]}

    def headline(self, result):
        return f"top-1 {result['top1']:.2f}"


@pytest.fixture
def fake_grid(tmp_path, monkeypatch):
    """factory(seeds, lr) -> the checked grid file of FakeTask stages writing to tmp_path/out."""
    monkeypatch.setattr(runner, "load_task", FakeTask)

    def make(seeds=(0, 1, 2), lr=0.1):
        path = tmp_path / "grid.yaml"
        path.write_text(GRID.format(seeds=list(seeds), lr=lr))
        return dataclasses.replace(load_grid(path), output_dir=tmp_path / "out")

    return make


def calls(grid) -> list[list[str]]:
    path = grid.output_dir / "calls.txt"
    return [line.split() for line in path.read_text().splitlines()] if path.is_file() else []


def test_the_teacher_trains_first_then_every_student_once_and_a_rerun_reads_them(fake_grid):
    grid = fake_grid()
    report = runner.run_grids([grid])[0]
    trained = [key for key, _, _ in calls(grid)]
    assert trained[0] == "teachers/big"
    assert sorted(trained[1:]) == sorted(f"big-small/{m}/seed{s}" for m in FAKE for s in range(3))
    assert runner.run_grids([grid])[0] == report and len(calls(grid)) == 10  # nothing trained again
    stored = json.loads((grid.output_dir / "big-small" / "kd" / "seed1" / "result.json").read_text())
    assert stored == {"top1": 74.5, "val": 75.0}


def _hand_interval(a, b):
    diffs = [x - y for x, y in zip(a, b)]
    mean, half = statistics.mean(diffs), T_975_DF2 * statistics.stdev(diffs) / math.sqrt(len(diffs))
    return f"{mean:+.2f} [{mean - half:+.2f}, {mean + half:+.2f}]"


def test_the_table_equals_a_hand_computation(fake_grid):
    grid = fake_grid()
    report = runner.run_grids([grid])[0]
    assert (grid.output_dir / "results.md").read_text() == report
    val = {m: [v + VAL_SHIFT[m] for v in FAKE[m].values()] for m in FAKE}
    for method, title in (("vanilla", "vanilla"), ("kd", "kd"), ("unikd", "UniKD")):
        top1 = list(FAKE[method].values())
        cells = [f"{statistics.mean(top1):.2f} +- {statistics.stdev(top1):.2f}"]
        cells.append("-" if method == "vanilla" else _hand_interval(top1, list(FAKE["vanilla"].values())))
        cells.append(f"{TEACHER:.2f}")
        cells.append(f"{statistics.mean(val[method]):.2f} +- {statistics.stdev(val[method]):.2f}")
        cells.append("-" if method == "unikd" else _hand_interval(val[method], val["unikd"]))
        row = f"| big->small | {title} | 3 | " + " | ".join(cells) + " |"
        separated = {"kd": (True, False), "vanilla": (False, False), "unikd": (False, False)}[method]
        for cell, star in zip((cells[1], cells[4]), separated):  # kd - vanilla: +2.00 [+0.76, +3.24] excludes 0
            row = row.replace(f" {cell} |", f" {cell} * |") if star else row
        assert row in report
    kd_minus_vanilla = _hand_interval(list(FAKE["kd"].values()), list(FAKE["vanilla"].values()))
    assert f"- big->small: kd is above vanilla in top-1 ({kd_minus_vanilla})." in report
    assert "unikd is" not in report and "UniKD is" not in report


def test_one_seed_prints_plain_numbers_and_says_it_ranks_nothing(fake_grid):
    report = runner.run_grids([fake_grid(seeds=[1])])[0]
    assert "| big->small | kd | 74.50 | 90.00 | 75.00 |" in report
    assert "+-" not in report and "CI" not in report and "they rank nothing" in report


def test_a_stage_whose_values_or_teacher_changed_trains_again_from_scratch(fake_grid, caplog):
    grid = fake_grid(seeds=[0])
    runner.run_grids([grid])
    changed = fake_grid(seeds=[0], lr=0.2)
    with caplog.at_level(logging.WARNING):
        runner.run_grids([changed])
    again = calls(grid)[4:]
    assert sorted(key for key, _, _ in again) == sorted(f"big-small/{m}/seed0" for m in FAKE)  # the teacher kept
    assert {mode for _, _, mode in again} == {"fresh"}
    assert "big->small kd seed 0 in" in caplog.text and "is stale (OPTS was ['LR', '0.1'], is now ['LR', '0.2'])" \
        in caplog.text
    teacher = changed.output_dir / "teachers" / "big" / "weights.pth"
    os.utime(teacher, (teacher.stat().st_mtime + 10,) * 2)  # the teacher rewritten after its students
    runner.run_grids([changed])
    assert sorted(key for key, _, _ in calls(grid)[7:]) == ["big-small/kd/seed0", "big-small/unikd/seed0"]


def test_two_grids_share_a_stage_they_configure_alike_and_refuse_one_they_do_not(fake_grid, tmp_path):
    grid = fake_grid(seeds=[0])
    twin = dataclasses.replace(grid, report_dir="twin")
    runner.run_grids([grid, twin])
    assert len(calls(grid)) == 4 and (grid.output_dir / "twin" / "results.md").read_text() == (
        grid.output_dir / "results.md").read_text()
    other = fake_grid(seeds=[0], lr=0.3)
    with pytest.raises(ValueError, match="configure the stage in .*teachers/big|configure the stage in .*seed0"):
        runner.run_grids([grid, dataclasses.replace(other, report_dir="other")])


# A helper process of --jobs: the same grid with FakeTask, training only.
HELPER = """
import dataclasses, sys
from pathlib import Path
sys.path.insert(0, {tests!r})
import test_bench_runner as t
from unikd.bench import runner
from unikd.bench.grid import load_grid
runner.load_task = t.FakeTask
runner.run_grids([dataclasses.replace(load_grid({grid!r}), output_dir=Path({out!r}))], stages_only=True)
"""


class WaitsForTheHelper(FakeTask):
    """FakeTask that trains only once another process has trained a stage, so that both processes train some,
    whatever the helper's start-up time."""

    def train(self, stage, cfg, fresh):
        deadline = time.monotonic() + 120
        while not any(pid != str(os.getpid()) for _, pid, _ in calls(self.grid)) and time.monotonic() < deadline:
            time.sleep(0.05)
        return super().train(stage, cfg, fresh)


def test_with_two_jobs_two_processes_share_the_stages_and_the_table_is_unchanged(fake_grid, monkeypatch):
    grid = fake_grid()
    alone = runner.run_grids([dataclasses.replace(grid, output_dir=grid.output_dir / "alone")])[0]
    script = HELPER.format(tests=str(Path(__file__).parent), grid=str(grid.path), out=str(grid.output_dir))
    monkeypatch.setattr(runner, "helper_command", lambda grids, threads, verbose: [sys.executable, "-c", script])
    monkeypatch.setattr(runner, "load_task", WaitsForTheHelper)
    shared = runner.run_grids([grid], jobs=2, threads=1)[0]
    processes = {pid for _, pid, _ in calls(grid)}
    assert len(calls(grid)) == 10 and len({key for key, _, _ in calls(grid)}) == 10
    assert len(processes) == 2 and shared == alone


def test_a_failed_helper_process_is_an_error(fake_grid, monkeypatch):
    monkeypatch.setattr(runner, "helper_command", lambda grids, threads, verbose: [sys.executable, "-c",
                                                                                   "raise SystemExit(3)"])
    with pytest.raises(RuntimeError, match="helper process"):
        runner.run_grids([fake_grid(seeds=[0])], jobs=2, threads=1)


def test_a_helper_runs_the_same_grids_and_folders_with_the_thread_count(fake_grid):
    grid = fake_grid()
    command = runner.helper_command([grid], threads=3, verbose=False)
    assert command[:4] == [sys.executable, "-m", "unikd.bench", "run"]
    from unikd.bench.cli import build_parser, grids_from_args
    args = build_parser().parse_args(command[3:])
    assert (args.stages_only, args.jobs, args.threads, args.verbose) == (True, 1, 3, False)
    assert grids_from_args(args)[0].output_dir == grid.output_dir.resolve()


def test_a_stage_logs_to_its_log_file_and_prints_one_line_at_its_start_and_end(tmp_path, capsys):
    with StageLog(tmp_path / "stage", "[1/2] a stage", live=False) as log:
        logging.getLogger("detectron2.engine").info("iteration 7 loss 0.25")
        print("a trainer's print")
        log.finish("AP 12.50")
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "[1/2] a stage ..." and out[1].startswith("[1/2] a stage: AP 12.50 (") and len(out) == 2
    text = (tmp_path / "stage" / LOG_NAME).read_text()
    assert "iteration 7 loss 0.25" in text and "a trainer's print" in text
    with StageLog(tmp_path / "stage", "[2/2] verbose", verbose=True) as log:
        print("streamed")
        log.finish("done")
    assert "streamed" in capsys.readouterr().out


def test_an_option_added_since_a_run_was_written_counts_at_its_default():
    from unikd.core.checks import config_differences

    written, defaults = "A: 1\nB: {C: 2}\n", "A: 0\nB: {C: 0, NEW: false}\n"
    assert config_differences(written, "A: 1\nB: {C: 2, NEW: false}\n", defaults=defaults) == {}
    assert config_differences(written, "A: 1\nB: {C: 2, NEW: true}\n", defaults=defaults) == {"B.NEW": (False, True)}
    assert config_differences(written, "A: 1\nB: {C: 2, NEW: false}\n") == {"B.NEW": (None, False)}  # no defaults


def test_a_finished_teacher_whose_weights_are_gone_trains_again(fake_grid, caplog):
    grid = fake_grid(seeds=[0])
    runner.run_grids([grid])
    (grid.output_dir / "teachers" / "big" / "weights.pth").unlink()  # e.g. its folder's run files were deleted
    with caplog.at_level(logging.WARNING):
        runner.run_grids([grid])
    assert [key for key, _, mode in calls(grid)[4:] if mode == "fresh"][0] == "teachers/big"
    assert "weights.pth are missing" in caplog.text
    assert (grid.output_dir / "teachers" / "big" / "weights.pth").is_file()


def test_a_stale_stage_loses_its_old_result_before_it_trains_again(fake_grid, monkeypatch):
    """Otherwise a student waiting for a teacher that trains again would take it for finished and read its
    half-trained weights."""
    grid = fake_grid(seeds=[0])
    runner.run_grids([grid])
    (grid.output_dir / "teachers" / "big" / "weights.pth").unlink()
    seen, train = [], FakeTask.train

    def watched(self, stage, cfg, fresh):
        seen.append((stage.key, fresh, (stage.folder / "result.json").exists()))
        return train(self, stage, cfg, fresh)

    monkeypatch.setattr(FakeTask, "train", watched)
    runner.run_grids([grid])
    assert seen[0] == ("teachers/big", True, False)
