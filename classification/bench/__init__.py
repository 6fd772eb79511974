"""The classification side of the bench: its grid task (`task.ClassificationTask`, run by `unikd.bench`) and the
step-speed benchmark."""
from .speed import run_speed
from .task import TABLE, ClassificationTask

__all__ = ["TABLE", "ClassificationTask", "run_speed"]
