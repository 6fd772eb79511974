"""Reproducible DistillRCNN training on the CPU through the real DistillTrainer and data loader (tiny mosaics):
the same seed gives the same weights, a run interrupted after a checkpoint and resumed equals the
uninterrupted run bit for bit, evaluation is repeatable and leaves the RNGs alone, and every enabled
distillation term's losses reach metrics.json under their own names."""
from __future__ import annotations

import itertools
import json
from pathlib import Path

import pytest
import torch

MAX_ITER = 4
# KD + UniKD, a checkpoint and an evaluation every 2 iterations (the evaluation must not change training).
RUN_OPTS = ["SOLVER.MAX_ITER", MAX_ITER, "SOLVER.CHECKPOINT_PERIOD", 2, "TEST.EVAL_PERIOD", 2, "SEED", 3]


class Interrupted(RuntimeError):
    pass


def interrupt_after(iteration: int):
    """A hook that raises after `iteration` (0-based) has finished, after the hooks before it (the checkpoint)."""
    from detectron2.engine import HookBase

    class Interrupt(HookBase):
        def after_step(self):
            if self.trainer.iter == iteration:
                raise Interrupted(f"stopped after iteration {iteration}")

    return Interrupt()


def train(cfg, resume: bool = False, hooks=()) -> dict[str, torch.Tensor]:
    """Seed as tools/demo.py and tools/train_net.py do, build the trainer, (resume and) train; the weights."""
    from detectron2.utils.env import seed_all_rng

    from unikd_det.trainer import DistillTrainer

    seed_all_rng(cfg.SEED)
    trainer = DistillTrainer(cfg)
    trainer.register_hooks(list(hooks))
    trainer.resume_or_load(resume=resume)
    trainer.train()
    return {k: v.clone() for k, v in trainer.model.state_dict().items()}


def with_output(cfg, folder: Path):
    cfg = cfg.clone()
    cfg.OUTPUT_DIR = str(folder)
    return cfg


def assert_same_weights(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    different = [k for k in a if not torch.equal(a[k], b[k])]
    assert not different, f"{len(different)} tensors differ, e.g. {different[:3]}"


def test_two_seeded_trainings_end_with_identical_weights(trainer_cfg, tmp_path):
    from detectron2.modeling import build_model

    cfg = trainer_cfg(kd=True, unikd=True, opts=RUN_OPTS)
    first = train(with_output(cfg, tmp_path / "first"))
    second = train(with_output(cfg, tmp_path / "second"))
    assert_same_weights(first, second)

    torch.manual_seed(cfg.SEED)
    initial = build_model(cfg).state_dict()
    moved = [k for k in first if first[k].is_floating_point() and not torch.equal(first[k], initial[k])]
    assert any(k.startswith("student.") for k in moved) and any(k.startswith("distill_terms.") for k in moved)


def test_a_resumed_run_equals_the_uninterrupted_run(trainer_cfg, tmp_path):
    cfg = trainer_cfg(kd=True, unikd=True, opts=RUN_OPTS)
    uninterrupted = train(with_output(cfg, tmp_path / "whole"))

    parts = with_output(cfg, tmp_path / "parts")
    with pytest.raises(Interrupted):
        train(parts, hooks=[interrupt_after(1)])  # the checkpoint after iteration 1 is written, then it stops
    assert (tmp_path / "parts" / "last_checkpoint").read_text().strip() == "model_0000001.pth"
    resumed = train(parts, resume=True)
    assert_same_weights(resumed, uninterrupted)


def test_the_resumed_sampler_skips_the_images_already_read(trainer_cfg):
    """After a resume the data stream continues the uninterrupted one (Detectron2's stock resume restarts it)."""
    from detectron2.utils.env import seed_all_rng

    from unikd_det.trainer import DistillTrainer

    cfg = trainer_cfg(kd=True, unikd=False, opts=[*RUN_OPTS, "SOLVER.MAX_ITER", 2])
    batch = cfg.SOLVER.IMS_PER_BATCH
    seed_all_rng(cfg.SEED)
    reference = DistillTrainer(cfg)
    stream = list(itertools.islice(reference.data_loader.resumable_sampler, 3 * batch))
    reference.resume_or_load(resume=False)
    reference.train()  # iterations 0 and 1 read stream[:2 * batch]; model_final holds iteration 1

    seed_all_rng(cfg.SEED)
    resumed = DistillTrainer(cfg)
    resumed.resume_or_load(resume=True)
    assert resumed.start_iter == 2
    assert list(itertools.islice(resumed.data_loader.resumable_sampler, batch)) == stream[2 * batch:]


def test_evaluation_is_repeatable_and_leaves_the_rngs_alone(trainer_cfg, build):
    import numpy as np

    from unikd_det.trainer import DistillTrainer

    cfg = trainer_cfg(kd=False, unikd=False, opts=["MODEL.ROI_HEADS.SCORE_THRESH_TEST", 0.0])
    detections = Path(cfg.OUTPUT_DIR) / "inference" / cfg.DATASETS.TEST[0] / "coco_instances_results.json"
    model = build(cfg)
    runs = []
    for _ in range(2):
        torch.manual_seed(5)
        np.random.seed(5)
        before_torch, before_numpy = torch.get_rng_state(), np.random.get_state()[1].copy()
        results = DistillTrainer.test(cfg, model)
        assert torch.equal(torch.get_rng_state(), before_torch)
        assert np.array_equal(np.random.get_state()[1], before_numpy)
        runs.append((json.dumps(results), detections.read_text()))
    assert json.loads(runs[0][1]), "the model detected something: there are boxes and scores to compare"
    assert runs[0] == runs[1]  # the same metrics (NaN included) and the same detections, to the last digit


def test_every_enabled_term_logs_its_losses_to_metrics_json(trainer_cfg, capture_ctx):
    """Each term's losses reach Detectron2's EventStorage under their own names, hence metrics.json and
    TensorBoard (the JSON file is what is checked here)."""
    from detectron2.utils.env import seed_all_rng

    from unikd_det.trainer import DistillTrainer

    terms = ("KD", "UNIKD", "DKD", "MLKD", "FITNET", "REVIEWKD", "FGFI")
    cfg = trainer_cfg(kd=True, unikd=True, opts=[
        "SOLVER.MAX_ITER", 2, *[opt for node in terms[2:] for opt in (f"DISTILL.{node}.ENABLED", True)],
        "DISTILL.REVIEWKD.MID_CHANNELS", 8,
    ])
    seed_all_rng(0)
    trainer = DistillTrainer(cfg)
    returned: dict[str, set[str]] = {}
    for name, term in trainer.model.distill_terms.items():
        term.register_forward_hook(lambda module, args, out, name=name: returned.setdefault(name, set()).update(out))
    trainer.resume_or_load(resume=False)
    trainer.train()

    assert sorted(returned) == sorted(node.lower() for node in terms)
    lines = [json.loads(line) for line in (Path(cfg.OUTPUT_DIR) / "metrics.json").read_text().splitlines()]
    logged = next(line for line in lines if "total_loss" in line)  # the training losses of the last iteration
    assert logged["iteration"] == 1
    for name, keys in returned.items():
        assert keys and all(name in key.split("_") for key in keys), (name, keys)
        for key in keys:
            assert key in logged, f"{key} of the {name} term is not in metrics.json"
            assert isinstance(logged[key], float), key
