"""UniKD for Detectron2: importing this package registers `DistillRCNN`, the distillation terms and the
MobileNetV2-FPN backbone.

`unikd_det.core` (the loss core) is pure PyTorch and imports without Detectron2.
"""
try:
    import detectron2  # noqa: F401
except ImportError:  # the loss core stays usable with torch alone
    __all__: list[str] = []
else:
    from .config import add_distill_config
    from .meta_arch import DistillRCNN

    __all__ = ["add_distill_config", "DistillRCNN"]
