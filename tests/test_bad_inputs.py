"""The bad-input matrix (issue 14): the CLI and the public API through degenerate sizes and values,
non-finite numbers, files that are missing, corrupt or of the wrong kind. Every user error exits with code 2
and one message that names the bad value, without a traceback; the API raises an exception that names it.
"""

import math
import pickle
import shlex
import shutil
import struct
from pathlib import Path

import pytest
import torch
from torch import nn

import gradgeo
from _dataset_files import NumpyPickle, write_cifar
from gradgeo import transforms
from gradgeo.channel.factory import create_optimizer
from gradgeo.cli import main
from gradgeo.experiments import compare_task
from gradgeo.experiments.analyze import gradient_noise, load_checkpoint
from gradgeo.experiments.stats import mean_ci
from gradgeo.osgd import gram_schmidt
from gradgeo.tasks.anytime import AnytimeConfig, train_anytime
from gradgeo.training.config import TrainConfig
from gradgeo.training.engine import train

CHECKPOINT_DAMAGE = {  # folder -> what is done to the checkpoint's fields (weights-only files, all of them)
    "ck-config-list": lambda state: state.update(config=[1, 2]),
    "ck-model-shape": lambda state: state["model"].update({"features.0.weight": torch.zeros(3)}),
    "ck-model-args-text": lambda state: state.update(model_args="small"),
    "ck-momentum-shape": lambda state: [s.update(momentum_buffer=torch.zeros(2))
                                        for s in state["optimizer"]["state"].values()],
    "ck-scheduler-epoch": lambda state: state["scheduler"].update(last_epoch="one"),
    "ck-history-too-long": lambda state: state.update(history=[{"epoch": i + 1} for i in range(5)]),
}


