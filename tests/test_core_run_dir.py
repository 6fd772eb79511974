"""One run per output folder: lock, refusal of an existing run, --overwrite, leftover temporaries."""
from __future__ import annotations

import subprocess
import sys

import pytest

from unikd.core.run_dir import OutputDirLock, claim_output_dir, remove_temporaries

RUN_FILES = ("last.pth", "summary.json", "tensorboard")


def test_second_claim_of_a_locked_folder_is_refused_until_released(tmp_path):
    lock = claim_output_dir(tmp_path, RUN_FILES, resume=False)
    with pytest.raises(RuntimeError, match=r"another run \(pid \d+\) is writing to"):
        claim_output_dir(tmp_path, RUN_FILES, resume=True)
    lock.release()
    claim_output_dir(tmp_path, RUN_FILES, resume=True).release()


def test_lock_held_by_another_process_is_refused_and_dropped_when_it_dies(tmp_path):
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from unikd.core.run_dir import OutputDirLock; "
         f"lock = OutputDirLock({str(tmp_path)!r}).acquire(); print('held', flush=True); time.sleep(60)"],
        stdout=subprocess.PIPE, text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(RuntimeError, match=f"pid {holder.pid}"):
            OutputDirLock(tmp_path).acquire()
    finally:
        holder.kill()
        holder.wait()
    OutputDirLock(tmp_path).acquire().release()


def test_existing_run_is_refused_without_resume_and_listed(tmp_path):
    (tmp_path / "last.pth").write_bytes(b"x")
    (tmp_path / "summary.json").write_text("{}")
    with pytest.raises(FileExistsError, match=r"last\.pth, summary\.json.*--resume.*--overwrite"):
        claim_output_dir(tmp_path, RUN_FILES, resume=False)
    claim_output_dir(tmp_path, RUN_FILES, resume=True).release()  # the refusal released its lock
    assert (tmp_path / "last.pth").exists()


def test_overwrite_deletes_exactly_the_run_files(tmp_path, caplog):
    (tmp_path / "last.pth").write_bytes(b"x")
    (tmp_path / "tensorboard").mkdir()
    (tmp_path / "tensorboard" / "events").write_text("e")
    (tmp_path / "notes.txt").write_text("mine")
    claim_output_dir(tmp_path, RUN_FILES, resume=False, overwrite=True).release()
    assert sorted(p.name for p in tmp_path.iterdir()) == [".run.lock", "notes.txt"]
    assert "deleting" in caplog.text and "last.pth" in caplog.text


def test_resume_and_overwrite_together_are_refused(tmp_path):
    with pytest.raises(ValueError, match="choose one"):
        claim_output_dir(tmp_path, RUN_FILES, resume=True, overwrite=True)


def test_temporaries_of_interrupted_writes_are_removed_at_the_next_start(tmp_path):
    (tmp_path / ".last.pth.k3j2.tmp").write_bytes(b"torn")
    (tmp_path / ".summary.json.tmp").write_text("{")
    (tmp_path / "keep.tmp.txt").write_text("x")
    assert [p.name for p in remove_temporaries(tmp_path)] == [".last.pth.k3j2.tmp", ".summary.json.tmp"]
    claim_output_dir(tmp_path, RUN_FILES, resume=True).release()
    assert sorted(p.name for p in tmp_path.iterdir()) == [".run.lock", "keep.tmp.txt"]
