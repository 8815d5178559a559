"""Reliability, second round (issue 28): faults caused for real, in real processes and on real files. Memory
that runs out under a real address-space limit, checkpoints that hold code; more tests of this round sit beside
the code they test (the bad-input matrix, test_data, test_optim, test_tune)."""

import os
import resource
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from gradgeo.experiments.analyze import load_checkpoint
from gradgeo.training.config import TrainConfig
from gradgeo.training.engine import train

TINY = ["--batch-size", "50", "--epochs", "1", "--train-size", "100", "--quiet"]


def _gradgeo(*args, limit: int | None = None, **kwargs) -> subprocess.CompletedProcess:
    """``python -m gradgeo.cli ARGS`` to its end, with its address space capped at ``limit`` bytes."""

    def cap() -> None:
        if limit is not None:
            resource.setrlimit(resource.RLIMIT_AS, (limit, limit))

    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(__file__).parents[1] / "src")}
    return subprocess.run([sys.executable, "-m", "gradgeo.cli", *map(str, args)], capture_output=True, text=True,
                          preexec_fn=cap, env=env, timeout=600, **kwargs)


def test_a_model_beyond_the_memory_is_one_line(tiny_fashion, tmp_path):
    """Under a real 3 GiB address-space limit, where a small run trains, the widest small_cnn (1.2 GB for one of
    its weights alone) cannot be allocated: one line that says so and what to lower, exit code 2."""
    limit = 3 << 30
    small = _gradgeo("train", "--data-dir", tiny_fashion, *TINY, "--width", "0.25", "--out", tmp_path / "small",
                     limit=limit)
    assert small.returncode == 0, small.stderr  # the limit leaves room for a run: what fails below is the size
    wide = _gradgeo("train", "--data-dir", tiny_fashion, *TINY, "--width", "64", "--out", tmp_path / "wide",
                    limit=limit)
    assert wide.returncode == 2 and "Traceback" not in wide.stderr, wide.stderr
    assert wide.stderr.startswith("gradgeo train: error: out of memory (") and "--width" in wide.stderr
    assert len(wide.stderr.strip().splitlines()) == 1


class _Blocked:
    def __reduce__(self):  # a function of a module torch's weights-only unpickler blocks
        return (os.getcwd, ())


@pytest.mark.parametrize("payload", [_Blocked(), nn.Linear(1, 1)], ids=["blocked-module", "class-not-allowed"])
def test_a_checkpoint_that_could_run_code_is_refused_without_advice_to_load_it_anyway(tiny_fashion, tmp_path,
                                                                                     payload):
    """torch's refusal advises loading the file with weights_only=False or allowlisting its globals, which would
    run its code: the message names the file and what was refused, and gives no such advice."""
    train(TrainConfig(data_dir=str(tiny_fashion), batch_size=50, epochs=1, train_size=100), tmp_path, log=None)
    checkpoint = tmp_path / "checkpoint.pt"
    state = torch.load(checkpoint, weights_only=True)
    state["history"][0]["note"] = payload
    torch.save(state, checkpoint)
    with pytest.raises(ValueError) as info:
        load_checkpoint(checkpoint)
    message = str(info.value)
    assert message.startswith(f"cannot read the checkpoint {checkpoint}: it holds more than tensors")
    assert ("getcwd" if isinstance(payload, _Blocked) else "Linear") in message
    assert not [word for word in ("weights_only", "safe_globals", "allowlist", "trust", "documentation")
                if word in message], message


# ------------------------------------------------------------ a writer killed mid-write, read-only media

_KILLED_WRITER = """
import sys, time
from pathlib import Path
from gradgeo.training.run_folder import _atomic_save, hold_folder

class Slow:
    def __reduce__(self):  # pickled inside the atomic write, after its temporary file exists
        time.sleep(600)

out = Path(sys.argv[1])
with hold_folder(out):  # a run that holds its folder and is writing its checkpoint
    _atomic_save({"model": Slow()}, out / "checkpoint.pt")
"""


