"""classification.models: every zoo model honours the ModelOutput contract (shapes, the declared
feature_info's names, channels, reductions and pre-activation flags, pre-activation maps, gradient flow,
channels_last, autocast), parameter counts match the published ones, the ImageNet ResNets and MobileNetV2
are torchvision's networks, and build_model reports bad names."""
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from classification.models import ModelOutput, available_models, build_model
from unikd.terms.base import FeatureSpec

# Millions of parameters as published: CRD paper / benchmark (CIFAR-100 classifiers).
CIFAR_PARAMS_M = {
    "resnet8x4": 1.23,
    "resnet32x4": 7.43,
    "wrn_40_2": 2.25,
    "vgg13": 9.46,
    "resnet56": 0.86,
    "resnet20": 0.28,
    "resnet110": 1.74,
    "resnet32": 0.47,
    "wrn_16_2": 0.70,
    "wrn_40_1": 0.57,
    "vgg8": 3.96,
    "MobileNetV2": 0.81,
    "ShuffleV1": 0.95,
    "ShuffleV2": 1.36,
    "ResNet50": 23.7,
}
# torchvision / the MobileNet paper (1000 classes).
IMAGENET_PARAMS_M = {
    "ResNet18": 11.69,
    "ResNet34": 21.80,
    "ResNet50": 25.56,
    "MobileNetV1": 4.23,
    "MobileNetV2": 3.50,
}
CIFAR_NAMES = sorted(
    [f"resnet{d}" for d in (8, 14, 20, 32, 44, 56, 110)]
    + ["resnet8x4", "resnet32x4", "wrn_16_1", "wrn_16_2", "wrn_40_1", "wrn_40_2"]
    + [f"vgg{d}" for d in (8, 11, 13, 16, 19)]
    + ["ShuffleV1", "ShuffleV2", "MobileNetV2", "ResNet50"]
)
TORCHVISION_TWINS = {
    "ResNet18": "resnet18",
    "ResNet34": "resnet34",
    "ResNet50": "resnet50",
    "MobileNetV2": "mobilenet_v2",
}


def count_params(name: str, family: str, num_classes: int) -> int:
    with torch.device("meta"):  # shapes only: no memory, no init cost
        model = build_model(name, num_classes, family)
    return sum(p.numel() for p in model.parameters())


