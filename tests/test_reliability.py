"""Reliability (issue 14): no run lost, no NaN let through, every bad input a clear error.

One test (or one parametrized group) per defect of the issue, each on tiny real data (400 Fashion-MNIST
training images, one epoch).
"""

import dataclasses
import json
import os
import pickle
import shutil
import subprocess
from pathlib import Path

import pytest
import torch
from torch import nn

import gradgeo.tasks.base
from gradgeo.channel.factory import parse_spec
from gradgeo.channel.optim import ChannelDirected, channel_directed
from gradgeo.cli import main
from gradgeo.experiments import compare_task
from gradgeo.experiments.analyze import load_checkpoint
from gradgeo.tasks.anytime import AnytimeConfig, train_anytime
from gradgeo.training.config import TrainConfig
from gradgeo.training.engine import train


def tiny(data_dir: Path, **fields) -> TrainConfig:
    return TrainConfig(**{"data_dir": str(data_dir), "batch_size": 50, "epochs": 1, **fields})


def cli_tiny(data_dir: Path) -> list[str]:
    return ["--data-dir", str(data_dir), "--batch-size", "50", "--epochs", "1", "--quiet"]


def snapshot(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def run_cli(argv, capsys) -> tuple[int, str]:
    code = main([str(a) for a in argv])
    return code, capsys.readouterr().err


# ---------------------------------------------------------------- 1. a rerun without --resume never destroys a run


@pytest.mark.parametrize("finished", [True, False], ids=["finished", "interrupted"])
def test_rerun_without_resume_refuses_and_keeps_the_run(tiny_fashion, tmp_path, finished):
    config = tiny(tiny_fashion, epochs=2)
    train(config, tmp_path, log=None, stop_after=None if finished else 1)
    before = snapshot(tmp_path)
    with pytest.raises(ValueError, match="--resume") as info:
        train(config, tmp_path, log=None)
    assert str(tmp_path) in str(info.value) and "--out" in str(info.value)
    assert snapshot(tmp_path) == before


def test_cli_rerun_without_resume_refuses_and_interrupt_names_resume(tiny_fashion, tmp_path, capsys, monkeypatch):
    argv = ["train", *cli_tiny(tiny_fashion), "--out", tmp_path / "run"]
    assert run_cli(argv, capsys)[0] == 0
    before = snapshot(tmp_path / "run")
    code, err = run_cli(argv, capsys)
    assert code == 2 and "--resume" in err and "Traceback" not in err
    assert snapshot(tmp_path / "run") == before
    assert run_cli([*argv, "--resume"], capsys)[0] == 0  # the finished run: nothing to do, nothing lost

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(gradgeo.tasks.base, "fit", interrupted)
    code, err = run_cli(["train", *cli_tiny(tiny_fashion), "--out", tmp_path / "other"], capsys)
    assert code == 130 and "--resume" in err


# ------------------------------------------------------ 2. nonfinite="raise"|"skip" sees every gradient the base uses


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(2, 8, 3)
        self.norm = nn.BatchNorm2d(8)
        self.single = nn.Conv2d(8, 1, 1)  # one output channel: nothing to smooth along "out"
        self.fc = nn.Linear(36, 3)

    def forward(self, x):
        return self.fc(self.single(torch.relu(self.norm(self.conv(x)))).flatten(1))


def poisoned_step(policy: str, where: str, dtype=torch.float32, **options):
    torch.manual_seed(0)
    model = Net().to(dtype)
    opt = channel_directed(model, torch.optim.SGD, lr=0.1, nonfinite=policy, **options)
    model(torch.randn(4, 2, 8, 8, dtype=dtype)).float().square().mean().backward()
    if where != "transform":
        dict(model.named_parameters())[where].grad.view(-1)[0] = float("nan")
    else:  # a finite gradient that the transform blows up: float16 overflow at a small lam
        model.conv.weight.grad.copy_(torch.linspace(-300, 300, model.conv.weight.numel()).view_as(
            model.conv.weight))
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    return model, opt, before


CASES = {  # parameter holding the NaN -> wrapper options
    "fc.weight": {"metric": "sobolev"},  # a Linear weight (not transformed by default)
    "fc.bias": {"metric": "h0"},
    "norm.weight": {"metric": "h1"},
    "single.weight": {"metric": "sobolev"},  # a conv with one output channel: left unchanged
    "conv.weight": {"metric": "none"},  # the identity metric still honours the policy
}


@pytest.mark.parametrize("where", CASES)
def test_nonfinite_raise_names_every_gradient_the_base_uses(where):
    model, opt, before = poisoned_step("raise", where, **CASES[where])
    with pytest.raises(FloatingPointError, match=where.replace(".", r"\.")):
        opt.step()
    assert all(torch.equal(p, before[n]) for n, p in model.named_parameters())


@pytest.mark.parametrize("where", [*CASES, "transform"])
def test_nonfinite_skip_leaves_every_weight_unchanged(where):
    options = {"metric": "h0", "lam": 1e-4, "dtype": torch.float16} if where == "transform" else CASES[where]
    dtype = options.pop("dtype", torch.float32)
    model, opt, before = poisoned_step("skip", where, dtype, **options)
    opt.step()
    assert opt.skipped_steps == 1
    assert all(torch.equal(p, before[n]) for n, p in model.named_parameters())


def test_nonfinite_from_the_transform_itself_raises():
    model, opt, before = poisoned_step("raise", "transform", torch.float16, metric="h0", lam=1e-4)
    with pytest.raises(FloatingPointError, match=r"conv\.weight"):
        opt.step()
    assert torch.equal(model.conv.weight, before["conv.weight"])


# ------------------------------------------------------------------------ 3. a batch larger than the training set


def test_batch_larger_than_the_training_set_is_named(tiny_fashion, tmp_path, capsys):
    with pytest.raises(ValueError, match="batch_size 1000 .*400 training images"):
        train(dataclasses.replace(tiny(tiny_fashion), batch_size=1000), None, log=None)
    anytime = AnytimeConfig(data_dir=str(tiny_fashion), batch_size=400, epochs=1, val_size=100, width=0.25)
    with pytest.raises(ValueError, match="batch_size 400 .*300 training images"):
        train_anytime(anytime, None, log=None)
    code, err = run_cli(["anytime", "train", "--data-dir", tiny_fashion, "--batch-size", "5000", "--val-size", "100",
                         "--out", tmp_path / "a"], capsys)
    assert code == 2 and "batch_size 5000" in err and "Traceback" not in err


# -------------------------------------------------- 4. spec values are type-checked, every spec before any run


@pytest.mark.parametrize("spec,message", [
    ("sgd:lr=abc", "lr must be a finite number > 0, got 'abc'"),
    ("adam:betas=0.9", "betas must be two numbers in [0, 1) written B1/B2, got 0.9"),
    ("rmsprop:alpha=abc", "alpha must be a finite number >= 0, got 'abc'"),
    ("sgd:lr=nan", "lr must be a finite number > 0, got nan"),
    ("sgd:weight_decay=-1", "weight_decay must be a finite number >= 0, got -1"),
    ("sgd:lr=0.1,lr=0.2", "option 'lr' is given twice"),
    ("sgd:nesterov=yes", "nesterov must be true or false, got 'yes'"),
    ("sgd+h0:lam=abc", "lam must be a finite number > 0 for metric 'h0', got 'abc'"),
    ("sgd+sobolev:lam=0.1,lam=0.2", "option 'lam' is given twice"),
    ("sgd+sobolev:boundary=open", "unknown boundary 'open'"),
])
def test_spec_values_are_checked(spec, message):
    with pytest.raises(ValueError) as info:
        parse_spec(spec)
    assert message in str(info.value) and spec in str(info.value)


def test_every_spec_is_checked_before_any_run(tiny_fashion, tmp_path):
    for bad in ("sgd:lr=abc", "sgd:momentum=0.9,nesterov=true,dampening=0.5"):
        with pytest.raises(ValueError, match="sgd"):
            compare_task("classify", ["sgd", bad], [0], tiny(tiny_fashion), tmp_path / "cmp", log=lambda line: None)
        assert not (tmp_path / "cmp" / "runs").exists()


def test_a_diverging_run_stops_with_a_message_and_writes_only_json(tiny_fashion, tmp_path):
    config = tiny(tiny_fashion, optimizer="sgd:lr=1e12", epochs=2)
    with pytest.raises(FloatingPointError, match="diverged at epoch 1"):
        train(config, tmp_path, log=None)
    for line in (tmp_path / "metrics.jsonl").read_text().splitlines():
        json.loads(line, parse_constant=lambda token: pytest.fail(f"non-JSON token {token} in metrics.jsonl"))
    assert not (tmp_path / "result.json").exists()


# ----------------------------------------- 5. checkpoints load with weights_only=True, errors name the file


class Payload:
    def __reduce__(self):
        return (os.mkdir, (os.environ["GRADGEO_TEST_MARKER"],))


@pytest.fixture
def finished_run(tiny_fashion, tmp_path) -> Path:
    train(tiny(tiny_fashion), tmp_path / "run", log=None)
    return tmp_path / "run"


def test_corrupt_checkpoint_is_named_on_resume_and_analyze(tiny_fashion, finished_run, capsys):
    checkpoint = finished_run / "checkpoint.pt"
    checkpoint.write_bytes(checkpoint.read_bytes()[:1000])  # cut short
    with pytest.raises(ValueError, match="checkpoint.pt") as info:
        train(tiny(tiny_fashion), finished_run, log=None, resume=True)
    assert str(checkpoint) in str(info.value) and "delete" in str(info.value)
    with pytest.raises(ValueError, match=str(checkpoint)):
        load_checkpoint(checkpoint)
    code, err = run_cli(["analyze", checkpoint], capsys)
    assert code == 2 and str(checkpoint) in err and "Traceback" not in err


def test_checkpoint_cannot_run_code(tiny_fashion, finished_run, tmp_path, monkeypatch):
    marker = tmp_path / "code-ran"
    monkeypatch.setenv("GRADGEO_TEST_MARKER", str(marker))
    checkpoint = finished_run / "checkpoint.pt"
    state = torch.load(checkpoint, weights_only=True)
    state["history"].append(Payload())
    torch.save(state, checkpoint)
    with pytest.raises(ValueError, match=str(checkpoint)):
        train(tiny(tiny_fashion), finished_run, log=None, resume=True)
    with pytest.raises(ValueError, match=str(checkpoint)):
        load_checkpoint(checkpoint)
    assert not marker.exists()


def test_pickle_payload_is_what_the_previous_test_refuses(tmp_path, monkeypatch):
    """The payload runs code under a plain unpickler: the refusal above is the weights-only loader's doing."""
    marker = tmp_path / "code-ran"
    monkeypatch.setenv("GRADGEO_TEST_MARKER", str(marker))
    pickle.loads(pickle.dumps(Payload()))
    assert marker.exists()


# ------------------------------------------------ 6. add_param_group / load_state_dict validate before they change


def wrapped() -> tuple[nn.Module, ChannelDirected]:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.Conv2d(4, 4, 3))
    return model, ChannelDirected(torch.optim.SGD(model[0].parameters(), lr=0.1), metric="sobolev", lam=0.1)


