"""timm and torchvision models as students and teachers (classification/models/external.py): one training step of
KD, DKD, FitNet, ReviewKD and UniKD per library pair at 64 px, each wrapper's declared stages against a forward,
weight files (a library state dict, safetensors, a run's checkpoint) and the errors for unknown names, class-count
mismatches and contradictory starting weights. Random weights and local files only: nothing is downloaded."""
from __future__ import annotations

import contextlib

import pytest
import torch
import torchvision
from safetensors.torch import save_file

from classification.config import load_cfg
from classification.data import build_data
from classification.distillers import get_distiller_class
from classification.engine import Trainer
from classification.engine.optim import build_optimizers
from classification.engine.trainer import load_weights
from classification.models import build_model

NUM_CLASSES = 5  # CLS_TINY_OPTS' synthetic classes
SIDE = 64
PAIRS = [("timm:resnet18", "timm:resnet50"), ("torchvision:mobilenet_v3_small", "torchvision:resnet50")]
METHODS = ["kd", "dkd", "fitnet", "reviewkd", "unikd"]


@pytest.fixture(scope="module")
def built():
    """name -> a model built once for the module (random weights), so the step tests share their networks."""
    cache: dict[str, torch.nn.Module] = {}

    def get(name: str) -> torch.nn.Module:
        if name not in cache:
            torch.manual_seed(0)
            cache[name] = build_model(name, NUM_CLASSES)
        return cache[name]

    return get


def library_model(name: str, num_classes: int = NUM_CLASSES) -> torch.nn.Module:
    """The library's own model (not wrapped), random weights."""
    library, _, model = name.partition(":")
    if library == "timm":
        import timm

        return timm.create_model(model, num_classes=num_classes)
    return torchvision.models.get_model(model, num_classes=num_classes)


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("student,teacher", PAIRS, ids=["timm", "torchvision"])
def test_one_training_step_of_every_method_for_both_libraries(cls_cfg, built, student, teacher, method):
    cfg = cls_cfg("DISTILLER.NAME", method, "MODEL.STUDENT", student, "MODEL.TEACHER", teacher,
                  "DATASET.SYNTHETIC.IMAGE_SIZE", SIDE, "SOLVER.BATCH_SIZE", 4)
    data = build_data(cfg, torch.device("cpu"))
    images, targets, indices = next(iter(data.train))
    assert images.shape[-2:] == (SIDE, SIDE)
    net_s, net_t = built(student), built(teacher)
    distiller = get_distiller_class(method).from_config(cfg, net_s, net_t, NUM_CLASSES, data.family,
                                                        train_labels=data.train_labels)
    optimizers, _ = build_optimizers(distiller.optimizer_param_groups(), cfg.SOLVER, None)
    before = [p.detach().clone() for p in net_s.parameters()]
    logits, losses = distiller.train_step(images, targets, 25.0, optimizers, contextlib.nullcontext, indices)
    assert logits.shape == (len(targets), NUM_CLASSES)
    assert any(key.startswith(f"loss_{method}") for key in losses), losses
    assert all(torch.isfinite(value) for value in losses.values()), losses
    assert any(not torch.equal(old, new) for old, new in zip(before, net_s.parameters()))


@pytest.mark.parametrize("name", ["timm:resnet18", "timm:convnext_atto", "torchvision:mobilenet_v3_small",
                                  "torchvision:resnet18"])
def test_declared_stages_match_a_forward_and_the_logits_are_the_librarys(name, caplog):
    torch.manual_seed(0)
    with caplog.at_level("INFO", logger="classification.models.external"):
        model = build_model(name, NUM_CLASSES).eval()
    assert f"{name} declares stem = " in caplog.text
    reference = library_model(name).eval()
    reference.load_state_dict(model.net.state_dict())  # the wrapper's weights are the library model's keys
    x = torch.randn(2, 3, SIDE, SIDE)
    with torch.no_grad():
        out, expected = model(x), reference(x)
    specs = model.feature_info
    assert [spec.name for spec in specs] == ["stem", *(f"stage{i}" for i in range(1, len(specs)))]
    assert len(out.feats) == len(specs) and out.preact_feats is None
    for spec, feat in zip(specs, out.feats):
        assert feat.shape[1] == spec.channels, spec
        assert SIDE // feat.shape[-1] == spec.reduction and feat.shape[-1] == feat.shape[-2], (spec, feat.shape)
    assert out.pooled.shape == (2, model.pooled_channels)
    assert torch.allclose(out.logits, expected, atol=1e-5)


