"""Issue 10, detection side: no file read runs code, no run is overwritten or mixed, a divergence keeps its resume
point, teacher weights must fit, every value is checked before any work, and hybrids compose. CPU, tiny images."""
from __future__ import annotations

import importlib.util
import itertools
import logging
import pickle
import re
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from conftest import TEACHER_OPTS

REPO_ROOT = Path(__file__).resolve().parent.parent
# train_net would generate the full built-in data set for its DATASETS; these tests fail before any data is read.
NO_DATA = ["DATASETS.TRAIN", (), "DATASETS.TEST", ()]
DETECTOR_LOSSES = {"loss_cls", "loss_box_reg", "loss_rpn_cls", "loss_rpn_loc"}


def load_tool(name: str):
    spec = importlib.util.spec_from_file_location(f"{name}_tool", REPO_ROOT / "tools" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def train_net():
    return load_tool("train_net")


# ---------------------------------------------------------------------------------------------------------
# Hostile files: reading one the unsafe way creates its marker file.
# ---------------------------------------------------------------------------------------------------------
class Planted:
    """Unpickling this runs `open(marker, "w")`: the marker file shows that code ran."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return exec, (f"open({self.marker!r}, 'w').close()",)


def write_hostile(kind: str, path: Path, marker: Path) -> Path:
    if kind == "pth":
        torch.save({"model": {"w": torch.zeros(1)}, "planted": Planted(marker)}, path)
    elif kind == "pkl":
        path.write_bytes(pickle.dumps({"model": {"w": Planted(marker)}, "__author__": "attacker"}))
    else:
        code = f"open({str(marker)!r}, 'w').close()"
        path.write_text(f'MODEL:\n  WEIGHTS: !!python/object/apply:builtins.exec ["{code}"]\n')
    return path


@pytest.fixture
def hostile(tmp_path):
    """hostile(kind, name=None) -> (path, marker) of a hostile .pth, .pkl or .yaml file."""

    def make(kind: str, name: str | None = None):
        marker = tmp_path / f"ran_{kind}_{name or 'file'}"
        return write_hostile(kind, tmp_path / (name or f"hostile.{kind}"), marker), marker

    return make


def refused(call, path: Path, marker: Path) -> str:
    """Run `call`, expect a ValueError that names `path`, and check no code ran; returns the message."""
    with pytest.raises(ValueError, match=re.escape(str(path))) as err:
        call()
    assert not marker.exists(), "code from the file ran"
    return str(err.value)


def test_the_hostile_files_do_run_code_when_read_unsafely(hostile):
    """The fixtures are real attacks: plain pickle, torch.load(weights_only=False) and yaml.unsafe_load run them."""
    for kind, unsafe_read in [
        ("pkl", lambda p: pickle.loads(p.read_bytes())),
        ("pth", lambda p: torch.load(p, weights_only=False)),
        ("yaml", lambda p: yaml.unsafe_load(p.read_text())),
    ]:
        path, marker = hostile(kind)
        unsafe_read(path)
        assert marker.exists(), kind


@pytest.mark.parametrize("kind", ["pth", "pkl"])
def test_hostile_teacher_weights_are_refused(make_cfg, build, hostile, kind):
    path, marker = hostile(kind)
    model = build(make_cfg(kd=True, opts=["DISTILL.TEACHER.WEIGHTS", str(path)]))
    assert "refused to load" in refused(model.build_teacher, path, marker)


def test_hostile_student_weights_and_resume_checkpoint_are_refused(trainer_cfg, hostile):
    from unikd_det.trainer import DistillTrainer

    trainer = DistillTrainer(trainer_cfg(kd=True, unikd=False))
    for kind in ("pth", "pkl"):  # MODEL.WEIGHTS of a new run
        path, marker = hostile(kind)
        trainer.cfg.MODEL.WEIGHTS = str(path)
        refused(lambda: trainer.resume_or_load(resume=False), path, marker)
    out = Path(trainer.cfg.OUTPUT_DIR)  # the checkpoint that last_checkpoint names, read by --resume
    path, marker = hostile("pth", "model_0000009.pth")
    (out / "model_0000009.pth").write_bytes(path.read_bytes())
    (out / "last_checkpoint").write_text("model_0000009.pth")
    refused(lambda: trainer.resume_or_load(resume=True), out / "model_0000009.pth", marker)


def test_eval_only_refuses_hostile_weights(train_net, make_cfg, hostile, tmp_path):
    path, marker = hostile("pkl")
    config = tmp_path / "distill.yaml"
    config.write_text(make_cfg(kd=True, opts=NO_DATA).dump())
    args = train_net.parse_args(
        ["--config-file", str(config), "--eval-only", "MODEL.WEIGHTS", str(path), "OUTPUT_DIR", str(tmp_path / "ev")]
    )
    refused(lambda: train_net.run(args), path, marker)


def test_hostile_config_files_are_refused(train_net, make_cfg, build, hostile, tmp_path):
    config, marker = hostile("yaml")
    args = train_net.parse_args(["--config-file", str(config), "OUTPUT_DIR", str(tmp_path / "out")])
    refused(lambda: train_net.run(args), config, marker)  # --config-file

    child = tmp_path / "child.yaml"
    child.write_text(f"_BASE_: {config.name}\nSOLVER:\n  MAX_ITER: 3\n")
    args = train_net.parse_args(["--config-file", str(child), "OUTPUT_DIR", str(tmp_path / "out")])
    refused(lambda: train_net.run(args), config, marker)  # its _BASE_
    assert not (tmp_path / "out").exists()  # refused before any work

    cfg = make_cfg(kd=True, opts=["DISTILL.TEACHER.CONFIG", str(config)])
    refused(lambda: build(cfg), config, marker)  # DISTILL.TEACHER.CONFIG


def test_export_refuses_hostile_and_foreign_checkpoints(hostile, tmp_path):
    from unikd_det.export import export_student

    path, marker = hostile("pth")
    refused(lambda: export_student(path, tmp_path / "out.pth"), path, marker)
    # A classification run's last.pth also holds `student.*` weights, but not a detector's.
    classification = tmp_path / "last.pth"
    torch.save({"model": {"student.conv1.weight": torch.zeros(1), "student.fc.weight": torch.zeros(1)},
                "epoch": 3}, classification)
    with pytest.raises(ValueError, match=r"last\.pth.*not a DistillRCNN checkpoint.*student\.backbone"):
        export_student(classification, tmp_path / "out.pth")
    assert not (tmp_path / "out.pth").exists()


def test_pycls_pyth_files_are_not_read(hostile, tmp_path):
    """Detectron2 reads `.pyth` with a bare torch.load (unrestricted before torch 2.6): refused, not read."""
    from unikd_det.checkpoint import SafeDetectionCheckpointer

    path, marker = hostile("pth", "weights.pyth")
    refused(lambda: SafeDetectionCheckpointer(torch.nn.Linear(1, 1)).load(str(path)), path, marker)


def test_model_zoo_pkl_formats_still_load(make_cfg, build, tmp_path):
    """A Detectron2 model-zoo .pkl (numpy arrays under "model", "__author__") loads as the teacher, strictly."""
    from detectron2.modeling import build_model

    from unikd_det.checkpoint import model_zoo_pkl_checkpoint
    from unikd_det.teacher import load_teacher_config

    cfg = make_cfg(kd=True)
    teacher_cfg = load_teacher_config(cfg)
    torch.manual_seed(7)
    source = build_model(teacher_cfg).state_dict()
    path = tmp_path / "model_final_zoo.pkl"
    path.write_bytes(pickle.dumps({"model": {k: v.numpy() for k, v in source.items()}, "__author__": "zoo"}))
    cfg.DISTILL.TEACHER.WEIGHTS = str(path)
    teacher = build(cfg).build_teacher()
    loaded = teacher.model.state_dict()
    assert all(torch.equal(loaded[k], v) for k, v in source.items())
    # Caffe2 / Detectron1 files: weights under "blobs", momenta dropped, converted by the matching heuristics.
    blobs = {"blobs": {"conv1_w": np.zeros(1), "conv1_w_momentum": np.zeros(1)}}
    assert model_zoo_pkl_checkpoint(blobs, "x.pkl") == {
        "model": {"conv1_w": blobs["blobs"]["conv1_w"]}, "__author__": "Caffe2", "matching_heuristics": True}


# ---------------------------------------------------------------------------------------------------------
# Nothing lost, nothing mixed
# ---------------------------------------------------------------------------------------------------------
@pytest.fixture
def run_args(train_net, make_cfg, tmp_path):
    """run_args(*extra) -> parsed train_net arguments of a tiny config writing to tmp_path/out."""
    config = tmp_path / "distill.yaml"
    config.write_text(make_cfg(kd=True, opts=NO_DATA).dump())

    def make(*extra):
        return train_net.parse_args(["--config-file", str(config), "OUTPUT_DIR", str(tmp_path / "out"), *extra])

    return make


def test_an_existing_run_is_refused_unless_resumed_or_overwritten(train_net, run_args, tmp_path, caplog):
    out = tmp_path / "out"
    out.mkdir()
    for name in ("last_checkpoint", "model_0000004.pth", "metrics.json"):
        (out / name).write_text("from an earlier run")
    with pytest.raises(FileExistsError, match="already holds a run.*last_checkpoint.*--resume.*--overwrite"):
        train_net.run(run_args())
    assert not (out / "config.yaml").exists()  # refused before default_setup wrote anything

    train_net.claim_run(run_args("--resume")).release()  # resuming the run there is fine
    assert (out / "model_0000004.pth").exists()

    with caplog.at_level(logging.WARNING):
        train_net.claim_run(run_args("--overwrite")).release()
    assert not any((out / name).exists() for name in ("last_checkpoint", "model_0000004.pth", "metrics.json"))
    assert "deleting" in caplog.text and "model_0000004.pth" in caplog.text


def test_a_second_run_into_a_folder_in_use_is_refused(train_net, run_args, tmp_path):
    from unikd.core.run_dir import claim_output_dir

    first = claim_output_dir(tmp_path / "out", train_net.RUN_FILES, resume=False)
    try:
        with pytest.raises(RuntimeError, match="another run .* is writing to"):
            train_net.run(run_args())
    finally:
        first.release()


def test_resume_anywhere_on_the_command_line_is_the_flag(run_args):
    args = run_args("SOLVER.MAX_ITER", "3", "--resume")
    assert args.resume and args.opts[-2:] == ["SOLVER.MAX_ITER", "3"] and "--resume" not in args.opts
    args = run_args("--overwrite", "SOLVER.MAX_ITER", "3")
    assert args.overwrite and not args.resume and "--overwrite" not in args.opts


@pytest.fixture
def checkpointing_trainer(trainer_cfg):
    """checkpointing_trainer(*opts) -> a tiny KD DistillTrainer that checkpoints every iteration."""
    from unikd_det.trainer import DistillTrainer

    def make(*opts):
        torch.manual_seed(0)
        cfg = trainer_cfg(kd=True, unikd=False, opts=["SOLVER.CHECKPOINT_PERIOD", 1, "SOLVER.MAX_ITER", 4, *opts])
        trainer = DistillTrainer(cfg)
        trainer.resume_or_load(resume=True)
        return trainer

    return make


def diverge_at(trainer, iteration: int, make_bad):
    """From `iteration` on, the KD term's losses become make_bad(losses, batch)."""
    from detectron2.utils.events import get_event_storage

    term = trainer.model.distill_terms["kd"]
    forward = term.forward
    term.forward = lambda ctx: make_bad(forward(ctx), ctx) if get_event_storage().iter >= iteration else forward(ctx)


def test_a_non_finite_loss_stops_at_its_iteration_and_keeps_the_resume_point(checkpointing_trainer):
    trainer = checkpointing_trainer()
    diverge_at(trainer, 2, lambda losses, ctx: {k: v * float("nan") for k, v in losses.items()})
    with pytest.raises(FloatingPointError, match=r"(?s)iteration=2\b.*model_0000001\.pth.*--resume"):
        trainer.train()
    out = Path(trainer.cfg.OUTPUT_DIR)
    assert (out / "last_checkpoint").read_text() == "model_0000001.pth"
    assert not (out / "model_0000002.pth").exists()


def test_non_finite_weights_are_never_checkpointed_and_the_run_is_rescued_with_a_smaller_lr(checkpointing_trainer):
    trainer = checkpointing_trainer()
    # At iteration 1 the loss stays finite but its gradient is NaN (d sqrt(u) at u = 0, times 0): the step writes
    # NaN weights, which the checkpoint of that iteration must not keep.
    def nan_gradient(losses, ctx):
        return {k: v + (ctx.student_logits.sum() * 0).sqrt() for k, v in losses.items()}

    diverge_at(trainer, 1, nan_gradient)
    with pytest.raises(FloatingPointError, match=r"(?s)not finite after iteration 1.*model_0000000\.pth"):
        trainer.train()
    out = Path(trainer.cfg.OUTPUT_DIR)
    assert (out / "last_checkpoint").read_text() == "model_0000000.pth"
    assert not (out / "model_0000001.pth").exists()

    base_lr = trainer.cfg.SOLVER.BASE_LR
    rescue = checkpointing_trainer("SOLVER.BASE_LR", base_lr / 10, "SOLVER.MAX_ITER", 2)
    assert rescue.start_iter == 1  # resumed after the last finite checkpoint
    assert rescue.scheduler.base_lrs == [pytest.approx(base_lr / 10)] * len(rescue.scheduler.base_lrs)
    assert all(g["lr"] <= base_lr / 10 + 1e-12 for g in rescue.optimizer.param_groups)
    rescue.train()
    assert (out / "last_checkpoint").read_text() == "model_final.pth"


def test_weights_that_are_not_finite_are_refused_on_load(checkpointing_trainer):
    """A checkpoint written after a divergence by an older version (NaN weights) is not resumed from."""
    from detectron2.checkpoint import DetectionCheckpointer

    trainer = checkpointing_trainer()
    out = Path(trainer.cfg.OUTPUT_DIR)
    with torch.no_grad():
        next(trainer.model.parameters()).fill_(float("nan"))
    DetectionCheckpointer(trainer.model, save_dir=str(out)).save("model_0000007", iteration=7)  # as older versions did
    with pytest.raises(ValueError, match=r"model_0000007\.pth holds weights that are not finite.*earlier checkpoint"):
        trainer.resume_or_load(resume=True)


@pytest.mark.parametrize(
    "weights_opts,named",
    [
        (["MODEL.ROI_HEADS.NUM_CLASSES", 5],
         r"of another shape: roi_heads\.box_predictor\.cls_score\.weight \(6, 32\) in the file, \(11, 32\) in the "),
        (["MODEL.RESNETS.DEPTH", 34], r"not in the model: backbone\.bottom_up\.res2\.2\."),
        (["MODEL.META_ARCHITECTURE", "DistillRCNN"],
         r"missing in the file: .*not in the model: student\..*export_student"),
    ],
    ids=["5-class weights, 10-class config", "R34 weights, R18 config", "a DistillRCNN checkpoint"],
)
def test_teacher_weights_that_do_not_fit_its_config_are_refused(
    make_cfg, build, make_stock_cfg, tmp_path, weights_opts, named
):
    from detectron2.checkpoint import DetectionCheckpointer
    from detectron2.modeling import build_model

    other = make_stock_cfg(["MODEL.META_ARCHITECTURE", "GeneralizedRCNN", *TEACHER_OPTS, *weights_opts])
    DetectionCheckpointer(build_model(other), save_dir=str(tmp_path)).save("other")
    cfg = make_cfg(kd=True, opts=["DISTILL.TEACHER.WEIGHTS", str(tmp_path / "other.pth")])
    with pytest.raises(ValueError, match=rf"(?s)other\.pth do not fit the model built from its config; {named}"):
        build(cfg).build_teacher()


# ---------------------------------------------------------------------------------------------------------
# Every value checked
# ---------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "key,value",
    [
        ("DISTILL.KD.TEMPERATURE", 0.0),
        ("DISTILL.DKD.TEMPERATURE", 0.0),
        ("DISTILL.MLKD.TEMPERATURES", [4.0, -1.0]),
        ("DISTILL.KD.WEIGHT", -1.0),
        ("DISTILL.DKD.BETA", -0.25),
        ("DISTILL.UNIKD.FIT_WEIGHT", -0.5),
        ("DISTILL.UNIKD.AFF.CHANNELS", 0),
        ("DISTILL.UNIKD.POOLER_RESOLUTION", 0),
        ("DISTILL.KD.WARMUP", -1),  # the per-term schedule that replaced DISTILL.WARMUP_ITERS
        ("DISTILL.UNIKD.START", -1),
        ("DISTILL.FGFI.START", -1),
        ("SOLVER.BASE_LR", -0.01),
        ("SOLVER.IMS_PER_BATCH", 0),
        ("SOLVER.MAX_ITER", 0),
        ("MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE", 0),
    ],
)
def test_bad_values_are_refused_naming_the_key(make_cfg, key, value):
    from unikd_det.config import validate_config

    with pytest.raises(ValueError, match=re.escape(f"{key} = {value!r}")):
        validate_config(make_cfg(opts=[key, value]))


