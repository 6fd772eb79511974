"""Loss keys of the classification terms: each carries its term's name, so no two terms of a hybrid clash, and a
hybrid that counts the same logit loss twice says so once, when it is built."""
from __future__ import annotations

import itertools
import logging

import pytest
import torch

from classification.config import load_cfg
from classification.distillers import get_distiller_class
from classification.distillers.terms import SUPPORTED
from classification.models import build_model
from unikd.terms import registered_terms
from unikd.terms.term_set import check_loss_key

NUM_CLASSES = 5
NUM_TRAIN = 40
TRAIN_LABELS = torch.arange(NUM_TRAIN) % NUM_CLASSES
# the registered terms the classification front end can feed (FGFI and FGD need detection's boxes)
TERMS = sorted(name for name, term in registered_terms().items() if term.requires <= SUPPORTED)
TERMS_LOGGER = "unikd.terms.term_set"


def _hybrid(terms: tuple[str, ...], *opts):
    torch.manual_seed(0)
    cfg = load_cfg(None, ["DISTILLER.NAME", "hybrid", "HYBRID.TERMS", str(list(terms)), "MODEL.STUDENT", "resnet8",
                          "MODEL.TEACHER", "resnet14", "CRD.NCE_K", 8, "UNIKD.AFF.CHANNELS", 8, *map(str, opts)])
    student, teacher = build_model("resnet8", NUM_CLASSES), build_model("resnet14", NUM_CLASSES)
    return get_distiller_class("hybrid").from_config(cfg, student, teacher, NUM_CLASSES, "cifar", TRAIN_LABELS)


def _losses(distiller) -> dict[str, torch.Tensor]:
    images = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    indices = torch.tensor([3, 17, 22, 38])
    with torch.no_grad():
        return distiller.eval().compute_losses(images, TRAIN_LABELS[indices], 100.0, indices)[1]


def _keys_of(term: str) -> set[str]:
    return set(_losses(_hybrid((term,)))) - {"loss_ce"}


@pytest.fixture(scope="module")
def keys_per_term() -> dict[str, set[str]]:
    return {term: _keys_of(term) for term in TERMS}


def test_every_term_names_its_losses_after_itself(keys_per_term):
    for term, keys in keys_per_term.items():
        assert keys, term
        assert all(key == f"loss_{term}" or key.startswith(f"loss_{term}_") for key in keys), (term, keys)
    assert keys_per_term["mlkd"] == {"loss_mlkd_kd", "loss_mlkd_cc", "loss_mlkd_bc", "loss_mlkd_ce_strong"}
    assert keys_per_term["unikd"] == {"loss_unikd_feat", "loss_unikd_fit", "loss_unikd_logit"}


@pytest.mark.parametrize("pair", list(itertools.combinations(TERMS, 2)), ids="+".join)
def test_no_two_terms_of_a_hybrid_share_a_loss_key(pair, keys_per_term):
    first, second = (keys_per_term[term] for term in pair)
    assert not first & second
    assert set(_losses(_hybrid(pair))) == {"loss_ce"} | first | second


def test_the_classification_terms_are_every_registered_term_but_the_detection_only_ones():
    assert set(registered_terms()) - set(TERMS) == {"fgfi", "fgd"}  # both need ground-truth boxes


def test_a_key_without_the_terms_name_is_refused():
    check_loss_key("mlkd", "loss_mlkd")
    check_loss_key("mlkd", "loss_mlkd_cc")
    for key in ("loss_kd", "loss_mlkdcc", "mlkd_cc"):
        with pytest.raises(ValueError, match="does not carry the term's name"):
            check_loss_key("mlkd", key)


@pytest.mark.parametrize(
    "terms,opts,doubled",
    [
        (("unikd", "kd"), ("UNIKD.LOGIT_LOSS", "kd"), "kd in unikd and kd"),
        (("unikd", "dkd"), ("UNIKD.LOGIT_LOSS", "dkd"), "dkd in unikd and dkd"),
        (("dkd", "unikd"), ("UNIKD.MODE", "authors_code", "UNIKD.LOGIT_LOSS", "none"), "dkd in dkd and unikd"),
        (("unikd", "kd"), ("UNIKD.LOGIT_LOSS", "none"), None),
        (("unikd", "dkd"), ("UNIKD.LOGIT_LOSS", "kd"), None),
        (("kd", "dkd"), (), None),
    ],
)
def test_a_hybrid_counting_a_logit_loss_twice_warns_once_when_built(caplog, terms, opts, doubled):
    with caplog.at_level(logging.WARNING, logger=TERMS_LOGGER):
        distiller = _hybrid(terms, *opts)
    warnings = [r.getMessage() for r in caplog.records if r.name == TERMS_LOGGER]
    if doubled is None:
        assert warnings == []
    else:
        assert len(warnings) == 1 and doubled in warnings[0]
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger=TERMS_LOGGER):
        _losses(distiller)
    assert not caplog.records  # built once, said once: running the hybrid does not repeat it
