"""Tests for gradgeo.anytime training: every strategy through train_anytime, resuming, one forward pass per
step, OSGD under ChannelDirected, the CLI end to end, and a real short run on Fashion-MNIST."""

from __future__ import annotations

import copy
import dataclasses
import json
import math

import pytest
import torch
from torch import nn

from gradgeo import osgd, transforms
from gradgeo.channel.factory import create_optimizer
from gradgeo.cli import main
from gradgeo.models import build_anytime_model
from gradgeo.multiexit.strategies import make_strategy
from gradgeo.tasks.anytime import AnytimeConfig, make_strategy_from_spec, parse_strategy, train_anytime
from gradgeo.training.engine import load_splits

METHODS = ["sum", "sdn", "adaloss", "pcgrad", "osgd", "osgd:granularity=tensor"]


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def tiny_config(folder, **changes) -> AnytimeConfig:
    base = AnytimeConfig(data_dir=str(folder), model="branched_resnet10", width=0.25, epochs=1, batch_size=50,
                         val_size=100)
    return dataclasses.replace(base, **changes)


def without_time(history):
    return [{k: v for k, v in row.items() if k != "time"} for row in history]


@pytest.mark.parametrize("method", METHODS)
def test_every_strategy_trains(tiny_fashion, tmp_path, method):
    history = train_anytime(tiny_config(tiny_fashion, strategy=method), tmp_path, log=None)
    row = history[-1]
    for key in ("train_exit_loss", "train_exit_acc", "val_exit_acc", "test_exit_loss", "test_exit_acc"):
        assert len(row[key]) == 4 and all(math.isfinite(v) for v in row[key])
    assert row["test_acc"] == row["test_exit_acc"][-1] and row["train_loss"] == row["train_exit_loss"][-1]
    result = json.loads((tmp_path / "result.json").read_text())
    assert len(result["exit_flops"]) == 4 and result["exit_flops"] == sorted(result["exit_flops"])
    assert [r["budget"] for r in result["early_exit"]][::8] == [result["exit_flops"][0], result["exit_flops"][-1]]
    assert [json.loads(line)["epoch"] for line in (tmp_path / "metrics.jsonl").read_text().splitlines()] == [1]


@pytest.mark.parametrize("method,fast", [("adaloss", False), ("pcgrad", False), ("osgd", True)],
                         ids=["adaloss", "pcgrad", "osgd-bf16-channels_last"])  # the strategies with state, and OSGD
def test_resume_reaches_the_identical_result(tiny_fashion, tmp_path, method, fast):
    # 3 steps an epoch: enough for the strategies' state (and the optimizer's) to matter on resume
    config = tiny_config(tiny_fashion, strategy=method, epochs=2, train_size=150, channels_last=fast,
                         precision="bf16" if fast else "fp32")
    straight = train_anytime(config, tmp_path / "straight", log=None)
    train_anytime(config, tmp_path / "resumed", log=None, stop_after=1)
    assert not (tmp_path / "resumed" / "result.json").exists()
    resumed = train_anytime(config, tmp_path / "resumed", log=None, resume=True)
    assert without_time(resumed) == without_time(straight)


def test_one_forward_pass_per_training_step(tiny_fashion, monkeypatch):
    """Per-exit gradients come from the graph of one forward pass: the first stage runs once per batch."""
    import gradgeo.tasks.anytime.training as training

    calls = []

    def counting_build(*args, **kwargs):
        model = build_anytime_model(*args, **kwargs)
        model.stages[0].register_forward_hook(lambda module, inputs, output: calls.append(len(inputs[0])))
        return model

    monkeypatch.setattr(training, "build_anytime_model", counting_build)
    config = tiny_config(tiny_fashion, strategy="osgd", epochs=2)
    train_anytime(config, None, log=None)
    # one FLOP-count pass of one image, then per epoch 6 training batches of 50 and one pass over the 100
    # validation and 300 test images (in evaluation batches of 64 on CPU)
    evaluation = [64, 36, 64, 64, 64, 64, 44]
    assert calls == [1] + ([50] * 6 + evaluation) * 2


