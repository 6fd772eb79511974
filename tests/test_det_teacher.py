"""The frozen teacher: built on demand, loaded from its own checkpoint, frozen, outside the module tree,
identical-teacher sanity, and its input preprocessing."""
from __future__ import annotations

import pytest
import torch

STOCK_LOSSES = {"loss_cls", "loss_box_reg", "loss_rpn_cls", "loss_rpn_loc"}


def test_build_teacher_loads_its_own_checkpoint(make_cfg, build, teacher_files):
    model = build(make_cfg(unikd=True, opts=["DISTILL.TEACHER.OPTS", ["MODEL.PIXEL_MEAN", [1.0, 2.0, 3.0]]]))
    assert model.teacher is None  # not built at construction
    teacher = model.build_teacher()
    assert teacher is model.teacher and model.build_teacher() is teacher  # idempotent
    saved = torch.load(teacher_files[1], map_location="cpu", weights_only=False)["model"]
    state = teacher.model.state_dict()
    assert set(saved) == set(state)
    for key, value in saved.items():
        assert torch.equal(state[key], value), key
    assert teacher.model.backbone.output_shape()["p2"].channels == 16  # the teacher's own config
    assert teacher.model.pixel_mean.flatten().tolist() == [1.0, 2.0, 3.0]  # DISTILL.TEACHER.OPTS applied


def test_teacher_is_frozen_and_stays_in_eval(make_cfg, build, batched_inputs, train_forward):
    model = build(make_cfg(kd=True, unikd=True))
    model.build_teacher()
    model.train()
    assert model.training and model.student.training
    assert model.teacher.model.training is False
    assert not any(m.training for m in model.teacher.model.modules())
    losses = train_forward(model, batched_inputs)
    sum(losses.values()).backward()
    model.train()  # again after a step
    assert model.teacher.model.training is False
    teacher_params = list(model.teacher.model.parameters())
    assert teacher_params
    assert all(p.grad is None and not p.requires_grad for p in teacher_params)
    # while the student did get gradients
    assert all(p.grad is not None for p in model.student.parameters())


def test_teacher_batchnorm_statistics_do_not_move(make_cfg, build, batched_inputs, train_forward):
    model = build(make_cfg(kd=True))
    teacher = model.build_teacher()
    before = {k: v.clone() for k, v in teacher.model.state_dict().items()}
    train_forward(model, batched_inputs)
    for key, value in teacher.model.state_dict().items():
        assert torch.equal(value, before[key]), key


def test_teacher_is_outside_the_module_tree(make_cfg, build, batched_inputs, train_forward):
    from unikd_det.trainer import DistillTrainer

    cfg = make_cfg(kd=True, unikd=True)
    model = build(cfg)
    train_forward(model, batched_inputs)  # builds the teacher on first use
    assert model.teacher is not None
    keys = list(model.state_dict())
    assert not any("teacher" in key for key in keys)
    assert all(key.startswith(("student.", "distill_terms.")) for key in keys)
    teacher_ids = {id(p) for p in model.teacher.model.parameters()} | {id(b) for b in model.teacher.model.buffers()}
    assert not teacher_ids & {id(p) for p in model.parameters()}
    assert not teacher_ids & {id(b) for b in model.buffers()}
    assert model.teacher.model not in list(model.modules())
    # and so not in the optimizer the trainer builds
    optimizer = DistillTrainer.build_optimizer(cfg, model)
    optimized = {id(p) for group in optimizer.param_groups for p in group["params"]}
    assert not teacher_ids & optimized
    assert {id(p) for p in model.parameters() if p.requires_grad} == optimized


def test_identical_teacher_gives_zero_roi_kd_and_zero_gradient(
    make_cfg, build, batched_inputs, train_forward, tmp_path, write_teacher_config, capture_ctx
):
    """Teacher = exact copy of the student (FrozenBN, so train and eval compute alike): KL = 0, grad = 0, for
    KD, DKD and UniKD's logit term alike."""
    opts = ["MODEL.RESNETS.NORM", "FrozenBN", "DISTILL.DKD.ENABLED", True]
    first = build(make_cfg(kd=True, unikd=True, opts=opts), seed=7)
    weights = tmp_path / "student_copy.pth"
    torch.save({"model": first.student.state_dict()}, weights)
    cfg = make_cfg(kd=True, unikd=True, opts=opts)
    config = write_teacher_config(cfg, tmp_path / "student_as_teacher.yaml")
    cfg.DISTILL.TEACHER.CONFIG = str(config)
    cfg.DISTILL.TEACHER.WEIGHTS = str(weights)
    model = build(cfg, seed=99)
    model.student.load_state_dict(first.student.state_dict())

    seen = capture_ctx(model)
    losses = train_forward(model, batched_inputs)
    ctx = seen[-1]
    for name in ("p2", "p3", "p4", "p5", "p6"):
        torch.testing.assert_close(ctx.teacher_features[name], ctx.student_features[name].detach())
    torch.testing.assert_close(ctx.teacher_logits, ctx.student_logits.detach())
    assert losses["loss_kd"].item() == pytest.approx(0.0, abs=1e-6)
    assert losses["loss_dkd"].item() == pytest.approx(0.0, abs=1e-6)
    assert losses["loss_unikd_logit"].item() == pytest.approx(0.0, abs=1e-6)
    for key in ("loss_kd", "loss_dkd"):
        (grad,) = torch.autograd.grad(losses[key], ctx.student_logits, retain_graph=True)
        assert grad.shape == ctx.student_logits.shape
        assert grad.abs().max().item() < 1e-6, key
    # Sanity of the test: a perturbed teacher would give a non-zero KL and gradient.
    perturbed = ctx.student_logits.detach() + torch.randn_like(ctx.student_logits)
    from unikd.core import kd_loss

    logits = ctx.student_logits.detach().requires_grad_(True)
    (other,) = torch.autograd.grad(kd_loss(logits, perturbed, 1.0), logits)
    assert other.abs().max().item() > 1e-4


