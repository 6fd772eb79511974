"""`python -m classification report` (unikd.bench.combine with the classification table): a grid's parts read back
from results.csv, checked, and reported as one."""
from __future__ import annotations

import csv
import statistics

import pytest

from classification.__main__ import main
from classification.bench import TABLE
from unikd.bench.combine import combine_results, report_results
from unikd.bench.report import read_results, write_report

TEST = {"kd": [83.0, 84.5, 82.0], "unikd": [83.5, 83.0, 84.0], "no_detach": [82.5, 84.0, 83.1]}
VAL = {"kd": [88.0, 87.0, 88.6], "unikd": [88.4, 87.9, 88.0], "no_detach": [88.1, 87.2, 87.7]}


def _row(method, seed, teacher=92.0, test=None):
    return {"pair": "t->s", "method": method, "seed": seed, "selected_on": "val", "selected_epoch": 3,
            "val_top1": VAL[method][seed], "test_top1_selected": TEST[method][seed] if test is None else test,
            "best_top1": TEST[method][seed] + 0.5, "best_epoch": 4, "last_top1": TEST[method][seed] - 0.2,
            "teacher_top1": teacher, "epochs": 5, "num_train": 100, "train_seconds": 12.5}


def _part(tmp_path, name, rows):
    write_report(rows, TABLE, tmp_path / name)
    return tmp_path / name / "results.csv"


def test_results_csv_reads_back_as_written(tmp_path):
    rows = [_row("kd", 0), {**_row("unikd", 1), "val_top1": None, "teacher_top1": None, "selected_on": "test"}]
    assert read_results(_part(tmp_path, "a", rows), TABLE) == rows


def test_two_parts_give_the_report_of_all_cells(tmp_path):
    """Part a ran kd and unikd, part b kd seed 0 again and no_detach: the report pairs all three methods."""
    a = _part(tmp_path, "a", [_row(m, s) for m in ("kd", "unikd") for s in range(3)])
    b = _part(tmp_path, "b", [_row("kd", 0)] + [_row("no_detach", s) for s in range(3)])
    rows = report_results([a, b], tmp_path / "all", TABLE, reference="unikd")
    assert [(r["method"], r["seed"]) for r in rows] == [(m, s) for m in ("kd", "unikd", "no_detach") for s in range(3)]
    with open(tmp_path / "all" / "methods.csv") as f:
        methods = {row["method"]: row for row in csv.DictReader(f)}
    diffs = [x - y for x, y in zip(TEST["no_detach"], TEST["kd"])]
    assert float(methods["no_detach"]["minus_kd"]) == pytest.approx(statistics.mean(diffs))
    val_diffs = [x - y for x, y in zip(VAL["no_detach"], VAL["unikd"])]
    assert float(methods["no_detach"]["select_minus_reference"]) == pytest.approx(statistics.mean(val_diffs))
    assert "val top-1 - unikd" in (tmp_path / "all" / "results.md").read_text()


def test_a_cell_that_did_not_repeat_is_refused(tmp_path):
    a = _part(tmp_path, "a", [_row("kd", 0)])
    b = _part(tmp_path, "b", [_row("kd", 0, test=83.01)])
    with pytest.raises(ValueError, match=r"kd seed 0 differs between .*a/results.csv and .*b/results.csv"):
        combine_results([a, b], TABLE)


def test_parts_with_different_teachers_are_refused(tmp_path):
    a = _part(tmp_path, "a", [_row("kd", 0)])
    b = _part(tmp_path, "b", [_row("unikd", 0, teacher=91.5)])
    with pytest.raises(ValueError, match="teacher 92.0 in .*but 91.5 in"):
        combine_results([a, b], TABLE)


def test_bad_inputs_name_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.csv"):
        read_results(tmp_path / "missing.csv", TABLE)
    (tmp_path / "other.csv").write_text("pair,method\nx,y\n")
    with pytest.raises(ValueError, match="other.csv: not a bench results.csv"):
        read_results(tmp_path / "other.csv", TABLE)
    bad = _part(tmp_path, "a", [_row("kd", 0)])
    bad.write_text(bad.read_text().replace(",0,val,", ",zero,val,"))
    with pytest.raises(ValueError, match="line 2: seed 'zero' is not a valid int"):
        read_results(bad, TABLE)
    with pytest.raises(ValueError, match="reference method 'dkd'"):
        report_results([_part(tmp_path, "b", [_row("kd", 0)])], tmp_path / "out", TABLE, reference="dkd")


def test_the_report_command_writes_the_table(tmp_path, capsys):
    a = _part(tmp_path, "a", [_row("kd", s) for s in range(3)])
    b = _part(tmp_path, "b", [_row("unikd", s) for s in range(3)])
    main(["report", "--results", str(a), str(b), "--output", str(tmp_path / "all"), "--reference", "kd"])
    assert "6 runs from 2 results.csv files" in capsys.readouterr().out
    text = (tmp_path / "all" / "results.md").read_text()
    assert "| t->s | unikd | 3 |" in text and "val top-1 - kd" in text
