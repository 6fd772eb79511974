"""Detection terms against their official codes (issue 11): each test recomputes the official rule
independently, from the official repository's semantics named in its docstring, and compares."""
from __future__ import annotations

import pytest
import torch

from unikd.core.fgfi import near_object_masks


def official_fgfi_mask(gt: torch.Tensor, anchors: torch.Tensor, size: tuple[int, int], factor: float) -> torch.Tensor:
    """twangnh/Distilling-Object-Detectors, lib/model/rpn/anchor_target_layer.py: per object, count the
    anchors of a location whose IoU is strictly above factor x the object's best IoU; a location with a
    positive count is imitated. Written with explicit areas, not torchvision."""
    height, width = size
    per_location = anchors.shape[0] // (height * width)
    counts = torch.zeros(height * width, dtype=torch.int64)
    for box in gt:
        x0 = torch.maximum(anchors[:, 0], box[0])
        y0 = torch.maximum(anchors[:, 1], box[1])
        x1 = torch.minimum(anchors[:, 2], box[2])
        y1 = torch.minimum(anchors[:, 3], box[3])
        inter = (x1 - x0).clamp(min=0) * (y1 - y0).clamp(min=0)
        area_a = (anchors[:, 2] - anchors[:, 0]) * (anchors[:, 3] - anchors[:, 1])
        area_g = (box[2] - box[0]) * (box[3] - box[1])
        iou = inter / (area_a + area_g - inter)
        counts += (iou > iou.max() * factor).view(-1, per_location).sum(dim=1)
    return (counts > 0).view(height, width)


def test_fgfi_anchor_exactly_at_threshold_is_not_imitated():
    # One 2x2 level with one anchor per location; the object is anchor 0 itself (best IoU 1), anchor 1
    # covers exactly half of it (IoU 0.5 = 0.5 x 1, at the threshold), anchor 2 three quarters.
    gt = torch.tensor([[0.0, 0.0, 4.0, 4.0]])
    anchors = torch.tensor(
        [[0.0, 0.0, 4.0, 4.0], [0.0, 0.0, 4.0, 2.0], [0.0, 0.0, 4.0, 3.0], [10.0, 10.0, 14.0, 14.0]]
    )
    expected = official_fgfi_mask(gt, anchors, (2, 2), 0.5)
    assert expected.tolist() == [[True, False], [True, False]]
    assert torch.equal(near_object_masks(gt, [anchors], [(2, 2)], 0.5)[0], expected)


def test_fgfi_mask_matches_official_rule_on_a_grid():
    gen = torch.Generator().manual_seed(0)
    size, stride = (12, 16), 8
    ys, xs = torch.meshgrid(torch.arange(size[0]) * stride, torch.arange(size[1]) * stride, indexing="ij")
    centres = torch.stack([xs, ys, xs, ys], dim=-1).reshape(-1, 1, 4).double()
    half = torch.tensor([[-8, -8, 8, 8], [-16, -8, 16, 8], [-8, -16, 8, 16]], dtype=torch.float64)
    anchors = (centres + half[None]).reshape(-1, 4)
    corner = torch.randint(0, 90, (5, 2), generator=gen).double()
    extent = torch.randint(4, 40, (5, 2), generator=gen).double()
    gt = torch.cat([corner, corner + extent], dim=1)
    for factor in (0.3, 0.5, 0.7):
        expected = official_fgfi_mask(gt, anchors, size, factor)
        assert torch.equal(near_object_masks(gt, [anchors], [size], factor)[0], expected)


def test_fgfi_threshold_factor_one_is_refused():
    with pytest.raises(ValueError, match=r"\(0, 1\)"):
        near_object_masks(torch.zeros(0, 4), [torch.zeros(4, 4)], [(2, 2)], 1.0)


