"""The bench report: selected-epoch means, and paired differences to vanilla and KD against a hand computation."""
from __future__ import annotations

import csv
import math

import pytest

from classification.bench.report import aggregate, write_reports

T_975_2 = 4.302653  # two-sided 95 % critical value of Student's t with 2 degrees of freedom


def _rows():
    values = {"vanilla": [80.0, 81.0, 79.5], "kd": [83.0, 84.5, 82.0], "unikd": [83.5, 83.0, 84.0]}
    return [
        {"pair": "t->s", "method": method, "seed": seed, "selected_on": "val", "selected_epoch": 3, "val_top1": 90.0,
         "test_top1_selected": top1, "best_top1": top1 + 0.5, "best_epoch": 4, "last_top1": top1 - 0.2,
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