def test_bad_distill_values_are_refused_when_the_model_is_built(make_cfg, build):
    cfg = make_cfg(kd=True, opts=["DISTILL.KD.WEIGHT", -1.0, "DISTILL.UNIKD.AFF.CHANNELS", 0])
    with pytest.raises(ValueError, match=r"DISTILL\.KD\.WEIGHT = -1\.0.*DISTILL\.UNIKD\.AFF\.CHANNELS = 0"):
        build(cfg)


def test_lr_zero_warns_and_stock_zero_means_off_stays_valid(make_cfg):
    from unikd_det.config import validate_config

    warnings = validate_config(make_cfg(opts=["SOLVER.BASE_LR", 0.0, "TEST.EVAL_PERIOD", 0]))
    assert warnings == ["SOLVER.BASE_LR = 0.0: nothing will be learned"]


SHIPPED_CONFIGS = sorted(p for p in (REPO_ROOT / "configs").rglob("*.yaml") if "bench" not in p.parts)  # bench: grids


def test_every_shipped_config_passes_the_checks():
    from detectron2.config import get_cfg

    from unikd_det import add_distill_config
    from unikd_det.config import merge_config_file, validate_config

    for path in SHIPPED_CONFIGS:
        cfg = get_cfg()
        add_distill_config(cfg)
        merge_config_file(cfg, str(path))
        validate_config(cfg)


