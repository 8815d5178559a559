"""Channel-directed transforms of sharded gradients (FSDP2, DTensor), without gathering the tensors.

FSDP2's ``fully_shard`` splits every parameter, and its gradient, along dim 0 across the ranks of a mesh:
a ``DTensor`` with a ``Shard(0)`` placement, ``torch.chunk`` sizes (``C = 7`` over 2 ranks: 4 + 3 rows;
a rank may hold none). For a convolution weight dim 0 is the output-channel axis, the axis the
channel metrics smooth along, so the channel mean and the running sums of docs/design.md section 1 span the
shards. The functions here compute the same result as :mod:`gradgeo.transforms` on the whole tensor, from
each rank's own shard plus one or two ``all_gather`` calls of per-shard summaries (a ``P x k x Q`` tensor
per parameter, the size of ``k`` rows; never the shard itself):

* ``h0``: the shards' column sums give the channel mean (1 gather).
* ``sobolev``: the column sums also give every shard its exclusive prefix (the running sum entering it);
  then the sums and first moments of the local running sums give the reverse prefixes, the periodic
  constant of integration and the mean the result is shifted by (2 gathers).
* ``h1`` and ``laplacian``: two exponential recurrences (docs/design.md 1b'); the state entering a shard is
  the earlier shards' end states weighted by ``rho^distance``, and the boundary terms need the global end
  state and (Neumann) the ``rho^k``-weighted sum of the input (2 gathers). ``laplacian`` is the periodic
  case on the flattened tensor: ``Shard(0)`` keeps the flat order shard-contiguous.

When the smoothing axis is not the sharded one (``direction="in"`` under ``Shard(0)``, a ConvTranspose
weight's output axis dim 1), or the gradient is replicated, each rank transforms its local tensor with no
communication; shards then only agree on whether a NaN or Inf occurred (one gather of a flag), so that every
rank makes the same skip/raise decision in :class:`gradgeo.ChannelDirected`.

The summaries of all parameters are gathered together: one collective per round per process group and
dtype, whatever the number of parameters (each parameter's transform is a generator that yields its
summary and receives everyone's; :func:`transform_dtensors_` runs them in lockstep).

Not supported (``NotImplementedError`` naming the placement): ``Partial`` gradients (reduce them first),
``_StridedShard`` (FSDP2 combined with tensor parallelism), a tensor sharded on several mesh dimensions,
and a sharded axis inside a merged smoothing axis that is not its outermost dimension (``direction="flat"``
or ``laplacian`` under ``Shard(d)``, d > 0). Workaround: ``grad.full_tensor()`` and
:mod:`gradgeo.transforms`, or ``redistribute`` to ``Shard(0)``.

Requires torch >= 2.4 (``torch.distributed.tensor``). This module never imports it itself: no DTensor can
exist before that module is imported, so :func:`is_dtensor` is free for ordinary tensors.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Callable, Generator, Sequence
from typing import TYPE_CHECKING, Any, NamedTuple, cast

import torch
import torch.distributed as dist

from gradgeo.channel._axis import _powers, _probe_apart, _scan_
from gradgeo.channel._blocks import _recurrence_factors
from gradgeo.channel.transforms import (
    Boundary,
    _check_boundary,
    _check_nonnegative,
    _check_positive,
    _compute_dtype,
    h1_,
    laplacian_smooth_,
    reweighted_h0_,
    sobolev_,
)

if TYPE_CHECKING:
    from torch.distributed.tensor import DTensor

__all__ = ["METRICS", "ShardedJob", "h1", "is_dtensor", "laplacian_smooth", "reweighted_h0", "sobolev",
           "transform_dtensors_"]

#: The metrics with a sharded implementation: all of :data:`gradgeo.channel.optim.METRICS` except ``"none"``.
METRICS: tuple[str, ...] = ("h0", "sobolev", "h1", "laplacian")

# a sharded transform: yields its summaries, receives every shard's (stacked along a new dim 0), returns a probe
Exchange = Generator[torch.Tensor, torch.Tensor, torch.Tensor]


def is_dtensor(t: Any) -> bool:
    """Whether ``t`` is a ``torch.distributed.tensor.DTensor`` (without importing that module)."""
    module = sys.modules.get("torch.distributed.tensor")
    return module is not None and isinstance(t, module.DTensor)


class ShardedJob(NamedTuple):
    """One DTensor gradient to transform in place along one axis of a view of it.

    ``view_shape`` and ``dim`` describe the *global* tensor as :func:`gradgeo.transforms.smoothing_view`
    returns them: the view merges adjacent dims (``(out*in, kh*kw)`` for ``"spatial"``, ``(numel,)`` for
    ``"flat"`` and ``laplacian``). ``strength`` is ``lam`` (``sigma`` for ``laplacian``).
    """

    grad: torch.Tensor
    view_shape: tuple[int, ...]
    dim: int
    metric: str
    strength: float
    boundary: Boundary = "neumann"


class _Segment(NamedTuple):
    """Where the shards lie along the (global) smoothing axis; ``rank`` is this rank's shard."""

    rank: int  # not ``index``: that would shadow tuple.index
    offsets: tuple[int, ...]
    lengths: tuple[int, ...]

    @property
    def offset(self) -> int:
        return self.offsets[self.rank]

    @property
    def length(self) -> int:
        return self.lengths[self.rank]

    @property
    def total(self) -> int:
        return sum(self.lengths)


