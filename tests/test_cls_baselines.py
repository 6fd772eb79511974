"""Classification baselines and hybrids: each term against its core loss on the models' taps, hybrids as
sums of their terms, CRD's memory wiring, MLKD's strong view, and every term's one-step training."""
from __future__ import annotations

import contextlib

import pytest
import torch
import torch.nn.functional as F

from classification.config import load_cfg
from classification.data.strong_view import strong_view
from classification.distillers import get_distiller_class
from classification.config import get_cfg
from classification.distillers.terms import TermDistiller
from classification.engine.optim import build_optimizers
from classification.models import build_model
from unikd.terms import options_node, registered_terms
from unikd.core import kd_loss
from unikd.core.attention import at_loss
from unikd.core.nkd import nkd_loss
from unikd.core.relational import rkd_loss, sp_loss

NUM_CLASSES = 5
NUM_TRAIN = 40
TRAIN_LABELS = torch.arange(NUM_TRAIN) % NUM_CLASSES
FEATURE_TERMS = ("fitnet", "at", "sp", "rkd", "ofd", "crd", "reviewkd")
LOGIT_TERMS = ("kd", "dkd", "nkd", "mlkd")


def _build(method: str, *opts, student="resnet8", teacher="resnet14", seed=0):
    torch.manual_seed(seed)
    cfg = load_cfg(None, ["MODEL.STUDENT", student, "MODEL.TEACHER", teacher, "CRD.NCE_K", 16,
                          *(["DISTILLER.NAME", "hybrid", "HYBRID.TERMS", str(method.split("+"))] if "+" in method
                            else ["DISTILLER.NAME", method]), *map(str, opts)])
    s, t = build_model(student, NUM_CLASSES), build_model(teacher, NUM_CLASSES)
    return get_distiller_class(cfg.DISTILLER.NAME).from_config(cfg, s, t, NUM_CLASSES, "cifar", train_labels=TRAIN_LABELS)


def _batch(n=4):
    g = torch.Generator().manual_seed(1)
    indices = torch.tensor([3, 17, 22, 38])[:n]
    return torch.randn(n, 3, 32, 32, generator=g), TRAIN_LABELS[indices], indices


def test_every_registered_term_is_a_method_and_the_papers_baselines_are_there():
    assert set(FEATURE_TERMS + LOGIT_TERMS + ("unikd",)) <= set(registered_terms())
    cfg = get_cfg()
    for name, term in registered_terms().items():
        method = get_distiller_class(name)
        assert issubclass(method, TermDistiller) and method.CONFIG_NODE == name.upper(), name
        # the method's node is the term's options dataclass with the classification preset
        assert cfg[name.upper()] == options_node(term.Options, "classification"), name
    for name in FEATURE_TERMS + LOGIT_TERMS:
        distiller = _build(name, student="resnet8x4" if name == "ofd" else "resnet8")
        assert list(distiller.terms) == [name] and type(distiller.terms[name]) is registered_terms()[name]
        assert distiller.node is distiller.cfg[name.upper()]


def test_a_detection_only_term_is_refused_by_classification_when_built():
    with pytest.raises(ValueError, match="FGFI needs anchor levels, which classification does not lay out"):
        _build("fgfi")


@pytest.mark.parametrize("method", FEATURE_TERMS + LOGIT_TERMS)
def test_each_method_trains_one_step_with_gradients_where_they_belong(method):
    distiller = _build(method, student="resnet8x4" if method == "ofd" else "resnet8").train()
    optimizers, _ = build_optimizers(distiller.optimizer_param_groups(), distiller.cfg.SOLVER, None)
    images, targets, indices = _batch()
    before = {k: v.clone() for k, v in distiller.trainable_state_dict().items()}
    _, losses = distiller.compute_losses(images, targets, 100.0, indices)
    assert "loss_ce" in losses and len(losses) >= 2 and all(torch.isfinite(v) for v in losses.values())
    sum(losses.values()).backward()
    assert all(p.grad is None for p in distiller.teacher.parameters())
    own = [p for p in distiller.terms.parameters()]
    assert all(p.grad is not None for p in own), f"{method}: a trainable part of the term got no gradient"
    assert {id(p) for p in own} <= {id(p) for p in distiller.optimizer_param_groups()["student"]}
    distiller.zero_grad()
    distiller.train_step(images, targets, 100.0, optimizers, contextlib.nullcontext, indices)
    after = distiller.trainable_state_dict()
    assert not any(k.startswith("teacher.") for k in after)
    assert any(not torch.equal(before[k], after[k]) for k in before if k.startswith("student."))


