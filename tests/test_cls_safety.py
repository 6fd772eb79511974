"""Classification safety (issue 10): no file runs code, no run is lost or mixed, every value is checked first."""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from classification.__main__ import main
from classification.config import load_cfg
from classification.engine import Trainer
from classification.engine import trainer as trainer_module
from classification.engine.checkpoint import read_checkpoint


class _Hostile:
    """Unpickling this creates the folder `marker`: what a planted checkpoint's code would do."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return os.mkdir, (str(self.marker),)


@pytest.fixture
def hostile(tmp_path):
    """(path of a hostile .pth, the marker its unpickling would create)."""
    marker = tmp_path / "pwned"
    path = tmp_path / "hostile.pth"
    torch.save({"format": "unikd-classification", "model": _Hostile(marker)}, path)
    return path, marker


def _write_config(cfg, path: Path) -> Path:
    path.write_text(cfg.dump())
    return path


def _kd(teacher) -> list:
    return ["DISTILLER.NAME", "kd", "MODEL.TEACHER", "resnet14", "MODEL.TEACHER_CHECKPOINT", teacher]


# -- 1. loading a file never runs code from it -------------------------------------------------------------
def test_hostile_file_really_runs_code_when_unpickled_unsafely(hostile):
    path, marker = hostile
    torch.load(path, weights_only=False)
    assert marker.exists()  # the fixture is a real attack, so the tests below mean something


def test_hostile_teacher_checkpoint_is_refused(cls_cfg, hostile):
    path, marker = hostile
    with pytest.raises(ValueError, match=rf"refused to load {path}.*expected resnet14 weights"):
        Trainer(cls_cfg(*_kd(path)))
    assert not marker.exists()


def test_hostile_checkpoint_given_to_eval_is_refused(cls_cfg, hostile, tmp_path):
    path, marker = hostile
    config = _write_config(cls_cfg(), tmp_path / "c.yaml")
    with pytest.raises(ValueError, match=rf"refused to load {path}"):
        main(["eval", "--config", str(config), "--checkpoint", str(path)])
    assert not marker.exists()


def test_hostile_last_pth_planted_before_resume_is_refused(cls_cfg, hostile, tmp_path):
    path, marker = hostile
    run = tmp_path / "run"
    run.mkdir()
    (run / "last.pth").write_bytes(path.read_bytes())
    config = _write_config(cls_cfg(), tmp_path / "c.yaml")
    with pytest.raises(ValueError, match=rf"refused to load {run / 'last.pth'}.*this run's last.pth"):
        main(["train", "--config", str(config), "--resume"])
    assert not marker.exists()


def test_hostile_bench_teacher_checkpoint_is_refused(cls_cfg, hostile, tmp_path):
    path, marker = hostile
    _write_config(cls_cfg("DISTILLER.NAME", "kd", "SOLVER.EPOCHS", 1), tmp_path / "kd.yaml")
    grid = tmp_path / "grid.yaml"
    grid.write_text(f"teachers: {{resnet14: {{checkpoint: {path}}}}}\n"
                    "pairs: [{teacher: resnet14, student: resnet8}]\nmethods: {kd: kd.yaml}\nseeds: [0]\n")
    with pytest.raises(ValueError, match=rf"refused to load {path}"):
        main(["bench", "--grid", str(grid), "--output-dir", str(tmp_path / "bench")])
    assert not marker.exists()


def test_checkpoint_of_an_earlier_version_still_loads_as_teacher_and_resumes(cls_cfg, tmp_path):
    Trainer(cls_cfg("SOLVER.EPOCHS", 1, "OUTPUT_DIR", tmp_path / "old")).train()
    path = tmp_path / "old" / "last.pth"
    state = read_checkpoint(path)
    del state["config_changes"]
    state["rng"]["numpy"] = np.random.get_state()  # how checkpoints were written before: a uint32 ndarray
    torch.save(state, path)
    assert Trainer(cls_cfg("DISTILLER.NAME", "kd", "MODEL.TEACHER", "resnet8", "MODEL.TEACHER_CHECKPOINT", path))
    assert Trainer(cls_cfg("SOLVER.EPOCHS", 2, "OUTPUT_DIR", tmp_path / "old"), resume=True).train()["epochs"] == 2
    torch.save({**state, "rng": {**state["rng"], "numpy": np.zeros(2, dtype=object)}}, path)
    with pytest.raises(ValueError, match=rf"refused to load {path}"):  # the legacy allowance admits no objects
        Trainer(cls_cfg("DISTILLER.NAME", "kd", "MODEL.TEACHER", "resnet8", "MODEL.TEACHER_CHECKPOINT", path))


@pytest.mark.parametrize("command, text", [
    (["train", "--config"], "SOLVER:\n  LR: {tag}\n"),
    (["bench", "--grid"], "pairs: []\nmethods: {{}}\nseeds: {tag}\n"),
], ids=["config", "bench_grid"])
def test_hostile_yaml_is_refused_and_runs_nothing(tmp_path, command, text):
    marker, path = tmp_path / "pwned", tmp_path / "evil.yaml"
    path.write_text(text.format(tag=f"!!python/object/apply:os.mkdir [{marker}]"))
    with pytest.raises(ValueError, match=rf"{path} is not a valid YAML file.*python/object/apply:os.mkdir"):
        main([*command, str(path), "--output-dir" if command[0] == "bench" else "OUTPUT_DIR", str(tmp_path / "out")])
    assert not marker.exists() and not (tmp_path / "out").exists()


@pytest.mark.parametrize("content", ["empty", "truncated", "text", "tensor"])
def test_unreadable_teacher_file_names_its_path_and_what_was_expected(cls_cfg, cls_teacher, tmp_path, content):
    path = tmp_path / "teacher.pth"
    if content == "tensor":
        torch.save(torch.zeros(3), path)
    else:
        data = {"empty": b"", "truncated": cls_teacher.read_bytes()[:5000], "text": b"not a checkpoint\n"}[content]
        path.write_bytes(data)
    with pytest.raises(ValueError, match=rf"{path}\W.*expected resnet14 weights"):
        Trainer(cls_cfg(*_kd(path)))


# -- 2. nothing lost, nothing mixed ------------------------------------------------------------------------
def test_new_run_into_a_finished_folder_is_refused_and_overwrite_says_what_it_deletes(cls_cfg, tmp_path, caplog):
    Trainer(cls_cfg("SOLVER.EPOCHS", 1)).train()
    run = tmp_path / "run"
    stamp = (run / "last.pth").stat().st_mtime_ns
    with pytest.raises(FileExistsError, match=r"already holds a run \(.*last.pth.*summary.json.*--overwrite"):
        Trainer(cls_cfg("SOLVER.EPOCHS", 1))
    assert (run / "last.pth").stat().st_mtime_ns == stamp
    config = _write_config(cls_cfg("SOLVER.EPOCHS", 1), tmp_path / "c.yaml")
    with caplog.at_level("WARNING"):
        main(["train", "--config", str(config), "TRAIN.SEED", "3", "--overwrite"])
    deleted = {r.getMessage() for r in caplog.records if "--overwrite: deleting" in r.getMessage()}
    names = ("last.pth", "summary.json", "best_student.pth", "config.yaml")
    assert {f"--overwrite: deleting {run / name}" for name in names} <= deleted
    assert json.loads((run / "summary.json").read_text())["seed"] == 3


def test_second_concurrent_run_into_one_folder_is_refused(cls_cfg):
    first = Trainer(cls_cfg("SOLVER.EPOCHS", 1))
    with pytest.raises(RuntimeError, match=rf"another run \(pid {os.getpid()}\) is writing to"):
        Trainer(cls_cfg("SOLVER.EPOCHS", 1, "TRAIN.SEED", 1))
    first.train()  # the lock goes with the run: afterwards the folder can be resumed
    assert Trainer(cls_cfg("SOLVER.EPOCHS", 1), resume=True).epoch == 1


def test_resume_and_overwrite_after_the_overrides_are_flags(cls_cfg, tmp_path):
    config = _write_config(cls_cfg("SOLVER.EPOCHS", 1), tmp_path / "c.yaml")
    main(["train", "--config", str(config)])
    main(["train", "--config", str(config), "SOLVER.EPOCHS", "2", "--resume"])
    assert json.loads((tmp_path / "run" / "summary.json").read_text())["epochs"] == 2
    assert len(read_checkpoint(tmp_path / "run" / "last.pth")["history"]) == 2  # continued, not restarted
    with pytest.raises(SystemExit, match="unknown option --resum"):
        main(["train", "--config", str(config), "SOLVER.EPOCHS", "2", "--resum"])


def test_best_student_is_written_before_last_names_its_epoch(cls_cfg, monkeypatch, tmp_path):
    written = []
    save = trainer_module.atomic_save
    monkeypatch.setattr(trainer_module, "atomic_save",
                        lambda obj, path: (written.append(Path(path).name), save(obj, path)))
    trainer = Trainer(cls_cfg("SOLVER.EPOCHS", 1))
    trainer.train()
    assert trainer.best["epoch"] == 1 and written == ["best_student.pth", "last.pth"]


def test_leftover_temporaries_are_removed_at_the_next_start(cls_cfg, tmp_path):
    Trainer(cls_cfg("SOLVER.EPOCHS", 1)).train()
    leftovers = [tmp_path / "run" / ".last.pth.x1y2.tmp", tmp_path / "run" / ".summary.json.tmp"]
    for path in leftovers:
        path.write_bytes(b"torn")
    Trainer(cls_cfg("SOLVER.EPOCHS", 1), resume=True)
    assert not any(path.exists() for path in leftovers)


def test_resume_with_other_solver_or_seed_values_is_refused_listing_them(cls_cfg, tmp_path):
    Trainer(cls_cfg("SOLVER.EPOCHS", 1)).train()
    config_before = (tmp_path / "run" / "config.yaml").read_text()
    listed = r"SOLVER.MOMENTUM: 0.9 in the run, 0.5 now; TRAIN.SEED: 0 in the run, 5 now\. "
    with pytest.raises(ValueError, match=listed):
        Trainer(cls_cfg("SOLVER.EPOCHS", 2, "TRAIN.SEED", 5, "SOLVER.MOMENTUM", 0.5), resume=True)
    assert (tmp_path / "run" / "config.yaml").read_text() == config_before


def test_resume_may_extend_a_run_and_records_it(cls_cfg, tmp_path):
    Trainer(cls_cfg("SOLVER.EPOCHS", 1)).train()
    summary = Trainer(cls_cfg("SOLVER.EPOCHS", 2, "TRAIN.PROGRESS", True), resume=True).train()
    change = {"epoch": 1, "changes": {"SOLVER.EPOCHS": [1, 2], "TRAIN.PROGRESS": [False, True]}}
    assert summary["epochs"] == 2 and summary["config_changes"] == [change]
    assert read_checkpoint(tmp_path / "run" / "last.pth")["config_changes"] == [change]
    text = (tmp_path / "run" / "config.yaml").read_text()
    assert text.startswith("# resumed after epoch 1: SOLVER.EPOCHS 1 -> 2, TRAIN.PROGRESS False -> True\n")
    assert load_cfg(tmp_path / "run" / "config.yaml") == cls_cfg("SOLVER.EPOCHS", 2, "TRAIN.PROGRESS", True)


def test_new_lr_at_resume_becomes_the_base_lr_of_the_remaining_schedule(cls_cfg):
    Trainer(cls_cfg("SOLVER.EPOCHS", 1)).train()  # LR 0.05, x0.1 after epoch 2
    trainer = Trainer(cls_cfg("SOLVER.EPOCHS", 3, "SOLVER.LR", 0.01), resume=True)
    trainer.train()
    assert [row["lr"] for row in trainer.history] == pytest.approx([0.05, 0.01, 0.001])
    assert trainer.schedulers["student"].base_lrs == [0.01]


def test_diverged_run_is_rescued_by_resuming_with_a_smaller_lr(cls_cfg, tmp_path):
    Trainer(cls_cfg("SOLVER.EPOCHS", 1)).train()
    config_before = (tmp_path / "run" / "config.yaml").read_text()
    with pytest.raises(FloatingPointError, match=r"non-finite loss .* at epoch 2, step \d of 3; .*last.pth still "
                                                 r"holds epoch 1.*--resume and a smaller SOLVER.LR"):
        Trainer(cls_cfg("SOLVER.EPOCHS", 3, "SOLVER.LR", 1e12), resume=True).train()
    run = tmp_path / "run"
    assert read_checkpoint(run / "last.pth")["epoch"] == 1
    assert (run / "config.yaml").read_text() == config_before  # the diverged attempt saved nothing
    summary = Trainer(cls_cfg("SOLVER.EPOCHS", 3, "SOLVER.LR", 0.01), resume=True).train()
    assert summary["epochs"] == 3 and summary["last_top1"] is not None
    assert summary["config_changes"] == [{"epoch": 1, "changes": {"SOLVER.EPOCHS": [1, 3], "SOLVER.LR": [0.05, 0.01]}}]
    state = read_checkpoint(run / "last.pth")
    assert all(torch.isfinite(v).all() for v in state["model"].values() if v.is_floating_point())


def test_non_finite_loss_is_reported_at_the_step_where_it_appears(cls_cfg, monkeypatch):
    trainer = Trainer(cls_cfg("SOLVER.EPOCHS", 1))
    step = trainer.distiller.train_step
    calls = []

    def poisoned(*args, **kwargs):
        logits, losses = step(*args, **kwargs)
        calls.append(1)
        return logits, ({k: v * float("inf") for k, v in losses.items()} if len(calls) == 2 else losses)

    monkeypatch.setattr(trainer.distiller, "train_step", poisoned)
    with pytest.raises(FloatingPointError, match=r"non-finite loss inf \(loss_ce=inf\) at epoch 1, step 2 of 3; "
                                                 "nothing was saved"):
        trainer.train()
    assert len(calls) == 2


# -- 3. every value checked before any work ----------------------------------------------------------------
def test_bad_values_are_refused_when_the_config_is_built_naming_every_key(tmp_path):
    opts = ["SOLVER.LR", "-0.1", "TRAIN.EVAL_PERIOD", "0", "SOLVER.EPOCHS", "0", "KD.TEMPERATURE", "0",
            "SOLVER.MOMENTUM", "1.0", "SOLVER.MILESTONES", "[-1, 5]", "SOLVER.BATCH_SIZE", "0",
            "UNIKD.AFF.CHANNELS", "0", "SLKD.FUSION_WEIGHTS", "[0.5, -0.5]", "DATASET.TRAIN_SUBSET", "-3"]
    with pytest.raises(ValueError) as info:
        load_cfg(None, opts)
    for key in opts[0::2]:
        assert key in str(info.value)
    (tmp_path / "bad.yaml").write_text("SOLVER:\n  GAMMA: 0.0\n")
    with pytest.raises(ValueError, match=r"SOLVER.GAMMA = 0.0 \(must be > 0\)"):
        load_cfg(tmp_path / "bad.yaml")


def test_zero_lr_is_accepted_with_a_warning(caplog):
    with caplog.at_level("WARNING"):
        assert load_cfg(None, ["SOLVER.LR", "0"]).SOLVER.LR == 0.0
    assert any("SOLVER.LR = 0.0" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize("size, message", [(41, "more than the 40 training images of synthetic"),
                                           (4, "fewer than the 5 classes of synthetic")])
def test_train_subset_must_fit_the_data_set_and_its_classes(cls_cfg, tmp_path, size, message):
    with pytest.raises(ValueError, match=rf"DATASET.TRAIN_SUBSET = {size} is {message}"):
        Trainer(cls_cfg("DATASET.TRAIN_SUBSET", size))
    assert not (tmp_path / "run" / "last.pth").exists()
    assert Trainer(cls_cfg("DATASET.TRAIN_SUBSET", 5)).data.num_train == 5


@pytest.mark.parametrize("argument", ["--batch-size", "--steps", "--rounds"])
def test_speed_bench_refuses_counts_below_one(argument, capsys):
    with pytest.raises(SystemExit):
        main(["bench", "--speed", argument, "0"])
    assert f"argument {argument}: must be >= 1, got 0" in capsys.readouterr().err


def test_speed_bench_refuses_an_unknown_method_before_timing_anything(capsys):
    with pytest.raises(KeyError, match="unknown distillation term 'kdd'; available: at, crd, cwd, dist, dkd, .*kd, .*unikd"):
        main(["bench", "--speed", "--methods", "kd", "kdd+fitnet", "--device", "cpu"])
    assert "round" not in capsys.readouterr().out


_GRID = {
    "teachers": "{resnet14: {config: base.yaml}}",
    "pairs": "[{teacher: resnet14, student: resnet8}]",
    "methods": "{vanilla: base.yaml}",
    "seeds": "[0]",
}


@pytest.mark.parametrize("key, value, named", [
    ("seeds", "3", "seeds"),
    ("seeds", "[0, -1]", "seeds"),
    ("pairs", "[{teacher: resnet14}]", r"pairs\[0\]"),
    ("pairs", "[{teacher: resnet50, student: resnet8}]", r"pairs\[0\].teacher"),
    ("methods", "[base.yaml]", "methods"),
    ("overrides", "[SOLVER.EPOCHS]", "overrides"),
    ("teachers", "{resnet14: {overrides: []}}", "teachers.resnet14"),
    ("teachers", "{resnet14: {config: base.yaml, overrides: [SOLVER.LR]}}", "teachers.resnet14.overrides"),
    ("reference", "unikd", "reference"),
    ("reference", "[vanilla]", "reference"),
])
def test_bench_grid_of_the_wrong_shape_is_refused_naming_file_and_key(cls_cfg, tmp_path, key, value, named):
    _write_config(cls_cfg(), tmp_path / "base.yaml")
    grid = tmp_path / "grid.yaml"
    grid.write_text("".join(f"{k}: {value if k == key else v}\n" for k, v in {**_GRID, key: value}.items()))
    with pytest.raises(ValueError, match=rf"{grid}: {named} must be"):
        main(["bench", "--grid", str(grid), "--output-dir", str(tmp_path / "bench")])
    assert not (tmp_path / "bench").exists()


def test_bench_grid_reruns_a_cell_whose_values_or_teacher_changed(cls_cfg, cls_teacher, tmp_path, caplog):
    _write_config(cls_cfg("DISTILLER.NAME", "kd", "SOLVER.EPOCHS", 1), tmp_path / "kd.yaml")
    grid = tmp_path / "grid.yaml"
    text = (f"teachers: {{resnet14: {{checkpoint: {cls_teacher}}}}}\npairs: [{{teacher: resnet14, student: resnet8}}]\n"
            "methods: {kd: kd.yaml}\nseeds: [0]\noverrides: [SOLVER.LR, 0.05]\n")
    grid.write_text(text)
    out = tmp_path / "bench"
    cell = out / "resnet14-resnet8" / "kd" / "seed0"

    def run_grid() -> list[str]:
        caplog.clear()
        with caplog.at_level("INFO"):
            main(["bench", "--grid", str(grid), "--output-dir", str(out)])
        return [r.getMessage() for r in caplog.records if "skip" in r.getMessage() or "stale" in r.getMessage()]

    assert run_grid() == []
    assert run_grid() == [f"skip resnet14->resnet8 kd seed 0 (finished: {cell})"]
    grid.write_text(text.replace("SOLVER.LR, 0.05", "SOLVER.LR, 0.02"))
    assert run_grid() == [f"resnet14->resnet8 kd seed 0 in {cell} is stale (SOLVER.LR was 0.05, is now 0.02); "
                          "running it again from scratch"]
    assert load_cfg(cell / "config.yaml").SOLVER.LR == 0.02
    os.utime(cls_teacher)  # the teacher file is rewritten after the cell ran
    assert "changed after the run last saved" in run_grid()[0]
