"""Optimizer spec strings, create_optimizer, and the multi-seed statistics (against hand computations)."""

import math

import pytest
import torch
from torch import nn

import gradgeo
from gradgeo.channel.factory import create_optimizer, parse_spec
from gradgeo.channel.optim import DEFAULT_LAM, ChannelDirected
from gradgeo.experiments.stats import holm, mean_ci, minimum_detectable_effect, paired_test


def test_parse_spec_full():
    spec = parse_spec("SGD:lr=0.1,nesterov=true,momentum=0.9+sobolev:lam=0.5,boundary=periodic,apply_to=conv/linear")
    assert spec.base == "sgd" and spec.metric == "sobolev"
    assert spec.base_options == {"lr": 0.1, "nesterov": True, "momentum": 0.9}
    assert spec.metric_options == {"lam": 0.5, "boundary": "periodic", "apply_to": ("conv", "linear")}
    assert parse_spec("adam").metric == "none"
    assert parse_spec("sgd+h0:apply_to=conv").metric_options["apply_to"] == ("conv",)


@pytest.mark.parametrize("spec,match", [
    ("", "non-empty string"),
    ("sgdd", "unknown base optimizer 'sgdd'"),
    ("sgd+fisher", "unknown metric 'fisher'"),
    ("sgd:lam=1", "unknown option 'lam' for optimizer 'sgd'"),
    ("sgd+h0:lr=1", "unknown option 'lr' for metric 'h0'"),
    ("sgd+h0+h1", r"more than one '\+'"),
    ("sgd:lr", "bad option 'lr'"),
    ("sgd+h0:lam=1.5:direction=in", "separate options with ','"),
])
def test_parse_spec_errors(spec, match):
    with pytest.raises(ValueError, match=match):
        parse_spec(spec)


def model():
    return nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.Flatten(), nn.Linear(8, 2))


def test_create_optimizer_excludes_biases_and_norms_from_weight_decay():
    m = model()
    opt = create_optimizer(m, "sgd:lr=0.2", weight_decay=5e-4, momentum=0.9)
    assert isinstance(opt, torch.optim.SGD)
    decayed, plain = opt.param_groups
    assert decayed["weight_decay"] == 5e-4 and plain["weight_decay"] == 0.0
    assert {id(p) for p in decayed["params"]} == {id(m[0].weight), id(m[3].weight)}
    assert decayed["lr"] == 0.2 and decayed["momentum"] == 0.9  # the spec's lr overrides no default here


def test_create_optimizer_wraps_with_module_kinds_and_drops_foreign_defaults():
    m = nn.Sequential(nn.ConvTranspose2d(3, 8, 3))
    opt = create_optimizer(m, "adam+sobolev:lam=0.2", lr=1e-3, momentum=0.9)  # momentum: an SGD default
    assert isinstance(opt, ChannelDirected) and isinstance(opt.base, torch.optim.Adam)
    assert opt._kinds[m[0].weight] == "conv_transpose" and opt.param_groups[0]["lam"] == 0.2
    with pytest.raises(ValueError, match="unknown optimizer options \\['momentun'\\]"):
        create_optimizer(m, "sgd", lr=0.1, momentun=0.9)
    with pytest.raises(ValueError, match="no learning rate"):
        create_optimizer(m, "sgd")


class TimmStyleNet(nn.Module):
    """A model with timm's ``no_weight_decay()`` hook, a frozen tensor, and a positional embedding."""

    def __init__(self) -> None:
        super().__init__()
        self.conv, self.bn, self.head = nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.Linear(8, 2)
        self.pos_embed = nn.Parameter(torch.zeros(1, 8, 4, 4))
        self.frozen = nn.Parameter(torch.ones(8, 8, 3, 3), requires_grad=False)

    def no_weight_decay(self) -> set[str]:
        return {"pos_embed"}


