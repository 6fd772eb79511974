"""PKD and CWD (open-mmlab/mmrazor `mmrazor/models/losses/pkd_loss.py` and `cwd.py`): the core losses against
plain-loop computations of the official formulas, and both terms in a DistillRCNN training step (non-square
images, two images with different box counts) and in a classification step."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from unikd.core.cwd import cwd_loss
from unikd.core.pkd import pkd_loss

STOCK_LOSSES = {"loss_cls", "loss_box_reg", "loss_rpn_cls", "loss_rpn_loc"}


def loop_pkd(student: torch.Tensor, teacher: torch.Tensor) -> float:
    """mmrazor PKDLoss: per channel, (x - mean) / (unbiased std + 1e-6) over (N, H, W); sum of squared
    differences / (2 N C H W)."""

    def normalised(feat):
        n, c, h, w = feat.shape
        out = {}
        for ch in range(c):
            values = [feat[i, ch, y, x].item() for i in range(n) for y in range(h) for x in range(w)]
            mean = sum(values) / len(values)
            std = math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))
            out[ch] = [(v - mean) / (std + 1e-6) for v in values]
        return out

    ns, nt = normalised(student), normalised(teacher)
    total = sum((a - b) ** 2 for ch in ns for a, b in zip(ns[ch], nt[ch]))
    return total / (2 * student.numel())


def loop_cwd(student: torch.Tensor, teacher: torch.Tensor, tau: float) -> float:
    """mmrazor ChannelWiseDivergence: sum over (n, c) of KL(softmax(t/tau) || softmax(s/tau)) over the H*W
    locations, times tau^2, divided by N * C."""
    n, c, h, w = student.shape
    total = 0.0
    for i in range(n):
        for ch in range(c):
            s = [v / tau for v in student[i, ch].flatten().tolist()]
            t = [v / tau for v in teacher[i, ch].flatten().tolist()]
            log_zs, log_zt = math.log(sum(map(math.exp, s))), math.log(sum(map(math.exp, t)))
            total += sum(math.exp(b - log_zt) * ((b - log_zt) - (a - log_zs)) for a, b in zip(s, t))
    return total * tau**2 / (n * c)


def maps(shape, seed=0):
    gen = torch.Generator().manual_seed(seed)
    student = torch.randn(shape, generator=gen, dtype=torch.float64) * 2 + 0.5
    teacher = torch.randn(shape, generator=gen, dtype=torch.float64) + student
    return student, teacher


@pytest.mark.parametrize("shape", [(2, 3, 5, 7), (1, 4, 3, 6)])
def test_pkd_matches_loops_and_is_one_minus_pearson(shape):
    student, teacher = maps(shape)
    loss = pkd_loss(student, teacher)
    assert loss.item() == pytest.approx(loop_pkd(student.float(), teacher.float()), rel=1e-5)
    # Paper Eq. 4: with the unbiased std, the loss is (M - 1) / M * mean over channels of (1 - r_c).
    count = shape[0] * shape[2] * shape[3]
    s = student.transpose(0, 1).reshape(shape[1], -1)
    t = teacher.transpose(0, 1).reshape(shape[1], -1)
    r = torch.stack([torch.corrcoef(torch.stack([a, b]))[0, 1] for a, b in zip(s, t)])
    assert loss.item() == pytest.approx(((count - 1) / count * (1 - r)).mean().item(), rel=1e-4)
    # Invariant to a per-channel affine map of either network's features (positive scale).
    scale = torch.tensor([0.5, 3.0, 7.0, 2.0][: shape[1]], dtype=torch.float64).view(1, -1, 1, 1)
    assert pkd_loss(student * scale + 4.0, teacher).item() == pytest.approx(loss.item(), rel=1e-4)


def test_pkd_resizes_the_student_to_the_teacher_and_detaches_the_teacher():
    student, teacher = maps((2, 3, 10, 14))
    teacher = teacher[..., ::2, ::2].clone().requires_grad_(True)
    student.requires_grad_(True)
    loss = pkd_loss(student, teacher)
    resized = F.interpolate(student.detach().float(), (5, 7), mode="bilinear")
    assert loss.item() == pytest.approx(loop_pkd(resized, teacher.detach().float()), rel=1e-5)
    loss.backward()
    assert student.grad.abs().sum() > 0 and teacher.grad is None
    with pytest.raises(ValueError, match="feature map"):
        pkd_loss(student[0], teacher[0])


@pytest.mark.parametrize("tau", [1.0, 2.5])
@pytest.mark.parametrize("shape", [(2, 3, 4, 6), (1, 2, 5, 3)])
def test_cwd_matches_loops(shape, tau):
    student, teacher = maps(shape, seed=1)
    assert cwd_loss(student, teacher, tau).item() == pytest.approx(loop_cwd(student, teacher, tau), rel=1e-5)
    assert cwd_loss(teacher, teacher, tau).item() == pytest.approx(0.0, abs=1e-6)


def test_cwd_refuses_other_shapes_and_temperatures():
    student, teacher = maps((2, 3, 4, 6))
    with pytest.raises(ValueError, match="one shape"):
        cwd_loss(student, teacher[..., :3], 1.0)
    with pytest.raises(ValueError, match="temperature"):
        cwd_loss(student, teacher, 0.0)
    from unikd.terms.cwd import CWDOptions

    with pytest.raises(ValueError, match="tau"):
        CWDOptions(tau=-1.0)


@pytest.fixture
def uneven_inputs(make_inputs):
    """Two non-square (64 x 96) images with different box counts."""
    inputs = make_inputs(2, (64, 96), seed=1)
    assert len(inputs[0]["instances"]) != len(inputs[1]["instances"])
    return inputs


@pytest.mark.parametrize(
    "name,levels,weight,loss_of",
    [
        ("pkd", ["p2", "p3", "p4", "p5"], 6.0, lambda s, t: loop_pkd(s, t)),
        ("cwd", ["p2", "p3", "p4", "p5", "p6"], 10.0, lambda s, t: loop_cwd(s, t, 1.0)),
    ],
    ids=["pkd", "cwd"],
)
def test_term_runs_a_distill_rcnn_step_with_the_official_values(name, levels, weight, loss_of, make_cfg, build,
                                                               uneven_inputs, train_forward, capture_ctx):
    model = build(make_cfg(opts=[f"DISTILL.{name.upper()}.ENABLED", True]))
    seen = capture_ctx(model)
    losses = train_forward(model, uneven_inputs)
    ctx = seen[-1]
    assert set(losses) == STOCK_LOSSES | {f"loss_{name}"}
    term = model.distill_terms[name]
    assert term.pairs == [(f, f) for f in levels] and term.options.weight == weight
    assert sorted(term.aligners) == sorted(levels)  # test student FPN 32 channels, teacher 16: 1x1 aligners
    assert ctx.student_features["p2"].shape[-2:] == (16, 24)  # the non-square batch reaches the term as is
    with torch.no_grad():
        aligned = {f: term.aligners[f](ctx.student_features[f]) for f in levels}
    expected = weight * sum(loss_of(aligned[f].double(), ctx.teacher_features[f].double()) for f in levels)
    assert losses[f"loss_{name}"].item() == pytest.approx(expected, rel=1e-4)
    losses[f"loss_{name}"].backward()
    assert all(term.aligners[f].weight.grad.abs().sum() > 0 for f in levels)
    assert model.student.backbone.bottom_up.stem.conv1.weight.grad.abs().sum() > 0


@pytest.mark.parametrize("name", ["pkd", "cwd"])
def test_term_trains_one_classification_step_on_named_stages(name, cls_cfg, cls_teacher):
    from classification.engine import Trainer

    cfg = cls_cfg("DISTILLER.NAME", name, f"{name.upper()}.IN_FEATURES", "['stage2', 'stage3']", "MODEL.TEACHER",
                  "resnet14", "MODEL.TEACHER_CHECKPOINT", cls_teacher, "SOLVER.EPOCHS", 1)
    trainer = Trainer(cfg)
    distiller = trainer.distiller
    images, targets, _ = next(iter(trainer.data.train))
    _, losses = distiller.compute_losses(images, targets, progress=1.0)
    assert losses[f"loss_{name}"].item() > 0
    before = [p.detach().clone() for p in distiller.student.parameters()]
    trainer.train()
    assert any(not torch.equal(a, b) for a, b in zip(before, distiller.student.parameters()))


@pytest.mark.parametrize("name", ["pkd", "cwd"])
def test_classification_preset_taps_every_stage_of_both_networks(name):
    from classification.config import load_cfg
    from classification.distillers import get_distiller_class
    from classification.models import build_model

    cfg = load_cfg(None, ["DISTILLER.NAME", name, "MODEL.STUDENT", "resnet8", "MODEL.TEACHER", "resnet14"])
    assert list(cfg[name.upper()].IN_FEATURES) == ["stage*"]
    distiller = get_distiller_class(name).from_config(cfg, build_model("resnet8", 5), build_model("resnet14", 5), 5,
                                                      "cifar")
    assert distiller.terms[name].pairs == [("stage1", "stage1"), ("stage2", "stage2"), ("stage3", "stage3")]


@pytest.mark.parametrize("name", ["pkd", "cwd"])
def test_a_pair_of_two_reductions_is_refused_naming_both_features(name):
    from unikd.core.features import FeatureSpec
    from unikd.terms import term_class
    from unikd.terms.base import TermContext

    student = [FeatureSpec("stage1", 16, 1), FeatureSpec("stage2", 32, 2)]
    teacher = [FeatureSpec("stage1", 16, 1), FeatureSpec("stage2", 64, 4)]  # a teacher that downsamples earlier
    context = TermContext("classification", student, teacher, num_outputs=5)
    term = term_class(name)
    with pytest.raises(ValueError, match=r"student's stage2 \(/2\) with the teacher's stage2 \(/4\)"):
        term(term.Options(in_features=["stage*"]), context)
    assert term(term.Options(in_features=["stage1"]), context).pairs == [("stage1", "stage1")]