# ---------------------------------------------------------------------------------------------------------
# Hybrids compose
# ---------------------------------------------------------------------------------------------------------
ALL_TERMS = [
    "DISTILL.KD.ENABLED", True, "DISTILL.DKD.ENABLED", True, "DISTILL.MLKD.ENABLED", True,
    "DISTILL.FITNET.ENABLED", True,
    "DISTILL.FGFI.ENABLED", True, "DISTILL.REVIEWKD.ENABLED", True, "DISTILL.REVIEWKD.MID_CHANNELS", 8,
    "DISTILL.UNIKD.ENABLED", True,
]


@pytest.mark.parametrize("mode", ["paper", "authors_code"])
def test_every_pair_of_terms_has_its_own_loss_keys(make_cfg, build, batched_inputs, train_forward, mode):
    model = build(make_cfg(opts=[*ALL_TERMS, "DISTILL.UNIKD.MODE", mode]))
    assert sorted(model.distill_terms) == ["dkd", "fgfi", "fitnet", "kd", "mlkd", "reviewkd", "unikd"]
    keys = {}
    for name, term in model.distill_terms.items():
        term.register_forward_hook(lambda module, args, out, name=name: keys.__setitem__(name, set(out)))
    losses = train_forward(model, batched_inputs)
    assert set(losses) == DETECTOR_LOSSES | set().union(*keys.values())
    for name, own in keys.items():
        assert own and all(name in key.split("_") for key in own), (name, own)
        assert not own & DETECTOR_LOSSES, name
    for (a, keys_a), (b, keys_b) in itertools.combinations(keys.items(), 2):
        assert not keys_a & keys_b, (a, b)


