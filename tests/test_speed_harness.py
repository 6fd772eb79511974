"""The shared speed harness `unikd.bench.speed` on fake steps of known cost (a fake clock, never sleep), its
ratios to a floor, its table and JSON record, and one tiny run of each front end (`bench --speed`,
tools/benchmark_det.py) on the CPU."""
from __future__ import annotations

import importlib.util
import json
import sys
import time
from datetime import datetime
from pathlib import Path

import pytest
import torch

from unikd.bench.speed import (
    Step, StepTimings, floor_seconds, ratio_to_floor, ratios_to_floors, render_table, speed_record, time_interleaved,
    write_json,
)

REPO = Path(__file__).resolve().parent.parent


class FakeClock:
    """A clock that only moves when a fake step charges it, so every timed call lasts exactly its given cost;
    the `clock` fixture puts it in place of time.perf_counter."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch) -> FakeClock:
    """The FakeClock that time.perf_counter reads during the test."""
    fake = FakeClock()
    monkeypatch.setattr(time, "perf_counter", fake)
    return fake


def costed_steps(clock: FakeClock, costs: dict[str, list[float]], calls: list[str]) -> dict[str, Step]:
    """Steps that record their name in `calls` and charge `clock` their next cost (warm-up calls included)."""
    def make(name: str) -> Step:
        remaining = iter(costs[name])

        def step() -> None:
            calls.append(name)
            clock.now += next(remaining)

        return step

    return {name: make(name) for name in costs}


def table_cells(table: str) -> list[list[str]]:
    """The stripped cells of a github-markdown table's header and body rows (the separator line left out)."""
    lines = table.splitlines()
    assert set(lines[1]) <= set("|-: ")
    return [[cell.strip() for cell in line.strip("|").split("|")] for line in [lines[0], *lines[2:]]]


def test_steps_are_warmed_up_then_interleaved_round_by_round(clock):
    calls: list[str] = []
    steps = costed_steps(clock, {name: [0.0] * 8 for name in "abc"}, calls)
    timings = time_interleaved(steps, rounds=2, calls_per_round=3, warmup=2)
    assert calls == list("aabbcc") + (list("aaa") + list("bbb") + list("ccc")) * 2
    assert {name: len(values) for name, values in timings.samples.items()} == {"a": 6, "b": 6, "c": 6}


def test_medians_of_the_scripted_times_match_a_hand_computation(clock, capsys):
    # First cost of each step is its single warm-up call: untimed, so its 100 s must not show.
    costs = {"a": [100.0, 1.0, 5.0, 2.0, 9.0], "b": [100.0, 4.0, 4.0, 8.0, 1.0]}
    timings = time_interleaved(costed_steps(clock, costs, []), rounds=2, calls_per_round=2)
    assert timings.samples == {"a": [1.0, 5.0, 2.0, 9.0], "b": [4.0, 4.0, 8.0, 1.0]}
    assert timings.medians == {"a": 3.5, "b": 4.0}  # a: (2 + 5) / 2; b: (4 + 4) / 2
    # The running medians after round 1: a of [1, 5] is 3, b of [4, 4] is 4.
    assert capsys.readouterr().out.splitlines() == ["round 1/2: a 3.000s, b 4.000s", "round 2/2: a 3.500s, b 4.000s"]


def test_each_timed_call_sits_between_two_device_synchronisations(monkeypatch):
    events: list[str] = []
    monkeypatch.setattr(torch.cuda, "synchronize", lambda device=None: events.append("sync"))
    monkeypatch.setattr(time, "perf_counter", lambda: events.append("clock") or 0.0)
    time_interleaved({"a": lambda: events.append("a")}, rounds=1, calls_per_round=2, device="cuda", warmup=0)
    assert events == ["sync", "clock", "a", "sync", "clock"] * 2


def test_no_peak_memory_off_cuda_and_no_extra_call_for_it(clock):
    calls: list[str] = []
    steps = costed_steps(clock, {"a": [0.0] * 2}, calls)
    timings = time_interleaved(steps, rounds=1, calls_per_round=1, peak_memory=True)
    assert timings.peak_mib == {"a": None}
    assert calls == ["a", "a"]  # warm-up and the timed call only


