"""Cost of the channel-directed transforms, as ratios measured in one run.

For the conv-weight shapes of ResNet-18 (ImageNet) and ResNet-56 (CIFAR) this times, with every timed call
preceded by a restore of the gradients (not timed) and the median taken over interleaved repeats:

* ``memcpy``: ``torch._foreach_copy_`` of all gradients (one read, one write per element);
* ``bare``: the base optimizer's step (SGD with momentum, foreach);
* ``wrapped[m]``: ``ChannelDirected(base, metric=m).step()``; ``added[m] = wrapped[m] - bare``;
* ``sobolev (flat)``, ``h1 (flat)``: the same metrics along each whole flattened gradient (direction ``"flat"``);
* ``ls-sgd original``: the original LS-SGD smoothing (complex FFT of each flattened gradient, multiply by
  precomputed coefficients, inverse FFT) next to gradgeo's ``laplacian`` transform on the same gradients.

The last lines, ``RATIO ...``, are the figures issue 16 asks for, one per line: what ``sobolev`` and ``h1``
(and ``h0``) add to the step on ResNet-18 shapes as a multiple of the memcpy, and the wrapped step over the
bare step on ResNet-56 shapes for every metric.

``--compile`` times every step (bare and wrapped, foreach only) through ``torch.compile(optimizer.step)``, the
compilation left out of the timing (a warm-up call); the ratios are then to the compiled bare step.

Run: ``python benchmarks/transforms.py [--repeats 30] [--threads N] [--channels-last] [--clock cpu] [--compile]
[--device cuda]``. ``--clock cpu`` times process CPU time instead of wall time: on a machine shared with other
work, where a preempted call's wall time is mostly waiting, it keeps the ratios meaningful (use it with
``--threads 1``). ``--device cuda`` times on the GPU, wall clock with the device synchronized before and after
every timed call (so each figure includes the launches and the one host sync of the wrapped step).
"""

from __future__ import annotations

import argparse
import math
import statistics
import time
from collections.abc import Callable

import torch

from gradgeo import ChannelDirected
from gradgeo.channel.optim import METRICS

FLAT = ("sobolev", "h1")  # also timed with direction "flat"
CPU = torch.device("cpu")


def resnet18_shapes() -> list[tuple[int, ...]]:
    shapes = [(64, 3, 7, 7)]
    c_in = 64
    for c in (64, 128, 256, 512):
        for block in range(2):
            shapes += [(c, c_in, 3, 3), (c, c, 3, 3)]
            if block == 0 and c_in != c:
                shapes.append((c, c_in, 1, 1))
            c_in = c
    return shapes


def resnet56_shapes() -> list[tuple[int, ...]]:
    shapes = [(16, 3, 3, 3)]
    c_in = 16
    for c in (16, 32, 64):
        for block in range(9):
            shapes += [(c, c_in, 3, 3), (c, c, 3, 3)]
            if block == 0 and c_in != c:
                shapes.append((c, c_in, 1, 1))
            c_in = c
    return shapes


def original_ls_sgd(grads: list[torch.Tensor], coefficients: list[torch.Tensor]) -> None:
    """The LS-SGD reference implementation's smoothing: complex FFT of the flattened gradient."""
    for g, coef in zip(grads, coefficients):
        flat = g.view(-1)
        flat.copy_(torch.fft.ifft(torch.fft.fft(flat) / coef).real)


def ls_sgd_coefficients(grads: list[torch.Tensor], sigma: float) -> list[torch.Tensor]:
    out = []
    for g in grads:
        n = g.numel()
        k = torch.arange(n, dtype=torch.float64)
        out.append((1 + 4 * sigma * torch.sin(math.pi * k / n) ** 2).to(g.dtype))
    return out


def measure(cases: dict[str, Callable[[], None]], restore: Callable[[], None], repeats: int,
            clock: Callable[[], float] = time.perf_counter,
            sync: Callable[[], None] = lambda: None) -> dict[str, float]:
    """Median seconds per call of each case; cases interleave so that machine noise hits all alike. ``sync``
    waits for the device (``torch.cuda.synchronize``) before the clock starts and before it stops."""
    samples: dict[str, list[float]] = {name: [] for name in cases}
    for fn in cases.values():  # warm-up
        restore()
        fn()
    for _ in range(repeats):
        for name, fn in cases.items():
            restore()
            sync()
            start = clock()
            fn()
            sync()
            samples[name].append(clock() - start)
    return {name: statistics.median(s) for name, s in samples.items()}


