"""Augmentation of whole uint8 image batches on any device: random crops of the zero-padded images and
horizontal flips, drawn from a generator so that a run reproduces them exactly."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

__all__ = ["Augment", "pad_crop", "random_crop", "random_flip"]


def _check_images(x: torch.Tensor, name: str) -> None:
    if not isinstance(x, torch.Tensor) or x.dim() != 4:
        shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise ValueError(f"{name} must be an image batch N x C x H x W, got {shape}")


def _draw_device(generator: torch.Generator | None, x: torch.Tensor) -> torch.device:
    # draw on the generator's device so that a CPU generator gives the same numbers for data on any device
    return generator.device if generator is not None else x.device


def pad_crop(x: torch.Tensor, padding: int, offsets: torch.Tensor) -> torch.Tensor:
    """Crop each image of a batch at its own offset inside its zero-padded copy.

    ``out[n, :, i, j] = padded[n, :, i + offsets[n, 0], j + offsets[n, 1]]`` where ``padded`` is ``x`` with
    ``padding`` zero pixels on every side; offsets lie in ``[0, 2 * padding]`` and ``(padding, padding)``
    returns the image unchanged. One indexing copy out of a strided view of all windows, no Python loop over
    images (about 3x faster on CPU than gathering rows, then columns).

    Args:
        x: batch ``N x C x H x W`` (any dtype, any device).
        padding: pixels of zero padding per side, ``>= 0``.
        offsets: integer tensor ``N x 2`` of (row, column) offsets.

    Returns:
        A new batch with ``x``'s shape.

    Example:
        >>> x = torch.ones(1, 1, 2, 2, dtype=torch.uint8)
        >>> pad_crop(x, 1, torch.tensor([[0, 0]]))[0, 0]
        tensor([[0, 0],
                [0, 1]], dtype=torch.uint8)
    """
    _check_images(x, "x")
    if isinstance(padding, bool) or not isinstance(padding, int) or padding < 0:
        raise ValueError(f"padding must be an integer >= 0, got {padding!r}")
    n, c, h, w = x.shape
    if offsets.shape != (n, 2):
        raise ValueError(f"offsets must be {n} x 2 (row, column), got {tuple(offsets.shape)}")
    offsets = offsets.to(device=x.device, dtype=torch.long)
    if len(offsets) and not 0 <= int(offsets.min()) <= int(offsets.max()) <= 2 * padding:
        raise ValueError(f"offsets must lie in [0, {2 * padding}] for padding {padding}")
    padded = F.pad(x, (padding, padding, padding, padding))
    windows = padded.unfold(2, h, 1).unfold(3, w, 1)  # a view: N x C x rows x cols x H x W
    return windows[torch.arange(n, device=x.device), :, offsets[:, 0], offsets[:, 1]]


def random_crop(x: torch.Tensor, padding: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """Random translation: pad every image by ``padding`` zero pixels, crop back to its size at a random spot.

    The standard CIFAR augmentation is ``padding=4`` (zero padding, i.e. black pixels before normalization).
    Offsets are uniform over the ``(2 * padding + 1)^2`` positions, independent per image.

    Args:
        x: batch ``N x C x H x W``, normally uint8 (any device).
        padding: pixels per side, ``>= 0``.
        generator: source of randomness; the same seeded generator gives the same crops (on any device, if
            it is a CPU generator). ``None`` uses the global RNG of ``x``'s device.

    Returns:
        A new batch with ``x``'s shape and dtype.

    Example:
        >>> g = torch.Generator().manual_seed(0)
        >>> random_crop(torch.zeros(8, 3, 32, 32, dtype=torch.uint8), 4, g).shape
        torch.Size([8, 3, 32, 32])
    """
    _check_images(x, "x")
    device = _draw_device(generator, x)
    offsets = torch.randint(0, 2 * padding + 1, (len(x), 2), generator=generator, device=device)
    return pad_crop(x, padding, offsets)


def random_flip(x: torch.Tensor, generator: torch.Generator | None = None, p: float = 0.5) -> torch.Tensor:
    """Mirror each image left-right with probability ``p``, independently.

    Args:
        x: batch ``N x C x H x W`` (any dtype, any device).
        generator: source of randomness (see :func:`random_crop`).
        p: flip probability in ``[0, 1]``.

    Returns:
        A new batch with ``x``'s shape and dtype.

    Example:
        >>> x = torch.tensor([[[[1, 2]]]])
        >>> random_flip(x, p=1.0)
        tensor([[[[2, 1]]]])
    """
    _check_images(x, "x")
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"p must lie in [0, 1], got {p!r}")
    flip = torch.rand(len(x), generator=generator, device=_draw_device(generator, x)) < p
    # pick each image from [x, mirrored x]: ~4x faster on CPU than a broadcast torch.where
    pick = torch.arange(len(x), device=x.device) + len(x) * flip.to(x.device)
    return torch.cat([x, x.flip(-1)]).index_select(0, pick)


@dataclass(frozen=True)
class Augment:
    """The standard CIFAR augmentation as a callable ``(x, generator) -> x``: random crop, then random flip.

    Any callable with that signature can be given to :class:`Loader` instead.

    Args:
        padding: zero padding of :func:`random_crop`; 0 turns cropping off.
        flip: whether to apply :func:`random_flip`.

    Example:
        >>> aug = Augment(padding=4, flip=True)
        >>> aug(torch.zeros(2, 3, 32, 32, dtype=torch.uint8), torch.Generator().manual_seed(0)).shape
        torch.Size([2, 3, 32, 32])
    """

    padding: int = 4
    flip: bool = True

    def __call__(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        if self.padding:
            x = random_crop(x, self.padding, generator)
        if self.flip:
            x = random_flip(x, generator)
        return x

