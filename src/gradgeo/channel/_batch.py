"""Gradients that :class:`~gradgeo.channel.optim.ChannelDirected` transforms in one call (a *batch*).

A step of a network with many small tensors is bound by the number of calls, not by memory: the wrapper
plans its batches once (they are kept while the gradients keep their parameters, shapes and layouts) and
each batch then costs a handful of calls whatever its size. Gradients whose channel axis comes first
(direction ``"out"``) batch by channel count, their columns side by side in a workspace kept between steps
(a fresh buffer every step costs its page faults on CPU, more than the copy itself); others by shape,
stacked. Up to 64 channels (32 for ``h0``) the side-by-side batch is one product with the metric's
``[M; 1/C]`` (:func:`~gradgeo.channel.transforms.channel_operator`), whose last row is the probe.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch

from gradgeo.channel._axis import Boundary, _probe_apart
from gradgeo.channel.transforms import channel_operator

Kernel = Callable[..., torch.Tensor]


class Batch:
    """Gradients of ``members`` (parameters, at ``indices`` of their group) transformed in one call along
    ``dim`` of ``view_shape``.

    ``columns`` is set when the channel axis comes first: then the members share only the channel count and
    are laid side by side, ``columns[i]`` columns each; else they share ``view_shape`` and are stacked.
    """

    __slots__ = ("columns", "dim", "indices", "members", "out", "view_shape", "views", "work")

    def __init__(self, members: list[tuple[torch.Tensor, int]], view_shape: tuple[int, ...], dim: int,
                 side_by_side: bool) -> None:
        self.members = [p for p, _ in members]
        self.indices = [i for _, i in members]
        self.view_shape = view_shape
        self.dim = dim
        c = view_shape[dim]
        self.columns = [p.numel() // c for p in self.members] if side_by_side else None
        self.work: torch.Tensor | None = None  # the side-by-side workspace and what is written back from it
        self.out: torch.Tensor | None = None
        self.views: list[torch.Tensor] = []

    def transform_(self, grads: list[torch.Tensor], metric: str, kernel: Kernel, args: tuple[Any, ...],
                   boundary: Boundary) -> torch.Tensor:
        """Transform ``grads`` (the members' gradients) in place; returns the batch's probe, non-finite in a
        member's part exactly when its gradient was: see :meth:`split`."""
        extra = () if metric in ("h0", "laplacian") else (boundary,)
        first = grads[0]
        half = first.dtype in (torch.float16, torch.bfloat16)
        if len(grads) == 1 and not half and (first.is_contiguous() or tuple(first.shape) == self.view_shape):
            return kernel(first.view(self.view_shape) if first.is_contiguous() else first, *args, self.dim, *extra)
        if self.columns is None:
            stacked = torch.stack([g.reshape(self.view_shape) for g in grads])
            work = stacked.float() if half else stacked
            probe = kernel(work, *args, self.dim + 1, *extra).reshape(len(grads), -1)
            torch._foreach_copy_(grads, [w.view(g.shape) for w, g in zip(work.unbind(0), grads)])
            return _probe_apart(probe, work)  # the FFT path's probe views the stacked copy
        c = self.view_shape[self.dim]
        dtype = torch.float32 if half else first.dtype
        operator = channel_operator(metric, c, args[0], boundary, dtype, first.device) if metric != "laplacian" \
            else None
        parts = [g.reshape(c, -1) for g in grads]
        if torch.compiler.is_compiling():  # a compiled step keeps no buffers between calls (no aliased inputs)
            work = torch.cat(parts, 1).to(dtype)
            out = None if operator is None else torch.mm(operator, work)
            views = None
        else:
            if self.work is None:
                self.work = first.new_empty((c, sum(self.columns)), dtype=dtype)
                if operator is not None:
                    self.out = first.new_empty((c + 1, self.work.shape[1]), dtype=dtype)
            work, out = torch.cat(parts, 1, out=self.work), self.out
            if out is not None and operator is not None:
                torch.mm(operator, work, out=out)
            views = self.views
        result = work if out is None else out[:c]
        probe = kernel(work, *args, 0, *extra) if out is None else out[c:]
        if not views:
            views = [r.view(g.shape) for r, g in zip(result.split(self.columns, 1), grads)]
            if not torch.compiler.is_compiling():
                self.views = views
        torch._foreach_copy_(grads, views)
        return probe

    def split(self, probe: torch.Tensor) -> list[torch.Tensor]:
        """The probe of :meth:`transform_` cut into one part per member."""
        if len(self.members) == 1:
            return [probe]
        if self.columns is not None:
            return list(probe.split(self.columns, -1))
        return list(probe.unbind(0))


def side_by_side(view_shape: tuple[int, ...], dim: int) -> bool:
    """Whether the channel axis comes first (nothing before it) and something comes after it: then any shape
    joins a batch by channel count. A flattened gradient (``view_shape`` of one axis: direction ``"flat"``,
    ``laplacian``) is stacked as a row instead, so that its axis stays contiguous (the block form of
    ``laplacian`` needs the axis innermost; an FFT, for lengths without a block form, is faster along rows)."""
    return len(view_shape) > 1 and math.prod(view_shape[:dim]) == 1
