"""Datasets of the user's own, held in memory and split like the built-ins: ``npz:FILE`` and
``package.module:callable`` (:func:`gradgeo.data.load_dataset` takes both names).

* ``npz:FILE``: a NumPy ``.npz`` archive with the arrays ``x_train``, ``y_train``, ``x_test``, ``y_test``
  (uint8 images ``N x H x W x C``, ``N x C x H x W`` or ``N x H x W``; integer labels) and optionally
  ``classes`` (one name per class). Read with NumPy (``gradgeo[harness]``), without pickle.
* ``package.module:callable``: a function of no arguments returning ``(x_train, y_train, x_test, y_test)`` or
  ``(x_train, y_train, x_test, y_test, classes)``, each array a tensor or anything ``torch.as_tensor`` takes.

Every check names the source and the bad value: image dtype and layout, label type and range, sizes that do not
match, train and test images of different shapes.
"""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from gradgeo.data.formats import DatasetFormatError, _check_image_set
from gradgeo.data.splits import DatasetSplits, channel_stats

__all__ = ["dataset_from_arrays", "is_user_dataset", "load_user_dataset"]

_CHANNELS = (1, 3, 4)


def is_user_dataset(name: str) -> bool:
    """Whether ``name`` names a dataset of the user's (``npz:FILE`` or ``module:callable``)."""
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
    if not isinstance(parts, (tuple, list)) or len(parts) not in (4, 5):
        raise ValueError(f"dataset {name!r} returned a {type(parts).__name__}; expected (x_train, y_train, x_test, "
                         "y_test) or (x_train, y_train, x_test, y_test, classes)")
    x_train, y_train, x_test, y_test = parts[:4]
    return dataset_from_arrays(name, name, x_train, y_train, x_test, y_test,
                               classes=list(parts[4]) if len(parts) == 5 else None)


def load_user_dataset(name: str) -> DatasetSplits:
    """The dataset ``npz:FILE`` or ``package.module:callable`` names (see the module docstring)."""
    if name.startswith("npz:"):
        return _load_npz(name, Path(name[4:]).expanduser())
    return _load_callable(name)