def check_contract(model: nn.Module, x: torch.Tensor, num_classes: int) -> ModelOutput:
    """Forward `x`, check every field of the output against the model's declared channels, then check
    that the gradient of the logits reaches the first conv."""
    out = model(x)
    batch = x.shape[0]
    assert isinstance(out, ModelOutput)
    assert out.logits.shape == (batch, num_classes)
    # the declared feature_info is what the forward returns: names, channels, reductions, pre-activations
    assert not hasattr(model, "stage_channels")
    assert len(model.feature_info) == len(out.feats)
    assert [spec.name for spec in model.feature_info] == ["stem", *(f"stage{i}" for i in range(1, len(out.feats)))]
    for feat, spec in zip(out.feats, model.feature_info):
        assert isinstance(spec, FeatureSpec)
        assert feat.shape[:2] == (batch, spec.channels)
        height, width = feat.shape[-2:]
        assert x.shape[-2] % height == 0 and x.shape[-1] % width == 0, (spec, feat.shape)  # integer reductions
        assert (x.shape[-2] // height, x.shape[-1] // width) == (spec.reduction, spec.reduction), (spec, feat.shape)
        assert spec.preact == (out.preact_feats is not None)
    sizes = [feat.shape[-2:] for feat in out.feats]
    assert all(a[0] >= b[0] and a[1] >= b[1] for a, b in zip(sizes, sizes[1:])), sizes
    assert out.pooled.shape == (batch, model.pooled_channels)
    if out.preact_feats is not None:
        assert [p.shape for p in out.preact_feats] == [f.shape for f in out.feats]
        for preact, feat in zip(out.preact_feats, out.feats):  # the same positions, just before the ReLU
            torch.testing.assert_close(F.relu(preact).float(), feat.float())
    out.logits.float().sum().backward()
    first_conv = next(m for m in model.modules() if isinstance(m, nn.Conv2d))
    assert first_conv.weight.grad is not None
    assert torch.isfinite(first_conv.weight.grad).all() and first_conv.weight.grad.abs().sum() > 0
    return out


def test_registered_names():
    assert available_models("cifar") == CIFAR_NAMES
    assert available_models("imagenet") == sorted(IMAGENET_PARAMS_M)


@pytest.mark.parametrize("name", available_models("cifar"))  # every registered one (== CIFAR_NAMES)
def test_cifar_contract_channels_last(name):
    torch.manual_seed(0)
    model = build_model(name, 100, "cifar").eval().to(memory_format=torch.channels_last)
    x = torch.randn(2, 3, 32, 32).to(memory_format=torch.channels_last)
    check_contract(model, x, 100)


@pytest.mark.parametrize("name", ["resnet8", "wrn_16_1", "vgg8", "ShuffleV1", "ShuffleV2", "MobileNetV2"])
def test_cifar_autocast(name):
    torch.manual_seed(0)
    model = build_model(name, 100, "cifar").train()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = check_contract(model, torch.randn(2, 3, 32, 32), 100)
    assert out.logits.dtype == torch.bfloat16 and torch.isfinite(out.logits.float()).all()


@pytest.mark.parametrize("name,millions", sorted(CIFAR_PARAMS_M.items()))
def test_cifar_param_counts(name, millions):
    assert count_params(name, "cifar", 100) / 1e6 == pytest.approx(millions, rel=0.02)


@pytest.mark.parametrize("name,millions", sorted(IMAGENET_PARAMS_M.items()))
def test_imagenet_param_counts(name, millions):
    assert count_params(name, "imagenet", 1000) / 1e6 == pytest.approx(millions, rel=0.005)


@pytest.mark.parametrize("name", available_models("imagenet"))  # 64 px: every reduction (<= 32) divides it
def test_imagenet_contract(name):
    torch.manual_seed(0)
    model = build_model(name, 1000, "imagenet").eval()
    out = check_contract(model, torch.randn(2, 3, 64, 64), 1000)
    assert out.feats[0].shape[-1] == 32  # the stride-2 stem output, before any max-pool


@pytest.mark.parametrize("name", sorted(TORCHVISION_TWINS))
def test_imagenet_matches_torchvision(name):
    torchvision = pytest.importorskip("torchvision")
    torch.manual_seed(0)
    reference = getattr(torchvision.models, TORCHVISION_TWINS[name])(weights=None).eval()
    for module in reference.modules():  # non-trivial BN statistics
        if isinstance(module, nn.BatchNorm2d):
            module.running_mean.uniform_(-0.1, 0.1)
            module.running_var.uniform_(0.5, 1.5)
    model = build_model(name, 1000, "imagenet").eval()
    expected = {key: value.shape for key, value in reference.state_dict().items()}
    assert {key: value.shape for key, value in model.state_dict().items()} == expected
    model.load_state_dict(reference.state_dict(), strict=True)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(model(x).logits, reference(x), rtol=1e-5, atol=1e-5)


def test_build_model_errors():
    with pytest.raises(KeyError, match="resnet32x4"):
        build_model("resnet1000", 100, "cifar")
    with pytest.raises(KeyError, match="MobileNetV1"):
        build_model("vgg8", 1000, "imagenet")
    with pytest.raises(ValueError, match="family"):
        build_model("resnet8", 100, "tinyimagenet")


def test_import_needs_only_torch():
    """The zoo imports with torchvision and detectron2 unavailable."""
    code = (
        "import sys; sys.modules['torchvision'] = None; sys.modules['detectron2'] = None\n"
        "import classification.models as m; assert m.available_models('cifar')"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
