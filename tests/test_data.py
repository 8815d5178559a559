"""Tests of gradgeo.data: loaders on the real files and on hand-made ones, splits, augmentation, Loader."""

from __future__ import annotations

import dataclasses
import os
import pickle
import struct
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from _dataset_files import NumpyPickle, write_cifar, write_idx, write_mnist
from gradgeo.data import (
    DATASETS,
    Augment,
    DatasetFormatError,
    DatasetNotFoundError,
    DatasetSplits,
    Loader,
    channel_stats,
    load_dataset,
    normalize,
    pad_crop,
    random_crop,
    random_flip,
    read_idx,
)

FASHION_CLASSES = (
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


def load_or_skip(name: str) -> DatasetSplits:
    try:
        return load_dataset(name)
    except DatasetNotFoundError as e:
        pytest.skip(f"real {name} files not installed here: {str(e).splitlines()[0]}")


@pytest.fixture(scope="module")
def fashion() -> DatasetSplits:
    return load_or_skip("fashion-mnist")


@pytest.fixture(scope="module")
def cifar10() -> DatasetSplits:
    return load_or_skip("cifar10")


# ------------------------------------------------------------------------------------------ real data


def test_fashion_mnist_real_files(fashion):
    assert fashion.train_x.shape == (60000, 1, 28, 28) and fashion.train_x.dtype == torch.uint8
    assert fashion.test_x.shape == (10000, 1, 28, 28) and fashion.test_x.dtype == torch.uint8
    assert fashion.train_y.dtype == fashion.test_y.dtype == torch.int64
    assert torch.equal(torch.bincount(fashion.train_y), torch.full((10,), 6000))
    assert torch.equal(torch.bincount(fashion.test_y), torch.full((10,), 1000))
    assert fashion.classes == FASHION_CLASSES and fashion.display_name == "Fashion-MNIST"
    # the well-known Fashion-MNIST statistics
    assert fashion.mean[0] == pytest.approx(0.2860, abs=1e-4)
    assert fashion.std[0] == pytest.approx(0.3530, abs=1e-4)


def test_cifar10_real_files(cifar10):
    assert cifar10.train_x.shape == (50000, 3, 32, 32) and cifar10.train_x.dtype == torch.uint8
    assert cifar10.test_x.shape == (10000, 3, 32, 32) and cifar10.test_x.dtype == torch.uint8
    assert cifar10.train_y.dtype == cifar10.test_y.dtype == torch.int64
    assert torch.equal(torch.bincount(cifar10.train_y), torch.full((10,), 5000))
    assert torch.equal(torch.bincount(cifar10.test_y), torch.full((10,), 1000))
    assert cifar10.classes[:3] == ("airplane", "automobile", "bird") and len(cifar10.classes) == 10
    if "jpeg75" in str(cifar10.source):
        assert cifar10.display_name == "CIFAR-10 (JPEG q75)"
    # the usual CIFAR-10 channel means (the JPEG copy matches them to about 2e-4)
    assert cifar10.mean == pytest.approx((0.4914, 0.4822, 0.4465), abs=1e-3)


def test_real_data_split_and_loader(fashion):
    splits = fashion.split_validation(5000, seed=0)
    assert len(splits.train_y) == 55000 and torch.equal(torch.bincount(splits.val_y), torch.full((10,), 500))
    val = torch.cat([yb for _, yb in splits.loader("val", 1000).epoch(0)])
    assert torch.equal(val, splits.val_y)  # evaluation splits are not shuffled by default
    xb, _ = next(splits.loader("train", 2000, seed=0).epoch(0))
    # normalized with the training statistics: about zero mean and unit variance
    assert abs(xb.mean().item()) < 0.05 and abs(xb.std().item() - 1) < 0.05


# ---------------------------------------------------------------------------------------- IDX files


@pytest.mark.parametrize("gz", [False, True], ids=["plain", "gzip"])
def test_read_idx(tmp_path, gz):
    data = bytes(range(24))
    path = write_idx(tmp_path / ("x.idx" + (".gz" if gz else "")), data, (2, 3, 4))
    x = read_idx(path)
    assert x.dtype == torch.uint8 and x.shape == (2, 3, 4)
    assert x[1, 2, 3] == 23 and x[0, 1, 0] == 4  # row-major, last index fastest


@pytest.mark.parametrize("gz", [False, True], ids=["plain", "gzip"])
def test_load_tiny_mnist(tmp_path, gz):
    made = write_mnist(tmp_path / "mnist", gz)
    splits = load_dataset("mnist", data_dir=tmp_path / "mnist")
    assert splits.train_x.shape == (20, 1, 4, 5) and splits.test_x.shape == (10, 1, 4, 5)
    assert torch.equal(splits.train_x[:, 0], made["train"][0])
    assert torch.equal(splits.test_y, made["t10k"][1].long())
    assert splits.classes == tuple("0123456789") and splits.source == tmp_path / "mnist"
    assert splits.mean[0] == pytest.approx(made["train"][0].double().mean().item() / 255)


def test_data_dir_may_be_a_torchvision_root(tmp_path):
    write_mnist(tmp_path / "FashionMNIST" / "raw", gz=False)
    splits = load_dataset("fashion-mnist", data_dir=tmp_path)
    assert splits.source == tmp_path / "FashionMNIST" / "raw" and splits.classes == FASHION_CLASSES


def test_environment_variable_is_searched(tmp_path, monkeypatch):
    write_mnist(tmp_path / "root" / "mnist", gz=True)
    monkeypatch.setenv("GRADGEO_DATA", str(tmp_path / "root"))
    monkeypatch.chdir(tmp_path)
    assert load_dataset("mnist").source == tmp_path / "root" / "mnist"


def test_missing_dataset_names_files_dirs_and_remedy(tmp_path):
    with pytest.raises(DatasetNotFoundError) as info:
        load_dataset("fashion-mnist", data_dir=tmp_path)
    message = str(info.value)
    assert isinstance(info.value, FileNotFoundError)
    assert "train-images-idx3-ubyte[.gz]" in message and "t10k-labels-idx1-ubyte[.gz]" in message
    assert str(tmp_path) in message and str(tmp_path / "FashionMNIST" / "raw") in message
    assert "apt-get install dataset-fashion-mnist" in message and "--data-dir" in message


def test_partial_dataset_says_what_is_lacking(tmp_path):
    write_mnist(tmp_path, gz=False)
    (tmp_path / "t10k-labels-idx1-ubyte").unlink()
    with pytest.raises(DatasetNotFoundError, match=r"lacks t10k-labels-idx1-ubyte\[\.gz\]\)"):
        load_dataset("mnist", data_dir=tmp_path)


def test_unknown_dataset_lists_known_names():
    with pytest.raises(ValueError, match="unknown dataset 'svhn'.*" + ", ".join(DATASETS)):
        load_dataset("svhn")


@pytest.mark.parametrize(
    ("blob", "message"),
    [
        (b"\x01\x02\x08\x01" + struct.pack(">I", 3) + b"abc", "not an IDX file"),
        (b"\x00\x00\x07\x01" + struct.pack(">I", 3) + b"abc", "unknown IDX element type 0x07"),
        (b"\x00\x00\x0c\x01" + struct.pack(">I", 1) + b"abcd", "int32.*only unsigned-byte"),
        (b"\x00\x00\x08\x03" + struct.pack(">I", 3), "truncated IDX header"),
        (b"\x00\x00\x08\x02" + struct.pack(">2I", 2, 3) + b"abcde", "2 x 3 = 6 bytes.*holds 5.*truncated"),
    ],
    ids=["magic", "type-code", "int32", "short-header", "short-data"],
)
def test_corrupt_idx(tmp_path, blob, message):
    path = tmp_path / "bad-idx"
    path.write_bytes(blob)
    with pytest.raises(DatasetFormatError, match=message) as info:
        read_idx(path)
    assert str(path) in str(info.value)


def test_corrupt_gzip(tmp_path):
    write_mnist(tmp_path, gz=True)
    path = tmp_path / "train-images-idx3-ubyte.gz"
    path.write_bytes(path.read_bytes()[:-12])  # cut off the end of the stream
    with pytest.raises(DatasetFormatError, match="corrupt gzip data"):
        load_dataset("mnist", data_dir=tmp_path)


def test_label_count_mismatch(tmp_path):
    write_mnist(tmp_path, gz=False)
    write_idx(tmp_path / "t10k-labels-idx1-ubyte", bytes(9), (9,))
    with pytest.raises(DatasetFormatError, match="expected 10 labels"):
        load_dataset("mnist", data_dir=tmp_path)


def test_labels_out_of_range(tmp_path):
    write_mnist(tmp_path, gz=False)
    write_idx(tmp_path / "t10k-labels-idx1-ubyte", bytes([0] * 9 + [10]), (10,))
    with pytest.raises(DatasetFormatError, match=r"labels must lie in \[0, 10\)"):
        load_dataset("mnist", data_dir=tmp_path)


# ------------------------------------------------------------------------------------------- CIFAR


@pytest.mark.parametrize(("protocol", "fortran"), [(2, False), (5, False), (2, True)])
def test_tiny_cifar10(tmp_path, protocol, fortran):
    data, labels = write_cifar(
        tmp_path / "cifar-10-batches-py", hundred=False, protocol=protocol, fortran=fortran
    )
    splits = load_dataset("cifar10", data_dir=tmp_path)  # the parent of cifar-10-batches-py
    assert splits.train_x.shape == (30, 3, 32, 32) and splits.test_x.shape == (6, 3, 32, 32)
    assert splits.train_y.tolist() == labels and splits.train_y.dtype == torch.int64
    # a row holds the red, then green, then blue 32x32 plane, each row-major
    n, c, i, j = 7, 2, 5, 31
    assert splits.train_x[n, c, i, j] == data[n, c * 1024 + i * 32 + j]
    assert splits.classes[3] == "class_3" and splits.display_name == "CIFAR-10"


def test_tiny_cifar100_uses_fine_labels(tmp_path):
    data, labels = write_cifar(tmp_path / "cifar-100-python", hundred=True, protocol=2)
    splits = load_dataset("cifar100", data_dir=tmp_path / "cifar-100-python")
    assert torch.equal(splits.train_x.reshape(len(data), -1), data)
    assert splits.train_y.tolist() == labels and len(splits.classes) == 100
    assert splits.display_name == "CIFAR-100"


class _RunsCode:
    def __reduce__(self):
        return (os.getcwd, ())


def test_cifar_pickle_cannot_run_code(tmp_path):
    write_cifar(tmp_path, hundred=False, protocol=2)
    (tmp_path / "data_batch_3").write_bytes(pickle.dumps({b"data": _RunsCode(), b"labels": []}))
    with pytest.raises(DatasetFormatError, match="refusing to load [a-z]+.getcwd"):
        load_dataset("cifar10", data_dir=tmp_path)


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda raw: raw[: len(raw) // 2], "not a readable CIFAR pickle"),
        (lambda raw: pickle.dumps({b"labels": [0]}), "no 'data' entry"),
        (lambda raw: pickle.dumps([1, 2]), "expected a pickled dict"),
    ],
    ids=["truncated", "no-data", "not-a-dict"],
)
def test_corrupt_cifar(tmp_path, damage, message):
    write_cifar(tmp_path, hundred=False, protocol=2)
    path = tmp_path / "test_batch"
    path.write_bytes(damage(path.read_bytes()))
    with pytest.raises(DatasetFormatError, match=message):
        load_dataset("cifar10", data_dir=tmp_path)


