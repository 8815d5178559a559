"""The deterministic batch loader: in-memory uint8 images, augmented and normalized on their device, in an
order that depends only on ``(seed, epoch)``."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence

import torch

from gradgeo.data.augment import _check_images

__all__ = ["Loader", "normalize"]


def _affine(
    mean: Sequence[float] | torch.Tensor,
    std: Sequence[float] | torch.Tensor,
    channels: int,
    device: torch.device,
    dtype: torch.dtype,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(scale, shift)`` of shape ``C x 1 x 1`` with ``normalize(x) = x * scale - shift``."""
    mean_t = torch.as_tensor(mean, dtype=torch.float64).reshape(-1)
    std_t = torch.as_tensor(std, dtype=torch.float64).reshape(-1)
    if mean_t.numel() != channels or std_t.numel() != channels:
        raise ValueError(
            f"mean and std need one value per channel ({channels}), got {mean_t.numel()} and {std_t.numel()}"
        )
    if not bool((std_t > 0).all()):
        raise ValueError(f"std must be > 0 in every channel, got {std_t.tolist()}")
    scale, shift = 1.0 / (255.0 * std_t), mean_t / std_t
    return (scale.to(device, dtype).reshape(-1, 1, 1), shift.to(device, dtype).reshape(-1, 1, 1))


