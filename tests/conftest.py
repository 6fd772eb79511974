"""Shared pytest options and fixtures.

`--run-slow` runs the tests marked `slow` (skipped otherwise). The fixtures below serve the Detectron2
plugin tests (tests/test_det_*.py): a tiny-model config factory, a tiny stock teacher checkpoint, synthetic
batched inputs and a tiny Fashion-MNIST mosaic data set. Detectron2 is imported lazily inside them, so the
loss-core tests keep running with torch alone.
"""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

REPO_ROOT = Path(__file__).resolve().parent.parent
BASE_MOSAIC = REPO_ROOT / "configs" / "Demo" / "Base-Mosaic.yaml"
NUM_CLASSES = 10  # Base-Mosaic.yaml: the 10 Fashion-MNIST classes
IMAGE_SIZE = 64

# The smallest Faster R-CNN R18-FPN that still runs every code path (CPU, 64x64 images).
TINY_OPTS = [
    "MODEL.DEVICE", "cpu",
    "MODEL.WEIGHTS", "",
    "MODEL.RESNETS.DEPTH", 18,
    "MODEL.RESNETS.RES2_OUT_CHANNELS", 64,
    "MODEL.RESNETS.NORM", "BN",
    "MODEL.FPN.OUT_CHANNELS", 32,
    "MODEL.ANCHOR_GENERATOR.SIZES", [[8], [16], [32], [64], [128]],
    "MODEL.RPN.BATCH_SIZE_PER_IMAGE", 32,
    "MODEL.RPN.PRE_NMS_TOPK_TRAIN", 200,
    "MODEL.RPN.POST_NMS_TOPK_TRAIN", 64,
    "MODEL.RPN.PRE_NMS_TOPK_TEST", 100,
    "MODEL.RPN.POST_NMS_TOPK_TEST", 50,
    "MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE", 32,
    "MODEL.ROI_BOX_HEAD.FC_DIM", 32,
    "INPUT.MIN_SIZE_TRAIN", (IMAGE_SIZE,),
    "INPUT.MAX_SIZE_TRAIN", IMAGE_SIZE,
    "INPUT.MIN_SIZE_TEST", IMAGE_SIZE,
    "INPUT.MAX_SIZE_TEST", IMAGE_SIZE,
    "SOLVER.IMS_PER_BATCH", 2,
    "SOLVER.WARMUP_ITERS", 0,
    "DATALOADER.NUM_WORKERS", 0,
    "TEST.EVAL_PERIOD", 0,
    "DISTILL.UNIKD.AFF.CHANNELS", 8,
]
# The teacher differs from the student in FPN width, so AFF/FDP see different channel counts.
TEACHER_OPTS = ["MODEL.FPN.OUT_CHANNELS", 16]


# ---------------------------------------------------------------------------------------------------------
# --run-slow
# ---------------------------------------------------------------------------------------------------------
def pytest_addoption(parser):
    parser.addoption("--run-slow", action="store_true", default=False, help="also run tests marked slow")


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: expensive test, run only with --run-slow")


def pytest_collection_modifyitems(config, items):
    if config.getoption("--run-slow"):
        return
    skip_slow = pytest.mark.skip(reason="slow test: run with --run-slow")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip_slow)


# ---------------------------------------------------------------------------------------------------------
# Detectron2 plugin fixtures
# ---------------------------------------------------------------------------------------------------------
@pytest.fixture(autouse=True)
def _one_thread_for_tiny_model_tests(request):
    """The detection and classification tests run tiny models: intra-op threads only add overhead (and, on a busy 2-core
    machine, oversubscription made a 0.1 s step take 3 s), so they run single-threaded."""
    if not request.node.path.name.startswith(("test_det_", "test_cls_")):
        yield
        return
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def stock_cfg(extra_opts=()):
    """A tiny stock config (get_cfg + DISTILL node + Base-Mosaic.yaml + TINY_OPTS + extra_opts), unfrozen."""
    from detectron2.config import get_cfg

    from unikd_det import add_distill_config

    cfg = get_cfg()
    add_distill_config(cfg)
    cfg.merge_from_file(str(BASE_MOSAIC))
    cfg.merge_from_list(list(TINY_OPTS))
    cfg.merge_from_list(list(extra_opts))
    return cfg