def test_rejected_param_group_leaves_the_optimizer_usable():
    model, opt = wrapped()
    with pytest.raises(ValueError, match="lam must be a finite number > 0"):
        opt.add_param_group({"params": list(model[1].parameters()), "lam": -1.0})
    assert len(opt.param_groups) == len(opt.base.param_groups) == 1
    opt.add_param_group({"params": list(model[1].parameters())})  # the repaired group is accepted
    model(torch.randn(2, 1, 8, 8)).sum().backward()
    opt.step()


def test_rejected_state_dict_leaves_the_optimizer_unchanged():
    model, opt = wrapped()
    state = opt.state_dict()
    state["param_groups"][0]["lam"] = -1.0
    with pytest.raises(ValueError, match="lam must be a finite number > 0"):
        opt.load_state_dict(state)
    assert opt.param_groups[0]["lam"] == 0.1
    model[0](torch.randn(2, 1, 8, 8)).sum().backward()
    opt.step()


# ------------------------------------------------------ 7. every user error is one clear line, a bug a traceback


def test_cli_user_errors_are_one_line(tiny_fashion, tmp_path, capsys, monkeypatch):
    (tmp_path / "a-file").write_text("")
    for out in (tmp_path / "a-file", tmp_path / "a-file" / "run"):
        code, err = run_cli(["train", *cli_tiny(tiny_fashion), "--out", out], capsys)
        assert code == 2 and str(out) in err and "Traceback" not in err
    code, err = run_cli(["train", *cli_tiny(tiny_fashion), "--device", "nodev", "--out", tmp_path / "d"], capsys)
    assert code == 2 and "'nodev'" in err and "Traceback" not in err
    code, err = run_cli(["train", *cli_tiny(tiny_fashion), "--device", "cuda:99", "--out", tmp_path / "d"], capsys)
    assert code == 2 and "'cuda:99'" in err and "Traceback" not in err



