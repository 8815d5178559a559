"""Cost of the channel-directed transforms, as ratios measured in one run.

For the conv-weight shapes of ResNet-18 (ImageNet) and ResNet-56 (CIFAR) this times, with every timed call
preceded by a restore of the gradients (not timed) and the median taken over interleaved repeats:

* ``memcpy``: ``torch._foreach_copy_`` of all gradients (one read, one write per element);
* ``bare``: the base optimizer's step (SGD with momentum, foreach);
* ``wrapped[m]``: ``ChannelDirected(base, metric=m).step()``; ``added[m] = wrapped[m] - bare``;
* ``ls-sgd original``: the original LS-SGD smoothing (complex FFT of each flattened gradient, multiply by
  precomputed coefficients, inverse FFT) next to gradgeo's ``laplacian`` transform on the same gradients.

Run: ``python benchmarks/transforms.py [--repeats 30] [--threads N] [--channels-last]``.
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


def measure(cases: dict[str, Callable[[], None]], restore: Callable[[], None], repeats: int) -> dict[str, float]:
    """Median seconds per call of each case; cases interleave so that machine noise hits all alike."""
    samples: dict[str, list[float]] = {name: [] for name in cases}
    for fn in cases.values():  # warm-up
        restore()
        fn()
    for _ in range(repeats):
        for name, fn in cases.items():
            restore()
            start = time.perf_counter()
            fn()
            samples[name].append(time.perf_counter() - start)
    return {name: statistics.median(s) for name, s in samples.items()}


def bench(label: str, shapes: list[tuple[int, ...]], repeats: int, lams: dict[str, float],
          layout: torch.memory_format = torch.contiguous_format) -> None:
    torch.manual_seed(0)
    params = [torch.nn.Parameter((torch.randn(s) * 0.01).contiguous(memory_format=layout)) for s in shapes]
    saved = [torch.randn(s).contiguous(memory_format=layout) for s in shapes]
    copies = [torch.empty_like(g) for g in saved]
    for p in params:
        p.grad = torch.empty_like(p)
    grads = [p.grad for p in params]

    def restore() -> None:
        torch._foreach_copy_(grads, saved)

    def base() -> torch.optim.Optimizer:
        return torch.optim.SGD(params, lr=1e-6, momentum=0.9, foreach=True)

    bare = base()
    cases: dict[str, Callable[[], None]] = {"memcpy": lambda: torch._foreach_copy_(copies, grads), "bare": bare.step}
    for metric in METRICS:
        for foreach in (True, False):
            opt = ChannelDirected(base(), metric=metric, lam=lams.get(metric), sigma=1.0, foreach=foreach)
            cases[f"{metric}{'' if foreach else ' (loop)'}"] = opt.step
    original = layout == torch.contiguous_format  # the original LS-SGD flattens a row-major view
    if original:
        coefficients = ls_sgd_coefficients(grads, 1.0)
        cases["ls-sgd original"] = lambda: original_ls_sgd(grads, coefficients)
    t = measure(cases, restore, repeats)

    numel = sum(math.prod(s) for s in shapes)
    print(f"\n{label}: {len(shapes)} conv weights, {numel / 1e6:.2f} M params, float32, {layout}, "
          f"{torch.get_num_threads()} threads, median of {repeats}")
    print(f"  memcpy {t['memcpy'] * 1e3:8.3f} ms   bare SGD step {t['bare'] * 1e3:8.3f} ms")
    print(f"  {'metric':<18}{'step ms':>9}{'added ms':>10}{'added/memcpy':>14}{'step/bare':>11}")
    for metric in METRICS:
        for suffix in ("", " (loop)"):
            name = metric + suffix
            added = t[name] - t["bare"]
            print(f"  {name:<18}{t[name] * 1e3:9.3f}{added * 1e3:10.3f}{added / t['memcpy']:14.2f}"
                  f"{t[name] / t['bare']:11.2f}")
    ls = t["laplacian"] - t["bare"]
    if original:
        print(f"  laplacian smoothing: original LS-SGD (complex FFT) {t['ls-sgd original'] * 1e3:.3f} ms vs gradgeo "
              f"{ls * 1e3:.3f} ms added to the step: {t['ls-sgd original'] / ls:.2f}x faster")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--channels-last", action="store_true",
                        help="weights and gradients in NHWC memory (a model trained with --channels-last)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    lams = {"h0": 2.0, "sobolev": 0.1, "h1": 0.01}
    layout = torch.channels_last if args.channels_last else torch.contiguous_format
    bench("ResNet-56 (CIFAR)", resnet56_shapes(), args.repeats, lams, layout)
    bench("ResNet-18 (ImageNet)", resnet18_shapes(), args.repeats, lams, layout)


if __name__ == "__main__":
    main()
