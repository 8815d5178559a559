"""The harness's own cost, in two parts (``python benchmarks/harness.py epoch|loader``).

``epoch`` (issue 26): one gradgeo training epoch on the airbench-class workload, ``gradgeo.training.train`` with
its checkpoint-free defaults, against a minimal plain-torch loop of the same model, batch size, optimizer
(Nesterov SGD with the 64x BatchNorm-shift learning rate), schedule, label smoothing, augmentation (2-pixel crop
and flip on in-memory batches) and evaluation of the same test images, side by side, interleaved, in one run.
Both sides use the fast settings of this CPU: channels-last, and bfloat16 autocast only where the CPU has
bfloat16 instructions (AVX512-BF16 or AMX). Prints each side's median seconds and their ratio (target:
gradgeo <= 1.05x the plain loop).

``loader``: images per second of gradgeo's in-memory loop vs a plain torch DataLoader with per-sample transforms.
Both sides read the same CIFAR-10 (JPEG q75) training images, apply the same augmentation (4-pixel zero-pad
random crop and horizontal flip) and normalization, and feed the same model. The reference is the usual
script: a ``Dataset`` whose ``__getitem__`` crops, flips and normalizes one image in Python, batched by
``torch.utils.data.DataLoader``. Measured in one run, interleaved:

* ``data only``: producing normalized, augmented batches;
* ``train step``: data plus forward, backward and an SGD step of the model, the same on both sides;
* ``+ channels_last``: gradgeo's loop with ``--channels-last`` (NHWC weights and batches) against the same
  reference as above (the plain script as usually written: default layout, float32);
* ``+ bf16``: with ``--channels-last --precision bf16`` as well (the forward under bfloat16 autocast, its
  outputs cast back to float32 before the loss, as gradgeo's engine does), against the same reference.

Run: ``python benchmarks/harness.py epoch [--width 0.5] [--train-size 10240] [--repeats 3]`` or
``python benchmarks/harness.py loader [--model resnet20] [--batches 40] [--batch-size 128]``.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import statistics
import time

import torch
from torch.utils.data import DataLoader, Dataset

from gradgeo.data import Augment, load_dataset
from gradgeo.models import build_model
from gradgeo.training.config import TrainConfig
from gradgeo.training.engine import _slow_bf16_reason, train


class PerSampleCifar(Dataset):
    """The common per-image pipeline: pad, random crop, random flip, normalize, one image at a time."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor, mean, std) -> None:
        self.x, self.y = x, y
        self.mean = torch.tensor(mean).view(-1, 1, 1)
        self.std = torch.tensor(std).view(-1, 1, 1)

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int):
        img = torch.nn.functional.pad(self.x[i], (4, 4, 4, 4))
        top, left = torch.randint(0, 9, (2,)).tolist()
        img = img[:, top:top + 32, left:left + 32]
        if torch.rand(()) < 0.5:
            img = img.flip(-1)
        return (img.float() / 255 - self.mean) / self.std, self.y[i]


def timed(batches, n: int, step) -> float:
    """Images per second over ``n`` batches (after one warm-up batch)."""
    it = iter(batches)
    x, y = next(it)
    step(x, y)
    images, start = 0, time.perf_counter()
    for _ in range(n):
        x, y = next(it)
        step(x, y)
        images += len(y)
    return images / (time.perf_counter() - start)


def plain_epoch(config: TrainConfig, splits, bf16: bool) -> float:
    """Seconds for one epoch of the minimal loop a user would write for ``config``: build and whiten the model,
    train over shuffled in-memory batches, evaluate the test images."""
    start = time.perf_counter()
    torch.manual_seed(config.seed)
    model = build_model(config.model, num_classes=10, in_channels=3, width=config.width)
    mean, std = torch.tensor(splits.mean).view(1, -1, 1, 1), torch.tensor(splits.std).view(1, -1, 1, 1)

    def normalize(x: torch.Tensor) -> torch.Tensor:
        return ((x.float() / 255 - mean) / std).contiguous(memory_format=torch.channels_last)

    model.init_from_data(normalize(splits.train_x[:5000]))
    model = model.to(memory_format=torch.channels_last)
    scales = model.param_lr_scales()
    trained = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    groups = [{"params": [p for n, p in trained if n not in scales and p.dim() > 1],
               "weight_decay": config.weight_decay},
              {"params": [p for n, p in trained if n not in scales and p.dim() <= 1], "weight_decay": 0.0},
              {"params": [p for n, p in trained if n in scales], "lr": config.lr * 64, "weight_decay": 0.0}]
    opt = torch.optim.SGD(groups, lr=config.lr, momentum=config.momentum, nesterov=True)
    steps = len(splits.train_y) // config.batch_size
    peak = max(1, round(0.23 * steps))
    schedule = torch.optim.lr_scheduler.LambdaLR(opt, lambda i: 0.2 + 0.8 * i / peak if i < peak
                                                 else 1 - 0.93 * (i - peak) / max(1, steps - peak))
    order = torch.randperm(len(splits.train_y))
    pad = config.crop_padding
    for i in range(steps):
        index = order[i * config.batch_size:(i + 1) * config.batch_size]
        x = torch.nn.functional.pad(splits.train_x[index], (pad,) * 4)
        shift = torch.randint(0, 2 * pad + 1, (len(x), 2))  # each image its own crop, by advanced indexing
        rows = (shift[:, :1] + torch.arange(32))[:, None, :, None]
        cols = (shift[:, 1:] + torch.arange(32))[:, None, None, :]
        x = x[torch.arange(len(x))[:, None, None, None], torch.arange(3)[None, :, None, None], rows, cols]
        x = torch.where(torch.rand(len(x), 1, 1, 1) < 0.5, x.flip(-1), x)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            logits = model(normalize(x))
        loss = torch.nn.functional.cross_entropy(logits.float(), splits.train_y[index],
                                                 label_smoothing=config.label_smoothing)
        opt.zero_grad()
        loss.backward()
        opt.step()
        schedule.step()
    model.eval()
    with torch.inference_mode():
        correct = sum(int((model(normalize(x)).argmax(1) == y).sum())
                      for x, y in zip(splits.test_x.split(64), splits.test_y.split(64)))
    assert math.isfinite(loss.item()) and correct >= 0
    return time.perf_counter() - start