def test_terms_compute_the_core_losses_on_the_models_taps():
    images, targets, indices = _batch()
    for method, check in {
        # AT: every stage (IN_FEATURES ['stage*'], i.e. all maps but the stem); SP: the deepest stage (NUM_LEVELS 1)
        "at": lambda s, t, n: n.WEIGHT * at_loss(s.feats[1:], t.feats[1:], n.P),
        "sp": lambda s, t, n: n.WEIGHT * sp_loss(s.feats[-1], t.feats[-1]),
        "rkd": lambda s, t, n: n.WEIGHT * rkd_loss(s.pooled, t.pooled, n.DISTANCE_WEIGHT, n.ANGLE_WEIGHT),
        "nkd": lambda s, t, n: n.WEIGHT * nkd_loss(s.logits, t.logits, targets, n.TEMPERATURE, n.GAMMA),
        "kd": lambda s, t, n: n.WEIGHT * kd_loss(s.logits, t.logits, n.TEMPERATURE),
    }.items():
        distiller = _build(method).eval()
        _, losses = distiller.compute_losses(images, targets, 100.0, indices)
        node = distiller.node
        with torch.no_grad():
            out_s, out_t = distiller.student(images), distiller.teacher(images)
            expected = check(out_s, out_t, node)
        (name,) = set(losses) - {"loss_ce"}
        assert torch.allclose(losses[name], expected, rtol=1e-5, atol=1e-7), method
        ce = F.cross_entropy(out_s.logits, targets)
        assert torch.allclose(losses["loss_ce"], node.CE_WEIGHT * ce, rtol=1e-5)


@pytest.mark.parametrize(
    "method,opts,taps",
    [
        ("at", ("AT.IN_FEATURES", "['stage2', 'stage3']"), [2, 3]),
        ("at", ("AT.IN_FEATURES", "['stem']"), [0]),
        ("sp", ("SP.NUM_LEVELS", 0), [1, 2, 3]),
        ("sp", ("SP.NUM_LEVELS", 2), [2, 3]),
        ("sp", ("SP.IN_FEATURES", "['stage1']"), [1]),
    ],
)
def test_in_features_and_num_levels_choose_the_maps_a_term_taps(method, opts, taps):
    images, targets, indices = _batch()
    distiller = _build(method, *opts).eval()
    assert distiller.terms[method].pairs == [(distiller.student.feature_info[i].name,) * 2 for i in taps]
    _, losses = distiller.compute_losses(images, targets, 100.0, indices)
    with torch.no_grad():
        out_s, out_t = distiller.student(images), distiller.teacher(images)
    node = distiller.node
    if method == "at":
        expected = node.WEIGHT * at_loss([out_s.feats[i] for i in taps], [out_t.feats[i] for i in taps], node.P)
    else:
        expected = node.WEIGHT * sum(sp_loss(out_s.feats[i], out_t.feats[i]) for i in taps)
    assert torch.allclose(losses[f"loss_{method}"], expected, rtol=1e-5, atol=1e-7)


def test_a_tap_pattern_that_matches_nothing_or_too_few_maps_is_refused():
    with pytest.raises(ValueError, match=r"AT.IN_FEATURES 'stage9' matches no feature of the student"):
        _build("at", "AT.IN_FEATURES", "['stage9']")
    with pytest.raises(ValueError, match=r"SP.IN_FEATURES \['stage\*'\] gives 3 features of the student, fewer "
                                         r"than the 4 levels asked for"):
        _build("sp", "SP.NUM_LEVELS", 4)


