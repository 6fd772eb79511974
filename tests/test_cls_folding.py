"""classification.models.folding: a teacher with its BatchNorms folded into its convolutions computes every output
of the ModelOutput contract as the network it came from, for every zoo model; a BN that something else also reads
stays; the network handed in is left unchanged; training mode and untraceable networks are handled; and the
distillers run the folded teacher only when TRAIN.FOLD_TEACHER_BN asks for it."""
import pytest
import torch
from torch import nn

from classification.bench.speed import trained_like_batchnorm
from classification.config import get_cfg
from classification.distillers import get_distiller_class
from classification.models import ModelOutput, available_models, build_model
from classification.models.folding import fold_batchnorm


def _trained_looking(model: nn.Module, seed: int = 0) -> nn.Module:
    """Eval mode, BN statistics and affine values away from their identity init (a fold of identity BNs would
    hide a wrong formula)."""
    return trained_like_batchnorm(model, torch.Generator().manual_seed(seed))


def _outputs(out: ModelOutput) -> list[torch.Tensor]:
    return [out.logits, out.pooled, *out.feats, *(out.preact_feats or [])]


def _batchnorms(model: nn.Module) -> int:
    return sum(isinstance(m, nn.BatchNorm2d) for m in model.modules())


ZOO = [("cifar", name) for name in available_models("cifar")] + [
    ("imagenet", name) for name in available_models("imagenet")]


@pytest.mark.parametrize("family,name", ZOO)
def test_the_folded_network_gives_every_output_of_the_original(family, name):
    torch.manual_seed(0)
    model = _trained_looking(build_model(name, 10, family))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    folded = fold_batchnorm(model)
    x = torch.randn(2, 3, *((32, 32) if family == "cifar" else (64, 48)))  # non-square ImageNet input
    with torch.no_grad():
        expected, got = _outputs(model(x)), _outputs(folded(x))
    assert len(got) == len(expected)
    for e, g in zip(expected, got):
        assert g.shape == e.shape
        torch.testing.assert_close(g, e, rtol=1e-4, atol=1e-4 * e.abs().max().item())
    assert folded.feature_info == model.feature_info and folded.pooled_channels == model.pooled_channels
    assert _batchnorms(folded) < _batchnorms(model)  # every zoo family has conv -> BN pairs
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())  # the original is untouched


def test_a_resnet_keeps_no_batchnorm_and_its_folded_weights_follow_the_closed_form():
    model = _trained_looking(build_model("resnet8", 10, "cifar"))
    folded = fold_batchnorm(model)
    assert _batchnorms(folded) == 0
    assert fold_batchnorm(folded) is folded  # nothing left to fold: not copied again
    conv, bn = model.conv1, model.bn1
    scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
    torch.testing.assert_close(folded.conv1.weight, conv.weight * scale.view(-1, 1, 1, 1))
    torch.testing.assert_close(folded.conv1.bias, bn.bias - bn.running_mean * scale)


class _TapsBeforeBN(nn.Module):
    """Returns a conv's output both raw and through its BN: the BN's input has a second reader."""

    def __init__(self) -> None:
        super().__init__()
        self.conv, self.bn = nn.Conv2d(3, 4, 3, padding=1, bias=False), nn.BatchNorm2d(4)

    def forward(self, x):
        raw = self.conv(x)
        return raw, self.bn(raw)


def test_a_batchnorm_whose_input_is_also_read_elsewhere_stays():
    model = _trained_looking(_TapsBeforeBN())
    folded = fold_batchnorm(model)
    assert _batchnorms(folded) == 1
    x = torch.randn(2, 3, 5, 7)
    with torch.no_grad():
        for e, g in zip(model(x), folded(x)):
            torch.testing.assert_close(g, e)


class _Untraceable(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv, self.bn = nn.Conv2d(3, 4, 1, bias=False), nn.BatchNorm2d(4)

    def forward(self, x):
        if x.sum() > 0:  # control flow on a value: torch.fx cannot trace it
            x = -x
        return self.bn(self.conv(x))


def test_an_untraceable_network_is_returned_as_it_is():
    model = _Untraceable().eval()
    assert fold_batchnorm(model) is model


def test_a_network_in_training_mode_is_refused():
    with pytest.raises(ValueError, match="eval mode"):
        fold_batchnorm(build_model("resnet8", 10, "cifar"))


@pytest.mark.parametrize("fold", [True, False])
def test_the_distiller_runs_the_folded_teacher_only_when_asked(fold):
    cfg = get_cfg()
    cfg.merge_from_list(["DISTILLER.NAME", "kd", "MODEL.STUDENT", "resnet8", "MODEL.TEACHER", "resnet14",
                         "TRAIN.FOLD_TEACHER_BN", fold])
    teacher = _trained_looking(build_model("resnet14", 10, "cifar"))
    distiller = get_distiller_class("kd").from_config(cfg, build_model("resnet8", 10, "cifar"), teacher, 10, "cifar")
    assert (distiller.teacher is teacher) is not fold
    assert _batchnorms(distiller.teacher) == (0 if fold else _batchnorms(teacher))
    assert not any(p.requires_grad for p in distiller.teacher.parameters())
    distiller.train()
    assert not distiller.teacher.training
    x = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(distiller.teacher_outputs(x).logits, teacher(x).logits, rtol=1e-4, atol=1e-5)
    assert not any(k.startswith("teacher.") for k in distiller.trainable_state_dict())
