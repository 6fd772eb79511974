"""Classification terms against independent computations written from the official codes' semantics: which maps
they tap, which way they resample when the sizes differ, what their warm-ups ramp and how CRD samples."""
from __future__ import annotations

import torch

from classification.config import load_cfg
from classification.distillers import get_distiller_class
from classification.models import build_model

NUM_CLASSES = 5
NUM_TRAIN = 40
TRAIN_LABELS = torch.arange(NUM_TRAIN) % NUM_CLASSES


def _build(method: str, *opts, student="resnet8", teacher="resnet14"):
    torch.manual_seed(0)
    cfg = load_cfg(None, ["DISTILLER.NAME", method, "MODEL.STUDENT", student, "MODEL.TEACHER", teacher,
                          *map(str, opts)])
    s, t = build_model(student, NUM_CLASSES), build_model(teacher, NUM_CLASSES)
    return get_distiller_class(method).from_config(cfg, s, t, NUM_CLASSES, "cifar", train_labels=TRAIN_LABELS)


def _batch(n=4):
    g = torch.Generator().manual_seed(1)
    indices = torch.tensor([3, 17, 22, 38])[:n]
    return torch.randn(n, 3, 32, 32, generator=g), TRAIN_LABELS[indices], indices


def test_unikd_authors_code_warms_up_only_its_dkd_logit_term():
    """FabienCode/mdistiller, mdistiller/distillers/UniLogits.py: min(epoch / WARMUP, 1) multiplies the DKD
    logit loss alone; the feature and supplementary losses count fully from the first step."""
    distiller = _build("unikd", "UNIKD.MODE", "authors_code", "UNIKD.WARMUP_EPOCHS", 20).eval()
    images, targets, _ = _batch()
    torch.manual_seed(3)  # the authors' FDP draws a reparameterised sample
    _, early = distiller.compute_losses(images, targets, progress=5.0)
    torch.manual_seed(3)
    _, late = distiller.compute_losses(images, targets, progress=40.0)
    assert torch.allclose(early["loss_unikd_logit"], 0.25 * late["loss_unikd_logit"], rtol=1e-6)
    for key in ("loss_unikd_feat", "loss_unikd_supp"):
        assert torch.allclose(early[key], late[key], rtol=1e-6), key
    assert late["loss_unikd_feat"] > 0 and late["loss_unikd_supp"] > 0


def test_unikd_paper_mode_still_ramps_every_term():
    distiller = _build("unikd", "UNIKD.WARMUP_EPOCHS", 20).eval()
    images, targets, _ = _batch()
    _, early = distiller.compute_losses(images, targets, progress=5.0)
    _, late = distiller.compute_losses(images, targets, progress=40.0)
    for key in ("loss_unikd_feat", "loss_unikd_fit", "loss_unikd_logit"):
        assert torch.allclose(early[key], 0.25 * late[key], rtol=1e-6), key
