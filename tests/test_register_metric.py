"""A gradient transform of the user's, registered by name (gradgeo.register_metric or the gradgeo.metrics entry
point), works wherever a built-in metric does: ChannelDirected, spec strings, compare, tune and gradgeo list, with
the same option checks, nonfinite policy, state_dict and direction handling.

The references are written by hand: ``center`` subtracts ``alpha`` times the mean along the axis it is given, so
its update on a gradient whose entries are ``8 c + k`` (channel ``c``, position ``k``) is a formula in ``c`` and ``k``.
"""

from __future__ import annotations

import copy
import json
import os
import re
import subprocess
import sys
import textwrap
import warnings
from contextlib import redirect_stdout
from io import StringIO

import pytest
import torch
from torch import nn

import gradgeo
from gradgeo.channel import registry
from gradgeo.channel.factory import create_optimizer, parse_spec
from gradgeo.cli import main
from gradgeo.cli.listing import listing, render

LR = 0.5  # a power of two: the step -LR * g is exact in float32


def center(grad: torch.Tensor, dim: int, alpha: float) -> torch.Tensor:
    """the gradient less alpha times its mean along the channel axis"""
    return grad - alpha * grad.mean(dim, keepdim=True)


@pytest.fixture()
def centered() -> gradgeo.MetricOption:
    alpha = gradgeo.MetricOption(1.0, ge=0, le=1, search=(0.01, 1.0))
    gradgeo.register_metric("center", center, alpha=alpha)
    return alpha


def _conv(out_channels: int = 3) -> nn.Conv2d:
    """A conv layer with zero weights and the gradient ``8 c + k`` (c: output channel, k: position in the rest)."""
    conv = nn.Conv2d(2, out_channels, 2, bias=False)
    nn.init.zeros_(conv.weight)
    conv.weight.grad = torch.arange(out_channels * 8, dtype=torch.float32).view(out_channels, 2, 2, 2)
    return conv


# ---- the step ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("build", ["create_optimizer", "ChannelDirected"])
def test_a_registered_metric_steps_on_its_transform_of_the_gradient(centered, build):
    conv = _conv()
    if build == "create_optimizer":
        opt = create_optimizer(conv, f"sgd:lr={LR}+center:alpha=0.5")
    else:
        opt = gradgeo.ChannelDirected(torch.optim.SGD(conv.parameters(), lr=LR), "center", alpha=0.5)
    opt.step()
    # by hand: the mean over the 3 channels of 8 c + k is 8 + k, so g = 8 c + k - 0.5 (8 + k) = 8 c + 0.5 k - 4
    c = torch.arange(3.0).view(3, 1, 1, 1)
    k = torch.arange(8.0).view(1, 2, 2, 2)
    expected = 8 * c + 0.5 * k - 4
    assert torch.equal(conv.weight.grad, expected)
    assert torch.equal(conv.weight.detach(), -LR * expected)
    assert opt.param_groups[0]["metric"] == "center" and opt.param_groups[0]["alpha"] == 0.5


def test_a_registered_metric_takes_its_declared_default(centered):
    conv = _conv()
    create_optimizer(conv, f"sgd:lr={LR}+center").step()  # alpha = 1: the channel mean removed, 8 (c - 1)
    assert torch.equal(conv.weight.grad, (8 * torch.arange(3.0) - 8).view(3, 1, 1, 1).expand(3, 2, 2, 2))


# the axis each direction gives a (3, 2, 2, 2) conv weight, and the view the transform sees
DIRECTIONS = {
    "out": ((3, 2, 2, 2), 0, lambda g: g - 0.5 * g.mean(0, keepdim=True)),
    "in": ((3, 2, 2, 2), 1, lambda g: g - 0.5 * g.mean(1, keepdim=True)),
    "spatial": ((6, 4), 1, lambda g: g - 0.5 * g.mean((2, 3), keepdim=True)),
    "flat": ((24,), 0, lambda g: g - 0.5 * g.mean()),
}


