"""What a front end gives the bench runner: how to configure, train and score one stage, and its table.

The runner (`unikd.bench.runner`) owns everything the two tasks share (the grid, the stage queue, staleness,
logs, helper processes, the report); a task owns only what differs. Tasks are found by name in `TASKS`,
imported when a grid names them, so `unikd` itself imports neither front end.
"""
from __future__ import annotations

import importlib
from abc import ABC, abstractmethod
from collections.abc import Collection
from typing import Any

from .grid import Grid, Stage
from .report import TableSpec

# task name -> "module:class" of its BenchTask.
TASKS = {
    "classification": "classification.bench.task:ClassificationTask",
    "detection": "unikd_det.bench:DetectionTask",
}
# Where a stage writes the config it trains with; the runner compares it with the grid's to find stale stages.
STAGE_CONFIG = "config.yaml"


class BenchTask(ABC):
    """One front end's side of a bench grid (see the module docstring)."""

    # The report table of the task's grids (and of `python -m unikd.bench report --task <name>`).
    table: TableSpec
    # The config keys a finished or interrupted stage may differ in and still count as the same run.
    environment_keys: Collection[str] = ()

    def __init__(self, grid: Grid):
        self.grid = grid

    def prepare(self) -> None:
        """Make what every stage reads available (register data sets); called once per process."""

    def default_config(self) -> Any:
        """The front end's default config: a key a stage's stored config lacks (an option added since it ran)
        counts at its default when the runner looks for stale stages (None: every key must match)."""
        return None

    @abstractmethod
    def stage_config(self, stage: Stage, teacher_weights: str) -> Any:
        """The stage's config: its file, the grid's and method's overrides, its seed, its OUTPUT_DIR (the stage
        folder), the evaluation sets and `teacher_weights`. Raises on a bad key or value: every stage is
        configured before any trains."""

    @abstractmethod
    def teacher_weights(self, stage: Stage) -> str:
        """Where a teacher stage leaves the weights its students read."""

    @abstractmethod
    def reads_teacher(self, cfg: Any) -> bool:
        """Whether a student with this config reads its teacher's weights (and so waits for the teacher stage)."""

    def learns_from_teacher(self, cfg: Any) -> bool:
        """Whether the student's weights depend on its teacher, so that a teacher trained again makes it stale
        (default: whenever it reads the teacher)."""
        return self.reads_teacher(cfg)

    @abstractmethod
    def train(self, stage: Stage, cfg: Any, fresh: bool) -> dict[str, Any]:
        """Train the stage (from scratch when `fresh`, else resuming what its folder holds), evaluate it, write
        STAGE_CONFIG in its folder, and return its result (JSON values, stored as result.json)."""

    @abstractmethod
    def row(self, stage: Stage, result: dict[str, Any], teacher: dict[str, Any] | None) -> dict[str, Any]:
        """The report row of a student stage (the table's columns) from its result and its teacher stage's result
        (None where the grid reads the teacher from a checkpoint)."""

    @abstractmethod
    def headline(self, result: dict[str, Any]) -> str:
        """A few words on a stage's result for its progress line."""

    def finish(self, students: list[Stage]) -> None:
        """Work after the report (the classification grid's figures); nothing by default."""


def task_class(name: str) -> type[BenchTask]:
    """The BenchTask class of the task `name` (one of TASKS), imported."""
    if name not in TASKS:
        raise ValueError(f"unknown bench task {name!r}; the tasks are {sorted(TASKS)}")
    module, attribute = TASKS[name].split(":")
    return getattr(importlib.import_module(module), attribute)


def load_task(grid: Grid) -> BenchTask:
    """The grid's task, imported by name."""
    return task_class(grid.task)(grid)
