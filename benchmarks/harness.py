"""Images per second of gradgeo's in-memory loop vs a plain torch DataLoader with per-sample transforms.

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

Run: ``python benchmarks/harness.py [--model resnet20] [--batches 40] [--batch-size 128]``. bf16 is fast only on
CPUs with bfloat16 instructions (AVX512-BF16 or AMX; this machine's AMD EPYC has AVX512-BF16).
"""

from __future__ import annotations

import argparse
import time

import torch
from torch.utils.data import DataLoader, Dataset

from gradgeo.data import Augment, load_dataset
from gradgeo.models import build_model


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="resnet20")
    parser.add_argument("--batches", type=int, default=40)
    parser.add_argument("--batch-size", type=int, default=128)
    args = parser.parse_args()
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


if __name__ == "__main__":
    main()
