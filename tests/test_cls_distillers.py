"""Classification distillers: loss values against hand-written formulas, gradient routing, SLKD switches."""
from __future__ import annotations

import contextlib
import copy

import pytest
import torch
import torch.nn.functional as F

from classification.config import get_cfg, load_cfg
from classification.distillers import Distiller, get_distiller_class, register_distiller
from classification.distillers.base import _REGISTRY
from classification.engine.optim import build_optimizers
from classification.models import build_model

NUM_CLASSES = 5


def _cfg(method: str, *opts):
    return load_cfg(None, ["DISTILLER.NAME", method, "MODEL.TEACHER", "resnet14", *map(str, opts)])


def _build(method: str, *opts, student="resnet8", teacher="resnet14"):
    torch.manual_seed(0)
    cfg = _cfg(method, "MODEL.STUDENT", student, "MODEL.TEACHER", teacher, *opts)
    s, t = build_model(student, NUM_CLASSES), build_model(teacher, NUM_CLASSES)
    return get_distiller_class(method).from_config(cfg, s, t, NUM_CLASSES, "cifar")


def _batch(n=4):
    g = torch.Generator().manual_seed(1)
    return torch.randn(n, 3, 32, 32, generator=g), torch.arange(n) % NUM_CLASSES


def _kl_by_hand(z_s, z_t, tau):
    p_t = torch.softmax(z_t / tau, 1)
    return (p_t * (p_t.log() - torch.log_softmax(z_s / tau, 1))).sum(1).mean() * tau**2


def test_kd_losses_match_the_formula():
    distiller = _build("kd").train()
    x, y = _batch()
    logits, losses = distiller.compute_losses(x, y, progress=0.0)
    with torch.no_grad():
        z_t = distiller.teacher(x).logits
    assert torch.allclose(losses["loss_ce"], 0.1 * F.cross_entropy(logits, y))
    assert torch.allclose(losses["loss_kd"], 0.9 * _kl_by_hand(logits, z_t, 4.0), atol=1e-6)


def test_dkd_weight_ramps_linearly_over_the_warmup():
    distiller = _build("dkd", "DKD.WARMUP", 20)
    x, y = _batch()
    distiller.eval()  # BatchNorm in eval: the same logits in both calls
    _, early = distiller.compute_losses(x, y, progress=5.0)
    _, late = distiller.compute_losses(x, y, progress=40.0)
    assert torch.allclose(early["loss_dkd"], 0.25 * late["loss_dkd"])
    assert torch.allclose(early["loss_ce"], late["loss_ce"])


def test_a_terms_start_delays_its_ramp():
    distiller = _build("dkd", "DKD.START", 10, "DKD.WARMUP", 20).eval()
    x, y = _batch()
    _, before = distiller.compute_losses(x, y, progress=9.5)
    _, ramping = distiller.compute_losses(x, y, progress=15.0)
    _, full = distiller.compute_losses(x, y, progress=40.0)
    assert before["loss_dkd"] == 0 and full["loss_dkd"] > 0
    assert torch.allclose(ramping["loss_dkd"], 0.25 * full["loss_dkd"])  # (15 - 10) / 20


def test_the_old_warmup_and_weight_keys_are_unknown():
    for key in ("DKD.WARMUP_EPOCHS", "KD.KD_WEIGHT", "MLKD.KD_WEIGHT", "FITNET.HINT_LAYER",
                "REVIEWKD.MAX_MID_CHANNELS"):
        with pytest.raises(KeyError, match=key.replace(".", r"\.")):
            _cfg("kd", key, 1)


def test_teacher_stays_frozen_in_eval_mode_and_gets_no_gradient():
    distiller = _build("kd")
    distiller.train()
    assert not distiller.teacher.training and distiller.student.training
    x, y = _batch()
    _, losses = distiller.compute_losses(x, y, 0.0)
    sum(losses.values()).backward()
    assert all(p.grad is None and not p.requires_grad for p in distiller.teacher.parameters())
    assert all(p.grad is not None for p in distiller.student.parameters())
    assert not any(k.startswith("teacher.") for k in distiller.trainable_state_dict())
    groups = distiller.optimizer_param_groups()
    assert list(groups) == ["student"]
    assert {id(p) for p in groups["student"]} == {id(p) for p in distiller.student.parameters()}


