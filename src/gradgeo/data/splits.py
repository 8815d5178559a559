"""A dataset in memory (:class:`DatasetSplits`) and its splits: a stratified validation split and
stratified subsets, with exact per-channel statistics recomputed for every training set."""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch

from gradgeo.data.augment import _check_images
from gradgeo.data.loader import Loader

__all__ = ["DatasetSplits", "channel_stats"]


@dataclass(frozen=True)
class DatasetSplits:
    """A dataset in memory: uint8 images ``N x C x H x W``, int64 labels, class names and channel stats.

    ``mean`` and ``std`` are per channel on the [0, 1] pixel scale and always describe the current
    ``train_x`` (they are recomputed by :meth:`split_validation` and :meth:`subset`, so validation images
    never leak into the normalization; :meth:`subset_test` leaves them as they are). ``val_x``/``val_y`` are
    ``None`` until :meth:`split_validation`.

    Example:
        >>> from gradgeo.data import load_dataset
        >>> splits = load_dataset("fashion-mnist")
        >>> splits.train_x.shape, splits.classes[0]
        (torch.Size([60000, 1, 28, 28]), 'T-shirt/top')
    """

    name: str
    display_name: str  # how to cite it in reports, e.g. "CIFAR-10 (JPEG q75)"
    source: Path  # the directory it was read from
    classes: tuple[str, ...]
    train_x: torch.Tensor = field(repr=False)
    train_y: torch.Tensor = field(repr=False)
    test_x: torch.Tensor = field(repr=False)
    test_y: torch.Tensor = field(repr=False)
    mean: tuple[float, ...] = field(repr=False)
    std: tuple[float, ...] = field(repr=False)
    val_x: torch.Tensor | None = field(default=None, repr=False)
    val_y: torch.Tensor | None = field(default=None, repr=False)

    def __repr__(self) -> str:
        n_val = 0 if self.val_y is None else len(self.val_y)
        return (
            f"DatasetSplits({self.display_name!r}, train={len(self.train_y)}, val={n_val}, "
            f"test={len(self.test_y)}, image={tuple(self.train_x.shape[1:])}, classes={len(self.classes)})"
        )

    @property
    def num_classes(self) -> int:
        """Number of classes."""
        return len(self.classes)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """``(C, H, W)`` of one image."""
        c, h, w = self.train_x.shape[1:]
        return c, h, w

    def split_validation(self, n_val: int, seed: int = 0) -> DatasetSplits:
        """Carve a stratified validation set of ``n_val`` images out of the training set.

        Each class gives ``n_val * class_count / N`` images (largest-remainder rounding, so exactly ``n_val``
        in all), drawn at random under ``seed``; both parts keep the original order. ``mean``/``std`` are
        recomputed from what remains for training.

        Args:
            n_val: validation size, ``0 < n_val < len(train)``.
            seed: selects which images; the same seed gives the same split on any device.

        Returns:
            New splits with ``train_*`` reduced and ``val_*`` set; ``self`` is unchanged.

        Example:
            >>> from gradgeo.data import load_dataset
            >>> load_dataset("fashion-mnist").split_validation(5000, seed=0).val_y.shape
            torch.Size([5000])
        """
        if self.val_y is not None:
            raise ValueError(
                f"these splits already have a validation set of {len(self.val_y)} images; "
                "call split_validation on the splits it came from"
            )
        _check_count("n_val", n_val, len(self.train_y) - 1, len(self.train_y))
        val_idx, train_idx = _stratified_split(self.train_y, n_val, seed)
        return self._with_train(
            train_idx,
            val_x=self.train_x[val_idx.to(self.train_x.device)],
            val_y=self.train_y[val_idx.to(self.train_y.device)],
        )

    def subset(self, n: int, seed: int = 0) -> DatasetSplits:
        """Keep a stratified random subset of ``n`` training images (for short runs); val and test unchanged.

        Args:
            n: how many training images to keep, ``0 < n <= len(train)``.
            seed: selects which images.

        Returns:
            New splits; ``mean``/``std`` are recomputed from the subset.

        Example:
            >>> from gradgeo.data import load_dataset
            >>> load_dataset("fashion-mnist").subset(10_000, seed=0).train_x.shape[0]
            10000
        """
        _check_count("n", n, len(self.train_y), len(self.train_y))
        if n == len(self.train_y):
            return self
        kept, _ = _stratified_split(self.train_y, n, seed)
        return self._with_train(kept)

    def subset_test(self, n: int, seed: int = 0) -> DatasetSplits:
        """Keep a stratified random subset of ``n`` test images (for short runs whose every epoch evaluates the
        test set); train, val and the normalization statistics unchanged.

        Args:
            n: how many test images to keep, ``0 < n <= len(test)``.
            seed: selects which images (in their original order).

        Returns:
            New splits.

        Example:
            >>> from gradgeo.data import load_dataset
            >>> load_dataset("fashion-mnist").subset_test(1000, seed=0).test_y.bincount().tolist()
            [100, 100, 100, 100, 100, 100, 100, 100, 100, 100]
        """
        _check_count("n", n, len(self.test_y), len(self.test_y), "test")
        if n == len(self.test_y):
            return self
        kept, _ = _stratified_split(self.test_y, n, seed)
        return replace(self, test_x=self.test_x[kept.to(self.test_x.device)],
                       test_y=self.test_y[kept.to(self.test_y.device)])

    def to(self, device: torch.device | str) -> DatasetSplits:
        """Copy every tensor to ``device`` once (e.g. the GPU), so batches never cross the bus.

        Example:
            >>> splits = load_dataset("cifar10").to("cuda")  # doctest: +SKIP
        """

        def move(t: torch.Tensor) -> torch.Tensor:
            return t.to(device)

        return replace(
            self,
            train_x=move(self.train_x),
            train_y=move(self.train_y),
            test_x=move(self.test_x),
            test_y=move(self.test_y),
            val_x=None if self.val_x is None else move(self.val_x),
            val_y=None if self.val_y is None else move(self.val_y),
        )

    def loader(self, split: str, batch_size: int, **kwargs) -> Loader:
        """A :class:`Loader` over ``"train"``, ``"val"`` or ``"test"`` normalized with the training stats.

        Args:
            split: which part to iterate.
            batch_size: images per batch.
            **kwargs: passed on to :class:`Loader` (``drop_last``, ``augment``, ``seed`` ...); ``shuffle``
                defaults to ``True`` for ``"train"`` and ``False`` for the evaluation splits.

        Returns:
            The loader.

        Example:
            >>> from gradgeo.data import load_dataset
            >>> test = load_dataset("fashion-mnist").loader("test", 1000)
            >>> len(test)  # batches of the 10,000 test images
            10
        """
        parts = {
            "train": (self.train_x, self.train_y),
            "val": (self.val_x, self.val_y),
            "test": (self.test_x, self.test_y),
        }
        if split not in parts:
            raise ValueError(f"unknown split {split!r}; expected one of {tuple(parts)}")
        x, y = parts[split]
        if x is None or y is None:  # val_x and val_y are set together
            raise ValueError("these splits have no validation set; call split_validation(n_val, seed) first")
        kwargs.setdefault("shuffle", split == "train")
        return Loader(x, y, batch_size, mean=self.mean, std=self.std, **kwargs)

    def _with_train(self, idx: torch.Tensor, **changes) -> DatasetSplits:
        train_x = self.train_x[idx.to(self.train_x.device)]
        mean, std = channel_stats(train_x)
        return replace(
            self,
            train_x=train_x,
            train_y=self.train_y[idx.to(self.train_y.device)],
            mean=mean,
            std=std,
            **changes,
        )


