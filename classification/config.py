"""Experiment configuration: yacs defaults in Detectron2's style, merged with a YAML file and KEY VALUE pairs.

Every distillation term owns its sub-node (``KD``, ``DKD``, ``UNIKD``, ...), generated from its options
dataclass with the classification preset (`unikd.terms.options_node`); the distillers that are not terms
(``HYBRID``, ``SLKD``) give their node's defaults themselves. Adding a method never touches this file.
"""
from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from yacs.config import CfgNode as CN

from unikd.core.checks import COMMON_VALUE_RULES, ValueRule, check_config_values
from unikd.core.files import read_yaml

from unikd.terms import options_node, registered_terms

from .distillers.base import named_distillers
from .distillers.terms import TASK
from .models import split_library_name


@dataclass(frozen=True)
class BoundedRule(ValueRule):
    """A ValueRule with an exclusive upper bound too (momenta must stay below 1)."""

    maximum: float = float("inf")

    def describe(self) -> str:
        return f"{super().describe()} and < {self.maximum:g}"

    def allows(self, value: float) -> bool:
        return super().allows(value) and value < self.maximum


# Bounds of the classification keys, checked (first matching pattern wins) ahead of the shared ones.
CLS_VALUE_RULES: tuple[ValueRule, ...] = (
    ValueRule("SOLVER.LR", 0.0, warn_at=0.0),
    BoundedRule("SOLVER.MOMENTUM", 0.0, maximum=1.0),
    ValueRule("SOLVER.GAMMA", 0.0, strict=True),
    ValueRule("SOLVER.MILESTONES", 0.0),
    ValueRule("TRAIN.EVAL_PERIOD", 1.0),
    ValueRule("TRAIN.CHECKPOINT_PERIOD", 0.0),
    ValueRule("TRAIN.SEED", 0.0),
    ValueRule("DATASET.SUBSET_SEED", 0.0),
    ValueRule("DATASET.TRAIN_SUBSET", 0.0),
    ValueRule("DATASET.VAL_SIZE", 0.0),
    ValueRule("DATASET.VAL_SEED", 0.0),
    ValueRule("DATASET.NUM_WORKERS", 0.0),
    ValueRule("DATASET.IMAGE_SIZE", 1.0),
    ValueRule("DATASET.SYNTHETIC.*", 1.0),
    ValueRule("SLKD.NUM_SLT", 1.0),
    ValueRule("UNIKD.NUM_LEVELS", 0.0),
    ValueRule("CRD.NCE_K", 1.0),
    ValueRule("CRD.FEAT_DIM", 1.0),
    BoundedRule("CRD.NCE_MOMENTUM", 0.0, maximum=1.0),
)

# Keys that only say where and how visibly a run executes: they never change its numbers.
RUN_ENVIRONMENT_KEYS = frozenset({
    "OUTPUT_DIR", "DATASET.ROOT", "DATASET.NUM_WORKERS", "TRAIN.DEVICE", "TRAIN.PROGRESS", "TRAIN.TENSORBOARD",
    "TRAIN.CHECKPOINT_PERIOD",
})
# What `--resume` may change besides those: more epochs extend a run, a new LR rescues a diverged one.
RESUME_MAY_CHANGE = RUN_ENVIRONMENT_KEYS | {"SOLVER.EPOCHS", "SOLVER.LR"}