@pytest.fixture()
def full_disk(tmpfs):
    """A real 512 KiB filesystem (tmpfs, mounted as root) that a run's first checkpoint overflows; where this
    process cannot mount one, None."""
    return tmpfs("512k")


def test_a_full_disk_during_a_checkpoint_is_one_line(tiny_fashion, tmp_path, capsys, monkeypatch, full_disk):
    """On a real full filesystem torch.save raises a RuntimeError of its own ("unexpected pos ..."), not an
    OSError: the run must still end in one line that says the disk is full and how to go on. Without a
    filesystem to fill, torch.save is made to raise that same RuntimeError."""
    if full_disk is None:
        def disk_full(obj, path, *args, **kwargs):
            raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 576 vs 534")

        monkeypatch.setattr(torch, "save", disk_full)
        monkeypatch.setattr(shutil, "disk_usage", lambda path: shutil._ntuple_diskusage(1 << 19, 1 << 19, 0))
        out = tmp_path / "full"
    else:
        out = full_disk / "run"
    code, err = run_cli(["train", *cli_tiny(tiny_fashion), "--width", "2", "--out", out], capsys)
    assert code == 2 and "no space left on the device" in err and "--resume" in err and "Traceback" not in err
    assert not [p for p in out.iterdir() if p.name.endswith(".tmp")]  # the half-written file is gone