@pytest.mark.parametrize("direction", list(DIRECTIONS))
@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
def test_direction_chooses_the_axis_the_transform_sees(direction, layout):
    seen = []

    def recorded(grad, dim, alpha):
        seen.append((tuple(grad.shape), dim))
        return center(grad, dim, alpha)

    gradgeo.register_metric("center", recorded, alpha=1.0)
    conv = _conv()
    grad = torch.randn(3, 2, 2, 2, generator=torch.Generator().manual_seed(0))
    conv.weight.grad = grad.to(memory_format=torch.channels_last) if layout == "channels_last" else grad.clone()
    create_optimizer(conv, f"sgd:lr={LR}+center:alpha=0.5,direction={direction}").step()
    view, dim, reference = DIRECTIONS[direction]
    assert seen == [(view, dim)]
    torch.testing.assert_close(conv.weight.grad, reference(grad))


def test_conv_transpose_weights_go_along_their_own_output_axis_and_one_channel_is_left_alone(centered):
    model = nn.Sequential(nn.ConvTranspose2d(3, 4, 2, bias=False), nn.Conv2d(4, 1, 2, bias=False))
    grads = [torch.randn(p.shape, generator=torch.Generator().manual_seed(i)) for i, p in enumerate(model.parameters())]
    for p, g in zip(model.parameters(), grads):
        p.grad = g.clone()
    create_optimizer(model, f"sgd:lr={LR}+center:alpha=0.5").step()
    # ConvTranspose weight (in, out, kh, kw): its output axis is dim 1; the Conv2d has one output channel
    torch.testing.assert_close(model[0].weight.grad, grads[0] - 0.5 * grads[0].mean(1, keepdim=True))
    assert torch.equal(model[1].weight.grad, grads[1])


def test_half_precision_gradients_are_transformed_in_float32():
    dtypes = []

    def recorded(grad, dim, alpha):
        dtypes.append(grad.dtype)
        return center(grad, dim, alpha)

    gradgeo.register_metric("center", recorded, alpha=1.0)
    conv = _conv().to(torch.bfloat16)
    grad = torch.randn(3, 2, 2, 2, generator=torch.Generator().manual_seed(1)).to(torch.bfloat16)
    conv.weight.grad = grad.clone()
    create_optimizer(conv, f"sgd:lr={LR}+center:alpha=0.5").step()
    assert dtypes == [torch.float32] and conv.weight.grad.dtype == torch.bfloat16
    assert torch.equal(conv.weight.grad, center(grad.float(), 0, 0.5).to(torch.bfloat16))


# ---- options -------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("spec,message", [
    ("sgd+center:alpha=2", "alpha must be a finite number >= 0, <= 1 for metric 'center', got 2"),
    ("sgd+center:alpha=x", "alpha must be a finite number >= 0, <= 1 for metric 'center', got 'x'"),
    ("sgd+center:lam=0.1", "unknown option 'lam' for metric 'center'"),
    ("sgd+center:direction=up", "unknown direction 'up'; expected one of"),
    ("sgd+center:apply_to=vector,direction=in", "direction 'in' has no axis for per-channel vectors"),
    ("sgd+centre", "unknown metric 'centre'; expected one of ('h0', 'sobolev', 'h1', 'laplacian', 'none', 'center')"),
])
def test_spec_options_are_checked_as_the_builtin_ones_are(centered, spec, message):
    with pytest.raises(ValueError) as error:
        parse_spec(spec)
    assert message in str(error.value) and spec in str(error.value)


def test_the_unknown_option_error_names_the_metrics_own_options(centered):
    with pytest.raises(ValueError, match=r"accepted: \('alpha', 'direction', 'apply_to'\)"):
        parse_spec("sgd+center:beta=1")
    base = torch.optim.SGD(_conv().parameters(), lr=0.1)
    with pytest.raises(ValueError, match="metric 'center' does not use option 'lam' .*; its options: alpha, "
                                         "direction, apply_to"):
        gradgeo.ChannelDirected(base, "center", lam=0.1)
    with pytest.raises(ValueError, match="metric 'h0' does not use option 'alpha'"):
        gradgeo.ChannelDirected(base, "h0", alpha=0.5)
    with pytest.raises(ValueError, match="alpha must be a finite number >= 0, <= 1 for metric 'center', got -1"):
        gradgeo.ChannelDirected(base, "center", alpha=-1)


