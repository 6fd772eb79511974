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


def record_roi_heads(model) -> dict:
    """Hooks on the student's ROI heads: the padded ImageList they received ("images") and the sampled
    proposals they returned in training ("sampled"), of the last call."""
    seen = {}

    def on_input(module, args):
        seen["images"] = args[0]

    def on_output(module, args, output):
        seen["sampled"] = output[0]

    model.student.roi_heads.register_forward_pre_hook(on_input)
    model.student.roi_heads.register_forward_hook(on_output)
    return seen


def pooler_rois(sampled) -> torch.Tensor:
    """[R, 5] (image index, x0, y0, x1, y1) of the sampled proposals, image by image."""
    return torch.cat([
        torch.cat([torch.full((len(p), 1), float(i)), p.proposal_boxes.tensor], dim=1) for i, p in enumerate(sampled)
    ])


def hand_kd(logits_s, logits_t, tau):
    """tau^2 * KL(softmax(t/tau) || softmax(s/tau)), summed over classes, mean over rows."""
    p_t = torch.softmax(logits_t.double() / tau, dim=1)
    log_p_s = torch.log_softmax(logits_s.double() / tau, dim=1)
    return (p_t * (p_t.log() - log_p_s)).sum(1).mean() * tau**2


@pytest.mark.parametrize(
    "mode,expected",
    [("paper", STOCK_LOSSES | {"loss_kd"} | PAPER_LOSSES), ("authors_code", STOCK_LOSSES | {"loss_kd"} | AUTHORS_LOSSES)],
    ids=["paper", "authors_code"],
)
def test_train_step_returns_all_losses_finite_and_backward(make_cfg, build, batched_inputs, train_forward, mode, expected):
    model = build(make_cfg(kd=True, unikd=True, opts=["DISTILL.UNIKD.MODE", mode]))
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
    model = build(make_cfg(kd=True, unikd=True))
    losses = train_forward(model, batched_inputs)
    sum(v for k, v in losses.items() if k not in STOCK_LOSSES).backward()
    student = model.student
    assert student.backbone.bottom_up.stem.conv1.weight.grad.abs().sum() > 0
    assert student.roi_heads.box_predictor.cls_score.weight.grad.abs().sum() > 0
    # The box-regression branch is untouched by the class-logit terms.
    bbox_grad = student.roi_heads.box_predictor.bbox_pred.weight.grad
    assert bbox_grad is None or bbox_grad.abs().sum() == 0


def test_roi_kd_value_matches_hand_computation(make_cfg, build, batched_inputs, train_forward, capture_ctx):
    model = build(make_cfg(kd=True, opts=["DISTILL.KD.TEMPERATURE", 2.0, "DISTILL.KD.WEIGHT", 0.5]))
    seen = capture_ctx(model)
    losses = train_forward(model, batched_inputs)
    ctx = seen[-1]
    assert set(losses) == STOCK_LOSSES | {"loss_kd"}
    expected = 0.5 * hand_kd(ctx.student_logits, ctx.teacher_logits, 2.0)
    assert losses["loss_kd"].item() == pytest.approx(expected.item(), rel=1e-5, abs=1e-7)
    assert losses["loss_kd"].item() > 0  # random teacher != random student


def test_roi_kd_and_dkd_detection_defaults(make_cfg):
    """The detection preset of the logit terms: KD weight 1 at tau 1 on all ROIs; DKD alpha 1, beta 0.25."""
    cfg = make_cfg()
    assert (cfg.DISTILL.KD.WEIGHT, cfg.DISTILL.KD.TEMPERATURE, cfg.DISTILL.KD.BG_MODE) == (1.0, 1.0, "all")
    dkd = cfg.DISTILL.DKD
    assert (dkd.WEIGHT, dkd.ALPHA, dkd.BETA, dkd.TEMPERATURE, dkd.BG_MODE) == (1.0, 1.0, 0.25, 1.0, "all")
    assert (cfg.DISTILL.KD.START, cfg.DISTILL.KD.WARMUP, dkd.START, dkd.WARMUP) == (0, 0, 0, 0)


@pytest.mark.parametrize("term", ["kd", "dkd"])
def test_roi_kd_fg_mode_uses_only_foreground_rois(make_cfg, build, batched_inputs, train_forward, capture_ctx, term):
    from unikd.core import dkd_loss

    def hand(logits_s, logits_t, target):
        if term == "kd":
            return hand_kd(logits_s, logits_t, 1.0)
        return dkd_loss(logits_s, logits_t, target, 1.0, 0.25, 1.0)

    model = build(make_cfg(opts=[f"DISTILL.{term.upper()}.ENABLED", True, f"DISTILL.{term.upper()}.BG_MODE", "fg"]))
    seen = capture_ctx(model)
    losses = train_forward(model, batched_inputs)
    ctx = seen[-1]
    keep = ctx.targets != K - 1
    assert 0 < keep.sum() < len(keep)  # the batch has both foreground and background ROIs
    expected = hand(ctx.student_logits[keep], ctx.teacher_logits[keep], ctx.targets[keep])
    assert losses[f"loss_{term}"].item() == pytest.approx(expected.item(), rel=1e-5, abs=1e-7)
    everything = hand(ctx.student_logits, ctx.teacher_logits, ctx.targets)
    assert abs(expected.item() - everything.item()) > 1e-6  # the fg filter made a difference


