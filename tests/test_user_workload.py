"""Bring your own workload: a model of the user's, named by import path, in train, compare and the Python API;
every error names the path and what is wrong before a run starts."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

from gradgeo.cli import main

USER_MODULE = textwrap.dedent('''
    """A user's own models, in a module outside the repository."""
    from torch import nn

    def tiny(num_classes, in_channels, hidden=8):
        return nn.Sequential(nn.Conv2d(in_channels, hidden, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                             nn.Linear(hidden, num_classes))

    def three_logits(num_classes, in_channels):
        return nn.Sequential(nn.Flatten(), nn.Linear(in_channels * 28 * 28, 3))

    def not_a_module(num_classes, in_channels):
        return "a string"

    NOT_CALLABLE = 3
''')


@pytest.fixture()
def user_module(tmp_path, monkeypatch):
    folder = tmp_path / "user"
    folder.mkdir()
    (folder / "user_nets.py").write_text(USER_MODULE)
    monkeypatch.syspath_prepend(str(folder))
    return folder


def test_compare_runs_a_users_model_beside_builtin_and_channel_specs(user_module, tmp_path, tiny_fashion):
    """The CLI in a real process, the model from a module on PYTHONPATH, two specs x 2 seeds with two workers."""
    out = tmp_path / "cmp"
    env = {**os.environ, "PYTHONPATH": f"{user_module}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    done = subprocess.run([sys.executable, "-m", "gradgeo.cli", "compare", "sgd", "sgd+h0:lam=2", "--model",
                           "user_nets:tiny", "--model-option", "hidden=6", "--data-dir", str(tiny_fashion),
                           "--train-size", "200", "--batch-size", "50", "--epochs", "1", "--seeds", "2", "--jobs", "2",
                           "--quiet", "--out", str(out)], capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stderr
    summary = json.loads((out / "summary.json").read_text())
    assert [r["spec"] for r in summary["rows"]] == ["sgd", "sgd+h0:lam=2"] and summary["rows"][1]["n"] == 2
    result = json.loads((out / "runs" / "sgd" / "seed-0" / "result.json").read_text())
    assert result["config"]["model"] == "user_nets:tiny" and result["config"]["model_options"] == "hidden=6"


@pytest.mark.parametrize("model,options,message", [
    ("user_nets:absent", [], "module 'user_nets' has no 'absent'"),
    ("no_such_module:tiny", [], "cannot import module 'no_such_module'"),
    ("user_nets:NOT_CALLABLE", [], "'NOT_CALLABLE' is a int, not a callable"),
    ("user_nets:not_a_module", [], "returned a str, not a torch.nn.Module"),
    ("user_nets:tiny", ["--model-option", "depth=3"], "could not be called with num_classes, in_channels and the "
                                                      "model options ['depth']"),
    ("user_nets:three_logits", [], "returned shape (2, 3); expected 2 x 10 logits"),
    ("user_nets:tiny", ["--width", "2"], "width scales the built-in models"),
    ("user_nets:tiny", ["--model-option", "hidden"], "bad model option 'hidden': write key=value"),
])
def test_a_bad_model_is_named_before_training(user_module, tmp_path, tiny_fashion, capsys, model, options, message):
    code = main(["train", "--model", model, *options, "--data-dir", str(tiny_fashion), "--train-size", "200",
                 "--batch-size", "50", "--epochs", "1", "--quiet", "--out", str(tmp_path / "run")])
    err = capsys.readouterr().err
    assert code == 2 and message in err and "Traceback" not in err, err
    assert not (tmp_path / "run" / "metrics.jsonl").exists() or (tmp_path / "run" / "metrics.jsonl").read_text() == ""


def test_the_python_api_takes_the_same_path(user_module, tiny_fashion):
    from gradgeo.models import build_model
    from gradgeo.training.config import TrainConfig
    from gradgeo.training.engine import train

    assert build_model("user_nets:tiny", num_classes=4, in_channels=1, hidden=5)[0].out_channels == 5
    history = train(TrainConfig(model="user_nets:tiny", model_options="hidden=4", data_dir=str(tiny_fashion),
                                train_size=200, batch_size=50, epochs=1), log=None)
    assert len(history) == 1 and 0 <= history[0]["test_acc"] <= 1
    from gradgeo.tasks import make_config

    with pytest.raises(ValueError, match="model 'user_nets:tiny' is not a segmentation model"):
        make_config("segment", model="user_nets:tiny")  # segmentation and GAN models are their own kind


@pytest.fixture()
def fashion_npz(tmp_path, tiny_fashion):
    """The tiny real Fashion-MNIST as a user's npz file: N x H x W x C uint8 images, int labels, class names."""
    numpy = pytest.importorskip("numpy")
    from gradgeo.data import load_dataset

    splits = load_dataset("fashion-mnist", str(tiny_fashion))
    path = tmp_path / "fashion.npz"
    numpy.savez(path, x_train=splits.train_x.permute(0, 2, 3, 1).numpy(), y_train=splits.train_y.numpy(),
                x_test=splits.test_x.permute(0, 2, 3, 1).numpy(), y_test=splits.test_y.numpy().astype("int32"),
                classes=numpy.array(splits.classes))
    return path, splits


def test_an_npz_dataset_loads_as_the_same_images_and_trains(fashion_npz, user_module, tmp_path, capsys):
    import torch

    from gradgeo.data import load_dataset

    path, original = fashion_npz
    loaded = load_dataset(f"npz:{path}")
    assert torch.equal(loaded.train_x, original.train_x) and torch.equal(loaded.test_y, original.test_y)
    assert loaded.classes == original.classes and loaded.mean == original.mean
    out = tmp_path / "cmp"
    assert main(["compare", "sgd", "sgd+h0:lam=2", "--dataset", f"npz:{path}", "--model", "user_nets:tiny",
                 "--val-size", "100", "--batch-size", "50", "--epochs", "2", "--seeds", "2", "--quiet",
                 "--out", str(out)]) == 0, capsys.readouterr().err
    summary = json.loads((out / "summary.json").read_text())
    assert summary["rows"][0]["final_val_acc"]["n"] == 2  # the validation split carved from the npz training set


@pytest.mark.parametrize("arrays,message", [
    ({"x_train": "float"}, "x_train must hold uint8 images (0..255), got dtype torch.float32"),
    ({"y_train": "short"}, "y_train has shape (100,); expected one label per image, (400,)"),
    ({"y_test": "negative"}, "y_test holds labels in [-1, 9]; they must lie in [0, 10)"),
    ({"x_test": "small"}, "training images are (1, 28, 28) (C x H x W) but test images are (1, 14, 14)"),
    ({"y_train": "float"}, "y_train must hold integer class labels, got dtype torch.float64"),
    ({"x_train": "5d"}, "x_train has shape (400, 28, 28, 1, 1); expected images"),
    ({"x_train": None}, "the archive lacks x_train"),
])
def test_a_bad_npz_is_named_with_the_file_and_the_value(fashion_npz, tmp_path, arrays, message):
    numpy = pytest.importorskip("numpy")
    from gradgeo.data import load_dataset

    path, splits = fashion_npz
    data = dict(numpy.load(path))
    changes = {"float": lambda a: a.astype("float32") if a.dtype == numpy.uint8 else a.astype("float64"),
               "short": lambda a: a[:100], "negative": lambda a: numpy.where(numpy.arange(len(a)) == 0, -1, a),
               "small": lambda a: a[:, ::2, ::2], "5d": lambda a: a[..., None]}
    for key, change in arrays.items():
        if change is None:
            del data[key]
        else:
            data[key] = changes[change](data[key])
    bad = tmp_path / "bad.npz"
    numpy.savez(bad, **data)
    with pytest.raises(ValueError) as error:
        load_dataset(f"npz:{bad}")
    assert message in str(error.value) and str(bad) in str(error.value)


def test_a_dataset_from_a_users_function(user_module, tiny_fashion):
    from gradgeo.data import load_dataset

    (user_module / "user_data.py").write_text(textwrap.dedent(f'''
        from gradgeo.data import load_dataset

        def fashion():
            s = load_dataset("fashion-mnist", {str(tiny_fashion)!r})
            return s.train_x, s.train_y.tolist(), s.test_x[:, 0], s.test_y, s.classes

        def wrong():
            return [1, 2]
    '''))
    splits = load_dataset("user_data:fashion")
    assert splits.image_shape == (1, 28, 28) and len(splits.test_y) == 300 and splits.classes[0] == "T-shirt/top"
    with pytest.raises(ValueError, match=r"returned a list of 2 \(int, int\); expected \(x_train, y_train, x_test, "
                                         r"y_test\[, classes\]\) as arrays, or \(train, test\[, classes\]\)"):
        load_dataset("user_data:wrong")
    with pytest.raises(ValueError, match="module 'user_data' has no callable 'absent'"):
        load_dataset("user_data:absent")


TORCH_DATASETS = textwrap.dedent('''
    """A user's torch datasets: map-style, items (image, label)."""
    import torch
    from torch.utils.data import Dataset, TensorDataset

    class Pictures(Dataset):
        """PIL images, gray for class 0 and coloured for class 1, with torchvision's classes attribute."""
        classes = ["plain", "striped"]

        def __init__(self, count):
            self.count = count

        def __len__(self):
            return self.count

        def __getitem__(self, index):
            from PIL import Image
            label = index % 2
            image = Image.new("L", (6, 5), index) if label == 0 else Image.new("RGB", (6, 5), (index, 0, 255))
            return image, torch.tensor(label)

    def floats():
        """CHW float tensors in [0, 1] for training, uint8 for test, class names given."""
        x = torch.linspace(0, 1, 4 * 3 * 5 * 6).view(4, 3, 5, 6)
        return (TensorDataset(x, torch.tensor([0, 1, 2, 0])),
                [(torch.full((3, 5, 6), 255, dtype=torch.uint8), 2), (torch.zeros(3, 5, 6, dtype=torch.uint8), 1)],
                ["a", "b", "c"])

    def pictures():
        return Pictures(6), Pictures(4)

    def bad(kind):
        good = (torch.zeros(1, 5, 6), 0)
        item = {"unscaled": (torch.full((1, 5, 6), 2.0), 1), "float-label": (torch.zeros(1, 5, 6), 1.0),
                "no-pair": (torch.zeros(1, 5, 6),), "size": (torch.zeros(1, 4, 6), 1),
                "array": ([[0, 1], [1, 0]], 1), "int-image": (torch.zeros(1, 5, 6, dtype=torch.int64), 1)}[kind]
        return [good, item], [good, (torch.zeros(1, 5, 6), 1)]

    def unscaled(): return bad("unscaled")
    def float_label(): return bad("float-label")
    def no_pair(): return bad("no-pair")
    def size(): return bad("size")
    def array(): return bad("array")
    def int_image(): return bad("int-image")
    def empty(): return [], [(torch.zeros(1, 5, 6), 0)]
    def tensors(): return torch.zeros(2, 1, 5, 6), torch.zeros(2, 1, 5, 6)
''')


@pytest.fixture()
def torch_datasets(user_module):
    (user_module / "user_torch_data.py").write_text(TORCH_DATASETS)


def test_a_users_function_may_return_torch_datasets(torch_datasets):
    import torch

    from gradgeo.data import load_dataset

    splits = load_dataset("user_torch_data:floats")
    assert splits.classes == ("a", "b", "c") and splits.image_shape == (3, 5, 6)
    assert splits.train_x.dtype == torch.uint8 and splits.train_x.flatten()[[0, -1]].tolist() == [0, 255]
    assert splits.train_y.tolist() == [0, 1, 2, 0] and splits.test_y.tolist() == [2, 1]
    assert splits.test_x[0].unique().tolist() == [255]
    pictures = load_dataset("user_torch_data:pictures")  # PIL images; gray ones widened to RGB beside coloured ones
    assert pictures.classes == ("plain", "striped") and pictures.image_shape == (3, 5, 6)
    assert pictures.train_y.tolist() == [0, 1] * 3
    assert pictures.train_x[:3, :, 0, 0].tolist() == [[0, 0, 0], [1, 0, 255], [2, 2, 2]]


@pytest.mark.parametrize("function,message", [
    ("unscaled", "dataset 'user_torch_data:unscaled': train item 1 holds values in [2, 2]; a float image must lie "
                 "in [0, 1]"),
    ("float_label", "train item 1 has the label 1.0; expected an integer class index"),
    ("no_pair", "train item 1 is a tuple of 1; expected (image, label)"),
    ("size", "train item 1 is 6 x 4 pixels (width x height) but dataset 'user_torch_data:size': train item 0 is "
             "6 x 5; all images must have one size"),
    ("array", "train item 1 has a list image; expected a tensor C x H x W (uint8, or float in [0, 1]) or a PIL image"),
    ("int_image", "train item 1 is an image of dtype torch.int64; expected uint8, or float in [0, 1]"),
    ("empty", "dataset 'user_torch_data:empty': the train dataset is empty"),
    ("tensors", "returned a tuple of 2 (Tensor, Tensor); expected (x_train, y_train, x_test, y_test[, classes]) as "
                "arrays"),
])
def test_a_bad_torch_dataset_is_named_with_the_item_and_the_value(torch_datasets, function, message):
    from gradgeo.data import load_dataset

    with pytest.raises(ValueError) as error:
        load_dataset(f"user_torch_data:{function}")
    assert message in str(error.value)
