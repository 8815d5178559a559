"""Per-exit gradient plumbing shared by :mod:`gradgeo.osgd` and :mod:`gradgeo.multiexit`.

A multi-exit network produces K losses from one forward pass. The methods built on top of this module need
each exit's gradient separately (not the gradient of their sum), and they write a combined direction back
into ``p.grad`` with the same accumulation semantics as ``loss.backward()``. This module holds the argument
checks, the per-exit ``torch.autograd.grad`` calls, the average over data-parallel ranks, and the write-back.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import torch
import torch.distributed

__all__ = [
    "accumulate_direction",
    "accumulate_grad",
    "average_over_ranks_",
    "check_dense",
    "check_losses",
    "check_params",
    "compute_dtype",
    "exit_gradient_matrix",
    "exit_gradients",
]


def check_losses(losses: Sequence[torch.Tensor], who: str) -> list[torch.Tensor]:
    """Return ``losses`` as a list after checking that it holds K >= 1 differentiable scalar losses."""
    if isinstance(losses, torch.Tensor):
        if losses.dim() == 0:
            raise TypeError(
                f"{who} needs the per-exit losses as a list [L_1, ..., L_K], got a single scalar tensor. "
                "That looks like a pre-summed loss such as sum(losses): a sum has lost the per-exit "
                "gradients this method works on. Pass the list of per-exit losses itself "
                "(a one-element list is fine for a single exit)."
            )
        raise TypeError(
            f"{who} needs the per-exit losses as a list [L_1, ..., L_K] of scalar tensors, got one tensor "
            f"of shape {tuple(losses.shape)}. Pass the losses as computed at each exit, not stacked: each "
            "exit's backward pass should traverse only that exit's sub-graph."
        )
    try:
        losses = list(losses)
    except TypeError:
        raise TypeError(
            f"{who} needs the per-exit losses as a list of scalar tensors, got {type(losses).__name__}"
        ) from None
    if not losses:
        raise ValueError(f"{who} got an empty list of losses; pass one scalar loss per exit")
    for k, loss in enumerate(losses):
        if not isinstance(loss, torch.Tensor):
            raise TypeError(f"{who}: loss {k} is a {type(loss).__name__}, expected a scalar torch.Tensor")
        if loss.numel() != 1:
            raise ValueError(
                f"{who}: loss {k} has shape {tuple(loss.shape)}; each loss must be a scalar "
                "(reduce it, e.g. with .mean(), before passing it)"
            )
        if not loss.requires_grad:
            raise ValueError(
                f"{who}: loss {k} does not require grad; was it computed under torch.no_grad() "
                "or detached? Compute the losses from the forward pass with autograd enabled."
            )
    return losses


def check_params(params: Iterable[torch.Tensor], who: str) -> list[torch.Tensor]:
    """Return ``params`` as a list after checking that they are distinct real leaf tensors needing grad."""
    if isinstance(params, torch.Tensor):
        raise TypeError(f"{who} needs an iterable of parameters (e.g. model.parameters()), got one tensor")
    params = list(params)
    if not params:
        raise ValueError(f"{who} got no parameters; pass the tensors to train, e.g. model.parameters()")
    seen: set[int] = set()
    for i, p in enumerate(params):
        if not isinstance(p, torch.Tensor):
            raise TypeError(f"{who}: parameter {i} is a {type(p).__name__}, expected a torch.Tensor")
        if not (p.is_leaf and p.requires_grad):
            raise ValueError(
                f"{who}: parameter {i} (shape {tuple(p.shape)}) is not a leaf tensor that requires grad; "
                "pass only trainable parameters, e.g. [p for p in model.parameters() if p.requires_grad]"
            )
        if not p.is_floating_point():
            raise ValueError(f"{who}: parameter {i} has dtype {p.dtype}; expected a real floating dtype")
        if id(p) in seen:
            raise ValueError(f"{who}: parameter {i} (shape {tuple(p.shape)}) is listed twice")
        seen.add(id(p))
    return params


def compute_dtype(dtypes: Iterable[torch.dtype]) -> torch.dtype:
    """float64 if any of ``dtypes`` is float64, else float32: inner products never run in half precision."""
    out = torch.float32
    for dtype in dtypes:
        out = torch.promote_types(out, dtype)
    return out


def exit_gradients(losses: Sequence[torch.Tensor], params: Sequence[torch.Tensor]) -> list[list[torch.Tensor | None]]:
    """``grads[k][i]``: the gradient of ``losses[k]`` w.r.t. ``params[i]``; None if exit k does not reach it.

    One ``torch.autograd.grad`` call per exit, so each call traverses only that exit's sub-graph. The graph
    is kept for all but the last call and then freed, as ``loss.backward()`` frees it.
    """
    last = len(losses) - 1
    return [
        list(torch.autograd.grad(loss, params, retain_graph=k < last, allow_unused=True))
        for k, loss in enumerate(losses)
    ]


def exit_gradient_matrix(
    losses: Sequence[torch.Tensor], params: Sequence[torch.Tensor], who: str, device_hint: str = ""
) -> tuple[torch.Tensor, list[bool]]:
    """The K x N matrix whose row k is exit k's gradient over all ``params`` flattened and concatenated.

    Rows are filled one exit at a time, so the peak memory is the K x N buffer plus one exit's gradients.
    Parameters an exit does not reach get zeros in its row. The buffer's dtype is :func:`compute_dtype`.

    Args:
        losses: the checked per-exit losses.
        params: the checked parameters, all on one device.
        who: the caller's name, for error messages.
        device_hint: appended to the error raised when the parameters span several devices.

    Returns:
        ``(G, reached)``: ``G`` is K x N; ``reached[i]`` says whether any exit reaches ``params[i]``.
    """
    devices = {p.device for p in params}
    if len(devices) > 1:
        raise ValueError(
            f"{who}: the K x N gradient matrix needs all parameters on one device, got "
            f"{sorted(map(str, devices))}{device_hint}"
        )
    sizes = [p.numel() for p in params]
    dtype = compute_dtype(p.dtype for p in params)
    G = torch.empty(len(losses), sum(sizes), dtype=dtype, device=params[0].device)
    reached = [False] * len(params)
    last = len(losses) - 1
    for k, loss in enumerate(losses):
        grads = torch.autograd.grad(loss, params, retain_graph=k < last, allow_unused=True)
        for i, (piece, p, g) in enumerate(zip(G[k].split(sizes), params, grads)):
            if g is None:
                piece.zero_()
            else:
                check_dense(g, i, who)
                piece.view(p.shape).copy_(g)
                reached[i] = True
    return G, reached


def average_over_ranks_(block: torch.Tensor, process_group: Any) -> torch.Tensor:
    """Average ``block`` over the ranks of a ``torch.distributed`` group in place and return it; without a
    group (None) return it unchanged. Every rank must call this with a block of the same shape."""
    if process_group is not None:
        torch.distributed.all_reduce(block, group=process_group)
        block.div_(torch.distributed.get_world_size(process_group))
    return block


def accumulate_direction(params: Sequence[torch.Tensor], direction: torch.Tensor, reached: Sequence[bool]) -> None:
    """:func:`accumulate_grad` of each parameter's piece of the flat ``direction`` (laid out as the columns of
    :func:`exit_gradient_matrix`), for the parameters some exit ``reached``."""
    for p, piece, hit in zip(params, direction.split([p.numel() for p in params]), reached):
        if hit:
            accumulate_grad(p, piece)


def accumulate_grad(p: torch.Tensor, g: torch.Tensor) -> None:
    """``p.grad += g``, or ``p.grad = g`` (a copy in ``p``'s dtype and layout) when ``p.grad`` is None.

    These are the semantics of ``loss.backward()``: gradients accumulate across calls until zeroed.
    """
    g = g.view(p.shape).to(p.dtype)
    if p.grad is None:
        # a fresh tensor: g may be a view into a large shared buffer that must not be kept alive
        p.grad = torch.empty_like(p).copy_(g)
    else:
        p.grad.add_(g)


def check_dense(g: torch.Tensor, i: int, who: str) -> None:
    """Refuse a sparse gradient (of ``params[i]``): the methods here need dense inner products."""
    if g.layout != torch.strided:
        raise ValueError(
            f"{who}: parameter {i} received a {g.layout} gradient; only dense gradients are supported "
            "(e.g. build nn.Embedding with sparse=False)"
        )
