"""Training engine: optimizers, checkpoints, metrics and the Trainer."""
from .trainer import Trainer, build_teacher, evaluate

__all__ = ["Trainer", "build_teacher", "evaluate"]
