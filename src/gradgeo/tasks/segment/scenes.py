"""A deterministic segmentation benchmark built from real item images: items pasted on a blank canvas.

Each scene is a ``canvas x canvas`` image (64 x 64 by default) holding ``min_items .. max_items`` items (2 to 4),
each a whole Fashion-MNIST (or MNIST) image pasted at a random position. Every pixel is labelled with the
class of the item it shows, plus one, or 0 for background. The rules, exactly:

* **Which pixels an item covers**: those whose intensity is above ``threshold`` (32 of 255 by default; any
  channel); its pixels at or below the threshold are transparent, so the image shows exactly what the label
  map says (the faint fringe they would add is under 11% of an item's non-zero pixels).
* **Overlap**: items are pasted one after another; a later item lies on top, replacing the earlier pixels
  and labels wherever it covers the canvas.
* **Randomness**: from one ``torch.Generator`` seeded with ``seed``, in this order: the item count of every
  scene (uniform in ``min_items..max_items``), then ``max_items`` item indices per scene (uniform over the
  source images, with replacement across scenes), then ``max_items`` top-left rows and then columns per scene
  (uniform in ``0..canvas - item_size``). Slots beyond a scene's count are drawn and not used, so the same
  seed gives the same scenes on any machine.
* **Sources**: training scenes take their items from the training images, test scenes from the test images
  only; validation scenes from a stratified sixth of the training images held out (seed 0; 10,000 of
  Fashion-MNIST's 60,000), which the training scenes then never use.

Scenes are held in memory as uint8 tensors: images ``N x C x canvas x canvas``, label maps ``N x canvas x
canvas`` (background 0, item class ``k`` as ``k + 1``).

Example:
    >>> images = torch.full((3, 1, 4, 4), 200, dtype=torch.uint8)
    >>> x, y = make_scenes(images, torch.tensor([0, 1, 2]), 2, seed=0, canvas=8)
    >>> x.shape, y.shape, y.dtype
    (torch.Size([2, 1, 8, 8]), torch.Size([2, 8, 8]), torch.uint8)
"""

from __future__ import annotations

from typing import cast

import torch

from gradgeo.data import DatasetSplits, channel_stats
from gradgeo.data.loader import _derive_seed

__all__ = ["SCENE_SEED", "VAL_SOURCE_FRACTION", "make_scenes", "scene_splits"]

#: the seed of every scene set (each split its own stream): every run of a comparison sees the same scenes
SCENE_SEED = 0
#: the fraction of the training images held out (stratified, seed 0) as the items of the validation scenes
VAL_SOURCE_FRACTION = 1 / 6
_STREAMS = {"train": 0, "val": 1, "test": 2}


