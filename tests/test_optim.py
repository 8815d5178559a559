"""Conformance suite: every (base optimizer x metric x foreach x dtype) through the same checks."""

import copy
import itertools
import re

import pytest
import torch
from torch import nn

import gradgeo
from gradgeo import transforms as T
from gradgeo.channel._batch import Batch
from gradgeo.channel.muon import MuonWithAux
from gradgeo.channel.optim import ChannelDirected, channel_directed, layer_kinds


def muon_with_sgd(params, foreach=None, lr=0.02):
    """gradgeo's muon base: torch.optim.Muon on the hidden conv weights, SGD with momentum on the rest (the first
    conv, the head, BatchNorm)."""
    params = list(params)
    matrices = [p for p in params if p.dim() >= 2][1:-1]
    rest = [p for p in params if not any(p is m for m in matrices)]
    return MuonWithAux(matrices, torch.optim.SGD(rest, lr=0.1, momentum=0.9, foreach=foreach), lr=lr)


OPTIMIZERS = {
    "sgd": (torch.optim.SGD, {"lr": 0.2}),
    "sgd_nesterov": (torch.optim.SGD, {"lr": 0.05, "momentum": 0.9, "nesterov": True, "weight_decay": 5e-4}),
    "adam": (torch.optim.Adam, {"lr": 3e-3}),
    "adamw": (torch.optim.AdamW, {"lr": 3e-3, "weight_decay": 0.05}),
    "rmsprop": (torch.optim.RMSprop, {"lr": 1e-3}),
    "adagrad": (torch.optim.Adagrad, {"lr": 0.03}),
    "muon": (muon_with_sgd, {"lr": 0.02}),
}
METRIC_OPTIONS = {"h0": {"lam": 2.0}, "sobolev": {"lam": 0.1}, "h1": {"lam": 0.01},
                  "laplacian": {"sigma": 1.0}, "none": {}}
CONFIGS = list(itertools.product(OPTIMIZERS, METRIC_OPTIONS, [True, False], [torch.float32, torch.bfloat16]))
IDS = [f"{o}-{m}-{'foreach' if f else 'loop'}-{str(d)[6:]}" for o, m, f, d in CONFIGS]


def small_cnn(dtype: torch.dtype, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(
        # no conv bias before BatchNorm: its gradient would be pure rounding noise, which Adam
        # normalises to +-lr and which makes compiled and eager runs incomparable
        nn.Conv2d(1, 8, 3, stride=2, bias=False), nn.BatchNorm2d(8), nn.ReLU(),
        nn.Conv2d(8, 16, 3, stride=2, bias=False), nn.BatchNorm2d(16), nn.ReLU(),
        nn.Conv2d(16, 16, 3, bias=False), nn.BatchNorm2d(16), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 10),
    ).to(dtype)


def make_optimizer(model, name, metric, foreach, **extra):
    cls, kwargs = OPTIMIZERS[name]
    base = cls(model.parameters(), foreach=foreach, **kwargs)
    return ChannelDirected(base, metric=metric, foreach=foreach, **METRIC_OPTIONS[metric], **extra)


def train_steps(model, opt, data, steps, start=0):
    x, y = data
    x = x.to(next(model.parameters()).dtype)
    losses = []
    for i in range(start, start + steps):
        batch = slice((i * 64) % 512, (i * 64) % 512 + 64)
        opt.zero_grad()
        loss = nn.functional.cross_entropy(model(x[batch]).float(), y[batch])
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return losses


def full_loss(model, data):
    x, y = data
    with torch.no_grad():
        return nn.functional.cross_entropy(model(x.to(next(model.parameters()).dtype)).float(), y).item()


@pytest.mark.parametrize("name,metric,foreach,dtype", CONFIGS, ids=IDS)
def test_loss_goes_down_and_state_dict_round_trips(fashion_slice, name, metric, foreach, dtype):
    model = small_cnn(dtype)
    opt = make_optimizer(model, name, metric, foreach)
    before = full_loss(model, fashion_slice)
    train_steps(model, opt, fashion_slice, 20)

    # timm's _test_state_dict: reload into a fresh optimizer on cloned params, step both, compare
    twin = copy.deepcopy(model)
    twin_opt = make_optimizer(twin, name, metric, foreach)
    twin_opt.load_state_dict(copy.deepcopy(opt.state_dict()))
    train_steps(model, opt, fashion_slice, 20, start=20)
    train_steps(twin, twin_opt, fashion_slice, 20, start=20)
    for p, q in zip(model.parameters(), twin.parameters()):
        assert torch.equal(p, q)

    after = full_loss(model, fashion_slice)
    assert after < 0.85 * before, f"loss {before:.3f} -> {after:.3f}"