@pytest.mark.parametrize("returned", ["loss_cls", "loss_kdx", "loss_dkd"], ids=["stock-name", "prefix", "other-term"])
def test_a_term_loss_key_that_hides_its_term_is_refused(make_cfg, build, batched_inputs, train_forward, returned):
    """A term's key must be loss_<term> or loss_<term>_<part>: one that is not (a stock loss's name, another
    term's) would silently replace or hide a loss in the sum."""
    model = build(make_cfg(kd=True))
    term = model.distill_terms["kd"]
    forward = term.forward
    term.forward = lambda batch: {returned: forward(batch)["loss_kd"]}
    with pytest.raises(ValueError, match=re.escape(
        f"loss '{returned}' of term 'kd' does not carry the term's name (loss_kd[_<part>])"
    )):
        train_forward(model, batched_inputs)


@pytest.mark.parametrize("student_key", ["loss_kd", "loss_unikd_feat"])
def test_a_term_loss_key_that_clashes_with_the_students_own_losses_is_refused(
    make_cfg, build, batched_inputs, train_forward, student_key
):
    """The student's forward (a STUDENT_META_ARCHITECTURE subclass may add losses) owns its keys: a term loss
    of the same name would overwrite it in the loss dict, so it is refused."""
    model = build(make_cfg(kd=True, unikd=True))
    student_forward = model.student.forward

    def forward(batched_inputs):
        losses = student_forward(batched_inputs)
        losses[student_key] = losses["loss_cls"] * 0
        return losses

    model.student.forward = forward
    term = student_key.split("_")[1]
    with pytest.raises(ValueError, match=re.escape(
        f"loss '{student_key}' of term '{term}' clashes with another loss of that name"
    )):
        train_forward(model, batched_inputs)


