"""DistillRCNN training forward: loss keys, finiteness, backward, loss values against hand computations,
same-proposal teacher logits, and the student-only mode."""
from __future__ import annotations

import math

import pytest
import torch
from torchvision.ops import roi_align

STOCK_LOSSES = {"loss_cls", "loss_box_reg", "loss_rpn_cls", "loss_rpn_loc"}
PAPER_LOSSES = {"loss_unikd_feat", "loss_unikd_fit", "loss_unikd_logit"}
AUTHORS_LOSSES = {"loss_unikd_feat", "loss_unikd_supp", "loss_unikd_logit"}
K = 11  # NUM_CLASSES + 1 (background)


def hand_kd(logits_s, logits_t, tau):
    """tau^2 * KL(softmax(t/tau) || softmax(s/tau)), summed over classes, mean over rows."""
    p_t = torch.softmax(logits_t.double() / tau, dim=1)
    log_p_s = torch.log_softmax(logits_s.double() / tau, dim=1)
    return (p_t * (p_t.log() - log_p_s)).sum(1).mean() * tau**2


@pytest.mark.parametrize(
    "mode,expected",
    [("paper", STOCK_LOSSES | {"loss_kd_roi"} | PAPER_LOSSES), ("authors_code", STOCK_LOSSES | {"loss_kd_roi"} | AUTHORS_LOSSES)],
    ids=["paper", "authors_code"],
)
def test_train_step_returns_all_losses_finite_and_backward(make_cfg, build, batched_inputs, train_forward, mode, expected):
    model = build(make_cfg(roi=True, unikd=True, opts=["DISTILL.UNIKD.MODE", mode]))
    losses = train_forward(model, batched_inputs)
    assert set(losses) == expected
    for name, value in losses.items():
        assert value.dim() == 0 and torch.isfinite(value), name
    sum(losses.values()).backward()
    # Every trainable parameter (student and the UniKD modules) receives a finite gradient.
    for name, param in model.named_parameters():
        assert param.grad is not None, f"no gradient for {name}"
        assert torch.isfinite(param.grad).all(), name
    unikd = model.distill_terms["unikd"].loss
    if mode == "paper":
        assert unikd.aff_t is not None and hasattr(unikd, "fdp")
    else:  # the authors' detection code: no AFF, a class and a box-regression FDP per network
        assert not hasattr(unikd, "aff_s") and unikd.reg_s is not None and unikd.reg_t is not None


def test_distill_losses_reach_the_student(make_cfg, build, batched_inputs, train_forward):
    """The distillation terms alone produce gradients in the student backbone and box predictor."""
    model = build(make_cfg(roi=True, unikd=True))
    losses = train_forward(model, batched_inputs)
    sum(v for k, v in losses.items() if k not in STOCK_LOSSES).backward()
    student = model.student
    assert student.backbone.bottom_up.stem.conv1.weight.grad.abs().sum() > 0
    assert student.roi_heads.box_predictor.cls_score.weight.grad.abs().sum() > 0
    # The box-regression branch is untouched by the class-logit terms.
    bbox_grad = student.roi_heads.box_predictor.bbox_pred.weight.grad
    assert bbox_grad is None or bbox_grad.abs().sum() == 0


def test_roi_kd_value_matches_hand_computation(make_cfg, build, batched_inputs, train_forward, capture_ctx):
    model = build(make_cfg(roi=True, opts=["DISTILL.ROI.TEMPERATURE", 2.0, "DISTILL.ROI.WEIGHT", 0.5]))
    seen = capture_ctx(model)
    losses = train_forward(model, batched_inputs)
    ctx = seen[-1]
    expected = 0.5 * hand_kd(ctx.student_logits, ctx.teacher_logits, 2.0)
    assert losses["loss_kd_roi"].item() == pytest.approx(expected.item(), rel=1e-5, abs=1e-7)
    assert losses["loss_kd_roi"].item() > 0  # random teacher != random student


def test_roi_kd_fg_mode_uses_only_foreground_rois(make_cfg, build, batched_inputs, train_forward, capture_ctx):
    model = build(make_cfg(roi=True, opts=["DISTILL.ROI.BG_MODE", "fg"]))
    seen = capture_ctx(model)
    losses = train_forward(model, batched_inputs)
    ctx = seen[-1]
    keep = ctx.gt_classes != K - 1
    assert 0 < keep.sum() < len(keep)  # the batch has both foreground and background ROIs
    expected = hand_kd(ctx.student_logits[keep], ctx.teacher_logits[keep], 1.0)
    assert losses["loss_kd_roi"].item() == pytest.approx(expected.item(), rel=1e-5, abs=1e-7)
    everything = hand_kd(ctx.student_logits, ctx.teacher_logits, 1.0)
    assert abs(expected.item() - everything.item()) > 1e-6  # the fg filter made a difference


