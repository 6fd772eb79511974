"""`DistillTrainer`: Detectron2's DefaultTrainer with COCO evaluation, an eager teacher build, safe checkpoints,
a resume point that survives a divergence, and a resume that continues the run bit for bit.

Reproducibility: with the same SEED, machine and thread count, a run gives the same weights, also when it is
interrupted and resumed. Detectron2's own resume restarts the sampler's index stream and the RNGs; here the
checkpoint holds the RNG states of the process and the resumed sampler skips the indices already read. The
limits are those of a single process reading its data itself (DATALOADER.NUM_WORKERS 0): see
`DistillTrainer.load_state_dict`.
"""
from __future__ import annotations

import importlib.util
import itertools
import logging
import os
from collections.abc import Iterator
from typing import Any

from detectron2.config import CfgNode
from detectron2.data import build_detection_train_loader
from detectron2.engine import DefaultTrainer
from detectron2.evaluation import COCOEvaluator
from detectron2.utils import comm
from detectron2.utils.events import CommonMetricPrinter, JSONWriter, TensorboardXWriter
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import Sampler

from .checkpoint import SafeDetectionCheckpointer
from unikd.core.rng import rng_state, set_rng_state
from .meta_arch import DistillRCNN

logger = logging.getLogger(__name__)


def unwrap(model):
    """The module inside a DDP wrapper (or the model itself)."""
    return model.module if isinstance(model, DistributedDataParallel) else model


class ResumableSampler(Sampler):
    """A Detectron2 training sampler read from position `start` of its index stream.

    Detectron2's training samplers (TrainingSampler, RepeatFactorTrainingSampler, ...) yield this rank's share
    of an infinite index stream that depends only on their seed, and start it over at every `iter()`. On resume
    `DistillTrainer` sets `start` to the number of indices this rank read before the checkpoint, so the resumed
    run reads the images the uninterrupted run would have read next (`start` 0: the stock stream).
    """

    def __init__(self, sampler: Sampler):
        self.sampler = sampler
        self.start = 0

    def __iter__(self) -> Iterator[int]:
        return itertools.islice(iter(self.sampler), self.start, None)


class DistillTrainer(DefaultTrainer):
    """Trains `DistillRCNN` (or any stock model) with the standard Detectron2 loop.

    The teacher is built and loaded in `__init__`, so a bad teacher fails before the first
    iteration; evaluation uses COCOEvaluator on the student. Checkpoints (MODEL.WEIGHTS, resume, periodic
    saves) go through `SafeDetectionCheckpointer`. After a non-finite loss or non-finite weights, training
    stops with a FloatingPointError that names the resume point, the last checkpoint with finite weights.
    A resume continues the data stream and the random draws where the checkpoint left them
    (`state_dict`, `load_state_dict`), and evaluation leaves the RNGs untouched (`test`).
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

    def state_dict(self) -> dict[str, Any]:
        """DefaultTrainer's state plus this process's python, numpy, torch (and CUDA) RNG states, as tensors,
        numbers and plain containers (checkpoints are read weights-only): the draws after the checkpoint
        (RPN/ROI subsampling, the mapper's flips and resizes) then repeat on resume."""
        state = super().state_dict()
        state["rng"] = rng_state()
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """DefaultTrainer's resume, continued where the checkpoint was written: the sampler skips the images
        already read (this rank's share of (iteration + 1) x SOLVER.IMS_PER_BATCH) and the RNG states are
        restored, so the resumed run equals the uninterrupted one bit for bit.

        Limits (the first three are logged when they apply): with DATALOADER.NUM_WORKERS > 0 the workers are
        started again and reseeded, so the mapper's random flips and resizes after the resume differ; with
        several processes only rank 0's RNG states are in the checkpoint, so none are restored; an
        IterableDataset has no sampler to skip; and AspectRatioGroupedDataset holds images of the other
        orientation back in its buckets, so with mixed aspect ratios the images read are not exactly the ones
        skipped. The sampler's seed is drawn from numpy's RNG when the trainer is built: SEED must be >= 0 (or
        numpy seeded alike) for the resumed run to read the same stream.
        """
        super().load_state_dict(state_dict)
        self._continue_data_stream(images_read=(self.iter + 1) * self.cfg.SOLVER.IMS_PER_BATCH)
        if "rng" not in state_dict:
            logger.warning("The checkpoint holds no RNG states: the resumed run's random draws differ")
        elif comm.get_world_size() > 1:
            logger.warning("RNG states are not restored with several processes: the checkpoint holds rank 0's only")
        else:
            set_rng_state(state_dict["rng"])
        if self.cfg.DATALOADER.NUM_WORKERS > 0:
            logger.warning("DATALOADER.NUM_WORKERS > 0: the restarted data loader workers are reseeded, so the "
                           "mapper's random augmentations differ from an uninterrupted run")

    def _continue_data_stream(self, images_read: int) -> None:
        """Start the sampler after this rank's share of the `images_read` images."""
        sampler = getattr(self.data_loader, "resumable_sampler", None)
        if sampler is None:
            logger.warning("The training data has no resumable sampler: the resumed run reads it from the start")
        else:
            sampler.start = images_read // comm.get_world_size()

    def train(self) -> dict[str, Any] | None:
        """Train and return the evaluation that Detectron2's EvalHook runs after the last iteration (the result
        of `test`; None when DATASETS.TEST is empty), which DefaultTrainer itself returns only with
        TEST.EXPECTED_RESULTS set. A FloatingPointError (Detectron2's non-finite loss check, or non-finite
        weights at a checkpoint) is re-raised with the checkpoint to resume from."""
        try:
            super().train()
        except FloatingPointError as err:
            raise FloatingPointError(f"{err}\n{self.checkpointer.resume_point()}") from err
        return getattr(self, "_last_eval_results", None) or None  # set by DefaultTrainer's evaluation hook

    @classmethod
    def build_train_loader(cls, cfg: CfgNode):
        """Detectron2's training loader, its sampler wrapped in a `ResumableSampler` (the loader's
        `resumable_sampler`; None for an IterableDataset, which has no sampler).

        With SEED >= 0 the torch DataLoader gets its own generator, seeded with SEED + rank: otherwise opening
        it draws from the global torch RNG at the first iteration, a draw a resumed run would make at another
        point of the RNG stream. That generator also seeds the DATALOADER.NUM_WORKERS workers.
        """
        kwargs = build_detection_train_loader.from_config(cfg)
        sampler = None if kwargs["sampler"] is None else ResumableSampler(kwargs["sampler"])
        seed = cfg.SEED + comm.get_rank() if cfg.SEED >= 0 else None
        loader = build_detection_train_loader(**{**kwargs, "sampler": sampler}, seed=seed)
        loader.resumable_sampler = sampler
        return loader

    @classmethod
    def test(cls, cfg: CfgNode, model, evaluators=None):
        """Detectron2's evaluation, with the RNG states restored afterwards. Evaluation itself draws nothing,
        but opening the test loader draws from torch's RNG: a periodic evaluation (TEST.EVAL_PERIOD) would
        otherwise change the training after it, and a run resumed from a checkpoint written just before it
        would not repeat the uninterrupted one."""
        state = rng_state()
        try:
            return super().test(cfg, model, evaluators)
        finally:
            set_rng_state(state)

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
