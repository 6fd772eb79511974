"""`python -m classification bench --grid FILE`: pairs x methods x seeds, resumable, with a results table.

Grid file (YAML; paths relative to it):

    output_dir: output/bench/fashion_mnist     # relative to the current directory
    overrides: [SOLVER.EPOCHS, 8, ...]          # KEY VALUE pairs applied to every student run
    teachers:                                   # trained first (once), unless `checkpoint` is given;
      resnet56: {config: ../fashion_mnist/teacher_resnet56.yaml, overrides: [...]}  # the name is the
                                                # architecture unless `arch` names another
    pairs: [{teacher: resnet56, student: resnet20}]
    methods: {vanilla: ../fashion_mnist/vanilla.yaml, kd: ../fashion_mnist/kd.yaml, ...}
    seeds: [0, 1]
    reference: unikd                            # optional: a method every other is compared with on validation

Every run lives in its own folder; a finished run (summary.json present) is skipped and an interrupted one
resumes from its last.pth, so rerunning the same command continues the grid. A run whose folder was written
with other values (the grid's overrides or a config file changed since; run-environment keys aside), or
whose teacher checkpoint changed after the run last saved, is run again from scratch, never reported stale.
The grid's shape and every run's config are checked before anything trains.
"""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from yacs.config import CfgNode

from unikd.core.checks import config_differences

from ..analysis import analyze
from ..config import RUN_ENVIRONMENT_KEYS, load_cfg, read_yaml
from ..distillers import get_distiller_class
from ..engine.trainer import CONFIG, LAST, SUMMARY, Trainer
from .report import write_reports

logger = logging.getLogger("classification.bench")

_GRID_KEYS = {"output_dir", "overrides", "teachers", "pairs", "methods", "seeds", "reference"}
_TEACHER_KEYS = {"config", "overrides", "checkpoint", "arch"}


@dataclass
class Run:
    """One cell of the grid (or a teacher): where it lives and how to configure it."""

    name: str
    config: Path
    opts: list[str]
    output_dir: Path

    @property
    def finished(self) -> bool:
        return (self.output_dir / SUMMARY).is_file()

    def summary(self) -> dict[str, Any]:
        return json.loads((self.output_dir / SUMMARY).read_text())

    def build_cfg(self) -> CfgNode:
        return load_cfg(self.config, self.opts + ["OUTPUT_DIR", str(self.output_dir)])

    def stale_reasons(self, cfg: CfgNode) -> list[str]:
        """Why the run in the folder is not a run of `cfg`: changed values, or a teacher rewritten since it began."""
        written = self.output_dir / CONFIG
        if not written.is_file():
            return []
        changes = config_differences(written.read_text(encoding="utf-8"), cfg, ignore=RUN_ENVIRONMENT_KEYS)
        reasons = [f"{key} was {old!r}, is now {new!r}" for key, (old, new) in changes.items()]
        teacher = Path(cfg.MODEL.TEACHER_CHECKPOINT)
        if (get_distiller_class(cfg.DISTILLER.NAME).NEEDS_TEACHER and teacher.is_file()
                and teacher.stat().st_mtime > written.stat().st_mtime):
            reasons.append(f"its teacher {teacher} changed after the run last saved")
        return reasons


def _str_opts(values: list[Any]) -> list[str]:
    return [str(v) for v in values]


def _require(ok: bool, path: Path, key: str, expected: str, value: Any) -> None:
    if not ok:
        raise ValueError(f"{path}: {key} must be {expected}, got {value!r}")


def _check_overrides(path: Path, key: str, overrides: Any) -> None:
    _require(isinstance(overrides, list) and len(overrides) % 2 == 0, path, key,
             "a list of KEY VALUE pairs (an even count)", overrides)


def _check_teachers(path: Path, teachers: Any) -> None:
    _require(isinstance(teachers, dict), path, "teachers", "a mapping of teacher names to specs", teachers)
    for name, spec in teachers.items():
        key = f"teachers.{name}"
        _require(isinstance(spec, dict) and set(spec) <= _TEACHER_KEYS and ("config" in spec) != ("checkpoint" in spec),
                 path, key, f"a mapping with `config` or `checkpoint` (keys among {sorted(_TEACHER_KEYS)})", spec)
        _check_overrides(path, f"{key}.overrides", spec.get("overrides", []))


def _check_shape(path: Path, grid: dict[str, Any]) -> None:
    """ValueError naming the grid file and the key of the first entry of the wrong shape."""
    teachers = grid.get("teachers") or {}
    _check_teachers(path, teachers)
    _check_overrides(path, "overrides", grid.get("overrides", []))
    seeds, pairs, methods = grid["seeds"], grid["pairs"], grid["methods"]
    _require(isinstance(seeds, list) and seeds != [] and all(type(s) is int and s >= 0 for s in seeds),
             path, "seeds", "a non-empty list of integers >= 0", seeds)
    _require(isinstance(methods, dict) and methods != {} and all(isinstance(v, str) for v in methods.values()),
             path, "methods", "a non-empty mapping of method labels to config files", methods)
    _require(isinstance(pairs, list) and pairs != [], path, "pairs", "a non-empty list", pairs)
    if "reference" in grid:
        reference = grid["reference"]
        _require(isinstance(reference, str) and reference in methods, path, "reference",
                 f"one of the grid's methods {sorted(methods)}", reference)
    for index, pair in enumerate(pairs):
        _require(isinstance(pair, dict) and set(pair) == {"teacher", "student"}, path, f"pairs[{index}]",
                 "a mapping with `teacher` and `student`", pair)
        _require(pair["teacher"] in teachers, path, f"pairs[{index}].teacher",
                 f"one of the grid's teachers {sorted(teachers)}", pair["teacher"])


