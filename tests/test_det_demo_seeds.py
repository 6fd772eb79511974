"""tools/demo.py --seeds: the teacher trains once and every student stage once per seed, in its own folder, and
the printed aggregate (mean +- std over seeds, paired differences to the plain student with 95% t-intervals)
equals a hand computation. Training is faked: these tests check the seed logic and the arithmetic."""
from __future__ import annotations

import importlib.util
import json
import math
import sys
import time
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
T_975_DF2 = 4.302652729749464  # Student's t, 97.5% quantile, 2 degrees of freedom (3 seeds)
# AP per (method, seed); AP50 = 2 AP and AP75 = AP / 2, so every metric is checked with its own numbers.
FAKE_AP = {
    "student": {0: 10.0, 1: 12.0, 2: 11.0},
    "kd": {0: 12.0, 1: 14.5, 2: 12.5},  # - student: 2, 2.5, 1.5
    "unikd": {0: 11.0, 1: 11.0, 2: 13.0},  # - student: 1, -1, 2
}
TEACHER_AP = 30.0
HOLDOUT_SHIFT = -5.0  # the fake holdout AP is the validation AP + HOLDOUT_SHIFT, so the two tables differ
SHIFTS = {"fashion_mosaic_val": 0.0, "fashion_mosaic_holdout": HOLDOUT_SHIFT}


