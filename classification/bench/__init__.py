"""The bench subcommand: resumable grids of runs with result tables, and the step-speed benchmark."""
from .grid import run_grid
from .speed import run_speed

__all__ = ["run_grid", "run_speed"]