def load_grid(path: str | Path) -> dict[str, Any]:
    """The grid in `path` (read with yaml.safe_load), refused with the file and key named when malformed."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"bench grid not found: {path}")
    grid = read_yaml(path, "a bench grid")
    unknown = set(grid) - _GRID_KEYS
    missing = {"pairs", "methods", "seeds"} - set(grid)
    if unknown or missing:
        raise KeyError(f"{path}: unknown keys {sorted(unknown)}, missing keys {sorted(missing)}")
    _check_shape(path, grid)
    grid["_dir"] = path.parent
    return grid


def plan_runs(grid: dict[str, Any], output_dir: Path) -> tuple[dict[str, Run], list[tuple[dict[str, Any], Run]]]:
    """(teacher runs by name, [(cell labels, student run)]) for the whole grid."""
    base_dir = grid["_dir"]
    teacher_specs = grid.get("teachers") or {}
    teachers = {}
    for name, spec in teacher_specs.items():
        if "checkpoint" in spec:
            continue
        teachers[name] = Run(
            f"teacher {name}", base_dir / spec["config"], _str_opts(spec.get("overrides", [])),
            output_dir / "teachers" / name,
        )
    cells = []
    common = _str_opts(grid.get("overrides", []))
    for pair in grid["pairs"]:
        teacher, student = pair["teacher"], pair["student"]
        spec = teacher_specs[teacher]
        teacher_ckpt = spec.get("checkpoint") or str(output_dir / "teachers" / teacher / LAST)
        arch = spec.get("arch", teacher)
        for method, config in grid["methods"].items():
            for seed in grid["seeds"]:
                label = {"pair": f"{teacher}->{student}", "method": method, "seed": seed}
                opts = common + _str_opts([
                    "MODEL.STUDENT", student, "MODEL.TEACHER", arch, "MODEL.TEACHER_CHECKPOINT", teacher_ckpt,
                    "TRAIN.SEED", seed,
                ])
                folder = output_dir / f"{teacher}-{student}" / method / f"seed{seed}"
                cells.append((label, Run(f"{label['pair']} {method} seed {seed}", base_dir / config, opts, folder)))
    return teachers, cells


def _execute(run: Run, cfg: CfgNode) -> dict[str, Any]:
    """Train `run` (resuming it), skip it when finished, or train it from scratch when its folder is stale."""
    reasons = run.stale_reasons(cfg)
    if reasons:
        logger.warning("%s in %s is stale (%s); running it again from scratch", run.name, run.output_dir,
                       "; ".join(reasons))
        return Trainer(cfg, overwrite=True).train()
    if run.finished:
        logger.info("skip %s (finished: %s)", run.name, run.output_dir)
        return run.summary()
    logger.info("run %s -> %s", run.name, run.output_dir)
    return Trainer(cfg, resume=True).train()


def run_grid(path: str | Path, output_dir: str | Path | None = None, dry_run: bool = False,
             analyze_pairs: bool = True) -> list[dict[str, Any]]:
    """Train every teacher, then every cell (skipping finished ones); write results.csv/.md/.png, then, unless
    `analyze_pairs` is False, the UniKD paper's analyses of every pair's methods at the first seed
    (analysis/<pair>/, `classification.analysis`; the demo, which shows no figures, skips them)."""
    grid = load_grid(path)
    out = Path(output_dir or grid.get("output_dir") or "output/bench")
    teachers, cells = plan_runs(grid, out)
    runs = [*teachers.values(), *(run for _, run in cells)]
    cfgs = {run.name: run.build_cfg() for run in runs}  # every config is checked before anything trains
    if dry_run:
        for run in runs:
            print(f"{run.name}: {run.config} {' '.join(run.opts)} -> {run.output_dir}")
        return []
    for run in teachers.values():
        _execute(run, cfgs[run.name])
    rows = []
    for index, (label, run) in enumerate(cells, start=1):
        logger.info("cell %d/%d", index, len(cells))
        rows.append({**label, **_execute(run, cfgs[run.name])})
        write_reports(rows, out, grid.get("reference"))
    for pair, runs in (analysis_sets(cells, grid["seeds"][0]) if analyze_pairs else {}).items():
        logger.info("analyzing %s (seed %d, %d methods)", pair, grid["seeds"][0], len(runs))
        analyze(runs, out / "analysis" / pair)
    return rows


def analysis_sets(cells: list[tuple[dict[str, Any], Run]], seed: int) -> dict[str, list[Path]]:
    """{pair folder name: the run folder of every method of that pair at `seed`}, for one figure set per pair."""
    sets: dict[str, list[Path]] = {}
    for label, run in cells:
        if label["seed"] == seed:
            sets.setdefault(run.output_dir.parent.parent.name, []).append(run.output_dir)
    return sets
