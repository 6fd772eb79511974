"""unikd.bench.stage_queue: stages run in order once their prerequisites have finished, a finished stage is read
from its result.json instead of trained (unless a stale check says it is out of date), a stage another holder
locks is left to it (and its stored result read once it is released), and a stage whose holder died without a
result is trained."""
from __future__ import annotations

import json
import threading

import pytest

from unikd.core.run_dir import OutputDirLock
from unikd.bench.stage_queue import RESULT_NAME, STAGE_LOCK_NAME, QueuedStage, run_stages, stored_result

SETS = ("val", "holdout")


def stage(tmp_path, key, *needs):
    return QueuedStage(key, tmp_path / key, tuple(needs))


def held_lock(queued):
    """The stage's lock, taken as another process would."""
    return OutputDirLock(queued.folder, STAGE_LOCK_NAME).acquire()


def scored(ap):
    return {name: {"AP": ap + index} for index, name in enumerate(SETS)}


class Recorder:
    """A fake `train`: records the keys it trained and returns AP = the stage's position in `aps`."""

    def __init__(self, aps, hook=None):
        self.aps, self.hook, self.trained = aps, hook, []

    def __call__(self, queued):
        self.trained.append(queued.key)
        if self.hook is not None:
            self.hook(queued)
        return scored(self.aps[queued.key])


def test_stages_run_in_order_store_their_results_and_are_read_on_a_rerun(tmp_path):
    stages = [stage(tmp_path, "teacher"), stage(tmp_path, "kd", "teacher"), stage(tmp_path, "student")]
    train = Recorder({"teacher": 30.0, "kd": 12.0, "student": 10.0})
    results = run_stages(stages, train)
    assert train.trained == ["teacher", "kd", "student"]
    assert results == {"teacher": scored(30.0), "kd": scored(12.0), "student": scored(10.0)}
    assert json.loads((tmp_path / "kd" / RESULT_NAME).read_text()) == scored(12.0)
    again = Recorder({})
    assert run_stages(stages, again) == results and again.trained == []


def test_a_stored_result_that_the_stale_check_refuses_is_trained_again(tmp_path):
    student = stage(tmp_path, "student")
    run_stages([student], Recorder({"student": 10.0}))
    assert stored_result(student) == scored(10.0)
    checked = []

    def stale(queued):
        checked.append(queued.key)
        return ["its config changed"]

    assert stored_result(student, stale) is None
    train = Recorder({"student": 11.0})
    assert run_stages([student], train, stale=stale) == {"student": scored(11.0)}
    assert train.trained == ["student"] and checked[-1] == "student"
    assert run_stages([student], Recorder({}), stale=lambda queued: []) == {"student": scored(11.0)}


def finish_elsewhere(queued, ap, lock):
    """What another process does when it finishes `queued`: store its result and release its lock."""
    (queued.folder / RESULT_NAME).write_text(json.dumps(scored(ap)))
    lock.release()


def test_a_held_stage_is_left_to_its_holder_and_its_result_is_read(tmp_path):
    teacher, kd, student = stage(tmp_path, "teacher"), stage(tmp_path, "kd", "teacher"), stage(tmp_path, "student")
    held = held_lock(teacher)  # another process trains the teacher
    # It finishes while this process trains the plain student, which needs no teacher.
    train = Recorder({"kd": 12.0, "student": 10.0},
                     hook=lambda q: finish_elsewhere(teacher, 30.0, held) if q.key == "student" else None)
    results = run_stages([teacher, kd, student], train)
    assert train.trained == ["student", "kd"]  # the student first, the distilled student once the teacher is done
    assert results["teacher"] == scored(30.0) and results["kd"] == scored(12.0)


def test_when_every_stage_waits_it_polls_until_the_holder_finishes(tmp_path):
    teacher, kd = stage(tmp_path, "teacher"), stage(tmp_path, "kd", "teacher")
    held = held_lock(teacher)
    timer = threading.Timer(0.3, finish_elsewhere, (teacher, 30.0, held))
    timer.start()
    train = Recorder({"kd": 12.0})
    results = run_stages([teacher, kd], train, poll_seconds=0.05)
    timer.join()
    assert train.trained == ["kd"] and results["teacher"] == scored(30.0)


def test_a_stage_whose_holder_died_without_a_result_is_trained(tmp_path):
    teacher = stage(tmp_path, "teacher")
    held = held_lock(teacher)
    timer = threading.Timer(0.2, held.release)  # the kernel drops a dead holder's lock; no result.json
    timer.start()
    train = Recorder({"teacher": 30.0})
    results = run_stages([teacher], train, poll_seconds=0.05)
    timer.join()
    assert train.trained == ["teacher"] and results["teacher"] == scored(30.0)


def test_a_failed_stage_stores_nothing_and_frees_its_lock(tmp_path):
    teacher = stage(tmp_path, "teacher")

    def fail(queued):
        raise RuntimeError("diverged")

    with pytest.raises(RuntimeError, match="diverged"):
        run_stages([teacher], fail)
    assert stored_result(teacher) is None
    assert OutputDirLock(teacher.folder, STAGE_LOCK_NAME).try_acquire()


def test_bad_stage_lists_are_refused(tmp_path):
    with pytest.raises(ValueError, match="unique"):
        run_stages([stage(tmp_path, "kd"), stage(tmp_path, "kd")], Recorder({}))
    with pytest.raises(ValueError, match=r"need \['teacher'\]"):
        run_stages([stage(tmp_path, "kd", "teacher")], Recorder({}))
