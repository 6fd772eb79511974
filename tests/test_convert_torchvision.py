"""tools/convert_torchvision_to_d2.py: a converted torchvision ResNet-18 computes the same features
as Detectron2's ResNet-18 built with the documented settings."""
import importlib.util
import pickle
from pathlib import Path

import torch
import torchvision
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.config import get_cfg
from detectron2.layers import ShapeSpec
from detectron2.modeling.backbone import build_resnet_backbone

TOOL = Path(__file__).resolve().parent.parent / "tools" / "convert_torchvision_to_d2.py"


def load_tool():
    spec = importlib.util.spec_from_file_location("convert_torchvision_to_d2", TOOL)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def random_torchvision_model(factory):
    """A seeded, randomly initialised torchvision model in eval mode with non-trivial BN statistics."""
    torch.manual_seed(0)
    model = factory(weights=None).eval()
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-0.1, 0.1)
            module.running_var.uniform_(0.5, 1.5)
    return model


def test_converted_resnet18_matches_torchvision(tmp_path):
    reference = random_torchvision_model(torchvision.models.resnet18)
    source, output = tmp_path / "r18.pth", tmp_path / "r18.pkl"
    torch.save(reference.state_dict(), source)
    load_tool().main([str(source), str(output)])
    with open(output, "rb") as f:
        assert not any(k.startswith("fc") for k in pickle.load(f)["model"])

    cfg = get_cfg()
    cfg.MODEL.RESNETS.DEPTH = 18
    cfg.MODEL.RESNETS.RES2_OUT_CHANNELS = 64
    cfg.MODEL.RESNETS.STRIDE_IN_1X1 = False
    cfg.MODEL.RESNETS.OUT_FEATURES = ["res5"]
    cfg.MODEL.BACKBONE.FREEZE_AT = 0
    backbone = build_resnet_backbone(cfg, ShapeSpec(channels=3)).eval()
    DetectionCheckpointer(backbone).load(str(output))

    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        expected = torch.nn.Sequential(*list(reference.children())[:-2])(x)
        actual = backbone(x)["res5"]
    torch.testing.assert_close(actual, expected, rtol=1e-4, atol=1e-4)


def test_unexpected_key_is_an_error():
    tool = load_tool()
    assert tool.convert_key("layer3.1.bn2.running_var") == "res4.1.conv2.norm.running_var"
    assert tool.convert_key("fc.weight") is None
    try:
        tool.convert_key("head.weight")
    except KeyError as error:
        assert "head.weight" in str(error)
    else:
        raise AssertionError("an unknown key must raise KeyError")


def test_converted_mobilenet_v2_matches_torchvision(tmp_path):
    from detectron2.modeling import build_backbone

    from unikd_det import add_distill_config

    reference = random_torchvision_model(torchvision.models.mobilenet_v2)
    source, output = tmp_path / "mv2.pth", tmp_path / "mv2.pkl"
    torch.save(reference.state_dict(), source)
    load_tool().main([str(source), str(output)])
    with open(output, "rb") as f:
        keys = set(pickle.load(f)["model"])
    assert not any(k.startswith(("classifier.", "features.18.")) for k in keys)

    cfg = get_cfg()
    add_distill_config(cfg)
    cfg.MODEL.BACKBONE.NAME = "build_mobilenetv2_fpn_backbone"
    cfg.MODEL.BACKBONE.FREEZE_AT = 2
    cfg.MODEL.FPN.IN_FEATURES = ["res2", "res3", "res4", "res5"]
    backbone = build_backbone(cfg).eval()  # FrozenBN, as the COCO config
    DetectionCheckpointer(backbone).load(str(output))
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        expected = reference.features[:18](x)
        actual = backbone.bottom_up(x)["res5"]
    torch.testing.assert_close(actual, expected, rtol=1e-4, atol=1e-4)
