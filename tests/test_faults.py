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
from gradgeo.training.engine import TrainConfig, train

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