@pytest.mark.parametrize(("file", "entry", "value", "message"), [
    ("data_batch_2", b"data", NumpyPickle((-1, -3072), bytes(3072)), "shape (-1, -3072)"),
    ("data_batch_2", b"data", NumpyPickle((1.5, 3072), bytes(3072)), "shape (1.5, 3072)"),
    ("data_batch_2", b"data", NumpyPickle(None, bytes(3072)), "shape None"),
    ("data_batch_2", b"data", NumpyPickle((1, 3072), bytes(3072), order="F"), "memory order is 'F'"),
    ("data_batch_2", b"data", NumpyPickle((2**62, 3072), bytes(3072)), "holds 3072 bytes"),
    ("test_batch", b"data", NumpyPickle((0, 3072), bytes(1)[:0]), "no images"),
    ("data_batch_2", b"labels", [2**70], "labels must lie in [0, 10)"),
    ("data_batch_2", b"labels", [True], "should be a list of integers"),
    ("batches.meta", b"label_names", [b"\xff"] * 10, "a class name is not UTF-8 text"),
], ids=["negative-shape", "fractional-shape", "no-shape", "bad-order", "absurd-shape", "no-images",
        "label-beyond-int64", "boolean-label", "name-not-text"])
def test_cifar_with_absurd_shapes_or_values_names_the_file(tmp_path, file, entry, value, message):
    """A damaged or crafted CIFAR pickle: shapes that are negative, fractional, missing or larger than the data,
    no images, labels no tensor holds, names that are not text. One DatasetFormatError that names the file."""
    write_cifar(tmp_path, hundred=False, protocol=2)
    batch = {b"data": NumpyPickle((1, 3072), bytes(3072)), b"labels": [0]} if file != "batches.meta" else {}
    batch[entry] = value
    (tmp_path / file).write_bytes(pickle.dumps(batch, protocol=3))
    with pytest.raises(DatasetFormatError) as info:
        load_dataset("cifar10", data_dir=tmp_path)
    assert str(info.value).startswith(str(tmp_path / file)) and message in str(info.value)


