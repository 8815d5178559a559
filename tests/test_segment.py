"""The segmentation task: scene generator, IoU, ConvTranspose smoothing in a U-Net, training and the CLI."""

import json
from pathlib import Path

import pytest
import torch

import gradgeo
from gradgeo.cli import main
from gradgeo.data import Augment, DatasetSplits, Loader, channel_stats, load_dataset
from gradgeo.models import UNet, build_segmentation_model
from gradgeo.segment import (
    SegmentConfig,
    confusion_matrix,
    iou_per_class,
    load_scene_splits,
    make_scenes,
    mean_iou,
    pixel_accuracy,
    scene_splits,
    train_segment,
)
from gradgeo.transforms import sobolev

# ------------------------------------------------------------------------------------------ scenes


def draws(seed, n, sources, max_items, min_items, canvas, size):
    """The random draws of make_scenes, in the documented order."""
    g = torch.Generator().manual_seed(seed)
    counts = torch.randint(min_items, max_items + 1, (n,), generator=g)
    picks = torch.randint(sources, (n, max_items), generator=g)
    rows = torch.randint(canvas - size + 1, (n, max_items), generator=g)
    cols = torch.randint(canvas - size + 1, (n, max_items), generator=g)
    return counts, picks, rows, cols


def test_scenes_follow_the_stated_rules_pixel_by_pixel():
    """A reference loop over pixels: items brighter than the threshold cover, later items on top."""
    g = torch.Generator().manual_seed(5)
    items = torch.randint(0, 256, (6, 1, 5, 5), generator=g, dtype=torch.uint8)
    labels = torch.tensor([0, 3, 9, 1, 4, 7])
    x, y = make_scenes(items, labels, 20, seed=11, canvas=12, min_items=2, max_items=4, threshold=100)
    counts, picks, rows, cols = draws(11, 20, 6, 4, 2, 12, 5)
    expect_x = torch.zeros(20, 1, 12, 12, dtype=torch.uint8)
    expect_y = torch.zeros(20, 12, 12, dtype=torch.uint8)
    for s in range(20):
        for slot in range(int(counts[s])):
            item, r0, c0 = int(picks[s, slot]), int(rows[s, slot]), int(cols[s, slot])
            for r in range(5):
                for c in range(5):
                    if items[item, 0, r, c] > 100:
                        expect_x[s, 0, r0 + r, c0 + c] = items[item, 0, r, c]
                        expect_y[s, r0 + r, c0 + c] = labels[item] + 1
    assert torch.equal(x, expect_x) and torch.equal(y, expect_y)


def test_threshold_and_overlap_on_a_hand_made_scene():
    """Canvas = item size pins every item at (0, 0): the top row shows the threshold rule (32 stays background,
    33 is covered), the rest which item lies on top."""
    first = torch.tensor([[0, 32, 33, 255], [200, 200, 200, 200], [200, 200, 200, 200], [0, 0, 0, 0]])
    second = torch.tensor([[0, 0, 0, 0], [0, 0, 90, 90], [0, 0, 0, 0], [10, 50, 0, 0]])
    items = torch.stack([first, second]).view(2, 1, 4, 4).to(torch.uint8)
    x, y = make_scenes(items, torch.tensor([2, 6]), 30, seed=0, canvas=4, min_items=2, max_items=2, threshold=32)
    _, picks, _, _ = draws(0, 30, 2, 2, 2, 4, 4)
    order = [tuple(p) for p in picks.tolist()]
    scene = order.index((0, 1))  # the second item lies on top of the first
    assert y[scene].tolist() == [[0, 0, 3, 3], [3, 3, 7, 7], [3, 3, 3, 3], [0, 7, 0, 0]]
    assert x[scene, 0].tolist() == [[0, 0, 33, 255], [200, 200, 90, 90], [200, 200, 200, 200], [0, 50, 0, 0]]
    scene = order.index((1, 0))  # the first on top of the second: the second shows only where the first is dark
    assert y[scene].tolist() == [[0, 0, 3, 3], [3, 3, 3, 3], [3, 3, 3, 3], [0, 7, 0, 0]]
    assert x[scene, 0].tolist() == [[0, 0, 33, 255], [200, 200, 200, 200], [200, 200, 200, 200], [0, 50, 0, 0]]


