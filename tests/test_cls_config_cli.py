"""Classification configs (every shipped file), config errors, the bench subcommand, and import hygiene."""
from __future__ import annotations

import contextlib
import csv
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from classification.__main__ import main
from classification.config import get_cfg, load_cfg
from classification.distillers import get_distiller_class
from classification.engine.optim import build_optimizers
from classification.models import build_model

CONFIG_DIR = Path(__file__).resolve().parent.parent / "classification" / "configs"
SHIPPED = sorted(p for p in CONFIG_DIR.rglob("*.yaml") if "bench" not in p.parts and not p.name.startswith("Base-"))


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: str(p.relative_to(CONFIG_DIR)))
def test_every_shipped_config_builds_and_trains_one_step(path):
    cfg = load_cfg(path)
    family = "imagenet" if cfg.DATASET.NAME == "imagenet" else "cifar"
    num_classes, size = (1000, 64) if family == "imagenet" else (10 if cfg.DATASET.NAME == "fashion_mnist" else 100, 32)
    torch.manual_seed(0)
    student = build_model(cfg.MODEL.STUDENT, num_classes, family)
    distiller_cls = get_distiller_class(cfg.DISTILLER.NAME)
    teacher = build_model(cfg.MODEL.TEACHER, num_classes, family) if distiller_cls.NEEDS_TEACHER else None
    distiller = distiller_cls.from_config(cfg, student, teacher, num_classes, family).train()
    optimizers, _ = build_optimizers(distiller.optimizer_param_groups(), cfg.SOLVER, None)
    images, targets = torch.randn(2, 3, size, size), torch.tensor([0, 1])
    before = [p.detach().clone() for p in distiller.student.parameters()]
    _, losses = distiller.train_step(images, targets, 0.5, optimizers, contextlib.nullcontext)
    assert losses and all(torch.isfinite(v) for v in losses.values())
    assert any(not torch.equal(a, b) for a, b in zip(before, distiller.student.parameters()))


def test_defaults_hold_every_registered_distillers_node():
    cfg = get_cfg()
    for node in ("KD", "DKD", "UNIKD", "SLKD"):
        assert node in cfg
    assert cfg.UNIKD.MODE == "paper" and cfg.SLKD.DETACH_SLT_TARGET is False


def test_base_file_is_merged_first_and_ints_are_accepted_for_floats(tmp_path):
    (tmp_path / "base.yaml").write_text("SOLVER:\n  LR: 0.2\n  EPOCHS: 7\n")
    (tmp_path / "child.yaml").write_text("_BASE_: base.yaml\nSOLVER:\n  EPOCHS: 9\nDKD:\n  WARMUP_EPOCHS: 2\n")
    cfg = load_cfg(tmp_path / "child.yaml", ["SOLVER.LR", "1"])
    assert (cfg.SOLVER.LR, cfg.SOLVER.EPOCHS, cfg.DKD.WARMUP_EPOCHS) == (1.0, 9, 2.0)
    assert isinstance(cfg.SOLVER.LR, float)


def test_config_errors_name_the_problem(tmp_path):
    (tmp_path / "bad.yaml").write_text("SOLVER:\n  LRR: 0.1\n")
    with pytest.raises(KeyError, match="LRR"):
        load_cfg(tmp_path / "bad.yaml")
    with pytest.raises(KeyError, match="UNIKD.ALHPA"):
        load_cfg(None, ["UNIKD.ALHPA", "2"])
    with pytest.raises(FileNotFoundError, match="missing.yaml"):
        load_cfg(tmp_path / "missing.yaml")
    with pytest.raises(ValueError, match="odd count"):
        load_cfg(None, ["SOLVER.LR"])
    (tmp_path / "loop.yaml").write_text("_BASE_: loop.yaml\n")
    with pytest.raises(ValueError, match="cycle"):
        load_cfg(tmp_path / "loop.yaml")


def test_bench_grid_runs_every_cell_once_and_writes_tables(tmp_path, cls_cfg, caplog):
    base = tmp_path / "base.yaml"
    base.write_text(cls_cfg("SOLVER.EPOCHS", 1).dump())
    grid = tmp_path / "grid.yaml"
    grid.write_text(
        "teachers:\n  resnet14: {config: base.yaml, overrides: [MODEL.STUDENT, resnet14]}\n"
        "pairs: [{teacher: resnet14, student: resnet8}]\n"
        "methods: {vanilla: base.yaml, kd: base.yaml}\n"
        "overrides: [SOLVER.EPOCHS, 2, SOLVER.MILESTONES, '[1]']\n"
        "seeds: [0, 1]\n"
    )
    # `methods` maps a label to a config; the method itself comes from DISTILLER.NAME, so give kd its own file.
    kd = tmp_path / "kd.yaml"
    kd.write_text("_BASE_: base.yaml\nDISTILLER:\n  NAME: kd\n")
    grid.write_text(grid.read_text().replace("kd: base.yaml", "kd: kd.yaml"))
    out = tmp_path / "bench"
    main(["bench", "--grid", str(grid), "--output-dir", str(out)])
    with open(out / "results.csv") as f:
        rows = list(csv.DictReader(f))
    assert [(r["method"], r["seed"]) for r in rows] == [("vanilla", "0"), ("vanilla", "1"), ("kd", "0"), ("kd", "1")]
    assert all(r["pair"] == "resnet14->resnet8" and r["epochs"] == "2" for r in rows)
    assert rows[2]["teacher_top1"] and not rows[0]["teacher_top1"]
    for method in ("vanilla", "kd"):
        best = [float(r["best_top1"]) for r in rows if r["method"] == method]
        mean = sum(best) / 2
        std = (sum((b - mean) ** 2 for b in best)) ** 0.5  # sample std of two values: |a - b| / sqrt(2)
        assert f"| resnet14->resnet8 | {method} | 2 | {mean:.2f} +- {std:.2f} |" in (out / "results.md").read_text()
    assert (out / "results.png").stat().st_size > 0
    stamp = (out / "resnet14-resnet8" / "kd" / "seed1" / "last.pth").stat().st_mtime_ns
    caplog.clear()
    with caplog.at_level("INFO"):
        main(["bench", "--grid", str(grid), "--output-dir", str(out)])
    assert (out / "resnet14-resnet8" / "kd" / "seed1" / "last.pth").stat().st_mtime_ns == stamp
    assert sum("skip" in r.getMessage() for r in caplog.records) == 5  # the teacher and the four cells


def test_bench_grid_with_unknown_keys_is_refused(tmp_path):
    grid = tmp_path / "grid.yaml"
    grid.write_text("pairs: []\nmethods: {}\nseeds: [0]\nepochs: 3\n")
    with pytest.raises(KeyError, match="epochs"):
        main(["bench", "--grid", str(grid)])


def test_speed_bench_prints_a_ratio_per_method(capsys):
    main(["bench", "--speed", "--student", "resnet8", "--teacher", "resnet14", "--methods", "kd", "unikd", "slkd",
          "--batch-size", "4", "--steps", "1", "--rounds", "1", "--device", "cpu"])
    out = capsys.readouterr().out
    for method in ("kd", "unikd", "slkd"):
        line = next(row for row in out.splitlines() if row.startswith(f"| {method} (c)"))
        assert float(line.split("|")[3]) > 0


def test_import_classification_needs_no_detectron2():
    code = (
        "import sys\n"
        "class Block:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] == 'detectron2':\n"
        "            raise ImportError('blocked ' + name)\n"
        "sys.meta_path.insert(0, Block())\n"
        "import classification, classification.engine, classification.bench, classification.config\n"
        "print('detectron2' in sys.modules)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "False"
