"""Image datasets held in memory as uint8 tensors, batched augmentation, and a deterministic batch loader.

Loaders read the standard on-disk releases; nothing is downloaded unless you ask (:func:`fetch_dataset`,
``gradgeo data fetch NAME``: the original files, checked against their published SHA-256 checksums):

* ``"mnist"``, ``"fashion-mnist"``: IDX files, gzipped or not (``train-images-idx3-ubyte[.gz]``,
  ``train-labels-idx1-ubyte[.gz]``, ``t10k-images-idx3-ubyte[.gz]``, ``t10k-labels-idx1-ubyte[.gz]``), as
  in the original releases, torchvision's ``<root>/MNIST/raw`` and the Debian package
  ``dataset-fashion-mnist`` (``/usr/share/datasets/fashion-mnist``).
* ``"cifar10"`` (``cifar-10-batches-py/``) and ``"cifar100"`` (``cifar-100-python/``, fine labels): the
  python-pickle release. The pickles are read by a restricted unpickler that rebuilds the numpy arrays in
  them as torch tensors, so numpy is not needed and a tampered file cannot run code.
* your own (:mod:`gradgeo.data.arrays`): ``"npz:FILE"`` (a NumPy archive), ``"folder:DIR"`` (one folder of image
  files per class under ``DIR/train/`` and ``DIR/test/``, decoded once with Pillow and cached:
  :mod:`gradgeo.data.images`) or ``"package.module:callable"`` (a function returning arrays or torch datasets).

Images come back as ``N x C x H x W`` uint8, labels as int64. Augmentation (:func:`random_crop`,
:func:`random_flip`) works on whole uint8 batches on any device, and :class:`Loader` yields normalized float
batches whose order and augmentation depend only on ``(seed, epoch)``, so a run resumes exactly.

Example:
    >>> splits = load_dataset("fashion-mnist").split_validation(5000, seed=0)
    >>> train = splits.loader("train", batch_size=128, augment=Augment(padding=4), seed=0)
    >>> x, y = next(iter(train.epoch(0)))  # the first batch of epoch 0
    >>> x.shape, x.dtype, y.dtype
    (torch.Size([128, 1, 28, 28]), torch.float32, torch.int64)
"""

from gradgeo.data.augment import Augment, pad_crop, random_crop, random_flip
from gradgeo.data.fetch import MIRROR_VAR, ChecksumMismatchError, DownloadError, fetch_dataset
from gradgeo.data.formats import DatasetFormatError, read_idx
from gradgeo.data.loader import Loader, normalize
from gradgeo.data.sources import DATASETS, ENV_VAR, DatasetNotFoundError, load_dataset
from gradgeo.data.splits import DatasetSplits, channel_stats

__all__ = [
    "DATASETS",
    "ENV_VAR",
    "MIRROR_VAR",
    "Augment",
    "ChecksumMismatchError",
    "DatasetFormatError",
    "DatasetNotFoundError",
    "DatasetSplits",
    "DownloadError",
    "Loader",
    "channel_stats",
    "fetch_dataset",
    "load_dataset",
    "normalize",
    "pad_crop",
    "random_crop",
    "random_flip",
    "read_idx",
]
