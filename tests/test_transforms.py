"""The pure transforms against independent references: dense solves of each metric's Riesz equation."""

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from gradgeo.channel import _blocks as B
from gradgeo.channel import transforms as T

F64 = torch.float64


def difference_matrix(c: int, boundary: str) -> torch.Tensor:
    """Forward differences (Dh)_c = h_{c+1} - h_c: (C-1) x C open chain or C x C ring."""
    if boundary == "periodic":
        return torch.roll(torch.eye(c, dtype=F64), 1, dims=1) - torch.eye(c, dtype=F64)
    d = torch.zeros(c - 1, c, dtype=F64)
    for i in range(c - 1):
        d[i, i], d[i, i + 1] = -1.0, 1.0
    return d


def riesz(metric_matrix: torch.Tensor, grad: torch.Tensor, dim: int) -> torch.Tensor:
    """Solve <g, k>_A = mean(G k) for all k, i.e. A g = G / C, along ``dim`` with a dense solve."""
    c = grad.shape[dim]
    moved = grad.to(F64).movedim(dim, 0).reshape(c, -1)
    solved = torch.linalg.solve(metric_matrix, moved / c)
    return solved.reshape(grad.movedim(dim, 0).shape).movedim(0, dim)


def h0_matrix(c: int, lam: float) -> torch.Tensor:
    ones = torch.ones(c, 1, dtype=F64)
    centre = torch.eye(c, dtype=F64) - ones @ ones.T / c
    # mean(h) mean(k) + lam mean((h - mean h)(k - mean k))
    return ones @ ones.T / c**2 + lam * centre.T @ centre / c


def sobolev_matrix(c: int, lam: float, boundary: str) -> torch.Tensor:
    ones = torch.ones(c, 1, dtype=F64)
    d = difference_matrix(c, boundary)
    return ones @ ones.T / c**2 + lam * c * d.T @ d  # mean(h)mean(k) + lam C sum (Dh)(Dk)


def h1_matrix(c: int, lam: float, boundary: str) -> torch.Tensor:
    d = difference_matrix(c, boundary)
    return torch.eye(c, dtype=F64) / c + lam * c * d.T @ d  # mean(h k) + lam C sum (Dh)(Dk)


SHAPES_AND_DIMS = [((1, 5), 0), ((2, 3), 0), ((3, 4, 2), 1), ((7, 2, 3, 3), 0), ((4, 33, 2), 1), ((5, 3, 40), -1),
                   ((70, 3), 0)]


