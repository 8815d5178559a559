"""Data-parallel training under ``torchrun``: the process group, the DDP model, rank-0 duties.

``torchrun --nproc-per-node N -m gradgeo.cli train ...`` starts N processes with ``RANK``, ``WORLD_SIZE``
and ``LOCAL_RANK`` in their environment. :func:`setup` reads them, joins the process group (``nccl`` on
CUDA, ``gloo`` on CPU) and returns a :class:`Context` that the engine asks for everything that differs
from one process: the device (``cuda:LOCAL_RANK``), the wrapped model, sums over ranks, and whether this
rank is the one that logs, evaluates and writes files. Without torchrun's variables everything is a
no-op: ``Context()`` is one process.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

__all__ = ["Context", "setup", "shutdown", "torchrun_env"]


def torchrun_env() -> tuple[int, int, int] | None:
    """``(rank, world_size, local_rank)`` from the variables torchrun sets, or None outside torchrun."""
    if "WORLD_SIZE" not in os.environ or "RANK" not in os.environ:
        return None
    try:
        rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
        local = int(os.environ.get("LOCAL_RANK", rank))
    except ValueError:
        raise ValueError("RANK, WORLD_SIZE and LOCAL_RANK must be integers (as torchrun sets them), got "
                         f"{os.environ['RANK']!r}, {os.environ['WORLD_SIZE']!r}, "
                         f"{os.environ.get('LOCAL_RANK')!r}") from None
    return rank, world, local


@dataclasses.dataclass(frozen=True)
class Context:
    """Where this process stands in a data-parallel run (the defaults: a single process).

    Example:
        >>> ctx = Context()
        >>> ctx.is_main, ctx.distributed, ctx.group, ctx.sum(3).item()
        (True, False, None, 3)
    """

    rank: int = 0
    world_size: int = 1
    device: torch.device = torch.device("cpu")

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """Rank 0: the process that logs, evaluates, and writes metrics and checkpoints."""
        return self.rank == 0

    @property
    def group(self) -> Any:
        """The process group of the ranks (torch.distributed's default group), or None on one process: the
        ``process_group`` argument of :func:`gradgeo.osgd.backward` and the multi-exit strategies."""
        return dist.group.WORLD if self.distributed else None

    def wrap(self, model: nn.Module) -> nn.Module:
        """``model`` in ``DistributedDataParallel`` (gradients averaged over ranks in ``backward``), or as is."""
        if not self.distributed:
            return model
        device_ids = [self.device.index] if self.device.type == "cuda" else None
        return nn.parallel.DistributedDataParallel(model, device_ids=device_ids)

    def sum(self, value: torch.Tensor | float) -> torch.Tensor:
        """``value`` (a number or a tensor) summed elementwise over all ranks: a new tensor on this rank's
        device, in ``value``'s dtype (one all_reduce; a copy on one process)."""
        total = torch.as_tensor(value, device=self.device).clone()
        if self.distributed:
            dist.all_reduce(total)
        return total

    def from_main(self, obj: Any) -> Any:
        """Rank 0's ``obj`` on every rank (a picklable object; the other ranks' argument is ignored)."""
        if not self.distributed:
            return obj
        box = [obj]
        dist.broadcast_object_list(box, src=0, device=self.device if self.device.type == "cuda" else None)
        return box[0]


def setup(device: torch.device) -> Context:
    """Join torchrun's process group (once per process) and return this process's :class:`Context`.

    Outside torchrun (and without a process group) this returns the single-process context on ``device``.
    Under torchrun a CUDA ``device`` becomes ``cuda:LOCAL_RANK`` and the backend ``nccl``; otherwise ``gloo``.
    A process group that the caller initialized already is used as it is.

    Args:
        device: the device the configuration asks for.

    Returns:
        The context.
    """
    env = torchrun_env()
    if env is None and not (dist.is_available() and dist.is_initialized()):
        return Context(device=device)
    if not dist.is_available():
        raise RuntimeError("torchrun started this process but this torch build has no torch.distributed")
    if device.type == "cuda" and env is not None:  # one GPU per process
        device = torch.device("cuda", env[2])
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return Context(rank=dist.get_rank(), world_size=dist.get_world_size(), device=device)


def shutdown() -> None:
    """Leave the process group, if this process joined one (call once at exit)."""
    if dist.is_available() and dist.is_initialized():
        dist.barrier()  # no rank tears down the group while another still talks to it
        dist.destroy_process_group()