def test_top_level_create_optimizer_is_timm_style():
    m = TimmStyleNet()
    opt = gradgeo.create_optimizer(m, "sgd+sobolev", lr=0.1, weight_decay=1e-4, momentum=0.9)
    assert isinstance(opt, ChannelDirected) and isinstance(opt.base, torch.optim.SGD)
    assert opt.param_groups[0]["lam"] == DEFAULT_LAM["sobolev"] and opt.param_groups[0]["momentum"] == 0.9
    decayed, plain = opt.param_groups
    assert decayed["weight_decay"] == 1e-4 and plain["weight_decay"] == 0.0
    assert {id(p) for p in decayed["params"]} == {id(m.conv.weight), id(m.head.weight)}
    assert {id(p) for p in plain["params"]} == {id(p) for p in (m.conv.bias, m.bn.weight, m.bn.bias, m.head.bias,
                                                                 m.pos_embed)}
    # a step with zero gradients moves only the decayed weights
    before = {n: p.detach().clone() for n, p in m.named_parameters()}
    for p in m.parameters():
        p.grad = torch.zeros_like(p)
    m.pos_embed.data.fill_(1.0)
    opt.step()
    assert not torch.equal(m.conv.weight, before["conv.weight"])
    assert torch.equal(m.pos_embed, torch.ones_like(m.pos_embed))
    assert torch.equal(m.bn.weight, before["bn.weight"]) and torch.equal(m.frozen, before["frozen"])

    (everything,) = gradgeo.create_optimizer(m, "sgd", lr=0.1, weight_decay=1e-4, exclude_from_decay=False).param_groups
    assert len(everything["params"]) == 7 and everything["weight_decay"] == 1e-4  # the frozen tensor stays out


def test_create_optimizer_takes_an_iterable_of_parameters():
    m = TimmStyleNet()
    opt = gradgeo.create_optimizer(m.parameters(), "adamw:weight_decay=0.05+h1:lam=0.01,boundary=periodic", lr=1e-3)
    assert isinstance(opt.base, torch.optim.AdamW) and opt.param_groups[0]["boundary"] == "periodic"
    assert [g["weight_decay"] for g in opt.param_groups] == [0.05, 0.0]  # the spec's weight decay wins
    assert len(opt.param_groups[0]["params"]) == 3  # conv, head and pos_embed weights: no names, no hook
    with pytest.raises(TypeError, match="param group dicts"):
        create_optimizer([{"params": list(m.parameters())}], "sgd", lr=0.1)
    with pytest.raises(TypeError, match="wrap it in a list"):
        create_optimizer(m.conv.weight, "sgd", lr=0.1)


def test_mean_ci_by_hand():
    values = [0.90, 0.92, 0.91, 0.93, 0.89]
    s = mean_ci(values)
    sd = math.sqrt(sum((v - 0.91) ** 2 for v in values) / 4)
    assert s.mean == pytest.approx(0.91) and s.n == 5
    assert s.half_width == pytest.approx(2.7764451 * sd / math.sqrt(5), rel=1e-6)  # t(0.975, df=4)
    assert math.isnan(mean_ci([0.5]).half_width)
    assert s.format() == f"91.00 ± {s.half_width * 100:.2f}"


def test_paired_test_by_hand():
    a, b = [0.91, 0.92, 0.90, 0.94], [0.90, 0.90, 0.90, 0.91]
    d = [x - y for x, y in zip(a, b)]
    mean = sum(d) / 4
    sd = math.sqrt(sum((x - mean) ** 2 for x in d) / 3)
    t = mean / (sd / 2)
    test = paired_test(a, b)
    assert test.difference.mean == pytest.approx(mean)
    # two-sided p of t with 3 degrees of freedom, from the closed-form CDF of Student's t (df = 3)
    x = t / math.sqrt(3)
    cdf_tail = 0.5 - (math.atan(x) + x / (1 + x * x)) / math.pi
    assert test.p_value == pytest.approx(2 * cdf_tail, rel=1e-6)
    assert paired_test([0.5, 0.6], [0.5, 0.6]).p_value == 1.0
    with pytest.raises(ValueError, match="equally many"):
        paired_test([0.1], [0.1, 0.2])


def test_holm_by_hand():
    # sorted: 0.01 x 3 = 0.03; 0.03 x 2 = 0.06; 0.04 x 1 = 0.04, raised to 0.06 (monotone step-down)
    assert holm([0.04, 0.01, 0.03]) == pytest.approx([0.06, 0.03, 0.06])
    assert holm([0.5, 0.4]) == pytest.approx([0.8, 0.8])  # 0.4 x 2 = 0.8; 0.5 x 1 = 0.5, raised to 0.8
    assert holm([0.3, 0.6]) == pytest.approx([0.6, 0.6])  # 0.3 x 2; 0.6 x 1; capped at 1 where it would pass it
    assert holm([0.7, 0.6]) == pytest.approx([1.0, 1.0])
    adjusted = holm([math.nan, 0.02, 0.3])  # nan stays nan and is not counted: m = 2
    assert math.isnan(adjusted[0]) and adjusted[1:] == pytest.approx([0.04, 0.3])
    assert holm([]) == []


