"""The classification side of the bench: its grid task (`task.ClassificationTask`, run by `unikd.bench`) and the
step-speed and loader-speed benchmarks."""
from .data_speed import run_data_speed
from .speed import run_speed
from .task import TABLE, ClassificationTask

__all__ = ["TABLE", "ClassificationTask", "run_data_speed", "run_speed"]
