"""The training engine and every CLI command, end to end on real Fashion-MNIST with tiny budgets."""

import dataclasses
import inspect
import json
import re
import shutil
from pathlib import Path

import pytest
import torch

from gradgeo.cli import main
from gradgeo.data import load_dataset
from gradgeo.experiments.analyze import load_checkpoint
from gradgeo.training.config import TrainConfig
from gradgeo.training.engine import train
from gradgeo.training.objective import tta_logits

# the engine's runs are judged on the first 2,000 test images: evaluating all 10,000 every epoch cost more than
# the training in most of these tests (and the first 2,000 hold every class about equally)
TEST_IMAGES = 2000


@pytest.fixture(scope="module")
def fashion():
    """Real Fashion-MNIST: the whole training set, the first 2,000 test images."""
    try:
        splits = load_dataset("fashion-mnist")
    except FileNotFoundError as error:
        pytest.skip(f"Fashion-MNIST not installed: {error}")
    return dataclasses.replace(splits, test_x=splits.test_x[:TEST_IMAGES], test_y=splits.test_y[:TEST_IMAGES])


@pytest.fixture
def tiny(tiny_fashion) -> list[str]:
    """CLI options for a real, tiny run: 400 Fashion-MNIST training and 300 test images, one epoch."""
    return ["--data-dir", str(tiny_fashion), "--batch-size", "50", "--epochs", "1"]


def strip_time(history):
    return [{k: v for k, v in row.items() if k != "time"} for row in history]


def test_real_training_run_learns(fashion, tmp_path):
    """500 steps of SGD + Sobolev on a half-width small CNN: over 70% Fashion-MNIST test accuracy (chance: 10%;
    measured about 76% on these 2,000 test images, as on all 10,000), through an interruption after epoch 1 and a
    resume."""
    config = TrainConfig(optimizer="sgd+sobolev:lam=0.1", width=0.5, train_size=8000, batch_size=32, epochs=2,
                         lr=0.1)
    splits = fashion.subset(8000, seed=0)
    partial = train(config, tmp_path, log=None, splits=splits, stop_after=1)
    history = train(config, tmp_path, log=None, splits=splits, resume=True)
    assert history[0] == partial[0]
    assert history[-1]["test_acc"] > 0.70, history
    print(f"test accuracy after 2 epochs: {history[-1]['test_acc']:.4f}")
    assert history[-1]["train_loss"] < history[0]["train_loss"]
    lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["epoch"] for line in lines] == [1, 2]
    result = json.loads((tmp_path / "result.json").read_text())
    assert result["final_test_acc"] == history[-1]["test_acc"]
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]  # atomic writes leave nothing behind