@pytest.fixture(scope="module")
def files(tiny_fashion, tmp_path_factory) -> dict[str, str]:
    """Prepared inputs: a finished run, an interrupted one, corrupt and foreign files, a comparison."""
    root = tmp_path_factory.mktemp("bad-inputs")
    config = TrainConfig(data_dir=str(tiny_fashion), batch_size=50, epochs=2)
    train(config, root / "finished", log=None)
    train(config, root / "cut", log=None, stop_after=1)
    shutil.copytree(root / "finished", root / "corrupt")
    checkpoint = root / "corrupt" / "checkpoint.pt"
    checkpoint.write_bytes(checkpoint.read_bytes()[: checkpoint.stat().st_size // 2])
    for name, damage in CHECKPOINT_DAMAGE.items():  # an interrupted run's checkpoint with one field damaged
        shutil.copytree(root / "cut", root / name)
        state = torch.load(root / name / "checkpoint.pt", weights_only=True)
        damage(state)
        torch.save(state, root / name / "checkpoint.pt")
    shutil.copytree(root / "finished", root / "no-checkpoint")
    (root / "no-checkpoint" / "checkpoint.pt").unlink()
    train_anytime(AnytimeConfig(data_dir=str(tiny_fashion), batch_size=50, epochs=1, val_size=100, width=0.25),
                  root / "anytime", log=None)
    (root / "a-file").write_text("not a folder\n")
    bad_data = root / "bad-data"
    shutil.copytree(tiny_fashion, bad_data)
    labels = bad_data / "train-labels-idx1-ubyte"
    labels.write_bytes(labels.read_bytes()[:100])  # cut short
    folders = {"cifar": root / "cifar"}
    write_cifar(folders["cifar"], hundred=False, protocol=2)  # a CIFAR-10 batch whose array has an impossible shape
    (folders["cifar"] / "data_batch_2").write_bytes(pickle.dumps({b"data": NumpyPickle((-1, -3072), bytes(3072)),
                                                                  b"labels": [0]}))
    for name, (count, size) in {"no_test": (0, 28), "one_pixel": (300, 1)}.items():  # IDX files that parse
        folders[name] = root / name.replace("_", "-")
        shutil.copytree(tiny_fashion, folders[name])
        for part in ("train", "t10k") if size != 28 else ("t10k",):
            n = count if part == "t10k" else 400
            (folders[name] / f"{part}-images-idx3-ubyte").write_bytes(
                struct.pack(">4B3I", 0, 0, 8, 3, n, size, size) + bytes(range(256)) * (n * size * size // 256)
                + bytes(n * size * size % 256))
            (folders[name] / f"{part}-labels-idx1-ubyte").write_bytes(struct.pack(">4BI", 0, 0, 8, 1, n) +
                                                                      bytes(i % 10 for i in range(n)))
    compare_task("classify", ["sgd"], [0], TrainConfig(data_dir=str(tiny_fashion), batch_size=50, epochs=1),
                 root / "cmp", log=lambda line: None)
    shutil.copytree(root / "cmp", root / "cmp-bad-plan")
    (root / "cmp-bad-plan" / "plan.json").write_text('{"specs": ["sgd"')
    shutil.copytree(root / "cmp", root / "cmp-bad-result")
    (root / "cmp-bad-result" / "runs" / "sgd" / "seed-0" / "result.json").write_text("{")
    return {"data": str(tiny_fashion), "root": str(root), "bad_data": str(bad_data),
            **{name: str(folder) for name, folder in folders.items()}}


TINY = "--data-dir {data} --batch-size 50 --epochs 1 --quiet"
ANY = "--data-dir {data} --batch-size 50 --epochs 1 --val-size 100 --width 0.25 --quiet"

CLI_CASES = {  # id -> (arguments, what the message must name); {out} is a fresh folder per case
    "spec-lr-text": ("train --optimizer sgd:lr=abc", "got 'abc'"),
    "spec-betas-one": ("train --optimizer adam:betas=0.9", "betas must be two numbers"),
    "spec-alpha-text": ("train --optimizer rmsprop:alpha=abc", "alpha must be a finite number >= 0, got 'abc'"),
    "spec-lr-nan": ("train --optimizer sgd:lr=nan", "got nan"),
    "spec-lr-inf": ("train --optimizer sgd:lr=inf", "got inf"),
    "spec-int-beyond-float": ("train --optimizer sgd:lr=1" + "0" * 400, "lr must be a finite number > 0, got inf"),
    "spec-option-of-another-metric": ("train --optimizer sgd:lr=0.1+laplacian:lam=3",
                                      "unknown option 'lam' for metric 'laplacian'"),
    "spec-boundary-without-one": ("train --optimizer sgd+h0:boundary=periodic",
                                  "unknown option 'boundary' for metric 'h0'"),
    "spec-lam-overflows": ("train --optimizer sgd+h1:lam=1e36", "outside the range where metric 'h1' stays finite"),
    "spec-muon-aux": ("train --optimizer muon:lr=0.1,aux=adam", "aux must be one of sgd, adamw"),
    "model-option-not-key-value": ("train --model small_cnn --model-option width", "bad model option 'width'"),
    "model-import-missing": ("train --model no_such_module:net", "cannot import module 'no_such_module'"),
    "dataset-npz-missing": ("train --dataset npz:/nonexistent/x.npz", "/nonexistent/x.npz"),
    "tta-unknown": ("train --tta rotate", "unknown tta 'rotate'"),
    "spec-wd-negative": ("train --optimizer sgd:weight_decay=-1", "weight_decay must be a finite number >= 0, got -1"),
    "spec-repeated-key": ("train --optimizer sgd:lr=0.1,lr=0.2", "option 'lr' is given twice"),
    "spec-bool-text": ("train --optimizer sgd:nesterov=yes", "nesterov must be true or false, got 'yes'"),
    "spec-nesterov-no-momentum": ("train --momentum 0 --optimizer sgd:nesterov=true", "Nesterov momentum"),
    "spec-lam-negative": ("train --optimizer sgd+sobolev:lam=-1", "got -1"),
    "spec-lam-zero": ("train --optimizer sgd+h0:lam=0", "got 0"),
    "spec-apply-to": ("train --optimizer sgd+h0:apply_to=weights", "'weights'"),
    "spec-direction": ("train --optimizer sgd+h0:direction=up", "'up'"),
    "spec-unknown-key": ("train --optimizer sgd:speed=2", "'speed'"),
    "spec-two-metrics": ("train --optimizer sgd+h0+sobolev", "more than one '+'"),
    "spec-empty": ("train --optimizer ''", "non-empty string"),
    "lr-inf": ("train --lr inf", "lr must be a finite number > 0, got inf"),
    "lr-zero": ("train --lr 0", "lr must be a finite number > 0, got 0.0"),
    "lr-negative": ("train --lr -0.1", "got -0.1"),
    "wd-nan": ("train --weight-decay nan", "weight_decay must be a finite number >= 0, got nan"),
    "momentum-negative": ("train --momentum -1", "momentum must be a finite number >= 0, got -1.0"),
    "label-smoothing-one": ("train --label-smoothing 1", "label_smoothing must be in [0, 1), got 1.0"),
    "label-smoothing-nan": ("train --label-smoothing nan", "got nan"),
    "epochs-zero": ("train --epochs 0", "epochs must be an integer >= 1, got 0"),
    "batch-zero": ("train --batch-size 0", "batch_size must be an integer >= 1, got 0"),
    "batch-larger-than-data": ("train --batch-size 100000", "batch_size 100000 is larger than the 400 training"),
    "train-size-zero": ("train --train-size 0", "train_size must be an integer >= 1"),
    "train-size-negative": ("train --train-size -5", "got -5"),
    "train-size-too-big": ("train --train-size 100000", "got 100000"),
    "val-size-negative": ("train --val-size -1", "val_size must be an integer >= 0, got -1"),
    "val-size-everything": ("train --val-size 400", "got 400"),
    "seed-negative": ("train --seed -1", "seed must be an integer in 0..4294967295, got -1"),
    "seed-beyond-torch": ("train --seed 18446744073709551616", "seed must be an integer in 0..4294967295"),
    "width-zero": ("train --width 0", "width must be a finite number in (0, 64], got 0.0"),
    "width-absurd": ("train --width 1e4", "width must be a finite number in (0, 64], got 10000.0"),
    "width-beyond-float": ("train --width 1e308", "got 1e+308"),
    "compare-width-absurd": ("compare sgd --width 1e4", "got 10000.0"),
    "anytime-width-absurd": ("anytime train --width 1e4", "got 10000.0"),
    "width-nan": ("train --width nan", "got nan"),
    "schedule": ("train --schedule linear", "'linear'"),
    "precision": ("train --precision fp16", "'fp16'"),
    "device-unknown": ("train --device nodev", "'nodev'"),
    "device-missing": ("train --device cuda:99", "'cuda:99'"),
    "device-meta": ("train --device meta", "'meta'"),
    "dataset": ("train --dataset imagenet", "'imagenet'"),
    "model": ("train --model resnet1000", "'resnet1000'"),
    "task": ("train --task detect", "'detect'"),
    "task-option": ("train --canvas 32", "--canvas is an option of --task segment"),
    "data-dir-missing": ("train --data-dir {root}/nowhere", "{root}/nowhere"),
    "data-dir-file": ("train --data-dir {root}/a-file", "{root}/a-file"),
    "data-file-cut-short": ("train --data-dir {bad_data}", "train-labels-idx1-ubyte"),
    "data-no-test-images": ("train --data-dir {no_test}", "{no_test}/t10k-images-idx3-ubyte: the images"),
    "data-cifar-negative-shape": ("train --dataset cifar10 --data-dir {cifar}",
                                  "{cifar}/data_batch_2: a numpy array with the shape (-1, -3072)"),
    "data-one-pixel-images": ("train --data-dir {one_pixel}", "{one_pixel}/train-images-idx3-ubyte: the images"),
    "out-is-file": ("train --out {root}/a-file", "{root}/a-file"),
    "out-under-file": ("train --out {root}/a-file/run", "{root}/a-file/run"),
    "out-holds-run": ("train --epochs 2 --out {root}/finished", "--resume"),
    "out-holds-cut-run": ("train --epochs 2 --out {root}/cut", "--resume"),
    "resume-corrupt": ("train --epochs 2 --resume --out {root}/corrupt", "{root}/corrupt/checkpoint.pt"),
    "resume-other-config": ("train --epochs 2 --lr 0.5 --resume --out {root}/cut", "lr: 0.05 in the checkpoint, 0.5"),
    "resume-field-type": ("train --epochs 2 --resume --out {root}/ck-config-list",
                          "{root}/ck-config-list/checkpoint.pt is not a gradgeo checkpoint: its field 'config' is of "
                          "type list, not dict"),
    "resume-model-shape": ("train --epochs 2 --resume --out {root}/ck-model-shape",
                           "{root}/ck-model-shape/checkpoint.pt: its field 'model' does not fit this run (Error(s) in "
                           "loading state_dict for SmallCNN: size mismatch for features.0.weight"),
    "resume-momentum-shape": ("train --epochs 2 --resume --out {root}/ck-momentum-shape", "its field 'optimizer' "
                              "does not fit this run (momentum_buffer has shape (2,)"),
    "resume-scheduler-epoch": ("train --epochs 2 --resume --out {root}/ck-scheduler-epoch",
                               "its field 'scheduler' does not fit this run (last_epoch is 'one')"),
    "resume-history-too-long": ("train --epochs 2 --resume --out {root}/ck-history-too-long",
                                "its field 'history' holds 5 epochs, more than the 2 of its config"),
    "analyze-model-args-text": ("analyze {root}/ck-model-args-text/checkpoint.pt",
                                "its field 'model_args' is of type str, not dict"),
    "analyze-model-shape": ("analyze {root}/ck-model-shape/checkpoint.pt", "its field 'model' does not fit"),
    "resume-no-checkpoint": ("train --epochs 2 --resume --out {root}/no-checkpoint", "result.json"),
    "compare-bad-spec": ("compare sgd sgd:lr=abc", "got 'abc'"),
    "compare-same-spec": ("compare sgd+h0:lam=2 SGD+h0:lam=2.0", "build the same optimizer"),
    "compare-no-seeds": ("compare sgd --seeds 0", "distinct seeds"),
    "compare-repeated-seed": ("compare sgd --seed-list 1 1", "distinct seeds, got [1, 1]"),
    "compare-jobs-zero": ("compare sgd --jobs 0", "jobs must be an integer >= 1"),
    "compare-bad-plan": ("compare sgd --seeds 1 --out {root}/cmp-bad-plan", "{root}/cmp-bad-plan/plan.json"),
    "compare-bad-result": ("compare sgd --seeds 2 --out {root}/cmp-bad-result", "cmp-bad-result/runs/sgd/seed-0"),
    "compare-other-config": ("compare sgd --seeds 1 --lr 0.2 --out {root}/cmp", "lr: 0.05 in plan.json, 0.2 now"),
    "compare-out-is-file": ("compare sgd --out {root}/a-file", "{root}/a-file"),
    "analyze-missing": ("analyze {root}/nowhere.pt", "{root}/nowhere.pt"),
    "analyze-folder": ("analyze {root}/finished", "{root}/finished is a folder"),
    "analyze-text-file": ("analyze {root}/finished/metrics.jsonl", "{root}/finished/metrics.jsonl"),
    "analyze-corrupt": ("analyze {root}/corrupt/checkpoint.pt", "{root}/corrupt/checkpoint.pt"),
    "analyze-anytime": ("analyze {root}/anytime/checkpoint.pt", "not the checkpoint of a classification run"),
    "analyze-batches-zero": ("analyze {root}/finished/checkpoint.pt --batches 0", "got 0"),
    "evaluate-missing": ("evaluate {root}/nowhere.pt", "{root}/nowhere.pt"),
    "evaluate-corrupt": ("evaluate {root}/finished/checkpoint.pt {root}/corrupt/checkpoint.pt",
                         "{root}/corrupt/checkpoint.pt"),
    "evaluate-anytime": ("evaluate {root}/anytime/checkpoint.pt", "not the checkpoint of a classification run"),
    "anytime-strategy": ("anytime train --strategy fastest", "'fastest'"),
    "anytime-strategy-value": ("anytime train --strategy sdn:start=abc", "'abc'"),
    "anytime-granularity": ("anytime train --strategy osgd:granularity=row", "'row'"),
    "anytime-exits-zero": ("anytime train --num-exits 0", "got 0"),
    "anytime-exits-many": ("anytime train --num-exits 50", "got 50"),
    "anytime-model": ("anytime train --model resnet20", "'resnet20'"),
    "anytime-batch": ("anytime train --batch-size 5000", "batch_size 5000"),
    "anytime-compare-method": ("anytime compare sum osgd:granularity=row", "'row'"),
    "anytime-compare-same-method": ("anytime compare sum SUM", "'sum' and 'SUM' are the same method"),
    # options that passed validation and were refused (or silently useless) at the first step (issue 28)
    "spec-eps-beyond-float32": ("train --optimizer adam:lr=1e-3,eps=1e39", "eps must be a finite number >= 0 that "
                                "float32 holds (at most 3.4e+38), got 1e+39"),
    "spec-dampening-beyond-float32": ("train --optimizer sgd:momentum=0.9,dampening=1e300", "got 1e+300"),
    "lr-beyond-float32": ("train --lr 1e300", "lr must be a finite number > 0 that float32 holds"),
    "compare-eps-beyond-float32": ("compare adam adam:eps=1e39", "got 1e+39"),
    "compare-sigma-beyond-float32": ("compare sgd sgd+laplacian:sigma=1e308", "sigma must be a finite number >= 0 "
                                     "that float32 holds (at most 3.4e+38), got 1e+308"),
    "anytime-osgd-eps-nan": ("anytime train --strategy osgd:eps=nan", "eps must be a finite number in [0, 1), got nan"),
    "anytime-compare-osgd-eps": ("anytime compare sum osgd:eps=2", "eps must lie in [0, 1), got 2"),
    "anytime-adaloss-min-loss": ("anytime train --strategy adaloss:min_loss=1e308", "min_loss must be a number in "
                                 "[1e-30, 1e30], got 1e+308"),
    "anytime-sdn-depths-text": ("anytime train --num-exits 2 --strategy sdn:relative_depths=deep",
                                "relative_depths must be numbers in (0, 1]"),
    "demo-epochs": ("demo --epochs 0", "got 0"),
}


def _argv(text: str, files: dict[str, str], out: Path) -> list[str]:
    """The case's arguments after the tiny defaults (the later option wins), and a fresh --out."""
    words = shlex.split(text.format(**files))
    command = words[:2] if words[0] == "anytime" else words[:1]
    if words[0] in ("analyze", "evaluate"):  # they read checkpoints: no training options, no --out
        return words
    extra = {"train": TINY, "compare": TINY, "anytime": ANY, "demo": "--data-dir {data}"}[words[0]]
    argv = [*command, *shlex.split(extra.format(**files)), *words[len(command):]]
    return argv if "--out" in argv else [*argv, "--out", str(out)]


@pytest.mark.parametrize("case", CLI_CASES)
def test_cli_user_error_is_one_clear_line(case, files, tmp_path, capsys):
    text, expected = CLI_CASES[case]
    def contents() -> dict[Path, bytes]:
        return {p: p.read_bytes() for p in Path(files["root"]).rglob("*") if p.is_file()}

    before = contents()
    code = main(_argv(text, files, tmp_path / "out"))
    err = capsys.readouterr().err
    assert code == 2, err
    assert expected.format(**files) in err
    assert "Traceback" not in err and err.startswith("gradgeo ")
    assert contents() == before  # no prepared file changed, no run started
    if "compare" in text and "--out" not in text:
        assert not (tmp_path / "out" / "runs").exists()  # refused before any run


def test_a_refused_comparison_leaves_its_folder_usable(files, tmp_path, capsys):
    """A comparison stopped by its data (more validation images than there are) before any run started does
    not lock its folder to the refused configuration."""
    argv = ["compare", "sgd", "--seeds", "1", *shlex.split(TINY.format(**files)), "--out", str(tmp_path / "cmp")]
    assert main([*argv, "--val-size", "5000"]) == 2
    assert "got 5000" in capsys.readouterr().err
    assert main([*argv, "--val-size", "100"]) == 0


def _model() -> nn.Module:
    return nn.Sequential(nn.Conv2d(1, 4, 3), nn.Flatten(), nn.Linear(4, 2))


API_CASES = {  # id -> (call, exception, what the message must name)
    "create-optimizer-lr-nan": (lambda: create_optimizer(_model(), "sgd", lr=math.nan), ValueError, "got nan"),
    "create-optimizer-betas": (lambda: create_optimizer(_model(), "adam", lr=1e-3, betas=(0.9,)), ValueError,
                               "got (0.9,)"),
    "create-optimizer-spec-type": (lambda: create_optimizer(_model(), 3, lr=0.1), ValueError, "got 3"),
    "channel-directed-lam-inf": (lambda: gradgeo.ChannelDirected(torch.optim.SGD(_model().parameters(), lr=0.1),
                                                                lam=math.inf), ValueError, "got inf"),
    "channel-directed-sigma-nan": (lambda: gradgeo.ChannelDirected(torch.optim.SGD(_model().parameters(), lr=0.1),
                                                                  "laplacian", sigma=math.nan), ValueError, "got nan"),
    "sobolev-lam-nan": (lambda: transforms.sobolev(torch.randn(3, 4), math.nan), ValueError, "got nan"),
    "h1-integer-gradient": (lambda: transforms.h1(torch.ones(3, 4, dtype=torch.long), 0.1), ValueError, "int64"),
    "h0-dim": (lambda: transforms.reweighted_h0(torch.randn(3, 4), 2.0, dim=5), ValueError, "dim 5"),
    "gram-schmidt-vector": (lambda: gram_schmidt(torch.randn(5)), ValueError, "(5,)"),
    "gram-schmidt-eps-nan": (lambda: gram_schmidt(torch.randn(2, 3), eps=math.nan), ValueError, "got nan"),
    "mean-ci-nan": (lambda: mean_ci([0.5, math.nan]), ValueError, "got nan at index 1"),
    "config-device": (lambda: TrainConfig(device="cuda:99").validate(), ValueError, "'cuda:99'"),
    "config-train-size": (lambda: TrainConfig(train_size=0).validate(), ValueError, "got 0"),
    "config-spec-cross-check": (lambda: TrainConfig(optimizer="sgd:nesterov=true", momentum=0).validate(), ValueError,
                                "'sgd:nesterov=true'"),
    "anytime-config-strategy": (lambda: AnytimeConfig(strategy="sdn:start=2").validate(), ValueError, "got 2"),
    "gradient-noise-batches": (lambda: gradient_noise(_model(), None, batches=1), ValueError, "got 1"),
    "load-checkpoint-folder": (lambda: load_checkpoint("."), ValueError, "is a folder"),
}


@pytest.mark.parametrize("case", API_CASES)
def test_api_bad_input_names_the_value(case):
    call, exception, expected = API_CASES[case]
    with pytest.raises(exception) as info:
        call()
    assert expected in str(info.value)


def test_bare_state_dict_keeps_the_wrappers_metric():
    """A bare optimizer's state dict loads into a wrapper (the groups keep the wrapper's metric)."""
    model = _model()
    bare = torch.optim.SGD(model.parameters(), lr=0.1)
    wrapped = gradgeo.ChannelDirected(torch.optim.SGD(model.parameters(), lr=0.1), metric="h0", lam=2.0)
    wrapped.load_state_dict(bare.state_dict())
    assert [g["metric"] for g in wrapped.param_groups] == ["h0"] and "metric='h0'" in repr(wrapped)