def _base_defaults() -> CN:
    cfg = CN()
    cfg.MODEL = CN()
    cfg.MODEL.STUDENT = "resnet8x4"  # a zoo name, or timm:<name> / torchvision:<name> (models/external.py)
    # Teacher architecture and checkpoint (a file written by `train` with DISTILLER.NAME vanilla, a plain state
    # dict, timm's or torchvision's weights, or a .safetensors file). Unused by the vanilla distiller.
    cfg.MODEL.TEACHER = ""
    cfg.MODEL.TEACHER_CHECKPOINT = ""
    # The student's starting weights, a file as TEACHER_CHECKPOINT ("": its own initialisation).
    cfg.MODEL.STUDENT_WEIGHTS = ""
    # timm:/torchvision: students start from their library's pretrained weights (downloaded: needs network).
    cfg.MODEL.PRETRAINED = False

    cfg.DATASET = CN()
    cfg.DATASET.NAME = "cifar100"  # cifar100 | imagenet | image_folder | fashion_mnist | synthetic
    cfg.DATASET.ROOT = "datasets"
    # Train on a class-balanced random subset of this many images (0: the whole training split).
    cfg.DATASET.TRAIN_SUBSET = 0
    cfg.DATASET.SUBSET_SEED = 0
    # Hold out this many class-balanced training images as a validation split (fixed by VAL_SEED alone, disjoint
    # from the training subset). When > 0, every evaluation also scores it and the run selects its epoch
    # (best_student.pth, summary.json's selected_epoch) on validation top-1, never on the test split.
    cfg.DATASET.VAL_SIZE = 0
    cfg.DATASET.VAL_SEED = 0
    cfg.DATASET.NUM_WORKERS = 4  # image-folder (imagenet, image_folder) loader workers; the in-memory sets need none
    # image_folder and imagenet: the side of the square crops the model sees (random-resized crop for training,
    # resize to 256/224 of it and centre crop for evaluation); up to 64 selects the CIFAR model family, larger
    # sizes the ImageNet one.
    cfg.DATASET.IMAGE_SIZE = 224
    # image_folder and imagenet: skip images PIL cannot read (and log how many) instead of refusing the run.
    cfg.DATASET.SKIP_BAD_IMAGES = False
    cfg.DATASET.SYNTHETIC = CN()
    cfg.DATASET.SYNTHETIC.NUM_CLASSES = 10
    cfg.DATASET.SYNTHETIC.NUM_TRAIN = 256
    cfg.DATASET.SYNTHETIC.NUM_TEST = 64
    cfg.DATASET.SYNTHETIC.IMAGE_SIZE = 32

    cfg.SOLVER = CN()
    cfg.SOLVER.EPOCHS = 240
    cfg.SOLVER.BATCH_SIZE = 64
    cfg.SOLVER.TEST_BATCH_SIZE = 256
    cfg.SOLVER.LR = 0.05
    cfg.SOLVER.MOMENTUM = 0.9
    cfg.SOLVER.WEIGHT_DECAY = 5e-4
    cfg.SOLVER.NESTEROV = False
    cfg.SOLVER.MILESTONES = [150, 180, 210]
    cfg.SOLVER.GAMMA = 0.1

    cfg.DISTILLER = CN()
    cfg.DISTILLER.NAME = "vanilla"

    cfg.TRAIN = CN()
    cfg.TRAIN.SEED = 0
    # Deterministic algorithms (and no cudnn autotuning): bit-identical resumes at some speed cost.
    cfg.TRAIN.DETERMINISTIC = False
    cfg.TRAIN.DEVICE = "auto"  # auto | cpu | cuda | cuda:N
    cfg.TRAIN.AMP = True  # only on CUDA; bfloat16 when supported, else float16 with a grad scaler
    cfg.TRAIN.CHANNELS_LAST = True  # on CUDA and on the CPU (faster convolutions on both)
    cfg.TRAIN.TENSORBOARD = True  # when the tensorboard package is installed
    cfg.TRAIN.PROGRESS = True  # tqdm progress bar per epoch
    cfg.TRAIN.EVAL_PERIOD = 1  # epochs between test evaluations (the last epoch is always evaluated)
    # Training steps between mid-epoch checkpoints (last.pth with the epoch's position; --resume continues at the
    # next batch exactly); 0: only at the end of each epoch.
    cfg.TRAIN.CHECKPOINT_PERIOD = 0
    # Run the student, the teacher (and SLKD's SL-Ts) through torch.compile; the loss terms stay eager. Compiled
    # kernels may round differently from eager ones, so a run keeps the setting it started with.
    cfg.TRAIN.COMPILE = False
    # Fold the frozen teacher's BatchNorms into the convolutions before them (the same outputs up to float rounding,
    # a faster teacher forward); False runs the teacher as built.
    cfg.TRAIN.FOLD_TEACHER_BN = True
    # Distributed CUDA runs: BatchNorm statistics over the global batch (SyncBatchNorm) instead of each rank's share.
    cfg.TRAIN.SYNC_BN = False
    cfg.OUTPUT_DIR = "output/classification"
    return cfg


