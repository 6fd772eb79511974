"""The command-line error contract of every entry point: a bad value ends in one line and exit status 2.

The project checks user input (config values, file paths, model, data set and method names) before any work and
raises an exception whose message names the bad value. Printed after a traceback, that message is easy to miss
and reads like a crash, so each entry point (`python -m classification ...`, tools/*.py) runs its `main` through
`run_main`: a user error becomes `error: <message>` on stderr and exit status 2, the status argparse gives a bad
command line. Any other exception is a bug and keeps its traceback; `--debug` shows the traceback of a user error
too. No Detectron2 import: the classification package uses this module as well.
"""
from __future__ import annotations

import argparse
import sys
from collections.abc import Callable

import yaml

DEBUG_FLAG = "--debug"
USER_ERROR_STATUS = 2

# The exception types the project (and the registries and loaders it calls) raise for bad user input. Not
# RuntimeError, TypeError, AttributeError, ...: those come from bugs, whose traceback is what one needs.
USER_ERRORS: tuple[type[Exception], ...] = (
    ValueError,  # a value out of its bounds, an unknown choice, an unreadable checkpoint
    KeyError,  # an unknown config key, model, distiller, term or data set (the registries' lookups)
    FileNotFoundError,  # a config file, checkpoint, grid, results file or run folder that is not there
    FileExistsError,  # an OUTPUT_DIR that already holds a run (neither --resume nor --overwrite given)
    IsADirectoryError,  # a folder given where a file is expected
    NotADirectoryError,  # a file given where a folder is expected
    PermissionError,  # a path the user may not read or write
    yaml.YAMLError,  # a config file that is not valid YAML
)

# yacs, fvcore and Detectron2's CfgNode check their own input with `assert`: `merge_from_list` raises
# AssertionError for a non-existent key and for an odd-length KEY VALUE list, Detectron2's `merge_from_file` for
# a missing config file. An AssertionError is therefore a user error when it is raised inside these modules,
# and a bug anywhere else, so AssertionError as such is not in USER_ERRORS.
CONFIG_MODULES = frozenset({"yacs.config", "fvcore.common.config", "detectron2.config.config"})


def add_debug_argument(parser: argparse.ArgumentParser) -> None:
    """Add `--debug` to `parser`, so the command line accepts the flag that `run_main` looks for."""
    parser.add_argument(DEBUG_FLAG, action="store_true", help="show the full traceback of an error")


def run_main(main: Callable[[list[str] | None], object], argv: list[str] | None = None) -> int:
    """Call `main(argv)` and return the process exit status: 0 on success, 2 after a user error.

    A user error (USER_ERRORS, or an assertion of the config libraries) is printed as one `error: <message>`
    line on stderr, unless `--debug` is in `argv` (sys.argv[1:] when None): then it is re-raised with its
    traceback. Every other exception propagates; SystemExit (argparse's own errors) and KeyboardInterrupt
    are not caught.
    """
    try:
        main(argv)
    except Exception as exc:
        if not _is_user_error(exc) or DEBUG_FLAG in (sys.argv[1:] if argv is None else argv):
            raise
        print(f"error: {_one_line_message(exc)}", file=sys.stderr)
        return USER_ERROR_STATUS
    return 0


def _is_user_error(exc: Exception) -> bool:
    """Whether `exc` reports bad user input rather than a bug (see USER_ERRORS and CONFIG_MODULES)."""
    if isinstance(exc, USER_ERRORS):
        return True
    return isinstance(exc, AssertionError) and _raised_in(exc, CONFIG_MODULES)


def _raised_in(exc: Exception, modules: frozenset[str]) -> bool:
    """Whether the innermost frame of `exc`'s traceback, where it was raised, belongs to one of `modules`."""
    entry = exc.__traceback__
    if entry is None:
        return False
    while entry.tb_next is not None:
        entry = entry.tb_next
    return entry.tb_frame.f_globals.get("__name__") in modules


def _one_line_message(exc: Exception) -> str:
    """The message of `exc` on one line: a KeyError's without the quotes its str() adds, and the lines of a
    multi-line message (a YAML error's position, a list of files) joined with spaces."""
    has_text = isinstance(exc, KeyError) and len(exc.args) == 1 and isinstance(exc.args[0], str)
    text = exc.args[0] if has_text else str(exc)
    return " ".join(line.strip() for line in text.splitlines() if line.strip()) or type(exc).__name__
