"""Reliability, second round (issue 28): faults caused for real, in real processes. Memory that runs out
under a real address-space limit; more tests of this round sit beside the code they test (the bad-input matrix,
test_data, test_optim, test_tune)."""

import os
import resource
import subprocess
import sys
from pathlib import Path

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