def load_demo():
    spec = importlib.util.spec_from_file_location("demo_tool", REPO_ROOT / "tools" / "demo.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def fake_demo(monkeypatch):
    """tools/demo.py with the data preparation skipped and training replaced by FAKE_AP; returns (module, calls),
    calls being the stages' configs in the order they were trained."""
    demo = load_demo()
    calls = []

    def fake_train_and_evaluate(cfg):
        calls.append(cfg)
        folder = Path(cfg.OUTPUT_DIR)
        ap = TEACHER_AP if folder.name == "teacher" else FAKE_AP[folder.name][cfg.SEED]
        return {test_set: {"AP": ap + SHIFTS[test_set], "AP50": 2 * ap, "AP75": ap / 2, "APs": math.nan}
                for test_set in cfg.DATASETS.TEST}

    monkeypatch.setattr(demo, "register_fashion_mosaic", lambda root: None)
    monkeypatch.setattr(demo, "train_and_evaluate", fake_train_and_evaluate)
    return demo, calls


def run(demo, tmp_path, *extra):
    return demo.main(["--part", "detection", "--output-dir", str(tmp_path), "--det-methods", *FAKE_AP, *extra])[0]


def test_every_student_stage_trains_once_per_seed_and_the_teacher_once(fake_demo, tmp_path):
    demo, calls = fake_demo
    run(demo, tmp_path, "--seeds", "0", "1", "2")
    teacher, *students = calls
    assert Path(teacher.OUTPUT_DIR) == tmp_path / "teacher"
    assert [(Path(c.OUTPUT_DIR), c.SEED) for c in students] == [
        (tmp_path / f"seed{seed}" / method, seed) for seed in (0, 1, 2) for method in FAKE_AP
    ]
    for cfg in students:
        if cfg.MODEL.META_ARCHITECTURE == "DistillRCNN":
            assert cfg.DISTILL.TEACHER.WEIGHTS == str(tmp_path / "teacher" / "model_final.pth")
    written = (tmp_path / "seed2" / "kd" / "config.yaml").read_text()  # what tools/analyze_det.py reads
    assert "SEED: 2" in written and str(tmp_path / "teacher" / "model_final.pth") in written
    assert {tuple(c.DATASETS.TEST) for c in calls} == {("fashion_mosaic_val", "fashion_mosaic_holdout")}
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved["seeds"] == [0, 1, 2] and saved["teacher"]["fashion_mosaic_val"]["AP"] == TEACHER_AP
    assert [run["fashion_mosaic_val"]["AP"] for run in saved["students"]["kd"]] == [12.0, 14.5, 12.5]
    assert [run["fashion_mosaic_holdout"]["AP"] for run in saved["students"]["kd"]] == [7.0, 9.5, 7.5]


def test_the_aggregate_equals_a_hand_computation(fake_demo, tmp_path):
    demo, _ = fake_demo
    students = {m: [{"AP": ap, "AP50": 2 * ap, "AP75": ap / 2} for ap in by_seed.values()]
                for m, by_seed in FAKE_AP.items()}
    summary = demo.summarize_seeds(students)

    # kd: AP 12, 14.5, 12.5 -> mean 13, sample std sqrt((1 + 2.25 + 0.25) / 2); paired with the student's
    # 10, 12, 11: differences 2, 2.5, 1.5 -> mean 2, std 0.5, half width t * 0.5 / sqrt(3).
    mean, std = summary["kd"]["mean_std"]["AP"]
    assert mean == pytest.approx(13.0) and std == pytest.approx(math.sqrt(1.75))
    diff = summary["kd"]["difference"]["AP"]
    half = T_975_DF2 * 0.5 / math.sqrt(3)
    assert (diff.mean, diff.low, diff.high, diff.n) == pytest.approx((2.0, 2.0 - half, 2.0 + half, 3))
    assert diff.separated  # [0.76, 3.24] excludes zero
    diff50 = summary["kd"]["difference"]["AP50"]  # every difference doubles
    assert (diff50.low, diff50.high) == pytest.approx((4.0 - 2 * half, 4.0 + 2 * half))
    # unikd: differences 1, -1, 2 -> mean 2/3, std sqrt(7/3); the interval holds zero.
    diff = summary["unikd"]["difference"]["AP"]
    half = T_975_DF2 * math.sqrt(7 / 3) / math.sqrt(3)
    assert (diff.mean, diff.low, diff.high) == pytest.approx((2 / 3, 2 / 3 - half, 2 / 3 + half))
    assert not diff.separated
    assert summary["student"]["mean_std"]["AP75"] == pytest.approx((5.5, 0.5))
    assert "difference" not in summary["student"]

    report = run(demo, tmp_path, "--seeds", "0", "1", "2")
    validation, holdout = report.split("\n\n")
    assert validation.startswith(demo.TITLE + ", 3 seeds (0, 1, 2):")
    assert holdout.startswith(demo.HOLDOUT_TITLE + ", 3 seeds (0, 1, 2):")
    rows = {line.split("|")[1].strip(): [c.strip() for c in line.split("|")[2:-1]]
            for line in validation.splitlines() if line.startswith("| ")}
    assert rows["Student R18-FPN + ROI-KD"][:4] == ["125", "13.00 +- 1.32", "26.00 +- 2.65", "6.50 +- 0.66"]
    assert rows["Student R18-FPN + ROI-KD"][4] == "+2.00 [+0.76, +3.24] *"
    assert rows["Student R18-FPN + UniKD"][4] == "+0.67 [-3.13, +4.46]"
    assert rows["Student R18-FPN (no KD)"][4:] == [""] * 5
    header = next(line for line in validation.splitlines() if line.startswith("| Model"))
    assert [c.strip() for c in header.split("|")[9:11]] == ["AP - ROI-KD [95% CI]", "AP - UniKD [95% CI]"]
    assert rows["Student R18-FPN + ROI-KD"][7] == "" and rows["Student R18-FPN + UniKD"][8] == ""
    # unikd - kd in AP: -1, -3.5, 0.5 -> mean -4/3, sample std sqrt(((1/3)^2 + (13/6)^2 + (11/6)^2) / 2); kd -
    # unikd is its mirror image.
    deviations = (-1 + 4 / 3, -3.5 + 4 / 3, 0.5 + 4 / 3)
    half = T_975_DF2 * math.sqrt(sum(d * d for d in deviations) / 2) / math.sqrt(3)
    assert rows["Student R18-FPN + UniKD"][7] == f"{-4 / 3:+.2f} [{-4 / 3 - half:+.2f}, {-4 / 3 + half:+.2f}]"
    assert rows["Student R18-FPN + ROI-KD"][8] == f"{4 / 3:+.2f} [{4 / 3 - half:+.2f}, {4 / 3 + half:+.2f}]"
    assert summary["unikd"]["reference_differences"].keys() == {"kd"}
    assert summary["kd"]["reference_differences"].keys() == {"unikd"}
    assert rows["Teacher R18-FPN"][1:4] == ["30.00", "60.00", "15.00"]
    assert "ranked only where that interval excludes zero" in report
    assert "Ranked: kd is above the plain student in AP (+2.00 [+0.76, +3.24])." in validation
    # The holdout table: every AP shifted by the same amount, so the means move and the differences do not.
    holdout_rows = {line.split("|")[1].strip(): [c.strip() for c in line.split("|")[2:-1]]
                    for line in holdout.splitlines() if line.startswith("| ")}
    assert holdout_rows["Student R18-FPN + ROI-KD"][1] == "8.00 +- 1.32"
    assert holdout_rows["Student R18-FPN + ROI-KD"][4] == "+2.00 [+0.76, +3.24] *"
    assert holdout_rows["Teacher R18-FPN"][1] == "25.00"
    assert (tmp_path / "results.md").read_text() == report + "\n"


def test_one_seed_says_it_ranks_nothing(fake_demo, tmp_path):
    demo, calls = fake_demo
    report = run(demo, tmp_path)
    assert [Path(c.OUTPUT_DIR) for c in calls[1:]] == [tmp_path / m for m in FAKE_AP]  # the configs' SEED
    assert {c.SEED for c in calls} == {calls[0].SEED}
    assert {tuple(c.DATASETS.TEST) for c in calls} == {("fashion_mosaic_val",)}  # the configs' own: val only
    assert "One seed does not rank methods" in report and "make bench-det" in report
    assert "+-" not in report


def test_seeds_need_the_plain_student_and_distinct_values(fake_demo, tmp_path):
    demo, calls = fake_demo
    with pytest.raises(SystemExit):
        demo.main(["--part", "detection", "--output-dir", str(tmp_path), "--det-methods", "kd", "--seeds", "0", "1"])
    with pytest.raises(SystemExit):
        run(demo, tmp_path, "--seeds", "0", "0")
    assert calls == []


def test_box_metrics_are_keyed_by_test_set_also_when_detectron2_flattens_one_set():
    """DefaultTrainer.test returns {set: {"bbox": ...}} for several sets and the bare {"bbox": ...} for one."""
    from detectron2.config import get_cfg

    demo = load_demo()
    cfg = get_cfg()
    cfg.DATASETS.TEST = ("fashion_mosaic_val",)
    assert demo.bbox_by_dataset(cfg, {"bbox": {"AP": 1.0}}) == {"fashion_mosaic_val": {"AP": 1.0}}
    cfg.DATASETS.TEST = ("fashion_mosaic_val", "fashion_mosaic_holdout")
    both = {"fashion_mosaic_val": {"bbox": {"AP": 1.0}}, "fashion_mosaic_holdout": {"bbox": {"AP": 2.0}}}
    assert demo.bbox_by_dataset(cfg, both) == {"fashion_mosaic_val": {"AP": 1.0}, "fashion_mosaic_holdout": {"AP": 2.0}}


@pytest.mark.parametrize("method", sorted(load_demo().ABLATION_STAGES))
def test_each_ablation_stage_is_the_unikd_stage_with_its_switch_changed(method, tmp_path):
    """The ablation stage's config differs from the UniKD stage's in exactly its overridden keys, passes the
    config checks, and its model builds (the switch's values are accepted)."""
    from unikd_det.config import validate_config
    from unikd.core.checks import config_differences
    from unikd_det.trainer import DistillTrainer

    demo = load_demo()
    stage = demo.STUDENT_STAGES[method]
    common = (tmp_path, "configs/Demo/teacher-R18.yaml", tmp_path / "teacher.pth", 0)
    unikd = demo.stage_config(demo.STUDENT_STAGES["unikd"].config, *common)
    cfg = demo.stage_config(stage.config, *common, opts=stage.opts)
    assert set(config_differences(unikd, cfg)) == set(stage.opts[::2])
    validate_config(cfg)
    assert DistillTrainer.build_model(cfg).training


def test_a_helper_process_gets_the_same_stages_with_its_thread_count(tmp_path):
    demo = load_demo()
    args = demo.parse_args(["--output-dir", str(tmp_path / "out"), "--det-methods", "student", "kd",
                            "--seeds", "0", "1", "--jobs", "2", "--fresh"])
    command = demo.helper_command(args, threads=1)
    assert command[:2] == [sys.executable, str(REPO_ROOT / "tools" / "demo.py")]
    helper = demo.parse_args(command[2:])
    assert (helper.stages_only, helper.threads, helper.jobs, helper.fresh) == (True, 1, 1, False)
    for name in ("part", "teacher_config", "det_methods", "seeds"):
        assert getattr(helper, name) == getattr(args, name)
    assert helper.output_dir == str(tmp_path / "out") and Path(helper.data_dir).is_absolute()
    with pytest.raises(SystemExit):
        demo.parse_args(["--jobs", "0"])


# A stand-in for the helper process of --jobs: the real stage queue over the demo's stages, with training faked like
# `fake_demo`'s; every stage it trains leaves a `by_helper` marker.
HELPER_SCRIPT = """
import json, sys
from pathlib import Path
from unikd_det.stage_queue import QueuedStage, run_stages
stages, fake, shifts = (json.loads(arg) for arg in sys.argv[1:])
def train(stage):
    (stage.folder / "by_helper").touch()
    a = fake[stage.key]
    return {s: {"AP": a + shift, "AP50": 2 * a, "AP75": a / 2} for s, shift in shifts.items()}
run_stages([QueuedStage(k, Path(f), tuple(t), tuple(n)) for k, f, t, n in stages], train, poll_seconds=0.05)
"""


def test_with_jobs_two_processes_share_the_stages_and_the_report_is_unchanged(fake_demo, tmp_path, monkeypatch):
    demo, calls = fake_demo
    alone = run(demo, tmp_path / "alone", "--seeds", "0", "1", "2")
    stages = [(str(folder.relative_to(tmp_path / "shared")), str(folder), list(demo.SEEDS_TEST_SETS),
               ["teacher"] if name not in ("teacher", "student") else [])
              for _, name, folder, _ in demo.queued_stages(demo.parse_args(
                  ["--output-dir", str(tmp_path / "shared"), "--det-methods", *FAKE_AP, "--seeds", "0", "1", "2"]),
                  tmp_path / "shared")]
    fake = {key: TEACHER_AP if key == "teacher" else FAKE_AP[Path(key).name][int(key[4])] for key, *_ in stages}
    monkeypatch.setattr(demo, "helper_command", lambda args, threads: [
        sys.executable, "-c", HELPER_SCRIPT, *map(json.dumps, (stages, fake, SHIFTS))])
    trained_here = len(calls)
    original = demo.train_and_evaluate

    def wait_for_the_helper_first(cfg):  # so that both processes train stages, whatever their start-up times
        deadline = time.monotonic() + 120
        while not list((tmp_path / "shared").rglob("by_helper")) and time.monotonic() < deadline:
            time.sleep(0.05)
        return original(cfg)

    monkeypatch.setattr(demo, "train_and_evaluate", wait_for_the_helper_first)
    shared = run(demo, tmp_path / "shared", "--seeds", "0", "1", "2", "--jobs", "2")
    here = {str(Path(c.OUTPUT_DIR).relative_to(tmp_path / "shared")) for c in calls[trained_here:]}
    helper = {str(p.parent.relative_to(tmp_path / "shared")) for p in (tmp_path / "shared").rglob("by_helper")}
    assert here and helper and not here & helper and here | helper == {key for key, *_ in stages}
    assert shared == alone


def test_a_failed_helper_process_is_reported_with_its_log(fake_demo, tmp_path, monkeypatch):
    demo, _ = fake_demo
    monkeypatch.setattr(demo, "helper_command", lambda args, threads: [
        sys.executable, "-c", "import sys; print('helper broke'); sys.exit(3)"])
    with pytest.raises(RuntimeError, match="helper1.log"):
        run(demo, tmp_path, "--seeds", "0", "1", "--jobs", "2")
    assert "helper broke" in (tmp_path / "helper1.log").read_text()


def test_the_classification_part_is_a_stage_after_the_detection_stages_and_is_read_when_finished(
        fake_demo, tmp_path, monkeypatch):
    demo, calls = fake_demo
    detection_stages_before = []  # how many detection stages had trained when the classification part began
    top1 = {demo.CLASSIFICATION_TEST_SET: {"teacher": 88.0, "vanilla": 77.0, "kd": 79.5}}

    def fake_classification(folder):
        detection_stages_before.append([Path(cfg.OUTPUT_DIR).name for cfg in calls])
        (folder / "results.md").write_text("| fake classification table |\n")
        return top1

    monkeypatch.setattr(demo, "train_classification", fake_classification)
    tables = demo.main(["--output-dir", str(tmp_path), "--det-methods", "student", "unikd"])
    assert detection_stages_before == [["teacher", "student", "unikd"]]
    assert "| fake classification table |" in tables[1] and "One seed does not rank methods" in tables[1]
    stored = json.loads((tmp_path / demo.CLASSIFICATION_KEY / "result.json").read_text())
    assert stored == top1
    assert demo.main(["--output-dir", str(tmp_path), "--det-methods", "student", "unikd"]) == tables
    assert len(calls) == 3 and len(detection_stages_before) == 1  # the reruns read every stored result
    assert demo.main(["--part", "classification", "--output-dir", str(tmp_path)]) == tables[1:]
