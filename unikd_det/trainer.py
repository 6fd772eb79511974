"""`DistillTrainer`: Detectron2's DefaultTrainer with COCO evaluation, an eager teacher build, safe checkpoints
and a resume point that survives a divergence."""
from __future__ import annotations

import importlib.util
import logging
import os

from detectron2.config import CfgNode
from detectron2.engine import DefaultTrainer
from detectron2.evaluation import COCOEvaluator
from detectron2.utils.events import CommonMetricPrinter, JSONWriter, TensorboardXWriter
from torch.nn.parallel import DistributedDataParallel

from .checkpoint import SafeDetectionCheckpointer
from .meta_arch import DistillRCNN

logger = logging.getLogger(__name__)


def unwrap(model):
    """The module inside a DDP wrapper (or the model itself)."""
    return model.module if isinstance(model, DistributedDataParallel) else model


class DistillTrainer(DefaultTrainer):
    """Trains `DistillRCNN` (or any stock model) with the standard Detectron2 loop.

    The teacher is built and loaded in `__init__`, so a bad teacher fails before the first
    iteration; evaluation uses COCOEvaluator on the student. Checkpoints (MODEL.WEIGHTS, resume, periodic
    saves) go through `SafeDetectionCheckpointer`. After a non-finite loss or non-finite weights, training
    stops with a FloatingPointError that names the resume point, the last checkpoint with finite weights.
    """

    def __init__(self, cfg: CfgNode):
        os.makedirs(cfg.OUTPUT_DIR, exist_ok=True)  # also when used without default_setup()
        super().__init__(cfg)
        model = unwrap(self.model)
        if isinstance(model, DistillRCNN):
            model.build_teacher()

    def build_hooks(self):
        """Detectron2's hooks, checkpointing through `SafeDetectionCheckpointer`.

        DefaultTrainer builds a plain DetectionCheckpointer just before calling this; it is replaced here,
        before the PeriodicCheckpointer hook takes it, so periodic saves and `resume_or_load` both use the
        safe one.
        """
        plain = self.checkpointer
        self.checkpointer = SafeDetectionCheckpointer(plain.model, plain.save_dir, **plain.checkpointables)
        return super().build_hooks()

    def resume_or_load(self, resume: bool = True) -> None:
        """Detectron2's resume, except that SOLVER.BASE_LR is the configured one, not the checkpoint's.

        Detectron2 restores the scheduler's and optimizer's learning rates from the checkpoint, so a diverged
        run could not be continued with a smaller LR. Here the configured base LRs replace the saved ones (and
        the change is logged); every other solver state (momentum, iteration, schedule position) is resumed.
        """
        configured = list(self.scheduler.base_lrs)
        super().resume_or_load(resume=resume)
        if resume and self.checkpointer.has_checkpoint() and self.scheduler.base_lrs != configured:
            logger.warning(
                "Resuming with SOLVER.BASE_LR %g; the checkpoint's base learning rates were %s",
                self.cfg.SOLVER.BASE_LR, self.scheduler.base_lrs,
            )
            self.scheduler.base_lrs = configured
            for group, base_lr, lr in zip(self.optimizer.param_groups, configured, self.scheduler.get_lr()):
                group["initial_lr"], group["lr"] = base_lr, lr

    def train(self):
        """Train; a FloatingPointError (Detectron2's non-finite loss check, or non-finite weights at a
        checkpoint) is re-raised with the checkpoint to resume from."""
        try:
            return super().train()
        except FloatingPointError as err:
            raise FloatingPointError(f"{err}\n{self.checkpointer.resume_point()}") from err

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
