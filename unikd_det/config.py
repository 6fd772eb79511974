"""The `cfg.DISTILL` node: everything the distillation wrapper adds to a stock Detectron2 config (besides
`DATASETS.COCO`, a config's own COCO-format data, and `MODEL.MOBILENETV2`).

Student settings stay in the stock `MODEL.*`, `INPUT.*` and `SOLVER.*` keys. Each distillation term is an
independent sub-node with an `ENABLED` switch, generated from the term's options (`unikd.terms`). A term's
`START` and `WARMUP` count Detectron2 iterations from 1 (EventStorage.iter + 1).
"""
import yaml
from detectron2.config import CfgNode as CN

from unikd.core.checks import COMMON_VALUE_RULES, ValueRule, check_config_values
from unikd.terms import options_node, registered_terms

from .mobilenet_fpn import add_mobilenetv2_config

TASK = "detection"


def add_coco_dataset_config(cfg: CN) -> None:
    """Add `DATASETS.COCO` to `cfg`, in place: COCO-format detection sets that the entry points register in
    Detectron2's catalogs before any work (`unikd_det.data.register.register_coco_datasets`), so a config alone names
    its own data. Entry i of each list describes one set; DATASETS.TRAIN and .TEST then name the sets."""
    cfg.DATASETS.COCO = CN()
    # The names the sets are registered under, e.g. ["my_train", "my_val"].
    cfg.DATASETS.COCO.NAME = []
    # Each set's COCO instances json (absolute, or relative to the working directory).
    cfg.DATASETS.COCO.JSON = []
    # Each set's image folder: the json's `file_name` entries are relative to it.
    cfg.DATASETS.COCO.IMAGE_ROOT = []


def add_distill_config(cfg: CN) -> None:
    """Add the `DISTILL` node (docs/DESIGN.md section 9), `MODEL.MOBILENETV2` and `DATASETS.COCO` with their
    defaults to `cfg`, in place.

    Every registered term gets `DISTILL.<NAME>`: an `ENABLED` switch and its options, generated from the term's
    options dataclass with the detection preset (`unikd.terms.options_node`), so terms combine freely (KD +
    UniKD, FitNet + KD, ReviewKD + DKD, ...) and a key the term does not define is Detectron2's unknown-key error.
    """
    add_mobilenetv2_config(cfg)
    add_coco_dataset_config(cfg)
    _C = cfg
    _C.DISTILL = CN()
    # Architecture the wrapped student is built with (any GeneralizedRCNN subclass).
    _C.DISTILL.STUDENT_META_ARCHITECTURE = "GeneralizedRCNN"

    _C.DISTILL.TEACHER = CN()
    # A Detectron2 config file (absolute, relative to the working directory or to the repository) or a model-zoo
    # name: a yacs YAML file such as "COCO-Detection/faster_rcnn_R_101_FPN_3x.yaml", or a LazyConfig .py file such
    # as "new_baselines/mask_rcnn_R_101_FPN_400ep_LSJ.py" (Python, run when loaded: never a URL).
    _C.DISTILL.TEACHER.CONFIG = ""
    # Trained teacher weights: a local file or a URL (detectron2://, https://), read weights-only. Required.
    _C.DISTILL.TEACHER.WEIGHTS = ""
    # Overrides applied to the teacher config after CONFIG is loaded: "KEY VALUE" pairs for a YAML file,
    # "key=value" strings for a LazyConfig file ("model.roi_heads.num_classes=10").
    _C.DISTILL.TEACHER.OPTS = []

    for name, term in registered_terms().items():
        node = CN()
        node.ENABLED = False
        node.update(options_node(term.Options, TASK, CN))
        # The schedule counts whole iterations; as ints, `DISTILL.FGFI.START 0` on the command line merges.
        node.START, node.WARMUP = int(node.START), int(node.WARMUP)
        _C.DISTILL[name.upper()] = node