@pytest.mark.parametrize("name,foreach,dtype", list(itertools.product(OPTIMIZERS, [True, False],
                                                                      [torch.float32, torch.bfloat16])))
def test_metric_none_is_the_bare_optimizer_bit_for_bit(fashion_slice, name, foreach, dtype):
    model, bare_model = small_cnn(dtype), small_cnn(dtype)
    opt = make_optimizer(model, name, "none", foreach)
    cls, kwargs = OPTIMIZERS[name]
    bare = cls(bare_model.parameters(), foreach=foreach, **kwargs)
    train_steps(model, opt, fashion_slice, 10)
    train_steps(bare_model, bare, fashion_slice, 10)
    for p, q in zip(model.parameters(), bare_model.parameters()):
        assert torch.equal(p, q)


# the transform of each metric at the options of METRIC_OPTIONS, on a conv weight's gradient
TRANSFORMS = {"h0": lambda g: T.reweighted_h0(g, 2.0, 0), "sobolev": lambda g: T.sobolev(g, 0.1, 0),
              "h1": lambda g: T.h1(g, 0.01, 0), "laplacian": lambda g: T.laplacian_smooth(g, 1.0)}


@pytest.mark.parametrize("layout", [torch.contiguous_format, torch.channels_last])
@pytest.mark.parametrize("metric", ["h0", "sobolev", "h1", "laplacian"])
def test_step_applies_the_transform_before_the_base_step(metric, layout):
    """With plain SGD (lr 1) one step moves each conv weight by exactly minus the transformed gradient,
    whatever the memory layout of the weights and their gradients."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 12, 3), nn.ReLU(), nn.Conv2d(12, 7, 3), nn.Flatten(), nn.Linear(7 * 16, 2))
    model = model.to(memory_format=layout)
    opt = channel_directed(model, torch.optim.SGD, lr=1.0, metric=metric, **METRIC_OPTIONS[metric])
    model(torch.randn(4, 3, 8, 8).contiguous(memory_format=layout)).square().mean().backward()
    assert model[0].weight.grad.is_contiguous(memory_format=layout)
    before = [p.detach().clone() for p in model.parameters()]
    grads = [p.grad.clone() for p in model.parameters()]
    opt.step()
    reference = TRANSFORMS[metric]
    for p, b, g in zip(model.parameters(), before, grads):
        expected = reference(g) if p.dim() == 4 else g  # only conv weights by default
        torch.testing.assert_close(b - p.detach(), expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("foreach", [True, False], ids=["foreach", "loop"])
@pytest.mark.parametrize("metric", list(TRANSFORMS))
def test_expanded_and_zero_size_gradients_step_as_the_plain_transform(metric, foreach):
    """An expanded gradient (stride 0: one value or one row seen many times, which no in-place transform can
    write) is transformed as a contiguous copy; a zero-size one is left alone; the other gradients of the step
    are transformed as usual. With SGD at lr 1, each weight moves by minus the plain transform of its gradient."""
    torch.manual_seed(0)
    weights = [nn.Parameter(torch.randn(4, 3, 3, 3)) for _ in range(3)] + [nn.Parameter(torch.zeros(0, 3, 3, 3))]
    opt = ChannelDirected(torch.optim.SGD(weights, lr=1.0), metric, **METRIC_OPTIONS[metric], foreach=foreach)
    for step in range(2):  # the second step reuses the plan of the first
        weights[0].grad = torch.full((1,), 0.5 + step).expand_as(weights[0])
        weights[1].grad = torch.randn(1, 3, 3, 3).expand_as(weights[1])
        weights[2].grad = torch.randn(4, 3, 3, 3)
        weights[3].grad = torch.zeros(0, 3, 3, 3)
        before = [w.detach().clone() for w in weights]
        expected = [TRANSFORMS[metric](w.grad.contiguous()) for w in weights[:3]]
        opt.step()
        for w, b, e in zip(weights, before, expected):
            torch.testing.assert_close(b - w.detach(), e, rtol=1e-5, atol=1e-6)
        assert weights[3].shape == (0, 3, 3, 3)


def test_param_groups_are_shared_and_scheduler_drives_the_lr(fashion_slice):
    model = small_cnn(torch.float32)
    opt = make_optimizer(model, "sgd_nesterov", "sobolev", True)
    assert opt.param_groups is opt.base.param_groups and opt.state is opt.base.state
    scheduler = torch.optim.lr_scheduler.StepLR(opt, step_size=2, gamma=0.5)
    lrs = []
    for _ in range(5):
        train_steps(model, opt, fashion_slice, 1)
        scheduler.step()
        lrs.append(opt.base.param_groups[0]["lr"])
    assert lrs == pytest.approx([0.05, 0.025, 0.025, 0.0125, 0.0125])


def test_options_per_param_group():
    """A group with another lam, and a group left alone with metric='none'."""
    torch.manual_seed(0)
    convs = [nn.Conv2d(2, 6, 3), nn.Conv2d(2, 6, 3), nn.Conv2d(2, 6, 3)]
    base = torch.optim.SGD([{"params": convs[0].parameters()},
                            {"params": convs[1].parameters(), "lam": 5.0},
                            {"params": convs[2].parameters(), "metric": "none"}], lr=1.0)
    opt = ChannelDirected(base, metric="h0", lam=2.0)
    x = torch.randn(2, 2, 5, 5)
    for c in convs:
        c(x).square().sum().backward()
    grads = [c.weight.grad.clone() for c in convs]
    before = [c.weight.detach().clone() for c in convs]
    opt.step()
    for conv, b, expected in zip(convs, before,
                                    [T.reweighted_h0(grads[0], 2.0), T.reweighted_h0(grads[1], 5.0), grads[2]]):
        torch.testing.assert_close(b - conv.weight.detach(), expected)


def test_add_param_group_reaches_the_base_with_our_defaults():
    a, b = nn.Conv2d(2, 4, 3), nn.Conv2d(2, 4, 3)
    opt = ChannelDirected(torch.optim.SGD(a.parameters(), lr=0.1), metric="h1", lam=0.02)
    opt.add_param_group({"params": b.parameters(), "lr": 0.01})
    assert len(opt.base.param_groups) == 2 and opt.param_groups[1]["lam"] == 0.02
    with pytest.raises(ValueError, match="lam must be a finite number > 0"):
        opt.add_param_group({"params": nn.Conv2d(1, 2, 3).parameters(), "lam": -1.0})


def test_closure_and_hooks():
    model = small_cnn(torch.float32)
    opt = channel_directed(model, torch.optim.SGD, lr=0.1)
    calls = []
    opt.register_step_pre_hook(lambda o, a, k: calls.append("pre"))
    opt.register_step_post_hook(lambda o, a, k: calls.append("post"))
    x, y = torch.randn(8, 1, 28, 28), torch.randint(0, 10, (8,))

    def closure():
        opt.zero_grad()
        loss = nn.functional.cross_entropy(model(x), y)
        loss.backward()
        return loss

    loss = opt.step(closure)
    assert isinstance(loss, torch.Tensor) and calls == ["pre", "post"]


def test_zero_grad_delegates():
    model = small_cnn(torch.float32)
    opt = channel_directed(model, torch.optim.SGD, lr=0.1)
    model(torch.randn(2, 1, 28, 28)).sum().backward()
    opt.zero_grad(set_to_none=False)
    assert all(p.grad is not None and not p.grad.any() for p in model.parameters())
    opt.zero_grad()
    assert all(p.grad is None for p in model.parameters())


def test_parameters_without_grad_are_skipped():
    a, b = nn.Conv2d(2, 4, 3), nn.Conv2d(2, 4, 3)
    opt = ChannelDirected(torch.optim.SGD([*a.parameters(), *b.parameters()], lr=0.1))
    a(torch.randn(1, 2, 5, 5)).sum().backward()
    before = b.weight.detach().clone()
    opt.step()
    assert b.weight.grad is None and torch.equal(b.weight, before)


def test_model_constructor_knows_module_types():
    model = nn.Sequential(nn.ConvTranspose2d(4, 6, 3), nn.BatchNorm2d(6), nn.Conv2d(6, 5, 3),
                          nn.Flatten(), nn.Linear(5 * 7 * 7, 3))
    kinds = layer_kinds(model)
    assert kinds[model[0].weight] == "conv_transpose" and kinds[model[2].weight] == "conv"
    assert kinds[model[4].weight] == "linear" and kinds[model[1].weight] == "vector"
    assert kinds[model[0].bias] == "vector"


def test_conv_transpose_smoothed_along_its_own_output_axis():
    """Check against the transform applied to a transposed copy of the gradient."""
    torch.manual_seed(0)
    layer = nn.ConvTranspose2d(4, 9, 3)
    opt = channel_directed(layer, torch.optim.SGD, lr=1.0, metric="sobolev", lam=0.2)
    layer(torch.randn(2, 4, 5, 5)).square().sum().backward()
    g, before = layer.weight.grad.clone(), layer.weight.detach().clone()
    opt.step()
    expected = T.sobolev(g.transpose(0, 1).contiguous(), 0.2, dim=0).transpose(0, 1)
    torch.testing.assert_close(before - layer.weight.detach(), expected)


@pytest.mark.parametrize("apply_to,changed", [(("conv",), {"0.weight"}),
                                               (("conv", "linear"), {"0.weight", "3.weight"}),
                                               (("conv", "vector"), {"0.weight", "0.bias", "1.weight", "1.bias",
                                                                     "3.bias"})])
def test_parameter_selection(apply_to, changed):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(2, 6, 3), nn.BatchNorm2d(6), nn.Flatten(), nn.Linear(6 * 9, 5))
    opt = channel_directed(model, torch.optim.SGD, lr=1.0, metric="h0", lam=3.0, apply_to=apply_to)
    model(torch.randn(4, 2, 5, 5)).square().sum().backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters()}
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    opt.step()
    for n, p in model.named_parameters():
        moved = before[n] - p.detach()
        assert torch.allclose(moved, grads[n]) != (n in changed), n


def test_direction_in_uses_the_input_axis():
    torch.manual_seed(0)
    conv = nn.Conv2d(5, 8, 3)
    opt = channel_directed(conv, torch.optim.SGD, lr=1.0, metric="sobolev", lam=0.3, direction="in")
    conv(torch.randn(2, 5, 6, 6)).square().sum().backward()
    g, before = conv.weight.grad.clone(), conv.weight.detach().clone()
    opt.step()
    torch.testing.assert_close(before - conv.weight.detach(), T.sobolev(g, 0.3, dim=1))


def test_nonfinite_gradient_raises_with_the_name_or_skips():
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.Conv2d(4, 4, 3))
    opt = channel_directed(model, torch.optim.SGD, lr=0.1)
    model(torch.randn(1, 1, 6, 6)).sum().backward()
    model[1].weight.grad[2, 0, 1, 1] = float("nan")
    with pytest.raises(FloatingPointError, match=r"non-finite gradient \(NaN or Inf\) in 1.weight"):
        opt.step()

    opt = channel_directed(model, torch.optim.SGD, lr=0.1, nonfinite="skip")
    model.zero_grad()
    model(torch.randn(1, 1, 6, 6)).sum().backward()
    model[0].weight.grad[0, 0, 0, 0] = float("inf")
    before = [p.detach().clone() for p in model.parameters()]
    opt.step()
    assert opt.skipped_steps == 1
    assert all(torch.equal(b, p) for b, p in zip(before, model.parameters()))



@pytest.mark.parametrize("foreach", [True, False])
def test_tracked_grad_norms_are_those_of_the_transform_applied(foreach):
    """The recorded norms are the mean over steps of the norm of the selected gradients (conv weights,
    two of the same shape batched together) before and after the transform; skipped steps do not count."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 6, 3), nn.Conv2d(6, 6, 3), nn.Conv2d(6, 6, 3), nn.Flatten(),
                          nn.Linear(6 * 2 * 2, 2))
    opt = channel_directed(model, torch.optim.SGD, lr=0.01, metric="sobolev", lam=0.3, foreach=foreach,
                           nonfinite="skip")
    assert opt.pop_grad_norms() is None  # off by default: nothing recorded
    opt.track_grad_norms = True
    expected = []
    for _ in range(3):
        opt.zero_grad()
        model(torch.randn(4, 3, 8, 8)).square().mean().backward()
        convs = [m.weight.grad.clone() for m in model if isinstance(m, nn.Conv2d)]
        expected.append([torch.cat([g.flatten() for g in convs]).norm(),
                         torch.cat([T.sobolev(g, 0.3, 0).flatten() for g in convs]).norm()])
        opt.step()
    opt.zero_grad()
    model(torch.randn(4, 3, 8, 8)).square().mean().backward()
    model[0].weight.grad[0, 0, 0, 0] = float("nan")
    opt.step()
    assert opt.skipped_steps == 1
    norms = opt.pop_grad_norms()
    mean = torch.tensor(expected).mean(0)
    assert norms["grad_norm_after"] < norms["grad_norm_before"]  # sobolev damps the channel modes
    torch.testing.assert_close(torch.tensor([norms["grad_norm_before"], norms["grad_norm_after"]]), mean)
    assert opt.pop_grad_norms() is None  # popped: a new count starts

