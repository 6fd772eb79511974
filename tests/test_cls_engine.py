"""Classification trainer: exact resume, checkpoints, teacher-loading errors, eval, CLI."""
from __future__ import annotations

import json

import pytest
import torch

from classification.__main__ import main
from classification.engine import Trainer
from classification.engine.checkpoint import atomic_save, read_checkpoint


def _train(cfg, resume=False):
    trainer = Trainer(cfg, resume=resume)
    return trainer, trainer.train()


def _assert_same_state(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


@pytest.mark.parametrize(
    "method_opts",
    [
        ["DISTILLER.NAME", "vanilla"],
        ["DISTILLER.NAME", "slkd", "SLKD.MODE", "parallel"],
        ["DISTILLER.NAME", "unikd", "UNIKD.MODE", "authors_code"],  # draws random samples every step
        # CRD's memory and normalisers, its negative sampling and MLKD's random strong view
        ["DISTILLER.NAME", "hybrid", "HYBRID.TERMS", "['crd', 'mlkd']", "CRD.NCE_K", 32],
    ],
    ids=["vanilla", "slkd", "unikd_authors", "crd_mlkd"],
)
def test_interrupted_run_resumes_to_identical_result(cls_cfg, cls_teacher, tmp_path, method_opts):
    teacher = ["MODEL.TEACHER", "resnet14", "MODEL.TEACHER_CHECKPOINT", cls_teacher]
    straight_trainer, straight = _train(cls_cfg(*teacher, *method_opts, "OUTPUT_DIR", tmp_path / "a"))

    _train(cls_cfg(*teacher, *method_opts, "OUTPUT_DIR", tmp_path / "b", "SOLVER.EPOCHS", 2))
    # The second process is told the full schedule; it must continue after epoch 2, not restart.
    resumed_trainer = Trainer(cls_cfg(*teacher, *method_opts, "OUTPUT_DIR", tmp_path / "b"), resume=True)
    assert resumed_trainer.epoch == 2
    resumed = resumed_trainer.train()

    _assert_same_state(straight_trainer.distiller.trainable_state_dict(), resumed_trainer.distiller.trainable_state_dict())
    for key in ("best_top1", "best_epoch", "last_top1", "last_top5"):
        assert straight[key] == resumed[key], key
    a, b = read_checkpoint(tmp_path / "a" / "last.pth"), read_checkpoint(tmp_path / "b" / "last.pth")
    assert a["optimizers"]["optimizers"].keys() == b["optimizers"]["optimizers"].keys()
    for name, state in a["optimizers"]["optimizers"].items():
        for index, param_state in state["state"].items():
            assert torch.equal(param_state["momentum_buffer"], b["optimizers"]["optimizers"][name]["state"][index]["momentum_buffer"])
    assert [r["test_top1"] for r in straight_trainer.history] == [r["test_top1"] for r in resumed_trainer.history]
    rows = (tmp_path / "b" / "metrics.csv").read_text().strip().splitlines()
    assert len(rows) == 1 + 3  # header + one row per epoch, no duplicates after the resume


class _Interrupted(Exception):
    pass


def _watch_steps(trainer, seen: list, stop_at: int = 0) -> None:
    """Record the progress (in epochs) of each of the trainer's training steps in `seen`; the `stop_at`-th
    (counted over epochs, from 1) raises instead, as a killed run stops."""
    train_step = trainer.distiller.train_step

    def watched(*args, **kwargs):
        seen.append(args[2])
        if len(seen) == stop_at:
            raise _Interrupted
        return train_step(*args, **kwargs)

    trainer.distiller.train_step = watched


@pytest.mark.parametrize("method_opts", [["DISTILLER.NAME", "kd"], ["DISTILLER.NAME", "slkd"],
                                         ["DISTILLER.NAME", "hybrid", "HYBRID.TERMS", "['crd', 'mlkd']",
                                          "CRD.NCE_K", 32]], ids=["kd", "slkd", "crd_mlkd"])
def test_a_run_resumed_in_the_middle_of_an_epoch_ends_as_the_uninterrupted_one(cls_cfg, cls_teacher, tmp_path,
                                                                               method_opts):
    # 40 images in batches of 16: 3 steps an epoch; a checkpoint after step 2 of each, the run stopped at step 3
    # of epoch 2, so last.pth holds epoch 1 and two steps of epoch 2
    opts = ["MODEL.TEACHER", "resnet14", "MODEL.TEACHER_CHECKPOINT", cls_teacher, *method_opts,
            "TRAIN.CHECKPOINT_PERIOD", 2]
    straight_trainer, straight = _train(cls_cfg(*opts, "OUTPUT_DIR", tmp_path / "a"))
    interrupted = Trainer(cls_cfg(*opts, "OUTPUT_DIR", tmp_path / "b"))
    _watch_steps(interrupted, [], stop_at=3 + 3)
    with pytest.raises(_Interrupted):
        interrupted.train()
    saved = read_checkpoint(tmp_path / "b" / "last.pth")
    assert saved["epoch"] == 1 and saved["partial_epoch"]["step"] == 2 and len(saved["history"]) == 1

    resumed_trainer = Trainer(cls_cfg(*opts, "OUTPUT_DIR", tmp_path / "b"), resume=True)
    steps = []
    _watch_steps(resumed_trainer, steps)
    resumed = resumed_trainer.train()
    assert steps == pytest.approx([1 + 2 / 3, 2, 2 + 1 / 3, 2 + 2 / 3])  # the last step of epoch 2, then epoch 3
    _assert_same_state(straight_trainer.distiller.trainable_state_dict(), resumed_trainer.distiller.trainable_state_dict())
    for a, b in zip(straight_trainer.history, resumed_trainer.history, strict=True):
        assert {k: v for k, v in a.items() if k != "seconds"} == {k: v for k, v in b.items() if k != "seconds"}
    assert straight["last_top1"] == resumed["last_top1"] and resumed_trainer.partial_epoch is None


def test_slkd_checkpoint_holds_every_network_and_optimizer(cls_cfg, cls_teacher, tmp_path):
    cfg = cls_cfg("DISTILLER.NAME", "slkd", "MODEL.TEACHER", "resnet14", "MODEL.TEACHER_CHECKPOINT", cls_teacher,
                  "SOLVER.EPOCHS", 1)
    _train(cfg)
    state = read_checkpoint(tmp_path / "run" / "last.pth")
    assert set(state["optimizers"]["optimizers"]) == {"student", "slt1", "slt2"}
    assert set(state["schedulers"]) == {"student", "slt1", "slt2"}
    prefixes = {key.split(".")[0] + ("." + key.split(".")[1] if key.startswith("slts") else "") for key in state["model"]}
    assert prefixes == {"student", "slts.0", "slts.1"}  # the frozen teacher is not saved


def test_training_learns_and_writes_outputs(cls_cfg, tmp_path):
    _, summary = _train(cls_cfg("SOLVER.EPOCHS", 4, "SOLVER.MILESTONES", [3], "DATASET.SYNTHETIC.NUM_TRAIN", 160))
    run = tmp_path / "run"
    assert summary["best_top1"] > 100 / 5 + 20  # well above chance on the 5-class synthetic set
    assert json.loads((run / "summary.json").read_text()) == summary
    assert {"last.pth", "best_student.pth", "metrics.csv", "config.yaml"} <= {p.name for p in run.iterdir()}
    assert not [p for p in run.iterdir() if p.name.endswith(".tmp")]


def test_eval_command_reproduces_best_accuracy(cls_cfg, tmp_path, capsys):
    _, summary = _train(cls_cfg())
    config = tmp_path / "run" / "config.yaml"
    main(["eval", "--config", str(config), "--checkpoint", str(tmp_path / "run" / "best_student.pth")])
    result = json.loads(capsys.readouterr().out)
    assert result["top1"] == pytest.approx(summary["best_top1"])


def test_missing_teacher_checkpoint_names_the_path(cls_cfg, tmp_path):
    missing = tmp_path / "nowhere" / "teacher.pth"
    with pytest.raises(FileNotFoundError, match=str(missing)):
        Trainer(cls_cfg("DISTILLER.NAME", "kd", "MODEL.TEACHER", "resnet14", "MODEL.TEACHER_CHECKPOINT", missing))


def test_teacher_of_another_architecture_is_refused(cls_cfg, cls_teacher):
    with pytest.raises(ValueError, match=r"holds a resnet14 with 5 classes, but resnet20 with 5 classes"):
        Trainer(cls_cfg("DISTILLER.NAME", "kd", "MODEL.TEACHER", "resnet20", "MODEL.TEACHER_CHECKPOINT", cls_teacher))


def test_teacher_with_another_class_count_is_refused(cls_cfg, cls_teacher):
    cfg = cls_cfg("DISTILLER.NAME", "kd", "MODEL.TEACHER", "resnet14", "MODEL.TEACHER_CHECKPOINT", cls_teacher,
                  "DATASET.SYNTHETIC.NUM_CLASSES", 7)
    with pytest.raises(ValueError, match=r"resnet14 with 5 classes, but resnet14 with 7 classes"):
        Trainer(cfg)


def test_plain_state_dict_of_wrong_shape_is_refused(cls_cfg, tmp_path):
    from classification.models import build_model

    path = tmp_path / "plain.pth"
    atomic_save(build_model("resnet8", 5).state_dict(), path)
    with pytest.raises(ValueError, match=rf"{path} does not hold a resnet14 with 5 classes"):
        Trainer(cls_cfg("DISTILLER.NAME", "kd", "MODEL.TEACHER", "resnet14", "MODEL.TEACHER_CHECKPOINT", path))
    assert Trainer(cls_cfg("DISTILLER.NAME", "kd", "MODEL.TEACHER", "resnet8", "MODEL.TEACHER_CHECKPOINT", path))


def test_distiller_without_teacher_setting_fails_clearly(cls_cfg):
    with pytest.raises(ValueError, match="needs MODEL.TEACHER"):
        Trainer(cls_cfg("DISTILLER.NAME", "dkd"))


def test_resume_refuses_another_runs_folder(cls_cfg, tmp_path):
    _train(cls_cfg("SOLVER.EPOCHS", 1))
    with pytest.raises(ValueError, match="use another OUTPUT_DIR"):
        Trainer(cls_cfg("MODEL.STUDENT", "resnet14"), resume=True)


def test_train_command_with_overrides(tmp_path, cls_cfg, capsys):
    config = tmp_path / "tiny.yaml"
    config.write_text(cls_cfg("SOLVER.EPOCHS", 1).dump())
    main(["train", "--config", str(config), "OUTPUT_DIR", str(tmp_path / "cli"), "MODEL.STUDENT", "resnet14"])
    summary = json.loads(capsys.readouterr().out)
    assert summary["student"] == "resnet14" and summary["epochs"] == 1
    assert (tmp_path / "cli" / "last.pth").is_file()


def test_train_compile_compiles_every_network_a_step_runs(cls_cfg, cls_teacher, monkeypatch):
    compiled = []
    monkeypatch.setattr(torch.nn.Module, "compile", lambda module, *a, **k: compiled.append(module))
    trainer = Trainer(cls_cfg("DISTILLER.NAME", "slkd", "MODEL.TEACHER", "resnet14", "MODEL.TEACHER_CHECKPOINT",
                              cls_teacher, "TRAIN.COMPILE", True))
    distiller = trainer.distiller
    assert compiled == [distiller.student, distiller.teacher, *distiller.slts]
    Trainer(cls_cfg("DISTILLER.NAME", "kd", "MODEL.TEACHER", "resnet14", "MODEL.TEACHER_CHECKPOINT", cls_teacher,
                    "OUTPUT_DIR", cls_teacher.parent.parent / "eager"))
    assert len(compiled) == 4  # without TRAIN.COMPILE nothing more is compiled


@pytest.mark.slow
def test_a_compiled_run_keeps_its_checkpoint_keys_and_resumes_exactly(cls_cfg, cls_teacher, tmp_path):
    opts = ["DISTILLER.NAME", "kd", "MODEL.TEACHER", "resnet14", "MODEL.TEACHER_CHECKPOINT", cls_teacher,
            "TRAIN.COMPILE", True, "SOLVER.EPOCHS", 2]
    straight_trainer, straight = _train(cls_cfg(*opts, "OUTPUT_DIR", tmp_path / "a"))
    _train(cls_cfg(*opts, "OUTPUT_DIR", tmp_path / "b", "SOLVER.EPOCHS", 1))
    resumed_trainer, resumed = _train(cls_cfg(*opts, "OUTPUT_DIR", tmp_path / "b"), resume=True)
    _assert_same_state(straight_trainer.distiller.trainable_state_dict(), resumed_trainer.distiller.trainable_state_dict())
    assert straight["last_top1"] == resumed["last_top1"]
    eager_trainer, _ = _train(cls_cfg(*opts[:6], "SOLVER.EPOCHS", 2, "OUTPUT_DIR", tmp_path / "eager"))
    eager_state = eager_trainer.distiller.trainable_state_dict()
    assert eager_state.keys() == straight_trainer.distiller.trainable_state_dict().keys()  # no _orig_mod. prefix
    for name, value in straight_trainer.distiller.student.named_parameters():
        torch.testing.assert_close(value, eager_state[f"student.{name}"], rtol=1e-3, atol=1e-4, msg=name)