@pytest.mark.parametrize("student,teacher", [("resnet8", "wrn_16_2"), ("ShuffleV2", "resnet14"), ("vgg8", "MobileNetV2")])
def test_unikd_fuses_any_pair_from_the_models_stage_widths(student, teacher):
    distiller = _build("unikd", student=student, teacher=teacher)
    term = distiller.terms["unikd"]
    # IN_FEATURES ['stem', 'stage*'], NUM_LEVELS 2: each network's two deepest declared maps
    for network, levels in (("student", term.student_levels), ("teacher", term.teacher_levels)):
        specs = getattr(distiller, network).feature_info
        assert levels == [spec.name for spec in specs[-2:]]
        aff = term.loss.aff_s if network == "student" else term.loss.aff_t
        assert aff.in_channels == [spec.channels for spec in specs[-2:]]
    x, y = _batch()
    _, losses = distiller.train().compute_losses(x, y, 1.0)
    assert set(losses) == {"loss_ce", "loss_unikd_feat", "loss_unikd_fit", "loss_unikd_logit"}
    sum(losses.values()).backward()
    assert all(p.grad is not None for p in distiller.terms["unikd"].loss.aff_s.parameters())
    assert all(p.grad is None for p in distiller.teacher.parameters())
    # The AFF/FDP modules train with the student (they are in its optimizer) and are checkpointed.
    assert {id(p) for p in distiller.terms["unikd"].loss.parameters()} <= {id(p) for p in distiller.optimizer_param_groups()["student"]}
    assert any(k.startswith("terms.unikd.loss.") for k in distiller.trainable_state_dict())


def test_unikd_terms_equal_the_core_loss_and_ramp():
    distiller = _build("unikd", "UNIKD.WARMUP", 4).eval()
    x, y = _batch()
    _, losses = distiller.compute_losses(x, y, progress=1.0)
    out_s, out_t = distiller.student(x), distiller.teacher(x)
    terms = distiller.terms["unikd"].loss(out_s.feats[-2:], out_t.feats[-2:], out_s.logits, out_t.logits, y)
    for name, value in terms.items():
        key = name.replace("loss_", "loss_unikd_")
        assert torch.allclose(losses[key], 0.25 * value, atol=1e-6), name
    # paper mode, KD logit term: beta * tau^2 KL
    assert torch.allclose(terms["loss_logit"], _kl_by_hand(out_s.logits, out_t.logits, 4.0), atol=1e-5)


def test_unikd_authors_code_reads_the_teacher_stage1_preactivation():
    distiller = _build("unikd", "UNIKD.MODE", "authors_code")
    term = distiller.terms["unikd"]
    assert term.loss.aff_t is None
    assert term.teacher_levels == ["stage1"]
    stage1 = next(spec for spec in distiller.teacher.feature_info if spec.name == "stage1")
    assert stage1.preact and term.loss.fdp_t.channels == stage1.channels
    x, y = _batch()
    _, losses = distiller.train().compute_losses(x, y, 100.0)
    assert set(losses) == {"loss_ce", "loss_unikd_feat", "loss_unikd_supp", "loss_unikd_logit"}
    # the teacher side is its stage-1 map before the last activation, not the activated one
    distiller.eval()
    out_s, out_t = distiller.student(x), distiller.teacher(x)
    stage1_index = [spec.name for spec in distiller.teacher.feature_info].index("stage1")
    preact_t = out_t.preact_feats[stage1_index]
    assert not torch.equal(preact_t, out_t.feats[stage1_index])
    torch.manual_seed(3)
    _, losses = distiller.compute_losses(x, y, 100.0)
    torch.manual_seed(3)
    expected = term.loss(out_s.feats[-2:], [preact_t], out_s.logits, out_t.logits, y)
    for name, value in expected.items():
        assert torch.allclose(losses[name.replace("loss_", "loss_unikd_")], value, atol=1e-6), name


def test_unikd_rejects_more_levels_than_a_model_has():
    with pytest.raises(ValueError, match=r"UNIKD.IN_FEATURES \['stem', 'stage\*'\] gives 4 features of the "
                                         r"student, fewer than the 9 levels asked for"):
        _build("unikd", "UNIKD.NUM_LEVELS", 9)


def test_unikd_num_levels_zero_fuses_every_tapped_map():
    distiller = _build("unikd", "UNIKD.NUM_LEVELS", 0).eval()
    term = distiller.terms["unikd"]
    assert term.student_levels == term.teacher_levels == ["stem", "stage1", "stage2", "stage3"]
    assert term.loss.aff_s.in_channels == [spec.channels for spec in distiller.student.feature_info]
    x, y = _batch()
    _, losses = distiller.compute_losses(x, y, progress=100.0)
    out_s, out_t = distiller.student(x), distiller.teacher(x)
    expected = term.loss(out_s.feats, out_t.feats, out_s.logits, out_t.logits, y)
    for name, value in expected.items():
        assert torch.allclose(losses[name.replace("loss_", "loss_unikd_")], value, atol=1e-6), name


def _slkd_step(*opts):
    distiller = _build("slkd", *opts)
    distiller.train()
    x, y = _batch()
    return distiller, x, y


@pytest.mark.parametrize("detach", [False, True])
def test_slkd_detach_switch_decides_whether_the_student_term_reaches_the_slts(detach):
    distiller, x, y = _slkd_step("SLKD.DETACH_SLT_TARGET", detach)
    _, losses = distiller.compute_losses(x, y, 0.0)
    losses["loss_slt_student"].backward()
    slt_grads = [p.grad for slt in distiller.slts for p in slt.parameters()]
    if detach:
        assert all(g is None for g in slt_grads)
    else:
        assert all(g is not None for g in slt_grads) and any(g.abs().sum() > 0 for g in slt_grads)
    assert all(p.grad is not None for p in distiller.student.parameters())


