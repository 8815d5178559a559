"""Views of a tensor along one channel axis, shared by the channel kernels: ``P x C x Q`` without a copy
where the memory layout allows it, the channel mean as one BLAS product, and the blocked scan (exponential
recurrence) along the axis with its powers."""

from __future__ import annotations

import math
from typing import Literal

import torch

Boundary = Literal["neumann", "periodic"]
"""The two ends of the channel axis: an open chain (``"neumann"``) or a closed ring (``"periodic"``)."""


def _as_3d(x: torch.Tensor, dim: int) -> tuple[torch.Tensor, bool]:
    """``x`` as a contiguous ``P x C x Q`` tensor with the channel axis in the middle.

    The kernels treat every ``(p, q)`` column on its own, so the other axes may come in any order: a dense
    tensor in a permuted memory layout (``channels_last`` gradients, a transposed weight) is viewed in its
    memory order without a copy. Returns the tensor and whether it is a copy (then the caller writes the
    result back into ``x``).
    """
    work, k, copied = x, dim, False
    if not x.is_contiguous():
        strides = x.stride()
        order = sorted(range(x.dim()), key=lambda d: -strides[d])  # outermost axis first; stable for ties
        work, k = x.permute(order), order.index(dim)
        if not work.is_contiguous():
            work, k, copied = x.contiguous(), dim, True
    shape = work.shape
    return work.view(math.prod(shape[:k]), shape[k], math.prod(shape[k + 1 :])), copied


def _probe_apart(probe: torch.Tensor, scratch: torch.Tensor) -> torch.Tensor:
    """``probe``, copied when it views ``scratch`` (a transform's temporary copy of the gradients): a caller keeps
    the probe until the step's one finiteness check, and a view would keep the whole copy alive until then (the
    next transform then gets fresh pages from the allocator, costly on CPU)."""
    shares = probe.untyped_storage().data_ptr() == scratch.untyped_storage().data_ptr()
    return probe.clone() if shares else probe


def _channel_mean(v: torch.Tensor) -> torch.Tensor:
    """Mean over the middle axis of a ``P x C x Q`` tensor, keepdim, as a matrix product with a ``1 x C``
    row of ``1/C``: one streaming read (BLAS gemv), about half the time of ``v.mean(1)`` on CPU."""
    if v.dtype not in (torch.float32, torch.float64):
        return v.mean(1, keepdim=True)
    row = torch.full((1, v.shape[1]), 1.0 / v.shape[1], dtype=v.dtype, device=v.device)
    if len(v) == 1:  # the usual case (output channels are dim 0): a 2-D product, 2-3x faster than a broadcast bmm
        return torch.mm(row, v[0]).unsqueeze(0)
    return torch.matmul(row, v)


def _powers(rho: float, n: int, like: torch.Tensor) -> torch.Tensor:
    """``[rho^0, rho^1, ..., rho^(n-1)]`` computed in float64, cast to ``like``'s dtype and device.

    A long run is the outer product of ``rho^(m k)`` and ``rho^j`` (``m ~ sqrt(n)``), each power to within two
    float64 roundings: ``pow`` of a million exponents costs tens of milliseconds, the product one pass."""
    base = torch.tensor(rho, dtype=torch.float64)
    if n <= 4096:
        powers = torch.pow(base, torch.arange(n, dtype=torch.float64))
    else:
        m = math.isqrt(n) + 1
        low = torch.pow(base, torch.arange(m, dtype=torch.float64))
        high = torch.pow(base, torch.arange(0, n + m, m, dtype=torch.float64)[: -(-n // m)])
        powers = torch.outer(high, low).view(-1)[:n]
    return powers.to(device=like.device, dtype=like.dtype)


def _chunk_scan_matrix(rho: float, size: int, reverse: bool, like: torch.Tensor) -> torch.Tensor:
    """``M`` with ``x @ M`` the scan of a row ``x`` of ``size`` entries: ``M[j, i] = rho^(i - j)`` for ``i >= j``
    (``reverse``: ``rho^(j - i)`` for ``i <= j``), 0 elsewhere; in ``like``'s dtype and device."""
    i = torch.arange(size, device=like.device)
    gap = i.view(1, size) - i.view(size, 1)  # i - j
    gap = -gap if reverse else gap
    return torch.where(gap >= 0, _powers(rho, size, like)[gap.clamp(min=0)], torch.zeros((), dtype=like.dtype))


def _scan_(v: torch.Tensor, rho: float, reverse: bool = False) -> None:
    """In place along axis 1 of a ``P x C x Q`` tensor: ``w_c = v_c + rho w_{c-1}`` (``reverse``: ``w_{c+1}``).

    ``rho = 1`` is a cumulative sum. A two-level blocked scan with chunks of ``L ~ sqrt(C)`` rows: first
    every chunk is scanned at once (L vector operations over all chunks; single columns, ``Q = 1``: chunks of
    32 as rows, one product with the chunk's matrix), then the chunk ends are chained (C / L small operations,
    or recursively), then each chunk adds ``rho^k`` times the carry of the chunk before it. About
    three passes over memory and ``3 sqrt(C)`` tensor operations, whatever the axis' stride; torch's own
    ``cumsum`` along a non-innermost axis walks memory column by column and is tens of times slower.
    """
    p, c, q = v.shape
    if c == 1:
        return
    # rows of Q elements: ~sqrt(C) chunks balance the two loops; single elements (Q = 1): short chunks,
    # so that each operation spans many chunks, and a recursive scan of the chunk ends
    size = min(c, 32) if q == 1 else max(2, math.isqrt(c))
    n, r = divmod(c, size)
    # chunks tile the axis from the start of the scan; a ragged remainder comes last in scan order
    main = (v[:, r:] if reverse else v[:, : n * size]).view(p, n, size, q)
    tail = v[:, :r] if reverse else v[:, n * size :]
    step = -1 if reverse else 1
    first, last = (size - 1, 0) if reverse else (0, size - 1)
    if q == 1 and n > 1:  # chunks are rows of one vector: scan them all by one product with the chunk's matrix
        rows = main.view(p, n, size)
        rows.copy_(torch.matmul(rows, _chunk_scan_matrix(rho, size, reverse, v)))
    else:  # a vector operation per position spans all chunks and columns
        for i in range(first + step, last + step, step):
            main[:, :, i].add_(main[:, :, i - step], alpha=rho)
    carry = rho**size
    if n > 64:
        ends = main[:, :, last].contiguous()
        _scan_(ends, carry, reverse)
        main[:, :, last].copy_(ends)
    else:
        for k in range(n - 2, -1, -1) if reverse else range(1, n):
            main[:, k, last].add_(main[:, k - step, last], alpha=carry)
    pw = _powers(rho, size + 1, v)
    ends = main[:, :, last].unsqueeze(2)  # P x n x 1 x Q: the scan's value at every chunk end
    if n > 1:
        rest = slice(0, size - 1) if not reverse else slice(1, size)
        weights = (pw[1:size] if not reverse else pw[1:size].flip(0)).view(1, 1, size - 1, 1)
        if reverse:
            main[:, :-1, rest].addcmul_(ends[:, 1:], weights)
        else:
            main[:, 1:, rest].addcmul_(ends[:, :-1], weights)
    if r:
        for j in (range(r - 2, -1, -1) if reverse else range(1, r)):
            tail[:, j].add_(tail[:, j - step], alpha=rho)
        boundary = ends[:, 0] if reverse else ends[:, -1]  # P x 1 x Q
        weights = (pw[1 : r + 1].flip(0) if reverse else pw[1 : r + 1]).view(1, r, 1)
        tail.addcmul_(boundary, weights)
