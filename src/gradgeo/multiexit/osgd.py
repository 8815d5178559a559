"""Orthogonalized SGD (OSGD) for anytime / multi-exit networks (docs/design.md section 2).

A network with K exits, ordered by when they are produced (exit 1 first), has per-exit losses
``L_1 .. L_K`` with gradients ``g_1 .. g_K``. OSGD replaces the summed gradient ``sum_k g_k`` by
``sum_k h_k``, where the ``h_k`` are the ordered Gram-Schmidt orthogonalization of the ``g_k``:

    h_1 = g_1,    h_k = g_k - sum_{j<k} (<g_k, h_j> / <h_j, h_j>) h_j.

Then ``<h_k, g_j> = 0`` for every ``j < k``: to first order, what a later exit contributes to the update
leaves every earlier exit's loss unchanged, and exit 1 trains as if it were alone.

* :func:`gram_schmidt` - the orthogonalization of a K x N matrix of gradients.
* :func:`backward` - per-exit gradients from one forward pass, orthogonalized, summed into ``p.grad``.

References:
    Wan, Hoffmann, Lu, Maire, "Orthogonalized SGD and Nested Architectures for Anytime Neural Networks",
    ICML 2020 (the formulas here are the project's own derivation, docs/design.md section 2).
    Golub, Van Loan, "Matrix Computations", 4th ed., section 5.2.8 (modified Gram-Schmidt).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any, Literal

import torch

from gradgeo.multiexit._exit_grads import (
    accumulate_direction,
    accumulate_grad,
    average_over_ranks_,
    check_dense,
    check_losses,
    check_params,
    compute_dtype,
    exit_gradient_matrix,
    exit_gradients,
)

__all__ = ["GRANULARITIES", "backward", "gram_schmidt"]

Granularity = Literal["global", "tensor"]

GRANULARITIES: tuple[str, ...] = ("global", "tensor")


def _check_eps(eps: float | None) -> float | None:
    """Check that ``eps`` is None (the dtype default) or a number in [0, 1)."""
    if eps is None:
        return None
    if isinstance(eps, bool) or not isinstance(eps, (int, float)) or not math.isfinite(eps):
        raise ValueError(f"eps must be a finite number in [0, 1), got {eps!r}")
    if not 0 <= eps < 1:
        # eps >= 1 would skip every direction: no orthogonalization at all
        raise ValueError(f"eps must lie in [0, 1), got {eps!r}")
    return float(eps)


def _resolve_eps(eps: float | None, dtype: torch.dtype) -> float:
    """The default skipping threshold is the machine epsilon of the computing dtype."""
    return torch.finfo(dtype).eps if eps is None else eps


def _orthogonalize_(W: torch.Tensor, eps: float) -> torch.Tensor:
    """Modified Gram-Schmidt on the rows of the K x N tensor ``W``, in place; returns ``W``.

    Row-oriented MGS: as soon as ``h_j`` is final, its component is removed from all later rows at once
    (one matrix-vector product and one rank-1 update), so each later row is projected against the
    partially orthogonalized row instead of the original ``g_k``; equal in exact arithmetic, and far
    less sensitive to rounding than the classical formula. The loop runs over K, never over N, and makes
    no host synchronization: skipping is a ``torch.where`` on the device.
    """
    k_total = W.shape[0]
    if k_total < 2:
        return W
    # thresholds are fixed from the original rows: skip h_j when <h_j,h_j> <= max(eps <g_j,g_j>, tiny)
    thresholds = (torch.linalg.vector_norm(W, dim=1).square() * eps).clamp_min(torch.finfo(W.dtype).tiny)
    for j in range(k_total - 1):
        h = W[j]
        later = W[j + 1 :]
        hh = torch.dot(h, h)
        use = hh > thresholds[j]
        # where(use, hh, 1) keeps the division finite for a skipped (zero or tiny) h_j
        coef = torch.where(use, torch.mv(later, h) / torch.where(use, hh, 1.0), 0.0)
        later.addr_(coef, h, alpha=-1.0)
    return W


@torch.no_grad()
def gram_schmidt(G: torch.Tensor, eps: float | None = None) -> torch.Tensor:
    """Ordered Gram-Schmidt orthogonalization of the rows of ``G`` (modified, numerically stable form).

    With ``g_k`` the k-th row of ``G``:

        h_1 = g_1,    h_k = g_k - sum_{j<k, j used} (<g_k, h_j> / <h_j, h_j>) h_j,

    computed as modified Gram-Schmidt (each projection uses the partially orthogonalized row). Then
    ``<h_k, g_j> = 0`` and ``<h_k, h_j> = 0`` for ``j < k`` up to rounding, and ``h_1 = g_1`` exactly.

    Skipping rule: ``h_j`` is *used* as a direction to project on only if

        <h_j, h_j> > max(eps * <g_j, g_j>, tiny),

    i.e. if what is left of ``g_j`` after removing the earlier directions is more than a fraction
    ``sqrt(eps)`` of its norm (``g_j`` is not, to working precision, a combination of ``g_1 .. g_{j-1}``),
    and its squared norm is a normal number (``tiny = torch.finfo(dtype).tiny``: 1.2e-38 in float32).
    The relative test makes the rule independent of the gradient scale; the absolute floor only catches
    squared norms that underflow to zero or to denormals. A zero row is therefore always skipped, and so
    is a row whose entries are so small (below about 1e-19 / sqrt(N) in float32) that its squared norm
    underflows. A skipped ``h_j`` is still returned (it is not zeroed): it is the honest residual, at most
    ``sqrt(eps) * |g_j|`` long, only later rows are not projected on it. No NaN arises from zero or tiny
    rows. The default ``eps = None`` is the machine epsilon of the computing dtype (1.19e-7 in float32,
    2.2e-16 in float64): a row is treated as linearly dependent when its residual is below about
    ``3.5e-4 * |g_j|`` (float32), which is above the rounding noise an exactly dependent row leaves.

    Inner products are computed in float32 for half-precision input and in the input dtype otherwise
    (float32 or float64); the result is returned in ``G``'s dtype. The result is detached (no autograd).

    Args:
        G: K x N tensor of gradients, row k being exit k's gradient (K >= 1, real floating dtype).
        eps: relative skipping threshold on squared norms, in [0, 1); ``None`` for the machine epsilon of
            the computing dtype.

    Returns:
        A new K x N tensor of the ``h_k`` (same dtype and device as ``G``).

    Example:
        >>> G = torch.tensor([[1.0, 0.0], [1.0, 1.0]])
        >>> gram_schmidt(G)
        tensor([[1., 0.],
                [0., 1.]])

    References:
        Golub, Van Loan, "Matrix Computations", 4th ed., section 5.2.8 (modified Gram-Schmidt).
    """
    if not isinstance(G, torch.Tensor):
        raise TypeError(f"gram_schmidt expects a K x N torch.Tensor, got {type(G).__name__}")
    if G.dim() != 2:
        raise ValueError(
            f"gram_schmidt expects a K x N tensor (one gradient per row), got shape {tuple(G.shape)}; "
            "flatten each gradient into a row first"
        )
    if not G.is_floating_point():
        raise ValueError(f"gram_schmidt needs a real floating-point tensor, got dtype {G.dtype}")
    dtype = compute_dtype([G.dtype])
    eps = _resolve_eps(_check_eps(eps), dtype)
    W = torch.empty(G.shape, dtype=dtype, device=G.device).copy_(G)
    return _orthogonalize_(W, eps).to(G.dtype)


def backward(
    losses: Sequence[torch.Tensor],
    params: Iterable[torch.Tensor],
    granularity: Granularity = "global",
    eps: float | None = None,
    *,
    process_group: Any = None,
) -> None:
    """OSGD backward pass: write ``sum_k h_k`` (orthogonalized per-exit gradients) into ``p.grad``.

    For each exit k, ``g_k = dL_k / dparams`` is computed with ``torch.autograd.grad`` (one call per exit,
    on the graph of a single forward pass, so each call traverses only exit k's sub-graph; a parameter an
    exit does not reach gets a zero gradient for that exit). The ``g_k`` are orthogonalized in exit order
    by :func:`gram_schmidt` and ``d = sum_k h_k`` is written into ``p.grad``:

    * ``granularity="global"``: inner products over the whole parameter vector. The K gradients are
      gathered into one K x N buffer (N = number of parameter entries); peak extra memory is about
      ``(K + 1) * N`` entries.
    * ``granularity="tensor"``: Gram-Schmidt separately for every parameter tensor, on a K_i x n_i block
      holding only the exits that reach tensor i. Peak memory is the per-exit gradients themselves (exits
      that do not reach a tensor store nothing for it) plus one block, and parameters may live on
      several devices. The constraint is stronger: ``<h_k, g_j> = 0`` holds within every tensor.

    Gradient semantics are those of ``loss.backward()``: ``d`` is *added* to an existing ``p.grad`` (set
    when ``p.grad`` is None), so zero the gradients between steps as usual; a parameter that no exit
    reaches keeps its ``.grad`` unchanged; the autograd graph is freed afterwards. With one loss the
    result equals ``losses[0].backward()`` bit for bit. The update only differs from plain backprop
    in direction; pass ``p.grad`` on to any optimizer.

    Data-parallel training (DDP): Gram-Schmidt is not linear, so it must see the per-exit gradients of the
    whole batch, not each rank's. With ``process_group`` (e.g. ``torch.distributed.group.WORLD``) every
    exit's gradient is averaged over the group before the orthogonalization: one ``all_reduce`` of the
    K x N matrix (``"global"``) or one per parameter tensor (``"tensor"``), K times the traffic of a plain
    DDP step. Every rank then writes the same direction, equal to one process's on the concatenated batch
    when the ranks hold equal shares. ``torch.autograd.grad`` never fires DDP's own all-reduce hooks (DDP
    averages nothing here); run the forward pass inside ``ddp_model.no_sync()`` so that DDP does not prepare
    a reduction for this step either.

    Args:
        losses: the K per-exit scalar losses of one forward pass, first exit first, as a list or tuple
            (not their sum: a sum has lost the per-exit gradients; a one-element list is fine).
        params: the parameters to train (leaf tensors requiring grad), e.g. ``model.parameters()``.
        granularity: ``"global"`` (default) or ``"tensor"``.
        eps: skipping threshold of :func:`gram_schmidt` (None: machine epsilon of the computing dtype).
        process_group: average the per-exit gradients over this ``torch.distributed`` group (DDP); ``None``
            (default): this process's gradients alone.

    Returns:
        None; the result is in ``p.grad``.

    Example:
        >>> w = torch.nn.Parameter(torch.tensor([1.0, 1.0]))
        >>> losses = [w[0] + w[1], 2 * w[0]]  # g_1 = (1, 1), g_2 = (2, 0)
        >>> backward(losses, [w])
        >>> w.grad  # g_1 + h_2 with h_2 = g_2 - g_1 = (1, -1)
        tensor([2., 0.])

        Under DDP (``model`` wrapped in ``DistributedDataParallel``):

        >>> with model.no_sync():  # doctest: +SKIP
        ...     losses = [F.cross_entropy(out, y) for out in model(x)]
        ...     backward(losses, model.parameters(), process_group=torch.distributed.group.WORLD)

    References:
        Wan, Hoffmann, Lu, Maire, "Orthogonalized SGD and Nested Architectures for Anytime Neural
        Networks", ICML 2020; docs/design.md section 2.
    """
    who = "osgd.backward"
    losses = check_losses(losses, who)
    params = check_params(params, who)
    if granularity not in GRANULARITIES:
        raise ValueError(f"unknown granularity {granularity!r}; expected one of {GRANULARITIES}")
    eps = _check_eps(eps)
    if granularity == "global":
        _backward_global(losses, params, eps, who, process_group)
    else:
        _backward_tensor(losses, params, eps, who, process_group)


def _sum_rows_(W: torch.Tensor) -> torch.Tensor:
    """``sum_k W[k]`` accumulated in place into ``W[0]`` (in exit order; exact for K = 1)."""
    total = W[0]
    for k in range(1, W.shape[0]):
        total.add_(W[k])
    return total


def _backward_global(
    losses: list[torch.Tensor], params: list[torch.Tensor], eps: float | None, who: str, process_group: Any
) -> None:
    hint = "; granularity='tensor' works with parameters on several devices"
    G, reached = exit_gradient_matrix(losses, params, who, device_hint=hint)
    with torch.no_grad():
        G = average_over_ranks_(G, process_group)
        accumulate_direction(params, _sum_rows_(_orthogonalize_(G, _resolve_eps(eps, G.dtype))), reached)


def _backward_tensor(
    losses: list[torch.Tensor], params: list[torch.Tensor], eps: float | None, who: str, process_group: Any
) -> None:
    grads = exit_gradients(losses, params)
    with torch.no_grad():
        for i, p in enumerate(params):
            # exits that do not reach p would be zero rows, which Gram-Schmidt skips: leave them out
            rows = [row for row in (g[i] for g in grads) if row is not None]
            for g in grads:
                g[i] = None  # release exit gradients of p as soon as its block is built
            if not rows:
                continue
            for grad in rows:
                check_dense(grad, i, who)
            dtype = compute_dtype([p.dtype])
            block = torch.empty(len(rows), p.numel(), dtype=dtype, device=p.device)
            for row, grad in zip(block, rows):
                row.view(p.shape).copy_(grad)
            del rows
            block = average_over_ranks_(block, process_group)
            accumulate_grad(p, _sum_rows_(_orthogonalize_(block, _resolve_eps(eps, dtype))))