def test_classify_summary_adjusts_several_specs_by_holm_and_reports_train_acc():
    from gradgeo.experiments.layouts import _build_classify, _table_classify
    from gradgeo.tasks.classify import CLASSIFY

    def runs(tests, train):
        return [{"history": [{"test_acc": t, "train_acc": train}]} for t in tests]

    results = {"sgd": runs([0.50, 0.52, 0.51], 0.90), "sgd+h0": runs([0.53, 0.56, 0.53], 0.80),
               "sgd+h1": runs([0.51, 0.52, 0.53], 0.85)}
    summary = _build_classify(CLASSIFY, list(results), [0, 1, 2], results)
    p = [r["vs_baseline"]["p_value"] for r in summary["rows"][1:]]
    small, large = sorted(p)  # two specs against one baseline: the smaller p doubled, the larger at least that
    holms = [r["vs_baseline"]["p_holm"] for r in summary["rows"][1:]]
    assert sorted(holms) == pytest.approx([min(1.0, 2 * small), max(min(1.0, 2 * small), large)])
    assert summary["rows"][1]["final_train_acc"]["mean"] == pytest.approx(0.80)
    table = _table_classify(summary)
    assert "p Holm" in table and "final train acc: sgd 90.00" in table


@pytest.mark.parametrize("n,sd", [(3, 0.4), (5, 1.0), (10, 0.25)])
def test_minimum_detectable_effect_has_its_power_in_simulation(n, sd):
    """At the MDE a simulated paired t-test (normal differences with that mean and sd) rejects at p < 0.05 in
    80% of 40,000 trials (Monte Carlo standard error 0.2 points); at half the MDE far less often."""
    from scipy import stats

    effect = minimum_detectable_effect(sd, n)
    generator = torch.Generator().manual_seed(n)
    for shift, low, high in ((effect, 0.79, 0.81), (effect / 2, 0.0, 0.45)):
        draws = (torch.randn(40_000, n, generator=generator, dtype=torch.float64) * sd + shift).numpy()
        p_values = stats.ttest_1samp(draws, 0.0, axis=1).pvalue
        assert low < (p_values < 0.05).mean() < high, (shift, (p_values < 0.05).mean())
    # many pairs: the normal approximation (z_0.975 + z_0.8) sd / sqrt(n)
    assert minimum_detectable_effect(1.0, 2000) * math.sqrt(2000) == pytest.approx(1.95996 + 0.84162, rel=2e-3)
    assert math.isnan(minimum_detectable_effect(1.0, 1)) and minimum_detectable_effect(0.0, 5) == 0.0


def test_classify_summary_reports_best_val_not_best_test_mde_and_time_to_target():
    """Best accuracy is read on the validation split only; time to target is the first epoch whose validation
    accuracy reaches the baseline's mean final one, with the training time summed up to it."""
    from gradgeo.experiments.layouts import _build_classify, _csv_classify, _table_classify
    from gradgeo.tasks.classify import CLASSIFY

    def run(vals, test):
        return {"history": [{"val_acc": v, "test_acc": test, "time": 60.0} for v in vals]}

    results = {"sgd": [run([0.5, 0.7, 0.8], 0.9), run([0.5, 0.75, 0.7], 0.8)],  # target (0.8 + 0.7) / 2 = 0.75
               "muon": [run([0.6, 0.76, 0.9], 0.95), run([0.74, 0.8, 0.85], 0.85)]}
    summary = _build_classify(CLASSIFY, ["sgd", "muon"], [0, 1], results)
    sgd, muon = summary["rows"]
    assert "best_test_acc" not in sgd and sgd["best_val_acc"]["mean"] == pytest.approx(0.775)
    assert sgd["time_to_target"] == {"target": pytest.approx(0.75), "reached": 2, "epochs_per_seed": [3, 2],
                                     "epochs": 2.5, "seconds": 150.0}
    assert muon["time_to_target"]["epochs_per_seed"] == [2, 2] and muon["time_to_target"]["seconds"] == 120.0
    differences = [0.05, 0.05]  # zero spread: the MDE is 0
    assert muon["vs_baseline"]["difference"]["mean"] == pytest.approx(sum(differences) / 2)
    assert muon["vs_baseline"]["mde"] == 0.0
    table = _table_classify(summary)
    assert "best val acc" in table and "best test acc" not in table and "MDE" in table
    assert "time to the baseline's final val acc (75.00%): sgd 2.5 epochs, 2.5 min (2/2 seeds)" in table
    assert _csv_classify(summary)[2][-3:] == [2.0, 120.0, 2]