@pytest.mark.parametrize(("n_test", "h", "w"), [(0, 4, 5), (10, 1, 1), (10, 1, 5)], ids=["no-test-images", "1x1",
                                                                                         "1-row"])
def test_idx_without_images_or_with_single_pixels_names_the_file(tmp_path, n_test, h, w):
    """IDX files whose header says no test images, or images of one pixel row: nothing to test or convolve."""
    write_mnist(tmp_path, gz=False, n_test=n_test, h=h, w=w)
    with pytest.raises(DatasetFormatError, match="no images, or images smaller than 2 x 2 pixels") as info:
        load_dataset("mnist", data_dir=tmp_path)
    part = "t10k" if n_test == 0 else "train"
    assert str(info.value).startswith(str(tmp_path / f"{part}-images-idx3-ubyte"))


# ------------------------------------------------------------------------------------ splits, stats


def synthetic(counts: list[int], c: int = 1, size: int = 4) -> DatasetSplits:
    y = torch.cat([torch.full((k,), i) for i, k in enumerate(counts)])
    x = torch.randint(
        0, 256, (len(y), c, size, size), dtype=torch.uint8, generator=torch.Generator().manual_seed(0)
    )
    mean, std = channel_stats(x)
    classes = tuple(str(i) for i in range(len(counts)))
    return DatasetSplits("synthetic", "synthetic", Path("."), classes, x, y, x[:3], y[:3], mean, std)


