"""FGD (yzd-v/FGD `mmdet/distillation/losses/fgd.py`): masks, attention and the four losses against plain-loop
computations of the official code (non-square maps, two images with different box counts), and the term in a
DistillRCNN training step with the authors' Faster R-CNN values."""
from __future__ import annotations

import math

import pytest
import torch

from unikd.core.fgd import GlobalContext, box_masks, fgd_attention, fgd_losses

STOCK_LOSSES = {"loss_cls", "loss_box_reg", "loss_rpn_cls", "loss_rpn_loc"}
PARTS = ("fg", "bg", "mask", "global")


def softmax(values: list[float]) -> list[float]:
    top = max(values)
    exps = [math.exp(v - top) for v in values]
    return [e / sum(exps) for e in exps]


def loop_attention(feat: torch.Tensor, temp: float):
    """get_attention: H W softmax(mean_c |F| / T) per image, C softmax(mean_hw |F| / T) per image, as lists."""
    n, c, h, w = feat.shape
    spatial, channel = [], []
    for i in range(n):
        fea = [sum(abs(feat[i, k, y, x].item()) for k in range(c)) / c for y in range(h) for x in range(w)]
        spatial.append([h * w * p for p in softmax([v / temp for v in fea])])
        chan = [sum(abs(v) for v in feat[i, k].flatten().tolist()) / (h * w) for k in range(c)]
        channel.append([c * p for p in softmax([v / temp for v in chan])])
    return spatial, channel


def loop_masks(gt_boxes, h: int, w: int, img_h: float, img_w: float):
    """The official mask loops with boxes scaled by map side / image side, checked cell by cell."""
    fg_all, bg_all = [], []
    for boxes in gt_boxes:
        fg = [[0.0] * w for _ in range(h)]
        for x0, y0, x1, y1 in boxes.tolist():
            wmin, wmax = math.floor(x0 / img_w * w), math.ceil(x1 / img_w * w)
            hmin, hmax = math.floor(y0 / img_h * h), math.ceil(y1 / img_h * h)
            area = 1.0 / (hmax + 1 - hmin) / (wmax + 1 - wmin)
            for y in range(h):
                for x in range(w):
                    if hmin <= y <= hmax and wmin <= x <= wmax:
                        fg[y][x] = max(fg[y][x], area)
        empty = sum(v == 0 for row in fg for v in row)
        bg = [[(1.0 / empty if v == 0 else 0.0) for v in row] for row in fg]
        fg_all.append(fg)
        bg_all.append(bg)
    return fg_all, bg_all


