"""Cost of an OSGD step on anytime networks, as ratios measured in one run.

For a 4-exit branched ResNet-10 and a 4-exit depth-nested network (add others with ``--models``) on a batch
of CIFAR-sized images, in training mode, this times (median over interleaved repeats, each repeat starting
from ``p.grad = None``; the optimizer step, identical for every method, is left out):

* ``sum``: one forward and ``sum_k L_k`` backpropagated, the plain summed-loss step;
* ``floor``: one forward and, for each exit k, ``torch.autograd.grad(L_k, params)`` through exit k's
  sub-network: the least any method needs to see every exit's gradient separately;
* ``osgd[global]``, ``osgd[tensor]``: one forward and :func:`gradgeo.osgd.backward` with that granularity.

Memory: the peak of the bytes newly allocated during the backward part of each step (with the forward's
activations and the parameters already allocated, ``p.grad`` not), read in order from the allocation and
release events of ``torch.profiler`` (``profile_memory=True``; activations released during the backward were
allocated before and are not credited, so the figure is an upper bound), divided by the bytes of the
parameters. It is measured at the timing batch, where the activation gradients of backpropagation (growing
with the batch) dominate, and at batch 2, where they are negligible and the figure is the gradient storage
itself: about 1 for ``sum`` (``p.grad``), K + 1 for ``osgd[global]`` (the K x N matrix and one exit's gradients
or ``p.grad``), and ``sum_k N_k / N`` plus one tensor's block for ``osgd[tensor]`` (``N_k``: the parameters
exit k reaches).

Run: ``python benchmarks/osgd.py [--batch 64] [--repeats 15] [--threads 1] [--models ...] 2>/dev/null`` (stderr
only carries the profiler's log lines).
"""

from __future__ import annotations

import argparse
import itertools
import statistics
import time
from collections.abc import Callable

import torch
from torch import nn
from torch.profiler import ProfilerActivity, profile

from gradgeo import osgd
from gradgeo.models import ANYTIME_MODELS, build_anytime_model

Backward = Callable[[list[torch.Tensor], list[torch.Tensor]], None]


def per_exit_gradients(losses: list[torch.Tensor], params: list[torch.Tensor]) -> None:
    """Each exit's gradient through its own sub-network, one after another (the gradients are dropped)."""
    for k, loss in enumerate(losses):
        torch.autograd.grad(loss, params, retain_graph=k < len(losses) - 1, allow_unused=True)


BACKWARDS: dict[str, Backward] = {
    "sum": lambda losses, params: torch.autograd.backward(sum(losses), inputs=params),
    "floor": per_exit_gradients,
    "osgd[global]": lambda losses, params: osgd.backward(losses, params, "global"),
    "osgd[tensor]": lambda losses, params: osgd.backward(losses, params, "tensor"),
}


def peak_bytes(fn: Callable[[], None]) -> int:
    """The peak of the bytes allocated by ``fn`` above the level at its start (CPU allocator events)."""
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    events = sorted((e for e in prof.profiler.kineto_results.events() if e.name() == "[memory]"),
                    key=lambda e: e.start_ns())  # stable: events recorded at the same instant keep their order
    return max(itertools.accumulate((e.nbytes() for e in events), initial=0))


def bench(name: str, batch: int, repeats: int, memory_batches: tuple[int, ...]) -> dict[str, object]:
    torch.manual_seed(0)
    model = build_anytime_model(name, num_classes=10, in_channels=3)
    params = list(model.parameters())
    parameter_bytes = sum(p.numel() * p.element_size() for p in params)

    def losses(n: int) -> list[torch.Tensor]:
        x = torch.randn(n, 3, 32, 32, generator=torch.Generator().manual_seed(n))
        return [nn.functional.cross_entropy(out, torch.arange(n) % 10) for out in model(x)]

    def step(backward: Backward | None) -> float:
        for p in params:
            p.grad = None
        started = time.perf_counter()
        current = losses(batch)
        if backward is not None:
            backward(current, params)
        return time.perf_counter() - started

    times: dict[str, list[float]] = {label: [] for label in ["forward", *BACKWARDS]}
    for r in range(repeats + 2):  # two warm-up rounds; the order rotates so that drifts in load even out
        order = list(times)[r % len(times):] + list(times)[:r % len(times)]
        for label in order:
            seconds = step(BACKWARDS.get(label))
            if r >= 2:
                times[label].append(seconds)
    memory: dict[int, dict[str, float]] = {}
    for n in memory_batches:
        memory[n] = {}
        for label, backward in BACKWARDS.items():
            for p in params:
                p.grad = None
            current = losses(n)
            memory[n][label] = peak_bytes(lambda b=backward, c=current: b(c, params)) / parameter_bytes
            del current
    return {"name": name, "params": sum(p.numel() for p in params), "exits": model.num_exits,
            "time": {label: statistics.median(t) for label, t in times.items()}, "memory": memory}


def report(rows: list[dict[str, object]], batch: int, repeats: int) -> None:
    print(f"OSGD step on CPU ({torch.get_num_threads()} thread(s)), batch {batch} of 3x32x32, training mode, median "
          f"of {repeats} interleaved repeats; optimizer step excluded\n")
    labels = list(BACKWARDS)
    print(f"{'model':<18} {'params':>7} {'K':>2} {'forward':>8}" + "".join(f"{label:>13}" for label in labels))
    for r in rows:
        print(f"{r['name']:<18} {r['params'] / 1e6:>6.2f}M {r['exits']:>2} {r['time']['forward'] * 1e3:>6.0f}ms"
              + "".join(f"{r['time'][label] * 1e3:>11.0f}ms" for label in labels))
    print(f"\n{'model':<18} {'global/floor':>13} {'tensor/floor':>13} {'global/sum':>11} {'tensor/sum':>11} "
          f"{'floor/sum':>10}   (target: OSGD <= 1.15 x floor)")
    for r in rows:
        t = r["time"]
        g, s, floor = t["osgd[global]"], t["osgd[tensor]"], t["floor"]
        print(f"{r['name']:<18} {g / floor:>13.3f} {s / floor:>13.3f} {g / t['sum']:>11.2f} {s / t['sum']:>11.2f} "
              f"{floor / t['sum']:>10.2f}")
    print("\npeak memory newly allocated during the backward, in multiples of the parameter bytes (target: global "
          "<= K + 2, tensor less)")
    print(f"{'model':<18} {'batch':>5}" + "".join(f"{label:>13}" for label in labels) + f"{'K + 2':>8}")
    for r in rows:
        for n, memory in r["memory"].items():
            print(f"{r['name']:<18} {n:>5}" + "".join(f"{memory[label]:>13.2f}" for label in labels)
                  + f"{r['exits'] + 2:>8}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=["branched_resnet10", "nested_depth"], choices=ANYTIME_MODELS)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    memory_batches = tuple(sorted({2, args.batch}))
    report([bench(name, args.batch, args.repeats, memory_batches) for name in args.models], args.batch, args.repeats)


if __name__ == "__main__":
    main()