def test_param_groups_of_a_registered_metric_are_checked_and_filled(centered):
    opt = gradgeo.ChannelDirected(torch.optim.SGD(_conv().parameters(), lr=0.1), "h0")
    with pytest.raises(ValueError, match="alpha must be a finite number >= 0, <= 1 for metric 'center', got 3"):
        opt.add_param_group({"params": [torch.zeros(3, 2, 2, 2, requires_grad=True)], "metric": "center", "alpha": 3})
    assert len(opt.param_groups) == 1  # a refused group is not registered
    extra = _conv()
    opt.add_param_group({"params": [extra.weight], "metric": "center"})  # alpha: the metric's default
    assert opt.param_groups[1]["alpha"] == 1.0
    opt.step()
    assert torch.equal(extra.weight.grad, (8 * torch.arange(3.0) - 8).view(3, 1, 1, 1).expand(3, 2, 2, 2))


def test_every_option_type_is_parsed_checked_and_passed():
    received = []

    def shaped(grad, dim, flag, order, mode, gain):
        """passes its options through"""
        received.append((flag, order, mode, gain))
        return grad

    gradgeo.register_metric("shaped", shaped, flag=True, order=gradgeo.MetricOption(2, ge=1), gain=0.5,
                            mode=gradgeo.MetricOption("a", choices=("a", "b")))
    for spec, message in [("order=2.5", "order must be an integer >= 1 for metric 'shaped', got 2.5"),
                          ("order=0", "order must be an integer >= 1"), ("flag=1", "flag must be true or false"),
                          ("mode=c", "unknown mode 'c'; expected one of ('a', 'b')")]:
        with pytest.raises(ValueError, match=re.escape(message)):
            parse_spec(f"sgd+shaped:{spec}")
    create_optimizer(_conv(), "sgd:lr=0.1+shaped:order=3,mode=b,flag=false,gain=2").step()
    create_optimizer(_conv(), "sgd:lr=0.1+shaped").step()
    assert received == [(False, 3, "b", 2), (True, 2, "a", 0.5)]


# ---- registration --------------------------------------------------------------------------------------------

def test_a_name_is_registered_once(centered):
    with pytest.raises(ValueError, match="metric 'center' is already registered .by test_register_metric.center."):
        gradgeo.register_metric("center", center, alpha=1.0)
    with pytest.raises(ValueError, match="metric 'sobolev' is already registered .built in."):
        gradgeo.register_metric("sobolev", center, alpha=1.0)
    assert registry.metric_info("center").transform is center  # the first registration stays


@pytest.mark.parametrize("name,transform,options,error,message", [
    ("Center", center, {"alpha": 1.0}, ValueError, "a metric name is lower-case letters"),
    ("a+b", center, {"alpha": 1.0}, ValueError, "got 'a\\+b'"),
    ("scaled", center, {"direction": "out"}, ValueError, "cannot have an option named 'direction'"),
    ("scaled", center, {"lr": 0.1}, ValueError, "cannot have an option named 'lr'"),
    ("scaled", center, {"alpha": "fast"}, ValueError,
     "option 'alpha' of metric 'scaled': declare the accepted values, e.g. MetricOption\\('fast', choices=\\('fast', "),
    ("scaled", center, {"alpha": [1, 2]}, ValueError, "a default is a number, true or false, a text"),
    ("scaled", center, {"alpha": gradgeo.MetricOption(0.5, gt=1)}, ValueError,
     "the default is not accepted: alpha must be a finite number > 1"),
    ("scaled", center, {"alpha": gradgeo.MetricOption(2, search=(1, 4))}, ValueError,
     "give a search range only to an option with a float default .this one's type: integer."),
    ("scaled", center, {"alpha": gradgeo.MetricOption(0.5, le=1, search=(0.1, 2.0))}, ValueError,
     "search must be \\(low, high\\) with 0 < low < high, both accepted by the option \\(<= 1\\)"),
    ("scaled", center, {"alpha": gradgeo.MetricOption(0.5, choices=("a",))}, ValueError, "choices are for text"),
    ("scaled", center, {"beta": 1.0}, TypeError, "cannot be called as transform\\(grad, dim, beta=...\\)"),
    ("scaled", center, {}, TypeError, "missing a required argument: 'alpha'"),
    ("scaled", "center", {}, TypeError, "must be callable"),
])
def test_a_registration_that_cannot_work_is_refused_before_any_step(name, transform, options, error, message):
    with pytest.raises(error, match=message):
        gradgeo.register_metric(name, transform, **options)
    assert name not in registry.metric_names()


