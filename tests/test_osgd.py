"""Tests for gradgeo.osgd: ordered modified Gram-Schmidt and the OSGD backward pass."""

from __future__ import annotations

import copy

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from _multiexit_toys import BranchedCNN, exit_losses
from gradgeo import osgd


def qr_reference(G: torch.Tensor) -> torch.Tensor:
    """Independent reference in float64: with G^T = Q R (Householder QR), h_k = R[k, k] q_k.

    g_k = sum_{j<=k} R[j, k] q_j, so the part of g_k orthogonal to span(g_1 .. g_{k-1}) is R[k, k] q_k
    (independent of the signs LAPACK picks). Valid for full-row-rank G.
    """
    q, r = torch.linalg.qr(G.double().T)
    return (q * r.diagonal()).T


def random_gradients(seed: int, k: int, n: int, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(k, n, generator=gen, dtype=dtype)


def cosines(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """cos of the angle between every row of a and every row of b (0 where a row is zero)."""
    a, b = a.double(), b.double()
    norms = a.norm(dim=1, keepdim=True) * b.norm(dim=1)
    return (a @ b.T) / norms.clamp_min(1e-300)


# ------------------------------------------------------------------------------------------ gram_schmidt


def test_hand_derived_2x2():
    G = torch.tensor([[3.0, 4.0], [1.0, 0.0]], dtype=torch.float64)
    # h_2 = g_2 - (<g_2, h_1> / <h_1, h_1>) h_1 = (1, 0) - 3/25 (3, 4)
    expected = torch.tensor([[3.0, 4.0], [16 / 25, -12 / 25]], dtype=torch.float64)
    torch.testing.assert_close(osgd.gram_schmidt(G), expected)


def test_hand_derived_3x3():
    G = torch.tensor([[1.0, 1.0, 0.0], [1.0, 0.0, 1.0], [0.0, 1.0, 1.0]], dtype=torch.float64)
    # h_2 = g_2 - 1/2 h_1 = (1/2, -1/2, 1); h_3 = g_3 - 1/2 h_1 - (1/2 / (3/2)) h_2 = (-2/3, 2/3, 2/3)
    expected = torch.tensor([[1.0, 1.0, 0.0], [0.5, -0.5, 1.0], [-2 / 3, 2 / 3, 2 / 3]], dtype=torch.float64)
    torch.testing.assert_close(osgd.gram_schmidt(G), expected)


@settings(max_examples=40, deadline=None)
@given(
    seed=st.integers(0, 2**31 - 1),
    k=st.integers(1, 6),
    extra=st.integers(0, 30),
    log_scale=st.floats(-12, 12),
)
def test_matches_qr_reference_at_any_scale(seed, k, extra, log_scale):
    G = random_gradients(seed, k, k + extra) * 10.0**log_scale
    H = osgd.gram_schmidt(G)
    torch.testing.assert_close(H, qr_reference(G), rtol=1e-9, atol=1e-9 * G.abs().max().item())


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), k=st.integers(2, 6), n=st.integers(8, 200))
def test_h_k_orthogonal_to_every_earlier_gradient_float32(seed, k, n):
    G = random_gradients(seed, k, max(n, k), torch.float32)
    H = osgd.gram_schmidt(G)
    assert H.dtype == torch.float32
    cos = cosines(H, G)  # cos[k, j] = cos(h_k, g_j); must vanish for j < k
    assert cos.tril(-1).abs().max().item() < 1e-5
    assert cosines(H, H).tril(-1).abs().max().item() < 1e-5


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
def test_h1_is_g1_bit_for_bit(dtype):
    G = random_gradients(0, 4, 50).to(dtype)
    assert torch.equal(osgd.gram_schmidt(G)[0], G[0])


