"""Data-parallel training on 2 gloo processes equals one process on the concatenated batch.

* ChannelDirected under DDP, for every metric: the transform acts on the all-reduced gradient.
* Every multi-exit strategy, OSGD included, under DDP (forward in ``no_sync``, the per-exit gradients averaged
  over the ranks before they are combined).
* The engine under a torchrun-like environment, with the cross-entropy and the multi-exit objective: sharded
  batches, training metrics summed over the ranks, rank-0 files, resume, the batch-size rule.
* ``compare_task`` (classify and anytime) under DDP: the summary from rank 0 on every rank, files written once.
"""

import dataclasses
import json
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
from torch import nn

from _multiprocess import run_ranks
from gradgeo import models
from gradgeo.channel.optim import METRICS, channel_directed
from gradgeo.data import DatasetSplits, Loader
from gradgeo.experiments import compare_task
from gradgeo.multiexit.strategies import make_strategy
from gradgeo.tasks.anytime import AnytimeConfig, MultiExitObjective, parse_strategy
from gradgeo.training.config import TrainConfig
from gradgeo.training.engine import fit, train
from gradgeo.training.run_folder import _json_safe

OPTIONS = {"h0": {"lam": 2.0}, "sobolev": {"lam": 0.1}, "h1": {"lam": 0.01}, "laplacian": {"sigma": 1.0}, "none": {}}
STRATEGIES = ["sum", "sdn", "adaloss", "pcgrad", "osgd", "osgd:granularity=tensor"]


def tiny_cnn() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 7, 3), nn.Tanh(), nn.Conv2d(7, 5, 3), nn.Tanh(), nn.Flatten(),
                         nn.Linear(5 * 2 * 2, 3)).double()


class TwoExits(nn.Module):
    """A trunk with an exit after each of two stages (exit 1 first); no BatchNorm."""

    num_exits = 2

    def __init__(self, num_classes: int = 3, in_channels: int = 3) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.stage1, self.stage2 = nn.Conv2d(in_channels, 6, 3), nn.Conv2d(6, 6, 3)
        self.exit1, self.exit2 = nn.Linear(6, num_classes), nn.Linear(6, num_classes)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h1 = torch.tanh(self.stage1(x))
        h2 = torch.tanh(self.stage2(h1))
        return self.exit1(h1.mean((2, 3))), self.exit2(h2.mean((2, 3)))


def _largest_difference(a: nn.Module, b: nn.Module) -> float:
    return max((p - q).abs().max().item() for p, q in zip(a.parameters(), b.parameters()))


