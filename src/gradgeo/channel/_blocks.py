"""The block (semiseparable) form of the ``sobolev`` and ``h1`` channel operators (docs/design.md 1b, 1b') and of
the ``laplacian`` baseline (1c).

All three inverses are semiseparable along their axis: cut into blocks of L entries, every off-diagonal
block is low rank on a fixed basis. A transform is then a streaming reduction per block, a small coupling
of the blocks and one product per block: a handful of BLAS calls per tensor, free of host syncs.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from typing import NamedTuple

import torch

from gradgeo.channel._axis import Boundary, _as_3d, _probe_apart

Scan = Callable[[torch.Tensor, float, int, Boundary], torch.Tensor]

# Channel axes up to _BLOCK_MAX long are transformed in block form (below): the C x C operator is built once
# per (C, lam, boundary, dtype, device) and kept; longer axes (direction "flat", ...) use the O(C) scans.
# Up to _DENSE_MAX channels the whole axis is one block: one product with the C x C operator. Above it the
# blocks are _BLOCK_LEN long, or the largest divisor of C down to _BLOCK_MIN; a C without one (a large
# prime) goes to the scans. _BLOCK_LEN and _DENSE_MAX are chosen by measurement (benchmarks/transforms.py, CPU,
# one thread: blocks of 32 beat 16 and 64 for 128 to 512 channels, by 10-25% on ResNet-18 shapes; at 64
# channels one product of 2C operations per entry beats the blocks' handful of smaller calls on the ResNet-56
# step, whose 19 largest convs have 64 channels: results/REPORT.md, "Speed", fourth round).
_BLOCK_MAX = 1024
_DENSE_MAX = 64
_BLOCK_LEN = 32
_BLOCK_MIN = 8


class _Blocks(NamedTuple):
    """A channel operator ``M`` (C x C) cut into blocks of ``length``: ``M_ab = [a == b] A + Q B_ab Q^T``.

    ``diagonal`` is ``[A | Q]`` (``length x (length + r)``), ``reduce`` is ``Q^T`` (``r x length``) and
    ``couple`` the ``B_ab`` as one ``(nb r) x (nb r)`` matrix; with one block ``diagonal`` is ``M`` with the
    row ``1/C`` below it (:func:`dense_operator`) and the other two are None.
    """

    length: int
    diagonal: torch.Tensor
    reduce: torch.Tensor | None
    couple: torch.Tensor | None


def block_form(metric: str, scan: Scan, x: torch.Tensor, dim: int, lam: float, boundary: Boundary) -> _Blocks | None:
    """The block form to transform ``x`` with, or None for the scans.

    ``scan(x, lam, dim, boundary)`` is the metric's O(C) in-place kernel: run on the identity, it gives the
    operator's columns (so the block form matches the scans by construction).
    """
    return _block_operator(metric, scan, x.shape[dim], lam, boundary, x.dtype, x.device)


def _operator(scan: Scan, c: int, lam: float, boundary: Boundary) -> torch.Tensor:
    """The C x C operator of an in-place kernel, in float64: its columns are the kernel run on the identity."""
    m = torch.eye(c, dtype=torch.float64)
    scan(m, lam, 0, boundary)
    return m


@functools.lru_cache(maxsize=256)
def dense_operator(scan: Scan, c: int, lam: float, boundary: Boundary, dtype: torch.dtype,
                   device: torch.device) -> torch.Tensor:
    """``[M; 1/C]``, ``(C + 1) x C``: the operator of ``scan`` with the channel mean as an extra row.

    One product ``dense_operator(...) @ v`` gives the transform of a ``C x Q`` block ``v`` and, in its last
    row, the channel mean: the probe that is non-finite exactly when a column of ``v`` is, for free.
    """
    m = torch.cat([_operator(scan, c, lam, boundary), torch.full((1, c), 1.0 / c, dtype=torch.float64)])
    return m.to(device=device, dtype=dtype)


def dense_product(v: torch.Tensor, operator: torch.Tensor) -> torch.Tensor:
    """``operator @ v`` for a ``P x C x Q`` ``v``, as one 2-D product when ``P == 1`` (the usual case)."""
    return torch.mm(operator, v[0]).unsqueeze(0) if len(v) == 1 else torch.matmul(operator, v)


def _block_length(c: int, whole: int = _BLOCK_LEN) -> int | None:
    """Blocks along an axis of ``c``: the whole axis up to ``whole`` entries, else ``_BLOCK_LEN`` or the largest
    divisor of ``c`` down to ``_BLOCK_MIN`` (None without one)."""
    if c <= whole:
        return c
    return next((n for n in range(_BLOCK_LEN, _BLOCK_MIN - 1, -1) if c % n == 0), None)


def _block_basis(metric: str, length: int, a: float) -> torch.Tensor:
    """An orthonormal basis (``length x r``, float64) of the span that every off-diagonal block of the
    operator has for its columns and rows, and that the diagonal blocks differ by.

    ``sobolev``: the Green's functions of ``D^T D`` (Neumann and periodic) and the mean projections are
    polynomials of degree 2 along a block, so ``{1, t, t^2}``. ``h1``: ``(I + a D^T D)^{-1}`` is made of the
    solutions ``rho^c`` and ``rho^-c`` of the homogeneous recurrence (docs/design.md 1b'), so
    ``{cosh(theta t), sinh(theta t) / theta}`` with ``rho = exp(-theta)``: the form that stays well-conditioned
    as ``rho -> 1`` (large ``a``), where ``rho^t`` and ``rho^-t`` become parallel. When ``theta t`` would
    overflow, the equivalent ``{rho^l, rho^(length-1-l)}``, well-conditioned there.
    """
    t = torch.arange(length, dtype=torch.float64) - (length - 1) / 2
    if metric == "sobolev":
        columns = [torch.ones_like(t), t, t * t]
    else:
        theta = 2.0 * math.asinh(0.5 / math.sqrt(a))  # rho + 1/rho = 2 + 1/a, without cancellation at rho ~ 1
        if theta * (length - 1) / 2 <= 30.0:
            columns = [torch.cosh(theta * t), torch.sinh(theta * t) / theta]
        else:
            power = torch.exp(-theta * torch.arange(length, dtype=torch.float64))
            columns = [power, power.flip(0)]
    return torch.linalg.qr(torch.stack(columns, 1))[0]


@functools.lru_cache(maxsize=256)
def _block_operator(metric: str, scan: Scan, c: int, lam: float, boundary: Boundary, dtype: torch.dtype,
                    device: torch.device) -> _Blocks | None:
    """The block form of ``sobolev``'s or ``h1``'s operator along an axis of ``c`` channels, or None when the
    axis is too long or has no suitable block length (the caller then runs the scans).

    The operator is built in float64 by running the O(C) scan kernel on the identity (its columns are the
    operator's), then cut into blocks: with ``P = Q Q^T`` the projection on the basis of
    :func:`_block_basis`, ``A = M_00 - P M_00 P`` and ``B_ab = Q^T M_ab Q``. That is exact when every
    off-diagonal block and every ``M_aa - M_00`` lie in ``span(Q) x span(Q)``, which the operators' structure
    gives (tests/test_transforms.py checks the identity for both metrics and boundaries).
    """
    length = _block_length(c, _DENSE_MAX) if 2 <= c <= _BLOCK_MAX else None
    if length is None:
        return None
    if length == c:
        return _Blocks(c, dense_operator(scan, c, lam, boundary, dtype, device), None, None)
    m = _operator(scan, c, lam, boundary)
    nb = c // length
    q = _block_basis(metric, length, lam * c * c)
    r = q.shape[1]
    corner, projection = m[:length, :length], q @ q.T
    diagonal = torch.cat([corner - projection @ corner @ projection, q], 1)
    couple = q.T @ m.view(nb, length, nb, length).transpose(1, 2) @ q  # (a, b, r, r)
    couple = couple.transpose(1, 2).reshape(nb * r, nb * r)

    def cast(t: torch.Tensor) -> torch.Tensor:
        return t.to(device=device, dtype=dtype).contiguous()

    return _Blocks(length, cast(diagonal), cast(q.T), cast(couple))


# On CPU the blocks are transformed a chunk at a time, each chunk's stacked input ([block; coefficients]) at
# most _CHUNK_BYTES (or one block), so that it stays in the core's cache (512 KiB to 2 MiB of L2 on current
# server CPUs) between the copy that stacks it and the product that reads it: the gradient is then read twice
# from memory and written once. Chunks of 256 KiB to 1 MiB measured alike, 2 MiB and the whole tensor at
# once slower (ResNet-18 shapes, one thread); with this, `python benchmarks/transforms.py --threads 1` has
# sobolev and h1 add 3.1-3.8x and 2.3-3.0x a memcpy to the step there, against 3.8-5.2x and 3.7-3.9x with
# blocks of 16, unchunked, and the scans above 2^21 elements (results/REPORT.md, "Speed"). On other devices
# (where every launch counts) and while compiling, one chunk.
_CHUNK_BYTES = 512 << 10


def _chunk(items: torch.Tensor, stacked_bytes: int) -> int:
    """How many of ``items`` (blocks or rows) to transform per product, each ``stacked_bytes`` once stacked."""
    if items.device.type != "cpu" or torch.compiler.is_compiling():
        return len(items)
    return max(1, min(len(items), _CHUNK_BYTES // max(1, stacked_bytes)))  # 0 bytes: an empty gradient


def block_transform_(x: torch.Tensor, dim: int, op: _Blocks) -> torch.Tensor:
    """In place ``x <- M x`` along ``dim`` in block form; returns a probe (non-finite iff ``x`` was).

    One block: a product with ``[M; 1/C]`` into a new buffer (the mean row is the probe), copied back.
    Several: a streaming reduction of every block on the basis (``z_b = Q^T x_b``), the coupling of all
    blocks (``B z``: a small product), then a batched product with the fixed ``[A | Q]`` on each block
    stacked over its coefficients, written into ``x``, a chunk of blocks at a time (:data:`_CHUNK_BYTES`).
    """
    v, copied = _as_3d(x, dim)
    p, c, q = v.shape
    if op.reduce is None or op.couple is None:
        product = dense_product(v, op.diagonal)
        v.copy_(product[:, :c])
        probe = _probe_apart(product[:, c:], product)
    else:
        length, r = op.length, op.reduce.shape[0]
        nb = c // length
        blocks = v.view(p * nb, length, q)  # sizes spelled out: -1 is ambiguous for an empty gradient
        probe = torch.matmul(op.reduce, blocks)  # (p nb, r, q)
        coefficients = torch.matmul(op.couple, probe.view(p, nb * r, q)).view(p * nb, r, q)
        step = _chunk(blocks, (length + r) * q * blocks.element_size())
        stacked = blocks.new_empty((step, length + r, q))
        diagonal = op.diagonal.expand(step, -1, -1)
        for start in range(0, len(blocks), step):
            chunk = blocks[start:start + step]
            n = len(chunk)
            torch.cat([chunk, coefficients[start:start + step]], 1, out=stacked[:n])
            torch.bmm(diagonal[:n], stacked[:n], out=chunk)
    if copied:
        x.copy_(v.view(x.shape))
    return probe


def _recurrence_factors(a: float) -> tuple[float, float]:
    """``(rho, gain)`` of ``(I + a D^T D)^{-1}``: the small root ``rho < 1`` of ``rho + 1/rho = (1 + 2a) / a``
    and ``gain = rho / a``, both computed without cancellation for large ``a``."""
    root = math.sqrt(1.0 + 4.0 * a)
    return 2.0 * a / ((1.0 + 2.0 * a) + root), 2.0 / ((1.0 + 2.0 * a) + root)


class _Ring(NamedTuple):
    """``(I - sigma L)^{-1}`` (periodic ``L``, docs/design.md 1c) on a ring cut into rows of ``length`` entries.

    On the ring's periodic extension the operator is the kernel ``k rho^|d|`` (``rho`` the small root of the
    tridiagonal, ``k = gain / (1 - rho^2)``), so row ``b``'s result is its own entries through the
    ``length x length`` kernel plus ``rho^(i+1) F_{b-1}`` and ``rho^(length-i) G_{b+1}``: the exponentially
    weighted sums of everything before the row (``F``) and after it (``G``). ``reduce`` (``length x 2``)
    gives each row's own part of them, ``s_b`` and ``t_b``; ``F_b = sum_k factor^k s_{b-k}`` around the
    ring, and ``G`` likewise backwards, with ``factor = rho^length``, summed by ``doublings`` doubling
    steps, after which ``factor^(2^doublings)`` is below a thousandth of the dtype's epsilon.
    ``weights`` (``(length + 2) x length``) maps ``[row | F_{b-1} | G_{b+1}]`` to the row's result.
    """

    length: int
    weights: torch.Tensor
    reduce: torch.Tensor
    factor: float
    doublings: int


# More doublings than this (a ring whose rows pass on nearly all of their sum: sigma above ~1e8) and the
# recurrences (transforms._tridiagonal_solve_) take over.
_MAX_DOUBLINGS = 20


@functools.lru_cache(maxsize=64)
def ring_form(n: int, sigma: float, dtype: torch.dtype, device: torch.device) -> _Ring | None:
    """The block form of the Laplacian smoothing of a ring of ``n`` entries (:class:`_Ring`), or None when
    ``n`` has no block length (:func:`_block_length`, as for the channel axes) or the sums along the ring
    would need more than :data:`_MAX_DOUBLINGS` doubling steps."""
    length = _block_length(n) if n >= 2 and sigma > 0 else None
    if length is None:
        return None
    rho, gain = _recurrence_factors(sigma)  # (I - sigma L) = (I + sigma D^T D) on the ring
    factor, tolerance = rho**length, torch.finfo(dtype).eps * 1e-3
    doublings, left = 0, factor
    while left > tolerance:
        if doublings == _MAX_DOUBLINGS:
            return None
        doublings, left = doublings + 1, left * left
    i = torch.arange(length, dtype=torch.float64)
    scale = gain / (1.0 - rho * rho)
    kernel = rho ** (i[:, None] - i[None, :]).abs()
    edges = torch.stack([rho ** (i + 1), rho ** (length - i)])
    weights = (torch.cat([kernel, edges]) * scale).to(device=device, dtype=dtype)
    reduce = torch.stack([rho ** (length - 1 - i), rho**i], 1).to(device=device, dtype=dtype)
    return _Ring(length, weights, reduce, factor, doublings)


def ring_transform_(v: torch.Tensor, op: _Ring) -> torch.Tensor:
    """In place: every row of a contiguous ``P x n`` ``v`` (a ring each) smoothed as :func:`ring_form` says;
    returns the probe: the rows' sums ``s_b, t_b``, non-finite iff ``v`` was (their weights are positive).

    Three passes over memory, all products: the rows' sums (``v`` read), the carries along each ring (a few
    operations on ``n / length`` entries) and, a cache-sized chunk of rows at a time, the rows stacked beside
    their carries and multiplied by ``weights`` back into ``v`` (read, then written)."""
    p, n = v.shape
    length = op.length
    nb = n // length
    rows = v.view(p * nb, length)
    probe = torch.mm(rows, op.reduce)  # (p nb, 2)
    sums = probe.view(p, nb, 2)
    before, after = sums[..., 0], sums[..., 1]
    shift, factor = 1, op.factor
    for _ in range(op.doublings):  # F_b = sum_k factor^k s_{b-k} around the ring, 2^j terms after j steps
        before = before + factor * before.roll(shift, 1)
        after = after + factor * after.roll(-shift, 1)
        shift, factor = shift * 2, factor * factor
    carries = torch.stack([before.roll(1, 1), after.roll(-1, 1)], 2).view(p * nb, 2)
    step = _chunk(rows, (length + 2) * rows.element_size())
    stacked = rows.new_empty((step, length + 2))
    for start in range(0, len(rows), step):
        chunk = rows[start:start + step]
        m = len(chunk)
        torch.cat([chunk, carries[start:start + step]], 1, out=stacked[:m])
        torch.mm(stacked[:m], op.weights, out=chunk)
    return probe