def epoch_overhead(args: argparse.Namespace) -> None:
    bf16 = _slow_bf16_reason() is None
    splits = load_dataset("cifar10").subset(args.train_size, seed=0)
    splits = dataclasses.replace(splits, test_x=splits.test_x[:args.test_size], test_y=splits.test_y[:args.test_size])
    config = TrainConfig(dataset="cifar10", model="airbench", width=args.width, batch_size=args.batch_size, epochs=1,
                         lr=1.5, momentum=0.85, nesterov=True, weight_decay=1.33e-3, label_smoothing=0.2,
                         schedule="triangle", crop_padding=2, augment=True, channels_last=True,
                         precision="bf16" if bf16 else "fp32", train_size=args.train_size)
    ours, theirs = [], []
    train(config, log=None, splits=splits, progress=False)  # warm-up, untimed: oneDNN builds its kernels once
    plain_epoch(config, splits, bf16)
    for _ in range(args.repeats):
        start = time.perf_counter()
        train(config, log=None, splits=splits, progress=False)
        ours.append(time.perf_counter() - start)
        theirs.append(plain_epoch(config, splits, bf16))
    print(f"airbench width {args.width}, batch {args.batch_size}, {args.train_size} training and {args.test_size} test "
          f"images, {'bf16' if bf16 else 'fp32'}, channels-last, {torch.get_num_threads()} threads, CPU "
          f"({torch.backends.cpu.get_cpu_capability()}); median of {args.repeats}, interleaved")
    print(f"gradgeo epoch {statistics.median(ours):.1f} s, plain loop {statistics.median(theirs):.1f} s, "
          f"ratio {statistics.median(ours) / statistics.median(theirs):.3f}x "
          f"(each repeat: {', '.join(f'{a / b:.3f}' for a, b in zip(ours, theirs))})")


def loader_speed(args: argparse.Namespace) -> None:
    splits = load_dataset("cifar10")
    def make_train_step(channels_last: bool = False, bf16: bool = False):
        torch.manual_seed(0)
        model = build_model(args.model, num_classes=10, in_channels=3)
        layout = torch.channels_last if channels_last else torch.contiguous_format
        model = model.to(memory_format=layout)
        opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)

        def train_step(x, y):
            opt.zero_grad()
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                logits = model(x.contiguous(memory_format=layout))
            torch.nn.functional.cross_entropy(logits.float(), y).backward()
            opt.step()
        return train_step

    train_step = make_train_step()

    def gradgeo_batches():
        loader = splits.loader("train", args.batch_size, shuffle=True, drop_last=True, augment=Augment(), seed=0)
        epoch = 0
        while True:
            yield from loader.epoch(epoch)
            epoch += 1

    def torch_batches():
        dataset = PerSampleCifar(splits.train_x, splits.train_y, splits.mean, splits.std)
        while True:
            yield from DataLoader(dataset, batch_size=args.batch_size, shuffle=True, drop_last=True)

    results = {}
    rows = (("data only", lambda x, y: None, lambda x, y: None, args.batches * 5),
            ("train step", train_step, train_step, args.batches),
            ("+ channels_last", make_train_step(channels_last=True), train_step, args.batches),
            ("+ bf16", make_train_step(channels_last=True, bf16=True), train_step, args.batches))
    for name, ours, theirs, n in rows:
        results[name] = (timed(gradgeo_batches(), n, ours), timed(torch_batches(), n, theirs))
    print(f"CIFAR-10 (JPEG q75), {args.model}, batch {args.batch_size}, {torch.get_num_threads()} threads, CPU")
    print(f"{'':<16}{'gradgeo img/s':>15}{'DataLoader img/s':>18}{'ratio':>8}")
    for name, (ours, theirs) in results.items():
        print(f"{name:<16}{ours:>15.0f}{theirs:>18.0f}{ours / theirs:>7.1f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="part", required=True)
    epoch = sub.add_parser("epoch", help="a gradgeo epoch vs a minimal plain-torch loop (airbench workload)")
    epoch.add_argument("--width", type=float, default=0.5)
    epoch.add_argument("--batch-size", type=int, default=1024)
    epoch.add_argument("--train-size", type=int, default=10240)
    epoch.add_argument("--test-size", type=int, default=2000)
    epoch.add_argument("--repeats", type=int, default=3)
    loader = sub.add_parser("loader", help="gradgeo's in-memory batches vs a per-sample DataLoader")
    loader.add_argument("--model", default="resnet20")
    loader.add_argument("--batches", type=int, default=40)
    loader.add_argument("--batch-size", type=int, default=128)
    args = parser.parse_args()
    (epoch_overhead if args.part == "epoch" else loader_speed)(args)


if __name__ == "__main__":
    main()
