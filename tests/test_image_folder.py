"""``--dataset folder:DIR``: one subfolder of images per class under DIR/train and DIR/test, decoded once with
Pillow and cached; every bad folder is one error naming the file or folder and the value."""

from __future__ import annotations

import json
import os
import sys

import pytest
import torch

from gradgeo.cli import main
from gradgeo.data import DatasetFormatError, load_dataset
from gradgeo.data.images import CACHE_NAME

Image = pytest.importorskip("PIL.Image")

CLASSES = ("dog", "cat", "bird")  # written in this order; loaded sorted: bird, cat, dog


def write_folder(root, counts=(3, 2), size=(8, 6), mode="RGB"):
    """root/{train,test}/CLASS/i.png: image i of class c (in CLASSES order) filled with 40 * c + i."""
    for part, count in zip(("train", "test"), counts):
        for c, name in enumerate(CLASSES):
            (root / part / name).mkdir(parents=True, exist_ok=True)
            for i in range(count):
                fill = 40 * c + i
                Image.new(mode, size, fill if mode == "L" else (fill, fill, fill)).save(root / part / name / f"{i}.png")
    return root


@pytest.fixture()
def folder(tmp_path):
    return write_folder(tmp_path / "pets")


@pytest.fixture()
def no_decoding(monkeypatch):
    """From here on, opening an image with Pillow fails the test."""

    def fail(*args, **kwargs):
        raise AssertionError("an image was decoded")

    monkeypatch.setattr(Image, "open", fail)


def test_a_folder_loads_with_sorted_classes_and_skips_hidden_and_other_files(folder):
    (folder / "train" / "cat" / ".DS_Store").write_bytes(b"\0\1")
    (folder / "train" / "cat" / "notes.txt").write_text("not an image")
    (folder / "train" / ".ipynb_checkpoints").mkdir()  # a hidden folder is no class
    Image.new("RGB", (3, 3)).save(folder / "train" / "cat" / ".hidden.png")  # another size, but hidden
    (folder / "train" / "dog" / "more").mkdir()
    Image.new("RGB", (8, 6), (7, 7, 7)).save(folder / "train" / "dog" / "more" / "x.png")  # nested: part of dog
    splits = load_dataset(f"folder:{folder}")
    assert splits.classes == ("bird", "cat", "dog") and splits.image_shape == (3, 6, 8)
    assert splits.train_y.tolist() == [0] * 3 + [1] * 3 + [2] * 4 and splits.test_y.tolist() == [0, 0, 1, 1, 2, 2]
    assert splits.train_x.dtype == torch.uint8 and splits.source == folder
    # each image carries its class (index in CLASSES) and number: bird (c=2), cat (c=1), dog (c=0) in that order
    assert splits.train_x[:, 0, 0, 0].tolist() == [80, 81, 82, 40, 41, 42, 0, 1, 2, 7]
    assert splits.test_x[:, :, 3, 5].tolist() == [[v] * 3 for v in (80, 81, 40, 41, 0, 1)]


def test_grayscale_images_give_one_channel_and_mixed_ones_three(tmp_path):
    gray = load_dataset(f"folder:{write_folder(tmp_path / 'gray', mode='L')}")
    assert gray.image_shape == (1, 6, 8) and gray.train_x[:, 0, 0, 0].tolist() == [80, 81, 82, 40, 41, 42, 0, 1, 2]
    mixed = write_folder(tmp_path / "mixed", mode="L")
    Image.new("RGB", (8, 6), (1, 2, 3)).save(mixed / "test" / "cat" / "colour.png")
    splits = load_dataset(f"folder:{mixed}")
    assert splits.image_shape == (3, 6, 8)
    assert splits.train_x[0, :, 0, 0].tolist() == [80, 80, 80]  # a gray image, widened
    assert splits.test_x[4, :, 0, 0].tolist() == [1, 2, 3]  # test/cat/colour.png sorts after 0.png and 1.png


def test_the_second_load_reads_the_cache_and_decodes_nothing(folder, request):
    first = load_dataset(f"folder:{folder}")
    assert (folder / CACHE_NAME).is_file()
    request.getfixturevalue("no_decoding")
    second = load_dataset(f"folder:{folder}")
    for part in ("train_x", "train_y", "test_x", "test_y"):
        assert torch.equal(getattr(first, part), getattr(second, part)), part
    assert second.classes == first.classes and second.mean == first.mean


def test_a_changed_added_or_removed_image_invalidates_the_cache(folder):
    load_dataset(f"folder:{folder}")
    changed = folder / "train" / "dog" / "0.png"
    Image.new("RGB", (8, 6), (9, 9, 9)).save(changed)
    os.utime(changed, ns=(10**18, 10**18))  # another modification time even on a coarse clock
    assert load_dataset(f"folder:{folder}").train_x[6, 0, 0, 0] == 9
    Image.new("RGB", (8, 6), (5, 5, 5)).save(folder / "test" / "bird" / "new.png")
    assert load_dataset(f"folder:{folder}").test_x[2, 0, 0, 0] == 5  # test/bird: 0.png, 1.png, new.png
    (folder / "test" / "bird" / "new.png").unlink()
    assert len(load_dataset(f"folder:{folder}").test_y) == 6


def test_a_corrupt_cache_is_decoded_again_and_replaced(folder):
    (folder / CACHE_NAME).write_bytes(b"not a torch file")
    assert len(load_dataset(f"folder:{folder}").train_y) == 9
    assert torch.load(folder / CACHE_NAME, weights_only=True)["classes"] == ["bird", "cat", "dog"]


