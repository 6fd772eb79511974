"""`classification analyze` on two tiny synthetic runs: files written, numbers equal to a direct computation."""
from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from classification.analysis import analyze
from classification.data import build_data
from classification.engine import Trainer
from classification.engine.checkpoint import load_network
from classification.models import build_model
from unikd.core import kd_loss


@pytest.fixture
def two_runs(tmp_path, cls_cfg, cls_teacher):
    runs = []
    for method in ("vanilla", "kd"):
        out = tmp_path / method / "seed0"
        cfg = cls_cfg("DISTILLER.NAME", method, "MODEL.TEACHER", "resnet14", "MODEL.TEACHER_CHECKPOINT", cls_teacher,
                      "SOLVER.EPOCHS", 2, "OUTPUT_DIR", out)
        Trainer(cfg).train()
        runs.append(out)
    return runs, cls_teacher


def _direct_logits(cfg, arch, path):
    data = build_data(cfg, torch.device("cpu"))
    model = load_network(build_model(arch, data.num_classes, data.family), path, arch, data.num_classes).eval()
    with torch.no_grad():
        return torch.cat([model(x).logits for x, _, _ in data.test]).double(), torch.cat([y for _, y, _ in data.test])


def test_analyze_writes_the_figures_and_the_direct_numbers(tmp_path, cls_cfg, two_runs):
    runs, teacher_path = two_runs
    result = analyze(runs, tmp_path / "analysis")
    for name in ("loss_curves.png", "logit_diff_cdf.png", "corr_diff.png", "analysis.json"):
        assert (tmp_path / "analysis" / name).stat().st_size > 0
    assert json.loads((tmp_path / "analysis" / "analysis.json").read_text()) == result
    assert set(result) == {"vanilla/seed0", "kd/seed0"}

    cfg = cls_cfg()
    teacher, labels = _direct_logits(cfg, "resnet14", teacher_path)
    for run in runs:
        entry = result[f"{run.parent.name}/seed0"]
        student, _ = _direct_logits(cfg, "resnet8", run / "best_student.pth")
        diff = (student - teacher).abs().numpy().ravel()
        assert entry["mean_abs_logit_diff"] == pytest.approx(diff.mean(), rel=1e-5)
        assert entry["logit_diff_cdf"]["1"] == pytest.approx(np.mean(diff <= 1.0), abs=1e-6)
        corr = np.abs(np.corrcoef(student.numpy().T) - np.corrcoef(teacher.numpy().T))
        assert entry["mean_abs_corr_diff"] == pytest.approx(corr.mean(), rel=1e-4)

        # The final test CE and KD come from metrics.csv; recompute them from the last epoch's student.
        last, _ = _direct_logits(cfg, "resnet8", run / "last.pth")
        assert entry["final_test_ce"] == pytest.approx(float(F.cross_entropy(last, labels)), rel=1e-4)
        # rel 1e-3: the run's teacher is BN-folded and both networks ran channels_last; the rounding that moves
        # their logits by ~1e-6 moves a KL this small (about 2e-4, near-equal distributions) in its fourth digit
        assert entry["final_test_kd"] == pytest.approx(float(kd_loss(last, teacher, 4.0)), rel=1e-3)
        with open(run / "metrics.csv") as f:
            rows = list(csv.DictReader(f))
        assert len(rows) == 2 and all(float(r["test_ce"]) > 0 and float(r["test_kd"]) >= 0 for r in rows)


def test_analyze_scores_a_shared_teacher_once(tmp_path, two_runs, monkeypatch):
    """Both runs name the same teacher checkpoint: it is loaded and scored once, and both runs get its logits."""
    from classification import analysis

    loads = []
    real = analysis.load_named_teacher
    monkeypatch.setattr(analysis, "load_named_teacher", lambda *a: loads.append(a) or real(*a))
    runs, _ = two_runs
    cache = {}
    teachers = [analysis.run_logits(run, teacher_cache=cache)[1] for run in runs]
    assert len(loads) == 1 and len(cache) == 1
    assert teachers[0] is teachers[1]
    assert torch.equal(analysis.run_logits(runs[0])[1], teachers[0])  # no cache: loaded again, same logits
    assert len(loads) == 2


def test_analyze_refuses_a_folder_that_is_not_a_run(tmp_path):
    with pytest.raises(FileNotFoundError, match="config.yaml"):
        analyze([tmp_path], tmp_path / "out")
    with pytest.raises(ValueError, match="at least one"):
        analyze([], tmp_path / "out")


def test_analyze_command_line(tmp_path, two_runs, capsys):
    from classification.__main__ import main

    runs, _ = two_runs
    main(["analyze", "--run", str(runs[0]), "--run", str(runs[1]), "--output", str(tmp_path / "cli")])
    printed = json.loads(capsys.readouterr().out)
    assert printed == json.loads((tmp_path / "cli" / "analysis.json").read_text())
    assert set(printed) == {"vanilla/seed0", "kd/seed0"}
