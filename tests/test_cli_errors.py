"""The command-line error contract (unikd.core.cli): every entry point turns a bad value into one line
`error: <message>` on stderr and exit status 2, with the traceback only under `--debug`; bugs keep theirs."""
from __future__ import annotations

import importlib
import os
import re
import runpy
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import CLS_TINY_OPTS, REPO_ROOT
from yacs.config import CfgNode

from classification.config import load_cfg
from unikd.core.cli import run_main

TOOLS = REPO_ROOT / "tools"


@dataclass(frozen=True)
class EntryPoint:
    """A command line with one bad value. `{tmp}` (the test's folder) and `{config}` (a tiny classification
    KD config) are filled in when it runs; `names` is the bad value, which the message must name."""

    command: tuple[str, ...]  # after sys.executable: ("-m", package) or (tool script,)
    argv: tuple[str, ...]
    error: type[Exception]  # what the entry point raises
    names: str
    main: str = "main"  # the tool's function that takes argv

    def load_main(self):
        """The entry point's main function, imported (a package's __main__) or run from its script."""
        if self.command[0] == "-m":
            return importlib.import_module(f"{self.command[1]}.__main__").main
        return runpy.run_path(self.command[0])[self.main]


CLASSIFICATION = ("-m", "classification")
ENTRY_POINTS = {
    "classification-train": EntryPoint(
        CLASSIFICATION, ("train", "--config", "{config}", "OUTPUT_DIR", "{tmp}/run", "MODEL.TEACHER_CHECKPOINT",
                         "{tmp}/no_teacher.pth"),
        FileNotFoundError, "{tmp}/no_teacher.pth"),
    "classification-eval": EntryPoint(
        CLASSIFICATION, ("eval", "--config", "{config}", "--checkpoint", "{tmp}/last.pth", "SOLVER.NOPE", "1"),
        KeyError, "SOLVER.NOPE"),
    "classification-bench": EntryPoint(
        CLASSIFICATION, ("bench", "--grid", "does/not/exist.yaml"), FileNotFoundError, "does/not/exist.yaml"),
    "classification-report": EntryPoint(
        CLASSIFICATION, ("report", "--results", "{tmp}/results.csv", "--output", "{tmp}/report"), FileNotFoundError,
        "{tmp}/results.csv"),
    "classification-analyze": EntryPoint(
        CLASSIFICATION, ("analyze", "--run", "{tmp}/no_run", "--output", "{tmp}/analysis"), FileNotFoundError,
        "{tmp}/no_run"),
    "train_net": EntryPoint(
        (str(TOOLS / "train_net.py"),),
        ("--config-file", str(REPO_ROOT / "configs" / "Demo" / "student-R18.yaml"), "OUTPUT_DIR", "{tmp}/output",
         "DISTILL.KD.NOPE", "1"),
        AssertionError, "Non-existent key: DISTILL.KD.NOPE", main="cli"),  # not "odd length" (--debug left in opts)
    "export_student": EntryPoint(
        (str(TOOLS / "export_student.py"),), ("{tmp}/model_final.pth", "{tmp}/student.pth"), FileNotFoundError,
        "{tmp}/model_final.pth"),
    "analyze_det": EntryPoint(
        (str(TOOLS / "analyze_det.py"),), ("--config-file", "{tmp}/no_config.yaml", "--weights", "{tmp}/w.pth"),
        AssertionError, "{tmp}/no_config.yaml"),
    "bench_det": EntryPoint(
        (str(TOOLS / "bench_det.py"),), ("--grid", "{tmp}/no_grid.yaml"), FileNotFoundError, "{tmp}/no_grid.yaml"),
    "unikd.bench-report": EntryPoint(
        ("-m", "unikd.bench"), ("report", "--task", "detection", "--results", "{tmp}/r.csv", "--output", "{tmp}/o"),
        FileNotFoundError, "{tmp}/r.csv"),
    "demo": EntryPoint(
        (str(TOOLS / "demo.py"),), ("--output-dir", "{config}",), NotADirectoryError, "{config}"),
    "convert_torchvision_to_d2": EntryPoint(
        (str(TOOLS / "convert_torchvision_to_d2.py"),), ("{tmp}/resnet18.pth", "{tmp}/R-18.pkl"), FileNotFoundError,
        "{tmp}/resnet18.pth"),
}


@pytest.fixture(scope="module")
def kd_config(tmp_path_factory) -> Path:
    """A tiny KD run config file (conftest's synthetic run, with a resnet14 teacher); give each run its own
    OUTPUT_DIR."""
    path = tmp_path_factory.mktemp("config") / "kd.yaml"
    opts = [*map(str, CLS_TINY_OPTS), "DISTILLER.NAME", "kd", "MODEL.TEACHER", "resnet14"]
    path.write_text(load_cfg(None, [*opts, "OUTPUT_DIR", str(path.parent)]).dump())
    return path


def fill(text: str, tmp_path: Path, config: Path) -> str:
    """`text` with {tmp} and {config} filled in."""
    return text.format(tmp=tmp_path, config=config)


# The processes: every entry point with its bad value, and classification train also with --debug after the
# overrides. Each spends seconds importing torch (and Detectron2), so they run side by side.
PROCESSES = {**{name: (name, ()) for name in ENTRY_POINTS}, "debug": ("classification-train", ("--debug",))}