# ---- nonfinite, a bad result, state_dict ---------------------------------------------------------------------

def poisoned(grad: torch.Tensor, dim: int) -> torch.Tensor:
    """NaN from a finite gradient"""
    return grad * torch.nan


@pytest.mark.parametrize("nonfinite", ["raise", "skip"])
def test_a_non_finite_result_is_caught_by_the_nonfinite_policy(nonfinite):
    gradgeo.register_metric("poisoned", poisoned)
    model = nn.Sequential(_conv())
    opt = create_optimizer(model, f"sgd:lr={LR}+poisoned", nonfinite=nonfinite)
    if nonfinite == "raise":
        with pytest.raises(FloatingPointError, match="non-finite gradient .NaN or Inf. in 0.weight"):
            opt.step()
    else:
        opt.step()
        assert opt.skipped_steps == 1
    assert torch.equal(model[0].weight.detach(), torch.zeros(3, 2, 2, 2))  # no step taken


def test_a_result_of_another_shape_is_named():
    gradgeo.register_metric("summed", lambda grad, dim: grad.sum(dim))
    with pytest.raises(ValueError, match=r"the transform of metric 'summed' returned shape \(2, 2, 2\) for a gradient "
                                         r"viewed as \(3, 2, 2, 2\) \(dim 0\)"):
        create_optimizer(_conv(), "sgd:lr=0.1+summed").step()


