"""scripts/pair_folders.py: one spec's runs in two comparison folders, paired by seed."""

import importlib.util
import json
from contextlib import redirect_stdout
from io import StringIO
from pathlib import Path

import pytest

from gradgeo.experiments.grid import run_dir

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("pair_folders", ROOT / "scripts" / "pair_folders.py")
assert _spec and _spec.loader
script = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(script)


def finished(folder: Path, spec: str, seed: int, test_acc: float, val: list[float]) -> None:
    """A finished run's result.json as the grid writes it (the fields the script reads)."""
    path = run_dir(folder, spec, seed)
    path.mkdir(parents=True)
    history = [{"epoch": e + 1, "val_acc": v, "test_acc": test_acc, "train_acc": 0.9, "time": 10.0 + seed}
               for e, v in enumerate(val)]
    (path / "result.json").write_text(json.dumps({"history": history}))


def run(*args: str) -> str:
    out = StringIO()
    with redirect_stdout(out):
        script.main(list(args))
    return out.getvalue()


def test_pairs_the_seeds_both_folders_finished(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    for seed, (x, y) in enumerate([(0.80, 0.81), (0.82, 0.84), (0.81, 0.84)], start=1):
        finished(a, "sgd", seed, x, [0.5, 0.7])
        finished(b, "sgd", seed, y, [0.6, 0.75])
    finished(a, "sgd", 4, 0.99, [0.9, 0.9])  # only in A: left out
    rows = {line[:18].strip(): line[18:].split() for line in run(str(a), str(b), "sgd").splitlines()[2:]}
    # differences 1, 2, 3 points: mean 2, sd 1, 95% CI half-width t(0.975, 2) / sqrt(3) = 2.48
    assert rows["final test acc"][6:9] == ["2.00", "±", "2.48"]
    assert rows["final test acc"][0] == "81.00"  # A's mean over seeds 1-3, without seed 4
    assert rows["best val acc"][6] == "5.00" and rows["final val acc"][6] == "5.00"
    assert rows["final train acc"][6] == "0.00"
    assert "seeds [1, 2, 3]" in run(str(a), str(b), "sgd")
    assert "seeds [1, 2]" in run(str(a), str(b), "sgd", "1", "2")


def test_no_common_seed_is_an_error_naming_both_folders(tmp_path):
    finished(tmp_path / "a", "sgd", 1, 0.8, [0.5])
    with pytest.raises(SystemExit, match="no seed of 'sgd' has finished in both"):
        run(str(tmp_path / "a"), str(tmp_path / "b"), "sgd")
    with pytest.raises(SystemExit, match="seeds are integers"):
        run(str(tmp_path / "a"), str(tmp_path / "a"), "sgd", "one")
