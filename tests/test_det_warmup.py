"""Per-term schedule `DISTILL.<NAME>.START` / `WARMUP`: a term counts zero before START, then ramps linearly
over WARMUP iterations (full at once for WARMUP 0), in iterations counted from 1 (EventStorage.iter + 1); the
detector losses are untouched. (Replaces the global DISTILL.WARMUP_ITERS: its ramp min(1, (iter + 1) / W) is
WARMUP W on every term.)"""
from __future__ import annotations

import pytest
import torch

STOCK_LOSSES = {"loss_cls", "loss_box_reg", "loss_rpn_cls", "loss_rpn_loc"}


def expected_factor(progress: float, start: float, warmup: float) -> float:
    """The documented schedule, written out: 0 before START, then (progress - START) / WARMUP capped at 1."""
    if progress < start:
        return 0.0
    return 1.0 if warmup == 0 else min(1.0, (progress - start) / warmup)


@pytest.mark.parametrize("mode", ["paper", "authors_code"])
def test_warmup_scales_each_terms_losses_by_its_own_ramp(make_cfg, build, batched_inputs, train_forward, mode):
    """KD with WARMUP 10 and UniKD with WARMUP 20 at EventStorage.iter 4 (progress 5): KD x 0.5, every UniKD
    loss x 0.25 (in detection authors_code too), the detector losses as without warm-up."""
    common = ["DISTILL.UNIKD.MODE", mode]
    ramped = build(make_cfg(kd=True, unikd=True, opts=common + ["DISTILL.KD.WARMUP", 10, "DISTILL.UNIKD.WARMUP", 20]),
                   seed=0)
    full = build(make_cfg(kd=True, unikd=True, opts=common), seed=1)
    assert (ramped.distill_terms["kd"].options.warmup, ramped.distill_terms["unikd"].options.warmup) == (10, 20)
    assert all(term.options.warmup == 0 and term.options.start == 0 for term in full.distill_terms.values())
    full.load_state_dict(ramped.state_dict())
    ramped.build_teacher(), full.build_teacher()  # outside the seeded forward

    scaled = train_forward(ramped, batched_inputs, it=4, seed=11)
    plain = train_forward(full, batched_inputs, it=4, seed=11)

    unikd = {"loss_unikd_feat", "loss_unikd_fit" if mode == "paper" else "loss_unikd_supp", "loss_unikd_logit"}
    assert set(scaled) == set(plain) == STOCK_LOSSES | {"loss_kd"} | unikd
    for name in STOCK_LOSSES:
        assert scaled[name].item() == pytest.approx(plain[name].item(), rel=1e-6, abs=1e-9), name
    for name in set(plain) - STOCK_LOSSES:
        assert plain[name].item() != 0, name
        factor = 0.5 if name == "loss_kd" else 0.25  # (4 + 1) / 10 and (4 + 1) / 20
        assert scaled[name].item() == pytest.approx(factor * plain[name].item(), rel=1e-5), name


def kd_loss_at(make_cfg, build, batched_inputs, train_forward, it: int, opts=()) -> torch.Tensor:
    """loss_kd of a KD-only DistillRCNN (same weights and sampling for every call) at EventStorage.iter `it`."""
    model = build(make_cfg(kd=True, opts=list(opts)), seed=0)
    return train_forward(model, batched_inputs, it=it, seed=11)["loss_kd"]


@pytest.mark.parametrize("it,expected", [(0, 0.1), (4, 0.5), (8, 0.9), (9, 1.0), (50, 1.0)])
def test_warmup_factor_ramp(make_cfg, build, batched_inputs, train_forward, it, expected):
    """WARMUP 10: the old global ramp min(1, (iter + 1) / 10), now per term."""
    from unikd.terms import schedule_factor

    assert schedule_factor(it + 1, 0, 10) == pytest.approx(expected)
    assert expected_factor(it + 1, 0, 10) == pytest.approx(expected)
    full = kd_loss_at(make_cfg, build, batched_inputs, train_forward, it)
    ramped = kd_loss_at(make_cfg, build, batched_inputs, train_forward, it, ["DISTILL.KD.WARMUP", 10])
    assert full.item() > 0
    assert ramped.item() == pytest.approx(expected * full.item(), rel=1e-5)


@pytest.mark.parametrize(
    "start,warmup,it",
    [(5, 0, 3), (5, 0, 4), (5, 0, 9), (5, 10, 4), (5, 10, 9), (5, 10, 14), (5, 10, 30), (1, 0, 0), (2, 0, 0)],
)
def test_start_delays_a_term_then_it_ramps(make_cfg, build, batched_inputs, train_forward, start, warmup, it):
    """START S: zero while EventStorage.iter + 1 < S (the loss is still computed, with its graph), then the
    ramp (progress - S) / WARMUP from S on."""
    from unikd.terms import schedule_factor

    factor = expected_factor(it + 1, start, warmup)
    assert schedule_factor(it + 1, start, warmup) == pytest.approx(factor)
    full = kd_loss_at(make_cfg, build, batched_inputs, train_forward, it)
    late = kd_loss_at(make_cfg, build, batched_inputs, train_forward, it,
                      ["DISTILL.KD.START", start, "DISTILL.KD.WARMUP", warmup])
    assert late.requires_grad
    if factor == 0:
        assert late.item() == 0.0
    else:
        assert late.item() == pytest.approx(factor * full.item(), rel=1e-5)


def test_schedule_values_by_hand():
    from unikd.terms import schedule_factor

    assert [schedule_factor(p, 0, 0) for p in (0, 1, 100)] == [1.0, 1.0, 1.0]
    assert [schedule_factor(p, 401, 0) for p in (1, 400, 401, 402)] == [0.0, 0.0, 1.0, 1.0]
    assert [schedule_factor(p, 10, 4) for p in (9, 10, 11, 12, 14, 20)] == [0.0, 0.0, 0.25, 0.5, 1.0, 1.0]


def test_no_warmup_means_full_weight(make_cfg, build, batched_inputs, train_forward):
    """The detection defaults: every term at full weight from the first iteration, FGFI from START 401 (the
    official 400 warm steps); at full weight the returned losses are the terms' own, unscaled."""
    cfg = make_cfg()
    nodes = ("KD", "DKD", "MLKD", "FITNET", "REVIEWKD", "UNIKD")
    assert all((cfg.DISTILL[n].START, cfg.DISTILL[n].WARMUP) == (0, 0) for n in nodes)
    assert (cfg.DISTILL.FGFI.START, cfg.DISTILL.FGFI.WARMUP) == (401, 0)
    model = build(make_cfg(kd=True, unikd=True))
    returned = {}
    for term in model.distill_terms.values():
        term.register_forward_hook(lambda module, args, out: returned.update(out))
    losses = train_forward(model, batched_inputs, it=0)
    assert set(returned) == set(losses) - STOCK_LOSSES
    for name, value in returned.items():
        assert losses[name].item() == value.item(), name