def _step_cases(rank: int, world: int) -> dict[str, float]:
    x = torch.randn(8, 3, 6, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    y = torch.arange(8) % 3
    part = slice(rank * 8 // world, (rank + 1) * 8 // world)
    results = {}
    for metric in METRICS:
        # every parameter kind (the identity "none" takes no options at all)
        options = {"metric": metric, **({"apply_to": ("conv", "linear", "vector")} if metric != "none" else {}),
                   **OPTIONS[metric]}
        reference, model = tiny_cnn(), tiny_cnn()
        ref_opt = channel_directed(reference, torch.optim.SGD, lr=0.1, momentum=0.9, **options)
        ddp = nn.parallel.DistributedDataParallel(model)
        opt = channel_directed(model, torch.optim.SGD, lr=0.1, momentum=0.9, **options)
        for _ in range(2):
            nn.functional.cross_entropy(reference(x), y).backward()
            ref_opt.step()
            ref_opt.zero_grad()
            nn.functional.cross_entropy(ddp(x[part]), y[part]).backward()  # all-reduces the gradients
            opt.step()
            opt.zero_grad()
        results[f"ddp-{metric}"] = _largest_difference(model, reference)

    for spec in STRATEGIES:
        name, options = parse_strategy(spec)
        reference, model = TwoExits().double(), TwoExits().double()
        ref_strategy, strategy = make_strategy(name, 2, **options), make_strategy(name, 2, **options)
        ref_opt = torch.optim.SGD(reference.parameters(), lr=0.1, momentum=0.9)
        ddp = nn.parallel.DistributedDataParallel(model)
        opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
        for step in range(3):
            losses = [nn.functional.cross_entropy(out, y) for out in reference(x)]
            ref_strategy.backward(losses, reference.parameters(), progress=step / 3)
            ref_opt.step()
            ref_opt.zero_grad()
            with ddp.no_sync():  # the strategy averages the per-exit gradients (osgd.backward: process_group)
                losses = [nn.functional.cross_entropy(out, y[part]) for out in ddp(x[part])]
                strategy.backward(losses, model.parameters(), progress=step / 3, process_group=dist.group.WORLD)
            opt.step()
            opt.zero_grad()
        results[f"strategy-{spec}"] = _largest_difference(model, reference)
    return results


def _all_cases(rank: int, world: int, data_dir: str | None, out: str) -> dict:
    """Every case of this file on the same 2 processes: the steps, the engine, the comparisons (these need the
    tiny Fashion-MNIST: None without it)."""
    return {"steps": _step_cases(rank, world), "engine": _engine_run(rank, world, str(Path(out) / "engine")),
            "compare": None if data_dir is None else _compare_run(rank, world, data_dir, str(Path(out) / "compare"))}


@pytest.fixture(scope="module")
def launch(request, tmp_path_factory) -> tuple[Path, list[dict]]:
    """One launch of 2 processes for all the cases (starting them and importing torch costs seconds each time);
    each test reads its case's results."""
    try:
        data_dir: str | None = str(request.getfixturevalue("tiny_fashion"))
    except pytest.skip.Exception:  # the comparison tests skip; the others run without the data
        data_dir = None
    out = tmp_path_factory.mktemp("ddp")
    return out, run_ranks(_all_cases, 2, data_dir, str(out))


@pytest.fixture(scope="module")
def step_results(launch) -> dict[str, float]:
    ranks = [rank["steps"] for rank in launch[1]]
    assert ranks[0] == ranks[1]  # the ranks agree (bit for bit) with each other
    return ranks[0]


@pytest.mark.parametrize("metric", METRICS)
def test_channel_directed_under_ddp_equals_one_process_on_the_whole_batch(step_results, metric):
    assert step_results[f"ddp-{metric}"] < 1e-12


@pytest.mark.parametrize("spec", STRATEGIES)
def test_multiexit_strategy_under_ddp_equals_one_process_on_the_whole_batch(step_results, spec):
    assert step_results[f"strategy-{spec}"] < 1e-12


# ------------------------------------------------------------------------------------ the engine


class PlainCNN(nn.Module):
    """No BatchNorm: under DDP a BatchNorm layer normalizes each rank's share, so only a model without one
    trains exactly as one process does."""

    def __init__(self, num_classes: int = 10, in_channels: int = 1, width: float = 1.0) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Conv2d(in_channels, 6, 3), nn.ReLU(), nn.Conv2d(6, 8, 3, stride=2), nn.ReLU(),
                                 nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def synthetic_splits() -> DatasetSplits:
    g = torch.Generator().manual_seed(0)
    images = lambda n: torch.randint(0, 256, (n, 1, 8, 8), dtype=torch.uint8, generator=g)  # noqa: E731
    labels = lambda n: torch.randint(0, 3, (n,), generator=g)  # noqa: E731
    return DatasetSplits("synthetic", "synthetic", Path("."), ("a", "b", "c"), images(64), labels(64),
                         images(32), labels(32), (0.5,), (0.3,))


CONFIG = TrainConfig(dataset="synthetic", model="plain_cnn", optimizer="sgd+sobolev:lam=0.1,apply_to=conv/linear",
                     lr=0.1, epochs=2, batch_size=16, augment=True, seed=3)


def multiexit_build(spec: str):
    """``fit``'s build for the multi-exit objective with strategy ``spec`` on :class:`TwoExits`."""

    def build(model_args: dict[str, int]) -> tuple[nn.Module, MultiExitObjective]:
        model = TwoExits(**model_args)
        name, options = parse_strategy(spec)
        return model, MultiExitObjective(model, make_strategy(name, 2, **options), flops=[1, 2])

    return build


def _engine_run(rank: int, world: int, out: str) -> dict:
    models._REGISTRY["plain_cnn"] = PlainCNN
    splits, lines = synthetic_splits(), []
    anytime = {spec: fit(CONFIG, multiexit_build(spec), splits=splits, log=None) for spec in STRATEGIES}
    full = train(CONFIG, Path(out) / "full", splits=splits, log=lines.append)
    partial = train(CONFIG, Path(out) / "cut", splits=splits, stop_after=1, log=None)
    resumed = train(CONFIG, Path(out) / "cut", splits=splits, resume=True, log=None)
    try:
        train(dataclasses.replace(CONFIG, batch_size=15), splits=splits, log=None)
        error = ""
    except ValueError as e:
        error = str(e)
    return {"full": full, "partial": partial, "resumed": resumed, "error": error, "log": lines, "anytime": anytime}


def strip_time(history):
    return [{k: v for k, v in row.items() if k != "time"} for row in history]


@pytest.fixture(scope="module")
def engine_runs(launch):
    out, ranks = launch
    return out / "engine", [rank["engine"] for rank in ranks]


def assert_same_rows(ddp_history, history):
    for ddp_row, row in zip(strip_time(ddp_history), strip_time(history), strict=True):
        assert ddp_row.keys() == row.keys()
        for key, value in row.items():
            assert ddp_row[key] == (value if value is None else pytest.approx(value, rel=1e-5, abs=1e-6)), key


def test_engine_under_ddp_trains_like_one_process(engine_runs, tmp_path, monkeypatch):
    out, ranks = engine_runs
    monkeypatch.setitem(models._REGISTRY, "plain_cnn", PlainCNN)
    single = train(CONFIG, tmp_path, splits=synthetic_splits(), log=None)
    assert strip_time(ranks[0]["full"]) == strip_time(ranks[1]["full"])  # every rank returns rank 0's rows
    assert_same_rows(ranks[0]["full"], single)  # the training metrics too: summed over the ranks
    ddp_state = torch.load(out / "full" / "checkpoint.pt", weights_only=False)["model"]
    one_state = torch.load(tmp_path / "checkpoint.pt", weights_only=False)["model"]
    assert ddp_state.keys() == one_state.keys()  # saved unwrapped: checkpoints move between world sizes
    for key in one_state:
        torch.testing.assert_close(ddp_state[key], one_state[key], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("spec", STRATEGIES)
def test_multiexit_objective_under_ddp_trains_like_one_process(engine_runs, spec):
    _, ranks = engine_runs
    single = fit(CONFIG, multiexit_build(spec), splits=synthetic_splits(), log=None)
    assert strip_time(ranks[0]["anytime"][spec]) == strip_time(ranks[1]["anytime"][spec])
    assert_same_rows(ranks[0]["anytime"][spec], single)  # per-exit training metrics summed over the ranks


def test_engine_under_ddp_resumes_and_logs_and_writes_from_rank_0(engine_runs):
    out, ranks = engine_runs
    assert len(ranks[0]["log"]) == 3 and ranks[1]["log"] == []  # the header and 2 epochs, once
    assert len(ranks[1]["partial"]) == 1
    assert strip_time(ranks[0]["resumed"]) == strip_time(ranks[0]["full"])
    assert len((out / "cut" / "metrics.jsonl").read_text().splitlines()) == 2  # one writer: no duplicate lines
    assert (out / "cut" / "result.json").exists()


def test_engine_under_ddp_needs_a_divisible_global_batch(engine_runs):
    _, ranks = engine_runs
    assert "global batch" in ranks[0]["error"] and "divisible by the 2 processes" in ranks[0]["error"]


def test_sharded_loader_parts_make_up_the_single_process_batch():
    x, y = torch.randint(0, 256, (22, 1, 8, 8), dtype=torch.uint8), torch.arange(22)
    kwargs = {"mean": [0.5], "std": [0.3], "seed": 1, "augment": lambda xb, g: xb.flip(3) if torch.rand(
        (), generator=g) < 0.5 else xb}
    whole = list(Loader(x, y, 8, **kwargs).epoch(2))
    parts = [list(Loader(x, y, 8, rank=r, world_size=3, **kwargs).epoch(2)) for r in range(3)]
    for b, (xb, yb) in enumerate(whole):
        torch.testing.assert_close(torch.cat([p[b][0] for p in parts]), xb, rtol=0, atol=0)
        assert torch.cat([p[b][1] for p in parts]).tolist() == yb.tolist()
    assert [len(p[-1][1]) for p in parts] == [2, 2, 2]  # the last batch of 6: sizes differ by at most one
    with pytest.raises(ValueError, match="rank must be"):
        Loader(x, y, 8, mean=[0.5], std=[0.3], rank=2, world_size=2)


# ------------------------------------------------------------------------------------ comparisons


def _compare_run(rank: int, world: int, data_dir: str, out: str) -> dict:
    lines: list[str] = []
    base = TrainConfig(data_dir=data_dir, width=0.25, epochs=1, batch_size=50)
    summary = compare_task("classify", ["sgd", "sgd+h1:lam=0.01"], [0], base, Path(out) / "compare",
                           log=lines.append, progress=False)
    anytime_base = AnytimeConfig(data_dir=data_dir, model="branched_resnet10", width=0.25, epochs=1, batch_size=50,
                                 val_size=100)
    anytime = compare_task("anytime", ["sum", "osgd"], [0], anytime_base, Path(out) / "anytime", log=lines.append,
                           progress=False)
    try:
        compare_task("classify", ["sgd"], [0], base, Path(out) / "jobs", jobs=2, log=lines.append)
        error = ""
    except ValueError as e:
        error = str(e)
    return {"summary": summary, "anytime": anytime, "lines": lines, "error": error}


@pytest.fixture(scope="module")
def compare_runs(launch):
    out, ranks = launch
    if ranks[0]["compare"] is None:
        pytest.skip("the comparisons under DDP train on the tiny Fashion-MNIST, which is not installed here")
    return out / "compare", [rank["compare"] for rank in ranks]


def test_compare_under_ddp_returns_rank_0s_summary_everywhere(compare_runs):
    out, ranks = compare_runs
    for key, folder in (("summary", "compare"), ("anytime", "anytime")):
        # as text: one seed gives NaN CI half-widths, which the file holds as null (JSON has no NaN)
        text = json.dumps(_json_safe(ranks[0][key]), indent=2) + "\n"
        on_disk = (out / folder / "summary.json").read_text()
        assert json.dumps(_json_safe(ranks[1][key]), indent=2) + "\n" == text == on_disk
        assert json.loads((out / folder / "plan.json").read_text())["seeds"] == [0]
    assert [row["spec"] for row in ranks[0]["summary"]["rows"]] == ["sgd", "sgd+h1:lam=0.01"]
    assert len(ranks[0]["anytime"]["rows"][1]["exit_test_acc"]) == 4 and "early_exit" in ranks[0]["anytime"]["rows"][1]
    for metrics in (out / "anytime" / "runs").glob("*/seed-0/metrics.jsonl"):
        assert len(metrics.read_text().splitlines()) == 1  # one writer


def test_compare_under_ddp_logs_from_rank_0_and_needs_one_job(compare_runs):
    _, ranks = compare_runs
    assert any("final test acc" in line for line in ranks[0]["lines"]) and ranks[1]["lines"] == []
    assert "use --jobs 1" in ranks[0]["error"] and ranks[0]["error"] == ranks[1]["error"]
