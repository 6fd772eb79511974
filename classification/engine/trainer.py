"""Training and evaluation of one classification run (student, frozen teacher, distiller).

Per epoch: train with the distiller's update rule, step every LR schedule, evaluate the student on the test
split (top-1/5, cross-entropy and the KD loss to the teacher's test logits) and on the validation split held out
of the training set (DATASET.VAL_SIZE > 0), write `last.pth` (everything needed to resume) atomically and
rewrite `metrics.csv`. The selected epoch's student weights go to `best_student.pth`: selected on validation
top-1 when a validation split exists, else (optimistically) on test top-1. After the last epoch `summary.json`
records the selected epoch with its validation and test top-1, and the best-test-epoch (optimistic) and
last-epoch top-1/top-5. `--resume` continues from `last.pth` with every network, optimizer, schedule, RNG state and the
best accuracy restored, so the run ends with the numbers an uninterrupted run gives. With TRAIN.CHECKPOINT_PERIOD
= k > 0, last.pth is also written every k training steps inside an epoch (an ImageNet epoch is hours), holding
the epoch's position (steps done, the running loss sums and hit counts); `--resume` then continues at the next
batch of that epoch, with the same order and augmentation, and ends as the uninterrupted run does.

An output folder belongs to one run (`unikd.core.run_dir.claim_output_dir`): a new run into a folder that
holds a run is refused unless it resumes it or overwrites it, and a second concurrent run is refused. A resumed
run may change only RESUME_MAY_CHANGE (more epochs, a new LR, where and how visibly it runs); each change is
logged and recorded in `last.pth`, `summary.json` and as comments at the top of `config.yaml`.
"""
from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm import tqdm
from yacs.config import CfgNode

from unikd.core import kd_loss
from unikd.core.checks import check_resume_changes, resume_note
from unikd.core.distributed import World, barrier, current_world, gather_by_index
from unikd.core.rng import rng_state, set_rng_state
from unikd.core.run_dir import atomic_write_text, claim_output_dir

from ..config import RESUME_MAY_CHANGE, get_cfg, load_cfg
from ..data import DataBundle, build_data
from ..distillers import Distiller, get_distiller_class
from ..models import build_model
from ..models.external import load_safetensors
from .checkpoint import FORMAT, atomic_save, load_network, read_checkpoint
from .metrics import AccuracyMeter, write_metrics_csv
from .optim import build_optimizers, set_base_lr
from .runtime import autocast_factory, compile_networks, resolve_device, seed_everything, use_channels_last

logger = logging.getLogger("classification")

LAST = "last.pth"
BEST = "best_student.pth"
SUMMARY = "summary.json"
CONFIG = "config.yaml"
METRICS = "metrics.csv"
# Everything a run writes into OUTPUT_DIR: any of them marks the folder as holding a run, and --overwrite
# deletes exactly these.
RUN_FILES = (LAST, BEST, SUMMARY, METRICS, CONFIG, "tensorboard")
# Temperature of the test KD loss logged every evaluated epoch (the UniKD paper's Fig. 3 uses T = 4).
TEST_KD_TEMPERATURE = 4.0


def load_weights(model: nn.Module, path: str | Path, arch: str, num_classes: int) -> nn.Module:
    """Load the weights file `path` into `model`: a .safetensors file, or anything `load_network` reads."""
    if Path(path).suffix == ".safetensors":
        return load_safetensors(model, path, arch)
    return load_network(model, path, arch, num_classes)


def load_named_teacher(cfg: CfgNode, num_classes: int, family: str) -> nn.Module | None:
    """The teacher cfg names (MODEL.TEACHER loaded from MODEL.TEACHER_CHECKPOINT), or None when it names none."""
    if not cfg.MODEL.TEACHER or not cfg.MODEL.TEACHER_CHECKPOINT:
        return None
    teacher = build_model(cfg.MODEL.TEACHER, num_classes, family)
    return load_weights(teacher, cfg.MODEL.TEACHER_CHECKPOINT, cfg.MODEL.TEACHER, num_classes)


def build_student(cfg: CfgNode, num_classes: int, family: str) -> nn.Module:
    """MODEL.STUDENT, from its library's pretrained weights (MODEL.PRETRAINED) or MODEL.STUDENT_WEIGHTS if set."""
    student = build_model(cfg.MODEL.STUDENT, num_classes, family, pretrained=cfg.MODEL.PRETRAINED)
    if not cfg.MODEL.STUDENT_WEIGHTS:
        return student
    return load_weights(student, cfg.MODEL.STUDENT_WEIGHTS, cfg.MODEL.STUDENT, num_classes)


