"""Images decoded with Pillow (``gradgeo[images]``) into uint8 tensors, and datasets kept as folders of image files
(``folder:DIR``, read by :func:`read_image_folder`).

A folder dataset holds one subfolder of images per class under ``DIR/train/`` and ``DIR/test/``:

    DIR/train/cat/0001.png  DIR/train/dog/0001.png  ...  DIR/test/cat/0107.png  ...

The class names are the sorted subfolder names, the same in both; a class's images may sit in nested folders.
Files ending in .png, .jpg, .jpeg, .bmp, .gif, .webp, .tif, .tiff, .ppm or .pgm are images; other files and every
hidden name (``.DS_Store``, ``.ipynb_checkpoints/``) are skipped. All images must have one size. They come back
with 1 channel when every image is grayscale (Pillow modes 1, L, LA), else with 3 (RGB, alpha dropped); 16-bit and
floating-point images are refused.

Decoding happens once: the tensors are cached in ``DIR/.gradgeo-cache.pt``, or, when DIR cannot be written (a
read-only mount), in ``$XDG_CACHE_HOME/gradgeo/`` (default ``~/.cache/gradgeo/``). The cache is keyed by every
file's path, size and modification time, so adding, removing or changing an image decodes the folder again; it is
written atomically (a temporary file renamed into place), so parallel runs may share it.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import warnings
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import torch

from gradgeo.data.formats import DatasetFormatError

__all__ = ["CACHE_NAME", "IMAGE_SUFFIXES", "pil_pixels", "read_image_folder", "stack_images"]

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm")
#: the cache file inside a writable folder dataset
CACHE_NAME = ".gradgeo-cache.pt"
_CACHE_FORMAT = 1  # part of the key: a change to the decoding rules invalidates every cache
_GRAY_MODES = ("1", "L", "LA")
_PARTS = ("train", "test")


def pil_pixels(image: Any, where: str) -> torch.Tensor:
    """A PIL image as a ``C x H x W`` uint8 tensor: 1 channel for a grayscale image (modes 1, L, LA), else 3 (RGB).

    Raises:
        DatasetFormatError: a 16-bit or floating-point image (modes I, I;16, F ...), naming ``where``.

    Example:
        >>> from PIL import Image
        >>> pil_pixels(Image.new("L", (4, 2)), "gray.png").shape, pil_pixels(Image.new("P", (4, 2)), "p.gif").shape
        (torch.Size([1, 2, 4]), torch.Size([3, 2, 4]))
    """
    if image.mode.startswith(("I", "F")):
        raise DatasetFormatError(f"{where} is a {image.mode} image (16-bit or floating point); gradgeo reads 8-bit "
                                 "images: convert it to 8 bits per channel first")
    mode = "L" if image.mode in _GRAY_MODES else "RGB"
    width, height = image.size
    pixels = torch.frombuffer(bytearray(image.convert(mode).tobytes()), dtype=torch.uint8)
    return pixels.view(height, width, len(mode)).permute(2, 0, 1)


def stack_images(images: Iterable[tuple[str, torch.Tensor]]) -> torch.Tensor:
    """``N x C x H x W`` uint8 from ``(where, C x H x W uint8)`` pairs, each checked as it arrives against the first:
    one size for all, and one channel count (grayscale images are widened to RGB when any image has 3 channels).

    Raises:
        DatasetFormatError: an image of another size or channel count, naming it and the first image.

    Example:
        >>> gray, rgb = torch.full((1, 2, 3), 7, dtype=torch.uint8), torch.zeros(3, 2, 3, dtype=torch.uint8)
        >>> batch = stack_images([("gray.png", gray), ("rgb.png", rgb)])
        >>> batch.shape, batch[0, :, 0, 0].tolist()
        (torch.Size([2, 3, 2, 3]), [7, 7, 7])
    """
    stacked: list[torch.Tensor] = []
    first = ""
    for where, image in images:
        if stacked:
            (c, h, w), (c0, h0, w0) = image.shape, stacked[0].shape
            if (h, w) != (h0, w0):
                raise DatasetFormatError(f"{where} is {w} x {h} pixels (width x height) but {first} is {w0} x {h0}; "
                                         "all images must have one size: resize them first")
            if c != c0 and {c, c0} != {1, 3}:
                raise DatasetFormatError(f"{where} has {c} channels but {first} has {c0}")
        else:
            first = where
        stacked.append(image)
    channels = max(image.shape[0] for image in stacked)
    return torch.stack([image.expand(channels, -1, -1) for image in stacked])


def read_image_folder(root: Path) -> dict[str, Any]:
    """The images of the folder dataset at ``root`` (see the module docstring), from its cache when the files are
    unchanged, else decoded with Pillow and cached.

    Returns:
        ``x_train``, ``y_train``, ``x_test``, ``y_test`` (``N x C x H x W`` uint8 and int64 tensors) and
            ``classes``, the keywords of :func:`gradgeo.data.arrays.dataset_from_arrays`.

    Raises:
        FileNotFoundError: ``root``, ``root/train`` or ``root/test`` is missing.
        DatasetFormatError: the class folders of train/ and test/ differ, one holds no images, an image cannot be
            decoded, or the images differ in size.
        ModuleNotFoundError: Pillow is not installed and there is no valid cache.
    """
    files = _class_files(root)
    key = _cache_key(root, files)
    for path in _cache_paths(root):
        cached = _read_cache(path, key)
        if cached is not None:
            return cached
    arrays = _decode(root, files)
    _write_cache(root, {"key": key, **arrays})
    return arrays


def _class_files(root: Path) -> dict[str, dict[str, list[Path]]]:
    """Per part (train, test), per class (sorted), the class's image files (sorted)."""
    if not root.is_dir():
        raise FileNotFoundError(f"folder dataset {root} " + ("is not a folder" if root.exists() else "does not exist"))
    found: dict[str, dict[str, list[Path]]] = {}
    for part in _PARTS:
        folder = root / part
        if not folder.is_dir():
            raise FileNotFoundError(f"folder dataset {root} has no {part}/ folder; it needs train/CLASS/IMAGE and "
                                    "test/CLASS/IMAGE, one subfolder per class in each")
        classes = sorted(d.name for d in folder.iterdir() if d.is_dir() and not d.name.startswith("."))
        found[part] = {name: _images_under(folder / name) for name in classes}
    train, test = set(found["train"]), set(found["test"])
    if train != test:
        only = [f"only in {part}/: {', '.join(sorted(names))}" for part, names in
                (("train", train - test), ("test", test - train)) if names]
        raise DatasetFormatError(f"folder dataset {root}: the class folders of train/ and test/ differ "
                                 f"({'; '.join(only)}); both need one subfolder per class, with the same names")
    if not train:
        raise DatasetFormatError(f"folder dataset {root}: train/ holds no class folders; it needs train/CLASS/IMAGE")
    for part in _PARTS:
        for name, images in found[part].items():
            if not images:
                raise DatasetFormatError(f"folder dataset {root}: {part}/{name} holds no images "
                                         f"({', '.join(IMAGE_SUFFIXES)}); add some or remove the class")
    return found


