"""Where the datasets are and how to load one by name: :func:`load_dataset` searches the given folder or
the standard places and says how to get the files when none holds them."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from gradgeo.data.arrays import is_user_dataset, load_user_dataset
from gradgeo.data.formats import _CIFAR10_TRAIN, _idx_path, _load_cifar, _load_idx_dataset, _plain_path
from gradgeo.data.splits import DatasetSplits

__all__ = ["DATASETS", "ENV_VAR", "DatasetNotFoundError", "DatasetSource", "dataset_source", "load_dataset"]

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


class DatasetNotFoundError(FileNotFoundError):
    """A dataset's files are not in any searched directory; the message names the files, dirs and a fix."""


@dataclass(frozen=True)
class _Spec:
    display_name: str
    subdirs: tuple[str, ...]  # where the dataset sits under a data root, in order of preference
    files: tuple[str, ...]  # what must be in its directory
    by_hand: str  # how to get the files without gradgeo data fetch
    gzip_ok: bool = False  # whether each file may also come as <name>.gz (the IDX formats)
    default_roots: tuple[str, ...] = ()  # system-wide roots searched after the common ones

    def how_to_get(self, name: str) -> str:
        return f"gradgeo data fetch {name} (downloads it into ${ENV_VAR}, else ./data), or {self.by_hand}"

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
        name: one of :data:`DATASETS`: ``"fashion-mnist"``, ``"mnist"``, ``"cifar10"``, ``"cifar100"``; or a
            dataset of your own: ``"npz:FILE"``, ``"folder:DIR"`` or ``"package.module:callable"``
            (:mod:`gradgeo.data.arrays`).
        data_dir: where the dataset is; ``None`` searches the defaults (not used by your own datasets).

    Returns:
        :class:`DatasetSplits` with ``mean``/``std`` computed from the training images.

    Raises:
        DatasetNotFoundError: no searched directory holds all the files.
        DatasetFormatError: a file is corrupt or not in the expected format.
        ValueError: unknown ``name``.

    Example:
        >>> splits = load_dataset("fashion-mnist")
        >>> splits.train_x.shape, splits.train_y.dtype
        (torch.Size([60000, 1, 28, 28]), torch.int64)
    """
    if is_user_dataset(name):
        return load_user_dataset(name)
    if name not in _SPECS:
        raise ValueError(f"unknown dataset {name!r}; known datasets: {', '.join(DATASETS)}, or npz:FILE, "
                         "folder:DIR or package.module:callable for one of your own")
    spec = _SPECS[name]
    directory = _find(name, spec, data_dir)
    if name in ("fashion-mnist", "mnist"):
        classes = _FASHION_CLASSES if name == "fashion-mnist" else _MNIST_CLASSES
        return _load_idx_dataset(name, spec.display_name, directory, classes)
    return _load_cifar(name, directory)


@dataclass(frozen=True)
class DatasetSource:
    """Where :func:`load_dataset` looks for a dataset and how to get it (:func:`dataset_source`).

    Attributes:
        name: the name :func:`load_dataset` takes.
        display_name: the dataset's usual name (``"Fashion-MNIST"``).
        files: what its folder must hold (``[.gz]``: gzipped or not).
        searched: the folders searched without a ``data_dir``, in order (from the current directory and
            ``$GRADGEO_DATA`` as they are now).
        found: the first of them that holds every file, or None.
        how_to_get: what to do when none does.
    """

    name: str
    display_name: str
    files: tuple[str, ...]
    searched: tuple[Path, ...]
    found: Path | None
    how_to_get: str


def dataset_source(name: str) -> DatasetSource:
    """Where dataset ``name`` (one of :data:`DATASETS`) is looked for, where it is found, and how to get it."""
    if name not in _SPECS:
        raise ValueError(f"unknown dataset {name!r}; known datasets: {', '.join(DATASETS)}")
    spec = _SPECS[name]
    searched = tuple(_candidate_dirs(spec, None))
    found = next((d for d in searched if d.is_dir() and not spec.missing(d)), None)
    return DatasetSource(name, spec.display_name, tuple(spec.expected()), searched, found, spec.how_to_get(name))


def _candidate_dirs(spec: _Spec, data_dir: str | os.PathLike[str] | None) -> list[Path]:
    if data_dir is not None:
        root = Path(data_dir).expanduser()
        return [root] + [root / sub for sub in spec.subdirs]
    roots = [Path(os.environ[ENV_VAR]).expanduser()] if os.environ.get(ENV_VAR) else []
    roots += [Path("data"), Path("../shared/data")]
    repo = Path(__file__).resolve().parents[3]
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
        + f"\nTo get it: {spec.how_to_get(name)}."
    )
