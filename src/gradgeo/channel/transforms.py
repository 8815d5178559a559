"""Pure gradient transforms: the Riesz representatives of a gradient under channel metrics.

Every function takes a gradient tensor and returns a new tensor of the same shape, dtype and device.
Half-precision inputs are computed in float32. The math is fixed in docs/design.md section 1:

* :func:`reweighted_h0` - re-weighted H0 metric, closed form (1a).
* :func:`sobolev` - the H~1 metric (mean + lam * derivative energy), two cumulative sums (1b).
* :func:`h1` - the full H1 metric ``(I + lam C^2 D^T D)``, two exponential recurrences (1b').
* :func:`laplacian_smooth` - Laplacian smoothing of the flattened tensor (Osher et al., 1c).
* :func:`smoothing_view` - which axis a direction (``"out"``, ``"in"``, ...) means for a layer (1d).

The ``*_`` functions (``reweighted_h0_`` ...) are the in-place kernels the optimizer wrapper uses; each
overwrites its input and returns a small *probe* tensor that is non-finite exactly when the input held a
NaN or an infinity, so that a caller can check a gradient without another pass over memory.

References:
    Sundaramoorthi, Yezzi, Mennucci, "Sobolev Active Contours", IJCV 2007.
    Osher, Wang, Yin, Li, Lin, Yang, "Laplacian Smoothing Gradient Descent", 2018.
"""

from __future__ import annotations

import functools
import math
from typing import Literal

import torch

from gradgeo.channel._axis import Boundary, _as_3d, _channel_mean, _powers, _scan_
from gradgeo.channel._blocks import (
    _DENSE_MAX,
    _recurrence_factors,
    block_form,
    block_transform_,
    dense_operator,
    ring_form,
    ring_transform_,
)

__all__ = [
    "BOUNDARIES",
    "DIRECTIONS",
    "LAYER_KINDS",
    "h1",
    "h1_",
    "laplacian_smooth",
    "laplacian_smooth_",
    "reweighted_h0",
    "reweighted_h0_",
    "smoothing_view",
    "sobolev",
    "sobolev_",
]

Direction = Literal["out", "in", "spatial", "flat"]
LayerKind = Literal["conv", "conv_transpose", "linear", "vector"]

BOUNDARIES: tuple[str, ...] = ("neumann", "periodic")
DIRECTIONS: tuple[str, ...] = ("out", "in", "spatial", "flat")
LAYER_KINDS: tuple[str, ...] = ("conv", "conv_transpose", "linear", "vector")

# --------------------------------------------------------------------------------------------- checks