def test_scenes_are_deterministic_under_a_seed(tiny_fashion):
    fashion = load_dataset("fashion-mnist", tiny_fashion)
    a = make_scenes(fashion.train_x, fashion.train_y, 50, seed=3)
    b = make_scenes(fashion.train_x, fashion.train_y, 50, seed=3)
    c = make_scenes(fashion.train_x, fashion.train_y, 50, seed=4)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not torch.equal(a[0], c[0])
    assert a[0].dtype == a[1].dtype == torch.uint8 and a[0].shape == (50, 1, 64, 64) and a[1].shape == (50, 64, 64)
    # labels match the pixels: every covered pixel is brighter than the threshold, the rest is black
    assert bool((a[0][:, 0][a[1] > 0] > 32).all()) and bool((a[0][:, 0][a[1] == 0] == 0).all())
    one = load_scene_splits(SegmentConfig(data_dir=str(tiny_fashion), train_size=20, test_size=10, val_size=5))
    two = load_scene_splits(SegmentConfig(data_dir=str(tiny_fashion), train_size=20, test_size=10, val_size=5))
    for name in ("train_x", "train_y", "val_x", "val_y", "test_x", "test_y"):
        assert torch.equal(getattr(one, name), getattr(two, name)), name


def test_scene_splits_take_items_from_their_own_split():
    """Every training image has its own brightness, every test image 250: the scenes show where items came from."""
    n = 120
    train_x = (40 + torch.arange(n)).view(n, 1, 1, 1).expand(n, 1, 28, 28).to(torch.uint8).contiguous()
    train_y = torch.arange(n) % 10
    test_x = torch.full((30, 1, 28, 28), 250, dtype=torch.uint8)
    mean, std = channel_stats(train_x)
    source = DatasetSplits("toy", "toy", Path("."), tuple(str(i) for i in range(10)), train_x, train_y, test_x,
                           torch.arange(30) % 10, mean, std)
    splits = scene_splits(source, 40, 15, 12)
    train_values = set(splits.train_x.unique().tolist()) - {0}
    val_values = set(splits.val_x.unique().tolist()) - {0}
    assert set(splits.test_x.unique().tolist()) == {0, 250}
    assert train_values and val_values and not train_values & val_values and not (train_values | val_values) & {250}
    held_out = set(source.split_validation(n // 6, seed=0).val_x.unique().tolist())  # the stated sixth
    assert val_values <= held_out and not train_values & held_out
    assert splits.classes[0] == "background" and splits.num_classes == 11 and splits.image_shape == (1, 64, 64)
    assert splits.mean == channel_stats(splits.train_x)[0]


def test_loader_yields_label_maps_with_their_images():
    x = torch.arange(6, dtype=torch.uint8).view(6, 1, 1, 1).expand(6, 1, 2, 2).contiguous()
    y = x[:, 0] + 10  # a label map per image that tells which image it belongs to
    loader = Loader(x, y, 4, mean=(0.0,), std=(1 / 255,), seed=3)
    for xb, yb in loader.epoch(0):
        assert yb.shape[1:] == (2, 2) and torch.equal(xb[:, 0].round().to(torch.uint8) + 10, yb)
    with pytest.raises(ValueError, match="misalign"):
        Loader(x, y, 4, mean=(0.0,), std=(1.0,), augment=Augment(padding=1))
    with pytest.raises(ValueError, match="one label map per image"):
        Loader(x, y[:5], 4, mean=(0.0,), std=(1.0,))


# ----------------------------------------------------------------------------------------- metrics


def test_iou_and_pixel_accuracy_on_known_masks():
    target = torch.tensor([[0, 0, 1], [1, 2, 2]])
    prediction = torch.tensor([[0, 1, 1], [1, 2, 0]])
    confusion = confusion_matrix(prediction, target, 4)
    assert confusion.tolist() == [[1, 1, 0, 0], [0, 2, 0, 0], [1, 0, 1, 0], [0, 0, 0, 0]]
    iou = iou_per_class(confusion)
    # class 0: 1 hit, union {both 0s, the predicted 0 at (1,2)} = 3; class 1: 2 / 3; class 2: 1 / 2; class 3: absent
    assert iou[:3].tolist() == pytest.approx([1 / 3, 2 / 3, 1 / 2]) and torch.isnan(iou[3])
    assert mean_iou(confusion) == pytest.approx(0.5)  # the absent class 3 does not count
    assert pixel_accuracy(confusion) == pytest.approx(4 / 6)
    # a class only predicted (never true) counts with IoU 0
    confusion = confusion_matrix(torch.tensor([3, 1, 1]), torch.tensor([0, 1, 1]), 4)
    assert mean_iou(confusion) == pytest.approx((0 + 1 + 0) / 3)
    assert mean_iou(confusion_matrix(target, target, 3)) == 1.0
    with pytest.raises(ValueError, match="same shape"):
        confusion_matrix(prediction, target[0], 3)


# ------------------------------------------------------------------------ ConvTranspose along dim 1


def test_unet_conv_transpose_gradients_are_smoothed_along_dim_1():
    """One plain SGD step of lr 1 moves each weight by minus its transformed gradient: for the U-Net's
    ConvTranspose weights (in, out, 2, 2) that is sobolev along dim 1, i.e. along dim 0 of a transposed copy."""
    torch.manual_seed(0)
    model = UNet(num_classes=5, in_channels=1, width=0.5)
    x, y = torch.randn(4, 1, 16, 16), torch.randint(0, 5, (4, 16, 16))
    torch.nn.functional.cross_entropy(model(x), y).backward()
    ups = [m for m in model.modules() if isinstance(m, torch.nn.ConvTranspose2d)]
    assert len(ups) == 3
    before = [m.weight.detach().clone() for m in ups]
    grads = [m.weight.grad.clone() for m in ups]
    opt = gradgeo.create_optimizer(model, "sgd:lr=1,momentum=0+sobolev:lam=0.1", weight_decay=0.0)
    opt.step()
    for module, w0, g in zip(ups, before, grads):
        step = w0 - module.weight.detach()
        expected = sobolev(g.transpose(0, 1).contiguous(), 0.1, dim=0).transpose(0, 1)
        torch.testing.assert_close(step, expected, rtol=1e-4, atol=1e-6)
        torch.testing.assert_close(step, sobolev(g, 0.1, dim=1), rtol=1e-4, atol=1e-6)
        assert not torch.allclose(step, sobolev(g, 0.1, dim=0), rtol=1e-3, atol=1e-6)


def test_unet_shapes_and_bad_input():
    model = build_segmentation_model("unet", num_classes=11, in_channels=1, width=0.25)
    assert model(torch.zeros(2, 1, 32, 32)).shape == (2, 11, 32, 32)
    with pytest.raises(ValueError, match="divisible by 8"):
        model(torch.zeros(1, 1, 36, 36))
    with pytest.raises(ValueError, match="a segmentation model"):
        gradgeo.models.build_model("unet")
    with pytest.raises(ValueError, match="unknown segmentation model 'small_cnn'"):
        build_segmentation_model("small_cnn", num_classes=11)


# --------------------------------------------------------------------------------------- training


@pytest.mark.parametrize("fast", [False, True], ids=["fp32", "bf16-channels_last"])
def test_segment_training_resumes_to_the_identical_result(tiny_fashion, tmp_path, fast):
    # canvas 32: the smallest that holds a 28-pixel item and that the U-Net can halve 3 times
    config = SegmentConfig(data_dir=str(tiny_fashion), train_size=48, test_size=16, val_size=8, batch_size=16,
                           epochs=2, width=0.25, canvas=32, optimizer="adam+sobolev:lam=0.1", channels_last=fast,
                           precision="bf16" if fast else "fp32")
    splits = load_scene_splits(config)
    full = train_segment(config, tmp_path / "full", log=None, splits=splits)
    train_segment(config, tmp_path / "cut", log=None, splits=splits, stop_after=1)
    resumed = train_segment(config, tmp_path / "cut", log=None, splits=splits, resume=True)
    strip = [{k: v for k, v in r.items() if k != "time"} for r in full]
    assert [{k: v for k, v in r.items() if k != "time"} for r in resumed] == strip
    row = full[-1]
    assert 0 <= row["test_miou"] <= 1 and 0 <= row["test_acc"] <= 1 and row["val_miou"] is not None
    result = json.loads((tmp_path / "full" / "result.json").read_text())
    assert result["final_test_miou"] == pytest.approx(row["test_miou"])
    assert list(result["test_iou_per_class"])[0] == "background"


def test_cli_segment_compare_and_train_end_to_end(tiny_fashion, tmp_path, capsys):
    out = tmp_path / "cmp"
    args = ["compare", "--task", "segment", "adam", "adam+sobolev:lam=0.1", "--data-dir", str(tiny_fashion),
            "--train-size", "32", "--test-size", "16", "--batch-size", "16", "--epochs", "1", "--width", "0.25",
            "--seeds", "2", "--out", str(out), "--quiet"]
    assert main(args) == 0
    text = capsys.readouterr().out
    assert "test mIoU %" in text and "(baseline)" in text and "(higher better)" in text
    summary = json.loads((out / "summary.json").read_text())
    assert summary["task"] == "segment" and [m["key"] for m in summary["metrics"]] == ["test_miou", "test_acc"]
    assert summary["rows"][1]["vs_baseline"]["test_miou"]["verdict"] in ("better", "worse",
                                                                          "no significant difference")
    assert (out / "curves.png").stat().st_size > 10_000
    assert "test_miou" in (out / "summary.csv").read_text()
    (out / "runs" / "adam" / "seed-1" / "result.json").unlink()
    assert main(args) == 0
    assert "3 runs finished, 1 to go" in capsys.readouterr().out
    assert main(["train", "--task", "segment", "--data-dir", str(tiny_fashion), "--train-size", "16",
                 "--test-size", "8", "--batch-size", "8", "--epochs", "1", "--width", "0.25",
                 "--out", str(tmp_path / "t")]) == 0
    assert "test mIoU" in capsys.readouterr().out


@pytest.mark.parametrize("args,message", [
    (["--task", "segment", "--model", "small_cnn"], "not a segmentation model"),
    (["--task", "segment", "--dataset", "cifar10"], "pastes grayscale 28x28 items"),
    (["--task", "segment", "--latent-dim", "8"], "--latent-dim is an option of --task gan, not of --task segment"),
    (["--task", "segment", "--augment"], "misalign the label maps"),
    (["--task", "segment", "--canvas", "60"], "canvas must be a multiple of 8"),
    (["--task", "segment", "--min-items", "3", "--max-items", "2"], "must not exceed max_items"),
    (["--task", "classify", "--model", "unet"], "unknown model 'unet' for the classify task (a segmentation model"),
    (["--task", "detect"], "unknown task 'detect'; known tasks: classify, segment, gan"),
])
def test_cli_segment_bad_input_is_named(args, message, tmp_path, capsys):
    assert main(["train", *args, "--out", str(tmp_path / "x")]) == 2
    assert message in capsys.readouterr().err
    assert main(["compare", "adam", *args, "--out", str(tmp_path / "y")]) == 2
    assert message in capsys.readouterr().err