@pytest.mark.parametrize(
    "opts,doubled",
    [
        (["DISTILL.KD.ENABLED", True], "kd in kd and unikd"),
        (["DISTILL.MLKD.ENABLED", True], "kd in mlkd and unikd"),
        (["DISTILL.DKD.ENABLED", True, "DISTILL.UNIKD.LOGIT_LOSS", "dkd"], "dkd in dkd and unikd"),
        (["DISTILL.DKD.ENABLED", True, "DISTILL.UNIKD.MODE", "authors_code"], "dkd in dkd and unikd"),
        (["DISTILL.KD.ENABLED", True, "DISTILL.MLKD.ENABLED", True, "DISTILL.UNIKD.LOGIT_LOSS", "none"],
         "kd in kd and mlkd"),
        (["DISTILL.MLKD.ENABLED", True, "DISTILL.UNIKD.LOGIT_LOSS", "dkd"], None),
        (["DISTILL.DKD.ENABLED", True], None),
        (["DISTILL.KD.ENABLED", True, "DISTILL.UNIKD.LOGIT_LOSS", "none"], None),
        (["DISTILL.KD.ENABLED", True, "DISTILL.UNIKD.MODE", "authors_code"], None),
        (["DISTILL.FITNET.ENABLED", True], None),
    ],
    ids=["unikd-kd+kd", "unikd-kd+mlkd", "unikd-dkd+dkd", "unikd-authors+dkd", "kd+mlkd", "unikd-dkd+mlkd",
         "unikd-kd+dkd", "unikd-none+kd", "unikd-authors+kd", "unikd+fitnet"],
)
def test_a_logit_loss_counted_twice_warns_once_at_build(make_cfg, build, caplog, opts, doubled):
    """One warning per build, naming the logit loss and the terms that each include it."""
    with caplog.at_level(logging.WARNING, logger="unikd"):
        build(make_cfg(unikd=True, opts=opts))
    records = [r for r in caplog.records if "count the same logit loss more than once" in r.getMessage()]
    assert len(records) == (1 if doubled else 0)
    if doubled:
        assert f"more than once: {doubled};" in records[0].getMessage()