def test_peak_memory_on_cuda_is_read_after_one_extra_call_from_a_reset_peak(monkeypatch):
    events: list[str] = []
    monkeypatch.setattr(torch.cuda, "synchronize", lambda device=None: None)
    monkeypatch.setattr(torch.cuda, "reset_peak_memory_stats", lambda device=None: events.append("reset"))
    monkeypatch.setattr(torch.cuda, "max_memory_allocated", lambda device=None: 3 * 2**20)
    timings = time_interleaved({"a": lambda: events.append("a")}, rounds=1, calls_per_round=1, device="cuda",
                               warmup=0, peak_memory=True)
    assert events == ["a", "reset", "a"]
    assert timings.peak_mib == {"a": 3.0}


@pytest.mark.parametrize("counts", [{"rounds": 0}, {"calls_per_round": 0}, {"warmup": -1}])
def test_counts_below_their_minimum_are_refused(counts):
    arguments = {"rounds": 1, "calls_per_round": 1, "warmup": 1, **counts}
    with pytest.raises(ValueError, match="need rounds >= 1"):
        time_interleaved({"a": lambda: None}, **arguments)


def test_no_steps_is_refused():
    with pytest.raises(ValueError, match="at least one step"):
        time_interleaved({}, rounds=1, calls_per_round=1)


def test_ratio_divides_by_the_weighted_sum_of_the_floor_steps():
    medians = {"a": 2.0, "b": 3.0, "d": 5.0, "kd": 6.0, "slkd": 30.0}
    assert floor_seconds(medians, {"a": 1, "b": 1}) == 5.0
    assert floor_seconds(medians, {"a": 1, "b": 1, "d": 2}) == 15.0  # 2 + 3 + 2 x 5
    assert ratio_to_floor(medians, "kd", {"a": 1, "b": 1}) == pytest.approx(6.0 / 5.0)
    assert ratio_to_floor(medians, "slkd", {"a": 1, "b": 1, "d": 2}) == pytest.approx(30.0 / 15.0)
    floors = {"slkd": {"a": 1, "b": 1, "d": 2}, "kd": {"a": 1, "b": 1}}
    ratios = ratios_to_floors(medians, floors)
    assert list(ratios) == ["slkd", "kd"] and ratios == pytest.approx({"slkd": 2.0, "kd": 1.2})


@pytest.mark.parametrize(("variant", "floor", "unknown"), [
    ("kd", {"a": 1, "teacher": 1}, "['teacher']"),
    ("unikd", {"a": 1}, "['unikd']"),
])
def test_unknown_step_names_are_refused_naming_them_and_the_timed_steps(variant, floor, unknown):
    with pytest.raises(ValueError, match=rf"unknown steps \{unknown}: the timed steps are \['a', 'kd'\]"):
        ratio_to_floor({"a": 2.0, "kd": 3.0}, variant, floor)


def test_an_empty_floor_is_refused():
    with pytest.raises(ValueError, match="at least one baseline"):
        ratio_to_floor({"kd": 3.0}, "kd", {})


def test_table_keeps_the_cells_as_formatted():
    table = render_table([["student", "0.100", ""], ["kd (c)", "0.250", "1.050"]], ["step", "s", "ratio"])
    assert table_cells(table) == [["step", "s", "ratio"], ["student", "0.100", ""], ["kd (c)", "0.250", "1.050"]]


def test_speed_record_holds_samples_ratios_table_and_machine(tmp_path):
    timings = StepTimings(samples={"a": [1.0, 3.0], "b": [1.0, 1.0], "kd": [2.0, 4.0, 9.0]},
                          peak_mib={"a": None, "b": None, "kd": None})
    path = tmp_path / "speed.json"
    write_json(speed_record(timings, {"kd": {"a": 1, "b": 1}}, "| table |", {"rounds": 1}, "cpu"), path)
    record = json.loads(path.read_text())
    assert record["steps"]["kd"] == {"median_s": 4.0, "peak_mib": None, "samples_s": [2.0, 4.0, 9.0]}
    assert record["ratios"] == {"kd": {"floor": {"a": 1, "b": 1}, "ratio": 4.0 / (2.0 + 1.0)}}
    assert record["table"] == "| table |" and record["settings"] == {"rounds": 1}
    assert record["machine"]["torch"] == torch.__version__ and record["machine"]["gpu"] is None
    assert record["machine"]["cpu_count"] >= 1 and record["machine"]["cpu"]
    assert len(record["machine"]["load_average"]) == 3
    assert datetime.fromisoformat(record["date"]).utcoffset().total_seconds() == 0