def _check_positive(name: str, value: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        raise ValueError(f"{name} must be a finite number > 0, got {value!r}")
    return float(value)


def _check_nonnegative(name: str, value: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
        raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
    return float(value)


def _check_boundary(boundary: str) -> None:
    if boundary not in BOUNDARIES:
        raise ValueError(f"unknown boundary {boundary!r}; expected one of {BOUNDARIES}")


def _check_grad(grad: torch.Tensor) -> None:
    if not isinstance(grad, torch.Tensor):
        raise TypeError(f"expected a torch.Tensor gradient, got {type(grad).__name__}")
    if grad.is_sparse or grad.layout != torch.strided:
        raise ValueError(f"channel transforms need a dense (strided) gradient, got layout {grad.layout}")
    if grad.is_complex() or not grad.is_floating_point():
        raise ValueError(f"channel transforms need a real floating-point gradient, got dtype {grad.dtype}")


def _normalize_dim(grad: torch.Tensor, dim: int) -> int:
    if grad.dim() == 0:
        raise ValueError("channel transforms need a tensor with at least one dimension, got a scalar")
    if not -grad.dim() <= dim < grad.dim():
        raise ValueError(f"dim {dim} is out of range for a gradient of shape {tuple(grad.shape)}")
    return dim % grad.dim()


def _compute_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float32 if dtype in (torch.float16, torch.bfloat16) else dtype


def _pure(kernel, grad: torch.Tensor, strength: float, dim: int, *rest) -> torch.Tensor:
    """Run an in-place kernel on a fresh working copy of ``grad`` and return it in ``grad``'s dtype."""
    _check_grad(grad)
    dim = _normalize_dim(grad, dim)
    work = grad.to(_compute_dtype(grad.dtype), copy=True, memory_format=torch.contiguous_format)
    kernel(work, strength, dim, *rest)
    return work.to(grad.dtype)


# -------------------------------------------------------------------------------------- re-weighted H0


def _reweighted_h0_scan_(x: torch.Tensor, lam: float, dim: int, boundary: Boundary) -> torch.Tensor:
    """:func:`reweighted_h0_` with the kernel signature of the other metrics (h0 has no boundary)."""
    return reweighted_h0_(x, lam, dim)


def reweighted_h0_(x: torch.Tensor, lam: float, dim: int = 0) -> torch.Tensor:
    """In place: ``x <- mean(x) + (x - mean(x)) / lam`` along ``dim``; returns the channel mean (probe)."""
    v, copied = _as_3d(x, dim)
    mean = _channel_mean(v)
    # one fused pass: x / lam + (1 - 1/lam) mean
    torch.add(mean * (1.0 - 1.0 / lam), v, alpha=1.0 / lam, out=v)
    if copied:
        x.copy_(v.view(x.shape))
    return mean


def reweighted_h0(grad: torch.Tensor, lam: float, dim: int = 0) -> torch.Tensor:
    """Gradient under the re-weighted H0 metric along ``dim``.

    Metric: ``<h, k> = mean(h) mean(k) + lam * mean((h - mean h)(k - mean k))`` over the channel index.
    Riesz representative: ``g = mean(G) + (G - mean(G)) / lam``. ``lam = 1`` is the identity; ``lam > 1``
    damps what varies across channels.

    Args:
        grad: gradient tensor (any shape, floating dtype, any device).
        lam: weight of the zero-mean part, ``> 0``.
        dim: the channel axis.

    Returns:
        A new tensor with ``grad``'s shape and dtype.

    Example:
        >>> g = torch.tensor([1.0, 3.0])
        >>> reweighted_h0(g, lam=2.0)
        tensor([1.5000, 2.5000])
    """
    return _pure(reweighted_h0_, grad, _check_positive("lam", lam), dim)


# ------------------------------------------------------------------------------------------- Sobolev


def sobolev_(x: torch.Tensor, lam: float, dim: int = 0, boundary: Boundary = "neumann") -> torch.Tensor:
    """In place Sobolev (H~1) gradient along ``dim``; returns a probe. See :func:`sobolev`."""
    op = block_form("sobolev", _sobolev_scan_, x, dim, lam, boundary)
    if op is not None:
        return block_transform_(x, dim, op)
    return _sobolev_scan_(x, lam, dim, boundary)


def _sobolev_scan_(x: torch.Tensor, lam: float, dim: int, boundary: Boundary) -> torch.Tensor:
    """:func:`sobolev_` in O(C) per column by two blocked scans, for axes too long for the block form."""
    c = x.shape[dim]
    v, copied = _as_3d(x, dim)
    mean = _channel_mean(v)
    if c == 1:
        return mean
    # s_c = sum_{j<=c} (x_j - mean): the forward differences of g are -s / (lam C^2)
    _scan_(v.sub_(mean), 1.0)
    if boundary == "periodic":
        # the ring closes: pick the constant of integration so that the differences sum to 0
        v.sub_(_channel_mean(v))
    # g_c = mean - (u_c - mean(u)) / (lam C^2) with u_c = sum_{j<c} s_j = total - R_c, R the reverse
    # running sum of s: so g = mean + (R - mean(R)) / (lam C^2), one reverse scan and one fused pass
    _scan_(v, 1.0, reverse=True)
    scale = 1.0 / (lam * c * c)
    torch.add(mean - scale * _channel_mean(v), v, alpha=scale, out=v)
    if copied:
        x.copy_(v.view(x.shape))
    return mean


def sobolev(grad: torch.Tensor, lam: float, dim: int = 0, boundary: Boundary = "neumann") -> torch.Tensor:
    """Gradient under the Sobolev (H~1) metric along ``dim``, in O(C*M) with two cumulative sums.

    Metric: ``<h, k> = mean(h) mean(k) + lam * C * sum_c (Dh)_c (Dk)_c`` with forward differences
    ``(Dh)_c = h_{c+1} - h_c`` (``boundary="neumann"``: an open chain; ``"periodic"``: a ring).
    The gradient keeps the channel mean and solves ``lam C^2 D^T D g = G - mean(G)``; the k-th cosine mode
    of the zero-mean part is scaled by about ``1 / (lam pi^2 k^2)``. ``lam`` is dimensionless: the same value
    smooths a 16- and a 512-channel layer over the same fraction of their axis. A larger ``lam`` also
    shrinks the step along everything that varies across channels, so tune it together with the learning
    rate (``lam`` near 0.1 keeps the smoothest mode at unit gain).

    Args:
        grad: gradient tensor (any shape, floating dtype, any device).
        lam: smoothing strength, ``> 0``.
        dim: the channel axis.
        boundary: ``"neumann"`` (default) or ``"periodic"``.

    Returns:
        A new tensor with ``grad``'s shape and dtype.

    Example:
        >>> sobolev(torch.ones(4, 3), lam=0.5)  # constant along the axis: unchanged
        tensor([[1., 1., 1.],
                [1., 1., 1.],
                [1., 1., 1.],
                [1., 1., 1.]])
    """
    _check_boundary(boundary)
    return _pure(sobolev_, grad, _check_positive("lam", lam), dim, boundary)


# --------------------------------------------------------------------------- exponential recurrences


def _tridiagonal_solve_(x: torch.Tensor, a: float, boundary: Boundary, dim: int) -> torch.Tensor:
    """In place: ``x <- (I + a D^T D)^{-1} x`` along ``dim``; returns a probe.

    ``(1 + 2a) - a (S + S^-1) = (a / rho) (1 - rho S)(1 - rho S^-1)`` with ``rho < 1`` the small root of
    ``rho + 1/rho = (1 + 2a) / a``, so the inverse is a causal then an anti-causal exponential recurrence
    scaled by ``rho / a``. Boundary values: periodic closes each recurrence on itself; Neumann (the
    half-sample symmetric extension of the chain) starts the causal one from the mirrored signal.
    """
    c = x.shape[dim]
    if c == 1 or a == 0.0:
        return x.select(dim, c - 1)
    rho, gain = _recurrence_factors(a)
    v, copied = _as_3d(x, dim)
    pw = _powers(rho, c + 1, v)
    if boundary == "neumann":
        forward = torch.matmul(pw[:c].view(1, c), v)  # sum_k rho^k x_k, P x 1 x Q
    _scan_(v, rho)
    if boundary == "periodic":
        w_init = v[:, -1:] / (1.0 - rho**c)
    else:
        w_init = (forward + rho**c * v[:, -1:]) / (1.0 - rho ** (2 * c))
    v.addcmul_(pw[1:].view(1, c, 1), w_init)
    if boundary == "neumann":
        y_end = v[:, -1:] / (1.0 - rho)
    _scan_(v, rho, reverse=True)  # anti-causal: y_c = w_c + rho y_{c+1}, y_C = 0
    if boundary == "periodic":
        y_end = v[:, :1] / (1.0 - rho**c)
    v.addcmul_(pw[1:].flip(0).view(1, c, 1), y_end).mul_(gain)
    if copied:
        x.copy_(v.view(x.shape))
    return y_end


def h1_(x: torch.Tensor, lam: float, dim: int = 0, boundary: Boundary = "neumann") -> torch.Tensor:
    """In place full-H1 gradient along ``dim``; returns a probe. See :func:`h1`."""
    op = block_form("h1", _h1_scan_, x, dim, lam, boundary)
    if op is not None:
        return block_transform_(x, dim, op)
    return _h1_scan_(x, lam, dim, boundary)


def _h1_scan_(x: torch.Tensor, lam: float, dim: int, boundary: Boundary) -> torch.Tensor:
    """:func:`h1_` in O(C) per column by the tridiagonal recurrences, for axes too long for the block form."""
    c = x.shape[dim]
    return _tridiagonal_solve_(x, lam * c * c, boundary, dim)


def h1(grad: torch.Tensor, lam: float, dim: int = 0, boundary: Boundary = "neumann") -> torch.Tensor:
    """Gradient under the full Sobolev (H1) metric along ``dim``: ``(I + lam C^2 D^T D) g = G``.

    Metric: ``<h, k> = mean(h k) + lam * C * sum_c (Dh)_c (Dk)_c``. The mean is preserved, the k-th cosine
    mode is scaled by about ``1 / (1 + lam pi^2 k^2)`` (never amplified) and ``lam -> 0`` gives back the
    plain gradient. Solved in O(C*M) by two first-order recurrences (a blocked scan), no dense solve.

    Args:
        grad: gradient tensor (any shape, floating dtype, any device).
        lam: smoothing strength, ``> 0``.
        dim: the channel axis.
        boundary: ``"neumann"`` (default) or ``"periodic"``.

    Returns:
        A new tensor with ``grad``'s shape and dtype.

    Example:
        >>> g = torch.tensor([1.0, -1.0, 1.0, -1.0])  # the roughest mode along 4 channels
        >>> smooth = h1(g, lam=0.1)
        >>> bool(smooth.norm() < g.norm()), abs(smooth.mean().item()) < 1e-6  # damped; the mean (0) kept
        (True, True)
    """
    _check_boundary(boundary)
    return _pure(h1_, grad, _check_positive("lam", lam), dim, boundary)


_H0_DENSE_MAX = 32


def channel_operator(metric: str, c: int, lam: float, boundary: Boundary, dtype: torch.dtype,
                     device: torch.device) -> torch.Tensor | None:
    """``[M; 1/C]``, the ``(C + 1) x C`` matrix of ``metric``'s transform along ``c`` channels with the channel
    mean as its last row (``_blocks.dense_operator``), or None for longer axes: up to 64 channels for
    ``sobolev`` and ``h1`` (as their own block form), up to 32 for ``h0``, whose own kernel (two passes, a few
    operations per entry) beats a product of 2C operations per entry beyond that (ResNet-56 shapes,
    benchmarks/transforms.py). Built once per arguments; one product with it transforms many gradients laid
    side by side (``ChannelDirected.step``)."""
    if not 2 <= c <= (_H0_DENSE_MAX if metric == "h0" else _DENSE_MAX):
        return None
    scan = {"h0": _reweighted_h0_scan_, "sobolev": _sobolev_scan_, "h1": _h1_scan_}[metric]
    return dense_operator(scan, c, lam, boundary, dtype, device)


# ------------------------------------------------------------------------------- Laplacian smoothing


# When the block form does not apply: up to this length the FFT form of the Laplacian smoothing is faster
# than the recurrences (per-call overhead); beyond it the O(n) recurrences win (benchmarks/transforms.py).
# All three are exact.
_FFT_MAX = 1 << 17


def laplacian_smooth_(x: torch.Tensor, sigma: float, dim: int = 0) -> torch.Tensor:
    """In place ``x <- (I - sigma L)^{-1} x`` along ``dim`` (periodic L); returns a probe.

    :func:`laplacian_smooth` applies it to the flattened tensor, as LS-SGD does. An axis that is innermost
    in memory and has a block length (a divisor from 32 down to 8, or at most 32 long) is smoothed in block
    form (``_blocks.ring_form``); others by a real FFT up to ``_FFT_MAX`` entries, by the recurrences above.
    """
    n = x.shape[dim]
    if n == 1 or sigma == 0.0:
        return _tridiagonal_solve_(x, sigma, "periodic", dim)
    ring = ring_form(n, sigma, x.dtype, x.device)
    if ring is not None and x.is_contiguous() and math.prod(x.shape[dim + 1:]) == 1:
        return ring_transform_(x.view(-1, n), ring)
    if n > _FFT_MAX:
        return _tridiagonal_solve_(x, sigma, "periodic", dim)
    shape = [1] * x.dim()
    shape[dim] = n // 2 + 1
    spectrum = torch.fft.rfft(x, dim=dim)
    spectrum.mul_(_laplacian_gains(n, sigma, x.dtype, x.device).view(shape))
    if x.is_contiguous():  # the inverse transform writes into x: no copy
        torch.fft.irfft(spectrum, n=n, dim=dim, out=x)
    else:
        x.copy_(torch.fft.irfft(spectrum, n=n, dim=dim))
    return x.narrow(dim, 0, 1)


@functools.lru_cache(maxsize=64)
def _laplacian_gains(n: int, sigma: float, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """``1 / (1 + 4 sigma sin^2(pi k / n))`` for the ``n // 2 + 1`` modes of a real FFT, computed in float64."""
    k = torch.arange(n // 2 + 1, dtype=torch.float64)
    return (1 / (1 + 4 * sigma * torch.sin(math.pi * k / n) ** 2)).to(device=device, dtype=dtype)


def laplacian_smooth(grad: torch.Tensor, sigma: float) -> torch.Tensor:
    """Laplacian smoothing gradient (LS-SGD, Osher et al. 2018): ``(I - sigma L)^{-1}`` on the flat tensor.

    The tensor is flattened row-major to length n and ``L`` is the periodic 1-D discrete Laplacian: in
    Fourier space mode k is divided by ``1 + 4 sigma sin^2(pi k / n)``. Computed in O(n) real arithmetic as
    the equivalent kernel ``rho^|d|`` around the ring, in blocks of up to 32 entries (one product per block
    and a few short sums that carry between blocks) when n has such a block length (any conv weight with a
    multiple of 8 channels); otherwise with a real FFT up to 2^17 elements and, above, as the periodic
    tridiagonal solve by two exponential recurrences. ``sigma = 0`` is the identity.

    Args:
        grad: gradient tensor (any shape, floating dtype, any device).
        sigma: smoothing strength, ``>= 0``.

    Returns:
        A new tensor with ``grad``'s shape and dtype.

    Example:
        >>> g = torch.tensor([[1.0, -1.0], [1.0, -1.0]])  # flattened: the alternating mode, k = n / 2
        >>> laplacian_smooth(g, sigma=1.0)  # divided by 1 + 4 sigma
        tensor([[ 0.2000, -0.2000],
                [ 0.2000, -0.2000]])
    """
    sigma = _check_nonnegative("sigma", sigma)
    _check_grad(grad)
    work = grad.to(_compute_dtype(grad.dtype), copy=True, memory_format=torch.contiguous_format)
    if work.numel():
        laplacian_smooth_(work.view(-1), sigma, 0)
    return work.to(grad.dtype)


# ----------------------------------------------------------------------------------------- directions


def smoothing_view(
    shape: torch.Size | tuple[int, ...], direction: Direction = "out", kind: LayerKind = "conv"
) -> tuple[tuple[int, ...], int] | None:
    """Where a direction points for a parameter of a given layer kind (docs/design.md 1d).

    Returns ``(view_shape, dim)``: view the (contiguous) parameter as ``view_shape`` and smooth along
    ``dim``; or ``None`` when the direction has no axis for this kind (``"in"``/``"spatial"`` of a vector,
    ``"spatial"`` of a Linear weight), in which case the parameter is left as it is.

    Kinds and their weight layouts (torch's own):

    * ``"conv"``: Conv1d/2d/3d, grouped or not, ``(out, in/groups, *kernel)``: ``"out"`` is dim 0.
    * ``"conv_transpose"``: ConvTranspose1d/2d/3d, ``(in, out/groups, *kernel)``: ``"out"`` is dim 1.
    * ``"linear"``: ``(out, in)``.
    * ``"vector"``: per-channel vectors (bias, BatchNorm weight and bias), ``(C,)``.

    ``"spatial"`` smooths along the flattened kernel window; ``"flat"`` along the whole flattened tensor.

    Example:
        >>> smoothing_view((64, 32, 3, 3), "out", "conv")
        ((64, 32, 3, 3), 0)
        >>> smoothing_view((32, 64, 3, 3), "out", "conv_transpose")
        ((32, 64, 3, 3), 1)
        >>> smoothing_view((64, 32, 3, 3), "spatial", "conv")
        ((2048, 9), 1)
    """
    if direction not in DIRECTIONS:
        raise ValueError(f"unknown direction {direction!r}; expected one of {DIRECTIONS}")
    if kind not in LAYER_KINDS:
        raise ValueError(f"unknown layer kind {kind!r}; expected one of {LAYER_KINDS}")
    shape = tuple(int(s) for s in shape)
    expected = {"conv": 3, "conv_transpose": 3, "linear": 2, "vector": 1}[kind]
    if (kind in ("conv", "conv_transpose") and len(shape) < 3) or (kind != "conv" and kind != "conv_transpose"
                                                                  and len(shape) != expected):
        raise ValueError(f"a {kind} parameter has {'at least ' if expected == 3 else ''}{expected} dims, "
                         f"got shape {shape}")
    if direction == "flat":
        return (math.prod(shape),), 0
    if kind == "vector":
        return (shape, 0) if direction == "out" else None
    out_dim = 1 if kind == "conv_transpose" else 0
    if direction == "out":
        return shape, out_dim
    if direction == "in":
        return shape, 1 - out_dim
    if kind == "linear":
        return None
    return (shape[0] * shape[1], math.prod(shape[2:])), 1
