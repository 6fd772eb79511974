"""Model registry of the classification zoo and the output contract every model follows.

Models live in two families: ``cifar`` (32x32 inputs) and ``imagenet`` (224x224 inputs). A name is unique
within its family (``ResNet50`` exists in both), so a config names the architecture and the dataset picks
the family. ``<library>:<name>`` (``timm:resnet18``, ``torchvision:resnet50``) names a model of a registered
library instead (`register_library`, external.py), whatever the family.
"""
from __future__ import annotations

from typing import Callable, NamedTuple, Sequence

from torch import Tensor, nn

from unikd.core.features import FeatureSpec

FAMILIES = ("cifar", "imagenet")

ModelFactory = Callable[[int], nn.Module]
_REGISTRY: dict[str, dict[str, ModelFactory]] = {family: {} for family in FAMILIES}
# factory(name in the library, num_classes, pretrained) -> a model following the contract below
LibraryFactory = Callable[[str, int, bool], nn.Module]
_LIBRARIES: dict[str, LibraryFactory] = {}


class ModelOutput(NamedTuple):
    """What every zoo model's forward returns.

    logits: [B, num_classes].
    feats: stem output followed by every stage's output, finest to coarsest, after the activation.
    pooled: [B, D], the globally pooled vector the classifier reads.
    preact_feats: the same maps taken before each stage's last activation, or None where the
        architecture has no such tensor (MobileNetV2's linear bottlenecks, for example).
    """

    logits: Tensor
    feats: list[Tensor]
    pooled: Tensor
    preact_feats: list[Tensor] | None


def declare_features(channels: Sequence[int], reductions: Sequence[int], preact: bool) -> list[FeatureSpec]:
    """A zoo model's `feature_info`, one entry per map of `feats`: `stem`, `stage1`, `stage2`, ... with its
    channels, its reduction (input side / map side) and whether `preact_feats` holds its pre-activation map.
    Each model declares it while it is built, from its own layers' strides."""
    if len(channels) != len(reductions):
        raise ValueError(f"{len(channels)} channel counts for {len(reductions)} reductions")
    names = ["stem", *(f"stage{index}" for index in range(1, len(channels)))]
    return [FeatureSpec(name, int(c), int(r), preact) for name, c, r in zip(names, channels, reductions)]


def register_model(family: str, name: str) -> Callable[[ModelFactory], ModelFactory]:
    """Decorator: register `factory(num_classes) -> nn.Module` as `name` in `family`."""
    if family not in _REGISTRY:
        raise ValueError(f"unknown model family {family!r}; expected one of {FAMILIES}")

    def decorate(factory: ModelFactory) -> ModelFactory:
        if name in _REGISTRY[family]:
            raise KeyError(f"model {name!r} is already registered in family {family!r}")
        _REGISTRY[family][name] = factory
        return factory

    return decorate


def register_library(library: str) -> Callable[[LibraryFactory], LibraryFactory]:
    """Decorator: build the models named `<library>:<name>` with `factory(name, num_classes, pretrained)`."""

    def decorate(factory: LibraryFactory) -> LibraryFactory:
        if library in _LIBRARIES:
            raise KeyError(f"model library {library!r} is already registered")
        _LIBRARIES[library] = factory
        return factory

    return decorate


def split_library_name(name: str) -> tuple[str, str] | None:
    """("timm", "resnet18") for "timm:resnet18"; None for a zoo name (one without a colon)."""
    if ":" not in name:
        return None
    library, _, model = name.partition(":")
    return library, model


def available_models(family: str) -> list[str]:
    """Sorted names registered in `family`."""
    if family not in _REGISTRY:
        raise ValueError(f"unknown model family {family!r}; expected one of {FAMILIES}")
    return sorted(_REGISTRY[family])


def build_model(name: str, num_classes: int, family: str = "cifar", pretrained: bool = False) -> nn.Module:
    """Build the registered model `name` of `family` with a `num_classes`-way classifier; a `<library>:<name>`
    is that library's model, from its own pretrained weights when `pretrained` (zoo models have none).

    The returned module's forward gives a ModelOutput; it has `feature_info` (a FeatureSpec per entry of
    `feats`: name, channels, reduction, pre-activation; `declare_features`) and `pooled_channels` (width of
    `pooled`).
    """
    models = _REGISTRY.get(family)
    if models is None:
        raise ValueError(f"unknown model family {family!r}; expected one of {FAMILIES}")
    if num_classes < 1:
        raise ValueError(f"num_classes must be >= 1, got {num_classes}")
    library = split_library_name(name)
    if library is not None:
        prefix, model = library
        if prefix not in _LIBRARIES:
            raise KeyError(f"unknown model library {prefix!r} in {name!r}; available: {', '.join(sorted(_LIBRARIES))}")
        return _LIBRARIES[prefix](model, num_classes, pretrained)
    if name not in models:
        raise KeyError(f"unknown {family} model {name!r}; available: {', '.join(sorted(models))}")
    if pretrained:
        raise ValueError(f"{name!r} is a zoo model: pretrained weights come only with timm: and torchvision: models")
    return models[name](num_classes)
