"""The airbench-class recipe's pieces in the engine: the triangle schedule, test-time augmentation, the
data-dependent initialization hook, per-parameter learning-rate scales, and the whole recipe learning on real
images."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from torch import nn

from gradgeo.channel.factory import create_optimizer
from gradgeo.data import load_dataset
from gradgeo.models import build_model
from gradgeo.training.config import TrainConfig
from gradgeo.training.engine import DATA_INIT_IMAGES, fit, train
from gradgeo.training.objective import CrossEntropy, tta_logits
from gradgeo.training.schedules import lr_lambda


def test_triangle_schedule_by_hand():
    """0.2x at the first step, 1x at 23% of the steps, then linear to 0.07x at the end."""
    f = lr_lambda("triangle", epochs=10, steps_per_epoch=10)  # 100 steps, peak at 23
    assert f(0) == pytest.approx(0.2)
    assert f(23) == pytest.approx(1.0)
    assert f(11) == pytest.approx(0.2 + 0.8 * 11 / 23)
    assert f(100) == pytest.approx(0.07)
    assert f(23 + 77 // 2) == pytest.approx(1 - 0.93 * 38 / 77)


def test_tta_logits_average_the_views_by_hand():
    """A "model" that returns its input pixels as logits: flip-translate TTA is the average of six views with
    weights 1/4 (the image and its mirror) and 1/8 (each one-pixel shift, reflected, and its mirror)."""
    x = torch.arange(9.0).view(1, 1, 3, 3)
    pixels = nn.Flatten()
    mirror = x.flip(-1)
    # up-left shift with reflected borders: out[i, j] = x[|i - 1|, |j - 1|]; down-right: x[2 - |1 - i| ...]
    rows = torch.tensor([1, 0, 1])
    up_left = x[..., rows, :][..., rows]
    down = torch.tensor([1, 2, 1])
    down_right = x[..., down, :][..., down]
    expected = (x + mirror) / 4 + (up_left + up_left.flip(-1) + down_right + down_right.flip(-1)) / 8
    torch.testing.assert_close(tta_logits(pixels, x, "flip-translate"), expected.flatten(1))
    torch.testing.assert_close(tta_logits(pixels, x, "flip"), ((x + mirror) / 2).flatten(1))
    torch.testing.assert_close(tta_logits(pixels, x, "none"), x.flatten(1))
    with pytest.raises(ValueError, match="unknown tta 'rotate'"):
        tta_logits(pixels, x, "rotate")


def test_param_lr_scales_set_their_groups_lr_and_are_checked():
    net = build_model("airbench", width=0.25)
    opt = create_optimizer(net, "sgd", lr=0.5, weight_decay=1e-3)
    by_param = {id(p): g for g in opt.param_groups for p in g["params"]}
    for name, p in net.named_parameters():
        if p.requires_grad:
            group = by_param[id(p)]
            assert group["lr"] == (0.5 * 64 if name.endswith(".bias") and name.startswith("blocks") else 0.5), name
            assert group["weight_decay"] == (1e-3 if p.dim() > 1 else 0.0), name

    class Wrong(nn.Linear):
        def param_lr_scales(self):
            return {"gamma": 2.0}

    with pytest.raises(ValueError, match="names 'gamma', which is not a parameter"):
        create_optimizer(Wrong(2, 2), "sgd", lr=0.1)


class _Recording(nn.Module):
    def __init__(self, num_classes: int, in_channels: int) -> None:
        super().__init__()
        self.seen: torch.Tensor | None = None
        self.linear = nn.Linear(in_channels * 28 * 28, num_classes)

    def init_from_data(self, images: torch.Tensor) -> None:
        self.seen = images.clone()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x.flatten(1))


def test_fit_hands_a_model_its_first_normalized_training_images(tiny_fashion):
    config = TrainConfig(dataset="fashion-mnist", data_dir=str(tiny_fashion), model="small_cnn", epochs=1,
                         batch_size=100, augment=True)
    model: list[_Recording] = []
    fit(config, lambda args: (model.append(_Recording(**args)) or model[-1], CrossEntropy()), log=None)
    splits = load_dataset("fashion-mnist", str(tiny_fashion))
    expected = next(iter(splits.loader("train", DATA_INIT_IMAGES, shuffle=False).epoch(0)))[0]
    assert model[0].seen is not None and torch.equal(model[0].seen, expected)  # all 400, in order, unaugmented
    assert abs(float(expected.mean())) < 0.1  # normalized


def test_a_resumed_run_takes_its_data_dependent_weights_from_the_checkpoint(tiny_fashion, tmp_path):
    """init_from_data runs for a fresh model only: a resumed one gets those weights back with its checkpoint,
    and the resumed run ends where an uninterrupted one does."""
    config = TrainConfig(dataset="fashion-mnist", data_dir=str(tiny_fashion), model="small_cnn", epochs=2,
                         batch_size=100)
    models: list[_Recording] = []

    def build(args):
        models.append(_Recording(**args))
        return models[-1], CrossEntropy()

    fit(config, build, tmp_path / "run", log=None, stop_after=1)
    resumed = fit(config, build, tmp_path / "run", resume=True, log=None)
    whole = fit(config, build, tmp_path / "whole", log=None)
    assert [m.seen is not None for m in models] == [True, False, True]
    assert resumed[-1]["test_acc"] == whole[-1]["test_acc"] and resumed[-1]["train_loss"] == whole[-1]["train_loss"]


@pytest.mark.parametrize("task_config", ["segment", "gan", "anytime"])
def test_tta_is_refused_where_it_would_be_ignored(task_config):
    from gradgeo.tasks import get_task, make_config

    with pytest.raises(ValueError, match="tta .test-time augmentation. is for the classify task"):
        make_config(get_task(task_config), tta="flip")


def test_bad_recipe_options_are_named():
    for field, value, match in (("tta", "rotate", "unknown tta 'rotate'"),
                                ("crop_padding", -1, "crop_padding must be an integer in 0..16"),
                                ("schedule", "onecycle", "unknown schedule 'onecycle'")):
        with pytest.raises(ValueError, match=match):
            dataclasses.replace(TrainConfig(), **{field: value}).validate()


def test_airbench_recipe_learns_fashion_mnist_with_sgd_and_muon(fashion_dir):
    """The whole recipe (whitening set from the data, triangle schedule, label smoothing, TTA) on 2,000 real
    Fashion-MNIST images, one epoch at a quarter width: both SGD and Muon get far above chance (10%)."""
    config = TrainConfig(dataset="fashion-mnist", model="airbench", width=0.25, train_size=2000, batch_size=100,
                         epochs=1, lr=0.5, momentum=0.85, nesterov=True, weight_decay=1e-3, label_smoothing=0.2,
                         schedule="triangle", tta="flip", channels_last=True)
    splits = load_dataset("fashion-mnist").subset(2000, seed=0)
    splits = dataclasses.replace(splits, test_x=splits.test_x[:1000], test_y=splits.test_y[:1000])
    for spec in ("sgd", "muon:lr=0.05,momentum=0.6"):
        history = train(dataclasses.replace(config, optimizer=spec), log=None, splits=splits)
        assert history[-1]["test_acc"] > 0.6, (spec, history)
