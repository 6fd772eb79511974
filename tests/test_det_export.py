"""export_student / tools/export_student.py: a stock GeneralizedRCNN checkpoint that reproduces the
wrapper's detections exactly."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

REPO_ROOT = Path(__file__).resolve().parent.parent


def load_counting_incompatible(model, path):
    """DetectionCheckpointer(model).load(path), returning the incompatible keys it found."""
    from detectron2.checkpoint import DetectionCheckpointer

    checkpointer = DetectionCheckpointer(model)
    found = {}
    original = checkpointer._load_model

    def spy(checkpoint):
        found["incompatible"] = original(checkpoint)
        return found["incompatible"]

    checkpointer._load_model = spy
    checkpointer.load(str(path))
    return found["incompatible"]


@pytest.fixture
def trained_wrapper_checkpoint(make_cfg, build, make_inputs, train_forward, tmp_path):
    """A DistillRCNN (ROI KD + UniKD, BN) after two SGD steps, saved by DetectionCheckpointer."""
    from detectron2.checkpoint import DetectionCheckpointer

    cfg = make_cfg(kd=True, unikd=True, opts=["MODEL.ROI_HEADS.SCORE_THRESH_TEST", 0.0])
    model = build(cfg)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    for step in range(2):
        losses = train_forward(model, make_inputs(2, seed=step), it=step, seed=step)
        optimizer.zero_grad()
        sum(losses.values()).backward()
        optimizer.step()
    DetectionCheckpointer(model, save_dir=str(tmp_path)).save("model_final", iteration=1)
    return cfg, model, tmp_path / "model_final.pth"


def stock_from(cfg):
    from detectron2.modeling import build_model

    stock_cfg = cfg.clone()
    stock_cfg.MODEL.META_ARCHITECTURE = "GeneralizedRCNN"
    torch.manual_seed(123)  # a different init, overwritten by the load
    return build_model(stock_cfg)


def assert_same_detections(wrapper, stock, inputs):
    wrapper.eval()
    stock.eval()
    with torch.no_grad():
        expected = wrapper(inputs)
        got = stock(inputs)
    total = 0
    for a, b in zip(expected, got):
        a, b = a["instances"], b["instances"]
        total += len(a)
        assert torch.equal(a.pred_boxes.tensor, b.pred_boxes.tensor)
        assert torch.equal(a.scores, b.scores)
        assert torch.equal(a.pred_classes, b.pred_classes)
    assert total > 0  # the comparison is not vacuous


def test_export_student_reproduces_wrapper_detections(trained_wrapper_checkpoint, make_inputs, tmp_path):
    from unikd_det.export import export_student

    cfg, wrapper, checkpoint = trained_wrapper_checkpoint
    saved = torch.load(checkpoint, map_location="cpu", weights_only=False)["model"]
    assert any(k.startswith("distill_terms.") for k in saved)  # UniKD modules are in the wrapper checkpoint

    out = export_student(checkpoint, tmp_path / "exported" / "student.pth")
    assert out == tmp_path / "exported" / "student.pth" and out.is_file()
    exported = torch.load(out, map_location="cpu", weights_only=False)
    assert set(exported) == {"model"}
    assert not any(k.startswith(("student.", "distill_terms.")) or "teacher" in k for k in exported["model"])

    stock = stock_from(cfg)
    assert set(exported["model"]) == set(stock.state_dict())
    incompatible = load_counting_incompatible(stock, out)
    assert not incompatible.missing_keys
    assert not incompatible.unexpected_keys
    assert not incompatible.incorrect_shapes
    # BN running statistics came along (they moved during the two training steps)
    name = "backbone.bottom_up.stem.conv1.norm.running_mean"
    assert torch.equal(stock.state_dict()[name], wrapper.student.state_dict()[name])
    assert stock.state_dict()[name].abs().sum() > 0

    assert_same_detections(wrapper, stock, make_inputs(2, seed=42))


def test_export_cli_writes_the_same_checkpoint(trained_wrapper_checkpoint, make_inputs, tmp_path):
    from unikd_det.export import export_student

    cfg, wrapper, checkpoint = trained_wrapper_checkpoint
    api = export_student(checkpoint, tmp_path / "api.pth")
    cli = tmp_path / "elsewhere" / "cli.pth"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(
        [sys.executable, str(REPO_ROOT / "tools" / "export_student.py"), str(checkpoint), str(cli)],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert str(cli) in result.stdout
    a = torch.load(api, map_location="cpu", weights_only=False)["model"]
    b = torch.load(cli, map_location="cpu", weights_only=False)["model"]
    assert list(a) == list(b)
    assert all(torch.equal(a[k], b[k]) for k in a)

    stock = stock_from(cfg)
    incompatible = load_counting_incompatible(stock, cli)
    assert not incompatible.missing_keys and not incompatible.unexpected_keys
    assert_same_detections(wrapper, stock, make_inputs(1, seed=7))


def test_export_cli_main_in_process(trained_wrapper_checkpoint, tmp_path, capsys):
    import importlib.util

    spec = importlib.util.spec_from_file_location("export_student_tool", REPO_ROOT / "tools" / "export_student.py")
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    _, wrapper, checkpoint = trained_wrapper_checkpoint
    tool.main([str(checkpoint), str(tmp_path / "main.pth")])
    assert "wrote" in capsys.readouterr().out
    exported = torch.load(tmp_path / "main.pth", map_location="cpu", weights_only=False)["model"]
    student = wrapper.student.state_dict()
    assert set(exported) == set(student)
    assert all(torch.equal(exported[k], student[k]) for k in student)


def test_export_rejects_bad_inputs(tmp_path):
    from unikd_det.export import export_student

    with pytest.raises(FileNotFoundError, match="checkpoint not found"):
        export_student(tmp_path / "nope.pth", tmp_path / "out.pth")
    stock_like = tmp_path / "stock.pth"
    torch.save({"model": {"backbone.weight": torch.zeros(1)}}, stock_like)
    with pytest.raises(ValueError, match="student"):
        export_student(stock_like, tmp_path / "out.pth")


def test_wrapper_initialises_its_student_from_a_stock_pkl_backbone(make_cfg, build, tmp_path):
    """MODEL.WEIGHTS of the COCO configs is an ImageNet backbone .pkl in Detectron2's converted format; the
    trainer's checkpointer (restricted unpickler, then Detectron2's matching heuristics) must put it into
    `student.backbone.bottom_up` of the wrapper."""
    import pickle

    from unikd_det.checkpoint import SafeDetectionCheckpointer

    cfg = make_cfg(unikd=True)
    source = build(cfg, seed=5).student.backbone.bottom_up.state_dict()
    blob = {
        "model": {k: v.numpy() for k, v in source.items() if not k.endswith("num_batches_tracked")},
        "__author__": "torchvision",
        "matching_heuristics": True,
    }
    path = tmp_path / "R-18.pkl"
    path.write_bytes(pickle.dumps(blob))
    wrapper = build(cfg, seed=6)
    before = {k: v.clone() for k, v in wrapper.state_dict().items() if not k.startswith("student.backbone.bottom_up.")}
    SafeDetectionCheckpointer(wrapper).load(str(path))
    loaded = wrapper.student.backbone.bottom_up.state_dict()
    for key, value in blob["model"].items():
        assert torch.equal(loaded[key], torch.from_numpy(value)), key
    # nothing else was touched (FPN, heads, UniKD modules)
    after = wrapper.state_dict()
    assert all(torch.equal(after[k], v) for k, v in before.items())
