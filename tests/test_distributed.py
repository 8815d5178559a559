"""Channel transforms of sharded gradients (gradgeo.distributed) equal the transforms of the whole tensor.

The sharded kernels are checked twice: in one process, with the shards and the all_gather simulated (any
number of shards, empty ones included), and on 2 real gloo processes with DTensors and FSDP2.
"""

import contextlib
import math

import pytest
import torch
from torch import nn

from _multiprocess import run_ranks
from gradgeo.channel import distributed as D
from gradgeo.channel import transforms as T
from gradgeo.channel.optim import METRICS, channel_directed

REFERENCE = {
    "h0": lambda x, dim, boundary: T.reweighted_h0(x, 2.0, dim),
    "sobolev": lambda x, dim, boundary: T.sobolev(x, 0.3, dim, boundary),
    "h1": lambda x, dim, boundary: T.h1(x, 0.05, dim, boundary),
    "laplacian": lambda x, dim, boundary: T.laplacian_smooth(x, 1.5),
}
STRENGTH = {"h0": 2.0, "sobolev": 0.3, "h1": 0.05, "laplacian": 1.5}
# (shape, smoothing dim, shard lengths along it): uneven, empty shards, single rows, more shards than rows
SPLITS = [((7, 5, 3), 0, (4, 3)), ((6, 9, 2), 1, (3, 3, 3, 0)), ((5,), 0, (2, 2, 1, 0)),
          ((40, 3), 0, (1, 0, 20, 19)), ((2, 4), 0, (1, 1, 0))]


def simulate(x: torch.Tensor, dim: int, metric: str, boundary: str, lengths: tuple[int, ...]) -> torch.Tensor:
    """Run the sharded kernel of ``metric`` on the pieces of ``x``, with the all_gather done by hand."""
    n, offsets = len(lengths), tuple(sum(lengths[:r]) for r in range(len(lengths)))
    p, q = math.prod(x.shape[:dim]), math.prod(x.shape[dim + 1 :])
    pieces = [piece.reshape(p, c, q).clone() for piece, c in zip(x.split(list(lengths), dim), lengths)]
    shards = [D._SHARDED[metric](v, D._Segment(r, offsets, lengths), STRENGTH[metric], boundary)
              for r, v in enumerate(pieces)]
    summaries = [next(shard) for shard in shards]
    while summaries:
        gathered, summaries = torch.stack(summaries), []
        for shard in shards:
            with contextlib.suppress(StopIteration):  # a shard that is done takes part in no more rounds
                summaries.append(shard.send(gathered))
        assert len(summaries) in (0, n), "every shard takes part in the same rounds"
    return torch.cat([v.reshape(*x.shape[:dim], c, *x.shape[dim + 1 :]) for v, c in zip(pieces, lengths)], dim)


@pytest.mark.parametrize("split", SPLITS, ids=[f"{s}-dim{d}-{'+'.join(map(str, n))}" for s, d, n in SPLITS])
@pytest.mark.parametrize("boundary", ["neumann", "periodic"])
@pytest.mark.parametrize("metric", list(REFERENCE))
def test_sharded_kernels_equal_the_whole_tensor_transform(metric, boundary, split):
    shape, dim, lengths = split
    x = torch.randn(shape, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    if metric == "laplacian":  # the flattened tensor, split where Shard(0) splits it
        if dim != 0:
            pytest.skip("laplacian flattens the tensor: only Shard(0) keeps the flat order contiguous")
        row = math.prod(shape[1:])
        got = simulate(x.reshape(-1), 0, metric, boundary, tuple(c * row for c in lengths)).view(shape)
    else:
        got = simulate(x, dim, metric, boundary, lengths)
    torch.testing.assert_close(got, REFERENCE[metric](x, dim, boundary), rtol=1e-12, atol=1e-12)


# ------------------------------------------------------------------------------- 2 gloo processes

# name -> (shape, placement dim or None for Replicate, metric, boundary, smoothing dim)
DTENSOR_CASES = {
    **{f"C7-shard0-{m}-{b}": ((7, 5, 3), 0, m, b, 0) for m in REFERENCE for b in ("neumann", "periodic")},
    "C8-shard0-even-sobolev": ((8, 6), 0, "sobolev", "neumann", 0),
    "C7-shard1-middle-sobolev": ((6, 7, 2), 1, "sobolev", "periodic", 1),
    "C7-shard1-middle-h1": ((6, 7, 2), 1, "h1", "neumann", 1),
    "C7-shard0-other-axis-sobolev": ((7, 5, 3), 0, "sobolev", "neumann", 1),
    "C7-shard0-other-axis-h1": ((7, 5, 3), 0, "h1", "periodic", 1),
    "C1-shard0-one-row-sobolev": ((1, 5), 0, "sobolev", "neumann", 0),
    "C1-shard0-empty-rank-other-axis-h0": ((1, 6), 0, "h0", "neumann", 1),
    "replicate-sobolev": ((7, 5), None, "sobolev", "neumann", 0),
    "replicate-laplacian": ((7, 5), None, "laplacian", "periodic", 0),
}
FUNCTIONS = {"h0": lambda g, dim, b: D.reweighted_h0(g, 2.0, dim),
             "sobolev": lambda g, dim, b: D.sobolev(g, 0.3, dim, b),
             "h1": lambda g, dim, b: D.h1(g, 0.05, dim, b),
             "laplacian": lambda g, dim, b: D.laplacian_smooth(g, 1.5)}
STEP_OPTIONS = {"h0": {"lam": 2.0}, "sobolev": {"lam": 0.1}, "h1": {"lam": 0.01}, "laplacian": {"sigma": 1.0},
                "none": {}}


def tiny_cnn() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 7, 3), nn.Tanh(), nn.Conv2d(7, 5, 3), nn.Tanh(), nn.Flatten(),
                         nn.Linear(5 * 2 * 2, 3))


