"""Datasets of the user's own, held in memory and split like the built-ins: ``npz:FILE``, ``folder:DIR`` and
``package.module:callable`` (:func:`gradgeo.data.load_dataset` takes these names; the prefixes ``npz:`` and
``folder:`` come first, so a module of yours cannot be called ``npz`` or ``folder``).

* ``npz:FILE``: a NumPy ``.npz`` archive with the arrays ``x_train``, ``y_train``, ``x_test``, ``y_test``
  (uint8 images ``N x H x W x C``, ``N x C x H x W`` or ``N x H x W``; integer labels) and optionally
  ``classes`` (one name per class). Read with NumPy (``gradgeo[harness]``), without pickle.
* ``folder:DIR``: one subfolder of image files per class under ``DIR/train/`` and ``DIR/test/``, decoded once with
  Pillow (``gradgeo[images]``) and cached (:mod:`gradgeo.data.images`).
* ``package.module:callable``: a function of no arguments returning ``(x_train, y_train, x_test, y_test)`` or
  ``(x_train, y_train, x_test, y_test, classes)``, each array a tensor or anything ``torch.as_tensor`` takes; or
  returning ``(train, test)`` or ``(train, test, classes)``, two map-style torch datasets (``len(d)`` and
  ``d[i]``) whose items are ``(image, label)``: the image a ``C x H x W`` (or ``H x W``) tensor, uint8 or float in
  [0, 1], or a PIL image; the label an integer. The datasets are read item by item once, into tensors; without
  ``classes``, the training dataset's ``classes`` attribute (as torchvision's datasets have) names the classes.

Every check names the source and the bad value: image dtype and layout, label type and range, sizes that do not
match, train and test images of different shapes.
"""

from __future__ import annotations

import importlib
import operator
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from gradgeo.data.formats import DatasetFormatError, _check_image_set
from gradgeo.data.images import pil_pixels, read_image_folder, stack_images
from gradgeo.data.splits import DatasetSplits, channel_stats

__all__ = ["dataset_from_arrays", "is_user_dataset", "load_user_dataset"]

_CHANNELS = (1, 3, 4)


def is_user_dataset(name: str) -> bool:
    """Whether ``name`` names a dataset of the user's (``npz:FILE``, ``folder:DIR`` or ``module:callable``)."""
    return isinstance(name, str) and ":" in name


def _images(x: Any, where: str, part: str) -> torch.Tensor:
    images = torch.as_tensor(x)
    if images.dtype != torch.uint8:
        raise DatasetFormatError(f"{where}: {part} must hold uint8 images (0..255), got dtype {images.dtype}; "
                                 "convert them, e.g. (x * 255).round().astype('uint8') for images in [0, 1]")
    if images.dim() == 3:  # N x H x W: one channel
        images = images.unsqueeze(1)
    elif images.dim() == 4 and images.shape[-1] in _CHANNELS and images.shape[1] not in _CHANNELS:
        images = images.permute(0, 3, 1, 2)  # N x H x W x C
    elif images.dim() != 4 or images.shape[1] not in _CHANNELS:
        raise DatasetFormatError(f"{where}: {part} has shape {tuple(images.shape)}; expected images N x H x W x C, "
                                 f"N x C x H x W or N x H x W with C in {_CHANNELS}")
    _check_image_set(images, where, part)
    return images.contiguous()


def _labels(y: Any, count: int, where: str, part: str) -> torch.Tensor:
    labels = torch.as_tensor(y)
    if labels.dtype.is_floating_point or labels.dtype.is_complex or labels.dtype == torch.bool:
        raise DatasetFormatError(f"{where}: {part} must hold integer class labels, got dtype {labels.dtype}")
    if labels.dim() != 1 or len(labels) != count:
        raise DatasetFormatError(f"{where}: {part} has shape {tuple(labels.shape)}; expected one label per image, "
                                 f"({count},)")
    return labels.long()