@pytest.mark.parametrize(
    "terms", [("kd", "fitnet"), ("kd", "crd"), ("dkd", "reviewkd"), ("mlkd", "reviewkd"), ("nkd", "dkd"),
              ("unikd", "nkd")]
)
def test_hybrid_equals_the_sum_of_its_terms(terms):
    images, targets, indices = _batch()
    # the strong view's CE takes the method's CE weight: the same for the hybrid and the single MLKD
    opts = ["HYBRID.CE_WEIGHT", 0.3, "MLKD.CE_WEIGHT", 0.3, "UNIKD.LOGIT_LOSS", "none"]
    hybrid = _build("+".join(terms), *opts).eval()
    state = {k: v.clone() for k, v in hybrid.trainable_state_dict().items()}
    torch.manual_seed(5)  # at most one term per hybrid draws random numbers (MLKD's view, CRD's negatives)
    _, combined = hybrid.compute_losses(images, targets, 100.0, indices)
    ce = F.cross_entropy(hybrid.student(images).logits, targets)
    assert torch.allclose(combined["loss_ce"], 0.3 * ce, rtol=1e-5)
    parts = {}
    for name in terms:
        single = _build(name, *opts).eval()
        prefixes = ("student.", f"terms.{name}.")
        single.load_trainable_state_dict({k: v for k, v in state.items() if k.startswith(prefixes)})
        torch.manual_seed(5)
        _, losses = single.compute_losses(images, targets, 100.0, indices)
        losses.pop("loss_ce")
        assert not set(losses) & set(parts)
        parts.update(losses)
    assert set(parts) == set(combined) - {"loss_ce"}
    for key, value in parts.items():
        assert torch.allclose(combined[key], value, rtol=1e-5, atol=1e-6), key
    assert torch.allclose(sum(combined.values()), combined["loss_ce"] + sum(parts.values()), rtol=1e-6)


def test_hybrid_configuration_errors():
    with pytest.raises(ValueError, match="no loss terms"):
        _build("hybrid")
    with pytest.raises(KeyError, match="unknown distillation term 'fitnett'; available: at, crd, cwd, dist, dkd, .*unikd"):
        _build("kd+fitnett")
    with pytest.raises(ValueError, match="more than once"):
        _build("kd+kd")


def test_crd_needs_labels_and_indices_and_updates_its_memory_at_the_batch():
    images, targets, indices = _batch()
    cfg = load_cfg(None, ["DISTILLER.NAME", "crd", "MODEL.TEACHER", "resnet14", "CRD.NCE_K", 16])
    with pytest.raises(ValueError, match="train_labels"):
        get_distiller_class("crd").from_config(cfg, build_model("resnet8", 5), build_model("resnet14", 5), 5, "cifar")
    distiller = _build("crd").train()
    with pytest.raises(ValueError, match="indices"):
        distiller.compute_losses(images, targets, 1.0)
    memory = distiller.terms["crd"].crd.memory
    assert memory.memory_s.shape == (NUM_TRAIN, 128)  # one row per training image, published embedding size
    before = memory.memory_s.clone()
    distiller.compute_losses(images, targets, 1.0, indices)
    changed = (memory.memory_s != before).any(dim=1)
    assert changed[indices].all() and changed.sum() == len(indices)
    assert any(k.startswith("terms.crd.crd.memory.") for k in distiller.trainable_state_dict())


def test_strong_view_keeps_shape_changes_images_and_repeats_under_a_seed():
    images = torch.randn(16, 3, 32, 32)
    torch.manual_seed(0)
    first = strong_view(images)
    torch.manual_seed(0)
    again = strong_view(images)
    assert first.shape == images.shape and torch.equal(first, again)
    changed = (first - images).flatten(1).abs().amax(1) > 1e-4
    assert changed.float().mean() > 0.8  # each of 4 operations applies with p 1/2: 15/16 images change
    with pytest.raises(ValueError, match="N, C, H, W"):
        strong_view(images[0])


def test_mlkd_runs_the_strong_view_through_both_networks():
    distiller = _build("mlkd").train()
    images, targets, indices = _batch()
    calls = {"student": 0, "teacher": 0}
    for name in calls:
        getattr(distiller, name).register_forward_hook(lambda *_, n=name: calls.__setitem__(n, calls[n] + 1))
    _, losses = distiller.compute_losses(images, targets, 1.0, indices)
    assert calls == {"student": 2, "teacher": 2}
    assert {"loss_ce", "loss_mlkd_ce_strong", "loss_mlkd_kd", "loss_mlkd_cc", "loss_mlkd_bc"} == set(losses)
    assert distiller.node.CE_WEIGHT == 0.1 and distiller.node.WEIGHT == 0.9
