"""UniKDLoss: terms per mode, detach semantics, extreme inputs, option validation."""
import pytest
import torch

from unikd.core import FeatureDistributionPredictor, UniKDLoss, kd_loss
from unikd.terms.unikd import AFFOptions, UniKDOptions

S_CH, T_CH, K = [4, 8, 16], [6, 12, 24], 5


def _inputs(n=4, scale=1.0):
    g = torch.Generator().manual_seed(0)
    sizes = [8, 4, 2]
    feats_s = [(torch.randn(n, c, s, s, generator=g) * scale).requires_grad_() for c, s in zip(S_CH, sizes)]
    feats_t = [torch.randn(n, c, s, s, generator=g) * scale for c, s in zip(T_CH, sizes)]
    logits_s = (torch.randn(n, K, generator=g) * scale).requires_grad_()
    logits_t = torch.randn(n, K, generator=g) * scale
    target = torch.randint(0, K, (n,), generator=g)
    return feats_s, feats_t, logits_s, logits_t, target


def _grads(loss, module):
    params = list(module.parameters())
    return torch.autograd.grad(loss, params, retain_graph=True, allow_unused=True)


def test_paper_mode_terms_and_structure():
    loss = UniKDLoss(S_CH, T_CH, K, UniKDOptions(aff=AFFOptions(channels=16)))
    assert isinstance(loss.fdp, FeatureDistributionPredictor)
    assert not hasattr(loss, "fdp_s")
    terms = loss(*_inputs())
    assert set(terms) == {"loss_feat", "loss_fit", "loss_logit"}
    assert all(v.dim() == 0 and torch.isfinite(v) for v in terms.values())
    assert terms["loss_feat"] > 0


def test_weights_and_k_reduction_scale_terms():
    inputs = _inputs()
    torch.manual_seed(0)
    base = UniKDLoss(S_CH, T_CH, K, UniKDOptions(aff=AFFOptions(channels=16), k_reduction="sum"))
    state = base.state_dict()
    ref = base(*inputs)
    opts = UniKDOptions(aff=AFFOptions(channels=16), alpha=2.0, fit_weight=3.0, beta=0.5, k_reduction="mean")
    scaled = UniKDLoss(S_CH, T_CH, K, opts)
    scaled.load_state_dict(state)
    out = scaled(*inputs)
    assert torch.allclose(out["loss_feat"], ref["loss_feat"] * 2.0 / K, rtol=1e-5)
    assert torch.allclose(out["loss_fit"], ref["loss_fit"] * 3.0 / K, rtol=1e-5)
    assert torch.allclose(out["loss_logit"], ref["loss_logit"] * 0.5, rtol=1e-5)


def test_optional_terms_absent():
    opts = UniKDOptions(aff=AFFOptions(channels=8), target_fit="none", logit_loss="none")
    terms = UniKDLoss(S_CH, T_CH, K, opts)(*_inputs())
    assert set(terms) == {"loss_feat"}


def test_dkd_logit_term_needs_target():
    loss = UniKDLoss(S_CH, T_CH, K, UniKDOptions(aff=AFFOptions(channels=8), logit_loss="dkd"))
    feats_s, feats_t, logits_s, logits_t, target = _inputs()
    assert torch.isfinite(loss(feats_s, feats_t, logits_s, logits_t, target)["loss_logit"])
    with pytest.raises(ValueError, match="needs `target`"):
        loss.logit_terms(logits_s, logits_t)


def test_detach_on_teacher_branch_trained_only_by_fit():
    loss = UniKDLoss(S_CH, T_CH, K, UniKDOptions(aff=AFFOptions(channels=8), detach_target=True))
    terms = loss(*_inputs())
    total = sum(terms.values())
    from_total = _grads(total, loss.aff_t)
    from_fit = _grads(terms["loss_fit"], loss.aff_t)
    assert all(a is not None for a in from_total)
    assert any(a.abs().sum() > 0 for a in from_total)
    for a, b in zip(from_total, from_fit):
        assert torch.allclose(a, b, atol=1e-7)
    assert all(g is None for g in _grads(terms["loss_feat"], loss.aff_t))


def test_detach_on_without_fit_leaves_teacher_branch_untrained():
    loss = UniKDLoss(S_CH, T_CH, K, UniKDOptions(aff=AFFOptions(channels=8), target_fit="none"))
    total = sum(loss(*_inputs()).values())
    total.backward()
    assert all(p.grad is None for p in loss.aff_t.parameters())
    assert any(p.grad is not None for p in loss.aff_s.parameters())


def test_detach_off_feature_loss_reaches_teacher_branch():
    loss = UniKDLoss(S_CH, T_CH, K, UniKDOptions(aff=AFFOptions(channels=8), detach_target=False))
    terms = loss(*_inputs())
    grads = _grads(terms["loss_feat"], loss.aff_t)
    assert all(g is not None for g in grads) and any(g.abs().sum() > 0 for g in grads)


