"""Shared fixtures: a small real problem (a slice of Fashion-MNIST) for optimizer tests, small real filesystems."""

import gzip
import struct
import subprocess
from pathlib import Path

import pytest
import torch

FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")


@pytest.fixture(scope="session")
def fashion_slice() -> tuple[torch.Tensor, torch.Tensor]:
    """The first 512 Fashion-MNIST training images (float, normalised) and labels."""
    images, labels = FASHION_DIR / "train-images-idx3-ubyte.gz", FASHION_DIR / "train-labels-idx1-ubyte.gz"
    if not images.exists():
        pytest.skip(f"Fashion-MNIST not found in {FASHION_DIR}: apt-get install dataset-fashion-mnist")
    with gzip.open(images) as f:
        x = torch.frombuffer(bytearray(f.read()), dtype=torch.uint8)[16:].view(-1, 1, 28, 28)[:512]
    with gzip.open(labels) as f:
        y = torch.frombuffer(bytearray(f.read()), dtype=torch.uint8)[8:][:512].long()
    return (x.float() / 255 - 0.286) / 0.353, y


@pytest.fixture(scope="session")
def fashion_dir() -> Path:
    """The folder with the Fashion-MNIST IDX files (the test is skipped without it)."""
    if not (FASHION_DIR / "train-images-idx3-ubyte.gz").exists():
        pytest.skip(f"Fashion-MNIST not found in {FASHION_DIR}: apt-get install dataset-fashion-mnist")
    return FASHION_DIR


@pytest.fixture(scope="session")
def tiny_fashion(fashion_dir, tmp_path_factory) -> Path:
    """A folder holding the first 400 training and 300 test images of Fashion-MNIST as IDX files: a real
    dataset small enough for end-to-end runs in a second (``--data-dir``)."""
    folder = tmp_path_factory.mktemp("tiny-fashion")
    for part, count in (("train", 400), ("t10k", 300)):
        for kind, header, size in (("images-idx3", 16, 28 * 28), ("labels-idx1", 8, 1)):
            with gzip.open(fashion_dir / f"{part}-{kind}-ubyte.gz") as f:
                head, body = f.read(header), f.read(count * size)
            (folder / f"{part}-{kind}-ubyte").write_bytes(head[:4] + struct.pack(">I", count) + head[8:] + body)
    return folder


@pytest.fixture(autouse=True)
def _metric_registry(monkeypatch):
    """Every test starts from the registry of channel metrics as the test session found it: a metric one test
    registers (a docstring example, a doc block, tests/test_register_metric.py) is gone in the next."""
    from gradgeo.channel import registry

    monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))
    monkeypatch.setattr(registry, "_entry_point_failures", list(registry._entry_point_failures))
    monkeypatch.setattr(registry, "_entry_points_loaded", registry._entry_points_loaded)


@pytest.fixture()
def tmpfs(tmp_path):
    """``mount(size)``: a real tmpfs of ``size`` (e.g. ``"512k"``) mounted on a fresh folder, and
    ``mount.read_only(folder)`` remounting it read-only; ``mount(size)`` is None where this process cannot mount
    (not root). Unmounted at the end of the test."""
    mounted: list[Path] = []

    def mount(size: str) -> Path | None:
        folder = tmp_path / f"tmpfs-{len(mounted)}"
        folder.mkdir()
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)],
                              capture_output=True)
        if done.returncode != 0:
            return None
        mounted.append(folder)
        return folder

    def read_only(folder: Path) -> None:
        subprocess.run(["mount", "-o", "remount,ro", str(folder)], check=True, capture_output=True)

    mount.read_only = read_only  # type: ignore[attr-defined]
    yield mount
    for folder in mounted:
        subprocess.run(["umount", str(folder)], capture_output=True)
