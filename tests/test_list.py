"""``gradgeo list``: the listing names exactly what the registries hold, and its defaults are the real ones."""

from __future__ import annotations

import json
from contextlib import redirect_stdout
from io import StringIO

import pytest
import torch
from torch import nn

import gradgeo.models
from gradgeo.channel.factory import BASES, create_optimizer
from gradgeo.channel.registry import METRICS, OPTION_DEFAULTS
from gradgeo.cli.listing import SECTIONS
from gradgeo.cli.main import build_parser, main
from gradgeo.data.sources import DATASETS
from gradgeo.models import ANYTIME_MODELS, GAN_MODELS, MODELS, SEGMENTATION_MODELS
from gradgeo.multiexit import STRATEGIES, make_strategy
from gradgeo.tasks import TASKS
from gradgeo.tasks.anytime import parse_strategy


@pytest.fixture(scope="module")
def listed() -> dict:
    return _json()


def _json(*args: str) -> dict:
    out = StringIO()
    with redirect_stdout(out):
        assert main(["list", *args, "--json"]) == 0
    return json.loads(out.getvalue())


def _names(listed: dict, section: str) -> list[str]:
    return [entry["name"] for entry in listed[section]]


def test_the_json_names_exactly_the_registry_entries(listed):
    assert list(listed) == list(SECTIONS)
    assert _names(listed, "metrics") == list(METRICS)
    assert _names(listed, "optimizers") == list(BASES)
    assert _names(listed, "models") == [*MODELS, *SEGMENTATION_MODELS, *GAN_MODELS, *ANYTIME_MODELS]
    assert _names(listed, "datasets") == list(DATASETS)
    assert _names(listed, "tasks") == list(TASKS)
    assert _names(listed, "strategies") == list(STRATEGIES)
    for entry in listed["tasks"]:
        assert entry["models"] == list(TASKS[entry["name"]].models)
    for entry in listed["models"]:
        assert entry["tasks"] == [t.name for t in TASKS.values() if entry["name"] in t.models]
        assert entry["tasks"], f"no task takes model {entry['name']}"


def test_the_json_keys_are_stable(listed):
    option = {"name", "type", "default", "rule", "choices", "written"}
    keys = {"metrics": {"name", "summary", "options"}, "optimizers": {"name", "class", "options"},
            "models": {"name", "family", "builder", "tasks"},
            "datasets": {"name", "display_name", "files", "searched", "found", "how_to_get"},
            "tasks": {"name", "compares", "models", "default_model", "default_dataset", "metrics",
                      "optimizer_defaults"},
            "strategies": {"name", "class", "options"}}
    for section, entries in listed.items():
        for entry in entries:
            assert set(entry) == keys[section], (section, entry["name"])
            for o in entry.get("options", []):
                assert set(o) == option, (section, entry["name"], o)


def test_some_sections_only(listed):
    assert list(_json("models", "metrics")) == ["metrics", "models"]  # the order of the full listing
    assert _json("strategies") == {"strategies": listed["strategies"]}


def _model() -> nn.Module:
    torch.manual_seed(0)
    # a hidden conv between the first layer and the head: muon steps on it
    return nn.Sequential(nn.Conv2d(3, 6, 3), nn.ReLU(), nn.Conv2d(6, 6, 1), nn.ReLU(), nn.Flatten(),
                         nn.Linear(6 * 4 * 4, 3))


def _stepped(spec: str, steps: int = 2) -> list[torch.Tensor]:
    """The parameters after ``steps`` steps of the optimizer ``spec`` names on a fixed problem."""
    model = _model()
    opt = create_optimizer(model, spec)
    x = torch.randn(4, 3, 6, 6, generator=torch.Generator().manual_seed(1))
    for _ in range(steps):
        opt.zero_grad()
        model(x).square().mean().backward()
        opt.step()
    return [p.detach().clone() for p in model.parameters()]


def _same(a: list[torch.Tensor], b: list[torch.Tensor]) -> bool:
    return all(torch.equal(x, y) for x, y in zip(a, b, strict=True))


def _written(entry: dict) -> list[str]:
    return [o["written"] for o in entry["options"] if o["written"] is not None]


def test_every_listed_base_default_is_the_factory_default(listed):
    """A spec that writes out every listed default builds an optimizer that steps exactly as the bare spec."""
    for entry in listed["optimizers"]:
        base = entry["name"]
        without = [o["name"] for o in entry["options"] if o["written"] is None]  # lr (and muon's aux lr): the run's
        assert without == (["lr", "aux_lr"] if base == "muon" else ["lr"])
        rates = "lr=0.1,aux_lr=0.1" if base == "muon" else "lr=0.1"
        explicit = f"{base}:" + ",".join([rates, *_written(entry)])
        after = _stepped(explicit)
        assert not _same(after, [p.detach() for p in _model().parameters()]), explicit  # it stepped
        assert _same(after, _stepped(f"{base}:{rates}")), explicit


def test_the_weight_decay_default_is_create_optimizers_not_torchs(listed):
    """AdamW's own default decay is 0.01; specs take create_optimizer's 0 unless they say otherwise."""
    adamw = next(e for e in listed["optimizers"] if e["name"] == "adamw")
    assert {o["name"]: o["default"] for o in adamw["options"]}["weight_decay"] == 0.0
    assert not _same(_stepped("adamw:lr=0.1"), _stepped("adamw:lr=0.1,weight_decay=0.01"))