def test_separate_fdps():
    loss = UniKDLoss(S_CH, T_CH, K, UniKDOptions(aff=AFFOptions(channels=8), fdp_shared=False))
    assert not hasattr(loss, "fdp")
    terms = loss(*_inputs())
    sum(terms.values()).backward()
    assert loss.fdp_s.mu_head.weight.grad is not None and loss.fdp_t.mu_head.weight.grad is not None


def test_aff_disabled_uses_last_map_only():
    loss = UniKDLoss(S_CH, T_CH, K, UniKDOptions(aff=AFFOptions(channels=8, enabled=False)))
    assert loss.aff_s.in_channels == [S_CH[-1]] and loss.aff_t.in_channels == [T_CH[-1]]
    feats_s, feats_t, logits_s, logits_t, _ = _inputs()
    fused_s, fused_t = loss.fuse(feats_s, feats_t)
    assert fused_s.shape[-2:] == feats_s[-1].shape[-2:] and fused_t.shape[1] == 8
    terms = loss(feats_s, feats_t, logits_s, logits_t)
    sum(terms.values()).backward()
    assert feats_s[0].grad is None and feats_s[-1].grad is not None


def test_region_pool_is_applied_to_both_fused_maps():
    loss = UniKDLoss(S_CH, T_CH, K, UniKDOptions(aff=AFFOptions(channels=8)))
    seen = []

    def pool(x):
        seen.append(tuple(x.shape))
        return x[:, :, :2, :2].mean(dim=(2, 3))

    loss(*_inputs(), region_pool=pool)
    assert seen == [(4, 8, 8, 8), (4, 8, 8, 8)]


def test_authors_code_mode():
    loss = UniKDLoss(S_CH, T_CH, K, UniKDOptions(mode="authors_code", aff=AFFOptions(channels=8), fdp_shared=True))
    assert loss.aff_t is None
    assert loss.fdp_s.channels == 8 and loss.fdp_t.channels == T_CH[0]
    assert loss.aff_s.gates[0].conv.out_channels == 2
    feats_s, feats_t, logits_s, logits_t, target = _inputs()
    terms = loss(feats_s, feats_t, logits_s, logits_t, target)
    assert set(terms) == {"loss_feat", "loss_supp", "loss_logit"}
    assert all(v.dim() == 0 and torch.isfinite(v) for v in terms.values())
    sum(terms.values()).backward()
    assert loss.fdp_t.mu_head.weight.grad is not None  # nothing detached between the samples
    assert all(p.grad is not None for p in loss.aff_s.parameters())
    with pytest.raises(ValueError, match="needs `target`"):
        loss(feats_s, feats_t, logits_s, logits_t)


@pytest.mark.parametrize("mode", ["paper", "authors_code"])
def test_huge_features_and_logits_stay_finite(mode):
    opts = UniKDOptions(mode=mode, aff=AFFOptions(channels=8), logit_loss="dkd")
    loss = UniKDLoss(S_CH, T_CH, K, opts)
    feats_s, feats_t, logits_s, logits_t, target = _inputs(scale=1e4)
    terms = loss(feats_s, feats_t, logits_s, logits_t, target)
    assert all(torch.isfinite(v) for v in terms.values())
    sum(terms.values()).backward()
    assert all(torch.isfinite(p.grad).all() for p in loss.parameters() if p.grad is not None)
    assert torch.isfinite(logits_s.grad).all() and all(torch.isfinite(f.grad).all() for f in feats_s)


@pytest.mark.parametrize(
    "field,value",
    [("mode", "paperish"), ("logit_loss", "kl"), ("target_fit", "mse"), ("k_reduction", "max"), ("norm", "ln")],
)
def test_option_string_validation(field, value):
    with pytest.raises(ValueError, match=rf"{field}='{value}'.*choose one of"):
        UniKDOptions(**{field: value})


@pytest.mark.parametrize("field", ["temperature", "logvar_bound", "sample_temperature"])
def test_option_positive_validation(field):
    with pytest.raises(ValueError, match=field):
        UniKDOptions(**{field: 0})


def test_aff_width_must_be_positive():
    with pytest.raises(ValueError, match="aff.channels"):
        UniKDOptions(aff=AFFOptions(channels=0))


def test_fit_temperature_scales_the_fit_target_only():
    feats_s, feats_t, logits_s, logits_t, target = _inputs()
    torch.manual_seed(0)
    base = UniKDLoss(S_CH, T_CH, K, UniKDOptions(aff=AFFOptions(channels=8), temperature=1.0, fit_temperature=4.0))
    same_scale = UniKDLoss(S_CH, T_CH, K, UniKDOptions(aff=AFFOptions(channels=8), temperature=4.0))
    same_scale.load_state_dict(base.state_dict())
    out = base(feats_s, feats_t, logits_s, logits_t)
    ref = same_scale(feats_s, feats_t, logits_s, logits_t)
    assert torch.allclose(out["loss_fit"], ref["loss_fit"], rtol=1e-5)  # both fit logits / 4
    assert torch.allclose(out["loss_logit"], kd_loss(logits_s, logits_t, 1.0), rtol=1e-5)
