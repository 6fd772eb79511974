"""Training stages that several processes share: each trains in its own folder under that folder's lock and
stores its evaluation there (`result.json`).

A process takes the first stage whose prerequisites have finished and that no other process holds, so two
processes at one thread each (a bench grid run with --jobs 2) keep two cores busy with different stages, and a rerun
reads a finished stage's numbers instead of evaluating it again. The lock is a `unikd.core.run_dir` lock (its
own file, .stage.lock), which the kernel releases when its holder dies, so a killed process's stage is taken
over (and resumed from its last checkpoint) by the next process that reaches it.
"""
from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from unikd.core.run_dir import OutputDirLock, atomic_write_text

logger = logging.getLogger(__name__)

RESULT_NAME = "result.json"
# The stage's own lock, beside the run lock that a trainer may take in the same folder (classification's does).
STAGE_LOCK_NAME = ".stage.lock"
# What one stage's training and evaluation give and its result.json stores (JSON values; each task its own).
StageResult = dict[str, Any]


@dataclass(frozen=True)
class QueuedStage:
    """One stage: a unique `key`, the `folder` it trains in, the keys of the stages it needs finished first (a
    distillation student needs its teacher's weights) and the `name` logs give it (default: the key)."""

    key: str
    folder: Path
    needs: tuple[str, ...] = ()
    name: str = ""

    @property
    def label(self) -> str:
        return self.name or self.key


# Why a stored result no longer describes the stage (its config changed, its teacher was trained again): an
# empty list when it still does.
StaleCheck = Callable[[QueuedStage], list[str]]


def stored_result(stage: QueuedStage, stale: StaleCheck | None = None) -> StageResult | None:
    """The stage's stored result, or None when it has none or `stale` gives a reason it is out of date (the stage
    is then trained again)."""
    path = stage.folder / RESULT_NAME
    if not path.is_file() or (stale is not None and stale(stage)):
        return None
    return json.loads(path.read_text(encoding="utf-8"))


def run_stages(stages: Sequence[QueuedStage], train: Callable[[QueuedStage], StageResult],
               poll_seconds: float = 10.0, stale: StaleCheck | None = None) -> dict[str, StageResult]:
    """Bring every stage to a stored result and return {key: result}.

    Repeatedly takes, in the given order, the first stage that is not finished, whose `needs` are, and whose
    folder lock is free: `train(stage)` runs under that lock and its result is written atomically. A finished
    stage is read, not trained, unless `stale` gives a reason it is out of date. When every remaining stage is
    held by another process or waits for one, it sleeps `poll_seconds` and looks again."""
    keys = [stage.key for stage in stages]
    if len(set(keys)) != len(keys):
        raise ValueError(f"stage keys must be unique, got {keys}")
    unknown = {need for stage in stages for need in stage.needs} - set(keys)
    if unknown:
        raise ValueError(f"stages need {sorted(unknown)}, which are not among the stages {keys}")
    results: dict[str, StageResult] = {}
    pending = list(stages)
    waiting_for: tuple[str, ...] = ()
    while pending:
        for stage in pending:
            if all(need in results for need in stage.needs) and _take(stage, train, results, stale):
                pending.remove(stage)
                break
        else:
            held = tuple(stage.label for stage in pending)
            if held != waiting_for:
                logger.info("waiting for stages that other processes hold or need first: %s", ", ".join(held))
                waiting_for = held
            time.sleep(poll_seconds)
    return results


def _take(stage: QueuedStage, train: Callable[[QueuedStage], StageResult], results: dict[str, StageResult],
          stale: StaleCheck | None) -> bool:
    """Put the stage's result into `results` (stored, or trained under its lock); False when another process
    holds the stage."""
    result = stored_result(stage, stale)
    if result is None:
        lock = OutputDirLock(stage.folder, STAGE_LOCK_NAME)
        if not lock.try_acquire():
            return False
        try:
            result = stored_result(stage, stale)  # finished by the previous holder between the first look and the lock
            if result is None:
                result = train(stage)
                atomic_write_text(json.dumps(result, indent=2), stage.folder / RESULT_NAME)
        finally:
            lock.release()
    else:
        logger.info("skip %s (finished: %s)", stage.label, stage.folder)
    results[stage.key] = result
    return True
