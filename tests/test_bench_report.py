"""The one bench report (unikd.bench.report) with the classification table: selected-epoch means, paired
differences to vanilla and KD and the validation comparison with a reference, against a hand computation; one
seed gives plain numbers."""
from __future__ import annotations

import csv
import math

import pytest

from classification.bench import TABLE
from unikd.bench.report import aggregate, write_report

BASELINES = ("vanilla", "kd")

T_975_2 = 4.302653  # two-sided 95 % critical value of Student's t with 2 degrees of freedom


VAL = {"vanilla": [85.0, 85.5, 84.0], "kd": [88.0, 87.0, 88.6], "unikd": [88.4, 87.9, 88.0]}


def _rows():
    values = {"vanilla": [80.0, 81.0, 79.5], "kd": [83.0, 84.5, 82.0], "unikd": [83.5, 83.0, 84.0]}
    return [
        {"pair": "t->s", "method": method, "seed": seed, "selected_on": "val", "selected_epoch": 3,
         "val_top1": VAL[method][seed], "test_top1_selected": top1, "best_top1": top1 + 0.5, "best_epoch": 4,
         "last_top1": top1 - 0.2,
         "teacher_top1": 92.0, "epochs": 5, "num_train": 100, "train_seconds": 1.0}
        for method, seeds in values.items() for seed, top1 in enumerate(seeds)
    ]


def _hand_interval(a, b):
    d = [x - y for x, y in zip(a, b)]
    mean = sum(d) / 3
    std = math.sqrt(sum((x - mean) ** 2 for x in d) / 2)
    return mean, mean - T_975_2 * std / math.sqrt(3), mean + T_975_2 * std / math.sqrt(3)


def test_paired_differences_equal_a_hand_computation():
    table = {e.method: e for e in aggregate(_rows(), TABLE, BASELINES)}
    assert table["vanilla"].vs["vanilla"] is None and table["kd"].vs["kd"] is None
    for method, other, baseline, values in (
        ("kd", "vanilla", "vanilla", ([83.0, 84.5, 82.0], [80.0, 81.0, 79.5])),
        ("unikd", "kd", "kd", ([83.5, 83.0, 84.0], [83.0, 84.5, 82.0])),
    ):
        diff = table[method].vs[baseline]
        mean, low, high = _hand_interval(*values)
        assert (diff.mean, diff.low, diff.high) == (pytest.approx(mean), pytest.approx(low, abs=1e-5),
                                                    pytest.approx(high, abs=1e-5))
    assert table["kd"].vs["vanilla"].separated and not table["unikd"].vs["kd"].separated
    assert table["kd"].main == (pytest.approx(83.1666667), pytest.approx(1.2583057))


def test_reports_are_written_with_the_intervals(tmp_path):
    text = write_report(_rows(), TABLE, tmp_path)
    assert (tmp_path / "results.md").read_text() == text
    mean, low, high = _hand_interval([83.0, 84.5, 82.0], [80.0, 81.0, 79.5])
    assert text.startswith("Test top-1 (%) at the epoch selected on validation\n")
    assert f"| t->s | kd | 3 | 83.17 +- 1.26 | {mean:+.2f} [{low:+.2f}, {high:+.2f}] * | - |" in text
    assert f"- t->s: kd is above vanilla in top-1 ({mean:+.2f} [{low:+.2f}, {high:+.2f}])." in text
    with open(tmp_path / "methods.csv") as f:
        methods = {row["method"]: row for row in csv.DictReader(f)}
    assert float(methods["kd"]["minus_vanilla_low"]) == pytest.approx(low, abs=1e-5)
    assert methods["vanilla"]["minus_vanilla"] == ""
    with open(tmp_path / "results.csv") as f:
        assert len(list(csv.DictReader(f))) == 9
    assert (tmp_path / "results.png").stat().st_size > 1000


def test_reference_is_compared_on_validation_against_a_hand_computation(tmp_path):
    table = {e.method: e for e in aggregate(_rows(), TABLE, BASELINES, reference="unikd")}
    assert table["unikd"].select_vs_reference is None
    diff = table["kd"].select_vs_reference
    mean, low, high = _hand_interval(VAL["kd"], VAL["unikd"])
    assert (diff.mean, diff.low, diff.high) == (pytest.approx(mean), pytest.approx(low, abs=1e-5),
                                                pytest.approx(high, abs=1e-5))
    assert table["vanilla"].select_vs_reference.separated  # -3.27 [-5.27, -1.26]: validation ranks it below
    assert table["kd"].select == (pytest.approx(87.8666667), pytest.approx(0.8082904))
    write_report(_rows(), TABLE, tmp_path, reference="unikd")
    _, _, header, rule, *rows = (tmp_path / "results.md").read_text().splitlines()
    assert header.endswith("| val top-1 | val top-1 - unikd [95% CI] |") and rule.count("|") == header.count("|")
    assert rows[1].endswith(f"| 87.87 +- 0.81 | {mean:+.2f} [{low:+.2f}, {high:+.2f}] |")  # kd, not separated
    with open(tmp_path / "methods.csv") as f:
        methods = {row["method"]: row for row in csv.DictReader(f)}
    assert float(methods["kd"]["select_minus_reference_high"]) == pytest.approx(high, abs=1e-5)
    assert methods["unikd"]["select_minus_reference"] == ""


def test_reference_needs_a_validation_split():
    rows = [{**row, "val_top1": None} for row in _rows()]
    assert aggregate(rows, TABLE)[0].main  # without a reference, runs without validation are fine
    with pytest.raises(ValueError, match="reference method 'unikd' is compared on the selection split"):
        aggregate(rows, TABLE, reference="unikd")


def test_one_seed_gives_plain_numbers_and_says_it_ranks_nothing(tmp_path):
    rows = [row for row in _rows() if row["seed"] == 0]
    text = write_report(rows, TABLE, tmp_path, reference="unikd")
    assert "+-" not in text and "CI" not in text and "interval" not in text.split("\n\n")[1]
    assert "| t->s | kd | 83.00 | 83.50 | 82.80 | 92.00 | 88.00 |" in text  # top-1, best, last, teacher, val
    assert "they rank nothing" in text
    with open(tmp_path / "methods.csv") as f:
        assert next(row for row in csv.DictReader(f) if row["method"] == "kd")["minus_vanilla_low"] == ""