def get_cfg() -> CN:
    """A fresh copy of every default: each registered term's node (its options with the classification
    preset) and the nodes of the distillers that are not terms."""
    cfg = _base_defaults()
    for name, term in registered_terms().items():
        cfg[name.upper()] = options_node(term.Options, TASK)
    for distiller in named_distillers().values():
        node = distiller.CONFIG_NODE
        if node is not None and node not in cfg:
            cfg[node] = distiller.default_config()
    return cfg


def _ints_as_floats(defaults: CN, content: dict) -> dict:
    """Turn integers given for float keys into floats (yacs would reject `WARMUP: 20` for a float key)."""
    out = {}
    for key, value in content.items():
        default = defaults.get(key) if isinstance(defaults, CN) else None
        if isinstance(value, dict) and isinstance(default, CN):
            value = _ints_as_floats(default, value)
        elif isinstance(default, float) and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        out[key] = value
    return out


def _literal(text: str) -> Any:
    """A Python literal when `text` is one (3, 0.1, 1e-4, [1, 2], False), else the text itself, as yacs does."""
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def _opts_as_dict(opts: list[str]) -> dict:
    """[KEY, VALUE, ...] -> nested dict with the values parsed as Python literals."""
    tree: dict = {}
    for key, value in zip(opts[0::2], opts[1::2]):
        *parents, leaf = str(key).split(".")
        node = tree
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = _literal(value) if isinstance(value, str) else value
    return tree


def _merge_file(cfg: CN, path: Path, chain: tuple[Path, ...] = ()) -> None:
    """Merge a YAML file into cfg, after its `_BASE_` file (a path relative to it) when it names one."""
    if not path.is_file():
        raise FileNotFoundError(f"config file not found: {path}")
    if path.resolve() in chain:
        raise ValueError(f"config files include each other in a cycle: {' -> '.join(map(str, chain + (path,)))}")
    content = read_yaml(path, "a config file")
    base = content.pop("_BASE_", None)
    if base:
        _merge_file(cfg, path.parent / base, chain + (path.resolve(),))
    try:
        cfg.merge_from_other_cfg(CN(_ints_as_floats(cfg, content)))
    except KeyError as err:
        raise KeyError(f"{path}: {err}") from None


def check_student_weights(cfg: CN) -> None:
    """ValueError for MODEL.PRETRAINED on a zoo student (it has no pretrained weights) or together with
    MODEL.STUDENT_WEIGHTS (two starting points)."""
    if not cfg.MODEL.PRETRAINED:
        return
    if split_library_name(cfg.MODEL.STUDENT) is None:
        raise ValueError(f"MODEL.PRETRAINED needs a timm:<name> or torchvision:<name> MODEL.STUDENT, not the zoo "
                         f"model {cfg.MODEL.STUDENT!r}")
    if cfg.MODEL.STUDENT_WEIGHTS:
        raise ValueError(f"MODEL.PRETRAINED and MODEL.STUDENT_WEIGHTS {cfg.MODEL.STUDENT_WEIGHTS!r} both set the "
                         "student's starting weights; set one of them")


def load_cfg(config_file: str | Path | None = None, opts: list[str] | None = None) -> CN:
    """Defaults merged with `config_file` (if given) and then with `opts` ([KEY, VALUE, ...]); frozen.

    A config file may name a `_BASE_` file, merged first, as in Detectron2. An unknown key raises KeyError
    naming it; a missing file raises FileNotFoundError; a value out of its bounds (CLS_VALUE_RULES, then the
    shared COMMON_VALUE_RULES) raises one ValueError listing every such key, before any work starts.
    """
    cfg = get_cfg()
    if config_file:
        _merge_file(cfg, Path(config_file))
    if opts:
        if len(opts) % 2:
            raise ValueError(f"overrides must be KEY VALUE pairs, got an odd count: {opts}")
        try:
            cfg.merge_from_other_cfg(CN(_ints_as_floats(cfg, _opts_as_dict(list(opts)))))
        except KeyError as err:
            raise KeyError(f"unknown config key in overrides: {err}") from None
    check_config_values(cfg, CLS_VALUE_RULES + COMMON_VALUE_RULES)
    check_student_weights(cfg)
    cfg.freeze()
    return cfg