def test_fgfi_adapter_init_is_the_official_folded_normal(make_cfg, build):
    """trainval_net_sup.py, normal_init(stu_feature_adap[0], 0, 0.0001, truncated=True): weight =
    normal_().fmod_(2) * 1e-4, bias untouched (PyTorch's default)."""
    from torch import nn

    from unikd.terms.fgfi import init_adapter_weight

    conv = nn.Conv2d(16, 32, 3, padding=1)
    bias = conv.bias.detach().clone()
    torch.manual_seed(3)
    init_adapter_weight(conv, 1e-4)
    torch.manual_seed(3)
    expected = torch.empty_like(conv.weight).normal_().fmod_(2).mul_(1e-4)
    torch.testing.assert_close(conv.weight.detach(), expected, rtol=0, atol=0)
    assert torch.equal(conv.bias.detach(), bias)

    model = build(make_cfg(opts=["DISTILL.FGFI.ENABLED", True]))
    adapters = model.distill_terms["fgfi"].adapters
    for adapter in adapters.values():
        assert adapter.weight.abs().max() < 2e-4 and 0.5e-4 < adapter.weight.std() < 1.1e-4
        bound = (adapter.weight[0].numel()) ** -0.5  # PyTorch's default bias bound, 1 / sqrt(fan_in)
        assert adapter.bias.abs().max() <= bound and adapter.bias.std() > 1e-2 * bound
    default = build(make_cfg(opts=["DISTILL.FGFI.ENABLED", True, "DISTILL.FGFI.INIT_STD", 0.0]))
    assert all(a.weight.std() > 1e-2 for a in default.distill_terms["fgfi"].adapters.values())


@pytest.mark.parametrize("it,active", [(0, False), (399, False), (400, True), (401, True)])
def test_fgfi_is_off_before_its_start_iteration(make_cfg, build, batched_inputs, train_forward, it, active):
    """trainval_net_sup.py: `sup_loss * 0` while step < --ws (400) in the first epoch, full weight after.
    The default START 401 counts iterations from 1 (EventStorage.iter + 1), so EventStorage.iter 400 is the
    first active one. The start is per term: FitNet, built alongside, is active from iteration 0."""
    opts = ["DISTILL.FGFI.ENABLED", True, "DISTILL.FGFI.INIT_STD", 0.0, "DISTILL.FITNET.ENABLED", True]
    reference = train_forward(build(make_cfg(opts=opts + ["DISTILL.FGFI.START", 0])), batched_inputs, it=it)
    model = build(make_cfg(opts=opts))
    assert model.distill_terms["fgfi"].options.start == 401 and model.distill_terms["fgfi"].options.warmup == 0
    assert model.distill_terms["fitnet"].options.start == 0
    losses = train_forward(model, batched_inputs, it=it)
    assert reference["loss_fgfi"] > 0
    torch.testing.assert_close(losses["loss_fitnet"], reference["loss_fitnet"])
    if active:
        torch.testing.assert_close(losses["loss_fgfi"], reference["loss_fgfi"])
    else:
        assert losses["loss_fgfi"].item() == 0.0 and losses["loss_fgfi"].requires_grad


def test_mobilenetv2_student_freezes_nothing():
    """Every official MobileNetV2 student (dvlab-research/ReviewKD Detection/configs/ReviewKD-MV2-R50.yaml,
    FabienCode/mdistiller detection/configs/*/*-MV2-R50.yaml) has FREEZE_AT 0 and FrozenBN: all conv
    weights train, no BatchNorm statistics or affine parameters do."""
    from pathlib import Path

    from detectron2.config import get_cfg
    from detectron2.layers import FrozenBatchNorm2d
    from detectron2.modeling import build_backbone

    from unikd_det import add_distill_config

    cfg = get_cfg()
    add_distill_config(cfg)
    cfg.merge_from_file(str(Path(__file__).resolve().parent.parent / "configs" / "COCO" / "Base-MV2-R50.yaml"))
    cfg.MODEL.DEVICE = "cpu"
    assert cfg.MODEL.BACKBONE.FREEZE_AT == 0 and cfg.MODEL.MOBILENETV2.NORM == "FrozenBN"
    bottom_up = build_backbone(cfg).bottom_up
    convs = [m for m in bottom_up.modules() if isinstance(m, torch.nn.Conv2d)]
    assert convs and all(m.weight.requires_grad for m in convs)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in bottom_up.modules())
    assert any(isinstance(m, FrozenBatchNorm2d) for m in bottom_up.modules())


