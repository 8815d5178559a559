"""Shared fixtures: a small real problem (a slice of Fashion-MNIST) for optimizer tests."""

import gzip
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
