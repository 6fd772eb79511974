"""The one speed harness of both tasks: median cost of named step callables, measured interleaved.

Why interleaved: the benchmarks report ratios (a distillation step over the steps it cannot avoid, such as the
student's training step plus the teacher's forward), and they run on machines whose load comes and goes over
seconds: other processes share the cores, clocks throttle, caches are evicted. Timing one variant to the end and
then the next would charge each variant a different slice of that noise, and the ratio would measure the machine
rather than the code. `time_interleaved` instead runs every step in turn within each round (a few calls apiece)
and repeats the rounds, so a burst of load lands on all steps alike; the median per call then discards the odd
slow call that a burst still causes. Load that changes over longer than a round (another job starting halfway
through) still shifts the ratios, which is why a run's record keeps the load average it ended under.

    timings = time_interleaved({"student": a, "teacher": b, "kd": c}, rounds=3, calls_per_round=4)
    ratio = ratio_to_floor(timings.medians, "kd", {"student": 1, "teacher": 1})   # c / (a + b)

A floor maps baseline step names to how often each counts (SLKD's floor counts its NUM_SLT trained peers).
`speed_record` and `write_json` keep a run's samples, ratios, table and machine in one JSON file, the raw data
a documented table is rendered from (`tools/benchmark_det.py --output FILE`, classification's
`run_speed(args, output=FILE)`).
"""
from __future__ import annotations

import json
import os
import platform
import statistics
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import torch
from tabulate import tabulate

from unikd.core.run_dir import atomic_write_text

# A step runs one unit of work (a training step, a forward) on fixed inputs; its return value is ignored.
Step = Callable[[], object]
# A floor: baseline step name -> how many times its median counts.
Floor = Mapping[str, float]


