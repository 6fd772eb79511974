"""The one bench runner: grid files of either task -> stages -> one stage queue -> one report per grid.

`run_grids` configures every stage of every grid first (a bad key fails before anything trains), then brings
each stage to a stored result through `unikd.bench.stage_queue`: `jobs` processes (this one and `jobs - 1`
helpers running the same grids with `--stages-only`) take the stages in grid order, each under its folder's
lock, a student only once its teacher has finished. Every stage checkpoints, so a rerun continues where an
interrupted one stopped, and a finished stage is read back, unless it is stale: its folder's config differs
from what the grid now asks (the task's run-environment keys aside), or its teacher was trained again after
it. A stale stage trains again from scratch and is never reported. `threads` pins torch's threads in every
process: a stage's weights repeat bit for bit only at one thread count, whichever process trains it.
"""
from __future__ import annotations

import dataclasses
import logging
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from unikd.core.checks import config_differences

from .grid import Grid, Stage, student_stages, teacher_stages
from .progress import StageLog, hide_third_party_import_warnings
from .report import write_report
from .stage_queue import RESULT_NAME, QueuedStage, run_stages
from .task import STAGE_CONFIG, BenchTask, load_task

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class PlannedStage:
    """A stage with its task, its config and, for a student that learns from one, the teacher weights it reads
    (a newer file makes the stage stale)."""

    task: BenchTask
    stage: Stage
    cfg: Any
    teacher_file: str | None
    queued: QueuedStage
    index: int


def plan_stages(task: BenchTask) -> list[PlannedStage]:
    """The grid's teacher stages, then its student stages, each configured (and so checked); `index` counts
    from 1 in this order."""
    teachers = teacher_stages(task.grid)
    planned = []
    for stage in teachers.values():
        queued = QueuedStage(str(stage.folder), stage.folder, (), stage.name)
        planned.append(PlannedStage(task, stage, task.stage_config(stage, ""), None, queued, len(planned) + 1))
    for stage in student_stages(task.grid):
        teacher = teachers.get(stage.teacher.name)
        weights = stage.teacher.checkpoint or task.teacher_weights(teacher)
        cfg = task.stage_config(stage, weights)
        reads = task.reads_teacher(cfg)
        needs = (str(teacher.folder),) if reads and teacher is not None else ()
        queued = QueuedStage(str(stage.folder), stage.folder, needs, stage.name)
        learns = weights if task.learns_from_teacher(cfg) else None
        planned.append(PlannedStage(task, stage, cfg, learns, queued, len(planned) + 1))
    return planned


def stale_reasons(planned: PlannedStage) -> list[str]:
    """Why the run in the stage's folder is not a run of its config: changed values, a teacher rewritten after
    the run last wrote its config, or a teacher stage whose weights are gone (its students could not read them);
    empty when it is current, or when the folder holds no run."""
    if planned.stage.method is None and (planned.stage.folder / RESULT_NAME).is_file():
        weights = Path(planned.task.teacher_weights(planned.stage))
        if not weights.is_file():
            return [f"its weights {weights} are missing"]
    written = planned.stage.folder / STAGE_CONFIG
    if not written.is_file():
        return []
    changes = config_differences(written.read_text(encoding="utf-8"), planned.cfg,
                                 ignore=planned.task.environment_keys, defaults=planned.task.default_config())
    reasons = [f"{key} was {old!r}, is now {new!r}" for key, (old, new) in changes.items()]
    teacher = Path(planned.teacher_file) if planned.teacher_file else None
    if teacher is not None and teacher.is_file() and teacher.stat().st_mtime > written.stat().st_mtime:
        reasons.append(f"its teacher {teacher} changed after the run last saved")
    return reasons


def _train(planned: PlannedStage, total: int, verbose: bool, live: bool | None) -> dict[str, Any]:
    reasons = stale_reasons(planned)
    if reasons:
        logger.warning("%s in %s is stale (%s); running it again from scratch", planned.stage.name,
                       planned.stage.folder, "; ".join(reasons))
        # the old result goes first: a student waiting for this stage must not take it for finished meanwhile
        (planned.stage.folder / RESULT_NAME).unlink(missing_ok=True)
    with StageLog(planned.stage.folder, f"[{planned.index}/{total}] {planned.stage.name}", verbose, live) as log:
        result = planned.task.train(planned.stage, planned.cfg, fresh=bool(reasons))
        log.finish(planned.task.headline(result))
    return result