def test_classification_speed_bench_prints_and_records_its_ratios(capsys, tmp_path):
    from classification.__main__ import build_parser
    from classification.bench import run_speed

    args = build_parser().parse_args(["bench", "--speed", "--methods", "kd", "slkd", "--student", "resnet8",
                                      "--teacher", "resnet8x4", "--batch-size", "2", "--steps", "1", "--rounds",
                                      "1", "--device", "cpu"])
    ratios = run_speed(args, output=tmp_path / "speed.json")
    assert list(ratios) == ["kd", "slkd"] and all(ratio > 0 for ratio in ratios.values())
    out = capsys.readouterr().out
    assert sum(line.startswith("round ") for line in out.splitlines()) == 1
    record = json.loads((tmp_path / "speed.json").read_text())
    assert record["table"] in out
    cells = {row[0]: row for row in table_cells(record["table"])}
    assert float(cells["kd (c)"][2]) == pytest.approx(ratios["kd"], abs=5e-4) and cells["kd (c)"][3] == "<= 1.05"
    assert cells["student (a)"][2:4] == ["", ""] and cells["kd (c)"][4] == "n/a (CPU)"
    medians = {name: step["median_s"] for name, step in record["steps"].items()}
    slkd_floor = medians["student (a)"] + medians["teacher forward (b)"] + 2 * medians["teacher-arch step (d)"]
    assert ratios["slkd"] == pytest.approx(medians["slkd"] / slkd_floor)
    assert record["ratios"]["slkd"]["floor"] == {"student (a)": 1, "teacher forward (b)": 1,
                                                 "teacher-arch step (d)": 2}
    assert record["settings"]["methods"] == ["kd", "slkd"] and "func" not in record["settings"]


def test_classification_default_methods_leave_out_only_the_detection_terms():
    from classification.bench.speed import PAPER_HYBRIDS, default_methods
    from classification.distillers import registered_distillers
    from classification.distillers.terms import SUPPORTED
    from unikd.terms import registered_terms

    singles = [name for name in default_methods() if name not in PAPER_HYBRIDS]
    detection_only = {name for name, term in registered_terms().items() if not term.requires <= SUPPORTED}
    assert "fgfi" in detection_only  # anchors and ground-truth boxes
    assert set(registered_distillers()) - set(singles) == {"vanilla", "hybrid"} | detection_only


def test_detection_benchmark_prints_and_records_its_ratios(mosaic_data, monkeypatch, capsys, tmp_path):
    spec = importlib.util.spec_from_file_location("benchmark_det", REPO / "tools" / "benchmark_det.py")
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    monkeypatch.setattr(tool, "register_fashion_mosaic", lambda root: mosaic_data)  # the tiny set, not 2000
    medians = tool.main(["--size", "64", "--batch", "2", "--iters", "1", "--rounds", "1", "--methods", "roi_kd",
                         "--aff-channels", "16", "--output", str(tmp_path / "det.json")])
    assert list(medians) == ["student", "teacher", "roi_kd", "unikd@16"]
    record = json.loads((tmp_path / "det.json").read_text())
    assert record["table"] in capsys.readouterr().out
    cells = {row[0]: row for row in table_cells(record["table"])}
    assert cells["student"][2] == "" and cells["teacher"][2] == ""
    for variant in ("roi_kd", "unikd@16"):
        expected = medians[variant] / (medians["student"] + medians["teacher"])
        assert float(cells[variant][2]) == pytest.approx(expected, abs=5e-4)
        assert record["ratios"][variant] == {"floor": {"student": 1, "teacher": 1}, "ratio": pytest.approx(expected)}
    assert record["settings"]["aff_channels"] == [16] and "output" not in record["settings"]


