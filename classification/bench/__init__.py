"""The bench subcommand: resumable grids of runs with result tables, the step-speed benchmark, and one report
from the parts of a grid run separately (the report subcommand)."""
from .combine import report_results
from .grid import run_grid
from .speed import run_speed

__all__ = ["report_results", "run_grid", "run_speed"]