def test_roi_dkd_uses_sampling_labels(make_cfg, build, batched_inputs, train_forward, capture_ctx):
    from unikd.core import dkd_loss

    opts = ["DISTILL.DKD.ENABLED", True, "DISTILL.DKD.BETA", 2.0, "DISTILL.DKD.WEIGHT", 0.5]
    model = build(make_cfg(opts=opts))
    seen = capture_ctx(model)
    record = record_roi_heads(model)
    losses = train_forward(model, batched_inputs)
    ctx = seen[-1]
    assert set(losses) == STOCK_LOSSES | {"loss_dkd"}
    labels = torch.cat([p.gt_classes for p in record["sampled"]])  # the ROI sampling labels
    assert torch.equal(ctx.targets, labels)
    expected = 0.5 * dkd_loss(ctx.student_logits, ctx.teacher_logits, labels, 1.0, 2.0, 1.0)
    torch.testing.assert_close(losses["loss_dkd"], expected)
    assert losses["loss_dkd"].item() > 0


def test_unikd_paper_losses_match_independent_roi_computation(make_cfg, build, batched_inputs, train_forward, capture_ctx):
    """loss_unikd_* = the documented formulas on ROIAligned fused maps (stride 4 at p2) of the student's
    sampled proposals, with alpha, beta, fit weight, temperatures and the mean over K applied."""
    opts = [
        "DISTILL.UNIKD.ALPHA", 0.5, "DISTILL.UNIKD.BETA", 0.7, "DISTILL.UNIKD.FIT_WEIGHT", 0.3,
        "DISTILL.UNIKD.TEMPERATURE", 2.0, "DISTILL.UNIKD.FIT_TEMPERATURE", 4.0,
    ]
    model = build(make_cfg(unikd=True, opts=opts))
    seen = capture_ctx(model)
    record = record_roi_heads(model)
    losses = train_forward(model, batched_inputs)
    ctx = seen[-1]
    term = model.distill_terms["unikd"]
    levels = ["p2", "p3", "p4", "p5", "p6"]
    assert term.student_levels == term.teacher_levels == levels  # NUM_LEVELS 0 in detection: every level
    with torch.no_grad():
        fused_s = term.loss.aff_s([ctx.student_features[f] for f in levels])
        fused_t = term.loss.aff_t([ctx.teacher_features[f] for f in levels])
        assert fused_s.shape[-1] * 4 == record["images"].tensor.shape[-1]  # fused at p2 resolution
        rois = pooler_rois(record["sampled"])
        region_s = roi_align(fused_s, rois, 4, spatial_scale=0.25, sampling_ratio=0, aligned=True)
        region_t = roi_align(fused_t, rois, 4, spatial_scale=0.25, sampling_ratio=0, aligned=True)
        # The Batch's region pool is this ROIAlign on the student's sampled boxes.
        torch.testing.assert_close(ctx.region_pool(fused_s, 4), region_s)
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
    record = record_roi_heads(model)
    losses = train_forward(model, batched_inputs)
    assert PAPER_LOSSES <= set(losses) and all(torch.isfinite(v) for v in losses.values())
    # ROI-aligned on p6 (stride 64): the stride read off the fused map's width must be 64.
    ctx = seen[-1]
    with torch.no_grad():
        fused, _ = unikd.fuse([ctx.student_features[f] for f in ["p2", "p3", "p4", "p5", "p6"]],
                              [ctx.teacher_features[f] for f in ["p2", "p3", "p4", "p5", "p6"]])
        assert fused.shape[-1] == 1 and round(record["images"].tensor.shape[-1] / fused.shape[-1]) == 64
        expected = roi_align(fused, pooler_rois(record["sampled"]), 4, spatial_scale=1 / 64, sampling_ratio=0,
                             aligned=True)
        torch.testing.assert_close(ctx.region_pool(fused, 4), expected)