def _check_count(name: str, value: int, most: int, total: int, part: str = "training") -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 < value <= most:
        raise ValueError(
            f"{name} must be an integer in [1, {most}] for a {part} set of {total} images, got {value!r}"
        )


def _stratified_split(y: torch.Tensor, n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Indices (sorted) of ``n`` samples drawn per class in proportion to the class sizes, and of the rest."""
    total = len(y)
    y = y.cpu()
    counts = torch.bincount(y)
    quota = counts.double() * (n / total)
    take = quota.floor().long()
    # largest remainders first (ties to the lower class index) so the parts add up to exactly n
    short = n - int(take.sum())
    take[torch.argsort(quota - take, descending=True, stable=True)[:short]] += 1
    perm = torch.randperm(total, generator=torch.Generator().manual_seed(seed))
    grouped = perm[torch.argsort(y[perm], stable=True)]  # by class, random order within each class
    labels = y[grouped]
    rank_in_class = torch.arange(total) - (torch.cumsum(counts, 0) - counts)[labels]
    chosen = rank_in_class < take[labels]
    return grouped[chosen].sort().values, grouped[~chosen].sort().values


def channel_stats(x: torch.Tensor) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Exact per-channel mean and (population) std of a uint8 image batch, on the [0, 1] pixel scale.

    Counts the 256 pixel levels per channel instead of converting the batch to float, so it makes no float
    copy of the batch and is exact in float64.

    Args:
        x: uint8 tensor ``N x C x H x W``.

    Returns:
        ``(mean, std)``, each a tuple of C floats.

    Example:
        >>> channel_stats(torch.tensor([0, 255], dtype=torch.uint8).view(2, 1, 1, 1))
        ((0.5,), (0.5,))
    """
    _check_images(x, "x")
    if x.dtype != torch.uint8 or len(x) == 0:
        raise ValueError(f"channel_stats needs a non-empty uint8 batch, got {len(x)} images of {x.dtype}")
    levels = torch.arange(256, dtype=torch.float64) / 255
    mean, std = [], []
    for c in range(x.shape[1]):
        p = torch.bincount(x[:, c].reshape(-1), minlength=256).cpu().double()
        p /= p.sum()
        m = float(p @ levels)
        mean.append(m)
        std.append(math.sqrt(float(p @ (levels - m) ** 2)))
    return tuple(mean), tuple(std)


