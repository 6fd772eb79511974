"""The `cfg.DISTILL` node: everything the distillation wrapper adds to a stock Detectron2 config.

Student settings stay in the stock `MODEL.*`, `INPUT.*` and `SOLVER.*` keys. Each loss term is an
independent sub-node with an `ENABLED` switch, so terms combine freely (ROI KD + UniKD, ...).
"""
import yaml
from detectron2.config import CfgNode as CN

from unikd.core.checks import COMMON_VALUE_RULES, ValueRule, check_config_values
from .mobilenet_fpn import add_mobilenetv2_config

ROI_LOSSES = ("kl", "dkd")
ROI_BACKGROUND_MODES = ("all", "fg")
UNIKD_LOGIT_LOSSES = ("kl", "dkd", "none")


def add_distill_config(cfg: CN) -> None:
    """Add the `DISTILL` node (DESIGN section 5) and `MODEL.MOBILENETV2` with their defaults to `cfg`, in place."""
    add_mobilenetv2_config(cfg)
    _C = cfg
    _C.DISTILL = CN()
    # Architecture the wrapped student is built with (any GeneralizedRCNN subclass).
    _C.DISTILL.STUDENT_META_ARCHITECTURE = "GeneralizedRCNN"
    # Linear ramp of every distillation loss weight over the first WARMUP_ITERS iterations.
    _C.DISTILL.WARMUP_ITERS = 0

    _C.DISTILL.TEACHER = CN()
    # A Detectron2 config file (absolute, relative to the working directory or to the repository)
    # or a model-zoo name such as "COCO-Detection/faster_rcnn_R_101_FPN_3x.yaml".
    _C.DISTILL.TEACHER.CONFIG = ""
    # Trained teacher weights: a local file or a URL (detectron2://, https://). Required.
    _C.DISTILL.TEACHER.WEIGHTS = ""
    # "KEY VALUE" overrides applied to the teacher config after CONFIG is merged.
    _C.DISTILL.TEACHER.OPTS = []

    # KD on the ROI-head classification logits of the student's sampled proposals.
    _C.DISTILL.ROI = CN()
    _C.DISTILL.ROI.ENABLED = False
    _C.DISTILL.ROI.LOSS = "kl"  # one of ROI_LOSSES
    _C.DISTILL.ROI.WEIGHT = 1.0
    _C.DISTILL.ROI.TEMPERATURE = 1.0
    # "all": background ROIs are distilled like any class (background = index NUM_CLASSES);
    # "fg": only ROIs matched to a ground-truth object.
    _C.DISTILL.ROI.BG_MODE = "all"
    _C.DISTILL.ROI.DKD_ALPHA = 1.0
    _C.DISTILL.ROI.DKD_BETA = 0.25

    # Multi-level logit KD (MLKD) on the same ROI logits: instance, class and batch levels. There is no official
    # detection MLKD: this is the authors' classification loss (Jin-Ying/Multi-Level-Logit-Distillation,
    # mdistiller/distillers/KD_ours.py) on the ROI logits, see unikd_det/terms/mlkd.py.
    _C.DISTILL.MLKD = CN()
    _C.DISTILL.MLKD.ENABLED = False
    _C.DISTILL.MLKD.WEIGHT = 0.9  # the MLKD authors' KD weight
    _C.DISTILL.MLKD.TEMPERATURES = [4.0, 3.0, 5.0, 2.0, 6.0]  # the MLKD authors' set
    # The classification code's unmasked strong-view instance KD, here on the same (only) ROI logits as its
    # masked weak-view one: true counts the instance KD (1 + sample-mask fraction) times, false that fraction.
    _C.DISTILL.MLKD.STRONG_VIEW_KD = True

    # FitNet: a 1x1 adapter per FPN level, MSE to the teacher's level.
    _C.DISTILL.FITNET = CN()
    _C.DISTILL.FITNET.ENABLED = False
    _C.DISTILL.FITNET.IN_FEATURES = ["p2", "p3", "p4", "p5", "p6"]
    _C.DISTILL.FITNET.WEIGHT = 1.0

    # FGFI: 3x3 adapters, MSE only at locations whose anchors fit a ground-truth box well; the levels
    # are MODEL.RPN.IN_FEATURES (the anchors' levels).
    _C.DISTILL.FGFI = CN()
    _C.DISTILL.FGFI.ENABLED = False
    # An anchor is near an object when its IoU is strictly greater than THRESHOLD_FACTOR x the object's best
    # anchor IoU (twangnh/Distilling-Object-Detectors, lib/model/rpn/anchor_target_layer.py: 0.5, `>`).
    _C.DISTILL.FGFI.THRESHOLD_FACTOR = 0.5
    # The loss sums squared errors over channels and divides by 2 x (masked locations), hence a small weight.
    _C.DISTILL.FGFI.WEIGHT = 0.01
    # Std of the adapters' initial weights: N(0, 1) folded into (-2, 2) by fmod, times INIT_STD; biases keep
    # PyTorch's default (twangnh/Distilling-Object-Detectors, trainval_net_sup.py: normal_init(..., 0, 0.0001,
    # True)). 0 keeps PyTorch's default initialisation for the weights too.
    _C.DISTILL.FGFI.INIT_STD = 1e-4
    # Imitation has weight 0 before this iteration, full weight from it on (trainval_net_sup.py: --ws 400).
    _C.DISTILL.FGFI.START_ITER = 400

    # ReviewKD: ABF fusion of the student's FPN levels, HCL to the teacher's levels.
    _C.DISTILL.REVIEWKD = CN()
    _C.DISTILL.REVIEWKD.ENABLED = False
    _C.DISTILL.REVIEWKD.IN_FEATURES = ["p2", "p3", "p4", "p5", "p6"]  # finest to coarsest
    _C.DISTILL.REVIEWKD.WEIGHT = 1.0  # authors: 1.2 for R18, 1.0 for R50, 2.0 for MobileNetV2 students
    _C.DISTILL.REVIEWKD.MID_CHANNELS = 256
    _C.DISTILL.REVIEWKD.POOL_SIZES = [4, 2, 1]

    # UniKD: AFF over FPN levels of each network, a shared FDP on ROI-pooled fused maps.
    _C.DISTILL.UNIKD = CN()
    _C.DISTILL.UNIKD.ENABLED = False
    _C.DISTILL.UNIKD.MODE = "paper"  # "paper" | "authors_code"
    _C.DISTILL.UNIKD.IN_FEATURES = ["p2", "p3", "p4", "p5", "p6"]  # finest to coarsest
    _C.DISTILL.UNIKD.ALPHA = 1.0  # weight of the feature-distribution KL, L_FL
    _C.DISTILL.UNIKD.BETA = 1.0  # weight of the logit term on ROI logits
    _C.DISTILL.UNIKD.LOGIT_LOSS = "kl"  # one of UNIKD_LOGIT_LOSSES
    # Temperature of the logit term (1, as every public Detectron2 ROI-KD config: at 4 the tau^2-scaled
    # term made from-scratch demo students diverge within 25 iterations).
    _C.DISTILL.UNIKD.TEMPERATURE = 1.0
    # The teacher-fit target is the teacher ROI logits divided by FIT_TEMPERATURE (DESIGN section 3:
    # raw ROI logits as the target diverged; logits / 4 trained stably).
    _C.DISTILL.UNIKD.FIT_TEMPERATURE = 4.0
    _C.DISTILL.UNIKD.DKD_ALPHA = 1.0
    _C.DISTILL.UNIKD.DKD_BETA = 0.25
    _C.DISTILL.UNIKD.TARGET_FIT = "gaussian_nll"  # "gaussian_nll" | "none"
    _C.DISTILL.UNIKD.FIT_WEIGHT = 1.0
    _C.DISTILL.UNIKD.DETACH_TARGET = True
    _C.DISTILL.UNIKD.FDP_SHARED = True
    # Smooth bound s of the predicted log-variance, s * tanh(x / s).
    _C.DISTILL.UNIKD.LOGVAR_BOUND = 2.0
    # "mean": L_FL and L_fit are averaged over the K = NUM_CLASSES + 1 outputs; "sum": summed.
    _C.DISTILL.UNIKD.K_REDUCTION = "mean"
    # ROIAlign output size on the fused map before the FDP's global average pool.
    _C.DISTILL.UNIKD.POOLER_RESOLUTION = 4
    # authors_code mode: the authors' detection code (FabienCode/mdistiller at c22a722, detection/model/rcnn.py,
    # the "UniKD" branch, and detection/configs/UniKD/*.yaml), see unikd_det/terms/unikd.py. It reads ALPHA
    # (its feature KL, 1), BETA (its DKD, 1), TEMPERATURE, DKD_ALPHA and DKD_BETA (its DKD: T 1, 1, 0.25),
    # SAMPLE_TEMPERATURE and SUPP_WEIGHT below and the AUTHORS_CODE node; the other UNIKD keys (AFF, fit,
    # pooler, bounds, reductions) are paper mode's.
    # Softmax-KL temperature between the samples and from the samples to the logits (the authors' DKD.T, 1).
    _C.DISTILL.UNIKD.SAMPLE_TEMPERATURE = 1.0
    _C.DISTILL.UNIKD.SUPP_WEIGHT = 0.1  # the authors' 0.1 on each network's supplementary pair
    _C.DISTILL.UNIKD.AUTHORS_CODE = CN()
    # The FDP's box-regression head (one output per box-delta column) and its KD terms, as the authors' featPro.
    _C.DISTILL.UNIKD.AUTHORS_CODE.REG_HEAD = True
    # Deltas the student's regression sample is tied to in the supplementary term: "teacher" (the authors'
    # code: kd_loss(s_reg, tea_predictions[1])) or "student" (its own deltas, like its class sample).
    _C.DISTILL.UNIKD.AUTHORS_CODE.REG_TARGET = "teacher"
    # s > 0 bounds the FDPs' log-variances smoothly as s * tanh(x / s); 0 leaves them unbounded, as the authors'
    # featPro. Necessary deviation (DESIGN section 3 requires the bound): unbounded, the tiny GN student of
    # tests/test_det_stability.py (SGD LR 0.02, no warm-up) hit NaN at iteration 1, a teacher log-variance
    # near 1e4 overflowing exp(); s = 10 changes |x| <= 2 by < 2%, trained 120 iterations finite (s = 30 did
    # not help: supplementary loss ~1e5).
    _C.DISTILL.UNIKD.AUTHORS_CODE.LOGVAR_BOUND = 10.0
    _C.DISTILL.UNIKD.AFF = CN()
    _C.DISTILL.UNIKD.AFF.ENABLED = True
    _C.DISTILL.UNIKD.AFF.CHANNELS = 32


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
    ValueRule("DISTILL.*START_ITER", 0.0),
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