@pytest.mark.slow
def test_the_speed_bench_times_compiled_steps_against_the_compiled_floor(capsys):
    from classification.__main__ import build_parser
    from classification.bench import run_speed

    args = build_parser().parse_args(["bench", "--speed", "--compile", "--methods", "kd", "--student", "resnet8",
                                      "--teacher", "resnet14", "--batch-size", "2", "--steps", "1", "--rounds", "1",
                                      "--device", "cpu"])
    ratios = run_speed(args)
    assert list(ratios) == ["kd", "kd compiled"] and all(ratio > 0 for ratio in ratios.values())
    cells = {row[0]: row for row in table_cells(capsys.readouterr().out.split("\n\n")[-1].split("medians\n")[-1])}
    assert {"student (a) compiled", "teacher forward (b) compiled", "kd compiled (c)"} <= cells.keys()
    assert cells["kd compiled (c)"][3] == "<= 1.05"


FAKE_MDISTILLER = {
    "mdistiller/__init__.py": "",
    "mdistiller/engine/__init__.py": "",
    "mdistiller/engine/cfg.py": """
from yacs.config import CfgNode as CN
CFG = CN()
CFG.SOLVER = CN()
CFG.SOLVER.LR, CFG.SOLVER.MOMENTUM, CFG.SOLVER.WEIGHT_DECAY = 0.05, 0.9, 5e-4
""",
    "mdistiller/models/__init__.py": "",
    "mdistiller/models/cifar/__init__.py": """
from classification.models import build_model
def resnet8x4(num_classes): return build_model("resnet8x4", num_classes, "cifar")
def resnet32x4(num_classes): return build_model("resnet32x4", num_classes, "cifar")
""",
    "mdistiller/distillers/__init__.py": """
import torch, torch.nn.functional as F
calls = []
class KD(torch.nn.Module):
    def __init__(self, student, teacher, cfg):
        super().__init__(); self.student, self.teacher = student, teacher
    def get_learnable_parameters(self): return list(self.student.parameters())
    def forward(self, image, target, epoch):
        calls.append(epoch)
        logits = self.student(image).logits
        return logits, {"loss_ce": F.cross_entropy(logits, target)}
distiller_dict = {"KD": KD}
""",
}


def test_the_mdistiller_comparison_times_both_steps_and_records_their_ratio(tmp_path, monkeypatch, capsys):
    """tools/speed_vs_mdistiller.py against a stand-in checkout with mdistiller's layout (the real one is fetched
    from GitHub, which the tests cannot reach): both steps run, the ratio is UniKD's median over mdistiller's."""
    for name, text in FAKE_MDISTILLER.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    monkeypatch.setattr(sys, "path", list(sys.path))  # the tool puts the checkout first on the path
    for module in [m for m in sys.modules if m.startswith("mdistiller")]:
        monkeypatch.delitem(sys.modules, module)
    spec = importlib.util.spec_from_file_location("speed_vs_mdistiller", REPO / "tools" / "speed_vs_mdistiller.py")
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    with pytest.raises(FileNotFoundError, match="not an mdistiller checkout"):
        tool.main(["--mdistiller", str(tmp_path / "missing"), "--methods", "kd"])
    ratios = tool.main(["--mdistiller", str(tmp_path), "--methods", "kd", "--batch", "2", "--steps", "1",
                        "--rounds", "1", "--output", str(tmp_path / "vs.json")])
    import mdistiller.distillers as fake

    assert fake.calls and set(fake.calls) == {tool.PROGRESS_EPOCHS}  # warm-up and timed calls, past all warm-ups
    record = json.loads((tmp_path / "vs.json").read_text())
    medians = {name: step["median_s"] for name, step in record["steps"].items()}
    assert list(medians) == ["mdistiller kd", "unikd kd"]
    assert ratios == {"kd": pytest.approx(medians["unikd kd"] / medians["mdistiller kd"])}
    assert record["table"] in capsys.readouterr().out
    cells = {row[0]: row for row in table_cells(record["table"])}
    assert float(cells["kd"][3]) == pytest.approx(ratios["kd"], abs=5e-4)
