"""Multi-process training on PyTorch's distributed engine (DDP), one process per device: launching the workers,
this process's place among them, and the collective steps a sharded run needs. Used by the classification trainer
(Detectron2 has its own `launch`).

Two ways in, as with Detectron2's `launch`:

    torchrun --nproc_per_node N -m classification train --config FILE ...    # torchrun sets RANK, WORLD_SIZE, ...
    python -m classification train --num-gpus N --config FILE ...           # spawns the same N workers itself

(`--num-machines M --machine-rank R --dist-url tcp://HOST:PORT` for several machines.) The backend is NCCL on
CUDA and gloo on the CPU, where `--num-gpus N` means N CPU processes (what the tests run). Each rank trains on its
share of every global batch (SOLVER.BATCH_SIZE stays the global batch, `shard_of`), the student and the trainable
distiller modules sit in one `DistributedDataParallel`, the frozen teacher outside it on every rank, and rank 0
alone writes the run's files.
"""
from __future__ import annotations

import os
import signal
import socket
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import Tensor

@dataclass(frozen=True)
class World:
    """This process's place in the run: its global rank, the number of processes and its rank on its machine."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        """Whether this process writes the run's files and logs (rank 0)."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.size > 1


def current_world() -> World:
    """The world of the initialised process group, or a single process when there is none."""
    if not (dist.is_available() and dist.is_initialized()):
        return World()
    return World(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", dist.get_rank())))


def backend() -> str:
    """The process-group backend of this machine: NCCL with CUDA, gloo without."""
    return "nccl" if torch.cuda.is_available() else "gloo"


def shard_of(count: int, world: World) -> slice:
    """The contiguous part of `count` items (one global batch, in its order) that rank `world.rank` takes: the
    first `count % size` ranks take one item more, so the ranks' parts joined in rank order are the batch."""
    base, extra = divmod(count, world.size)
    start = world.rank * base + min(world.rank, extra)
    return slice(start, start + base + (1 if world.rank < extra else 0))


def free_port() -> int:
    """A TCP port free on this machine now (for the spawned workers' rendezvous on localhost)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def launch(main: Callable[..., Any], num_gpus: int, args: tuple = (), num_machines: int = 1, machine_rank: int = 0,
           dist_url: str = "auto") -> None:
    """Run `main(*args)` on `num_gpus` processes on each of `num_machines` machines (Detectron2's `launch`
    semantics); one process runs `main` directly, and so does a process torchrun started (it joins torchrun's
    group first).

    A worker that fails or dies (SIGKILL included) ends the others (`torch.multiprocessing`), and the launch
    raises naming it: the one a signal killed, when one was."""
    if num_gpus < 1 or num_machines < 1 or not 0 <= machine_rank < num_machines:
        raise ValueError(f"need --num-gpus >= 1, --num-machines >= 1 and 0 <= --machine-rank < --num-machines, got "
                         f"{num_gpus}, {num_machines} and {machine_rank}")
    if "RANK" in os.environ and int(os.environ.get("WORLD_SIZE", 1)) > 1:  # started by torchrun
        _join_torchrun()
        _run_and_close(main, args)
        return
    world_size = num_gpus * num_machines
    if world_size == 1:
        main(*args)
        return
    if torch.cuda.is_available() and torch.cuda.device_count() < num_gpus:
        raise ValueError(f"--num-gpus {num_gpus} but this machine has {torch.cuda.device_count()} CUDA devices")
    if dist_url == "auto":
        if num_machines > 1:
            raise ValueError("several machines need --dist-url tcp://HOST:PORT of machine 0")
        dist_url = f"tcp://127.0.0.1:{free_port()}"
    workers = mp.start_processes(_worker, nprocs=num_gpus, join=False, start_method="spawn",
                                 args=(main, args, num_gpus, machine_rank, world_size, dist_url))
    try:
        while not workers.join():
            pass
    except (mp.ProcessRaisedException, mp.ProcessExitedException) as failure:
        _raise_for_a_killed_worker(workers, machine_rank * num_gpus, failure)
        raise


def _raise_for_a_killed_worker(workers: mp.ProcessContext, first_rank: int, failure: Exception) -> None:
    """Name the worker that a signal killed when one did: its peers then fail too (their collectives lose it), and
    whichever failure torch sees first would otherwise be reported. Workers torch stopped after the failure
    (SIGTERM) do not count."""
    for index, process in enumerate(workers.processes):
        code = process.exitcode
        if code is not None and code < 0 and -code != signal.SIGTERM:
            raise RuntimeError(f"process {index} terminated with signal {signal.Signals(-code).name} (rank "
                               f"{first_rank + index}); the other workers were stopped") from failure


def _join_torchrun() -> None:
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    if torch.cuda.is_available():
        torch.cuda.set_device(local_rank)
    dist.init_process_group(backend(), init_method="env://")


def _worker(local_rank: int, main: Callable[..., Any], args: tuple, num_gpus: int, machine_rank: int,
            world_size: int, dist_url: str) -> None:
    rank = machine_rank * num_gpus + local_rank
    os.environ["LOCAL_RANK"] = str(local_rank)
    if torch.cuda.is_available():
        torch.cuda.set_device(local_rank)
    dist.init_process_group(backend(), init_method=dist_url, world_size=world_size, rank=rank)
    _run_and_close(main, args)


def _run_and_close(main: Callable[..., Any], args: tuple) -> None:
    """`main(*args)` in this process's group, then close the group once every rank is done (a rank tearing its
    group down while another still talks to it aborts the other)."""
    try:
        main(*args)
        dist.barrier()
    finally:
        dist.destroy_process_group()


def barrier(world: World) -> None:
    """Wait for every rank (a no-op in a single process)."""
    if world.distributed:
        dist.barrier()


def row_counts(rows: int, world: World) -> list[int]:
    """The number of rows each rank holds (every rank tells its `rows`), in rank order."""
    if not world.distributed:
        return [rows]
    count = torch.tensor([rows], device=_collective_device())
    counts = [torch.zeros_like(count) for _ in range(world.size)]
    dist.all_gather(counts, count)
    return [int(c.item()) for c in counts]


def gather_rows(tensor: Tensor, world: World, sizes: list[int] | None = None) -> Tensor:
    """Every rank's rows of `tensor` joined in rank order, on every rank (ranks may hold different numbers of rows;
    `sizes`, from `row_counts`, saves asking again). Outside autograd: the result carries no gradient."""
    if not world.distributed:
        return tensor
    sizes = sizes if sizes is not None else row_counts(len(tensor), world)
    padded = tensor.new_zeros((max(sizes), *tensor.shape[1:]))  # all_gather needs one shape on every rank
    padded[: len(tensor)] = tensor.detach()
    parts = [torch.zeros_like(padded) for _ in sizes]
    dist.all_gather(parts, padded)
    return torch.cat([part[:size] for part, size in zip(parts, sizes)])


def all_reduce_sum(tensor: Tensor, world: World) -> Tensor:
    """The sum of `tensor` over every rank (the tensor itself in one process)."""
    if not world.distributed:
        return tensor
    total = tensor.detach().clone()
    dist.all_reduce(total)
    return total


def gather_by_index(values: Tensor, indices: Tensor, world: World) -> tuple[Tensor, Tensor]:
    """Every rank's rows of `values` (keyed by their dataset `indices`), joined and sorted by index, on every rank:
    a sharded evaluation's predictions in the data set's order, each image exactly once."""
    if not world.distributed:
        return values, indices
    sizes = row_counts(len(indices), world)
    joined_values, joined_indices = (gather_rows(t, world, sizes) for t in (values, indices))
    order = joined_indices.argsort()
    return joined_values[order], joined_indices[order]


def _collective_device() -> torch.device:
    """Where the process group's tensors must live: the current CUDA device under NCCL, else the CPU."""
    return torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else torch.device("cpu")
