"""Classification model zoo: CIFAR and ImageNet networks behind one registry.

Importing this package imports every model module, which registers its models; build one with
`build_model(name, num_classes, family)`. Every model returns a `ModelOutput` (see registry.py) and
declares `feature_info` (name, channels, reduction and pre-activation of each entry of `feats`) and
`pooled_channels`. `timm:<name>` and `torchvision:<name>` build those libraries' models behind the same contract
(external.py, which imports a library when its first model is built). Only torch is needed to import the zoo.
"""
from . import (  # noqa: F401  (imported for their registrations)
    cifar_mobilenetv2,
    cifar_resnet,
    cifar_resnet_v2,
    cifar_shufflenet,
    cifar_vgg,
    cifar_wrn,
    external,
    imagenet_mobilenet,
    imagenet_resnet,
)
from .registry import (
    FAMILIES, ModelOutput, available_models, build_model, declare_features, register_library, register_model,
    split_library_name,
)

__all__ = [
    "FAMILIES", "ModelOutput", "available_models", "build_model", "declare_features", "register_library",
    "register_model", "split_library_name",
]
