"""Stronger teachers: a LazyConfig (`.py`) teacher built with `instantiate` and loaded with its own checkpointer, the
same checks as a yacs teacher, Mask R-CNN teachers (their mask branch never runs) and Mask R-CNN students (their
mask loss keeps training). The mosaic demo set has boxes only, so the mask tests give the synthetic inputs masks."""
from __future__ import annotations

import pytest
import torch

# A tiny Mask R-CNN R18-FPN LazyConfig: Detectron2's common Mask R-CNN FPN model with the test-sized widths of
# tests/conftest.py TINY_OPTS (16 FPN channels, like TEACHER_OPTS) and the mosaic set's 10 classes.
TINY_LAZY_TEACHER = '''
from detectron2.layers import ShapeSpec
from detectron2.model_zoo import get_config

model = get_config("common/models/mask_rcnn_fpn.py").model
model.backbone.bottom_up.stages.depth = 18
del model.backbone.bottom_up.stages.stride_in_1x1  # bottleneck blocks only
model.backbone.out_channels = 16
model.proposal_generator.head.in_channels = 16
model.proposal_generator.anchor_generator.sizes = [[8], [16], [32], [64], [128]]
model.proposal_generator.batch_size_per_image = 32
model.proposal_generator.pre_nms_topk = (200, 100)
model.proposal_generator.post_nms_topk = (64, 50)
model.roi_heads.num_classes = 10
model.roi_heads.batch_size_per_image = 32
model.roi_heads.box_head.input_shape = ShapeSpec(channels=16, height=7, width=7)
model.roi_heads.box_head.fc_dims = [32, 32]
model.roi_heads.box_predictor.input_shape = ShapeSpec(channels=32)
model.roi_heads.mask_head.input_shape = ShapeSpec(channels=16, height=14, width=14)
model.roi_heads.mask_head.conv_dims = [16, 16]
model.pixel_mean = [24.0, 24.0, 24.0]
model.pixel_std = [53.0, 53.0, 53.0]
'''
TINY_MASK_HEAD = ["MODEL.ROI_MASK_HEAD.CONV_DIM", 16, "MODEL.ROI_MASK_HEAD.NUM_CONV", 1]


@pytest.fixture(scope="module")
def lazy_teacher(tmp_path_factory):
    """(LazyConfig path, weights path) of the tiny Mask R-CNN LazyConfig teacher on random weights."""
    from detectron2.checkpoint import DetectionCheckpointer
    from detectron2.config import LazyConfig, instantiate

    folder = tmp_path_factory.mktemp("lazy_teacher")
    config = folder / "tiny_mask_rcnn.py"
    config.write_text(TINY_LAZY_TEACHER, encoding="utf-8")
    torch.manual_seed(4321)
    model = instantiate(LazyConfig.load(str(config)).model)
    DetectionCheckpointer(model, save_dir=str(folder)).save("lazy_teacher")
    return config, folder / "lazy_teacher.pth"


@pytest.fixture
def lazy_cfg(make_cfg, lazy_teacher):
    """Factory: a tiny DistillRCNN config whose teacher is the LazyConfig teacher."""

    def make(kd: bool = True, unikd: bool = True, opts=()):
        cfg = make_cfg(kd=kd, unikd=unikd, opts=opts)
        cfg.DISTILL.TEACHER.CONFIG, cfg.DISTILL.TEACHER.WEIGHTS = (str(path) for path in lazy_teacher)
        return cfg

    return make


def with_box_masks(inputs: list[dict]) -> list[dict]:
    """The inputs with `gt_masks`: each object's mask fills its box."""
    from detectron2.structures import BitMasks

    for x in inputs:
        instances = x["instances"]
        masks = torch.zeros((len(instances), *instances.image_size), dtype=torch.bool)
        for mask, (x0, y0, x1, y1) in zip(masks, instances.gt_boxes.tensor.round().int().tolist()):
            mask[y0:y1, x0:x1] = True
        instances.gt_masks = BitMasks(masks)
    return inputs


def never_runs(module: torch.nn.Module) -> list:
    """A list that receives an entry each time `module` runs."""
    calls = []
    module.register_forward_hook(lambda *args: calls.append(1))
    return calls


def test_lazy_teacher_is_instantiated_loaded_and_distils_one_step(lazy_cfg, lazy_teacher, build, batched_inputs,
                                                                  train_forward):
    from detectron2.modeling import GeneralizedRCNN

    model = build(lazy_cfg())
    teacher = model.build_teacher()
    assert isinstance(teacher.model, GeneralizedRCNN) and teacher.input_format == "BGR"
    saved = torch.load(lazy_teacher[1], map_location="cpu", weights_only=True)["model"]
    state = teacher.model.state_dict()
    assert set(saved) == set(state)  # the mask branch is built, so the Mask R-CNN weights load strictly
    assert all(torch.equal(state[key], value) for key, value in saved.items())
    assert teacher.model.backbone.output_shape()["p2"].channels == 16  # the LazyConfig's own widths
    mask_calls = never_runs(teacher.model.roi_heads.mask_head)

    losses = train_forward(model, batched_inputs)
    assert {"loss_kd", "loss_unikd_logit", "loss_cls"} <= set(losses)
    assert all(torch.isfinite(value) for value in losses.values())
    sum(losses.values()).backward()
    assert all(p.grad is None for p in teacher.model.parameters())
    assert mask_calls == []  # only the backbone and the box branch of the teacher ran


