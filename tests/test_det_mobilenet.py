"""MobileNetV2-FPN backbone: torchvision's features, strides, p2..p6, norms, freezing and the registry."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

pytest.importorskip("detectron2")
torchvision = pytest.importorskip("torchvision")

from detectron2.config import get_cfg  # noqa: E402
from detectron2.layers import FrozenBatchNorm2d, ShapeSpec  # noqa: E402
from detectron2.modeling import build_backbone  # noqa: E402

from unikd_det import add_distill_config  # noqa: E402
from unikd_det.mobilenet_fpn import MobileNetV2, make_divisible  # noqa: E402


def _torchvision_stage_outputs(model, x):
    outputs = {}
    for index, block in enumerate(model.features):
        x = block(x)
        outputs[index] = x
    return outputs


def test_bottom_up_equals_torchvision_features_with_its_weights():
    torch.manual_seed(0)
    reference = torchvision.models.mobilenet_v2(weights=None).eval()
    ours = MobileNetV2(norm="BN").eval()
    state = {k: v for k, v in reference.state_dict().items() if k.startswith("features.") and not k.startswith("features.18.")}
    ours.load_state_dict(state, strict=True)
    x = torch.randn(2, 3, 96, 64)
    with torch.no_grad():
        expected = _torchvision_stage_outputs(reference, x)
        got = ours(x)
    for name, index in {"res2": 3, "res3": 6, "res4": 13, "res5": 17}.items():
        assert torch.allclose(got[name], expected[index], atol=1e-5), name
    assert {n: s.channels for n, s in ours.output_shape().items()} == {"res2": 24, "res3": 32, "res4": 96, "res5": 320}
    assert [tuple(got[n].shape[-2:]) for n in ("res2", "res3", "res4", "res5")] == [(24, 16), (12, 8), (6, 4), (3, 2)]


def test_width_multiplier_rounds_channels_like_the_paper():
    assert (make_divisible(32 * 0.5), make_divisible(24 * 0.5), make_divisible(320 * 0.75)) == (16, 16, 240)
    shapes = MobileNetV2(width_mult=0.5).output_shape()
    assert {n: s.channels for n, s in shapes.items()} == {"res2": 16, "res3": 16, "res4": 48, "res5": 160}


def test_freeze_at_freezes_the_stem_then_whole_stages():
    model = MobileNetV2(norm="BN", freeze_at=2)
    frozen = [not any(p.requires_grad for p in block.parameters()) for block in model.features]
    assert frozen == [True] * 4 + [False] * 14  # stem and res2 (features 0..3)
    assert any(isinstance(m, FrozenBatchNorm2d) for m in model.features[3].modules())
    assert not any(isinstance(m, FrozenBatchNorm2d) for m in model.features[4].modules())
    assert all(p.requires_grad for p in MobileNetV2(norm="BN", freeze_at=0).parameters())


def test_registered_fpn_backbone_gives_p2_to_p6_and_rejects_bad_settings():
    cfg = get_cfg()
    add_distill_config(cfg)
    cfg.MODEL.BACKBONE.NAME = "build_mobilenetv2_fpn_backbone"
    cfg.MODEL.FPN.IN_FEATURES = ["res2", "res3", "res4", "res5"]
    cfg.MODEL.MOBILENETV2.NORM = "BN"
    backbone = build_backbone(cfg)
    out = backbone(torch.randn(1, 3, 64, 64))
    assert list(out) == ["p2", "p3", "p4", "p5", "p6"]
    assert [o.shape[-1] for o in out.values()] == [16, 8, 4, 2, 1]
    assert all(o.shape[1] == cfg.MODEL.FPN.OUT_CHANNELS for o in out.values())
    with pytest.raises(ValueError, match="OUT_FEATURES"):
        MobileNetV2(out_features=["res6"])
    from unikd_det.mobilenet_fpn import build_mobilenetv2_fpn_backbone

    with pytest.raises(ValueError, match="3-channel"):
        build_mobilenetv2_fpn_backbone(cfg, ShapeSpec(channels=1))


COCO_CONFIGS = sorted((Path(__file__).resolve().parent.parent / "configs" / "COCO").glob("*.yaml"))


@pytest.mark.parametrize("config", COCO_CONFIGS, ids=[p.stem for p in COCO_CONFIGS])
def test_every_coco_config_builds_its_student_backbone_and_a_compatible_teacher_config(config):
    from unikd_det.teacher import load_teacher_config, teacher_output_shapes, validate_teacher_config

    cfg = get_cfg()
    add_distill_config(cfg)
    cfg.merge_from_file(str(config))
    with torch.device("meta"):  # shapes only: no weights are read or downloaded
        student_levels = build_backbone(cfg).output_shape()
    teacher_cfg = load_teacher_config(cfg)
    validate_teacher_config(cfg, teacher_cfg)
    teacher_levels = teacher_output_shapes(teacher_cfg)
    assert set(cfg.DISTILL.UNIKD.IN_FEATURES) <= set(student_levels) & set(teacher_levels)
    assert [student_levels[f].stride for f in cfg.DISTILL.UNIKD.IN_FEATURES] == [4, 8, 16, 32, 64]
