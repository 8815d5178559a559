"""Optional extras: a missing package gives a one-line error naming ``pip install 'gradgeo[EXTRA]'``.

The packages are hidden here by making their imports fail; scripts/check-wheel.sh checks the same messages in a
real install of the wheel with torch alone.
"""

import importlib.util
import sys

import pytest

from gradgeo.cli import main
from gradgeo.training import extras
from gradgeo.training.config import TrainConfig
from gradgeo.training.engine import train
from gradgeo.training.extras import MissingExtraError, check, missing, require


@pytest.fixture
def hide(monkeypatch):
    """hide(*modules): make those modules look uninstalled (find_spec and import both fail)."""
    find_spec = importlib.util.find_spec

    def hide(*modules: str) -> None:
        monkeypatch.setattr(importlib.util, "find_spec",
                            lambda name, *args: None if name in modules else find_spec(name, *args))
        for name in modules:
            monkeypatch.setitem(sys.modules, name, None)  # import raises ImportError

    return hide


def test_missing_check_and_require_name_the_extra(hide):
    hide("scipy", "tqdm", "tqdm.auto")
    assert missing("harness") == ["tqdm", "scipy"]
    assert missing("harness", ("matplotlib",)) == []
    with pytest.raises(MissingExtraError, match=r"plots needs the optional packages tqdm, scipy: "
                                                r"pip install 'gradgeo\[harness\]'"):
        check("harness", "plots")
    check("harness", "plots", ("numpy",))  # present: nothing raised
    with pytest.raises(MissingExtraError, match=r"bars needs the optional package 'tqdm.auto': "
                                                r"pip install 'gradgeo\[harness\]'"):
        require("tqdm.auto", "harness", "bars")
    with pytest.raises(ValueError, match="unknown extra 'plots'; gradgeo's extras are harness"):
        missing("plots")


def test_extras_match_pyproject():
    """EXTRAS lists, per extra, the modules of the packages pyproject.toml's extra installs."""
    tomllib = pytest.importorskip("tomllib")
    from pathlib import Path

    project = tomllib.loads((Path(__file__).parents[1] / "pyproject.toml").read_text())["project"]
    for extra, modules in extras.EXTRAS.items():
        requirements = project["optional-dependencies"][extra]
        packages = [r.split(">")[0].split("=")[0].split("<")[0].split("[")[0] for r in requirements]
        imported_as = {"pillow": "PIL"}  # the distributions whose module has another name
        assert sorted(imported_as.get(p, p) for p in packages) == sorted(modules), extra


def test_cli_commands_say_which_extra_is_missing(hide, tmp_path, capsys):
    hide("scipy", "tensorboard")
    assert main(["compare", "sgd", "--seeds", "1", "--epochs", "1", "--out", str(tmp_path / "c")]) == 2
    assert "gradgeo compare: error: a comparison's summary (statistics and plots) needs the optional package scipy: " \
           "pip install 'gradgeo[harness]'" in capsys.readouterr().err
    assert not (tmp_path / "c" / "runs").exists()  # said before any training
    assert main(["train", "--epochs", "1", "--log", "tensorboard", "--out", str(tmp_path / "t")]) == 2
    assert "pip install 'gradgeo[tensorboard]'" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    assert "MISSING scipy: pip install 'gradgeo[harness]'" in out
    assert "MISSING tensorboard: pip install 'gradgeo[tensorboard]'" in out


def test_progress_bars_without_tqdm_name_the_extra(hide, tiny_fashion, tmp_path):
    hide("tqdm", "tqdm.auto")
    config = TrainConfig(data_dir=str(tiny_fashion), width=0.25, batch_size=100, epochs=1)
    with pytest.raises(MissingExtraError, match=r"progress bars .* pip install 'gradgeo\[harness\]'"):
        train(config, None, log=None, progress=True)
    assert train(config, None, log=None, progress=False)[0]["epoch"] == 1  # the bars are the only use of tqdm