def _wait_for(predicate, seconds: float = 60.0) -> bool:
    import time

    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.1)
    return False


def test_a_killed_writers_temporary_file_goes_when_the_folder_is_next_held(tiny_fashion, tmp_path):
    """A real process killed (SIGKILL) in the middle of an atomic write leaves its temporary file. While a
    process holds the folder, nothing touches it (the second writer is refused); the next run that holds the
    folder removes it, and only files of that naming (.NAME.XXXXXXXX.tmp), not a user's."""
    from gradgeo.training.run_folder import TEMP_NAME

    config = TrainConfig(data_dir=str(tiny_fashion), batch_size=50, epochs=2, train_size=100)
    out = tmp_path / "run"
    train(config, out, log=None, stop_after=1)
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[1] / "src")}
    writer = subprocess.Popen([sys.executable, "-c", _KILLED_WRITER, str(out)], env=env)
    try:
        assert _wait_for(lambda: any(TEMP_NAME.fullmatch(p.name) for p in out.iterdir())), "no temporary file"
        with pytest.raises(ValueError, match="is in use"):
            train(config, out, log=None, resume=True)
        assert any(TEMP_NAME.fullmatch(p.name) for p in out.iterdir())  # in use: left alone
    finally:
        writer.kill()
        writer.wait()
    user_files = [out / "notes.tmp", out / ".checkpoint.pt.tmp", out / ".checkpoint.pt.mine-too-long.tmp"]
    for path in user_files:
        path.write_text("not gradgeo's\n")
    assert len(train(config, out, log=None, resume=True)) == 2
    assert not [p.name for p in out.iterdir() if TEMP_NAME.fullmatch(p.name)]
    assert all(path.read_text() == "not gradgeo's\n" for path in user_files)


@pytest.fixture()
def read_only(tmpfs, tmp_path):
    """``(folder, seal)``: a folder to fill, and ``seal()`` making it read-only for real: as root (which ignores
    permissions) a tmpfs remounted read-only, else the folder's write permissions taken away."""
    folder = tmpfs("64m")
    if folder is not None:
        yield folder, lambda: tmpfs.read_only(folder)
        return
    if os.geteuid() == 0:
        pytest.skip("root, and mounting a tmpfs is not permitted here: no way to make a folder read-only for root")
    folder = tmp_path / "media"
    folder.mkdir()

    def seal() -> None:
        for path in [folder, *folder.rglob("*")]:
            path.chmod(path.stat().st_mode & ~0o222)

    yield folder, seal
    for path in [folder, *folder.rglob("*")]:
        path.chmod(path.stat().st_mode | 0o200)


def test_finished_runs_and_comparisons_are_read_from_read_only_media(tiny_fashion, read_only, capsys):
    """A finished comparison and a finished run, on media made read-only: the same commands again print the
    table and end with code 0, writing nothing (the lock, plan.json, the summary, the plots, metrics.jsonl and
    result.json are not rewritten when nothing changed)."""
    from gradgeo.cli import main

    folder, seal = read_only
    common = ["--data-dir", str(tiny_fashion), "--batch-size", "50", "--epochs", "1", "--train-size", "100",
              "--quiet"]
    commands = [["compare", "sgd", "sgd+h0:lam=2", "--seeds", "2", *common, "--out", str(folder / "cmp")],
                ["train", *common, "--out", str(folder / "run"), "--resume"]]
    for argv in commands:
        assert main(argv) == 0, capsys.readouterr().err
    table = capsys.readouterr().out
    before = {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in folder.rglob("*") if p.is_file()}
    seal()
    for argv in commands:
        code = main(argv)
        assert code == 0, capsys.readouterr().err
    assert "sgd+h0:lam=2" in capsys.readouterr().out and "sgd+h0:lam=2" in table
    assert {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in folder.rglob("*") if p.is_file()} == before
