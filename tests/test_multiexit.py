"""Tests for gradgeo.multiexit: the multi-exit training strategies and their registry."""

from __future__ import annotations

import copy

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from _multiexit_toys import BranchedCNN, exit_losses
from gradgeo import multiexit, osgd

ALL_CONFIGS = [
    ("sum", {}),
    ("sdn", {}),
    ("adaloss", {}),
    ("pcgrad", {}),
    ("osgd", {"granularity": "global"}),
    ("osgd", {"granularity": "tensor"}),
]
CONFIG_IDS = ["sum", "sdn", "adaloss", "pcgrad", "osgd-global", "osgd-tensor"]


@pytest.fixture(autouse=True)
def one_thread():
    """The toy tensors are tiny: extra intra-op threads only add overhead, and on a loaded shared CPU their
    contention made the training test up to 50x slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def make_problem(seed: int = 0):
    """A learnable toy task: the label is the image quadrant with the largest mean."""
    torch.manual_seed(seed)
    net = BranchedCNN(classes=4, width=6, pool=2)
    x = torch.randn(64, 1, 6, 6)
    quadrant_means = nn.functional.adaptive_avg_pool2d(x, 2).flatten(1)
    return net, x, quadrant_means.argmax(1)


def flat_grad(params: list[torch.Tensor]) -> torch.Tensor:
    return torch.cat([p.grad.flatten() for p in params])


def linear_losses(x: torch.Tensor, rows: list[list[float]]) -> list[torch.Tensor]:
    """L_k = <c_k, x>: exit k's gradient is exactly c_k."""
    return [torch.tensor(c, dtype=x.dtype) @ x for c in rows]


# ---------------------------------------------------------------------------------------------- registry


def test_registry_names():
    assert set(multiexit.STRATEGIES) == {"sum", "sdn", "adaloss", "pcgrad", "osgd"}
    for name, cls in multiexit.STRATEGIES.items():
        strategy = multiexit.make_strategy(name, 3)
        assert isinstance(strategy, cls) and isinstance(strategy, multiexit.MultiExitStrategy)
        assert strategy.num_exits == 3


def test_unknown_strategy_lists_the_known_names():
    with pytest.raises(ValueError, match=r"'sgd'.*'adaloss', 'osgd', 'pcgrad', 'sdn', 'sum'"):
        multiexit.make_strategy("sgd", 3)


@pytest.mark.parametrize(("name", "kwargs"), ALL_CONFIGS, ids=CONFIG_IDS)
def test_every_strategy_reduces_the_loss_of_every_exit(name, kwargs):
    net, x, y = make_problem()
    strategy = multiexit.make_strategy(name, 3, **kwargs)
    optimizer = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9)
    with torch.no_grad():
        before = torch.stack(exit_losses(net, x, y))
    steps = 80
    for step in range(steps):
        optimizer.zero_grad(set_to_none=True)
        strategy.backward(exit_losses(net, x, y), net.parameters(), progress=step / steps)
        optimizer.step()
    with torch.no_grad():
        after = torch.stack(exit_losses(net, x, y))
    assert (after < 0.8 * before).all(), f"{name}: losses {before.tolist()} -> {after.tolist()}"


@pytest.mark.parametrize(("name", "kwargs"), ALL_CONFIGS, ids=CONFIG_IDS)
def test_common_interface_checks(name, kwargs):
    net, x, y = make_problem()
    strategy = multiexit.make_strategy(name, 3, **kwargs)
    losses = exit_losses(net, x, y)
    with pytest.raises(ValueError, match=r"expected 3 losses \(one per exit"):
        strategy.backward(losses[:2], net.parameters(), progress=0.0)
    with pytest.raises(TypeError, match="per-exit losses as a list"):
        strategy.backward(sum(losses), net.parameters(), progress=0.0)
    for bad in (-0.1, 1.5, float("nan")):
        with pytest.raises(ValueError, match=r"progress .* in \[0, 1\]"):
            strategy.backward(losses, net.parameters(), progress=bad)
    with pytest.raises(ValueError, match="no parameters"):
        strategy.backward(losses, [], progress=0.0)
    with pytest.raises(ValueError, match="num_exits"):
        multiexit.make_strategy(name, 0, **kwargs)