def _images_under(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()
                  and not any(part.startswith(".") for part in p.relative_to(folder).parts))


def _cache_key(root: Path, files: dict[str, dict[str, list[Path]]]) -> str:
    """A hash of every image's path (relative to ``root``), size and modification time."""
    digest = hashlib.sha256(f"gradgeo image folder cache {_CACHE_FORMAT}\n".encode())
    for classes in files.values():
        for paths in classes.values():
            for path in paths:
                stat = path.stat()
                digest.update(f"{path.relative_to(root).as_posix()}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()


def _cache_paths(root: Path) -> tuple[Path, Path]:
    """Where the cache goes: inside the dataset, else (a read-only dataset) in the user's cache folder, under a
    name drawn from the dataset's absolute path."""
    user = Path(os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache")) / "gradgeo"
    folder_id = hashlib.sha256(str(root.resolve()).encode()).hexdigest()[:16]
    return root / CACHE_NAME, user / f"folder-{root.resolve().name}-{folder_id}.pt"


def _read_cache(path: Path, key: str) -> dict[str, Any] | None:
    """The arrays in the cache at ``path`` when it exists, is readable and matches ``key``; else None."""
    if not path.is_file():
        return None
    try:
        cached = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # a truncated or foreign file is a miss: the folder is decoded again, the file overwritten
        return None
    if not isinstance(cached, dict) or cached.get("key") != key:
        return None
    return {name: cached[name] for name in ("x_train", "y_train", "x_test", "y_test", "classes")}


def _write_cache(root: Path, cache: dict[str, Any]) -> None:
    """Write the cache atomically to the first place that takes it; when none does, warn and go on uncached."""
    errors = []
    for path in _cache_paths(root):
        tmp = None
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
            os.close(fd)
            torch.save(cache, tmp)
            os.chmod(tmp, 0o644)  # mkstemp's 0600 would hide the cache from the dataset's other readers
            os.replace(tmp, path)
            return
        except (OSError, RuntimeError) as error:  # RuntimeError: torch.save's own, e.g. on a full disk
            errors.append(f"{path.parent}: {error}")
        finally:
            if tmp is not None and os.path.exists(tmp):
                os.unlink(tmp)
    warnings.warn(f"could not cache the decoded images of {root} ({'; '.join(errors)}); every load decodes them "
                  "again", stacklevel=3)


def _decode(root: Path, files: dict[str, dict[str, list[Path]]]) -> dict[str, Any]:
    try:
        from PIL import Image
    except ImportError:
        raise ModuleNotFoundError(f"reading {root} (a folder dataset of images) needs Pillow: "
                                  "pip install 'gradgeo[images]'", name="PIL") from None
    classes = list(files["train"])

    def decoded() -> Iterator[tuple[str, torch.Tensor]]:
        for part in _PARTS:
            for paths in files[part].values():
                for path in paths:
                    try:
                        with Image.open(path) as image:
                            pixels = pil_pixels(image, str(path))
                    except DatasetFormatError:
                        raise
                    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as error:
                        raise DatasetFormatError(f"{path} is not a readable image ({error}); remove or replace "
                                                 "it") from None
                    yield str(path), pixels

    images = stack_images(decoded())
    labels = {part: torch.tensor([label for label, paths in enumerate(files[part].values()) for _ in paths])
              for part in _PARTS}
    x_train, x_test = images.split([len(labels["train"]), len(labels["test"])])
    return {"x_train": x_train, "y_train": labels["train"], "x_test": x_test, "y_test": labels["test"],
            "classes": classes}