def test_teacher_logits_are_computed_on_the_student_sampled_proposals(make_cfg, build, batched_inputs, train_forward, capture_ctx):
    model = build(make_cfg(kd=True, unikd=True))
    seen = capture_ctx(model)
    sampled = []
    model.student.roi_heads.register_forward_hook(lambda module, args, output: sampled.append(output[0]))
    train_forward(model, batched_inputs)
    assert len(seen) == 2  # both terms got the same Batch object
    ctx = seen[0]
    assert seen[1] is ctx
    # The boxes are exactly the proposals the student's ROI heads sampled, image by image.
    proposals = sampled[-1]
    assert len(proposals) == 2
    boxes = [p.proposal_boxes for p in proposals]
    rows = sum(len(b) for b in boxes)
    assert rows == 2 * 32  # ROI_HEADS.BATCH_SIZE_PER_IMAGE per image
    assert ctx.student_logits.shape == (rows, K)
    assert ctx.teacher_logits.shape == (rows, K)
    assert ctx.targets.shape == (rows,)
    assert not ctx.teacher_logits.requires_grad and ctx.student_logits.requires_grad
    assert torch.equal(ctx.targets, torch.cat([p.gt_classes for p in proposals]))
    # The teacher logits are the teacher box head on those boxes over the teacher's features.
    with torch.no_grad():
        again = model.teacher.roi_logits(ctx.teacher_features, boxes)
        heads = model.teacher.model.roi_heads
        pooled = heads.box_pooler([ctx.teacher_features[f] for f in ["p2", "p3", "p4", "p5"]], boxes)
        by_hand, _ = heads.box_predictor(heads.box_head(pooled))
    torch.testing.assert_close(again, ctx.teacher_logits)
    torch.testing.assert_close(by_hand, ctx.teacher_logits)
    # The student logits are the student's own box predictor on the same boxes.
    with torch.no_grad():
        s_heads = model.student.roi_heads
        s_pooled = s_heads.box_pooler([ctx.student_features[f] for f in ["p2", "p3", "p4", "p5"]], boxes)
        s_logits, _ = s_heads.box_predictor(s_heads.box_head(s_pooled))
    # (box head in train mode has no dropout/BN: recomputation is exact)
    torch.testing.assert_close(s_logits, ctx.student_logits.detach())


def test_no_term_enabled_trains_the_student_alone(make_cfg, build, batched_inputs, train_forward):
    cfg = make_cfg(kd=False, unikd=False)
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


@pytest.mark.parametrize("terms,runs_box_branch", [(["FITNET"], False), (["KD"], True), (["FITNET", "KD"], True)],
                         ids=["fitnet", "kd", "fitnet+kd"])
def test_teacher_box_branch_runs_only_for_terms_that_need_it(
    make_cfg, build, batched_inputs, train_forward, monkeypatch, terms, runs_box_branch
):
    """Feature terms (FitNet) read the teacher's backbone alone; the teacher's box branch on the student's
    boxes runs only when a term needs the ROI logits (KD)."""
    from unikd_det.teacher import FrozenTeacher

    calls = []
    original = FrozenTeacher.roi_outputs

    def spy(self, features, boxes):
        calls.append(sum(len(b) for b in boxes))
        return original(self, features, boxes)

    monkeypatch.setattr(FrozenTeacher, "roi_outputs", spy)
    model = build(make_cfg(opts=[opt for term in terms for opt in (f"DISTILL.{term}.ENABLED", True)]))
    losses = train_forward(model, batched_inputs)
    assert set(losses) == STOCK_LOSSES | {f"loss_{term.lower()}" for term in terms}
    assert all(torch.isfinite(v) for v in losses.values())
    assert calls == ([2 * 32] if runs_box_branch else [])  # once, on the student's sampled ROIs


@pytest.mark.parametrize("missing", ["all", "one"])
def test_training_without_instances_is_refused(make_cfg, build, batched_inputs, train_forward, missing):
    """A training forward needs the ground truth (the ROI sampling labels); without it: a ValueError naming
    'instances', before the teacher is loaded."""
    model = build(make_cfg(kd=True))
    inputs = [{k: v for k, v in x.items() if k != "instances"} for x in batched_inputs]
    if missing == "one":
        inputs[0] = batched_inputs[0]
    with pytest.raises(ValueError, match="instances"):
        train_forward(model, inputs)
    assert model.teacher is None


def test_student_meta_architecture_runs_its_own_forward(make_cfg, build, batched_inputs, train_forward):
    """DISTILL.STUDENT_META_ARCHITECTURE names any GeneralizedRCNN subclass; DistillRCNN runs that subclass's
    own forward (once per step), so its extra losses reach training beside the distillation terms'."""
    import uuid

    from detectron2.modeling import META_ARCH_REGISTRY, GeneralizedRCNN

    calls = []

    def forward(self, batched_inputs):
        calls.append(self.training)
        outputs = GeneralizedRCNN.forward(self, batched_inputs)
        if self.training:
            # a loss tensor in the student's graph, of a value no stock loss has
            outputs["loss_student_marker"] = self.roi_heads.box_predictor.cls_score.weight.sum() * 0 + 0.125
        return outputs

    name = f"MarkerRCNN_{uuid.uuid4().hex}"
    marker_cls = type(name, (GeneralizedRCNN,), {"forward": forward})
    META_ARCH_REGISTRY.register(marker_cls)
    model = build(make_cfg(kd=True, opts=["DISTILL.STUDENT_META_ARCHITECTURE", name]))
    assert type(model.student) is marker_cls
    losses = train_forward(model, batched_inputs)
    assert calls == [True]
    assert set(losses) == STOCK_LOSSES | {"loss_kd", "loss_student_marker"}
    assert losses["loss_student_marker"].item() == 0.125
    assert losses["loss_kd"].item() > 0 and all(torch.isfinite(v) for v in losses.values())
