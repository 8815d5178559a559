"""Run a function on N local processes joined in a gloo process group on 127.0.0.1 (as torchrun would)."""

from __future__ import annotations

import os
import socket
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.multiprocessing as mp


def free_port() -> int:
    """A TCP port that was free on the loopback interface a moment ago."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _entry(rank: int, fn: Callable[..., Any], world: int, port: int, out: str, args: tuple[Any, ...]) -> None:
    torch.set_num_threads(1)  # N processes share a small, busy machine
    # the variables torchrun sets, so that code reading the environment sees a torchrun launch
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world),
                      LOCAL_RANK=str(rank), LOCAL_WORLD_SIZE=str(world),
                      GLOO_SOCKET_IFNAME="lo")  # gloo's own connections on the loopback interface too
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    try:
        result = fn(rank, world, *args)
        dist.barrier()  # no rank tears the group down while another still talks to it
    finally:
        dist.destroy_process_group()
    torch.save(result, Path(out) / f"rank{rank}.pt")
    # Once in about 15 launches under pytest, torch 2.13 aborts in a destructor at interpreter exit, after all
    # of the above ("terminate called without an active exception"); the work is done and saved, so skip it.
    os._exit(0)


def run_ranks(fn: Callable[..., Any], world: int, *args: Any) -> list[Any]:
    """``[fn(rank, world, *args) for every rank]``, each rank in its own spawned process.

    ``fn`` must be importable (a module-level function) and its result picklable; an exception in any
    rank fails the call with that rank's traceback.
    """
    with tempfile.TemporaryDirectory() as out:
        mp.spawn(_entry, args=(fn, world, free_port(), out, args), nprocs=world, join=True)
        return [torch.load(Path(out) / f"rank{r}.pt", weights_only=False) for r in range(world)]