def _official_mlkd_instance_kd(logits_s, logits_t, temperatures, weight, strong_view_kd: bool) -> float:
    """Jin-Ying/Multi-Level-Logit-Distillation, mdistiller/distillers/KD_ours.py, instance level with the
    strong view = the weak view: w * sum_tau [f * KD_tau + KD_tau], f the fraction of samples whose teacher
    max probability is <= its numpy median; without the strong-view term only w * sum_tau f * KD_tau."""
    import numpy as np

    confidence = torch.softmax(logits_t.double(), dim=1).amax(dim=1).numpy()
    fraction = float((confidence <= np.percentile(confidence, 50)).mean())
    total = 0.0
    for tau in temperatures:
        p_t = torch.softmax(logits_t.double() / tau, dim=1)
        log_p_s = torch.log_softmax(logits_s.double() / tau, dim=1)
        kd = (p_t * (p_t.log() - log_p_s)).sum(dim=1).mean().item() * tau**2
        total += (fraction + 1.0) * kd if strong_view_kd else fraction * kd
    return weight * total


@pytest.mark.parametrize("strong_view_kd", [True, False])
def test_mlkd_instance_term_counts_the_single_roi_view_as_configured(
    make_cfg, build, batched_inputs, train_forward, capture_ctx, strong_view_kd
):
    temperatures = [4.0, 3.0, 5.0, 2.0, 6.0]
    opts = ["DISTILL.MLKD.ENABLED", True, "DISTILL.MLKD.STRONG_VIEW_KD", strong_view_kd]
    model = build(make_cfg(opts=opts))
    seen = capture_ctx(model)
    losses = train_forward(model, batched_inputs)
    ctx = seen[-1]
    expected = _official_mlkd_instance_kd(
        ctx.student_logits.detach(), ctx.teacher_logits, temperatures, 0.9, strong_view_kd
    )
    assert losses["loss_mlkd_kd"].item() == pytest.approx(expected, rel=1e-4)
    assert losses["loss_mlkd_cc"] > 0 and losses["loss_mlkd_bc"] > 0


def _official_hcl(feats_s, feats_t) -> float:
    """dvlab-research/ReviewKD, Detection/model/kd_trans.py, `hcl`: per level, MSE plus the MSE of l x l
    average pools for l = 4, 2, 1 below the map's HEIGHT, weights halving per used pool, normalised by
    the weight sum; summed over levels."""
    total = 0.0
    for s, t in zip(feats_s, feats_t):
        s, t = s.double(), t.double()
        loss, weight, weight_sum = torch.mean((s - t) ** 2), 1.0, 1.0
        for size in (4, 2, 1):
            if size < s.shape[2]:
                weight /= 2
                pooled = torch.nn.functional.adaptive_avg_pool2d
                loss = loss + weight * torch.mean((pooled(s, (size, size)) - pooled(t, (size, size))) ** 2)
                weight_sum += weight
        total += (loss / weight_sum).item()
    return total


