"""Logit standardisation (Sun et al., CVPR 2024): the `standardize` switch of the core's logit losses and the
LOGIT_STANDARDIZE option of the logit terms, checked against z-scores computed here by hand, on both front ends."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from unikd.core import dkd_loss, kd_loss, mlkd_loss, nkd_loss
from unikd.core.mlkd import sample_confidence_mask
from unikd.terms import Batch, registered_terms

CONFIGS = Path(__file__).resolve().parent.parent / "classification" / "configs" / "cifar100"
LOGIT_TERMS = ("kd", "dkd", "mlkd", "nkd", "unikd")


def hand_zscore(logits: torch.Tensor) -> torch.Tensor:
    """(z - mean) / (1e-7 + std) per row, the std with divisor C - 1, written out with sums."""
    classes = logits.shape[1]
    mean = logits.sum(dim=1, keepdim=True) / classes
    std = (((logits - mean) ** 2).sum(dim=1, keepdim=True) / (classes - 1)).sqrt()
    return (logits - mean) / (1e-7 + std)


def logits(seed: int, rows: int = 6, classes: int = 10) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Student and teacher logits of different scales and offsets per row, and targets."""
    gen = torch.Generator().manual_seed(seed)
    scale = torch.linspace(0.5, 8.0, rows)[:, None]
    z_s = torch.randn(rows, classes, generator=gen) * scale + 3.0
    z_t = torch.randn(rows, classes, generator=gen) * scale.flip(0) - 1.0
    return z_s, z_t, torch.randint(0, classes, (rows,), generator=gen)


def test_kd_standardize_equals_kd_on_hand_zscores():
    z_s, z_t, _ = logits(0)
    got = kd_loss(z_s, z_t, 2.0, standardize=True)
    assert torch.allclose(got, kd_loss(hand_zscore(z_s), hand_zscore(z_t), 2.0), rtol=1e-5, atol=1e-7)
    assert not torch.allclose(got, kd_loss(z_s, z_t, 2.0))


def test_standardized_kd_ignores_each_rows_scale_and_offset():
    z_s, z_t, _ = logits(1)
    shifted = z_s * torch.arange(1.0, 7.0)[:, None] - 5.0
    assert torch.allclose(kd_loss(shifted, z_t, 3.0, standardize=True), kd_loss(z_s, z_t, 3.0, standardize=True),
                          rtol=1e-4, atol=1e-6)


def test_dkd_standardize_equals_dkd_on_hand_zscores():
    z_s, z_t, target = logits(2)
    got = dkd_loss(z_s, z_t, target, 18.0, 36.0, 3.0, standardize=True)
    expected = dkd_loss(hand_zscore(z_s), hand_zscore(z_t), target, 18.0, 36.0, 3.0)
    assert torch.allclose(got, expected, rtol=1e-5, atol=1e-6)
    assert not torch.allclose(got, dkd_loss(z_s, z_t, target, 18.0, 36.0, 3.0))


def test_nkd_standardize_equals_nkd_on_hand_zscores():
    z_s, z_t, target = logits(3)
    got = nkd_loss(z_s, z_t, target, 3.0, 3.5, standardize=True)
    assert torch.allclose(got, nkd_loss(hand_zscore(z_s), hand_zscore(z_t), target, 3.0, 3.5), rtol=1e-5, atol=1e-6)