@pytest.mark.parametrize(
    "kwargs,error,match",
    [
        ({"metric": "fisher"}, ValueError, "unknown metric 'fisher'; expected one of"),
        ({"metric": "sobolev", "lam": 0}, ValueError, "lam must be a finite number > 0 for metric 'sobolev', got 0"),
        ({"metric": "h0", "lam": -2.0}, ValueError, "got -2.0"),
        ({"metric": "laplacian", "sigma": -1.0}, ValueError,
         "sigma must be a finite number >= 0 for metric 'laplacian', got -1.0"),
        ({"direction": "up"}, ValueError, "unknown direction 'up'; expected one of"),
        ({"boundary": "dirichlet"}, ValueError, "unknown boundary 'dirichlet'; expected one of"),
        ({"apply_to": ("conv", "embedding")}, ValueError, "apply_to must be a non-empty tuple drawn from"),
        ({"apply_to": ("conv", "vector"), "direction": "in"}, ValueError, "no axis for per-channel vectors"),
        ({"nonfinite": "ignore"}, ValueError, "unknown nonfinite policy 'ignore'; expected one of"),
    ],
)
def test_bad_options_are_named(kwargs, error, match):
    with pytest.raises(error, match=match):
        ChannelDirected(torch.optim.SGD(nn.Conv2d(1, 2, 3).parameters(), lr=0.1), **kwargs)