@pytest.mark.parametrize("shape,dim", SHAPES_AND_DIMS)
@pytest.mark.parametrize("lam", [0.01, 0.5, 3.0])
def test_reweighted_h0_equals_dense_solve(shape, dim, lam):
    g = torch.randn(shape, dtype=F64)
    expected = riesz(h0_matrix(shape[dim], lam), g, dim)
    torch.testing.assert_close(T.reweighted_h0(g, lam, dim), expected, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("shape,dim", SHAPES_AND_DIMS)
@pytest.mark.parametrize("lam", [0.003, 0.1, 2.0])
@pytest.mark.parametrize("boundary", T.BOUNDARIES)
def test_sobolev_equals_dense_solve(shape, dim, lam, boundary):
    g = torch.randn(shape, dtype=F64)
    expected = riesz(sobolev_matrix(shape[dim], lam, boundary), g, dim)
    torch.testing.assert_close(T.sobolev(g, lam, dim, boundary), expected, rtol=1e-8, atol=1e-8)


@pytest.mark.parametrize("shape,dim", SHAPES_AND_DIMS)
@pytest.mark.parametrize("lam", [1e-4, 0.01, 0.5, 20.0])
@pytest.mark.parametrize("boundary", T.BOUNDARIES)
def test_h1_equals_dense_solve(shape, dim, lam, boundary):
    g = torch.randn(shape, dtype=F64)
    expected = riesz(h1_matrix(shape[dim], lam, boundary), g, dim)
    torch.testing.assert_close(T.h1(g, lam, dim, boundary), expected, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("shape", [(1,), (2,), (3, 2), (6, 4, 3, 3), (1000,)])
@pytest.mark.parametrize("sigma", [0.0, 0.5, 3.0])
def test_laplacian_smooth_equals_dense_inverse(shape, sigma):
    g = torch.randn(shape, dtype=F64)
    n = g.numel()
    lap = torch.roll(torch.eye(n, dtype=F64), 1, 0) + torch.roll(torch.eye(n, dtype=F64), -1, 0) - 2 * torch.eye(n)
    if n == 1:
        lap = torch.zeros(1, 1, dtype=F64)
    expected = torch.linalg.solve(torch.eye(n, dtype=F64) - sigma * lap, g.reshape(-1)).reshape(shape)
    torch.testing.assert_close(T.laplacian_smooth(g, sigma), expected, rtol=1e-9, atol=1e-9)


# block form (rows of 32, and one block of 6), the FFT (a prime length: no block length) and the recurrences
# (a prime above _FFT_MAX)
@pytest.mark.parametrize("shape", [(16, 8, 3, 3), (2, 3), (1009,), (131101,)])
def test_laplacian_smooth_matches_the_fourier_definition(shape):
    """docs/design.md 1c: mode k of the flattened tensor is divided by 1 + 4 sigma sin^2(pi k / n)."""
    g = torch.randn(shape, dtype=F64)
    n, sigma = g.numel(), 1.5
    assert (B.ring_form(n, sigma, F64, g.device) is None) == (n in (1009, 131101))
    k = torch.arange(n, dtype=F64)
    expected = torch.fft.ifft(torch.fft.fft(g.reshape(-1)) / (1 + 4 * sigma * torch.sin(math.pi * k / n) ** 2))
    torch.testing.assert_close(T.laplacian_smooth(g, sigma), expected.real.reshape(g.shape))


def test_sobolev_mode_gain_matches_the_documented_scale():
    """The k-th cosine mode of the zero-mean part is scaled by about 1 / (lam pi^2 k^2)."""
    c, lam = 256, 0.1
    x = (torch.arange(c, dtype=F64) + 0.5) / c
    for k in (1, 2, 3):
        mode = torch.cos(math.pi * k * x)
        gain = (T.sobolev(mode, lam) @ mode / (mode @ mode)).item()
        assert gain == pytest.approx(1 / (lam * math.pi**2 * k**2), rel=0.01)
        gain_h1 = (T.h1(mode, lam) @ mode / (mode @ mode)).item()
        assert gain_h1 == pytest.approx(1 / (1 + lam * math.pi**2 * k**2), rel=0.01)


def test_h0_with_lam_one_is_the_identity():
    g = torch.randn(9, 4, 3, 3)
    torch.testing.assert_close(T.reweighted_h0(g, 1.0), g)


def test_h0_hand_derived_case():
    # mean 2, deviations -1/+1 halved by lam = 2
    torch.testing.assert_close(T.reweighted_h0(torch.tensor([1.0, 3.0]), 2.0), torch.tensor([1.5, 2.5]))


def test_sobolev_hand_derived_two_channels():
    # C = 2, Neumann: lam * 4 * D^T D g = r with r = (-d, d): g = mean + (-d, d) / (8 lam)
    g = torch.tensor([1.0, 3.0], dtype=F64)
    torch.testing.assert_close(T.sobolev(g, 0.25), torch.tensor([2.0 - 0.5, 2.0 + 0.5], dtype=F64))


@pytest.mark.parametrize("transform", ["h0", "sobolev", "h1"])
@pytest.mark.parametrize("boundary", T.BOUNDARIES)
def test_channel_mean_preserved_linear_and_constant_kept(transform, boundary):
    fn = {
        "h0": lambda g, dim=0: T.reweighted_h0(g, 0.3, dim),
        "sobolev": lambda g, dim=0: T.sobolev(g, 0.3, dim, boundary),
        "h1": lambda g, dim=0: T.h1(g, 0.3, dim, boundary),
    }[transform]
    a, b = torch.randn(12, 5, 3, dtype=F64), torch.randn(12, 5, 3, dtype=F64)
    torch.testing.assert_close(fn(a, 1).mean(1), a.mean(1))
    torch.testing.assert_close(fn(2.0 * a - 3.0 * b), 2.0 * fn(a) - 3.0 * fn(b))
    constant = torch.randn(1, 5, 3, dtype=F64).expand(12, 5, 3)
    torch.testing.assert_close(fn(constant), constant)


@settings(max_examples=40, deadline=None)
@given(
    shape=st.lists(st.integers(1, 9), min_size=1, max_size=4),
    data=st.data(),
    lam=st.floats(1e-3, 10.0),
    boundary=st.sampled_from(T.BOUNDARIES),
)
def test_property_sobolev_and_h1_match_dense_solve_on_any_axis(shape, data, lam, boundary):
    dim = data.draw(st.integers(-len(shape), len(shape) - 1))
    g = torch.randn(shape, dtype=F64)
    c = shape[dim]
    torch.testing.assert_close(T.sobolev(g, lam, dim, boundary), riesz(sobolev_matrix(c, lam, boundary), g, dim),
                               rtol=1e-7, atol=1e-7)
    torch.testing.assert_close(T.h1(g, lam, dim, boundary), riesz(h1_matrix(c, lam, boundary), g, dim),
                               rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32])
def test_dtypes_are_kept_and_half_types_computed_in_float32(dtype):
    g = torch.randn(64, 8, 3, 3).to(dtype)
    reference = T.sobolev(g.double(), 0.1)
    out = T.sobolev(g, 0.1)
    assert out.dtype == dtype and out.shape == g.shape
    # rounding the float32 result once to the half type: within one ulp of the half type
    torch.testing.assert_close(out.double(), reference, rtol=2 * torch.finfo(dtype).eps, atol=1e-6)


def test_float32_accuracy_on_wide_layers():
    g = torch.randn(2048, 64, 3, 3)
    for fn in (T.sobolev, T.h1):
        out, ref = fn(g, 0.05), fn(g.double(), 0.05)
        assert ((out - ref).abs().max() / ref.abs().max()).item() < 1e-5


def test_non_contiguous_input_and_input_untouched():
    g = torch.randn(8, 16, 3, 3).permute(1, 0, 2, 3)  # (16, 8, 3, 3), not contiguous
    before = g.clone()
    for fn in (lambda x: T.sobolev(x, 0.2), lambda x: T.h1(x, 0.2), lambda x: T.reweighted_h0(x, 2.0)):
        torch.testing.assert_close(fn(g), fn(g.contiguous()))
    torch.testing.assert_close(g, before)


@pytest.mark.parametrize("dim", [0, 1])
@pytest.mark.parametrize("transform", ["h0", "sobolev", "h1"])
def test_in_place_kernels_on_permuted_layouts_match_the_dense_solve(transform, dim):
    """channels_last gradients and transposed weights are smoothed in their own memory, along the right axis."""
    c = (12, 7)[dim]
    matrix, kernel, lam = {"h0": (h0_matrix(c, 2.0), T.reweighted_h0_, 2.0),
                           "sobolev": (sobolev_matrix(c, 0.2, "neumann"), T.sobolev_, 0.2),
                           "h1": (h1_matrix(c, 0.05, "neumann"), T.h1_, 0.05)}[transform]
    base = torch.randn(12, 7, 3, 5, dtype=F64)
    for x in (base.contiguous(memory_format=torch.channels_last), base.transpose(0, 1).contiguous().transpose(0, 1),
              base.permute(2, 3, 0, 1).contiguous().permute(2, 3, 0, 1)):
        expected, storage = riesz(matrix, base, dim), x.data_ptr()
        kernel(x, lam, dim)
        torch.testing.assert_close(x, expected, rtol=1e-10, atol=1e-10)
        assert x.data_ptr() == storage  # written in place, in the caller's own storage


def test_chunked_scan_crosses_many_chunks():
    """C much longer than the scan chunk, including the recursive carry level."""
    g = torch.randn(3 * 32 * 32 + 5, 2, dtype=F64)
    c = g.shape[0]
    torch.testing.assert_close(T.h1(g, 1e-6), riesz(h1_matrix(c, 1e-6, "neumann"), g, 0), rtol=1e-8, atol=1e-8)


@pytest.mark.parametrize(
    "call,match",
    [
        (lambda g: T.sobolev(g, 0.0), "lam must be a finite number > 0, got 0.0"),
        (lambda g: T.reweighted_h0(g, -1.0), "lam must be a finite number > 0, got -1.0"),
        (lambda g: T.h1(g, float("nan")), "lam must be a finite number > 0"),
        (lambda g: T.laplacian_smooth(g, -0.5), "sigma must be a finite number >= 0, got -0.5"),
        (lambda g: T.sobolev(g, 0.1, boundary="dirichlet"), "unknown boundary 'dirichlet'; expected one of"),
        (lambda g: T.sobolev(g, 0.1, dim=4), "dim 4 is out of range"),
        (lambda g: T.sobolev(g.to(torch.complex64), 0.1), "real floating-point gradient"),
        (lambda g: T.sobolev(g.to_sparse(), 0.1), "dense"),
        (lambda g: T.sobolev(g.long(), 0.1), "real floating-point gradient"),
    ],
)
def test_bad_input_is_named(call, match):
    with pytest.raises(ValueError, match=match):
        call(torch.randn(4, 3))


@pytest.mark.parametrize(
    "shape,direction,kind,expected",
    [
        ((64, 32, 3, 3), "out", "conv", ((64, 32, 3, 3), 0)),
        ((64, 32, 3, 3), "in", "conv", ((64, 32, 3, 3), 1)),
        ((64, 32, 3, 3), "spatial", "conv", ((2048, 9), 1)),
        ((64, 32, 3, 3), "flat", "conv", ((18432,), 0)),
        ((64, 32, 5), "out", "conv", ((64, 32, 5), 0)),
        ((8, 4, 3, 3, 3), "spatial", "conv", ((32, 27), 1)),
        ((32, 64, 4, 4), "out", "conv_transpose", ((32, 64, 4, 4), 1)),
        ((32, 64, 4, 4), "in", "conv_transpose", ((32, 64, 4, 4), 0)),
        ((10, 20), "out", "linear", ((10, 20), 0)),
        ((10, 20), "in", "linear", ((10, 20), 1)),
        ((10, 20), "spatial", "linear", None),
        ((16,), "out", "vector", ((16,), 0)),
        ((16,), "in", "vector", None),
    ],
)
def test_smoothing_view(shape, direction, kind, expected):
    assert T.smoothing_view(shape, direction, kind) == expected


def test_smoothing_view_matches_torch_layer_layouts():
    conv = torch.nn.Conv2d(6, 12, 3, groups=3)  # weight (out, in/groups, k, k)
    assert T.smoothing_view(conv.weight.shape, "out", "conv")[0][0] == conv.out_channels
    tconv = torch.nn.ConvTranspose2d(6, 12, 4)  # weight (in, out/groups, k, k)
    view, dim = T.smoothing_view(tconv.weight.shape, "out", "conv_transpose")
    assert view[dim] == tconv.out_channels


def test_smoothing_view_rejects_unknown_names():
    with pytest.raises(ValueError, match="unknown direction 'diagonal'; expected one of"):
        T.smoothing_view((4, 4, 3, 3), "diagonal")
    with pytest.raises(ValueError, match="unknown layer kind 'rnn'"):
        T.smoothing_view((4, 4, 3, 3), "out", "rnn")
    with pytest.raises(ValueError, match="a conv parameter has at least 3 dims"):
        T.smoothing_view((4, 4), "out", "conv")


@pytest.mark.parametrize("c", [33, 64, 96, 100, 512, 1000])  # one product up to 64, then blocks of 32 ... 8
@pytest.mark.parametrize("lam", [1e-300, 1e-9, 1e-3, 0.1, 30.0, 1e9])  # rho from ~0 (h1 ~ identity) to ~1
@pytest.mark.parametrize("boundary", T.BOUNDARIES)
def test_block_form_equals_the_scans_at_extreme_strength(c, lam, boundary):
    """The block form (products with a fixed block, low-rank coupling) against the O(C) scans it replaces,
    in float64 to rounding and in float32 to its precision, where the dense solve is too ill-conditioned to
    be the reference: h1 at rho -> 1 (lam C^2 up to 1e15, the basis' cosh/sinh form) and rho -> 0 (the
    power form), sobolev with the Green's function scaled by up to 1e300."""
    g = torch.randn(c, 6, dtype=F64)
    assert B.block_form("h1", T._h1_scan_, g, 0, lam, boundary) is not None
    for kernel, scan in ((T.h1_, lambda x: T._tridiagonal_solve_(x, lam * c * c, boundary, 0)),
                         (T.sobolev_, lambda x: T._sobolev_scan_(x, lam, 0, boundary))):
        expected = g.clone()
        scan(expected)
        scale = expected.abs().max()
        for dtype, tolerance in ((F64, 1e-12), (torch.float32, 1e-5)):
            if scale > torch.finfo(dtype).max / 1e6:  # sobolev's 1 / (lam C^2) at lam = 1e-300: float64 only
                continue
            out = g.to(dtype, copy=True)
            kernel(out, lam, 0, boundary)
            assert ((out.double() - expected).abs().max() / scale).item() < tolerance


@pytest.mark.parametrize("c, q", [(96, 4096), (512, 4100), (96, 7)])  # chunks of 1 block, 1 block, all
def test_block_form_in_chunks_matches_the_dense_operator(c, q):
    """On CPU the blocks go through the product a cache-sized chunk at a time (one block per chunk for large
    q, every block in one for small q); the result is a dense product with the operator that the scan gives
    on the identity (an independent construction of the same matrix), with channels along dim 0 and dim 1."""
    g = torch.randn(c, q, dtype=F64)
    for metric, kernel, scan in (("sobolev", T.sobolev_, T._sobolev_scan_), ("h1", T.h1_, T._h1_scan_)):
        op = B.block_form(metric, scan, g, 0, 0.05, "neumann")
        assert op is not None and op.reduce is not None
        operator = torch.eye(c, dtype=F64)
        scan(operator, 0.05, 0, "neumann")
        out = g.clone()
        kernel(out, 0.05, 0, "neumann")
        torch.testing.assert_close(out, operator @ g, rtol=1e-10, atol=1e-12)
        out = g.T.contiguous()
        kernel(out, 0.05, 1, "neumann")
        torch.testing.assert_close(out, (operator @ g).T, rtol=1e-10, atol=1e-12)


def test_block_form_chunk_sizes():
    blocks = torch.empty(16, 32, 4608)  # ResNet-18's 512-channel convs: one block of 35 x 4608 floats is > 512 KiB
    assert B._chunk(blocks, 35 * 4608 * 4) == 1
    assert B._chunk(torch.empty(4, 32, 9), 35 * 9 * 4) == 4  # small: every block at once
    assert B._chunk(torch.empty(4096, 32, 9), 35 * 9 * 4) == B._CHUNK_BYTES // (35 * 9 * 4)
    assert B._chunk(torch.empty(16, 32, 4608, device="meta"), 35 * 4608 * 4) == 16  # not CPU: one product


def circulant_laplacian_inverse(n: int, sigma: float) -> torch.Tensor:
    """``(I - sigma L)^{-1}`` with the periodic 1-D Laplacian, by a dense solve in float64."""
    eye = torch.eye(n, dtype=F64)
    lap = torch.roll(eye, 1, 0) + torch.roll(eye, -1, 0) - 2 * eye
    return torch.linalg.inv(eye - sigma * lap)


# n: rows of 32 (ResNet-56's first conv: 16 x 3 x 3 x 3 = 432 has 27, then 24 ... : 24), of 28, one block of 20,
# two rows of 32 (each row's neighbours are the same row); sigma: rho from ~1e-6 (the sums underflow inside
# a row) to ~0.99 (a carry goes around the ring many times: 14 doubling steps)
@pytest.mark.parametrize("n", [432, 168, 20, 64, 1024])
@pytest.mark.parametrize("sigma", [1e-6, 0.3, 3.0, 1e4])
def test_laplacian_block_form_equals_the_dense_inverse(n, sigma):
    """The ring's block form (rows through a fixed kernel, carries summed by doubling around the ring)
    against a dense inverse of the circulant, in float64 to rounding and float32 to its precision, on one
    flattened gradient and on three stacked (a batch: each row of the stack its own ring)."""
    op = B.ring_form(n, sigma, F64, torch.device("cpu"))
    assert op is not None and op.length == {432: 27, 168: 28, 20: 20}.get(n, 32)
    inverse = circulant_laplacian_inverse(n, sigma)
    g = torch.randn(3, n, dtype=F64)
    expected = g @ inverse.T
    for dtype, tolerance in ((F64, 1e-12), (torch.float32, 2e-6)):
        one = g[0].to(dtype, copy=True)
        T.laplacian_smooth_(one, sigma, 0)
        stacked = g.to(dtype, copy=True)
        T.laplacian_smooth_(stacked, sigma, 1)
        scale = expected.abs().max()
        assert ((one.double() - expected[0]).abs().max() / scale).item() < tolerance
        assert ((stacked.double() - expected).abs().max() / scale).item() < tolerance


def test_laplacian_block_form_hands_over_beyond_its_doublings():
    """At a sigma where the carries would need more doubling steps than allowed (rho^32 ~ 1), the recurrences
    take over, exact all the same (against the Fourier definition: the dense inverse is too ill-conditioned
    to be the reference there)."""
    n, sigma = 64, 1e12
    assert B.ring_form(n, sigma, F64, torch.device("cpu")) is None
    g = torch.randn(n, dtype=F64)
    k = torch.arange(n, dtype=F64)
    expected = torch.fft.ifft(torch.fft.fft(g) / (1 + 4 * sigma * torch.sin(math.pi * k / n) ** 2)).real
    torch.testing.assert_close(T.laplacian_smooth(g, sigma), expected, rtol=1e-12, atol=1e-12)


# every in-place kernel, in block form and by its scans / FFT: (kernel, strength, length of the axis)
PROBED = [(T.reweighted_h0_, 2.0, 64), (T.sobolev_, 0.1, 96), (T.sobolev_, 0.1, 64), (T.sobolev_, 0.1, 7),
          (T._sobolev_scan_, 0.1, 64), (T.h1_, 0.01, 96), (T.h1_, 0.01, 64), (T._h1_scan_, 0.01, 64),
          (T.laplacian_smooth_, 1e-3, 96), (T.laplacian_smooth_, 1.0, 97)]


@pytest.mark.parametrize("kernel, strength, c", PROBED)
@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
@pytest.mark.parametrize("where", [0, 5, -1])
def test_probe_is_nonfinite_exactly_when_the_input_was(kernel, strength, c, bad, where):
    """The probe each in-place kernel returns is what ChannelDirected checks instead of the gradient: finite
    for a finite input, non-finite wherever along the axis (first, inside, last entry) a NaN or an infinity
    sits, also where the block form's weights underflow (laplacian at sigma 1e-3: rho^31 ~ 1e-93 is 0)."""
    args = () if kernel in (T.reweighted_h0_, T.laplacian_smooth_) else ("neumann",)
    g = torch.randn(c, 3) if kernel is not T.laplacian_smooth_ else torch.randn(c)
    assert bool(kernel(g.clone(), strength, 0, *args).isfinite().all())
    g.view(c, -1)[where, 0] = bad
    assert not bool(kernel(g, strength, 0, *args).isfinite().all())


@pytest.mark.parametrize("kernel, strength, c", PROBED)
def test_probe_holds_no_gradient_sized_buffer(kernel, strength, c):
    """ChannelDirected keeps every probe until the step's one check: a probe is a view of the gradient itself
    or a buffer of its own a fraction of the gradient's size, never a view of a gradient-sized scratch buffer
    (which kept every dense product alive through the step: twice the time on ResNet-56 shapes, from the
    allocator's fresh pages)."""
    args = () if kernel in (T.reweighted_h0_, T.laplacian_smooth_) else ("neumann",)
    g = torch.randn(c, 40) if kernel is not T.laplacian_smooth_ else torch.randn(c)
    storage = kernel(g, strength, 0, *args).untyped_storage()
    assert storage.data_ptr() == g.untyped_storage().data_ptr() or storage.nbytes() <= g.nbytes // 4


@pytest.mark.parametrize("shape, dim", [((96, 0), 0), ((96, 0, 3, 3), 0), ((0, 96, 3), 1), ((16, 0), 0)])
@pytest.mark.parametrize("fn", [T.reweighted_h0, T.sobolev, T.h1, T.laplacian_smooth])
def test_empty_gradients_come_back_empty(shape, dim, fn):
    """A gradient with no elements (a zero-width layer) passes through every metric, block form (96 channels)
    and dense (16) alike, with its shape."""
    g = torch.empty(shape)
    out = fn(g, 1.0) if fn is T.laplacian_smooth else fn(g, 0.1, dim)
    assert out.shape == g.shape


@pytest.mark.parametrize("c", [48, 96, 512])
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_block_form_in_half_types(c, dtype):
    g = torch.randn(c, 5, 3).to(dtype)
    for fn in (T.sobolev, T.h1):
        out, reference = fn(g, 0.05, 0, "periodic"), fn(g.double(), 0.05, 0, "periodic")
        assert out.dtype == dtype
        torch.testing.assert_close(out.double(), reference, rtol=2 * torch.finfo(dtype).eps, atol=1e-3)


@pytest.mark.parametrize("c", [2, 33, 100, 4099])  # one chunk; rows of 32 with a ragged tail; recursive chunk ends
@pytest.mark.parametrize("rho", [0.0, 0.5, 0.999, 1.0])
@pytest.mark.parametrize("reverse", [False, True])
def test_scan_of_single_columns_equals_the_recurrence(c, rho, reverse):
    """The blocked scan along a ``P x C x 1`` tensor (chunks scanned as rows by one product) against the
    recurrence ``w_c = x_c + rho w_(c-1)`` written out entry by entry."""
    x = torch.randn(2, c, 1, dtype=F64)
    expected = x.clone()
    order = range(c - 2, -1, -1) if reverse else range(1, c)
    for i in order:
        expected[:, i] += rho * expected[:, i + 1 if reverse else i - 1]
    out = x.clone()
    T._scan_(out, rho, reverse)
    torch.testing.assert_close(out, expected, rtol=1e-12, atol=1e-9)


@pytest.mark.parametrize("rho, n", [(0.5, 10), (0.999999, 100_000), (1e-3, 5000), (1.0, 4097)])
def test_powers_match_pow(rho, n):
    """Long runs of powers come from an outer product of two short ones: equal to ``pow`` to float64 rounding."""
    expected = torch.pow(torch.tensor(rho, dtype=F64), torch.arange(n, dtype=F64))
    torch.testing.assert_close(T._powers(rho, n, expected), expected, rtol=1e-15, atol=0)
