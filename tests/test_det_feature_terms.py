"""Detection feature and logit baselines: FitNet, FGFI, ReviewKD and MLKD terms.

The FGFI mask and loss are checked against plain-loop computations; every term's loss in a DistillRCNN
training forward is checked against the core function applied to the recorded context, and the terms
combine with the logit terms (FitNet + KD, ReviewKD + DKD) by configuration alone.
"""
from __future__ import annotations

import pytest
import torch

from unikd.core.fgfi import masked_imitation_loss, near_object_masks

LEVELS = ["p2", "p3", "p4", "p5", "p6"]
STOCK_LOSSES = {"loss_cls", "loss_box_reg", "loss_rpn_cls", "loss_rpn_loc"}


def loop_iou(a: list[float], b: list[float]) -> float:
    width = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    height = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = width * height
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union


def loop_masks(gt, anchors, sizes, factor):
    """The FGFI mask with plain Python loops: per object, IoU strictly above factor x its best anchor IoU."""
    masks = [[[False] * w for _ in range(h)] for h, w in sizes]
    for box in gt.tolist():
        ious = [[loop_iou(box, a) for a in level.tolist()] for level in anchors]
        threshold = factor * max(max(level) for level in ious)
        for level, ((h, w), level_ious) in enumerate(zip(sizes, ious)):
            per_location = len(level_ious) // (h * w)
            for index, value in enumerate(level_ious):
                if value > threshold:
                    location = index // per_location
                    masks[level][location // w][location % w] = True
    return [torch.tensor(m) for m in masks]


def grid_anchors(size: tuple[int, int], stride: int, box_sizes: list[int]) -> torch.Tensor:
    """Location-major anchors [H*W*A, 4] centred on a stride grid."""
    h, w = size
    ys, xs = torch.meshgrid(torch.arange(h) * stride + stride / 2, torch.arange(w) * stride + stride / 2, indexing="ij")
    centres = torch.stack([xs, ys], dim=-1).reshape(-1, 1, 2).double()
    half = torch.tensor(box_sizes, dtype=torch.float64).view(1, -1, 1) / 2
    return torch.cat([centres - half, centres + half], dim=-1).reshape(-1, 4)


def test_near_object_masks_match_loops():
    sizes = [(8, 8), (4, 4)]
    anchors = [grid_anchors(sizes[0], 4, [4, 8]), grid_anchors(sizes[1], 8, [16, 24])]
    gt = torch.tensor([[2.0, 3.0, 9.0, 12.0], [10.0, 4.0, 30.0, 28.0], [20.0, 20.0, 23.0, 23.0]], dtype=torch.float64)
    for factor in (0.3, 0.5, 0.9):
        masks = near_object_masks(gt, anchors, sizes, factor)
        expected = loop_masks(gt, anchors, sizes, factor)
        for got, want in zip(masks, expected):
            assert got.dtype == torch.bool and torch.equal(got, want)
    # A larger threshold keeps a subset of the locations, and each object keeps at least its best anchor.
    loose, strict = near_object_masks(gt, anchors, sizes, 0.3), near_object_masks(gt, anchors, sizes, 0.99)
    assert all((s & ~l).sum() == 0 for s, l in zip(strict, loose))
    assert sum(int(m.sum()) for m in strict) >= 1
    assert sum(int(m.sum()) for m in loose) > sum(int(m.sum()) for m in strict)


def test_near_object_masks_empty_and_errors():
    sizes = [(4, 4)]
    anchors = [grid_anchors(sizes[0], 4, [4])]
    masks = near_object_masks(torch.zeros(0, 4), anchors, sizes, 0.5)
    assert masks[0].shape == (4, 4) and not masks[0].any()
    with pytest.raises(ValueError, match="threshold_factor"):
        near_object_masks(torch.zeros(0, 4), anchors, sizes, 0.0)
    with pytest.raises(ValueError, match="do not tile"):
        near_object_masks(torch.zeros(0, 4), anchors, [(3, 3)], 0.5)
    with pytest.raises(ValueError, match="anchor levels"):
        near_object_masks(torch.zeros(0, 4), anchors, sizes + sizes, 0.5)


def test_masked_imitation_loss_matches_hand_sum_and_gradient_support():
    gen = torch.Generator().manual_seed(0)
    shapes = [(2, 3, 4, 4), (2, 3, 2, 2)]
    adapted = [torch.randn(s, generator=gen, dtype=torch.float64, requires_grad=True) for s in shapes]
    targets = [torch.randn(s, generator=gen, dtype=torch.float64) for s in shapes]
    masks = [torch.rand(s[0], *s[2:], generator=gen) > 0.5 for s in shapes]
    loss = masked_imitation_loss(adapted, targets, masks)
    total, count = 0.0, 0
    for s, t, m in zip(adapted, targets, masks):
        for n in range(s.shape[0]):
            for i in range(s.shape[2]):
                for j in range(s.shape[3]):
                    if m[n, i, j]:
                        count += 1
                        total += sum((s[n, c, i, j].item() - t[n, c, i, j].item()) ** 2 for c in range(s.shape[1]))
    assert loss.item() == pytest.approx(total / (2 * count), rel=1e-6)
    loss.backward()
    for s, m in zip(adapted, masks):
        outside = s.grad.abs().sum(dim=1)[~m]
        assert outside.numel() == 0 or outside.max() == 0  # unmasked locations get no gradient
        assert s.grad.abs().sum(dim=1)[m].min() > 0
    empty = masked_imitation_loss(adapted, targets, [torch.zeros_like(m) for m in masks])
    assert empty.item() == 0.0 and empty.requires_grad
    with pytest.raises(ValueError, match="mask"):
        masked_imitation_loss(adapted, targets, [m[0] for m in masks])


@pytest.fixture
def run_term(make_cfg, build, batched_inputs, train_forward, capture_ctx):
    """run_term(opts) -> (model, losses, context) of one training forward of a tiny DistillRCNN."""

    def run(opts):
        model = build(make_cfg(opts=opts))
        seen = capture_ctx(model)
        losses = train_forward(model, batched_inputs)
        return model, losses, seen[-1]

    return run


def test_fitnet_term_matches_hint_loss_and_trains_its_adapters(run_term):
    from unikd.core import hint_loss

    opts = ["DISTILL.FITNET.ENABLED", True, "DISTILL.FITNET.WEIGHT", 0.5, "DISTILL.FITNET.IN_FEATURES", ["p3", "p5"]]
    model, losses, ctx = run_term(opts)
    assert set(losses) == STOCK_LOSSES | {"loss_fitnet"}
    term = model.distill_terms["fitnet"]
    assert sorted(term.adapters) == ["p3", "p5"] and term.adapters["p3"].kernel_size == (1, 1)
    with torch.no_grad():
        expected = 0.5 * sum(hint_loss(term.adapters[f](ctx.student_features[f]), ctx.teacher_features[f])
                             for f in ("p3", "p5"))
    torch.testing.assert_close(losses["loss_fitnet"], expected)
    losses["loss_fitnet"].backward()
    assert term.adapters["p3"].weight.grad.abs().sum() > 0
    assert model.student.backbone.bottom_up.stem.conv1.weight.grad.abs().sum() > 0


def test_fgfi_term_masks_near_objects(run_term, batched_inputs):
    opts = ["DISTILL.FGFI.ENABLED", True, "DISTILL.FGFI.WEIGHT", 0.1, "DISTILL.FGFI.START", 0]
    model, losses, ctx = run_term(opts)
    assert set(losses) == STOCK_LOSSES | {"loss_fgfi"}
    term = model.distill_terms["fgfi"]
    assert term.levels == LEVELS == list(model.student.proposal_generator.in_features)  # the RPN's levels
    assert sorted(term.adapters) == sorted(LEVELS) and term.adapters["p2"].kernel_size == (3, 3)
    # The ground truth the masks are built from is the inputs' own.
    assert len(ctx.gt_boxes) == len(batched_inputs)
    for gt, x in zip(ctx.gt_boxes, batched_inputs):
        torch.testing.assert_close(gt, x["instances"].gt_boxes.tensor, rtol=0, atol=0)
    masks = term.masks(ctx)
    for f, mask in zip(LEVELS, masks):
        assert mask.shape == (len(batched_inputs), *ctx.student_features[f].shape[-2:])
    assert 0 < sum(int(m.sum()) for m in masks) < sum(m.numel() for m in masks)
    # Recompute with the anchors laid out independently from the student's own RPN anchor generator.
    anchor_generator = model.student.proposal_generator.anchor_generator
    anchors = [b.tensor for b in anchor_generator([ctx.student_features[f] for f in LEVELS])]
    sizes = [tuple(ctx.student_features[f].shape[-2:]) for f in LEVELS]
    for image, x in enumerate(batched_inputs):
        expected = near_object_masks(x["instances"].gt_boxes.tensor, anchors, sizes, 0.5)
        assert all(torch.equal(m[image], e) for m, e in zip(masks, expected))
    with torch.no_grad():
        adapted = [term.adapters[f](ctx.student_features[f]) for f in LEVELS]
        expected_loss = 0.1 * masked_imitation_loss(adapted, [ctx.teacher_features[f] for f in LEVELS], masks)
    torch.testing.assert_close(losses["loss_fgfi"], expected_loss)
    assert losses["loss_fgfi"] > 0


def test_reviewkd_term_matches_core_hcl(run_term):
    from unikd.core import hcl_loss

    opts = ["DISTILL.REVIEWKD.ENABLED", True, "DISTILL.REVIEWKD.WEIGHT", 1.2, "DISTILL.REVIEWKD.MID_CHANNELS", 8]
    model, losses, ctx = run_term(opts)
    assert set(losses) == STOCK_LOSSES | {"loss_reviewkd"}
    term = model.distill_terms["reviewkd"]
    fused = term.fusion([ctx.student_features[f] for f in LEVELS])  # train-mode BN: same batch statistics
    expected = 1.2 * hcl_loss(fused, [ctx.teacher_features[f] for f in LEVELS], (4, 2, 1))
    torch.testing.assert_close(losses["loss_reviewkd"], expected)
    losses["loss_reviewkd"].backward()
    assert all(p.grad is not None for p in term.fusion.parameters())


def test_mlkd_term_matches_core_on_roi_logits(run_term):
    from unikd.core import mlkd_loss

    opts = ["DISTILL.MLKD.ENABLED", True, "DISTILL.MLKD.TEMPERATURES", [1.0, 2.0], "DISTILL.MLKD.WEIGHT", 0.5]
    _, losses, ctx = run_term(opts)
    assert set(losses) == STOCK_LOSSES | {"loss_mlkd_kd", "loss_mlkd_cc", "loss_mlkd_bc"}
    s, t = ctx.student_logits, ctx.teacher_logits
    expected = mlkd_loss(s, s, t, t, (1.0, 2.0), ("weak", "weak"), 0.5)
    for name, value in expected.items():
        torch.testing.assert_close(losses[name.replace("loss_", "loss_mlkd_")], value)
        assert value > 0


@pytest.mark.parametrize(
    "opts,expected",
    [
        (["DISTILL.FITNET.ENABLED", True, "DISTILL.KD.ENABLED", True], {"loss_fitnet", "loss_kd"}),
        (["DISTILL.REVIEWKD.ENABLED", True, "DISTILL.DKD.ENABLED", True], {"loss_reviewkd", "loss_dkd"}),
    ],
    ids=["fitnet+kd", "reviewkd+dkd"],
)
def test_hybrids_by_configuration(make_cfg, build, batched_inputs, train_forward, opts, expected):
    model = build(make_cfg(opts=opts))
    losses = train_forward(model, batched_inputs)
    assert set(losses) == STOCK_LOSSES | expected
    sum(losses.values()).backward()
    assert all(torch.isfinite(v) for v in losses.values())


@pytest.mark.parametrize(
    "opts,match",
    [
        (["DISTILL.FITNET.ENABLED", True, "DISTILL.FITNET.IN_FEATURES", ["p2", "p9"]], r"FITNET.IN_FEATURES 'p9' matches no feature of the student"),
        (["DISTILL.REVIEWKD.ENABLED", True, "DISTILL.REVIEWKD.IN_FEATURES", []], "REVIEWKD.IN_FEATURES is empty"),
        (["DISTILL.FGFI.ENABLED", True, "DISTILL.FGFI.THRESHOLD_FACTOR", 1.5],
         r"(?i)threshold_factor must be in \(0, 1\), got 1.5"),
        (["DISTILL.MLKD.ENABLED", True, "DISTILL.MLKD.TEMPERATURES", [2.0, 0.0]], "TEMPERATURES"),
    ],
    ids=["fitnet-level", "reviewkd-empty", "fgfi-threshold", "mlkd-temperature"],
)
def test_bad_term_options_fail_at_build(make_cfg, build, opts, match):
    with pytest.raises(ValueError, match=match):
        build(make_cfg(opts=opts))