def test_split_validation_is_stratified_exact_and_seeded():
    splits = synthetic([7, 7, 6])
    a = splits.split_validation(5, seed=0)
    # quotas 1.75, 1.75, 1.5: floors 1, 1, 1, the two largest remainders get one more
    assert torch.bincount(a.val_y).tolist() == [2, 2, 1]
    assert len(a.train_y) == 15 and splits.train_y.shape == (20,)  # the original is unchanged
    b = splits.split_validation(5, seed=0)
    assert torch.equal(a.val_x, b.val_x) and torch.equal(a.train_x, b.train_x)
    # val and train partition the original training set
    rows = {tuple(r.tolist()) for r in splits.train_x.flatten(1)}
    parts = [tuple(r.tolist()) for r in torch.cat([a.train_x, a.val_x]).flatten(1)]
    assert len(parts) == 20 and set(parts) == rows
    assert a.mean == channel_stats(a.train_x)[0] and a.mean != splits.mean
    others = [splits.split_validation(5, seed=s).val_x for s in range(1, 6)]
    assert any(not torch.equal(a.val_x, o) for o in others)


def test_split_validation_errors():
    splits = synthetic([5, 5])
    with pytest.raises(ValueError, match=r"n_val must be an integer in \[1, 9\] for a training set of 10"):
        splits.split_validation(10)
    with pytest.raises(ValueError, match="already have a validation set"):
        splits.split_validation(2).split_validation(2)
    with pytest.raises(ValueError, match="no validation set"):
        splits.loader("val", 4)


def test_subset():
    splits = synthetic([30, 10]).split_validation(8, seed=0)
    sub = splits.subset(8, seed=1)
    assert torch.bincount(sub.train_y).tolist() == [6, 2]
    assert torch.equal(sub.val_x, splits.val_x) and torch.equal(sub.test_x, splits.test_x)
    assert sub.std == channel_stats(sub.train_x)[1]
    assert splits.subset(32) is splits
    with pytest.raises(ValueError, match="n must be an integer"):
        splits.subset(33)


def test_subset_test():
    whole = synthetic([30, 10])
    splits = dataclasses.replace(whole, test_x=whole.train_x, test_y=whole.train_y)  # a test set of 40
    sub = splits.subset_test(8, seed=0)
    assert torch.bincount(sub.test_y).tolist() == [6, 2]
    assert torch.equal(sub.test_x, splits.subset_test(8, seed=0).test_x)  # the seed fixes the images
    assert torch.equal(sub.train_x, splits.train_x) and sub.mean == splits.mean  # training side untouched
    assert splits.subset_test(40) is splits
    with pytest.raises(ValueError, match=r"n must be an integer in \[1, 40\] for a test set of 40 images"):
        splits.subset_test(41)