def synchronize(device: torch.device | str) -> None:
    """Wait until the device has finished its queued work, so that a timed call ends when its kernels do (CUDA
    launches asynchronously); nothing to wait for on the CPU."""
    device = torch.device(device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@dataclass(frozen=True)
class StepTimings:
    """What `time_interleaved` measured: `samples` holds each step's seconds per timed call in call order (rounds
    x calls_per_round values), `peak_mib` each step's peak CUDA memory of one call in MiB (None where it was not
    measured: not asked for, or not on CUDA)."""

    samples: dict[str, list[float]]
    peak_mib: dict[str, float | None]

    @property
    def medians(self) -> dict[str, float]:
        """Median seconds per call of every step, in the steps' order."""
        return {name: statistics.median(values) for name, values in self.samples.items()}


def time_interleaved(
    steps: Mapping[str, Step],
    *,
    rounds: int,
    calls_per_round: int,
    device: torch.device | str = "cpu",
    warmup: int = 1,
    peak_memory: bool = False,
) -> StepTimings:
    """Time every step in interleaved rounds (see the module docstring for why) and return the samples.

    First each step is called `warmup` times untimed (allocator growth, lazy initialisation, cuDNN autotuning
    would otherwise land in the first round). Then each of `rounds` rounds calls every step, in the mapping's
    order, `calls_per_round` times; each call is timed alone with `time.perf_counter` between two device
    synchronisations, and a one-line progress print with the running medians ends the round. With `peak_memory`,
    each step is finally called once more to read its peak CUDA memory.
    """
    if not steps:
        raise ValueError("time_interleaved needs at least one step")
    if rounds < 1 or calls_per_round < 1 or warmup < 0:
        raise ValueError(f"need rounds >= 1, calls_per_round >= 1 and warmup >= 0, got {rounds}, "
                         f"{calls_per_round} and {warmup}")
    for step in steps.values():
        for _ in range(warmup):
            step()
    samples: dict[str, list[float]] = {name: [] for name in steps}
    for round_index in range(rounds):
        for name, step in steps.items():
            for _ in range(calls_per_round):
                synchronize(device)
                start = time.perf_counter()
                step()
                synchronize(device)
                samples[name].append(time.perf_counter() - start)
        running = ", ".join(f"{name} {statistics.median(values):.3f}s" for name, values in samples.items())
        print(f"round {round_index + 1}/{rounds}: {running}", flush=True)
    peaks = {name: _peak_mib(step, device) if peak_memory else None for name, step in steps.items()}
    return StepTimings(samples=samples, peak_mib=peaks)


def _peak_mib(step: Step, device: torch.device | str) -> float | None:
    """Peak CUDA memory (MiB) allocated during one call of `step`; None off CUDA, where torch keeps no peak."""
    device = torch.device(device)
    if device.type != "cuda":
        return None
    torch.cuda.reset_peak_memory_stats(device)
    step()
    synchronize(device)
    return torch.cuda.max_memory_allocated(device) / 2**20


def floor_seconds(medians: Mapping[str, float], floor: Floor) -> float:
    """The cost a variant cannot go below: the sum of the floor's baseline medians, each times its count.

    A floor naming a step that was not timed is a ValueError listing the timed ones (a typo in a baseline name
    would otherwise surface as a bare KeyError far from its cause)."""
    if not floor:
        raise ValueError("a floor needs at least one baseline step")
    _check_timed(medians, floor)
    return sum(count * medians[name] for name, count in floor.items())


def ratio_to_floor(medians: Mapping[str, float], variant: str, floor: Floor) -> float:
    """How many floors one call of `variant` costs (1.0: distillation adds nothing beyond its parts)."""
    _check_timed(medians, [variant])
    return medians[variant] / floor_seconds(medians, floor)


def ratios_to_floors(medians: Mapping[str, float], floors: Mapping[str, Floor]) -> dict[str, float]:
    """`ratio_to_floor` of every variant of `floors` ({variant: its floor}), in that mapping's order."""
    return {variant: ratio_to_floor(medians, variant, floor) for variant, floor in floors.items()}


def _check_timed(medians: Mapping[str, float], names: Iterable[str]) -> None:
    """ValueError naming the `names` that are no step of `medians`, and the steps that are."""
    unknown = [name for name in names if name not in medians]
    if unknown:
        raise ValueError(f"unknown steps {unknown}: the timed steps are {list(medians)}")


def render_table(rows: Sequence[Sequence[object]], headers: Sequence[str]) -> str:
    """A github-markdown table of already formatted cells; cells are printed as given (no re-formatting of
    numbers, so "0.100" keeps its digits and an empty ratio cell stays empty)."""
    return tabulate(rows, headers=list(headers), tablefmt="github", disable_numparse=True)


def machine_description(device: torch.device | str) -> dict[str, object]:
    """Where a measurement ran, as a documented table must say: CPU model and core count, the load average now
    (1, 5 and 15 minutes: how much other work shared the cores), torch version and threads, OMP_NUM_THREADS, and
    the GPU's name when `device` is CUDA."""
    device = torch.device(device)
    return {
        "cpu": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "load_average": list(os.getloadavg()),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
        "device": str(device),
        "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
    }


def _cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo (what `lscpu` prints as "Model name"), else platform's guess."""
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text(encoding="utf-8", errors="replace").splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name":
                return value.strip()
    return platform.processor() or platform.machine()


def speed_record(timings: StepTimings, floors: Mapping[str, Floor], table: str, settings: Mapping[str, object],
                 device: torch.device | str) -> dict[str, object]:
    """One run as JSON-ready data: its UTC date, machine, settings, every step's samples, median and peak memory,
    every variant's floor and ratio, and the table it printed, so that the table can be checked against (and
    re-rendered from) the numbers."""
    medians = timings.medians
    ratios = ratios_to_floors(medians, floors)
    return {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": machine_description(device),
        "settings": dict(settings),
        "steps": {name: {"median_s": medians[name], "peak_mib": timings.peak_mib[name],
                         "samples_s": timings.samples[name]} for name in medians},
        "ratios": {variant: {"floor": dict(floor), "ratio": ratios[variant]} for variant, floor in floors.items()},
        "table": table,
    }


def write_json(record: Mapping[str, object], path: str | Path) -> None:
    """Write a `speed_record` to `path` (atomically: a reader never sees half a file); settings that JSON has no
    type for (paths) are written as their text."""
    atomic_write_text(json.dumps(record, indent=2, default=str) + "\n", path)
