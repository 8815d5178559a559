"""Cost of the channel metrics in data-parallel training: 2-process DDP and FSDP2 (gloo, CPU), as ratios.

Two processes on 127.0.0.1, one thread each, train a CIFAR ResNet on random 32x32 images, each rank on its
half of the global batch. Every configuration has its own model (same initialization) and the timed steps
interleave across configurations, so that machine noise hits all alike. Per step, on rank 0:

* ``step``: forward, backward (DDP's all-reduce, or FSDP2's all-gather and reduce-scatter) and
  ``optimizer.step()``; ``opt``: ``optimizer.step()`` alone (for FSDP2 it includes the transforms'
  gathers of per-shard summaries).
* ``ratio``: the median step with the metric over the median step of plain SGD (momentum 0.9) under the
  same engine; ``added``: the difference of the medians of ``opt``; ``1+added/step``: the ratio the added
  optimizer time alone implies (steadier than ``ratio``, whose medians differ by the noise of a whole step).

Under DDP each rank transforms the whole (all-reduced) gradient locally: the added time is that of one
process. Under FSDP2 (every residual block and the root sharded) each rank transforms its shard and the
transforms add two rounds of ``all_gather`` per step (one for ``h0``), batched over all parameters.

Run: ``python benchmarks/distributed.py [--model resnet20] [--batch-size 64] [--repeats 10]``.
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import tempfile
import time
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

import gradgeo
from gradgeo.models import BasicBlock, build_model

SPECS = ("sgd", "sgd+h0:lam=2", "sgd+sobolev:lam=0.1", "sgd+h1:lam=0.01", "sgd+laplacian:sigma=1")
ENGINES = ("DDP", "FSDP2")


def _build(engine: str, spec: str, model_name: str, width: float) -> tuple[nn.Module, torch.optim.Optimizer]:
    torch.manual_seed(0)
    model = build_model(model_name, num_classes=10, in_channels=3, width=width)
    if engine == "DDP":
        optimizer = gradgeo.create_optimizer(model, spec, lr=0.01, momentum=0.9)
        return nn.parallel.DistributedDataParallel(model), optimizer
    from torch.distributed.fsdp import fully_shard

    for module in model.modules():
        if isinstance(module, BasicBlock):
            fully_shard(module)
    fully_shard(model)
    return model, gradgeo.create_optimizer(model, spec, lr=0.01, momentum=0.9)  # after sharding: DTensors


def _worker(rank: int, world: int, port: int, args: argparse.Namespace, out: str) -> None:
    torch.set_num_threads(1)
    os.environ["GLOO_SOCKET_IFNAME"] = "lo"
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    g = torch.Generator().manual_seed(rank)
    local = args.batch_size // world
    x, y = torch.randn(local, 3, 32, 32, generator=g), torch.randint(0, 10, (local,), generator=g)
    runs = {(engine, spec): _build(engine, spec, args.model, args.width) for engine in ENGINES for spec in SPECS}
    samples: dict[tuple[str, str], list[tuple[float, float]]] = {key: [] for key in runs}
    for repeat in range(args.warmup + args.repeats):
        for key, (model, optimizer) in runs.items():
            dist.barrier()
            start = time.perf_counter()
            nn.functional.cross_entropy(model(x), y).backward()
            before_step = time.perf_counter()
            optimizer.step()
            end = time.perf_counter()
            optimizer.zero_grad(set_to_none=True)
            if repeat >= args.warmup:
                samples[key].append((end - start, end - before_step))
    if rank == 0:
        torch.save(samples, Path(out) / "samples.pt")
    dist.barrier()
    dist.destroy_process_group()
    os._exit(0)  # skip interpreter teardown: torch 2.13 sometimes aborts there after destroy_process_group


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="resnet20")
    parser.add_argument("--width", type=float, default=1.0)
    parser.add_argument("--batch-size", type=int, default=64, help="global batch (split over the 2 processes)")
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=2)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as out:
        mp.spawn(_worker, args=(2, _free_port(), args, out), nprocs=2, join=True)
        samples = torch.load(Path(out) / "samples.pt")
    params = sum(p.numel() for p in build_model(args.model, width=args.width).parameters())
    print(f"{args.model} (width {args.width}, {params / 1e6:.2f} M params), global batch {args.batch_size} over "
          f"2 gloo processes x 1 thread, median of {args.repeats} interleaved steps")
    print(f"{'engine':<7}{'optimizer':<22}{'step ms':>9}{'opt ms':>9}{'added ms':>10}{'ratio':>7}"
          f"{'1+added/step':>14}")
    for engine in ENGINES:
        base_step = statistics.median(s for s, _ in samples[(engine, "sgd")])
        base_opt = statistics.median(o for _, o in samples[(engine, "sgd")])
        for spec in SPECS:
            step = statistics.median(s for s, _ in samples[(engine, spec)])
            opt = statistics.median(o for _, o in samples[(engine, spec)])
            print(f"{engine:<7}{spec:<22}{step * 1e3:9.1f}{opt * 1e3:9.2f}{(opt - base_opt) * 1e3:10.2f}"
                  f"{step / base_step:7.3f}{1 + (opt - base_opt) / base_step:14.3f}")


if __name__ == "__main__":
    main()
