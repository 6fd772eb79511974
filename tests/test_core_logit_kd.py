"""kd_loss (paper Eq. 1) and dkd_loss (decoupled KD)."""
import pytest
import torch

from unikd.core import dkd_loss, kd_loss


def _hand_kd(z_s, z_t, tau):
    """tau^2 * mean_n sum_c p_t (log p_t - log p_s), written out with exp / sum."""
    p_t = torch.exp(z_t / tau) / torch.exp(z_t / tau).sum(-1, keepdim=True)
    p_s = torch.exp(z_s / tau) / torch.exp(z_s / tau).sum(-1, keepdim=True)
    return tau**2 * (p_t * (p_t.log() - p_s.log())).sum(-1).mean()


@pytest.mark.parametrize("tau", [1.0, 4.0])
def test_kd_matches_hand_computation(tau):
    g = torch.Generator().manual_seed(0)
    z_s, z_t = torch.randn(5, 7, generator=g), torch.randn(5, 7, generator=g)
    assert torch.allclose(kd_loss(z_s, z_t, tau), _hand_kd(z_s.double(), z_t.double(), tau).float(), atol=1e-6)


def test_kd_is_zero_for_identical_logits():
    z = torch.randn(4, 6)
    assert kd_loss(z, z.clone(), 3.0).abs().item() < 1e-7


def test_kd_temperature_squared_scaling():
    z_s, z_t = torch.randn(3, 5), torch.randn(3, 5)
    tau = 2.5
    # Scaling the logits by tau at temperature tau reproduces the tau=1 distributions, times tau^2.
    assert torch.allclose(kd_loss(z_s * tau, z_t * tau, tau), tau**2 * kd_loss(z_s, z_t, 1.0), rtol=1e-5)


@pytest.mark.parametrize("tau", [1.0, 4.0])
def test_dkd_decomposition_identity(tau):
    """Per sample: KD = TCKD + (1 - p_target_teacher) * NCKD (all three carry tau^2)."""
    g = torch.Generator().manual_seed(2)
    for _ in range(5):
        z_s, z_t = torch.randn(1, 6, generator=g) * 3, torch.randn(1, 6, generator=g) * 3
        target = torch.randint(0, 6, (1,), generator=g)
        tckd = dkd_loss(z_s, z_t, target, alpha=1.0, beta=0.0, temperature=tau)
        nckd = dkd_loss(z_s, z_t, target, alpha=0.0, beta=1.0, temperature=tau)
        p_gt = torch.softmax(z_t / tau, dim=-1)[0, target]
        kd = kd_loss(z_s, z_t, tau)
        assert torch.allclose(kd, tckd + (1 - p_gt) * nckd, atol=1e-5)
        assert tckd > 0 and nckd > 0


def test_dkd_weights_combine_linearly():
    z_s, z_t, target = torch.randn(4, 5), torch.randn(4, 5), torch.tensor([0, 1, 4, 2])
    tckd = dkd_loss(z_s, z_t, target, 1.0, 0.0, 4.0)
    nckd = dkd_loss(z_s, z_t, target, 0.0, 1.0, 4.0)
    assert torch.allclose(dkd_loss(z_s, z_t, target, 2.0, 8.0, 4.0), 2 * tckd + 8 * nckd, rtol=1e-5)


def test_extreme_logits_finite_values_and_gradients():
    z_s = (torch.tensor([[1e4, -1e4, 3.0, -1e4], [-1e4, 1e4, 1e4, 0.0]])).requires_grad_()
    z_t = torch.tensor([[-1e4, 1e4, 0.0, 1e4], [1e4, -1e4, 0.0, -1e4]])
    target = torch.tensor([0, 1])
    kd = kd_loss(z_s, z_t, 4.0)
    dkd = dkd_loss(z_s, z_t, target, 1.0, 8.0, 4.0)
    (kd + dkd).backward()
    assert torch.isfinite(kd) and torch.isfinite(dkd) and kd > 0 and dkd > 0
    assert torch.isfinite(z_s.grad).all()


def test_dkd_confident_target_keeps_gradients_finite():
    """p_target rounds to 1: log(1 - p_target) must come from logsumexp, not log1p(-p)."""
    z_s = torch.tensor([[50.0, 0.0, 1.0]], requires_grad=True)
    z_t = torch.tensor([[60.0, 2.0, 0.0]])
    loss = dkd_loss(z_s, z_t, torch.tensor([0]), 1.0, 8.0, 1.0)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(z_s.grad).all()


def test_half_logits_are_computed_in_float32():
    z_s, z_t = torch.randn(3, 5) * 20, torch.randn(3, 5) * 20
    out = kd_loss(z_s.half(), z_t.half(), 4.0)
    assert out.dtype == torch.float32
    assert torch.allclose(out, kd_loss(z_s.half().float(), z_t.half().float(), 4.0))


def test_validation_errors():
    z = torch.randn(2, 4)
    with pytest.raises(ValueError, match="equal shapes"):
        kd_loss(z, torch.randn(2, 5), 1.0)
    with pytest.raises(ValueError, match="temperature"):
        kd_loss(z, z, 0.0)
    with pytest.raises(ValueError, match="integer tensor of shape"):
        dkd_loss(z, z, torch.tensor([0]), 1.0, 1.0, 1.0)
    with pytest.raises(ValueError, match="integer tensor"):
        dkd_loss(z, z, torch.tensor([0.0, 1.0]), 1.0, 1.0, 1.0)
    with pytest.raises(ValueError, match=r"\[0, 4\)"):
        dkd_loss(z, z, torch.tensor([0, 4]), 1.0, 1.0, 1.0)
    with pytest.raises(ValueError, match="at least 2 classes"):
        dkd_loss(torch.randn(2, 1), torch.randn(2, 1), torch.tensor([0, 0]), 1.0, 1.0, 1.0)