def test_mlkd_standardizes_the_instance_level_only():
    """As the LS code's MLKD.py: kd_loss gets the switch; cc_loss, bc_loss and the masks see the raw logits."""
    (s_w, t_w, _), (s_s, t_s, _) = logits(4, rows=8), logits(5, rows=8)
    temps, views = (2.0, 3.0, 5.0, 2.0, 6.0), ("strong", "strong", "strong", "weak", "weak")
    got = mlkd_loss(s_w, s_s, t_w, t_s, temps, views, 9.0, standardize=True)
    raw = mlkd_loss(s_w, s_s, t_w, t_s, temps, views, 9.0)
    f_s = sample_confidence_mask(t_w).float().mean()
    pairs = {"weak": (hand_zscore(s_w), hand_zscore(t_w)), "strong": (hand_zscore(s_s), hand_zscore(t_s))}
    expected_kd = 9.0 * sum(f_s * kd_loss(*pairs["weak"], tau) + kd_loss(*pairs[view], tau)
                            for tau, view in zip(temps, views))
    assert torch.allclose(got["loss_kd"], expected_kd, rtol=1e-5, atol=1e-6)
    assert not torch.allclose(got["loss_kd"], raw["loss_kd"])
    assert torch.equal(got["loss_cc"], raw["loss_cc"]) and torch.equal(got["loss_bc"], raw["loss_bc"])


@pytest.mark.parametrize("loss", ["kd", "dkd", "mlkd", "nkd"])
def test_gradient_flows_through_the_standardisation(loss):
    z_s, z_t, target = logits(6)
    z_s.requires_grad_(True)
    value = {
        "kd": lambda: kd_loss(z_s, z_t, 2.0, standardize=True),
        "dkd": lambda: dkd_loss(z_s, z_t, target, 9.0, 72.0, 2.0, standardize=True),
        "mlkd": lambda: sum(mlkd_loss(z_s, z_s, z_t, z_t, standardize=True).values()),
        "nkd": lambda: nkd_loss(z_s, z_t, target, standardize=True),
    }[loss]()
    value.backward()
    assert torch.isfinite(z_s.grad).all() and z_s.grad.abs().sum() > 0
    # the z-score is invariant to each row's offset, so the gradient sums to zero over the classes
    assert (z_s.grad.sum(dim=1).abs() <= 1e-5 * z_s.grad.abs().sum(dim=1)).all()


@pytest.mark.parametrize("name", LOGIT_TERMS)
def test_every_logit_term_has_the_switch_off_by_default(name):
    assert registered_terms()[name].Options().logit_standardize is False


def _classification_distiller(path: Path):
    from classification.config import load_cfg
    from classification.distillers import get_distiller_class
    from classification.models import build_model

    cfg = load_cfg(path)
    torch.manual_seed(0)
    student, teacher = build_model(cfg.MODEL.STUDENT, 100, "cifar"), build_model(cfg.MODEL.TEACHER, 100, "cifar")
    return get_distiller_class(cfg.DISTILLER.NAME).from_config(cfg, student, teacher, 100, "cifar")


@pytest.mark.parametrize("method,term", [("kd_ls", "kd"), ("dkd_ls", "dkd"), ("mlkd_ls", "mlkd")])
def test_the_option_reaches_the_loss_from_a_classification_config(method, term):
    distiller = _classification_distiller(CONFIGS / "res32x4_res8x4" / f"{method}.yaml")
    built = distiller.terms[term]
    assert built.options.logit_standardize is True
    if term == "kd":
        z_s, z_t, _ = logits(7, classes=100)
        got = built(Batch(student_logits=z_s, teacher_logits=z_t))["loss_kd"]
        expected = 9.0 * kd_loss(hand_zscore(z_s), hand_zscore(z_t), 2.0)
        assert torch.allclose(got, expected, rtol=1e-5, atol=1e-6)


def test_the_option_reaches_the_loss_from_a_detection_config(make_cfg, build, batched_inputs, train_forward,
                                                             capture_ctx):
    model = build(make_cfg(kd=True, opts=["DISTILL.KD.LOGIT_STANDARDIZE", True, "DISTILL.KD.TEMPERATURE", 2.0]))
    seen = capture_ctx(model)
    losses = train_forward(model, batched_inputs)
    batch = seen[-1]
    expected = kd_loss(hand_zscore(batch.student_logits.float()), hand_zscore(batch.teacher_logits.float()), 2.0)
    assert losses["loss_kd"].item() == pytest.approx(expected.item(), rel=1e-5, abs=1e-7)
    assert model.distill_terms["kd"].options.logit_standardize is True