def build_teacher(cfg: CfgNode, num_classes: int, family: str) -> nn.Module | None:
    """The teacher of MODEL.TEACHER loaded from MODEL.TEACHER_CHECKPOINT, or None for the vanilla distiller."""
    if not get_distiller_class(cfg.DISTILLER.NAME).NEEDS_TEACHER:
        return None
    teacher = load_named_teacher(cfg, num_classes, family)
    if teacher is None:
        raise ValueError(
            f"distiller {cfg.DISTILLER.NAME!r} needs MODEL.TEACHER (an architecture) and MODEL.TEACHER_CHECKPOINT "
            "(a file written by `train` with DISTILLER.NAME vanilla, or a state dict)"
        )
    return teacher


def check_finite(losses: dict[str, Tensor]) -> Tensor:
    """The summed loss of one step; FloatingPointError listing every term when it is not finite.

    Called after every step, so a divergence is reported at the step where it first appears: one host read
    of one scalar (its cost is within noise in `bench --speed`, which times it as part of every step).
    """
    total = sum(losses.values())
    if not bool(torch.isfinite(torch.as_tensor(total))):
        terms = ", ".join(f"{k}={float(v):.4g}" for k, v in losses.items())
        raise FloatingPointError(f"non-finite loss {float(total)} ({terms})")
    return total


@torch.no_grad()
def predict(model: nn.Module, loader: Any, channels_last: bool, autocast: Any, world: World = World()
            ) -> tuple[Tensor, Tensor]:
    """(float32 logits, targets) of `model` (returns logits or a ModelOutput) over `loader`, in the data set's
    order, in eval mode. In a distributed run each rank predicts its share and every rank gets all of them
    (`gather_by_index`: each image once)."""
    was_training = model.training
    model.eval()
    logits, targets, indices = [], [], []
    for images, labels, index in loader:
        if channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        with autocast():
            out = model(images)
        logits.append((out if isinstance(out, Tensor) else out.logits).float())
        targets.append(labels)
        indices.append(index)
    model.train(was_training)
    logits, targets, indices = torch.cat(logits), torch.cat(targets), torch.cat(indices)
    if not world.distributed:
        return logits, targets
    return gather_by_index(logits, indices, world)[0], gather_by_index(targets, indices, world)[0]


def score(logits: Tensor, targets: Tensor, teacher_logits: Tensor | None = None) -> dict[str, float]:
    """Top-1/top-5 (percent) and mean cross-entropy of `logits`; with the teacher's logits of the same images,
    also `kd`, the teacher-student KD loss at T = TEST_KD_TEMPERATURE (the UniKD paper's Fig. 3 curve)."""
    meter = AccuracyMeter()
    meter.update(logits, targets)
    result = {**meter.result(), "ce": float(F.cross_entropy(logits, targets))}
    if teacher_logits is not None:
        result["kd"] = float(kd_loss(logits, teacher_logits, TEST_KD_TEMPERATURE))
    return result


def evaluate(model: nn.Module, loader: Any, channels_last: bool, autocast: Any,
             teacher_logits: Tensor | None = None, world: World = World()) -> dict[str, float]:
    """`score` of `model`'s predictions over `loader` (over every rank's share in a distributed run)."""
    return score(*predict(model, loader, channels_last, autocast, world), teacher_logits)