def test_to_device_and_repr():
    splits = synthetic([4, 4]).split_validation(2).to("cpu")
    assert splits.val_x.device.type == "cpu"
    assert repr(splits) == "DatasetSplits('synthetic', train=6, val=2, test=3, image=(1, 4, 4), classes=2)"


def test_channel_stats_matches_float_computation():
    x = torch.randint(0, 256, (50, 3, 5, 5), dtype=torch.uint8, generator=torch.Generator().manual_seed(2))
    mean, std = channel_stats(x)
    f = x.double() / 255
    assert mean == pytest.approx(f.mean(dim=(0, 2, 3)).tolist(), abs=1e-12)
    assert std == pytest.approx(f.std(dim=(0, 2, 3), correction=0).tolist(), abs=1e-12)


def test_normalize():
    x = torch.tensor([0, 51, 255], dtype=torch.uint8).view(1, 3, 1, 1).expand(2, 3, 2, 2)
    out = normalize(x, mean=(0.0, 0.2, 0.5), std=(1.0, 0.1, 0.25))
    assert out.dtype == torch.float32
    assert out[1, :, 1, 1].tolist() == pytest.approx([0.0, 0.0, 2.0], abs=1e-6)
    with pytest.raises(TypeError, match="uint8"):
        normalize(out, (0, 0, 0), (1, 1, 1))
    with pytest.raises(ValueError, match="one value per channel"):
        normalize(x, (0.5,), (0.5,))
    with pytest.raises(ValueError, match="std must be > 0"):
        normalize(x, (0, 0, 0), (1, 0, 1))


# ------------------------------------------------------------------------------------- augmentation


def batch(n: int = 16, c: int = 3, h: int = 6, w: int = 7) -> torch.Tensor:
    # values 1..255, never 0, so padding is recognisable
    return torch.randint(1, 256, (n, c, h, w), dtype=torch.uint8, generator=torch.Generator().manual_seed(3))


def test_pad_crop_hand_made():
    x = torch.arange(1, 10, dtype=torch.uint8).view(1, 1, 3, 3)
    corner = pad_crop(x, 2, torch.tensor([[0, 0]]))[0, 0]
    # offset (0, 0) is the top-left of the zero-padded image: 2 rows and 2 columns of padding
    assert corner.tolist() == [[0, 0, 0], [0, 0, 0], [0, 0, 1]]
    assert pad_crop(x, 2, torch.tensor([[2, 2]])).equal(x)  # the centre is the image itself
    assert pad_crop(x, 2, torch.tensor([[4, 3]]))[0, 0].tolist() == [[8, 9, 0], [0, 0, 0], [0, 0, 0]]
    assert pad_crop(x, 1, torch.tensor([[1, 0]]))[0, 0].tolist() == [[0, 1, 2], [0, 4, 5], [0, 7, 8]]


def test_pad_crop_matches_per_image_slicing():
    x, p = batch(), 3
    offsets = torch.randint(0, 2 * p + 1, (len(x), 2), generator=torch.Generator().manual_seed(4))
    padded = F.pad(x, (p, p, p, p))
    expected = torch.stack([padded[k, :, i : i + 6, j : j + 7] for k, (i, j) in enumerate(offsets.tolist())])
    assert torch.equal(pad_crop(x, p, offsets), expected)
    with pytest.raises(ValueError, match=r"offsets must lie in \[0, 6\]"):
        pad_crop(x, p, offsets + 1 + 2 * p)


def test_random_crop_is_seeded_and_a_translation():
    x = batch()
    a = random_crop(x, 2, torch.Generator().manual_seed(5))
    assert torch.equal(a, random_crop(x, 2, torch.Generator().manual_seed(5)))
    assert not torch.equal(a, random_crop(x, 2, torch.Generator().manual_seed(6)))
    # every output is the padded image cropped at one of the 5 x 5 offsets
    grid = torch.stack([pad_crop(x, 2, torch.tensor([[i, j]] * len(x))) for i in range(5) for j in range(5)])
    assert (grid == a).flatten(2).all(-1).any(0).all()
    assert random_crop(x, 0).equal(x)