@pytest.mark.parametrize(("name", "kwargs"), ALL_CONFIGS, ids=CONFIG_IDS)
def test_every_strategy_accumulates_into_grad(name, kwargs):
    net, x, y = make_problem()
    params = list(net.parameters())
    strategy = multiexit.make_strategy(name, 3, **kwargs)
    strategy.backward(exit_losses(net, x, y), params, progress=0.5)
    once = flat_grad(params)
    fresh = multiexit.make_strategy(name, 3, **kwargs)
    fresh.backward(exit_losses(net, x, y), params, progress=0.5)
    torch.testing.assert_close(flat_grad(params), 2 * once)


def test_stateless_strategies():
    for name in ("sum", "sdn", "osgd"):
        strategy = multiexit.make_strategy(name, 2)
        assert strategy.state_dict() == {}
        strategy.load_state_dict({})
        with pytest.raises(ValueError, match="stateless"):
            strategy.load_state_dict({"averages": None})


# ------------------------------------------------------------------------------------------ sum and osgd


def test_sum_equals_backward_of_the_summed_loss():
    net, x, y = make_problem()
    twin = copy.deepcopy(net)
    multiexit.make_strategy("sum", 3).backward(exit_losses(net, x, y), net.parameters())
    sum(exit_losses(twin, x, y)).backward()
    for p, q in zip(net.parameters(), twin.parameters()):
        torch.testing.assert_close(p.grad, q.grad)


def test_only_the_given_params_receive_gradients():
    net, x, y = make_problem()
    multiexit.make_strategy("sum", 3).backward(exit_losses(net, x, y), net.heads.parameters())
    assert all(p.grad is None for p in net.stages.parameters())
    assert all(p.grad is not None for p in net.heads.parameters())


@pytest.mark.parametrize("granularity", osgd.GRANULARITIES)
def test_osgd_strategy_is_osgd_backward(granularity):
    net, x, y = make_problem()
    twin = copy.deepcopy(net)
    strategy = multiexit.make_strategy("osgd", 3, granularity=granularity)
    strategy.backward(exit_losses(net, x, y), net.parameters())
    osgd.backward(exit_losses(twin, x, y), twin.parameters(), granularity=granularity)
    for p, q in zip(net.parameters(), twin.parameters()):
        assert torch.equal(p.grad, q.grad)
    with pytest.raises(ValueError, match="granularity"):
        multiexit.make_strategy("osgd", 3, granularity="layer")


# ------------------------------------------------------------------------------------------------- SDN


def test_sdn_weights_follow_the_linear_ramp():
    sdn = multiexit.make_strategy("sdn", 4)  # default depths q = (1/4, 2/4, 3/4), final exit 1
    q = [0.25, 0.5, 0.75]
    assert sdn.weights(0.0) == pytest.approx([0.01, 0.01, 0.01, 1.0])
    assert sdn.weights(0.5) == pytest.approx([0.01 + 0.5 * v for v in q] + [1.0])
    assert sdn.weights(1.0) == pytest.approx([*q, 1.0])
    # the ramp is clipped at q_k: a tiny q reaches its final weight before the end
    custom = multiexit.SDN(3, relative_depths=[0.015, 0.9], start=0.01)
    assert custom.weights(0.5) == pytest.approx([0.015, 0.46, 1.0])


def test_sdn_backward_uses_the_weights():
    x = nn.Parameter(torch.zeros(3))
    rows = [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [1.0, 1.0, 1.0]]
    sdn = multiexit.SDN(3, relative_depths=[0.2, 0.6])
    sdn.backward(linear_losses(x, rows), [x], progress=0.5)
    w1, w2, w3 = 0.01 + 0.5 * 0.2, 0.01 + 0.5 * 0.6, 1.0
    torch.testing.assert_close(x.grad, torch.tensor([w1 + w3, w2 + w3, w3]))