def test_wrapping_something_that_is_not_an_optimizer():
    model = nn.Conv2d(1, 2, 3)
    with pytest.raises(TypeError, match="wraps a torch.optim.Optimizer instance, got generator"):
        ChannelDirected(model.parameters())
    with pytest.raises(TypeError, match="got type"):
        ChannelDirected(torch.optim.SGD)
    with pytest.raises(TypeError, match="LBFGS re-evaluates the closure"):
        ChannelDirected(torch.optim.LBFGS(model.parameters()))


def test_sparse_and_complex_gradients_are_refused():
    emb = nn.Parameter(torch.randn(4, 3, 3))
    opt = ChannelDirected(torch.optim.SGD([emb], lr=0.1))
    emb.grad = torch.randn(4, 3, 3).to_sparse()
    with pytest.raises(ValueError, match="needs dense gradients"):
        opt.step()
    z = nn.Parameter(torch.randn(4, 3, 3, dtype=torch.complex64))
    opt = ChannelDirected(torch.optim.SGD([z], lr=0.1))
    z.grad = torch.randn(4, 3, 3, dtype=torch.complex64)
    with pytest.raises(ValueError, match="needs real gradients"):
        opt.step()


def test_exports():
    assert gradgeo.ChannelDirected is ChannelDirected and "sobolev" in gradgeo.METRICS