def test_random_flip():
    x = batch(n=1000, c=1, h=2, w=3)
    g = torch.Generator().manual_seed(7)
    out = random_flip(x, g)
    flipped = (out == x.flip(-1)).flatten(1).all(1)
    assert ((out == x).flatten(1).all(1) | flipped).all()
    assert 400 < int(flipped.sum()) < 600
    assert torch.equal(out, random_flip(x, torch.Generator().manual_seed(7)))
    assert random_flip(x, p=0.0).equal(x) and random_flip(x, p=1.0).equal(x.flip(-1))
    assert random_flip(x[:1], p=1.0)[0, 0].tolist() == [r[::-1] for r in x[0, 0].tolist()]


def test_augment():
    x = batch()
    out = Augment(padding=2)(x, torch.Generator().manual_seed(8))
    assert out.shape == x.shape and out.dtype == torch.uint8
    assert Augment(padding=0, flip=False)(x).equal(x)


# ------------------------------------------------------------------------------------------- Loader


def make_loader(n: int = 23, **kwargs) -> Loader:
    x = torch.arange(n, dtype=torch.uint8).view(n, 1, 1, 1).expand(n, 1, 4, 4).contiguous()
    return Loader(x, torch.arange(n), kwargs.pop("batch_size", 5), mean=(0.0,), std=(1 / 255,), **kwargs)


@pytest.mark.parametrize("drop_last", [False, True])
def test_loader_covers_every_sample_once(drop_last):
    loader = make_loader(drop_last=drop_last)
    labels = [yb for _, yb in loader.epoch(0)]
    assert len(labels) == len(loader) == (4 if drop_last else 5)
    seen = torch.cat(labels)
    assert len(set(seen.tolist())) == len(seen) == (20 if drop_last else 23)
    assert torch.equal(seen, loader.order(0)[: len(seen)])
    assert not torch.equal(seen, torch.arange(len(seen)))  # shuffled


def test_loader_batches_are_normalized_images_of_their_labels():
    for xb, yb in make_loader().epoch(3):
        assert xb.dtype == torch.float32 and xb.shape[1:] == (1, 4, 4)
        # std 1/255 and mean 0: normalization gives back the pixel values, which equal the labels here
        assert torch.allclose(xb[:, 0, 0, 0], yb.float(), atol=1e-4)


def test_loader_reproducible_from_seed_and_epoch():
    aug = Augment(padding=1)
    state = torch.get_rng_state()
    first = [b for b in make_loader(seed=1, augment=aug).epoch(4)]
    again = [b for b in make_loader(seed=1, augment=aug).epoch(4)]
    assert torch.equal(torch.get_rng_state(), state)  # the global RNG is never used
    assert all(torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) for a, b in zip(first, again, strict=True))
    # resuming inside an epoch gives the same remaining batches, augmentation included
    resumed = list(make_loader(seed=1, augment=aug).epoch(4, start_batch=2))
    assert all(torch.equal(a[0], b[0]) for a, b in zip(first[2:], resumed, strict=True))
    orders = [make_loader(seed=1).order(e) for e in range(3)] + [make_loader(seed=2).order(0)]
    assert all(not torch.equal(orders[i], orders[j]) for i in range(4) for j in range(i))
    # augmentation draws from its own stream: it leaves the order alone
    assert torch.equal(torch.cat([yb for _, yb in first]), make_loader(seed=1).order(4))


def test_loader_without_shuffle_keeps_order():
    loader = make_loader(shuffle=False)
    assert torch.equal(torch.cat([yb for _, yb in loader.epoch(9)]), torch.arange(23))


def test_loader_errors():
    x = torch.zeros(4, 1, 2, 2, dtype=torch.uint8)
    with pytest.raises(TypeError, match="uint8"):
        Loader(x.float(), torch.arange(4), 2, mean=(0.5,), std=(0.5,))
    with pytest.raises(ValueError, match="one label per image"):
        Loader(x, torch.arange(3), 2, mean=(0.5,), std=(0.5,))
    with pytest.raises(ValueError, match="batch_size"):
        Loader(x, torch.arange(4), 0, mean=(0.5,), std=(0.5,))
    with pytest.raises(ValueError, match=r"start_batch must be an integer in \[0, 2\]"):
        Loader(x, torch.arange(4), 2, mean=(0.5,), std=(0.5,)).epoch(0, start_batch=-1)
