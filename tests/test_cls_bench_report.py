"""The bench report: selected-epoch means, and paired differences to vanilla and KD against a hand computation."""
from __future__ import annotations

import csv
import math

import pytest

from classification.bench.report import aggregate, write_reports

T_975_2 = 4.302653  # two-sided 95 % critical value of Student's t with 2 degrees of freedom


VAL = {"vanilla": [85.0, 85.5, 84.0], "kd": [88.0, 87.0, 88.6], "unikd": [88.4, 87.9, 88.0]}


def _rows():
    values = {"vanilla": [80.0, 81.0, 79.5], "kd": [83.0, 84.5, 82.0], "unikd": [83.5, 83.0, 84.0]}
    return [
        {"pair": "t->s", "method": method, "seed": seed, "selected_on": "val", "selected_epoch": 3,
         "val_top1": VAL[method][seed], "test_top1_selected": top1, "best_top1": top1 + 0.5, "best_epoch": 4, "last_top1": top1 - 0.2,
         "teacher_top1": 92.0, "epochs": 5, "num_train": 100, "train_seconds": 1.0}
        for method, seeds in values.items() for seed, top1 in enumerate(seeds)
    ]


def _hand_interval(a, b):
    d = [x - y for x, y in zip(a, b)]
    mean = sum(d) / 3
    std = math.sqrt(sum((x - mean) ** 2 for x in d) / 2)
    return mean, mean - T_975_2 * std / math.sqrt(3), mean + T_975_2 * std / math.sqrt(3)


def test_paired_differences_equal_a_hand_computation():
    table = {e["method"]: e for e in aggregate(_rows())}
    assert table["vanilla"]["vs"]["vanilla"] is None and table["kd"]["vs"]["kd"] is None
    for method, other, baseline, values in (
        ("kd", "vanilla", "vanilla", ([83.0, 84.5, 82.0], [80.0, 81.0, 79.5])),
        ("unikd", "kd", "kd", ([83.5, 83.0, 84.0], [83.0, 84.5, 82.0])),
    ):
        diff = table[method]["vs"][baseline]
        mean, low, high = _hand_interval(*values)
        assert (diff.mean, diff.low, diff.high) == (pytest.approx(mean), pytest.approx(low, abs=1e-5),
                                                    pytest.approx(high, abs=1e-5))
    assert table["kd"]["vs"]["vanilla"].separated and not table["unikd"]["vs"]["kd"].separated
    assert table["kd"]["main"] == (pytest.approx(83.1666667), pytest.approx(1.2583057))


def test_reports_are_written_with_the_intervals(tmp_path):
    write_reports(_rows(), tmp_path)
    text = (tmp_path / "results.md").read_text()
    mean, low, high = _hand_interval([83.0, 84.5, 82.0], [80.0, 81.0, 79.5])
    assert "test top-1 at the val-selected epoch" in text
    assert f"| t->s | kd | 3 | 83.17 +- 1.26 | **{mean:+.2f} [{low:+.2f}, {high:+.2f}]** |" in text
    with open(tmp_path / "methods.csv") as f:
        methods = {row["method"]: row for row in csv.DictReader(f)}
    assert float(methods["kd"]["minus_vanilla_low"]) == pytest.approx(low, abs=1e-5)
    assert methods["vanilla"]["minus_vanilla"] == ""
    with open(tmp_path / "results.csv") as f:
        assert len(list(csv.DictReader(f))) == 9
    assert (tmp_path / "results.png").stat().st_size > 1000


def test_reference_is_compared_on_validation_against_a_hand_computation(tmp_path):
    table = {e["method"]: e for e in aggregate(_rows(), reference="unikd")}
    assert table["unikd"]["val_vs_reference"] is None
    diff = table["kd"]["val_vs_reference"]
    mean, low, high = _hand_interval(VAL["kd"], VAL["unikd"])
    assert (diff.mean, diff.low, diff.high) == (pytest.approx(mean), pytest.approx(low, abs=1e-5),
                                                pytest.approx(high, abs=1e-5))
    assert table["vanilla"]["val_vs_reference"].separated  # -3.27 [-5.27, -1.26]: validation ranks it below
    assert table["kd"]["val"] == (pytest.approx(87.8666667), pytest.approx(0.8082904))
    write_reports(_rows(), tmp_path, reference="unikd")
    header, rule, *_ = (tmp_path / "results.md").read_text().splitlines()
    assert header.endswith("| val top-1 | val - unikd [95% CI] |") and rule.count("|") == header.count("|")
    with open(tmp_path / "methods.csv") as f:
        methods = {row["method"]: row for row in csv.DictReader(f)}
    assert float(methods["kd"]["val_minus_reference_high"]) == pytest.approx(high, abs=1e-5)
    assert methods["unikd"]["val_minus_reference"] == ""


def test_reference_needs_a_validation_split():
    rows = [{**row, "val_top1": None} for row in _rows()]
    assert aggregate(rows)[0]["main"]  # without a reference, runs without validation are fine
    with pytest.raises(ValueError, match="reference method 'unikd' is compared on validation top-1"):
        aggregate(rows, reference="unikd")