def helper_command(grids: Sequence[Grid], threads: int, verbose: bool) -> list[str]:
    """The command line of one extra process of --jobs: the same grids and folders, training only."""
    command = [sys.executable, "-m", "unikd.bench", "run", "--stages-only", "--jobs", "1", "--threads", str(threads),
               "--grid", *(str(g.path.resolve()) for g in grids),
               "--output-dir", *(str(g.output_dir.resolve()) for g in grids)]
    return command + (["--verbose"] if verbose else [])


def _start_helpers(grids: Sequence[Grid], jobs: int, threads: int, verbose: bool) -> list[subprocess.Popen]:
    return [subprocess.Popen(helper_command(grids, threads, verbose)) for _ in range(jobs - 1)]


def _check_output_dir(grid: Grid) -> None:
    """NotADirectoryError before any work when the grid's output folder is, or lies inside, a file."""
    existing = next(p for p in (grid.output_dir.absolute(), *grid.output_dir.absolute().parents) if p.exists())
    if not existing.is_dir():
        raise NotADirectoryError(f"{grid.path}: output folder {grid.output_dir} cannot be made, {existing} is a file")


def _process_counts(grids: Sequence[Grid], jobs: int | None, threads: int | None) -> tuple[int, int]:
    """--jobs and --threads, else the grids' (the largest), else one process with torch's default threads."""
    jobs = jobs or max((g.jobs or 1 for g in grids), default=1)
    threads = threads or max((g.threads or 0 for g in grids), default=0) or max(1, torch.get_num_threads() // jobs)
    if jobs < 1 or threads < 1:
        raise ValueError(f"jobs and threads must be >= 1, got {jobs} and {threads}")
    return jobs, threads


def run_grids(grids: Sequence[Grid], jobs: int | None = None, threads: int | None = None, verbose: bool = False,
              stages_only: bool = False, dry_run: bool = False, live: bool | None = None) -> list[str]:
    """Bring every stage of `grids` to a result (see the module docstring) and write each grid's report into its
    output folder; returns the reports' markdown, one per grid (none with `stages_only` or `dry_run`).

    `live` rewrites each stage's progress line in place (default: when stdout is a terminal)."""
    for grid in grids:
        _check_output_dir(grid)
    if not verbose:
        hide_third_party_import_warnings()
    tasks = [load_task(grid) for grid in grids]
    planned: dict[str, PlannedStage] = {}
    for task in tasks:
        task.prepare()
        for stage in plan_stages(task):
            shared = planned.get(stage.queued.key)
            if shared is None:
                planned[stage.queued.key] = dataclasses.replace(stage, index=len(planned) + 1)
            elif config_differences(shared.cfg, stage.cfg):  # the same stage in two grids trains once
                raise ValueError(f"{shared.task.grid.path} and {task.grid.path} configure the stage in "
                                 f"{stage.stage.folder} differently: give the grids different output_dir")
    if dry_run:
        for p in planned.values():
            print(f"[{p.index}/{len(planned)}] {p.stage.name}: {p.stage.config} {' '.join(p.stage.overrides)} "
                  f"-> {p.stage.folder}" + (f" (after {', '.join(p.queued.needs)})" if p.queued.needs else ""))
        return []
    jobs, threads = _process_counts(grids, jobs, threads)
    torch.set_num_threads(threads)
    helpers = _start_helpers(grids, jobs, threads, verbose)
    try:
        results = run_stages([p.queued for p in planned.values()],
                             lambda q: _train(planned[q.key], len(planned), verbose, False if stages_only else live),
                             stale=lambda q: stale_reasons(planned[q.key]))
    except BaseException:
        for process in helpers:
            process.terminate()
        raise
    failed = [process.args for process in helpers if process.wait() != 0]
    if failed:
        raise RuntimeError(f"{len(failed)} helper process(es) of --jobs failed (their errors are printed above)")
    if stages_only:
        return []
    return [_report(task, results) for task in tasks]


def _report(task: BenchTask, results: dict[str, dict]) -> str:
    """The grid's report from its stages' results (see `unikd.bench.report`)."""
    grid = task.grid
    students = student_stages(grid)
    teachers = teacher_stages(grid)

    def teacher_result(stage: Stage) -> dict | None:
        teacher = teachers.get(stage.teacher.name)
        return results.get(str(teacher.folder)) if teacher is not None else None

    rows = [task.row(s, results[str(s.folder)], teacher_result(s)) for s in students]
    titles = {label: method.title for label, method in grid.methods.items()}
    evaluated = f"reported on {grid.report}" + (f", selected on {grid.select}" if grid.select else "")
    heading = f"{task.table.title} ({grid.path.name}; {evaluated})" if grid.report else None
    markdown = write_report(rows, task.table, grid.report_folder, grid.compare, grid.reference, titles, heading)
    task.finish(students)
    return markdown