@pytest.fixture()
def read_only(monkeypatch):
    """read_only(folder): the folder cannot be written (chmod; as root, which chmod does not stop, by refusing
    temporary files there)."""
    import tempfile

    mkstemp = tempfile.mkstemp
    locked = []

    def refusing(*args, dir=None, **kwargs):
        if any(str(dir).startswith(str(path)) for path in locked):
            raise PermissionError(13, "Permission denied", str(dir))
        return mkstemp(*args, dir=dir, **kwargs)

    monkeypatch.setattr(tempfile, "mkstemp", refusing)

    def lock(path):
        path.chmod(0o555)
        locked.append(path)

    yield lock
    for path in locked:
        path.chmod(0o755)


def test_a_read_only_folder_is_cached_in_the_user_cache_folder(folder, tmp_path, monkeypatch, read_only, request):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    read_only(folder)
    first = load_dataset(f"folder:{folder}")
    assert not (folder / CACHE_NAME).exists()
    cached = list((tmp_path / "cache" / "gradgeo").glob("folder-pets-*.pt"))
    assert len(cached) == 1
    request.getfixturevalue("no_decoding")
    assert torch.equal(load_dataset(f"folder:{folder}").train_x, first.train_x)


def test_with_no_writable_cache_folder_it_warns_and_still_loads(folder, tmp_path, monkeypatch, read_only):
    (tmp_path / "cache").mkdir()
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    read_only(folder)
    read_only(tmp_path / "cache")
    with pytest.warns(UserWarning, match=f"could not cache the decoded images of {folder} .*every load decodes"):
        assert len(load_dataset(f"folder:{folder}").train_y) == 9


@pytest.mark.parametrize("damage,message", [
    ("mixed-sizes", "{root}/train/cat/0.png is 7 x 6 pixels (width x height) but {root}/train/bird/0.png is 8 x 6; "
                    "all images must have one size: resize them first"),
    ("undecodable", "{root}/test/dog/1.png is not a readable image (cannot identify image file"),
    ("16-bit", "{root}/train/bird/0.png is a I;16 image (16-bit or floating point)"),
    ("empty-class", "folder dataset {root}: test/cat holds no images (.png, .jpg"),
    ("classes-differ", "the class folders of train/ and test/ differ (only in train/: fish; only in test/: bird)"),
    ("no-classes", "folder dataset {root}: train/ holds no class folders"),
    ("no-test", "folder dataset {root} has no test/ folder; it needs train/CLASS/IMAGE and test/CLASS/IMAGE"),
    ("no-folder", "folder dataset {root}/absent does not exist"),
    ("a-file", "folder dataset {root}/train/cat/0.png is not a folder"),
])
def test_a_bad_folder_is_one_error_naming_the_file_and_the_value(folder, damage, message):
    root = folder
    if damage == "mixed-sizes":
        Image.new("RGB", (7, 6)).save(folder / "train" / "cat" / "0.png")
    elif damage == "undecodable":
        (folder / "test" / "dog" / "1.png").write_bytes(b"\x89PNG but truncated")
    elif damage == "16-bit":
        Image.new("I;16", (8, 6)).save(folder / "train" / "bird" / "0.png")
    elif damage == "empty-class":
        for path in (folder / "test" / "cat").iterdir():
            path.unlink()
        (folder / "test" / "cat" / "notes.txt").write_text("no images here")
    elif damage == "classes-differ":
        (folder / "train" / "bird").rename(folder / "train" / "fish")
    elif damage == "no-classes":
        for name in CLASSES:
            for part in ("train", "test"):
                (folder / part / name).rename(folder / part / f".{name}")
    elif damage == "no-test":
        (folder / "test").rename(folder / "testing")
    elif damage == "no-folder":
        root = folder / "absent"
    elif damage == "a-file":
        root = folder / "train" / "cat" / "0.png"
    with pytest.raises((DatasetFormatError, FileNotFoundError)) as error:
        load_dataset(f"folder:{root}")
    assert message.format(root=folder) in str(error.value)
    assert not (folder / CACHE_NAME).exists()


def test_without_pillow_the_error_names_the_extra(folder, monkeypatch):
    monkeypatch.setitem(sys.modules, "PIL", None)  # import PIL raises ImportError
    with pytest.raises(ModuleNotFoundError, match=rf"reading {folder} \(a folder dataset of images\) needs Pillow: "
                                                  r"pip install 'gradgeo\[images\]'"):
        load_dataset(f"folder:{folder}")


def test_gradgeo_train_runs_an_epoch_on_a_folder(tmp_path, capsys):
    """The CLI end to end: 3 classes x 8 RGB training images of 16 x 16, a quarter-width small_cnn, one epoch."""
    folder = write_folder(tmp_path / "pets", counts=(8, 4), size=(16, 16))
    out = tmp_path / "run"
    assert main(["train", "--dataset", f"folder:{folder}", "--model", "small_cnn", "--width", "0.25",
                 "--batch-size", "8", "--epochs", "1", "--quiet", "--out", str(out)]) == 0, capsys.readouterr().err
    epochs = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert len(epochs) == 1 and 0 <= epochs[0]["test_acc"] <= 1
    assert main(["train", "--dataset", f"folder:{folder / 'absent'}", "--epochs", "1", "--quiet",
                 "--out", str(tmp_path / "bad")]) == 2
    err = capsys.readouterr().err
    assert f"folder dataset {folder / 'absent'} does not exist" in err and "Traceback" not in err