def dataset_from_arrays(name: str, where: str, x_train: Any, y_train: Any, x_test: Any, y_test: Any,
                        classes: Sequence[str] | None = None, source: Path | None = None) -> DatasetSplits:
    """:class:`DatasetSplits` from in-memory arrays, checked (see the module docstring); the class count is
    ``len(classes)``, else one more than the largest label.

    Example:
        >>> x = torch.zeros(4, 8, 8, 3, dtype=torch.uint8)
        >>> dataset_from_arrays("toy", "toy", x, [0, 1, 0, 1], x, [1, 0, 1, 0]).image_shape
        (3, 8, 8)
    """
    train_x, test_x = _images(x_train, where, "x_train"), _images(x_test, where, "x_test")
    if train_x.shape[1:] != test_x.shape[1:]:
        raise DatasetFormatError(f"{where}: training images are {tuple(train_x.shape[1:])} (C x H x W) but test "
                                 f"images are {tuple(test_x.shape[1:])}")
    train_y = _labels(y_train, len(train_x), where, "y_train")
    test_y = _labels(y_test, len(test_x), where, "y_test")
    count = len(classes) if classes is not None else int(torch.cat([train_y, test_y]).max()) + 1
    for part, labels in (("y_train", train_y), ("y_test", test_y)):
        if int(labels.min()) < 0 or int(labels.max()) >= count:
            raise DatasetFormatError(f"{where}: {part} holds labels in [{int(labels.min())}, {int(labels.max())}]; "
                                     f"they must lie in [0, {count})" + (f" ({count} classes named)" if classes
                                                                          is not None else ""))
    if count < 2:
        raise DatasetFormatError(f"{where}: the labels name {count} class; a classifier needs at least 2")
    names = tuple(str(c) for c in classes) if classes is not None else tuple(str(c) for c in range(count))
    mean, std = channel_stats(train_x)
    return DatasetSplits(name, name, source or Path(where), names, train_x, train_y, test_x, test_y, mean, std)


def _load_npz(name: str, path: Path) -> DatasetSplits:
    try:
        import numpy
    except ModuleNotFoundError:
        raise ModuleNotFoundError(f"reading {path} (an npz dataset) needs numpy: pip install 'gradgeo[harness]'",
                                  name="numpy") from None
    if not path.is_file():
        raise FileNotFoundError(f"npz dataset {path} does not exist")
    try:
        with numpy.load(path, allow_pickle=False) as archive:
            missing = [key for key in ("x_train", "y_train", "x_test", "y_test") if key not in archive.files]
            if missing:
                raise DatasetFormatError(f"{path}: the archive lacks {', '.join(missing)} (it holds "
                                         f"{', '.join(archive.files) or 'nothing'})")
            arrays = {key: archive[key] for key in ("x_train", "y_train", "x_test", "y_test")}
            classes = [str(c) for c in archive["classes"].tolist()] if "classes" in archive.files else None
    except (OSError, ValueError) as error:
        if isinstance(error, DatasetFormatError):
            raise
        raise DatasetFormatError(f"{path} is not a readable npz archive without pickled objects: {error}") from None
    return dataset_from_arrays(name, str(path), **arrays, classes=classes, source=path)


def _load_callable(name: str) -> DatasetSplits:
    module_name, _, attribute = name.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as error:
        raise ValueError(f"dataset {name!r}: cannot import module {module_name!r} ({error})") from None
    function = getattr(module, attribute, None)
    if not callable(function):
        raise ValueError(f"dataset {name!r}: module {module_name!r} has no callable {attribute!r}")
    parts = function()
    if isinstance(parts, (tuple, list)) and len(parts) in (2, 3) and all(map(_is_dataset, parts[:2])):
        return _from_datasets(name, *parts)
    if not isinstance(parts, (tuple, list)) or len(parts) not in (4, 5):
        returned = type(parts).__name__ + (f" of {len(parts)} ({', '.join(type(p).__name__ for p in parts)})"
                                           if isinstance(parts, (tuple, list)) else "")
        raise ValueError(f"dataset {name!r} returned a {returned}; expected (x_train, y_train, x_test, y_test[, "
                         "classes]) as arrays, or (train, test[, classes]) as map-style datasets of (image, label) "
                         "items")
    x_train, y_train, x_test, y_test = parts[:4]
    return dataset_from_arrays(name, name, x_train, y_train, x_test, y_test,
                               classes=list(parts[4]) if len(parts) == 5 else None)


