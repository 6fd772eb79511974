"""The term API (unikd.terms): one term serves both front ends, configured by generated nodes."""
from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass

import pytest
import torch

from unikd.terms import (
    TERM_REGISTRY, Batch, FeatureSpec, Term, TermContext, TermOptions, TermSet, default_options, option,
    options_from_node, options_node, register_term, registered_terms, schedule_factor,
)
from unikd.terms.base import NEEDS_INDICES, NEEDS_LOGITS
from unikd.terms.features import pair_from_deepest, select_features, tapped_pairs


def leaves(value, prefix=""):
    """{DOTTED.KEY: value} of a dataclass (upper-cased field names) or a yacs node."""
    if dataclasses.is_dataclass(value):
        items = {f.name.upper(): getattr(value, f.name) for f in dataclasses.fields(value)}
    else:
        items = dict(value)
    out = {}
    for key, item in items.items():
        if dataclasses.is_dataclass(item) or hasattr(item, "keys"):
            out.update(leaves(item, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = list(item) if isinstance(item, tuple) else item
    return out


@pytest.mark.parametrize("progress,start,warmup,expected", [
    (0.0, 0.0, 0.0, 1.0), (0.0, 0.0, 20.0, 0.0), (5.0, 0.0, 20.0, 0.25), (30.0, 0.0, 20.0, 1.0),
    (399.0, 400.0, 0.0, 0.0), (400.0, 400.0, 0.0, 1.0), (410.0, 400.0, 40.0, 0.25),
])
def test_schedule_is_zero_before_start_then_a_linear_ramp(progress, start, warmup, expected):
    assert schedule_factor(progress, start, warmup) == pytest.approx(expected)


def test_every_shipped_term_has_documented_options_and_known_requirements():
    terms = registered_terms()
    assert {"kd", "dkd", "mlkd", "nkd", "fitnet", "at", "sp", "rkd", "ofd", "crd", "reviewkd", "fgfi", "unikd"} <= set(terms)
    for name, term in terms.items():
        assert term.name == name and dataclasses.is_dataclass(term.Options)
        for f in dataclasses.fields(term.Options):
            assert f.metadata.get("doc"), f"{name}.{f.name} has no doc"


@pytest.mark.parametrize("task", ["classification", "detection"])
def test_generated_nodes_equal_the_dataclass_defaults_on_both_front_ends(task, tmp_path):
    if task == "classification":
        from classification.config import get_cfg

        nodes = get_cfg()
    else:
        from detectron2.config import get_cfg

        from unikd_det import add_distill_config

        cfg = get_cfg()
        add_distill_config(cfg)
        nodes = cfg.DISTILL
    for name, term in registered_terms().items():
        node = leaves(nodes[name.upper()])
        assert node.pop("ENABLED", False) is False
        assert node == leaves(default_options(term.Options, task)), name


def test_presets_change_only_what_the_papers_change():
    from unikd.terms.unikd import UniKDOptions

    paper, detection = default_options(UniKDOptions), default_options(UniKDOptions, "detection")
    assert (paper.temperature, paper.norm, paper.logvar_bound, paper.supp_weight) == (4.0, "bn", 4.0, 1.0)
    assert (detection.temperature, detection.norm, detection.logvar_bound, detection.supp_weight) == (1.0, "gn", 2.0, 0.1)
    assert paper.aff.channels == detection.aff.channels == 32


def test_options_round_trip_and_refuse_unknown_keys():
    from unikd.terms.unikd import UniKDOptions

    node = options_node(UniKDOptions, "detection")
    node.AFF.CHANNELS = 16
    node.LOGIT_LOSS = "dkd"
    opts = options_from_node(UniKDOptions, node)
    assert (opts.aff.channels, opts.logit_loss, opts.norm) == (16, "dkd", "gn")
    node.STRAY = 1
    with pytest.raises(KeyError, match="STRAY"):
        options_from_node(UniKDOptions, node)
    node.pop("STRAY")
    node.LOGIT_LOSS = "kl"  # the old detection name of KD
    with pytest.raises(ValueError, match="logit_loss"):
        options_from_node(UniKDOptions, node)


@pytest.mark.parametrize("old", ["ROI:\n    ENABLED: True", "WARMUP_ITERS: 10", "FGFI:\n    START_ITER: 0",
                                 "UNIKD:\n    ROI_POOL: 4"])
def test_old_detection_keys_are_detectron2_unknown_key_errors(old, make_stock_cfg, tmp_path):
    from unikd_det.config import merge_config_file

    path = tmp_path / "old.yaml"
    path.write_text(f"DISTILL:\n  {old}\n")
    with pytest.raises(KeyError, match="Non-existent config key: DISTILL"):
        merge_config_file(make_stock_cfg(), str(path))


@pytest.mark.parametrize("key", ["KD.KD_WEIGHT", "DKD.WARMUP_EPOCHS", "FITNET.HINT_LAYER", "REVIEWKD.MAX_MID_CHANNELS"])
def test_old_classification_keys_are_unknown(key):
    from classification.config import load_cfg

    with pytest.raises(KeyError, match=key.split(".")[1]):
        load_cfg(None, [key, "1"])


def spec_list(*names_channels_reductions):
    return [FeatureSpec(n, c, r) for n, c, r in names_channels_reductions]


def test_features_are_selected_by_name_or_pattern_and_paired_from_the_deepest():
    student = spec_list(("stem", 16, 1), ("stage1", 16, 1), ("stage2", 32, 2), ("stage3", 64, 4))
    assert [s.name for s in select_features("K", student, ["stage*"], "student")] == ["stage1", "stage2", "stage3"]
    assert [s.name for s in select_features("K", student, ["stem", "stage*"], "student", 2)] == ["stage2", "stage3"]
    with pytest.raises(ValueError, match="p2"):
        select_features("K", student, ["p2"], "student")
    with pytest.raises(ValueError, match="fewer"):
        select_features("K", student, ["stage3"], "student", 2)
    assert pair_from_deepest([1, 2, 3], ["a", "b", "c", "d"]) == [(1, "b"), (2, "c"), (3, "d")]


def test_the_pairs_a_term_taps_are_logged(caplog):
    student = spec_list(("stage1", 16, 1), ("stage2", 32, 2))
    teacher = spec_list(("stage1", 64, 4), ("stage2", 128, 8), ("stage3", 256, 16))
    with caplog.at_level("INFO", logger="unikd.terms.features"):
        pairs = tapped_pairs("FITNET.IN_FEATURES", student, teacher, ["stage*"])
    assert [(s.name, t.name) for s, t in pairs] == [("stage1", "stage2"), ("stage2", "stage3")]
    assert caplog.messages == ["FITNET.IN_FEATURES: student stage1 (16 ch, /1), stage2 (32 ch, /2) <- teacher "
                               "stage2 (128 ch, /8), stage3 (256 ch, /16)"]


class _Constant(Term):
    name = "const"
    Options = TermOptions

    def __init__(self, options, context, keys=("loss_const",), logit=frozenset()):
        super().__init__(options, context)
        self.keys, self.logit = keys, logit

    def logit_losses(self):
        return self.logit

    def forward(self, batch):
        return {key: torch.tensor(2.0) for key in self.keys}


CONTEXT = TermContext("classification", [], [], 10)


def test_term_set_schedules_each_term_in_the_front_ends_progress():
    term = _Constant(TermOptions(start=1.0, warmup=2.0), CONTEXT)
    terms = TermSet({"const": term})
    assert terms(Batch(), 0.5)["loss_const"].item() == 0.0
    assert terms(Batch(), 2.0)["loss_const"].item() == pytest.approx(1.0)
    assert terms(Batch(), 9.0)["loss_const"].item() == pytest.approx(2.0)


def test_term_set_refuses_keys_without_the_term_name_and_clashes():
    with pytest.raises(ValueError, match="does not carry"):
        TermSet({"const": _Constant(TermOptions(), CONTEXT, keys=("loss_other",))})(Batch(), 0.0)
    with pytest.raises(ValueError, match="clashes"):
        TermSet({"const": _Constant(TermOptions(), CONTEXT)})(Batch(), 0.0, taken={"loss_const": None})


def test_double_counted_logit_loss_is_said_once_from_the_declarations(caplog):
    with caplog.at_level(logging.WARNING):
        TermSet({"a": _Constant(TermOptions(), CONTEXT, logit=frozenset({"kd"})),
                 "b": _Constant(TermOptions(), CONTEXT, logit=frozenset({"kd"}))})
    assert [r.message for r in caplog.records if "more than once" in r.message] == [
        "these terms count the same logit loss more than once: kd in a and b; set UNIKD.LOGIT_LOSS none (or drop "
        "a term) unless that is intended"
    ]


def test_term_set_names_what_a_front_end_cannot_compute():
    crd = type("NeedsIndices", (_Constant,), {"requires": frozenset({NEEDS_INDICES, NEEDS_LOGITS})})
    terms = TermSet({"const": crd(TermOptions(), CONTEXT)})
    with pytest.raises(ValueError, match="detection cannot run term 'const': it needs indices"):
        terms.check_supported("detection", {NEEDS_LOGITS})


def test_registration_refuses_bad_or_taken_names():
    with pytest.raises(ValueError, match="taken"):
        register_term(type("AnotherKD", (Term,), {"name": "kd"}))
    with pytest.raises(ValueError, match="lower-case"):
        register_term(type("Bad", (Term,), {"name": "Bad"}))
    with pytest.raises(ValueError, match="unknown inputs"):
        register_term(type("Odd", (Term,), {"name": "odd", "requires": frozenset({"telepathy"})}))


# ---------------------------------------------------------------------------------------------------------
# "Adding a method" (docs/adding-a-method.md): a toy term registered here trains on both front ends by
# configuration only.
# ---------------------------------------------------------------------------------------------------------
@dataclass
class ToyOptions(TermOptions):
    PRESETS = {"detection": {"weight": 0.5}}

    weight: float = option(2.0, "weight of the squared logit difference")


class ToyTerm(Term):
    """loss_toy = WEIGHT * mean (z_s - z_t)^2 over the samples' logits."""

    name = "toy"
    Options = ToyOptions
    requires = frozenset({NEEDS_LOGITS})

    def forward(self, batch):
        diff = batch.student_logits.float() - batch.teacher_logits.float()
        return {"loss_toy": self.options.weight * diff.pow(2).mean()}


@pytest.fixture
def toy_term():
    register_term(ToyTerm)
    yield ToyTerm
    TERM_REGISTRY._obj_map.pop(ToyTerm.__name__)


def test_a_toy_term_trains_one_classification_step_by_configuration(toy_term, cls_cfg, cls_teacher):
    from classification.engine import Trainer

    cfg = cls_cfg("DISTILLER.NAME", "toy", "TOY.WEIGHT", 3.0, "MODEL.TEACHER", "resnet14",
                  "MODEL.TEACHER_CHECKPOINT", cls_teacher, "SOLVER.EPOCHS", 1)
    trainer = Trainer(cfg)
    distiller = trainer.distiller
    images, targets, _ = next(iter(trainer.data.train))
    _, losses = distiller.compute_losses(images, targets, progress=1.0)
    with torch.no_grad():
        expected = 3.0 * (distiller.student(images).logits - distiller.teacher(images).logits).pow(2).mean()
    assert losses["loss_toy"].item() == pytest.approx(expected.item(), rel=1e-5)
    before = [p.detach().clone() for p in distiller.student.parameters()]
    trainer.train()
    assert any(not torch.equal(a, b) for a, b in zip(before, distiller.student.parameters()))


def test_a_toy_term_trains_one_detection_step_by_configuration(toy_term, make_cfg, build, batched_inputs,
                                                               train_forward):
    model = build(make_cfg(opts=["DISTILL.TOY.ENABLED", True]))
    assert model.distill_terms["toy"].options.weight == 0.5  # the detection preset
    losses = train_forward(model, batched_inputs, it=10)
    assert losses["loss_toy"].item() > 0
    sum(losses.values()).backward()
    assert all(p.grad is not None for p in model.student.roi_heads.box_predictor.parameters())