def test_roi_dkd_uses_sampling_labels(make_cfg, build, batched_inputs, train_forward, capture_ctx):
    from unikd.core import dkd_loss

    model = build(make_cfg(roi=True, opts=["DISTILL.ROI.LOSS", "dkd", "DISTILL.ROI.DKD_BETA", 2.0]))
    seen = capture_ctx(model)
    losses = train_forward(model, batched_inputs)
    ctx = seen[-1]
    expected = dkd_loss(ctx.student_logits, ctx.teacher_logits, ctx.gt_classes, 1.0, 2.0, 1.0)
    torch.testing.assert_close(losses["loss_kd_roi"], expected)


def test_unikd_paper_losses_match_independent_roi_computation(make_cfg, build, batched_inputs, train_forward, capture_ctx):
    """loss_unikd_* = the documented formulas on ROIAligned fused maps (stride 4 at p2) of the student's
    sampled proposals, with alpha, beta, fit weight, temperatures and the mean over K applied."""
    opts = [
        "DISTILL.UNIKD.ALPHA", 0.5, "DISTILL.UNIKD.BETA", 0.7, "DISTILL.UNIKD.FIT_WEIGHT", 0.3,
        "DISTILL.UNIKD.TEMPERATURE", 2.0, "DISTILL.UNIKD.FIT_TEMPERATURE", 4.0,
    ]
    model = build(make_cfg(unikd=True, opts=opts))
    seen = capture_ctx(model)
    losses = train_forward(model, batched_inputs)
    ctx = seen[-1]
    term = model.distill_terms["unikd"]
    levels = ["p2", "p3", "p4", "p5", "p6"]
    with torch.no_grad():
        fused_s = term.loss.aff_s([ctx.student_features[f] for f in levels])
        fused_t = term.loss.aff_t([ctx.teacher_features[f] for f in levels])
        assert fused_s.shape[-1] * 4 == ctx.image_shape[-1]  # fused at p2 resolution
        rois = torch.cat(
            [torch.cat([torch.full((len(b), 1), float(i)), b.tensor], dim=1) for i, b in enumerate(ctx.boxes)]
        )
        region_s = roi_align(fused_s, rois, 4, spatial_scale=0.25, sampling_ratio=0, aligned=True)
        region_t = roi_align(fused_t, rois, 4, spatial_scale=0.25, sampling_ratio=0, aligned=True)
        mu_s, logvar_s = term.loss.fdp(region_s)
        mu_t, logvar_t = term.loss.fdp(region_t)
        var_s, var_t = logvar_s.double().exp(), logvar_t.double().exp()
        kl = 0.5 * (var_s / var_t + (mu_t - mu_s).double() ** 2 / var_t - 1 + (var_t / var_s).log()).sum(1).mean()
        target = ctx.teacher_logits.double() / 4.0
        fit = 0.5 * (logvar_t.double() + (target - mu_t.double()) ** 2 / var_t).sum(1).mean()
    assert mu_s.shape == (ctx.student_logits.shape[0], K)
    assert losses["loss_unikd_feat"].item() == pytest.approx(0.5 * kl.item() / K, rel=1e-4)
    assert losses["loss_unikd_fit"].item() == pytest.approx(0.3 * fit.item() / K, rel=1e-4)
    expected_logit = 0.7 * hand_kd(ctx.student_logits, ctx.teacher_logits, 2.0)
    assert losses["loss_unikd_logit"].item() == pytest.approx(expected_logit.item(), rel=1e-5, abs=1e-7)


def test_unikd_without_aff_fuses_the_coarsest_level(make_cfg, build, batched_inputs, train_forward, capture_ctx):
    model = build(make_cfg(unikd=True, opts=["DISTILL.UNIKD.AFF.ENABLED", False]))
    unikd = model.distill_terms["unikd"].loss
    assert len(unikd.aff_s.expanders) == 1 and len(unikd.aff_t.expanders) == 1
    seen = capture_ctx(model)
    losses = train_forward(model, batched_inputs)
    assert PAPER_LOSSES <= set(losses) and all(torch.isfinite(v) for v in losses.values())
    # ROI-aligned on p6 (stride 64): the stride read off the fused map's width must be 64.
    ctx = seen[-1]
    fused, _ = unikd.fuse([ctx.student_features[f] for f in ["p2", "p3", "p4", "p5", "p6"]],
                          [ctx.teacher_features[f] for f in ["p2", "p3", "p4", "p5", "p6"]])
    assert fused.shape[-1] == 1 and round(ctx.image_shape[-1] / fused.shape[-1]) == 64


