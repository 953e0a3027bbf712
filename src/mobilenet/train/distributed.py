"""Distributed data parallel through torchrun: the process group, and the small all-reduces by
which the processes agree (on sums, on stopping, on every micro-batch before its forward pass).

``torchrun --nproc-per-node N -m mobilenet train ...`` starts N processes and sets RANK,
LOCAL_RANK, WORLD_SIZE, MASTER_ADDR and MASTER_PORT; ``setup`` joins them with
``init_process_group(init_method="env://")`` — gloo on CPU, nccl on GPU. Gradients are averaged
by ``torch.nn.parallel.DistributedDataParallel``. Without those variables everything here is a
no-op and training runs in one process.

``torchrun --max-restarts N`` starts the worker group again after a failure, with the same command
and environment except ``TORCHELASTIC_RESTART_COUNT``: ``launch()`` names the launch (the same
across its restarts) so that a restarted group can tell its own run's checkpoint from another's.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch.utils.data import DataLoader

from mobilenet.errors import InputError, MobileNetError, option


@dataclass(frozen=True)
class Context:
    rank: int
    local_rank: int
    world_size: int
    device: torch.device
    owns_group: bool = False  # we created the process group, so we destroy it

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def setup(device: str = "auto") -> Context:
    """Join the torchrun job if there is one, and pick this process's device."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as err:
        raise InputError(f"{option('device')} must be auto, cpu, cuda or cuda:N, got {device!r}") from err
    if dev.type not in ("cpu", "cuda"):
        raise InputError(f"{option('device')} must be auto, cpu, cuda or cuda:N, got {device!r}")
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise InputError(f"{option('device', device)}: no CUDA GPU is available to PyTorch here; use "
                         f"{option('device', 'cpu')} (or auto)")
    if dev.type == "cuda" and (local_rank if dev.index is None else dev.index) >= torch.cuda.device_count():
        raise InputError(f"{option('device', device)}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    if dev.type == "cuda":
        dev = torch.device("cuda", local_rank if dev.index is None else dev.index)
        torch.cuda.set_device(dev)
    owns_group = world_size > 1 and not dist.is_initialized()
    if owns_group:
        backend = "nccl" if dev.type == "cuda" else "gloo"
        store = _store_of_this_start()
        if store is None:
            dist.init_process_group(backend=backend, init_method="env://", rank=rank, world_size=world_size)
        else:
            dist.init_process_group(backend=backend, store=store, rank=rank, world_size=world_size)
    return Context(rank, local_rank, world_size, dev, owns_group)


def _store_of_this_start() -> dist.Store | None:
    """Where the processes meet, under torchrun: the agent's store, with keys of this start of the
    worker group alone. torchrun keeps its store across ``--max-restarts``, and the group it starts
    again read the addresses that the failed group had published there: its gloo processes then
    failed to connect, or waited forever. None outside torchrun (``env://`` as usual)."""
    agent = _agent_store()
    return None if agent is None else dist.PrefixStore(f"mobilenet/start_{restart_count()}", agent)


def _agent_store() -> dist.Store | None:
    """torchrun's own store (its agent's, which outlives the worker groups it starts); None
    outside torchrun, or where torchrun was told not to share it."""
    if os.environ.get("TORCHELASTIC_USE_AGENT_STORE") != "True":
        return None
    from torch.distributed.constants import default_pg_timeout

    return dist.TCPStore(os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"]), is_master=False,
                         timeout=default_pg_timeout)


def one_per_launch(key: str, value: str) -> str:
    """``value``, or under torchrun the value that the launch's first process gave for ``key``: one
    answer for every process of every start of the worker group. A value each process computes
    for itself (a run directory named after the clock) would otherwise differ between the ranks,
    and between a group and the one ``--max-restarts`` starts again, which then could not find
    the run it continues. ``value`` outside torchrun."""
    agent = _agent_store()
    if agent is None:
        return value
    return agent.compare_set(f"mobilenet/launch/{key}", "", value).decode()


def cleanup(ctx: Context) -> None:
    """Leave the process group if ``setup`` joined it (a caller's own group is left alone)."""
    if ctx.owns_group and dist.is_initialized():
        dist.destroy_process_group()


def all_reduce_sum(values: list[float], ctx: Context) -> list[float]:
    """Sum a few numbers over all processes (counts, losses); identity in one process."""
    if not ctx.distributed:
        return values
    t = torch.tensor(values, dtype=torch.float64, device=ctx.device)
    dist.all_reduce(t)
    return t.tolist()


def gather_to_main(value: Any, ctx: Context) -> list[Any] | None:
    """Every process's ``value`` (small, picklable), in rank order, on rank 0; None on the others.
    ``[value]`` in one process."""
    if not ctx.distributed:
        return [value]
    gathered: list[Any] = [None] * ctx.world_size
    dist.all_gather_object(gathered, value)  # (gather_object is not on every backend)
    return gathered if ctx.is_main else None


def launch() -> str | None:
    """The torchrun launch this process belongs to, the same across its restarts: the agent's
    host and PID (the workers' parent) and the rendezvous id. None outside torchrun."""
    run_id = os.environ.get("TORCHELASTIC_RUN_ID")
    return None if run_id is None else f"{socket.gethostname()}:{os.getppid()}:{run_id}"


def restart_count() -> int:
    """How many times torchrun has restarted this worker group (0: its first start, or no torchrun)."""
    return int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0"))


def any_process(flag: bool, ctx: Context) -> bool:
    """True on every process if it is True on any: all stop at the same step after a signal."""
    if not ctx.distributed:
        return flag
    t = torch.tensor([int(flag)], device=ctx.device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item())


def max_over_processes(value: int, ctx: Context) -> int:
    """The largest of one small integer over all processes; the value itself in one process."""
    if not ctx.distributed:
        return value
    t = torch.tensor([int(value)], device=ctx.device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return int(t.item())


def agreed_batches(loader: DataLoader, ctx: Context) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """The loader's micro-batches, with the processes of a DDP run agreeing on each one first.

    Every process must join every gradient all-reduce, so one whose micro-batch is entirely
    unreadable (``--bad-files skip``), or whose loader raised on a bad file (``stop``), cannot just
    stop: the others would wait in the collective until its timeout (30 minutes). One small
    all-reduce per micro-batch lets all of them stop at once, each with a one-line error. In one
    process an empty micro-batch is simply skipped by the caller."""
    iterator = iter(loader)
    while True:
        error: MobileNetError | None = None
        try:
            x, y = next(iterator)
        except StopIteration:  # (every process has the same number of micro-batches)
            return
        except MobileNetError as err:
            err = _worker_error(err)
            if not ctx.distributed:
                raise err from None
            error, x, y = err, torch.empty(0), torch.empty(0)
        if ctx.distributed:
            mine = 2 if error is not None else int(len(y) == 0)
            if max_over_processes(mine, ctx):
                if error is not None:
                    raise error
                if mine:
                    raise InputError(
                        f"every image of a micro-batch of process {ctx.rank} was unreadable "
                        f"({option('bad_files', 'skip')}, named above); under DDP each process needs data at every "
                        f"step: fix or remove the files, or use a larger {option('micro_batch')}")
                raise InputError(f"process {ctx.rank} stops with the others: another process found unreadable "
                                 "training data (its message names the files)")
        yield x, y


def _worker_error(err: MobileNetError) -> MobileNetError:
    """A DataLoader worker's error comes back with the worker's whole traceback in its message;
    the user's error is its last line (``mobilenet.preprocess.ImageError: a.png: cannot decode``)."""
    text = str(err)
    if "Original Traceback" not in text:
        return err
    last = text.strip().splitlines()[-1]
    prefix = f"{type(err).__module__}.{type(err).__qualname__}: "
    return type(err)(last.removeprefix(prefix).removeprefix(f"{type(err).__qualname__}: "))