def _is_dataset(value: Any) -> bool:
    """Whether ``value`` is a map-style dataset (``len()`` and ``[index]``) and not an array (which has a shape)."""
    return hasattr(value, "__len__") and hasattr(value, "__getitem__") and not hasattr(value, "shape")


def _from_datasets(name: str, train: Any, test: Any, classes: Sequence[str] | None = None) -> DatasetSplits:
    """The arrays of two map-style datasets of ``(image, label)`` items, read once and checked."""
    items = {part: _dataset_items(name, part, dataset) for part, dataset in (("train", train), ("test", test))}
    images = stack_images((where, image) for part in items.values() for where, image, _ in part)
    x_train, x_test = images.split([len(items["train"]), len(items["test"])])
    if classes is None:
        classes = getattr(train, "classes", None)
    return dataset_from_arrays(name, name, x_train, [label for *_, label in items["train"]], x_test,
                               [label for *_, label in items["test"]],
                               classes=None if classes is None else list(classes))


def _dataset_items(name: str, part: str, dataset: Any) -> list[tuple[str, torch.Tensor, int]]:
    """``(where, C x H x W uint8 image, label)`` for each item of ``dataset``."""
    if len(dataset) == 0:
        raise DatasetFormatError(f"dataset {name!r}: the {part} dataset is empty")
    items = []
    for index in range(len(dataset)):
        where = f"dataset {name!r}: {part} item {index}"
        item = dataset[index]
        if not isinstance(item, (tuple, list)) or len(item) != 2:
            raise DatasetFormatError(f"{where} is a {type(item).__name__}" + (f" of {len(item)}" if isinstance(
                item, (tuple, list)) else "") + "; expected (image, label)")
        image, label = item
        try:
            label = operator.index(label)
        except TypeError:
            raise DatasetFormatError(f"{where} has the label {label!r}; expected an integer class index") from None
        items.append((where, _item_image(image, where), label))
    return items


def _item_image(image: Any, where: str) -> torch.Tensor:
    """A dataset item's image as ``C x H x W`` uint8: a PIL image, or a tensor (uint8, or float in [0, 1])."""
    pil = sys.modules.get("PIL.Image")  # a PIL image exists only once PIL.Image is imported
    if pil is not None and isinstance(image, pil.Image):
        return pil_pixels(image, where)
    if not isinstance(image, torch.Tensor):
        raise DatasetFormatError(f"{where} has a {type(image).__name__} image; expected a tensor C x H x W (uint8, or "
                                 "float in [0, 1]) or a PIL image")
    image = image.detach().cpu()
    if image.dim() == 2:
        image = image.unsqueeze(0)
    if image.dim() != 3 or image.shape[0] not in _CHANNELS:
        raise DatasetFormatError(f"{where} is an image of shape {tuple(image.shape)}; expected C x H x W with C in "
                                 f"{_CHANNELS}, or H x W")
    if image.dtype == torch.uint8:
        return image
    if not image.dtype.is_floating_point:
        raise DatasetFormatError(f"{where} is an image of dtype {image.dtype}; expected uint8, or float in [0, 1]")
    low, high = float(image.min()), float(image.max())
    if not 0 <= low <= high <= 1:  # NaN fails too
        raise DatasetFormatError(f"{where} holds values in [{low:g}, {high:g}]; a float image must lie in [0, 1] "
                                 "(unnormalized: gradgeo normalizes with the training images' statistics)")
    return image.mul(255).round().to(torch.uint8)


def load_user_dataset(name: str) -> DatasetSplits:
    """The dataset ``npz:FILE``, ``folder:DIR`` or ``package.module:callable`` names (see the module docstring)."""
    if name.startswith("npz:"):
        return _load_npz(name, Path(name[4:]).expanduser())
    if name.startswith("folder:"):
        root = Path(name[7:]).expanduser()
        return dataset_from_arrays(name, str(root), **read_image_folder(root), source=root)
    return _load_callable(name)