def test_a_library_state_dict_and_a_safetensors_file_load(tmp_path):
    x = torch.randn(2, 3, SIDE, SIDE)
    for name, path in (("torchvision:mobilenet_v3_small", tmp_path / "tv.pth"),
                       ("timm:resnet18", tmp_path / "timm.safetensors")):
        torch.manual_seed(1)
        reference = library_model(name).eval()
        state = reference.state_dict()
        if path.suffix == ".safetensors":
            save_file({k: v.contiguous() for k, v in state.items()}, path)
        else:
            torch.save(state, path)
        torch.manual_seed(2)
        model = load_weights(build_model(name, NUM_CLASSES), path, name, NUM_CLASSES).eval()
        with torch.no_grad():
            assert torch.allclose(model(x).logits, reference(x), atol=1e-5), name


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_a_file_of_another_class_count_is_refused_naming_both_counts(tmp_path, suffix):
    path = tmp_path / f"ten{suffix}"
    state = library_model("timm:resnet18", num_classes=10).state_dict()
    save_file(state, path) if suffix == ".safetensors" else torch.save(state, path)
    with pytest.raises(ValueError, match=r"10-class classifier \(fc\).*timm:resnet18 was built for 5 classes"):
        load_weights(build_model("timm:resnet18", NUM_CLASSES), path, "timm:resnet18", NUM_CLASSES)


def test_a_corrupt_safetensors_file_is_an_error_naming_it(tmp_path):
    path = tmp_path / "bad.safetensors"
    path.write_bytes(b"not a safetensors file")
    with pytest.raises(ValueError, match="bad.safetensors is not a readable safetensors file"):
        load_weights(build_model("timm:resnet18", NUM_CLASSES), path, "timm:resnet18", NUM_CLASSES)


@pytest.mark.parametrize("name,pattern", [
    ("timm:resnet1800", r"unknown timm model 'resnet1800'"),
    ("torchvision:resnet1800", r"unknown torchvision model 'resnet1800'.*resnet18"),
    ("keras:resnet18", r"unknown model library 'keras' in 'keras:resnet18'"),
])
def test_an_unknown_library_model_is_a_key_error_naming_it(name, pattern):
    with pytest.raises(KeyError, match=pattern):
        build_model(name, NUM_CLASSES)


def test_a_pretrained_torchvision_classifier_is_fitted_to_the_class_count(monkeypatch):
    """MODEL.PRETRAINED without a download: the stand-in pretrained model has torchvision's 1000 classes."""
    real = torchvision.models.get_model
    monkeypatch.setattr(torchvision.models, "get_model", lambda name, weights: real(name))
    model = build_model("torchvision:mobilenet_v3_small", NUM_CLASSES, pretrained=True)
    assert model.net.get_submodule("classifier.3").out_features == NUM_CLASSES
    assert model(torch.randn(2, 3, SIDE, SIDE)).logits.shape == (2, NUM_CLASSES)


def test_pretrained_needs_a_library_student_and_excludes_student_weights():
    with pytest.raises(ValueError, match="MODEL.PRETRAINED needs a timm:<name> or torchvision:<name>.*'resnet8'"):
        load_cfg(None, ["MODEL.STUDENT", "resnet8", "MODEL.PRETRAINED", "True"])
    with pytest.raises(ValueError, match="set one of them"):
        load_cfg(None, ["MODEL.STUDENT", "timm:resnet18", "MODEL.PRETRAINED", "True", "MODEL.STUDENT_WEIGHTS", "a.pth"])
    with pytest.raises(ValueError, match="'resnet8' is a zoo model"):
        build_model("resnet8", NUM_CLASSES, pretrained=True)


def test_a_run_starts_from_student_weights_and_a_library_teacher_file(cls_cfg, tmp_path):
    student, teacher = "timm:mobilenetv3_small_050", "torchvision:mobilenet_v3_small"
    torch.manual_seed(3)
    student_state = library_model(student).state_dict()
    save_file({k: v.contiguous() for k, v in student_state.items()}, tmp_path / "student.safetensors")
    teacher_state = library_model(teacher).state_dict()
    torch.save(teacher_state, tmp_path / "teacher.pth")
    cfg = cls_cfg("DISTILLER.NAME", "kd", "MODEL.STUDENT", student, "MODEL.TEACHER", teacher,
                  "MODEL.STUDENT_WEIGHTS", tmp_path / "student.safetensors",
                  "MODEL.TEACHER_CHECKPOINT", tmp_path / "teacher.pth",
                  "DATASET.SYNTHETIC.IMAGE_SIZE", SIDE, "SOLVER.EPOCHS", 1)
    trainer = Trainer(cfg)
    for network, state in ((trainer.distiller.student, student_state), (trainer.distiller.teacher, teacher_state)):
        loaded = network.net.state_dict()
        assert all(torch.equal(loaded[key], value) for key, value in state.items())
    summary = trainer.train()
    assert summary["epochs"] == 1 and summary["teacher"] == teacher
    # The run's own best_student.pth (its only epoch) loads as a teacher checkpoint of that architecture.
    again = load_weights(build_model(student, NUM_CLASSES), tmp_path / "run" / "best_student.pth", student,
                         NUM_CLASSES).state_dict()
    assert all(torch.equal(again[k], v) for k, v in trainer.distiller.student.state_dict().items())
