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
    from gradgeo.training.engine import TrainConfig, train

    assert build_model("user_nets:tiny", num_classes=4, in_channels=1, hidden=5)[0].out_channels == 5
    history = train(TrainConfig(model="user_nets:tiny", model_options="hidden=4", data_dir=str(tiny_fashion),
                                train_size=200, batch_size=50, epochs=1), log=None)
    assert len(history) == 1 and 0 <= history[0]["test_acc"] <= 1
    from gradgeo.tasks import make_config

    with pytest.raises(ValueError, match="model 'user_nets:tiny' is not a segmentation model"):
        make_config("segment", model="user_nets:tiny")  # segmentation and GAN models are their own kind