@pytest.mark.parametrize("fast", [False, True], ids=["fp32", "bf16-channels_last"])
def test_resume_after_interruption_gives_identical_metrics(fashion, tmp_path, fast):
    config = TrainConfig(optimizer="adam:lr=2e-3+h0:lam=2", width=0.5, train_size=400, batch_size=40, epochs=3,
                         val_size=200, augment=True, channels_last=fast, precision="bf16" if fast else "fp32")
    splits = fashion.split_validation(200, seed=0).subset(400, seed=0)
    full = train(config, tmp_path / "full", log=None, splits=splits)
    partial = train(config, tmp_path / "cut", log=None, splits=splits, stop_after=1)
    assert len(partial) == 1 and not (tmp_path / "cut" / "result.json").exists()
    resumed = train(config, tmp_path / "cut", log=None, splits=splits, resume=True)
    assert strip_time(resumed) == strip_time(full)
    lines = (tmp_path / "cut" / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == 3
    other = dataclasses.replace(config, lr=0.5)
    with pytest.raises(ValueError, match="written by another configuration .it differs in lr."):
        train(other, tmp_path / "cut", log=None, splits=splits, resume=True)


def test_channels_last_and_bf16_train_like_the_default(fashion):
    """Same seed, same data: the NHWC run follows the NCHW run up to float rounding; the bf16-autocast run
    stays within bfloat16's precision of it."""
    config = TrainConfig(optimizer="sgd+sobolev:lam=0.1", width=0.5, train_size=600, batch_size=50, epochs=1, lr=0.05)
    splits = fashion.subset(600, seed=0)
    runs = {name: train(dataclasses.replace(config, **options), log=None, splits=splits)[0]
            for name, options in (("default", {}), ("nhwc", {"channels_last": True}), ("bf16", {"precision": "bf16"}))}
    assert runs["nhwc"]["train_loss"] == pytest.approx(runs["default"]["train_loss"], rel=1e-4)
    assert runs["nhwc"]["test_acc"] == pytest.approx(runs["default"]["test_acc"], abs=0.005)
    assert runs["bf16"]["train_loss"] == pytest.approx(runs["default"]["train_loss"], rel=1e-2)
    assert runs["bf16"]["test_acc"] == pytest.approx(runs["default"]["test_acc"], abs=0.03)


def test_checkpoint_from_before_a_config_field_existed_resumes(fashion, tmp_path):
    """A field added to TrainConfig later counts as its default in an older checkpoint."""
    config = TrainConfig(train_size=200, batch_size=50, epochs=2)
    splits = fashion.subset(200, seed=0)
    train(config, tmp_path, log=None, splits=splits, stop_after=1)
    state = torch.load(tmp_path / "checkpoint.pt", weights_only=False)
    del state["config"]["channels_last"]
    torch.save(state, tmp_path / "checkpoint.pt")
    assert len(train(config, tmp_path, log=None, splits=splits, resume=True)) == 2
    with pytest.raises(ValueError, match="differs in channels_last"):
        train(dataclasses.replace(config, channels_last=True), tmp_path, log=None, splits=splits, resume=True)


@pytest.mark.parametrize("field,value,match", [
    ("schedule", "linear", "unknown schedule 'linear'"),
    ("epochs", 0, "epochs must be an integer >= 1, got 0"),
    ("precision", "fp16", "unknown precision 'fp16'"),
    ("optimizer", "sgd+sob", "unknown metric 'sob'"),
    ("label_smoothing", 1.5, "label_smoothing must be in"),
])
def test_bad_config_is_named(field, value, match):
    with pytest.raises(ValueError, match=match):
        dataclasses.replace(TrainConfig(), **{field: value}).validate()


def test_every_config_field_is_documented():
    """The API page lists the fields from the docstring's Attributes section alone: one entry per field of
    TrainConfig, and in each task's configuration one per field it adds."""
    from gradgeo.tasks.anytime import AnytimeConfig
    from gradgeo.tasks.gan import GANConfig
    from gradgeo.tasks.segment import SegmentConfig

    def documented(config: type) -> list[str]:
        return re.findall(r"^    (\w+):", inspect.getdoc(config).split("\nAttributes:\n", 1)[1], re.M)

    base = [field.name for field in dataclasses.fields(TrainConfig)]
    assert documented(TrainConfig) == base
    for config in (AnytimeConfig, GANConfig, SegmentConfig):
        added = [field.name for field in dataclasses.fields(config) if field.name not in base]
        assert set(added) <= set(documented(config)), config


def test_cli_train_and_analyze(tmp_path, capsys, tiny):
    assert main(["train", *tiny, "--optimizer", "sgd+h1:lam=0.01", "--out", str(tmp_path / "t"), "--quiet"]) == 0
    assert (tmp_path / "t" / "checkpoint.pt").exists()
    assert main(["train", *tiny, "--out", str(tmp_path / "t2")]) == 0
    out = capsys.readouterr().out
    assert "train loss" in out and "test acc" in out  # the per-epoch table
    assert main(["analyze", str(tmp_path / "t" / "checkpoint.pt"), "--batches", "2"]) == 0
    out = capsys.readouterr().out
    assert "adj corr out" in out and "sobolev" in out
    # every conv layer has a row, the first one (1 input channel) with "-" for its input axis; the columns are
    # explained
    first = next(line for line in out.splitlines() if line.startswith("features.0.weight"))
    assert first.split()[1:] == ["32x1x3x3", first.split()[2], "-", first.split()[4], "-"], first
    assert "adj corr  mean Pearson correlation of neighbouring slices" in out and "|corr|    mean absolute" in out
    assert main(["analyze", str(tmp_path / "t" / "checkpoint.pt"), "--batches", "2", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert {r["metric"] for r in report["gradient_noise"]} == {"none", "h0", "sobolev", "h1"}
    assert [r["layer"] for r in report["correlation"]] == ["features.0.weight", "features.4.weight",
                                                           "features.8.weight"]
    assert report["correlation"][0]["adjacent_in"] is None and report["correlation"][1]["adjacent_in"] is not None


def test_cli_evaluate_reproduces_the_recorded_accuracy_and_applies_another_tta(tmp_path, capsys, tiny_fashion):
    data = tmp_path / "data"
    shutil.copytree(tiny_fashion, data)
    args = ["--data-dir", str(data), "--batch-size", "50", "--epochs", "2", "--val-size", "100"]
    for name in ("a", "b"):
        assert main(["train", *args, "--tta", "flip", "--seed", str(ord(name)), "--channels-last",
                     "--out", str(tmp_path / name), "--quiet"]) == 0
    checkpoints = [str(tmp_path / name / "checkpoint.pt") for name in ("a", "b")]
    recorded = [json.loads((tmp_path / name / "result.json").read_text())["history"][-1] for name in ("a", "b")]

    # under the runs' own tta, on either split, the evaluation gives back what each run recorded after epoch 2
    for split in ("test", "val"):
        assert main(["evaluate", *checkpoints, "--split", split, "--json"]) == 0
        rows = json.loads(capsys.readouterr().out)
        assert [(r["epoch"], r["tta"], r["split"]) for r in rows] == [(2, "flip", split)] * 2
        assert [r["acc"] for r in rows] == [r["recorded_acc"] for r in rows] == [h[f"{split}_acc"] for h in recorded]
    assert main(["evaluate", *checkpoints]) == 0
    table = capsys.readouterr().out.splitlines()
    assert len(table) == 4 and table[1].split()[-1] == table[2].split()[-1] == table[3].split()[-1] == "+0.00"
    assert table[3].startswith("mean of 2")

    # another tta: loss and accuracy of the model's logits computed by hand on the 300 test images, beside the
    # record (the evaluation runs in batches of 64 in channels-last memory, one batch of 300 here: the float
    # rounding differs, and may flip the class of one image whose two best logits tie to the last digits)
    model, _ = load_checkpoint(checkpoints[0])
    runs_data = load_dataset("fashion-mnist", str(data)).split_validation(100, seed=0)  # normalized as the runs saw it
    x, y = next(runs_data.loader("test", 300, shuffle=False).epoch(0))
    assert len(y) == 300
    for tta in ("none", "flip-translate"):
        with torch.no_grad():
            logits = tta_logits(model.eval(), x, tta)
        assert main(["evaluate", checkpoints[0], "--tta", tta, "--json"]) == 0
        (row,) = json.loads(capsys.readouterr().out)
        assert row["tta"] == tta and row["run_tta"] == "flip" and row["recorded_acc"] == recorded[0]["test_acc"]
        assert row["loss"] == pytest.approx(torch.nn.functional.cross_entropy(logits, y).item(), rel=1e-5)
        assert row["acc"] == pytest.approx((logits.argmax(1) == y).float().mean().item(), abs=1.01 / 300)

    # the data moved (a checkpoint from another machine): the error names the folder; --data-dir finds it
    moved = data.rename(tmp_path / "moved")
    assert main(["evaluate", checkpoints[0]]) == 2
    assert str(data) in capsys.readouterr().err
    assert main(["evaluate", checkpoints[0], "--data-dir", str(moved), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)[0]["acc"] == recorded[0]["test_acc"]


def test_cli_evaluate_refuses_a_split_the_run_does_not_have(tmp_path, capsys, tiny):
    assert main(["train", *tiny, "--out", str(tmp_path / "t"), "--quiet"]) == 0
    assert main(["evaluate", str(tmp_path / "t" / "checkpoint.pt"), "--split", "val"]) == 2
    assert "has no validation split (val_size 0)" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["evaluate", str(tmp_path / "t" / "checkpoint.pt"), "--tta", "rotate"])
    assert "invalid choice: 'rotate'" in capsys.readouterr().err


def test_cli_compare_writes_summary_and_resumes(tmp_path, capsys, tiny):
    out = tmp_path / "cmp"
    args = ["compare", "sgd", "sgd+sobolev:lam=0.1", *tiny, "--seeds", "2", "--out", str(out), "--quiet"]
    assert main(args) == 0
    text = capsys.readouterr().out
    assert "final test acc" in text and "(baseline)" in text and "sgd+sobolev:lam=0.1" in text
    assert ": epoch " not in text  # --quiet: a line per finished run, none per epoch
    summary = json.loads((out / "summary.json").read_text())
    assert [r["spec"] for r in summary["rows"]] == ["sgd", "sgd+sobolev:lam=0.1"]
    assert summary["rows"][1]["n"] == 2 and "p_value" in summary["rows"][1]["vs_baseline"]
    assert (out / "summary.csv").read_text().startswith("spec,n,")
    assert (out / "curves.png").stat().st_size > 10_000
    # an interrupted comparison: one run lost its result; the rerun redoes only that one
    (out / "runs" / "sgd" / "seed-1" / "result.json").unlink()
    assert main(args) == 0
    assert "3 runs finished, 1 to go" in capsys.readouterr().out
    # the folder belongs to that configuration: another one is refused, naming what differs
    assert main([*args, "--lr", "0.5"]) != 0
    assert "differs in lr" in capsys.readouterr().err
    # plan.json is safe to delete: the finished runs' own records still refuse another configuration
    (out / "plan.json").unlink()
    assert main([*args, "--lr", "0.5"]) != 0
    err = capsys.readouterr().err
    assert "seed-0/result.json was trained with another configuration (lr: 0.05 in" in err and "0.5 now" in err
    assert not (out / "plan.json").exists() or "0.5" not in (out / "plan.json").read_text()


def test_cli_demo_tiny(tmp_path, capsys, tiny_fashion):
    assert main(["demo", "--data-dir", str(tiny_fashion), "--epochs", "1", "--train-size", "300", "--seeds", "1",
                 "--jobs", "1", "--out", str(tmp_path / "demo")]) == 0
    out = capsys.readouterr().out
    assert "sgd+sobolev:lam=0.1" in out
    assert "  sgd+h1:lam=0.01 seed 0: epoch 1/1, test acc % = " in out  # the demo says how its runs progress


@pytest.mark.parametrize("args,message", [
    (["train", "--optimizer", "sgd+fisher"], "unknown metric 'fisher'"),
    (["train", "--dataset", "imagenet"], "unknown dataset 'imagenet'"),
    (["train", "--model", "resnet1000", "--batch-size", "50", "--epochs", "1"], "unknown model 'resnet1000'"),
    (["train", "--epochs", "0"], "epochs must be an integer >= 1"),
    (["compare", "sgd", "sgd", "--epochs", "1"], "duplicate optimizer specs"),
])
def test_cli_bad_input_exits_nonzero_with_a_message(args, message, capsys, tmp_path):
    assert main([*args, "--out", str(tmp_path / "x")]) == 2
    assert message in capsys.readouterr().err


def test_cli_missing_data_names_the_files(tmp_path, capsys):
    assert main(["train", "--data-dir", str(tmp_path), "--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err
    assert "train-images-idx3-ubyte" in err and str(tmp_path) in err


def test_cli_argparse_errors_exit_nonzero(capsys):
    with pytest.raises(SystemExit) as info:
        main(["train", "--epochs", "three"])
    assert info.value.code == 2 and "invalid int value" in capsys.readouterr().err


def test_checkpoints_land_in_out_dir_only(tmp_path, fashion):
    config = TrainConfig(train_size=300, batch_size=50, epochs=1)
    train(config, tmp_path / "run", log=None, splits=fashion.subset(300, seed=0))
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == [".gradgeo.lock", "checkpoint.pt", "metrics.jsonl",
                                                                     "result.json"]
    assert (tmp_path / "run" / ".gradgeo.lock").stat().st_size == 0  # the lock is the OS's, not the file's content
    assert not list(Path(tmp_path).glob("*.tmp"))


def _commands(parser, path=()):
    """Every command path of the parser tree: (), ("train",), ("anytime", "compare") ..."""
    import argparse

    yield path
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, child in action.choices.items():
                yield from _commands(child, (*path, name))


def test_every_help_renders_with_one_default_per_option(capsys):
    import re

    from gradgeo.cli.main import build_parser

    for path in _commands(build_parser()):
        with pytest.raises(SystemExit) as exit_:
            main([*path, "--help"])
        assert exit_.value.code == 0, path
        text = " ".join(capsys.readouterr().out.split())
        assert "%%" not in text and "(default: None)" not in text, path
        assert not re.search(r"\(default:[^()]*(\([^()]*\))?[^()]*\) \(default:", text), path


def test_every_option_says_what_it_is():
    """--help lists no bare option (gradgeo demo --help showed --epochs, --seeds ... with nothing beside them)."""
    import argparse

    from gradgeo.cli.main import build_parser

    def bare(parser, path):
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for name, child in action.choices.items():
                    yield from bare(child, f"{path} {name}")
            elif not action.help and not isinstance(action, argparse._HelpAction):
                yield f"{path} {'/'.join(action.option_strings) or action.dest}"

    assert not list(bare(build_parser(), "gradgeo"))


def test_version_quiet_train_and_a_closed_pipe(tmp_path, tiny_fashion, capfd):
    import subprocess
    import sys

    with pytest.raises(SystemExit):
        main(["--version"])
    capfd.readouterr()
    # a real pipe that closes early: only a process of its own can show how the command ends
    done = subprocess.run(f"{sys.executable} -m gradgeo.cli list | head -n 1", shell=True, capture_output=True,
                          text=True)
    assert done.returncode == 0 and done.stderr == "" and done.stdout.count("\n") == 1
    # --quiet writes nothing (captured at the file descriptors, as a shell would see them)
    code = main(["train", "--data-dir", str(tiny_fashion), "--train-size", "200", "--batch-size", "100", "--epochs",
                 "1", "--quiet", "--out", str(tmp_path / "q")])
    quiet = capfd.readouterr()
    assert code == 0 and quiet.out == "" and quiet.err == "", quiet.out + quiet.err


def test_progress_bars_cover_evaluation_and_quiet_shows_none(tmp_path, tiny_fashion, capsys, monkeypatch):
    """On a terminal, train shows a bar over the training steps and one over the evaluation batches; --quiet
    shows neither (nor anything else)."""
    import sys

    args = ["train", "--data-dir", str(tiny_fashion), "--train-size", "200", "--batch-size", "100", "--epochs", "1"]
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)  # capsys's stderr stands in for a terminal
    assert main([*args, "--out", str(tmp_path / "shown")]) == 0
    err = capsys.readouterr().err
    # 300 test images in batches of 64: a bar over 5 batches (how far it got when drawn depends on the clock)
    assert "epoch 1/1" in err and re.search(r"evaluating test: +\d+%\|.*\| \d/5 ", err), err
    assert main([*args, "--quiet", "--out", str(tmp_path / "quiet")]) == 0
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err == ""


def test_parallel_runs_report_every_epoch_through_the_parent(tmp_path, tiny_fashion):
    """--jobs 2: each worker's finished epochs reach the parent's log as they come, before the run's final line
    (--quiet: none, test_cli_compare_writes_summary_and_resumes)."""
    from gradgeo.experiments import compare_task

    base = TrainConfig(data_dir=str(tiny_fashion), train_size=200, batch_size=100, epochs=2, width=0.5)
    lines: list[str] = []
    compare_task("classify", ["sgd", "sgd+h0:lam=2"], [0], base, tmp_path / "shown", jobs=2, log=lines.append)
    for label in ("sgd", "sgd+h0:lam=2"):
        epochs = [i for i, line in enumerate(lines) if line.startswith(f"  {label} seed 0: epoch ")]
        final = next(i for i, line in enumerate(lines) if f"] {label} seed 0: final test acc % = " in line)
        assert [lines[i].split(",")[0].split()[-1] for i in epochs] == ["1/2", "2/2"] and epochs[-1] < final, lines


def test_test_size_evaluates_a_fixed_stratified_subset_recorded_in_the_run(tmp_path, tiny_fashion, capsys):
    """--test-size N: every run evaluates the same N test images (stratified, seed 0), the run's configuration
    records N (so a resume or a comparison's reuse check sees it), and a bad N is one clear line."""
    from gradgeo.training.engine import load_splits

    config = TrainConfig(data_dir=str(tiny_fashion), test_size=100)
    splits = load_splits(config)
    assert len(splits.test_y) == 100 and torch.equal(splits.test_x, load_splits(config).test_x)
    whole = load_splits(dataclasses.replace(config, test_size=None)).test_y
    assert (splits.test_y.bincount(minlength=10) - whole.bincount(minlength=10) / 3).abs().max() < 1  # stratified
    args = ["train", "--data-dir", str(tiny_fashion), "--train-size", "200", "--batch-size", "100", "--epochs", "1",
            "--quiet", "--out", str(tmp_path / "run")]
    assert main([*args, "--test-size", "100"]) == 0
    assert json.loads((tmp_path / "run" / "result.json").read_text())["config"]["test_size"] == 100
    assert main([*args, "--test-size", "150", "--resume"]) == 2
    assert "differs in test_size: 100 in the checkpoint, 150 now" in capsys.readouterr().err
    for bad, message in (("0", "test_size must be an integer >= 1"),
                         ("301", "test_size 301 is more than the 300 test images of Fashion-MNIST: lower --test-size")):
        assert main([*args[:-1], str(tmp_path / bad), "--test-size", bad]) == 2
        assert message in capsys.readouterr().err