def test_sdn_needs_progress_and_valid_depths():
    x = nn.Parameter(torch.zeros(3))
    with pytest.raises(ValueError, match=r"progress=step / total_steps"):
        multiexit.SDN(2).backward(linear_losses(x, [[1, 0, 0], [0, 1, 0]]), [x])
    with pytest.raises(ValueError, match=r"progress .* in \[0, 1\]"):
        multiexit.SDN(2).weights(1.5)
    with pytest.raises(ValueError, match="one value per internal exit"):
        multiexit.SDN(3, relative_depths=[0.5])
    with pytest.raises(ValueError, match="non-decreasing"):
        multiexit.SDN(3, relative_depths=[0.6, 0.3])
    with pytest.raises(ValueError, match="start"):
        multiexit.SDN(3, start=-0.1)


# --------------------------------------------------------------------------------------------- ADALOSS


def test_adaloss_weights_are_inverse_running_average_losses():
    x = nn.Parameter(torch.ones(3))
    ada = multiexit.AdaLoss(3, decay=0.5)
    assert ada.weights() is None
    rows = [[1.0, 0.0, 0.0], [0.0, 2.0, 0.0], [0.0, 0.0, 4.0]]  # losses (1, 2, 4), gradients c_k
    ada.backward(linear_losses(x, rows), [x])
    inverse = torch.tensor([1.0, 0.5, 0.25])
    weights = 3 * inverse / inverse.sum()
    torch.testing.assert_close(ada.weights(), weights)
    torch.testing.assert_close(x.grad, weights * torch.tensor([1.0, 2.0, 4.0]))
    # second step with losses (3, 2, 4): averages 0.5 * (1, 2, 4) + 0.5 * (3, 2, 4) = (2, 2, 4)
    x.grad = None
    ada.backward(linear_losses(x, [[3.0, 0.0, 0.0], [0.0, 2.0, 0.0], [0.0, 0.0, 4.0]]), [x])
    inverse = torch.tensor([0.5, 0.5, 0.25])
    torch.testing.assert_close(ada.weights(), 3 * inverse / inverse.sum())
    assert ada.weights().sum().item() == pytest.approx(3.0)


def test_adaloss_state_round_trips():
    net, x, y = make_problem()
    ada = multiexit.AdaLoss(3)
    for _ in range(3):
        ada.backward(exit_losses(net, x, y), net.parameters())
    state = ada.state_dict()
    restored = multiexit.AdaLoss(3)
    restored.load_state_dict(state)
    torch.testing.assert_close(restored.weights(), ada.weights())
    # both continue identically; the saved state is a copy that stepping does not change
    net.zero_grad(set_to_none=True)
    net2 = copy.deepcopy(net)
    ada.backward(exit_losses(net, x * 2, y), net.parameters())
    restored.backward(exit_losses(net2, x * 2, y), net2.parameters())
    for p, q in zip(net.parameters(), net2.parameters()):
        torch.testing.assert_close(p.grad, q.grad)
    assert not torch.equal(state["averages"], ada.state_dict()["averages"])
    fresh = multiexit.AdaLoss(3)
    fresh.load_state_dict(multiexit.AdaLoss(3).state_dict())  # an unused strategy's state
    assert fresh.weights() is None


def test_adaloss_rejects_bad_state_and_options():
    with pytest.raises(ValueError, match="expected"):
        multiexit.AdaLoss(3).load_state_dict({"averages": torch.ones(2)})
    with pytest.raises(ValueError, match="'averages'"):
        multiexit.AdaLoss(3).load_state_dict({"ema": torch.ones(3)})
    with pytest.raises(ValueError, match="decay"):
        multiexit.AdaLoss(3, decay=1.0)
    with pytest.raises(ValueError, match="min_loss"):
        multiexit.AdaLoss(3, min_loss=0.0)


