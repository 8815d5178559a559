"""Tests for gradgeo.models.anytime: exit structure, nesting, no recomputation, measured FLOPs, budgets."""

from __future__ import annotations

import copy
import math

import pytest
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from gradgeo.models import ANYTIME_MODELS, build_model
from gradgeo.models.anytime import (
    AnytimeNetwork,
    NestedDepthNet,
    anytime_predict,
    build_anytime_model,
    exit_flops,
)

SHAPE = (2, 16, 16)  # small images keep every check fast; every model reduces them to 2x2 or more


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def small(name: str, num_exits: int = 4) -> AnytimeNetwork:
    torch.manual_seed(0)
    return build_anytime_model(name, num_classes=5, in_channels=SHAPE[0], width=0.25, num_exits=num_exits)


def images(n: int = 4) -> torch.Tensor:
    return torch.randn(n, *SHAPE, generator=torch.Generator().manual_seed(1))


@pytest.mark.parametrize("name", ANYTIME_MODELS)
@pytest.mark.parametrize("image", [(1, 28, 28), (3, 32, 32)])
def test_one_logits_tensor_per_exit(name, image):
    torch.manual_seed(0)
    model = build_anytime_model(name, num_classes=7, in_channels=image[0], width=0.25, num_exits=3)
    outputs = model(torch.zeros(2, *image))
    assert model.num_exits == 3
    assert [tuple(o.shape) for o in outputs] == [(2, 7)] * 3


@pytest.mark.parametrize("name", ANYTIME_MODELS)
def test_stages_partition_the_parameters(name):
    model = small(name)
    owned = [id(p) for k in range(model.num_exits) for p in model.stage_parameters(k)]
    assert sorted(owned) == sorted(id(p) for p in model.parameters())


@pytest.mark.parametrize("train_mode", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize("name", ANYTIME_MODELS)
def test_exit_k_depends_only_on_stages_up_to_k(name, train_mode):
    """Perturbing the parameters of stages > k leaves exits 1..k bit-identical (BatchNorm in both modes)."""
    model = small(name).train(train_mode)
    x = images()
    with torch.no_grad():
        reference = model(x)
    for k in range(model.num_exits - 1):
        perturbed = copy.deepcopy(model)
        with torch.no_grad():
            for later in range(k + 1, model.num_exits):
                for p in perturbed.stage_parameters(later):
                    p.add_(torch.randn_like(p))
            outputs = perturbed(x)
        for j in range(k + 1):
            assert torch.equal(outputs[j], reference[j]), f"exit {j + 1} changed with stages > {k + 1}"
        assert not torch.equal(outputs[k + 1], reference[k + 1])  # the perturbation does reach exit k+2


@pytest.mark.parametrize("name", ANYTIME_MODELS)
def test_exit_gradients_never_reach_later_stages(name):
    model = small(name)
    outputs = model(images())
    for k, logits in enumerate(outputs):
        later = [p for j in range(k + 1, model.num_exits) for p in model.stage_parameters(j)]
        if later:
            grads = torch.autograd.grad(logits.square().sum(), later, retain_graph=True, allow_unused=True)
            assert all(g is None for g in grads)


def count_calls(model: nn.Module) -> tuple[dict[nn.Module, int], list]:
    """Forward-call counters on every module that has no children (every layer)."""
    calls: dict[nn.Module, int] = {}
    handles = []
    for module in model.modules():
        if not list(module.children()):
            calls[module] = 0
            handles.append(module.register_forward_hook(lambda m, args, out: calls.__setitem__(m, calls[m] + 1)))
    return calls, handles


@pytest.mark.parametrize("name", ANYTIME_MODELS)
def test_anytime_pass_runs_every_layer_once_and_stops(name):
    model = small(name)
    calls, handles = count_calls(model)
    x = images()
    for stop in range(1, model.num_exits + 1):
        for module in calls:
            calls[module] = 0
        exits = model.exits(x)
        for _ in range(stop):
            next(exits)
        ran = {m for s in range(stop) for m in model.stages[s].modules()}
        for module, count in calls.items():
            assert count == (1 if module in ran else 0), (stop, module)
    for handle in handles:
        handle.remove()


def count_flops(fn) -> int:
    with FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops()


@pytest.mark.parametrize("name", ANYTIME_MODELS)
def test_anytime_inference_flops_equal_the_full_forward(name):
    model = small(name).eval()
    x = torch.randn(1, *SHAPE)
    table = exit_flops(model, SHAPE)
    with torch.no_grad():
        full = count_flops(lambda: model(x))
    anytime = count_flops(lambda: anytime_predict(model, x))
    assert table[-1] == full == anytime > 0
    assert all(a < b for a, b in zip(table, table[1:]))
    for budget in table:  # stopped after exit k: exactly the FLOPs of stages 1..k
        assert count_flops(lambda b=budget: anytime_predict(model, x, flop_budget=b, flops=table)) == budget


def test_nested_exits_double_the_compute():
    table = exit_flops(NestedDepthNet(in_channels=1), (1, 28, 28))
    ratios = [b / a for a, b in zip(table, table[1:])]
    assert all(1.8 < r < 2.3 for r in ratios), ratios
    table = exit_flops(build_anytime_model("nested_width", in_channels=1), (1, 28, 28))
    assert all(1.7 < b / a < 2.3 for a, b in zip(table, table[1:]))


def test_exit_flops_keeps_the_training_mode():
    model = small("nested_depth").train()
    exit_flops(model, SHAPE)
    assert model.training
    exit_flops(model.eval(), SHAPE)
    assert not model.training


def test_flop_budget_picks_the_last_affordable_exit():
    model = small("branched_resnet10").eval()
    x = images()
    table = exit_flops(model, SHAPE)
    assert anytime_predict(model, x, flop_budget=0).exits_run == 1  # the first exit always runs
    for k in range(1, model.num_exits + 1):
        result = anytime_predict(model, x, flop_budget=table[k - 1] + 1)  # measures the table itself
        assert (result.exits_run, result.flops, len(result.all_logits)) == (k, table[k - 1], k)
        with torch.no_grad():
            assert torch.equal(result.logits, model(x)[k - 1])


def test_time_budget():
    model = small("nested_width").eval()
    x = images()
    assert anytime_predict(model, x, time_budget=0.0).exits_run == 1
    result = anytime_predict(model, x, time_budget=math.inf)
    assert result.exits_run == model.num_exits and result.flops is None and result.seconds > 0


def test_bad_arguments_are_named():
    model = small("nested_depth")
    with pytest.raises(ValueError, match="flop_budget"):
        anytime_predict(model, images(), flop_budget=-1)
    with pytest.raises(ValueError, match="one cumulative count per exit"):
        anytime_predict(model, images(), flops=[1, 2])
    with pytest.raises(ValueError, match="nested_depth"):
        build_anytime_model("nested", in_channels=1)
    with pytest.raises(ValueError, match="build_anytime_model"):
        build_model("nested_depth")
    with pytest.raises(ValueError, match="num_exits"):
        build_anytime_model("branched_resnet10", num_exits=0)
    with pytest.raises(ValueError, match="growth"):
        build_anytime_model("nested_width", growth=1.0)
    with pytest.raises(ValueError, match=r"k must be an integer in \[0, 3\]"):
        model.stage_parameters(4)