def test_already_orthogonal_rows_pass_unchanged():
    # disjoint supports: every projection coefficient is exactly zero
    G = torch.zeros(3, 9)
    G[0, :3], G[1, 3:6], G[2, 6:] = torch.randn(3), torch.randn(3), torch.randn(3)
    assert torch.equal(osgd.gram_schmidt(G), G)
    # scaled orthonormal rows in general position
    q, _ = torch.linalg.qr(random_gradients(1, 20, 4))
    G = q.T * torch.tensor([[3.0], [0.5], [7.0], [1e-3]], dtype=torch.float64)
    torch.testing.assert_close(osgd.gram_schmidt(G), G, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_zero_row_is_skipped_without_nan(dtype):
    G = random_gradients(2, 4, 12).to(dtype)
    G[1] = 0.0
    H = osgd.gram_schmidt(G)
    assert torch.isfinite(H).all()
    assert torch.equal(H[1], G[1])
    # skipping the zero row = running Gram-Schmidt without it
    without = osgd.gram_schmidt(G[[0, 2, 3]])
    torch.testing.assert_close(H[[0, 2, 3]], without)
    assert torch.isfinite(osgd.gram_schmidt(torch.zeros(3, 5, dtype=dtype))).all()


def test_rows_whose_squared_norm_underflows_are_skipped_without_nan():
    G = random_gradients(3, 3, 16, torch.float32)
    G[0] *= 1e-25  # in float32, <g_1, g_1> ~ 1e-49 underflows to zero
    H = osgd.gram_schmidt(G)
    assert torch.isfinite(H).all()
    assert torch.equal(H[0], G[0])
    torch.testing.assert_close(H[1:], osgd.gram_schmidt(G[1:]))  # nothing projected on the tiny row
    # all rows tiny: untouched
    tiny = torch.full((3, 4), 1e-30)
    assert torch.equal(osgd.gram_schmidt(tiny), tiny)


def test_small_but_representable_rows_are_used():
    # the skipping rule is relative: a small gradient is a direction like any other
    G = random_gradients(4, 3, 16)
    H_small = osgd.gram_schmidt(G * torch.tensor([[1e-15], [1.0], [1e-8]], dtype=torch.float64))
    H = osgd.gram_schmidt(G)
    torch.testing.assert_close(H_small[1], H[1])
    assert cosines(H_small[1:2], G[0:1]).abs().item() < 1e-12


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_linear_dependence(dtype):
    g1, g3 = random_gradients(5, 2, 40).to(dtype)
    G = torch.stack([g1, 2.5 * g1, g3])
    H = osgd.gram_schmidt(G)
    assert torch.isfinite(H).all()
    # h_2 is the (tiny) residual of a dependent row; it is skipped, so h_3 is Gram-Schmidt of (g_1, g_3)
    assert H[1].norm() <= 1e-5 * G[1].norm()
    torch.testing.assert_close(H[2], osgd.gram_schmidt(G[[0, 2]])[1], rtol=1e-4, atol=1e-5)
    assert cosines(H[2:], G[:2]).abs().max().item() < 1e-5


def test_more_exits_than_dimensions():
    G = random_gradients(6, 5, 3)
    H = osgd.gram_schmidt(G)
    torch.testing.assert_close(H[:3], qr_reference(G[:3]))
    assert H[3:].norm() < 1e-12  # the span is full after 3 rows


def test_half_precision_computes_in_float32():
    G = random_gradients(7, 4, 64, torch.float32)
    H = osgd.gram_schmidt(G.bfloat16())
    assert H.dtype == torch.bfloat16
    torch.testing.assert_close(H.float(), osgd.gram_schmidt(G.bfloat16().float()).bfloat16().float())


def test_result_is_detached_and_input_untouched():
    G = random_gradients(8, 3, 10).requires_grad_()
    before = G.detach().clone()
    H = osgd.gram_schmidt(G)
    assert not H.requires_grad
    assert torch.equal(G.detach(), before)


@pytest.mark.parametrize(
    ("G", "eps", "match"),
    [
        (torch.ones(4), None, "K x N"),
        (torch.ones(2, 2, 2), None, "K x N"),
        (torch.ones(2, 3, dtype=torch.int64), None, "floating"),
        (torch.ones(2, 3), 1.0, r"\[0, 1\)"),
        (torch.ones(2, 3), -1e-3, r"\[0, 1\)"),
        (torch.ones(2, 3), float("nan"), r"\[0, 1\)"),
    ],
)
def test_gram_schmidt_rejects_bad_input(G, eps, match):
    with pytest.raises(ValueError, match=match):
        osgd.gram_schmidt(G, eps=eps)


# -------------------------------------------------------------------------------------------- backward


def make_problem(seed: int = 0, dtype: torch.dtype = torch.float32):
    torch.manual_seed(seed)
    net = BranchedCNN(classes=3, width=4, pool=1, unused=True).to(dtype)
    x = torch.randn(8, 1, 6, 6, dtype=dtype)
    y = torch.randint(0, 3, (8,))
    return net, x, y


def trainable(net: nn.Module) -> list[nn.Parameter]:
    return list(net.parameters())


def grads(net: nn.Module) -> list[torch.Tensor | None]:
    return [None if p.grad is None else p.grad.clone() for p in net.parameters()]


def per_exit_flat_gradients(net: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """K x N reference: each exit's gradient from its own forward pass, zeros where it does not reach."""
    rows = []
    for k in range(3):
        loss = exit_losses(net, x, y)[k]
        gs = torch.autograd.grad(loss, trainable(net), allow_unused=True)
        rows.append(
            torch.cat([torch.zeros(p.numel()) if g is None else g.flatten() for p, g in zip(trainable(net), gs)])
        )
    return torch.stack(rows)


def flat_grad(net: nn.Module) -> torch.Tensor:
    return torch.cat([torch.zeros(p.numel()) if p.grad is None else p.grad.flatten() for p in net.parameters()])


def assert_bitwise_equal(a: list[torch.Tensor | None], b: list[torch.Tensor | None]) -> None:
    assert len(a) == len(b)
    for u, v in zip(a, b):
        assert (u is None) == (v is None)
        if u is not None:
            assert u.dtype == v.dtype and u.shape == v.shape and u.stride() == v.stride()
            assert torch.equal(u.view(torch.int32), v.view(torch.int32))  # bits, so -0.0 != 0.0


@pytest.mark.parametrize("granularity", osgd.GRANULARITIES)
@pytest.mark.parametrize("exit_index", [0, 2])
def test_single_loss_equals_plain_backward_bit_for_bit(granularity, exit_index):
    net, x, y = make_problem()
    twin = copy.deepcopy(net)
    osgd.backward([exit_losses(net, x, y)[exit_index]], trainable(net), granularity=granularity)
    exit_losses(twin, x, y)[exit_index].backward()
    assert_bitwise_equal(grads(net), grads(twin))
    # and again, accumulating into the existing .grad
    osgd.backward([exit_losses(net, x, y)[exit_index]], trainable(net), granularity=granularity)
    exit_losses(twin, x, y)[exit_index].backward()
    assert_bitwise_equal(grads(net), grads(twin))


@pytest.mark.parametrize("granularity", osgd.GRANULARITIES)
def test_single_loss_keeps_negative_zeros(granularity):
    w = nn.Parameter(torch.ones(3))
    twin = nn.Parameter(torch.ones(3))
    osgd.backward([(w * -0.0).sum()], [w], granularity=granularity)
    (twin * -0.0).sum().backward()
    assert_bitwise_equal([w.grad], [twin.grad])


@pytest.mark.parametrize("granularity", osgd.GRANULARITIES)
def test_backward_matches_gram_schmidt_of_separately_computed_gradients(granularity):
    net, x, y = make_problem()
    G = per_exit_flat_gradients(net, x, y)
    osgd.backward(exit_losses(net, x, y), trainable(net), granularity=granularity)
    if granularity == "global":
        expected = qr_reference(G).sum(0)
    else:
        sizes = [p.numel() for p in net.parameters()]
        expected = torch.cat([osgd.gram_schmidt(block.double()).sum(0) for block in G.split(sizes, dim=1)])
    torch.testing.assert_close(flat_grad(net).double(), expected, rtol=1e-4, atol=1e-6)


def test_parameters_an_exit_does_not_reach_get_zero_gradient_for_it():
    net, x, y = make_problem()
    G = per_exit_flat_gradients(net, x, y)
    head3 = torch.cat([torch.full((p.numel(),), name.startswith("heads.2")) for name, p in net.named_parameters()])
    assert (G[:2, head3] == 0).all()  # exits 1 and 2 do not reach head 3: zero rows there
    osgd.backward(exit_losses(net, x, y), trainable(net))
    # h_1, h_2 vanish on head 3, and projecting g_3 on them leaves g_3's head-3 part as it is
    torch.testing.assert_close(flat_grad(net)[head3], G[2, head3])


def test_parameters_no_exit_reaches_keep_their_grad():
    net, x, y = make_problem()
    for granularity in osgd.GRANULARITIES:
        osgd.backward(exit_losses(net, x, y), trainable(net), granularity=granularity)
        assert net.unused.weight.grad is None and net.unused.bias.grad is None


@pytest.mark.parametrize("granularity", osgd.GRANULARITIES)
def test_first_exit_trains_as_if_alone(granularity):
    # <d, g_1> = |g_1|^2 since <h_k, g_1> = 0 for k > 1; per tensor only with granularity="tensor"
    net, x, y = make_problem()
    G = per_exit_flat_gradients(net, x, y).double()
    osgd.backward(exit_losses(net, x, y), trainable(net), granularity=granularity)
    d = flat_grad(net).double()
    torch.testing.assert_close(d @ G[0], G[0] @ G[0], rtol=1e-5, atol=0)
    sizes = [p.numel() for p in net.parameters()]
    per_tensor = [(di @ gi).item() - (gi @ gi).item() for di, gi in zip(d.split(sizes), G[0].split(sizes))]
    scale = (G[0] @ G[0]).item()
    if granularity == "tensor":
        assert max(abs(v) for v in per_tensor) < 1e-5 * scale
    else:
        assert max(abs(v) for v in per_tensor) > 1e-3 * scale  # only the sum over tensors vanishes


def test_tensor_granularity_differs_from_global():
    net, x, y = make_problem()
    osgd.backward(exit_losses(net, x, y), trainable(net), granularity="global")
    global_direction = flat_grad(net)
    net.zero_grad(set_to_none=True)
    osgd.backward(exit_losses(net, x, y), trainable(net), granularity="tensor")
    assert not torch.allclose(flat_grad(net), global_direction, rtol=1e-3, atol=1e-6)


def test_two_tensors_hand_case_global_vs_tensor():
    # two one-entry... two-entry tensors a, b; g_1 = (a: (1, 0), b: (1, 0)), g_2 = (a: (1, 1), b: (-1, 0))
    a = nn.Parameter(torch.zeros(2))
    b = nn.Parameter(torch.zeros(2))

    def losses():
        return [a[0] + b[0], a[0] + a[1] - b[0]]

    osgd.backward(losses(), [a, b], granularity="global")
    # global: <g_2, g_1> = 0, so h_2 = g_2 and d = g_1 + g_2
    torch.testing.assert_close(torch.cat([a.grad, b.grad]), torch.tensor([2.0, 1.0, 0.0, 0.0]))
    a.grad = b.grad = None
    osgd.backward(losses(), [a, b], granularity="tensor")
    # per tensor: a: h_2 = (1, 1) - (1, 0) = (0, 1); b: g_2 = -g_1 is dependent, h_2 = 0
    torch.testing.assert_close(torch.cat([a.grad, b.grad]), torch.tensor([1.0, 1.0, 1.0, 0.0]))


@pytest.mark.parametrize("granularity", osgd.GRANULARITIES)
def test_accumulates_into_existing_grad(granularity):
    net, x, y = make_problem()
    osgd.backward(exit_losses(net, x, y), trainable(net), granularity=granularity)
    fresh = grads(net)
    preset = [torch.randn_like(p) for p in net.parameters()]
    for p, g in zip(net.parameters(), preset):
        p.grad = g.clone()
    net.unused.weight.grad = None
    osgd.backward(exit_losses(net, x, y), trainable(net), granularity=granularity)
    for (name, p), f, g in zip(net.named_parameters(), fresh, preset):
        if name.startswith("unused.weight"):
            assert p.grad is None
        elif name.startswith("unused"):
            assert torch.equal(p.grad, g)  # not reached: untouched
        else:
            assert torch.equal(p.grad, g + f)


def test_each_exit_backward_traverses_only_its_sub_graph():
    net, x, y = make_problem()
    calls = {"stage1": 0, "head3": 0}
    h = net.stages[0](x)
    h.register_hook(lambda g: calls.__setitem__("stage1", calls["stage1"] + 1))
    outs = [net.heads[0](h)]
    for stage, head in zip(net.stages[1:], net.heads[1:]):
        h = stage(h)
        outs.append(head(h))
    outs[2].register_hook(lambda g: calls.__setitem__("head3", calls["head3"] + 1))
    osgd.backward([nn.functional.cross_entropy(o, y) for o in outs], trainable(net))
    assert calls == {"stage1": 3, "head3": 1}


def test_graph_is_freed_after_backward_like_loss_backward():
    net, x, y = make_problem()
    losses = exit_losses(net, x, y)
    osgd.backward(losses, trainable(net))
    with pytest.raises(RuntimeError, match="backward through the graph a second time"):
        losses[2].backward()


@pytest.mark.parametrize("dtype", [torch.float64, torch.bfloat16])
def test_other_parameter_dtypes(dtype):
    net, x, y = make_problem(dtype=dtype)
    for granularity in osgd.GRANULARITIES:
        net.zero_grad(set_to_none=True)
        osgd.backward(exit_losses(net, x, y), trainable(net), granularity=granularity)
        for p in net.stages.parameters():
            assert p.grad.dtype == dtype and torch.isfinite(p.grad).all()


def test_zero_loss_gradient_gives_no_nan():
    net, x, y = make_problem()
    losses = exit_losses(net, x, y)
    losses[1] = losses[1] * 0.0  # exit 2 contributes a zero gradient
    osgd.backward(losses, trainable(net))
    assert all(torch.isfinite(p.grad).all() for p in net.parameters() if p.grad is not None)


def test_refuses_a_pre_summed_loss():
    net, x, y = make_problem()
    losses = exit_losses(net, x, y)
    with pytest.raises(TypeError, match=r"per-exit losses as a list.*sum\(losses\).*lost the per-exit gradients"):
        osgd.backward(sum(losses), trainable(net))
    with pytest.raises(TypeError, match="not stacked"):
        osgd.backward(torch.stack(losses), trainable(net))


def test_a_one_element_list_is_fine():
    net, x, y = make_problem()
    osgd.backward((exit_losses(net, x, y)[0],), trainable(net))
    assert net.heads[0][2].weight.grad is not None


def test_rejects_bad_arguments():
    net, x, y = make_problem()
    losses = exit_losses(net, x, y)
    params = trainable(net)
    with pytest.raises(ValueError, match="scalar"):
        osgd.backward([losses[0], torch.ones(2, requires_grad=True) * 2], params)
    with pytest.raises(ValueError, match="does not require grad"):
        osgd.backward([losses[0], losses[1].detach()], params)
    with pytest.raises(ValueError, match="empty list of losses"):
        osgd.backward([], params)
    with pytest.raises(ValueError, match=r"granularity 'layer'.*'global', 'tensor'"):
        osgd.backward(losses, params, granularity="layer")
    with pytest.raises(ValueError, match="no parameters"):
        osgd.backward(losses, [])
    with pytest.raises(ValueError, match="listed twice"):
        osgd.backward(losses, params + params[:1])
    frozen = nn.Parameter(torch.ones(2), requires_grad=False)
    with pytest.raises(ValueError, match="requires grad"):
        osgd.backward(losses, [*params, frozen])
    with pytest.raises(ValueError, match=r"\[0, 1\)"):
        osgd.backward(losses, params, eps=2.0)
    elsewhere = nn.Parameter(torch.empty(2, device="meta"))
    with pytest.raises(ValueError, match=r"one device.*granularity='tensor'"):
        osgd.backward(losses, [*params, elsewhere])