def test_cli_bug_still_shows_its_traceback(tiny_fashion, tmp_path, monkeypatch):
    def bug(*args, **kwargs):
        raise TypeError("a bug")

    monkeypatch.setattr(gradgeo.tasks.base, "fit", bug)
    with pytest.raises(TypeError, match="a bug"):
        main(["train", *cli_tiny(tiny_fashion), "--out", str(tmp_path / "run")])


# --------------------------------------------------------- 8. bf16 on a CPU without bfloat16 instructions warns


@pytest.mark.parametrize("capability,bf16,slow", [("AVX2", False, True), ("AVX512", False, True),
                                                  ("AVX512", True, False), ("NO AVX", False, True)])
def test_bf16_warns_on_cpus_without_bfloat16_instructions(tiny_fashion, monkeypatch, recwarn, capability, bf16, slow):
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: capability)
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: bf16)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False)
    train(tiny(tiny_fashion, precision="bf16", device="cpu"), None, log=None, stop_after=0)
    warned = [str(w.message) for w in recwarn if "bf16" in str(w.message)]
    if slow:
        assert len(warned) == 1 and capability in warned[0] and "--precision fp32" in warned[0]
    else:
        assert not warned


# ------------------------------------- 9. metric switches, JSON errors naming the file, resume refusal values


def test_state_dict_of_another_metric_is_refused():
    model, sobolev = wrapped()
    h0 = ChannelDirected(torch.optim.SGD(model[0].parameters(), lr=0.1), metric="h0", lam=2.0)
    with pytest.raises(ValueError, match="'h0'.*'sobolev'"):
        sobolev.load_state_dict(h0.state_dict())
    assert sobolev.param_groups[0]["metric"] == "sobolev" and "sobolev" in repr(sobolev)
    sobolev.param_groups[0]["metric"] = "none"
    assert "metric='none'" in repr(sobolev)


@pytest.mark.parametrize("name", ["plan.json", "result.json"])
def test_corrupt_comparison_json_is_named(tiny_fashion, tmp_path, name):
    out = tmp_path / "cmp"
    compare_task("classify", ["sgd"], [0], tiny(tiny_fashion), out, log=lambda line: None)
    path = out / name if name == "plan.json" else out / "runs" / "sgd" / "seed-0" / name
    path.write_text('{"specs": [')
    with pytest.raises(ValueError, match=str(path)):
        compare_task("classify", ["sgd"], [0], tiny(tiny_fashion), out, log=lambda line: None)


def test_resume_refusal_shows_old_and_new_values(tiny_fashion, tmp_path):
    config = tiny(tiny_fashion, epochs=2, optimizer="sgd+sobolev:lam=0.1")
    train(config, tmp_path, log=None, stop_after=1)
    with pytest.raises(ValueError, match=r"lr: 0\.05 in the checkpoint, 0\.5 now"):
        train(dataclasses.replace(config, lr=0.5), tmp_path, log=None, resume=True)


def test_resume_accepts_equal_settings_written_differently(tiny_fashion, tmp_path, monkeypatch):
    config = tiny(tiny_fashion, epochs=2, optimizer="sgd+sobolev:lam=0.1,boundary=periodic")
    train(config, tmp_path / "run", log=None, stop_after=1)
    monkeypatch.chdir(tiny_fashion.parent)
    same = dataclasses.replace(config, optimizer=" SGD + Sobolev:boundary=periodic, lam=1e-1",
                               data_dir=os.path.relpath(tiny_fashion) + "/")
    assert len(train(same, tmp_path / "run", log=None, resume=True)) == 2