def bench(label: str, shapes: list[tuple[int, ...]], repeats: int, lams: dict[str, float],
          layout: torch.memory_format = torch.contiguous_format,
          clock: Callable[[], float] = time.perf_counter, compiled: bool = False,
          device: torch.device = CPU) -> dict[str, float]:
    """Print the table of one shape set; returns the median seconds of every case."""
    torch.manual_seed(0)
    params = [torch.nn.Parameter((torch.randn(s, device=device) * 0.01).contiguous(memory_format=layout))
              for s in shapes]
    saved = [torch.randn(s, device=device).contiguous(memory_format=layout) for s in shapes]
    copies = [torch.empty_like(g) for g in saved]
    for p in params:
        p.grad = torch.empty_like(p)
    grads = [p.grad for p in params]

    def restore() -> None:
        torch._foreach_copy_(grads, saved)

    def base() -> torch.optim.Optimizer:
        return torch.optim.SGD(params, lr=1e-6, momentum=0.9, foreach=True)

    def step(opt: torch.optim.Optimizer) -> Callable[[], None]:
        return torch.compile(opt.step) if compiled else opt.step

    loops = (True,) if compiled else (True, False)
    cases: dict[str, Callable[[], None]] = {"memcpy": lambda: torch._foreach_copy_(copies, grads),
                                            "bare": step(base())}
    for metric in METRICS:
        for foreach in loops:
            opt = ChannelDirected(base(), metric=metric, lam=lams.get(metric), sigma=1.0, foreach=foreach)
            cases[f"{metric}{'' if foreach else ' (loop)'}"] = step(opt)
    for metric in FLAT:  # along the whole flattened tensor (docs/design.md 1d): the O(C) scans, not the block form
        cases[f"{metric} (flat)"] = step(ChannelDirected(base(), metric=metric, lam=lams[metric], direction="flat"))
    original = layout == torch.contiguous_format and not compiled  # the original flattens a row-major view
    if original:
        coefficients = ls_sgd_coefficients(grads, 1.0)
        cases["ls-sgd original"] = lambda: original_ls_sgd(grads, coefficients)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    t = measure(cases, restore, repeats, clock, sync)

    numel = sum(math.prod(s) for s in shapes)
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else f"{torch.get_num_threads()} threads"
    print(f"\n{label}: {len(shapes)} conv weights, {numel / 1e6:.2f} M params, float32, {layout}, "
          f"{where}, median of {repeats}{', compiled steps' if compiled else ''}")
    print(f"  memcpy {t['memcpy'] * 1e3:8.3f} ms   bare SGD step {t['bare'] * 1e3:8.3f} ms")
    print(f"  {'metric':<18}{'step ms':>9}{'added ms':>10}{'added/memcpy':>14}{'step/bare':>11}")
    names = [metric + suffix for metric in METRICS for suffix in (("",) if compiled else ("", " (loop)"))]
    for name in names + [f"{metric} (flat)" for metric in FLAT]:
        added = t[name] - t["bare"]
        print(f"  {name:<18}{t[name] * 1e3:9.3f}{added * 1e3:10.3f}{added / t['memcpy']:14.2f}"
              f"{t[name] / t['bare']:11.2f}")
    ls = t["laplacian"] - t["bare"]
    if original:
        print(f"  laplacian smoothing: original LS-SGD (complex FFT) {t['ls-sgd original'] * 1e3:.3f} ms vs gradgeo "
              f"{ls * 1e3:.3f} ms added to the step: {t['ls-sgd original'] / ls:.2f}x faster")
    return t


def ratio_lines(small: dict[str, float], large: dict[str, float]) -> list[str]:
    """The issue-16 figures: added/memcpy on ResNet-18 shapes (target <= 2 for sobolev and h1; h0 at its floor,
    ~1.5), wrapped/bare step on ResNet-56 shapes (target <= 1.5 for every metric)."""
    lines = []
    for metric in ("h0", "sobolev", "h1"):
        added = (large[metric] - large["bare"]) / large["memcpy"]
        target = "floor ~1.5" if metric == "h0" else "target <= 2"
        lines.append(f"RATIO resnet18 {metric:<9} added/memcpy   {added:6.2f}  ({target})")
    for metric in METRICS:
        lines.append(f"RATIO resnet56 {metric:<9} wrapped/bare   {small[metric] / small['bare']:6.2f}  (target <= 1.5)")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--clock", choices=("wall", "cpu"), default="wall",
                        help="wall: time.perf_counter (a quiet machine); cpu: process CPU time (a busy one)")
    parser.add_argument("--channels-last", action="store_true",
                        help="weights and gradients in NHWC memory (a model trained with --channels-last)")
    parser.add_argument("--compile", action="store_true",
                        help="time torch.compile(optimizer.step) of the bare and the wrapped steps")
    parser.add_argument("--device", default="cpu", help="cpu (default) or cuda[:N]")
    args = parser.parse_args()
    try:
        device = torch.device(args.device)
    except RuntimeError:
        parser.error(f"--device {args.device}: expected cpu or cuda[:N]")
    if device.type == "cuda" and not torch.cuda.is_available():
        parser.error(f"--device {args.device}: no CUDA device here (torch.cuda.is_available() is False); "
                     "run on a GPU machine or drop --device")
    if device.type not in ("cpu", "cuda"):
        parser.error(f"--device {args.device}: expected cpu or cuda[:N]")
    if device.type == "cuda" and args.clock == "cpu":
        parser.error("--clock cpu times host CPU time, not the GPU's: use the default wall clock with --device cuda")
    if args.compile:  # one compiled step per optimizer: more than dynamo's default recompilations of step()
        torch._dynamo.config.recompile_limit = 64
    if args.threads:
        torch.set_num_threads(args.threads)
    lams = {"h0": 2.0, "sobolev": 0.1, "h1": 0.01}
    layout = torch.channels_last if args.channels_last else torch.contiguous_format
    clock = time.process_time if args.clock == "cpu" else time.perf_counter
    small = bench("ResNet-56 (CIFAR)", resnet56_shapes(), args.repeats, lams, layout, clock, args.compile, device)
    large = bench("ResNet-18 (ImageNet)", resnet18_shapes(), args.repeats, lams, layout, clock, args.compile, device)
    where = device if device.type == "cuda" else f"{torch.get_num_threads()} threads"
    print(f"\nissue 16 figures ({args.clock} clock, {where}, {layout}, median of "
          f"{args.repeats}, one run{', compiled steps' if args.compile else ''}):")
    print("\n".join(ratio_lines(small, large)))


if __name__ == "__main__":
    main()