def write_stock_config(cfg, path: Path) -> Path:
    """Dump `cfg` as a stock GeneralizedRCNN config file (what a teacher config is)."""
    cfg = cfg.clone()
    cfg.defrost()
    cfg.MODEL.META_ARCHITECTURE = "GeneralizedRCNN"
    path.write_text(cfg.dump())
    return path


@pytest.fixture(scope="session")
def teacher_files(tmp_path_factory):
    """(config path, weights path) of a tiny randomly initialised stock GeneralizedRCNN teacher."""
    from detectron2.checkpoint import DetectionCheckpointer
    from detectron2.modeling import build_model

    folder = tmp_path_factory.mktemp("teacher")
    cfg = stock_cfg(TEACHER_OPTS)
    config_path = write_stock_config(cfg, folder / "teacher.yaml")
    cfg.MODEL.META_ARCHITECTURE = "GeneralizedRCNN"
    torch.manual_seed(1234)
    model = build_model(cfg)
    DetectionCheckpointer(model, save_dir=str(folder)).save("teacher")
    return config_path, folder / "teacher.pth"


@pytest.fixture
def make_cfg(teacher_files):
    """Factory of tiny configs: DistillRCNN student with the session teacher, terms switched by flags.

    make_cfg(kd=False, unikd=False, opts=()) -> unfrozen CfgNode (META_ARCHITECTURE DistillRCNN).
    """
    config_path, weights_path = teacher_files

    def make(kd: bool = False, unikd: bool = False, opts=()):
        cfg = stock_cfg()
        cfg.MODEL.META_ARCHITECTURE = "DistillRCNN"
        cfg.DISTILL.TEACHER.CONFIG = str(config_path)
        cfg.DISTILL.TEACHER.WEIGHTS = str(weights_path)
        cfg.DISTILL.KD.ENABLED = kd
        cfg.DISTILL.UNIKD.ENABLED = unikd
        cfg.merge_from_list(list(opts))
        return cfg

    return make


@pytest.fixture
def build():
    """build(cfg) -> model from detectron2.modeling.build_model with a fixed seed."""
    from detectron2.modeling import build_model

    def _build(cfg, seed: int = 0):
        torch.manual_seed(seed)
        return build_model(cfg)

    return _build