def test_slkd_fused_target_and_student_term_match_the_formula():
    distiller, x, y = _slkd_step("SLKD.FUSION_WEIGHTS", [0.3, 0.7])
    distiller.eval()
    _, losses = distiller.compute_losses(x, y, 0.0)
    z_s = distiller.student(x).logits
    z_t = distiller.teacher(x).logits
    z1, z2 = (slt(x).logits for slt in distiller.slts)
    fused = 0.3 * z1 + 0.7 * z2
    expected = 1.0 * F.cross_entropy(z_s, y) + 1.0 * _kl_by_hand(z_s, fused, 4.0)
    assert torch.allclose(losses["loss_slt_student"], expected, atol=1e-5)
    slt_expected = sum(0.1 * F.cross_entropy(z, y) + 0.9 * _kl_by_hand(z, z_t, 4.0) for z in (z1, z2))
    assert torch.allclose(losses["loss_slt"], slt_expected, atol=1e-5)


def test_slkd_fusion_weights_must_sum_to_one():
    with pytest.raises(ValueError, match="must sum to 1"):
        _build("slkd", "SLKD.FUSION_WEIGHTS", [0.5, 0.6])
    with pytest.raises(ValueError, match="has 3 values for NUM_SLT 2"):
        _build("slkd", "SLKD.FUSION_WEIGHTS", [0.2, 0.3, 0.5])


def test_slkd_has_one_optimizer_per_network_over_disjoint_parameters():
    distiller, _, _ = _slkd_step("SLKD.NUM_SLT", 3, "SLKD.FUSION_WEIGHTS", [0.2, 0.3, 0.5])
    groups = distiller.optimizer_param_groups()
    assert list(groups) == ["student", "slt1", "slt2", "slt3"]
    ids = [{id(p) for p in params} for params in groups.values()]
    assert sum(len(s) for s in ids) == len(set().union(*ids))
    assert ids[0] == {id(p) for p in distiller.student.parameters()}
    teacher_arch = type(build_model("resnet14", NUM_CLASSES))  # the distiller's teacher is its BN-folded trace
    assert all(isinstance(slt, teacher_arch) for slt in distiller.slts)
    assert all(p.requires_grad for slt in distiller.slts for p in slt.parameters())


def test_slkd_sequential_updates_the_slts_on_their_own_loss_first():
    distiller, x, y = _slkd_step("SLKD.MODE", "sequential")
    reference = copy.deepcopy(distiller)
    cfg = get_cfg()
    optimizers, _ = build_optimizers(distiller.optimizer_param_groups(), cfg.SOLVER, None)
    distiller.train_step(x, y, 0.0, optimizers, contextlib.nullcontext)
    # Reference: SGD on the SL-T loss alone, then the student against the updated SL-Ts' fused logits.
    ref_opts, _ = build_optimizers(reference.optimizer_param_groups(), cfg.SOLVER, None)
    z_t = reference.teacher(x).logits
    slt_loss = reference._slt_losses(x, z_t, y)[1]
    ref_opts.step(slt_loss, ["slt1", "slt2"])
    for a, b in zip(distiller.slts.parameters(), reference.slts.parameters()):
        assert torch.allclose(a, b, atol=1e-6)
    with torch.no_grad():
        fused = reference.fuse([slt(x).logits for slt in reference.slts])
    _, student_losses = reference._student_losses(x, z_t, fused, y)
    ref_opts.step(sum(student_losses.values()), ["student"])
    for a, b in zip(distiller.student.parameters(), reference.student.parameters()):
        assert torch.allclose(a, b, atol=1e-6)


def test_a_new_distiller_is_one_class_and_gets_its_config_node():
    @register_distiller("test_double_ce")
    class DoubleCE(Distiller):
        CONFIG_NODE = "DOUBLE_CE"
        NEEDS_TEACHER = False

        @classmethod
        def default_config(cls):
            node = super().default_config()
            node.FACTOR = 2.0
            return node

        def compute_losses(self, images, targets, progress):
            logits = self.student(images).logits
            return logits, {"loss_ce": self.node.FACTOR * F.cross_entropy(logits, targets)}

    try:
        cfg = load_cfg(None, ["DISTILLER.NAME", "test_double_ce", "DOUBLE_CE.FACTOR", "3.0"])
        distiller = get_distiller_class("test_double_ce").from_config(cfg, build_model("resnet8", 5), None, 5, "cifar")
        x, y = _batch()
        logits, losses = distiller.eval().compute_losses(x, y, 0.0)
        assert torch.allclose(losses["loss_ce"], 3.0 * F.cross_entropy(logits, y))
    finally:
        del _REGISTRY["test_double_ce"]


def test_unknown_distiller_lists_the_available_ones():
    with pytest.raises(KeyError, match="unknown distiller 'fitnett'.*dkd, .*hybrid, kd, .*unikd, vanilla"):
        get_distiller_class("fitnett")