# a value other than every default, per metric option
_OTHER = {"lam": 0.37, "sigma": 3.0, "direction": "in", "boundary": "periodic", "apply_to": "conv/linear"}


@pytest.mark.parametrize("metric", METRICS)
def test_every_listed_metric_default_is_the_real_one_and_only_listed_options_matter(listed, metric):
    entry = next(e for e in listed["metrics"] if e["name"] == metric)
    bare = _stepped(f"sgd:lr=0.5+{metric}")
    explicit = f"sgd:lr=0.5+{metric}" + (":" + ",".join(_written(entry)) if entry["options"] else "")
    assert _same(_stepped(explicit), bare), explicit
    used = {o["name"] for o in entry["options"]}
    assert used <= set(OPTION_DEFAULTS)
    for option in OPTION_DEFAULTS:  # a listed option changes the step, an unlisted one is refused everywhere
        spec = f"sgd:lr=0.5+{metric}:{option}={_OTHER[option]}"
        if option in used:
            assert not _same(_stepped(spec), bare), (metric, option)
            continue
        with pytest.raises(ValueError, match=f"unknown option '{option}' for metric '{metric}'"):
            _stepped(spec)
        value = tuple(_OTHER[option].split("/")) if option == "apply_to" else _OTHER[option]
        with pytest.raises(ValueError, match=f"metric '{metric}' does not use option '{option}'"):
            gradgeo.ChannelDirected(torch.optim.SGD([torch.zeros(2, 2, requires_grad=True)], lr=0.1), metric,
                                    **{option: value})
        if metric != "none":
            opt = gradgeo.ChannelDirected(torch.optim.SGD([torch.zeros(2, 2, requires_grad=True)], lr=0.1), metric)
            with pytest.raises(ValueError, match=f"metric '{metric}' does not use option '{option}'"):
                opt.add_param_group({"params": [torch.zeros(2, 2, requires_grad=True)], option: value})
            assert len(opt.param_groups) == 1


def test_every_listed_choice_is_accepted(listed):
    """Each choice of a metric option, written alone, builds an optimizer that steps."""
    for entry in listed["metrics"]:
        for o in entry["options"]:
            for choice in o["choices"]:
                _stepped(f"sgd:lr=0.1+{entry['name']}:{o['name']}={choice}", steps=1)


@pytest.mark.parametrize("family_kwargs", [("classifier", {"num_classes": 10, "in_channels": 3}),
                                           ("segmentation", {"num_classes": 3}), ("gan", {}),
                                           ("anytime", {"num_classes": 10, "in_channels": 3})], ids=lambda f: f[0])
def test_each_listed_model_builds(listed, family_kwargs):
    family, kwargs = family_kwargs
    entries = [e for e in listed["models"] if e["family"] == family]
    assert entries
    for entry in entries:
        model = getattr(gradgeo.models, entry["builder"])(entry["name"], **kwargs)
        assert isinstance(model, nn.Module) and sum(p.numel() for p in model.parameters()) > 0, entry["name"]


def test_each_listed_strategy_default_is_the_real_one(listed):
    for entry in listed["strategies"]:
        spec = entry["name"] + (":" + ",".join(_written(entry)) if _written(entry) else "")
        name, options = parse_strategy(spec)
        assert repr(make_strategy(name, 3, **options)) == repr(make_strategy(name, 3)), spec
    osgd = next(e for e in listed["strategies"] if e["name"] == "osgd")
    assert osgd["options"][0] == {"name": "granularity", "type": "choice", "default": "global", "rule": "",
                                  "choices": ["global", "tensor"], "written": "granularity=global"}


def test_a_dataset_is_found_where_the_listing_says(tmp_path, monkeypatch):
    folder = tmp_path / "fashion-mnist"
    folder.mkdir()
    for name in ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte",
                 "t10k-labels-idx1-ubyte.gz"):
        (folder / name).touch()
    monkeypatch.setenv("GRADGEO_DATA", str(tmp_path))
    monkeypatch.chdir(tmp_path)
    entry = _json("datasets")["datasets"][0]
    assert entry["name"] == "fashion-mnist"
    assert entry["searched"][0] == str(folder) and entry["found"] == str(folder)
    assert "apt-get install dataset-fashion-mnist" in entry["how_to_get"]
    cifar = _json("datasets")["datasets"][DATASETS.index("cifar10")]
    assert cifar["found"] is None or "cifar" in cifar["found"]


def test_the_text_names_everything(listed, capsys):
    assert main(["list"]) == 0
    text = capsys.readouterr().out
    for section, entries in listed.items():
        for entry in entries:
            assert f"  {entry['name']} " in text, (section, entry["name"])
            for o in entry.get("options", []):
                assert o["written"] or o["name"] in text
    assert "sobolev" in text and "lam=0.1 (number > 0)" in text and "betas=0.9/0.999" in text
    assert main(["list", "metrics", "models"]) == 0
    text = capsys.readouterr().out
    assert "resnet20" in text and "sobolev" in text and "adagrad" not in text and "osgd" not in text


def test_an_unknown_section_is_an_error_naming_the_valid_ones(capsys):
    assert main(["list", "metrics", "bogus"]) == 2
    err = capsys.readouterr().err
    assert "gradgeo list: error: unknown section 'bogus'" in err
    assert all(section in err for section in SECTIONS)


def test_help_mentions_the_list_command():
    assert "gradgeo list" in build_parser().format_help()