def synthetic_inputs(num_images: int = 2, size: int | tuple[int, int] = IMAGE_SIZE, seed: int = 0) -> list[dict]:
    """Detectron2 batched inputs: uint8 CHW images with 1-3 bright boxes on a noisy background."""
    from detectron2.structures import Boxes, Instances

    height, width = (size, size) if isinstance(size, int) else size
    gen = torch.Generator().manual_seed(seed)
    inputs = []
    for _ in range(num_images):
        image = torch.randint(0, 40, (3, height, width), generator=gen, dtype=torch.uint8)
        count = int(torch.randint(1, 4, (1,), generator=gen))
        boxes, classes = [], []
        for _ in range(count):
            w, h = (int(v) for v in torch.randint(12, min(height, width) // 2, (2,), generator=gen))
            x0 = int(torch.randint(0, width - w, (1,), generator=gen))
            y0 = int(torch.randint(0, height - h, (1,), generator=gen))
            image[:, y0 : y0 + h, x0 : x0 + w] = torch.randint(120, 256, (3, 1, 1), generator=gen, dtype=torch.uint8)
            boxes.append([x0, y0, x0 + w, y0 + h])
            classes.append(int(torch.randint(0, NUM_CLASSES, (1,), generator=gen)))
        instances = Instances((height, width))
        instances.gt_boxes = Boxes(torch.tensor(boxes, dtype=torch.float32))
        instances.gt_classes = torch.tensor(classes, dtype=torch.int64)
        inputs.append({"image": image, "height": height, "width": width, "instances": instances})
    return inputs


@pytest.fixture(scope="session")
def make_inputs():
    """Factory: make_inputs(num_images=2, size=64, seed=0) -> synthetic batched inputs."""
    return synthetic_inputs


@pytest.fixture
def batched_inputs():
    """Two synthetic 64x64 training inputs."""
    return synthetic_inputs(2, IMAGE_SIZE, seed=0)


@pytest.fixture
def train_forward():
    """train_forward(model, inputs, it=0, seed=0) -> loss dict of a training forward inside an EventStorage
    at iteration `it`, with the sampling RNG seeded (so two calls with the same seed sample alike)."""
    from detectron2.utils.events import EventStorage

    def run(model, inputs, it: int = 0, seed: int = 0):
        model.train()
        torch.manual_seed(seed)
        with EventStorage(start_iter=it):
            return model(inputs)

    return run


@pytest.fixture
def capture_ctx():
    """capture_ctx(model) -> a list that receives the Batch each distillation term is called with."""

    def capture(model):
        seen = []
        for term in model.distill_terms.values():
            term.register_forward_pre_hook(lambda module, args: seen.append(args[0]))
        return seen

    return capture


@pytest.fixture(scope="session")
def _mosaic_root(tmp_path_factory):
    """Generate the tiny mosaic set once per session."""
    from unikd_det.data import register_fashion_mosaic

    root = tmp_path_factory.mktemp("fashion_mosaic")
    register_fashion_mosaic(root=root, num_train=16, num_val=8, canvas_size=IMAGE_SIZE, num_holdout=4)
    return root


@pytest.fixture
def mosaic_data(_mosaic_root):
    """("fashion_mosaic_train", "fashion_mosaic_val", "fashion_mosaic_holdout") registered on the tiny set
    (re-registered per test, a cheap no-op, in case another test replaced or removed the registration)."""
    from unikd_det.data import register_fashion_mosaic

    return register_fashion_mosaic(root=_mosaic_root, num_train=16, num_val=8, canvas_size=IMAGE_SIZE,
                                   num_holdout=4)


@pytest.fixture
def trainer_cfg(make_cfg, mosaic_data, tmp_path):
    """Factory: a tiny DistillTrainer config on the tiny mosaic set, OUTPUT_DIR under tmp_path."""

    def make(kd: bool = False, unikd: bool = True, opts=()):
        cfg = make_cfg(kd=kd, unikd=unikd)
        cfg.DATASETS.TRAIN = (mosaic_data[0],)
        cfg.DATASETS.TEST = (mosaic_data[1],)
        cfg.OUTPUT_DIR = str(tmp_path / "output")
        cfg.merge_from_list(list(opts))
        return cfg

    return make


@pytest.fixture(scope="session")
def make_stock_cfg():
    """Factory: make_stock_cfg(extra_opts=()) -> tiny stock config (GeneralizedRCNN), unfrozen."""
    return stock_cfg


@pytest.fixture(scope="session")
def write_teacher_config():
    """write_teacher_config(cfg, path) -> path of `cfg` dumped as a stock GeneralizedRCNN config file."""
    return write_stock_config


# ---------------------------------------------------------------------------------------------------------
# Classification package (tests/test_cls_*.py): a tiny synthetic run config.
# ---------------------------------------------------------------------------------------------------------
CLS_TINY_OPTS = [
    "DATASET.NAME", "synthetic",
    "DATASET.SYNTHETIC.NUM_CLASSES", 5,
    "DATASET.SYNTHETIC.NUM_TRAIN", 40,
    "DATASET.SYNTHETIC.NUM_TEST", 20,
    "SOLVER.BATCH_SIZE", 16,
    "SOLVER.EPOCHS", 3,
    "SOLVER.MILESTONES", [2],
    "SOLVER.LR", 0.05,
    "MODEL.STUDENT", "resnet8",
    "TRAIN.DEVICE", "cpu",
    "TRAIN.PROGRESS", False,
    "TRAIN.TENSORBOARD", False,
    "TRAIN.DETERMINISTIC", True,
    "UNIKD.AFF.CHANNELS", 8,
]


@pytest.fixture
def cls_cfg(tmp_path):
    """factory(*overrides) -> frozen classification config of a tiny synthetic run writing under tmp_path."""
    from classification.config import load_cfg

    def make(*opts, config_file=None):
        return load_cfg(config_file, [*map(str, CLS_TINY_OPTS), "OUTPUT_DIR", str(tmp_path / "run"), *map(str, opts)])

    return make


@pytest.fixture
def cls_teacher(tmp_path, cls_cfg):
    """Path of a resnet14 teacher checkpoint trained for one epoch on the tiny synthetic set."""
    from classification.engine import Trainer

    cfg = cls_cfg("MODEL.STUDENT", "resnet14", "SOLVER.EPOCHS", 1, "OUTPUT_DIR", tmp_path / "teacher")
    Trainer(cfg).train()
    return tmp_path / "teacher" / "last.pth"