@pytest.fixture(scope="module")
def finished(tmp_path_factory, kd_config) -> dict[str, tuple[Path, subprocess.CompletedProcess]]:
    """PROCESSES name -> (its folder, its finished process), each run in a folder of its own, side by side."""

    def run(name: str) -> tuple[Path, subprocess.CompletedProcess]:
        entry_point, extra = PROCESSES[name]
        entry, folder = ENTRY_POINTS[entry_point], tmp_path_factory.mktemp(name)
        argv = [fill(arg, folder, kd_config) for arg in entry.argv] + list(extra)
        return folder, subprocess.run([sys.executable, *entry.command, *argv], cwd=folder, capture_output=True,
                                      text=True, timeout=120, env={**os.environ, "OMP_NUM_THREADS": "1"})

    with ThreadPoolExecutor(max_workers=min(4, os.cpu_count() or 1)) as pool:
        return dict(zip(PROCESSES, pool.map(run, PROCESSES)))


# -- every entry point, as a process --------------------------------------------------------------------------
@pytest.mark.parametrize("name", ENTRY_POINTS)
def test_a_bad_value_ends_in_one_error_line_and_status_2(name, finished, kd_config):
    folder, result = finished[name]
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    last_line = [line for line in result.stderr.splitlines() if line.strip()][-1]
    assert last_line.startswith("error: ")
    assert fill(ENTRY_POINTS[name].names, folder, kd_config) in last_line


def test_debug_after_the_overrides_shows_the_traceback(finished):
    folder, result = finished["debug"]
    assert result.returncode == 1
    assert "Traceback (most recent call last)" in result.stderr
    last_line = result.stderr.rstrip().splitlines()[-1]
    assert last_line.startswith("FileNotFoundError: ") and str(folder / "no_teacher.pth") in last_line


# -- every entry point's --debug, in this process ---------------------------------------------------------------
@pytest.mark.parametrize("name", ENTRY_POINTS)
def test_debug_raises_the_error_itself(name, tmp_path, kd_config):
    """--debug is accepted (also after the KEY VALUE overrides) and lets the error through with its traceback."""
    entry = ENTRY_POINTS[name]
    argv = [fill(arg, tmp_path, kd_config) for arg in entry.argv] + ["--debug"]
    with pytest.raises(entry.error, match=re.escape(fill(entry.names, tmp_path, kd_config))):
        run_main(entry.load_main(), argv)


@pytest.mark.parametrize("override, names", [
    (["MODEL.STUDENT", "timm:not_a_model_xyz"], "unknown timm model 'not_a_model_xyz'"),
    (["DATASET.NAME", "no_such_set"], "unknown DATASET.NAME 'no_such_set'"),
], ids=["model", "data set"])
def test_unknown_model_and_data_set_are_user_errors(override, names, kd_config, tmp_path, capsys):
    from classification.__main__ import main

    assert run_main(main, ["train", "--config", str(kd_config), "OUTPUT_DIR", str(tmp_path), *override]) == 2
    assert capsys.readouterr().err.splitlines()[-1].startswith(f"error: {names}")


# -- run_main itself ------------------------------------------------------------------------------------------
def raising(exc: BaseException):
    """A main that raises `exc`."""

    def main(argv):
        raise exc

    return main


def test_user_error_is_one_line_and_status_2(capsys):
    assert run_main(raising(ValueError("SOLVER.LR = -1 must be >= 0")), []) == 2
    assert capsys.readouterr().err == "error: SOLVER.LR = -1 must be >= 0\n"


def test_key_error_loses_the_quotes_and_lines_are_joined(capsys):
    assert run_main(raising(KeyError("unknown model 'x'")), []) == 2
    assert run_main(raising(FileExistsError("out already holds a run\n  last.pth\n")), []) == 2
    assert capsys.readouterr().err == "error: unknown model 'x'\nerror: out already holds a run last.pth\n"


def test_success_is_status_0():
    assert run_main(lambda argv: {"top1": 1.0}, ["--flag"]) == 0


def test_debug_re_raises_a_user_error():
    with pytest.raises(ValueError, match="bad"):
        run_main(raising(ValueError("bad")), ["x", "--debug"])


def test_debug_is_read_from_sys_argv_when_argv_is_none(monkeypatch):
    monkeypatch.setattr(sys, "argv", ["tool.py", "--debug"])
    with pytest.raises(KeyError):
        run_main(raising(KeyError("bad")))


@pytest.mark.parametrize("exc", [RuntimeError("bug"), TypeError("bug"), AssertionError("bug"),
                                 SystemExit(2), KeyboardInterrupt()])
def test_bugs_exits_and_interrupts_propagate(exc):
    with pytest.raises(type(exc)):
        run_main(raising(exc), [])


def test_config_library_assertions_are_user_errors(capsys):
    """yacs asserts on a non-existent key and an odd KEY VALUE list: that AssertionError is a user error."""
    cfg = CfgNode({"SOLVER": {"LR": 0.1}})
    assert run_main(lambda argv: cfg.merge_from_list(argv), ["SOLVER.LRR", "1"]) == 2
    assert run_main(lambda argv: cfg.merge_from_list(argv), ["SOLVER.LR"]) == 2
    err = capsys.readouterr().err.splitlines()
    assert err[0] == "error: Non-existent key: SOLVER.LRR"
    assert err[1].startswith("error: Override list has odd length")