def test_adaloss_zero_loss_gives_finite_weights():
    x = nn.Parameter(torch.ones(2))
    ada = multiexit.AdaLoss(2)
    ada.backward([x.sum() * 0.0, x.sum()], [x])
    assert torch.isfinite(ada.weights()).all() and torch.isfinite(x.grad).all()


# ---------------------------------------------------------------------------------------------- PCGrad


def test_pcgrad_hand_made_conflict():
    x = nn.Parameter(torch.zeros(2))
    # g_1 = (1, 0), g_2 = (-1, 1): <g_1, g_2> = -1 < 0
    # g_1^pc = g_1 - (-1 / 2) g_2 = (0.5, 0.5);  g_2^pc = g_2 - (-1 / 1) g_1 = (0, 1)
    multiexit.PCGrad(2).backward(linear_losses(x, [[1.0, 0.0], [-1.0, 1.0]]), [x])
    torch.testing.assert_close(x.grad, torch.tensor([0.5, 1.5]))


def test_pcgrad_without_conflict_is_the_plain_sum():
    x = nn.Parameter(torch.zeros(3))
    rows = [[1.0, 0.0, 1.0], [1.0, 2.0, 0.0], [0.0, 1.0, 1.0]]  # pairwise inner products >= 0
    multiexit.PCGrad(3).backward(linear_losses(x, rows), [x])
    torch.testing.assert_close(x.grad, torch.tensor([2.0, 3.0, 2.0]))


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), n=st.integers(2, 12))
def test_pcgrad_two_exits_removes_every_conflict(seed, n):
    # with two exits the PCGrad direction conflicts with neither gradient (Cauchy-Schwarz)
    gen = torch.Generator().manual_seed(seed)
    G = torch.randn(2, n, generator=gen, dtype=torch.float64)
    x = nn.Parameter(torch.zeros(n, dtype=torch.float64))
    multiexit.PCGrad(2).backward(linear_losses(x, G.tolist()), [x])
    scale = G.norm(dim=1).prod().item()
    assert (G @ x.grad >= -1e-12 * scale).all()


def test_pcgrad_matches_the_sequential_algorithm_and_round_trips_its_generator():
    gen = torch.Generator().manual_seed(3)
    G = torch.randn(4, 6, generator=gen, dtype=torch.float64)
    G[1] = -0.7 * G[0] + 0.1 * G[1]  # make conflicts certain
    x = nn.Parameter(torch.zeros(6, dtype=torch.float64))
    pcgrad = multiexit.PCGrad(4, seed=11)
    pcgrad.backward(linear_losses(x, G.tolist()), [x])
    # the same draws, replayed: the projection orders of the reference loop below
    replay = torch.Generator().manual_seed(11)
    expected = torch.zeros(6, dtype=torch.float64)
    for i in range(4):
        others = [j for j in range(4) if j != i]
        g = G[i].clone()
        for r in torch.randperm(3, generator=replay).tolist():
            dot = g @ G[others[r]]
            if dot < 0:
                g -= dot / (G[others[r]] @ G[others[r]]) * G[others[r]]
        expected += g
    torch.testing.assert_close(x.grad, expected)

    state = pcgrad.state_dict()
    restored = multiexit.PCGrad(4, seed=0)
    restored.load_state_dict(state)
    grads = []
    for strategy in (pcgrad, restored):
        x.grad = None
        strategy.backward(linear_losses(x, G.tolist()), [x])
        grads.append(x.grad.clone())
    assert torch.equal(grads[0], grads[1])
    with pytest.raises(ValueError, match="'generator'"):
        restored.load_state_dict({})


def test_pcgrad_zero_gradient_gives_no_nan():
    x = nn.Parameter(torch.zeros(2))
    multiexit.PCGrad(3).backward(linear_losses(x, [[1.0, 0.0], [0.0, 0.0], [-1.0, 1.0]]), [x])
    assert torch.isfinite(x.grad).all()
    torch.testing.assert_close(x.grad, torch.tensor([0.5, 1.5]))
