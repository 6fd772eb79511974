"""Every shipped detection config (COCO pairs and the demo) builds and runs one CPU training step.

Images are tiny and the ROI/RPN sample counts small, so the step is cheap; student weights are not
loaded (build_model never reads MODEL.WEIGHTS) and the teacher stays random through the test-only
`random_teacher_weights_for_tests` switch when its weights are not a local file.
"""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

CONFIG_ROOT = Path(__file__).resolve().parent.parent / "configs"
RUNNABLE_CONFIGS = sorted(  # configs/bench holds bench grids, not Detectron2 configs
    p for p in CONFIG_ROOT.glob("*/*.yaml") if not p.name.startswith("Base") and p.parent.name != "bench"
)
STOCK_LOSSES = {"loss_cls", "loss_box_reg", "loss_rpn_cls", "loss_rpn_loc"}
CHEAP_STEP = [
    "MODEL.DEVICE", "cpu",
    "MODEL.WEIGHTS", "",
    "MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE", 32,
    "MODEL.RPN.BATCH_SIZE_PER_IMAGE", 64,
    "MODEL.RPN.PRE_NMS_TOPK_TRAIN", 200,
    "MODEL.RPN.POST_NMS_TOPK_TRAIN", 50,
]


def test_runnable_configs_cover_every_pair_and_method():
    names = {p.stem for p in RUNNABLE_CONFIGS}
    for pair in ("R18-R101", "R50-R101", "MV2-R50"):
        for method in ("Student", "KD", "DKD", "FitNet", "FGFI", "ReviewKD", "ReviewKD-DKD", "FitNet-KD", "MLKD",
                       "UniKD", "PKD", "CWD", "FGD"):
            assert f"{method}-{pair}" in names


@pytest.mark.parametrize("config", RUNNABLE_CONFIGS, ids=[f"{p.parent.name}/{p.stem}" for p in RUNNABLE_CONFIGS])
def test_config_runs_one_cpu_training_step(config, make_inputs):
    from detectron2.config import get_cfg
    from detectron2.modeling import build_model
    from detectron2.utils.events import EventStorage

    from unikd_det import add_distill_config
    from unikd_det.meta_arch import enabled_terms
    from unikd_det.teacher import random_teacher_weights_for_tests

    cfg = get_cfg()
    add_distill_config(cfg)
    cfg.merge_from_file(str(config))
    cfg.merge_from_list(CHEAP_STEP)
    terms = enabled_terms(cfg) if cfg.MODEL.META_ARCHITECTURE == "DistillRCNN" else []
    distills = bool(terms)
    torch.manual_seed(0)
    model = build_model(cfg).train()
    params = [p for p in model.parameters() if p.requires_grad]
    before = [p.detach().clone() for p in params]
    optimizer = torch.optim.SGD(params, lr=0.01)
    with random_teacher_weights_for_tests(), EventStorage(0):
        losses = model(make_inputs(2, 64, seed=3))  # 2 images: ReviewKD BatchNorm at a 1x1 p6
    assert STOCK_LOSSES < set(losses) if distills else set(losses) == STOCK_LOSSES
    for key in set(losses) - STOCK_LOSSES:  # every distillation loss belongs to an enabled term
        assert any(key == f"loss_{t}" or key.startswith(f"loss_{t}_") for t in terms), (key, terms)
    for term in terms:  # and every enabled term contributes one
        assert any(k == f"loss_{term}" or k.startswith(f"loss_{term}_") for k in losses), (term, sorted(losses))
    for name, value in losses.items():
        assert torch.isfinite(value), name
    sum(losses.values()).backward()
    optimizer.step()
    assert any(not torch.equal(b, p) for b, p in zip(before, params))


def test_random_teacher_switch_is_scoped_and_needed(make_cfg, build, batched_inputs):
    """Outside the switch a missing teacher file is an error; inside it the teacher is built random."""
    from unikd_det.teacher import random_teacher_weights_for_tests

    cfg = make_cfg(kd=True, opts=["DISTILL.TEACHER.WEIGHTS", "/nonexistent/teacher.pth"])
    with pytest.raises(FileNotFoundError, match="teacher weights file not found"):
        build(cfg).build_teacher()
    with random_teacher_weights_for_tests():
        teacher = build(cfg).build_teacher()
    assert teacher is not None and not teacher.model.training
    with pytest.raises(FileNotFoundError):
        build(cfg).build_teacher()