def test_lazy_teacher_overrides_are_key_value_and_its_class_count_is_checked(lazy_cfg, build):
    cfg = lazy_cfg(opts=["DISTILL.TEACHER.OPTS", ["model.roi_heads.num_classes=5"]])
    with pytest.raises(ValueError, match=r"class-count mismatch.*= 10.*tiny_mask_rcnn\.py.*= 5"):
        build(cfg)
    cfg.DISTILL.TEACHER.OPTS = ["MODEL.ROI_HEADS.NUM_CLASSES", "5"]  # the yacs form
    with pytest.raises(ValueError, match=r"key=value.*MODEL\.ROI_HEADS\.NUM_CLASSES"):
        build(cfg)


@pytest.mark.parametrize("override, message", [
    ("model.input_format='L'", "cannot convert image format BGR"),
    ("model.pixel_mean=[24.0]", "normalises 1 mean"),
])
def test_lazy_teacher_input_format_and_normalisation_are_checked(lazy_cfg, build, override, message):
    extra = ["model.pixel_std=[53.0]"] if "pixel_mean" in override else []
    with pytest.raises(ValueError, match=message):
        build(lazy_cfg(opts=["DISTILL.TEACHER.OPTS", [override, *extra]]))


def test_lazy_teacher_that_is_not_a_generalized_rcnn_is_refused(lazy_cfg, build, tmp_path):
    config = tmp_path / "retinanet.py"
    config.write_text('from detectron2.model_zoo import get_config\n\n'
                      'model = get_config("common/models/retinanet.py").model\n', encoding="utf-8")
    cfg = lazy_cfg()
    cfg.DISTILL.TEACHER.CONFIG = str(config)
    with pytest.raises(ValueError, match=r"teacher model \(a RetinaNet\) is not a GeneralizedRCNN"):
        build(cfg)
    config.write_text("x = 1\n", encoding="utf-8")
    with pytest.raises(KeyError, match="defines no `model`"):
        build(cfg)


def test_a_url_teacher_config_is_refused_before_anything_is_fetched(lazy_cfg, build, monkeypatch):
    from detectron2.config import LazyConfig

    monkeypatch.setattr(LazyConfig, "load", lambda *args, **kwargs: pytest.fail("a URL config was loaded"))
    cfg = lazy_cfg()
    cfg.DISTILL.TEACHER.CONFIG = "https://example.org/teacher.py"
    with pytest.raises(ValueError, match="is a URL.*runs as code"):
        build(cfg)


def test_model_zoo_lazy_teacher_name_resolves_and_validates(lazy_cfg):
    """The model zoo's LazyConfig Mask R-CNN R101 (docs/own-detector.md's example) resolves by name and passes the
    checks on the meta device: no memory, no weights."""
    from unikd_det.teacher import load_teacher_config, validate_teacher_config

    cfg = lazy_cfg()
    cfg.DISTILL.TEACHER.CONFIG = "new_baselines/mask_rcnn_R_101_FPN_400ep_LSJ.py"
    cfg.DISTILL.TEACHER.OPTS = ["model.roi_heads.num_classes=10"]
    teacher_cfg = load_teacher_config(cfg)
    assert teacher_cfg.train.init_checkpoint == cfg.DISTILL.TEACHER.WEIGHTS and teacher_cfg.train.device == "cpu"
    layout = validate_teacher_config(cfg, teacher_cfg)
    assert sorted(layout.levels) == ["p2", "p3", "p4", "p5", "p6"]
    assert {shape.channels for shape in layout.levels.values()} == {256}
    assert layout.box_in_features == ["p2", "p3", "p4", "p5"]


def test_yacs_mask_rcnn_teacher_loads_strictly_and_its_mask_branch_never_runs(
    make_cfg, make_stock_cfg, write_teacher_config, build, batched_inputs, train_forward, tmp_path
):
    from detectron2.checkpoint import DetectionCheckpointer
    from detectron2.modeling import build_model

    teacher_cfg = make_stock_cfg(["MODEL.FPN.OUT_CHANNELS", 16, "MODEL.MASK_ON", True, *TINY_MASK_HEAD])
    config = write_teacher_config(teacher_cfg, tmp_path / "mask_teacher.yaml")
    torch.manual_seed(5)
    DetectionCheckpointer(build_model(teacher_cfg), save_dir=str(tmp_path)).save("mask_teacher")
    cfg = make_cfg(kd=True)
    cfg.DISTILL.TEACHER.CONFIG, cfg.DISTILL.TEACHER.WEIGHTS = str(config), str(tmp_path / "mask_teacher.pth")
    model = build(cfg)
    mask_calls = never_runs(model.build_teacher().model.roi_heads.mask_head)
    losses = train_forward(model, batched_inputs)
    assert "loss_kd" in losses and "loss_mask" not in losses
    assert mask_calls == []


def test_mask_rcnn_student_keeps_training_its_masks(lazy_cfg, build, batched_inputs, train_forward):
    model = build(lazy_cfg(opts=["MODEL.MASK_ON", True, *TINY_MASK_HEAD]))
    mask_head = model.student.roi_heads.mask_head
    losses = train_forward(model, with_box_masks(batched_inputs))
    assert {"loss_mask", "loss_kd", "loss_unikd_logit"} <= set(losses)
    assert torch.isfinite(losses["loss_mask"]) and losses["loss_mask"].item() > 0
    sum(losses.values()).backward()
    grads = [p.grad for p in mask_head.parameters()]
    assert grads and all(g is not None for g in grads)
    assert any(g.abs().sum() > 0 for g in grads)