def test_state_dict_round_trip(centered):
    """timm's check: step, load the state dict into a fresh optimizer on cloned parameters, step both: equal."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(2, 4, 3), nn.ReLU(), nn.Conv2d(4, 4, 3))
    spec = "sgd:lr=0.05,momentum=0.9+center:alpha=0.3,direction=in"
    opt = create_optimizer(model, spec)
    data = [torch.randn(2, 2, 7, 7) for _ in range(6)]

    def step(m: nn.Module, o: torch.optim.Optimizer, x: torch.Tensor) -> None:
        o.zero_grad()
        m(x).square().mean().backward()
        o.step()

    for x in data[:3]:
        step(model, opt, x)
    clone = nn.Sequential(nn.Conv2d(2, 4, 3), nn.ReLU(), nn.Conv2d(4, 4, 3))
    clone.load_state_dict(model.state_dict())
    fresh = create_optimizer(clone, "sgd:lr=0.05,momentum=0.9+center:alpha=0.9")
    fresh.load_state_dict(copy.deepcopy(opt.state_dict()))  # torch would share the momentum buffers
    assert fresh.param_groups[0]["alpha"] == 0.3 and fresh.param_groups[0]["direction"] == "in"
    for x in data[3:]:
        step(model, opt, x)
        step(clone, fresh, x)
    for a, b in zip(model.parameters(), clone.parameters()):
        assert torch.equal(a, b)
    with pytest.raises(ValueError, match="uses metric 'center', this optimizer's uses 'h0'"):
        create_optimizer(clone, "sgd:lr=0.05,momentum=0.9+h0").load_state_dict(opt.state_dict())


def test_a_sharded_gradient_is_refused_rather_than_transformed_wrong(centered, tmp_path):
    dist = pytest.importorskip("torch.distributed")
    tensor = pytest.importorskip("torch.distributed.tensor")
    if dist.is_initialized():
        pytest.skip("a process group is already set up in this process")
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    try:
        mesh = tensor.init_device_mesh("cpu", (1,))
        weight = nn.Parameter(tensor.distribute_tensor(torch.zeros(4, 2, 3, 3), mesh, [tensor.Shard(0)]))
        weight.grad = tensor.distribute_tensor(torch.ones(4, 2, 3, 3), mesh, [tensor.Shard(0)])
        opt = gradgeo.ChannelDirected(torch.optim.SGD([weight], lr=0.1), "center", names={weight: "conv.weight"})
        with pytest.raises(NotImplementedError, match="metric 'center' is a registered transform of the whole "
                                                      "gradient, but the gradient of conv.weight is a DTensor"):
            opt.step()
    finally:
        dist.destroy_process_group()


# ---- gradgeo list, tune --------------------------------------------------------------------------------------

def test_gradgeo_list_shows_a_registered_metric_with_its_options(centered):
    entry = listing(["metrics"])["metrics"][-1]
    assert entry["name"] == "center" and entry["summary"] == "the gradient less alpha times its mean along the " \
                                                             "channel axis"
    assert [(o["name"], o["type"], o["default"], o["rule"], o["written"]) for o in entry["options"]] == [
        ("alpha", "number", 1.0, ">= 0, <= 1", "alpha=1.0"), ("direction", "choice", "out", "", "direction=out"),
        ("apply_to", "choices", ("conv",), "", "apply_to=conv")]
    out = StringIO()
    with redirect_stdout(out):
        assert main(["list", "metrics"]) == 0
    assert "center" in out.getvalue() and "alpha=1.0 (number >= 0, <= 1)" in out.getvalue()
    assert out.getvalue() == render(listing(["metrics"])) + "\n"


def test_tune_searches_the_ranges_a_registered_metric_declares(centered):
    from gradgeo.experiments.search_space import search_space

    space = search_space("sgd+center", 0.1)
    assert [(d.name, d.low, d.high, d.part) for d in space.dimensions] == [
        ("lr", pytest.approx(0.01), pytest.approx(1.0), "base"), ("alpha", 0.01, 1.0, "metric")]
    assert parse_spec(space.spec_with({"lr": 0.2, "alpha": 0.25})).metric_options == {"alpha": 0.25}
    assert [d.name for d in search_space("sgd+center:alpha=0.5", 0.1).dimensions] == ["lr"]
    assert search_space("sgd+center", 0.1, strength_range=(0.1, 0.9)).dimensions[1].high == 0.9
    gradgeo.register_metric("two", lambda grad, dim, a, b: grad, a=gradgeo.MetricOption(0.5, search=(0.1, 1.0)),
                            b=gradgeo.MetricOption(2.0, search=(1.0, 10.0)))
    assert [d.name for d in search_space("sgd+two", 0.1).dimensions] == ["lr", "a", "b"]
    with pytest.raises(ValueError, match="--strength-range is the range of one searched metric option, but "
                                         "'sgd\\+two' leaves a, b open"):
        search_space("sgd+two", 0.1, strength_range=(0.1, 0.9))
    with pytest.raises(ValueError, match="nothing to tune in 'sgd:lr=0.1\\+center:alpha=0.5'"):
        search_space("sgd:lr=0.1+center:alpha=0.5", 0.1)


@pytest.mark.slow
def test_compare_and_tune_run_a_registered_metric_beside_a_builtin(centered, tiny_fashion, tmp_path, capsys):
    pytest.importorskip("optuna", reason="the tune extra is not installed: pip install 'gradgeo[tune]'")
    tiny = ["--data-dir", str(tiny_fashion), "--width", "0.5", "--batch-size", "50", "--train-size", "200",
            "--epochs", "1"]
    assert main(["compare", "sgd+h0", "sgd+center:alpha=0.5", *tiny, "--quiet", "--seeds", "1", "--out",
                 str(tmp_path / "cmp")]) == 0
    summary = json.loads((tmp_path / "cmp" / "summary.json").read_text())
    assert [r["spec"] for r in summary["rows"]] == ["sgd+h0", "sgd+center:alpha=0.5"]
    assert main(["tune", "sgd+center", *tiny, "--val-size", "100", "--trials", "2", "--no-prune", "--out",
                 str(tmp_path / "tune")]) == 0
    row = json.loads((tmp_path / "tune" / "summary.json").read_text())["rows"][0]
    assert row["search_space"][1] == ["alpha", 0.01, 1.0] and row["complete"] == 2
    for trial in row["trials"]:
        assert 0.01 <= parse_spec(trial["spec"]).metric_options["alpha"] <= 1.0
    capsys.readouterr()


# ---- entry points --------------------------------------------------------------------------------------------

PLUGIN = textwrap.dedent('''
    import gradgeo


    def halved(grad, dim, factor):
        """a plugin's metric: the gradient times factor"""
        return grad * factor


    def register():
        gradgeo.register_metric("halved", halved, factor=gradgeo.MetricOption(0.5, gt=0, search=(0.1, 1.0)))


    def broken():
        raise RuntimeError("no such thing")