def loop_global(gc: GlobalContext, feat: torch.Tensor) -> list:
    """spatial_pool + channel_add_conv + residual, written out with the module's weights."""
    n, c, h, w = feat.shape
    wk, bk = gc.conv_mask.weight.view(-1).tolist(), gc.conv_mask.bias.item()
    conv1, norm, conv2 = gc.channel_add[0], gc.channel_add[1], gc.channel_add[3]
    out = []
    for i in range(n):
        cells = [[feat[i, k, y, x].item() for k in range(c)] for y in range(h) for x in range(w)]
        p = softmax([sum(a * b for a, b in zip(wk, cell)) + bk for cell in cells])
        context = [sum(p[j] * cells[j][k] for j in range(len(cells))) for k in range(c)]
        hidden = [sum(conv1.weight[m, k, 0, 0].item() * context[k] for k in range(c)) + conv1.bias[m].item()
                  for m in range(c // 2)]
        mean = sum(hidden) / len(hidden)
        var = sum((v - mean) ** 2 for v in hidden) / len(hidden)
        hidden = [max(0.0, (v - mean) / math.sqrt(var + norm.eps) * norm.weight.view(-1)[m].item()
                      + norm.bias.view(-1)[m].item()) for m, v in enumerate(hidden)]
        add = [sum(conv2.weight[k, m, 0, 0].item() * hidden[m] for m in range(c // 2)) + conv2.bias[k].item()
               for k in range(c)]
        out.append([[[feat[i, k, y, x].item() + add[k] for x in range(w)] for y in range(h)] for k in range(c)])
    return out


def loop_fgd(student, teacher, fg, bg, temp, gc_s, gc_t) -> dict[str, float]:
    """get_fea_loss (sqrt-weighted maps, summed squared error / N), get_mask_loss and get_rela_loss."""
    n, c, h, w = student.shape
    sp_t, ch_t = loop_attention(teacher, temp)
    sp_s, ch_s = loop_attention(student, temp)
    fg_loss = bg_loss = 0.0
    for i in range(n):
        for k in range(c):
            for y in range(h):
                for x in range(w):
                    scale = math.sqrt(sp_t[i][y * w + x]) * math.sqrt(ch_t[i][k])
                    s, t = student[i, k, y, x].item() * scale, teacher[i, k, y, x].item() * scale
                    fg_loss += (s * math.sqrt(fg[i][y][x]) - t * math.sqrt(fg[i][y][x])) ** 2
                    bg_loss += (s * math.sqrt(bg[i][y][x]) - t * math.sqrt(bg[i][y][x])) ** 2
    mask = sum(abs(a - b) for i in range(n) for a, b in zip(ch_s[i], ch_t[i])) / n
    mask += sum(abs(a - b) for i in range(n) for a, b in zip(sp_s[i], sp_t[i])) / n
    g_s, g_t = loop_global(gc_s, student), loop_global(gc_t, teacher)
    rela = sum((g_s[i][k][y][x] - g_t[i][k][y][x]) ** 2
               for i in range(n) for k in range(c) for y in range(h) for x in range(w)) / n
    return {"fg": fg_loss / n, "bg": bg_loss / n, "mask": mask, "global": rela}


def randomised(channels: int, seed: int) -> GlobalContext:
    """A GcBlock with every parameter random (the official init zeroes the last conv)."""
    torch.manual_seed(seed)
    gc = GlobalContext(channels)
    with torch.no_grad():
        for p in gc.parameters():
            p.copy_(torch.randn_like(p) * 0.5)
    return gc


GT = [torch.tensor([[3.0, 5.0, 17.5, 14.0], [10.0, 2.0, 26.0, 9.0]]), torch.tensor([[0.0, 0.0, 6.0, 7.5]])]


def test_box_masks_match_the_official_loops_on_a_non_square_level():
    h, w, stride = 5, 7, 4  # the padded batch fills the map: the image is 20 x 28
    fg, bg = box_masks(GT, (h, w), stride)
    want_fg, want_bg = loop_masks(GT, h, w, h * stride, w * stride)
    torch.testing.assert_close(fg, torch.tensor(want_fg))
    torch.testing.assert_close(bg, torch.tensor(want_bg))
    assert (fg > 0).sum() > 0 and torch.allclose(bg.sum(dim=(1, 2)), torch.ones(2))
    # Overlapping boxes keep the larger (smaller box) weight; no box: background everywhere, no foreground.
    fg_none, bg_none = box_masks([torch.zeros(0, 4)], (h, w), stride)
    assert fg_none.sum() == 0 and bg_none.sum().item() == pytest.approx(1.0)


def test_attention_matches_loops():
    feat = torch.randn(2, 4, 5, 7, generator=torch.Generator().manual_seed(0))
    spatial, channel = fgd_attention(feat, 0.5)
    want_s, want_c = loop_attention(feat, 0.5)
    torch.testing.assert_close(spatial.reshape(2, -1), torch.tensor(want_s), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(channel, torch.tensor(want_c), rtol=1e-5, atol=1e-6)


def test_fgd_losses_match_the_official_loops():
    gen = torch.Generator().manual_seed(1)
    teacher = torch.randn(2, 4, 5, 7, generator=gen)
    student = (teacher + torch.randn(2, 4, 5, 7, generator=gen)).requires_grad_(True)
    fg, bg = box_masks(GT, (5, 7), 4)
    gc_s, gc_t = randomised(4, 2), randomised(4, 3)
    got = fgd_losses(student, teacher, fg, bg, 0.5, gc_s, gc_t)
    want = loop_fgd(student.detach(), teacher, fg.tolist(), bg.tolist(), 0.5, gc_s, gc_t)
    for part in PARTS:
        assert got[part].item() == pytest.approx(want[part], rel=1e-4), part
    sum(got.values()).backward()
    assert student.grad.abs().sum() > 0
    assert all(p.grad is not None for p in (*gc_s.parameters(), *gc_t.parameters()))


def test_global_context_starts_as_the_identity():
    gc = GlobalContext(8)
    feat = torch.randn(2, 8, 3, 5)
    torch.testing.assert_close(gc(feat), feat)
    assert gc.conv_mask.bias.abs().sum() == 0 and gc.conv_mask.weight.abs().sum() > 0


def test_fgd_term_runs_a_distill_rcnn_step_with_the_authors_values(make_cfg, build, make_inputs, train_forward,
                                                                   capture_ctx):
    inputs = make_inputs(2, (64, 96), seed=1)
    assert len(inputs[0]["instances"]) != len(inputs[1]["instances"])
    model = build(make_cfg(opts=["DISTILL.FGD.ENABLED", True]))
    seen = capture_ctx(model)
    losses = train_forward(model, inputs)
    ctx = seen[-1]
    assert set(losses) == STOCK_LOSSES | {f"loss_fgd_{part}" for part in PARTS}
    term = model.distill_terms["fgd"]
    levels = ["p2", "p3", "p4", "p5"]
    assert term.pairs == [(f, f) for f in levels] and term.strides == {"p2": 4, "p3": 8, "p4": 16, "p5": 32}
    weights = dict(zip(PARTS, (5e-5, 2.5e-5, 5e-5, 5e-7)))
    assert term.part_weights() == weights
    expected = dict.fromkeys(PARTS, 0.0)
    for f in levels:
        student, teacher = ctx.student_features[f], ctx.teacher_features[f]
        h, w = teacher.shape[-2:]
        stride = term.strides[f]
        fg, bg = loop_masks(ctx.gt_boxes, h, w, h * stride, w * stride)
        with torch.no_grad():
            aligned = term.aligners[f](student)
        parts = loop_fgd(aligned, teacher, fg, bg, 0.5, term.global_student[f], term.global_teacher[f])
        expected = {part: expected[part] + value for part, value in parts.items()}
    for part in PARTS:
        assert losses[f"loss_fgd_{part}"].item() == pytest.approx(weights[part] * expected[part], rel=1e-4), part
    sum(losses[f"loss_fgd_{part}"] for part in PARTS).backward()
    assert term.aligners["p2"].weight.grad.abs().sum() > 0
    assert term.global_teacher["p3"].channel_add[-1].weight.grad.abs().sum() > 0
    assert model.student.backbone.bottom_up.stem.conv1.weight.grad.abs().sum() > 0


def test_fgd_is_refused_in_classification_for_want_of_boxes(cls_cfg, cls_teacher):
    from classification.engine import Trainer

    with pytest.raises(ValueError, match="term 'fgd': it needs gt_boxes"):
        Trainer(cls_cfg("DISTILLER.NAME", "fgd", "FGD.IN_FEATURES", "['stage3']", "MODEL.TEACHER", "resnet14",
                        "MODEL.TEACHER_CHECKPOINT", cls_teacher))