COMPILED = [("sgd_nesterov", "sobolev"), ("adam", "h0"), ("adamw", "h1")]


@pytest.fixture
def compile_in_process():
    """Inductor compiles in this process: its default pool of worker processes (one per core) costs more CPU time to
    start than these small graphs take to compile."""
    import torch._inductor.config

    with torch._inductor.config.patch(compile_threads=1):
        yield


@pytest.mark.parametrize("name,metric", COMPILED)
def test_compiled_step_equals_eager_step(fashion_slice, name, metric, compile_in_process):
    eager_model = small_cnn(torch.float32)
    compiled_model = copy.deepcopy(eager_model)
    eager = make_optimizer(eager_model, name, metric, True)
    compiled = make_optimizer(compiled_model, name, metric, True)
    step = torch.compile(compiled.step)
    x, y = fashion_slice
    for i in range(3):
        for model, opt, do_step in ((eager_model, eager, eager.step), (compiled_model, compiled, step)):
            opt.zero_grad()
            nn.functional.cross_entropy(model(x[i * 64:(i + 1) * 64]), y[i * 64:(i + 1) * 64]).backward()
            do_step()
    for p, q in zip(eager_model.parameters(), compiled_model.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("metric", ["h0", "sobolev", "h1"])
def test_gradients_batched_by_channel_count_match_the_transform_of_each(metric):
    """Convs of different shapes but the same output channel count are transformed in one call, side by side;
    each must still get exactly its own transform, and a NaN is blamed on its own parameter."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 40, 3), nn.Conv2d(40, 40, 3), nn.Conv2d(40, 40, 1), nn.Conv2d(40, 8, 3))
    opt = channel_directed(model, torch.optim.SGD, lr=1.0, metric=metric, **METRIC_OPTIONS[metric])
    model(torch.randn(2, 3, 12, 12)).square().mean().backward()
    before = [p.detach().clone() for p in model.parameters()]
    grads = [p.grad.clone() for p in model.parameters()]
    opt.step()
    reference = {"h0": lambda g: T.reweighted_h0(g, 2.0, 0), "sobolev": lambda g: T.sobolev(g, 0.1, 0),
                 "h1": lambda g: T.h1(g, 0.01, 0)}[metric]
    for p, b, g in zip(model.parameters(), before, grads):
        torch.testing.assert_close(b - p.detach(), reference(g) if p.dim() == 4 else g, rtol=1e-5, atol=1e-6)
    model.zero_grad()
    model(torch.randn(2, 3, 12, 12)).square().mean().backward()
    model[2].weight.grad[5, 3] = float("nan")
    with pytest.raises(FloatingPointError, match=r"non-finite gradient \(NaN or Inf\) in 2.weight"):
        opt.step()


@pytest.mark.parametrize("metric", ["h0", "sobolev", "h1"])
@pytest.mark.parametrize("boundary", ["neumann", "periodic"])
@pytest.mark.parametrize("dtype", [torch.float64, torch.bfloat16])
def test_batches_keep_matching_the_transform_of_each_over_steps_and_layout_changes(metric, boundary, dtype):
    """Batches by channel count, as one product with [M; 1/C] up to 64 channels for sobolev and h1 and 32 for h0
    (channels 2, 5, 32, 64: at and above h0's limit, at the others'), planned once and kept over steps; a gradient
    that disappears or changes layout re-plans."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 5, 3), nn.Conv2d(5, 5, 3), nn.Conv2d(5, 5, 1), nn.Conv2d(5, 2, 1),
                          nn.Conv2d(2, 2, 1), nn.Conv2d(2, 32, 1), nn.Conv2d(32, 32, 3), nn.Conv2d(32, 32, 1),
                          nn.Conv2d(32, 64, 1), nn.Conv2d(64, 64, 1)).to(dtype)
    if metric == "h0" and boundary == "periodic":
        pytest.skip("h0 has no boundary: its case is the neumann one")
    options = {**METRIC_OPTIONS[metric], **({"boundary": boundary} if metric != "h0" else {})}
    opt = channel_directed(model, torch.optim.SGD, lr=1.0, metric=metric, **options)
    transform = {"h0": lambda g: T.reweighted_h0(g, 2.0, 0),
                 "sobolev": lambda g: T.sobolev(g, 0.1, 0, boundary), "h1": lambda g: T.h1(g, 0.01, 0, boundary)}
    # bfloat16: both sides round a float32 result once
    tolerance = {"rtol": 1e-10, "atol": 1e-12} if dtype == torch.float64 else {"rtol": 0.016, "atol": 1e-4}
    for step in range(4):
        model.zero_grad()
        model(torch.randn(2, 3, 9, 9, dtype=dtype)).square().mean().backward()
        if step == 2:
            model[4].weight.grad = None  # one member fewer: a new plan
        if step == 3:  # another layout: a new plan, the result still in the gradient's own layout
            for p in model.parameters():
                if p.grad is not None and p.dim() == 4:
                    p.grad = p.grad.contiguous(memory_format=torch.channels_last)
        grads = [None if p.grad is None else p.grad.clone() for p in model.parameters()]
        opt.step()  # the transformed gradients are left in place, in the gradients' own storage
        for p, g in zip(model.parameters(), grads):
            if g is not None:
                assert p.grad.stride() == g.stride()
                expected = transform[metric](g) if p.dim() == 4 else g
                torch.testing.assert_close(p.grad.double(), expected.double(), **tolerance)


