"""Clear errors before training starts: bad teacher, bad levels, unknown options, unknown config keys."""
from __future__ import annotations

import re

import pytest


def test_class_count_mismatch_fails_at_build(make_cfg, build):
    cfg = make_cfg(kd=True, opts=["DISTILL.TEACHER.OPTS", ["MODEL.ROI_HEADS.NUM_CLASSES", 5]])
    with pytest.raises(ValueError, match="class-count mismatch"):
        build(cfg)


def test_class_count_mismatch_fails_from_student_side(make_cfg, build):
    cfg = make_cfg(unikd=True, opts=["MODEL.ROI_HEADS.NUM_CLASSES", 80])
    with pytest.raises(ValueError, match="class-count mismatch.*80.*10"):
        build(cfg)


def test_missing_teacher_weights_fails_in_build_teacher(make_cfg, build, tmp_path):
    cfg = make_cfg(kd=True)
    cfg.DISTILL.TEACHER.WEIGHTS = str(tmp_path / "missing.pth")
    model = build(cfg)  # the model itself can be built (inference never needs the teacher) ...
    with pytest.raises(FileNotFoundError, match="teacher weights file not found"):
        model.build_teacher()  # ... but the teacher cannot


def test_empty_teacher_weights_fails(make_cfg, build):
    cfg = make_cfg(kd=True)
    cfg.DISTILL.TEACHER.WEIGHTS = ""
    with pytest.raises(ValueError, match="DISTILL.TEACHER.WEIGHTS"):
        build(cfg).build_teacher()


def test_missing_teacher_weights_fails_when_trainer_is_constructed(trainer_cfg, tmp_path):
    from unikd_det.trainer import DistillTrainer

    cfg = trainer_cfg(unikd=True)
    cfg.DISTILL.TEACHER.WEIGHTS = str(tmp_path / "missing.pth")
    with pytest.raises(FileNotFoundError, match="teacher weights file not found"):
        DistillTrainer(cfg)


def test_missing_teacher_weights_fails_in_the_first_training_forward(make_cfg, build, batched_inputs, train_forward):
    cfg = make_cfg(unikd=True)
    cfg.DISTILL.TEACHER.WEIGHTS = "/nonexistent/dir/teacher.pth"
    model = build(cfg)
    with pytest.raises(FileNotFoundError, match="teacher weights file not found"):
        train_forward(model, batched_inputs)


def test_level_missing_in_student_fails(make_cfg, build):
    cfg = make_cfg(unikd=True, opts=["DISTILL.UNIKD.IN_FEATURES", ["p2", "p9"]])
    with pytest.raises(ValueError, match=r"IN_FEATURES.*p9.*student"):
        build(cfg)


def test_level_missing_in_teacher_fails(make_cfg, build):
    """A teacher whose FPN starts at p3 cannot serve IN_FEATURES p2..p6 (shapes read without weights)."""
    teacher_opts = [
        "MODEL.RESNETS.OUT_FEATURES", ["res3", "res4", "res5"],
        "MODEL.FPN.IN_FEATURES", ["res3", "res4", "res5"],
        "MODEL.RPN.IN_FEATURES", ["p3", "p4", "p5", "p6"],
        "MODEL.ANCHOR_GENERATOR.SIZES", [[16], [32], [64], [128]],
        "MODEL.ROI_HEADS.IN_FEATURES", ["p3", "p4", "p5"],
    ]
    cfg = make_cfg(unikd=True, opts=["DISTILL.TEACHER.OPTS", teacher_opts])
    with pytest.raises(ValueError, match=r"IN_FEATURES.*p2.*teacher"):
        build(cfg)
    cfg.DISTILL.UNIKD.IN_FEATURES = ["p3", "p4", "p5", "p6"]  # levels both networks have: fine
    term = build(cfg).distill_terms["unikd"]
    assert term.options.in_features == ["p3", "p4", "p5", "p6"]
    # NUM_LEVELS 0 (the detection preset) fuses every tapped level of both networks
    assert term.student_levels == term.teacher_levels == ["p3", "p4", "p5", "p6"]


def test_empty_in_features_fails(make_cfg, build):
    with pytest.raises(ValueError, match="IN_FEATURES"):
        build(make_cfg(unikd=True, opts=["DISTILL.UNIKD.IN_FEATURES", []]))


def enabling(key: str) -> list:
    """The opts that enable the term whose node `key` (DISTILL.<NAME>.<OPTION>...) lies in."""
    return [f"DISTILL.{key.split('.')[1]}.ENABLED", True]


@pytest.mark.parametrize(
    "key,value",
    [
        ("DISTILL.KD.BG_MODE", "foo"),
        ("DISTILL.DKD.BG_MODE", "foo"),
        ("DISTILL.UNIKD.LOGIT_LOSS", "foo"),
        ("DISTILL.UNIKD.LOGIT_LOSS", "kl"),  # the old name of kd
        ("DISTILL.UNIKD.MODE", "foo"),
        ("DISTILL.UNIKD.TARGET_FIT", "foo"),
        ("DISTILL.UNIKD.K_REDUCTION", "foo"),
        ("DISTILL.UNIKD.NORM", "foo"),
    ],
)
def test_unknown_choice_fails_at_build(make_cfg, build, key, value):
    cfg = make_cfg(opts=[*enabling(key), key, value])
    with pytest.raises(ValueError, match=f"'{value}'"):
        build(cfg)