class Trainer:
    """One run of cfg: build everything, then `train()`; `resume=True` continues from OUTPUT_DIR/last.pth.

    The output folder is locked for the run when the Trainer is built (and released when `train()` ends):
    a folder that holds another run's files is refused unless `resume` or `overwrite` (which deletes them).
    In a distributed run (unikd.core.distributed) rank 0 claims the folder, writes every file and logs; each
    rank trains on its share of every batch, and every rank resumes from the same last.pth.
    """

    def __init__(self, cfg: CfgNode, resume: bool = False, data: DataBundle | None = None,
                 overwrite: bool = False) -> None:
        self.cfg = cfg
        self.output_dir = Path(cfg.OUTPUT_DIR)
        self.world = current_world()
        if self.world.is_main:
            self._lock = claim_output_dir(self.output_dir, RUN_FILES, resume, overwrite)
        else:
            self._lock = _NoLock()
            logger.setLevel(logging.WARNING)  # rank 0 speaks for the run
        barrier(self.world)  # no rank reads the folder before rank 0 has claimed (or cleared) it
        try:
            self._build(resume, data)
        except BaseException:
            self._lock.release()
            raise

    def _build(self, resume: bool, data: DataBundle | None) -> None:
        cfg = self.cfg
        self.device = resolve_device(cfg.TRAIN.DEVICE)
        if self.world.distributed and self.device.type == "cuda":
            self.device = torch.device("cuda", self.world.local_rank)
        seed_everything(cfg.TRAIN.SEED, cfg.TRAIN.DETERMINISTIC)
        self.data = data if data is not None else build_data(cfg, self.device, self.world)
        num_classes, family = self.data.num_classes, self.data.family
        student = build_student(cfg, num_classes, family)
        distiller_cls = get_distiller_class(cfg.DISTILLER.NAME)
        teacher = build_teacher(cfg, num_classes, family)
        self.distiller: Distiller = distiller_cls.from_config(
            cfg, student, teacher, num_classes, family, train_labels=self.data.train_labels
        )
        # The teacher the test KD loss and teacher_top1 refer to: the distiller's, or the one a run without
        # distillation names (a bench grid's vanilla cells name their pair's teacher), evaluated only.
        self.reference_teacher = self.distiller.teacher
        if self.reference_teacher is None and (named := load_named_teacher(cfg, num_classes, family)) is not None:
            self.reference_teacher = named.to(self.device).eval().requires_grad_(False)
        self.teacher_test_logits: Tensor | None = None
        self.channels_last = use_channels_last(cfg, self.device)
        self.distiller.to(self.device)
        if self.channels_last:
            self.distiller.to(memory_format=torch.channels_last)
        if self.world.distributed:
            self._parallelize()
        if cfg.TRAIN.COMPILE:
            compile_networks(self.distiller.networks())
        self.autocast, needs_scaler = autocast_factory(cfg, self.device)
        scaler = torch.amp.GradScaler("cuda") if needs_scaler else None
        self.optimizers, self.schedulers = build_optimizers(
            self.distiller.optimizer_param_groups(), cfg.SOLVER, scaler
        )
        self.epoch = 0
        # Where inside epoch self.epoch + 1 the run stands: {"step": steps done, "sums": loss sums, "meter":
        # AccuracyMeter state, "seconds": time spent}, or None at an epoch boundary (TRAIN.CHECKPOINT_PERIOD).
        self.partial_epoch: dict[str, Any] | None = None
        # The best test epoch (optimistic: chosen on the test split) and the epoch selected for best_student.pth:
        # on validation top-1 when DATASET.VAL_SIZE > 0, else the best test epoch.
        self.best = {"top1": -1.0, "top5": 0.0, "epoch": 0}
        self.selected: dict[str, Any] = {"val_top1": None, "test_top1": None, "test_top5": None, "epoch": 0}
        self.history: list[dict[str, float]] = []
        self.teacher_accuracy: dict[str, float] | None = None
        # One entry per resume that changed values: {"epoch": resumed after, "changes": {key: [old, new]}}.
        self.config_changes: list[dict[str, Any]] = []
        if resume:
            self._resume()

    def _parallelize(self) -> None:
        """The distiller's trainable modules in DDP (with TRAIN.SYNC_BN, the student's BatchNorm over the global
        batch: SyncBatchNorm, which PyTorch runs on CUDA only)."""
        if self.cfg.TRAIN.SYNC_BN:
            if self.device.type != "cuda":
                raise ValueError("TRAIN.SYNC_BN needs CUDA (PyTorch's SyncBatchNorm runs on GPUs only)")
            self.distiller.student = nn.SyncBatchNorm.convert_sync_batchnorm(self.distiller.student)
        self.distiller.parallelize([self.device.index] if self.device.type == "cuda" else None)

    # -- checkpoints ---------------------------------------------------------------------------------
    def _checkpoint(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "arch": self.cfg.MODEL.STUDENT,
            "num_classes": self.data.num_classes,
            "distiller": self.cfg.DISTILLER.NAME,
            "epoch": self.epoch,
            "partial_epoch": self.partial_epoch,
            "model": self.distiller.trainable_state_dict(),
            "optimizers": self.optimizers.state_dict(),
            "schedulers": {n: s.state_dict() for n, s in self.schedulers.items()},
            "best": self.best,
            "selected": self.selected,
            "history": self.history,
            "teacher_accuracy": self.teacher_accuracy,
            "rng": rng_state(),
            "config": self.cfg.dump(),
            "config_changes": self.config_changes,
        }

    def _resume(self) -> None:
        path = self.output_dir / LAST
        if not path.is_file():
            logger.info("no %s to resume from; starting from epoch 1", path)
            return
        state = read_checkpoint(path, "this run's last.pth, written by `python -m classification train`")
        if (state.get("arch"), state.get("distiller")) != (self.cfg.MODEL.STUDENT, self.cfg.DISTILLER.NAME):
            raise ValueError(
                f"{path} was written by a {state.get('distiller')} run of {state.get('arch')}, not by this "
                f"{self.cfg.DISTILLER.NAME} run of {self.cfg.MODEL.STUDENT}; use another OUTPUT_DIR"
            )
        changes = self._resume_changes(path, state["config"])
        self.distiller.load_trainable_state_dict(state["model"])
        self.optimizers.load_state_dict(state["optimizers"])
        for name, scheduler in self.schedulers.items():
            scheduler.load_state_dict(state["schedulers"][name])
        self.epoch, self.best, self.history = state["epoch"], state["best"], state["history"]
        self.partial_epoch = state.get("partial_epoch")  # absent from checkpoints of earlier versions
        self.selected = state.get("selected", self._selected_from_best())  # absent from earlier checkpoints
        self.teacher_accuracy = state["teacher_accuracy"]
        self.config_changes = state.get("config_changes", [])  # absent from checkpoints of earlier versions
        set_rng_state(state["rng"])
        position = f" and step {self.partial_epoch['step']} of epoch {self.epoch + 1}" if self.partial_epoch else ""
        logger.info("resumed from %s after epoch %d%s (best top-1 %.2f)", path, self.epoch, position,
                    self.best["top1"])
        if changes:
            self._apply_changes(changes)

    def _resume_changes(self, path: Path, saved_config: str) -> dict[str, tuple]:
        """The values this resume changes; ValueError listing every changed key outside RESUME_MAY_CHANGE (a key
        the saved config lacks, an option added since the run started, counts at its default)."""
        return check_resume_changes(saved_config, self.cfg, RESUME_MAY_CHANGE, str(path), str(self.output_dir / CONFIG),
                                    defaults=get_cfg())

    def _apply_changes(self, changes: dict[str, tuple]) -> None:
        """Apply a resume's allowed changes (a new SOLVER.LR to every optimizer and schedule) and record them."""
        if "SOLVER.LR" in changes:
            set_base_lr(self.optimizers, self.schedulers, self.cfg.SOLVER.LR)
        self.config_changes.append({"epoch": self.epoch, "changes": {k: list(v) for k, v in changes.items()}})
        for key, (old, new) in changes.items():
            logger.warning("resume after epoch %d changes %s from %r to %r", self.epoch, key, old, new)

    def _save(self, selected: bool) -> None:
        """Write best_student.pth (when this epoch is the selected one) before last.pth, which names that epoch
        as selected; then config.yaml, so that it always describes the run whose state last.pth holds (an attempt
        that fails before its first save, a diverged one say, leaves the folder's config.yaml as it was)."""
        if selected:
            student = self.distiller.student.state_dict()
            atomic_save(
                {
                    "format": FORMAT,
                    "arch": self.cfg.MODEL.STUDENT,
                    "num_classes": self.data.num_classes,
                    "epoch": self.epoch,
                    "model": {f"student.{k}": v for k, v in student.items()},
                },
                self.output_dir / BEST,
            )
        self._save_last()

    def _save_last(self) -> None:
        """Write last.pth, then config.yaml and metrics.csv (at an epoch's end or, mid-epoch, at its position)."""
        atomic_save(self._checkpoint(), self.output_dir / LAST)
        atomic_write_text(self._config_text(), self.output_dir / CONFIG)
        write_metrics_csv(self.history, self.output_dir / METRICS)

    def _config_text(self) -> str:
        """config.yaml: this run's config, headed by comments listing the values each resume changed."""
        lines = [resume_note(f"after epoch {entry['epoch']}", entry["changes"]) for entry in self.config_changes]
        return "".join(f"{line}\n" for line in lines) + self.cfg.dump()

    # -- training ------------------------------------------------------------------------------------
    def _train_epoch(self) -> dict[str, float]:
        """Train the rest of epoch self.epoch + 1 (all of it, unless a mid-epoch checkpoint was resumed) and return
        its mean training losses and top-1; with TRAIN.CHECKPOINT_PERIOD k, write last.pth every k steps."""
        loader, partial, period = self.data.train, self.partial_epoch or {}, self.cfg.TRAIN.CHECKPOINT_PERIOD
        first = partial.get("step", 0)
        loader.set_epoch(self.epoch, first)
        self.distiller.train()
        meter, sums, steps = AccuracyMeter(), dict(partial.get("sums", {})), len(loader)
        if partial:
            meter.load_state_dict(partial["meter"])
        started = time.perf_counter() - partial.get("seconds", 0.0)
        bar = tqdm(loader, total=steps, initial=first, desc=f"epoch {self.epoch + 1}/{self.cfg.SOLVER.EPOCHS}",
                   disable=not self.cfg.TRAIN.PROGRESS, leave=False, mininterval=2.0)
        for i, (images, targets, indices) in enumerate(bar, start=first):
            if self.channels_last:
                images = images.contiguous(memory_format=torch.channels_last)
            logits, losses = self.distiller.train_step(
                images, targets, self.epoch + i / steps, self.optimizers, self.autocast, indices
            )
            self.optimizers.end_iteration()
            meter.update(logits, targets)
            for name, value in losses.items():
                sums[name] = sums.get(name, 0.0) + value.float()
            try:
                total = check_finite(losses)
            except FloatingPointError as err:
                raise FloatingPointError(f"{err} at epoch {self.epoch + 1}, step {i + 1} of {steps}; "
                                         + self._rescue_hint()) from None
            if i % 50 == 0 or i == steps - 1:
                bar.set_postfix(loss=f"{float(total):.3f}")
            if period and (i + 1) % period == 0 and i + 1 < steps:
                self.partial_epoch = {"step": i + 1, "sums": dict(sums), "meter": meter.state_dict(),
                                      "seconds": time.perf_counter() - started}
                if self.world.is_main:
                    self._save_last()
        self.partial_epoch = None
        means = {f"train_{k}": float(v) / steps for k, v in sums.items()}
        return {**means, "train_top1": meter.result()["top1"], "seconds": time.perf_counter() - started}

    def _rescue_hint(self) -> str:
        if self.epoch == 0:
            return "nothing was saved; start again with a smaller SOLVER.LR"
        return (f"{self.output_dir / LAST} still holds epoch {self.epoch}, from before the divergence; rescue the "
                "run with --resume and a smaller SOLVER.LR")

    def _evaluate_teacher(self) -> None:
        """The reference teacher's test logits (once per process: the test KD loss of every epoch needs them)
        and its test accuracy."""
        if self.reference_teacher is None:
            return
        logits, targets = predict(self.reference_teacher, self.data.test, self.channels_last, self.autocast,
                                  self.world)
        self.teacher_test_logits = logits
        if self.teacher_accuracy is None:
            self.teacher_accuracy = {k: v for k, v in score(logits, targets).items() if k != "ce"}
            logger.info("teacher %s: test top-1 %.2f", self.cfg.MODEL.TEACHER, self.teacher_accuracy["top1"])

    def _evaluate_epoch(self, row: dict[str, float]) -> bool:
        """Score the student on the test (and validation) split into `row`; update the best test epoch and the
        selected epoch; True when the selected epoch is this one (best_student.pth must be rewritten)."""
        student = self.distiller.student
        test = evaluate(student, self.data.test, self.channels_last, self.autocast, self.teacher_test_logits,
                        self.world)
        row.update({f"test_{k}": v for k, v in test.items()})
        if test["top1"] > self.best["top1"]:
            self.best = {"top1": test["top1"], "top5": test["top5"], "epoch": self.epoch}
        if self.data.val is None:
            selected = self.best["epoch"] == self.epoch
            if selected:
                self.selected = self._selected_from_best()
            return selected
        val = evaluate(student, self.data.val, self.channels_last, self.autocast, world=self.world)
        row.update({"val_top1": val["top1"], "val_ce": val["ce"]})
        selected = self.selected["val_top1"] is None or val["top1"] > self.selected["val_top1"]
        if selected:
            self.selected = {"val_top1": val["top1"], "test_top1": test["top1"], "test_top5": test["top5"],
                             "epoch": self.epoch}
        return selected

    def _selected_from_best(self) -> dict[str, Any]:
        """The selection when no validation split exists: the best test epoch."""
        return {"val_top1": None, "test_top1": self.best["top1"], "test_top5": self.best["top5"],
                "epoch": self.best["epoch"]}

    def train(self) -> dict[str, Any]:
        """Train the remaining epochs and return the summary (also written to OUTPUT_DIR/summary.json)."""
        try:
            return self._train()
        finally:
            self._lock.release()

    def _train(self) -> dict[str, Any]:
        self._evaluate_teacher()
        writer = _tensorboard(self.cfg, self.output_dir) if self.world.is_main else None
        total = self.cfg.SOLVER.EPOCHS
        while self.epoch < total:
            lr = self.optimizers.optimizers["student"].param_groups[0]["lr"]
            row: dict[str, float] = {"epoch": self.epoch + 1, "lr": lr, **self._train_epoch()}
            start = time.perf_counter() - row.pop("seconds")
            for scheduler in self.schedulers.values():
                scheduler.step()
            self.epoch += 1
            selected = False
            if self.epoch % self.cfg.TRAIN.EVAL_PERIOD == 0 or self.epoch == total:
                selected = self._evaluate_epoch(row)
            row["seconds"] = time.perf_counter() - start
            self.history.append(row)
            if self.world.is_main:
                self._save(selected)
            if writer is not None:
                for key, value in row.items():
                    if key != "epoch":
                        writer.add_scalar(key, value, self.epoch)
            logger.info("epoch %d/%d  %s", self.epoch, total,
                        "  ".join(f"{k}={v:.4g}" for k, v in row.items() if k != "epoch"))
        if writer is not None:
            writer.close()
        return self._write_summary()

    def _write_summary(self) -> dict[str, Any]:
        last = next(row for row in reversed(self.history) if "test_top1" in row) if self.history else {}
        summary = {
            "student": self.cfg.MODEL.STUDENT,
            "teacher": self.cfg.MODEL.TEACHER if self.reference_teacher is not None else "",
            "distiller": self.cfg.DISTILLER.NAME,
            "seed": self.cfg.TRAIN.SEED,
            "epochs": self.epoch,
            "num_train": self.data.num_train,
            "best_top1": self.best["top1"],
            "best_top5": self.best["top5"],
            "best_epoch": self.best["epoch"],
            "selected_on": "val" if self.data.val is not None else "test",
            "selected_epoch": self.selected["epoch"],
            "val_top1": self.selected["val_top1"],
            "test_top1_selected": self.selected["test_top1"],
            "test_top5_selected": self.selected["test_top5"],
            "last_top1": last.get("test_top1"),
            "last_top5": last.get("test_top5"),
            "teacher_top1": (self.teacher_accuracy or {}).get("top1"),
            "train_seconds": sum(row["seconds"] for row in self.history),
            "config_changes": self.config_changes,
        }
        if self.world.is_main:
            atomic_write_text(json.dumps(summary, indent=2), self.output_dir / SUMMARY)
        return summary


def train_run(config: str | None, opts: list[str], resume: bool, overwrite: bool) -> None:
    """One process of `python -m classification train` (every rank of a distributed run: a module-level function,
    so that spawned workers can import it): build the Trainer, train, and print the summary on rank 0."""
    summary = Trainer(load_cfg(config, opts), resume=resume, overwrite=overwrite).train()
    if current_world().is_main:
        print(json.dumps(summary, indent=2))


class _NoLock:
    """What a rank other than 0 holds instead of the output folder's lock (rank 0 holds it for the run)."""

    def release(self) -> None:
        pass


def _tensorboard(cfg: CfgNode, output_dir: Path) -> Any:
    """A SummaryWriter when TRAIN.TENSORBOARD is on and tensorboard is installed, else None."""
    if not cfg.TRAIN.TENSORBOARD:
        return None
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        logger.info("tensorboard is not installed; metrics go to metrics.csv only")
        return None
    return SummaryWriter(str(output_dir / "tensorboard"))
