"""DistillTrainer and tools/train_net.py on the tiny Fashion-MNIST mosaic set: resume, COCO evaluation,
`--eval-only` without a teacher."""
from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path

import pytest
import torch

REPO_ROOT = Path(__file__).resolve().parent.parent
BBOX_KEYS = {"AP", "AP50", "AP75"}


def load_train_net():
    spec = importlib.util.spec_from_file_location("train_net_tool", REPO_ROOT / "tools" / "train_net.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def unikd_state(state_dict):
    return {k: v for k, v in state_dict.items() if k.startswith("distill_terms.unikd.")}


def test_resume_continues_from_the_saved_iteration(trainer_cfg):
    from unikd_det.meta_arch import DistillRCNN
    from unikd_det.trainer import DistillTrainer

    cfg = trainer_cfg(unikd=True, opts=["SOLVER.MAX_ITER", 2, "SOLVER.CHECKPOINT_PERIOD", 1])
    out = Path(cfg.OUTPUT_DIR)
    torch.manual_seed(0)
    first = DistillTrainer(cfg)
    assert isinstance(first.model, DistillRCNN) and first.model.teacher is not None  # built eagerly
    first.resume_or_load(resume=False)
    assert first.start_iter == 0
    first.train()
    assert first.iter == 2

    assert (out / "model_0000000.pth").is_file() and (out / "model_0000001.pth").is_file()
    assert (out / "last_checkpoint").read_text().strip() == "model_final.pth"
    saved = torch.load(out / "model_0000001.pth", map_location="cpu", weights_only=False)
    final = torch.load(out / "model_final.pth", map_location="cpu", weights_only=False)
    # The checkpoint stores the index of the iteration that just finished (0-based): the 2nd one is 1.
    assert saved["iteration"] == 1 and final["iteration"] == 1
    assert saved["trainer"]["iteration"] == 1
    assert "optimizer" in saved["trainer"]["_trainer"] and "LRScheduler" in saved["trainer"]["hooks"]
    saved_unikd = unikd_state(final["model"])
    assert saved_unikd, "the UniKD modules (AFF/FDP) are part of the checkpoint"
    assert not any("teacher" in k for k in final["model"])
    for key, value in unikd_state(first.model.state_dict()).items():
        assert torch.equal(saved_unikd[key], value), key

    cfg2 = cfg.clone()
    cfg2.SOLVER.MAX_ITER = 3
    torch.manual_seed(1)
    second = DistillTrainer(cfg2)
    fresh = unikd_state(second.model.state_dict())
    assert any(not torch.equal(fresh[k], saved_unikd[k]) for k in saved_unikd)  # differs before loading
    second.resume_or_load(resume=True)
    assert second.start_iter == 2  # the next iteration after the saved one
    resumed = second.model.state_dict()
    for key, value in saved_unikd.items():
        assert torch.equal(resumed[key], value), key  # AFF/FDP resumed
    for key, value in final["model"].items():
        assert torch.equal(resumed[key], value), key
    # Optimizer momentum of the UniKD parameters resumed as well.
    state = second.optimizer.state_dict()["state"]
    assert state and all("momentum_buffer" in s for s in state.values())

    second.train()
    assert second.iter == 3
    last = torch.load(out / "model_0000002.pth", map_location="cpu", weights_only=False)
    assert last["iteration"] == 2
    assert torch.load(out / "model_final.pth", map_location="cpu", weights_only=False)["iteration"] == 2


def check_bbox_results(results, output_dir: Path, dataset: str):
    assert set(results) == {"bbox"}
    bbox = results["bbox"]
    assert BBOX_KEYS <= set(bbox)
    for key in BBOX_KEYS:
        assert isinstance(bbox[key], float)
    predictions = output_dir / "inference" / dataset / "coco_instances_results.json"
    assert predictions.is_file()
    detections = json.loads(predictions.read_text())
    assert detections, "evaluation ran on detections"
    # With detections the COCO metrics are real numbers in [0, 100].
    assert all(not math.isnan(bbox[k]) and 0.0 <= bbox[k] <= 100.0 for k in BBOX_KEYS)
    return detections


def test_short_train_then_coco_evaluation(trainer_cfg, mosaic_data):
    from unikd_det.trainer import DistillTrainer

    cfg = trainer_cfg(kd=True, unikd=True, opts=["SOLVER.MAX_ITER", 3, "MODEL.ROI_HEADS.SCORE_THRESH_TEST", 0.0])
    out = Path(cfg.OUTPUT_DIR)
    torch.manual_seed(0)
    trainer = DistillTrainer(cfg)
    trainer.resume_or_load(resume=False)
    trainer.train()
    assert trainer.iter == 3
    metrics = [json.loads(line) for line in (out / "metrics.json").read_text().splitlines()]
    logged = {k for m in metrics for k in m}
    assert {"loss_kd", "loss_unikd_feat", "loss_unikd_fit", "loss_unikd_logit", "total_loss"} <= logged
    assert all(math.isfinite(m["total_loss"]) for m in metrics if "total_loss" in m)

    results = DistillTrainer.test(cfg, trainer.model)
    detections = check_bbox_results(results, out, mosaic_data[1])
    image_ids = {d["image_id"] for d in detections}
    assert len(image_ids) == 8  # every val image was evaluated
    assert {d["category_id"] for d in detections} <= set(range(1, 11))  # mapped back to COCO ids 1..10


@pytest.fixture
def train_net_with_tiny_data(monkeypatch, mosaic_data):
    """tools/train_net.py with its built-in data registration recorded: `mosaic_data` has registered the tiny
    mosaic set under the built-in names, so `register_builtin_datasets` keeps it."""
    from unikd_det.data import register_builtin_datasets

    tool = load_train_net()
    calls = []

    def recording(names, root):
        calls.append(tuple(names))
        register_builtin_datasets(names, root)

    monkeypatch.setattr(tool, "register_builtin_datasets", recording)
    return tool, calls


def test_eval_only_does_not_build_the_teacher(train_net_with_tiny_data, make_cfg, build, tmp_path, monkeypatch):
    from detectron2.checkpoint import DetectionCheckpointer
    from detectron2.engine import default_argument_parser

    from unikd_det.teacher import FrozenTeacher

    tool, calls = train_net_with_tiny_data
    cfg = make_cfg(unikd=True, opts=["MODEL.ROI_HEADS.SCORE_THRESH_TEST", 0.0])
    model = build(cfg)
    DetectionCheckpointer(model, save_dir=str(tmp_path)).save("wrapper")
    config = tmp_path / "distill.yaml"
    config.write_text(cfg.dump())

    built = []
    monkeypatch.setattr(FrozenTeacher, "from_config", classmethod(lambda cls, c: built.append(c)))
    out = tmp_path / "eval_out"
    args = default_argument_parser().parse_args(
        [
            "--config-file", str(config), "--eval-only",
            "MODEL.WEIGHTS", str(tmp_path / "wrapper.pth"),
            "DISTILL.TEACHER.WEIGHTS", str(tmp_path / "does_not_exist.pth"),
            "OUTPUT_DIR", str(out),
        ]
    )
    results = tool.main(args)
    assert built == []  # the teacher was never built (its weights file does not even exist)
    assert calls  # the built-in data set was registered by setup()
    check_bbox_results(results, out, "fashion_mosaic_val")
    assert (out / "config.yaml").is_file()  # default_setup ran

    # The evaluated model is the saved student: same results as evaluating it directly.
    from unikd_det.trainer import DistillTrainer

    direct = DistillTrainer.test(cfg_with_output(cfg, tmp_path / "direct"), model)
    assert direct["bbox"]["AP"] == pytest.approx(results["bbox"]["AP"], nan_ok=True)


def cfg_with_output(cfg, output_dir):
    cfg = cfg.clone()
    cfg.OUTPUT_DIR = str(output_dir)
    return cfg


def test_train_net_main_trains(train_net_with_tiny_data, make_cfg, tmp_path):
    from detectron2.engine import default_argument_parser

    tool, calls = train_net_with_tiny_data
    cfg = make_cfg(kd=True, unikd=True)
    config = tmp_path / "distill.yaml"
    config.write_text(cfg.dump())
    out = tmp_path / "train_out"
    args = default_argument_parser().parse_args(
        ["--config-file", str(config), "SOLVER.MAX_ITER", "1", "DATASETS.TEST", "()", "OUTPUT_DIR", str(out)]
    )
    tool.main(args)
    assert calls
    assert (out / "model_final.pth").is_file()
    state = torch.load(out / "model_final.pth", map_location="cpu", weights_only=False)
    assert state["iteration"] == 0
    assert unikd_state(state["model"]) and not any("teacher" in k for k in state["model"])


def test_resume_may_extend_and_rescue_but_refuses_other_values(train_net_with_tiny_data, make_cfg, tmp_path):
    tool, _ = train_net_with_tiny_data
    config = tmp_path / "distill.yaml"
    config.write_text(make_cfg(kd=True).dump())
    out = tmp_path / "run"
    base = ["--config-file", str(config), "DATASETS.TEST", "()", "OUTPUT_DIR", str(out)]
    tool.run(tool.parse_args(base + ["SOLVER.MAX_ITER", "1"]))
    before = (out / "config.yaml").read_text()
    with pytest.raises(ValueError, match=r"SEED: 1 in the run, 7 now\. A resumed run may change only"):
        tool.run(tool.parse_args(base + ["SOLVER.MAX_ITER", "2", "SEED", "7", "--resume"]))
    assert (out / "config.yaml").read_text() == before
    tool.run(tool.parse_args(base + ["SOLVER.MAX_ITER", "2", "SOLVER.BASE_LR", "0.001", "--resume"]))
    first = "# resumed from model_final.pth: SOLVER.BASE_LR 0.02 -> 0.001, SOLVER.MAX_ITER 1 -> 2"
    text = (out / "config.yaml").read_text()
    assert text.startswith(first + "\n") and "BASE_LR: 0.001" in text
    tool.run(tool.parse_args(base + ["SOLVER.MAX_ITER", "3", "SOLVER.BASE_LR", "0.001", "--resume"]))
    assert (out / "config.yaml").read_text().startswith(
        first + "\n# resumed from model_final.pth: SOLVER.MAX_ITER 2 -> 3\n")
    assert torch.load(out / "model_final.pth", weights_only=True)["iteration"] == 2


DEMO_CONFIGS = sorted((REPO_ROOT / "configs" / "Demo").glob("*.yaml"))


@pytest.mark.parametrize("config", DEMO_CONFIGS, ids=[p.stem for p in DEMO_CONFIGS])
def test_demo_configs_build_model_optimizer_and_scheduler(config):
    """Every shipped demo config (as is, full size) builds its model and the trainer's optimizer/scheduler,
    and one clipped SGD step runs: catches solver options stock Detectron2 does not accept."""
    from detectron2.config import get_cfg

    from unikd_det import add_distill_config
    from unikd_det.trainer import DistillTrainer

    cfg = get_cfg()
    add_distill_config(cfg)
    cfg.merge_from_file(str(config))
    cfg.MODEL.DEVICE = "cpu"
    torch.manual_seed(0)
    model = DistillTrainer.build_model(cfg)
    optimizer = DistillTrainer.build_optimizer(cfg, model)
    scheduler = DistillTrainer.build_lr_scheduler(cfg, optimizer)
    params = [p for group in optimizer.param_groups for p in group["params"]]
    assert len({id(p) for p in params}) == sum(1 for p in model.parameters() if p.requires_grad)
    for p in params:
        p.grad = torch.full_like(p, 100.0)
    optimizer.step()
    scheduler.step()
    assert all(torch.isfinite(p).all() for p in params)