@pytest.mark.parametrize("key", ["DISTILL.KD.TEMPERATURE", "DISTILL.DKD.TEMPERATURE", "DISTILL.UNIKD.TEMPERATURE",
                                 "DISTILL.UNIKD.FIT_TEMPERATURE"])
def test_non_positive_temperature_fails_at_build(make_cfg, build, key):
    cfg = make_cfg(opts=[*enabling(key), key, 0.0])
    with pytest.raises(ValueError, match=re.escape(f"{key} = 0.0 (must be > 0)")):
        build(cfg)


def test_unknown_config_key_fails(make_cfg, tmp_path):
    cfg = make_cfg()
    # yacs reports a non-existent key of a KEY VALUE list with an AssertionError (not a KeyError) ...
    with pytest.raises(AssertionError, match="Non-existent key: DISTILL.KD.NOPE"):
        cfg.merge_from_list(["DISTILL.KD.NOPE", 1])
    # The renamed keys have no alias: the old ones are unknown keys too.
    for old in ("DISTILL.ROI.LOSS", "DISTILL.ROI.TEMPERATURE", "DISTILL.WARMUP_ITERS", "DISTILL.FGFI.START_ITER"):
        with pytest.raises(AssertionError, match=f"Non-existent key: {re.escape(old)}"):
            make_cfg().merge_from_list([old, 1])
    # ... and one in a YAML file with a KeyError.
    yaml = tmp_path / "typo.yaml"
    yaml.write_text("DISTILL:\n  UNIKD:\n    ENABLED: True\n    ALPAH: 2.0\n")
    with pytest.raises(KeyError, match="ALPAH"):
        make_cfg().merge_from_file(str(yaml))


def test_teacher_config_not_found(make_cfg, build, tmp_path):
    cfg = make_cfg(kd=True)
    cfg.DISTILL.TEACHER.CONFIG = str(tmp_path / "no_such_teacher.yaml")
    with pytest.raises(FileNotFoundError, match="teacher config .* not found"):
        build(cfg)


def test_teacher_config_empty(make_cfg, build):
    cfg = make_cfg(kd=True)
    cfg.DISTILL.TEACHER.CONFIG = ""
    with pytest.raises(ValueError, match="DISTILL.TEACHER.CONFIG is empty"):
        build(cfg)


def test_teacher_config_resolves_relative_to_the_repository(make_cfg, build, monkeypatch, tmp_path):
    """A repository-relative teacher config works from any working directory (shapes are read on the meta
    device, so the R50 demo teacher costs nothing to validate)."""
    monkeypatch.chdir(tmp_path)
    cfg = make_cfg(kd=True)
    cfg.DISTILL.TEACHER.CONFIG = "configs/Demo/teacher-R50.yaml"
    model = build(cfg)
    assert model._teacher_cfg.MODEL.RESNETS.DEPTH == 50


def test_teacher_with_another_meta_architecture_fails(make_cfg, build):
    cfg = make_cfg(kd=True, opts=["DISTILL.TEACHER.OPTS", ["MODEL.META_ARCHITECTURE", "RetinaNet"]])
    with pytest.raises(ValueError, match="GeneralizedRCNN"):
        build(cfg)


def test_unconvertible_input_formats_fail(make_cfg, build):
    cfg = make_cfg(kd=True, opts=["DISTILL.TEACHER.OPTS", ["INPUT.FORMAT", "L"]])
    with pytest.raises(ValueError, match="INPUT.FORMAT"):
        build(cfg)


def test_cascade_student_is_rejected(make_cfg, build):
    cfg = make_cfg(kd=True, opts=["MODEL.ROI_HEADS.NAME", "CascadeROIHeads", "MODEL.ROI_BOX_HEAD.CLS_AGNOSTIC_BBOX_REG", True])
    with pytest.raises(ValueError, match="StandardROIHeads"):
        build(cfg)


def test_unikd_num_levels_keeps_the_deepest_levels(make_cfg, build):
    """UNIKD.NUM_LEVELS n > 0 fuses the deepest n tapped levels of each network; more than there are fails
    at build, naming the key."""
    term = build(make_cfg(unikd=True, opts=["DISTILL.UNIKD.NUM_LEVELS", 2])).distill_terms["unikd"]
    assert term.student_levels == term.teacher_levels == ["p5", "p6"]
    assert len(term.loss.aff_s.expanders) == len(term.loss.aff_t.expanders) == 2
    with pytest.raises(ValueError, match=r"UNIKD.IN_FEATURES .* gives 5 features of the student, fewer than the 6"):
        build(make_cfg(unikd=True, opts=["DISTILL.UNIKD.NUM_LEVELS", 6]))


@pytest.mark.parametrize("norm,layer", [("gn", "GroupNorm"), ("bn", "BatchNorm2d")])
def test_unikd_norm_sets_the_aff_normalisation(make_cfg, build, norm, layer):
    """Detection defaults to GroupNorm in the AFF expanders (per-GPU batches of a few images); bn switches."""
    from torch import nn

    cfg = make_cfg(unikd=True) if norm == "gn" else make_cfg(unikd=True, opts=["DISTILL.UNIKD.NORM", norm])
    assert cfg.DISTILL.UNIKD.NORM == norm
    loss = build(cfg).distill_terms["unikd"].loss
    norms = {type(m).__name__ for aff in (loss.aff_s, loss.aff_t) for m in aff.modules()
             if isinstance(m, (nn.GroupNorm, nn.BatchNorm2d))}
    assert norms == {layer}