def merge_config_file(cfg: CN, path: str) -> None:
    """`cfg.merge_from_file(path)` with YAML's Python tags refused, in `path` and in every `_BASE_` it names.

    Detectron2's `merge_from_file` defaults to `allow_unsafe=True`, which falls back to `yaml.unsafe_load`
    and so runs the code a `!!python/object/apply:...` tag names. Every config this project reads goes
    through here instead; a file with such a tag is refused with a ValueError naming it.
    """
    try:
        cfg.merge_from_file(path, allow_unsafe=False)
    except yaml.constructor.ConstructorError as err:
        raise ValueError(
            f"refused to load config {path}: it (or a _BASE_ it names) holds a YAML tag that constructs a "
            f"Python object, which a config never needs:\n{err}"
        ) from None


# Detection bounds, checked before the shared ones (the first matching rule wins). Stock Detectron2 keys are
# checked only where listed here: some use 0 to mean "off" (TEST.EVAL_PERIOD) and must keep that meaning.
DETECTION_VALUE_RULES: tuple[ValueRule, ...] = (
    ValueRule("SOLVER.BASE_LR", 0.0, warn_at=0.0),
    ValueRule("SOLVER.IMS_PER_BATCH", 1.0),
    ValueRule("SOLVER.MAX_ITER", 1.0),
    ValueRule("SOLVER.CHECKPOINT_PERIOD", 1.0),
    ValueRule("SOLVER.WARMUP_ITERS", 0.0),
    ValueRule("SOLVER.MOMENTUM", 0.0),
    ValueRule("SOLVER.GAMMA", 0.0, strict=True),
    ValueRule("*.BATCH_SIZE_PER_IMAGE", 1.0),
    ValueRule("MODEL.ROI_HEADS.NUM_CLASSES", 1.0),
    ValueRule("TEST.EVAL_PERIOD", 0.0),
    ValueRule("DISTILL.UNIKD.POOLER_RESOLUTION", 1.0),
    ValueRule("DISTILL.UNIKD.LOGVAR_BOUND", 0.0, strict=True),
    ValueRule("DISTILL.UNIKD.AUTHORS_CODE.LOGVAR_BOUND", 0.0),
    ValueRule("DISTILL.REVIEWKD.POOL_SIZES", 1.0),
    ValueRule("DISTILL.FGFI.INIT_STD", 0.0),
    ValueRule("DISTILL.*ALPHA", 0.0),
    ValueRule("DISTILL.*BETA", 0.0),
)
# The stock keys above, checked by `validate_config` (the whole DISTILL node is checked too).
CHECKED_STOCK_KEYS = (
    "SOLVER.BASE_LR", "SOLVER.IMS_PER_BATCH", "SOLVER.MAX_ITER", "SOLVER.CHECKPOINT_PERIOD", "SOLVER.WARMUP_ITERS",
    "SOLVER.MOMENTUM", "SOLVER.GAMMA", "SOLVER.WEIGHT_DECAY", "MODEL.RPN.BATCH_SIZE_PER_IMAGE",
    "MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE", "MODEL.ROI_HEADS.NUM_CLASSES", "TEST.EVAL_PERIOD",
)


def _value(cfg: CN, dotted_key: str):
    node = cfg
    for part in dotted_key.split("."):
        node = node[part]
    return node


def check_distill_values(cfg: CN) -> None:
    """Raise one ValueError naming every bad numeric key of `cfg.DISTILL` (temperatures > 0, weights >= 0,
    AFF channels >= 1, ...), so a bad value is refused when the model is built, not mid-training."""
    check_config_values({"DISTILL": cfg.DISTILL}, DETECTION_VALUE_RULES + COMMON_VALUE_RULES)


def validate_config(cfg: CN) -> list[str]:
    """Check `cfg.DISTILL` and the solver, batch and class-count keys of a training config before any work.

    Raises one ValueError listing every bad key with its value and bound; returns the warnings (SOLVER.BASE_LR
    of 0, which trains nothing), also logged.
    """
    stock = {key: _value(cfg, key) for key in CHECKED_STOCK_KEYS}
    return check_config_values({"DISTILL": cfg.DISTILL, **stock}, DETECTION_VALUE_RULES + COMMON_VALUE_RULES)