class _Layout(NamedTuple):
    """How a job's local tensor is transformed: its local view, and the group and segment when sharded."""

    local_view: tuple[int, ...]
    group: Any  # the process group of the sharded mesh dimension; None when the gradient is replicated
    segment: _Segment | None  # None: the smoothing axis is whole on every rank


def _merged_dims(shape: tuple[int, ...], view_shape: tuple[int, ...]) -> list[range]:
    """For each axis of ``view_shape``, the adjacent dims of ``shape`` it merges (trailing 1s go last)."""
    groups, i = [], 0
    for j, target in enumerate(view_shape):
        start, size = i, 1
        while i < len(shape) and (i == start or size < target or (j == len(view_shape) - 1)):
            size *= shape[i]
            i += 1
        if size != target:
            raise ValueError(f"view {view_shape} does not merge adjacent dims of shape {shape}")
        groups.append(range(start, i))
    return groups


def _layout(grad: torch.Tensor, view_shape: tuple[int, ...], dim: int) -> _Layout:
    """Check the placements of a DTensor gradient and find where its shards lie along the smoothing axis."""
    from torch.distributed.tensor import Replicate, Shard

    grad = cast("DTensor", grad)  # the caller checked is_dtensor(grad)
    mesh = grad.device_mesh
    sharded = []
    for mesh_dim, placement in enumerate(grad.placements):
        if isinstance(placement, Replicate):
            continue
        if type(placement) is not Shard:
            raise NotImplementedError(
                f"channel transforms of a DTensor gradient with placement {placement} are not supported (only "
                "Shard and Replicate); reduce or redistribute the gradient first, or transform "
                "grad.full_tensor() with gradgeo.transforms")
        sharded.append((mesh_dim, placement.dim % grad.dim()))
    shape, local_shape = tuple(grad.shape), tuple(grad.to_local().shape)
    groups = _merged_dims(shape, view_shape)
    local_view = tuple(math.prod(local_shape[g.start : g.stop]) for g in groups)
    if not sharded:
        return _Layout(local_view, None, None)
    if len(sharded) > 1:
        raise NotImplementedError(
            f"a DTensor gradient sharded on several mesh dimensions ({grad.placements}) is not supported; "
            "redistribute it to one Shard placement, or transform grad.full_tensor() with gradgeo.transforms")
    mesh_dim, d = sharded[0]
    group = mesh.get_group(mesh_dim)
    axis = groups[dim]
    if d not in axis:
        return _Layout(local_view, group, None)
    if d != axis.start:
        raise NotImplementedError(
            f"the smoothing axis merges dims {list(axis)} of shape {shape} and the gradient is sharded on dim "
            f"{d}: shards are not contiguous along it. Use Shard({axis.start}), another direction, or "
            "transform grad.full_tensor() with gradgeo.transforms")
    # DTensor and FSDP2 split like torch.chunk: ceil(size / n) rows per shard, the last ones shorter or empty
    n, size = mesh.size(mesh_dim), shape[d]
    chunk = -(-size // n)
    bounds = [min(r * chunk, size) for r in range(n + 1)]
    unit = math.prod(shape[d + 1 : axis.stop])  # elements of the merged axis per row of dim d
    segment = _Segment(mesh.get_local_rank(mesh_dim), tuple(b * unit for b in bounds[:-1]),
                       tuple((hi - lo) * unit for lo, hi in zip(bounds[:-1], bounds[1:])))
    if segment.length != local_view[dim]:
        raise RuntimeError(f"shard {segment.rank} of a gradient of shape {shape} holds {local_shape[d]} rows of "
                           f"dim {d}; torch.chunk sizes would give {segment.length // unit}")
    return _Layout(local_view, group, segment)


# ------------------------------------------------------------------------------ sharded transforms


def _zeros_like_column(v: torch.Tensor) -> torch.Tensor:
    return v.new_zeros(v.shape[0], 1, v.shape[2])


def _sharded_h0(v: torch.Tensor, seg: _Segment, lam: float, boundary: str) -> Exchange:
    """``mean + (x - mean) / lam`` with the mean over all shards (one gather of the column sums)."""
    sums = yield v.sum(1, keepdim=True)  # N x P x 1 x Q
    mean = sums.sum(0) / seg.total
    torch.add(mean * (1.0 - 1.0 / lam), v, alpha=1.0 / lam, out=v)
    return mean


def _sharded_sobolev(v: torch.Tensor, seg: _Segment, lam: float, boundary: str) -> Exchange:
    """:func:`gradgeo.transforms.sobolev_` across shards: ``s = cumsum(x - mean)``, periodic ``s -= mean(s)``,
    ``R`` the reverse running sum of ``s``, ``g = mean + (R - mean(R)) / (lam C^2)``."""
    c, total = seg.length, seg.total
    sums = yield v.sum(1, keepdim=True)  # N x P x 1 x Q
    mean = sums.sum(0) / total
    # the running sum of x - mean entering this shard: what the shards before it add up to
    before = sums[: seg.rank].sum(0) - seg.offset * mean
    v.sub_(mean)
    if c > 1:
        _scan_(v, 1.0)
        v.add_(before)
        _scan_(v, 1.0, reverse=True)  # v_i = sum over i <= j < c of s_j: the reverse sums within the shard
    else:
        v.add_(before)
    head = v[:, :1] if c else _zeros_like_column(v)
    moments = yield torch.cat([head, v.sum(1, keepdim=True)], 1)  # N x P x 2 x Q
    lengths = torch.tensor(seg.lengths, dtype=v.dtype, device=v.device).view(-1, 1, 1, 1)
    t, w = moments[:, :, :1], moments[:, :, 1:]  # per shard: the sum of s, the sum of its reverse sums
    if boundary == "periodic":  # the ring closes: subtract m = mean(s) from s, i.e. m (c - i) from v_i
        m = t.sum(0) / total
        t = t - lengths * m
        w = w - lengths * (lengths + 1) / 2 * m
        v.addcmul_(m, torch.arange(c, 0, -1, dtype=v.dtype, device=v.device).view(1, c, 1), value=-1.0)
    after = t.flip(0).cumsum(0).flip(0) - t  # the sum of s over the shards after each one
    mean_r = (w + lengths * after).sum(0) / total  # R_i = v_i + after: its mean over the whole axis
    scale = 1.0 / (lam * total * total)
    torch.add(mean + scale * (after[seg.rank] - mean_r), v, alpha=scale, out=v)
    return mean


def _sharded_tridiagonal(v: torch.Tensor, seg: _Segment, a: float, boundary: str) -> Exchange:
    """``(I + a D^T D)^{-1}`` across shards, as :func:`gradgeo.transforms._tridiagonal_solve_`: a causal
    recurrence ``w_c = x_c + rho w_{c-1}`` from the boundary state ``w_init``, an anti-causal one
    ``y_c = w_c + rho y_{c+1}`` from ``y_end``, times ``rho / a``."""
    c, total = seg.length, seg.total
    rho, gain = _recurrence_factors(a)
    pw = _powers(rho, c + 1, v)
    summary = [v[:, -1:] if c else _zeros_like_column(v)]
    if boundary == "neumann":  # sum_k rho^k x_k over this shard (global k = offset + local k)
        summary.insert(0, torch.matmul(pw[:c].view(1, c), v) if c else _zeros_like_column(v))
    if c > 1:
        _scan_(v, rho)
        summary[-1] = v[:, -1:]  # the shard's end state from a zero start
    gathered = yield torch.cat(summary, 1)  # N x P x k x Q
    ends = gathered[:, :, -1:]
    # zero-start state entering each shard: the previous states decayed over the shard, plus its end state
    state, entering = torch.zeros_like(ends[0]), []
    for r, length in enumerate(seg.lengths):
        entering.append(state)
        state = state * rho**length + ends[r]
    if boundary == "periodic":
        w_init = state / (1.0 - rho**total)
    else:
        forward = sum(rho**o * gathered[r, :, :1] for r, o in enumerate(seg.offsets))
        w_init = (forward + rho**total * state) / (1.0 - rho ** (2 * total))
        y_end = (state + rho**total * w_init) / (1.0 - rho)
    v.addcmul_(pw[1:].view(1, c, 1), entering[seg.rank] + rho**seg.offset * w_init)
    if c > 1:
        _scan_(v, rho, reverse=True)
    heads = yield v[:, :1] if c else _zeros_like_column(v)  # N x P x 1 x Q
    state = torch.zeros_like(heads[0])
    leaving = [state] * len(seg.lengths)  # every entry is set below
    for r in range(len(seg.lengths) - 1, -1, -1):
        leaving[r] = state
        state = state * rho ** seg.lengths[r] + heads[r]
    if boundary == "periodic":
        y_end = state / (1.0 - rho**total)
    incoming = leaving[seg.rank] + rho ** (total - seg.offset - c) * y_end
    v.addcmul_(pw[1:].flip(0).view(1, c, 1), incoming).mul_(gain)
    return y_end


def _sharded_h1(v: torch.Tensor, seg: _Segment, lam: float, boundary: str) -> Exchange:
    return (yield from _sharded_tridiagonal(v, seg, lam * seg.total**2, boundary))


def _sharded_laplacian(v: torch.Tensor, seg: _Segment, sigma: float, boundary: str) -> Exchange:
    # (I - sigma L)^{-1} with the periodic Laplacian L = -D^T D: the FFT form is the same operator
    return (yield from _sharded_tridiagonal(v, seg, sigma, "periodic"))


_SHARDED: dict[str, Callable[[torch.Tensor, _Segment, float, str], Exchange]] = {
    "h0": _sharded_h0, "sobolev": _sharded_sobolev, "h1": _sharded_h1, "laplacian": _sharded_laplacian}


def _local(v: torch.Tensor, metric: str, strength: float, boundary: Boundary) -> torch.Tensor:
    """The single-process kernel along axis 1 of this rank's (whole-axis) ``P x C x Q`` view."""
    if metric == "h0":
        return reweighted_h0_(v, strength, 1)
    if metric == "laplacian":
        return laplacian_smooth_(v, strength, 1)
    return (sobolev_ if metric == "sobolev" else h1_)(v, strength, 1, boundary)


def _job_exchange(job: ShardedJob) -> tuple[Any, Exchange]:
    """The process group of a job and the generator that transforms its local tensor in place."""
    if job.metric not in METRICS:
        raise ValueError(f"unknown metric {job.metric!r} for a sharded gradient; expected one of {METRICS}")
    layout = _layout(job.grad, tuple(job.view_shape), job.dim % len(job.view_shape))

    def exchange() -> Exchange:
        local = cast("DTensor", job.grad).to_local()  # transform_dtensors_ takes DTensor gradients only
        work = local.to(_compute_dtype(local.dtype), memory_format=torch.contiguous_format)
        d, view, segment = job.dim % len(job.view_shape), layout.local_view, layout.segment
        v = work.view(math.prod(view[:d]), view[d], math.prod(view[d + 1 :]))
        length = view[d] if segment is None else segment.total
        identity = length <= 1 or (job.metric == "laplacian" and job.strength == 0)
        if segment is not None and not identity:
            # from gathered summaries: the probe is the same on every rank
            probe = yield from _SHARDED[job.metric](v, segment, job.strength, job.boundary)
        else:
            probe = v.sum(1) if identity else _local(v, job.metric, job.strength, job.boundary)
            if layout.group is not None:
                # each shard's own probe: agree on whether any held a NaN or Inf, so that every rank takes
                # the same skip or raise decision
                flags = yield torch.isfinite(probe).all().to(v.dtype).view(1)
                probe = torch.where(flags.bool().all(), 0.0, math.nan).to(v.dtype)
        if work.data_ptr() != local.data_ptr():
            local.copy_(work.view(local.shape))
            probe = _probe_apart(probe, work)
        return probe

    return layout.group, exchange()


def _all_gather(summary: torch.Tensor, group: Any) -> torch.Tensor:
    """Every rank's ``summary`` of ``group``, stacked along a new dim 0."""
    world = dist.get_world_size(group)
    out = summary.new_empty(world * summary.numel())  # the concatenated form: gloo takes no stacked output
    gather = getattr(dist, "all_gather_single", None) or dist.all_gather_into_tensor  # renamed in torch 2.13
    gather(out, summary.reshape(-1).contiguous(), group=group)
    return out.view(world, *summary.shape)


def transform_dtensors_(jobs: Sequence[ShardedJob]) -> list[torch.Tensor]:
    """Transform DTensor gradients in place, each along its smoothing axis, with batched collectives.

    Every rank of the gradients' meshes must call this with the same jobs in the same order (as
    :class:`gradgeo.ChannelDirected` does). The transforms advance in lockstep: in every round the
    summaries of all jobs that share a process group and a dtype are gathered in one ``all_gather``.

    Args:
        jobs: the gradients (DTensors) with their view, axis, metric, strength and boundary.

    Returns:
        One probe per job, the same on every rank: non-finite exactly when the gradient held a NaN or Inf.
    """
    groups, exchanges = zip(*(_job_exchange(job) for job in jobs)) if jobs else ((), ())
    probes: list[torch.Tensor | None] = [None] * len(jobs)
    pending: dict[int, torch.Tensor] = {}

    def advance(i: int, value: torch.Tensor | None) -> None:
        try:
            pending[i] = exchanges[i].send(value)
        except StopIteration as stop:
            probes[i] = stop.value

    for i in range(len(jobs)):
        advance(i, None)
    while pending:
        rounds: dict[tuple[Any, torch.dtype, torch.device], list[int]] = {}
        for i in sorted(pending):
            rounds.setdefault((groups[i], pending[i].dtype, pending[i].device), []).append(i)
        summaries, pending = pending, {}
        for (group, _, _), members in rounds.items():
            sizes = [summaries[i].numel() for i in members]
            gathered = _all_gather(torch.cat([summaries[i].reshape(-1) for i in members]), group)
            for i, part in zip(members, gathered.split(sizes, dim=1)):
                advance(i, part.reshape(-1, *summaries[i].shape))
    return probes  # type: ignore[return-value]


# ------------------------------------------------------------------------------- pure functions


def _pure(grad: torch.Tensor, metric: str, strength: float, dim: int, boundary: Boundary) -> torch.Tensor:
    if not is_dtensor(grad):
        raise TypeError(f"expected a DTensor, got {type(grad).__name__}; use gradgeo.transforms for tensors")
    if not grad.is_floating_point() or grad.dim() == 0:
        raise ValueError(f"channel transforms need a real floating-point tensor with dims, got {grad.dtype} "
                         f"of shape {tuple(grad.shape)}")
    if not -grad.dim() <= dim < grad.dim():
        raise ValueError(f"dim {dim} is out of range for a gradient of shape {tuple(grad.shape)}")
    out = grad.clone()
    view: tuple[int, ...]
    if metric == "laplacian":
        view, dim = (grad.numel(),), 0
    else:
        view = tuple(grad.shape)
    transform_dtensors_([ShardedJob(out, view, dim % len(view), metric, strength, boundary)])
    return out


def reweighted_h0(grad: torch.Tensor, lam: float, dim: int = 0) -> torch.Tensor:
    """:func:`gradgeo.transforms.reweighted_h0` of a DTensor, shard by shard (a collective on every rank).

    Args:
        grad: a DTensor (e.g. ``p.grad`` under FSDP2), sharded or replicated.
        lam: weight of the zero-mean part, ``> 0``.
        dim: the channel axis.

    Returns:
        A new DTensor with ``grad``'s placements, equal to the transform of ``grad.full_tensor()``.

    Example:
        >>> g = distribute_tensor(torch.randn(7, 16), mesh, [Shard(0)])  # doctest: +SKIP
        >>> reweighted_h0(g, lam=2.0).full_tensor()  # == transforms.reweighted_h0(full, 2.0)  # doctest: +SKIP
    """
    return _pure(grad, "h0", _check_positive("lam", lam), dim, "neumann")


def sobolev(grad: torch.Tensor, lam: float, dim: int = 0, boundary: Boundary = "neumann") -> torch.Tensor:
    """:func:`gradgeo.transforms.sobolev` of a DTensor, with two gathers of per-shard summaries.

    Args:
        grad: a DTensor, sharded along any dim or replicated.
        lam: smoothing strength, ``> 0``.
        dim: the channel axis.
        boundary: ``"neumann"`` or ``"periodic"``.

    Returns:
        A new DTensor with ``grad``'s placements.

    Example:
        >>> sobolev(p.grad, lam=0.1).full_tensor()  # == transforms.sobolev(full, 0.1)  # doctest: +SKIP
    """
    _check_boundary(boundary)
    return _pure(grad, "sobolev", _check_positive("lam", lam), dim, boundary)


def h1(grad: torch.Tensor, lam: float, dim: int = 0, boundary: Boundary = "neumann") -> torch.Tensor:
    """:func:`gradgeo.transforms.h1` of a DTensor, with two gathers of per-shard recurrence states.

    Args:
        grad: a DTensor, sharded along any dim or replicated.
        lam: smoothing strength, ``> 0``.
        dim: the channel axis.
        boundary: ``"neumann"`` or ``"periodic"``.

    Returns:
        A new DTensor with ``grad``'s placements.

    Example:
        >>> h1(p.grad, lam=0.01).full_tensor()  # == transforms.h1(full, 0.01)  # doctest: +SKIP
    """
    _check_boundary(boundary)
    return _pure(grad, "h1", _check_positive("lam", lam), dim, boundary)


def laplacian_smooth(grad: torch.Tensor, sigma: float) -> torch.Tensor:
    """:func:`gradgeo.transforms.laplacian_smooth` of a DTensor (flattened row-major; ``Shard(0)`` or replicated).

    Computed as the periodic tridiagonal solve by recurrences (the FFT form is the same operator).

    Args:
        grad: a DTensor sharded on dim 0 or replicated.
        sigma: smoothing strength, ``>= 0``.

    Returns:
        A new DTensor with ``grad``'s placements.

    Example:
        >>> laplacian_smooth(p.grad, sigma=1.0).full_tensor()  # doctest: +SKIP
    """
    sigma = _check_nonnegative("sigma", sigma)
    return _pure(grad, "laplacian", sigma, 0, "periodic")