def test_teacher_logits_are_computed_on_the_student_sampled_proposals(make_cfg, build, batched_inputs, train_forward, capture_ctx):
    model = build(make_cfg(roi=True, unikd=True))
    seen = capture_ctx(model)
    sampled = []
    model.student.roi_heads.register_forward_hook(lambda module, args, output: sampled.append(output[0]))
    train_forward(model, batched_inputs)
    assert len(seen) == 2  # both terms got the same context object
    ctx = seen[0]
    assert seen[1] is ctx
    rows = sum(len(b) for b in ctx.boxes)
    assert rows == 2 * 32  # ROI_HEADS.BATCH_SIZE_PER_IMAGE per image
    assert ctx.student_logits.shape == (rows, K)
    assert ctx.teacher_logits.shape == (rows, K)
    assert ctx.gt_classes.shape == (rows,)
    assert not ctx.teacher_logits.requires_grad and ctx.student_logits.requires_grad
    # The recorded boxes are exactly the proposals the student's ROI heads sampled, image by image.
    proposals = sampled[-1]
    assert len(proposals) == len(ctx.boxes) == 2
    for recorded, props in zip(ctx.boxes, proposals):
        assert torch.equal(recorded.tensor, props.proposal_boxes.tensor)
    assert torch.equal(ctx.gt_classes, torch.cat([p.gt_classes for p in proposals]))
    # The teacher logits are the teacher box head on those boxes over the teacher's features.
    with torch.no_grad():
        again = model.teacher.roi_logits(ctx.teacher_features, ctx.boxes)
        heads = model.teacher.model.roi_heads
        pooled = heads.box_pooler([ctx.teacher_features[f] for f in ["p2", "p3", "p4", "p5"]], ctx.boxes)
        by_hand, _ = heads.box_predictor(heads.box_head(pooled))
    torch.testing.assert_close(again, ctx.teacher_logits)
    torch.testing.assert_close(by_hand, ctx.teacher_logits)
    # The student logits are the student's own box predictor on the same boxes.
    with torch.no_grad():
        s_heads = model.student.roi_heads
        s_pooled = s_heads.box_pooler([ctx.student_features[f] for f in ["p2", "p3", "p4", "p5"]], ctx.boxes)
        s_logits, _ = s_heads.box_predictor(s_heads.box_head(s_pooled))
    # (box head in train mode has no dropout/BN: recomputation is exact)
    torch.testing.assert_close(s_logits, ctx.student_logits.detach())


def test_no_term_enabled_trains_the_student_alone(make_cfg, build, batched_inputs, train_forward):
    cfg = make_cfg(roi=False, unikd=False)
    cfg.DISTILL.TEACHER.WEIGHTS = "/nonexistent/teacher.pth"  # never read
    cfg.DISTILL.TEACHER.CONFIG = "/nonexistent/teacher.yaml"
    model = build(cfg)
    assert len(model.distill_terms) == 0
    losses = train_forward(model, batched_inputs)
    assert set(losses) == STOCK_LOSSES
    assert all(torch.isfinite(v) for v in losses.values())
    sum(losses.values()).backward()
    assert model.teacher is None and model.build_teacher() is None
    assert all(key.startswith("student.") for key in model.state_dict())
    # Same losses as the stock GeneralizedRCNN with the same weights and sampling.
    from detectron2.modeling import build_model

    stock_cfg = cfg.clone()
    stock_cfg.MODEL.META_ARCHITECTURE = "GeneralizedRCNN"
    stock = build_model(stock_cfg)
    stock.load_state_dict({k[len("student."):]: v for k, v in model.state_dict().items()})
    model.zero_grad()
    again = train_forward(model, batched_inputs, seed=5)
    reference = train_forward(stock, batched_inputs, seed=5)
    for name in STOCK_LOSSES:
        assert again[name].item() == pytest.approx(reference[name].item(), rel=1e-6, abs=1e-8), name


def test_inference_runs_the_student_alone(make_cfg, build, make_inputs):
    """Eval mode never builds the teacher and returns the student's detections."""
    cfg = make_cfg(unikd=True)
    cfg.DISTILL.TEACHER.WEIGHTS = "/nonexistent/teacher.pth"
    model = build(cfg).eval()
    inputs = make_inputs(2, seed=3)
    with torch.no_grad():
        outputs = model(inputs)
        reference = model.student(inputs)
    assert model.teacher is None
    assert len(outputs) == 2 and "instances" in outputs[0]
    for out, ref in zip(outputs, reference):
        assert torch.equal(out["instances"].pred_boxes.tensor, ref["instances"].pred_boxes.tensor)
        assert out["instances"].image_size == (64, 64)
    assert not math.isnan(float(sum(o["instances"].scores.sum() for o in outputs)))
