"""An output folder belongs to one run: an exclusive lock, no silent overwrite, no leftover temporaries.

Both front ends call `claim_output_dir` before any work. A folder that already holds a run's files is
refused unless the run resumes it (or the user asks to overwrite it, which deletes exactly those files and
says so); a second process that tries to train into a folder while another holds it is refused; the
temporaries of a write that was killed half-way are removed.
"""
from __future__ import annotations

import fcntl
import logging
import os
import shutil
from collections.abc import Iterable
from pathlib import Path
from typing import IO

logger = logging.getLogger(__name__)

LOCK_NAME = ".run.lock"
TEMPORARY_PATTERN = ".*.tmp"


class OutputDirLock:
    """An exclusive `flock` on OUTPUT_DIR/.run.lock (or another lock file `name`), held while the run lives.

    The kernel drops the lock when the holding process exits, even after SIGKILL, so a killed run never
    leaves a stale lock behind; the lock file itself stays and records the last holder's pid.
    """

    def __init__(self, output_dir: str | Path, name: str = LOCK_NAME) -> None:
        self.path = Path(output_dir) / name
        self._file: IO[str] | None = None

    def acquire(self) -> "OutputDirLock":
        """Take the lock, or raise RuntimeError naming the folder and the pid that holds it."""
        if not self.try_acquire():
            raise RuntimeError(
                f"another run (pid {self.holder()}) is writing to {self.path.parent}; wait for it to finish or "
                "use another OUTPUT_DIR"
            )
        return self

    def try_acquire(self) -> bool:
        """Take the lock if no other holder has it; False (and nothing held) when one has."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        handle = open(self.path, "a+", encoding="utf-8")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            return False
        handle.seek(0)
        handle.truncate()
        handle.write(str(os.getpid()))
        handle.flush()
        self._file = handle
        return True

    def holder(self) -> str:
        """The pid the lock file names: the current holder while the lock is held, else the last one."""
        try:
            return self.path.read_text(encoding="utf-8").strip() or "unknown"
        except FileNotFoundError:
            return "unknown"

    def release(self) -> None:
        if self._file is not None:
            fcntl.flock(self._file, fcntl.LOCK_UN)
            self._file.close()
            self._file = None

    def __enter__(self) -> "OutputDirLock":
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


def atomic_write_text(text: str, path: str | Path) -> None:
    """Write `text` to `.NAME.tmp` beside `path`, then rename it over `path`: readers see the old file or the new
    one, never a torn one, and a write killed half-way leaves a temporary that `remove_temporaries` deletes."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def remove_temporaries(output_dir: str | Path) -> list[Path]:
    """Delete the `.NAME.tmp` files an interrupted atomic write left in `output_dir`; return them."""
    leftovers = sorted(Path(output_dir).glob(TEMPORARY_PATTERN))
    for path in leftovers:
        path.unlink(missing_ok=True)
        logger.info("removed %s, left by an interrupted write", path)
    return leftovers


def claim_output_dir(
    output_dir: str | Path, run_files: Iterable[str], resume: bool, overwrite: bool = False
) -> OutputDirLock:
    """Lock `output_dir` for this run and make sure it starts from a clean state.

    `run_files` are the names (files or folders, globs allowed) that mark a run in the folder. When any
    exists and the run neither resumes nor overwrites, FileExistsError lists them. With `overwrite`, exactly
    those are deleted, each logged. Temporaries of interrupted writes are removed either way. Returns the
    held lock; the caller keeps a reference for the run (the lock goes with the object) and releases it.
    """
    if resume and overwrite:
        raise ValueError("--resume continues the run in OUTPUT_DIR and --overwrite deletes it: choose one")
    output_dir = Path(output_dir)
    lock = OutputDirLock(output_dir).acquire()
    try:
        existing = sorted({path for pattern in run_files for path in output_dir.glob(pattern)})
        if existing and not resume:
            if not overwrite:
                names = ", ".join(p.name for p in existing)
                raise FileExistsError(
                    f"{output_dir} already holds a run ({names}); pass --resume to continue it or "
                    "--overwrite to delete these files and start over, or choose another OUTPUT_DIR"
                )
            for path in existing:
                logger.warning("--overwrite: deleting %s", path)
                shutil.rmtree(path) if path.is_dir() else path.unlink()
        remove_temporaries(output_dir)
    except BaseException:
        lock.release()
        raise
    return lock