''')


def _install(site, name: str, entry_points: str) -> None:
    """An installed distribution as importlib.metadata finds it: a dist-info folder with its entry points."""
    info = site / f"{name}-1.0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(f"[gradgeo.metrics]\n{entry_points}\n")


@pytest.fixture()
def plugin_site(tmp_path, monkeypatch):
    site = tmp_path / "site"
    site.mkdir()
    (site / "gg_plugin.py").write_text(PLUGIN)
    _install(site, "gg_plugin", "halved = gg_plugin:register")
    monkeypatch.syspath_prepend(str(site))
    monkeypatch.setattr(registry, "_entry_points_loaded", False)
    return site


def test_an_installed_package_registers_its_metric_on_the_first_lookup(plugin_site):
    assert "halved" not in registry._REGISTRY  # not loaded at import: lazily, on the first lookup
    conv = _conv()
    create_optimizer(conv, f"sgd:lr={LR}+halved:factor=0.25").step()
    assert torch.equal(conv.weight.grad, 0.25 * torch.arange(24.0).view(3, 2, 2, 2))
    assert registry.metric_info("halved").summary == "a plugin's metric: the gradient times factor"
    assert "halved" in registry.metric_names()
    with pytest.raises(ValueError, match="metric 'halved' is already registered"):
        gradgeo.register_metric("halved", center, alpha=1.0)


def test_a_failing_entry_point_is_named(plugin_site):
    _install(plugin_site, "gg_broken", "oops = gg_plugin:broken\nmissing = gg_plugin:absent")
    with pytest.warns(RuntimeWarning) as caught:
        names = registry.metric_names()
    messages = sorted(str(w.message) for w in caught)
    assert "halved" in names  # the other packages still load
    assert len(messages) == 2
    assert messages[0].startswith("entry point 'missing' = 'gg_plugin:absent' of package 'gg_broken' (group "
                                  "'gradgeo.metrics') failed: AttributeError")
    assert messages[1].startswith("entry point 'oops' = 'gg_plugin:broken' of package 'gg_broken'")
    assert "RuntimeError: no such thing; fix or uninstall that package" in messages[1]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # loaded once: no second warning
        with pytest.raises(ValueError, match="unknown metric 'oops'.*entry point 'oops' = 'gg_plugin:broken'"):
            parse_spec("sgd+oops")


def test_gradgeo_list_in_a_fresh_process_loads_the_entry_points(plugin_site):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(plugin_site), *sys.path])}
    done = subprocess.run([sys.executable, "-m", "gradgeo.cli", "list", "metrics", "--json"], capture_output=True,
                          text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr
    entry = json.loads(done.stdout)["metrics"][-1]
    assert entry["name"] == "halved" and entry["options"][0]["written"] == "factor=0.5"