def test_the_finite_check_is_not_fooled_by_a_norm_that_overflows():
    """Untransformed gradients are checked by one L2 norm each; a finite gradient whose norm overflows float32
    (entries near 1e30) is looked at entry by entry, not skipped."""
    model = nn.Linear(4, 3)
    opt = channel_directed(model, torch.optim.SGD, lr=0.0, metric="none", nonfinite="skip")
    model.weight.grad = torch.full_like(model.weight, 1e30)
    model.bias.grad = torch.zeros_like(model.bias)
    opt.step()
    assert opt.skipped_steps == 0
    model.bias.grad[1] = float("inf")
    opt.step()
    assert opt.skipped_steps == 1


@pytest.mark.parametrize("metric, kernel, args, shape", [
    ("laplacian", T.laplacian_smooth_, (1.0,), (1009,)),  # a prime length: the FFT path, whose probe views its input
    ("laplacian", T.laplacian_smooth_, (1.0,), (1024,)),  # the block form
    ("sobolev", T.sobolev_, (0.1,), (40, 7)),  # stacked along dim 1 (not the first axis)
])
def test_a_stacked_batch_probe_holds_no_stacked_copy(metric, kernel, args, shape):
    """The probe of a stacked batch is kept until the step's one check: it must not view the batch's stacked copy
    of the gradients (which it would keep alive), and it still says which member is non-finite."""
    params = [nn.Parameter(torch.zeros(shape)) for _ in range(3)]
    for p in params:
        p.grad = torch.randn(shape)
    dim = 0 if len(shape) == 1 else 1
    batch = Batch([(p, i) for i, p in enumerate(params)], shape, dim, side_by_side=False)
    params[1].grad.view(-1)[-1] = float("nan")
    probe = batch.transform_([p.grad for p in params], metric, kernel, args, "neumann")
    assert probe.untyped_storage().nbytes() <= sum(p.grad.nbytes for p in params) // 4
    assert [bool(part.isfinite().all()) for part in batch.split(probe)] == [True, False, True]


@pytest.mark.parametrize("metric,outside,edge", [("h1", 1e36, 1e12), ("sobolev", 1e-40, 1e-12), ("h0", 1e-39, 1e-12)])
def test_lam_outside_the_finite_range_is_refused_and_the_edge_steps_finite(metric, outside, edge):
    """Where a transform would overflow float32 (h1's recurrences at huge lam, 1/lam at tiny lam) the lam is
    refused up front, naming the range; at the range's edge a step on a large real-sized gradient stays finite."""
    conv = nn.Conv2d(16, 512, 3)
    with pytest.raises(ValueError, match=re.escape(f"lam {outside:g} is outside the range where metric '{metric}'")):
        ChannelDirected(torch.optim.SGD(conv.parameters(), lr=1e-30), metric=metric, lam=outside, nonfinite="raise")
    opt = ChannelDirected(torch.optim.SGD(conv.parameters(), lr=1e-30), metric=metric, lam=edge, nonfinite="raise")
    conv.weight.grad, conv.bias.grad = torch.randn(512, 16, 3, 3) * 1e3, torch.zeros(512)
    opt.step()
    assert torch.isfinite(conv.weight).all() and opt.skipped_steps == 0