def _fsdp_step_error(rank: int, world: int, mesh, metric: str) -> float:
    """Two steps of SGD with momentum + metric under FSDP2, on this rank's half of the batch, against one
    process on the whole batch: the largest difference of the parameters."""
    from torch.distributed.fsdp import fully_shard

    x = torch.randn(8, 3, 6, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    y = torch.arange(8) % 3
    options = {"metric": metric, **({"apply_to": ("conv", "linear", "vector")} if metric != "none" else {}),
               **STEP_OPTIONS[metric]}
    reference = tiny_cnn().double()
    ref_opt = channel_directed(reference, torch.optim.SGD, lr=0.1, momentum=0.9, **options)
    sharded = fully_shard(tiny_cnn().double(), mesh=mesh)
    opt = channel_directed(sharded, torch.optim.SGD, lr=0.1, momentum=0.9, **options)
    part = slice(rank * 8 // world, (rank + 1) * 8 // world)
    for _ in range(2):
        nn.functional.cross_entropy(reference(x), y).backward()
        ref_opt.step()
        ref_opt.zero_grad()
        nn.functional.cross_entropy(sharded(x[part]), y[part]).backward()  # FSDP2 averages over ranks
        opt.step()
        opt.zero_grad()
    return max((p.full_tensor() - q).abs().max().item() for p, q in zip(sharded.parameters(), reference.parameters()))


def _two_rank_cases(rank: int, world: int) -> dict[str, float | str]:
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.tensor import Replicate, Shard, distribute_tensor

    mesh = init_device_mesh("cpu", (world,))
    results: dict[str, float | str] = {}
    for name, (shape, shard_dim, metric, boundary, dim) in DTENSOR_CASES.items():
        full = torch.randn(shape, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
        placement = Replicate() if shard_dim is None else Shard(shard_dim)
        got = FUNCTIONS[metric](distribute_tensor(full, mesh, [placement]), dim, boundary).full_tensor()
        results[name] = (got - REFERENCE[metric](full, dim, boundary)).abs().max().item()

    full = torch.randn(7, 5, dtype=torch.bfloat16, generator=torch.Generator().manual_seed(3))
    got = D.sobolev(distribute_tensor(full, mesh, [Shard(0)]), 0.3).full_tensor()
    results["bfloat16-dtype"] = str(got.dtype)
    results["bfloat16-error"] = (got.float() - T.sobolev(full.float(), 0.3)).abs().max().item()
    try:
        D.laplacian_smooth(distribute_tensor(full.double(), mesh, [Shard(1)]), 1.0)
    except NotImplementedError as error:
        results["laplacian-shard1"] = str(error)

    for metric in METRICS:
        results[f"fsdp2-step-{metric}"] = _fsdp_step_error(rank, world, mesh, metric)

    # a NaN in rank 1's shard only: every rank must skip the step, whether the transform is sharded (sobolev
    # along the sharded axis), local to each shard (direction "in") or the identity (laplacian, sigma 0)
    for name, options in NAN_CASES.items():
        w = nn.Parameter(distribute_tensor(torch.zeros(4, 6), mesh, [Shard(0)]))
        grad = torch.ones(4, 6)
        grad[3, 0] = math.nan  # row 3 lives on rank 1
        w.grad = distribute_tensor(grad, mesh, [Shard(0)])
        opt = channel_directed(nn.Linear(6, 4), torch.optim.SGD, lr=0.1, apply_to=("linear",), nonfinite="skip",
                               **options)
        opt.base.param_groups[0]["params"] = [w]
        opt.step()
        results[f"nan-{name}"] = opt.skipped_steps
    return results


NAN_CASES = {"sharded-axis": {"metric": "sobolev"}, "other-axis": {"metric": "sobolev", "direction": "in"},
             "identity": {"metric": "laplacian", "sigma": 0.0}}


@pytest.fixture(scope="module")
def two_ranks() -> dict[str, float | str]:
    """All 2-process checks in one launch (starting processes costs seconds); each test reads its result."""
    results = run_ranks(_two_rank_cases, 2)
    assert results[0].keys() == results[1].keys()
    return results[0]


@pytest.mark.parametrize("case", list(DTENSOR_CASES))
def test_dtensor_transform_equals_the_whole_tensor_transform(two_ranks, case):
    assert two_ranks[case] < 1e-12, two_ranks[case]


def test_dtensor_transform_keeps_half_precision(two_ranks):
    assert two_ranks["bfloat16-dtype"] == "torch.bfloat16"
    assert two_ranks["bfloat16-error"] < 2e-2  # bfloat16 rounding of the result (8 bits of mantissa)


def test_unsupported_sharding_names_the_workaround(two_ranks):
    assert "full_tensor()" in two_ranks["laplacian-shard1"] and "Shard(0)" in two_ranks["laplacian-shard1"]


@pytest.mark.parametrize("metric", METRICS)
def test_fsdp2_step_equals_the_single_process_step(two_ranks, metric):
    assert two_ranks[f"fsdp2-step-{metric}"] < 1e-12, two_ranks[f"fsdp2-step-{metric}"]


@pytest.mark.parametrize("case", list(NAN_CASES))
def test_nonfinite_gradient_on_one_rank_skips_the_step_on_every_rank(two_ranks, case):
    assert two_ranks[f"nan-{case}"] == 1  # rank 0's own shard was finite; it skipped all the same


def test_is_dtensor_is_false_for_tensors():
    assert not D.is_dtensor(torch.zeros(3))
    with pytest.raises(TypeError, match="gradgeo.transforms"):
        D.sobolev(torch.zeros(3), 0.1)
