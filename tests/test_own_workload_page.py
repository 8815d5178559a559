"""docs/own-workload.md runs as written: its module and pyproject.toml become a user package outside the
repository (installed the way ``pip install -e .`` would make its entry point visible: a ``.dist-info`` with
``entry_points.txt`` on the path, so the test leaves the environment alone), its data step writes the npz, and
its ``gradgeo compare`` and ``gradgeo tune`` commands run as real processes (with ``--jobs`` workers) and put the
built-in and the registered metric side by side."""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

PAGE = Path(__file__).parents[1] / "docs" / "own-workload.md"
FENCE = re.compile(r'^```(?P<lang>\w+) title="(?P<title>[^"]+)"\n(?P<code>.*?)^```', re.S | re.M)
FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")


def _blocks() -> dict[str, str]:
    return {m["title"]: m["code"] for m in FENCE.finditer(PAGE.read_text())}


def _entry_points(pyproject: str) -> list[str]:
    """The ``name = "module:callable"`` lines of the gradgeo.metrics entry-point table."""
    table = re.search(r'^\[project\.entry-points\."gradgeo\.metrics"\]\n(?P<body>(?:[^\[\n].*\n?)*)', pyproject, re.M)
    assert table, "the page's pyproject.toml declares no gradgeo.metrics entry point"
    return [f"{name} = {target}" for name, target in re.findall(r'^(\w+)\s*=\s*"([^"]+)"', table["body"], re.M)]


def test_the_page_has_the_blocks_this_test_runs():
    assert set(_blocks()) == {"mylab.py", "pyproject.toml", "make_data.py", "shell"}
    assert _entry_points(_blocks()["pyproject.toml"]) == ["center = mylab:register"]


@pytest.mark.skipif(not FASHION_DIR.is_dir(), reason="the page's data step reads Fashion-MNIST")
def test_the_own_workload_page_runs_as_written(tmp_path):
    blocks = _blocks()
    package = tmp_path / "mylab-src"  # outside the repository, found only through PYTHONPATH
    package.mkdir()
    (package / "mylab.py").write_text(blocks["mylab.py"])
    (package / "pyproject.toml").write_text(blocks["pyproject.toml"])
    info = package / "mylab-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: mylab\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[gradgeo.metrics]\n" + "\n".join(_entry_points(blocks["pyproject.toml"]))
                                           + "\n")
    work = tmp_path / "work"
    work.mkdir()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(package), os.environ.get("PYTHONPATH")])),
           "OMP_NUM_THREADS": "1"}
    subprocess.run([sys.executable, "-c", blocks["make_data.py"]], cwd=work, env=env, check=True)
    assert (work / "mydata.npz").is_file()

    lines = re.sub(r"\\\n", " ", blocks["shell"]).splitlines()  # a line ending in a backslash continues
    commands = [shlex.split(line) for line in lines if line.strip()]
    assert [c[:2] for c in commands] == [["gradgeo", "compare"], ["gradgeo", "tune"]]
    outputs = []
    for command in commands:
        done = subprocess.run([sys.executable, "-m", "gradgeo.cli", *command[1:]], cwd=work, env=env,
                              capture_output=True, text=True, timeout=900)
        assert done.returncode == 0, done.stderr[-3000:]
        outputs.append(done.stdout)

    summary = json.loads((work / "runs/mylab/summary.json").read_text())
    specs = [row["spec"] for row in summary["rows"]]
    assert specs == ["sgd", "sgd+h0:lam=2", "sgd+center:alpha=0.5"]
    for row in summary["rows"]:  # every spec trained both seeds and learned far above chance (10%)
        assert row["n"] == 2 and row["final_test_acc"]["mean"] > 0.5, row
    assert "sgd+center:alpha=0.5" in outputs[0]
    assert (work / "runs/mylab/curves.png").is_file()

    tuned = {row["spec"]: row for row in json.loads((work / "runs/mylab-tune/summary.json").read_text())["rows"]}
    assert set(tuned) == {"sgd", "sgd+center"}
    assert [name for name, _, _ in tuned["sgd+center"]["search_space"]] == ["lr", "alpha"]
    assert tuned["sgd+center"]["search_space"][1][1:] == [0.01, 1.0]  # the range the metric declared
    assert all(row["complete"] + row["pruned"] == 2 for row in tuned.values())
    assert "alpha=" in tuned["sgd+center"]["best"]["spec"]