@pytest.mark.parametrize("height,width", [(40, 24), (24, 40), (200, 304)])
def test_reviewkd_hcl_skips_pools_by_height_as_official(height, width):
    from unikd.core import hcl_loss

    gen = torch.Generator().manual_seed(5)
    sizes = [(-(-height // 2**k), -(-width // 2**k)) for k in range(5)]  # FPN p2..p6, ceil division
    feats_s = [torch.randn(2, 4, h, w, generator=gen) for h, w in sizes]
    feats_t = [torch.randn(2, 4, h, w, generator=gen) for h, w in sizes]
    assert hcl_loss(feats_s, feats_t).item() == pytest.approx(_official_hcl(feats_s, feats_t), rel=1e-5)


# ---------------------------------------------------------------------------------------------------------
# UniKD authors_code: FabienCode/mdistiller at c22a722, detection/model/rcnn.py ("UniKD" branch, featPro)
# ---------------------------------------------------------------------------------------------------------
AUTHORS = ["DISTILL.UNIKD.ENABLED", True, "DISTILL.UNIKD.MODE", "authors_code"]


def _softmax_kl(a: torch.Tensor, b: torch.Tensor, tau: float = 1.0) -> torch.Tensor:
    """The authors' kd_loss: KL(softmax(b / tau) || softmax(a / tau)) summed over columns, mean over rows, x tau^2."""
    log_p_a = torch.log_softmax(a / tau, dim=1)
    p_b = torch.softmax(b / tau, dim=1)
    return (p_b * (torch.log(p_b) - log_p_a)).sum(dim=1).mean() * tau**2


def _official_dkd(logits_s, logits_t, gt, alpha, beta, tau):
    """mdistiller's dkd_loss: binary target/non-target KL plus the non-target KL with the target logit pushed
    down by 1000, both summed and divided by the batch size, x tau^2."""
    gt_mask = torch.zeros_like(logits_s).scatter_(1, gt[:, None], 1.0)
    p_s, p_t = torch.softmax(logits_s / tau, dim=1), torch.softmax(logits_t / tau, dim=1)
    b_s = torch.stack([(p_s * gt_mask).sum(1), (p_s * (1 - gt_mask)).sum(1)], dim=1)
    b_t = torch.stack([(p_t * gt_mask).sum(1), (p_t * (1 - gt_mask)).sum(1)], dim=1)
    tckd = (b_t * (b_t.log() - b_s.log())).sum() / gt.numel()
    q_t = torch.softmax(logits_t / tau - 1000.0 * gt_mask, dim=1)
    log_q_s = torch.log_softmax(logits_s / tau - 1000.0 * gt_mask, dim=1)
    nckd = (q_t * (torch.log(q_t.clamp(min=1e-30)) - log_q_s) * (q_t > 0)).sum() / gt.numel()
    return (alpha * tckd + beta * nckd) * tau**2


def _official_feat2pro(box_features, heads, reg: bool):
    """featPro.forward: 7x7 average pool, linear mu / log-variance per head (unbounded), one sample each."""
    pooled = torch.nn.functional.avg_pool2d(box_features, box_features.shape[-2:]).flatten(1)
    samples = []
    for head in (heads[0], heads[1]) if reg else (heads[0],):
        mu = torch.nn.functional.linear(pooled, head.mu_head.weight, head.mu_head.bias)
        log_var = torch.nn.functional.linear(pooled, head.logvar_head.weight, head.logvar_head.bias)
        std = torch.exp(log_var / 2)
        samples.append(torch.randn_like(std) * std + mu)
    return samples


@pytest.mark.parametrize("reg_head", [True, False])
def test_unikd_authors_code_matches_the_authors_detection_losses(
    make_cfg, build, batched_inputs, train_forward, capture_ctx, reg_head
):
    official = ["DISTILL.UNIKD.AUTHORS_CODE.LOGVAR_BOUND", 0.0, "DISTILL.UNIKD.AUTHORS_CODE.REG_HEAD", reg_head]
    model = build(make_cfg(opts=AUTHORS + official))
    seen = capture_ctx(model)
    sampled = []  # the student's sampled proposals, as its ROI heads return them in training
    model.student.roi_heads.register_forward_hook(lambda module, args, output: sampled.append(output[0]))
    train_forward(model, batched_inputs)
    ctx, term = seen[-1], model.distill_terms["unikd"]
    boxes = [p.proposal_boxes for p in sampled[-1]]
    torch.testing.assert_close(ctx.targets, torch.cat([p.gt_classes for p in sampled[-1]]), rtol=0, atol=0)
    # The inputs are each network's own box pooler, head and predictor on the same sampled boxes.
    student_heads, teacher_heads = model.student.roi_heads, model.teacher.model.roi_heads
    with torch.no_grad():
        pooled_s = student_heads.box_pooler([ctx.student_features[f] for f in ("p2", "p3", "p4", "p5")], boxes)
        scores_s, deltas_s = student_heads.box_predictor(student_heads.box_head(pooled_s))
        pooled_t = teacher_heads.box_pooler([ctx.teacher_features[f] for f in ("p2", "p3", "p4", "p5")], boxes)
        scores_t, deltas_t = teacher_heads.box_predictor(teacher_heads.box_head(pooled_t))
    for got, want in ((ctx.student_regions.box_features, pooled_s), (ctx.student_regions.deltas, deltas_s),
                      (ctx.student_regions.scores, scores_s), (ctx.student_logits, scores_s),
                      (ctx.teacher_regions.box_features, pooled_t), (ctx.teacher_regions.deltas, deltas_t),
                      (ctx.teacher_regions.scores, scores_t), (ctx.teacher_logits, scores_t)):
        torch.testing.assert_close(got.detach(), want)
    assert pooled_s.shape[-2:] == (7, 7) and deltas_t.shape[1] == 40  # 4 x NUM_CLASSES

    torch.manual_seed(11)
    losses = term(ctx)
    torch.manual_seed(11)
    loss = term.loss
    with torch.no_grad():
        s = _official_feat2pro(pooled_s, (loss.cls_s, loss.reg_s), reg_head)
        t = _official_feat2pro(pooled_t, (loss.cls_t, loss.reg_t), reg_head)
        feat = _softmax_kl(s[0], t[0])
        supp = 0.1 * _softmax_kl(s[0], scores_s) + 0.1 * _softmax_kl(t[0], scores_t)
        if reg_head:
            feat = feat + _softmax_kl(s[1], t[1])
            supp = supp + 0.1 * _softmax_kl(s[1], deltas_t) + 0.1 * _softmax_kl(t[1], deltas_t)
        dkd = _official_dkd(scores_s, scores_t, ctx.targets, 1.0, 0.25, 1.0)
    assert set(losses) == {"loss_unikd_feat", "loss_unikd_supp", "loss_unikd_logit"}
    torch.testing.assert_close(losses["loss_unikd_feat"].detach(), feat)
    torch.testing.assert_close(losses["loss_unikd_supp"].detach(), supp)
    torch.testing.assert_close(losses["loss_unikd_logit"].detach(), dkd)
    assert (loss.reg_s is not None) == reg_head and not hasattr(loss, "aff_s")
    assert loss.cls_s.logvar_bound is None  # unbounded, as featPro


@pytest.mark.parametrize("reg_target", ["teacher", "student"])
def test_unikd_authors_code_gradients_follow_the_authors_code(
    make_cfg, build, batched_inputs, train_forward, reg_target
):
    """No detach on the student's logits (its supplementary KL also trains the student's class scores) or
    on the teacher-side sample (the feature KL trains both FDPs); the student's box deltas receive a
    gradient only when they are the regression target."""
    model = build(make_cfg(opts=AUTHORS + ["DISTILL.UNIKD.AUTHORS_CODE.REG_TARGET", reg_target]))
    losses = train_forward(model, batched_inputs)
    losses["loss_unikd_supp"].backward(retain_graph=True)
    predictor = model.student.roi_heads.box_predictor
    assert predictor.cls_score.weight.grad.abs().sum() > 0
    bbox_grad = predictor.bbox_pred.weight.grad
    assert (bbox_grad is not None and bbox_grad.abs().sum() > 0) == (reg_target == "student")
    model.zero_grad()
    losses["loss_unikd_feat"].backward()
    loss = model.distill_terms["unikd"].loss
    for fdp in (loss.cls_s, loss.cls_t, loss.reg_s, loss.reg_t):
        assert fdp.mu_head.weight.grad.abs().sum() > 0


def test_unikd_authors_code_switches_and_paper_mode_kept(make_cfg, build):
    # The one default that is not the authors' (unbounded): a smooth bound 10 against overflow.
    assert build(make_cfg(opts=AUTHORS)).distill_terms["unikd"].loss.reg_t.logvar_bound == 10.0
    with pytest.raises(ValueError, match=r"(?i)reg_target='both'.*teacher.*student"):
        build(make_cfg(opts=AUTHORS + ["DISTILL.UNIKD.AUTHORS_CODE.REG_TARGET", "both"]))
    with pytest.raises(ValueError, match="AUTHORS_CODE.LOGVAR_BOUND"):
        build(make_cfg(opts=AUTHORS + ["DISTILL.UNIKD.AUTHORS_CODE.LOGVAR_BOUND", -1.0]))
    paper = build(make_cfg(unikd=True)).distill_terms["unikd"].loss
    assert paper.aff_t is not None and paper.shared_fdp and paper.fdp.logvar_bound == 2.0