def make_scenes(
    images: torch.Tensor,
    labels: torch.Tensor,
    n: int,
    *,
    seed: int,
    canvas: int = 64,
    min_items: int = 2,
    max_items: int = 4,
    threshold: int = 32,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` scenes of items from ``images`` (the rules are in the module docstring).

    Args:
        images: uint8 items ``M x C x h x w`` (``h, w <= canvas``).
        labels: their classes ``M``, integers in ``0..254``.
        n: how many scenes.
        seed: the seed of the scenes' random draws.
        canvas: height and width of a scene.
        min_items, max_items: the item count of a scene is uniform in ``min_items..max_items``.
        threshold: an item covers the pixels whose intensity (any channel) is above it.

    Returns:
        ``(x, y)``: uint8 images ``n x C x canvas x canvas`` and uint8 label maps ``n x canvas x canvas``.
    """
    if images.dim() != 4 or images.dtype != torch.uint8:
        raise ValueError(f"images must be a uint8 batch M x C x h x w, got {images.dtype} {tuple(images.shape)}")
    if labels.shape != (len(images),) or len(images) == 0:
        raise ValueError(f"labels must hold one class per image ({len(images)} images), got {tuple(labels.shape)}")
    h, w = images.shape[-2:]
    for name, value, low in (("n", n, 1), ("canvas", canvas, max(h, w)), ("min_items", min_items, 1),
                             ("max_items", max_items, min_items), ("threshold", threshold, 0)):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
    if threshold > 254:
        raise ValueError(f"threshold must be below 255 (the brightest pixel), got {threshold}")
    if int(labels.min()) < 0 or int(labels.max()) > 254:
        raise ValueError("labels must be in 0..254 (stored as label + 1 in uint8 maps)")

    generator = torch.Generator().manual_seed(seed)
    counts = torch.randint(min_items, max_items + 1, (n,), generator=generator)
    picks = torch.randint(len(images), (n, max_items), generator=generator)
    rows = torch.randint(canvas - h + 1, (n, max_items), generator=generator)
    cols = torch.randint(canvas - w + 1, (n, max_items), generator=generator)

    images, labels = images.cpu(), labels.cpu()
    x = torch.zeros(n, images.shape[1], canvas, canvas, dtype=torch.uint8)
    y = torch.zeros(n, canvas, canvas, dtype=torch.uint8)
    for slot in range(max_items):  # in order: a later item lands on top
        scenes = torch.nonzero(counts > slot).squeeze(1)
        items = images[picks[scenes, slot]]
        cover = items.amax(1) > threshold  # m x h x w
        m = len(scenes)
        scene_index = scenes.view(m, 1, 1).expand(m, h, w)[cover]
        row_index = (rows[scenes, slot].view(m, 1, 1) + torch.arange(h).view(1, h, 1)).expand(m, h, w)[cover]
        col_index = (cols[scenes, slot].view(m, 1, 1) + torch.arange(w).view(1, 1, w)).expand(m, h, w)[cover]
        y[scene_index, row_index, col_index] = (labels[picks[scenes, slot]].view(m, 1, 1).expand(m, h, w)[cover]
                                                + 1).to(torch.uint8)
        for channel in range(images.shape[1]):
            x[scene_index, channel, row_index, col_index] = items[:, channel][cover]
    return x, y


def scene_splits(
    source: DatasetSplits,
    train_scenes: int,
    test_scenes: int,
    val_scenes: int = 0,
    *,
    canvas: int = 64,
    min_items: int = 2,
    max_items: int = 4,
    threshold: int = 32,
) -> DatasetSplits:
    """Train, test (and validation) scenes built from a classification dataset, as :class:`DatasetSplits`.

    Training scenes come from ``source``'s training images, test scenes from its test images only. With
    ``val_scenes``, a :data:`VAL_SOURCE_FRACTION` of the training images is first held out (stratified, seed 0)
    as the source of the validation scenes and the training scenes use the rest. Each split has its own stream
    of :data:`SCENE_SEED`. The classes are ``("background", *source.classes)``; ``mean``/``std`` come from the
    training scenes. ``train_y``/``val_y``/``test_y`` are label maps, so :meth:`DatasetSplits.subset` and
    :meth:`~DatasetSplits.split_validation` (stratified by class label) do not apply to the result.

    Args:
        source: a dataset of items (with no validation split of its own).
        train_scenes, test_scenes, val_scenes: how many scenes of each split.
        canvas, min_items, max_items, threshold: as in :func:`make_scenes`.

    Returns:
        The scenes, on the CPU.

    Example:
        >>> from gradgeo.data import load_dataset
        >>> splits = scene_splits(load_dataset("fashion-mnist"), 20, 10)
        >>> splits.train_x.shape, splits.train_y.shape, splits.num_classes
        (torch.Size([20, 1, 64, 64]), torch.Size([20, 64, 64]), 11)
    """
    if source.val_y is not None:
        raise ValueError("scene_splits holds out its own validation items: pass splits without a validation set")
    if len(source.classes) > 254:
        raise ValueError(f"at most 254 item classes fit uint8 label maps, got {len(source.classes)}")
    options = {"canvas": canvas, "min_items": min_items, "max_items": max_items, "threshold": threshold}
    held_out = max(1, round(len(source.train_y) * VAL_SOURCE_FRACTION))
    items = source.split_validation(held_out, seed=0) if val_scenes else source

    def scenes(split: str, x: torch.Tensor, y: torch.Tensor, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        return make_scenes(x, y, n, seed=_derive_seed(SCENE_SEED, _STREAMS[split]), **options)

    train_x, train_y = scenes("train", items.train_x, items.train_y, train_scenes)
    test_x, test_y = scenes("test", items.test_x, items.test_y, test_scenes)
    val_x, val_y = None, None
    if val_scenes:  # split_validation above set both
        val_x, val_y = scenes("val", cast(torch.Tensor, items.val_x), cast(torch.Tensor, items.val_y), val_scenes)
    mean, std = channel_stats(train_x)
    name = f"{source.name}-scenes"
    display = f"{source.display_name} scenes ({canvas}x{canvas}, {min_items}-{max_items} items, threshold {threshold})"
    return DatasetSplits(name, display, source.source, ("background", *source.classes), train_x, train_y, test_x,
                         test_y, mean, std, val_x, val_y)
