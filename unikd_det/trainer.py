"""`DistillTrainer`: Detectron2's DefaultTrainer with COCO evaluation and an eager teacher build."""
from __future__ import annotations

import importlib.util
import os

from detectron2.config import CfgNode
from detectron2.engine import DefaultTrainer
from detectron2.evaluation import COCOEvaluator
from detectron2.utils.events import CommonMetricPrinter, JSONWriter, TensorboardXWriter
from torch.nn.parallel import DistributedDataParallel

from .meta_arch import DistillRCNN


def unwrap(model):
    """The module inside a DDP wrapper (or the model itself)."""
    return model.module if isinstance(model, DistributedDataParallel) else model


class DistillTrainer(DefaultTrainer):
    """Trains `DistillRCNN` (or any stock model) with the standard Detectron2 loop.

    The teacher is built and loaded in `__init__`, so a bad teacher fails before the first
    iteration; evaluation uses COCOEvaluator on the student.
    """

    def __init__(self, cfg: CfgNode):
        os.makedirs(cfg.OUTPUT_DIR, exist_ok=True)  # also when used without default_setup()
        super().__init__(cfg)
        model = unwrap(self.model)
        if isinstance(model, DistillRCNN):
            model.build_teacher()

    @classmethod
    def build_evaluator(cls, cfg: CfgNode, dataset_name: str, output_folder: str | None = None):
        output_folder = output_folder or os.path.join(cfg.OUTPUT_DIR, "inference", dataset_name)
        return COCOEvaluator(dataset_name, output_dir=output_folder, use_fast_impl=False)

    def build_writers(self):
        """Console and JSON metrics; TensorBoard too when the tensorboard package is installed."""
        writers = [CommonMetricPrinter(self.max_iter), JSONWriter(os.path.join(self.cfg.OUTPUT_DIR, "metrics.json"))]
        if importlib.util.find_spec("tensorboard") is not None:
            writers.append(TensorboardXWriter(self.cfg.OUTPUT_DIR))
        return writers
