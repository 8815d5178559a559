"""Tiny datasets in the on-disk formats of the real releases, written by the tests of gradgeo.data."""

from __future__ import annotations

import gzip
import pickle
import struct
from pathlib import Path

import pytest
import torch


def write_idx(path: Path, data: bytes, dims: tuple[int, ...], type_code: int = 0x08) -> Path:
    blob = bytes([0, 0, type_code, len(dims)]) + struct.pack(f">{len(dims)}I", *dims) + data
    path.write_bytes(gzip.compress(blob) if path.suffix == ".gz" else blob)
    return path


def write_mnist(
    directory: Path, gz: bool, n_train: int = 20, n_test: int = 10, h: int = 4, w: int = 5
) -> dict:
    """A tiny MNIST-layout dataset with H != W, so that a swapped axis would show."""
    directory.mkdir(parents=True, exist_ok=True)
    suffix = ".gz" if gz else ""
    g = torch.Generator().manual_seed(0)
    made = {}
    for part, n in (("train", n_train), ("t10k", n_test)):
        images = torch.randint(0, 256, (n, h, w), dtype=torch.uint8, generator=g)
        labels = torch.arange(n, dtype=torch.uint8) % 10
        write_idx(directory / f"{part}-images-idx3-ubyte{suffix}", images.numpy().tobytes(), (n, h, w))
        write_idx(directory / f"{part}-labels-idx1-ubyte{suffix}", labels.numpy().tobytes(), (n,))
        made[part] = (images, labels)
    return made


def write_cifar(
    directory: Path, hundred: bool, protocol: int, per_batch: int = 6, fortran: bool = False
) -> tuple[torch.Tensor, list]:
    """A tiny CIFAR layout pickled with numpy arrays, as the real release; returns train data and labels.

    CIFAR-100 labels are stored as an int64 numpy array (the release has lists) to cover that form too.
    """
    np = pytest.importorskip("numpy")
    directory.mkdir(parents=True, exist_ok=True)
    g = torch.Generator().manual_seed(1)
    classes = 100 if hundred else 10
    label_key = b"fine_labels" if hundred else b"labels"
    files = ["train"] if hundred else [f"data_batch_{i}" for i in range(1, 6)]
    all_data, all_labels = [], []
    for i, name in enumerate([*files, "test" if hundred else "test_batch"]):
        data = torch.randint(0, 256, (per_batch, 3072), dtype=torch.uint8, generator=g)
        labels = [(i * per_batch + k) % classes for k in range(per_batch)]
        batch = {
            b"batch_label": b"batch",
            label_key: np.array(labels, dtype=np.int64) if hundred else labels,
            b"data": np.asfortranarray(data.numpy()) if fortran else data.numpy(),
            b"filenames": [b"img_%d.png" % k for k in range(per_batch)],
        }
        if hundred:
            batch[b"coarse_labels"] = [v // 5 for v in labels]
        (directory / name).write_bytes(pickle.dumps(batch, protocol=protocol))
        if name in files:
            all_data.append(data)
            all_labels += labels
    names = [b"class_%d" % k for k in range(classes)]
    meta = (
        {b"fine_label_names": names, b"coarse_label_names": names[:20]}
        if hundred
        else {b"label_names": names}
    )
    (directory / ("meta" if hundred else "batches.meta")).write_bytes(pickle.dumps(meta, protocol=protocol))
    return torch.cat(all_data), all_labels


class NumpyPickle:
    """Pickles as numpy pickles an array (``_reconstruct`` and ``__setstate__``), with whatever shape, memory
    order and data it is given: the forms of a damaged or crafted file."""

    def __init__(self, shape, data, order=False, code="u1"):
        self.state = (shape, code, order, data)

    def __reduce__(self):
        np = pytest.importorskip("numpy")
        shape, code, order, data = self.state
        core = np._core if hasattr(np, "_core") else np.core  # numpy 2 renamed it: pickles name what it has
        return (core.multiarray._reconstruct, (np.ndarray, (0,), b"b"), (1, shape, np.dtype(code), order, data))
