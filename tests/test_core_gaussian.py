"""gaussian_kl (paper Eq. 6) and gaussian_nll (teacher fit) against torch.distributions."""
import math

import pytest
import torch
from torch.distributions import Independent, Normal, kl_divergence

from unikd.core import gaussian_kl, gaussian_nll


def _normal(mu, logvar):
    return Independent(Normal(mu, torch.exp(0.5 * logvar)), 1)


def test_gaussian_kl_matches_torch_distributions():
    g = torch.Generator().manual_seed(0)
    mu_s, lv_s, mu_t, lv_t = (torch.randn(6, 5, generator=g, dtype=torch.float64) for _ in range(4))
    expected = kl_divergence(_normal(mu_s, lv_s), _normal(mu_t, lv_t)).mean()
    got = gaussian_kl(mu_s, lv_s, mu_t, lv_t)
    assert got.dtype == torch.float32
    assert torch.allclose(got.double(), expected, atol=1e-5)


def test_gaussian_kl_is_zero_for_identical_gaussians():
    mu, lv = torch.randn(4, 7), torch.randn(4, 7)
    assert gaussian_kl(mu, lv, mu.clone(), lv.clone()).item() == 0.0


def test_gaussian_kl_is_asymmetric_and_positive():
    mu_s, lv_s = torch.zeros(2, 3), torch.zeros(2, 3)
    mu_t, lv_t = torch.ones(2, 3), torch.full((2, 3), 1.0)
    forward, backward = gaussian_kl(mu_s, lv_s, mu_t, lv_t), gaussian_kl(mu_t, lv_t, mu_s, lv_s)
    assert forward > 0 and backward > 0 and not torch.isclose(forward, backward)


def test_gaussian_nll_matches_normal_log_prob_minus_constant():
    g = torch.Generator().manual_seed(1)
    mu, lv, target = (torch.randn(5, 4, generator=g, dtype=torch.float64) for _ in range(3))
    k = mu.shape[-1]
    expected = (-_normal(mu, lv).log_prob(target)).mean() - 0.5 * k * math.log(2 * math.pi)
    assert torch.allclose(gaussian_nll(mu, lv, target).double(), expected, atol=1e-5)


@pytest.mark.parametrize("value", [1e4, -1e4])
def test_extreme_logvars_give_finite_values_and_gradients(value):
    mu_s = torch.randn(3, 4, requires_grad=True)
    lv_s = torch.full((3, 4), value, requires_grad=True)
    lv_t = torch.full((3, 4), -value)
    kl = gaussian_kl(mu_s, lv_s, torch.randn(3, 4), lv_t)
    nll = gaussian_nll(mu_s, lv_s, torch.randn(3, 4) * 1e3)
    (kl + nll).backward()
    assert torch.isfinite(kl) and torch.isfinite(nll)
    assert torch.isfinite(mu_s.grad).all() and torch.isfinite(lv_s.grad).all()


def test_half_inputs_are_upcast():
    mu, lv = torch.randn(2, 3).half(), (torch.randn(2, 3) * 10).half()
    out = gaussian_kl(mu, lv, torch.zeros(2, 3).half(), torch.zeros(2, 3).half())
    assert out.dtype == torch.float32 and torch.isfinite(out)
    expected = gaussian_kl(mu.float(), lv.float(), torch.zeros(2, 3), torch.zeros(2, 3))
    assert torch.allclose(out, expected)


def test_shape_mismatch_raises():
    with pytest.raises(ValueError, match="shape mismatch"):
        gaussian_kl(torch.zeros(2, 3), torch.zeros(2, 3), torch.zeros(2, 4), torch.zeros(2, 4))
    with pytest.raises(ValueError, match="shape mismatch"):
        gaussian_nll(torch.zeros(2, 3), torch.zeros(2, 3), torch.zeros(3, 3))
