"""DISTILL.WARMUP_ITERS: a linear ramp of every distillation loss, the detector losses untouched."""
from __future__ import annotations

import pytest
import torch

STOCK_LOSSES = {"loss_cls", "loss_box_reg", "loss_rpn_cls", "loss_rpn_loc"}


def test_warmup_scales_distillation_losses(make_cfg, build, batched_inputs, train_forward):
    ramped = build(make_cfg(roi=True, unikd=True, opts=["DISTILL.WARMUP_ITERS", 10]), seed=0)
    full = build(make_cfg(roi=True, unikd=True, opts=["DISTILL.WARMUP_ITERS", 0]), seed=1)
    assert ramped.warmup_iters == 10 and full.warmup_iters == 0
    full.load_state_dict(ramped.state_dict())
    ramped.build_teacher(), full.build_teacher()  # outside the seeded forward

    scaled = train_forward(ramped, batched_inputs, it=4, seed=11)
    plain = train_forward(full, batched_inputs, it=4, seed=11)

    assert set(scaled) == set(plain) == STOCK_LOSSES | {
        "loss_kd_roi", "loss_unikd_feat", "loss_unikd_fit", "loss_unikd_logit",
    }
    for name in STOCK_LOSSES:
        assert scaled[name].item() == pytest.approx(plain[name].item(), rel=1e-6, abs=1e-9), name
    for name in set(plain) - STOCK_LOSSES:
        assert plain[name].item() > 0, name
        assert scaled[name].item() == pytest.approx(0.5 * plain[name].item(), rel=1e-5), name  # (4 + 1) / 10


@pytest.mark.parametrize("it,expected", [(0, 0.1), (4, 0.5), (8, 0.9), (9, 1.0), (50, 1.0)])
def test_warmup_factor_ramp(make_cfg, build, it, expected):
    from detectron2.utils.events import EventStorage

    model = build(make_cfg(roi=True, opts=["DISTILL.WARMUP_ITERS", 10]))
    with EventStorage(start_iter=it):
        assert model.warmup_factor() == pytest.approx(expected)


def test_no_warmup_means_full_weight(make_cfg, build):
    model = build(make_cfg(roi=True))
    assert model.warmup_factor() == 1.0  # no EventStorage needed either
