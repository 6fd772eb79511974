"""Quiet bench runs: each stage's full log goes to its own log.txt; the terminal gets one progress line per stage.

Detectron2 and the classification trainer log every iteration or epoch, and COCO evaluation prints its tables:
thousands of lines in which a grid's result tables drown. While a stage runs, `StageLog` sends every log
record and everything written to stdout or stderr to `<stage folder>/log.txt`. On a terminal the stage's line
shows its latest log message (Detectron2's `eta: ... iter: ... total_loss: ...`, the trainer's `epoch k/n ...`)
in place; elsewhere (a file, a pipe, a helper process of --jobs) the stage prints a line when it starts and
when it ends. `verbose` keeps the full stream on the terminal as well as in log.txt.
"""
from __future__ import annotations

import contextlib
import logging
import shutil
import sys
import time
import warnings
from pathlib import Path
from types import TracebackType
from typing import TextIO

LOG_NAME = "log.txt"
LOG_FORMAT = "%(asctime)s %(name)s %(levelname)s: %(message)s"


# Deprecation warnings that importing Detectron2 with today's torch and setuptools prints in every process, about
# code neither the user nor this project can change (messages as of torch 2.14, setuptools 80).
THIRD_PARTY_IMPORT_WARNINGS = (
    (UserWarning, r"pkg_resources is deprecated"),
    (FutureWarning, r"`torch\.jit\.script` is deprecated"),
)


def hide_third_party_import_warnings() -> None:
    """Leave THIRD_PARTY_IMPORT_WARNINGS off a quiet run's terminal (--verbose shows them)."""
    for category, message in THIRD_PARTY_IMPORT_WARNINGS:
        warnings.filterwarnings("ignore", message=message, category=category)


class _StatusLine(logging.Handler):
    """Shows each record's first line as the stage's status, rewritten in place on `stream` (a terminal)."""

    def __init__(self, stream: TextIO, prefix: str):
        super().__init__(logging.INFO)
        self.stream, self.prefix = stream, prefix

    def emit(self, record: logging.LogRecord) -> None:
        text = " ".join(record.getMessage().split("\n", 1)[0].split())
        width = shutil.get_terminal_size((120, 20)).columns - 1
        self.stream.write("\r\x1b[K" + f"{self.prefix} | {text}"[:width])
        self.stream.flush()


def _logger_targets() -> list[logging.Logger]:
    """The root logger and every logger that does not pass its records up (Detectron2's `setup_logger` makes
    "detectron2" one): the places a handler must sit to see every record."""
    loggers = [logging.getLogger()]
    for logger in logging.Logger.manager.loggerDict.values():
        if isinstance(logger, logging.Logger) and logger.handlers and not logger.propagate:
            loggers.append(logger)
    return loggers


class StageLog(contextlib.AbstractContextManager):
    """While one stage runs: its records (INFO and up) and its stdout/stderr in `folder/log.txt`, and its progress
    line on the terminal (see the module docstring). `live` rewrites the line in place (a terminal; off in
    helper processes, whose lines would overwrite each other)."""

    def __init__(self, folder: Path, title: str, verbose: bool = False, live: bool | None = None):
        self.folder, self.title, self.verbose = Path(folder), title, verbose
        self.terminal = sys.stdout
        self.live = (not verbose and self.terminal.isatty()) if live is None else live and not verbose
        self._stack = contextlib.ExitStack()
        self._start = 0.0

    def __enter__(self) -> StageLog:
        self.folder.mkdir(parents=True, exist_ok=True)
        log_file = self._stack.enter_context(open(self.folder / LOG_NAME, "a", encoding="utf-8"))
        file_handler = logging.StreamHandler(log_file)
        file_handler.setFormatter(logging.Formatter(LOG_FORMAT))
        root = logging.getLogger()
        self._stack.callback(root.setLevel, root.level)
        root.setLevel(min(root.level or logging.INFO, logging.INFO))
        added = [file_handler] + ([_StatusLine(self.terminal, self.title)] if self.live else [])
        for logger in _logger_targets():
            kept = list(logger.handlers)
            self._stack.callback(setattr, logger, "handlers", kept)
            shown = kept if self.verbose else [h for h in kept if isinstance(h, logging.FileHandler)]
            logger.handlers = shown + added
        if not self.verbose:
            self._stack.enter_context(contextlib.redirect_stdout(log_file))
            self._stack.enter_context(contextlib.redirect_stderr(log_file))
        self._start = time.perf_counter()
        if not self.live:
            print(f"{self.title} ...", file=self.terminal, flush=True)
        return self

    def finish(self, outcome: str) -> None:
        """End the stage's line with `outcome` (its headline result) and the time it took."""
        seconds = time.perf_counter() - self._start
        end = "\r\x1b[K" if self.live else ""
        print(f"{end}{self.title}: {outcome} ({seconds:.0f} s; log {self.folder / LOG_NAME})", file=self.terminal,
              flush=True)

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self._stack.close()
        if error is not None and self.live:
            print(file=self.terminal, flush=True)  # keep the last status line above the error