def normalize(
    x: torch.Tensor,
    mean: Sequence[float] | torch.Tensor,
    std: Sequence[float] | torch.Tensor,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """Convert uint8 images to float and standardize per channel: ``(x / 255 - mean) / std``.

    Args:
        x: uint8 batch ``N x C x H x W`` (any device). A float input is refused: it is most likely already
            normalized, and normalizing twice fails silently.
        mean: per-channel mean on the [0, 1] scale (e.g. ``splits.mean``).
        std: per-channel std on the [0, 1] scale, ``> 0``.
        dtype: floating dtype of the result.

    Returns:
        A new tensor of ``dtype`` on ``x``'s device.

    Example:
        >>> normalize(torch.tensor([0, 255], dtype=torch.uint8).view(2, 1, 1, 1), [0.5], [0.5]).flatten()
        tensor([-1.,  1.])
    """
    _check_images(x, "x")
    if x.dtype != torch.uint8:
        raise TypeError(f"normalize expects uint8 images (0..255), got {x.dtype}")
    scale, shift = _affine(mean, std, x.shape[1], x.device, dtype)
    return x.to(dtype).mul_(scale).sub_(shift)


_MASK64 = (1 << 64) - 1


def _derive_seed(*keys: int) -> int:
    """Mix integers into one seed (splitmix64 steps), so that nearby keys give unrelated random streams."""
    h = 0
    for k in keys:
        z = ((h ^ (k & _MASK64)) + 0x9E3779B97F4A7C15) & _MASK64
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK64
        h = z ^ (z >> 31)
    return h >> 1  # 63 bits: every torch.Generator seed range accepts it


_ORDER_STREAM, _AUGMENT_STREAM = 0, 1


class Loader:
    """Mini-batches of in-memory uint8 images, augmented and normalized on the images' device.

    The order of epoch ``e`` is a permutation drawn from ``(seed, e)`` alone, and the augmentation of batch
    ``b`` from ``(seed, e, b)`` alone (a separate stream: switching augmentation on or off keeps the order).
    So any epoch, or the rest of an epoch from batch ``b`` on, can be reproduced without replaying earlier
    ones, and the global RNG is never touched. Each batch is one index into the stored tensor, then the
    augmentation on the uint8 batch, then one fused conversion to float.

    Args:
        x: uint8 images ``N x C x H x W`` (move them to the GPU once, and batches come out there).
        y: labels ``N`` on the same device, or per-image label maps ``N x ...`` (segmentation masks: yielded
            as they are stored, batched along the first axis; augmentation changes only the images, so give
            none with label maps).
        batch_size: images per batch, ``>= 1``.
        mean: per-channel mean on the [0, 1] scale (from the training set).
        std: per-channel std on the [0, 1] scale.
        shuffle: draw a new order every epoch; ``False`` keeps the stored order.
        drop_last: skip a final batch smaller than ``batch_size``.
        augment: ``callable(x_uint8, generator) -> x_uint8``, e.g. :class:`Augment`; ``None`` for none.
        seed: the run's seed.
        dtype: floating dtype of the yielded images.
        rank: this process's index among ``world_size`` data-parallel processes (DDP).
        world_size: with ``world_size > 1`` every batch is the rank's share of the *global* batch of
            ``batch_size`` images: the batch is split into ``world_size`` contiguous parts (sizes differ by at
            most one; keep ``batch_size`` divisible for equal shares) and this rank gets part ``rank``. The
            ranks' parts together are exactly the single-process batch, augmentation included (each rank
            augments the global batch, a cheap uint8 tensor operation, and keeps its part, so the random
            crops and flips are those of one process). ``len`` counts global batches.

    Example:
        >>> x, y = torch.zeros(10, 1, 4, 4, dtype=torch.uint8), torch.arange(10)
        >>> loader = Loader(x, y, batch_size=4, mean=[0.5], std=[0.5], seed=0)
        >>> len(loader), [len(yb) for _, yb in loader.epoch(0)]
        (3, [4, 4, 2])
        >>> shard = Loader(x, y, batch_size=4, mean=[0.5], std=[0.5], seed=0, rank=1, world_size=2)
        >>> [yb.tolist() for _, yb in shard.epoch(0)] == [yb[len(yb) // 2 :].tolist() for _, yb in loader.epoch(0)]
        True
    """

    def __init__(
        self,
        x: torch.Tensor,
        y: torch.Tensor,
        batch_size: int,
        *,
        mean: Sequence[float] | torch.Tensor,
        std: Sequence[float] | torch.Tensor,
        shuffle: bool = True,
        drop_last: bool = False,
        augment: Callable[[torch.Tensor, torch.Generator], torch.Tensor] | None = None,
        seed: int = 0,
        dtype: torch.dtype = torch.float32,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        _check_images(x, "x")
        if x.dtype != torch.uint8:
            raise TypeError(f"Loader expects uint8 images (it normalizes them itself), got {x.dtype}")
        if y.dim() < 1 or len(y) != len(x) or y.device != x.device:
            raise ValueError(
                f"y must hold one label per image (or one label map per image) on x's device: x is {len(x)} "
                f"images on {x.device}, y is {tuple(y.shape)} on {y.device}"
            )
        if augment is not None and y.dim() > 1:
            raise ValueError("augment changes the images only; with label maps (segmentation) it would misalign "
                             "them: pass augment=None")
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be an integer >= 1, got {batch_size!r}")
        if isinstance(world_size, bool) or not isinstance(world_size, int) or world_size < 1:
            raise ValueError(f"world_size must be an integer >= 1, got {world_size!r}")
        if isinstance(rank, bool) or not isinstance(rank, int) or not 0 <= rank < world_size:
            raise ValueError(f"rank must be an integer in [0, {world_size}), got {rank!r}")
        self.x, self.y, self.batch_size = x, y, batch_size
        self.rank, self.world_size = rank, world_size
        self.shuffle, self.drop_last, self.augment = shuffle, drop_last, augment
        self.seed, self.dtype = seed, dtype
        self._scale, self._shift = _affine(mean, std, x.shape[1], x.device, dtype)

    def __len__(self) -> int:
        """Batches per epoch."""
        n = len(self.x)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def order(self, epoch: int) -> torch.Tensor:
        """The sample order of ``epoch`` (a CPU int64 permutation; ``arange`` without shuffling)."""
        if not self.shuffle:
            return torch.arange(len(self.x))
        generator = torch.Generator().manual_seed(_derive_seed(self.seed, epoch, _ORDER_STREAM))
        return torch.randperm(len(self.x), generator=generator)

    def epoch(self, epoch: int, start_batch: int = 0) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Yield ``(images, labels)`` for one epoch: float ``B x C x H x W`` and the labels as stored (int64 ``B``
        for classification, ``B x H x W`` label maps for segmentation).

        Args:
            epoch: epoch number; with the seed it fixes the order and the augmentation.
            start_batch: resume within the epoch: skip the batches before this one (they are not computed).

        Returns:
            An iterator over the batches.
        """
        if (
            isinstance(start_batch, bool)
            or not isinstance(start_batch, int)
            or not 0 <= start_batch <= len(self)
        ):
            raise ValueError(f"start_batch must be an integer in [0, {len(self)}], got {start_batch!r}")
        return self._batches(epoch, start_batch)

    def _batches(self, epoch: int, start_batch: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        order = self.order(epoch).to(self.x.device)
        generator = torch.Generator()
        for b in range(start_batch, len(self)):
            idx = order[b * self.batch_size : (b + 1) * self.batch_size]
            # this rank's part of the global batch; with augmentation, the part is taken after it
            part = slice(self.rank * len(idx) // self.world_size, (self.rank + 1) * len(idx) // self.world_size)
            if self.augment is None:
                idx = idx[part]
            xb, yb = self.x[idx], self.y[idx]
            if self.augment is not None:
                generator.manual_seed(_derive_seed(self.seed, epoch, _AUGMENT_STREAM, b))
                xb, yb = self.augment(xb, generator)[part], yb[part]
            yield xb.to(self.dtype).mul_(self._scale).sub_(self._shift), yb