def test_osgd_direction_is_shaped_by_the_channel_metric_then_stepped():
    """OSGD writes sum_k h_k into p.grad, ChannelDirected transforms it, the base optimizer steps."""
    torch.manual_seed(0)
    model = build_anytime_model("branched_resnet10", num_classes=3, in_channels=1, width=0.25, num_exits=3)
    x, y = torch.randn(8, 1, 16, 16), torch.randint(0, 3, (8,))
    reference = copy.deepcopy(model)
    osgd.backward([nn.functional.cross_entropy(out, y) for out in reference(x)], reference.parameters())
    expected, plain = {}, {}
    for name, p in reference.named_parameters():
        shaped = transforms.sobolev(p.grad, 0.1) if p.dim() == 4 else p.grad
        expected[name], plain[name] = p.detach() - 0.1 * shaped, p.detach() - 0.1 * p.grad

    optimizer = create_optimizer(model, "sgd:momentum=0+sobolev:lam=0.1", lr=0.1, weight_decay=0.0)
    optimizer.zero_grad()
    make_strategy("osgd", 3).backward([nn.functional.cross_entropy(out, y) for out in model(x)], model.parameters())
    optimizer.step()
    for name, p in model.named_parameters():
        torch.testing.assert_close(p.detach(), expected[name], rtol=0, atol=1e-6)
    conv = "stages.0.body.0.weight"
    assert not torch.allclose(expected[conv], plain[conv])  # the metric did change the OSGD direction


def test_strategy_specs():
    assert parse_strategy("OSGD:granularity=tensor") == ("osgd", {"granularity": "tensor"})
    sdn = make_strategy_from_spec("sdn", [10, 30, 40, 80])
    assert sdn.relative_depths == [0.125, 0.375, 0.5]  # measured FLOPs fractions
    assert make_strategy_from_spec("sdn:relative_depths=0.5/0.6/0.7", [1, 2, 3, 4]).relative_depths == [0.5, 0.6, 0.7]
    with pytest.raises(ValueError, match="known strategies"):
        parse_strategy("osgd2")
    with pytest.raises(ValueError, match="unknown option 'lam' for strategy 'osgd'"):
        parse_strategy("osgd:lam=1")
    with pytest.raises(ValueError, match="known anytime models"):
        AnytimeConfig(model="resnet20").validate()
    with pytest.raises(ValueError, match="num_exits"):
        AnytimeConfig(num_exits=0).validate()


def test_cli_train_and_compare_end_to_end(tiny_fashion, tmp_path, capsys):
    common = ["--data-dir", str(tiny_fashion), "--model", "nested_depth", "--width", "0.25", "--epochs", "1",
              "--batch-size", "50", "--val-size", "100", "--num-exits", "3"]
    assert main(["anytime", "train", *common, "--strategy", "pcgrad", "--out", str(tmp_path / "one")]) == 0
    assert "test acc % at exits 1..3" in capsys.readouterr().out
    assert len(json.loads((tmp_path / "one" / "result.json").read_text())["exit_flops"]) == 3

    compare = ["anytime", "compare", "sum", "osgd:granularity=tensor", *common, "--seeds", "2", "--quiet",
               "--out", str(tmp_path / "cmp")]
    assert main(compare) == 0
    out = capsys.readouterr().out
    assert "early exit, thresholds chosen on validation" in out and "exit 3" in out
    summary = json.loads((tmp_path / "cmp" / "summary.json").read_text())
    assert [r["method"] for r in summary["rows"]] == ["sum", "osgd:granularity=tensor"]
    assert len(summary["rows"][1]["vs_baseline"]) == 3 and len(summary["rows"][0]["early_exit"]) == 9
    for name in ("summary.csv", "accuracy_vs_flops.png", "curves.png"):
        assert (tmp_path / "cmp" / name).stat().st_size > 0
    assert main(compare) == 0  # resumable: nothing left to train
    assert "4 runs finished, 0 to go" in capsys.readouterr().out
    # the alias and `gradgeo compare --task anytime` are one path: the same runs, plan and summary
    before = (tmp_path / "cmp" / "summary.json").read_text()
    assert main(["compare", "--task", "anytime", *compare[2:]]) == 0
    assert "4 runs finished, 0 to go" in capsys.readouterr().out
    assert (tmp_path / "cmp" / "summary.json").read_text() == before

    assert main(["anytime", "train", *common, "--strategy", "osgd3", "--out", str(tmp_path / "bad")]) == 2
    assert "known strategies" in capsys.readouterr().err


@pytest.mark.slow
def test_real_short_run_on_fashion_mnist(fashion_dir):
    """3000 training images, 2 epochs, OSGD on a branched ResNet-10 at half width (about 10 s on one core).

    Measured on 2000 test images: about 44, 58, 69, 79% at exits 1..4; the bounds leave about 10 points.
    """
    config = AnytimeConfig(data_dir=str(fashion_dir), model="branched_resnet10", width=0.5, strategy="osgd",
                           train_size=3000, val_size=500, epochs=2, batch_size=32, lr=0.05)
    splits = load_splits(config)
    splits = dataclasses.replace(splits, test_x=splits.test_x[:2000], test_y=splits.test_y[:2000])
    history = train_anytime(config, None, splits=splits, log=None)
    accuracies = history[-1]["test_exit_acc"]
    for accuracy, bound in zip(accuracies, (0.35, 0.48, 0.58, 0.68)):
        assert accuracy > bound, accuracies