def test_one_seed_summaries_are_strict_json_and_files_get_the_usual_mode(tiny_fashion, tmp_path, capsys):
    """A one-seed comparison has no confidence interval: summary.json says null, not the NaN token that is not
    JSON; every file a run writes has the mode an ordinary write gives (0666 less the umask), not mkstemp's 0600."""
    previous = os.umask(0o022)
    try:
        code, err = run_cli(["compare", "sgd", "sgd+h0:lam=2", *cli_tiny(tiny_fashion), "--train-size", "200",
                             "--seeds", "1", "--out", tmp_path / "c"], capsys)
    finally:
        os.umask(previous)
    assert code == 0, err

    def no_constants(token):
        raise AssertionError(f"summary.json holds the non-JSON token {token}")

    summary = json.loads((tmp_path / "c" / "summary.json").read_text(), parse_constant=no_constants)
    assert summary["rows"][0]["final_test_acc"]["half_width"] is None
    written = [p for p in (tmp_path / "c").rglob("*") if p.is_file()]
    assert written and {oct(p.stat().st_mode & 0o777) for p in written} == {"0o644"}, [
        (p.name, oct(p.stat().st_mode & 0o777)) for p in written]


def _wait_for(predicate, seconds: float = 120.0) -> bool:
    import time

    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.2)
    return False


def _gradgeo(*args, **kwargs) -> subprocess.Popen:
    import sys

    return subprocess.Popen([sys.executable, "-m", "gradgeo.cli", *map(str, args)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, **kwargs)


def test_a_run_folder_has_one_writer_and_a_killed_writer_leaves_no_stale_lock(tiny_fashion, tmp_path, capsys):
    """A real second process: while one `gradgeo train` writes a folder, another on the same --out (with
    --resume, which would otherwise continue it) is refused; once the first is killed with SIGKILL, the lock is
    gone with it and the run resumes."""
    out = tmp_path / "run"
    first = _gradgeo("train", *cli_tiny(tiny_fashion), "--train-size", "400", "--epochs", "50", "--out", out)
    try:
        assert _wait_for(lambda: (out / "metrics.jsonl").exists() and (out / "metrics.jsonl").read_text()), \
            first.stderr.read() if first.poll() is not None else "no epoch in time"
        code, err = run_cli(["train", *cli_tiny(tiny_fashion), "--train-size", "400", "--epochs", "50", "--resume",
                             "--out", out], capsys)
        assert code == 2 and "is in use: another gradgeo process is writing a run there" in err
    finally:
        first.kill()
        first.wait()
    code, err = run_cli(["train", *cli_tiny(tiny_fashion), "--train-size", "400", "--epochs", "2", "--resume",
                         "--out", tmp_path / "other"], capsys)
    assert code == 0, err
    lines = (out / "metrics.jsonl").read_text().splitlines()
    assert all(json.loads(line)["epoch"] == i + 1 for i, line in enumerate(lines))  # one writer: no interleaving


def test_a_second_comparison_is_refused_and_workers_end_with_their_parent(tiny_fashion, tmp_path, capsys):
    import signal

    out = tmp_path / "cmp"
    parent = _gradgeo("compare", "sgd", "sgd+h0:lam=2", *cli_tiny(tiny_fashion), "--train-size", "400", "--epochs",
                      "50", "--seeds", "2", "--jobs", "2", "--out", out)
    try:
        assert _wait_for(lambda: len(list(out.glob("runs/*/seed-*/metrics.jsonl"))) >= 2), "no runs started"
        code, err = run_cli(["compare", "sgd", "sgd+h0:lam=2", *cli_tiny(tiny_fashion), "--train-size", "400",
                             "--epochs", "50", "--seeds", "2", "--out", out], capsys)
        assert code == 2 and "is in use: another gradgeo process is writing a comparison there" in err
        children = subprocess.run(["pgrep", "-P", str(parent.pid)], capture_output=True, text=True).stdout.split()
        assert children, "the comparison started no worker processes"
        os.kill(parent.pid, signal.SIGKILL)
        parent.wait()

        def gone(pid: str) -> bool:
            try:
                os.kill(int(pid), 0)
            except ProcessLookupError:
                return True
            status = Path(f"/proc/{pid}/status")
            return status.exists() and "zombie" in status.read_text()

        assert _wait_for(lambda: all(gone(pid) for pid in children), 60), "workers outlived their parent"
    finally:
        if parent.poll() is None:
            parent.kill()
