"""UniKD for Detectron2: importing this package registers `DistillRCNN` and the MobileNetV2-FPN backbone.

The loss core and the distillation terms are the shared layer `unikd` (no Detectron2 import).
"""
from .config import add_distill_config
from .meta_arch import DistillRCNN

__all__ = ["add_distill_config", "DistillRCNN"]