@pytest.mark.parametrize("teacher_format", ["BGR", "RGB"])
def test_preprocess_converts_format_then_normalises_with_teacher_stats(make_stock_cfg, make_inputs, teacher_format):
    from detectron2.modeling import build_model

    from unikd_det.teacher import FrozenTeacher

    mean, std = [10.0, 20.0, 30.0], [2.0, 4.0, 8.0]
    teacher_cfg = make_stock_cfg(
        ["MODEL.PIXEL_MEAN", mean, "MODEL.PIXEL_STD", std, "INPUT.FORMAT", teacher_format, "MODEL.FPN.OUT_CHANNELS", 16]
    )
    torch.manual_seed(0)
    teacher = FrozenTeacher(build_model(teacher_cfg), teacher_format)
    student_cfg = make_stock_cfg(["INPUT.FORMAT", "RGB", "MODEL.PIXEL_MEAN", [100.0, 110.0, 120.0]])
    student = build_model(student_cfg)
    inputs = make_inputs(1, size=(50, 60), seed=1) + make_inputs(1, size=(64, 40), seed=2)
    like = student.preprocess_image(inputs)
    assert tuple(like.tensor.shape[-2:]) == (64, 64)  # padded to FPN's size divisibility

    out = teacher.preprocess(inputs, "RGB", like)

    expected = torch.zeros(2, 3, 64, 64)
    for i, x in enumerate(inputs):
        image = x["image"].float()
        if teacher_format == "BGR":
            image = image[[2, 1, 0]]
        normalised = (image - torch.tensor(mean)[:, None, None]) / torch.tensor(std)[:, None, None]
        expected[i, :, : image.shape[1], : image.shape[2]] = normalised
    assert out.tensor.shape == like.tensor.shape
    torch.testing.assert_close(out.tensor, expected)
    assert list(out.image_sizes) == list(like.image_sizes) == [(50, 60), (64, 40)]
    assert not out.tensor.requires_grad


def test_forward_feeds_the_teacher_its_own_format_and_statistics(
    make_cfg, build, make_inputs, train_forward, tmp_path, make_stock_cfg, write_teacher_config, capture_ctx
):
    """End to end inside DistillRCNN: RGB student, BGR teacher with other mean/std, odd image sizes; the
    teacher features the terms see are the teacher backbone on the hand-made input, aligned with the
    student's FPN levels."""
    from detectron2.checkpoint import DetectionCheckpointer
    from detectron2.modeling import build_model

    mean, std = [10.0, 20.0, 30.0], [2.0, 4.0, 8.0]
    teacher_cfg = make_stock_cfg(
        ["MODEL.PIXEL_MEAN", mean, "MODEL.PIXEL_STD", std, "INPUT.FORMAT", "BGR", "MODEL.FPN.OUT_CHANNELS", 16]
    )
    config = write_teacher_config(teacher_cfg, tmp_path / "bgr_teacher.yaml")
    torch.manual_seed(3)
    DetectionCheckpointer(build_model(teacher_cfg), save_dir=str(tmp_path)).save("bgr_teacher")
    cfg = make_cfg(unikd=True, opts=["INPUT.FORMAT", "RGB"])
    cfg.DISTILL.TEACHER.CONFIG = str(config)
    cfg.DISTILL.TEACHER.WEIGHTS = str(tmp_path / "bgr_teacher.pth")
    model = build(cfg)
    seen = capture_ctx(model)
    inputs = make_inputs(1, size=(50, 60), seed=1) + make_inputs(1, size=(64, 40), seed=2)
    train_forward(model, inputs)
    ctx = seen[-1]
    assert model.teacher.input_format == "BGR"
    by_hand = torch.zeros(2, 3, 64, 64)
    for i, x in enumerate(inputs):
        image = x["image"].float()[[2, 1, 0]]
        by_hand[i, :, : image.shape[1], : image.shape[2]] = (
            image - torch.tensor(mean)[:, None, None]
        ) / torch.tensor(std)[:, None, None]
    with torch.no_grad():
        expected = model.teacher.model.backbone(by_hand)
    for name in ("p2", "p3", "p4", "p5", "p6"):
        torch.testing.assert_close(ctx.teacher_features[name], expected[name])
        assert ctx.teacher_features[name].shape[-2:] == ctx.student_features[name].shape[-2:]
        assert ctx.teacher_features[name].shape[1] == 16 and ctx.student_features[name].shape[1] == 32
