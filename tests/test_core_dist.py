"""DIST (Huang et al., NeurIPS 2022): the loss against a hand computation of the official formula, and the term."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from unikd.core import dist_loss, pearson_rows
from unikd.terms import Batch, default_options, registered_terms

CONFIGS = Path(__file__).resolve().parent.parent / "classification" / "configs"


def hand_pearson(a: list[float], b: list[float]) -> float:
    """Pearson's rho of two sequences with explicit means and norms (eps 1e-8 on the product of the norms)."""
    mean_a, mean_b = sum(a) / len(a), sum(b) / len(b)
    da, db = [x - mean_a for x in a], [y - mean_b for y in b]
    dot = sum(x * y for x, y in zip(da, db))
    norm_a, norm_b = sum(x * x for x in da) ** 0.5, sum(y * y for y in db) ** 0.5
    return dot / (norm_a * norm_b + 1e-8)


def hand_dist(z_s: torch.Tensor, z_t: torch.Tensor, beta: float, gamma: float, tau: float) -> float:
    """tau^2 * (beta * (1 - mean_i rho(rows)) + gamma * (1 - mean_c rho(columns))) of softmax(z / tau)."""
    y_s = torch.softmax(z_s.double() / tau, dim=1).tolist()
    y_t = torch.softmax(z_t.double() / tau, dim=1).tolist()
    rows, classes = len(y_s), len(y_s[0])
    inter = 1 - sum(hand_pearson(y_s[i], y_t[i]) for i in range(rows)) / rows
    columns = [([y_s[i][c] for i in range(rows)], [y_t[i][c] for i in range(rows)]) for c in range(classes)]
    intra = 1 - sum(hand_pearson(s, t) for s, t in columns) / classes
    return tau**2 * (beta * inter + gamma * intra)


def uneven_logits(seed: int, rows: int = 7, classes: int = 5) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits whose rows differ in scale and offset, so that neither rows nor columns look alike."""
    gen = torch.Generator().manual_seed(seed)
    scale = torch.linspace(0.3, 6.0, rows)[:, None]
    z_s = torch.randn(rows, classes, generator=gen) * scale + torch.arange(rows)[:, None]
    z_t = torch.randn(rows, classes, generator=gen) * scale.flip(0) - 2.0
    return z_s, z_t


@pytest.mark.parametrize("beta,gamma,tau", [(1.0, 1.0, 4.0), (1.0, 1.0, 1.0), (2.0, 0.5, 2.0)])
def test_dist_equals_the_hand_computation(beta, gamma, tau):
    z_s, z_t = uneven_logits(int(tau * 10))
    got = dist_loss(z_s, z_t, beta, gamma, tau)
    assert got.item() == pytest.approx(hand_dist(z_s, z_t, beta, gamma, tau), rel=1e-5, abs=1e-6)


def test_inter_and_intra_parts_are_weighted_separately():
    z_s, z_t = uneven_logits(3)
    inter = dist_loss(z_s, z_t, 1.0, 0.0, 2.0)
    intra = dist_loss(z_s, z_t, 0.0, 1.0, 2.0)
    assert not torch.allclose(inter, intra)
    assert torch.allclose(dist_loss(z_s, z_t, 3.0, 0.5, 2.0), 3.0 * inter + 0.5 * intra, rtol=1e-5)


def test_pearson_of_rows_matches_the_hand_one_and_ignores_scale_and_offset():
    a, b = uneven_logits(4)
    expected = [hand_pearson(x, y) for x, y in zip(a.double().tolist(), b.double().tolist())]
    assert pearson_rows(a.double(), b.double()).tolist() == pytest.approx(expected, rel=1e-9, abs=1e-12)
    assert torch.allclose(pearson_rows(a, 3.0 * a + 1.0), torch.ones(a.shape[0]), atol=1e-6)


def test_identical_predictions_give_zero_and_the_gradient_flows():
    z_s, z_t = uneven_logits(5)
    assert dist_loss(z_t, z_t, 1.0, 1.0, 4.0).item() < 1e-3 * dist_loss(z_s, z_t, 1.0, 1.0, 4.0).item()
    z_s.requires_grad_(True)
    dist_loss(z_s, z_t, 1.0, 1.0, 4.0).backward()
    assert torch.isfinite(z_s.grad).all() and z_s.grad.abs().sum() > 0


def test_term_defaults_follow_the_official_settings():
    options = default_options(registered_terms()["dist"].Options, "classification")
    assert (options.weight, options.beta, options.gamma, options.temperature, options.ce_weight) == (2, 1, 1, 4, 1)
    assert default_options(registered_terms()["dist"].Options, "detection").temperature == 1.0


@pytest.mark.parametrize("config,tau", [("cifar100/res32x4_res8x4/dist.yaml", 4.0),
                                        ("imagenet/res34_res18/dist.yaml", 1.0)])
def test_the_shipped_configs_reach_the_loss(config, tau):
    from classification.config import load_cfg
    from unikd.terms import TermContext, TermSet, options_from_node

    cfg = load_cfg(CONFIGS / config)
    options = options_from_node(registered_terms()["dist"].Options, cfg.DIST)
    term = TermSet.build({"dist": options}, TermContext("classification", [], [], 6))["dist"]
    z_s, z_t = uneven_logits(6, rows=9, classes=6)
    got = term(Batch(student_logits=z_s, teacher_logits=z_t))["loss_dist"]
    assert got.item() == pytest.approx(2.0 * hand_dist(z_s, z_t, 1.0, 1.0, tau), rel=1e-5, abs=1e-6)
